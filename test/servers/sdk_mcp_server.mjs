// An MCP server protected by OAuth, built only from the official MCP
// TypeScript SDK (@modelcontextprotocol/sdk): its auth router
// (mcpAuthRouter: RFC 8414 metadata, RFC 9728 protected resource metadata,
// RFC 7591 registration, authorize and token endpoints), its bearer middleware
// (requireBearerAuth: the 401 with a WWW-Authenticate challenge naming
// resource_metadata and scope) in front of a Streamable HTTP MCP server. Used
// by test/integration/discovery_real_servers_test.exs.
//
//   node test/servers/sdk_mcp_server.mjs
//
// Listens on 127.0.0.1 on a free port. The MCP endpoint is /mcp; the issuer is
// the server's root. Prints one JSON line once listening:
//
//   {"port":N,"mcp_url":"http://127.0.0.1:N/mcp","issuer":"http://127.0.0.1:N/"}
//
// Exits when stdin closes and on SIGTERM/SIGINT.

import { randomUUID } from 'node:crypto';

const toStderr = console.error.bind(console);
for (const method of ['log', 'info', 'debug', 'warn']) console[method] = toStderr;

const shutdown = (code) => () => process.exit(code);
process.on('SIGTERM', shutdown(0));
process.on('SIGINT', shutdown(0));
process.stdin.on('end', shutdown(0));
process.stdin.on('close', shutdown(0));
process.stdin.resume();

const { default: express } = await import('express');
const { mcpAuthRouter, getOAuthProtectedResourceMetadataUrl } = await import(
  '@modelcontextprotocol/sdk/server/auth/router.js'
);
const { requireBearerAuth } = await import('@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js');
const { InvalidTokenError } = await import('@modelcontextprotocol/sdk/server/auth/errors.js');
const { McpServer } = await import('@modelcontextprotocol/sdk/server/mcp.js');
const { StreamableHTTPServerTransport } = await import('@modelcontextprotocol/sdk/server/streamableHttp.js');

// The smallest OAuthServerProvider: an in-memory client store (so that
// registration works) and a verifier that accepts no token (so that every
// MCP request gets the SDK's 401). Authorization and token issuance are not
// part of these tests.
const clients = new Map();
const provider = {
  clientsStore: {
    getClient: (id) => clients.get(id),
    registerClient: (client) => {
      const full = { ...client, client_id: randomUUID(), client_id_issued_at: Math.floor(Date.now() / 1000) };
      clients.set(full.client_id, full);
      return full;
    },
  },
  authorize: async () => {
    throw new Error('not used in these tests');
  },
  challengeForAuthorizationCode: async () => {
    throw new Error('not used in these tests');
  },
  exchangeAuthorizationCode: async () => {
    throw new Error('not used in these tests');
  },
  exchangeRefreshToken: async () => {
    throw new Error('not used in these tests');
  },
  verifyAccessToken: async () => {
    throw new InvalidTokenError('unknown token');
  },
};

const app = express();
const server = await new Promise((resolve, reject) => {
  const s = app.listen(0, '127.0.0.1', () => resolve(s));
  s.once('error', reject);
});
const { port } = server.address();
const issuerUrl = new URL(`http://127.0.0.1:${port}/`);
const mcpUrl = new URL(`http://127.0.0.1:${port}/mcp`);

app.use(
  mcpAuthRouter({
    provider,
    issuerUrl,
    resourceServerUrl: mcpUrl,
    scopesSupported: ['mcp:tools', 'mcp:admin'],
    resourceName: 'ExMCP discovery test server',
  }),
);

const mcp = new McpServer({ name: 'ex-mcp-discovery-test', version: '1.0.0' });
mcp.tool('ping', async () => ({ content: [{ type: 'text', text: 'pong' }] }));

app.post(
  '/mcp',
  requireBearerAuth({
    verifier: provider,
    requiredScopes: ['mcp:tools'],
    resourceMetadataUrl: getOAuthProtectedResourceMetadataUrl(mcpUrl),
  }),
  express.json(),
  async (req, res) => {
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on('close', () => transport.close());
    await mcp.connect(transport);
    await transport.handleRequest(req, res, req.body);
  },
);

process.stdout.write(`${JSON.stringify({ port, mcp_url: mcpUrl.href, issuer: issuerUrl.href })}\n`);
