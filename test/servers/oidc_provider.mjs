// A real RFC 7591/7592 authorization server for the Elixir integration tests
// (test/integration/oidc_provider_test.exs, driven by ExMCP.Test.OidcProvider).
//
//   node test/servers/oidc_provider.mjs [--initial-access-token TOKEN] [--rotate] [--issuer-path /PATH]
//                                       [--client-id-metadata-documents] [--tls-cert FILE --tls-key FILE]
//
// Listens on 127.0.0.1 on a free port, with issuer http(s)://127.0.0.1:<port>[/PATH],
// dynamic registration (features.registration) and its management
// (features.registrationManagement) enabled, and the client credentials
// grant (features.clientCredentials), with which a test can check that a
// registered client_secret authenticates the client at the token endpoint.
//
//   --initial-access-token TOKEN  registration requires `Authorization: Bearer TOKEN`
//   --rotate                      every update (PUT) rotates the registration access token
//   --issuer-path /PATH           the issuer is http://127.0.0.1:<port>/PATH and the provider is
//                                 mounted there: its OpenID discovery document is at
//                                 /PATH/.well-known/openid-configuration, and every URL outside
//                                 /PATH answers 404 (RFC 8414 §3.1 / OIDC Discovery §4 path cases)
//   --client-id-metadata-documents  enables oidc-provider's Client ID Metadata Document support
//                                 (features.clientIdMetadataDocument, draft-02): discovery says
//                                 client_id_metadata_document_supported, and an https client_id
//                                 is resolved by fetching its document. The tests serve that
//                                 document from 127.0.0.1, which oidc-provider's SSRF protection
//                                 (a dispatcher refusing special-use addresses) would refuse: in
//                                 this mode its fetch drops that dispatcher. Trust the test CA with
//                                 NODE_EXTRA_CA_CERTS.
//   --tls-cert FILE, --tls-key FILE
//                                 serve https with this PEM certificate and key; the issuer
//                                 is then https://127.0.0.1:<port>. The script reads its own
//                                 discovery document, so the certificate's CA must be
//                                 trusted through NODE_EXTRA_CA_CERTS.
//
// GET /__test/registrations answers {"registrations":N}, the number of
// successful registrations so far (oidc-provider's registration_create.success).
//
// Once listening it prints exactly one line of JSON to stdout:
//
//   {"port":N,"issuer":"http://127.0.0.1:N","registration_endpoint":"http://127.0.0.1:N/reg"}
//
// Everything else (oidc-provider's notices and warnings, errors) goes to
// stderr. The process exits when its stdin closes (the owning Elixir Port
// was closed) and on SIGTERM/SIGINT.
//
// Install the dependencies first: npm ci --prefix test/servers

import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { parseArgs } from 'node:util';

// stdout carries the one JSON line and nothing else. oidc-provider prints its
// notices with console.info, so every console method writing to stdout is
// sent to stderr, before the library is even loaded (hence the dynamic import).
// Its start-up warnings (dev keys, in-memory adapter, Node 20) are expected
// in tests and are dropped unless OIDC_PROVIDER_VERBOSE=1.
const toStderr = console.error.bind(console);
const quiet = process.env.OIDC_PROVIDER_VERBOSE !== '1';
for (const method of ['log', 'info', 'debug', 'dir', 'table', 'warn']) {
  console[method] = (...args) => {
    if (quiet && /^oidc-provider WARNING/.test(String(args[0]))) return;
    toStderr(...args);
  };
}

const shutdown = (code) => () => process.exit(code);
process.on('SIGTERM', shutdown(0));
process.on('SIGINT', shutdown(0));
process.stdin.on('end', shutdown(0));
process.stdin.on('close', shutdown(0));
process.stdin.on('error', shutdown(0));
process.stdin.resume();

