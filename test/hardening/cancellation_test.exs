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
  import ExMCP.Test.HardeningReport, only: [report: 2]

  @json [{"content-type", "application/json"}]
  @ok {:respond, 201, @json, ~s({"client_id":"abc"})}

  # How late past its deadline a call may end: the same slack, for the same
  # reason, as in ExMCP.Hardening.FaultMatrixTest.
  @slack 250

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

  test "a caller killed mid-request: the connection closes within 100 ms and in_flight returns to 0" do
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

    # The close takes about 0.1 ms (the benchmark's "Cancellation and
    # deadlines" section measures it); 100 ms leaves room for a loaded
    # shared machine while still far below the call's own 30 s deadline.
    assert closed_at - killed_at < 100
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
      assert elapsed >= 300 and elapsed < 300 + @slack
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

      assert now() - started < 300 + @slack
      assert eventually(fn -> Native.in_flight() == 0 end, 1_000)

      event = FixtureServer.await_event(server, &(&1.type in [:mark, :write_failed]), 2_000)
      assert event.at - started >= 500
      assert FixtureServer.await_idle(server, 1_000) == :ok
      assert Process.info(self(), :messages) == {:messages, []}
    end

    test "the await gives up on a hanging server: the connection closes within 100 ms" do
      server = FixtureServer.start!(fn _ -> :hang end)
      request = registration_request(server)

      assert Native.call(&Native.register(request, native_options(10_000), &1), 300) ==
               {:error, {:request_failed, :timeout}}

      gave_up_at = now()

      assert FixtureServer.await_idle(server, 1_000) == :ok
      %{at: closed_at} = FixtureServer.await_event(server, &(&1.type == :conn_down), 1_000)
      assert closed_at - gave_up_at < 100
      assert eventually(fn -> Native.in_flight() == 0 end, 1_000)
      assert Process.info(self(), :messages) == {:messages, []}
      report("cancel -> fixture saw the connection close (ms)", closed_at - gave_up_at)
    end
  end

  test "1,000 callers killed at random moments: every call they leave behind is aborted" do
    # Warm up everything a call and a fixture may start once.
    warm_up = FixtureServer.start!(fn _ -> @ok end)
    assert {:ok, _} = CR.register_client(registration_request(warm_up))
    # stop/1 returns once the fixture's processes are gone.
    FixtureServer.stop(warm_up)
    eventually(fn -> Native.in_flight() == 0 end)

    # Compared as sets, not counts: a process or port of an earlier test
    # that ends meanwhile must not hide a new one, nor fail the test.
    processes = MapSet.new(Process.list())
    ports = MapSet.new(:erlang.ports())

    # Half the requests are held until their connection closes: only the
    # abort on the caller's death can end those calls (their own deadline is
    # 30 s away). The other half are answered, and the connection closed, so
    # that no idle keep-alive connection stays open either.
    answer = {:respond, 201, [{"connection", "close"} | @json], ~s({"client_id":"abc"})}

    server =
      FixtureServer.start!(fn _ ->
        if :rand.uniform(2) == 1, do: [{:mark, :held}, :hang], else: [{:delay, :rand.uniform(20) - 1}, answer]
      end)

    request = registration_request(server)

    outcomes =
      for _batch <- 1..10, reduce: %{killed: 0, finished: 0} do
        acc ->
          callers =
            for _ <- 1..100 do
              {pid, monitor} =
                spawn_monitor(fn -> {:ok, _} = CR.register_client(request, timeout: 30_000) end)

              Process.send_after(self(), {:kill, pid}, :rand.uniform(30) - 1)
              {pid, monitor}
            end

          collect(Map.new(callers), length(callers), acc)
      end

    # Every held request's connection was closed by the client, well before
    # the calls' own 30 s deadline.
    assert FixtureServer.await_idle(server, 5_000) == :ok
    held = Enum.count(FixtureServer.events(server), &(&1.type == :mark and &1.detail == :held))
    assert held > 0
    report("1,000 callers: requests held until their caller died", held)

    report("1,000 callers: outcomes", outcomes)
    assert outcomes.killed + outcomes.finished == 1_000
    # Both paths were taken: calls cut off mid-flight and calls that replied.
    assert outcomes.killed > 0 and outcomes.finished > 0

    in_flight_ms = eventually(fn -> Native.in_flight() == 0 end, 5_000)
    report("1,000 callers: ms until in_flight was 0", in_flight_ms)
    report("1,000 callers: connections the fixture accepted", FixtureServer.connection_count(server))

    FixtureServer.stop(server)

    new_processes = fn -> MapSet.difference(MapSet.new(Process.list()), processes) end
    new_ports = fn -> MapSet.difference(MapSet.new(:erlang.ports()), ports) end

    settle_ms =
      try do
        eventually(fn -> MapSet.size(new_processes.()) == 0 end, 2_000)
      rescue
        error in ExUnit.AssertionError ->
          describe = &Enum.map(&1, fn pid -> {pid, Process.info(pid, [:initial_call, :current_function])} end)
          flunk("#{error.message}: new processes #{inspect(describe.(new_processes.()))}")
      end

    try do
      eventually(fn -> MapSet.size(new_ports.()) == 0 end, 2_000)
    rescue
      error in ExUnit.AssertionError ->
        describe = &Enum.map(&1, fn port -> {port, Port.info(port, :name)} end)
        flunk("#{error.message}: new ports #{inspect(describe.(new_ports.()))}")
    end

    report("1,000 callers: ms until no new process was left after the fixture stopped", settle_ms)
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

  test "a reply committed just as the wait gives up still reaches the caller, and only once" do
    # The cancel-versus-deliver race of pending.rs, forced: the NIF commits
    # the delivery, tells us :delivery_held, and sends the reply only after
    # our cancel has lost to it. The wait (0 ms) has timed out by then, so
    # Native.call must see :delivered and wait for the reply instead of
    # reporting a timeout and leaving the reply to land in the mailbox.
    server = FixtureServer.start!(fn _ -> @ok end)
    request = registration_request(server)
    assert Native.hold_next_delivery() == :ok

    start = fn ref ->
      started = Native.register(request, native_options(10_000), ref)
      assert_receive :delivery_held, 5_000
      started
    end

    assert {:ok, %{client_id: "abc"}} = Native.call(start, 0)
    assert Process.info(self(), :messages) == {:messages, []}
    assert eventually(fn -> Native.in_flight() == 0 end, 1_000)
    assert Process.info(self(), :messages) == {:messages, []}
  end

  test "refused requests never start work on tokio" do
    # Not async: no other test can start a call meanwhile, so the count of
    # calls ever spawned (a test hook) must not move.
    before = Native.calls_started()
    assert {:error, {:missing_required_fields, _}} = CR.register_client(%{})
    assert {:error, :https_required} = CR.get_client_information("http://auth.example.com/r", "t")

    assert {:error, {:invalid_redirect_uris, ["javascript:x"]}} =
             CR.update_client_information("https://127.0.0.1:1/reg/1", "t", %{redirect_uris: ["javascript:x"]})

    assert Native.calls_started() == before

    # The counter does count: one accepted call moves it by one.
    server = FixtureServer.start!(fn _ -> @ok end)
    assert {:ok, _} = CR.register_client(registration_request(server))
    assert Native.calls_started() == before + 1
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
