defmodule ExMCP.Authorization.ClientStoreRestartTest do
  # The DETS store's file (its mode, what it refuses and how) and what
  # survives a restart: of the store's process, and of the whole VM, killed
  # with SIGKILL in the middle of a write. The registrations are counted on
  # the embedded RegistrationServer, which this test's VM runs throughout.
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.{ClientRegistration, ClientStore, RegistrationServer}
  alias ExMCP.Authorization.ClientStore.DETS
  alias ExMCP.Test.{ClientStores, OSProcess}

  @issuer "https://auth.example.com"

  defp mode(path), do: Bitwise.band(File.stat!(path).mode, 0o777)

  # A DETS file holding client "c1", its store stopped: the path and the
  # store's name, to open it again.
  defp file_with_one_client do
    path = Path.join(ClientStores.tmp_dir!(), "clients.dets")
    name = ClientStores.unique_name(:dets)
    store = ClientStores.start_store!(:dets, name: name, path: path)
    :ok = ClientStore.put(store, @issuer, "default", client("c1"))
    stop_supervised!(ClientStores.child_id(store))
    {path, name}
  end

  defp client(id),
    do: %{
      client_id: id,
      client_secret: "dets-secret-#{id}",
      registration_access_token: "dets-token-#{id}",
      issuer: @issuer,
      registration_method: :dynamic
    }

  # start_link/1 from a process that traps exits, so that the exit signal a
  # linked caller receives is seen: {result, exit reason}.
  defp start_from_linked_caller(opts) do
    test = self()

    {pid, monitor} =
      spawn_monitor(fn ->
        Process.flag(:trap_exit, true)
        result = DETS.start_link(opts)

        reason =
          receive do
            {:EXIT, _, reason} -> reason
          after
            5_000 -> :no_exit_signal
          end

        send(test, {:started, self(), result, reason})
      end)

    assert_receive {:started, ^pid, result, reason}, 10_000
    assert_receive {:DOWN, ^monitor, :process, ^pid, :normal}
    {result, reason}
  end

  describe "the DETS file" do
    test "is created with mode 0600, with its missing directories, and no temporary file is left" do
      root = ClientStores.tmp_dir!()
      dir = Path.join([root, "a", "b"])
      path = Path.join(dir, "clients.dets")
      store = ClientStores.start_store!(:dets, path: path)

      assert File.dir?(dir)
      assert mode(path) == 0o600
      # The file and the empty lock file beside it (file_lock.rs).
      assert File.ls!(dir) == ["clients.dets", "clients.dets.lock"]
      assert mode(path <> ".lock") == 0o600

      :ok = ClientStore.put(store, @issuer, "default", client("c1"))
      assert mode(path) == 0o600
    end

    test "an existing file readable by others (0644) is set to 0600 when opened, and its clients are kept" do
      {path, name} = file_with_one_client()

      File.chmod!(path, 0o644)
      assert mode(path) == 0o644

      store = ClientStores.start_store!(:dets, name: name, path: path)
      assert mode(path) == 0o600
      assert ClientStore.get(store, @issuer, "default") == {:ok, client("c1")}
    end

    test "a file DETS has to repair (its writer died mid-write) is repaired, keeps its clients, and stays 0600" do
      {path, name} = file_with_one_client()

      # Open the file directly, write without closing, and kill the table's
      # process: the file is left marked as not properly closed.
      {:ok, table} = :dets.open_file(make_ref(), file: String.to_charlist(path), type: :set)
      :ok = :dets.insert(table, {{@issuer, "other"}, client("c2")})
      dets_pid = :dets.info(table, :pid)
      monitor = Process.monitor(dets_pid)
      Process.exit(dets_pid, :kill)
      assert_receive {:DOWN, ^monitor, :process, ^dets_pid, :killed}

      assert {:error, {:needs_repair, _}} =
               :dets.open_file(make_ref(), file: String.to_charlist(path), access: :read, repair: false)

      # DETS prints "not properly closed, repairing" on the console, outside Logger.
      ClientStores.start_store!(:dets, name: name, path: path)

      assert ClientStore.get({DETS, name}, @issuer, "default") == {:ok, client("c1")}
      assert mode(path) == 0o600
    end

    for {label, bytes} <- [
          {"garbage bytes", "garbage bytes, not a DETS file\n"},
          {"random bytes", :random},
          {"an empty file", ""}
        ] do
      @bytes bytes
      test "#{label}: start_link returns {:error, {:client_store, message}} naming the path; the linked caller lives" do
        path = Path.join(ClientStores.tmp_dir!(), "clients.dets")
        bytes = if @bytes == :random, do: :crypto.strong_rand_bytes(8192), else: @bytes
        File.write!(path, bytes)

        {result, exit_reason} = start_from_linked_caller(name: ClientStores.unique_name(:dets), path: path)

        assert result ==
                 {:error,
                  {:client_store,
                   "#{path} is not a DETS file (corrupt, or another format); move it away or choose another :path"}}

        # A :normal exit signal does not take down a linked caller that does not trap exits.
        assert exit_reason == :normal
        assert File.read!(path) == bytes, "the file is left as it was"
      end
    end

    test "a directory at the path is refused, naming it" do
      path = Path.join(ClientStores.tmp_dir!(), "clients.dets")
      File.mkdir_p!(path)

      assert start_from_linked_caller(name: ClientStores.unique_name(:dets), path: path) ==
               {{:error, {:client_store, "#{path} is not a regular file (it is a directory)"}}, :normal}
    end

    test "a symbolic link at the path is refused, naming it" do
      dir = ClientStores.tmp_dir!()
      target = Path.join(dir, "elsewhere.dets")
      path = Path.join(dir, "clients.dets")
      File.ln_s!(target, path)

      assert start_from_linked_caller(name: ClientStores.unique_name(:dets), path: path) ==
               {{:error, {:client_store, "#{path} is not a regular file (it is a symlink)"}}, :normal}

      refute File.exists?(target)
    end

    test "a path that cannot be reached (its parent is a regular file) is refused, naming it" do
      # The tests may run as root, for whom mode 000 blocks nothing: a
      # parent that is a file blocks everyone.
      dir = ClientStores.tmp_dir!()
      File.write!(Path.join(dir, "file"), "x")

      for path <- [Path.join([dir, "file", "clients.dets"]), Path.join([dir, "file", "sub", "clients.dets"])] do
        assert start_from_linked_caller(name: ClientStores.unique_name(:dets), path: path) ==
                 {{:error, {:client_store, "cannot use #{path}: not a directory"}}, :normal}
      end
    end

    test "a relative path is made absolute" do
      dir = ClientStores.tmp_dir!()
      relative = Path.relative_to(Path.join(dir, "clients.dets"), File.cwd!())
      store = ClientStores.start_store!(:dets, path: relative)
      :ok = ClientStore.put(store, @issuer, "default", client("c1"))
      assert mode(Path.join(dir, "clients.dets")) == 0o600
    end
  end

  describe "restarts" do
    test "the DETS store's process stopped and started again on the same file: no new registration" do
      server = ClientStores.start_registration_server!()
      discovery = ClientStores.discovery!(server)
      path = Path.join(ClientStores.tmp_dir!(), "clients.dets")
      name = ClientStores.unique_name(:dets)
      store = {DETS, name}

      # Not supervised: nothing restarts it behind the test's back.
      {:ok, pid} = DETS.start_link(name: name, path: path)
      assert {:ok, first} = ClientRegistration.obtain_client(discovery, ClientStores.metadata(), store: store)
      assert RegistrationServer.count(server) == 1

      :ok = GenServer.stop(pid)

      assert ClientStore.get(store, discovery.issuer, "default") ==
               {:error,
                {:client_store, "the client store #{inspect(name)} (#{inspect(DETS)}) is not running"}}

      {:ok, pid} = DETS.start_link(name: name, path: path)

      assert ClientRegistration.obtain_client(discovery, ClientStores.metadata(), store: store) ==
               {:ok, first}

      assert RegistrationServer.count(server) == 1
      :ok = GenServer.stop(pid)
    end

    test "the ETS store forgets on restart: the next call registers again" do
      server = ClientStores.start_registration_server!()
      discovery = ClientStores.discovery!(server)
      name = ClientStores.unique_name(:ets)
      store = ClientStores.start_store!(:ets, name: name)

      assert {:ok, first} = ClientRegistration.obtain_client(discovery, ClientStores.metadata(), store: store)
      stop_supervised!(ClientStores.child_id(store))
      store = ClientStores.start_store!(:ets, name: name)

      assert {:ok, second} =
               ClientRegistration.obtain_client(discovery, ClientStores.metadata(), store: store)

      assert second.client_id != first.client_id
      assert RegistrationServer.count(server) == 2
    end

    @vm_script ~S'''
    alias ExMCP.Authorization.{ClientRegistration, ClientStore}
    [path, url, mode] = System.argv()
    {:ok, _} = ClientStore.DETS.start_link(name: :clients, path: path)
    metadata = %{client_name: "Store test", redirect_uris: ["http://127.0.0.1:8080/callback"],
                 token_endpoint_auth_method: "client_secret_basic"}
    {:ok, client} = ClientRegistration.obtain_client(url, metadata, store: {ClientStore.DETS, :clients})

    if mode == "crash" do
      # A write in progress when the VM dies: the file is left not properly closed.
      :ok = :dets.insert({ClientStore.DETS, :clients}, {:unsynced, String.duplicate("x", 4096)})
    end

    IO.puts("pid=#{System.pid()} client_id=#{client.client_id}")

    if mode == "crash" do
      # Wait for SIGKILL from the test.
      Process.sleep(:infinity)
    end
    '''

    @tag timeout: 120_000
    test "a VM killed with SIGKILL mid-write, then a new VM on the same file: no new registration" do
      elixir = System.find_executable("elixir") || flunk("elixir is not on the PATH")
      server = ClientStores.start_registration_server!()
      url = RegistrationServer.resource_url(server)
      path = Path.join(ClientStores.tmp_dir!(), "vm/clients.dets")

      build = Mix.Project.build_path()

      code_paths =
        for dir <- :code.get_path(), dir = List.to_string(dir), String.starts_with?(dir, build), do: dir

      args = Enum.flat_map(code_paths, &["-pa", &1]) ++ ["-e", @vm_script, "--", path, url]

      # First VM: registers, starts an unsynced write, and is killed.
      {port, os_pid} = OSProcess.open(elixir, [{:line, 4096}, :stderr_to_stdout, {:args, args ++ ["crash"]}])
      {:ok, line} = OSProcess.await_line(port, OSProcess.deadline(60_000))
      assert [_, vm_pid, first_id] = Regex.run(~r/^pid=(\d+) client_id=(\S+)$/, line)
      assert vm_pid == Integer.to_string(os_pid), "the OS process killed is the VM itself"
      assert RegistrationServer.count(server) == 1

      OSProcess.signal(os_pid, "KILL")
      assert_receive {^port, {:exit_status, 137}}, 10_000

      # Second VM: DETS repairs the file, and the client is read from it.
      {status, output} = OSProcess.run(elixir, [:stderr_to_stdout, {:args, args ++ ["restart"]}], 60_000)
      assert status == 0, output
      # The repair runs on a copy in a private directory beside the file.
      assert output =~ ~s(dets: file "#{Path.dirname(path)}/.clients.dets.)
      assert output =~ ~s(.tmp/clients.dets" not properly closed, repairing)
      assert [_, _, ^first_id] = Regex.run(~r/pid=(\d+) client_id=(\S+)/, output)
      assert RegistrationServer.count(server) == 1
      assert mode(path) == 0o600

      # And this VM reads the same client from the file.
      store = ClientStores.start_store!(:dets, path: path)

      assert {:ok, %{client_id: ^first_id}} =
               ClientStore.get(store, RegistrationServer.url(server), "default")
    end
  end
end
