// Registers OAuth clients with an authorization server using the official MCP
// TypeScript SDK (@modelcontextprotocol/sdk), a client nobody in this project
// wrote, and checks the answers against the SDK's own zod schemas.
//
//   node test/servers/sdk_register.mjs <base-url>
//   node test/servers/sdk_register.mjs <base-url> --auth-flow
//
// <base-url> is the authorization server's issuer, e.g. http://127.0.0.1:PORT.
//
// Default mode:
//   1. discoverAuthorizationServerMetadata(<base-url>): RFC 8414 discovery,
//      parsed by the SDK with OAuthMetadataSchema;
//   2. registerClient(<base-url>, { metadata, clientMetadata }) three times: a
//      public client (token_endpoint_auth_method "none"), a confidential one
//      ("client_secret_basic"), and one that leaves token_endpoint_auth_method
//      out and adds an extension member the server does not know, so that the
//      RFC 7591 §2 defaults and the ignoring of unknown metadata are seen by a
//      client nobody here wrote;
//   3. every answer parsed again, explicitly, with OAuthMetadataSchema and
//      OAuthClientInformationFullSchema.
//
// --auth-flow mode: runs the SDK's auth() orchestrator, which is what an MCP
// client actually calls, with an in-memory OAuthClientProvider: protected
// resource discovery (RFC 9728, absent here, so it falls back to the base
// URL), RFC 8414 discovery, dynamic registration, then the authorization
// request, which the provider captures instead of opening a browser.
//
// registerClient returns OAuthClientInformationFullSchema's output, which
// strips the members the SDK does not model (RFC 7592's
// registration_access_token and registration_client_uri among them). So the
// SDK's fetch is wrapped (its documented fetchFn parameter) to also keep the
// exact JSON the server sent back: the caller gets both.
//
// Prints exactly one JSON line on stdout; on any failure prints the reason to
// stderr and exits 1.

import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';

import { memoryProvider } from './sdk_provider.mjs';

let sdk;
let schemas;
try {
  sdk = await import('@modelcontextprotocol/sdk/client/auth.js');
  schemas = await import('@modelcontextprotocol/sdk/shared/auth.js');
} catch (error) {
  console.error(
    `sdk_register.mjs: cannot load @modelcontextprotocol/sdk (${error.code ?? error.message}): ` +
      'run `npm ci --prefix test/servers` in the project root first',
  );
  process.exit(1);
}

const { discoverAuthorizationServerMetadata, registerClient, selectClientAuthMethod, auth } = sdk;
const { OAuthMetadataSchema, OAuthClientInformationFullSchema, OAuthClientMetadataSchema } = schemas;

const sdkVersion = JSON.parse(
  readFileSync(new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url), 'utf8'),
).version;

const [baseUrl, mode] = process.argv.slice(2);
if (!baseUrl || (mode !== undefined && mode !== '--auth-flow')) {
  console.error('usage: node sdk_register.mjs <base-url> [--auth-flow]');
  process.exit(2);
}

const REDIRECT_URI = 'http://localhost:3000/callback';

const publicMetadata = {
  client_name: 'MCP TS SDK ✓',
  redirect_uris: [REDIRECT_URI],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'none',
};

const confidentialMetadata = {
  ...publicMetadata,
  client_name: 'MCP TS SDK ✓ confidential',
  token_endpoint_auth_method: 'client_secret_basic',
};

const defaultedMetadata = {
  client_name: 'MCP TS SDK ✓ defaults',
  redirect_uris: [REDIRECT_URI],
  x_vendor_extension: { tier: 'gold' },
};

// A fetch for the SDK's fetchFn parameter: the SDK makes the request, this
// keeps a copy of what came back (status, a few headers, the JSON body).
function recordingFetch(log) {
  return async (url, init) => {
    const response = await fetch(url, init);
    const entry = {
      method: init?.method ?? 'GET',
      url: String(url),
      status: response.status,
      content_type: response.headers.get('content-type'),
      cache_control: response.headers.get('cache-control'),
      body: null,
    };
    try {
      entry.body = await response.clone().json();
    } catch {
      // Not JSON (a 404 page, say): the SDK handles it; nothing to keep.
    }
    log.push(entry);
    return response;
  };
}

// Parses with one of the SDK's schemas; a rejection names every failing rule.
function parseWith(schema, name, value) {
  const result = schema.safeParse(value);
  if (!result.success) {
    const issues = result.error.issues
      .map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message} [${issue.code}]`)
      .join('; ');
    throw new Error(`${name} rejects the server's answer: ${issues}\nanswer: ${JSON.stringify(value)}`);
  }
  return result.data;
}

