defmodule ExMCP.Build.LayersTest do
  # Issue 12.6: the core crate (native/mcp_registration) knows HTTP, JSON and
  # the RFCs, and nothing of the BEAM: no term encoding, no atom tables, no
  # rustler. Those live in the NIF crate (native/ex_mcp_nif).
  use ExUnit.Case, async: true

  @root Path.expand("../..", __DIR__)

  test "the core crate has no BEAM knowledge: no ETF writer, atom table or rustler" do
    core = Path.join(@root, "native/mcp_registration")
    manifest = File.read!(Path.join(core, "Cargo.toml"))
    refute manifest =~ "rustler"

    for path <- Path.wildcard(Path.join(core, "src/**/*.rs")), text = File.read!(path) do
      refute text =~ ~r/binary_to_term|erl_ext_dist|SMALL_ATOM_UTF8_EXT|REPLY_ATOMS|rustler/, path
    end

    assert File.regular?(Path.join(@root, "native/ex_mcp_nif/src/etf.rs"))
  end
end
