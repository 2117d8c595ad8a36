defmodule ExMCP.Authorization.ClientStore.AESGCM do
  @moduledoc """
  AES-256-GCM for the `:cipher` option of the DETS and Mnesia client stores
  (see `ExMCP.Authorization.ClientStore.Cipher`), with OTP's `:crypto`.

  `config` is a function of no arguments, or an `{module, function, args}`
  tuple, that returns the 32-byte key. It is called at each encryption and
  decryption, so the key can come from an environment variable or a secret
  manager, and never sits in the child spec:

      {ExMCP.Authorization.ClientStore.DETS,
       name: MyApp.Clients,
       path: "/var/lib/my_app/mcp_clients.dets",
       cipher: {ExMCP.Authorization.ClientStore.AESGCM, {MyApp.Secrets, :client_store_key, []}}}

  Each entry gets a fresh random 96-bit nonce; the stored form is a version
  byte, the nonce, the 128-bit tag and the ciphertext.
  """

  @behaviour ExMCP.Authorization.ClientStore.Cipher

  @version 1
  @aad "ExMCP.Authorization.ClientStore"

  @impl true
  def encrypt(plaintext, key_source) do
    nonce = :crypto.strong_rand_bytes(12)

    {ciphertext, tag} =
      :crypto.crypto_one_time_aead(:aes_256_gcm, key!(key_source), nonce, plaintext, @aad, true)

    <<@version, nonce::binary, tag::binary, ciphertext::binary>>
  end

  @impl true
  def decrypt(<<@version, nonce::binary-size(12), tag::binary-size(16), ciphertext::binary>>, key_source) do
    case :crypto.crypto_one_time_aead(:aes_256_gcm, key!(key_source), nonce, ciphertext, @aad, tag, false) do
      plaintext when is_binary(plaintext) -> {:ok, plaintext}
      :error -> :error
    end
  end

  def decrypt(_ciphertext, _key_source), do: :error

  defp key!(source) do
    key =
      case source do
        fun when is_function(fun, 0) ->
          fun.()

        {module, function, args} when is_atom(module) and is_atom(function) and is_list(args) ->
          apply(module, function, args)

        _ ->
          raise ArgumentError, "the AESGCM key source must be a 0-arity function or {module, function, args}"
      end

    if is_binary(key) and byte_size(key) == 32,
      do: key,
      else: raise(ArgumentError, "the AESGCM key source must return a 32-byte binary")
  end
end
