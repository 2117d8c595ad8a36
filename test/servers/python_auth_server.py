"""An MCP authorization server built from the official MCP Python SDK (PyPI
package `mcp`, pinned in requirements.txt, installed by bin/setup into
test/servers/.venv): `create_auth_routes` (RFC 8414 metadata at
/.well-known/oauth-authorization-server, RFC 7591 registration at /register,
authorize and token endpoints) and `create_protected_resource_routes`
(RFC 9728 metadata for the resource http://127.0.0.1:<port>/mcp), served by
uvicorn. Used by test/integration/discovery_real_servers_test.exs.

    test/servers/.venv/bin/python test/servers/python_auth_server.py

Listens on 127.0.0.1 on a free port and prints one JSON line once ready:

    {"port":N,"issuer":"http://127.0.0.1:N/","mcp_url":"http://127.0.0.1:N/mcp"}

Logs go to stderr. Exits when stdin closes and on SIGTERM.
"""

import asyncio
import json
import os
import secrets
import socket
import sys
import threading
import time

import uvicorn
from pydantic import AnyHttpUrl
from starlette.applications import Starlette

from mcp.server.auth.routes import create_auth_routes, create_protected_resource_routes
from mcp.server.auth.settings import ClientRegistrationOptions


class InMemoryProvider:
    """Keeps registered clients; authorization and tokens are not used here."""

    def __init__(self):
        self.clients = {}

    async def get_client(self, client_id):
        return self.clients.get(client_id)

    async def register_client(self, client_info):
        self.clients[client_info.client_id] = client_info

    def __getattr__(self, name):
        async def not_used(*_args, **_kwargs):
            raise NotImplementedError(f"{name} is not used in these tests")

        return not_used


def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    issuer = AnyHttpUrl(f"http://127.0.0.1:{port}")
    mcp_url = AnyHttpUrl(f"http://127.0.0.1:{port}/mcp")

    routes = create_auth_routes(
        InMemoryProvider(),
        issuer,
        client_registration_options=ClientRegistrationOptions(
            enabled=True, valid_scopes=["mcp:read", "mcp:write"], default_scopes=["mcp:read"]
        ),
    ) + create_protected_resource_routes(mcp_url, [issuer], scopes_supported=["mcp:read", "mcp:write"])
    app = Starlette(routes=routes)

    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)

    def watch_stdin():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()

    async def run():
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if serving.done():
                serving.result()
                return
            await asyncio.sleep(0.01)
        print(json.dumps({"port": port, "issuer": str(issuer), "mcp_url": str(mcp_url)}), flush=True)
        await serving

    asyncio.run(run())


if __name__ == "__main__":
    main()