let options;
try {
  ({ values: options } = parseArgs({
    options: {
      'initial-access-token': { type: 'string' },
      rotate: { type: 'boolean', default: false },
      'issuer-path': { type: 'string' },
      'client-id-metadata-documents': { type: 'boolean', default: false },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (error) {
  console.error(`oidc_provider.mjs: ${error.message}`);
  process.exit(2);
}

const { default: Provider } = await import('oidc-provider');

if ((options['tls-cert'] === undefined) !== (options['tls-key'] === undefined)) {
  console.error('oidc_provider.mjs: --tls-cert and --tls-key go together');
  process.exit(2);
}
const tls = options['tls-cert'] !== undefined;

// The issuer carries the port, so the port is bound before the provider is built.
const server = tls
  ? https.createServer({
      cert: readFileSync(options['tls-cert']),
      key: readFileSync(options['tls-key']),
    })
  : http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuerPath = (options['issuer-path'] ?? '').replace(/\/+$/, '');
if (issuerPath !== '' && !/^\/[A-Za-z0-9._~\/-]+$/.test(issuerPath)) {
  console.error(`oidc_provider.mjs: --issuer-path must be an absolute path, got ${issuerPath}`);
  process.exit(2);
}
const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${port}${issuerPath}`;

const registration = { enabled: true };
if (options['initial-access-token'] !== undefined) {
  // A string: every registration must present exactly this bearer token.
  registration.initialAccessToken = options['initial-access-token'];
}

const cimd = options['client-id-metadata-documents'];

const provider = new Provider(issuer, {
  ...(cimd && {
    fetch: (url, fetchOptions) => {
      const { dispatcher: _ssrfGuard, ...rest } = fetchOptions;
      return fetch(url, rest);
    },
  }),
  // oidc-provider rejects any registered `scope` value it does not list here.
  scopes: ['openid', 'offline_access', 'mcp:read', 'mcp:write'],
  // Recognised (and stored, and echoed back) besides RFC 7591's standard metadata.
  extraClientMetadata: { properties: ['software_id', 'software_version'] },
  // A fixed lifetime for client credentials tokens (the default makes
  // oidc-provider print a notice).
  ttl: { ClientCredentials: 600 },
  features: {
    clientCredentials: { enabled: true },
    registration,
    registrationManagement: {
      enabled: true,
      // oidc-provider's own default is true: set it explicitly either way.
      rotateRegistrationAccessToken: options.rotate,
    },
    ...(cimd && { clientIdMetadataDocument: { enabled: true, ack: 'draft-02' } }),
  },
});

provider.on('server_error', (_ctx, error) => console.error('oidc-provider server_error:', error));

// Successful registrations (RFC 7591 POSTs that created a client), for the
// tests that count them: GET /__test/registrations answers {"registrations":N}.
// The path is outside every issuer path the tests use; the server listens on
// 127.0.0.1 only.
let registrations = 0;
provider.on('registration_create.success', () => {
  registrations += 1;
});
const countPath = '/__test/registrations';
const answerCount = (res) => {
  const body = JSON.stringify({ registrations });
  res.writeHead(200, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
};

const callback = provider.callback();
if (issuerPath === '') {
  server.on('request', (req, res) => {
    if (req.method === 'GET' && req.url === countPath) answerCount(res);
    else callback(req, res);
  });
} else {
  // Mounted under the issuer's path, the way Express's app.use(path, ...)
  // mounts it: oidc-provider builds its URLs from originalUrl.
  server.on('request', (req, res) => {
    if (req.method === 'GET' && req.url === countPath) {
      answerCount(res);
    } else if (req.url === issuerPath || req.url.startsWith(`${issuerPath}/`) || req.url.startsWith(`${issuerPath}?`)) {
      req.originalUrl = req.url;
      req.url = req.url.slice(issuerPath.length) || '/';
      callback(req, res);
    } else {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":"not_found"}');
    }
  });
}

// Read the registration endpoint from the provider's own discovery document
// rather than assuming its default path.
const discovery = await fetch(`${issuer}/.well-known/openid-configuration`).then((response) => {
  if (!response.ok) throw new Error(`discovery answered HTTP ${response.status}`);
  return response.json();
});

if (typeof discovery.registration_endpoint !== 'string') {
  console.error('oidc_provider.mjs: discovery has no registration_endpoint');
  process.exit(1);
}

process.stdout.write(
  `${JSON.stringify({ port, issuer, registration_endpoint: discovery.registration_endpoint })}\n`,
);
