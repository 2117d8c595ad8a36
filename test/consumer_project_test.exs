defmodule ExMCP.Authorization.ConsumerProjectTest do
  # Proves the library works as a dependency: fresh Mix projects that depend
  # on this one with `path:` compile it (our Mix compiler builds or takes the
  # NIF and installs it into the consumer's _build), call the API, and ship
  # it in a release.
  use ExUnit.Case, async: false

  @moduletag :consumer_project
  @moduletag timeout: 900_000

  @root Path.expand("..", __DIR__)
  @installed "_build/dev/lib/ex_mcp_registration/priv/native/libex_mcp_nif.so"

  @consumer """
  defmodule Consumer do
    alias ExMCP.Authorization.{ClientRegistration, RegistrationServer}

    def run do
      IO.puts("validation: " <> inspect(ClientRegistration.register_client(%{client_name: "Consumer"})))

      result =
        ClientRegistration.register_client(%{
          registration_endpoint: "http://127.0.0.1:1/register",
          client_name: "Consumer",
          redirect_uris: ["http://localhost:4000/cb"]
        })

      IO.puts("network: " <> inspect(result))

      hooks =
        try do
          ExMCP.Authorization.Native.panic_next_call()
        rescue
          e in RuntimeError -> Exception.message(e)
        end

      IO.puts("test hooks: " <> inspect(hooks))
    end

    # Registers against the embedded server (RFC 7591 §3.2.1: 201 with a client_id).
    def registers do
      {:ok, _} = Application.ensure_all_started(:ex_mcp_registration)
      {:ok, server} = RegistrationServer.start_link(port: 0)

      {:ok, client} =
        ClientRegistration.register_client(%{
          registration_endpoint: RegistrationServer.registration_endpoint(server),
          client_name: "Released",
          redirect_uris: ["http://localhost:4000/cb"]
        })

      IO.puts("registered: " <> client.client_id <> " " <> inspect(RegistrationServer.count(server)))
    end
  end
  """

  defp consumer!(dir, app, extra \\ "") do
    module = app |> Atom.to_string() |> Macro.camelize()

    File.write!(Path.join(dir, "mix.exs"), """
    defmodule #{module}.MixProject do
      use Mix.Project

      def project do
        [app: #{inspect(app)}, version: "0.1.0", deps: [{:ex_mcp_registration, path: #{inspect(@root)}}]#{extra}]
      end
    end
    """)

    File.mkdir_p!(Path.join(dir, "lib"))
    File.write!(Path.join(dir, "lib/consumer.ex"), @consumer)
  end

  defp mix!(dir, args, env) do
    {output, status} = System.cmd("mix", args, cd: dir, env: env, stderr_to_stdout: true)
    assert status == 0, "mix #{Enum.join(args, " ")} exited with #{status}:\n#{output}"
    output
  end

  @tag :tmp_dir
  test "a path: dependency compiles, loads the NIF and calls the API, without the test hooks", %{tmp_dir: dir} do
    consumer!(dir, :consumer)
    env = [{"MIX_ENV", "dev"}, {"MIX_BUILD_PATH", nil}, {"MIX_DEPS_PATH", nil}]

    assert mix!(dir, ["compile"], env) =~ "ex_mcp_registration"
    assert File.regular?(Path.join(dir, @installed))

    output = mix!(dir, ["run", "-e", "Consumer.run()"], env)

    assert output =~
             ~s(validation: {:error, {:missing_required_fields, [:registration_endpoint, :redirect_uris]}})

    assert output =~ ~s(network: {:error, {:request_failed, {:connect, ")
    # Issue 9.17: a build outside MIX_ENV=test has no panic_next_call NIF.
    assert output =~ ~s(test hooks: "this NIF library was built without the test-hooks cargo feature")
  end

  @tag :tmp_dir
  test "without cargo, the build stops with a message that says so", %{tmp_dir: dir} do
    consumer!(dir, :no_cargo)

    # A PATH and HOME where no cargo can be found.
    env = [{"MIX_ENV", "dev"}, {"PATH", "/usr/bin:/bin"}, {"HOME", dir}, {"CARGO", nil}]
    assert {output, status} = System.cmd("mix", ["compile"], cd: dir, env: env, stderr_to_stdout: true)
    assert status != 0
    assert output =~ "cargo was not found, so the NIF crate ex_mcp_nif cannot be built"
    assert output =~ "EX_MCP_REGISTRATION_NIF_PATH"
  end

  @tag :tmp_dir
  test "a prebuilt library needs no cargo (EX_MCP_REGISTRATION_NIF_PATH)", %{tmp_dir: dir} do
    # Build once (this suite's own build), copy the library elsewhere...
    prebuilt = Path.join(dir, "prebuilt/libex_mcp_nif.so")
    File.mkdir_p!(Path.dirname(prebuilt))
    File.cp!(Mix.Tasks.Compile.ExMcpNative.installed_path(), prebuilt)

    # ...then compile and run a consumer whose PATH and HOME have no cargo.
    project = Path.join(dir, "project")
    File.mkdir_p!(project)
    consumer!(project, :prebuilt_consumer)

    env = [
      {"MIX_ENV", "dev"},
      {"PATH", "/usr/bin:/bin"},
      {"HOME", dir},
      {"CARGO", nil},
      {"EX_MCP_REGISTRATION_NIF_PATH", prebuilt}
    ]

    refute System.find_executable("cargo") in Enum.map(["/usr/bin", "/bin"], &Path.join(&1, "cargo"))
    mix!(project, ["compile"], env)
    assert File.read!(Path.join(project, @installed)) == File.read!(prebuilt)

    output = mix!(project, ["run", "-e", "Consumer.run()"], env)
    assert output =~ ~s(network: {:error, {:request_failed, {:connect, ")

    # A setting that names no file is an error that says which setting.
    env =
      List.keystore(
        env,
        "EX_MCP_REGISTRATION_NIF_PATH",
        0,
        {"EX_MCP_REGISTRATION_NIF_PATH", dir <> "/none.so"}
      )

    assert {output, status} =
             System.cmd("mix", ["compile", "--force"], cd: project, env: env, stderr_to_stdout: true)

    assert status != 0
    assert output =~ "EX_MCP_REGISTRATION_NIF_PATH (or the :nif_path setting) names"
  end

  @tag :tmp_dir
  test "cargo runs on every compile, its artifact path is used, and an unchanged library is not reinstalled",
       %{tmp_dir: dir} do
    # A stand-in cargo that records its arguments and reports, like cargo's
    # --message-format=json-render-diagnostics, a macOS-named artifact in a
    # target directory of its own.
    artifact = Path.join(dir, "elsewhere/armv7-unknown-linux-gnueabihf/release/libex_mcp_nif.dylib")
    File.mkdir_p!(Path.dirname(artifact))
    File.write!(artifact, "version 1")
    log = Path.join(dir, "cargo.log")
    cargo = Path.join(dir, "fake-cargo")

    File.write!(cargo, """
    #!/bin/sh
    echo "$*" >> #{log}
    echo 'Compiling ex_mcp_nif (fake)' >&2
    echo '{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"mcp_registration"},"filenames":["/x/libmcp_registration.rlib"]}'
    echo '{"reason":"compiler-artifact","target":{"kind":["cdylib"],"name":"ex_mcp_nif"},"filenames":["#{artifact}"],"fresh":false}'
    echo '{"reason":"build-finished","success":true}'
    """)

    File.chmod!(cargo, 0o755)

    project = Path.join(dir, "project")
    File.mkdir_p!(Path.join(project, "config"))
    consumer!(project, :cross_consumer, ", config_path: \"config/config.exs\"")

    File.write!(Path.join(project, "config/config.exs"), """
    import Config
    config :ex_mcp_registration, nif_target: "armv7-unknown-linux-gnueabihf"
    """)

    env = [{"MIX_ENV", "dev"}, {"CARGO", cargo}, {"EX_MCP_REGISTRATION_NIF_PATH", nil}]
    installed = Path.join(project, @installed)

    mix!(project, ["compile"], env)
    assert File.read!(installed) == "version 1"
    {:ok, %{inode: inode, mtime: mtime}} = File.stat(installed)

    assert [args] = File.read!(log) |> String.split("\n", trim: true)
    assert args =~ "build --release --locked -p ex_mcp_nif --message-format=json-render-diagnostics"
    assert args =~ "--target armv7-unknown-linux-gnueabihf"
    refute args =~ "test-hooks"

    # Nothing changed: cargo still runs (it alone knows), nothing is copied.
    mix!(project, ["compile"], env)
    assert length(File.read!(log) |> String.split("\n", trim: true)) == 2
    assert {:ok, %{inode: ^inode, mtime: ^mtime}} = File.stat(installed)

    # cargo produced a new library: it is installed.
    File.write!(artifact, "version 2")
    mix!(project, ["compile"], env)
    assert File.read!(installed) == "version 2"

    # `mix clean` in the library, building into this consumer's _build,
    # removes what the compiler installed.
    mix!(@root, ["clean"], [{"MIX_BUILD_PATH", Path.join(project, "_build/dev")} | env])
    refute File.exists?(installed)
  end

  @tag :tmp_dir
  test "MIX_ENV=prod mix release ships the library; the release registers against the embedded server",
       %{tmp_dir: dir} do
    consumer!(dir, :released)
    env = [{"MIX_ENV", "prod"}, {"MIX_BUILD_PATH", nil}, {"MIX_DEPS_PATH", nil}]

    mix!(dir, ["release", "--overwrite", "--quiet"], env)

    [lib] =
      Path.wildcard(
        Path.join(dir, "_build/prod/rel/released/lib/ex_mcp_registration-*/priv/native/libex_mcp_nif.so")
      )

    assert File.regular?(lib)

    {output, 0} =
      System.cmd(Path.join(dir, "_build/prod/rel/released/bin/released"), ["eval", "Consumer.registers()"],
        stderr_to_stdout: true,
        env: [{"MIX_ENV", nil}]
      )

    assert output =~ ~r/registered: \S+ 1/
  end
end
