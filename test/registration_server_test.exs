defmodule ExMCP.Authorization.RegistrationServerTest do
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.{ClientRegistration, Native, RegistrationServer}

  setup_all do
    {:ok, _} = Application.ensure_all_started(:inets)
    :ok
  end

  defp start_server!(opts \\ []),
    do: start_supervised!(Supervisor.child_spec({RegistrationServer, opts}, id: make_ref()))

  defp registration(server, extra \\ %{}) do
    Map.merge(
      %{
        registration_endpoint: RegistrationServer.registration_endpoint(server),
        client_name: "Test Client",
        redirect_uris: ["http://127.0.0.1:8080/callback"]
      },
      extra
    )
  end

  defp register!(server, extra \\ %{}, opts \\ []) do
    {:ok, client} = ClientRegistration.register_client(registration(server, extra), opts)
    client
  end

  # Raw HTTP through :httpc, for what our client does not expose or refuses
  # to send: status codes, headers, malformed or forbidden bodies.
  defp raw(method, url, opts \\ []) do
    headers =
      for {name, value} <- Keyword.get(opts, :headers, []),
          do: {String.to_charlist(name), String.to_charlist(value)}

    headers =
      case opts[:token] do
        nil -> headers
        token -> [{~c"authorization", String.to_charlist("Bearer " <> token)} | headers]
      end

    request =
      case Keyword.fetch(opts, :body) do
        {:ok, body} ->
          content_type = String.to_charlist(Keyword.get(opts, :content_type, "application/json"))
          {String.to_charlist(url), headers, content_type, body}

        :error ->
          {String.to_charlist(url), headers}
      end

    {:ok, {{_, status, _}, resp_headers, body}} =
      :httpc.request(method, request, [timeout: 5_000], body_format: :binary)

    {status, Map.new(resp_headers, fn {k, v} -> {List.to_string(k), List.to_string(v)} end), body}
  end

  # No JSON library here (no hex.pm), and the error bodies are flat objects.
  defp error_code(body) do
    [_, error] = Regex.run(~r/"error":"([^"]*)"/, body)
    error
  end

  defp description(body) do
    [_, description] = Regex.run(~r/"error_description":"((?:[^"\\]|\\.)*)"/, body)
    description
  end

  defp refused?(port), do: match?({:error, :econnrefused}, :gen_tcp.connect(~c"127.0.0.1", port, [], 500))

  defp eventually(fun, tries \\ 100) do
    cond do
      fun.() ->
        true

      tries == 0 ->
        false

      true ->
        Process.sleep(20)
        eventually(fun, tries - 1)
    end
  end

  describe "with our own client" do
    test "the full RFC 7591 / RFC 7592 cycle" do
      server = start_server!()
      before = System.system_time(:second)

      client =
        register!(server, %{
          client_name: "Café 日本",
          scope: "mcp:read mcp:write",
          extra: %{"vendor_field" => %{"a" => 1}}
        })

      # 16 random bytes, base64url without padding, and the server stored it.
      assert client.client_id =~ ~r/^[A-Za-z0-9_-]{22}$/
      assert {:ok, %{client_name: "Café 日本"}} = RegistrationServer.lookup(server, client.client_id)
      assert client.client_id_issued_at >= before

      assert client.registration_client_uri ==
               RegistrationServer.registration_endpoint(server) <> "/" <> client.client_id

      assert byte_size(client.registration_access_token) >= 43
      assert client.client_secret == nil, "a public client gets no secret"
      assert client.client_name == "Café 日本"
      assert client.redirect_uris == ["http://127.0.0.1:8080/callback"]
      assert client.grant_types == ["authorization_code"]
      assert client.response_types == ["code"]
      assert client.token_endpoint_auth_method == "none"
      assert client.application_type == "native", "sent by our client (SEP-837)"
      refute Map.has_key?(client, :extra), "RFC 7591 §2: unknown metadata is ignored, not echoed"

      uri = client.registration_client_uri
      token = client.registration_access_token
      assert {:ok, ^client} = ClientRegistration.get_client_information(uri, token)

      assert {:ok, updated} =
               ClientRegistration.update_client_information(uri, token, %{client_name: "v2", scope: nil})

      assert updated.client_name == "v2"
      assert updated.scope == ""
      assert updated.redirect_uris == client.redirect_uris
      refute Map.has_key?(updated, :extra)
      assert updated.registration_access_token == token
      assert {:ok, %{client_name: "v2"}} = RegistrationServer.lookup(server, client.client_id)

      assert :ok = ClientRegistration.delete_client(uri, token)

      assert {:error, {:registration_error, 401, %{"error" => "invalid_token"}}} =
               ClientRegistration.get_client_information(uri, token)

      assert {:error, {:registration_error, 401, _}} = ClientRegistration.delete_client(uri, token)
      assert RegistrationServer.count(server) == 0
    end

    test "confidential clients get a secret; its lifetime is configurable" do
      server = start_server!()
      client = register!(server, %{token_endpoint_auth_method: "client_secret_basic"})
      assert byte_size(client.client_secret) >= 43
      assert client.client_secret_expires_at == 0

      server = start_server!(client_secret_expires_in: 3600)
      client = register!(server, %{token_endpoint_auth_method: "client_secret_post"})
      now = System.system_time(:second)
      assert client.client_secret_expires_at in (now + 3598)..(now + 3601)
    end

    test "registration_access_token rotation invalidates the old token" do
      server = start_server!(rotate_registration_access_token: true)
      client = register!(server)
      uri = client.registration_client_uri
      old = client.registration_access_token

      assert {:ok, updated} = ClientRegistration.update_client_information(uri, old, %{client_name: "v2"})
      new = updated.registration_access_token
      assert is_binary(new) and new != old

      assert {:error, {:registration_error, 401, _}} = ClientRegistration.get_client_information(uri, old)
      assert {:ok, %{client_name: "v2"}} = ClientRegistration.get_client_information(uri, new)
      assert {:ok, %{registration_access_token: ^new}} = RegistrationServer.lookup(server, client.client_id)
    end

    test "an initial access token is required when configured" do
      server = start_server!(initial_access_token: "let-me-in")

      assert {:error, {:registration_error, 401, %{"error" => "invalid_token"}}} =
               ClientRegistration.register_client(registration(server))

      assert {:error, {:registration_error, 401, _}} =
               ClientRegistration.register_client(registration(server), initial_access_token: "nope")

      assert %{client_id: _} = register!(server, %{}, initial_access_token: "let-me-in")
      assert RegistrationServer.count(server) == 1

      {status, headers, _} =
        raw(:post, RegistrationServer.registration_endpoint(server), body: ~s({"client_name":"x"}))

      assert status == 401
      assert headers["www-authenticate"] == ~s(Bearer error="invalid_token")
    end

    test "a body over max_body_bytes is refused" do
      server = start_server!(max_body_bytes: 64)

      assert {:error, {:registration_error, 413, %{"error_description" => description}}} =
               ClientRegistration.register_client(registration(server))

      assert description =~ "64 bytes"
    end
  end

  describe "raw HTTP" do
    setup do
      server = start_server!()
      %{server: server, url: RegistrationServer.url(server), client: register!(server)}
    end

    test "the RFC 8414 metadata document", %{url: url} do
      {200, headers, body} = raw(:get, url <> "/.well-known/oauth-authorization-server")
      assert headers["content-type"] == "application/json"
      assert body =~ ~s("issuer":"#{url}")
      assert body =~ ~s("registration_endpoint":"#{url}/register")

      assert body =~
               ~s("token_endpoint_auth_methods_supported":["none","client_secret_basic","client_secret_post"])

      assert body =~ ~s("grant_types_supported":)
      assert body =~ ~s("response_types_supported":["code"])
    end

    test "registration answers 201 with Cache-Control: no-store", %{url: url} do
      body = ~s({"client_name":"raw","redirect_uris":["https://app.example.com/cb"]})
      {201, headers, answer} = raw(:post, url <> "/register", body: body)
      assert headers["cache-control"] == "no-store"
      # RFC 7591 §2: no auth method sent means client_secret_basic, with a
      # secret; the server invents no application_type.
      assert answer =~ ~s("token_endpoint_auth_method":"client_secret_basic")
      assert answer =~ ~s("client_secret":")
      refute answer =~ "application_type"
      assert answer =~ ~s("registration_access_token":")
    end

    test "management without the right token is 401 with WWW-Authenticate", %{client: client} do
      uri = client.registration_client_uri

      for opts <- [[], [token: "wrong"], [headers: [{"authorization", "Basic dXNlcjpwdw=="}]]],
          method <- [:get, :delete] do
        {status, headers, body} = raw(method, uri, opts)
        assert status == 401, "#{method} #{inspect(opts)}"
        assert headers["www-authenticate"] == ~s(Bearer error="invalid_token")
        assert error_code(body) == "invalid_token"
      end

      {401, _, _} = raw(:get, uri <> "x", token: client.registration_access_token)
      {200, headers, _} = raw(:get, uri, token: client.registration_access_token)
      assert headers["cache-control"] == "no-store"
    end

    test "a PUT carrying server-issued fields is 400", %{client: client} do
      for {field, value} <- [
            registration_access_token: ~s("#{client.registration_access_token}"),
            registration_client_uri: ~s("#{client.registration_client_uri}"),
            client_secret_expires_at: "0",
            client_id_issued_at: "#{client.client_id_issued_at}"
          ] do
        body =
          ~s({"client_id":"#{client.client_id}","redirect_uris":["https://a.example/cb"],"#{field}":#{value}})

        {status, _, answer} =
          raw(:put, client.registration_client_uri, token: client.registration_access_token, body: body)

        assert status == 400, "#{field}"
        assert error_code(answer) == "invalid_client_metadata"
        assert description(answer) =~ "#{field}"
      end

      mismatched = ~s({"client_id":"someone-else","redirect_uris":["https://a.example/cb"]})

      {400, _, answer} =
        raw(:put, client.registration_client_uri, token: client.registration_access_token, body: mismatched)

      assert description(answer) =~ "client_id"

      wrong_secret =
        ~s({"client_id":"#{client.client_id}","client_secret":"guess","redirect_uris":["https://a.example/cb"]})

      {400, _, answer} =
        raw(:put, client.registration_client_uri, token: client.registration_access_token, body: wrong_secret)

      assert description(answer) =~ "client_secret"
    end

    test "bad bodies are 400 with an RFC 7591 error code", %{url: url} do
      register = url <> "/register"

      for {body, content_type, code, text} <- [
            {"{\"client_name\":", "application/json", "invalid_client_metadata", "not valid JSON"},
            {"[1,2]", "application/json", "invalid_client_metadata", "JSON object"},
            {"client_name=x", "application/x-www-form-urlencoded", "invalid_client_metadata", "Content-Type"},
            {~s<{"redirect_uris":["javascript:alert(1)"]}>, "application/json", "invalid_redirect_uri",
             "forbidden scheme"},
            {~s({"redirect_uris":["http://evil.example/cb"]}), "application/json", "invalid_redirect_uri",
             "not loopback"},
            {~s({"client_name":"no redirect"}), "application/json", "invalid_redirect_uri",
             "required by the authorization_code grant type"},
            {~s({"client_name":7,"redirect_uris":["https://a.example/cb"]}), "application/json",
             "invalid_client_metadata", "client_name must be a string"}
          ] do
        {status, _, answer} = raw(:post, register, body: body, content_type: content_type)
        assert status == 400, body
        assert error_code(answer) == code, body
        assert description(answer) =~ text, body
      end
    end

    test "a body over 64 KiB is 413", %{url: url, client: client} do
      big = ~s({"client_name":"#{String.duplicate("x", 70_000)}"})
      {413, _, answer} = raw(:post, url <> "/register", body: big)
      assert description(answer) =~ "65536"

      {413, _, _} =
        raw(:put, client.registration_client_uri, token: client.registration_access_token, body: big)
    end

    test "an unsupported method is 405 with Allow; an unknown path is 404", %{url: url, client: client} do
      for {method, path, allow} <- [
            {:get, "/register", "POST"},
            {:put, "/register", "POST"},
            {:patch, "/register/" <> client.client_id, "GET, PUT, DELETE"},
            {:post, "/register/" <> client.client_id, "GET, PUT, DELETE"},
            {:post, "/.well-known/oauth-authorization-server", "GET"}
          ] do
        opts = if method in [:post, :put, :patch], do: [body: "{}"], else: []
        {status, headers, _} = raw(method, url <> path, opts)
        assert status == 405, "#{method} #{path}"
        assert headers["allow"] == allow
      end

      {404, _, answer} = raw(:get, url <> "/nowhere")
      assert error_code(answer) == "not_found"
    end
  end

  describe "the store" do
    test "lookup, list and count" do
      server = start_server!()
      assert RegistrationServer.count(server) == 0
      assert RegistrationServer.list(server) == []

      clients = for i <- 1..3, do: register!(server, %{client_name: "client #{i}"})
      assert RegistrationServer.count(server) == 3

      listed = RegistrationServer.list(server)
      assert Enum.sort(Enum.map(listed, & &1.client_id)) == Enum.sort(Enum.map(clients, & &1.client_id))

      [first | _] = clients
      assert {:ok, stored} = RegistrationServer.lookup(server, first.client_id)
      assert stored == first
      assert :error = RegistrationServer.lookup(server, "no-such-client")

      :ok = ClientRegistration.delete_client(first.registration_client_uri, first.registration_access_token)
      assert RegistrationServer.count(server) == 2
      assert :error = RegistrationServer.lookup(server, first.client_id)
    end
  end

  describe "lifecycle" do
    test "url/1, registration_endpoint/1 and port/1" do
      server = start_server!()
      port = RegistrationServer.port(server)
      assert RegistrationServer.url(server) == "http://127.0.0.1:#{port}"
      assert RegistrationServer.registration_endpoint(server) == "http://127.0.0.1:#{port}/register"
    end

    test "stop/1 closes the listener before it returns" do
      {:ok, server} = RegistrationServer.start_link()
      port = RegistrationServer.port(server)
      refute refused?(port)
      assert :ok = RegistrationServer.stop(server)
      assert refused?(port)
    end

    test "the listener closes when the server process is killed" do
      {:ok, server} = RegistrationServer.start_link()
      Process.unlink(server)
      port = RegistrationServer.port(server)
      _client = register!(server)

      Process.exit(server, :kill)
      assert eventually(fn -> refused?(port) end)
    end

    @tag capture_log: true
    test "the listener closes when the process that started it dies" do
      test = self()

      owner =
        spawn(fn ->
          {:ok, server} = RegistrationServer.start_link()
          send(test, {:port, RegistrationServer.port(server)})
          Process.sleep(:infinity)
        end)

      assert_receive {:port, port}, 5_000
      refute refused?(port)
      Process.exit(owner, :kill)
      assert eventually(fn -> refused?(port) end)
    end

    test "the owner's death stops the server even while others hold the resource" do
      test = self()

      owner =
        spawn(fn ->
          {:ok, resource} = Native.server_start(%{ip: "127.0.0.1", port: 0})
          send(test, {:resource, resource})
          Process.sleep(:infinity)
        end)

      assert_receive {:resource, resource}, 5_000
      port = Native.server_info(resource).port
      refute refused?(port)
      Process.exit(owner, :kill)
      assert eventually(fn -> refused?(port) end)
      # The store outlives the listener for whoever still holds the resource.
      assert Native.server_count(resource) == 0
    end

    test "a server resource nobody holds stops when garbage collected" do
      port =
        (fn ->
           {:ok, resource} = Native.server_start(%{ip: "127.0.0.1", port: 0})
           Native.server_info(resource).port
         end).()

      refute refused?(port)
      :erlang.garbage_collect()
      assert eventually(fn -> refused?(port) end)
    end

    test "a port in use is {:error, :eaddrinuse}" do
      server = start_server!()
      Process.flag(:trap_exit, true)
      port = RegistrationServer.port(server)
      assert {:error, :eaddrinuse} = RegistrationServer.start_link(port: port)
    end

    test "a supervised server stops with its supervisor" do
      {:ok, sup} =
        Supervisor.start_link([{RegistrationServer, name: :supervised_registration}], strategy: :one_for_one)

      port = RegistrationServer.port(:supervised_registration)
      refute refused?(port)
      :ok = Supervisor.stop(sup)
      assert refused?(port)
    end
  end

  describe "options" do
    test "unknown and ill-typed options raise ArgumentError naming the option" do
      for {opts, name} <- [
            {[prot: 4000], ":prot"},
            {[port: 70_000], ":port"},
            {[port: "4000"], ":port"},
            {[ip: "127.0.0.1"], ":ip"},
            {[ip: {127, 0, 0}], ":ip"},
            {[initial_access_token: 42], ":initial_access_token"},
            {[initial_access_token: "has space"], ":initial_access_token"},
            {[rotate_registration_access_token: "yes"], ":rotate_registration_access_token"},
            {[client_secret_expires_in: -1], ":client_secret_expires_in"},
            {[max_body_bytes: 0], ":max_body_bytes"},
            {[name: "server"], ":name"}
          ] do
        error = assert_raise ArgumentError, fn -> RegistrationServer.start_link(opts) end
        assert error.message =~ name, inspect(opts)
      end

      error = assert_raise ArgumentError, fn -> RegistrationServer.start_link(:oops) end
      assert error.message =~ "keyword list"
    end

    test "a malformed initial access token is never echoed" do
      error =
        assert_raise ArgumentError, fn ->
          RegistrationServer.start_link(initial_access_token: "secret value")
        end

      refute error.message =~ "secret value"
    end

    test "options that are not a keyword list are described, not echoed (they may hold a token)" do
      for opts <- [%{initial_access_token: "s3cret-token"}, [{"initial_access_token", "s3cret-token"}]] do
        error = assert_raise ArgumentError, fn -> RegistrationServer.start_link(opts) end
        assert error.message =~ "keyword list"
        refute error.message =~ "s3cret-token"
      end
    end
  end
end
