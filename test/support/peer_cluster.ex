defmodule ExMCP.Test.PeerCluster do
  @moduledoc """
  BEAM nodes for the cluster tests of the client store, started with OTP's
  `:peer` on loopback only.

    * The test VM stays undistributed: each peer is controlled through its
      stdin/stdout (`connection: :standard_io`), so `mix test` never gets a
      node name, and a Mnesia the test VM may run is not disturbed.
    * The peers are distributed among themselves with long names
      (`:"n1@127.0.0.1"`), listen on 127.0.0.1 only
      (`inet_dist_use_interface`), share a random cookie, and register with a
      private `epmd` that `start_epmd/0` runs on a free loopback port
      (`ERL_EPMD_PORT`): no system-wide epmd is started, and the test stops
      its own.
    * `prevent_overlapping_partitions` is off (see `start_peer/2`).
    * Each peer gets the test VM's code path (the project's ebin, its NIF's
      priv dir, Elixir), so the functions below, which run on the peers, are
      this module's.

  The peer is linked to the process that starts it: it halts when the test
  process exits.
  """

  alias ExMCP.Authorization.{ClientRegistration, ClientStore}
  import Bitwise

  # -- The private epmd ------------------------------------------------------------

  defmodule Epmd do
    @moduledoc """
    An `epmd` listening on 127.0.0.1 on a free port, owned by this process
    and stopped with it (start it with `start_supervised!/1`).
    """
    use GenServer

    alias ExMCP.Test.OSProcess

    @spec start_link(keyword()) :: GenServer.on_start()
    def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts)

    @doc "The port it listens on."
    @spec port(GenServer.server()) :: :inet.port_number()
    def port(server), do: GenServer.call(server, :port)

    @impl GenServer
    def init(_opts) do
      # terminate/2 runs when the test supervisor stops it.
      Process.flag(:trap_exit, true)
      executable = System.find_executable("epmd") || raise "the `epmd` executable is not on the PATH"
      start(executable, 5)
    end

    # A free port is found by binding 0 and closing; another program may take
    # it before epmd binds it, so a failed start is tried again.
    defp start(_executable, 0), do: {:stop, :epmd_did_not_start}

    defp start(executable, attempts) do
      {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
      {:ok, port} = :inet.port(socket)
      :ok = :gen_tcp.close(socket)

      # -d -d -d: it says when it listens ("entering the main select() loop").
      {os_port, os_pid} =
        OSProcess.open(executable, [
          :stderr_to_stdout,
          {:line, 4096},
          args: ["-d", "-d", "-d", "-address", "127.0.0.1", "-port", Integer.to_string(port)]
        ])

      case await_listening(os_port, OSProcess.deadline(10_000)) do
        :ok ->
          {:ok, %{port: port, os_port: os_port, os_pid: os_pid}}

        _ ->
          OSProcess.stop(os_port, os_pid, 1_000)
          start(executable, attempts - 1)
      end
    end

    defp await_listening(os_port, deadline) do
      case OSProcess.await_line(os_port, deadline) do
        {:ok, line} ->
          if line =~ "entering the main select() loop", do: :ok, else: await_listening(os_port, deadline)

        other ->
          other
      end
    end

    @impl GenServer
    def handle_call(:port, _from, state), do: {:reply, state.port, state}

    @impl GenServer
    def handle_info({os_port, {:data, _}}, %{os_port: os_port} = state), do: {:noreply, state}

    def handle_info({os_port, {:exit_status, status}}, %{os_port: os_port} = state),
      do: {:stop, {:epmd_exited, status}, %{state | os_port: nil}}

    def handle_info({:EXIT, _port, _reason}, state), do: {:noreply, state}

    @impl GenServer
    def terminate(_reason, %{os_port: nil}), do: :ok
    def terminate(_reason, %{os_port: os_port, os_pid: os_pid}), do: OSProcess.stop(os_port, os_pid, 1_000)
  end

  # -- Peers -----------------------------------------------------------------------

  @typedoc "A started peer: its controlling process and its node name."
  @type peer() :: %{pid: pid(), node: node()}

  @doc "A random cookie for one cluster."
  @spec cookie() :: String.t()
  def cookie do
    {System.os_time(), System.unique_integer(), make_ref(), :rand.uniform(1 <<< 60)}
    |> :erlang.term_to_binary()
    |> :erlang.md5()
    |> Base.encode32(case: :lower, padding: false)
  end

  @doc """
  Starts the peer `:"<name>@127.0.0.1"` (linked to the caller) and the
  project's application on it. Options: `:epmd_port` (required), `:cookie`
  (required), `:args` (extra `erl` arguments, charlists).
  """
  @spec start_peer(String.t(), keyword()) :: peer()
  def start_peer(name, opts) do
    epmd_port = Keyword.fetch!(opts, :epmd_port)
    cookie = Keyword.fetch!(opts, :cookie)

    # OTP 25's global, when a node halts, may disconnect two survivors
    # from each other (one of them still saw the halted node: "requested
    # disconnect ... to prevent overlapping partitions"), which splits
    # Mnesia in two; the tests stop nodes on purpose and need the
    # survivors to stay connected.
    args =
      [~c"-setcookie", String.to_charlist(cookie)] ++
        [~c"-kernel", ~c"inet_dist_use_interface", ~c"{127,0,0,1}"] ++
        [~c"-kernel", ~c"prevent_overlapping_partitions", ~c"false"] ++
        Enum.flat_map(code_path(), &[~c"-pa", &1]) ++ Keyword.get(opts, :args, [])

    {:ok, pid, node} =
      :peer.start_link(%{
        name: String.to_charlist(name),
        host: ~c"127.0.0.1",
        longnames: true,
        connection: :standard_io,
        args: args,
        env: [{~c"ERL_EPMD_PORT", Integer.to_charlist(epmd_port)}],
        wait_boot: 30_000
      })

    peer = %{pid: pid, node: node}
    :ok = call(peer, __MODULE__, :start_apps, [])
    peer
  end

  # What the peer's own OTP does not have: the project, Elixir, Mix's
  # consolidated protocols.
  defp code_path do
    otp = :code.lib_dir()
    Enum.reject(:code.get_path(), &List.starts_with?(&1, otp))
  end

  @doc "Runs `module.fun(args)` on the peer; `timeout` in milliseconds."
  @spec call(peer(), module(), atom(), list(), timeout()) :: term()
  def call(%{pid: pid}, module, fun, args, timeout \\ 30_000), do: :peer.call(pid, module, fun, args, timeout)

  @doc "Halts the peer (its node goes down for the others as a crash would: the connection is lost)."
  @spec stop(peer()) :: :ok
  def stop(%{pid: pid}), do: :peer.stop(pid)

  @doc """
  Starts Mnesia on every peer and joins them in one cluster
  (`extra_db_nodes`, RAM schema unless a peer has a disc schema).
  """
  @spec join_mnesia([peer()]) :: :ok
  def join_mnesia([first | others] = peers) do
    Enum.each(peers, &(:ok = call(&1, __MODULE__, :start_mnesia, [])))

    Enum.each(others, fn peer ->
      {:ok, connected} = call(peer, :mnesia, :change_config, [:extra_db_nodes, [first.node]])
      true = first.node in connected
    end)

    nodes = Enum.sort(Enum.map(peers, & &1.node))
    ^nodes = Enum.sort(call(first, :mnesia, :system_info, [:running_db_nodes]))
    :ok
  end

  @doc "Starts the Mnesia store with `opts` on each peer, one after the other."
  @spec start_store([peer()], keyword()) :: :ok
  def start_store(peers, opts) do
    Enum.each(peers, fn peer -> {:ok, _} = call(peer, __MODULE__, :start_store, [opts]) end)
  end

  # -- What runs on the peers ---------------------------------------------------------

  @doc false
  @spec start_apps() :: :ok
  def start_apps do
    {:ok, _} = :application.ensure_all_started(:ex_mcp_registration)
    :ok
  end

  @doc false
  @spec start_mnesia() :: :ok
  def start_mnesia do
    {:ok, _} = :application.ensure_all_started(:mnesia)
    :ok
  end

  @doc false
  @spec create_disc_schema() :: :ok
  def create_disc_schema do
    case :mnesia.create_schema([node()]) do
      :ok -> :ok
      {:error, {_, {:already_exists, _}}} -> :ok
    end
  end

  @doc false
  # The store's process outlives the short-lived process that runs a peer call.
  @spec start_store(keyword()) :: {:ok, pid()} | {:error, term()}
  def start_store(opts) do
    with {:ok, pid} <- ClientStore.Mnesia.start_link(opts) do
      Process.unlink(pid)
      {:ok, pid}
    end
  end

  @doc false
  @spec get(ClientStore.t(), String.t(), String.t()) :: {:ok, String.t()} | :error | {:error, term()}
  def get(store, issuer, client_key) do
    case ClientStore.get(store, issuer, client_key) do
      {:ok, client} -> {:ok, client.client_id}
      other -> other
    end
  end

  @doc false
  @spec lease_holder(atom(), term()) :: pid() | nil
  def lease_holder(table, key) do
    leases = :"#{table}.leases"

    case :mnesia.dirty_read(leases, key) do
      [{^leases, ^key, holder}] -> holder
      [] -> nil
    end
  end

  @doc """
  On the node where it runs: a process that subscribes to Mnesia's system
  events, then waits for `{:mnesia_down, node}`; call it before the node
  goes down, then `await_watch/2`.
  """
  @spec watch_mnesia_down(node()) :: pid()
  def watch_mnesia_down(node) do
    parent = self()

    watcher =
      spawn(fn ->
        {:ok, _} = :mnesia.subscribe(:system)
        send(parent, {:watching, self()})

        receive do
          {:mnesia_system_event, {:mnesia_down, ^node}} -> :ok
        end

        receive do
          {:await, asker} -> send(asker, {:seen, self()})
        end
      end)

    receive do
      {:watching, ^watcher} -> watcher
    end
  end

  @doc "Waits until the watcher of `watch_mnesia_down/1` has seen its event."
  @spec await_watch(pid(), timeout()) :: :ok
  def await_watch(watcher, timeout) do
    send(watcher, {:await, self()})

    receive do
      {:seen, ^watcher} -> :ok
    after
      timeout -> exit(:timeout)
    end
  end

  @doc """
  On the node where it runs: a coordinator with `count` processes, each
  waiting for the coordinator's `:go` to call
  `ClientRegistration.obtain_client(discovery, metadata, opts)`. Returns the
  coordinator (unlinked, it outlives the call). Send it `:go` with `go/1`,
  read the results with `results/2`.
  """
  @spec callers(pos_integer(), term(), map(), keyword()) :: pid()
  def callers(count, discovery, metadata, opts) do
    parent = self()

    coordinator =
      spawn(fn ->
        me = self()

        pids =
          for _ <- 1..count do
            spawn(fn ->
              receive do
                :go ->
                  send(
                    me,
                    {:result, self(), summary(ClientRegistration.obtain_client(discovery, metadata, opts))}
                  )
              end
            end)
          end

        send(parent, {:ready, me})
        coordinate(pids)
      end)

    receive do
      {:ready, ^coordinator} -> coordinator
    end
  end

  defp summary({:ok, client}), do: {:ok, client.client_id}
  defp summary(other), do: other

  defp coordinate(pids) do
    receive do
      :go ->
        started = System.monotonic_time(:microsecond)
        Enum.each(pids, &send(&1, :go))
        collect(pids, started, %{}, [])
    end
  end

  defp collect(pids, started, results, askers) do
    if map_size(results) == length(pids) do
      elapsed = System.monotonic_time(:microsecond) - started
      reply = {Enum.map(pids, &Map.fetch!(results, &1)), elapsed}
      Enum.each(askers, &send(&1, {:results, self(), reply}))
      # Later askers get the same answer.
      answer(reply)
    else
      receive do
        {:result, pid, result} ->
          collect(pids, started, Map.put(results, pid, result), askers)

        {:results?, asker} ->
          collect(pids, started, results, [asker | askers])

        {:received?, asker} ->
          send(asker, {:received, self(), map_size(results)})
          collect(pids, started, results, askers)
      end
    end
  end

  defp answer(reply) do
    receive do
      {:results?, asker} ->
        send(asker, {:results, self(), reply})
        answer(reply)

      {:received?, asker} ->
        send(asker, {:received, self(), length(elem(reply, 0))})
        answer(reply)
    end
  end

  @doc "Sends `:go` to each coordinator (on any node), one after the other without waiting."
  @spec go([pid()]) :: :ok
  def go(coordinators), do: Enum.each(coordinators, &send(&1, :go))

  @doc "Every caller's result (`{:ok, client_id}` or the error) and the microseconds from `:go` to the last one."
  @spec results(pid(), timeout()) :: {[term()], non_neg_integer()}
  def results(coordinator, timeout) do
    send(coordinator, {:results?, self()})

    receive do
      {:results, ^coordinator, reply} -> reply
    after
      timeout -> exit(:timeout)
    end
  end

  @doc "How many callers of the coordinator have returned so far."
  @spec received(pid()) :: non_neg_integer()
  def received(coordinator) do
    send(coordinator, {:received?, self()})

    receive do
      {:received, ^coordinator, count} -> count
    end
  end
end
