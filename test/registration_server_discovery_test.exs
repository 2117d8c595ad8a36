defmodule ExMCP.Authorization.RegistrationServerDiscoveryTest do
  # RegistrationServer as an MCP protected resource (RFC 9728) and with
  # Client ID Metadata Documents, through its Elixir options. The HTTP side
  # is covered in depth by native/mcp_registration/tests/server_discovery.rs;
  # here: the options reach the server, and bad ones raise.
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.{ClientRegistration, RegistrationServer}
  alias ExMCP.Test.{FixtureServer, JSON}

  @redirect_uri "http://127.0.0.1:33418/callback"

  setup_all do
    {:ok, _} = Application.ensure_all_started(:inets)
    :ok
  end

  defp start_server!(opts),
    do: start_supervised!(Supervisor.child_spec({RegistrationServer, opts}, id: make_ref()))

  defp get(url) do
    {:ok, {{_, status, _}, headers, body}} =
      :httpc.request(:get, {String.to_charlist(url), []}, [timeout: 5_000, autoredirect: false],
        body_format: :binary
      )

    {status, Map.new(headers, fn {k, v} -> {List.to_string(k), List.to_string(v)} end), body}
  end

  test "RFC 9728: protected_resource serves the metadata, names the issuer, and challenges" do
    server =
      start_server!(
        protected_resource: [resource: "/mcp", scopes_supported: ["mcp:read"], resource_name: "Demo"]
      )

    base = RegistrationServer.url(server)
    assert RegistrationServer.resource_url(server) == base <> "/mcp"

    for path <- ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"] do
      assert {200, _, body} = get(base <> path)

      assert JSON.decode!(body) == %{
               "resource" => base <> "/mcp",
               "authorization_servers" => [base],
               "scopes_supported" => ["mcp:read"],
               "bearer_methods_supported" => ["header"],
               "resource_name" => "Demo"
             }
    end

    assert {401, headers, _} = get(base <> "/mcp")

    assert headers["www-authenticate"] ==
             ~s(Bearer resource_metadata="#{base}/.well-known/oauth-protected-resource/mcp", scope="mcp:read")

    assert {200, _, body} = get(base <> "/.well-known/oauth-authorization-server")
    metadata = JSON.decode!(body)
    assert metadata["issuer"] == base
    assert metadata["scopes_supported"] == ["mcp:read"]
    refute Map.has_key?(metadata, "client_id_metadata_document_supported")
  end

  test "discover/2 from the resource URL, from a real 401, then obtain_client/3 registers here" do
    server =
      start_server!(
        protected_resource: [resource: "/mcp", scopes_supported: ["mcp:read", "mcp:write"]],
        client_id_metadata_documents: true
      )

    base = RegistrationServer.url(server)
    mcp_url = RegistrationServer.resource_url(server)
    {401, headers, _} = get(mcp_url)

    for opts <- [[], [www_authenticate: headers["www-authenticate"]]] do
      assert {:ok, discovery} = ClientRegistration.discover(mcp_url, opts)
      assert discovery.resource == mcp_url
      assert discovery.resource_metadata_url == base <> "/.well-known/oauth-protected-resource/mcp"
      # RFC 8414 §3.3: the issuer the resource names is the metadata's own.
      assert discovery.issuer == base
      assert discovery.scope == "mcp:read mcp:write"
      assert discovery.authorization_server.client_id_metadata_document_supported == true

      assert discovery.authorization_server.registration_endpoint ==
               RegistrationServer.registration_endpoint(server)
    end

    {:ok, discovery} = ClientRegistration.discover(mcp_url)
    metadata = %{client_name: "Discovered", redirect_uris: [@redirect_uri]}
    assert {:ok, client} = ClientRegistration.obtain_client(discovery, metadata)
    assert client.registration_method == :dynamic
    assert client.issuer == base
    assert {:ok, %{scope: "mcp:read mcp:write"}} = RegistrationServer.lookup(server, client.client_id)
  end

  test "without the options there is no resource and no document support" do
    server = start_server!([])
    assert RegistrationServer.resource_url(server) == nil
    assert {404, _, _} = get(RegistrationServer.url(server) <> "/.well-known/oauth-protected-resource")
  end

  test "draft §4, §5: client_id_metadata_documents accepts a loopback document in development" do
    server = start_server!(client_id_metadata_documents: [allow_loopback: true])
    base = RegistrationServer.url(server)
    assert {200, _, body} = get(base <> "/.well-known/oauth-authorization-server")
    assert JSON.decode!(body)["client_id_metadata_document_supported"] == true

    host =
      FixtureServer.start!(fn request ->
        {"host", authority} = List.keyfind(request.headers, "host", 0)
        url = "http://#{authority}#{request.path}"

        {:ok, document} =
          ClientRegistration.client_metadata_document(
            url,
            %{client_name: "Dev", redirect_uris: [@redirect_uri]},
            allow_loopback_http: true
          )

        {:respond, 200, [{"content-type", "application/json"}], JSON.encode!(document)}
      end)

    client_id = FixtureServer.url(host, "/client.json")

    query =
      URI.encode_query(%{
        "response_type" => "code",
        "client_id" => client_id,
        "redirect_uri" => @redirect_uri,
        "code_challenge" => "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method" => "S256",
        "state" => "xyz"
      })

    assert {302, headers, _} = get(base <> "/authorize?" <> query)

    assert %{"code" => _, "state" => "xyz", "iss" => ^base} =
             URI.decode_query(URI.parse(headers["location"]).query)

    # Without allow_loopback the same document is refused, and not fetched.
    strict = start_server!(client_id_metadata_documents: true)
    assert {400, _, body} = get(RegistrationServer.url(strict) <> "/authorize?" <> query)
    assert %{"error" => "invalid_client", "error_description" => description} = JSON.decode!(body)
    assert description =~ "https"
    assert [_] = FixtureServer.requests(host)
  end

  test "bad options raise ArgumentError naming them" do
    for {opts, message} <- [
          {[protected_resource: [scopes_supported: ["a"]]], ~r/:protected_resource needs :resource/},
          {[protected_resource: "/mcp"], ~r/:protected_resource must be a keyword list/},
          {[protected_resource: [resource: "/mcp", scopes: ["a"]]], ~r/unknown key :scopes/},
          {[protected_resource: [resource: "/mcp", scopes_supported: "a"]], ~r/:scopes_supported/},
          {[client_id_metadata_documents: :yes], ~r/:client_id_metadata_documents must be a keyword list/},
          {[client_id_metadata_documents: [allow_loopback: 1]], ~r/invalid :allow_loopback/},
          {[client_id_metadata_documents: [fetch_timeout: 0]], ~r/invalid :fetch_timeout/},
          {[client_id_metadata_documents: [ssrf: false]], ~r/unknown key :ssrf/}
        ] do
      assert_raise ArgumentError, message, fn -> RegistrationServer.start_link(opts) end
    end

    # What only the Rust side can judge comes back as a start error.
    Process.flag(:trap_exit, true)

    assert {:error, {:invalid_config, message}} =
             RegistrationServer.start_link(protected_resource: [resource: "/register"])

    assert message =~ "/register"

    assert {:error, {:invalid_config, _}} =
             RegistrationServer.start_link(
               protected_resource: [resource: "/mcp", scopes_supported: ["has space"]]
             )
  end
end
