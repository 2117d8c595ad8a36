# The crate is built by a Mix compiler defined in this repository, because
# hex.pm (and so the rustler Mix package) is not available.
Code.require_file("mix/native_compiler.exs", __DIR__)

defmodule ExMCP.Registration.MixProject do
  use Mix.Project

  @version "0.1.0"

  def project do
    [
      app: :ex_mcp_registration,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:ex_mcp_native] ++ Mix.compilers(),
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      # ClientStore.Mnesia uses Mnesia only when an application chooses it,
      # and that application starts it (its own :extra_applications).
      xref: [exclude: [:mnesia]],
      # Test files compile without warnings: `mix test` fails on any.
      aliases: [test: "test --warnings-as-errors"],
      description:
        "RFC 7591/7592 dynamic client registration for MCP clients, with a Rust (rustler) networking core",
      docs: [main: "ExMCP.Authorization.ClientRegistration"]
    ]
  end

  def application do
    [extra_applications: [:logger, :crypto]]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
