defmodule ExMCP.Test.Leaks do
  @moduledoc "No credential anywhere in what a caller would log: the test helper both suites share."

  import ExUnit.Assertions

  alias ExMCP.Authorization.ClientRegistration

  @doc """
  Asserts that no string of `secrets` is in `format_error(reason)` (which
  must be valid UTF-8) nor in the inspected reason; returns the sentence.
  """
  @spec refute_leaks(term(), [String.t()]) :: String.t()
  def refute_leaks(reason, secrets) do
    sentence = ClientRegistration.format_error(reason)
    inspected = inspect(reason, limit: :infinity, printable_limit: :infinity)

    for secret <- secrets do
      refute sentence =~ secret, "#{secret} in format_error/1: #{sentence}"
      refute inspected =~ secret, "#{secret} in inspect/2: #{inspected}"
    end

    assert String.valid?(sentence)
    sentence
  end
end
