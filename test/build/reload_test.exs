defmodule ExMCP.Build.ReloadTest do
  # Reloading ExMCP.Authorization.Native (a code upgrade, `r/1` in IEx) runs
  # the NIF's upgrade callback (erl_nif `upgrade`): the new module instance
  # gets the same library, the tokio runtime and running servers carry on,
  # and the resource types move to the new instance. A reload whose library
  # cannot load fails visibly and leaves the running version in place.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias ExMCP.Authorization.{ClientRegistration, Native, RegistrationServer}

  defp register(server) do
    ClientRegistration.register_client(%{
      registration_endpoint: RegistrationServer.registration_endpoint(server),
      client_name: "Reloaded",
      redirect_uris: ["http://localhost:4000/cb"]
    })
  end

  defp reload! do
    :code.purge(Native)
    assert {:module, Native} = :code.load_file(Native)
  end

  test "reloading Native three times keeps the runtime, servers and calls working" do
    server = start_supervised!({RegistrationServer, port: 0})
    assert {:ok, _} = register(server)

    for round <- 1..3 do
      reload!()
      # A server started before the reload still answers, through the new
      # module instance and the same runtime.
      assert {:ok, %{client_id: _}} = register(server)
      assert RegistrationServer.count(server) == round + 1

      # Resources made and freed under the new instance (Pending for each
      # call; a server resource) use the taken-over types; the old instance
      # is purged on the next round, which frees any type left behind.
      other = start_supervised!({RegistrationServer, port: 0}, id: {:other, round})
      assert {:ok, _} = register(other)
      :ok = stop_supervised({:other, round})
      :erlang.garbage_collect()
    end
  end

  @tag :tmp_dir
  test "a file lock taken before reloads is released by the taken-over type's destructor", %{tmp_dir: dir} do
    # ClientStore.DETS holds a FileLock resource (flock) for as long as its
    # process lives; after three reloads, stopping it must still run the
    # destructor (through the type the new instance took over) and free the
    # lock for the next store.
    alias ExMCP.Authorization.ClientStore
    path = Path.join(dir, "clients.dets")
    store = start_supervised!({ClientStore.DETS, name: :reload_lock_store, path: path})

    for _ <- 1..3, do: reload!()

    assert {:error, {:client_store, message}} =
             ClientStore.DETS.start_link(name: :reload_lock_other, path: path)

    assert message =~ "in use by another client store"

    ref = Process.monitor(store)
    :ok = stop_supervised({ClientStore.DETS, :reload_lock_store})
    assert_receive {:DOWN, ^ref, :process, _, _}
    # The resource is freed when the last term referring to it is collected.
    :erlang.garbage_collect()

    assert {:ok, pid} = ClientStore.DETS.start_link(name: :reload_lock_other, path: path)
    GenServer.stop(pid)
  end

  test "a call in flight during the reload gets its answer (same runtime, same pending resource)" do
    test = self()

    server =
      ExMCP.Test.FixtureServer.start!(fn _request ->
        send(test, {:arrived, self()})
        receive do: (:answer -> :ok)
        {:respond, 201, [{"content-type", "application/json"}], ~s({"client_id":"across-reload"})}
      end)

    call =
      Task.async(fn ->
        ClientRegistration.register_client(ExMCP.Test.FixtureServer.registration_request(server))
      end)

    assert_receive {:arrived, connection}, 5_000

    reload!()
    assert Native.in_flight() == 1
    send(connection, :answer)

    assert {:ok, %{client_id: "across-reload"}} = Task.await(call)
  end

  test "a reload whose NIF cannot load is an error, and the running version stays" do
    server = start_supervised!({RegistrationServer, port: 0})
    # The load callback refuses a worker thread count that is not a
    # non-negative integer: a reload that fails inside the library.
    Application.put_env(:ex_mcp_registration, :runtime_worker_threads, :many)

    try do
      :code.purge(Native)

      log =
        capture_log(fn ->
          assert {:error, :on_load_failure} = :code.load_file(Native)
        end)

      assert log =~ "the ExMCP registration NIF could not be loaded"
      assert log =~ "upgrade"
    after
      Application.delete_env(:ex_mcp_registration, :runtime_worker_threads)
    end

    # The running version and its NIF are untouched.
    assert {:ok, _} = register(server)
    reload!()
    assert {:ok, _} = register(server)
  end
end
