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

  import Bitwise

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

  @doc "Decodes a JSON binary; raises `ArgumentError` on anything invalid."
  @spec decode!(binary()) :: term()
  def decode!(json) when is_binary(json) do
    {value, rest} = value(skip_ws(json))

    case skip_ws(rest) do
      "" -> value
      rest -> fail(rest, "unexpected data after the value")
    end
  end

  defp skip_ws(<<c, rest::binary>>) when c in [?\s, ?\t, ?\r, ?\n], do: skip_ws(rest)
  defp skip_ws(rest), do: rest

  defp value("{" <> rest), do: object(skip_ws(rest))
  defp value("[" <> rest), do: array(skip_ws(rest))
  defp value("\"" <> rest), do: string(rest, [])
  defp value("true" <> rest), do: {true, rest}
  defp value("false" <> rest), do: {false, rest}
  defp value("null" <> rest), do: {nil, rest}
  defp value(<<c, _::binary>> = json) when c == ?- or c in ?0..?9, do: number(json)
  defp value(rest), do: fail(rest, "expected a value")

  defp object("}" <> rest), do: {%{}, rest}
  defp object(json), do: members(json, %{})

  defp members("\"" <> rest, acc) do
    {key, rest} = string(rest, [])

    rest =
      case skip_ws(rest) do
        ":" <> rest -> skip_ws(rest)
        rest -> fail(rest, "expected ':' after an object key")
      end

    {value, rest} = value(rest)
    acc = Map.put(acc, key, value)

    case skip_ws(rest) do
      "," <> rest -> members(skip_ws(rest), acc)
      "}" <> rest -> {acc, rest}
      rest -> fail(rest, "expected ',' or '}' in an object")
    end
  end

  defp members(rest, _acc), do: fail(rest, "expected a string object key")

  defp array("]" <> rest), do: {[], rest}
  defp array(json), do: elements(json, [])

  defp elements(json, acc) do
    {value, rest} = value(json)

    case skip_ws(rest) do
      "," <> rest -> elements(skip_ws(rest), [value | acc])
      "]" <> rest -> {Enum.reverse([value | acc]), rest}
      rest -> fail(rest, "expected ',' or ']' in an array")
    end
  end

  defp string("\"" <> rest, acc) do
    string = IO.iodata_to_binary(acc)
    if String.valid?(string), do: {string, rest}, else: fail(rest, "a string is not valid UTF-8")
  end

  defp string("\\" <> rest, acc), do: string_escape(rest, acc)
  defp string(<<c, _::binary>> = rest, _acc) when c < 0x20, do: fail(rest, "unescaped control character")
  defp string(<<c, rest::binary>>, acc), do: string(rest, [acc, c])
  defp string(<<>>, _acc), do: fail(<<>>, "unterminated string")

  @simple_escapes %{?" => ?", ?\\ => ?\\, ?/ => ?/, ?b => ?\b, ?f => ?\f, ?n => ?\n, ?r => ?\r, ?t => ?\t}

  defp string_escape(<<c, rest::binary>>, acc) when is_map_key(@simple_escapes, c),
    do: string(rest, [acc, Map.fetch!(@simple_escapes, c)])

  defp string_escape(<<?u, hex::binary-size(4), rest::binary>> = json, acc) do
    case hex4(hex) do
      high when high in 0xD800..0xDBFF ->
        with <<?\\, ?u, low_hex::binary-size(4), rest::binary>> <- rest,
             low when low in 0xDC00..0xDFFF <- hex4(low_hex) do
          code = 0x10000 + ((high - 0xD800) <<< 10) + (low - 0xDC00)
          string(rest, [acc, <<code::utf8>>])
        else
          _ -> fail(json, "lone high surrogate")
        end

      low when low in 0xDC00..0xDFFF ->
        fail(json, "lone low surrogate")

      code when is_integer(code) ->
        string(rest, [acc, <<code::utf8>>])

      :error ->
        fail(json, "invalid \\u escape")
    end
  end

  defp string_escape(rest, _acc), do: fail(rest, "invalid escape")

  defp hex4(hex) do
    if hex =~ ~r/\A[0-9a-fA-F]{4}\z/, do: String.to_integer(hex, 16), else: :error
  end

  @number ~r/\A(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][+-]?[0-9]+)?/

  defp number(json) do
    case Regex.run(@number, json) do
      nil ->
        fail(json, "invalid number")

      [text | groups] ->
        rest = binary_part(json, byte_size(text), byte_size(json) - byte_size(text))

        case groups do
          [integer] ->
            {String.to_integer(integer), rest}

          [integer, fraction | exponent] ->
            fraction = if fraction == "", do: ".0", else: fraction
            {String.to_float(integer <> fraction <> Enum.join(exponent)), rest}
        end
    end
  end

  defp fail(rest, message) do
    raise ArgumentError, "invalid JSON: #{message} at #{inspect(binary_slice(rest, 0, 20))}"
  end
end
