defmodule ExMCP.Build.EtfWriterTest do
  # The NIF writes every reply as external term format (etf.rs) and the caller
  # decodes it with :erlang.binary_to_term(reply, [:safe]). These tests hold
  # the writer to the VM's own encoder (erts external term format) and tie
  # the atoms a reply may hold to the ones created when the NIF loads
  # (issue 9.15). They need the `test-hooks` NIF build (MIX_ENV=test).
  use ExUnit.Case, async: true

  import Bitwise

  alias ExMCP.Authorization.Native

  @etf_rs Path.expand("../../native/ex_mcp_nif/src/etf.rs", __DIR__)

  test "round trip: generated JSON values decode to themselves, as :erlang.term_to_binary would encode them" do
    seed = :erlang.unique_integer([:positive])
    :rand.seed(:exsss, {seed, 7, 11})

    for _ <- 1..2_000 do
      term = ExMCP.Test.Generate.json(5)
      bytes = Native.etf_encode_json(term)
      assert is_binary(bytes), "seed #{seed}: #{inspect(term)}"

      decoded = :erlang.binary_to_term(bytes, [:safe])
      assert decoded === term, "seed #{seed}: #{inspect(term)}"
      # Byte for byte like the VM's encoder whenever the term has no map,
      # whose key order the VM chooses (and, for small maps, is sorted).
      assert :erlang.term_to_binary(decoded) == :erlang.term_to_binary(term), "seed #{seed}"
    end
  end

  test "integers use the smallest encoding, as the VM's encoder does, at every boundary" do
    for n <-
          [0, 255, 256, -1, 2_147_483_647, 2_147_483_648, -2_147_483_648, -2_147_483_649] ++
            [1 <<< 40, -(1 <<< 63), (1 <<< 63) - 1, (1 <<< 64) - 1] do
      assert Native.etf_encode_json(n) == :erlang.term_to_binary(n), inspect(n)
    end

    for f <- [0.0, -0.0, 1.5, 5.0e-324, 1.7976931348623157e308] do
      assert Native.etf_encode_json(f) == :erlang.term_to_binary(f, minor_version: 1), inspect(f)
    end

    for s <- ["", "a", "é中😀", <<0>>] do
      assert Native.etf_encode_json([s]) == :erlang.term_to_binary([s]), inspect(s)
    end
  end

  test "every atom the writer can write is created when the NIF loads" do
    # Atoms written in etf.rs are literals given to `atom("...")` or
    # `tagged("...", ...)`; field names come from the metadata table, which
    # reply_atom_names/0 includes.
    literals =
      Regex.scan(~r/\b(?:atom|tagged)\(\s*"([a-z_]+)"/, File.read!(@etf_rs), capture: :all_but_first)
      |> List.flatten()
      |> Enum.uniq()

    assert "registration_error" in literals and "missing_required_fields" in literals
    names = Native.reply_atom_names()

    for literal <- literals do
      assert literal in names, "etf.rs writes :#{literal}, which reply_atom_names/0 (REPLY_ATOMS) lacks"
    end

    # And each name exists as an atom, so binary_to_term(reply, [:safe]) never has to create one.
    for name <- names, do: assert(is_atom(String.to_existing_atom(name)))
  end
end
