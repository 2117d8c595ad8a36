defmodule ExMCP.Authorization.Native do
  @moduledoc false
  # The NIF stubs and the "reply later" protocol. Each call NIF checks its
  # arguments, spawns the work on tokio and returns `{:ok, pending}` at once;
  # the result arrives as `{ref, result}`. The `server_*` NIFs drive the
  # embedded registration server. Users never call this module.

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

  def register(_request, _options, _ref), do: not_loaded()
  def get(_uri, _token, _options, _ref), do: not_loaded()
  def update(_uri, _token, _updates, _replace, _options, _ref), do: not_loaded()
  def delete(_uri, _token, _options, _ref), do: not_loaded()
  def cancel(_pending), do: not_loaded()
  def in_flight, do: not_loaded()
  def option_defaults, do: not_loaded()
  def bearer_token(_token), do: not_loaded()
  def json_encode(_term, _pretty), do: not_loaded()
  def json_decode(_text), do: not_loaded()

  # The embedded registration server (ExMCP.Authorization.RegistrationServer).
  def server_start(_config), do: not_loaded()
  def server_stop(_server), do: not_loaded()
  def server_info(_server), do: not_loaded()
  def server_lookup(_server, _client_id), do: not_loaded()
  def server_list(_server), do: not_loaded()
  def server_count(_server), do: not_loaded()

  # Test hooks: NIFs that exist only when the crate is built with its
  # `test-hooks` feature (MIX_ENV=test). Elsewhere these stubs stay.
  def panic_next_call, do: test_hook_missing()
  def etf_encode_json(_term), do: test_hook_missing()
  def reply_atom_names, do: test_hook_missing()

  defp test_hook_missing do
    case :persistent_term.get({__MODULE__, :load_error}, nil) do
      nil -> raise RuntimeError, "this NIF library was built without the test-hooks cargo feature"
      message -> raise RuntimeError, message
    end
  end

  defp not_loaded do
    raise RuntimeError,
          :persistent_term.get(
            {__MODULE__, :load_error},
            "the ExMCP registration NIF is not loaded"
          )
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
  defp decode(reply), do: :erlang.binary_to_term(reply, [:safe])
end
