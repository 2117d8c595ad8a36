defmodule ExMCP.Authorization.ClientStore.ETS do
  @moduledoc """
  A client store in memory: an ETS table owned by a process you supervise.
  For tests, scripts and short-lived tools; what it holds is gone when that
  process or the VM stops.

      children = [
        {ExMCP.Authorization.ClientStore.ETS, name: MyApp.Clients}
      ]

      ClientRegistration.obtain_client(discovery, metadata,
        store: {ExMCP.Authorization.ClientStore.ETS, MyApp.Clients})

  Options of `start_link/1`: `:name` (required), an atom: the table's name,
  and the name in the store tuple.

  Reads go straight to the table (a cached hit is one ETS lookup); the lock
  of `ExMCP.Authorization.ClientStore` covers the processes of this VM. The
  table is public within the VM, secrets included: any process of the VM can
  read it.
  """

  use GenServer

  @behaviour ExMCP.Authorization.ClientStore

  alias ExMCP.Authorization.ClientStore.{Lease, Table}

  @doc "Starts the store's owner process and its table."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    name = Table.name!(opts, __MODULE__)
    GenServer.start_link(__MODULE__, name, name: name)
  end

  @doc false
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts), do: Table.child_spec(__MODULE__, opts)

  @impl GenServer
  def init(name) do
    :ok = Table.new(name)
    {:ok, name}
  end

  @impl ExMCP.Authorization.ClientStore
  def get(name, key), do: Table.get(name, key, __MODULE__)

  @impl ExMCP.Authorization.ClientStore
  def put(name, key, client), do: Table.put(name, key, client, __MODULE__)

  @impl ExMCP.Authorization.ClientStore
  def delete(name, key), do: Table.delete(name, key, __MODULE__)

  @impl ExMCP.Authorization.ClientStore
  def list(name), do: Table.list(name, __MODULE__)

  @impl ExMCP.Authorization.ClientStore
  def with_lock(name, key, timeout, fun, ready \\ &Lease.wait/0),
    do: Lease.run(Table, name, key, timeout, fun, ready)
end
