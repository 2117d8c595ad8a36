defmodule ExMCP.Authorization.AppEnvTest do
  # Option defaults come from the application environment; options given in a
  # call win. Not async: the environment is global.
  use ExUnit.Case, async: false

  alias ExMCP.Authorization.ClientRegistration, as: CR
  alias ExMCP.Test.FixtureServer

  import ExMCP.Test.FixtureServer, only: [registration_request: 1]

  @app :ex_mcp_registration

  setup do
    on_exit(fn ->
      for key <- [:timeout, :headers, :max_response_bytes], do: Application.delete_env(@app, key)
    end)
  end

  test "timeout, headers and max_response_bytes defaults come from the application env" do
    Application.put_env(@app, :timeout, 200)
    Application.put_env(@app, :headers, [{"x-from-env", "yes"}])
    Application.put_env(@app, :max_response_bytes, 10)

    server = FixtureServer.start!([:hang, {:respond, 201, [], ~s({"client_id":"a-longer-answer"})}])

    {us, result} = :timer.tc(fn -> CR.register_client(registration_request(server)) end)
    assert result == {:error, {:request_failed, :timeout}}
    # The 15 s built-in default would take 15 s; the env's 200 ms applied.
    # 200 ms of slack: the machine running the suite is a shared 2-core one.
    assert us >= 200_000 and us < 400_000, "took #{div(us, 1000)} ms for the env's timeout: 200"

    assert CR.register_client(registration_request(server)) ==
             {:error, {:request_failed, {:body_too_large, 10}}}

    requests = FixtureServer.requests(server)
    assert length(requests) == 2
    assert Enum.all?(requests, &({"x-from-env", "yes"} in &1.headers))
  end

  test "an option given in the call wins over the application env" do
    Application.put_env(@app, :max_response_bytes, 10)
    server = FixtureServer.start!([{:respond, 201, [], ~s({"client_id":"a-longer-answer"})}])

    assert {:ok, %{client_id: "a-longer-answer"}} =
             CR.register_client(registration_request(server), max_response_bytes: 1_000)
  end

  test "an ill-typed application env value raises ArgumentError naming the option" do
    Application.put_env(@app, :timeout, "soon")

    assert_raise ArgumentError, ~r/invalid option :timeout: must be an integer from 1 to 4294967295/, fn ->
      CR.register_client(%{})
    end
  end
end
