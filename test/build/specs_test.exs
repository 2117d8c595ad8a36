defmodule ExMCP.Build.SpecsTest do
  # Every public function of the library has a @spec for Dialyzer (issue
  # 12.9) — behaviour callbacks take theirs from the behaviour.
  use ExUnit.Case, async: true

  test "every public function in lib/ has a @spec or is a behaviour callback" do
    {:ok, modules} = :application.get_key(:ex_mcp_registration, :modules)

    missing =
      for module <- modules,
          source = module.module_info(:compile)[:source] |> to_string(),
          String.contains?(source, "/lib/"),
          {:ok, specs} = Code.Typespec.fetch_specs(module),
          specced = for({{name, arity}, _} <- specs, do: {name, arity}),
          callbacks = callbacks(module),
          {name, arity} <- module.__info__(:functions),
          # A struct's generated functions need none.
          name != :__struct__,
          # Lower arities made by default arguments share the full one's spec.
          not Enum.any?(specced, fn {n, a} -> n == name and a >= arity end),
          {name, arity} not in callbacks,
          do: "#{inspect(module)}.#{name}/#{arity}"

    assert missing == []
  end

  defp callbacks(module) do
    for behaviour <- Keyword.get_values(module.module_info(:attributes), :behaviour) |> List.flatten(),
        Code.ensure_loaded?(behaviour),
        {{name, arity}, _} <- elem(Code.Typespec.fetch_callbacks(behaviour), 1),
        into: MapSet.new(),
        do: {name, arity}
  end
end
