defmodule ExMCP.Authorization.ClientRegistrationValidationTest do
  # Everything here is refused before any network call: the endpoint is a
  # closed loopback port, so a request that slipped through would show up as
  # {:request_failed, {:connect, _}} instead of the asserted reason.
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.ClientRegistration, as: CR
  alias ExMCP.Authorization.Native

  @endpoint "http://127.0.0.1:1/register"

  defp request(overrides \\ %{}) do
    Map.merge(
      %{registration_endpoint: @endpoint, client_name: "Test", redirect_uris: ["http://localhost:8080/cb"]},
      overrides
    )
  end

  describe "required fields (ExMCP 0.10)" do
    test "missing fields are listed in a fixed order" do
      assert CR.register_client(%{}) ==
               {:error, {:missing_required_fields, [:registration_endpoint, :client_name, :redirect_uris]}}

      assert CR.register_client(%{client_name: "x"}) ==
               {:error, {:missing_required_fields, [:registration_endpoint, :redirect_uris]}}
    end

    test "nil, empty string and empty list count as missing" do
      assert CR.register_client(request(%{client_name: nil})) ==
               {:error, {:missing_required_fields, [:client_name]}}

      assert CR.register_client(request(%{client_name: ""})) ==
               {:error, {:missing_required_fields, [:client_name]}}

      assert CR.register_client(request(%{redirect_uris: []})) ==
               {:error, {:missing_required_fields, [:redirect_uris]}}
    end
  end

  describe "redirect URIs (RFC 7591 §2, RFC 8252 §7)" do
    test "must be a list" do
      assert CR.register_client(request(%{redirect_uris: "https://app.example.com/cb"})) ==
               {:error, :redirect_uris_must_be_list}
    end

    test "must hold only strings" do
      assert {:error, {:invalid_field, :redirect_uris, message}} =
               CR.register_client(request(%{redirect_uris: ["https://a.example/cb", 42]}))

      assert message =~ "list of strings"
    end

    test "every invalid URI is listed, in order" do
      bad = [
        "/relative/cb",
        "https://app.example.com/cb#fragment",
        "http://app.example.com/cb",
        "javascript:alert(1)",
        "data:text/html,hi",
        "vbscript:msgbox(1)",
        "file:///etc/passwd"
      ]

      assert CR.register_client(request(%{redirect_uris: ["https://ok.example/cb" | bad]})) ==
               {:error, {:invalid_redirect_uris, bad}}
    end

    test "https, loopback http and private-use schemes are accepted" do
      for uri <- [
            "https://app.example.com/cb",
            "http://localhost:8080/cb",
            "http://127.0.0.1/cb",
            "http://127.10.0.1/cb",
            "http://[::1]:9000/cb",
            "com.example.app:/oauth2redirect"
          ] do
        assert {:error, {:request_failed, {:connect, _}}} =
                 CR.register_client(request(%{redirect_uris: [uri]})),
               "#{uri} should pass validation"
      end
    end
  end

  describe "endpoints (OAuth 2.1 §1.5)" do
    test "plain http to a non-loopback host is refused" do
      assert CR.register_client(request(%{registration_endpoint: "http://auth.example.com/register"})) ==
               {:error, :https_required}

      assert CR.get_client_information("http://auth.example.com/reg/1", "token") == {:error, :https_required}

      assert CR.update_client_information("http://auth.example.com/reg/1", "token", %{}) ==
               {:error, :https_required}

      assert CR.delete_client("http://auth.example.com/reg/1", "token") == {:error, :https_required}
    end

    test "an endpoint that is not a URL names the field" do
      assert {:error, {:invalid_field, :registration_endpoint, _}} =
               CR.register_client(request(%{registration_endpoint: "register"}))

      assert {:error, {:invalid_field, :registration_endpoint, _}} =
               CR.register_client(request(%{registration_endpoint: 'https://charlist.example'}))

      assert {:error, {:invalid_field, :registration_client_uri, _}} =
               CR.get_client_information(:not_a_uri, "token")
    end

    test "a token that is not a usable string is named, never echoed" do
      for token <- ["", 123, nil, "line\r\nbreak"] do
        assert {:error, {:invalid_field, :registration_access_token, message}} =
                 CR.get_client_information("https://auth.example.com/reg/1", token)

        refute message =~ "line"
      end
    end
  end

  describe "ill-typed values name the field" do
    test "scalar and list fields" do
      # RFC 7591 §2: each field's type, and an absolute http(s) URL for the
      # URL fields; the message says what the field must be.
      for {field, value, expected} <- [
            {:client_name, 42, "must be a string"},
            {:scope, ["a"], "must be a string"},
            {:contacts, "ops@example.com", "must be a list of strings"},
            {:contacts, ["ok", 1], "must be a list of strings"},
            {:grant_types, "authorization_code", "must be a list of strings"},
            {:jwks, "keys", "must be a map (a JSON object)"},
            {:logo_uri, "javascript:alert(1)", "must be an absolute http or https URL"},
            {:client_uri, "not a url", "must be an absolute http or https URL"},
            {:token_endpoint_auth_method, 1, "must be a string"}
          ] do
        assert CR.register_client(request(%{field => value})) == {:error, {:invalid_field, field, expected}}
      end
    end

    test "values JSON cannot represent" do
      not_json = "holds a value JSON cannot represent (a tuple, pid, reference or function)"

      for {value, expected} <- [
            {{:a, :tuple}, not_json},
            {self(), not_json},
            {make_ref(), not_json},
            {fn -> :ok end, not_json},
            {[1 | 2], "is an improper list"},
            {<<0xFF>>, "must be valid UTF-8"},
            {Integer.pow(2, 70), "holds an integer outside the 64-bit range"}
          ] do
        assert CR.register_client(request(%{client_name: value})) ==
                 {:error, {:invalid_field, :client_name, expected}}
      end
    end

    test "a huge or deeply nested map is refused quickly" do
      deep = Enum.reduce(1..100, %{}, fn _, acc -> %{"n" => acc} end)

      assert {:error, {:invalid_field, :jwks, "is nested too deeply"}} =
               CR.register_client(request(%{jwks: deep}))

      wide = Map.new(1..100_000, &{"k#{&1}", &1})

      assert {:error, {:invalid_field, :jwks, "is too large: " <> limit}} =
               CR.register_client(request(%{jwks: wide}))

      assert limit == "a request map holds at most 50000 values and 1048576 bytes of text"
    end

    test "unknown keys are refused; extension metadata goes under :extra" do
      assert {:error, {:invalid_field, :redirect_uri, message}} =
               CR.register_client(request(%{redirect_uri: "https://typo.example/cb"}))

      assert message =~ ":extra"

      assert {:error, {:invalid_field, :extra, _}} =
               CR.register_client(request(%{extra: %{"client_name" => "x"}}))

      assert {:error, {:invalid_field, :extra, _}} = CR.register_client(request(%{extra: [1]}))
    end

    test "server-issued fields cannot be sent at registration (RFC 7591 §3.1)" do
      assert {:error, {:invalid_field, :client_id, _}} = CR.register_client(request(%{client_id: "chosen"}))
    end

    test "update maps are checked the same way" do
      assert {:error, {:invalid_redirect_uris, ["javascript:x"]}} =
               CR.update_client_information("https://127.0.0.1:1/reg/1", "t", %{
                 redirect_uris: ["javascript:x"]
               })
    end
  end

  describe "arguments and options" do
    test "a request that is not a map raises ArgumentError" do
      assert_raise ArgumentError, ~r/request must be a map/, fn -> CR.register_client(client_name: "x") end

      assert_raise ArgumentError, ~r/updates must be a map/, fn ->
        CR.update_client_information("u", "t", nil)
      end
    end

    test "unknown and ill-typed options raise ArgumentError naming the option" do
      assert_raise ArgumentError, ~r/unknown option :bogus/, fn -> CR.register_client(request(), bogus: 1) end

      assert_raise ArgumentError, ~r/unknown option :replace/, fn ->
        CR.register_client(request(), replace: true)
      end

      assert_raise ArgumentError, ~r/unknown option :initial_access_token/, fn ->
        CR.get_client_information("https://a.example/r", "t", initial_access_token: "x")
      end

      assert_raise ArgumentError, ~r/invalid option :timeout: must be an integer from 1 to 4294967295/, fn ->
        CR.register_client(request(), timeout: 0)
      end

      assert_raise ArgumentError, ~r/:max_response_bytes/, fn ->
        CR.register_client(request(), max_response_bytes: :infinity)
      end

      assert_raise ArgumentError, ~r/keyword list/, fn -> CR.register_client(request(), %{timeout: 1}) end

      assert_raise ArgumentError, ~r/:replace must be a boolean/, fn ->
        CR.update_client_information("u", "t", %{}, replace: 1)
      end
    end

    test "headers the library owns cannot be overridden" do
      assert_raise ArgumentError, ~r/option :headers: header 2: "authorization" is set by the library/, fn ->
        CR.register_client(request(), headers: [{"x-ok", "1"}, {"Authorization", "Bearer x"}])
      end

      assert_raise ArgumentError, ~r/option :headers: header 1: its name is not a valid header name/, fn ->
        CR.register_client(request(), headers: [{"bad name", "x"}])
      end
    end

    test "a rejected header is named by position, never echoed (it may be a misplaced token)" do
      for headers <- [[{"SECRET token", "x"}], [{"x-token", "SECRET\nvalue"}]] do
        error = assert_raise ArgumentError, fn -> CR.register_client(request(), headers: headers) end
        refute Exception.message(error) =~ "SECRET"
        refute Exception.message(error) =~ "x-token"
      end
    end

    test "a malformed initial access token is never echoed" do
      for token <- ["tok\nen-SECRET", 'charlist-SECRET', 1234] do
        error =
          assert_raise ArgumentError, fn -> CR.register_client(request(), initial_access_token: token) end

        refute Exception.message(error) =~ "SECRET"
        refute Exception.message(error) =~ "1234"
      end
    end
  end

  test "a refused request is answered by the NIF itself: no Pending, no reply message" do
    # Per call, so it holds in this async module: the NIF returned the error
    # before spawning anything (the global count is checked in
    # ExMCP.Hardening.CancellationTest, which runs alone).
    ref = make_ref()
    assert {:error, {:missing_required_fields, _}} = Native.register(%{}, %{}, ref)
    assert Native.get("http://auth.example.com/r", "t", %{}, ref) == {:error, :https_required}
    refute_received {^ref, _}
  end
end
