defmodule ExMCP.ClientStoreFileLockTest do
  # DETS does not stop two OS processes from opening one file, and two
  # writers corrupt it. ClientStore.DETS takes an exclusive flock(2) on the
  # file first (native/ex_mcp_nif/src/file_lock.rs), so a second VM (a second
  # `mix mcp.register`) is refused with a clear error while the first holds
  # it, and gets the file once the first has stopped.
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.ClientStore

  @moduletag :tmp_dir

  # A second VM, with this build's code paths, that opens a store on `path`
  # and prints what start_link/1 returned.
  defp open_in_another_vm(path) do
    paths = Enum.flat_map(:code.get_path(), &["-pa", to_string(&1)])

    script = """
    {:ok, _} = Application.ensure_all_started(:ex_mcp_registration)
    case ExMCP.Authorization.ClientStore.DETS.start_link(name: :other_vm, path: #{inspect(path)}) do
      {:ok, _} -> IO.puts("opened")
      {:error, {:client_store, message}} -> IO.puts("refused: " <> message)
    end
    """

    {output, 0} = System.cmd("elixir", paths ++ ["-e", script], stderr_to_stdout: true)
    output
  end

  test "a second OS process cannot open a file a store holds, and can once it is stopped", %{tmp_dir: dir} do
    path = Path.join(dir, "clients.dets")
    store = start_supervised!({ClientStore.DETS, name: :file_lock_store, path: path})

    assert open_in_another_vm(path) =~
             "refused: #{path} is in use by another client store, in this VM or another OS process"

    ref = Process.monitor(store)
    :ok = stop_supervised({ClientStore.DETS, :file_lock_store})
    assert_receive {:DOWN, ^ref, :process, _, _}

    assert open_in_another_vm(path) =~ "opened"
  end

  test "a second store on the same file in this VM is refused", %{tmp_dir: dir} do
    path = Path.join(dir, "clients.dets")
    start_supervised!({ClientStore.DETS, name: :file_lock_first, path: path})

    assert {:error, {:client_store, message}} =
             ClientStore.DETS.start_link(name: :file_lock_second, path: path)

    assert message ==
             "#{path} is in use by another client store, in this VM or another OS process (DETS allows one at a time)"
  end
end
