defmodule ExMCP.Authorization.DiscoveryTest do
  # discover/2 and obtain_client/3 through the NIF against a scripted server
  # on 127.0.0.1: the result shapes, the registration priority of the MCP
  # specification (2025-11-25, "Client Registration Approaches") and the
  # error reasons. Every order case of discovery is pinned in Rust
  # (native/mcp_registration/src/discovery/tests.rs); here the shapes.
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.ClientRegistration, as: CR
  alias ExMCP.Test.FixtureServer
  alias ExMCP.Test.JSON

  @json [{"content-type", "application/json"}]

  # A server whose routes are built from its own base URL.
  defp serve(routes) do
    parent = self()
    ref = make_ref()

    server =
      FixtureServer.start!(fn request ->
        base = :persistent_term.get({__MODULE__, ref})
        send(parent, {:path, request.path})

        case Map.fetch(routes.(base), request.path) do
          {:ok, {status, body}} -> {:respond, status, @json, JSON.encode!(body)}
          {:ok, body} -> {:respond, 200, @json, JSON.encode!(body)}
          :error -> {:respond, 404, @json, ~s({"error":"not_found"})}
        end
      end)

    base = String.trim_trailing(FixtureServer.url(server, "/"), "/")
    :persistent_term.put({__MODULE__, ref}, base)
    on_exit(fn -> :persistent_term.erase({__MODULE__, ref}) end)
    {server, base}
  end

  defp as_metadata(base, extra \\ %{}) do
    Map.merge(
      %{
        "issuer" => base,
        "authorization_endpoint" => base <> "/authorize",
        "token_endpoint" => base <> "/token",
        "registration_endpoint" => base <> "/register",
        "token_endpoint_auth_methods_supported" => ["client_secret_post", "none"],
        "code_challenge_methods_supported" => ["S256"],
        "x-vendor-flag" => true
      },
      extra
    )
  end

  defp prm(base, extra \\ %{}),
    do: Map.merge(%{"resource" => base <> "/mcp", "authorization_servers" => [base]}, extra)

  @metadata %{client_name: "Discovery test", redirect_uris: ["http://127.0.0.1:8080/cb"]}

  test "discover/2: RFC 9728 then RFC 8414; atom keys for known members, :extra for the rest" do
    {_server, base} =
      serve(fn base ->
        %{
          "/.well-known/oauth-protected-resource/mcp" =>
            prm(base, %{"scopes_supported" => ["mcp:read", "mcp:write"]}),
          "/.well-known/oauth-authorization-server" => as_metadata(base)
        }
      end)

    assert {:ok, discovery} = CR.discover(base <> "/mcp")

    assert %{
             server_url: server_url,
             resource: resource,
             resource_metadata: %{"authorization_servers" => [^base]},
             resource_metadata_url: prm_url,
             issuer: ^base,
             authorization_server: as,
             authorization_server_metadata: :discovered,
             authorization_server_metadata_url: as_url,
             scope: "mcp:read mcp:write",
             allow_private_networks: false
           } = discovery

    assert server_url == base <> "/mcp"
    assert resource == base <> "/mcp"
    assert prm_url == base <> "/.well-known/oauth-protected-resource/mcp"
    assert as_url == base <> "/.well-known/oauth-authorization-server"
    assert as.registration_endpoint == base <> "/register"
    assert as.code_challenge_methods_supported == ["S256"]
    assert as.client_id_metadata_document_supported == nil
    assert as.grant_types_supported == nil
    assert as.extra == %{"x-vendor-flag" => true}
  end

  test "discover/2: the WWW-Authenticate challenge's resource_metadata and scope win" do
    {_server, base} =
      serve(fn base ->
        %{
          "/custom/prm" => prm(base, %{"scopes_supported" => ["all"]}),
          "/.well-known/oauth-authorization-server" => as_metadata(base)
        }
      end)

    header = ~s(Bearer error="invalid_token", resource_metadata="#{base}/custom/prm", scope="mcp:read")
    assert {:ok, discovery} = CR.discover(base <> "/mcp", www_authenticate: [~s(Basic realm="x"), header])
    assert discovery.scope == "mcp:read"
    assert discovery.resource_metadata_url == base <> "/custom/prm"
    assert_received {:path, "/custom/prm"}
    refute_received {:path, "/.well-known/oauth-protected-resource/mcp"}
  end

  test "discover/2: :resource_metadata_url is fetched first; :issuer skips RFC 9728" do
    {_server, base} =
      serve(fn base ->
        %{
          "/custom/prm" => prm(base),
          "/.well-known/oauth-authorization-server" => as_metadata(base)
        }
      end)

    assert {:ok, discovery} = CR.discover(base <> "/mcp", resource_metadata_url: base <> "/custom/prm")
    assert discovery.resource_metadata_url == base <> "/custom/prm"
    assert_received {:path, "/custom/prm"}
    refute_received {:path, "/.well-known/oauth-protected-resource/mcp"}

    assert {:ok, discovery} = CR.discover(base <> "/mcp", issuer: base)
    assert discovery.resource_metadata == nil
    assert discovery.issuer == base
    refute_received {:path, "/.well-known/oauth-protected-resource/mcp"}
  end

  test "obtain_client/3 on a 2025-03-26 server: registration at the default /register" do
    {_server, base} = serve(fn _ -> %{"/register" => {201, %{"client_id" => "legacy-1"}}} end)

    assert {:ok, client} = CR.obtain_client(base <> "/mcp", @metadata)
    assert %{client_id: "legacy-1", issuer: ^base, registration_method: :dynamic} = client
    # No metadata, so no list of methods: RFC 8414 §2's default.
    assert client.token_endpoint_auth_method == "client_secret_basic"
    assert_received {:path, "/register"}
  end

  test "discover/2: 2025-03-26 servers without any metadata get the default endpoints" do
    {_server, base} = serve(fn _ -> %{} end)
    assert {:ok, discovery} = CR.discover(base <> "/mcp")
    assert discovery.authorization_server_metadata == :defaults
    assert discovery.authorization_server_metadata_url == nil
    assert discovery.resource_metadata == nil
    assert discovery.issuer == base
    assert discovery.authorization_server.registration_endpoint == base <> "/register"
    assert discovery.authorization_server.token_endpoint == base <> "/token"
    assert discovery.authorization_server.authorization_endpoint == base <> "/authorize"
  end

  test "discover/2 reasons: 5xx, resource mismatch, issuer mismatch, refused URL, format_error/1" do
    {_server, base} = serve(fn _ -> %{"/.well-known/oauth-protected-resource/mcp" => {500, %{}}} end)

    assert {:error, {:discovery_failed, url, {:http_error, 500, _}} = reason} = CR.discover(base <> "/mcp")
    assert url == base <> "/.well-known/oauth-protected-resource/mcp"
    assert CR.format_error(reason) =~ "discovery stopped at #{url}: the server answered HTTP 500"

    {_server, base} =
      serve(fn _ -> %{"/.well-known/oauth-protected-resource" => prm("https://other.example.com")} end)

    assert {:error, {:resource_mismatch, "https://other.example.com/mcp", _} = reason} = CR.discover(base)
    assert CR.format_error(reason) =~ "does not cover"

    {_server, base} =
      serve(fn base ->
        %{
          "/.well-known/oauth-protected-resource" => prm(base, %{"resource" => base}),
          "/.well-known/oauth-authorization-server" => as_metadata("https://evil.example.com")
        }
      end)

    assert {:error, {:issuer_mismatch, ^base, "https://evil.example.com"} = reason} = CR.discover(base)
    assert CR.format_error(reason) =~ "RFC 8414 §3.3"

    {_server, base} =
      serve(fn base ->
        %{
          "/.well-known/oauth-protected-resource" =>
            prm(base, %{"resource" => base, "authorization_servers" => ["https://169.254.169.254/"]})
        }
      end)

    assert {:error, {:url_refused, "https://169.254.169.254/", message} = reason} = CR.discover(base)

    assert message =~ "cloud metadata"
    assert CR.format_error(reason) =~ "refused to contact"
  end

  test "discover/2 checks its arguments" do
    assert {:error, :https_required} = CR.discover("http://mcp.example.com/mcp")

    assert {:error, {:invalid_www_authenticate, _}} =
             CR.discover("https://mcp.example.com/", www_authenticate: ~s(Bearer x="))

    assert_raise ArgumentError, ~r/:www_authenticate/, fn ->
      CR.discover("https://a.example/", www_authenticate: 1)
    end

    assert_raise ArgumentError, ~r/:allow_private_networks/, fn ->
      CR.discover("https://a.example/", allow_private_networks: 1)
    end

    assert_raise ArgumentError, ~r/server_url/, fn -> CR.discover(:nope) end
  end

  describe "obtain_client/3" do
    test "1. a pre-registered :client_id is used with no network call" do
      assert {:ok, client} =
               CR.obtain_client("https://mcp.example.com/mcp", @metadata,
                 client_id: "pre-1",
                 client_secret: "s3cret",
                 issuer: "https://as.example.com"
               )

      assert %{
               client_id: "pre-1",
               client_secret: "s3cret",
               issuer: "https://as.example.com",
               registration_method: :pre_registered,
               token_endpoint_auth_method: "client_secret_basic",
               redirect_uris: ["http://127.0.0.1:8080/cb"],
               registration_access_token: nil
             } = client
    end

    test "2. a Client ID Metadata Document when the server advertises it" do
      {_server, base} =
        serve(fn base ->
          %{
            "/.well-known/oauth-protected-resource/mcp" => prm(base),
            "/.well-known/oauth-authorization-server" =>
              as_metadata(base, %{"client_id_metadata_document_supported" => true})
          }
        end)

      url = "https://app.example.com/oauth/client.json"
      assert {:ok, client} = CR.obtain_client(base <> "/mcp", @metadata, client_metadata_url: url)

      assert %{
               client_id: ^url,
               client_secret: nil,
               issuer: ^base,
               registration_method: :client_id_metadata_document,
               token_endpoint_auth_method: "none"
             } = client

      refute_received {:path, "/register"}

      # The draft's URL rules (client_metadata_document/3): https with a path.
      assert {:error, {:invalid_field, :client_id, _}} =
               CR.obtain_client(base <> "/mcp", @metadata, client_metadata_url: "https://app.example.com/")

      # Loopback http only because discovery started on loopback.
      assert {:ok, %{client_id: "http://127.0.0.1:9/client.json"}} =
               CR.obtain_client(base <> "/mcp", @metadata,
                 client_metadata_url: "http://127.0.0.1:9/client.json"
               )
    end

    test "3. dynamic registration with discovery's scope and the server's auth method" do
      {_server, base} =
        serve(fn base ->
          %{
            "/.well-known/oauth-protected-resource/mcp" => prm(base, %{"scopes_supported" => ["mcp:read"]}),
            "/.well-known/oauth-authorization-server" =>
              as_metadata(base, %{
                "token_endpoint_auth_methods_supported" => ["private_key_jwt", "client_secret_post"]
              }),
            "/register" =>
              {201, %{"client_id" => "dyn-1", "client_secret" => "x", "client_secret_expires_at" => 0}}
          }
        end)

      assert {:ok, discovery} = CR.discover(base <> "/mcp")
      # Without CIMD support, a :client_metadata_url is not used.
      assert {:ok, client} =
               CR.obtain_client(discovery, @metadata,
                 client_metadata_url: "https://app.example.com/c.json",
                 initial_access_token: "iat-1"
               )

      assert %{client_id: "dyn-1", issuer: ^base, registration_method: :dynamic} = client
      assert client.token_endpoint_auth_method == "client_secret_post"
    end

    test "3. the request the server received: scope, auth method, initial access token" do
      test_pid = self()

      server =
        FixtureServer.start!(fn request ->
          base = "http://127.0.0.1:#{:persistent_term.get({__MODULE__, :port, test_pid})}"

          case request.path do
            "/.well-known/oauth-authorization-server" ->
              {:respond, 200, @json,
               JSON.encode!(
                 as_metadata(base, %{"token_endpoint_auth_methods_supported" => ["private_key_jwt"]})
               )}

            "/register" ->
              send(test_pid, {:registered, request})
              {:respond, 201, @json, ~s({"client_id":"dyn-2"})}

            _ ->
              {:respond, 404, @json, "{}"}
          end
        end)

      port = FixtureServer.port(server)
      :persistent_term.put({__MODULE__, :port, test_pid}, port)
      on_exit(fn -> :persistent_term.erase({__MODULE__, :port, test_pid}) end)

      www = ~s(Bearer scope="files:read")

      assert {:ok, client} =
               CR.obtain_client("http://127.0.0.1:#{port}/mcp", @metadata,
                 www_authenticate: www,
                 initial_access_token: "iat-2"
               )

      assert_received {:registered, request}
      sent = JSON.decode!(request.body)
      assert sent["scope"] == "files:read"
      # None of none/client_secret_basic/client_secret_post listed: RFC 8414 §2's default.
      assert sent["token_endpoint_auth_method"] == "client_secret_basic"
      assert {"authorization", "Bearer iat-2"} in request.headers
      assert client.token_endpoint_auth_method == "client_secret_basic"
      assert client.registration_method == :dynamic
    end

    test "4. no registration path is an error naming what was checked" do
      {_server, base} =
        serve(fn base ->
          %{
            "/.well-known/oauth-protected-resource/mcp" => prm(base),
            "/.well-known/oauth-authorization-server" =>
              Map.delete(as_metadata(base), "registration_endpoint")
          }
        end)

      assert {:error, {:no_registration_path, checked} = reason} = CR.obtain_client(base <> "/mcp", @metadata)
      assert length(checked) == 3
      assert CR.format_error(reason) =~ "no :client_id option"
      assert CR.format_error(reason) =~ "has no registration_endpoint"
    end

    test "its arguments are checked" do
      assert_raise ArgumentError, ~r/registration_endpoint/, fn ->
        CR.obtain_client(
          "https://a.example/",
          Map.put(@metadata, :registration_endpoint, "https://a.example/r")
        )
      end

      assert_raise ArgumentError, ~r/discovery map/, fn -> CR.obtain_client(%{}, @metadata) end

      assert_raise ArgumentError, ~r/:client_id/, fn ->
        CR.obtain_client("https://a.example/", @metadata, client_id: "")
      end

      error =
        assert_raise ArgumentError, fn ->
          CR.obtain_client("https://a.example/", @metadata, client_secret: ~c"s3cret")
        end

      refute error.message =~ "s3cret"
    end
  end
end
