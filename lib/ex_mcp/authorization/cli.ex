defmodule ExMCP.Authorization.CLI do
  @moduledoc false
  # What the mcp.* Mix tasks share: argument parsing, the credential file
  # format (the RFC 7591 JSON document), and failing with format_error/1.

  alias ExMCP.Authorization.{ClientRegistration, ClientStore, Native}

  # The name of the DETS store a task opens; one task runs at a time.
  @store_name ExMCP.Authorization.CLI.Store

  @doc "Parses `argv` strictly; an unknown flag stops the task with its name."
  @spec parse!([String.t()], keyword(atom()), String.t()) :: {keyword(), [String.t()]}
  def parse!(argv, switches, task) do
    case OptionParser.parse(argv, strict: switches) do
      {opts, args, []} -> {opts, args}
      {_, _, [{flag, _} | _]} -> Mix.raise("unknown or malformed flag #{flag}; see `mix help #{task}`")
    end
  end

  @doc "Library options from the shared flags."
  @spec call_options(keyword()) :: [ClientRegistration.option()]
  def call_options(opts) do
    Enum.flat_map([:timeout, :cacertfile, :proxy], fn key ->
      case Keyword.fetch(opts, key) do
        {:ok, "system"} when key == :proxy -> [proxy: :system]
        {:ok, value} -> [{key, value}]
        :error -> []
      end
    end)
  end

  @doc "A client information map as the JSON document a server would send."
  @spec to_json(map()) :: String.t()
  def to_json(client) do
    document =
      client
      |> Map.delete(:extra)
      |> Enum.reject(fn {_, value} -> is_nil(value) end)
      |> Map.new(fn {key, value} -> {Atom.to_string(key), value} end)
      |> Map.merge(Map.get(client, :extra, %{}))

    {:ok, text} = Native.json_encode(document, true)
    text
  end

  @doc """
  Reads a credential file: `{uri, token, document}`, the registration client
  URI, the registration access token and the whole JSON document.
  """
  @spec read_credentials!(Path.t()) :: {String.t(), String.t(), map()}
  def read_credentials!(path) do
    with {:ok, text} <- File.read(path),
         {:ok, %{} = document} <- Native.json_decode(text),
         uri when is_binary(uri) <- document["registration_client_uri"],
         token when is_binary(token) <- document["registration_access_token"] do
      {uri, token, document}
    else
      {:error, reason} when is_atom(reason) -> Mix.raise("cannot read #{path}: #{:file.format_error(reason)}")
      {:error, message} -> Mix.raise("#{path} is not valid JSON: #{message}")
      _ -> Mix.raise("#{path} has no registration_client_uri and registration_access_token")
    end
  end

  @doc """
  Writes credentials readable by the owner only: the file is created with
  mode 0600 before the secret goes in, then renamed over `path` (see
  `native/ex_mcp_nif/src/private_file.rs`).
  """
  @spec write_credentials!(Path.t(), map()) :: :ok
  def write_credentials!(path, client) do
    case Native.write_private_file(Path.expand(path), to_json(client) <> "\n") do
      :ok -> :ok
      {:error, message} -> Mix.raise("cannot write #{path}: #{message}")
    end
  end

  @doc "Stops the task with a non-zero exit and the error in one sentence."
  @spec fail!(ClientRegistration.reason()) :: no_return()
  def fail!(reason), do: Mix.raise(ClientRegistration.format_error(reason))

  @doc "Status lines go to stderr, so stdout holds only the JSON."
  @spec info(String.t()) :: :ok
  def info(message), do: IO.puts(:stderr, message)

  # -- The client store ---------------------------------------------------------

  @doc """
  The default client store file: `$XDG_CONFIG_HOME/ex_mcp/clients.dets`
  when `XDG_CONFIG_HOME` is an absolute path, else
  `~/.config/ex_mcp/clients.dets`.
  """
  @spec default_store_path() :: Path.t()
  def default_store_path do
    config_home =
      case System.get_env("XDG_CONFIG_HOME") do
        "/" <> _ = dir -> dir
        _ -> Path.join(System.user_home!(), ".config")
      end

    Path.join([config_home, "ex_mcp", "clients.dets"])
  end

  @doc "The `--client-key` flag, `\"default\"` when absent."
  @spec client_key!(keyword()) :: String.t()
  def client_key!(opts) do
    case opts[:client_key] do
      nil -> "default"
      "" -> Mix.raise("--client-key must not be empty")
      key -> key
    end
  end

  @doc "The store file of the `--store` flag, or the default one, expanded."
  @spec store_path(keyword()) :: Path.t()
  def store_path(opts), do: Path.expand(opts[:store] || default_store_path())

  @doc """
  Opens the DETS client store at `path`, runs `fun` with it, and closes it,
  even when `fun` raises. A store that cannot be opened (a corrupt or
  unreadable file) stops the task with the reason.
  """
  @spec with_store(Path.t(), (ClientStore.t() -> result)) :: result when result: term()
  def with_store(path, fun) do
    case ClientStore.DETS.start_link(name: @store_name, path: path) do
      {:ok, pid} ->
        try do
          fun.({ClientStore.DETS, @store_name})
        after
          GenServer.stop(pid)
        end

      {:error, {:client_store, _} = reason} ->
        Mix.raise(
          ClientRegistration.format_error(reason) <>
            " (--store PATH chooses another file; mix mcp.register --no-store skips the store)"
        )

      {:error, {:already_started, _}} ->
        Mix.raise("the client store #{path} is already open in this VM")
    end
  end
end
