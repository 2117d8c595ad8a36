defmodule ExMCP.Authorization.ClientRegistrationFixtureTest do
  # Every test runs the real client (Rust, over TCP) against its own
  # ExMCP.Test.FixtureServer on 127.0.0.1 and asserts exact shapes: what the
  # caller gets back, and what the server received.
  use ExUnit.Case, async: true

  # The iex> examples of the docs (the moduledoc's own example needs a real
  # authorization server, so it is a plain code block, not an iex> example).
  doctest ExMCP.Authorization.ClientRegistration
  doctest ExMCP.Authorization.ClientStore

  alias ExMCP.Authorization.ClientRegistration, as: CR
  alias ExMCP.Test.FixtureServer

  import ExMCP.Test.FixtureServer, only: [registration_request: 1, registration_request: 2]
  alias ExMCP.Test.JSON

  @json [{"content-type", "application/json"}]

  defp json(status, body) when is_binary(body), do: {:respond, status, @json, body}
  defp json(status, body), do: {:respond, status, @json, JSON.encode!(body)}

  defp always(action), do: fn _request -> action end

  defp header(request, name), do: for({^name, value} <- request.headers, do: value)

  defp sent_json(request), do: JSON.decode!(request.body)

  # The answer map when the server sent only a client_id.
  defp defaults(client_id) do
    %{
      client_id: client_id,
      client_secret: nil,
      client_secret_expires_at: nil,
      registration_access_token: nil,
      registration_client_uri: nil,
      client_name: nil,
      redirect_uris: [],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      scope: ""
    }
  end

  describe "registration answers (RFC 7591 §3.2.1)" do
    test "RFC 7591 §3.2.1: a 201 answer gives the documented keys, known fields as atoms, unknown members under :extra" do
      body = ~s({
        "client_id": "s6BhdRkqt3",
        "client_secret": "cf136dc3c1fc93f31185e5885805d",
        "client_id_issued_at": 2893256800,
        "client_secret_expires_at": 2893276800,
        "registration_access_token": "this.is.an.access.token.value.ffx83",
        "registration_client_uri": "https://server.example.com/register/s6BhdRkqt3",
        "client_name": "My Example Client",
        "redirect_uris": ["https://client.example.org/callback", "https://client.example.org/callback2"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "scope": "mcp:read mcp:write",
        "token_endpoint_auth_method": "client_secret_basic",
        "application_type": "web",
        "logo_uri": "https://client.example.org/logo.png",
        "contacts": ["ops@example.org"],
        "jwks": {"keys": []},
        "vendor_extension": {"nested": {"list": [1, 2.5, true, false, null, "x"]}},
        "post_logout_redirect_uris": ["https://client.example.org/bye"]
      })

      server = FixtureServer.start!(always(json(201, body)))

      assert CR.register_client(registration_request(server)) ==
               {:ok,
                %{
                  client_id: "s6BhdRkqt3",
                  client_secret: "cf136dc3c1fc93f31185e5885805d",
                  client_secret_expires_at: 2_893_276_800,
                  registration_access_token: "this.is.an.access.token.value.ffx83",
                  registration_client_uri: "https://server.example.com/register/s6BhdRkqt3",
                  client_name: "My Example Client",
                  redirect_uris: [
                    "https://client.example.org/callback",
                    "https://client.example.org/callback2"
                  ],
                  grant_types: ["authorization_code", "refresh_token"],
                  response_types: ["code"],
                  scope: "mcp:read mcp:write",
                  client_id_issued_at: 2_893_256_800,
                  token_endpoint_auth_method: "client_secret_basic",
                  application_type: "web",
                  logo_uri: "https://client.example.org/logo.png",
                  contacts: ["ops@example.org"],
                  jwks: %{"keys" => []},
                  extra: %{
                    "vendor_extension" => %{"nested" => %{"list" => [1, 2.5, true, false, nil, "x"]}},
                    "post_logout_redirect_uris" => ["https://client.example.org/bye"]
                  }
                }}
    end

    test "RFC 7591 §3.2.1: a 200 answer is a success too, and left-out documented keys get their defaults" do
      server = FixtureServer.start!(always(json(200, ~s({"client_id":"abc"}))))

      assert CR.register_client(registration_request(server)) == {:ok, defaults("abc")}
    end

    test "RFC 7591 §3.2.1: a JSON null counts as absent" do
      body = ~s({"client_id":"abc","client_secret":null,"client_secret_expires_at":null,
                 "registration_access_token":null,"registration_client_uri":null,"client_name":null,
                 "redirect_uris":null,"grant_types":null,"response_types":null,"scope":null,
                 "logo_uri":null,"client_id_issued_at":null,"vendor_field":null})

      server = FixtureServer.start!(always(json(201, body)))

      # No :logo_uri, no :client_id_issued_at, and no :extra at all.
      assert CR.register_client(registration_request(server)) == {:ok, defaults("abc")}
    end

    test "RFC 7591 §3.2.1: a success answer without client_id is invalid" do
      server = FixtureServer.start!(always(json(200, ~s({"client_name":"x"}))))

      assert CR.register_client(registration_request(server)) ==
               {:error, {:invalid_response, "the response has no client_id"}}
    end

    test "RFC 7591 §3.2.1: client_id must be a non-empty string" do
      server = FixtureServer.start!([json(201, ~s({"client_id":7})), json(201, ~s({"client_id":""}))])

      for _ <- 1..2 do
        assert CR.register_client(registration_request(server)) ==
                 {:error, {:invalid_response, "client_id must be a non-empty string"}}
      end
    end

    test "RFC 7591 §3.2.1: a created client is never thrown away: ill-typed members go under :extra, raw" do
      body = ~s({"client_id":"a","client_id_issued_at":1.5,"client_secret_expires_at":"0",
                 "redirect_uris":"x","client_secret":"s3cret","registration_access_token":"tok"})

      server = FixtureServer.start!(always(json(201, body)))

      assert CR.register_client(registration_request(server)) ==
               {:ok,
                %{
                  defaults("a")
                  | client_secret: "s3cret",
                    registration_access_token: "tok"
                }
                |> Map.put(:extra, %{
                  "client_id_issued_at" => 1.5,
                  "client_secret_expires_at" => "0",
                  "redirect_uris" => "x"
                })}
    end

    test "RFC 7592 §2.1/§2.2: read and update answers keep ill-typed members under :extra too" do
      odd = %{"client_id" => "c1", "registration_access_token" => "tok-1", "client_id_issued_at" => 1.5}
      server = FixtureServer.start!([json(200, odd), json(200, odd), json(200, odd)])
      uri = FixtureServer.url(server, "/register/c1")

      assert {:ok, %{registration_access_token: "tok-1", extra: %{"client_id_issued_at" => 1.5}}} =
               CR.get_client_information(uri, "tok-1")

      assert {:ok, %{registration_access_token: "tok-1", extra: %{"client_id_issued_at" => 1.5}}} =
               CR.update_client_information(uri, "tok-1", %{client_name: "x"})
    end

    test "a success answer that is not JSON is a json_decode_error" do
      server = FixtureServer.start!(always(json(200, ~s({"client_id": "abc",))))

      # The message says where the JSON broke off (serde_json's wording).
      assert {:error, {:json_decode_error, message}} = CR.register_client(registration_request(server))
      assert message =~ ~r/EOF while parsing .* at line 1 column \d+/
    end

    test "a success answer that is a JSON array is an invalid response" do
      server = FixtureServer.start!(always(json(200, ~s([{"client_id":"abc"}]))))

      assert CR.register_client(registration_request(server)) ==
               {:error, {:invalid_response, "expected a JSON object, got an array"}}
    end
  end

  describe "large answers" do
    # Runs in a separate VM because a regression would crash the VM: building
    # the answer's maps with enif_make_map_from_arrays on a tokio thread sorts
    # more than 128 keys with erts_qsort, which needs scheduler data a
    # non-scheduler thread lacks (erlang/otp#8208; SIGSEGV on OTP 25.2.3).
    # Replies are now sent as external term format and decoded by the caller
    # (etf.rs); this test keeps it that way without risking the whole run.
    @large_answer_script ~S"""
    alias ExMCP.Authorization.ClientRegistration, as: CR
    alias ExMCP.Test.{FixtureServer, JSON}

    members = Map.new(1..200, &{"member_#{&1}", &1})
    answers = [
      {:respond, 201, [], JSON.encode!(Map.put(members, "client_id", "abc"))},
      {:respond, 201, [], JSON.encode!(%{"client_id" => "abc", "vendor" => members})},
      {:respond, 400, [], JSON.encode!(Map.put(members, "error", "invalid_client_metadata"))}
    ]

    {:ok, server} = FixtureServer.start_link(answers)
    request = %{
      registration_endpoint: FixtureServer.url(server, "/register"),
      client_name: "Large",
      redirect_uris: ["http://localhost:8080/callback"]
    }

    results = for _ <- answers, do: CR.register_client(request)
    IO.puts("RESULTS " <> Base.encode64(:erlang.term_to_binary(results)))
    """

    test "RFC 7591 §3.2.1: objects with more than 128 members come back intact (and do not crash the VM)" do
      ebin = Path.dirname(:code.which(CR))

      {output, status} =
        System.cmd(System.find_executable("elixir"), ["-pa", ebin, "-e", @large_answer_script],
          stderr_to_stdout: true
        )

      assert status == 0, "the VM exited with status #{status} (139 is a segfault):\n#{output}"
      assert [_, encoded] = Regex.run(~r/^RESULTS (\S+)$/m, output)

      members = Map.new(1..200, &{"member_#{&1}", &1})

      assert :erlang.binary_to_term(Base.decode64!(encoded)) == [
               {:ok, Map.put(defaults("abc"), :extra, members)},
               {:ok, Map.put(defaults("abc"), :extra, %{"vendor" => members})},
               {:error, {:registration_error, 400, Map.put(members, "error", "invalid_client_metadata")}}
             ]
    end
  end

  describe "refusals (RFC 7591 §3.2.2)" do
    test "RFC 7591 §3.2.2: a 400 JSON error object is a registration_error with the whole object" do
      body = %{
        "error" => "invalid_redirect_uri",
        "error_description" => "The redirection URI is not allowed."
      }

      server = FixtureServer.start!(always(json(400, body)))

      assert CR.register_client(registration_request(server)) == {:error, {:registration_error, 400, body}}
    end

    test "a 500 HTML page is an http_error with the body as a binary" do
      html = "<html><body><h1>Internal Server Error</h1></body></html>"
      server = FixtureServer.start!(always({:respond, 500, [{"content-type", "text/html"}], html}))

      assert CR.register_client(registration_request(server)) == {:error, {:http_error, 500, html}}
    end

    test "a 400 whose body is a JSON array is an http_error, not a registration_error" do
      server = FixtureServer.start!(always(json(400, "[]")))

      assert CR.register_client(registration_request(server)) == {:error, {:http_error, 400, "[]"}}
    end

    test "a 302 redirect is an http_error and is never followed" do
      server = FixtureServer.start!(fn _ -> {:respond, 302, [{"location", "/elsewhere"}], "moved"} end)
      # An absolute Location on the same server: a followed redirect would be recorded.
      location = FixtureServer.url(server, "/elsewhere")
      other = FixtureServer.start!(fn _ -> {:respond, 302, [{"location", location}], ""} end)

      assert CR.register_client(registration_request(server)) == {:error, {:http_error, 302, "moved"}}
      assert CR.register_client(registration_request(other)) == {:error, {:http_error, 302, ""}}

      assert [%{method: "POST", path: "/register"}] = FixtureServer.requests(server)
      assert [%{method: "POST", path: "/register"}] = FixtureServer.requests(other)
    end

    test "a 3xx with a JSON object body is still an http_error" do
      server = FixtureServer.start!(always({:respond, 307, [{"location", "/x"} | @json], ~s({"error":"x"})}))

      assert CR.register_client(registration_request(server)) ==
               {:error, {:http_error, 307, ~s({"error":"x"})}}

      assert length(FixtureServer.requests(server)) == 1
    end
  end

  describe "the registration request (RFC 7591 §3.1)" do
    test "RFC 7591 §3.1: a POST of JSON with exact headers and body" do
      server = FixtureServer.start!(always(json(201, ~s({"client_id":"abc"}))))

      request =
        registration_request(server, %{
          client_name: "Café 日本",
          redirect_uris: ["http://127.0.0.1:8080/callback"],
          scope: "",
          logo_uri: nil,
          contacts: [],
          software_id: "sw-1"
        })

      assert {:ok, %{client_id: "abc"}} = CR.register_client(request)
      assert [sent] = FixtureServer.requests(server)

      assert sent.method == "POST"
      assert sent.path == "/register"
      assert sent.query == nil
      assert header(sent, "content-type") == ["application/json"]
      assert header(sent, "accept") == ["application/json"]
      assert header(sent, "content-length") == [Integer.to_string(byte_size(sent.body))]
      assert header(sent, "host") == ["127.0.0.1:#{FixtureServer.port(server)}"]
      assert header(sent, "authorization") == []

      # UTF-8 on the wire, unmangled.
      assert String.valid?(sent.body)
      assert sent.body =~ "Café 日本"

      # nil, "" and [] are not sent; registration_endpoint never is; defaults are filled in.
      assert sent_json(sent) == %{
               "client_name" => "Café 日本",
               "redirect_uris" => ["http://127.0.0.1:8080/callback"],
               "software_id" => "sw-1",
               "grant_types" => ["authorization_code"],
               "response_types" => ["code"],
               "token_endpoint_auth_method" => "none",
               "application_type" => "native"
             }
    end

    test "RFC 7591 §2: caller-given grant_types, response_types, auth method and :extra metadata are sent as given" do
      server = FixtureServer.start!(always(json(201, ~s({"client_id":"abc"}))))

      request =
        registration_request(server, %{
          grant_types: ["authorization_code", "refresh_token"],
          response_types: ["code"],
          token_endpoint_auth_method: "client_secret_post",
          extra: %{"post_logout_redirect_uris" => ["https://app.example.com/bye"], "x_flag" => true}
        })

      assert {:ok, _} = CR.register_client(request)
      assert [sent] = FixtureServer.requests(server)

      assert sent_json(sent) == %{
               "client_name" => "Test Client",
               "redirect_uris" => ["http://localhost:8080/callback"],
               "grant_types" => ["authorization_code", "refresh_token"],
               "response_types" => ["code"],
               "token_endpoint_auth_method" => "client_secret_post",
               "application_type" => "native",
               "post_logout_redirect_uris" => ["https://app.example.com/bye"],
               "x_flag" => true
             }
    end

    test "SEP-837: application_type is derived from the redirect URIs unless the caller sets it" do
      cases = [
        {["http://localhost:8080/callback"], nil, "native"},
        {["http://127.0.0.1:53123/cb"], nil, "native"},
        {["http://[::1]:3000/cb"], nil, "native"},
        {["com.example.app:/oauth2redirect"], nil, "native"},
        {["https://app.example.com/cb", "com.example.app:/cb"], nil, "native"},
        {["https://app.example.com/cb"], nil, "web"},
        {["https://app.example.com/cb", "https://localhost/cb"], nil, "native"},
        {["http://localhost:8080/callback"], "web", "web"},
        {["https://app.example.com/cb"], "native", "native"}
      ]

      server = FixtureServer.start!(always(json(201, ~s({"client_id":"abc"}))))

      for {uris, given, _expected} <- cases do
        overrides = %{redirect_uris: uris}
        overrides = if given, do: Map.put(overrides, :application_type, given), else: overrides
        assert {:ok, _} = CR.register_client(registration_request(server, overrides))
      end

      sent = server |> FixtureServer.requests() |> Enum.map(&sent_json(&1)["application_type"])
      assert sent == Enum.map(cases, fn {_, _, expected} -> expected end)
    end

    test "RFC 7591 §3: :initial_access_token is sent as a Bearer token" do
      server = FixtureServer.start!(always(json(201, ~s({"client_id":"abc"}))))

      assert {:ok, _} =
               CR.register_client(registration_request(server), initial_access_token: "iat-0123.abc_DEF")

      assert {:ok, _} = CR.register_client(registration_request(server), initial_access_token: nil)

      assert [with_token, without] = FixtureServer.requests(server)
      assert header(with_token, "authorization") == ["Bearer iat-0123.abc_DEF"]
      assert header(without, "authorization") == []
    end

    test "the :headers option adds request headers" do
      server = FixtureServer.start!(always(json(201, ~s({"client_id":"abc"}))))

      assert {:ok, _} =
               CR.register_client(registration_request(server),
                 headers: [{"x-request-id", "42"}, {"User-Agent", "fixture-test/1.0"}]
               )

      assert [sent] = FixtureServer.requests(server)
      assert header(sent, "x-request-id") == ["42"]
      assert header(sent, "user-agent") == ["fixture-test/1.0"]
      assert header(sent, "content-type") == ["application/json"]
    end
  end

  describe "management (RFC 7592)" do
    setup do
      current = %{
        "client_id" => "c1",
        "client_secret" => "s3cret",
        "client_secret_expires_at" => 0,
        "client_id_issued_at" => 1_700_000_000,
        "registration_access_token" => "tok-1",
        "registration_client_uri" => "http://127.0.0.1/register/c1",
        "client_name" => "Old",
        "logo_uri" => "https://app.example.com/logo.png",
        "redirect_uris" => ["http://localhost:8080/callback"],
        "grant_types" => ["authorization_code"],
        "scope" => "mcp:read",
        "vendor_field" => %{"a" => 1}
      }

      %{current: current}
    end

    test "RFC 7592 §2.1: a read is a GET with the registration access token", %{current: current} do
      server = FixtureServer.start!(always(json(200, current)))
      uri = FixtureServer.url(server, "/register/c1")

      assert {:ok, info} = CR.get_client_information(uri, "tok-1")

      assert info == %{
               client_id: "c1",
               client_secret: "s3cret",
               client_secret_expires_at: 0,
               client_id_issued_at: 1_700_000_000,
               registration_access_token: "tok-1",
               registration_client_uri: "http://127.0.0.1/register/c1",
               client_name: "Old",
               logo_uri: "https://app.example.com/logo.png",
               redirect_uris: ["http://localhost:8080/callback"],
               grant_types: ["authorization_code"],
               response_types: ["code"],
               scope: "mcp:read",
               extra: %{"vendor_field" => %{"a" => 1}}
             }

      assert [sent] = FixtureServer.requests(server)
      assert sent.method == "GET"
      assert sent.path == "/register/c1"
      assert header(sent, "authorization") == ["Bearer tok-1"]
      assert header(sent, "accept") == ["application/json"]
      assert header(sent, "content-type") == []
      assert sent.body == ""
    end

    test "RFC 7592 §2.1: a 2xx other than 200 is an invalid response, not a refusal", %{current: current} do
      server = FixtureServer.start!(always(json(201, current)))
      uri = FixtureServer.url(server, "/register/c1")

      assert CR.get_client_information(uri, "tok-1") ==
               {:error, {:invalid_response, "unexpected status 201 (expected 200)"}}

      assert CR.update_client_information(uri, "tok-1", %{client_name: "x"}) ==
               {:error, {:invalid_response, "unexpected status 201 (expected 200)"}}

      server = FixtureServer.start!(always({:respond, 202, [], ""}))

      assert CR.delete_client(FixtureServer.url(server, "/register/c1"), "tok-1") ==
               {:error, {:invalid_response, "unexpected status 202 (expected 204 or 200)"}}
    end

    test "RFC 7592 §2.1: a refused read is a registration_error" do
      error = %{"error" => "invalid_token"}
      server = FixtureServer.start!(always(json(401, error)))

      assert CR.get_client_information(FixtureServer.url(server, "/register/c1"), "tok-1") ==
               {:error, {:registration_error, 401, error}}
    end

    test "RFC 7592 §2.2: an update reads, merges and PUTs the whole registration without the forbidden fields",
         %{current: current} do
      updated = Map.merge(current, %{"client_name" => "New", "registration_access_token" => "tok-2"})
      server = FixtureServer.start!([json(200, current), json(200, Map.delete(updated, "logo_uri"))])
      uri = FixtureServer.url(server, "/register/c1")

      assert {:ok, info} = CR.update_client_information(uri, "tok-1", %{client_name: "New", logo_uri: nil})

      # The rotated token comes back (RFC 7592 §2.2: the server may issue a new one).
      assert info.registration_access_token == "tok-2"
      assert info.client_name == "New"
      refute Map.has_key?(info, :logo_uri)

      assert [get, put] = FixtureServer.requests(server)
      assert {get.method, get.path, get.body} == {"GET", "/register/c1", ""}
      assert {put.method, put.path} == {"PUT", "/register/c1"}
      assert header(get, "authorization") == ["Bearer tok-1"]
      assert header(put, "authorization") == ["Bearer tok-1"]
      assert header(put, "content-type") == ["application/json"]
      assert header(put, "content-length") == [Integer.to_string(byte_size(put.body))]

      # No registration_access_token, registration_client_uri, client_secret_expires_at,
      # client_id_issued_at; the client_secret the read returned; nil removed logo_uri.
      assert sent_json(put) == %{
               "client_id" => "c1",
               "client_secret" => "s3cret",
               "client_name" => "New",
               "redirect_uris" => ["http://localhost:8080/callback"],
               "grant_types" => ["authorization_code"],
               "scope" => "mcp:read",
               "vendor_field" => %{"a" => 1}
             }
    end

    test "RFC 7592 §2.2: client_secret is sent when the updates set it", %{current: current} do
      server = FixtureServer.start!([json(200, current), json(200, current)])
      uri = FixtureServer.url(server, "/register/c1")

      assert {:ok, _} = CR.update_client_information(uri, "tok-1", %{client_secret: "s3cret"})

      assert [_get, put] = FixtureServer.requests(server)
      assert sent_json(put)["client_secret"] == "s3cret"
      assert sent_json(put)["client_id"] == "c1"
    end

    test "RFC 7592 §2.2: replace: true sends only a PUT of the updates, forbidden fields stripped",
         %{current: current} do
      server = FixtureServer.start!([json(200, current)])
      uri = FixtureServer.url(server, "/register/c1")

      updates = %{
        client_id: "c1",
        client_name: "Only",
        redirect_uris: ["https://app.example.com/cb"],
        registration_access_token: "tok-1",
        registration_client_uri: uri,
        client_secret_expires_at: 0,
        client_id_issued_at: 1,
        scope: nil
      }

      assert {:ok, %{client_id: "c1"}} = CR.update_client_information(uri, "tok-1", updates, replace: true)

      assert [put] = FixtureServer.requests(server)
      assert put.method == "PUT"
      assert header(put, "authorization") == ["Bearer tok-1"]

      # SEP-837: application_type derived from the given redirect URIs.
      assert sent_json(put) == %{
               "client_id" => "c1",
               "client_name" => "Only",
               "redirect_uris" => ["https://app.example.com/cb"],
               "application_type" => "web"
             }
    end

    test "RFC 7592 §2.2: a refused read sends no PUT" do
      error = %{"error" => "invalid_token", "error_description" => "expired"}
      server = FixtureServer.start!([json(401, error)])
      uri = FixtureServer.url(server, "/register/c1")

      assert CR.update_client_information(uri, "tok-1", %{client_name: "New"}) ==
               {:error, {:registration_error, 401, error}}

      assert [%{method: "GET"}] = FixtureServer.requests(server)
    end

    test "RFC 7592 §2.3: a delete is a DELETE with the token; 204 and 200 are :ok" do
      server = FixtureServer.start!([{:respond, 204, [], ""}, json(200, "{}")])
      uri = FixtureServer.url(server, "/register/c1")

      assert CR.delete_client(uri, "tok-1") == :ok
      assert CR.delete_client(uri, "tok-1") == :ok

      assert [first, second] = FixtureServer.requests(server)

      for sent <- [first, second] do
        assert {sent.method, sent.path, sent.body} == {"DELETE", "/register/c1", ""}
        assert header(sent, "authorization") == ["Bearer tok-1"]
      end
    end

    test "RFC 7592 §2.3: a 404 JSON error on delete is a registration_error" do
      error = %{"error" => "invalid_client_id", "error_description" => "unknown client"}
      server = FixtureServer.start!(always(json(404, error)))

      assert CR.delete_client(FixtureServer.url(server, "/register/c1"), "tok-1") ==
               {:error, {:registration_error, 404, error}}
    end
  end

  describe "timeouts" do
    test "a server that never answers gives {:request_failed, :timeout} and leaves the mailbox empty" do
      server = FixtureServer.start!(always(:hang))

      assert CR.register_client(registration_request(server), timeout: 300) ==
               {:error, {:request_failed, :timeout}}

      assert Process.info(self(), :messages) == {:messages, []}

      assert [%{method: "POST"}] = FixtureServer.await_requests(server, 1)
      # The abandoned call drops its connection: the hanging fixture sees it close.
      assert FixtureServer.await_idle(server) == :ok
      assert Process.info(self(), :messages) == {:messages, []}

      FixtureServer.stop(server)
      refute_received _
    end
  end

  describe "options" do
    setup do
      %{server: FixtureServer.start!(always(json(201, ~s({"client_id":"abc"}))))}
    end

    test "an unknown option raises ArgumentError naming it", %{server: server} do
      error = assert_raise ArgumentError, fn -> CR.register_client(registration_request(server), bogus: 1) end
      assert error.message =~ ":bogus"

      error =
        assert_raise ArgumentError, fn ->
          CR.get_client_information(FixtureServer.url(server), "t", replace: true)
        end

      assert error.message =~ ":replace"
    end

    test "ill-typed timeouts raise ArgumentError naming the option", %{server: server} do
      for value <- [0, -1, "x", 1.5, nil] do
        error =
          assert_raise ArgumentError, fn ->
            CR.register_client(registration_request(server), timeout: value)
          end

        assert error.message =~ ":timeout"
      end
    end

    test "an Authorization header in :headers raises ArgumentError", %{server: server} do
      for name <- ["Authorization", "authorization", "Accept", "Content-Type", "Host"] do
        error =
          assert_raise ArgumentError, fn ->
            CR.register_client(registration_request(server), headers: [{name, "Bearer x"}])
          end

        assert error.message =~ ":headers"
      end

      assert FixtureServer.requests(server) == []
    end

    test "an ill-typed :initial_access_token raises ArgumentError without echoing the value", %{
      server: server
    } do
      error =
        assert_raise ArgumentError, fn ->
          CR.register_client(registration_request(server), initial_access_token: 123)
        end

      assert error.message =~ ":initial_access_token"
      refute error.message =~ "123"

      error =
        assert_raise ArgumentError, fn ->
          CR.register_client(registration_request(server), initial_access_token: "s3cr3t\r\nx-injected: 1")
        end

      assert error.message =~ ":initial_access_token"
      refute error.message =~ "s3cr3t"

      assert FixtureServer.requests(server) == []
    end

    test ":replace is an update option only", %{server: server} do
      error =
        assert_raise ArgumentError, fn -> CR.register_client(registration_request(server), replace: true) end

      assert error.message =~ ":replace"
      assert FixtureServer.requests(server) == []
    end
  end

  describe "format_error/1" do
    # Each reason with the details its sentence must carry: a sentence that
    # lost its status, error code, description, field, URIs or limit would
    # leave the reader unable to act on it.
    @reasons [
      {{:missing_required_fields, [:registration_endpoint, :client_name]},
       ["missing required fields", "registration_endpoint, client_name"]},
      {:redirect_uris_must_be_list, ["redirect_uris", "must be a list"]},
      {{:invalid_redirect_uris, ["javascript:alert(1)", "/relative"]},
       ["redirect URIs", "javascript:alert(1), /relative"]},
      {:https_required, ["https", "localhost, 127.0.0.0/8 or [::1]"]},
      {{:invalid_field, :scope, "must be a string"}, ["scope must be a string"]},
      {{:invalid_field, "x_unknown", "is not a known client metadata field"},
       ["x_unknown is not a known client metadata field"]},
      {{:registration_error, 400, %{"error" => "invalid_redirect_uri", "error_description" => "bad uri"}},
       ["refused", "HTTP 400", "invalid_redirect_uri", "bad uri"]},
      {{:registration_error, 400, %{"error" => "invalid_client_metadata"}},
       ["refused", "HTTP 400", "invalid_client_metadata"]},
      {{:registration_error, 403, %{}}, ["refused", "HTTP 403"]},
      {{:http_error, 500, "<html>oops</html>"}, ["HTTP 500", "not a JSON object", "17 bytes"]},
      {{:http_error, 502, ""}, ["HTTP 502"]},
      {{:http_error, 302, "moved"}, ["redirect", "HTTP 302", "not followed"]},
      {{:invalid_response, "the response has no client_id"},
       ["not valid client information", "no client_id"]},
      {{:json_decode_error, "expected value at line 1 column 1"},
       ["not valid JSON", "expected value at line 1 column 1"]},
      {{:request_failed, :timeout}, ["timed out"]},
      {{:request_failed, {:connect, "connection refused"}}, ["connect", "connection refused"]},
      {{:request_failed, {:tls, "invalid peer certificate"}}, ["TLS", "invalid peer certificate"]},
      {{:request_failed, {:body_too_large, 1_048_576}}, ["1048576-byte limit", ":max_response_bytes"]},
      {{:request_failed, {:connection, "connection closed before message completed"}},
       ["connection failed", "connection closed before message completed"]},
      {{:request_failed, {:cacertfile, "/nope.pem: No such file or directory"}},
       [":cacertfile", "/nope.pem: No such file or directory"]},
      {{:request_failed, {:proxy, "the proxy requires authentication (HTTP 407)"}},
       ["proxy", "the proxy requires authentication (HTTP 407)"]},
      {{:request_failed, {:panic, "boom"}}, ["internal error", "boom"]},
      # RFC 7592 §2.1: the inner reason's details, and what to do with the
      # new credentials (never the credentials themselves).
      {{:credentials_rotated, %ExMCP.Authorization.RotatedCredentials{client: %{client_id: "c1"}},
        {:registration_error, 400,
         %{"error" => "invalid_client_metadata", "error_description" => "bad scope"}}},
       ["HTTP 400", "invalid_client_metadata", "bad scope", "new registration access token", "store them"]},
      # Discovery (RFC 9728, RFC 8414) and obtain_client/3.
      {{:discovery_failed, "https://as.example/.well-known/oauth-authorization-server",
        {:http_error, 503, "down"}},
       ["https://as.example/.well-known/oauth-authorization-server", "HTTP 503"]},
      {{:invalid_metadata, "https://mcp.example/.well-known/oauth-protected-resource", "resource is missing"},
       ["https://mcp.example/.well-known/oauth-protected-resource", "resource is missing"]},
      {{:resource_mismatch, "https://other.example/mcp", "https://mcp.example/mcp"},
       ["https://other.example/mcp", "https://mcp.example/mcp"]},
      {{:issuer_mismatch, "https://as.example", "https://evil.example"},
       ["https://as.example", "https://evil.example", "RFC 8414"]},
      {{:authorization_server_metadata_not_found, "https://as.example/t",
        ["https://as.example/.well-known/oauth-authorization-server/t"]},
       ["https://as.example/t", "https://as.example/.well-known/oauth-authorization-server/t"]},
      {{:url_refused, "https://10.0.0.1/", "10.0.0.1 is a private address"},
       ["https://10.0.0.1/", "private address"]},
      {{:invalid_www_authenticate, "unbalanced quote"}, ["WWW-Authenticate", "unbalanced quote"]},
      {{:no_registration_path, ["dynamic registration: no registration_endpoint"]},
       ["no way to obtain a client", "no registration_endpoint"]}
    ]

    test "every reason becomes one sentence that carries its details" do
      for {reason, details} <- @reasons do
        sentence = CR.format_error(reason)
        assert String.valid?(sentence), inspect(reason)
        refute sentence =~ "\n", inspect(reason)

        for detail <- details do
          assert String.contains?(sentence, detail),
                 "format_error(#{inspect(reason)}) = #{inspect(sentence)} lacks #{inspect(detail)}"
        end
      end

      assert CR.format_error({:request_failed, :timeout}) == "the request timed out"
    end

    test "the test above covers every reason the moduledoc lists" do
      {:docs_v1, _, _, _, %{"en" => moduledoc}, _, _} = Code.fetch_docs(CR)
      [_, errors] = String.split(moduledoc, "## Errors", parts: 2)

      # First column of the reasons table: `{:tag, ...}` or `:tag`.
      documented = MapSet.new(Regex.scan(~r/^\| `\{?:(\w+)/m, errors, capture: :all_but_first), &hd/1)
      # The transport reasons are listed in the :request_failed row.
      [request_failed_row] = Regex.run(~r/^\| `\{:request_failed.*$/m, errors)

      transport =
        MapSet.new(Regex.scan(~r/`\{?:(\w+)/, request_failed_row, capture: :all_but_first), &hd/1)
        |> MapSet.delete("request_failed")

      tag = fn
        {tag, _} -> tag
        {tag, _, _} -> tag
        tag when is_atom(tag) -> tag
      end

      covered = MapSet.new(@reasons, fn {reason, _} -> to_string(tag.(reason)) end)

      covered_transport = MapSet.new(for {{:request_failed, sub}, _} <- @reasons, do: to_string(tag.(sub)))

      assert MapSet.size(documented) >= 10
      assert MapSet.difference(documented, covered) == MapSet.new()
      assert MapSet.size(transport) >= 7
      assert MapSet.difference(transport, covered_transport) == MapSet.new()
    end

    test "formats the reasons the client actually returns" do
      server = FixtureServer.start!([json(400, %{"error" => "invalid_client_metadata"}), json(200, "[]")])

      assert {:error, reason} = CR.register_client(registration_request(server))

      assert CR.format_error(reason) ==
               "the authorization server refused the request (HTTP 400): invalid_client_metadata"

      assert {:error, reason} = CR.register_client(registration_request(server))

      assert CR.format_error(reason) ==
               "the server's answer is not valid client information: expected a JSON object, got an array"
    end
  end

  describe "test support" do
    test "FixtureServer keeps connections alive, records requests in order and decodes chunked bodies" do
      server =
        FixtureServer.start!([
          {:respond, 200, [], "one"},
          fn request -> {:respond, 201, [{"x-echo", request.body}], ""} end
        ])

      {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, FixtureServer.port(server), [:binary, active: false])

      # Two pipelined requests, then a chunked one, on one connection.
      :ok =
        :gen_tcp.send(socket, [
          "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-Thing: A b\r\n\r\nabc",
          "PUT /b?x=1&y=2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        ])

      assert recv_exact(socket, "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none") ==
               {:ok, "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none"}

      assert recv_exact(socket, "HTTP/1.1 201 Created\r\nx-echo: abcde\r\ncontent-length: 0\r\n\r\n") ==
               {:ok, "HTTP/1.1 201 Created\r\nx-echo: abcde\r\ncontent-length: 0\r\n\r\n"}

      # The canned list is used up: a third request gets a 500.
      :ok = :gen_tcp.send(socket, "GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
      body = "fixture: no canned action left for GET /c"

      expected =
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n" <>
          "content-length: #{byte_size(body)}\r\n\r\n" <> body

      assert recv_exact(socket, expected) == {:ok, expected}

      assert [a, b, c] = FixtureServer.requests(server)

      assert a == %{
               method: "POST",
               path: "/a",
               query: nil,
               headers: [{"host", "x"}, {"content-length", "3"}, {"x-thing", "A b"}],
               body: "abc",
               conn: 1,
               seq: 1
             }

      assert {b.method, b.path, b.query, b.body, b.conn, b.seq} == {"PUT", "/b", "x=1&y=2", "abcde", 1, 2}
      assert {c.method, c.path, c.body, c.conn, c.seq} == {"GET", "/c", "", 1, 3}
      assert FixtureServer.connection_count(server) == 1

      :gen_tcp.close(socket)
      assert FixtureServer.await_idle(server) == :ok
    end

    test "FixtureServer :close, :raw, step lists and :on_accept" do
      server =
        FixtureServer.start!([:close, [{:raw, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"}, {:close}]],
          on_accept: fn %{conn: id} -> if id == 3, do: :close, else: :serve end
        )

      port = FixtureServer.port(server)
      request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"

      {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false])
      :ok = :gen_tcp.send(socket, request)
      assert :gen_tcp.recv(socket, 0, 5_000) == {:error, :closed}

      {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false])
      :ok = :gen_tcp.send(socket, request)
      assert recv_all(socket, "") == "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"

      {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false])
      assert :gen_tcp.recv(socket, 0, 5_000) == {:error, :closed}

      assert length(FixtureServer.requests(server)) == 2
      assert FixtureServer.await_idle(server) == :ok
      assert FixtureServer.connection_count(server) == 3
    end

    test "JSON decodes objects, arrays, escapes, surrogate pairs and numbers" do
      assert JSON.decode!(~S( {"a": [1, -2, 3.5, -0.25e2, 1E3, 0], "b": {"c": null, "d": true, "e": false}} )) ==
               %{"a" => [1, -2, 3.5, -25.0, 1000.0, 0], "b" => %{"c" => nil, "d" => true, "e" => false}}

      assert JSON.decode!(~S("\"\\\/\b\f\n\r\t\u00e9\u65E5\ud83d\ude00")) == "\"\\/\b\f\n\r\té日😀"
      assert JSON.decode!(~S("Café 日本")) == "Café 日本"
      assert JSON.decode!(~S({"k":1,"k":2})) == %{"k" => 2}
      assert JSON.decode!("[]") == []
      assert JSON.decode!("{}") == %{}

      for bad <- [
            "",
            "{",
            "[1,]",
            ~S({"a" 1}),
            ~S({a: 1}),
            "01",
            "1.",
            "-",
            ~S("\ud83d"),
            ~S("\ude00"),
            ~S("\x"),
            "\"a\nb\"",
            "\"\xff\"",
            "nul",
            "[1] [2]"
          ] do
        assert_raise ArgumentError, fn -> JSON.decode!(bad) end
      end
    end

    test "JSON encodes what it decodes" do
      term = %{"s" => "q\"\\\n\u0001é😀", "n" => [1, 2.5, -3], "b" => [true, false, nil], "o" => %{"x" => []}}
      assert term |> JSON.encode!() |> JSON.decode!() == term
      assert JSON.encode!(%{a: :b}) == ~s({"a":"b"})
    end
  end

  defp recv_exact(socket, bytes), do: :gen_tcp.recv(socket, byte_size(bytes), 5_000)

  defp recv_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, data} -> recv_all(socket, acc <> data)
      {:error, :closed} -> acc
    end
  end
end

defmodule ExMCP.Authorization.ClientRegistrationAtomTest do
  # Not async: atom counting needs a quiet VM (no test file loading, no other test).
  use ExUnit.Case, async: false

  alias ExMCP.Authorization.ClientRegistration, as: CR
  alias ExMCP.Test.FixtureServer
  alias ExMCP.Test.JSON

  defp random_names(count) do
    for _ <- 1..count, do: "x_unknown_" <> Base.encode32(:rand.bytes(10), case: :lower, padding: false)
  end

  defp answer(names) do
    members = Map.new(names, fn name -> {name, %{name => [name]}} end)

    {:respond, 201, [{"content-type", "application/json"}],
     JSON.encode!(Map.put(members, "client_id", "abc"))}
  end

  test "RFC 7591 §3.2.1: unknown members go under :extra with string keys and create no atoms" do
    warm_up = random_names(5)
    names = random_names(1_000)
    server = FixtureServer.start!([answer(warm_up), answer(names)])

    request = %{
      registration_endpoint: FixtureServer.url(server, "/register"),
      client_name: "Atoms",
      redirect_uris: ["http://localhost:8080/callback"]
    }

    # The first call loads and warms up whatever it needs.
    assert {:ok, _} = CR.register_client(request)

    before = :erlang.system_info(:atom_count)
    assert {:ok, info} = CR.register_client(request)
    assert :erlang.system_info(:atom_count) == before

    assert info.extra == Map.new(names, fn name -> {name, %{name => [name]}} end)

    for name <- warm_up ++ names do
      assert_raise ArgumentError, fn -> String.to_existing_atom(name) end
    end
  end
end
