defmodule ExMCP.Authorization.Hardening.DnsTest do
  # A host name that does not resolve. This machine's resolver is off
  # loopback, and tests send nothing off the machine, so the lookup runs in a
  # separate VM inside an empty network namespace (`unshare -n`): there the
  # resolver is unreachable, the lookup fails at once, and no packet leaves.
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.ClientRegistration

  @script ~S"""
  result =
    ExMCP.Authorization.ClientRegistration.register_client(%{
      registration_endpoint: "https://registration.does-not-exist.invalid/register",
      client_name: "DNS",
      redirect_uris: ["http://localhost:8080/cb"]
    }, timeout: 5_000)

  IO.puts("RESULT " <> inspect(result))
  """

  test "a name that does not resolve is {:request_failed, {:connect, \"dns error: ...\"}}" do
    unshare = System.find_executable("unshare") || flunk("unshare (util-linux) is needed for this test")
    {_, 0} = System.cmd(unshare, ["-n", "true"], stderr_to_stdout: true)

    ebin = Path.dirname(:code.which(ClientRegistration))
    elixir = System.find_executable("elixir")
    {output, 0} = System.cmd(unshare, ["-n", elixir, "-pa", ebin, "-e", @script], stderr_to_stdout: true)

    assert [_, result] = Regex.run(~r/^RESULT (.+)$/m, output), output
    assert result =~ ~s({:error, {:request_failed, {:connect, "dns error: )
  end
end
