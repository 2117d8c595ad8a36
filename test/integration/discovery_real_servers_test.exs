defmodule ExMCP.Integration.DiscoveryRealServersTest do
  @moduledoc """
  `discover/2` and `obtain_client/3` against real servers nobody here wrote,
  each started and stopped by this module:

    * the official MCP TypeScript SDK (npm `@modelcontextprotocol/sdk`) as an
      MCP server: `mcpAuthRouter` (RFC 8414, RFC 9728, RFC 7591) and
      `requireBearerAuth` in front of a Streamable HTTP MCP endpoint
      (`test/servers/sdk_mcp_server.mjs`): discovery from the MCP URL and from
      the `WWW-Authenticate` of a real 401, then registration;
    * oidc-provider with an issuer that has a path (`/tenant/a`): OpenID
      Connect Discovery found third in the MCP specification's path order;
    * oidc-provider with its Client ID Metadata Document feature: the client
      obtained by `obtain_client/3` is accepted by a real authorization
      request, for which oidc-provider fetches the document we serve;
    * the official MCP Python SDK (PyPI `mcp`) authorization server
      (`test/servers/python_auth_server.py`): RFC 9728 then RFC 8414, and
      registration.

  Needs `bin/setup` (Node packages and the Python venv). Run alone with
  `mix test --only discovery_real_servers`.
  """

  use ExUnit.Case, async: false

  alias ExMCP.Authorization.ClientRegistration, as: CR
  alias ExMCP.Test.{Certificates, FixtureServer, OidcProvider, ScriptServer}

  @moduletag :discovery_real_servers

  @servers_dir Path.expand("../servers", __DIR__)
  @python Path.join([@servers_dir, ".venv", "bin", "python"])

  @metadata %{client_name: "ExMCP discovery", redirect_uris: ["http://127.0.0.1:8080/callback"]}

  setup_all do
    {:ok, _} = Application.ensure_all_started(:inets)
    :ok
  end

  # The MCP server's answer to an unauthenticated MCP request: a real 401.
  defp unauthenticated_post(url) do
    body = ~s({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}})

    {:ok, {{_, status, _}, headers, _body}} =
      :httpc.request(
        :post,
        {String.to_charlist(url), [{~c"accept", ~c"application/json, text/event-stream"}],
         ~c"application/json", body},
        [timeout: 5_000],
        body_format: :binary
      )

    {status, for({~c"www-authenticate", value} <- headers, do: List.to_string(value))}
  end

  describe "the MCP TypeScript SDK as an MCP server with its auth router and bearer middleware" do
    setup do
      node = System.find_executable("node") || flunk("the `node` executable is not on the PATH")
      server = start_supervised!({ScriptServer, executable: node, args: ["sdk_mcp_server.mjs"]})
      %{"mcp_url" => mcp_url, "issuer" => issuer} = ScriptServer.info(server)
      %{mcp_url: mcp_url, issuer: issuer}
    end

    test "discovery from the MCP URL: RFC 9728 path-aware metadata, then RFC 8414", %{
      mcp_url: mcp_url,
      issuer: issuer
    } do
      assert {:ok, discovery} = CR.discover(mcp_url)
      base = String.trim_trailing(issuer, "/")

      assert discovery.resource == mcp_url
      assert discovery.resource_metadata_url == base <> "/.well-known/oauth-protected-resource/mcp"
      assert discovery.issuer == issuer
      assert discovery.authorization_server_metadata == :discovered
      assert discovery.authorization_server_metadata_url == base <> "/.well-known/oauth-authorization-server"
      # Scope selection without a challenge: all of scopes_supported.
      assert discovery.scope == "mcp:tools mcp:admin"
      assert discovery.authorization_server.registration_endpoint == base <> "/register"
      assert discovery.authorization_server.code_challenge_methods_supported == ["S256"]
      assert discovery.resource_metadata["resource_name"] == "ExMCP discovery test server"
    end

    test "discovery from a real 401's WWW-Authenticate, then dynamic registration", %{
      mcp_url: mcp_url,
      issuer: issuer
    } do
      assert {401, [challenge]} = unauthenticated_post(mcp_url)
      assert challenge =~ "resource_metadata="

      assert {:ok, discovery} = CR.discover(mcp_url, www_authenticate: challenge)
      # The challenge's scope wins over scopes_supported.
      assert discovery.scope == "mcp:tools"
      assert discovery.issuer == issuer

      assert {:ok, client} = CR.obtain_client(discovery, @metadata)
      assert client.registration_method == :dynamic
      assert client.issuer == issuer
      assert is_binary(client.client_id) and client.client_id != ""
      # The SDK lists client_secret_post and none: none comes first in our order.
      assert client.token_endpoint_auth_method == "none"
      assert client.scope == "mcp:tools"
    end

    test "obtain_client/3 from the MCP URL alone", %{mcp_url: mcp_url, issuer: issuer} do
      assert {:ok, client} =
               CR.obtain_client(
                 mcp_url,
                 Map.put(@metadata, :token_endpoint_auth_method, "client_secret_post")
               )

      assert %{
               registration_method: :dynamic,
               issuer: ^issuer,
               token_endpoint_auth_method: "client_secret_post"
             } = client

      assert is_binary(client.client_secret)
    end
  end

  describe "oidc-provider with an issuer that has a path" do
    setup do
      server = start_supervised!({OidcProvider, issuer_path: "/tenant/a", initial_access_token: "iat-path"})
      %{issuer: issuer, registration_endpoint: endpoint} = OidcProvider.info(server)
      %{issuer: issuer, registration_endpoint: endpoint}
    end

    test "OpenID discovery found at <issuer>/.well-known/openid-configuration, third in the order", %{
      issuer: issuer,
      registration_endpoint: endpoint
    } do
      assert String.ends_with?(issuer, "/tenant/a")

      # The first two (RFC 8414 and OIDC with path insertion) answer 404 here.
      assert {:ok, discovery} = CR.discover(issuer <> "/mcp", issuer: issuer)
      assert discovery.issuer == issuer
      assert discovery.authorization_server_metadata_url == issuer <> "/.well-known/openid-configuration"
      assert discovery.authorization_server.registration_endpoint == endpoint
      assert discovery.resource_metadata == nil
      assert "none" in discovery.authorization_server.token_endpoint_auth_methods_supported
      assert is_map(discovery.authorization_server.extra)
      assert Map.has_key?(discovery.authorization_server.extra, "claims_supported")

      assert {:ok, client} =
               CR.obtain_client(discovery, Map.put(@metadata, :scope, "openid"),
                 initial_access_token: "iat-path"
               )

      assert %{registration_method: :dynamic, issuer: ^issuer, token_endpoint_auth_method: "none"} = client
      assert String.starts_with?(client.registration_client_uri, issuer <> "/reg/")
      assert :ok = CR.delete_client(client.registration_client_uri, client.registration_access_token)
    end
  end

  describe "oidc-provider with Client ID Metadata Documents (draft-02)" do
    @describetag :tmp_dir

    setup %{tmp_dir: dir} do
      %{ca: ca, cert: cert, key: key} = Certificates.loopback!(dir)
      node = System.find_executable("node") || flunk("the `node` executable is not on the PATH")

      server =
        start_supervised!(
          {ScriptServer,
           executable: node,
           args: ["oidc_provider.mjs", "--client-id-metadata-documents"],
           env: [{"NODE_EXTRA_CA_CERTS", ca}]}
        )

      %{"issuer" => issuer} = ScriptServer.info(server)
      %{issuer: issuer, tls: [certfile: cert, keyfile: key]}
    end

    test "obtain_client/3 picks CIMD, and oidc-provider accepts that client_id by fetching the document", %{
      issuer: issuer,
      tls: tls
    } do
      test_pid = self()

      documents =
        FixtureServer.start!(
          fn request ->
            send(test_pid, {:document_fetched, request.path})
            document = :persistent_term.get({__MODULE__, :document, test_pid})
            {:respond, 200, [{"content-type", "application/json"}], ExMCP.Test.JSON.encode!(document)}
          end,
          tls: tls
        )

      on_exit(fn -> :persistent_term.erase({__MODULE__, :document, test_pid}) end)
      url = FixtureServer.url(documents, "/oauth/client.json")
      assert String.starts_with?(url, "https://127.0.0.1:")

      # The document this client serves, built by the draft's rules.
      assert {:ok, document} = CR.client_metadata_document(url, @metadata)
      :persistent_term.put({__MODULE__, :document, test_pid}, document)

      assert {:ok, discovery} = CR.discover(issuer <> "/mcp", issuer: issuer)
      assert discovery.authorization_server.client_id_metadata_document_supported == true

      assert {:ok, client} = CR.obtain_client(discovery, @metadata, client_metadata_url: url)

      assert %{
               client_id: ^url,
               client_secret: nil,
               registration_method: :client_id_metadata_document,
               token_endpoint_auth_method: "none",
               issuer: ^issuer
             } = client

      # A real authorization request with that client_id: oidc-provider
      # fetches the document, checks it, and goes on to its login
      # interaction (a redirect) instead of answering invalid_client.
      query =
        URI.encode_query(%{
          "client_id" => client.client_id,
          "redirect_uri" => hd(client.redirect_uris),
          "response_type" => "code",
          "scope" => "openid",
          "code_challenge" => "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
          "code_challenge_method" => "S256"
        })

      {:ok, {{_, status, _}, headers, body}} =
        :httpc.request(
          :get,
          {String.to_charlist(discovery.authorization_server.authorization_endpoint <> "?" <> query), []},
          [timeout: 10_000, autoredirect: false],
          body_format: :binary
        )

      assert status in [302, 303], "status #{status}: #{body}"
      location = List.to_string(:proplists.get_value(~c"location", headers))
      assert location =~ "/interaction/"
      assert_received {:document_fetched, "/oauth/client.json"}
    end
  end

  describe "the MCP Python SDK's authorization server" do
    setup do
      unless File.exists?(@python) do
        flunk("#{@python} is missing: run bin/setup (it creates the venv from test/servers/requirements.txt)")
      end

      server = start_supervised!({ScriptServer, executable: @python, args: ["python_auth_server.py"]})
      %{"mcp_url" => mcp_url, "issuer" => issuer} = ScriptServer.info(server)
      %{mcp_url: mcp_url, issuer: issuer}
    end

    test "RFC 9728 then RFC 8414 discovery, and registration", %{mcp_url: mcp_url, issuer: issuer} do
      assert {:ok, discovery} = CR.discover(mcp_url)
      base = String.trim_trailing(issuer, "/")
      assert discovery.issuer == issuer
      assert discovery.resource == mcp_url
      assert discovery.scope == "mcp:read mcp:write"
      assert discovery.authorization_server_metadata_url == base <> "/.well-known/oauth-authorization-server"

      assert discovery.authorization_server.token_endpoint_auth_methods_supported == [
               "client_secret_post",
               "client_secret_basic"
             ]

      assert {:ok, client} = CR.obtain_client(discovery, @metadata)
      # none is not offered; client_secret_basic comes before client_secret_post.
      assert client.token_endpoint_auth_method == "client_secret_basic"
      assert %{registration_method: :dynamic, issuer: ^issuer, scope: "mcp:read mcp:write"} = client
      assert is_binary(client.client_secret)
    end
  end
end
