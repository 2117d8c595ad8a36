defmodule ExMCP.Test.NodeScript do
  @moduledoc """
  Runs one of the Node scripts in `test/servers/` (which drive third-party
  npm packages) to completion, killing it after a deadline, and returns its
  one JSON line decoded. Its stderr goes to a file and is shown on failure.
  """

  import ExUnit.Assertions

  alias ExMCP.Test.{JSON, OSProcess}

  @servers_dir Path.expand("../servers", __DIR__)

  @doc "The directory holding the scripts and their `node_modules`."
  @spec servers_dir() :: Path.t()
  def servers_dir, do: @servers_dir

  @doc "Fails the test unless `node` and the pinned `package` are installed."
  @spec require_package!(String.t()) :: String.t()
  def require_package!(package) do
    node = System.find_executable("node") || flunk("the `node` executable is not on the PATH")
    dir = Path.join([@servers_dir, "node_modules", package])

    unless File.dir?(dir) do
      flunk("#{dir} is missing: run `npm ci --prefix test/servers` in the project root (bin/setup does it)")
    end

    pinned = JSON.decode!(File.read!(Path.join(@servers_dir, "package.json")))["dependencies"][package]
    installed = JSON.decode!(File.read!(Path.join(dir, "package.json")))["version"]

    unless installed == pinned do
      flunk(
        "test/servers/node_modules holds #{package} #{installed}, package.json pins #{pinned}: run `npm ci --prefix test/servers`"
      )
    end

    node
  end

  @doc "Runs `script` with `args`; the decoded JSON line it printed."
  @spec run!(String.t(), String.t(), [String.t()], Path.t(), timeout()) :: term()
  def run!(node, script, args, tmp_dir, timeout \\ 30_000) do
    stderr_path = Path.join(tmp_dir, script <> ".stderr")

    {status, stdout} =
      OSProcess.run(
        "/bin/sh",
        [
          :use_stdio,
          :hide,
          {:cd, @servers_dir},
          {:env, [{~c"SCRIPT_STDERR", String.to_charlist(stderr_path)}]},
          # exec: the shell becomes node, so the port's OS pid is node's.
          {:args, ["-c", ~s(exec "$0" "$@" 2>"$SCRIPT_STDERR"), node, Path.join(@servers_dir, script) | args]}
        ],
        timeout
      )

    stderr =
      case File.read(stderr_path) do
        {:ok, text} -> text
        {:error, reason} -> "(unreadable: #{inspect(reason)})"
      end

    assert status == 0, "#{script} exited with #{inspect(status)}\nstdout: #{stdout}\nstderr: #{stderr}"

    assert [line] = String.split(stdout, "\n", trim: true),
           "expected exactly one JSON line on stdout, got: #{inspect(stdout)}"

    JSON.decode!(line)
  end
end
