defmodule ExMCP.Authorization.ClientStore.Cipher do
  @moduledoc """
  The optional encryption hook of the DETS and Mnesia client stores: with
  `cipher: {module, config}`, each stored client is written as
  `{:sealed, module.encrypt(:erlang.term_to_binary(client), config)}`
  instead of the plain map, and decrypted when read.

  `ExMCP.Authorization.ClientStore.AESGCM` is one implementation
  (AES-256-GCM with OTP's `:crypto`). Keep the key out of the store's
  options when you can: `config` is part of the child spec, which a
  supervisor prints in its reports, so pass a function that fetches the
  key rather than the key itself.

  A store started without a cipher refuses sealed entries with
  `{:error, {:client_store, message}}`; a store with a cipher reads plain
  entries (written before the cipher was set) and seals them on their next
  write. An entry the cipher cannot decrypt (another key) is an error, not
  a miss, so it is never silently replaced.
  """

  @doc "Encrypts `plaintext` (an Erlang term in external format)."
  @callback encrypt(plaintext :: binary(), config :: term()) :: binary()

  @doc "Decrypts what `encrypt/2` returned; `:error` when it cannot (wrong key, tampered data)."
  @callback decrypt(ciphertext :: binary(), config :: term()) :: {:ok, binary()} | :error

  alias ExMCP.Authorization.ClientStore

  @doc false
  # Checked when the store starts, in the caller: a module with both
  # callbacks, and a round trip that works; otherwise ArgumentError.
  @spec check!(term(), module()) :: :ok
  def check!(nil, _adapter), do: :ok

  def check!({module, config}, adapter) when is_atom(module) do
    case round_trip(module, config) do
      :ok -> :ok
      {:error, message} -> raise ArgumentError, "#{inspect(adapter)}: #{message}"
    end
  end

  def check!(other, adapter),
    do:
      raise(
        ArgumentError,
        "#{inspect(adapter)}: option :cipher must be {module, config}, got: #{inspect(other, limit: 3, printable_limit: 20)}"
      )

  defp round_trip(module, config) do
    probe = :erlang.term_to_binary({:probe, System.unique_integer()})

    cond do
      not (Code.ensure_loaded?(module) and function_exported?(module, :encrypt, 2) and
               function_exported?(module, :decrypt, 2)) ->
        {:error, "the cipher #{inspect(module)} does not export encrypt/2 and decrypt/2"}

      apply_decrypt(module, apply_encrypt(module, probe, config), config) != {:ok, probe} ->
        {:error, "the cipher #{inspect(module)} does not decrypt what it encrypts"}

      true ->
        :ok
    end
  rescue
    exception -> {:error, "the cipher raised #{inspect(exception.__struct__)} on a test round trip"}
  end

  # Only the cipher's own callbacks are called; the indirection keeps
  # Dialyzer from assuming any particular module.
  defp apply_encrypt(module, plaintext, config), do: module.encrypt(plaintext, config)
  defp apply_decrypt(module, ciphertext, config), do: module.decrypt(ciphertext, config)

  @doc false
  # The store's cipher, for the processes that read and write (any process,
  # not only the store's own).
  @spec configure(term(), {module(), term()} | nil) :: :ok
  def configure(store_id, nil) do
    _ = :persistent_term.erase({__MODULE__, store_id})
    :ok
  end

  def configure(store_id, cipher), do: :persistent_term.put({__MODULE__, store_id}, cipher)

  @doc false
  @spec seal(term(), map()) :: map() | {:sealed, binary()}
  def seal(store_id, client) do
    case :persistent_term.get({__MODULE__, store_id}, nil) do
      nil -> client
      {module, config} -> {:sealed, module.encrypt(:erlang.term_to_binary(client), config)}
    end
  end

  @doc false
  @spec open(term(), term()) :: {:ok, map()} | {:error, ClientStore.error()}
  def open(_store_id, %{} = client), do: {:ok, client}

  def open(store_id, {:sealed, ciphertext}) when is_binary(ciphertext) do
    with {module, config} <- :persistent_term.get({__MODULE__, store_id}, nil),
         {:ok, plaintext} <- module.decrypt(ciphertext, config),
         %{} = client <- :erlang.binary_to_term(plaintext, [:safe]) do
      {:ok, client}
    else
      nil -> {:error, {:client_store, "a stored client is encrypted and this store has no :cipher"}}
      _ -> {:error, {:client_store, "a stored client could not be decrypted (another key, or damaged data)"}}
    end
  rescue
    ArgumentError ->
      {:error, {:client_store, "a stored client could not be decrypted (another key, or damaged data)"}}
  end

  def open(_store_id, _other), do: {:error, {:client_store, "a stored entry is not a client"}}

  @doc false
  @spec open_all(term(), [{key, term()}]) :: {:ok, [{key, map()}]} | {:error, ClientStore.error()}
        when key: term()
  def open_all(store_id, entries) do
    Enum.reduce_while(entries, {:ok, []}, fn {key, stored}, {:ok, acc} ->
      case open(store_id, stored) do
        {:ok, client} -> {:cont, {:ok, [{key, client} | acc]}}
        error -> {:halt, error}
      end
    end)
  end
end
