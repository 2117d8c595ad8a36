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

      assert is_binary(message)
    end
  end

  describe "registration and management" do
    setup do
      %{server: start_provider()}
    end

    test "registers a client with a Unicode name and every metadata field intact", %{server: server} do
      client = register!(server)

      assert is_binary(client.client_id) and client.client_id != ""
      assert is_binary(client.registration_access_token) and client.registration_access_token != ""
      assert client.registration_client_uri == "#{server.registration_endpoint}/#{client.client_id}"
      assert is_integer(client.client_id_issued_at)

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
      assert is_binary(new_token) and new_token != ""
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
end
