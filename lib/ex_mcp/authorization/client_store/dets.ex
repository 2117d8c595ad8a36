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

  ## The file

  A new file is created inside a fresh directory of mode 0700 next to it,
  given mode 0600, then moved into place: no other user can open it at any
  moment. An existing file readable by others is set back to 0600 when it
  is opened, and so is a file DETS has just repaired (a repair writes a new
  file with the default mode).

  It holds, for each `{issuer, client_key}`, the client map as an Erlang
  term, unencrypted: `client_secret` and `registration_access_token` in
  clear, like any credentials file. Protect it as you would a private key,
  and keep it out of backups you would not trust with it. Nothing is logged.

  Every write is synced to disk (`:dets.sync/1`) before it returns, so a
  registration is on disk before `obtain_client/3` returns it. After a
  crash, DETS repairs the file when it is next opened.

  A file that is not a DETS file, or cannot be read, makes `start_link/1`
  return `{:error, {:client_store, message}}` naming the file and what is
  wrong, without crashing the caller.

  One VM may open a given file at a time: DETS does not lock it against
  another OS process. The lock of `ExMCP.Authorization.ClientStore` covers
  the processes of this VM.
  """

  use GenServer

  @behaviour ExMCP.Authorization.ClientStore

  alias ExMCP.Authorization.ClientStore.{Lease, Table}
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

    GenServer.start_link(__MODULE__, {name, path}, name: name)
  end

  @doc false
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts),
    do: %{id: {__MODULE__, Table.name!(opts, __MODULE__)}, start: {__MODULE__, :start_link, [opts]}}

  @impl GenServer
  def init({name, path}) do
    Process.flag(:trap_exit, true)

    case open(name, path) do
      :ok ->
        _ = :ets.new(name, [:named_table, :public, :set])
        {:ok, %{name: name, path: path}}

      {:error, message} ->
        Table.fail_start(message)
    end
  end

  @impl GenServer
  def terminate(_reason, %{name: name}) do
    :dets.close(table(name))
  end

  @impl ExMCP.Authorization.ClientStore
  def get(name, key) do
    case :dets.lookup(table(name), key) do
      [{^key, client}] -> {:ok, client}
      [] -> :error
      {:error, reason} -> dets_error(name, reason)
    end
  rescue
    ArgumentError -> not_running(name)
  end

  @impl ExMCP.Authorization.ClientStore
  def put(name, key, client), do: write(name, &:dets.insert(&1, {key, client}))

  @impl ExMCP.Authorization.ClientStore
  def delete(name, key), do: write(name, &:dets.delete(&1, key))

  @impl ExMCP.Authorization.ClientStore
  def list(name) do
    case :dets.match_object(table(name), :_) do
      {:error, reason} -> dets_error(name, reason)
      entries -> {:ok, entries}
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

  defp open(name, path) do
    with :ok <- ensure_file(path) do
      case :dets.open_file(table(name), file: String.to_charlist(path), type: :set, repair: true) do
        {:ok, _} -> repaired_private(name, path)
        {:error, reason} -> {:error, open_error(path, reason)}
      end
    end
  end

  # A repair (the file was not properly closed) writes a new file in place,
  # with the default mode (0644 under the usual umask): made private again.
  defp repaired_private(name, path) do
    with {:ok, %File.Stat{mode: mode}} <- File.stat(path),
         :ok <- private_mode(path, mode) do
      :ok
    else
      {:error, reason} = error ->
        :dets.close(table(name))
        if is_binary(reason), do: error, else: {:error, "cannot use #{path}: #{:file.format_error(reason)}"}
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
