defmodule ExMCP.Hardening.ProxyTest do
  # The :proxy option through a real proxy, Debian's tinyproxy, started on
  # 127.0.0.1 by ExMCP.Test.Tinyproxy. Plain-http targets are forwarded in
  # absolute form (RFC 9112 §3.2.2) and arrive with the proxy's Via header
  # (RFC 9110 §7.6.3); https targets go through a CONNECT tunnel
  # (RFC 9110 §9.3.6). A proxy's refusal is {:request_failed, {:proxy, _}};
  # its credentials (RFC 9110 §11.7.1) never show.
  #
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.ClientRegistration, as: CR
  alias ExMCP.Test.{Certificates, FixtureServer, Tinyproxy}

  import ExMCP.Test.FixtureServer, only: [registration_request: 1]
  import ExUnit.CaptureIO
  import ExUnit.CaptureLog

  @json [{"content-type", "application/json"}]
  @ok {:respond, 201, @json, ~s({"client_id":"abc"})}
  @password "pr0xy-s3cret"
  @credentials {"alice", @password}

  defp via(request) do
    for {"via", value} <- request.headers, do: value
  end

  setup_all do
    dir = Certificates.tmp_dir!("ex_mcp_proxy")
    on_exit(fn -> File.rm_rf!(dir) end)
    {:ok, tls: Certificates.self_signed!(dir, "self")}
  end

  test "a registration over plain http arrives through the proxy, with its Via header" do
    proxy = Tinyproxy.start!()
    server = FixtureServer.start!(fn _ -> @ok end)

    assert {:ok, %{client_id: "abc"}} =
             CR.register_client(registration_request(server), proxy: Tinyproxy.url(proxy))

    assert [%{method: "POST", path: "/register"} = request] = FixtureServer.requests(server)
    assert [via] = via(request)
    assert via =~ Tinyproxy.via()
    assert Tinyproxy.await_log(proxy, ~r{POST http://127\.0\.0\.1:\d+/register}) =~ "POST"

    # Without the option, the same call goes straight to the server.
    assert {:ok, _} = CR.register_client(registration_request(server))
    assert [_, direct] = FixtureServer.requests(server)
    assert via(direct) == []
  end

  test "mix mcp.register --proxy goes through the proxy and never prints its password" do
    proxy = Tinyproxy.start!(basic_auth: @credentials)
    server = FixtureServer.start!(fn _ -> @ok end)
    Mix.Task.reenable("mcp.register")

    stderr =
      capture_io(:stderr, fn ->
        stdout =
          capture_io(fn ->
            Mix.Task.run("mcp.register", [
              "--endpoint",
              FixtureServer.url(server, "/register"),
              "--proxy",
              Tinyproxy.url(proxy, @credentials)
            ])
          end)

        send(self(), {:stdout, stdout})
      end)

    assert_received {:stdout, stdout}
    assert stdout =~ ~s("client_id": "abc")
    output = stdout <> stderr
    refute output =~ @password
    assert [request] = FixtureServer.requests(server)
    assert [_] = via(request)
  end

  test "an https registration goes through a CONNECT tunnel, TLS end to end", %{tls: tls} do
    proxy = Tinyproxy.start!()
    server = FixtureServer.start!(fn _ -> @ok end, tls: [certfile: tls.cert, keyfile: tls.key])
    port = FixtureServer.port(server)

    assert {:ok, %{client_id: "abc"}} =
             CR.register_client(registration_request(server),
               proxy: Tinyproxy.url(proxy),
               cacertfile: tls.cert
             )

    assert Tinyproxy.await_log(proxy, ~r/CONNECT 127\.0\.0\.1:#{port}/) =~ "CONNECT"
    # Inside the tunnel the proxy sees nothing: no Via header reached the server.
    assert [request] = FixtureServer.requests(server)
    assert via(request) == []
  end

  test "an https:// proxy is spoken to over TLS, trusting :cacertfile", %{tls: tls} do
    # A TLS fixture stands in for the proxy: it answers the forwarded
    # absolute-form request itself, so the target port is never contacted.
    proxy = FixtureServer.start!(fn _ -> @ok end, tls: [certfile: tls.cert, keyfile: tls.key])
    "https://" <> authority = FixtureServer.url(proxy, "/")

    request = %{
      registration_endpoint: "http://127.0.0.1:1/register",
      client_name: "P",
      redirect_uris: ["http://localhost:8080/cb"]
    }

    assert {:ok, %{client_id: "abc"}} =
             CR.register_client(request,
               proxy: "https://" <> String.trim_trailing(authority, "/"),
               cacertfile: tls.cert
             )

    assert [%{method: "POST", path: "/register", headers: headers}] = FixtureServer.requests(proxy)
    assert {"host", "127.0.0.1:1"} in headers

    # Without the proxy's CA the TLS handshake with the proxy fails.
    assert {:error, {:request_failed, {:tls, _}}} =
             CR.register_client(request, proxy: "https://" <> String.trim_trailing(authority, "/"))
  end

  test "a CONNECT the proxy does not allow is {:proxy, _}", %{tls: tls} do
    # ConnectPort 1: tunnels only to port 1, so the server's port is refused.
    proxy = Tinyproxy.start!(connect_ports: [1])
    server = FixtureServer.start!(fn _ -> @ok end, tls: [certfile: tls.cert, keyfile: tls.key])

    assert {:error, {:request_failed, {:proxy, message}} = reason} =
             CR.register_client(registration_request(server),
               proxy: Tinyproxy.url(proxy),
               cacertfile: tls.cert
             )

    assert message =~ "tunnel"
    assert CR.format_error(reason) =~ "proxy"
    assert FixtureServer.connection_count(server) == 0
  end

  test "missing proxy credentials are {:proxy, _} (407), and credentials in the URL are used", %{tls: tls} do
    proxy = Tinyproxy.start!(basic_auth: @credentials)
    server = FixtureServer.start!(fn _ -> @ok end)
    tls_server = FixtureServer.start!(fn _ -> @ok end, tls: [certfile: tls.cert, keyfile: tls.key])

    # Plain http: the proxy answers the request itself with a 407. (A GET:
    # tinyproxy closes right after its 407 without reading a request body,
    # which can reset the connection before a POST's answer is read.)
    uri = FixtureServer.url(server, "/register/abc")

    assert {:error, {:request_failed, {:proxy, message}}} =
             CR.get_client_information(uri, "rat", proxy: Tinyproxy.url(proxy))

    assert message =~ "407"

    # https: the CONNECT is answered with a 407.
    assert {:error, {:request_failed, {:proxy, _}}} =
             CR.register_client(registration_request(tls_server),
               proxy: Tinyproxy.url(proxy),
               cacertfile: tls.cert
             )

    assert FixtureServer.requests(server) == []
    assert FixtureServer.requests(tls_server) == []

    wrong = Tinyproxy.url(proxy, {"alice", "wrong-" <> @password})

    log =
      capture_log(fn ->
        # (tinyproxy answers wrong credentials with a 401, which only a
        # CONNECT tells apart from the server's own answer.)
        assert {:error, {:request_failed, {:proxy, _}} = reason} =
                 CR.register_client(registration_request(tls_server), proxy: wrong, cacertfile: tls.cert)

        refute inspect(reason) =~ @password
        refute CR.format_error(reason) =~ @password
      end)

    refute log =~ @password

    good = Tinyproxy.url(proxy, @credentials)
    assert {:ok, _} = CR.register_client(registration_request(server), proxy: good)
    assert {:ok, _} = CR.register_client(registration_request(tls_server), proxy: good, cacertfile: tls.cert)
    assert [request] = FixtureServer.requests(server)
    assert [_] = via(request)
    # The proxy consumed its credentials: they were not forwarded.
    refute Enum.any?(request.headers, fn {name, _} -> name == "proxy-authorization" end)
  end

  test "a proxy that refuses connections is {:connect, _}, naming no credentials" do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    server = FixtureServer.start!(fn _ -> @ok end)

    assert {:error, {:request_failed, {:connect, message}} = reason} =
             CR.register_client(registration_request(server),
               proxy: "http://alice:#{@password}@127.0.0.1:#{port}"
             )

    refute message =~ @password
    refute CR.format_error(reason) =~ @password
    assert FixtureServer.requests(server) == []
  end

  test "a malformed proxy is an ArgumentError that does not quote it" do
    server = FixtureServer.start!(fn _ -> @ok end)

    for bad <- ["socks5://alice:#{@password}@127.0.0.1:1080", "alice:#{@password}@proxy", 42, :yes] do
      error =
        assert_raise ArgumentError, fn -> CR.register_client(registration_request(server), proxy: bad) end

      assert error.message =~ ":proxy"
      refute error.message =~ @password
    end

    assert FixtureServer.requests(server) == []
  end

  # ERTS keeps its own copy of the environment (os:putenv/2 does not change
  # the process's), so the variables are given to a separate VM.
  @system_script ~S"""
  [url] = System.argv()
  request = %{registration_endpoint: url, client_name: "Proxy", redirect_uris: ["http://localhost:8080/cb"]}
  direct = ExMCP.Authorization.ClientRegistration.register_client(request)
  system = ExMCP.Authorization.ClientRegistration.register_client(request, proxy: :system)
  IO.puts("RESULT " <> inspect({direct, system}))
  """

  test "environment proxy variables are used only with proxy: :system" do
    proxy = Tinyproxy.start!()
    server = FixtureServer.start!(fn _ -> @ok end)
    ebin = Path.dirname(:code.which(CR))

    env = [
      {"HTTP_PROXY", Tinyproxy.url(proxy)},
      {"http_proxy", Tinyproxy.url(proxy)},
      {"NO_PROXY", ""},
      {"no_proxy", ""}
    ]

    {output, 0} =
      System.cmd(
        System.find_executable("elixir"),
        ["-pa", ebin, "-e", @system_script, FixtureServer.url(server, "/register")],
        env: env,
        stderr_to_stdout: true
      )

    assert [_, result] = Regex.run(~r/^RESULT (.+)$/m, output), output
    assert result =~ ~r/^\{\{:ok, .*\}, \{:ok, .*\}\}$/
    assert [direct, proxied] = FixtureServer.requests(server)
    assert via(direct) == []
    assert [via] = via(proxied)
    assert via =~ Tinyproxy.via()
  end
end
