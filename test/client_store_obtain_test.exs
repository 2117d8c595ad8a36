defmodule ExMCP.Authorization.ClientStoreObtainTest do
  # obtain_client/3 with store:, client_rejected/2 and the RFC 7592 calls
  # of ClientStore, against the embedded RegistrationServer on 127.0.0.1
  # (RegistrationServer.count/1 is the number of registrations it holds),
  # and against a FixtureServer that holds a registration open until the
  # test releases it. The cases that depend on the lock run for each
  # adapter.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog

  alias ExMCP.Authorization.{ClientRegistration, ClientStore, RegistrationServer, RotatedCredentials}
  alias ExMCP.Test.{ClientStores, FixtureServer, JSON}

  import ClientStores, only: [metadata: 0, metadata: 1]

  defp obtain(discovery, opts, metadata \\ metadata()),
    do: ClientRegistration.obtain_client(discovery, metadata, opts)

  # Until the wall clock (whole seconds, as ClientStore.expired?/3 reads it)
  # reaches `at`: the expiry under test, not a synchronisation.
  defp wait_for_wall_clock(at) do
    wait = at * 1000 - System.os_time(:millisecond)
    if wait > 0, do: Process.sleep(wait)
    true = System.os_time(:second) >= at
  end

  describe "obtain_client/3 with store:" do
    setup do
      server = ClientStores.start_registration_server!()
      %{server: server, discovery: ClientStores.discovery!(server), store: ClientStores.start_store!(:ets)}
    end

    test "the first call registers and stores; the second returns the stored client without a request",
         %{server: server, discovery: discovery, store: store} do
      assert {:ok, first} = obtain(discovery, store: store)
      assert RegistrationServer.count(server) == 1
      assert first.registration_method == :dynamic
      assert first.issuer == discovery.issuer
      assert is_binary(first.client_secret) and is_binary(first.registration_access_token)
      assert ClientStore.get(store, discovery.issuer, "default") == {:ok, first}

      assert obtain(discovery, store: store) == {:ok, first}
      assert RegistrationServer.count(server) == 1

      # The discovery may also be redone from the URL.
      assert obtain(RegistrationServer.resource_url(server), store: store) == {:ok, first}
      assert RegistrationServer.count(server) == 1
    end

    test "client_key separates identities at one issuer",
         %{server: server, discovery: discovery, store: store} do
      assert {:ok, a} = obtain(discovery, store: store, client_key: "a")
      assert {:ok, b} = obtain(discovery, store: store, client_key: "b")
      assert RegistrationServer.count(server) == 2
      assert a.client_id != b.client_id

      assert obtain(discovery, store: store, client_key: "a") == {:ok, a}
      assert obtain(discovery, store: store, client_key: "b") == {:ok, b}
      assert RegistrationServer.count(server) == 2

      assert {:ok, [{{issuer, "a"}, ^a}, {{issuer, "b"}, ^b}]} = ClientStore.list(store)
      assert issuer == discovery.issuer
    end

    test "another issuer with the same client_key registers anew and never gets the first issuer's credentials",
         %{server: server, discovery: discovery, store: store} do
      other_server = ClientStores.start_registration_server!()
      other = ClientStores.discovery!(other_server)
      assert other.issuer != discovery.issuer

      assert {:ok, first} = obtain(discovery, store: store)
      assert {:ok, second} = obtain(other, store: store)
      assert RegistrationServer.count(server) == 1
      assert RegistrationServer.count(other_server) == 1

      assert second.issuer == other.issuer
      assert second.client_id != first.client_id
      assert second.client_secret != first.client_secret
      assert second.registration_access_token != first.registration_access_token
      assert {:ok, _} = RegistrationServer.lookup(other_server, second.client_id)

      assert obtain(discovery, store: store) == {:ok, first}
      assert obtain(other, store: store) == {:ok, second}
      assert RegistrationServer.count(server) == 1
      assert RegistrationServer.count(other_server) == 1
    end

    test "a client filed under the wrong issuer (behind the API's back) is not returned: the issuer is checked on the way out",
         %{discovery: discovery, store: {adapter, name} = store} do
      other_server = ClientStores.start_registration_server!()
      other = ClientStores.discovery!(other_server)
      assert {:ok, first} = obtain(discovery, store: store)

      # The adapter itself does not check; ClientStore.put/4 would refuse this.
      :ok = adapter.put(name, {other.issuer, "default"}, first)

      assert {:ok, second} = obtain(other, store: store)
      assert second.issuer == other.issuer
      assert second.client_id != first.client_id
      assert RegistrationServer.count(other_server) == 1
      assert ClientStore.get(store, other.issuer, "default") == {:ok, second}
    end

    test "a redirect URI the stored client lacks makes a new registration, which replaces it",
         %{server: server, discovery: discovery, store: store} do
      both = ["http://127.0.0.1:8080/callback", "http://127.0.0.1:9090/callback"]
      assert {:ok, first} = obtain(discovery, [store: store], metadata(%{redirect_uris: both}))
      assert RegistrationServer.count(server) == 1

      # A subset of the registered redirect URIs is served by the stored client.
      assert obtain(discovery, [store: store], metadata(%{redirect_uris: [Enum.at(both, 1)]})) == {:ok, first}
      assert RegistrationServer.count(server) == 1

      new_uri = ["http://127.0.0.1:7070/callback"]
      assert {:ok, second} = obtain(discovery, [store: store], metadata(%{redirect_uris: new_uri}))
      assert RegistrationServer.count(server) == 2
      assert second.client_id != first.client_id
      assert second.redirect_uris == new_uri
      assert ClientStore.get(store, discovery.issuer, "default") == {:ok, second}
    end

    test "a pre-registered client_id ignores the store: nothing read, nothing written, no request",
         %{server: server, discovery: discovery, store: store} do
      assert {:ok, stored} = obtain(discovery, store: store)

      assert {:ok, pre} =
               obtain(discovery, store: store, client_id: "pre-registered", client_secret: "pre-secret")

      assert pre.client_id == "pre-registered"
      assert pre.registration_method == :pre_registered
      assert RegistrationServer.count(server) == 1
      assert ClientStore.list(store) == {:ok, [{{discovery.issuer, "default"}, stored}]}

      empty = ClientStores.start_store!(:ets)

      assert {:ok, %{client_id: "pre-registered"}} =
               obtain(discovery, store: empty, client_id: "pre-registered")

      assert ClientStore.list(empty) == {:ok, []}
    end

    test "a Client ID Metadata Document client ignores the store" do
      server = ClientStores.start_registration_server!(client_id_metadata_documents: true)
      discovery = ClientStores.discovery!(server)
      assert discovery.authorization_server.client_id_metadata_document_supported == true
      store = ClientStores.start_store!(:ets)
      url = "https://app.example.com/oauth/client.json"

      for _ <- 1..2 do
        assert {:ok, client} =
                 obtain(
                   discovery,
                   [store: store, client_metadata_url: url],
                   metadata(%{token_endpoint_auth_method: "none"})
                 )

        assert client.client_id == url
        assert client.registration_method == :client_id_metadata_document
      end

      assert RegistrationServer.count(server) == 0
      assert ClientStore.list(store) == {:ok, []}
    end

    test "bad store options raise ArgumentError in the caller", %{discovery: discovery, store: store} do
      error = assert_raise ArgumentError, fn -> obtain(discovery, store: :clients) end
      assert Exception.message(error) =~ "a client store is {adapter, name}"

      error = assert_raise ArgumentError, fn -> obtain(discovery, store: store, client_key: "") end
      assert Exception.message(error) == "option :client_key must be a non-empty string, got: a string"

      error = assert_raise ArgumentError, fn -> obtain(discovery, store: store, expiry_skew: -1) end

      assert Exception.message(error) =~
               "option :expiry_skew must be a non-negative integer (seconds), got: -1"

      error = assert_raise ArgumentError, fn -> ClientRegistration.client_rejected(%{}, store: store) end
      assert Exception.message(error) =~ "client_rejected/2 needs a client from obtain_client/3"

      error =
        assert_raise ArgumentError, fn ->
          ClientRegistration.client_rejected(%{issuer: "http://i", client_id: "c"}, [])
        end

      assert Exception.message(error) == "client_rejected/2 needs a keyword list with the option :store"

      error =
        assert_raise ArgumentError, fn ->
          ClientRegistration.client_rejected(%{issuer: "http://i", client_id: "c"}, store: store, key: "x")
        end

      assert Exception.message(error) ==
               "unknown option :key; client_rejected/2 accepts :store, :client_key, :timeout"
    end

    test "a store that is not running: obtain_client/3 returns its error and registers nothing",
         %{server: server, discovery: discovery} do
      missing = {ClientStore.DETS, ClientStores.unique_name(:missing)}
      {_, name} = missing

      assert obtain(discovery, store: missing) ==
               {:error,
                {:client_store,
                 "the client store #{inspect(name)} (ExMCP.Authorization.ClientStore.DETS) is not running"}}

      assert RegistrationServer.count(server) == 0
    end
  end

  describe "expiry" do
    test "with expiry_skew: 0 the client is reused until the wall clock passes client_secret_expires_at" do
      server = ClientStores.start_registration_server!(client_secret_expires_in: 2)
      discovery = ClientStores.discovery!(server)
      store = ClientStores.start_store!(:ets)

      assert {:ok, first} = obtain(discovery, store: store, expiry_skew: 0)
      assert is_integer(first.client_secret_expires_at)
      assert first.client_secret_expires_at > System.os_time(:second)
      assert obtain(discovery, store: store, expiry_skew: 0) == {:ok, first}
      assert RegistrationServer.count(server) == 1

      wait_for_wall_clock(first.client_secret_expires_at)

      assert {:ok, second} = obtain(discovery, store: store, expiry_skew: 0)
      assert RegistrationServer.count(server) == 2
      assert second.client_id != first.client_id
      assert ClientStore.get(store, discovery.issuer, "default") == {:ok, second}
    end

    test "the default skew (30 s) treats a secret expiring in 2 s as expired: every call registers" do
      assert ClientStore.default_expiry_skew() == 30
      server = ClientStores.start_registration_server!(client_secret_expires_in: 2)
      discovery = ClientStores.discovery!(server)
      store = ClientStores.start_store!(:ets)

      ids =
        for n <- 1..3 do
          assert {:ok, client} = obtain(discovery, store: store)
          assert RegistrationServer.count(server) == n
          client.client_id
        end

      assert length(Enum.uniq(ids)) == 3
    end

    test "client_secret_expires_at 0 never expires, whatever the skew" do
      server = ClientStores.start_registration_server!()
      discovery = ClientStores.discovery!(server)
      store = ClientStores.start_store!(:ets)

      assert {:ok, %{client_secret_expires_at: 0} = first} = obtain(discovery, store: store)
      assert obtain(discovery, store: store, expiry_skew: 1_000_000_000) == {:ok, first}
      assert RegistrationServer.count(server) == 1
    end
  end

  describe "client_rejected/2" do
    setup do
      server = ClientStores.start_registration_server!()
      %{server: server, discovery: ClientStores.discovery!(server), store: ClientStores.start_store!(:ets)}
    end

    test "removes the rejected client; the next obtain registers anew; a stale report changes nothing",
         %{server: server, discovery: discovery, store: store} do
      assert {:ok, first} = obtain(discovery, store: store)
      assert ClientRegistration.client_rejected(first, store: store) == :ok
      assert ClientStore.get(store, discovery.issuer, "default") == :error

      assert {:ok, second} = obtain(discovery, store: store)
      assert RegistrationServer.count(server) == 2
      assert second.client_id != first.client_id

      # A late report about the first client: the second stays.
      assert ClientRegistration.client_rejected(first, store: store) == :ok
      assert ClientStore.get(store, discovery.issuer, "default") == {:ok, second}
      assert obtain(discovery, store: store) == {:ok, second}
      assert RegistrationServer.count(server) == 2
    end

    test "only the given client_key is touched", %{server: server, discovery: discovery, store: store} do
      assert {:ok, a} = obtain(discovery, store: store, client_key: "a")
      assert {:ok, b} = obtain(discovery, store: store, client_key: "b")

      # Reported under the wrong key: nothing matches, nothing goes.
      assert ClientRegistration.client_rejected(a, store: store, client_key: "b") == :ok
      assert ClientRegistration.client_rejected(a, store: store) == :ok
      assert ClientStore.get(store, discovery.issuer, "a") == {:ok, a}
      assert ClientStore.get(store, discovery.issuer, "b") == {:ok, b}

      assert ClientRegistration.client_rejected(a, store: store, client_key: "a") == :ok
      assert ClientStore.get(store, discovery.issuer, "a") == :error
      assert ClientStore.get(store, discovery.issuer, "b") == {:ok, b}

      assert {:ok, a2} = obtain(discovery, store: store, client_key: "a")
      assert a2.client_id != a.client_id
      assert obtain(discovery, store: store, client_key: "b") == {:ok, b}
      assert RegistrationServer.count(server) == 3
    end
  end

  describe "RFC 7592 through the store" do
    test "update_client_information/5 stores the rotated registration_access_token before returning" do
      server = ClientStores.start_registration_server!(rotate_registration_access_token: true)
      discovery = ClientStores.discovery!(server)
      store = ClientStores.start_store!(:ets)
      issuer = discovery.issuer

      assert {:ok, first} = obtain(discovery, store: store)
      old_token = first.registration_access_token

      assert {:ok, updated} =
               ClientStore.update_client_information(store, issuer, "default", %{client_name: "Renamed"})

      assert updated.client_name == "Renamed"
      assert updated.client_id == first.client_id
      assert updated.issuer == issuer
      assert updated.registration_method == :dynamic
      new_token = updated.registration_access_token
      assert is_binary(new_token) and new_token != old_token

      assert ClientStore.get(store, issuer, "default") == {:ok, updated}

      uri = first.registration_client_uri

      assert {:error, {:registration_error, 401, %{"error" => "invalid_token"}}} =
               ClientRegistration.get_client_information(uri, old_token)

      assert {:ok, %{client_name: "Renamed"}} = ClientRegistration.get_client_information(uri, new_token)

      # get_client_information/4 reads with the stored (new) token, and stores what it read.
      assert {:ok, read} = ClientStore.get_client_information(store, issuer, "default")
      assert read.client_name == "Renamed"
      assert read.registration_access_token == new_token
      assert ClientStore.get(store, issuer, "default") == {:ok, read}

      # A second update rotates again, and the stored client follows.
      assert {:ok, again} =
               ClientStore.update_client_information(store, issuer, "default", %{client_name: "Again"})

      assert again.registration_access_token not in [old_token, new_token]
      assert ClientStore.get(store, issuer, "default") == {:ok, again}
      assert obtain(discovery, store: store) == {:ok, again}
      assert RegistrationServer.count(server) == 1
    end

    test "get_client_information/4 stores a token rotated on read (RFC 7592 §2.1) before returning" do
      store = ClientStores.start_store!(:ets)
      issuer = "http://issuer.test"
      test = self()

      fixture =
        FixtureServer.start!(fn request ->
          send(test, {:authorization, List.keyfind(request.headers, "authorization", 0)})
          {"host", authority} = List.keyfind(request.headers, "host", 0)

          {:respond, 200, [{"content-type", "application/json"}],
           JSON.encode!(%{
             "client_id" => "c1",
             "client_secret" => "secret-2",
             "client_secret_expires_at" => 0,
             "registration_access_token" => "token-2",
             "registration_client_uri" => "http://#{authority}/register/c1",
             "client_name" => "Read",
             "redirect_uris" => ["http://127.0.0.1:8080/callback"]
           })}
        end)

      stored = %{
        client_id: "c1",
        client_secret: "secret-1",
        client_secret_expires_at: 0,
        registration_access_token: "token-1",
        registration_client_uri: FixtureServer.url(fixture, "/register/c1"),
        redirect_uris: ["http://127.0.0.1:8080/callback"],
        token_endpoint_auth_method: "client_secret_basic",
        issuer: issuer,
        registration_method: :dynamic
      }

      :ok = ClientStore.put(store, issuer, "default", stored)

      assert {:ok, read} = ClientStore.get_client_information(store, issuer, "default")
      assert_received {:authorization, {"authorization", "Bearer token-1"}}
      assert read.registration_access_token == "token-2"
      assert read.client_secret == "secret-2"
      assert read.issuer == issuer
      assert read.registration_method == :dynamic
      assert ClientStore.get(store, issuer, "default") == {:ok, read}

      # The next call authenticates with the rotated token.
      assert {:ok, _} = ClientStore.get_client_information(store, issuer, "default")
      assert_received {:authorization, {"authorization", "Bearer token-2"}}
    end

    test "an update refused after its read rotated the token: the rotated credentials are stored, the error returned" do
      store = ClientStores.start_store!(:ets)
      issuer = "http://issuer.test"

      rotated = %{
        "client_id" => "c1",
        "client_secret" => "secret-2",
        "client_secret_expires_at" => 0,
        "registration_access_token" => "token-2",
        "registration_client_uri" => "http://127.0.0.1/register/c1",
        "client_name" => "Old",
        "redirect_uris" => ["http://127.0.0.1:8080/callback"]
      }

      refusal = %{"error" => "invalid_client_metadata", "error_description" => "no"}

      fixture =
        FixtureServer.start!([
          {:respond, 200, [{"content-type", "application/json"}], JSON.encode!(rotated)},
          {:respond, 400, [{"content-type", "application/json"}], JSON.encode!(refusal)}
        ])

      :ok =
        ClientStore.put(store, issuer, "default", %{
          client_id: "c1",
          client_secret: "secret-1",
          registration_access_token: "token-1",
          registration_client_uri: FixtureServer.url(fixture, "/register/c1"),
          issuer: issuer,
          registration_method: :dynamic,
          token_endpoint_auth_method: "client_secret_basic"
        })

      assert {:error, {:credentials_rotated, %RotatedCredentials{client: client}, reason} = error} =
               ClientStore.update_client_information(store, issuer, "default", %{client_name: "New"})

      assert reason == {:registration_error, 400, refusal}
      assert client.registration_access_token == "token-2"
      assert client.issuer == issuer

      assert {:ok, %{registration_access_token: "token-2", client_secret: "secret-2"}} =
               ClientStore.get(store, issuer, "default")

      sentence = ClientRegistration.format_error(error)
      for secret <- ["token-1", "token-2", "secret-1", "secret-2"], do: refute(sentence =~ secret)
    end

    test "delete_client/4 deletes at the server and from the store" do
      server = ClientStores.start_registration_server!()
      discovery = ClientStores.discovery!(server)
      store = ClientStores.start_store!(:ets)
      issuer = discovery.issuer

      assert {:ok, client} = obtain(discovery, store: store)
      assert {:ok, _} = RegistrationServer.lookup(server, client.client_id)

      assert ClientStore.delete_client(store, issuer, "default") == :ok
      assert RegistrationServer.count(server) == 0
      assert ClientStore.get(store, issuer, "default") == :error

      assert {:error, {:registration_error, 401, _}} =
               ClientRegistration.get_client_information(
                 client.registration_client_uri,
                 client.registration_access_token
               )

      assert ClientStore.delete_client(store, issuer, "default") ==
               {:error, {:client_store, ~s(no client is stored for "default" at #{issuer})}}

      assert {:ok, again} = obtain(discovery, store: store)
      assert again.client_id != client.client_id
      assert RegistrationServer.count(server) == 1
    end

    test "management of a client without RFC 7592 credentials is a store error" do
      store = ClientStores.start_store!(:ets)
      issuer = "http://issuer.test"
      :ok = ClientStore.put(store, issuer, "k", %{client_id: "c", issuer: issuer, client_secret: "s3cret"})

      assert {:error, {:client_store, message}} = ClientStore.get_client_information(store, issuer, "k")

      assert message ==
               ~s(the client stored for "k" at #{issuer} has no registration_client_uri and registration_access_token ) <>
                 "(RFC 7592 management is not available for it)"

      assert ClientStore.get_client_information(store, issuer, "none") ==
               {:error, {:client_store, ~s(no client is stored for "none" at #{issuer})}}
    end
  end

  for kind <- ClientStores.kinds() do
    describe "#{kind}: processes at once" do
      @kind kind

      test "200 processes calling obtain_client/3 together: 1 registration, 1 client_id" do
        server = ClientStores.start_registration_server!()
        discovery = ClientStores.discovery!(server)
        store = ClientStores.start_store!(@kind)

        results = ClientStores.all_at_once(200, fn -> obtain(discovery, store: store, timeout: 30_000) end)

        assert RegistrationServer.count(server) == 1
        assert length(results) == 200
        assert [{:ok, client}] = Enum.uniq(results)
        assert ClientStore.get(store, discovery.issuer, "default") == {:ok, client}
      end

      test "200 processes over 4 client keys: 4 registrations, one per key" do
        server = ClientStores.start_registration_server!()
        discovery = ClientStores.discovery!(server)
        store = ClientStores.start_store!(@kind)
        keys = ~w(k0 k1 k2 k3)

        results =
          ClientStores.all_at_once(200, fn ->
            key = Enum.random(keys)
            {key, obtain(discovery, store: store, client_key: key, timeout: 30_000)}
          end)

        by_key = Enum.group_by(results, &elem(&1, 0), &elem(&1, 1))
        assert RegistrationServer.count(server) == map_size(by_key)

        for {key, key_results} <- by_key do
          assert [{:ok, client}] = Enum.uniq(key_results)
          assert ClientStore.get(store, discovery.issuer, key) == {:ok, client}
        end
      end

      test "the lock is per issuer and key: a registration held open at A blocks neither B nor another key at A" do
        store = ClientStores.start_store!(@kind)
        {held_server, base, held} = ClientStores.holding_authorization_server!()
        server = ClientStores.start_registration_server!()
        discovery = ClientStores.discovery!(server)

        task = Task.async(fn -> obtain(held, [store: store], metadata(%{client_name: "Held"})) end)
        assert_receive {:registering, ^base, connection, 1}, 10_000

        # B, while A's registration is in flight.
        assert {:ok, b} = obtain(discovery, store: store)
        assert RegistrationServer.count(server) == 1
        assert b.issuer == discovery.issuer

        # Another key at A.
        assert {:ok, %{client_id: "quick-2"}} = obtain(held, store: store, client_key: "other")
        assert Task.yield(task, 0) == nil

        send(connection, :release)
        assert {:ok, a} = Task.await(task, 10_000)
        assert a.client_id == "held-1"
        assert a.issuer == base
        assert length(ClientStores.registrations(held_server)) == 2
        assert ClientStore.get(store, base, "default") == {:ok, a}

        assert obtain(held, [store: store], metadata(%{client_name: "Held"})) == {:ok, a}
        assert length(ClientStores.registrations(held_server)) == 2
      end

      test "a waiter whose :timeout passes gets {:request_failed, :timeout}; the holder's registration completes and is stored" do
        store = ClientStores.start_store!(@kind)
        {held_server, base, held} = ClientStores.holding_authorization_server!()
        held_metadata = metadata(%{client_name: "Held"})

        holder = Task.async(fn -> obtain(held, [store: store], held_metadata) end)
        assert_receive {:registering, ^base, connection, 1}, 10_000

        started = System.monotonic_time(:millisecond)

        assert obtain(held, [store: store, timeout: 300], held_metadata) ==
                 {:error, {:request_failed, :timeout}}

        assert System.monotonic_time(:millisecond) - started >= 300
        assert Task.yield(holder, 0) == nil

        send(connection, :release)
        assert {:ok, %{client_id: "held-1"} = client} = Task.await(holder, 10_000)
        assert ClientStore.get(store, base, "default") == {:ok, client}
        assert obtain(held, [store: store], held_metadata) == {:ok, client}
        assert length(ClientStores.registrations(held_server)) == 1
      end
    end
  end

  test "a registration that cannot be stored is still returned, and the warning holds no secret" do
    store = ClientStores.start_store!(:dets)
    {_held_server, base, held} = ClientStores.holding_authorization_server!()

    task = Task.async(fn -> obtain(held, [store: store], metadata(%{client_name: "Held"})) end)
    assert_receive {:registering, ^base, connection, 1}, 10_000
    stop_supervised!(ClientStores.child_id(store))

    log =
      capture_log(fn ->
        send(connection, :release)
        assert {:ok, %{client_id: "held-1", client_secret: "held-secret-1"}} = Task.await(task, 10_000)
        Logger.flush()
      end)

    assert log =~
             "client held-1 of #{base} (as the server handed it out) could not be stored: the client store failed: "

    refute log =~ "held-secret-1"
    refute log =~ "held-token-1"
  end
end
