defmodule ExMCP.Hardening.TLSTest do
  # The client's certificate checks against ExMCP.Test.FixtureServer serving
  # TLS on 127.0.0.1, with certificates made here by the openssl CLI: a CA, a
  # server certificate it signed for 127.0.0.1/localhost, an expired one, one
  # for another host name, and a self-signed one.
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.ClientRegistration, as: CR
  alias ExMCP.Authorization.Native
  alias ExMCP.Test.{Certificates, FixtureServer}

  import ExMCP.Test.FixtureServer, only: [registration_request: 1]

  @json [{"content-type", "application/json"}]
  @ok {:respond, 201, @json, ~s({"client_id":"abc"})}

  setup_all do
    dir = Certificates.tmp_dir!("ex_mcp_hardening_tls")
    on_exit(fn -> File.rm_rf!(dir) end)
    {:ok, certificates(dir)}
  end

  # -- Certificates --------------------------------------------------------------

  defp certificates(dir) do
    # A CA, and server.pem: its certificate for 127.0.0.1/localhost.
    loopback = Certificates.loopback!(dir)

    # The same key, certified for another host name.
    File.write!(Path.join(dir, "wrong.ext"), Certificates.server_extensions("DNS:wrong.example.com"))
    Certificates.sign!(dir, "server.csr", "wrong.ext", "wrong.pem", "3")

    self_signed = Certificates.self_signed!(dir, "self")
    other = Certificates.self_signed!(dir, "other")

    File.write!(Path.join(dir, "not_pem.txt"), "this is not a certificate\n")

    File.write!(
      Path.join(dir, "armoured.pem"),
      "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n"
    )

    File.write!(Path.join(dir, "empty.pem"), "")

    path = &Path.join(dir, &1)

    %{
      ca: loopback.ca,
      server_key: loopback.key,
      good: loopback.cert,
      wrong: path.("wrong.pem"),
      expired: Certificates.expired!(dir, "server.csr", "server.ext", "expired.pem"),
      self_signed: self_signed.cert,
      self_key: self_signed.key,
      other: other.cert,
      other_key: other.key,
      armoured: path.("armoured.pem"),
      dir: dir,
      not_pem: path.("not_pem.txt"),
      key_only: loopback.key,
      empty: path.("empty.pem"),
      missing: path.("does_not_exist.pem")
    }
  end

  # -- Helpers -------------------------------------------------------------------

  defp tls_server(certfile, keyfile, handler \\ fn _ -> @ok end),
    do: FixtureServer.start!(handler, tls: [certfile: certfile, keyfile: keyfile])

  defp register(server, opts \\ []) do
    result = CR.register_client(registration_request(server), opts)
    assert Process.info(self(), :messages) == {:messages, []}
    result
  end

  defp tls_failed(server), do: FixtureServer.await_event(server, &(&1.type == :tls_failed), 2_000)

  # -- Tests ---------------------------------------------------------------------

  test "the fixture serves https URLs", %{good: good, server_key: key} do
    server = tls_server(good, key)
    assert "https://127.0.0.1:" <> _ = FixtureServer.url(server, "/register")
  end

  test "a certificate from an unknown CA is refused by default", %{good: good, server_key: key} do
    server = tls_server(good, key)

    assert {:error, {:request_failed, {:tls, message}}} = register(server)
    assert message =~ "UnknownIssuer"
    # The client aborted the handshake: no request was ever sent.
    assert %{detail: {:tls_alert, {:unknown_ca, _}}} = tls_failed(server)
    assert FixtureServer.requests(server) == []
  end

  test "a self-signed certificate is refused by default, and accepted when it is given as :cacertfile",
       %{self_signed: cert, self_key: key} do
    server = tls_server(cert, key)

    assert {:error, {:request_failed, {:tls, message}}} = register(server)
    assert message =~ "UnknownIssuer"
    assert FixtureServer.requests(server) == []

    assert {:ok, %{client_id: "abc"}} = register(server, cacertfile: cert)
  end

  test "the CA given as :cacertfile makes its certificate trusted, for every call", %{
    good: good,
    server_key: key,
    ca: ca
  } do
    current = ~s({"client_id":"c1","client_name":"Old"})

    server =
      tls_server(good, key, [
        @ok,
        {:respond, 200, @json, current},
        {:respond, 200, @json, current},
        {:respond, 200, @json, current},
        {:respond, 204, [], ""}
      ])

    assert {:ok, %{client_id: "abc"}} = register(server, cacertfile: ca, initial_access_token: "iat-tls")

    uri = FixtureServer.url(server, "/register/c1")
    assert {:ok, %{client_id: "c1"}} = CR.get_client_information(uri, "rat-tls", cacertfile: ca)

    assert {:ok, %{client_id: "c1"}} =
             CR.update_client_information(uri, "rat-tls", %{client_name: "New"}, cacertfile: ca)

    assert :ok = CR.delete_client(uri, "rat-tls", cacertfile: ca)
    assert Process.info(self(), :messages) == {:messages, []}

    requests = FixtureServer.requests(server)
    assert Enum.map(requests, & &1.method) == ["POST", "GET", "GET", "PUT", "DELETE"]

    assert [{"authorization", "Bearer iat-tls"}] =
             Enum.filter(hd(requests).headers, &(elem(&1, 0) == "authorization"))
  end

  test "a certificate for another host name is refused, even from a trusted CA", %{
    wrong: wrong,
    server_key: key,
    ca: ca
  } do
    server = tls_server(wrong, key)

    assert {:error, {:request_failed, {:tls, message}}} = register(server, cacertfile: ca)
    assert message =~ "not valid for name"
    assert %{detail: {:tls_alert, {:bad_certificate, _}}} = tls_failed(server)
    assert FixtureServer.requests(server) == []
  end

  test "an expired certificate is refused, even from a trusted CA", %{
    expired: expired,
    server_key: key,
    ca: ca
  } do
    server = tls_server(expired, key)

    assert {:error, {:request_failed, {:tls, message}}} = register(server, cacertfile: ca)
    assert message =~ "expired"
    assert %{detail: {:tls_alert, {:certificate_expired, _}}} = tls_failed(server)
    assert FixtureServer.requests(server) == []
  end

  test "a :cacertfile that is missing, empty or not PEM is {:cacertfile, _}, before any connection", ctx do
    server = tls_server(ctx.good, ctx.server_key)

    for file <- [ctx.missing, ctx.not_pem, ctx.empty, ctx.key_only, ctx.armoured, "/dev/zero"] do
      assert {:error, {:request_failed, {:cacertfile, message}}} = register(server, cacertfile: file)
      assert message =~ file
    end

    uri = FixtureServer.url(server, "/register/c1")

    assert {:error, {:request_failed, {:cacertfile, _}}} =
             CR.get_client_information(uri, "rat-tls", cacertfile: ctx.missing)

    assert FixtureServer.connection_count(server) == 0
  end

  test "https to a plain-HTTP port is {:tls, _}, classified by error type" do
    plain = FixtureServer.start!(fn _ -> @ok end)
    "http://" <> rest = FixtureServer.url(plain, "/register/c1")

    assert {:error, {:request_failed, {:tls, _}}} = CR.get_client_information("https://" <> rest, "rat-tls")
    assert FixtureServer.requests(plain) == []
  end

  test "a PEM-armoured non-certificate is {:cacertfile, _} naming the section, not {:connect, _}", ctx do
    server = tls_server(ctx.good, ctx.server_key)

    assert {:error, {:request_failed, {:cacertfile, message}}} = register(server, cacertfile: ctx.armoured)
    assert message =~ "not a valid X.509 certificate"

    assert {:error, {:request_failed, {:cacertfile, message}}} = register(server, cacertfile: ctx.key_only)
    assert message =~ "PRIVATE KEY"
    assert FixtureServer.connection_count(server) == 0
  end

  test "a :cacertfile that changes is read again by the next call, without a restart", ctx do
    ca = Path.join(ctx.dir, "changing_ca_#{System.unique_integer([:positive])}.pem")
    first = tls_server(ctx.self_signed, ctx.self_key)
    second = tls_server(ctx.other, ctx.other_key)

    File.cp!(ctx.self_signed, ca)
    assert {:ok, _} = register(first, cacertfile: ca)
    assert {:error, {:request_failed, {:tls, _}}} = register(second, cacertfile: ca)

    File.cp!(ctx.other, ca)
    assert {:ok, _} = register(second, cacertfile: ca)
    assert {:error, {:request_failed, {:tls, _}}} = register(first, cacertfile: ca)
  end

  test "plain http to a host that is not loopback is refused before any connection" do
    request = %{
      registration_endpoint: "http://example.com/register",
      client_name: "Hardening",
      redirect_uris: ["http://localhost:8080/callback"]
    }

    assert CR.register_client(request) == {:error, :https_required}
    assert CR.get_client_information("http://example.com/register/c1", "tok") == {:error, :https_required}
    assert CR.delete_client("http://example.com/register/c1", "tok") == {:error, :https_required}

    # The NIF refuses it synchronously: no task is spawned, so nothing could
    # have connected (or resolved example.com).
    options = %{
      timeout: 1_000,
      connect_timeout: 1_000,
      max_response_bytes: 1_024,
      headers: [],
      cacertfile: nil
    }

    assert Native.register(request, options, make_ref()) == {:error, :https_required}

    assert Native.get("http://example.com/register/c1", "tok", options, make_ref()) ==
             {:error, :https_required}

    assert Process.info(self(), :messages) == {:messages, []}
  end
end
