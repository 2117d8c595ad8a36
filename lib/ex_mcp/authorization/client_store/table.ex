defmodule ExMCP.Authorization.ClientStore.Table do
  @moduledoc false
  # The ETS side of the ETS and DETS stores: clients under {:client, key}
  # (ETS store only) and leases under {:lease, key} (both), in one named
  # public table owned by the store's process. Leases are written with
  # insert_new and replaced with a compare-and-swap on the dead holder, so
  # each step is one atomic ETS operation. The Mnesia store takes such a
  # lease in a table of its own on each node before its cluster-wide one, so
  # that only one process per node contends in Mnesia.

  @behaviour ExMCP.Authorization.ClientStore.Lease

  @doc "Makes start_link/1 return `{:error, {:client_store, message}}` without an abnormal exit, which would take a linked caller down."
  @spec fail_start(String.t()) :: no_return()
  def fail_start(message) do
    :proc_lib.init_ack({:error, {:client_store, message}})
    exit(:normal)
  end

  @doc "The child spec of a store whose process is named by `:name`: one child per name."
  @spec child_spec(module(), keyword()) :: Supervisor.child_spec()
  def child_spec(adapter, opts),
    do: %{id: {adapter, name!(opts, adapter)}, start: {adapter, :start_link, [opts]}}

  @doc "Creates the table, owned by the calling process."
  @spec new(atom()) :: :ok
  def new(table) do
    _ = :ets.new(table, [:named_table, :public, :set, read_concurrency: true])
    :ok
  end

  @spec name!(keyword(), module()) :: atom()
  def name!(opts, adapter) do
    case Keyword.fetch(opts, :name) do
      {:ok, name} when is_atom(name) and name not in [nil, true, false] ->
        name

      {:ok, other} ->
        raise ArgumentError, "#{inspect(adapter)}: option :name must be an atom, got: #{inspect(other)}"

      :error ->
        raise ArgumentError, "#{inspect(adapter)}: option :name is required"
    end
  end

  @spec get(atom(), term(), module()) :: {:ok, map()} | :error | {:error, {:client_store, String.t()}}
  def get(table, key, adapter) do
    case :ets.lookup(table, {:client, key}) do
      [{_, client}] -> {:ok, client}
      [] -> :error
    end
  rescue
    ArgumentError -> not_running(table, adapter)
  end

  @spec put(atom(), term(), map(), module()) :: :ok | {:error, {:client_store, String.t()}}
  def put(table, key, client, adapter) do
    :ets.insert(table, {{:client, key}, client})
    :ok
  rescue
    ArgumentError -> not_running(table, adapter)
  end

  @spec delete(atom(), term(), module()) :: :ok | {:error, {:client_store, String.t()}}
  def delete(table, key, adapter) do
    :ets.delete(table, {:client, key})
    :ok
  rescue
    ArgumentError -> not_running(table, adapter)
  end

  @spec list(atom(), module()) :: {:ok, [{term(), map()}]} | {:error, {:client_store, String.t()}}
  def list(table, adapter) do
    {:ok, :ets.select(table, [{{{:client, :"$1"}, :"$2"}, [], [{{:"$1", :"$2"}}]}])}
  rescue
    ArgumentError -> not_running(table, adapter)
  end

  @impl ExMCP.Authorization.ClientStore.Lease
  def try_acquire(table, key, holder, replacing) do
    lease = {:lease, key}

    cond do
      :ets.insert_new(table, {lease, holder}) ->
        :acquired

      replacing != nil and
          :ets.select_replace(table, [{{lease, replacing}, [], [{{{:const, lease}, {:const, holder}}}]}]) == 1 ->
        :acquired

      true ->
        case :ets.lookup(table, lease) do
          [{_, current}] -> {:held, current}
          # Released between the two steps: try again.
          [] -> try_acquire(table, key, holder, replacing)
        end
    end
  rescue
    ArgumentError ->
      {:error,
       {:client_store,
        "the lock table #{inspect(table)} does not exist: is the client store's process running?"}}
  end

  @impl ExMCP.Authorization.ClientStore.Lease
  def release(table, key, holder) do
    :ets.delete_object(table, {{:lease, key}, holder})
    :ok
  rescue
    ArgumentError -> :ok
  end

  defp not_running(table, adapter),
    do: {:error, {:client_store, "the client store #{inspect(table)} (#{inspect(adapter)}) is not running"}}
end
