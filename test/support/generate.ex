defmodule ExMCP.Test.Generate do
  @moduledoc """
  Random JSON-shaped terms for property tests (StreamData is a hex package,
  so it is not available). Uses the process's `:rand` state: a test seeds it
  with `:rand.seed/2` and reports the seed when a case fails.
  """

  import Bitwise

  @doc """
  A JSON-representable term at most `depth` levels deep: maps with string
  keys, lists, binaries (ASCII, Unicode, escapes), integers across every ETF
  integer size, floats, `true`, `false` and `nil`.
  """
  @spec json(non_neg_integer()) :: term()
  def json(depth) do
    case :rand.uniform(if depth > 0, do: 8, else: 6) do
      1 -> Enum.random([nil, true, false])
      2 -> integer()
      3 -> float()
      4 -> string()
      5 -> string()
      6 -> integer()
      7 -> for _ <- 1..:rand.uniform(6)//1, do: json(depth - 1)
      8 -> Map.new(1..:rand.uniform(6)//1, fn _ -> {string(), json(depth - 1)} end)
    end
  end

  # Edges of SMALL_INTEGER_EXT, INTEGER_EXT and SMALL_BIG_EXT, and values between.
  @edges [0, 1, 255, 256, -1, -128, 2_147_483_647, 2_147_483_648, -2_147_483_648, -2_147_483_649] ++
           [
             9_223_372_036_854_775_807,
             -9_223_372_036_854_775_808,
             18_446_744_073_709_551_615,
             1_099_511_627_776
           ]

  @doc "An integer in JSON's 64-bit range, edges of each encoding included."
  @spec integer() :: integer()
  def integer do
    case :rand.uniform(3) do
      1 -> Enum.random(@edges)
      2 -> :rand.uniform(1 <<< 64) - (1 <<< 63)
      3 -> :rand.uniform(70_000) - 35_000
    end
  end

  @doc "A finite float: small, huge, tiny or negative zero."
  @spec float() :: float()
  def float do
    case :rand.uniform(4) do
      1 -> :rand.uniform() * 1000 - 500
      2 -> :rand.normal() * 1.0e300
      3 -> :rand.uniform() * 1.0e-300
      4 -> Enum.random([0.0, 1.5, -2.25, 1.0e15, 5.0e-324])
    end
  end

  @alphabet Enum.concat([?a..?z, [?", ?\\, ?/, ?\n, ?\t, 0, 0x1F, ?\s, 0xE9, 0x4E2D, 0x1F600]])
  @doc "A string of ASCII, control characters, quotes and non-BMP characters."
  @spec string() :: String.t()
  def string do
    for _ <- 1..:rand.uniform(12)//1, into: "", do: <<Enum.random(@alphabet)::utf8>>
  end
end
