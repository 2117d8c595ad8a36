// An in-memory OAuthClientProvider for the MCP TypeScript SDK's auth()
// orchestrator (the client side of the MCP authorization flow, RFC 6749
// §4.1 with RFC 7636 PKCE), shared by sdk_register.mjs --auth-flow and
// sdk_cimd.mjs. It keeps the client information and the PKCE code verifier
// in `store`, and captures the authorization URL in store.authorizationUrl
// instead of opening a browser. No token exchange is expected: saveTokens
// throws. `extra` members (clientMetadataUrl, state) are added as they are.
export function memoryProvider({ redirectUrl, clientMetadata, ...extra }) {
  const store = { clientInformation: undefined, codeVerifier: undefined, authorizationUrl: undefined };

  const provider = {
    get redirectUrl() {
      return redirectUrl;
    },
    get clientMetadata() {
      return { ...clientMetadata };
    },
    clientInformation: () => store.clientInformation,
    saveClientInformation: (information) => {
      store.clientInformation = information;
    },
    tokens: () => undefined,
    saveTokens: () => {
      throw new Error('no token exchange is expected in this flow');
    },
    redirectToAuthorization: (url) => {
      store.authorizationUrl = String(url);
    },
    saveCodeVerifier: (verifier) => {
      store.codeVerifier = verifier;
    },
    codeVerifier: () => store.codeVerifier,
    ...extra,
  };

  return { provider, store };
}
