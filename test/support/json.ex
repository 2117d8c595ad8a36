defmodule ExMCP.Test.JSON do
  @moduledoc """
  A small, strict JSON encoder and decoder for tests (OTP 25 has no `:json`
  and hex.pm is out of reach, so no Jason).

  `decode!/1` follows RFC 8259: objects become maps with string keys (the
  last duplicate wins), arrays lists, `null` `nil`; strings handle every
  escape, `\\u` surrogate pairs included, and must be valid UTF-8. Anything
  else raises `ArgumentError`.

  `encode!/1` turns maps (atom or string keys), lists, strings, integers,
  floats, `true`, `false` and `nil` into JSON. Other atoms become strings.
  Non-ASCII text is written as raw UTF-8.
  """

  # -- Encoding ----------------------------------------------------------------

  @doc "Encodes a term as a JSON binary."
  @spec encode!(term()) :: binary()
  def encode!(term), do: term |> encode() |> IO.iodata_to_binary()

  defp encode(nil), do: "null"
  defp encode(true), do: "true"
  defp encode(false), do: "false"
  defp encode(atom) when is_atom(atom), do: encode_string(Atom.to_string(atom))
  defp encode(string) when is_binary(string), do: encode_string(string)
  defp encode(integer) when is_integer(integer), do: Integer.to_string(integer)
  defp encode(float) when is_float(float), do: Float.to_string(float)

  defp encode(list) when is_list(list), do: ["[", Enum.map_intersperse(list, ",", &encode/1), "]"]

  defp encode(map) when is_map(map) and not is_struct(map) do
    members = Enum.map_intersperse(map, ",", fn {key, value} -> [encode_key(key), ":", encode(value)] end)

    ["{", members, "}"]
  end

  defp encode(other), do: raise(ArgumentError, "cannot encode #{inspect(other)} as JSON")

  defp encode_key(key) when is_binary(key), do: encode_string(key)

  defp encode_key(key) when is_atom(key) and key not in [nil, true, false],
    do: encode_string(Atom.to_string(key))

  defp encode_key(key), do: raise(ArgumentError, "JSON object keys must be strings, got #{inspect(key)}")

  defp encode_string(string) do
    unless String.valid?(string), do: raise(ArgumentError, "cannot encode invalid UTF-8 as a JSON string")
    [?", escape(string, []), ?"]
  end

  defp escape(<<>>, acc), do: Enum.reverse(acc)
  defp escape(<<?", rest::binary>>, acc), do: escape(rest, ["\\\"" | acc])
  defp escape(<<?\\, rest::binary>>, acc), do: escape(rest, ["\\\\" | acc])
  defp escape(<<?\n, rest::binary>>, acc), do: escape(rest, ["\\n" | acc])
  defp escape(<<?\r, rest::binary>>, acc), do: escape(rest, ["\\r" | acc])
  defp escape(<<?\t, rest::binary>>, acc), do: escape(rest, ["\\t" | acc])

  defp escape(<<c, rest::binary>>, acc) when c < 0x20,
    do: escape(rest, ["\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0") | acc])

  defp escape(<<c, rest::binary>>, acc), do: escape(rest, [c | acc])

  # -- Decoding ----------------------------------------------------------------

  @doc """
  Decodes a JSON binary; raises `ArgumentError` on anything invalid. The
  decoder is the Mix compiler's (mix/native_compiler.exs), the one JSON
  reader written in Elixir in this project.
  """
  @spec decode!(binary()) :: term()
  def decode!(json) when is_binary(json) do
    case Mix.Tasks.Compile.ExMcpNative.JSON.decode(json) do
      {:ok, value} -> value
      {:error, :invalid} -> raise ArgumentError, "invalid JSON: #{inspect(json, limit: 80)}"
    end
  end
end
