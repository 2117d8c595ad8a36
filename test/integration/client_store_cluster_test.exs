defmodule ExMCP.Integration.ClientStoreClusterTest do
  @moduledoc """
  The Mnesia client store on three real BEAM nodes, started by the tests
  with OTP's `:peer` (`ExMCP.Test.PeerCluster`: loopback only, a private
  epmd, the test VM itself stays undistributed), against the embedded
  `RegistrationServer` running in the test VM:

    * 210 processes (70 per node) released at once make exactly one
      registration, and every one of them gets that client;
    * a node going down while the others wait for the lock: a node that
      does not hold it (one registration), and the node that holds it (its
      registration reached the server and is lost with it, a survivor
      registers: two on the server, one client among the survivors);
    * `disc_copies`: a node restarted on the same Mnesia directory finds
      its client, 0 registrations.

  Run alone with `mix test --only client_store_cluster`.
  """

  use ExUnit.Case, async: false

  alias ExMCP.Authorization.{ClientRegistration, ClientStore, RegistrationServer}
  alias ExMCP.Test.{HoldingProxy, PeerCluster}
  alias ExMCP.Test.PeerCluster.Epmd

  @moduletag :client_store_cluster
  @moduletag timeout: 300_000

  @metadata %{client_name: "ExMCP cluster", redirect_uris: ["http://127.0.0.1:8080/callback"]}
  @table :cluster_clients
  @store {ClientStore.Mnesia, @table}
  @per_node 70

  setup do
    epmd = start_supervised!(Epmd)
    server = start_supervised!({RegistrationServer, port: 0, protected_resource: [resource: "/mcp"]})
    {:ok, discovery} = ClientRegistration.discover(RegistrationServer.resource_url(server))

    %{
      peer_opts: [epmd_port: Epmd.port(epmd), cookie: PeerCluster.cookie()],
      server: server,
      discovery: discovery
    }
  end

  # Three nodes, one Mnesia cluster, the store's process on each, the
  # table replicated on all three.
  defp start_cluster(%{peer_opts: peer_opts}) do
    peers = Enum.map(~w(n1 n2 n3), &PeerCluster.start_peer(&1, peer_opts))
    nodes = Enum.map(peers, & &1.node)
    assert nodes == [:"n1@127.0.0.1", :"n2@127.0.0.1", :"n3@127.0.0.1"]

    :ok = PeerCluster.join_mnesia(peers)
    :ok = PeerCluster.start_store(peers, table: @table, nodes: nodes, copies: :ram_copies)

    for peer <- peers do
      assert Enum.sort(PeerCluster.call(peer, :mnesia, :table_info, [@table, :ram_copies])) == nodes
    end

    peers
  end

  # On each node, @per_node processes waiting for :go; the coordinators.
  defp prepare_callers(peers, discovery) do
    Enum.map(
      peers,
      &PeerCluster.call(&1, PeerCluster, :callers, [@per_node, discovery, @metadata, [store: @store]])
    )
  end

  # :go to every node's callers, sent by the first node one right after the other.
  defp go([first | _], coordinators), do: :ok = PeerCluster.call(first, PeerCluster, :go, [coordinators])

  defp results(peer, coordinator),
    do: PeerCluster.call(peer, PeerCluster, :results, [coordinator, 60_000], 70_000)

  defp stored_id(peer, issuer), do: PeerCluster.call(peer, PeerCluster, :get, [@store, issuer, "default"])

  # Stops `victim`, and returns once Mnesia on each of `survivors` has seen it go down.
  defp stop_node(victim, survivors) do
    watchers =
      for peer <- survivors,
          do: {peer, PeerCluster.call(peer, PeerCluster, :watch_mnesia_down, [victim.node])}

    :ok = PeerCluster.stop(victim)

    for {peer, w} <- watchers,
        do: :ok = PeerCluster.call(peer, PeerCluster, :await_watch, [w, 30_000], 35_000)
  end

  # The node of the process holding the key's cluster-wide lease.
  defp lease_holder_peer(peers, issuer) do
    holder = PeerCluster.call(hd(peers), PeerCluster, :lease_holder, [@table, {issuer, "default"}])
    assert is_pid(holder)
    Enum.find(peers, &(&1.node == node(holder)))
  end

  test "210 processes on three nodes released at once: exactly one registration, one client everywhere",
       ctx do
    peers = start_cluster(ctx)
    coordinators = prepare_callers(peers, ctx.discovery)

    {micros, per_node} =
      :timer.tc(fn ->
        go(peers, coordinators)
        peers |> Enum.zip(coordinators) |> Enum.map(fn {peer, c} -> results(peer, c) end)
      end)

    results = Enum.flat_map(per_node, &elem(&1, 0))
    assert length(results) == 3 * @per_node
    assert [{{:ok, client_id}, 210}] = Enum.frequencies(results) |> Enum.to_list()
    assert RegistrationServer.count(ctx.server) == 1
    assert [%{client_id: ^client_id}] = RegistrationServer.list(ctx.server)

    for peer <- peers, do: assert(stored_id(peer, ctx.discovery.issuer) == {:ok, client_id})

    IO.puts(
      "\n[client_store_cluster] 3 nodes x #{@per_node}: #{div(micros, 1000)} ms seen from the test VM; " <>
        "per node from :go to its last result: " <>
        Enum.map_join(per_node, ", ", fn {_, us} -> "#{div(us, 1000)} ms" end)
    )

    # A second wave finds the client without a lock or a request.
    coordinators = prepare_callers(peers, ctx.discovery)
    go(peers, coordinators)

    for {peer, c} <- Enum.zip(peers, coordinators) do
      {results, _} = results(peer, c)
      assert results == List.duplicate({:ok, client_id}, @per_node)
    end

    assert RegistrationServer.count(ctx.server) == 1
  end

  describe "a node going down while the others wait for the lock" do
    setup ctx do
      proxy =
        start_supervised!(
          {HoldingProxy, upstream: ctx.discovery.authorization_server.registration_endpoint, notify: self()}
        )

      # Registrations go through the proxy, which holds each answer until the test releases it.
      discovery = ctx.discovery
      %{held_discovery: put_in(discovery.authorization_server.registration_endpoint, HoldingProxy.url(proxy))}
    end

    test "a node that does not hold the lock: one registration, the survivors share it", ctx do
      peers = start_cluster(ctx)
      issuer = ctx.discovery.issuer
      coordinators = prepare_callers(peers, ctx.held_discovery)
      go(peers, coordinators)

      # The lock holder's registration reached the server; its answer is held.
      assert_receive {:held, handler}, 30_000
      assert RegistrationServer.count(ctx.server) == 1
      holder_peer = lease_holder_peer(peers, issuer)

      # Nobody has returned: every caller is waiting, on the lock or inside it.
      for {peer, c} <- Enum.zip(peers, coordinators),
          do: assert(PeerCluster.call(peer, PeerCluster, :received, [c]) == 0)

      # The last node that is not the holder goes down.
      victim = peers |> Enum.reject(&(&1 == holder_peer)) |> List.last()
      survivors = peers -- [victim]
      stop_node(victim, survivors)

      assert HoldingProxy.release(handler) == :sent

      survivor_coordinators = for {peer, c} <- Enum.zip(peers, coordinators), peer != victim, do: {peer, c}

      ids =
        for {peer, c} <- survivor_coordinators do
          {results, _} = results(peer, c)
          assert [{{:ok, id}, @per_node}] = results |> Enum.frequencies() |> Enum.to_list()
          id
        end

      assert [client_id] = Enum.uniq(ids)
      assert RegistrationServer.count(ctx.server) == 1
      assert [%{client_id: ^client_id}] = RegistrationServer.list(ctx.server)
      refute_received {:held, _}

      for peer <- survivors, do: assert(stored_id(peer, issuer) == {:ok, client_id})
    end

    test "the lock holder's node: its registration is orphaned, one survivor registers, all survivors share it",
         ctx do
      peers = start_cluster(ctx)
      issuer = ctx.discovery.issuer
      coordinators = prepare_callers(peers, ctx.held_discovery)
      go(peers, coordinators)

      assert_receive {:held, orphan_handler}, 30_000
      assert [%{client_id: orphan_id}] = RegistrationServer.list(ctx.server)
      holder_peer = lease_holder_peer(peers, issuer)

      for {peer, c} <- Enum.zip(peers, coordinators),
          do: assert(PeerCluster.call(peer, PeerCluster, :received, [c]) == 0)

      survivors = peers -- [holder_peer]
      stop_node(holder_peer, survivors)

      # The holder died with the registration's answer in flight: a waiting
      # survivor takes the lease over (the holder's death woke it) and, finding
      # nothing stored, registers. The server now holds two clients, the first
      # one orphaned (documented in ClientStore.Mnesia, "When a node goes down").
      assert_receive {:held, handler}, 30_000
      assert RegistrationServer.count(ctx.server) == 2
      new_holder = lease_holder_peer(survivors, issuer)
      assert new_holder in survivors

      assert HoldingProxy.release(handler) == :sent

      ids =
        for {peer, c} <- Enum.zip(peers, coordinators), peer != holder_peer do
          {results, _} = results(peer, c)
          assert [{{:ok, id}, @per_node}] = results |> Enum.frequencies() |> Enum.to_list()
          id
        end

      assert [client_id] = Enum.uniq(ids)
      assert client_id != orphan_id
      assert RegistrationServer.count(ctx.server) == 2

      assert ctx.server |> RegistrationServer.list() |> Enum.map(& &1.client_id) |> Enum.sort() ==
               Enum.sort([orphan_id, client_id])

      refute_received {:held, _}

      for peer <- survivors, do: assert(stored_id(peer, issuer) == {:ok, client_id})

      # The orphan's answer has nobody left to read it.
      _ = HoldingProxy.release(orphan_handler)
    end
  end

  @tag :tmp_dir
  test "disc_copies: a node restarted on its Mnesia directory finds its client, 0 registrations", ctx do
    dir = Path.join(ctx.tmp_dir, "mnesia")
    File.mkdir_p!(dir)
    peer_opts = ctx.peer_opts ++ [args: [~c"-mnesia", ~c"dir", String.to_charlist(inspect(dir))]]
    issuer = ctx.discovery.issuer

    start = fn ->
      peer = PeerCluster.start_peer("d1", peer_opts)
      :ok = PeerCluster.call(peer, PeerCluster, :create_disc_schema, [])
      :ok = PeerCluster.call(peer, PeerCluster, :start_mnesia, [])
      :ok = PeerCluster.start_store([peer], table: @table, nodes: [peer.node], copies: :disc_copies)
      assert PeerCluster.call(peer, :mnesia, :table_info, [@table, :disc_copies]) == [peer.node]
      peer
    end

    obtain = fn peer ->
      assert {:ok, client} =
               PeerCluster.call(peer, ClientRegistration, :obtain_client, [
                 ctx.discovery,
                 @metadata,
                 [store: @store]
               ])

      client
    end

    peer = start.()
    first = obtain.(peer)
    assert RegistrationServer.count(ctx.server) == 1
    assert first.issuer == issuer
    # Halted right after: what obtain_client/3 returned must be on disk.
    :ok = PeerCluster.stop(peer)

    peer = start.()
    assert stored_id(peer, issuer) == {:ok, first.client_id}
    again = obtain.(peer)
    assert again == first
    assert RegistrationServer.count(ctx.server) == 1
    :ok = PeerCluster.stop(peer)
  end
end
