defmodule Mix.Tasks.Compile.ExMcpNative do
  @shortdoc "Builds the ex_mcp_nif Rust crate and installs it into priv/native"
  @moduledoc """
  Builds the NIF crate with `cargo build --release` and copies the library to
  the application's `priv/native/` directory, where
  `ExMCP.Authorization.Native` loads it with `:erlang.load_nif/2`.

  Cargo runs only when a Rust source, a `Cargo.toml` or `Cargo.lock` is newer
  than the installed library. `CARGO_TARGET_DIR` is honoured. Set `CARGO` to
  use a specific cargo binary.
  """
  use Mix.Task.Compiler

  @crate "ex_mcp_nif"
  @root Path.expand("..", __DIR__)

  @impl Mix.Task.Compiler
  def run(_args) do
    installed = installed_path()

    if up_to_date?(installed) do
      {:noop, []}
    else
      build!()
      install!(installed)
      {:ok, []}
    end
  end

  @impl Mix.Task.Compiler
  def clean do
    File.rm(installed_path())
    :ok
  end

  @doc false
  def installed_path do
    Path.join([Mix.Project.app_path(), "priv", "native", "lib#{@crate}.so"])
  end

  defp up_to_date?(installed) do
    case File.stat(installed, time: :posix) do
      {:ok, %{mtime: built}} -> Enum.all?(sources(), &(mtime(&1) <= built))
      {:error, _} -> false
    end
  end

  defp sources do
    [Path.join(@root, "Cargo.toml"), Path.join(@root, "Cargo.lock")] ++
      Path.wildcard(Path.join(@root, "native/**/{*.rs,Cargo.toml}"))
  end

  defp mtime(path) do
    case File.stat(path, time: :posix) do
      {:ok, %{mtime: mtime}} -> mtime
      {:error, _} -> 0
    end
  end

  defp build! do
    cargo = cargo!()
    Mix.shell().info("Compiling NIF crate #{@crate} (cargo build --release)")

    args = ["build", "--release", "--locked", "-p", @crate] ++ features()

    case System.cmd(cargo, args, cd: @root, stderr_to_stdout: true, into: IO.stream(:stdio, :line)) do
      {_, 0} ->
        :ok

      {_, status} ->
        Mix.raise("""
        Building the NIF crate #{@crate} failed: `cargo #{Enum.join(args, " ")}` exited with #{status}.
        The cargo output above says why. ExMCP.Authorization.ClientRegistration cannot work without it.
        """)
    end
  end

  # The test suite drives races through hooks compiled only into test builds
  # (native/ex_mcp_nif/src/test_hooks.rs).
  defp features do
    if Mix.env() == :test, do: ["--features", "test-hooks"], else: []
  end

  defp cargo! do
    candidates = [System.get_env("CARGO"), System.find_executable("cargo"), Path.expand("~/.cargo/bin/cargo")]

    Enum.find(candidates, &(is_binary(&1) and File.regular?(&1))) ||
      Mix.raise("""
      cargo was not found, so the NIF crate #{@crate} cannot be built.
      Install a Rust toolchain (rustup, or your system's cargo package) and run `mix compile` again,
      or set the CARGO environment variable to the cargo binary.
      """)
  end

  defp install!(installed) do
    target_dir = System.get_env("CARGO_TARGET_DIR") || Path.join(@root, "target")

    built =
      Enum.find(
        Enum.map(["so", "dylib"], &Path.join([target_dir, "release", "lib#{@crate}.#{&1}"])),
        &File.regular?/1
      ) || Mix.raise("cargo reported success but no lib#{@crate}.so was found in #{target_dir}/release")

    File.mkdir_p!(Path.dirname(installed))
    # Copy to a temporary name and rename, so that a VM that has the old
    # library loaded never sees a half-written file.
    tmp = installed <> ".tmp"
    File.cp!(built, tmp)
    File.rename!(tmp, installed)
  end
end
