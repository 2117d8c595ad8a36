defmodule ExMCP.Test.HardeningReport do
  @moduledoc """
  Prints a figure a hardening test measured, when `HARDENING_REPORT=1` is
  set; does nothing otherwise. The figures help set a test's bounds; the
  ones worth tracking belong in the benchmark.

      import ExMCP.Test.HardeningReport, only: [report: 2]
      report("no answer: elapsed ms", elapsed)
  """

  @doc "Prints `[hardening] label: inspect(value)` when HARDENING_REPORT is set."
  @spec report(String.t(), term()) :: :ok
  def report(label, value) do
    if System.get_env("HARDENING_REPORT"), do: IO.puts("[hardening] #{label}: #{inspect(value)}")
    :ok
  end
end
