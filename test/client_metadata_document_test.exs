defmodule ExMCP.Authorization.ClientMetadataDocumentTest do
  # ClientRegistration.client_metadata_document/3: the document a client
  # serves at its client_id URL (draft-ietf-oauth-client-id-metadata-document-00).
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.ClientRegistration

  @url "https://app.example.com/oauth/client.json"
  @metadata %{client_name: "Café 日本", redirect_uris: ["http://127.0.0.1:8080/callback"], scope: "mcp:read"}

  test "§4.1: a document with client_id equal to the URL, string keys, registration defaults" do
    assert {:ok, doc} = ClientRegistration.client_metadata_document(@url, @metadata)

    assert doc == %{
             "client_id" => @url,
             "client_name" => "Café 日本",
             "redirect_uris" => ["http://127.0.0.1:8080/callback"],
             "scope" => "mcp:read",
             "grant_types" => ["authorization_code"],
             "response_types" => ["code"],
             "token_endpoint_auth_method" => "none",
             "application_type" => "native"
           }

    assert {:ok, %{"vendor_flag" => true}} =
             ClientRegistration.client_metadata_document(
               @url,
               Map.put(@metadata, :extra, %{"vendor_flag" => true})
             )
  end

  test "§3: the URL must be https with a path, no fragment, no dot segments, no user info" do
    for bad <- [
          "http://app.example.com/client.json",
          "https://app.example.com",
          "https://app.example.com/",
          "https://app.example.com/a/../client.json",
          "https://app.example.com/client.json#x",
          "https://me:pw@app.example.com/client.json",
          "not a url"
        ] do
      assert {:error, {:invalid_field, :client_id, message}} =
               ClientRegistration.client_metadata_document(bad, @metadata),
             bad

      assert is_binary(message)
    end

    assert {:error, {:invalid_field, :client_id, _}} =
             ClientRegistration.client_metadata_document(42, @metadata)
  end

  test "§4.1: no secret and no shared-secret authentication method" do
    for method <- ~w(client_secret_basic client_secret_post client_secret_jwt) do
      assert {:error, {:invalid_field, :token_endpoint_auth_method, message}} =
               ClientRegistration.client_metadata_document(
                 @url,
                 Map.put(@metadata, :token_endpoint_auth_method, method)
               )

      assert message =~ "shared-secret"
    end

    assert {:error, {:invalid_field, :client_secret, _}} =
             ClientRegistration.client_metadata_document(@url, Map.put(@metadata, :client_secret, "s3cr3t"))

    assert {:ok, %{"token_endpoint_auth_method" => "private_key_jwt"}} =
             ClientRegistration.client_metadata_document(
               @url,
               Map.merge(@metadata, %{
                 token_endpoint_auth_method: "private_key_jwt",
                 jwks_uri: "https://app.example.com/jwks.json"
               })
             )
  end

  test "the registration metadata rules apply" do
    assert {:error, {:invalid_redirect_uris, ["javascript:alert(1)"]}} =
             ClientRegistration.client_metadata_document(@url, %{
               @metadata
               | redirect_uris: ["javascript:alert(1)"]
             })

    assert {:error, {:missing_required_fields, [:redirect_uris]}} =
             ClientRegistration.client_metadata_document(@url, Map.delete(@metadata, :redirect_uris))

    assert {:error, {:invalid_field, :registration_endpoint, _}} =
             ClientRegistration.client_metadata_document(
               @url,
               Map.put(@metadata, :registration_endpoint, "https://as.example.com/register")
             )

    assert {:error, {:invalid_field, :client_id, _}} =
             ClientRegistration.client_metadata_document(
               @url,
               Map.put(@metadata, :client_id, "https://other.example/c")
             )
  end

  test "allow_loopback_http: true accepts http on loopback only" do
    loopback = "http://127.0.0.1:4000/client.json"

    assert {:error, {:invalid_field, :client_id, _}} =
             ClientRegistration.client_metadata_document(loopback, @metadata)

    assert {:ok, %{"client_id" => ^loopback}} =
             ClientRegistration.client_metadata_document(loopback, @metadata, allow_loopback_http: true)

    assert {:error, {:invalid_field, :client_id, _}} =
             ClientRegistration.client_metadata_document("http://app.example.com/c", @metadata,
               allow_loopback_http: true
             )

    assert_raise ArgumentError, ~r/:allow_loopback_http/, fn ->
      ClientRegistration.client_metadata_document(@url, @metadata, allow_loopback_http: :yes)
    end

    assert_raise ArgumentError, ~r/unknown option :timeout/, fn ->
      ClientRegistration.client_metadata_document(@url, @metadata, timeout: 5)
    end

    assert_raise ArgumentError, ~r/must be a map/, fn ->
      ClientRegistration.client_metadata_document(@url, client_name: "x")
    end
  end
end
