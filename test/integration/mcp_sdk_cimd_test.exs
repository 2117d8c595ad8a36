defmodule ExMCP.Integration.McpSdkCimdTest do
  @moduledoc """
  The embedded server's Client ID Metadata Document side, exercised by a
  client nobody here wrote: the official MCP TypeScript SDK's `auth()` with an
  `OAuthClientProvider` whose `clientMetadataUrl` is set
  (`test/servers/sdk_cimd.mjs`). The SDK starts from the MCP URL of a
  `RegistrationServer` configured as a protected resource, discovers it
  (RFC 9728, RFC 8414), sees `client_id_metadata_document_supported` and uses
  the document URL as its `client_id`; the authorization request it builds
  then makes the server fetch and check the document
  (draft-ietf-oauth-client-id-metadata-document-00 §4.1, §4.5).

  The SDK accepts only https document URLs, so the document is served over
  TLS on 127.0.0.1 by `ExMCP.Test.FixtureServer` with a CA made here by the
  openssl CLI; the server trusts it through `cacertfile:` and fetches from
  loopback through `allow_loopback: true`. The document itself is built by
  `ClientRegistration.client_metadata_document/2`.
  """

  use ExUnit.Case, async: false

  alias ExMCP.Authorization.{ClientRegistration, RegistrationServer}
  alias ExMCP.Test.{Certificates, FixtureServer, NodeScript}

  @moduletag :mcp_sdk
  @moduletag :tmp_dir

  @redirect_uri "http://127.0.0.1:33418/callback"
  @scopes ["mcp:read", "mcp:write"]

  setup_all do
    dir = Certificates.tmp_dir!("ex_mcp_cimd_tls")
    on_exit(fn -> File.rm_rf!(dir) end)
    %{node: NodeScript.require_package!("@modelcontextprotocol/sdk"), tls: Certificates.loopback!(dir)}
  end

  defp document_host!(tls, document),
    do: FixtureServer.document_host!(document, certfile: tls.cert, keyfile: tls.key)

  defp start_server!(tls) do
    start_supervised!(
      {RegistrationServer,
       protected_resource: [resource: "/mcp", scopes_supported: @scopes, resource_name: "CIMD test"],
       client_id_metadata_documents: [allow_loopback: true, cacertfile: tls.ca]}
    )
  end

  defp our_document!(url) do
    {:ok, document} =
      ClientRegistration.client_metadata_document(url, %{
        client_name: "ExMCP CIMD test client",
        redirect_uris: [@redirect_uri],
        scope: Enum.join(@scopes, " ")
      })

    document
  end

  test "the SDK discovers from the MCP URL, uses its document URL as client_id, and gets a code", context do
    server = start_server!(context.tls)
    {host, document_url} = document_host!(context.tls, &our_document!/1)
    mcp_url = RegistrationServer.resource_url(server)
    base = RegistrationServer.url(server)

    result =
      NodeScript.run!(context.node, "sdk_cimd.mjs", [mcp_url, document_url, @redirect_uri], context.tmp_dir)

    assert result["result"] == "REDIRECT"
    # SEP-991: the URL is the client_id, with no registration and no secret.
    assert result["client_information"]["client_id"] == document_url
    refute Map.has_key?(result["client_information"], "client_secret")

    requests = for r <- result["requests"], do: {r["method"], r["url"], r["status"]}
    # RFC 9728 §3.1: the path-aware URL answered first; then RFC 8414.
    assert {"GET", base <> "/.well-known/oauth-protected-resource/mcp", 200} in requests
    assert {"GET", base <> "/.well-known/oauth-authorization-server", 200} in requests

    refute Enum.any?(requests, fn {method, _, _} -> method == "POST" end),
           "the SDK registered: #{inspect(requests)}"

    assert result["authorization_endpoint"] == base <> "/authorize"
    params = result["authorization_params"]
    assert params["client_id"] == document_url
    assert params["redirect_uri"] == @redirect_uri
    assert params["code_challenge_method"] == "S256"
    assert params["resource"] == mcp_url
    assert params["scope"] == Enum.join(@scopes, " ")

    # The server fetched the document and approved: 302 to the redirect URI.
    assert_received {:document_fetched, "/client.json"}
    assert result["authorize"]["status"] == 302
    location = URI.parse(result["authorize"]["location"])
    assert "#{location.scheme}://#{location.host}:#{location.port}#{location.path}" == @redirect_uri
    query = URI.decode_query(location.query)
    assert byte_size(query["code"]) == 43
    assert query["state"] == "sdk-state-1"
    assert query["iss"] == base
    assert RegistrationServer.count(server) == 0
    FixtureServer.stop(host)
  end

  test "a document with a shared-secret method is refused as invalid_client", context do
    server = start_server!(context.tls)

    {host, document_url} =
      document_host!(context.tls, fn url ->
        url |> our_document!() |> Map.put("token_endpoint_auth_method", "client_secret_basic")
      end)

    result =
      NodeScript.run!(
        context.node,
        "sdk_cimd.mjs",
        [RegistrationServer.resource_url(server), document_url, @redirect_uri],
        context.tmp_dir
      )

    assert_received {:document_fetched, "/client.json"}
    assert result["authorize"]["status"] == 400
    assert result["authorize"]["location"] == nil
    assert result["authorize"]["body"]["error"] == "invalid_client"
    assert result["authorize"]["body"]["error_description"] =~ "token_endpoint_auth_method"
    FixtureServer.stop(host)
  end
end
