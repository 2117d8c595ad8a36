defmodule ExMCP.Authorization.ClientStore.Mnesia do
  @moduledoc """
  A client store for a cluster: a Mnesia table shared by connected BEAM
  nodes. One registration per `{issuer, client_key}` for the whole cluster:
  the key's lock is held in Mnesia too, so processes on every node wait for
  the one that registers.

  Mnesia must be running on the nodes (add `:mnesia` to your
  `extra_applications`). Start the store's process on every node that uses
  it, under your supervisor: it creates the table when it does not exist
  (`create_table/2`), waits for it, and holds the node's side of the lock.

      children = [
        {ExMCP.Authorization.ClientStore.Mnesia,
         table: MyApp.Clients, copies: :disc_copies, nodes: [node() | Node.list()]}
      ]

      ClientRegistration.obtain_client(discovery, metadata,
        store: {ExMCP.Authorization.ClientStore.Mnesia, MyApp.Clients})

  Options of `start_link/1` (the child spec) and `create_table/2`:

  | Option | Default | Meaning |
  |---|---|---|
  | `:table` | required (`start_link/1`) | An atom: the table's name, and the name in the store tuple. |
  | `:copies` | `:ram_copies` | `:ram_copies` (lost when every node holding it stops) or `:disc_copies` (kept on disk; the nodes need a disc schema, `:mnesia.create_schema/1`, made before Mnesia starts). |
  | `:nodes` | `[node()]` | The nodes that hold a replica. Nodes of the cluster outside this list still use the table, remotely. |
  | `:timeout` | `30_000` | Milliseconds to wait for the table to be loaded. |
  | `:cipher` | `nil` | `start_link/1` only: `{module, config}`, encrypt each stored client (see `ExMCP.Authorization.ClientStore.Cipher`). Give every node the same. |

  Two tables are created: `table`, with the clients, and `:"<table>.leases"`,
  always `ram_copies` on the same nodes, with the locks. An existing table is
  used as it is: its copies and nodes are not changed. The process also
  owns an ETS table, `:"<table>.local_leases"`: the processes of one node
  queue there, so that one per node at a time takes the Mnesia lock.

  ## What is written

  Records `{table, {issuer, client_key}, client}`, with the client map as an
  Erlang term: `client_secret` and `registration_access_token` in clear in
  the memory of every replica node and, with `:disc_copies`, in the Mnesia
  directory of each (`-mnesia dir`), unless `:cipher` is set (then
  `client` is `{:sealed, ciphertext}`). Every node of the cluster can
  read them. Nothing is logged. Writes are synchronous
  (`:mnesia.sync_transaction/1`): when `obtain_client/3` returns, every
  running replica has the client.

  ## When a node goes down

  A lock held by a process on a node that stops, or becomes unreachable, is
  taken over by a waiting process on another node. A registration that node
  had sent but not yet stored is lost with it (the server keeps an unused
  client), and a survivor registers. During a network partition both sides
  may register. On OTP 25 and later, `global`'s
  `prevent_overlapping_partitions` (on by default) can disconnect two
  surviving nodes from each other when a third goes down; Mnesia is then
  partitioned, with the same effect, until the nodes reconnect. The
  library's three-node tests run with it off to stay deterministic.
  """

  use GenServer

  @behaviour ExMCP.Authorization.ClientStore
  @behaviour ExMCP.Authorization.ClientStore.Lease

  alias ExMCP.Authorization.ClientStore.{Cipher, Lease, Table}

  # Aborted transactions (a node went down in the middle) are run again.
  @transaction_attempts 5

  @doc false
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts), do: %{id: {__MODULE__, table!(opts)}, start: {__MODULE__, :start_link, [opts]}}

  @doc """
  Creates the table if needed, waits for it, and starts this node's process
  of the store. A failure is `{:error, {:client_store, message}}`, without
  an exit signal to the caller.
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    table = table!(opts)
    {cipher, opts} = opts |> Keyword.delete(:table) |> Keyword.pop(:cipher)
    # Checked here, so that a bad option raises in the caller.
    _ = table_options!(opts)

    :ok = Cipher.check!(cipher, __MODULE__)
    GenServer.start_link(__MODULE__, {table, opts, cipher})
  end

  @impl GenServer
  def init({table, opts, cipher}) do
    Process.flag(:trap_exit, true)

    case create_table(table, opts) do
      :ok ->
        _ = :ets.new(local_leases(table), [:named_table, :public, :set])
        :ok = Cipher.configure({__MODULE__, table}, cipher)
        {:ok, table}

      {:error, {:client_store, message}} ->
        Table.fail_start(message)
    end
  end

  @doc """
  Creates `table` (and its lease table) on `:nodes` with `:copies`, unless
  it exists, then waits until it is loaded. See the moduledoc for options.
  """
  @spec create_table(atom(), keyword()) :: :ok | {:error, ExMCP.Authorization.ClientStore.error()}
  def create_table(table, opts \\ []) when is_atom(table) do
    {copies, nodes, timeout} = table_options!(opts)

    with :ok <- running(),
         :ok <- create(table, [{copies, nodes}, attributes: [:key, :client], type: :set]),
         :ok <- create(leases(table), ram_copies: nodes, attributes: [:key, :holder], type: :set) do
      case :mnesia.wait_for_tables([table, leases(table)], timeout) do
        :ok -> :ok
        {:timeout, tables} -> store_error("Mnesia did not load #{inspect(tables)} within #{timeout} ms")
        {:error, reason} -> store_error("Mnesia could not load #{inspect(table)}: #{inspect(reason)}")
      end
    end
  end

  @impl GenServer
  def terminate(_reason, table), do: Cipher.configure({__MODULE__, table}, nil)

  defp table_options!(opts) do
    copies = Keyword.get(opts, :copies, :ram_copies)
    nodes = Keyword.get(opts, :nodes, [node()])
    timeout = Keyword.get(opts, :timeout, 30_000)

    Enum.each(Keyword.keys(opts), fn key ->
      unless key in [:copies, :nodes, :timeout],
        do:
          raise(ArgumentError, "unknown option #{inspect(key)}; accepted: :table, :copies, :nodes, :timeout")
    end)

    unless copies in [:ram_copies, :disc_copies],
      do: raise(ArgumentError, "option :copies must be :ram_copies or :disc_copies, got: #{inspect(copies)}")

    unless is_list(nodes) and nodes != [] and Enum.all?(nodes, &is_atom/1),
      do: raise(ArgumentError, "option :nodes must be a non-empty list of node names, got: #{inspect(nodes)}")

    unless is_integer(timeout) and timeout >= 0,
      do: raise(ArgumentError, "option :timeout must be a non-negative integer, got: #{inspect(timeout)}")

    {copies, nodes, timeout}
  end

  defp running do
    if :mnesia.system_info(:is_running) == :yes,
      do: :ok,
      else:
        store_error("Mnesia is not running on #{node()}: start it (add :mnesia to extra_applications) first")
  end

  defp create(table, definition) do
    case :mnesia.create_table(table, definition) do
      {:atomic, :ok} ->
        :ok

      {:aborted, {:already_exists, ^table}} ->
        :ok

      {:aborted, reason} ->
        store_error("Mnesia could not create #{inspect(table)}: #{inspect(reason, limit: 10)}")
    end
  end

  @impl ExMCP.Authorization.ClientStore
  def get(table, key) do
    case :mnesia.dirty_read(table, key) do
      [{^table, ^key, stored}] -> Cipher.open({__MODULE__, table}, stored)
      [] -> :error
    end
  catch
    :exit, reason -> mnesia_error(table, reason)
  end

  @impl ExMCP.Authorization.ClientStore
  def put(table, key, client) do
    stored = Cipher.seal({__MODULE__, table}, client)
    with :ok <- transaction(table, fn -> :mnesia.write({table, key, stored}) end), do: sync_log(table)
  end

  @impl ExMCP.Authorization.ClientStore
  def delete(table, key) do
    with :ok <- transaction(table, fn -> :mnesia.delete({table, key}) end), do: sync_log(table)
  end

  # Mnesia logs a committed transaction to each disc_copies replica's
  # transaction log through disk_log, which buffers it: a VM that halts
  # right after would lose the client. So the log of every running disc
  # replica is flushed (:mnesia.sync_log/0) before returning, as the DETS
  # store syncs its file. A replica that cannot be reached is skipped: the
  # transaction has committed.
  defp sync_log(table) do
    case :mnesia.table_info(table, :disc_copies) do
      [] ->
        :ok

      nodes ->
        running = :mnesia.system_info(:running_db_nodes)
        _ = :erpc.multicall(Enum.filter(nodes, &(&1 in running)), :mnesia, :sync_log, [], 5_000)
        :ok
    end
  catch
    :exit, reason -> mnesia_error(table, reason)
  end

  @impl ExMCP.Authorization.ClientStore
  def list(table) do
    with {:ok, records} <- transaction(table, fn -> {:ok, :mnesia.match_object({table, :_, :_})} end) do
      Cipher.open_all({__MODULE__, table}, for({^table, key, stored} <- records, do: {key, stored}))
    end
  end

  # First this node's lock, then the cluster's: the processes of a node
  # queue in ETS, and one per node at a time contends in Mnesia, whose
  # conflicting transactions back off and restart.
  @impl ExMCP.Authorization.ClientStore
  def with_lock(table, key, timeout, fun, ready \\ &Lease.wait/0) do
    deadline = System.monotonic_time(:millisecond) + timeout

    Lease.run(
      Table,
      local_leases(table),
      key,
      timeout,
      fn ->
        remaining = max(deadline - System.monotonic_time(:millisecond), 0)
        Lease.run(__MODULE__, table, key, remaining, fun, ready)
      end,
      ready
    )
  end

  @impl ExMCP.Authorization.ClientStore.Lease
  def try_acquire(table, key, holder, replacing) do
    leases = leases(table)

    transaction(table, fn ->
      case :mnesia.read(leases, key, :write) do
        [{^leases, ^key, current}] when current != replacing ->
          {:held, current}

        _free_or_dead ->
          :mnesia.write({leases, key, holder})
          :acquired
      end
    end)
  end

  @impl ExMCP.Authorization.ClientStore.Lease
  def release(table, key, holder) do
    leases = leases(table)

    transaction(table, fn ->
      case :mnesia.read(leases, key, :write) do
        [{^leases, ^key, ^holder}] -> :mnesia.delete({leases, key})
        _ -> :ok
      end
    end)

    :ok
  end

  defp leases(table), do: :"#{table}.leases"
  defp local_leases(table), do: :"#{table}.local_leases"

  # Synchronous, so that a process on another node that reads after this
  # returns (it was woken by the lock holder's exit) sees the write.
  defp transaction(table, fun, attempt \\ 1) do
    case :mnesia.sync_transaction(fun) do
      {:atomic, result} ->
        result

      {:aborted, {:no_exists, _}} = reason ->
        mnesia_error(table, reason)

      {:aborted, _} when attempt < @transaction_attempts ->
        transaction(table, fun, attempt + 1)

      {:aborted, reason} ->
        mnesia_error(table, reason)
    end
  catch
    :exit, reason -> mnesia_error(table, reason)
  end

  defp mnesia_error(table, {:aborted, {:no_exists, _}}),
    do: store_error("the Mnesia table #{inspect(table)} does not exist here: create it with create_table/2")

  defp mnesia_error(table, {:aborted, reason}), do: mnesia_error(table, reason)

  defp mnesia_error(table, reason), do: store_error("Mnesia failed on #{inspect(table)}: #{describe(reason)}")

  # Only the shape of a Mnesia reason: some carry the record, secrets included.
  defp describe(reason) when is_atom(reason), do: inspect(reason)

  defp describe(reason) when is_tuple(reason) and tuple_size(reason) > 0 do
    reason |> Tuple.to_list() |> Enum.filter(&is_atom/1) |> Enum.map_join(" ", &inspect/1)
  end

  defp describe(_reason), do: "an unexpected error"

  defp store_error(message), do: {:error, {:client_store, message}}

  defp table!(opts) do
    case Keyword.fetch(opts, :table) do
      {:ok, table} when is_atom(table) and table not in [nil, true, false] -> table
      _ -> raise ArgumentError, "#{inspect(__MODULE__)}: option :table (an atom) is required"
    end
  end
end
