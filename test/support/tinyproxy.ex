defmodule ExMCP.Test.Tinyproxy do
  @moduledoc """
  A real HTTP proxy for tests: Debian's `tinyproxy` (installed by
  `bin/setup`), run in the foreground on a free `127.0.0.1` port with a
  config file of its own. No system service is involved.

      proxy = Tinyproxy.start!(basic_auth: {"alice", "s3cret"})
      Tinyproxy.url(proxy)               #=> "http://127.0.0.1:41234"
      Tinyproxy.log(proxy)               # the proxy's log lines so far

  Options:

    * `:basic_auth` — `{user, password}`: requests without these credentials
      get `407 Proxy Authentication Required`.
    * `:connect_ports` — the only ports a `CONNECT` tunnel may go to
      (tinyproxy's `ConnectPort`); by default every port.

  Forwarded plain-http requests carry `Via: 1.1 ex-mcp-test-proxy (...)`.
  The process is started under the test supervisor and killed, by its OS
  pid, when the test ends.
  """

  use GenServer

  alias ExMCP.Test.OSProcess

  @via "ex-mcp-test-proxy"

  @doc "The `Via` name the proxy adds to requests it forwards."
  @spec via() :: String.t()
  def via, do: @via

  @doc "Starts a proxy under the test supervisor; returns once it accepts connections."
  @spec start!(keyword()) :: pid()
  def start!(opts \\ []) do
    ExUnit.Callbacks.start_supervised!(
      Supervisor.child_spec({__MODULE__, opts}, id: {__MODULE__, make_ref()}, restart: :temporary)
    )
  end

  @doc false
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc "The proxy's URL, without credentials."
  @spec url(pid()) :: String.t()
  def url(proxy), do: "http://127.0.0.1:#{GenServer.call(proxy, :port)}"

  @doc "The proxy's URL with `user:password@`."
  @spec url(pid(), {String.t(), String.t()}) :: String.t()
  def url(proxy, {user, password}),
    do: "http://#{user}:#{password}@127.0.0.1:#{GenServer.call(proxy, :port)}"

  @doc "The proxy's log lines so far, oldest first."
  @spec log(pid()) :: [String.t()]
  def log(proxy), do: GenServer.call(proxy, :log)

  @doc "Waits until a log line matches `pattern`; returns that line."
  @spec await_log(pid(), Regex.t(), timeout()) :: String.t()
  def await_log(proxy, pattern, timeout \\ 5_000), do: GenServer.call(proxy, {:await_log, pattern}, timeout)

  @impl GenServer
  def init(opts) do
    Process.flag(:trap_exit, true)

    executable =
      System.find_executable("tinyproxy") ||
        raise "tinyproxy is not installed: run bin/setup (it installs Debian's tinyproxy-bin)"

    dir = Path.join(System.tmp_dir!(), "ex_mcp_tinyproxy_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    start(executable, dir, opts, 3)
  end

  # A free port is picked by binding port 0 and closing it; another process
  # may take it before tinyproxy binds, so a failed start tries another port.
  defp start(executable, dir, opts, attempts) do
    port = free_port()
    config = Path.join(dir, "tinyproxy.conf")
    File.write!(config, config(port, opts))

    {os_port, os_pid} =
      OSProcess.open(executable, [:stderr_to_stdout, {:line, 4096}, args: ["-d", "-c", config]])

    state = %{port: port, os_port: os_port, os_pid: os_pid, dir: dir, log: [], waiters: []}

    case await_ready(state) do
      {:ok, state} ->
        {:ok, state}

      {:exited, _state} when attempts > 1 ->
        start(executable, dir, opts, attempts - 1)

      {:exited, state} ->
        {:stop, {:tinyproxy_did_not_start, Enum.reverse(state.log)}}
    end
  end

  defp config(port, opts) do
    auth =
      case Keyword.get(opts, :basic_auth) do
        {user, password} -> "BasicAuth #{user} #{password}\n"
        nil -> ""
      end

    connect_ports = opts |> Keyword.get(:connect_ports, []) |> Enum.map_join(&"ConnectPort #{&1}\n")

    """
    Port #{port}
    Listen 127.0.0.1
    Allow 127.0.0.1
    Timeout 30
    MaxClients 100
    LogLevel Info
    ViaProxyName "#{@via}"
    """ <> auth <> connect_ports
  end

  defp free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    port
  end

  # tinyproxy prints this line once its listening socket is open; each line
  # may take up to 10 s.
  defp await_ready(state) do
    case OSProcess.await_line(state.os_port, OSProcess.deadline(10_000)) do
      {:ok, line} ->
        state = %{state | log: [line | state.log]}
        if line =~ "Accepting connections", do: {:ok, state}, else: await_ready(state)

      _exited_or_timeout ->
        {:exited, state}
    end
  end

  @impl GenServer
  def handle_call(:port, _from, state), do: {:reply, state.port, state}
  def handle_call(:log, _from, state), do: {:reply, Enum.reverse(state.log), state}

  def handle_call({:await_log, pattern}, from, state) do
    case state.log |> Enum.reverse() |> Enum.find(&(&1 =~ pattern)) do
      nil -> {:noreply, %{state | waiters: [{pattern, from} | state.waiters]}}
      line -> {:reply, line, state}
    end
  end

  @impl GenServer
  def handle_info({os_port, {:data, {_, line}}}, %{os_port: os_port} = state) do
    {matched, waiting} = Enum.split_with(state.waiters, fn {pattern, _} -> line =~ pattern end)
    Enum.each(matched, fn {_, from} -> GenServer.reply(from, line) end)
    {:noreply, %{state | log: [line | state.log], waiters: waiting}}
  end

  def handle_info({os_port, {:exit_status, status}}, %{os_port: os_port} = state),
    do: {:stop, {:tinyproxy_exited, status}, %{state | os_port: nil}}

  def handle_info(_other, state), do: {:noreply, state}

  @impl GenServer
  def terminate(_reason, %{os_port: nil} = state), do: File.rm_rf(state.dir)

  def terminate(_reason, %{os_port: os_port, os_pid: os_pid} = state) do
    OSProcess.stop(os_port, os_pid, 5_000)
    File.rm_rf(state.dir)
  end
end
