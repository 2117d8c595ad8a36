defmodule ExMCP.Test.OSProcess do
  @moduledoc """
  The mechanics every external program the tests run shares (the script
  servers, oidc-provider, tinyproxy, the Node scripts): start an OS process
  through a Port, read its next whole line before a deadline, run one to
  completion, and stop one by its OS pid (SIGTERM, then SIGKILL).

  A port opened here is always `:binary` with `:exit_status`; give `{:line, n}`
  among the options to read lines.
  """

  @doc "Opens a Port running `executable` with `options` (`:binary, :exit_status` added); the port and its OS pid."
  @spec open(Path.t(), list()) :: {port(), non_neg_integer()}
  def open(executable, options) do
    port = Port.open({:spawn_executable, executable}, [:binary, :exit_status | options])
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    {port, os_pid}
  end

  @doc "The monotonic time, in milliseconds, `timeout` milliseconds from now."
  @spec deadline(non_neg_integer()) :: integer()
  def deadline(timeout), do: System.monotonic_time(:millisecond) + timeout

  @doc """
  Waits for the next whole line from a port opened in `{:line, n}` mode
  (joining the pieces of a longer one) until the monotonic `deadline`.
  """
  @spec await_line(port(), integer()) :: {:ok, String.t()} | {:exited, integer()} | :timeout
  def await_line(port, deadline), do: await_line(port, deadline, "")

  defp await_line(port, deadline, partial) do
    receive do
      {^port, {:data, {:noeol, chunk}}} -> await_line(port, deadline, partial <> chunk)
      {^port, {:data, {:eol, chunk}}} -> {:ok, partial <> chunk}
      {^port, {:exit_status, status}} -> {:exited, status}
    after
      remaining(deadline) -> :timeout
    end
  end

  @doc """
  Runs `executable` with the port `options` to completion; its exit status and
  all it wrote to stdout. After `timeout` ms it is killed (SIGKILL) and the
  status is `:timeout`.
  """
  @spec run(Path.t(), list(), non_neg_integer()) :: {integer() | :timeout, binary()}
  def run(executable, options, timeout) do
    {port, os_pid} = open(executable, options)
    collect(port, os_pid, deadline(timeout), [])
  end

  defp collect(port, os_pid, deadline, acc) do
    receive do
      {^port, {:data, data}} ->
        collect(port, os_pid, deadline, [acc, data])

      {^port, {:exit_status, status}} ->
        {status, IO.iodata_to_binary(acc)}
    after
      remaining(deadline) ->
        signal(os_pid, "KILL")

        receive do
          {^port, {:exit_status, _}} -> :ok
        after
          2_000 -> :ok
        end

        {:timeout, IO.iodata_to_binary(acc)}
    end
  end

  @doc """
  Stops the process: SIGTERM, then SIGKILL unless its exit status comes within
  `grace` ms; then closes the port (which also closes its stdin).
  """
  @spec stop(port(), non_neg_integer(), non_neg_integer()) :: :ok
  def stop(port, os_pid, grace) do
    signal(os_pid, "TERM")

    receive do
      {^port, {:exit_status, _}} -> :ok
    after
      grace -> signal(os_pid, "KILL")
    end

    close(port)
  end

  @doc "Sends the signal `name` (`\"TERM\"`, `\"KILL\"`) to the OS process `os_pid`."
  @spec signal(non_neg_integer(), String.t()) :: :ok
  def signal(os_pid, name) do
    System.cmd("kill", ["-#{name}", Integer.to_string(os_pid)], stderr_to_stdout: true)
    :ok
  end

  defp close(port) do
    Port.close(port)
    :ok
  rescue
    ArgumentError -> :ok
  end

  defp remaining(deadline), do: max(deadline - System.monotonic_time(:millisecond), 0)
end
