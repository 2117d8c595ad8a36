defmodule ExMCP.Hardening.CancellationTest do
  # What happens to a call when its caller stops waiting: killed, timed out,
  # or killed by the thousand. The tokio task must be aborted, its connection
  # closed, Native.in_flight/0 must come back down, and no late reply may
  # reach anyone.
  #
  # Not async: in_flight, the process count and the port count are global.
  # Set HARDENING_REPORT=1 to print the measured figures.
  use ExUnit.Case, async: false

  alias ExMCP.Authorization.ClientRegistration, as: CR
  alias ExMCP.Authorization.Native
  alias ExMCP.Test.FixtureServer

  import ExMCP.Test.FixtureServer, only: [registration_request: 1]

  @json [{"content-type", "application/json"}]
  @ok {:respond, 201, @json, ~s({"client_id":"abc"})}

  defp report(label, value) do
    if System.get_env("HARDENING_REPORT"), do: IO.puts("[hardening] #{label}: #{inspect(value)}")
  end

  defp now, do: System.monotonic_time(:millisecond)

  # A bounded wait for an asynchronous cleanup that sends no event: checks
  # `fun` every 10 ms for at most `timeout` ms. Returns the ms it took.
  defp eventually(fun, timeout \\ 2_000) do
    started = now()
    eventually(fun, started, started + timeout)
  end

  defp eventually(fun, started, deadline) do
    cond do
      fun.() ->
        now() - started

      now() >= deadline ->
        flunk("condition still false after #{deadline - started} ms")

      true ->
        receive do
        after
          10 -> eventually(fun, started, deadline)
        end
    end
  end

  defp native_options(timeout) do
    %{timeout: timeout, connect_timeout: 5_000, max_response_bytes: 1_048_576, headers: [], cacertfile: nil}
  end

  setup do
    # Every call of the earlier tests has finished; start from zero.
    eventually(fn -> Native.in_flight() == 0 end)
    :ok
  end

  test "a caller killed mid-request: the connection closes within 1 s and in_flight returns to 0" do
    server = FixtureServer.start!(fn _ -> :hang end)
    request = registration_request(server)

    {caller, monitor} = spawn_monitor(fn -> CR.register_client(request, timeout: 30_000) end)
    # The request is at the server, which will never answer.
    assert [%{method: "POST"}] = FixtureServer.await_requests(server, 1, 2_000)
    assert Native.in_flight() == 1

    killed_at = now()
    Process.exit(caller, :kill)
    assert_receive {:DOWN, ^monitor, :process, ^caller, :killed}, 1_000

    assert FixtureServer.await_idle(server, 1_000) == :ok
    %{at: closed_at} = FixtureServer.await_event(server, &(&1.type == :conn_down), 1_000)
    in_flight_ms = eventually(fn -> Native.in_flight() == 0 end, 1_000)

    assert closed_at - killed_at < 1_000
    report("kill -> fixture saw the connection close (ms)", closed_at - killed_at)
    report("kill -> in_flight back to 0 (ms, measured after the close)", in_flight_ms)
    assert Process.info(self(), :messages) == {:messages, []}
  end

  describe "the caller's own timeout" do
    test "through the public API: :timeout, the connection closes, and the answer sent 200 ms later reaches nobody" do
      server = FixtureServer.start!(fn _ -> [{:delay, 500}, @ok, {:mark, :answered}] end)

      started = now()

      assert CR.register_client(registration_request(server), timeout: 300) ==
               {:error, {:request_failed, :timeout}}

      elapsed = now() - started
      assert elapsed >= 300 and elapsed < 1_000
      assert Process.info(self(), :messages) == {:messages, []}
      assert eventually(fn -> Native.in_flight() == 0 end, 1_000)

      # The server answers at 500 ms, 200 ms after the caller gave up (or its
      # write fails, the client having closed the connection). Wait for that
      # event, then for the connection to be gone, then look again.
      event = FixtureServer.await_event(server, &(&1.type in [:mark, :write_failed]), 2_000)
      assert event.at - started >= 500
      assert FixtureServer.await_idle(server, 1_000) == :ok
      assert Process.info(self(), :messages) == {:messages, []}
      report("late answer after the public timeout: fixture event", event.type)
    end

    test "the await gives up before the native deadline: the call is cancelled, aborted and never replies" do
      # The native deadline is 10 s; the caller waits 300 ms. Only cancel/1
      # (called by Native.call/2 when its wait ends) can stop this call.
      server = FixtureServer.start!(fn _ -> [{:delay, 500}, @ok, {:mark, :answered}] end)
      request = registration_request(server)

      started = now()

      assert Native.call(&Native.register(request, native_options(10_000), &1), 300) ==
               {:error, {:request_failed, :timeout}}

      assert now() - started < 1_000
      assert eventually(fn -> Native.in_flight() == 0 end, 1_000)

      event = FixtureServer.await_event(server, &(&1.type in [:mark, :write_failed]), 2_000)
      assert event.at - started >= 500
      assert FixtureServer.await_idle(server, 1_000) == :ok
      assert Process.info(self(), :messages) == {:messages, []}
    end

    test "the await gives up on a hanging server: the connection closes within 1 s" do
      server = FixtureServer.start!(fn _ -> :hang end)
      request = registration_request(server)

      assert Native.call(&Native.register(request, native_options(10_000), &1), 300) ==
               {:error, {:request_failed, :timeout}}

      gave_up_at = now()

      assert FixtureServer.await_idle(server, 1_000) == :ok
      %{at: closed_at} = FixtureServer.await_event(server, &(&1.type == :conn_down), 1_000)
      assert eventually(fn -> Native.in_flight() == 0 end, 1_000)
      assert Process.info(self(), :messages) == {:messages, []}
      report("cancel -> fixture saw the connection close (ms)", closed_at - gave_up_at)
    end
  end

  test "1,000 callers killed at random moments leave no task, process or port behind" do
    # Warm up everything a call and a fixture may start once.
    warm_up = FixtureServer.start!(fn _ -> @ok end)
    assert {:ok, _} = CR.register_client(registration_request(warm_up))
    # stop/1 returns once the fixture's processes are gone.
    FixtureServer.stop(warm_up)
    eventually(fn -> Native.in_flight() == 0 end)

    processes = :erlang.system_info(:process_count)
    ports = length(:erlang.ports())
    before = MapSet.new(Process.list())

    server = FixtureServer.start!(fn _ -> [{:delay, :rand.uniform(20) - 1}, @ok] end)
    request = registration_request(server)

    outcomes =
      for _batch <- 1..10, reduce: %{killed: 0, finished: 0} do
        acc ->
          callers =
            for _ <- 1..100 do
              {pid, monitor} =
                spawn_monitor(fn -> {:ok, _} = CR.register_client(request, timeout: 10_000) end)

              Process.send_after(self(), {:kill, pid}, :rand.uniform(30) - 1)
              {pid, monitor}
            end

          collect(Map.new(callers), length(callers), acc)
      end

    report("1,000 callers: outcomes", outcomes)
    assert outcomes.killed + outcomes.finished == 1_000
    # Both paths were taken: calls cut off mid-flight and calls that replied.
    assert outcomes.killed > 0 and outcomes.finished > 0

    in_flight_ms = eventually(fn -> Native.in_flight() == 0 end, 5_000)
    report("1,000 callers: ms until in_flight was 0", in_flight_ms)
    report("1,000 callers: connections the fixture accepted", FixtureServer.connection_count(server))

    FixtureServer.stop(server)

    settle_ms =
      try do
        eventually(fn -> :erlang.system_info(:process_count) == processes end, 2_000)
      rescue
        error in ExUnit.AssertionError ->
          now = MapSet.new(Process.list())
          describe = &Enum.map(&1, fn pid -> {pid, Process.info(pid, [:initial_call, :current_function])} end)

          flunk(
            "#{error.message}: new processes #{inspect(describe.(MapSet.difference(now, before)))}, " <>
              "gone #{inspect(MapSet.to_list(MapSet.difference(before, now)))}"
          )
      end

    eventually(fn -> length(:erlang.ports()) == ports end, 2_000)

    report("1,000 callers: process count before/after", {processes, :erlang.system_info(:process_count)})
    report("1,000 callers: port count before/after", {ports, length(:erlang.ports())})
    report("1,000 callers: ms for the process count to settle after the fixture stopped", settle_ms)
    assert Process.info(self(), :messages) == {:messages, []}
  end

  # Kills each caller when its timer fires and counts how each one ended,
  # until every caller is down and every kill timer has fired.
  defp collect(callers, pending_kills, acc) when map_size(callers) == 0 and pending_kills == 0, do: acc

  defp collect(callers, pending_kills, acc) do
    receive do
      {:kill, pid} ->
        Process.exit(pid, :kill)
        collect(callers, pending_kills - 1, acc)

      {:DOWN, monitor, :process, pid, reason} ->
        {^monitor, callers} = Map.pop(callers, pid)

        acc =
          case reason do
            :killed -> Map.update!(acc, :killed, &(&1 + 1))
            :normal -> Map.update!(acc, :finished, &(&1 + 1))
          end

        collect(callers, pending_kills, acc)
    after
      10_000 -> flunk("callers did not all end: #{map_size(callers)} left, #{pending_kills} kills pending")
    end
  end

  test "a panic in the request path is {:panic, _}, and the next call works" do
    server = FixtureServer.start!(fn _ -> @ok end)

    assert Native.panic_next_call() == :ok

    assert {:error, {:request_failed, {:panic, message}}} = CR.register_client(registration_request(server))
    assert message =~ "forced panic"
    assert Process.info(self(), :messages) == {:messages, []}
    # The panic happened before any request was sent.
    assert FixtureServer.requests(server) == []

    assert {:ok, %{client_id: "abc"}} = CR.register_client(registration_request(server))
    assert Process.info(self(), :messages) == {:messages, []}
    assert eventually(fn -> Native.in_flight() == 0 end, 1_000)
  end
end
