defmodule Mix.Tasks.Compile.ExMcpNative do
  @shortdoc "Builds the ex_mcp_nif Rust crate (or takes a prebuilt one) and installs it into priv/native"
  @moduledoc """
  Installs the NIF library that `ExMCP.Authorization.Native` loads from the
  application's `priv/native/libex_mcp_nif.so`.

  ## Where the library comes from

    * **A prebuilt library.** When the environment variable
      `EX_MCP_REGISTRATION_NIF_PATH`, or else the application setting
      `config :ex_mcp_registration, nif_path: "/path/libex_mcp_nif.so"`, names a
      file, that file is installed and cargo is never run (a Docker image, a
      machine without Rust).
    * **cargo.** Otherwise `cargo build --release --locked -p ex_mcp_nif` runs on
      every compile: cargo alone decides what is stale (sources, toolchain,
      `RUSTFLAGS`, `.cargo/config.toml`), and a no-op run takes about 0.1 s. The
      library's path is read from cargo's `compiler-artifact` message
      (`--message-format=json-render-diagnostics`), so `CARGO_TARGET_DIR`,
      `build.target-dir` and cross builds work. A cross target comes from
      `CARGO_BUILD_TARGET` (cargo reads it itself) or from
      `config :ex_mcp_registration, nif_target: "aarch64-unknown-linux-gnu"`.
      Set `CARGO` to use a specific cargo binary. In `MIX_ENV=test` the crate's
      `test-hooks` feature is enabled; other builds never contain the test hooks.

  The library is copied only when its bytes changed, and a macOS `.dylib` is
  installed under the `.so` name that `:erlang.load_nif/2` looks for.
  `mix clean` removes the installed library.
  """
  use Mix.Task.Compiler

  @crate "ex_mcp_nif"
  @app :ex_mcp_registration
  @root Path.expand("..", __DIR__)
  @path_env "EX_MCP_REGISTRATION_NIF_PATH"

  @impl Mix.Task.Compiler
  def run(_args) do
    source =
      case prebuilt_path() do
        nil -> build!()
        path -> prebuilt!(path)
      end

    if install!(source, installed_path()), do: {:ok, []}, else: {:noop, []}
  end

  @impl Mix.Task.Compiler
  def clean do
    File.rm(installed_path())
    File.rm(installed_path() <> ".tmp")
    :ok
  end

  @doc false
  def installed_path do
    Path.join([Mix.Project.app_path(), "priv", "native", "lib#{@crate}.so"])
  end

  @doc false
  def prebuilt_path do
    case System.get_env(@path_env) do
      path when is_binary(path) and path != "" -> path
      _ -> Application.get_env(@app, :nif_path)
    end
  end

  defp prebuilt!(path) do
    if File.regular?(path) do
      path
    else
      Mix.raise(
        "#{@path_env} (or the :nif_path setting) names #{inspect(path)}, which is not a file. " <>
          "Point it at a libex_mcp_nif.so built by `mix compile` or `cargo build --release -p #{@crate}`, " <>
          "or unset it to build with cargo."
      )
    end
  end

  @doc false
  # The cargo arguments for this build.
  def cargo_args(env \\ Mix.env(), target \\ Application.get_env(@app, :nif_target)) do
    ["build", "--release", "--locked", "-p", @crate, "--message-format=json-render-diagnostics"] ++
      if(target, do: ["--target", target], else: []) ++
      if(env == :test, do: ["--features", "test-hooks"], else: [])
  end

  defp build! do
    cargo = cargo!()
    args = cargo_args()

    # stdout carries cargo's JSON messages; stderr (progress and rendered
    # diagnostics) goes straight to the terminal.
    case System.cmd(cargo, args, cd: @root) do
      {messages, 0} ->
        artifact(messages) ||
          Mix.raise("`cargo #{Enum.join(args, " ")}` succeeded but reported no cdylib artifact for #{@crate}")

      {_, status} ->
        Mix.raise("""
        Building the NIF crate #{@crate} failed: `cargo #{Enum.join(args, " ")}` exited with #{status}.
        The cargo output above says why. ExMCP.Authorization.ClientRegistration cannot work without it.
        To use a library built elsewhere, set #{@path_env}.
        """)
    end
  end

  @doc false
  # The cdylib's path from cargo's JSON messages (one object per line), or nil.
  def artifact(messages) do
    messages
    |> String.split("\n", trim: true)
    |> Enum.filter(&String.contains?(&1, ~s("compiler-artifact")))
    |> Enum.flat_map(fn line ->
      case __MODULE__.JSON.decode(line) do
        {:ok, %{"reason" => "compiler-artifact", "target" => %{"name" => @crate, "kind" => kinds}} = msg} ->
          if "cdylib" in kinds, do: msg["filenames"], else: []

        _ ->
          []
      end
    end)
    |> Enum.find(&(Path.extname(&1) in [".so", ".dylib"]))
  end

  defp cargo! do
    candidates = [System.get_env("CARGO"), System.find_executable("cargo"), Path.expand("~/.cargo/bin/cargo")]

    Enum.find(candidates, &(is_binary(&1) and File.regular?(&1))) ||
      Mix.raise("""
      cargo was not found, so the NIF crate #{@crate} cannot be built.
      Install a Rust toolchain (rustup, or your system's cargo package) and run `mix compile` again,
      set the CARGO environment variable to the cargo binary,
      or set #{@path_env} to a prebuilt libex_mcp_nif.so.
      """)
  end

  # Copies `source` to `installed` when their bytes differ; true if it did.
  defp install!(source, installed) do
    if File.read(installed) == {:ok, File.read!(source)} do
      false
    else
      File.mkdir_p!(Path.dirname(installed))
      # Copy to a temporary name and rename, so that a VM that has the old
      # library loaded never sees a half-written file.
      tmp = installed <> ".tmp"
      File.cp!(source, tmp)
      File.rename!(tmp, installed)
      true
    end
  end

  defmodule JSON do
    @moduledoc false
    # A small strict JSON decoder (RFC 8259) for cargo's messages: the
    # compiler runs before the project's own JSON NIF exists, and hex
    # packages are not used. Objects become maps with string keys.

    @spec decode(binary()) :: {:ok, term()} | {:error, :invalid}
    def decode(text) when is_binary(text) do
      case value(skip(text)) do
        {value, rest} -> if skip(rest) == "", do: {:ok, value}, else: {:error, :invalid}
      end
    catch
      :invalid -> {:error, :invalid}
    end

    defp skip(<<c, rest::binary>>) when c in ~c" \t\r\n", do: skip(rest)
    defp skip(rest), do: rest

    defp value("{" <> rest), do: members(skip(rest), %{})
    defp value("[" <> rest), do: elements(skip(rest), [])
    defp value("\"" <> rest), do: string(rest, [])
    defp value("true" <> rest), do: {true, rest}
    defp value("false" <> rest), do: {false, rest}
    defp value("null" <> rest), do: {nil, rest}
    defp value(<<c, _::binary>> = text) when c == ?- or c in ?0..?9, do: number(text)
    defp value(_), do: throw(:invalid)

    defp members("}" <> rest, acc) when acc == %{}, do: {acc, rest}

    defp members("\"" <> rest, acc) do
      {key, rest} = string(rest, [])

      case skip(rest) do
        ":" <> rest ->
          {value, rest} = value(skip(rest))
          acc = Map.put(acc, key, value)

          case skip(rest) do
            "," <> rest -> members(skip(rest), acc)
            "}" <> rest -> {acc, rest}
            _ -> throw(:invalid)
          end

        _ ->
          throw(:invalid)
      end
    end

    defp members(_, _), do: throw(:invalid)

    defp elements("]" <> rest, []), do: {[], rest}

    defp elements(text, acc) do
      {value, rest} = value(text)

      case skip(rest) do
        "," <> rest -> elements(skip(rest), [value | acc])
        "]" <> rest -> {Enum.reverse([value | acc]), rest}
        _ -> throw(:invalid)
      end
    end

    defp string("\"" <> rest, acc), do: {IO.iodata_to_binary(Enum.reverse(acc)), rest}

    defp string("\\u" <> <<hex::binary-4, rest::binary>>, acc) do
      case {hex4(hex), rest} do
        {high, "\\u" <> <<low_hex::binary-4, rest2::binary>>} when high in 0xD800..0xDBFF ->
          case hex4(low_hex) do
            low when low in 0xDC00..0xDFFF ->
              string(rest2, [<<0x10000 + (high - 0xD800) * 0x400 + (low - 0xDC00)::utf8>> | acc])

            _ ->
              throw(:invalid)
          end

        {code, _} when code in 0xD800..0xDFFF ->
          throw(:invalid)

        {code, _} ->
          string(rest, [<<code::utf8>> | acc])
      end
    end

    defp string("\\" <> <<c, rest::binary>>, acc) do
      char =
        case c do
          ?" -> "\""
          ?\\ -> "\\"
          ?/ -> "/"
          ?b -> "\b"
          ?f -> "\f"
          ?n -> "\n"
          ?r -> "\r"
          ?t -> "\t"
          _ -> throw(:invalid)
        end

      string(rest, [char | acc])
    end

    defp string(<<c::utf8, rest::binary>>, acc) when c >= 0x20, do: string(rest, [<<c::utf8>> | acc])
    defp string(_, _), do: throw(:invalid)

    defp hex4(hex) do
      case Integer.parse(hex, 16) do
        {code, ""} -> if String.match?(hex, ~r/\A[0-9a-fA-F]{4}\z/), do: code, else: throw(:invalid)
        _ -> throw(:invalid)
      end
    end

    @number ~r/\A-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/
    defp number(text) do
      case Regex.run(@number, text, capture: :all) do
        [literal | fraction_exponent] ->
          rest = binary_part(text, byte_size(literal), byte_size(text) - byte_size(literal))

          value =
            if Enum.any?(fraction_exponent, &(&1 != "")) do
              float(literal)
            else
              String.to_integer(literal)
            end

          {value, rest}

        nil ->
          throw(:invalid)
      end
    end

    # "1e5" has no fraction, which Float.parse accepts but :erlang.binary_to_float does not.
    defp float(literal) do
      case Float.parse(literal) do
        {float, ""} -> float
        _ -> throw(:invalid)
      end
    end
  end
end
