defmodule ExMCP.Authorization.BenchSmokeTest do
  # The benchmark is not part of the suite, but its --quick mode is, so that
  # it cannot rot: every runner, section and target line must be produced.
  use ExUnit.Case, async: false

  @moduletag :bench_smoke
  @moduletag timeout: 300_000

  @root Path.expand("..", __DIR__)

  @tag :tmp_dir
  test "bench/registration.exs --quick runs every part and writes a report", %{tmp_dir: dir} do
    output = Path.join(dir, "RESULTS.md")

    {log, status} =
      System.cmd("mix", ["run", "bench/registration.exs", "--quick", "--output", output],
        cd: @root,
        stderr_to_stdout: true
      )

    assert status == 0, log
    report = File.read!(output)

    for runner <- ["wrk", "rust", "nif", "httpc"], level <- [1, 16] do
      assert report =~ ~r/^\| #{runner} \| #{level} \| \d+ \|/m, "no #{runner} row at #{level}:\n#{report}"
    end

    for section <- [
          "## Ratios",
          "NIF call on the scheduler",
          "ticking every 1 ms",
          "Memory (BEAM total / OS RSS)",
          "## Worst cases: bounded scheduler time",
          "## Cancellation and deadlines"
        ] do
      assert report =~ section
    end

    for worst_case <- [
          "largest accepted request",
          "largest accepted answer",
          "the same reply decoded by `binary_to_term/2`"
        ] do
      assert report =~ ~r/^\| #{Regex.escape(worst_case)}.* \| [\d.]+ \| \d+ ms \|$/m,
             "no worst-case row for #{worst_case}:\n#{report}"
    end

    assert report =~ "## Client store: obtain_client cached hit"

    # Every call measured was a cached hit: 0 registrations in the last column.
    for adapter <- ["ETS", "DETS", "Mnesia ram_copies (this node)"], processes <- [1, 16] do
      assert report =~
               ~r/^\| #{Regex.escape(adapter)} \| #{processes} \| 2000 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \d+ \| 0 \|$/m,
             "no cached-hit row for #{adapter} at #{processes}:\n#{report}"
    end

    assert length(Regex.scan(~r/\*\*(met|missed)\*\*/, report)) == 6
    refute report =~ ~r/\| [1-9]\d* \|$/m, "a runner reported errors:\n#{report}"
  end
end
