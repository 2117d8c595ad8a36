defmodule ExMCP.Authorization.ClientStore do
  # Before the moduledoc, which states it.
  @default_expiry_skew 30

  @moduledoc """
  Where obtained clients live between runs: one registration per
  authorization server (issuer) and client key, reused across restarts,
  renewed when it expires or is rejected, and never raced into duplicates.

  The MCP authorization specification binds credentials to the issuer that
  issued them, and asks for a new registration when the authorization server
  changes. A store keeps, for each `{issuer, client_key}`, the whole client
  that `ExMCP.Authorization.ClientRegistration.obtain_client/3` returned:
  `client_id`, `client_secret`, `registration_access_token`,
  `registration_client_uri`, the metadata, `:issuer` and
  `:registration_method`.

      store = {ExMCP.Authorization.ClientStore.DETS, MyApp.Clients}

      {:ok, client} =
        ClientRegistration.obtain_client(discovery, metadata, store: store)

  The first call registers (RFC 7591) and stores the answer; later calls,
  in this VM or the next, return the stored client without a request.

  ## Adapters

  | Adapter | Keeps clients | Choose it for |
  |---|---|---|
  | `ExMCP.Authorization.ClientStore.ETS` | in memory, in an ETS table owned by a supervised process | tests, scripts and short-lived tools: gone when the VM stops |
  | `ExMCP.Authorization.ClientStore.DETS` | in a file (OTP's DETS), mode 0600 | one VM that restarts, the Mix tasks; the default choice for a single node |
  | `ExMCP.Authorization.ClientStore.Mnesia` | in a Mnesia table, `disc_copies` or `ram_copies` on the nodes you name | applications running on several connected BEAM nodes |

  A store is named by a `{adapter, name}` pair: the adapter module and the
  name its process (or table) was started with.

  The DETS file and the Mnesia tables hold the secrets in clear unless the
  store is given a `:cipher` (`ExMCP.Authorization.ClientStore.Cipher`;
  `ExMCP.Authorization.ClientStore.AESGCM` is built in). Nothing a store
  does is logged with a secret.

  Each adapter holds one lock per `{issuer, client_key}`: while one process
  registers, the others for the same key wait for it, then read what it
  stored. With ETS and DETS the lock covers the VM; with Mnesia it covers
  every node that shares the table. Different issuers or keys never wait on
  each other. A cached hit takes no lock.

  ## Validity and renewal

  `obtain_client/3` returns a stored client only when all of these hold:

    * its `:issuer` is the discovered issuer, exactly (it is stored under
      that issuer, and checked again on the way out);
    * its `client_secret_expires_at` is `nil`, `0` (never expires, RFC 7591
      §3.2.1), or more than `:expiry_skew` seconds (default
      #{@default_expiry_skew}) in the future;
    * every redirect URI of the metadata you pass is one of its
      `redirect_uris` (a stored client that cannot use your redirect URI is
      of no use).

  Otherwise it registers again and the new client replaces the old one. When
  the authorization server rejects a client (`invalid_client` at the token
  endpoint), report it with
  `ExMCP.Authorization.ClientRegistration.client_rejected/2`: the stored
  client is discarded, and the next `obtain_client/3` registers anew.

  The replaced registration is not deleted from the server: it may still be
  in use elsewhere. Use `delete_client/4` first when it should go.

  ## Management through the store

  `get_client_information/4`, `update_client_information/5` and
  `delete_client/4` run the RFC 7592 calls with the stored credentials,
  under the key's lock, and persist before they return whatever the server
  handed out: a rotated `registration_access_token` or `client_secret`
  (RFC 7592 §2.1), the updated metadata, and the new credentials carried by
  a `:credentials_rotated` error.

  ## Errors

  Store failures are `{:error, {:client_store, message}}`: a corrupt or
  unreadable file, a store that is not running, a Mnesia transaction that
  aborted. Waiting for another process's registration counts against the
  call's `:timeout`; past it, the call returns `{:error, {:request_failed,
  :timeout}}` while the registration in progress still completes and is
  stored.

  ## Writing an adapter

  Implement the callbacks below. `c:with_lock/4` is the one that needs care:
  it must run `fun` while no other process (on any node that shares the
  store) runs a `fun` for the same key, and must let the holder's death
  release the lock.
  """

  alias ExMCP.Authorization.{ClientRegistration, RotatedCredentials}

  require Logger

  @typedoc "A store: its adapter module and the name it was started with."
  @type t() :: {module(), term()}

  @typedoc "The authorization server's issuer identifier (RFC 8414 §2)."
  @type issuer() :: String.t()

  @typedoc "The caller's name for one client identity at an issuer, such as `\"default\"`."
  @type client_key() :: String.t()

  @type key() :: {issuer(), client_key()}

  @typedoc "What a store holds: a client from `obtain_client/3`."
  @type client() :: ClientRegistration.obtained_client()

  @typedoc "Why a store could not do what was asked."
  @type error() :: {:client_store, String.t()}

  @doc "The client stored under `key`."
  @callback get(name :: term(), key()) :: {:ok, client()} | :error | {:error, error()}

  @doc "Stores `client` under `key`, replacing what was there, durably before returning."
  @callback put(name :: term(), key(), client()) :: :ok | {:error, error()}

  @doc "Removes the client stored under `key`; `:ok` when there was none."
  @callback delete(name :: term(), key()) :: :ok | {:error, error()}

  @doc "Every stored key with its client."
  @callback list(name :: term()) :: {:ok, [{key(), client()}]} | {:error, error()}

  @doc """
  Runs `fun` while holding the lock of `key`, and returns its result.

  Waits at most `timeout` milliseconds for the lock, then returns
  `{:error, {:request_failed, :timeout}}`. A `fun` that started runs to its
  end even when the caller stopped waiting, so that a registration in flight
  is never lost. `fun` may run in another process than the caller's.
  """
  @callback with_lock(name :: term(), key(), timeout :: non_neg_integer(), fun :: (() -> result)) ::
              result | {:error, error() | {:request_failed, :timeout}}
            when result: term()

  @doc """
  `c:with_lock/4`, plus `ready`, which the adapter calls each time a
  holder of the lock has gone and before it tries to take the lock itself:
  `{:done, result}` means the wait is over (another process did the work)
  and `result` is returned without taking the lock; `:wait` goes on.
  Optional: `get_or_register/5` uses it when present, so that of many
  processes woken by one registration none queues for the lock again.
  """
  @callback with_lock(
              name :: term(),
              key(),
              timeout :: non_neg_integer(),
              fun :: (() -> result),
              ready :: (() -> {:done, result} | :wait)
            ) :: result | {:error, error() | {:request_failed, :timeout}}
            when result: term()

  @optional_callbacks with_lock: 5

  @doc """
  The stored client of `client_key` at `issuer`.

  ## Example

      {:ok, client} = ClientStore.get({ClientStore.ETS, MyApp.Clients}, "https://auth.example.com", "default")
  """
  @spec get(t(), issuer(), client_key()) :: {:ok, client()} | :error | {:error, error()}
  def get(store, issuer, client_key) do
    {adapter, name} = store!(store)
    adapter.get(name, key!(issuer, client_key))
  end

  @doc """
  Stores `client` for `client_key` at `issuer`. `client` must carry that
  `:issuer`, so that no client is ever filed under an issuer that did not
  issue it.
  """
  @spec put(t(), issuer(), client_key(), client()) :: :ok | {:error, error()}
  def put(store, issuer, client_key, client) do
    {adapter, name} = store!(store)
    key = key!(issuer, client_key)

    case client do
      %{client_id: id, issuer: ^issuer} when is_binary(id) ->
        adapter.put(name, key, client)

      %{client_id: id, issuer: _other} when is_binary(id) ->
        raise ArgumentError,
              "the client's :issuer is not #{inspect(issuer)}: credentials are bound to their issuer"

      %{client_id: id} when is_binary(id) ->
        raise ArgumentError,
              "the client has no :issuer; store clients from obtain_client/3, which binds them to theirs"

      _ ->
        raise ArgumentError, "a stored client must be a map with a :client_id string and an :issuer"
    end
  end

  @doc "Removes the client of `client_key` at `issuer` from the store (not from the server)."
  @spec delete(t(), issuer(), client_key()) :: :ok | {:error, error()}
  def delete(store, issuer, client_key) do
    {adapter, name} = store!(store)
    adapter.delete(name, key!(issuer, client_key))
  end

  @doc """
  Every stored client, as `{{issuer, client_key}, client}`, sorted by key.
  """
  @spec list(t()) :: {:ok, [{key(), client()}]} | {:error, error()}
  def list(store) do
    {adapter, name} = store!(store)

    with {:ok, entries} <- adapter.list(name), do: {:ok, Enum.sort_by(entries, &elem(&1, 0))}
  end

  @doc """
  The atomic step behind `obtain_client/3`: the stored client of `key` when
  `valid?` accepts it, else the result of `register`, stored.

  The fast path reads without a lock. On a miss, the key's lock is taken and
  the store read again, so of many processes that miss at once, one calls
  `register` and the others get what it stored. A registration that
  succeeded is returned even when it could not be stored (a warning without
  secrets is logged): a client the server created is never thrown away.
  """
  @spec get_or_register(
          t(),
          key(),
          (client() -> boolean()),
          (() -> {:ok, client()} | {:error, term()}),
          non_neg_integer()
        ) :: {:ok, client()} | {:error, term()}
  def get_or_register(store, {issuer, client_key}, valid?, register, timeout) do
    {adapter, name} = store!(store)
    key = key!(issuer, client_key)

    stored = fn -> valid_stored(adapter, name, key, valid?) end

    work = fn ->
      with {:ok, nil} <- stored.(),
           {:ok, client} <- register.() do
        keep(adapter, name, key, client)
        {:ok, client}
      end
    end

    # A waiter woken by the end of another process's registration usually
    # finds the client stored: it returns it without queueing for the lock.
    ready = fn ->
      case stored.() do
        {:ok, nil} -> :wait
        found_or_error -> {:done, found_or_error}
      end
    end

    with {:ok, nil} <- stored.() do
      if function_exported?(adapter, :with_lock, 5),
        do: adapter.with_lock(name, key, timeout, work, ready),
        else: adapter.with_lock(name, key, timeout, work)
    end
  end

  defp valid_stored(adapter, name, key, valid?) do
    case adapter.get(name, key) do
      {:ok, client} -> if valid?.(client), do: {:ok, client}, else: {:ok, nil}
      :error -> {:ok, nil}
      {:error, _} = error -> error
    end
  end

  defp keep(adapter, name, {issuer, _} = key, client) do
    case adapter.put(name, key, client) do
      :ok ->
        :ok

      {:error, reason} ->
        Logger.warning(
          "client #{client.client_id} of #{issuer} (as the server handed it out) could not be stored: " <>
            ClientRegistration.format_error(reason)
        )
    end
  end

  @doc """
  Whether a stored `client` may be returned for `issuer` and the requested
  `redirect_uris`: the rules of "Validity and renewal" above. `skew` is in
  seconds (default #{@default_expiry_skew}).

  ## Example

      iex> client = %{issuer: "https://as.example", registration_method: :dynamic,
      ...>   client_secret_expires_at: 0, redirect_uris: ["http://127.0.0.1/cb"]}
      iex> ExMCP.Authorization.ClientStore.reusable?(client, "https://as.example", ["http://127.0.0.1/cb"])
      true
      iex> ExMCP.Authorization.ClientStore.reusable?(client, "https://other.example", ["http://127.0.0.1/cb"])
      false
      iex> ExMCP.Authorization.ClientStore.reusable?(client, "https://as.example", ["http://127.0.0.1/other"])
      false
  """
  @spec reusable?(map(), issuer(), [String.t()] | nil, non_neg_integer()) :: boolean()
  def reusable?(client, issuer, redirect_uris, skew \\ @default_expiry_skew) do
    Map.get(client, :issuer) == issuer and Map.get(client, :registration_method) == :dynamic and
      not expired?(client, skew) and registered?(redirect_uris, Map.get(client, :redirect_uris))
  end

  defp registered?(wanted, registered) when is_list(wanted) and is_list(registered),
    do: Enum.all?(wanted, &(&1 in registered))

  defp registered?(wanted, _registered), do: wanted in [nil, []]

  @doc """
  Whether the client's secret has expired, or expires within `skew`
  seconds (default #{@default_expiry_skew}). `client_secret_expires_at`
  `nil` or `0` never expires (RFC 7591 §3.2.1).

  ## Example

      iex> ExMCP.Authorization.ClientStore.expired?(%{client_secret_expires_at: 0})
      false
      iex> ExMCP.Authorization.ClientStore.expired?(%{client_secret_expires_at: 1})
      true
  """
  @spec expired?(map(), non_neg_integer(), integer()) :: boolean()
  def expired?(client, skew \\ @default_expiry_skew, now \\ System.os_time(:second)) do
    case Map.get(client, :client_secret_expires_at) do
      at when is_integer(at) and at > 0 -> at <= now + skew
      _ -> false
    end
  end

  @doc false
  @spec default_expiry_skew() :: non_neg_integer()
  def default_expiry_skew, do: @default_expiry_skew

  @doc """
  Reads the registration (RFC 7592 §2.1) with the stored credentials and
  stores the answer, rotated token or secret included, before returning it.
  Options are those of `ClientRegistration.get_client_information/3`.
  `{:error, {:client_store, "no client is stored …"}}` when there is none.
  """
  @spec get_client_information(t(), issuer(), client_key(), [ClientRegistration.option()]) ::
          {:ok, client()} | {:error, term()}
  def get_client_information(store, issuer, client_key, opts \\ []) do
    managed(store, issuer, client_key, {opts, []}, fn stored, uri, token ->
      ClientRegistration.get_client_information(uri, token, opts)
      |> merged(stored)
    end)
  end

  @doc """
  Updates the registration (RFC 7592 §2.2) with the stored credentials, as
  `ClientRegistration.update_client_information/4` does, and stores the
  answer before returning it. When the update fails after its read rotated
  the credentials (`{:credentials_rotated, _, reason}`), the rotated
  credentials are stored and the error returned.
  """
  @spec update_client_information(t(), issuer(), client_key(), map(), [ClientRegistration.option()]) ::
          {:ok, client()} | {:error, term()}
  def update_client_information(store, issuer, client_key, updates, opts \\ []) do
    managed(store, issuer, client_key, {opts, [:replace]}, fn stored, uri, token ->
      uri
      |> ClientRegistration.update_client_information(token, updates, opts)
      |> merged(stored)
    end)
  end

  @doc """
  Deletes the registration at the server (RFC 7592 §2.3) with the stored
  credentials, then removes it from the store.
  """
  @spec delete_client(t(), issuer(), client_key(), [ClientRegistration.option()]) :: :ok | {:error, term()}
  def delete_client(store, issuer, client_key, opts \\ []) do
    managed(store, issuer, client_key, {opts, []}, fn _stored, uri, token ->
      case ClientRegistration.delete_client(uri, token, opts) do
        :ok -> :deleted
        error -> error
      end
    end)
  end

  @doc false
  # client_rejected/2: compare and delete, under the key's lock, so that a
  # stale report never discards a client another process just registered.
  @spec discard(t(), issuer(), client_key(), String.t(), non_neg_integer()) :: :ok | {:error, term()}
  def discard(store, issuer, client_key, client_id, timeout) do
    {adapter, name} = store!(store)
    key = key!(issuer, client_key)

    adapter.with_lock(name, key, timeout, fn ->
      case adapter.get(name, key) do
        {:ok, %{client_id: ^client_id}} -> adapter.delete(name, key)
        {:error, _} = error -> error
        _ -> :ok
      end
    end)
  end

  # Runs an RFC 7592 call under the key's lock with the stored credentials;
  # `call` returns the new client to store, `:deleted`, or an error. The
  # options are checked here, in the caller, so that a bad one raises here.
  defp managed(store, issuer, client_key, {opts, extra_options}, call) do
    {adapter, name} = store!(store)
    key = key!(issuer, client_key)
    timeout = ClientRegistration.checked_options!(opts, extra_options)[:timeout]

    adapter.with_lock(name, key, timeout, fn ->
      with {:ok, stored} <- stored!(adapter, name, key),
           {:ok, uri, token} <- management_credentials(stored, key) do
        case call.(stored, uri, token) do
          {:ok, client} ->
            with :ok <- adapter.put(name, key, client), do: {:ok, client}

          :deleted ->
            adapter.delete(name, key)

          {:error, {:credentials_rotated, %RotatedCredentials{client: client}, _}} = error ->
            # The error carries the rotated credentials to the caller even
            # when they could not be stored.
            keep(adapter, name, key, client)
            error

          {:error, _} = error ->
            error
        end
      end
    end)
  end

  defp stored!(adapter, name, {issuer, client_key} = key) do
    case adapter.get(name, key) do
      {:ok, client} -> {:ok, client}
      :error -> {:error, {:client_store, "no client is stored for #{inspect(client_key)} at #{issuer}"}}
      {:error, _} = error -> error
    end
  end

  defp management_credentials(%{registration_client_uri: uri, registration_access_token: token}, _key)
       when is_binary(uri) and is_binary(token),
       do: {:ok, uri, token}

  defp management_credentials(_client, {issuer, client_key}),
    do:
      {:error,
       {:client_store,
        "the client stored for #{inspect(client_key)} at #{issuer} has no registration_client_uri " <>
          "and registration_access_token (RFC 7592 management is not available for it)"}}

  # An RFC 7592 answer is a client_information(); what obtain_client/3 added
  # (issuer, registration method) is carried over from the stored client.
  defp merged({:ok, client}, stored),
    do:
      {:ok,
       Map.merge(client, Map.take(stored, [:issuer, :registration_method]))
       |> Map.put_new(:token_endpoint_auth_method, stored[:token_endpoint_auth_method])}

  defp merged({:error, {:credentials_rotated, %RotatedCredentials{client: client} = rotated, reason}}, stored) do
    {:ok, client} = merged({:ok, client}, stored)
    {:error, {:credentials_rotated, %{rotated | client: client}, reason}}
  end

  defp merged(error, _stored), do: error

  # -- Arguments --------------------------------------------------------------

  @doc false
  @spec store!(term()) :: t()
  def store!({adapter, _name} = store) when is_atom(adapter) do
    if Code.ensure_loaded?(adapter) and function_exported?(adapter, :with_lock, 4),
      do: store,
      else:
        raise(
          ArgumentError,
          "#{inspect(adapter)} is not a client store adapter (see ExMCP.Authorization.ClientStore)"
        )
  end

  def store!(other),
    do:
      raise(
        ArgumentError,
        "a client store is {adapter, name}, such as {ExMCP.Authorization.ClientStore.ETS, MyApp.Clients}, got: " <>
          inspect(other, limit: 5, printable_limit: 80)
      )

  @max_key_bytes 1024

  @doc false
  @spec key!(term(), term()) :: key()
  def key!(issuer, client_key) do
    unless is_binary(issuer) and issuer != "" and byte_size(issuer) <= 65_536 do
      raise ArgumentError,
            "the issuer must be a non-empty URL string, got: #{inspect(issuer, limit: 5, printable_limit: 80)}"
    end

    unless is_binary(client_key) and client_key != "" and byte_size(client_key) <= @max_key_bytes and
             String.valid?(client_key) do
      raise ArgumentError,
            "the client key must be a non-empty UTF-8 string of at most #{@max_key_bytes} bytes, got: " <>
              inspect(client_key, limit: 5, printable_limit: 80)
    end

    {issuer, client_key}
  end
end
