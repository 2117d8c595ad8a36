// The official MCP TypeScript SDK (@modelcontextprotocol/sdk) as an MCP
// client that identifies itself with a Client ID Metadata Document
// (SEP-991, draft-ietf-oauth-client-id-metadata-document): its auth()
// orchestrator, with an OAuthClientProvider whose clientMetadataUrl is set,
// starts from the MCP server URL, discovers the protected resource metadata
// (RFC 9728) and the authorization server metadata (RFC 8414), sees
// client_id_metadata_document_supported and uses the URL as its client_id
// instead of registering. The authorization URL it builds is then requested
// the way a browser would (without following the redirect), so the
// authorization server fetches and checks the document.
//
//   node test/servers/sdk_cimd.mjs <mcp-server-url> <client-metadata-url> <redirect-uri>
//
// Prints exactly one JSON line on stdout; on any failure prints the reason to
// stderr and exits 1.

import { readFileSync } from 'node:fs';

import { memoryProvider } from './sdk_provider.mjs';

let auth;
try {
  ({ auth } = await import('@modelcontextprotocol/sdk/client/auth.js'));
} catch (error) {
  console.error(
    `sdk_cimd.mjs: cannot load @modelcontextprotocol/sdk (${error.code ?? error.message}): ` +
      'run `npm ci --prefix test/servers` in the project root first',
  );
  process.exit(1);
}

const sdkVersion = JSON.parse(
  readFileSync(new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url), 'utf8'),
).version;

const [serverUrl, clientMetadataUrl, redirectUri] = process.argv.slice(2);
if (!serverUrl || !clientMetadataUrl || !redirectUri) {
  console.error('usage: node sdk_cimd.mjs <mcp-server-url> <client-metadata-url> <redirect-uri>');
  process.exit(2);
}

async function run() {
  const requests = [];
  const recordingFetch = async (url, init) => {
    const response = await fetch(url, init);
    requests.push({ method: init?.method ?? 'GET', url: String(url), status: response.status });
    return response;
  };

  const { provider, store } = memoryProvider({
    redirectUrl: redirectUri,
    clientMetadataUrl,
    clientMetadata: {
      client_name: 'MCP TS SDK CIMD client',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    state: () => 'sdk-state-1',
  });

  const result = await auth(provider, { serverUrl, fetchFn: recordingFetch });
  if (!store.authorizationUrl) throw new Error(`auth() returned ${result} without asking for a redirect`);

  // The browser's part: follow the authorization URL, but not the redirect.
  const answer = await fetch(store.authorizationUrl, { redirect: 'manual' });
  const text = await answer.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }

  const authorizationUrl = new URL(store.authorizationUrl);
  return {
    sdk_version: sdkVersion,
    result,
    requests,
    client_information: store.clientInformation,
    authorization_endpoint: `${authorizationUrl.origin}${authorizationUrl.pathname}`,
    authorization_params: Object.fromEntries(authorizationUrl.searchParams),
    authorize: { status: answer.status, location: answer.headers.get('location'), body },
  };
}

try {
  process.stdout.write(`${JSON.stringify(await run())}\n`);
} catch (error) {
  console.error(`sdk_cimd.mjs: ${error?.stack ?? error}`);
  process.exit(1);
}
