defmodule ExMCP.Authorization.ClientStoreTest do
  # The store API (get/put/delete/list, get_or_register, the argument
  # checks and the errors) run against each built-in adapter: ETS, DETS
  # and Mnesia with a ram_copies table on this node. The same cases run
  # for the three; only the "not running" message differs.
  use ExUnit.Case, async: true

  import ExMCP.Test.Leaks, only: [refute_leaks: 2]

  alias ExMCP.Authorization.ClientStore
  alias ExMCP.Test.ClientStores

  @issuer "https://auth.example.com"
  @other_issuer "https://other.example.com"

  defp client(overrides \\ %{}) do
    Map.merge(
      %{
        client_id: "client-1",
        client_secret: "secret-value-1",
        client_secret_expires_at: 0,
        client_id_issued_at: 1_700_000_000,
        registration_access_token: "registration-token-1",
        registration_client_uri: @issuer <> "/register/client-1",
        client_name: "Café 日本",
        redirect_uris: ["http://127.0.0.1:8080/callback"],
        grant_types: ["authorization_code"],
        response_types: ["code"],
        scope: "mcp:read",
        token_endpoint_auth_method: "client_secret_basic",
        issuer: @issuer,
        registration_method: :dynamic
      },
      overrides
    )
  end

  for kind <- ClientStores.kinds() do
    describe "#{kind}" do
      @kind kind

      setup do
        %{store: ClientStores.start_store!(@kind)}
      end

      test "get/put/delete/list round trip of a whole client, credentials included", %{store: store} do
        assert ClientStore.get(store, @issuer, "default") == :error
        assert ClientStore.list(store) == {:ok, []}

        stored = client()
        assert ClientStore.put(store, @issuer, "default", stored) == :ok
        assert ClientStore.get(store, @issuer, "default") == {:ok, stored}

        {:ok, fetched} = ClientStore.get(store, @issuer, "default")
        assert fetched.client_secret == "secret-value-1"
        assert fetched.registration_access_token == "registration-token-1"

        second = client(%{client_id: "client-2", client_secret: "secret-value-2"})
        other = client(%{client_id: "client-3", issuer: @other_issuer})
        assert ClientStore.put(store, @issuer, "second", second) == :ok
        assert ClientStore.put(store, @other_issuer, "default", other) == :ok

        assert ClientStore.list(store) ==
                 {:ok,
                  [
                    {{@issuer, "default"}, stored},
                    {{@issuer, "second"}, second},
                    {{@other_issuer, "default"}, other}
                  ]}

        # put replaces
        replaced = client(%{client_id: "client-4", registration_access_token: "registration-token-4"})
        assert ClientStore.put(store, @issuer, "default", replaced) == :ok
        assert ClientStore.get(store, @issuer, "default") == {:ok, replaced}

        assert ClientStore.delete(store, @issuer, "default") == :ok
        assert ClientStore.get(store, @issuer, "default") == :error
        assert ClientStore.delete(store, @issuer, "default") == :ok, "deleting nothing is :ok"

        assert ClientStore.list(store) ==
                 {:ok, [{{@issuer, "second"}, second}, {{@other_issuer, "default"}, other}]}
      end

      test "put refuses a client whose :issuer is not the key's issuer, and stores nothing", %{store: store} do
        foreign = client(%{issuer: @other_issuer})

        error = assert_raise ArgumentError, fn -> ClientStore.put(store, @issuer, "default", foreign) end

        assert Exception.message(error) ==
                 ~s(the client's :issuer is not "https://auth.example.com": credentials are bound to their issuer)

        refute Exception.message(error) =~ "secret-value-1"
        refute Exception.message(error) =~ "registration-token-1"

        without_issuer = Map.delete(client(), :issuer)

        assert_raise ArgumentError,
                     "the client has no :issuer; store clients from obtain_client/3, which binds them to theirs",
                     fn -> ClientStore.put(store, @issuer, "default", without_issuer) end

        error =
          assert_raise ArgumentError, fn ->
            ClientStore.put(store, @issuer, "default", Map.delete(client(), :client_id))
          end

        assert Exception.message(error) ==
                 "a stored client must be a map with a :client_id string and an :issuer"

        assert_raise ArgumentError, fn -> ClientStore.put(store, @issuer, "default", "not a map") end
        assert ClientStore.list(store) == {:ok, []}
      end

      test "bad issuers and client keys raise ArgumentError naming the problem", %{store: store} do
        for issuer <- ["", nil, :issuer, 42] do
          error = assert_raise ArgumentError, fn -> ClientStore.get(store, issuer, "default") end
          assert Exception.message(error) =~ "the issuer must be a non-empty URL string, got: "
        end

        for key <- ["", nil, :default, <<0xFF, 0xFE>>, String.duplicate("k", 1025)] do
          for call <- [
                fn -> ClientStore.get(store, @issuer, key) end,
                fn -> ClientStore.put(store, @issuer, key, client()) end,
                fn -> ClientStore.delete(store, @issuer, key) end
              ] do
            error = assert_raise ArgumentError, call

            assert Exception.message(error) =~
                     "the client key must be a non-empty UTF-8 string of at most 1024 bytes, got: "
          end
        end

        # 1024 bytes is the limit, included
        assert ClientStore.get(store, @issuer, String.duplicate("k", 1024)) == :error
        assert ClientStore.list(store) == {:ok, []}
      end

      test "a store that is not running is {:error, {:client_store, message}}", %{store: {adapter, _}} do
        missing = {adapter, ClientStores.unique_name(:missing)}
        {_, name} = missing

        expected =
          case @kind do
            :mnesia -> "the Mnesia table #{inspect(name)} does not exist here: create it with create_table/2"
            _ -> "the client store #{inspect(name)} (#{inspect(adapter)}) is not running"
          end

        assert ClientStore.get(missing, @issuer, "default") == {:error, {:client_store, expected}}
        assert ClientStore.put(missing, @issuer, "default", client()) == {:error, {:client_store, expected}}
        assert ClientStore.delete(missing, @issuer, "default") == {:error, {:client_store, expected}}
        assert ClientStore.list(missing) == {:error, {:client_store, expected}}

        register = fn -> flunk("no registration without a store") end

        assert {:error, {:client_store, _} = reason} =
                 ClientStore.get_or_register(missing, {@issuer, "default"}, fn _ -> true end, register, 1_000)

        refute_leaks(reason, ["secret-value-1", "registration-token-1"])

        assert refute_leaks({:client_store, expected}, ["secret-value-1"]) ==
                 "the client store failed: " <> expected
      end

      test "a store whose process was stopped: {:error, {:client_store, message}}, and no registration",
           %{store: {adapter, name} = store} do
        :ok = ClientStore.put(store, @issuer, "default", client())
        stop_supervised!(ClientStores.child_id(store))
        register = fn -> flunk("no registration without the store's process") end
        key = {@issuer, "other"}

        case @kind do
          :mnesia ->
            # The table outlives this node's process; the lock does not.
            assert ClientStore.get(store, @issuer, "default") == {:ok, client()}

            assert ClientStore.get_or_register(store, key, fn _ -> true end, register, 1_000) ==
                     {:error,
                      {:client_store,
                       "the lock table #{inspect(:"#{name}.local_leases")} does not exist: is the client store's process running?"}}

          _ ->
            expected =
              {:error,
               {:client_store, "the client store #{inspect(name)} (#{inspect(adapter)}) is not running"}}

            assert ClientStore.get(store, @issuer, "default") == expected
            assert ClientStore.get_or_register(store, key, fn _ -> true end, register, 1_000) == expected
        end
      end

      test "get_or_register: one registration, stored, then read back; invalid entries are replaced",
           %{store: store} do
        test = self()
        key = {@issuer, "default"}

        register = fn ->
          send(test, :registered)
          {:ok, client()}
        end

        assert ClientStore.get_or_register(store, key, fn _ -> true end, register, 5_000) == {:ok, client()}
        assert_received :registered
        assert ClientStore.get(store, @issuer, "default") == {:ok, client()}

        assert ClientStore.get_or_register(store, key, fn _ -> true end, register, 5_000) == {:ok, client()}
        refute_received :registered

        newer = client(%{client_id: "client-9"})
        valid? = fn stored -> stored.client_id == "client-9" end
        assert ClientStore.get_or_register(store, key, valid?, fn -> {:ok, newer} end, 5_000) == {:ok, newer}
        assert ClientStore.get(store, @issuer, "default") == {:ok, newer}

        # A failed registration stores nothing and is returned as it is.
        assert ClientStore.get_or_register(
                 store,
                 {@issuer, "k2"},
                 fn _ -> true end,
                 fn -> {:error, :nope} end,
                 5_000
               ) ==
                 {:error, :nope}

        assert ClientStore.get(store, @issuer, "k2") == :error
      end

      test "what fails under the lock is reported without its secrets, and releases the lock",
           %{store: store} do
        key = {@issuer, "default"}
        secrets = ["s3cr3t-in-raise", "s3cr3t-in-throw", "s3cr3t-in-exit"]

        raised = fn -> raise "s3cr3t-in-raise" end
        thrown = fn -> throw({:token, "s3cr3t-in-throw"}) end
        exited = fn -> exit({:token, "s3cr3t-in-exit"}) end
        killed = fn -> Process.exit(self(), :kill) end

        assert {:error, {:client_store, "the work under the store's lock raised RuntimeError"} = r1} =
                 ClientStore.get_or_register(store, key, fn _ -> true end, raised, 5_000)

        assert {:error, {:client_store, "the work under the store's lock failed (throw)"} = r2} =
                 ClientStore.get_or_register(store, key, fn _ -> true end, thrown, 5_000)

        assert {:error, {:client_store, "the work under the store's lock failed (exit)"} = r3} =
                 ClientStore.get_or_register(store, key, fn _ -> true end, exited, 5_000)

        assert {:error, {:client_store, "the client store's worker exited: :killed"} = r4} =
                 ClientStore.get_or_register(store, key, fn _ -> true end, killed, 5_000)

        for reason <- [r1, r2, r3, r4], do: refute_leaks(reason, secrets)

        # None of them left the key locked: the next registration runs at once.
        assert ClientStore.get_or_register(store, key, fn _ -> true end, fn -> {:ok, client()} end, 1_000) ==
                 {:ok, client()}
      end
    end
  end

  describe "store arguments" do
    test "a store that is not {adapter, name} of a store adapter raises ArgumentError naming it" do
      error = assert_raise ArgumentError, fn -> ClientStore.get(:clients, @issuer, "default") end

      assert Exception.message(error) ==
               "a client store is {adapter, name}, such as {ExMCP.Authorization.ClientStore.ETS, MyApp.Clients}, got: :clients"

      error = assert_raise ArgumentError, fn -> ClientStore.list({String, :clients}) end

      assert Exception.message(error) ==
               "String is not a client store adapter (see ExMCP.Authorization.ClientStore)"

      error = assert_raise ArgumentError, fn -> ClientStore.list({NoSuch.Adapter, :clients}) end

      assert Exception.message(error) ==
               "NoSuch.Adapter is not a client store adapter (see ExMCP.Authorization.ClientStore)"

      error = assert_raise ArgumentError, fn -> ClientStore.delete({"ETS", :clients}, @issuer, "default") end
      assert Exception.message(error) =~ ~s(a client store is {adapter, name}, such as)
      assert Exception.message(error) =~ ~s(got: {"ETS", :clients})
    end

    test "start_link options are checked in the caller" do
      error = assert_raise ArgumentError, fn -> ClientStore.ETS.start_link([]) end
      assert Exception.message(error) == "ExMCP.Authorization.ClientStore.ETS: option :name is required"

      error =
        assert_raise ArgumentError, fn -> ClientStore.DETS.start_link(name: "clients", path: "/tmp/x") end

      assert Exception.message(error) ==
               ~s(ExMCP.Authorization.ClientStore.DETS: option :name must be an atom, got: "clients")

      error = assert_raise ArgumentError, fn -> ClientStore.DETS.start_link(name: :clients) end
      assert Exception.message(error) == "ExMCP.Authorization.ClientStore.DETS: option :path is required"

      error = assert_raise ArgumentError, fn -> ClientStore.Mnesia.start_link(table: :t, copies: :disk) end
      assert Exception.message(error) == "option :copies must be :ram_copies or :disc_copies, got: :disk"

      error = assert_raise ArgumentError, fn -> ClientStore.Mnesia.start_link(copies: :ram_copies) end

      assert Exception.message(error) ==
               "ExMCP.Authorization.ClientStore.Mnesia: option :table (an atom) is required"
    end

    test "Mnesia: an abort that carries the record (secrets included) is reported by its shape only" do
      ClientStores.ensure_mnesia!()
      # A table of another shape under the store's name: writing the store's
      # record aborts with {:bad_type, record}.
      table = ClientStores.unique_name(:mnesia_bad)
      {:atomic, :ok} = :mnesia.create_table(table, attributes: [:key, :a, :b])
      on_exit(fn -> :mnesia.delete_table(table) end)

      assert {:error, {:client_store, message} = reason} =
               ClientStore.put({ClientStore.Mnesia, table}, @issuer, "default", client())

      assert message == "Mnesia failed on #{inspect(table)}: :bad_type"
      refute_leaks(reason, ["secret-value-1", "registration-token-1"])
    end
  end
end
