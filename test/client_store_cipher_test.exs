defmodule ExMCP.ClientStoreCipherTest do
  # The optional encryption hook (ClientStore.Cipher) of the DETS and Mnesia
  # stores, with the built-in AES-256-GCM: no secret in the file, the right
  # key reads it back, another key or no cipher is an error, never a miss.
  use ExUnit.Case, async: false

  alias ExMCP.Authorization.ClientStore
  alias ExMCP.Authorization.ClientStore.AESGCM

  @moduletag :tmp_dir

  @issuer "https://auth.example.com"
  @key :crypto.strong_rand_bytes(32)
  @other_key :crypto.strong_rand_bytes(32)

  defp client do
    %{
      client_id: "cipher-client",
      client_secret: "s3cr3t-client-secret-value",
      registration_access_token: "r3g-access-token-value",
      registration_client_uri: "https://auth.example.com/register/cipher-client",
      issuer: @issuer,
      registration_method: :dynamic,
      token_endpoint_auth_method: "client_secret_basic"
    }
  end

  def key(which), do: if(which == :right, do: @key, else: @other_key)

  test "DETS: the file holds no secret, the same key reads it after a restart, another key is an error",
       %{tmp_dir: dir} do
    path = Path.join(dir, "sealed.dets")
    cipher = {AESGCM, {__MODULE__, :key, [:right]}}
    store = {ClientStore.DETS, :sealed_dets}

    pid = start_supervised!({ClientStore.DETS, name: :sealed_dets, path: path, cipher: cipher})
    assert :ok = ClientStore.put(store, @issuer, "default", client())
    assert {:ok, client()} == ClientStore.get(store, @issuer, "default")
    assert {:ok, [{{@issuer, "default"}, client()}]} == ClientStore.list(store)

    file = File.read!(path)
    refute file =~ "s3cr3t-client-secret-value"
    refute file =~ "r3g-access-token-value"

    ref = Process.monitor(pid)
    :ok = stop_supervised({ClientStore.DETS, :sealed_dets})
    assert_receive {:DOWN, ^ref, :process, _, _}

    start_supervised!({ClientStore.DETS, name: :sealed_dets, path: path, cipher: cipher})
    assert {:ok, client()} == ClientStore.get(store, @issuer, "default")
    :ok = stop_supervised({ClientStore.DETS, :sealed_dets})

    start_supervised!(
      {ClientStore.DETS, name: :sealed_dets, path: path, cipher: {AESGCM, {__MODULE__, :key, [:other]}}}
    )

    assert {:error, {:client_store, "a stored client could not be decrypted (another key, or damaged data)"}} =
             ClientStore.get(store, @issuer, "default")

    :ok = stop_supervised({ClientStore.DETS, :sealed_dets})

    start_supervised!({ClientStore.DETS, name: :sealed_dets, path: path})

    assert {:error, {:client_store, "a stored client is encrypted and this store has no :cipher"}} =
             ClientStore.get(store, @issuer, "default")
  end

  test "Mnesia: records are sealed, and read back", %{tmp_dir: _dir} do
    {:ok, _} = Application.ensure_all_started(:mnesia)
    table = :"sealed_mnesia_#{System.unique_integer([:positive])}"
    start_supervised!({ClientStore.Mnesia, table: table, cipher: {AESGCM, fn -> @key end}})

    store = {ClientStore.Mnesia, table}
    assert :ok = ClientStore.put(store, @issuer, "default", client())

    assert [{^table, {@issuer, "default"}, {:sealed, ciphertext}}] =
             :mnesia.dirty_read(table, {@issuer, "default"})

    refute ciphertext =~ "s3cr3t-client-secret-value"
    assert {:ok, client()} == ClientStore.get(store, @issuer, "default")
  end

  test "a cipher that does not round-trip, or a malformed :cipher, raises ArgumentError naming it", %{
    tmp_dir: dir
  } do
    path = Path.join(dir, "bad.dets")

    assert_raise ArgumentError, ~r/option :cipher must be \{module, config\}/, fn ->
      ClientStore.DETS.start_link(name: :bad_cipher, path: path, cipher: "key")
    end

    assert_raise ArgumentError, ~r/String does not export encrypt\/2 and decrypt\/2/, fn ->
      ClientStore.DETS.start_link(name: :bad_cipher, path: path, cipher: {String, nil})
    end

    assert_raise ArgumentError, ~r/raised ArgumentError on a test round trip/, fn ->
      ClientStore.DETS.start_link(name: :bad_cipher, path: path, cipher: {AESGCM, fn -> "short" end})
    end

    refute File.exists?(path)
  end

  test "AESGCM refuses tampered data" do
    sealed = AESGCM.encrypt("plain", fn -> @key end)
    <<head::binary-size(byte_size(sealed) - 1), last>> = sealed
    assert :error = AESGCM.decrypt(<<head::binary, Bitwise.bxor(last, 1)>>, fn -> @key end)
    assert :error = AESGCM.decrypt("short", fn -> @key end)
    assert {:ok, "plain"} = AESGCM.decrypt(sealed, fn -> @key end)
  end
end
