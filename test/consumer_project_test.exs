defmodule ExMCP.Authorization.ConsumerProjectTest do
  # Proves the library works as a dependency: a fresh Mix project that depends
  # on this one with `path:` compiles it (our Mix compiler builds and installs
  # the NIF into the consumer's _build) and calls the API.
  use ExUnit.Case, async: false

  @moduletag :consumer_project
  @moduletag timeout: 600_000

  @root Path.expand("..", __DIR__)

  @tag :tmp_dir
  test "a path: dependency compiles, loads the NIF and calls the API", %{tmp_dir: dir} do
    File.write!(Path.join(dir, "mix.exs"), """
    defmodule Consumer.MixProject do
      use Mix.Project

      def project do
        [app: :consumer, version: "0.1.0", deps: [{:ex_mcp_registration, path: #{inspect(@root)}}]]
      end
    end
    """)

    File.mkdir_p!(Path.join(dir, "lib"))

    File.write!(Path.join(dir, "lib/consumer.ex"), """
    defmodule Consumer do
      alias ExMCP.Authorization.ClientRegistration

      def run do
        IO.puts("validation: " <> inspect(ClientRegistration.register_client(%{client_name: "Consumer"})))

        result =
          ClientRegistration.register_client(%{
            registration_endpoint: "http://127.0.0.1:1/register",
            client_name: "Consumer",
            redirect_uris: ["http://localhost:4000/cb"]
          })

        IO.puts("network: " <> inspect(result))
      end
    end
    """)

    env = [{"MIX_ENV", "dev"}, {"MIX_BUILD_PATH", nil}, {"MIX_DEPS_PATH", nil}]

    assert {output, 0} = System.cmd("mix", ["compile"], cd: dir, env: env, stderr_to_stdout: true)
    assert output =~ "ex_mcp_registration"
    assert File.regular?(Path.join(dir, "_build/dev/lib/ex_mcp_registration/priv/native/libex_mcp_nif.so"))

    assert {output, 0} =
             System.cmd("mix", ["run", "-e", "Consumer.run()"], cd: dir, env: env, stderr_to_stdout: true)

    assert output =~
             ~s(validation: {:error, {:missing_required_fields, [:registration_endpoint, :redirect_uris]}})

    assert output =~ ~s(network: {:error, {:request_failed, {:connect, ")
  end

  @tag :tmp_dir
  test "without cargo, the build stops with a message that says so", %{tmp_dir: dir} do
    File.write!(Path.join(dir, "mix.exs"), """
    defmodule NoCargo.MixProject do
      use Mix.Project
      def project, do: [app: :no_cargo, version: "0.1.0", deps: [{:ex_mcp_registration, path: #{inspect(@root)}}]]
    end
    """)

    # A PATH and HOME where no cargo can be found.
    env = [{"MIX_ENV", "dev"}, {"PATH", "/usr/bin:/bin"}, {"HOME", dir}, {"CARGO", nil}]
    assert {output, status} = System.cmd("mix", ["compile"], cd: dir, env: env, stderr_to_stdout: true)
    assert status != 0
    assert output =~ "cargo was not found, so the NIF crate ex_mcp_nif cannot be built"
  end
end
