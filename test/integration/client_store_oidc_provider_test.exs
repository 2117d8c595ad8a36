defmodule ExMCP.Integration.ClientStoreOidcProviderTest do
  @moduledoc """
  The client store's concurrency figures against a real authorization
  server, oidc-provider (test/servers/oidc_provider.mjs, started and stopped
  by the tests), whose successful registrations are counted by the script
  (`ExMCP.Test.OidcProvider.registrations/1`):

    * 200 processes of one VM released at once, with the ETS store and with
      the DETS store: exactly one registration each;
    * 210 processes on three BEAM nodes (`:peer`, `ExMCP.Test.PeerCluster`)
      sharing the Mnesia store: exactly one registration.

  Needs Node and `npm ci --prefix test/servers`. Run alone with
  `mix test --only client_store_oidc_provider`.
  """

  use ExUnit.Case, async: false

  alias ExMCP.Authorization.{ClientRegistration, ClientStore}
  alias ExMCP.Test.{OidcProvider, PeerCluster}
  alias ExMCP.Test.PeerCluster.Epmd

  @moduletag :client_store_oidc_provider
  @moduletag :oidc_provider
  @moduletag timeout: 300_000

  @metadata %{
    client_name: "ExMCP store",
    redirect_uris: ["http://127.0.0.1:8080/callback"],
    scope: "mcp:read"
  }
  @processes 200
  @per_node 70

  setup do
    provider = start_supervised!(OidcProvider)
    %{issuer: issuer} = OidcProvider.info(provider)
    {:ok, discovery} = ClientRegistration.discover(issuer)
    assert discovery.issuer == issuer
    assert OidcProvider.registrations(provider) == 0
    %{provider: provider, discovery: discovery}
  end

  # @processes processes of this VM, released together by one message each
  # from their coordinator; their results and the time from :go to the last.
  defp run_local(discovery, store) do
    coordinator = PeerCluster.callers(@processes, discovery, @metadata, store: store)
    :ok = PeerCluster.go([coordinator])
    PeerCluster.results(coordinator, 60_000)
  end

  defp assert_one_client(results, count) do
    assert length(results) == count
    assert [{{:ok, client_id}, ^count}] = results |> Enum.frequencies() |> Enum.to_list()
    client_id
  end

  test "200 processes with the ETS store: exactly one registration", %{
    provider: provider,
    discovery: discovery
  } do
    start_supervised!({ClientStore.ETS, name: :oidc_ets_clients})
    store = {ClientStore.ETS, :oidc_ets_clients}

    {results, micros} = run_local(discovery, store)
    client_id = assert_one_client(results, @processes)
    assert OidcProvider.registrations(provider) == 1
    assert {:ok, %{client_id: ^client_id}} = ClientStore.get(store, discovery.issuer, "default")
    IO.puts("\n[client_store_oidc_provider] ETS, #{@processes} processes: #{div(micros, 1000)} ms")

    # The registration is real: oidc-provider knows the stored client.
    {:ok, stored} = ClientStore.get(store, discovery.issuer, "default")

    assert {:ok, read} =
             ClientRegistration.get_client_information(
               stored.registration_client_uri,
               stored.registration_access_token
             )

    assert read.client_id == client_id
  end

  @tag :tmp_dir
  test "200 processes with the DETS store: exactly one registration, none after a restart", %{
    provider: provider,
    discovery: discovery,
    tmp_dir: dir
  } do
    path = Path.join(dir, "clients.dets")
    start_supervised!({ClientStore.DETS, name: :oidc_dets_clients, path: path})
    store = {ClientStore.DETS, :oidc_dets_clients}

    {results, micros} = run_local(discovery, store)
    client_id = assert_one_client(results, @processes)
    assert OidcProvider.registrations(provider) == 1
    IO.puts("\n[client_store_oidc_provider] DETS, #{@processes} processes: #{div(micros, 1000)} ms")

    :ok = stop_supervised({ClientStore.DETS, :oidc_dets_clients})
    start_supervised!({ClientStore.DETS, name: :oidc_dets_clients, path: path})
    {results, _} = run_local(discovery, store)
    assert assert_one_client(results, @processes) == client_id
    assert OidcProvider.registrations(provider) == 1
  end

  test "210 processes on three nodes sharing the Mnesia store: exactly one registration", %{
    provider: provider,
    discovery: discovery
  } do
    epmd = start_supervised!(Epmd)
    peer_opts = [epmd_port: Epmd.port(epmd), cookie: PeerCluster.cookie()]
    peers = Enum.map(~w(o1 o2 o3), &PeerCluster.start_peer(&1, peer_opts))
    nodes = Enum.map(peers, & &1.node)
    :ok = PeerCluster.join_mnesia(peers)
    :ok = PeerCluster.start_store(peers, table: :oidc_clients, nodes: nodes, copies: :ram_copies)
    store = {ClientStore.Mnesia, :oidc_clients}

    coordinators =
      Enum.map(
        peers,
        &PeerCluster.call(&1, PeerCluster, :callers, [@per_node, discovery, @metadata, [store: store]])
      )

    {micros, per_node} =
      :timer.tc(fn ->
        :ok = PeerCluster.call(hd(peers), PeerCluster, :go, [coordinators])

        for {peer, c} <- Enum.zip(peers, coordinators),
            do: PeerCluster.call(peer, PeerCluster, :results, [c, 60_000], 70_000)
      end)

    client_id = assert_one_client(Enum.flat_map(per_node, &elem(&1, 0)), 3 * @per_node)
    assert OidcProvider.registrations(provider) == 1

    for peer <- peers do
      assert PeerCluster.call(peer, PeerCluster, :get, [store, discovery.issuer, "default"]) ==
               {:ok, client_id}
    end

    IO.puts(
      "\n[client_store_oidc_provider] Mnesia, 3 nodes x #{@per_node}: #{div(micros, 1000)} ms seen from the test VM; " <>
        "per node: " <> Enum.map_join(per_node, ", ", fn {_, us} -> "#{div(us, 1000)} ms" end)
    )
  end
end
