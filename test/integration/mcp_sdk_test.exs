defmodule ExMCP.Integration.McpSdkTest do
  @moduledoc """
  Interop with a client nobody here wrote: the official MCP TypeScript SDK
  (`@modelcontextprotocol/sdk`, pinned in test/servers/package.json) discovers
  and registers with the embedded `RegistrationServer`, and its own zod
  schemas accept every answer. Then this library's `ClientRegistration`
  manages (RFC 7592) a client the SDK registered, with the registration
  access token the SDK received.

  `test/servers/sdk_register.mjs` drives the SDK and prints one JSON line.
  Needs Node and `npm ci --prefix test/servers`. Run alone with
  `mix test --only mcp_sdk`.
  """

  use ExUnit.Case, async: false

  alias ExMCP.Authorization.{ClientRegistration, RegistrationServer}
  alias ExMCP.Test.{JSON, NodeScript}

  @moduletag :mcp_sdk
  @moduletag :tmp_dir

  @sdk_dir Path.join([NodeScript.servers_dir(), "node_modules", "@modelcontextprotocol", "sdk"])
  @script_timeout 30_000

  @redirect_uri "http://localhost:3000/callback"
  @grant_types ["authorization_code", "refresh_token"]
  # U+2713 CHECK MARK, three bytes in UTF-8: it must survive Node -> Rust -> Elixir.
  @check_mark <<0x2713::utf8>>

  # The members of our answer that the SDK's OAuthClientInformationFullSchema
  # does not model, so registerClient strips them (zod `.strip()`): the SDK
  # itself has no RFC 7592 support. It does not send SEP-837's
  # application_type either, and the server, following RFC 7591, invents none.
  @sdk_stripped ["registration_access_token", "registration_client_uri"]

  setup_all do
    node = NodeScript.require_package!("@modelcontextprotocol/sdk")
    installed = JSON.decode!(File.read!(Path.join(@sdk_dir, "package.json")))["version"]
    %{node: node, sdk_version: installed}
  end

  setup do
    server = start_supervised!({RegistrationServer, port: 0})
    %{server: server, url: RegistrationServer.url(server)}
  end

  # Runs the script to completion (or kills it after @script_timeout) and
  # returns its one JSON line, decoded. Its stderr goes to a file, shown when
  # it fails.
  defp run_sdk!(%{node: node, url: url, tmp_dir: tmp_dir}, extra_args \\ []),
    do: NodeScript.run!(node, "sdk_register.mjs", [url | extra_args], tmp_dir, @script_timeout)

  defp lookup!(server, client_id) do
    assert {:ok, stored} = RegistrationServer.lookup(server, client_id),
           "client #{inspect(client_id)} registered by the SDK is not in our store"

    stored
  end

  describe "the MCP TypeScript SDK" do
    test "discovers our RFC 8414 metadata and its OAuthMetadataSchema accepts it", context do
      %{server: server, url: url, sdk_version: sdk_version} = context
      result = run_sdk!(context)

      assert result["mode"] == "register"
      assert result["sdk_version"] == sdk_version
      assert result["discovery_url"] == url <> "/.well-known/oauth-authorization-server"
      assert result["discovery_content_type"] =~ ~r{\Aapplication/json}

      # The SDK's parsed metadata (looseObject: every member kept, verbatim).
      assert result["metadata"] == %{
               "issuer" => url,
               "authorization_endpoint" => url <> "/authorize",
               "token_endpoint" => url <> "/token",
               "registration_endpoint" => RegistrationServer.registration_endpoint(server),
               "response_types_supported" => ["code"],
               "grant_types_supported" => ["authorization_code", "refresh_token", "client_credentials"],
               "token_endpoint_auth_methods_supported" => [
                 "none",
                 "client_secret_basic",
                 "client_secret_post"
               ],
               "code_challenge_methods_supported" => ["S256"],
               "authorization_response_iss_parameter_supported" => true
             }
    end

    test "registers a public and a confidential client, stored exactly as it sent them", context do
      %{server: server, url: url} = context
      result = run_sdk!(context)

      public = result["public"]
      confidential = result["confidential"]

      for {answer, name, method} <- [
            {public, "MCP TS SDK " <> @check_mark, "none"},
            {confidential, "MCP TS SDK " <> @check_mark <> " confidential", "client_secret_basic"}
          ] do
        # What the SDK sent (echoed by the script) is what this test expects.
        assert answer["sent"] == %{
                 "client_name" => name,
                 "redirect_uris" => [@redirect_uri],
                 "grant_types" => @grant_types,
                 "response_types" => ["code"],
                 "token_endpoint_auth_method" => method
               }

        assert answer["status"] == 201
        assert answer["url"] == RegistrationServer.registration_endpoint(server)
        assert answer["content_type"] =~ ~r{\Aapplication/json}
        assert answer["cache_control"] == "no-store"
        assert answer["sdk_stripped"] == @sdk_stripped
        assert answer["sdk_auth_method"] == method

        sdk = answer["sdk"]
        wire = answer["wire"]
        client_id = sdk["client_id"]
        assert is_binary(client_id) and client_id != ""

        stored = lookup!(server, client_id)

        # The metadata the SDK sent, stored untouched; nothing added but the
        # RFC 7591 §2 defaults (the SDK sends every one of them itself).
        assert stored.client_name == name
        assert String.contains?(stored.client_name, @check_mark)
        assert stored.redirect_uris == [@redirect_uri]
        assert stored.grant_types == @grant_types
        assert stored.response_types == ["code"]
        assert stored.token_endpoint_auth_method == method
        refute Map.has_key?(stored, :application_type)
        assert stored.scope == ""

        # The SDK's parsed view agrees with our store on every field it models.
        assert sdk["client_name"] == stored.client_name
        assert sdk["redirect_uris"] == stored.redirect_uris
        assert sdk["grant_types"] == stored.grant_types
        assert sdk["response_types"] == stored.response_types
        assert sdk["token_endpoint_auth_method"] == stored.token_endpoint_auth_method
        assert sdk["client_id_issued_at"] == stored.client_id_issued_at
        assert sdk["client_secret"] == stored.client_secret
        assert sdk["client_secret_expires_at"] == stored.client_secret_expires_at

        # What it got on the wire carries the RFC 7592 credentials we hold.
        assert wire["client_id"] == client_id
        refute Map.has_key?(wire, "application_type")
        assert wire["registration_access_token"] == stored.registration_access_token
        assert wire["registration_client_uri"] == url <> "/register/" <> client_id
        assert stored.registration_client_uri == wire["registration_client_uri"]
      end

      # A client secret for client_secret_basic only.
      refute Map.has_key?(public["sdk"], "client_secret")
      refute Map.has_key?(public["wire"], "client_secret")
      refute Map.has_key?(public["wire"], "client_secret_expires_at")
      assert public["has_client_secret"] == false
      assert lookup!(server, public["sdk"]["client_id"]).client_secret == nil

      assert confidential["has_client_secret"] == true
      secret = confidential["sdk"]["client_secret"]
      assert is_binary(secret) and byte_size(secret) >= 43
      assert confidential["sdk"]["client_secret_expires_at"] == 0
      assert lookup!(server, confidential["sdk"]["client_id"]).client_secret == secret

      assert public["sdk"]["client_id"] != confidential["sdk"]["client_id"]
      assert RegistrationServer.count(server) == 3

      # As a set: list/1 orders by client_id_issued_at, whole seconds, then by
      # client_id, so registrations in one second come back in either order.
      assert server |> RegistrationServer.list() |> Enum.map(& &1.client_id) |> Enum.sort() ==
               Enum.sort([
                 public["sdk"]["client_id"],
                 confidential["sdk"]["client_id"],
                 result["defaulted"]["sdk"]["client_id"]
               ])
    end

    test "RFC 7591 §2: a registration without token_endpoint_auth_method gets client_secret_basic and a secret; unknown metadata is ignored",
         context do
      %{server: server} = context
      defaulted = run_sdk!(context)["defaulted"]

      assert defaulted["sent"] == %{
               "client_name" => "MCP TS SDK #{@check_mark} defaults",
               "redirect_uris" => [@redirect_uri],
               "x_vendor_extension" => %{"tier" => "gold"}
             }

      assert defaulted["status"] == 201
      wire = defaulted["wire"]
      assert wire["token_endpoint_auth_method"] == "client_secret_basic"
      assert wire["grant_types"] == ["authorization_code"]
      assert wire["response_types"] == ["code"]
      assert is_binary(wire["client_secret"]) and byte_size(wire["client_secret"]) >= 43
      assert wire["client_secret_expires_at"] == 0
      refute Map.has_key?(wire, "x_vendor_extension"), "neither stored nor echoed"

      # The SDK reads it as a confidential client and would authenticate with Basic.
      assert defaulted["has_client_secret"] == true
      assert defaulted["sdk_auth_method"] == "client_secret_basic"
      assert defaulted["sdk"]["client_secret"] == wire["client_secret"]

      stored = lookup!(server, wire["client_id"])
      assert stored.client_secret == wire["client_secret"]
      refute Map.has_key?(stored, :extra)
    end

    test "its auth() orchestrator registers with us and builds a PKCE authorization request", context do
      %{server: server, url: url} = context
      result = run_sdk!(context, ["--auth-flow"])

      assert result["mode"] == "auth-flow"
      assert result["result"] == "REDIRECT"

      # RFC 9728 is not served (404), so the SDK falls back to the base URL as
      # the authorization server, then RFC 8414, then RFC 7591.
      assert result["requests"] == [
               %{"method" => "GET", "url" => url <> "/.well-known/oauth-protected-resource", "status" => 404},
               %{
                 "method" => "GET",
                 "url" => url <> "/.well-known/oauth-authorization-server",
                 "status" => 200
               },
               %{"method" => "POST", "url" => url <> "/register", "status" => 201}
             ]

      info = result["client_information"]
      stored = lookup!(server, info["client_id"])
      assert stored.client_name == "MCP TS SDK #{@check_mark} auth()"
      assert stored.token_endpoint_auth_method == "none"
      refute Map.has_key?(stored, :application_type)
      assert info["client_name"] == stored.client_name
      assert RegistrationServer.count(server) == 1

      assert result["authorization_endpoint"] == url <> "/authorize"

      assert %{
               "response_type" => "code",
               "client_id" => client_id,
               "code_challenge_method" => "S256",
               "redirect_uri" => @redirect_uri,
               "code_challenge" => challenge
             } = result["authorization_params"]

      assert client_id == stored.client_id
      assert challenge =~ ~r/\A[A-Za-z0-9_-]{43}\z/
      assert result["code_verifier_saved"] == true
    end
  end

  describe "our ClientRegistration on a client the SDK registered" do
    test "reads, updates and deletes it (RFC 7592) with the token the SDK received", context do
      %{server: server, url: url} = context
      result = run_sdk!(context)

      %{"sdk" => %{"client_id" => client_id, "client_secret" => secret}, "wire" => wire} =
        result["confidential"]

      uri = wire["registration_client_uri"]
      token = wire["registration_access_token"]
      assert uri == url <> "/register/" <> client_id
      name = "MCP TS SDK #{@check_mark} confidential"

      # Read.
      assert {:ok, read} = ClientRegistration.get_client_information(uri, token)
      assert read == lookup!(server, client_id)
      assert read.client_name == name
      assert read.client_secret == secret
      assert read.registration_access_token == token

      # Update: merged over the current registration, so the SDK's metadata
      # survives and only the name changes.
      renamed = "Renamed by ExMCP #{@check_mark} 日本"

      assert {:ok, updated} =
               ClientRegistration.update_client_information(uri, token, %{client_name: renamed})

      assert updated.client_id == client_id
      assert updated.client_name == renamed
      assert updated.client_secret == secret
      assert updated.redirect_uris == [@redirect_uri]
      assert updated.grant_types == @grant_types
      assert updated.response_types == ["code"]
      assert updated.token_endpoint_auth_method == "client_secret_basic"
      refute Map.has_key?(updated, :application_type), "the SDK never sent one"
      # No rotation configured: the SDK's token keeps working.
      assert updated.registration_access_token == token

      stored = lookup!(server, client_id)
      assert stored.client_name == renamed
      assert Map.drop(stored, [:client_name]) == Map.drop(read, [:client_name])

      # The other (public) SDK client is untouched, and its own token reads it.
      %{"sdk" => %{"client_id" => public_id}, "wire" => public_wire} = result["public"]

      assert {:ok, public} =
               ClientRegistration.get_client_information(
                 public_wire["registration_client_uri"],
                 public_wire["registration_access_token"]
               )

      assert public.client_id == public_id
      assert public.client_name == "MCP TS SDK " <> @check_mark

      # One client's token does not open the other's registration.
      assert {:error, {:registration_error, 401, %{"error" => "invalid_token"}}} =
               ClientRegistration.get_client_information(public_wire["registration_client_uri"], token)

      # Delete.
      assert :ok = ClientRegistration.delete_client(uri, token)
      assert RegistrationServer.lookup(server, client_id) == :error
      assert RegistrationServer.count(server) == 2

      assert {:error, {:registration_error, 401, %{"error" => "invalid_token"}}} =
               ClientRegistration.get_client_information(uri, token)

      assert {:ok, _} = RegistrationServer.lookup(server, public_id)
    end
  end
end
