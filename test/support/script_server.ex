defmodule ExMCP.Test.ScriptServer do
  @moduledoc """
  Runs a real third-party server from a script (Node or Python) in an OS
  process this GenServer owns through a Port, for integration tests.

      pid = start_supervised!({ExMCP.Test.ScriptServer, executable: node, args: [script]})
      %{"port" => port} = ExMCP.Test.ScriptServer.info(pid)

  The script listens on 127.0.0.1, prints exactly one JSON object on one line
  to stdout once it is ready (that object is `info/1`), logs to stderr, and
  exits when its stdin closes or on SIGTERM. The process is stopped
  (SIGTERM, then SIGKILL after 3 s) when this GenServer terminates.

  Options: `:executable` (path), `:args`, `:cd` (default: test/servers),
  `:env` (a list of `{name, value}` charlists or strings), `:startup_timeout`
  (default 30 000 ms), `:id` (child spec id).
  """

  use GenServer

  alias ExMCP.Test.{JSON, OSProcess}

  @servers_dir Path.expand("../servers", __DIR__)
  @stop_timeout 3_000

  @doc false
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :id, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      shutdown: @stop_timeout + 2_000
    }
  end

  @doc "Starts the script; returns once it printed its ready line."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc "The JSON object the script printed when ready."
  @spec info(GenServer.server()) :: map()
  def info(server), do: GenServer.call(server, :info)

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    executable = Keyword.fetch!(opts, :executable)

    env =
      for {name, value} <- Keyword.get(opts, :env, []),
          do: {to_charlist(name), to_charlist(value)}

    {port, os_pid} =
      OSProcess.open(executable, [
        :use_stdio,
        {:line, 65_536},
        {:cd, Keyword.get(opts, :cd, @servers_dir)},
        {:args, Keyword.get(opts, :args, [])},
        {:env, env}
      ])

    case await_ready(port, OSProcess.deadline(Keyword.get(opts, :startup_timeout, 30_000))) do
      {:ok, info} ->
        {:ok, %{port: port, os_pid: os_pid, info: info}}

      {:error, reason} ->
        OSProcess.stop(port, os_pid, @stop_timeout)
        {:stop, reason}
    end
  end

  @impl true
  def handle_call(:info, _from, state), do: {:reply, state.info, state}

  @impl true
  def handle_info({port, {:exit_status, status}}, %{port: port} = state),
    do: {:stop, {:script_exited, status}, %{state | port: nil}}

  def handle_info({port, {:data, _}}, %{port: port} = state), do: {:noreply, state}
  def handle_info({:EXIT, _port, _reason}, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, %{port: nil}), do: :ok
  def terminate(_reason, %{port: port, os_pid: os_pid}), do: OSProcess.stop(port, os_pid, @stop_timeout)

  defp await_ready(port, deadline) do
    case OSProcess.await_line(port, deadline) do
      {:ok, line} ->
        try do
          {:ok, JSON.decode!(line)}
        rescue
          ArgumentError -> {:error, {:unexpected_output, line}}
        end

      {:exited, status} ->
        {:error, {:script_exited, status}}

      :timeout ->
        {:error, :startup_timeout}
    end
  end
end
