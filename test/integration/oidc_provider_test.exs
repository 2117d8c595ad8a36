defmodule ExMCP.Integration.OidcProviderTest do
  @moduledoc """
  ClientRegistration against a real RFC 7591/7592 server: the npm package
  `oidc-provider` (test/servers), started and stopped by the tests.

  Needs Node and `npm ci --prefix test/servers`. Run alone with
  `mix test --only oidc_provider`.
  """

  use ExUnit.Case, async: false

  alias ExMCP.Authorization.ClientRegistration
  alias ExMCP.Test.OidcProvider

  @moduletag :oidc_provider

  @client_name "Café 日本"
  @redirect_uri "http://127.0.0.1:8080/cb"
  @contacts ["ops@example.com", "dev@example.com"]
  @logo_uri "https://example.com/logo.png"

  # What oidc-provider 9 answers to every refused registration access token
  # (unknown, deleted or rotated away): 401 with this JSON body.
  @invalid_token {:registration_error, 401,
                  %{"error" => "invalid_token", "error_description" => "invalid token provided"}}

  # The members of oidc-provider's client record that are not RFC 7591 metadata.
  @provider_extra %{
    "dpop_bound_access_tokens" => false,
    "id_token_signed_response_alg" => "RS256",
    "post_logout_redirect_uris" => [],
    "require_auth_time" => false,
    "require_pushed_authorization_requests" => false,
    "subject_type" => "public"
  }

  defp start_provider(opts \\ []) do
    pid = start_supervised!({OidcProvider, opts})
    OidcProvider.info(pid)
  end

  defp request(%{registration_endpoint: endpoint}) do
    %{
      registration_endpoint: endpoint,
      client_name: @client_name,
      redirect_uris: [@redirect_uri],
      scope: "mcp:read mcp:write",
      contacts: @contacts,
      logo_uri: @logo_uri,
      software_id: "ex-mcp-integration",
      software_version: "1.2.3"
    }
  end

  defp register!(server, opts \\ []) do
    assert {:ok, client} = ClientRegistration.register_client(request(server), opts)
    client
  end

  describe "the test server" do
    test "listens on 127.0.0.1 and publishes its registration endpoint" do
      %{port: port, issuer: issuer, registration_endpoint: endpoint} = start_provider()

      assert is_integer(port) and port > 0
      assert issuer == "http://127.0.0.1:#{port}"
      assert endpoint == "http://127.0.0.1:#{port}/reg"
    end

    test "is gone once stopped" do
      server = start_provider()
      _ = register!(server)

      :ok = stop_supervised(OidcProvider)

      assert {:error, {:request_failed, {:connect, message}}} =
               ClientRegistration.register_client(request(server))

      assert message =~ "Connection refused"
    end
  end

  describe "registration and management" do
    setup do
      %{server: start_provider()}
    end

    test "registers a client with a Unicode name and every metadata field intact", %{server: server} do
      client = register!(server)

      # URL-safe, since it ends the registration client URI.
      assert client.client_id =~ ~r/^[A-Za-z0-9_-]+$/
      assert byte_size(client.registration_access_token) >= 32
      assert client.registration_client_uri == "#{server.registration_endpoint}/#{client.client_id}"
      assert_in_delta client.client_id_issued_at, System.system_time(:second), 60

      assert Map.drop(client, [
               :client_id,
               :registration_access_token,
               :registration_client_uri,
               :client_id_issued_at
             ]) == %{
               client_name: "Café 日本",
               redirect_uris: [@redirect_uri],
               grant_types: ["authorization_code"],
               response_types: ["code"],
               scope: "mcp:read mcp:write",
               token_endpoint_auth_method: "none",
               application_type: "native",
               contacts: @contacts,
               logo_uri: @logo_uri,
               software_id: "ex-mcp-integration",
               software_version: "1.2.3",
               client_secret: nil,
               client_secret_expires_at: nil,
               extra: @provider_extra
             }

      assert client.client_name == "Caf\u00E9 \u65E5\u672C"
      assert byte_size(client.client_name) == 12
    end

    test "get returns the registered client, Unicode name included", %{server: server} do
      client = register!(server)

      assert {:ok, read} =
               ClientRegistration.get_client_information(
                 client.registration_client_uri,
                 client.registration_access_token
               )

      assert read == client
      assert read.client_name == "Café 日本"
    end

    test "a partial update changes only the given field (merge mode)", %{server: server} do
      client = register!(server)

      assert {:ok, updated} =
               ClientRegistration.update_client_information(
                 client.registration_client_uri,
                 client.registration_access_token,
                 %{client_name: "Café 日本 v2"}
               )

      assert updated.client_name == "Café 日本 v2"
      # Everything else is what was registered, the token included (no rotation).
      assert Map.delete(updated, :client_name) == Map.delete(client, :client_name)
      assert updated.redirect_uris == [@redirect_uri]
      assert updated.contacts == @contacts
      assert updated.logo_uri == @logo_uri
      assert updated.scope == "mcp:read mcp:write"
      assert updated.token_endpoint_auth_method == "none"
      assert updated.registration_access_token == client.registration_access_token

      assert {:ok, ^updated} =
               ClientRegistration.get_client_information(
                 client.registration_client_uri,
                 client.registration_access_token
               )
    end

    test "a nil in a merge update removes that field only", %{server: server} do
      client = register!(server)

      assert {:ok, updated} =
               ClientRegistration.update_client_information(
                 client.registration_client_uri,
                 client.registration_access_token,
                 %{logo_uri: nil}
               )

      refute Map.has_key?(updated, :logo_uri)
      assert updated == Map.delete(client, :logo_uri)

      assert {:ok, ^updated} =
               ClientRegistration.get_client_information(
                 client.registration_client_uri,
                 client.registration_access_token
               )
    end

    test "replace: true sends the updates as the whole record", %{server: server} do
      client = register!(server)

      assert {:ok, replaced} =
               ClientRegistration.update_client_information(
                 client.registration_client_uri,
                 client.registration_access_token,
                 %{
                   client_id: client.client_id,
                   client_name: "Replaced",
                   redirect_uris: ["http://localhost/cb"],
                   application_type: "native",
                   token_endpoint_auth_method: "none"
                 },
                 replace: true
               )

      # contacts, logo_uri, scope and software_* were not sent, so they are gone.
      assert replaced == %{
               client_id: client.client_id,
               client_id_issued_at: client.client_id_issued_at,
               registration_access_token: client.registration_access_token,
               registration_client_uri: client.registration_client_uri,
               client_name: "Replaced",
               redirect_uris: ["http://localhost/cb"],
               grant_types: ["authorization_code"],
               response_types: ["code"],
               scope: "",
               token_endpoint_auth_method: "none",
               application_type: "native",
               client_secret: nil,
               client_secret_expires_at: nil,
               extra: @provider_extra
             }

      assert {:ok, ^replaced} =
               ClientRegistration.get_client_information(
                 client.registration_client_uri,
                 client.registration_access_token
               )
    end

    test "RFC 7592 §2.2: a confidential client's merge update sends its secret back, and the server keeps it",
         %{server: server} do
      assert {:ok, client} =
               ClientRegistration.register_client(
                 Map.put(request(server), :token_endpoint_auth_method, "client_secret_basic")
               )

      assert is_binary(client.client_secret)

      assert {:ok, updated} =
               ClientRegistration.update_client_information(
                 client.registration_client_uri,
                 client.registration_access_token,
                 %{client_name: "Confidential v2"}
               )

      # oidc-provider checks a client_secret in the PUT against the client's
      # own and refuses a mismatch: the one the read returned is accepted.
      assert updated.client_secret == client.client_secret
      assert updated.token_endpoint_auth_method == "client_secret_basic"
      assert updated.client_name == "Confidential v2"
    end

    test "SEP-837: an update that moves to a private-use redirect URI makes the client native", %{
      server: server
    } do
      assert {:ok, client} =
               ClientRegistration.register_client(%{
                 request(server)
                 | redirect_uris: ["https://app.example.com/cb"]
               })

      assert client.application_type == "web"

      # oidc-provider refuses a non-web redirect URI for a web client, so a
      # stale application_type would fail this update.
      assert {:ok, updated} =
               ClientRegistration.update_client_information(
                 client.registration_client_uri,
                 client.registration_access_token,
                 %{redirect_uris: ["com.example.app:/oauth2redirect"]}
               )

      assert updated.application_type == "native"
      assert updated.redirect_uris == ["com.example.app:/oauth2redirect"]
    end

    test "delete removes the client and its token", %{server: server} do
      client = register!(server)
      uri = client.registration_client_uri
      token = client.registration_access_token

      assert :ok = ClientRegistration.delete_client(uri, token)

      assert {:error, @invalid_token} = ClientRegistration.get_client_information(uri, token)
      assert {:error, @invalid_token} = ClientRegistration.delete_client(uri, token)

      assert {:error, @invalid_token} =
               ClientRegistration.update_client_information(uri, token, %{client_name: "Ghost"})
    end

    test "a wrong registration access token is refused with 401 invalid_token", %{server: server} do
      client = register!(server)
      uri = client.registration_client_uri

      assert {:error, @invalid_token} = ClientRegistration.get_client_information(uri, "not-the-token")

      assert {:error, @invalid_token} =
               ClientRegistration.update_client_information(uri, "not-the-token", %{client_name: "x"})

      assert {:error, @invalid_token} =
               ClientRegistration.update_client_information(
                 uri,
                 "not-the-token",
                 %{client_id: client.client_id, client_name: "x", redirect_uris: [@redirect_uri]},
                 replace: true
               )

      assert {:error, @invalid_token} = ClientRegistration.delete_client(uri, "not-the-token")

      assert ClientRegistration.format_error(@invalid_token) ==
               "the authorization server refused the request (HTTP 401): invalid_token: invalid token provided"

      # The refusals changed nothing.
      assert {:ok, ^client} = ClientRegistration.get_client_information(uri, client.registration_access_token)
    end
  end

  describe "a server requiring an initial access token" do
    setup do
      %{server: start_provider(initial_access_token: "initial-token-42")}
    end

    test "refuses a registration without it", %{server: server} do
      assert {:error,
              {:registration_error, 401,
               %{"error" => "invalid_token", "error_description" => "no access token provided"}}} =
               ClientRegistration.register_client(request(server))
    end

    test "refuses a registration with a wrong one", %{server: server} do
      assert {:error, @invalid_token} =
               ClientRegistration.register_client(request(server), initial_access_token: "initial-token-41")
    end

    test "registers with it, then manages with the registration access token alone", %{server: server} do
      client = register!(server, initial_access_token: "initial-token-42")

      assert client.client_name == "Café 日本"
      assert client.registration_access_token != "initial-token-42"

      assert {:ok, ^client} =
               ClientRegistration.get_client_information(
                 client.registration_client_uri,
                 client.registration_access_token
               )
    end
  end

  describe "a server rotating the registration access token" do
    setup do
      %{server: start_provider(rotate: true)}
    end

    test "an update returns a new token; the new one works and the old one is refused", %{
      server: server
    } do
      client = register!(server)
      uri = client.registration_client_uri
      old_token = client.registration_access_token

      assert {:ok, updated} =
               ClientRegistration.update_client_information(uri, old_token, %{client_name: "Rotated"})

      new_token = updated.registration_access_token
      assert byte_size(new_token) >= 32
      assert new_token != old_token
      assert updated.registration_client_uri == uri
      assert updated.client_name == "Rotated"

      assert Map.drop(updated, [:client_name, :registration_access_token]) ==
               Map.drop(client, [:client_name, :registration_access_token])

      assert {:ok, ^updated} = ClientRegistration.get_client_information(uri, new_token)
      assert {:error, @invalid_token} = ClientRegistration.get_client_information(uri, old_token)

      # Each update rotates again.
      assert {:ok, again} =
               ClientRegistration.update_client_information(uri, new_token, %{client_name: "Again"})

      assert again.registration_access_token not in [old_token, new_token]
      assert {:error, @invalid_token} = ClientRegistration.get_client_information(uri, new_token)
      assert {:ok, ^again} = ClientRegistration.get_client_information(uri, again.registration_access_token)
    end
  end

  describe "a confidential client (client_secret_basic)" do
    setup do
      %{server: start_provider()}
    end

    test "RFC 7591 §3.2.1: gets a secret that never expires, keeps it, and the secret authenticates the client",
         %{server: server} do
      request =
        Map.merge(request(server), %{
          token_endpoint_auth_method: "client_secret_basic",
          grant_types: ["authorization_code", "client_credentials"]
        })

      assert {:ok, client} = ClientRegistration.register_client(request)
      assert client.token_endpoint_auth_method == "client_secret_basic"
      assert client.grant_types == ["authorization_code", "client_credentials"]
      secret = client.client_secret
      assert byte_size(secret) >= 32
      # REQUIRED when a secret is issued; 0 means it never expires.
      assert client.client_secret_expires_at == 0

      # RFC 6749 §2.3.1: the secret works at the token endpoint, with HTTP Basic.
      assert {200, %{"access_token" => _, "token_type" => "Bearer"}} =
               client_credentials(server, client.client_id, secret)

      assert {401, %{"error" => "invalid_client"}} =
               client_credentials(server, client.client_id, secret <> "x")

      uri = client.registration_client_uri
      token = client.registration_access_token
      assert {:ok, ^client} = ClientRegistration.get_client_information(uri, token)

      # RFC 7592 §2.2: the merge update does not send the secret back, and the
      # server keeps it; the client is still confidential.
      assert {:ok, updated} =
               ClientRegistration.update_client_information(uri, token, %{client_name: "Renamed"})

      assert updated.client_name == "Renamed"
      assert updated.client_secret == secret
      assert updated.token_endpoint_auth_method == "client_secret_basic"
      assert {200, _} = client_credentials(server, client.client_id, secret)

      assert :ok = ClientRegistration.delete_client(uri, token)
      assert {401, %{"error" => "invalid_client"}} = client_credentials(server, client.client_id, secret)
    end
  end

  # A client credentials grant (RFC 6749 §4.4) at oidc-provider's token
  # endpoint, authenticated with client_secret_basic: {status, decoded body}.
  defp client_credentials(%{issuer: issuer}, client_id, secret) do
    {:ok, _} = Application.ensure_all_started(:inets)
    credentials = Base.encode64(URI.encode_www_form(client_id) <> ":" <> URI.encode_www_form(secret))
    headers = [{~c"authorization", String.to_charlist("Basic " <> credentials)}]
    body = "grant_type=client_credentials&scope=mcp%3Aread"
    url = String.to_charlist(issuer <> "/token")

    {:ok, {{_, status, _}, _headers, answer}} =
      :httpc.request(:post, {url, headers, ~c"application/x-www-form-urlencoded", body}, [],
        body_format: :binary
      )

    {:ok, decoded} = ExMCP.Authorization.Native.json_decode(answer)
    {status, decoded}
  end

  describe "over TLS, with the CA given as :cacertfile" do
    setup do
      dir = ExMCP.Test.Certificates.tmp_dir!("ex_mcp_oidc_tls")
      on_exit(fn -> File.rm_rf!(dir) end)
      certs = ExMCP.Test.Certificates.loopback!(dir)

      server = start_provider(tls: [certfile: certs.cert, keyfile: certs.key, cacertfile: certs.ca])

      %{server: server, ca: certs.ca}
    end

    test "the full RFC 7591 / RFC 7592 cycle against a real https server", %{server: server, ca: ca} do
      assert "https://127.0.0.1:" <> _ = server.registration_endpoint

      assert {:ok, client} = ClientRegistration.register_client(request(server), cacertfile: ca)
      uri = client.registration_client_uri
      token = client.registration_access_token
      assert uri == "#{server.registration_endpoint}/#{client.client_id}"
      assert client.client_name == @client_name

      assert {:ok, ^client} = ClientRegistration.get_client_information(uri, token, cacertfile: ca)

      assert {:ok, %{client_name: "Over TLS"}} =
               ClientRegistration.update_client_information(uri, token, %{client_name: "Over TLS"},
                 cacertfile: ca
               )

      assert :ok = ClientRegistration.delete_client(uri, token, cacertfile: ca)
      assert {:error, @invalid_token} = ClientRegistration.get_client_information(uri, token, cacertfile: ca)
    end

    test "without the CA, the real server's certificate is refused (unknown issuer)", %{server: server} do
      assert {:error, {:request_failed, {:tls, message}}} =
               ClientRegistration.register_client(request(server))

      assert message =~ "UnknownIssuer"
    end
  end
end
