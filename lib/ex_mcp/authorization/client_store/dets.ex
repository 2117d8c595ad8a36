defmodule ExMCP.Authorization.ClientStore.DETS do
  @moduledoc """
  A client store in a file: OTP's DETS, owned by a process you supervise.
  It survives restarts of the VM; the Mix tasks use it by default.

      children = [
        {ExMCP.Authorization.ClientStore.DETS, name: MyApp.Clients, path: "/var/lib/my_app/mcp_clients.dets"}
      ]

      ClientRegistration.obtain_client(discovery, metadata,
        store: {ExMCP.Authorization.ClientStore.DETS, MyApp.Clients})

  Options of `start_link/1`:

  | Option | Meaning |
  |---|---|
  | `:name` | Required. An atom: the store's name in the store tuple. |
  | `:path` | Required. The file. Its directory is created if missing. |
  | `:cipher` | Optional. `{module, config}`: encrypt each stored client (see `ExMCP.Authorization.ClientStore.Cipher`). |

  ## The file

  A new file is created inside a fresh directory of mode 0700 next to it,
  given mode 0600, then moved into place: no other user can open it at any
  moment. An existing file readable by others is set back to 0600 when it
  is opened. A file left unclosed by a crash is repaired (DETS rewrites it)
  the same way: on a copy in a private directory, which then replaces it.

  It holds, for each `{issuer, client_key}`, the client map as an Erlang
  term: `client_secret` and `registration_access_token` in clear, like any
  credentials file, unless `:cipher` is set (then the whole client is
  encrypted; the issuer and client key, the record's key, stay readable).
  Protect it as you would a private key, and keep it out of backups you
  would not trust with it. Nothing is logged.

  Every write goes through the store's process and is synced to disk
  (`:dets.sync/1`) before it returns, so a registration is on disk before
  `obtain_client/3` returns it. After a crash, DETS repairs the file when it
  is next opened. Reads are served from a copy in ETS that the store's
  process loads when it opens the file and updates after each write, so a
  cached hit costs what it costs with `ExMCP.Authorization.ClientStore.ETS`.

  A file that is not a DETS file, or cannot be read, makes `start_link/1`
  return `{:error, {:client_store, message}}` naming the file and what is
  wrong, without crashing the caller.

  One store may open a given file at a time: the store takes an exclusive
  OS lock (`flock(2)`) on `<path>.lock` (an empty file it creates beside
  it, mode 0600) before DETS reads it, so a second store, in
  this VM or another OS process (a second `mix mcp.register`), gets
  `{:error, {:client_store, "… is in use by another client store …"}}`
  instead of corrupting it. The lock goes when the store's process exits.
  The lock of `ExMCP.Authorization.ClientStore` covers the processes of the
  VM that has the file open.
  """

  use GenServer

  @behaviour ExMCP.Authorization.ClientStore

  alias ExMCP.Authorization.ClientStore.{Cipher, Lease, Table}
  alias ExMCP.Authorization.Native

  @doc "Opens (or creates) the file and starts the store's owner process."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    name = Table.name!(opts, __MODULE__)

    path =
      case Keyword.fetch(opts, :path) do
        {:ok, path} when is_binary(path) and path != "" ->
          Path.expand(path)

        {:ok, other} ->
          raise ArgumentError,
                "#{inspect(__MODULE__)}: option :path must be a file path, got: #{inspect(other)}"

        :error ->
          raise ArgumentError, "#{inspect(__MODULE__)}: option :path is required"
      end

    cipher = Keyword.get(opts, :cipher)

    :ok = Cipher.check!(cipher, __MODULE__)
    GenServer.start_link(__MODULE__, {name, path, cipher}, name: name)
  end

  @doc false
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts), do: Table.child_spec(__MODULE__, opts)

  @impl GenServer
  def init({name, path, cipher}) do
    Process.flag(:trap_exit, true)

    with {:ok, lock} <- open(name, path),
         :ok <- Table.new(name),
         :ok <- load_copy(name, path) do
      :ok = Cipher.configure({__MODULE__, name}, cipher)
      {:ok, %{name: name, path: path, lock: lock}}
    else
      {:error, message} -> Table.fail_start(message)
    end
  end

  # Reads are served from an ETS copy of the file, laid out as the ETS
  # store's table (ClientStore.Table), so that a cached hit does not queue
  # behind DETS's process. The file lock makes this process the file's only
  # writer, and every write goes through it, file first, so the copy never
  # holds what the file does not.
  defp load_copy(name, path) do
    case :dets.foldl(fn {key, stored}, :ok -> Table.put(name, key, stored, __MODULE__) end, :ok, table(name)) do
      :ok -> :ok
      {:error, reason} -> {:error, "cannot read #{path}: #{inspect(reason, limit: 10)}"}
    end
  end

  @impl GenServer
  def handle_call({:put, key, client}, _from, %{name: name} = state) do
    stored = Cipher.seal({__MODULE__, name}, client)

    {:reply,
     write(name, &:dets.insert(&1, {key, stored}), fn -> Table.put(name, key, stored, __MODULE__) end), state}
  end

  def handle_call({:delete, key}, _from, %{name: name} = state),
    do: {:reply, write(name, &:dets.delete(&1, key), fn -> Table.delete(name, key, __MODULE__) end), state}

  @impl GenServer
  def terminate(_reason, %{name: name}) do
    :ok = Cipher.configure({__MODULE__, name}, nil)
    :dets.close(table(name))
  end

  @impl ExMCP.Authorization.ClientStore
  def get(name, key) do
    case Table.get(name, key, __MODULE__) do
      {:ok, stored} -> Cipher.open({__MODULE__, name}, stored)
      other -> other
    end
  end

  @impl ExMCP.Authorization.ClientStore
  def put(name, key, client), do: call(name, {:put, key, client})

  @impl ExMCP.Authorization.ClientStore
  def delete(name, key), do: call(name, {:delete, key})

  @impl ExMCP.Authorization.ClientStore
  def list(name) do
    with {:ok, entries} <- Table.list(name, __MODULE__), do: Cipher.open_all({__MODULE__, name}, entries)
  end

  @impl ExMCP.Authorization.ClientStore
  def with_lock(name, key, timeout, fun, ready \\ &Lease.wait/0),
    do: Lease.run(Table, name, key, timeout, fun, ready)

  # -- The file -----------------------------------------------------------------

  defp table(name), do: {__MODULE__, name}

  # The file first, synced; then the copy.
  defp write(name, change, mirror) do
    with :ok <- change.(table(name)),
         :ok <- :dets.sync(table(name)) do
      mirror.()
    else
      {:error, reason} -> dets_error(name, reason)
    end
  end

  # A write waits for the disk; a store that is gone, or stuck past a
  # minute, is an error rather than an exit in the caller.
  defp call(name, request) do
    GenServer.call(name, request, 60_000)
  catch
    :exit, {:timeout, _} ->
      {:error, {:client_store, "the client store #{inspect(name)} did not answer within 60 s"}}

    :exit, _ ->
      not_running(name)
  end

  # The OS lock is on a file beside the store's (`<path>.lock`), because a
  # DETS repair replaces the store's file with a new one. It is taken before
  # the file is created or read, and held by the resource in this process's
  # state until the process exits.
  defp open(name, path) do
    with :ok <- mkdir_p(path),
         {:ok, lock} <- lock(path),
         :ok <- ensure_file(path),
         :ok <- open_table(name, path, _repairs_left = 1) do
      {:ok, lock}
    end
  end

  defp lock(path) do
    case Native.lock_file(path <> ".lock") do
      {:ok, lock} ->
        {:ok, lock}

      {:error, :locked} ->
        {:error,
         "#{path} is in use by another client store, in this VM or another OS process " <>
           "(DETS allows one at a time)"}

      {:error, message} ->
        {:error, "cannot lock #{path}.lock: #{message}"}
    end
  end

  # DETS repairs a file that was not properly closed (a crash) by writing a
  # new one beside it with the default mode, 0644 under the usual umask. So
  # the repair runs on a copy in a private directory, which then replaces
  # the file with mode 0600: the secrets are never in a file others can open.
  defp open_table(name, path, repairs_left) do
    case :dets.open_file(table(name), file: String.to_charlist(path), type: :set, repair: false) do
      {:ok, _} ->
        :ok

      {:error, {:needs_repair, _}} when repairs_left > 0 ->
        with :ok <- privately(path, "repair", &repair_copy(path, &1)),
             do: open_table(name, path, repairs_left - 1)

      {:error, reason} ->
        {:error, open_error(path, reason)}
    end
  end

  defp repair_copy(path, copy) do
    repair = {__MODULE__, :repair, make_ref()}

    with {:ok, _} <- File.copy(path, copy),
         {:ok, _} <- :dets.open_file(repair, file: String.to_charlist(copy), type: :set, repair: true) do
      :dets.close(repair)
    end
  end

  defp ensure_file(path) do
    case File.lstat(path) do
      {:ok, %File.Stat{type: :regular, mode: mode}} -> private_mode(path, mode)
      {:ok, %File.Stat{type: type}} -> {:error, "#{path} is not a regular file (it is a #{type})"}
      {:error, :enoent} -> privately(path, "create", &create_empty/1)
      {:error, reason} -> {:error, "cannot use #{path}: #{:file.format_error(reason)}"}
    end
  end

  defp private_mode(path, mode) do
    if Bitwise.band(mode, 0o077) == 0 do
      :ok
    else
      case File.chmod(path, Bitwise.band(mode, 0o700)) do
        :ok ->
          :ok

        {:error, reason} ->
          {:error, "#{path} is readable by others and cannot be made private: #{:file.format_error(reason)}"}
      end
    end
  end

  defp create_empty(file) do
    name = {__MODULE__, :create, make_ref()}

    with {:ok, _} <- :dets.open_file(name, file: String.to_charlist(file), type: :set),
         do: :dets.close(name)
  end

  # Runs `make` on a path inside a fresh directory of mode 0700 beside
  # `path`, where nobody else can open what it writes, then moves the result
  # over `path` with mode 0600.
  defp privately(path, what, make) do
    private_dir =
      Path.join(Path.dirname(path), ".#{Path.basename(path)}.#{System.unique_integer([:positive])}.tmp")

    file = Path.join(private_dir, Path.basename(path))

    case Native.create_private_dir(private_dir) do
      :ok ->
        result =
          with :ok <- make.(file),
               :ok <- File.chmod(file, 0o600),
               do: File.rename(file, path)

        _ = File.rm_rf(private_dir)

        case result do
          :ok ->
            :ok

          {:error, reason} when is_atom(reason) ->
            {:error, "cannot #{what} #{path}: #{:file.format_error(reason)}"}

          {:error, reason} ->
            {:error, "cannot #{what} #{path}: #{inspect(reason, limit: 10)}"}
        end

      {:error, message} ->
        {:error, "cannot #{what} #{path}: #{message}"}
    end
  end

  # File.mkdir_p/1 says :eexist when a regular file stands where a directory
  # of the path should be.
  defp mkdir_p(path) do
    case File.mkdir_p(Path.dirname(path)) do
      :ok -> :ok
      {:error, reason} when reason in [:eexist, :enotdir] -> {:error, "cannot use #{path}: not a directory"}
      {:error, reason} -> {:error, "cannot use #{path}: #{:file.format_error(reason)}"}
    end
  end

  defp open_error(path, {:not_a_dets_file, _}),
    do: "#{path} is not a DETS file (corrupt, or another format); move it away or choose another :path"

  defp open_error(path, {:file_error, _, reason}), do: "cannot open #{path}: #{:file.format_error(reason)}"
  defp open_error(path, {:access_mode, _}), do: "cannot open #{path} for writing"
  defp open_error(path, reason), do: "cannot open #{path}: #{inspect(reason, limit: 10)}"

  defp dets_error(name, reason),
    do: {:error, {:client_store, "the client store #{inspect(name)} failed: #{inspect(reason, limit: 10)}"}}

  defp not_running(name),
    do: {:error, {:client_store, "the client store #{inspect(name)} (#{inspect(__MODULE__)}) is not running"}}
end
