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
  @spec load_nif() :: :ok | {:error, {atom(), charlist()}}
  def load_nif do
    path = nif_path()
    threads = Application.get_env(@app, :runtime_worker_threads, 0)

    case :erlang.load_nif(path, threads) do
      :ok ->
        :persistent_term.erase({__MODULE__, :load_error})
        :ok

      {:error, {_reason, text}} = error ->
        message =
          "the ExMCP registration NIF could not be loaded from #{path}.so: #{text}. " <>
            "Run `mix compile` (it builds the Rust crate with cargo) and check its output."

        Logger.error(message)

        if reloading?() do
          # A new version of this module (a code upgrade, `r/1`) whose NIF
          # does not load: fail the load, so that the running version and
          # its NIF stay in place and the caller sees `{:error, :on_load_failure}`.
          error
        else
          # First load: loading the module anyway lets every call raise this
          # message instead of an opaque UndefinedFunctionError.
          :persistent_term.put({__MODULE__, :load_error}, message)
          :ok
        end
    end
  end

  # While this function runs as `@on_load`, a version of the module that was
  # already loaded is still the current one.
  defp reloading?, do: :erlang.module_loaded(__MODULE__)

  defp nif_path do
    case :code.priv_dir(@app) do
      {:error, _} -> Path.join([Application.app_dir(@app), "priv", "native", "libex_mcp_nif"])
      priv -> Path.join([to_string(priv), "native", "libex_mcp_nif"])
    end
    |> String.to_charlist()
  end

  # NIF stubs. Each body runs only when the library is not loaded;
  # :erlang.nif_error/1 tells Dialyzer so, and the @spec states what the NIF
  # returns.

  @typedoc "A call in flight: a NIF resource; dropping it aborts the call."
  @type pending() :: reference()
  @typedoc "A running embedded server: a NIF resource."
  @type server() :: reference()
  @typedoc "A call NIF's immediate answer: started, or refused before anything was sent."
  @type started() :: {:ok, pending()} | {:error, term()}

  @spec register_nif(map(), map(), reference()) :: started() | :reschedule
  def register_nif(_request, _options, _ref), do: not_loaded()
  @spec register_dirty(map(), map(), reference()) :: started()
  def register_dirty(_request, _options, _ref), do: not_loaded()
  @spec get(String.t(), String.t(), map(), reference()) :: started()
  def get(_uri, _token, _options, _ref), do: not_loaded()
  @spec update_nif(String.t(), String.t(), map(), boolean(), map(), reference()) :: started() | :reschedule
  def update_nif(_uri, _token, _updates, _replace, _options, _ref), do: not_loaded()
  @spec update_dirty(String.t(), String.t(), map(), boolean(), map(), reference()) :: started()
  def update_dirty(_uri, _token, _updates, _replace, _options, _ref), do: not_loaded()
  @spec delete(String.t(), String.t(), map(), reference()) :: started()
  def delete(_uri, _token, _options, _ref), do: not_loaded()
  @spec discover(String.t(), map(), map(), reference()) :: started()
  def discover(_server_url, _discover_options, _options, _ref), do: not_loaded()
  @spec cancel(pending()) :: :cancelled | :delivered
  def cancel(_pending), do: not_loaded()
  @spec in_flight() :: non_neg_integer()
  def in_flight, do: not_loaded()
  @spec option_defaults() :: %{atom() => pos_integer()}
  def option_defaults, do: not_loaded()
  @spec check_options(map()) :: :ok | {:error, {:invalid_option, atom(), String.t()}}
  def check_options(_options), do: not_loaded()
  @spec json_encode(term(), boolean()) :: {:ok, String.t()} | {:error, String.t()}
  def json_encode(_term, _pretty), do: not_loaded()
  @spec json_decode(binary()) :: {:ok, term()} | {:error, String.t()}
  def json_decode(_text), do: not_loaded()
  @spec decode_reply_dirty(binary()) :: term()
  def decode_reply_dirty(_reply), do: not_loaded()
  @spec client_metadata_document(String.t(), map(), boolean()) :: {:ok, map()} | {:error, term()}
  def client_metadata_document(_url, _metadata, _allow_loopback_http), do: not_loaded()

  @spec loopback_url(String.t()) :: boolean()
  def loopback_url(_url), do: not_loaded()
  @spec write_private_file(String.t(), binary()) :: :ok | {:error, String.t()}
  def write_private_file(_path, _contents), do: not_loaded()

  @doc false
  @spec create_private_dir(String.t()) :: :ok | {:error, String.t()}
  def create_private_dir(_path), do: not_loaded()

  @doc false
  @spec lock_file(String.t()) :: {:ok, reference()} | {:error, :locked | String.t()}
  def lock_file(_path), do: not_loaded()

  # The embedded registration server (ExMCP.Authorization.RegistrationServer).
  @spec server_check_config(map()) :: :ok | {:error, {:invalid_option, atom(), String.t()}}
  def server_check_config(_config), do: not_loaded()
  @spec server_defaults() :: map()
  def server_defaults, do: not_loaded()
  @spec server_start(map()) :: {:ok, server()} | {:error, term()}
  def server_start(_config), do: not_loaded()
  @spec server_stop(server()) :: :ok | {:error, :timeout}
  def server_stop(_server), do: not_loaded()
  @spec server_info(server()) :: map()
  def server_info(_server), do: not_loaded()
  @spec server_lookup(server(), String.t()) :: binary()
  def server_lookup(_server, _client_id), do: not_loaded()
  @spec server_list(server()) :: [map()]
  def server_list(_server), do: not_loaded()
  @spec server_count(server()) :: non_neg_integer()
  def server_count(_server), do: not_loaded()

  @no_test_hooks "this NIF library was built without the test-hooks cargo feature"

  # Test hooks: NIFs that exist only when the crate is built with its
  # `test-hooks` feature (MIX_ENV=test). Elsewhere these stubs stay.
  @spec panic_next_call() :: :ok
  def panic_next_call,
    do: :erlang.nif_error(load_error(@no_test_hooks))

  @spec etf_encode_json(term()) :: binary() | {:error, String.t()}
  def etf_encode_json(_term),
    do: :erlang.nif_error(load_error(@no_test_hooks))

  @spec reply_atom_names() :: [String.t()]
  def reply_atom_names,
    do: :erlang.nif_error(load_error(@no_test_hooks))

  @spec calls_started() :: non_neg_integer()
  def calls_started, do: :erlang.nif_error(load_error(@no_test_hooks))
  @spec hold_next_delivery() :: :ok
  def hold_next_delivery, do: :erlang.nif_error(load_error(@no_test_hooks))

  defp not_loaded, do: :erlang.nif_error(load_error("the ExMCP registration NIF is not loaded"))

  # Why the NIF is missing: the load error if the library did not load,
  # else `otherwise`. A RuntimeError, so that callers can rescue it.
  defp load_error(otherwise) do
    RuntimeError.exception(:persistent_term.get({__MODULE__, :load_error}, otherwise))
  end

  @doc "Starts a registration: on a normal scheduler, or a dirty one for a large request."
  @spec register(map(), map(), reference()) :: started()
  def register(request, options, ref) do
    with :reschedule <- register_nif(request, options, ref),
         do: register_dirty(request, options, ref)
  end

  @doc "Starts an update: on a normal scheduler, or a dirty one for a large `updates` map."
  @spec update(String.t(), String.t(), map(), boolean(), map(), reference()) :: started()
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
  @spec call((reference() -> started()), timeout()) :: term()
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
