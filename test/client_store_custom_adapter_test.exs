defmodule ExMCP.ClientStoreCustomAdapterTest do
  # An adapter written outside this library implements the required
  # callbacks only (with_lock/4, not the optional with_lock/5 that lets a
  # woken waiter return without queueing): get_or_register/5 must still make
  # exactly one registration for 200 simultaneous callers.
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.{ClientRegistration, ClientStore, RegistrationServer}
  alias ExMCP.Test.ClientStores

  defmodule FourArityOnly do
    # Delegates to the ETS store, hiding its with_lock/5.
    @behaviour ExMCP.Authorization.ClientStore

    @impl true
    defdelegate get(name, key), to: ClientStore.ETS
    @impl true
    defdelegate put(name, key, client), to: ClientStore.ETS
    @impl true
    defdelegate delete(name, key), to: ClientStore.ETS
    @impl true
    defdelegate list(name), to: ClientStore.ETS
    @impl true
    def with_lock(name, key, timeout, fun), do: ClientStore.ETS.with_lock(name, key, timeout, fun)
  end

  test "200 callers through an adapter with with_lock/4 only: 1 registration" do
    refute function_exported?(FourArityOnly, :with_lock, 5)

    {ClientStore.ETS, name} = ClientStores.start_store!(:ets)
    store = {FourArityOnly, name}
    server = ClientStores.start_registration_server!()
    discovery = ClientStores.discovery!(server)

    results =
      ClientStores.all_at_once(200, fn ->
        ClientRegistration.obtain_client(discovery, ClientStores.metadata(), store: store, timeout: 30_000)
      end)

    assert RegistrationServer.count(server) == 1
    assert [{:ok, client}] = Enum.uniq(results)
    assert ClientStore.get(store, discovery.issuer, "default") == {:ok, client}
  end
end
