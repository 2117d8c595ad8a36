defmodule ExMCP.Authorization.Native do
  @moduledoc false
  # The NIF stubs and the "reply later" protocol. Each call NIF checks its
  # arguments, spawns the work on tokio and returns `{:ok, pending}` at once;
  # the result arrives as `{ref, result}`. The `server_*` NIFs drive the
  # embedded registration server. Users never call this module.
  #
  # Bounded scheduler time (native/ex_mcp_nif/src/budget.rs): no NIF holds a
  # normal scheduler for more than about a millisecond. `register/3` and
  # `update/6` try the normal-scheduler NIF, which gives up with
  # `:reschedule` as soon as the request map exceeds what it may convert
  # there; the dirty-CPU twin then does the whole conversion. Replies larger
  # than @scheduler_decode_bytes are decoded on a dirty CPU scheduler too.

  require Logger

  @app :ex_mcp_registration
  @on_load :load_nif

  @doc false
  def load_nif do
    path = nif_path()
    threads = Application.get_env(@app, :runtime_worker_threads, 0)

    case :erlang.load_nif(path, threads) do
      :ok ->
        :persistent_term.erase({__MODULE__, :load_error})
        :ok

      {:error, {_reason, text}} ->
        message =
          "the ExMCP registration NIF could not be loaded from #{path}.so: #{text}. " <>
            "Run `mix compile` (it builds the Rust crate with cargo) and check its output."

        :persistent_term.put({__MODULE__, :load_error}, message)
        Logger.error(message)
        # Loading the module anyway lets every call raise this message
        # instead of an opaque UndefinedFunctionError.
        :ok
    end
  end

  defp nif_path do
    case :code.priv_dir(@app) do
      {:error, _} -> Path.join([Application.app_dir(@app), "priv", "native", "libex_mcp_nif"])
      priv -> Path.join([to_string(priv), "native", "libex_mcp_nif"])
    end
    |> String.to_charlist()
  end

  def register_nif(_request, _options, _ref), do: not_loaded()
  def register_dirty(_request, _options, _ref), do: not_loaded()
  def get(_uri, _token, _options, _ref), do: not_loaded()
  def update_nif(_uri, _token, _updates, _replace, _options, _ref), do: not_loaded()
  def update_dirty(_uri, _token, _updates, _replace, _options, _ref), do: not_loaded()
  def delete(_uri, _token, _options, _ref), do: not_loaded()
  def discover(_server_url, _discover_options, _options, _ref), do: not_loaded()
  def cancel(_pending), do: not_loaded()
  def in_flight, do: not_loaded()
  def panic_next_call, do: not_loaded()
  # Test hooks, present only in a NIF built with the `test-hooks` cargo
  # feature (MIX_ENV=test); see native/ex_mcp_nif/src/test_hooks.rs.
  def calls_started, do: not_loaded()
  def hold_next_delivery, do: not_loaded()
  def json_encode(_term, _pretty), do: not_loaded()
  def json_decode(_text), do: not_loaded()
  def decode_reply_dirty(_reply), do: not_loaded()
  def client_metadata_document(_url, _metadata, _allow_loopback_http), do: not_loaded()
  def write_private_file(_path, _contents), do: not_loaded()

  # The embedded registration server (ExMCP.Authorization.RegistrationServer).
  def server_start(_config), do: not_loaded()
  def server_stop(_server), do: not_loaded()
  def server_info(_server), do: not_loaded()
  def server_lookup(_server, _client_id), do: not_loaded()
  def server_list(_server), do: not_loaded()
  def server_count(_server), do: not_loaded()

  defp not_loaded do
    raise RuntimeError,
          :persistent_term.get(
            {__MODULE__, :load_error},
            "the ExMCP registration NIF is not loaded"
          )
  end

  @doc "Starts a registration: on a normal scheduler, or a dirty one for a large request."
  @spec register(map(), map(), reference()) :: {:ok, reference()} | {:error, term()}
  def register(request, options, ref) do
    with :reschedule <- register_nif(request, options, ref),
         do: register_dirty(request, options, ref)
  end

  @doc "Starts an update: on a normal scheduler, or a dirty one for a large `updates` map."
  @spec update(term(), term(), map(), boolean(), map(), reference()) :: {:ok, reference()} | {:error, term()}
  def update(uri, token, updates, replace, options, ref) do
    with :reschedule <- update_nif(uri, token, updates, replace, options, ref),
         do: update_dirty(uri, token, updates, replace, options, ref)
  end

  # How long to wait for a reply that the NIF has already committed to send.
  @delivery_grace 5_000

  @doc """
  Starts a call with `start` (a fun taking the reply reference) and waits at
  most `timeout` ms for its reply, `{ref, etf_binary}`.

  The `pending` resource must stay referenced until the reply is in: once it
  is garbage (the caller died, or dropped it), the call is aborted. The
  `after` clause below uses it, which keeps it alive while waiting. After the wait gives up the call is
  cancelled, and no late reply can reach the caller's mailbox.
  """
  def call(start, timeout) do
    ref = make_ref()

    case start.(ref) do
      {:ok, pending} ->
        await(pending, ref, timeout)

      {:error, {:invalid_option, name, message}} ->
        raise ArgumentError, "invalid option #{inspect(name)}: #{message}"

      {:error, _reason} = error ->
        error
    end
  end

  defp await(pending, ref, timeout) do
    receive do
      {^ref, reply} -> decode(reply)
    after
      timeout ->
        case cancel(pending) do
          :cancelled ->
            {:error, {:request_failed, :timeout}}

          :delivered ->
            receive do
              {^ref, reply} -> decode(reply)
            after
              @delivery_grace -> {:error, {:request_failed, {:panic, "the reply was lost"}}}
            end
        end
    end
  end

  # Replies are external term format made on a tokio thread (building maps
  # there crashes OTP 25; see etf.rs). The NIF created every atom a reply can
  # hold when it loaded, so :safe never has to create one.
  #
  # binary_to_term/2 does not yield while it builds a large map: a 1 MiB
  # answer with 100,000 members held the scheduler for 15–18 ms. Its worst
  # case measured about 30 ns per byte of ETF (a list of atoms, a map of short
  # keys), so up to 16 KiB (under 0.5 ms) is decoded here, and anything
  # larger by the same BIF's NIF counterpart on a dirty CPU scheduler. Typical
  # replies are under 1 KiB.
  @scheduler_decode_bytes 16 * 1024

  @doc "Decodes a reply binary, on a dirty CPU scheduler when it is large."
  @spec decode(binary()) :: term()
  def decode(reply) when byte_size(reply) <= @scheduler_decode_bytes,
    do: :erlang.binary_to_term(reply, [:safe])

  def decode(reply), do: decode_reply_dirty(reply)
end