// Fails if a schema changed a value it kept (a transform, a coercion): the
// SDK must see exactly what the server sent.
function assertKeptVerbatim(name, parsed, raw) {
  for (const [key, value] of Object.entries(parsed)) {
    if (!isDeepStrictEqual(value, raw[key])) {
      throw new Error(`${name} changed ${key}: sent ${JSON.stringify(raw[key])}, parsed ${JSON.stringify(value)}`);
    }
  }
}

async function discover() {
  const log = [];
  const metadata = await discoverAuthorizationServerMetadata(baseUrl, { fetchFn: recordingFetch(log) });
  if (!metadata) throw new Error(`no authorization server metadata found under ${baseUrl}`);

  const served = log.find((entry) => entry.status === 200);
  const raw = served?.body;
  if (!raw) throw new Error('discovery succeeded but no JSON answer was recorded');

  const explicit = parseWith(OAuthMetadataSchema, 'OAuthMetadataSchema', raw);
  assertKeptVerbatim('OAuthMetadataSchema', explicit, raw);
  if (!isDeepStrictEqual(explicit, metadata)) throw new Error('discovery and an explicit parse disagree');

  return { metadata, discovery_url: served.url, content_type: served.content_type };
}

async function register(metadata, clientMetadata) {
  // What the SDK itself would send: its client metadata schema must accept ours.
  parseWith(OAuthClientMetadataSchema, 'OAuthClientMetadataSchema', clientMetadata);

  const log = [];
  const sdkResult = await registerClient(baseUrl, {
    metadata,
    clientMetadata,
    fetchFn: recordingFetch(log),
  });

  const answer = log.find((entry) => entry.method === 'POST');
  if (!answer || answer.body === null) throw new Error('registration succeeded but no JSON answer was recorded');
  const raw = answer.body;

  const explicit = parseWith(OAuthClientInformationFullSchema, 'OAuthClientInformationFullSchema', raw);
  assertKeptVerbatim('OAuthClientInformationFullSchema', explicit, raw);
  if (!isDeepStrictEqual(explicit, sdkResult)) throw new Error('registerClient and an explicit parse disagree');

  return {
    status: answer.status,
    url: answer.url,
    content_type: answer.content_type,
    cache_control: answer.cache_control,
    sent: clientMetadata,
    sdk: sdkResult,
    // Members of the answer that the SDK's schema does not model (stripped).
    sdk_stripped: Object.keys(raw)
      .filter((key) => !(key in explicit))
      .sort(),
    // What the SDK's token requests would authenticate with.
    sdk_auth_method: selectClientAuthMethod(sdkResult, metadata.token_endpoint_auth_methods_supported ?? []),
    has_client_secret: typeof sdkResult.client_secret === 'string' && sdkResult.client_secret.length > 0,
    wire: raw,
  };
}

async function registrations() {
  const { metadata, discovery_url, content_type } = await discover();
  const publicClient = await register(metadata, publicMetadata);
  const confidentialClient = await register(metadata, confidentialMetadata);
  const defaultedClient = await register(metadata, defaultedMetadata);

  return {
    mode: 'register',
    sdk_version: sdkVersion,
    discovery_url,
    discovery_content_type: content_type,
    metadata,
    public: publicClient,
    confidential: confidentialClient,
    defaulted: defaultedClient,
  };
}

// The auth() orchestrator with an in-memory provider.
async function authFlow() {
  const log = [];
  const { provider, store } = memoryProvider({
    redirectUrl: REDIRECT_URI,
    clientMetadata: { ...publicMetadata, client_name: 'MCP TS SDK ✓ auth()' },
  });

  const result = await auth(provider, { serverUrl: baseUrl, fetchFn: recordingFetch(log) });
  if (!store.authorizationUrl) throw new Error(`auth() returned ${result} without asking for a redirect`);

  const registration = log.find((entry) => entry.method === 'POST');
  if (!registration || registration.body === null) throw new Error('auth() did not register a client');
  parseWith(OAuthClientInformationFullSchema, 'OAuthClientInformationFullSchema', registration.body);

  const authorizationUrl = new URL(store.authorizationUrl);
  return {
    mode: 'auth-flow',
    sdk_version: sdkVersion,
    result,
    requests: log.map(({ method, url, status }) => ({ method, url, status })),
    client_information: store.clientInformation,
    wire: registration.body,
    authorization_endpoint: `${authorizationUrl.origin}${authorizationUrl.pathname}`,
    authorization_params: Object.fromEntries(authorizationUrl.searchParams),
    code_verifier_saved: typeof store.codeVerifier === 'string' && store.codeVerifier.length >= 43,
  };
}

try {
  const output = mode === '--auth-flow' ? await authFlow() : await registrations();
  process.stdout.write(`${JSON.stringify(output)}\n`);
} catch (error) {
  console.error(`sdk_register.mjs: ${error?.stack ?? error}`);
  process.exit(1);
}
