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
  is opened.

  It holds, for each `{issuer, client_key}`, the client map as an Erlang
  term: `client_secret` and `registration_access_token` in clear, like any
  credentials file, unless `:cipher` is set (then the whole client is
  encrypted; the issuer and client key, the record's key, stay readable).
  Protect it as you would a private key, and keep it out of backups you
  would not trust with it. Nothing is logged.

  Every write is synced to disk (`:dets.sync/1`) before it returns, so a
  registration is on disk before `obtain_client/3` returns it. After a
  crash, DETS repairs the file when it is next opened.

  A file that is not a DETS file, or cannot be read, makes `start_link/1`
  return `{:error, {:client_store, message}}` naming the file and what is
  wrong, without crashing the caller.

  One store may open a given file at a time: the store takes an exclusive
  OS lock (`flock(2)`) on it before DETS reads it, so a second store, in
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

    case Cipher.check(cipher, __MODULE__) do
      :ok -> GenServer.start_link(__MODULE__, {name, path, cipher}, name: name)
      {:error, message} -> raise ArgumentError, "#{inspect(__MODULE__)}: #{message}"
    end
  end

  @doc false
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts),
    do: %{id: {__MODULE__, Table.name!(opts, __MODULE__)}, start: {__MODULE__, :start_link, [opts]}}

  @impl GenServer
  def init({name, path, cipher}) do
    Process.flag(:trap_exit, true)

    case open(name, path) do
      {:ok, lock} ->
        _ = :ets.new(name, [:named_table, :public, :set])
        :ok = Cipher.configure({__MODULE__, name}, cipher)
        {:ok, %{name: name, path: path, lock: lock}}

      {:error, message} ->
        Table.fail_start(message)
    end
  end

  @impl GenServer
  def terminate(_reason, %{name: name}) do
    :ok = Cipher.configure({__MODULE__, name}, nil)
    :dets.close(table(name))
  end

  @impl ExMCP.Authorization.ClientStore
  def get(name, key) do
    case :dets.lookup(table(name), key) do
      [{^key, stored}] -> Cipher.open({__MODULE__, name}, stored)
      [] -> :error
      {:error, reason} -> dets_error(name, reason)
    end
  rescue
    ArgumentError -> not_running(name)
  end

  @impl ExMCP.Authorization.ClientStore
  def put(name, key, client),
    do: write(name, &:dets.insert(&1, {key, Cipher.seal({__MODULE__, name}, client)}))

  @impl ExMCP.Authorization.ClientStore
  def delete(name, key), do: write(name, &:dets.delete(&1, key))

  @impl ExMCP.Authorization.ClientStore
  def list(name) do
    case :dets.match_object(table(name), :_) do
      {:error, reason} -> dets_error(name, reason)
      entries -> Cipher.open_all({__MODULE__, name}, entries)
    end
  rescue
    ArgumentError -> not_running(name)
  end

  @impl ExMCP.Authorization.ClientStore
  def with_lock(name, key, timeout, fun), do: Lease.run(Table, name, key, timeout, fun)

  # -- The file -----------------------------------------------------------------

  defp table(name), do: {__MODULE__, name}

  defp write(name, change) do
    with :ok <- change.(table(name)),
         :ok <- :dets.sync(table(name)) do
      :ok
    else
      {:error, reason} -> dets_error(name, reason)
    end
  rescue
    ArgumentError -> not_running(name)
  end

  # The OS lock is taken before DETS reads the file, and held (by the
  # resource in this process's state) until the process exits.
  defp open(name, path) do
    with :ok <- ensure_file(path),
         {:ok, lock} <- lock(path) do
      case :dets.open_file(table(name), file: String.to_charlist(path), type: :set, repair: true) do
        {:ok, _} -> {:ok, lock}
        {:error, reason} -> {:error, open_error(path, reason)}
      end
    end
  end

  defp lock(path) do
    case Native.lock_file(path) do
      {:ok, lock} ->
        {:ok, lock}

      {:error, :locked} ->
        {:error,
         "#{path} is in use by another client store, in this VM or another OS process " <>
           "(DETS allows one at a time)"}

      {:error, message} ->
        {:error, "cannot lock #{path}: #{message}"}
    end
  end

  defp ensure_file(path) do
    case File.lstat(path) do
      {:ok, %File.Stat{type: :regular, mode: mode}} -> private_mode(path, mode)
      {:ok, %File.Stat{type: type}} -> {:error, "#{path} is not a regular file (it is a #{type})"}
      {:error, :enoent} -> create(path)
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

  # An empty DETS file, created where nobody else can open it, then moved
  # into place.
  defp create(path) do
    directory = Path.dirname(path)
    private_dir = Path.join(directory, ".#{Path.basename(path)}.#{System.unique_integer([:positive])}.tmp")
    temporary = Path.join(private_dir, Path.basename(path))
    temporary_name = {__MODULE__, :create, make_ref()}

    with :ok <- mkdir_p(directory),
         :ok <- Native.create_private_dir(private_dir) do
      result =
        with {:ok, _} <- :dets.open_file(temporary_name, file: String.to_charlist(temporary), type: :set),
             :ok <- :dets.close(temporary_name),
             :ok <- File.chmod(temporary, 0o600),
             :ok <- File.rename(temporary, path) do
          :ok
        end

      _ = File.rm(temporary)
      _ = File.rmdir(private_dir)

      case result do
        :ok ->
          :ok

        {:error, reason} when is_atom(reason) ->
          {:error, "cannot create #{path}: #{:file.format_error(reason)}"}

        {:error, reason} ->
          {:error, "cannot create #{path}: #{inspect(reason)}"}
      end
    else
      {:error, message} when is_binary(message) -> {:error, "cannot create #{path}: #{message}"}
      {:error, reason} -> {:error, "cannot create #{path}: #{:file.format_error(reason)}"}
    end
  end

  defp mkdir_p(directory) do
    case File.mkdir_p(directory) do
      :ok -> :ok
      {:error, reason} -> {:error, "cannot create the directory #{directory}: #{:file.format_error(reason)}"}
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
