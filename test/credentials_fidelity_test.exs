defmodule ExMCP.Authorization.CredentialsFidelityTest do
  # A credential a server handed out is never lost, and one the library sent
  # never comes back in a reason: RFC 7592 §2.1 rotation on read, the §2.2
  # PUT body, and servers that quote tokens back. Every test runs the real
  # client against an ExMCP.Test.FixtureServer on 127.0.0.1.
  use ExUnit.Case, async: true

  import ExMCP.Test.Leaks, only: [refute_leaks: 2]

  alias ExMCP.Authorization.ClientRegistration, as: CR
  alias ExMCP.Authorization.RotatedCredentials
  alias ExMCP.Test.{FixtureServer, JSON}

  import ExMCP.Test.FixtureServer, only: [registration_request: 2]

  @json [{"content-type", "application/json"}]

  defp json(status, body), do: {:respond, status, @json, JSON.encode!(body)}
  defp header(request, name), do: for({^name, value} <- request.headers, do: value)
  defp sent_json(request), do: JSON.decode!(request.body)

  defp current(overrides \\ %{}) do
    Map.merge(
      %{
        "client_id" => "c1",
        "client_secret" => "secret-1",
        "client_secret_expires_at" => 0,
        "registration_access_token" => "tok-1",
        "registration_client_uri" => "http://127.0.0.1/register/c1",
        "client_name" => "Old",
        "redirect_uris" => ["http://127.0.0.1:8080/callback"],
        "application_type" => "native"
      },
      overrides
    )
  end

  describe "rotation on read (RFC 7592 §2.1)" do
    test "RFC 7592 §2.1: the PUT is sent with the token the read returned" do
      rotated = current(%{"registration_access_token" => "tok-2"})
      server = FixtureServer.start!([json(200, rotated), json(200, Map.put(rotated, "client_name", "New"))])
      uri = FixtureServer.url(server, "/register/c1")

      assert {:ok, %{client_name: "New", registration_access_token: "tok-2"}} =
               CR.update_client_information(uri, "tok-1", %{client_name: "New"})

      assert [get, put] = FixtureServer.requests(server)
      assert header(get, "authorization") == ["Bearer tok-1"]
      assert header(put, "authorization") == ["Bearer tok-2"], "the old token is discarded at once"
    end

    test "RFC 7592 §2.1: a refused PUT after a rotating read returns the new credentials with the reason" do
      rotated = current(%{"registration_access_token" => "tok-2", "client_secret" => "secret-2"})
      refusal = %{"error" => "invalid_client_metadata", "error_description" => "scope is not allowed"}
      server = FixtureServer.start!([json(200, rotated), json(400, refusal)])
      uri = FixtureServer.url(server, "/register/c1")

      assert {:error, {:credentials_rotated, %RotatedCredentials{client: client}, reason} = error} =
               CR.update_client_information(uri, "tok-1", %{scope: "admin"})

      assert reason == {:registration_error, 400, refusal}
      assert client.registration_access_token == "tok-2"
      assert client.client_secret == "secret-2"
      assert client.client_id == "c1"

      sentence = refute_leaks(error, ["tok-1", "tok-2", "secret-2"])

      assert sentence ==
               "the authorization server refused the request (HTTP 400): invalid_client_metadata: " <>
                 "scope is not allowed (before that, the server issued a new registration access token: " <>
                 "the new credentials are in this error's RotatedCredentials, store them; the old token " <>
                 "no longer works)"

      assert inspect(%RotatedCredentials{client: client}) ==
               ~s(#ExMCP.Authorization.RotatedCredentials<client_id: "c1", credentials redacted>)
    end

    test "RFC 7592 §2.1: the deadline after a rotating read still returns the new credentials" do
      rotated = current(%{"registration_access_token" => "tok-2"})
      server = FixtureServer.start!([json(200, rotated), :hang])
      uri = FixtureServer.url(server, "/register/c1")
      started = System.monotonic_time(:millisecond)

      assert {:error,
              {:credentials_rotated, %RotatedCredentials{client: %{registration_access_token: "tok-2"}},
               {:request_failed, :timeout}}} =
               CR.update_client_information(uri, "tok-1", %{client_name: "x"}, timeout: 300)

      elapsed = System.monotonic_time(:millisecond) - started
      assert elapsed >= 300 and elapsed < 1_000
      assert Process.info(self(), :messages) == {:messages, []}
    end

    test "RFC 7592 §2.1: an update answer without a token keeps the token the read rotated to" do
      rotated = current(%{"registration_access_token" => "tok-2"})

      server =
        FixtureServer.start!([json(200, rotated), json(200, Map.delete(rotated, "registration_access_token"))])

      uri = FixtureServer.url(server, "/register/c1")

      assert {:ok, %{registration_access_token: "tok-2"}} =
               CR.update_client_information(uri, "tok-1", %{client_name: "x"})
    end

    test "RFC 7592 §2.1: without a rotation, a failed update is the plain reason" do
      server =
        FixtureServer.start!([json(200, current()), json(400, %{"error" => "invalid_client_metadata"})])

      uri = FixtureServer.url(server, "/register/c1")

      assert CR.update_client_information(uri, "tok-1", %{client_name: "x"}) ==
               {:error, {:registration_error, 400, %{"error" => "invalid_client_metadata"}}}
    end
  end

  describe "the PUT body (RFC 7592 §2.2)" do
    test "RFC 7592 §2.2: the PUT carries the client_secret the read returned" do
      read = current(%{"client_secret" => "secret-from-read"})
      server = FixtureServer.start!([json(200, read), json(200, read)])
      uri = FixtureServer.url(server, "/register/c1")

      assert {:ok, %{client_secret: "secret-from-read"}} =
               CR.update_client_information(uri, "tok-1", %{client_name: "x"})

      assert [_get, put] = FixtureServer.requests(server)
      assert sent_json(put)["client_secret"] == "secret-from-read"
    end

    test "SEP-837: application_type is derived again when the update changes redirect_uris" do
      server = FixtureServer.start!(fn _ -> json(200, current()) end)
      uri = FixtureServer.url(server, "/register/c1")

      assert {:ok, _} =
               CR.update_client_information(uri, "tok-1", %{redirect_uris: ["https://app.example.com/cb"]})

      assert {:ok, _} =
               CR.update_client_information(uri, "tok-1", %{
                 redirect_uris: ["https://app.example.com/cb"],
                 application_type: "native"
               })

      assert {:ok, _} = CR.update_client_information(uri, "tok-1", %{client_name: "Only the name"})

      puts =
        for %{method: "PUT"} = put <- FixtureServer.requests(server), do: sent_json(put)["application_type"]

      assert puts == ["web", "native", "native"], "derived; the caller's value wins; untouched URIs keep it"
    end
  end

  describe "tokens quoted back by a server (RFC 6750 §5.3)" do
    @iat "IAT-quoted-6c1f0e9a"
    @rat "RAT-quoted-93b2d7e4"

    # A server that quotes the Authorization header back in its refusal.
    defp echo(status) do
      fn request ->
        quoted = Enum.join(header(request, "authorization"), ", ")
        json(status, %{"error" => "invalid_token", "error_description" => "rejected #{quoted} (#{quoted})"})
      end
    end

    test "RFC 7591 §3: an initial access token quoted in error_description is redacted" do
      server = FixtureServer.start!(echo(401))

      assert {:error, {:registration_error, 401, body} = reason} =
               CR.register_client(registration_request(server, %{}), initial_access_token: @iat)

      assert body["error_description"] == "rejected Bearer [REDACTED] (Bearer [REDACTED])"
      assert refute_leaks(reason, [@iat]) =~ "(HTTP 401): invalid_token: rejected Bearer [REDACTED]"
    end

    test "RFC 7592 §2: a registration access token quoted in a JSON refusal or an HTML page is redacted" do
      server = FixtureServer.start!(echo(403))
      uri = FixtureServer.url(server, "/register/c1")
      assert {:error, reason} = CR.get_client_information(uri, @rat)
      refute_leaks(reason, [@rat])
      assert {:error, reason} = CR.delete_client(uri, @rat)
      refute_leaks(reason, [@rat])

      html = FixtureServer.start!(fn r -> {:respond, 500, [], "<p>#{header(r, "authorization")}</p>"} end)

      assert {:error, {:http_error, 500, "<p>Bearer [REDACTED]</p>"} = reason} =
               CR.get_client_information(FixtureServer.url(html, "/register/c1"), @rat)

      refute_leaks(reason, [@rat])
    end

    test "RFC 7592 §2.2: the client_secret and both tokens of an update are redacted from the PUT's refusal" do
      rotated = current(%{"registration_access_token" => "tok-rotated-7a", "client_secret" => "sec-5d0b"})

      quote_all = fn request ->
        json(400, %{
          "error" => "invalid_client_metadata",
          "error_description" => "#{header(request, "authorization")} #{request.body}"
        })
      end

      server = FixtureServer.start!([json(200, rotated), quote_all])
      uri = FixtureServer.url(server, "/register/c1")

      assert {:error, {:credentials_rotated, %RotatedCredentials{client: client}, inner} = reason} =
               CR.update_client_information(uri, @rat, %{client_name: "x"})

      assert client.registration_access_token == "tok-rotated-7a", "the credentials themselves are intact"
      assert {:registration_error, 400, %{"error_description" => description}} = inner
      assert description =~ "Bearer [REDACTED]"
      refute_leaks(reason, [@rat, "tok-rotated-7a", "sec-5d0b"])
    end
  end

  describe "rules shared with the embedded server" do
    test "RFC 7591 §2: jwks and jwks_uri together are refused before anything is sent" do
      server = FixtureServer.start!([])

      request =
        registration_request(server, %{jwks: %{"keys" => []}, jwks_uri: "https://app.example.com/jwks.json"})

      assert CR.register_client(request) ==
               {:error, {:invalid_field, :jwks, "must not be sent together with jwks_uri (RFC 7591 §2)"}}

      assert FixtureServer.requests(server) == []
    end
  end

  describe "format_error/1 and UTF-8" do
    test "a localised error_description is cut on a grapheme boundary, never inside a character" do
      # 1 ASCII byte, then 2-byte characters: a cut at any even byte count falls mid-character.
      description = "x" <> String.duplicate("é", 400)

      sentence =
        CR.format_error(
          {:registration_error, 400,
           %{"error" => "invalid_client_metadata", "error_description" => description}}
        )

      assert String.valid?(sentence)
      assert sentence =~ ~r/: xé+…\z/u
      assert String.length(sentence) < 400

      sentence =
        CR.format_error({:registration_error, 400, %{"error" => "e", "error_description" => "bad \xFF byte"}})

      assert String.valid?(sentence)
      assert sentence =~ "bad \uFFFD byte"
    end
  end
end
