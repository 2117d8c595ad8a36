defmodule ExMCP.Integration.OidcProviderCimdTest do
  @moduledoc """
  Client ID Metadata Documents against a real third-party authorization
  server that implements the draft: `oidc-provider` (npm) with its
  experimental `features.clientIdMetadataDocument` (draft-02 of
  draft-ietf-oauth-client-id-metadata-document).

  The accepting case — `obtain_client/3` takes the CIMD path and
  oidc-provider fetches and accepts the document `client_metadata_document/2`
  built — is in `test/integration/discovery_real_servers_test.exs`. Here: the
  draft's §4.1 rule that `client_metadata_document/2` and the embedded server
  apply, a document whose `client_id` is not its own URL, is refused by
  oidc-provider too, after fetching it (served over TLS on 127.0.0.1 by
  `ExMCP.Test.FixtureServer`).
  """

  use ExUnit.Case, async: false

  alias ExMCP.Authorization.ClientRegistration
  alias ExMCP.Test.{Certificates, FixtureServer, OidcProvider}

  @moduletag :oidc_provider

  @redirect_uri "http://127.0.0.1:33418/callback"
  @metadata %{client_name: "ExMCP CIMD client", redirect_uris: [@redirect_uri], scope: "openid mcp:read"}

  setup_all do
    {:ok, _} = Application.ensure_all_started(:inets)
    dir = Certificates.tmp_dir!("ex_mcp_oidc_cimd")
    on_exit(fn -> File.rm_rf!(dir) end)
    %{tls: Certificates.loopback!(dir)}
  end

  setup %{tls: tls} do
    provider = start_supervised!({OidcProvider, client_id_metadata_documents: true, extra_ca_certs: tls.ca})
    %{issuer: OidcProvider.info(provider).issuer}
  end

  # Serves document.(url) at every path over TLS, the URL rebuilt from Host.
  defp document_host!(tls, document) do
    {host, url} = FixtureServer.document_host!(document, certfile: tls.cert, keyfile: tls.key)
    on_exit(fn -> if Process.alive?(host), do: FixtureServer.stop(host) end)
    url
  end

  defp authorization_request(discovery, client_id) do
    query =
      URI.encode_query(%{
        "response_type" => "code",
        "client_id" => client_id,
        "redirect_uri" => @redirect_uri,
        "scope" => "openid mcp:read",
        # RFC 7636 Appendix B.
        "code_challenge" => "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method" => "S256",
        "state" => "st"
      })

    url = String.to_charlist(discovery.authorization_server.authorization_endpoint <> "?" <> query)

    {:ok, {{_, status, _}, headers, body}} =
      :httpc.request(:get, {url, []}, [timeout: 10_000, autoredirect: false], body_format: :binary)

    {status, Map.new(headers, fn {k, v} -> {List.to_string(k), List.to_string(v)} end), body}
  end

  test "draft §4.1: a document whose client_id is not its URL is refused as invalid_client", %{
    tls: tls,
    issuer: issuer
  } do
    url =
      document_host!(tls, fn url ->
        {:ok, document} = ClientRegistration.client_metadata_document(url, @metadata)
        Map.put(document, "client_id", "https://elsewhere.example/client.json")
      end)

    {:ok, discovery} = ClientRegistration.discover(issuer, issuer: issuer)
    {status, headers, body} = authorization_request(discovery, url)
    assert_received {:document_fetched, "/client.json"}
    assert status == 400, "HTTP #{status}: #{inspect(headers)} #{body}"
    assert body =~ "invalid_client"
  end
end
