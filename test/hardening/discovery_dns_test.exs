defmodule ExMCP.Authorization.Hardening.DiscoveryDnsTest do
  # The address guard of discovery, end to end, with real name resolution: a
  # URL learned from a remote document whose host name resolves to 127.0.0.1
  # is refused when discovery did not start on a loopback URL, and the
  # refusal comes from the resolver inside the HTTP client (the address
  # checked is the one that would be connected to).
  #
  # Tests send traffic only to loopback, so everything runs in a separate VM
  # inside new network and mount namespaces (`unshare -n -m`): loopback is
  # brought up, and a hosts file naming mcp.example.test and as.example.test
  # as 127.0.0.1 is bind-mounted over /etc/hosts. The MCP server is a TLS
  # fixture with a certificate for both names, signed by a CA made here.
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.ClientRegistration
  alias ExMCP.Test.Certificates

  @moduletag :tmp_dir

  @script ~S"""
  [ca, cert, key] = System.argv()
  alias ExMCP.Test.{FixtureServer, JSON}

  {:ok, server} =
    FixtureServer.start_link(
      fn request ->
        port = :persistent_term.get(:port)
        as = "https://as.example.test:#{port}"

        document =
          case request.path do
            "/.well-known/oauth-protected-resource/mcp" ->
              %{"resource" => "https://mcp.example.test:#{port}/mcp", "authorization_servers" => [as]}

            "/.well-known/oauth-authorization-server" ->
              %{"issuer" => as, "authorization_endpoint" => as <> "/authorize", "token_endpoint" => as <> "/token",
                "registration_endpoint" => as <> "/register"}

            _ ->
              nil
          end

        if document,
          do: {:respond, 200, [{"content-type", "application/json"}], JSON.encode!(document)},
          else: {:respond, 404, [], ""}
      end,
      tls: [certfile: cert, keyfile: key]
    )

  port = FixtureServer.port(server)
  :persistent_term.put(:port, port)
  start = "https://mcp.example.test:#{port}/mcp"

  refused = ExMCP.Authorization.ClientRegistration.discover(start, cacertfile: ca, timeout: 5_000)
  IO.puts("REFUSED " <> inspect(refused))

  allowed = ExMCP.Authorization.ClientRegistration.discover(start, cacertfile: ca, timeout: 5_000, allow_private_networks: true)
  IO.puts("ALLOWED " <> inspect(allowed && elem(allowed, 0)) <> " " <> inspect(match?({:ok, _}, allowed) && elem(allowed, 1).issuer))
  IO.puts("PATHS " <> inspect(Enum.map(FixtureServer.requests(server), & &1.path)))
  """

  # A CA and a certificate it signed for the two learned names: their paths.
  defp certificates!(dir) do
    %{ca: ca, cert: cert, key: key} =
      Certificates.ca_and_server!(dir, "DNS:mcp.example.test,DNS:as.example.test")

    [ca, cert, key]
  end

  test "a learned name resolving to 127.0.0.1 is refused when the start URL is not loopback", %{tmp_dir: dir} do
    unshare = System.find_executable("unshare") || flunk("unshare (util-linux) is needed for this test")
    ip = System.find_executable("ip") || "/usr/sbin/ip"
    {_, 0} = System.cmd(unshare, ["-n", "-m", "true"], stderr_to_stdout: true)

    hosts = Path.join(dir, "hosts")
    File.write!(hosts, "127.0.0.1 localhost\n127.0.0.1 mcp.example.test as.example.test\n")
    script = Path.join(dir, "script.exs")
    File.write!(script, @script)

    ebin = Path.dirname(:code.which(ClientRegistration))
    elixir = System.find_executable("elixir")

    command =
      "#{ip} link set lo up && mount --bind #{hosts} /etc/hosts && " <>
        "exec #{elixir} -pa #{ebin} #{script} \"$@\""

    {output, 0} =
      System.cmd(unshare, ["-n", "-m", "sh", "-c", command, "sh" | certificates!(dir)], stderr_to_stdout: true)

    assert [_, refused] = Regex.run(~r/^REFUSED (.+)$/m, output), output
    port = Regex.run(~r/as\.example\.test:(\d+)/, refused) |> Enum.at(1)
    assert port, output

    assert refused ==
             ~s|{:error, {:url_refused, "https://as.example.test:#{port}/.well-known/oauth-authorization-server", | <>
               ~s|"as.example.test resolves to 127.0.0.1, a loopback address (allow_private_networks is off)"}}|

    # allow_private_networks: true lets the same name through, and the
    # connection goes to the address the resolver checked.
    assert output =~ ~s(ALLOWED :ok "https://as.example.test:#{port}")

    # The refused run fetched only the resource metadata; the allowed one
    # fetched it and the authorization server metadata.
    assert output =~
             ~s(PATHS ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-authorization-server"])
  end
end
