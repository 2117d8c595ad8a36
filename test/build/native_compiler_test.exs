defmodule ExMCP.Build.NativeCompilerTest do
  # The Mix compiler in mix/native_compiler.exs: cargo decides what is stale,
  # the library's path comes from cargo's JSON messages, and the JSON reader
  # it uses for them agrees with serde_json (the project's json_decode NIF).
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.Native
  alias Mix.Tasks.Compile.ExMcpNative, as: Compiler

  describe "the JSON reader for cargo's messages" do
    test "reads what serde_json reads, and rejects what it rejects" do
      valid = [
        ~s({"a":1,"b":[true,false,null],"c":{"d":"e"}}),
        ~s( [ 1 , -2 , 3.5 , -0.25e2 , 1E3 , 0 ] ),
        ~s("esc \\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\ud83d\\ude00 é"),
        ~s({}),
        ~s([]),
        ~s({"nested":[[[{}]]]}),
        ~s(18446744073709551615)
      ]

      for text <- valid do
        assert Compiler.JSON.decode(text) == Native.json_decode(text), text
      end

      invalid = [
        ~s({"a":1,}),
        ~s([1,]),
        ~s({"a" 1}),
        ~s("\\ud83d"),
        ~s("\\x"),
        ~s(01),
        ~s(1.),
        ~s(tru),
        ~s([1] 2),
        ~s("a\nb"),
        ""
      ]

      for text <- invalid do
        assert {:error, _} = Compiler.JSON.decode(text), text
        assert {:error, _} = Native.json_decode(text), text
      end
    end

    test "round-trips generated documents like serde_json" do
      seed = :erlang.unique_integer([:positive])
      :rand.seed(:exsss, {seed, 17, 5})

      for _ <- 1..300 do
        term = ExMCP.Test.Generate.json(4)
        {:ok, text} = Native.json_encode(term, Enum.random([true, false]))
        assert Compiler.JSON.decode(text) == Native.json_decode(text), "seed #{seed}: #{text}"
      end
    end
  end

  describe "the artifact comes from cargo's messages" do
    @artifact ~s({"reason":"compiler-artifact","package_id":"path+file:///x/native/ex_mcp_nif#0.1.0",) <>
                ~s("target":{"kind":["cdylib"],"crate_types":["cdylib"],"name":"ex_mcp_nif","src_path":"/x/lib.rs"},) <>
                ~s("profile":{"opt_level":"3"},"features":[],"filenames":["/elsewhere/aarch64-unknown-linux-gnu/release/libex_mcp_nif.so"],) <>
                ~s("executable":null,"fresh":true})

    test "the cdylib's filename, whatever the target directory" do
      messages =
        Enum.join(
          [
            ~s({"reason":"compiler-artifact","target":{"kind":["lib"],"name":"mcp_registration"},"filenames":["/t/libmcp_registration.rlib"]}),
            @artifact,
            ~s({"reason":"build-finished","success":true})
          ],
          "\n"
        )

      assert Compiler.artifact(messages) == "/elsewhere/aarch64-unknown-linux-gnu/release/libex_mcp_nif.so"
    end

    test "a macOS .dylib is found too, and no artifact is nil" do
      dylib = String.replace(@artifact, "libex_mcp_nif.so", "libex_mcp_nif.dylib")
      assert Compiler.artifact(dylib) == "/elsewhere/aarch64-unknown-linux-gnu/release/libex_mcp_nif.dylib"
      assert Compiler.artifact(~s({"reason":"build-finished","success":true}\n)) == nil
    end

    test "cargo gets JSON messages, a :nif_target and the test hooks only in the test env" do
      assert "--message-format=json-render-diagnostics" in Compiler.cargo_args(:prod, nil)
      refute "test-hooks" in Compiler.cargo_args(:prod, nil)
      refute "test-hooks" in Compiler.cargo_args(:dev, nil)
      assert Enum.take(Compiler.cargo_args(:test, nil), -2) == ["--features", "test-hooks"]

      assert ["--target", "armv7-unknown-linux-gnueabihf"] ==
               Compiler.cargo_args(:prod, "armv7-unknown-linux-gnueabihf") |> Enum.take(-2)
    end
  end
end
