# The registration benchmark: `bin/bench` (or `mix run bench/registration.exs`).
#
# Four runners register clients against the same embedded registration server,
# which runs in its own OS process (native/bench, `registration_server`):
#
#   wrk       Debian's wrk posting the same JSON: the server-bound limit.
#   rust      a pure-Rust load loop over the NIF's own client code path.
#   nif       this library, called from Elixir processes.
#   httpc     OTP's :httpc the way ExMCP 0.10 sent it, with a templated body
#             and minimal answer parsing (favours the baseline).
#
# Then the scheduler cost of a call, a 1 ms ticker's lateness under load, memory,
# and the two worst cases of bounded scheduler time (the largest accepted request
# and answer, with the caller's longest slice from system_monitor long_schedule).
#
# Last, the client store: obtain_client/3's cached-hit latency for each adapter
# (ETS, DETS, Mnesia ram_copies on this node), one process and 16 at once.
#
# Flags: --quick (a few seconds, for the smoke test), --runs N, --seconds S (per run),
# --runners wrk,rust,nif,httpc, --levels 1,16,256,
# --store-calls N (cached hits per adapter and concurrency; default 20000, --quick 2000),
# --only client_store (just that section: prints it, writes it only with --output),
# --output FILE (default bench/RESULTS.md; --quick writes nothing unless given).

defmodule Bench do
  alias ExMCP.Authorization.{ClientRegistration, ClientStore, Native, RegistrationServer}

  @root Path.expand("..", __DIR__)
  @server_bin Path.join(@root, "target/release/registration_server")
  @load_bin Path.join(@root, "target/release/registration_load")

  def main(argv) do
    {opts, _} =
      OptionParser.parse!(argv,
        strict: [
          quick: :boolean,
          runs: :integer,
          seconds: :float,
          output: :string,
          runners: :string,
          levels: :string,
          store_calls: :integer,
          only: :string
        ]
      )

    quick? = Keyword.get(opts, :quick, false)
    store_calls = Keyword.get(opts, :store_calls, if(quick?, do: 2_000, else: 20_000))

    case opts[:only] do
      nil ->
        run_all(opts, quick?, store_calls)

      "client_store" ->
        report = client_store_report(client_store_hits(store_calls), quick?)
        IO.puts("\n" <> report)
        if path = opts[:output], do: File.write!(path, report) && log("wrote #{path}")

      other ->
        raise ArgumentError, "--only accepts client_store, got: #{inspect(other)}"
    end
  end

  defp run_all(opts, quick?, store_calls) do
    config =
      if quick? do
        %{
          levels: [1, 16],
          seconds: 0.5,
          runs: 1,
          warmup: 0.2,
          in_flight: 100,
          memory_total: 1_000
        }
      else
        %{
          levels: [1, 16, 256],
          seconds: 3.0,
          runs: 5,
          warmup: 1.0,
          in_flight: 1_000,
          memory_total: 10_000
        }
      end
      |> Map.merge(Map.new(Keyword.take(opts, [:runs, :seconds])))
      |> Map.put(:runners, list_flag(opts[:runners], [:wrk, :rust, :nif, :httpc], &String.to_existing_atom/1))
      |> then(&Map.put(&1, :levels, list_flag(opts[:levels], &1.levels, fn l -> String.to_integer(l) end)))

    build_helpers!()
    :inets.start()
    wrk = System.find_executable("wrk")

    log("machine: #{machine()[:cpu]}, #{System.schedulers_online()} schedulers")
    log("runners: wrk#{if wrk, do: "", else: " (not installed: skipped)"}, rust, nif, httpc")

    throughput =
      for level <- config.levels, runner <- config.runners, runner != :wrk or wrk do
        runs =
          for run <- 1..config.runs do
            with_server(fn endpoint ->
              if run == 1, do: warm_up(runner, endpoint, level, config)
              measure(runner, endpoint, level, config, wrk)
            end)
          end

        summary = summarize(runs)
        log("#{runner} c=#{level}: #{format_rate(summary)}")
        {{runner, level}, summary}
      end
      |> Map.new()

    # Calls are issued `batch` at a time and then awaited: 16 in flight leaves
    # the cores some slack, 256 saturates them (tokio, the server and the
    # schedulers all compete, and the OS preempts the scheduler mid-call).
    scheduler = %{
      light: with_server(&scheduler_time(&1, config, 16)),
      heavy: with_server(&scheduler_time(&1, config, 256))
    }

    log("NIF call on the scheduler: #{inspect(scheduler)}")
    ticker = %{idle: ticker_lateness(fn -> :ok end)}
    ticker = Map.put(ticker, :nif, with_server(&ticker_under_load(:nif, &1, config)))
    ticker = Map.put(ticker, :httpc, with_server(&ticker_under_load(:httpc, &1, config)))
    log("ticker lateness: #{inspect(ticker)}")
    memory = with_server(&memory_profile(&1, config))
    log("memory: #{inspect(memory)}")
    worst = worst_cases(config)
    log("worst cases: #{inspect(worst)}")

    cancellation = cancellation_figures(config)
    log("cancellation and deadlines: #{inspect(cancellation)}")
    store_hits = client_store_hits(store_calls)

    report =
      report(throughput, scheduler, ticker, memory, worst, config, quick?) <>
        cancellation_report(cancellation) <> client_store_report(store_hits, quick?)

    IO.puts("\n" <> report)

    case Keyword.get(opts, :output, if(quick?, do: nil, else: Path.join(@root, "bench/RESULTS.md"))) do
      nil -> :ok
      path -> File.write!(path, report) && log("wrote #{path}")
    end
  end

  # -- The server, in its own OS process ------------------------------------------

  defp build_helpers! do
    {out, status} =
      System.cmd("cargo", ["build", "--release", "--locked", "-p", "mcp_registration_bench"],
        cd: @root,
        stderr_to_stdout: true
      )

    status == 0 || raise "building the benchmark helpers failed:\n#{out}"
  end

  # A fresh server for every measurement, so the store size is the same for all.
  defp with_server(fun) do
    port =
      Port.open({:spawn_executable, @server_bin}, [
        :binary,
        :exit_status,
        {:line, 1024},
        args: ["--port", "0"]
      ])

    endpoint =
      receive do
        {^port, {:data, {:eol, "LISTENING " <> endpoint}}} -> endpoint
        {^port, {:exit_status, status}} -> raise "registration_server exited with #{status}"
      after
        10_000 -> raise "registration_server did not start"
      end

    try do
      fun.(endpoint)
    after
      # Closing stdin stops it.
      Port.close(port)
    end
  end

  # -- Runners --------------------------------------------------------------------

  defp warm_up(:wrk, _endpoint, _level, _config), do: :ok

  defp warm_up(runner, endpoint, level, config),
    do: measure(runner, endpoint, level, %{config | seconds: config.warmup}, nil)

  defp measure(:wrk, endpoint, level, config, wrk) do
    args = [
      "-t#{min(level, 2)}",
      "-c#{level}",
      "-d#{round(config.seconds)}s",
      "--latency",
      "-s",
      Path.join(@root, "bench/wrk_register.lua"),
      endpoint
    ]

    {out, 0} = System.cmd(wrk, args, stderr_to_stdout: true)

    [_, rps] = Regex.run(~r/Requests\/sec:\s+([\d.]+)/, out)
    [_, max] = Regex.run(~r/Latency\s+\S+\s+\S+\s+(\S+)/, out)
    [_, p50] = Regex.run(~r/^\s+50%\s+(\S+)$/m, out)
    [_, p99] = Regex.run(~r/^\s+99%\s+(\S+)$/m, out)

    errors =
      case Regex.run(~r/Non-2xx or 3xx responses:\s+(\d+)/, out),
        do:
          (
            nil -> 0
            [_, n] -> String.to_integer(n)
          )

    %{
      rps: String.to_float(rps),
      p50_us: wrk_us(p50),
      p99_us: wrk_us(p99),
      max_us: wrk_us(max),
      cpu_us: nil,
      errors: errors
    }
  end

  defp measure(:rust, endpoint, level, config, _wrk) do
    args = ["--endpoint", endpoint, "--concurrency", "#{level}", "--seconds", "#{config.seconds}"]
    {out, 0} = System.cmd(@load_bin, args)
    {:ok, r} = Native.json_decode(out)

    %{
      rps: r["rps"],
      p50_us: r["p50_us"],
      p99_us: r["p99_us"],
      max_us: r["max_us"],
      cpu_us: r["cpu_us_per_registration"],
      errors: r["errors"]
    }
  end

  defp measure(runner, endpoint, level, config, _wrk) when runner in [:nif, :httpc] do
    register = registrar(runner, endpoint, level)
    parent = self()
    cpu_before = os_cpu_us()
    started = System.monotonic_time(:microsecond)
    deadline = started + round(config.seconds * 1_000_000)

    workers =
      for _ <- 1..level do
        spawn_link(fn -> send(parent, {self(), worker(register, deadline, [], 0)}) end)
      end

    results = for pid <- workers, do: receive(do: ({^pid, result} -> result))
    elapsed = System.monotonic_time(:microsecond) - started
    cpu = os_cpu_us() - cpu_before
    latencies = results |> Enum.flat_map(&elem(&1, 0)) |> Enum.sort()
    errors = results |> Enum.map(&elem(&1, 1)) |> Enum.sum()
    count = length(latencies)

    %{
      rps: count / (elapsed / 1_000_000),
      p50_us: percentile(latencies, 0.50),
      p99_us: percentile(latencies, 0.99),
      max_us: List.last(latencies) || 0,
      cpu_us: if(count > 0, do: cpu / count, else: 0.0),
      errors: errors
    }
  end

  # Registers until the deadline; returns latencies (µs) and the error count.
  defp worker(register, deadline, latencies, errors) do
    began = System.monotonic_time(:microsecond)

    if began >= deadline do
      {latencies, errors}
    else
      case register.() do
        :ok -> worker(register, deadline, [System.monotonic_time(:microsecond) - began | latencies], errors)
        :error -> worker(register, deadline, latencies, errors + 1)
      end
    end
  end

  defp registrar(:nif, endpoint, _level) do
    request = %{
      registration_endpoint: endpoint,
      client_name: "Benchmark Client",
      redirect_uris: ["http://127.0.0.1:8080/callback"],
      scope: "mcp:read mcp:write"
    }

    fn ->
      case ClientRegistration.register_client(request) do
        {:ok, %{client_id: _}} -> :ok
        _ -> :error
      end
    end
  end

  # ExMCP 0.10 posted with :httpc. The body comes from a template (no JSON
  # library is available) and the answer is only checked for a client_id:
  # both favour the baseline.
  defp registrar(:httpc, endpoint, level) do
    profile = :"bench_#{level}"
    :inets.start(:httpc, profile: profile)

    :ok =
      :httpc.set_options(
        [max_sessions: max(level, 2), max_keep_alive_length: 1_000, keep_alive_timeout: 60_000],
        profile
      )

    url = String.to_charlist(endpoint)

    body =
      ~s({"client_name":"Benchmark Client","redirect_uris":["http://127.0.0.1:8080/callback"],) <>
        ~s("scope":"mcp:read mcp:write","grant_types":["authorization_code"],"response_types":["code"],) <>
        ~s("token_endpoint_auth_method":"none","application_type":"native"})

    fn ->
      request = {url, [{~c"accept", ~c"application/json"}], ~c"application/json", body}

      case :httpc.request(:post, request, [timeout: 15_000], [body_format: :binary], profile) do
        {:ok, {{_, status, _}, _headers, answer}} when status in [200, 201] ->
          if :binary.match(answer, ~s("client_id")) != :nomatch, do: :ok, else: :error

        _ ->
          :error
      end
    end
  end

  # -- Scheduler impact ------------------------------------------------------------

  # Time spent inside the NIF call itself (argument checks, spawn, resource),
  # with many calls in flight, and the time to decode a reply.
  defp scheduler_time(endpoint, config, batch) do
    request = %{
      registration_endpoint: endpoint,
      client_name: "Bench",
      redirect_uris: ["http://127.0.0.1:8080/cb"]
    }

    options = %{timeout: 15_000, connect_timeout: 5_000, max_response_bytes: 1_048_576, headers: []}
    samples = config.memory_total

    {call_ns, decode_ns} =
      Enum.reduce(1..div(samples, batch), {[], []}, fn _, {calls, decodes} ->
        refs =
          for _ <- 1..batch do
            ref = make_ref()
            t0 = System.monotonic_time(:nanosecond)
            {:ok, pending} = Native.register(request, options, ref)
            {ref, pending, System.monotonic_time(:nanosecond) - t0}
          end

        Enum.reduce(refs, {calls, decodes}, fn {ref, pending, ns}, {calls, decodes} ->
          # `pending` must stay referenced while waiting, as in Native.call/2:
          # once it is garbage, the call is cancelled.
          receive do
            {^ref, reply} ->
              t0 = System.monotonic_time(:nanosecond)
              {:ok, _} = :erlang.binary_to_term(reply, [:safe])
              {[ns | calls], [System.monotonic_time(:nanosecond) - t0 | decodes]}
          after
            60_000 -> raise "no reply (#{Native.cancel(pending)})"
          end
        end)
      end)

    %{nif_call: stats_ns(call_ns), reply_decode: stats_ns(decode_ns)}
  end

  defp stats_ns(samples) do
    sorted = Enum.sort(samples)
    us = fn ns -> Float.round(ns / 1000, 1) end

    %{
      p50_us: us.(percentile(sorted, 0.5)),
      p99_us: us.(percentile(sorted, 0.99)),
      max_us: us.(List.last(sorted))
    }
  end

  # A process asks for a 1 ms timer again and again; lateness is how much
  # later than 1 ms it wakes up, while `load` keeps registrations in flight.
  defp ticker_lateness(load) do
    parent = self()

    ticker =
      spawn_link(fn ->
        send(parent, {:lateness, tick(System.monotonic_time(:microsecond) + 1_500_000, [])})
      end)

    load.()
    receive(do: ({:lateness, samples} -> stats_us(samples, ticker)))
  end

  defp tick(until, samples) do
    t0 = System.monotonic_time(:microsecond)

    if t0 > until do
      samples
    else
      receive after: (1 -> :ok)
      tick(until, [System.monotonic_time(:microsecond) - t0 - 1_000 | samples])
    end
  end

  defp stats_us(samples, _ticker) do
    sorted = Enum.sort(samples)
    %{p50_us: percentile(sorted, 0.5), p99_us: percentile(sorted, 0.99), max_us: List.last(sorted)}
  end

  defp ticker_under_load(runner, endpoint, config) do
    register = registrar(runner, endpoint, config.in_flight)

    ticker_lateness(fn ->
      # Keep `in_flight` registrations going for as long as the ticker runs.
      deadline = System.monotonic_time(:millisecond) + 1_400

      loop = fn loop ->
        if System.monotonic_time(:millisecond) < deadline,
          do:
            (
              register.()
              loop.(loop)
            )
      end

      tasks = for _ <- 1..config.in_flight, do: Task.async(fn -> loop.(loop) end)
      Task.await_many(tasks, 60_000)
    end)
  end

  # -- Worst cases: the largest accepted request and answer -------------------------

  # Bounded scheduler time (README, Guarantees): the largest request map the
  # library accepts and the largest answer it reads by default, each timed
  # and watched with `:erlang.system_monitor(_, [{:long_schedule, 1}])`. The
  # server is a canned in-VM responder: the embedded server refuses bodies
  # over 64 KiB and never sends 100,000 members.
  defp worst_cases(config) do
    repeats = if config.runs > 1, do: 5, else: 2
    created = ~s({"client_id":"big"})
    extra = Map.new(1..49_000, &{"k#{&1}", "v"})

    # 100,000 members in under 1 MiB: the default max_response_bytes.
    answer =
      "{" <>
        Enum.map_join(1..100_000, ",", &~s("#{Integer.to_string(&1, 36)}":0)) <> ~s(,"client_id":"big"})

    request = fn endpoint ->
      %{registration_endpoint: endpoint, client_name: "Bench", redirect_uris: ["http://127.0.0.1:8080/cb"]}
    end

    largest_request =
      with_canned(created, fn endpoint ->
        worst_case(repeats, fn ->
          ClientRegistration.register_client(Map.put(request.(endpoint), :extra, extra))
        end)
      end)

    largest_answer =
      with_canned(answer, fn endpoint ->
        worst_case(repeats, fn -> ClientRegistration.register_client(request.(endpoint)) end)
      end)

    # The same answer decoded the way every reply was before: binary_to_term
    # on the caller's normal scheduler.
    reply =
      with_canned(answer, fn endpoint ->
        ref = make_ref()
        {:ok, pending} = Native.register(request.(endpoint), %{}, ref)

        receive do
          {^ref, reply} -> reply
        after
          60_000 -> raise "no reply (#{Native.cancel(pending)})"
        end
      end)

    on_scheduler = worst_case(repeats, fn -> {:ok, _} = :erlang.binary_to_term(reply, [:safe]) end)

    %{
      request_json_bytes: byte_size(Native.json_encode(extra, false) |> elem(1)),
      answer_bytes: byte_size(answer),
      reply_etf_bytes: byte_size(reply),
      largest_request: largest_request,
      largest_answer: largest_answer,
      answer_on_scheduler: on_scheduler
    }
  end

  # Runs `call` `repeats` times in this process; wall time and the longest
  # long_schedule slices (ms, 0 when none reached 1 ms).
  defp worst_case(repeats, call) do
    samples =
      for _ <- 1..repeats do
        {wall_us, caller} =
          :timer.tc(fn ->
            {result, slices} = long_slices(call)
            {:ok, _} = result
            slices
          end)

        {wall_us, caller}
      end

    %{
      wall_ms: samples |> Enum.map(&elem(&1, 0)) |> median() |> ms(),
      caller_slice_ms: samples |> Enum.map(&elem(&1, 1)) |> Enum.max()
    }
  end

  defp long_slices(call) do
    caller = self()

    watcher =
      spawn_link(fn ->
        :erlang.system_monitor(self(), [{:long_schedule, 1}])
        send(caller, {:watching, self()})
        watch_slices(caller, 0)
      end)

    receive(do: ({:watching, ^watcher} -> :ok))
    result = call.()
    # A slice is reported when the process is scheduled out: waiting for the
    # watcher's answer does that before :stop is sent.
    send(watcher, :sync)
    receive(do: ({:synced, ^watcher} -> :ok))
    send(watcher, :stop)
    receive(do: ({:slices, ^watcher, longest} -> {result, longest}))
  end

  # Other processes' slices (code loading, the responder) are not the call's.
  defp watch_slices(caller, longest) do
    receive do
      {:monitor, ^caller, :long_schedule, info} ->
        watch_slices(caller, max(longest, info[:timeout]))

      {:monitor, _other, :long_schedule, _info} ->
        watch_slices(caller, longest)

      :sync ->
        send(caller, {:synced, self()})
        watch_slices(caller, longest)

      :stop ->
        :erlang.system_monitor(:undefined)
        send(caller, {:slices, self(), longest})
    end
  end

  # A minimal HTTP/1.1 responder on loopback: reads one request, answers 201
  # with `body`, closes.
  defp with_canned(body, fun) do
    {:ok, listener} =
      :gen_tcp.listen(0, [:binary, ip: {127, 0, 0, 1}, active: false, reuseaddr: true, backlog: 64])

    {:ok, port} = :inet.port(listener)
    acceptor = spawn_link(fn -> accept_loop(listener, body) end)

    try do
      fun.("http://127.0.0.1:#{port}/register")
    after
      Process.unlink(acceptor)
      Process.exit(acceptor, :kill)
      :gen_tcp.close(listener)
    end
  end

  defp accept_loop(listener, body) do
    case :gen_tcp.accept(listener) do
      {:ok, socket} ->
        pid = spawn(fn -> receive(do: (:go -> answer(socket, body))) end)
        :ok = :gen_tcp.controlling_process(socket, pid)
        send(pid, :go)
        accept_loop(listener, body)

      {:error, _} ->
        :ok
    end
  end

  defp answer(socket, body) do
    :ok = :inet.setopts(socket, packet: :http_bin)
    length = read_headers(socket, 0)
    :ok = :inet.setopts(socket, packet: :raw)
    if length > 0, do: {:ok, _} = :gen_tcp.recv(socket, length, 30_000)

    :gen_tcp.send(socket, [
      "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: ",
      Integer.to_string(byte_size(body)),
      "\r\n\r\n",
      body
    ])

    :gen_tcp.close(socket)
  end

  defp read_headers(socket, length) do
    case :gen_tcp.recv(socket, 0, 30_000) do
      {:ok, {:http_request, _, _, _}} -> read_headers(socket, length)
      {:ok, {:http_header, _, :"Content-Length", _, value}} -> read_headers(socket, String.to_integer(value))
      {:ok, {:http_header, _, _, _, _}} -> read_headers(socket, length)
      {:ok, :http_eoh} -> length
    end
  end

  # -- Memory -----------------------------------------------------------------------

  defp memory_profile(endpoint, config) do
    register = registrar(:nif, endpoint, config.in_flight)
    # Warm up pools, the runtime and the allocators first.
    Task.await_many(for(_ <- 1..config.in_flight, do: Task.async(register)), 60_000)
    gc()
    baseline = memory_now()

    peak =
      sample_peak(fn -> Task.await_many(for(_ <- 1..config.in_flight, do: Task.async(register)), 60_000) end)

    rounds = div(config.memory_total, config.in_flight)

    for _ <- 1..rounds do
      Task.await_many(for(_ <- 1..config.in_flight, do: Task.async(register)), 60_000)
    end

    gc()
    after_run = memory_now()

    %{
      baseline: baseline,
      peak_in_flight: peak,
      after_registrations: after_run,
      registrations: rounds * config.in_flight,
      growth_beam_mb: Float.round((after_run.beam - baseline.beam) / 1_048_576, 2),
      growth_rss_mb: Float.round((after_run.rss - baseline.rss) / 1_048_576, 2)
    }
  end

  defp gc do
    for pid <- Process.list(), do: :erlang.garbage_collect(pid)
    :ok
  end

  defp memory_now, do: %{beam: :erlang.memory(:total), rss: rss_bytes()}

  defp sample_peak(fun) do
    parent = self()
    sampler = spawn_link(fn -> sample_loop(parent, memory_now()) end)
    fun.()
    send(sampler, :stop)
    receive(do: ({:peak, peak} -> peak))
  end

  defp sample_loop(parent, peak) do
    receive do
      :stop -> send(parent, {:peak, peak})
    after
      5 ->
        now = memory_now()
        sample_loop(parent, %{beam: max(peak.beam, now.beam), rss: max(peak.rss, now.rss)})
    end
  end

  defp rss_bytes do
    "/proc/self/status"
    |> File.read!()
    |> then(&Regex.run(~r/VmRSS:\s+(\d+) kB/, &1))
    |> then(fn [_, kb] -> String.to_integer(kb) * 1024 end)
  end

  # User + system CPU of this OS process (BEAM and tokio threads), in µs.
  defp os_cpu_us do
    [_, rest] = String.split(File.read!("/proc/self/stat"), ") ", parts: 2)
    fields = String.split(rest)
    ticks = String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))
    ticks * 10_000
  end

  # -- Reporting ----------------------------------------------------------------------

  defp summarize(runs) do
    rates = Enum.map(runs, & &1.rps) |> Enum.sort()

    %{
      rps: median(rates),
      rps_min: List.first(rates),
      rps_max: List.last(rates),
      p50_us: median(Enum.map(runs, & &1.p50_us)),
      p99_us: median(Enum.map(runs, & &1.p99_us)),
      max_us: Enum.max(Enum.map(runs, & &1.max_us)),
      cpu_us:
        runs
        |> Enum.map(& &1.cpu_us)
        |> Enum.reject(&is_nil/1)
        |> then(&if(&1 == [], do: nil, else: median(&1))),
      errors: Enum.sum(Enum.map(runs, & &1.errors))
    }
  end

  defp report(throughput, scheduler, ticker, memory, worst, config, quick?) do
    m = machine()
    top = Enum.max(config.levels)

    rows =
      for level <- config.levels, runner <- [:wrk, :rust, :nif, :httpc], s = throughput[{runner, level}] do
        "| #{runner} | #{level} | #{round(s.rps)} | #{round(s.rps_min)}–#{round(s.rps_max)} | #{ms(s.p50_us)} | #{ms(s.p99_us)} | #{ms(s.max_us)} | #{if s.cpu_us, do: round(s.cpu_us), else: "n/a"} | #{s.errors} |"
      end

    ratio = fn a, b -> ratio(throughput, a, b, top) end

    ratios =
      for level <- config.levels do
        r = fn a, b -> ratio(throughput, a, b, level) || "n/a" end
        "| #{level} | #{r.(:nif, :httpc)} | #{r.(:nif, :rust)} | #{r.(:nif, :wrk)} |"
      end

    growth = max(memory.growth_beam_mb, memory.growth_rss_mb)

    targets = [
      {"NIF ≥ 3× :httpc registrations/s at #{top} concurrent", ratio.(:nif, :httpc), &(&1 >= 3.0), "×"},
      {"NIF ≥ 90% of the pure-Rust loop at #{top}", ratio.(:nif, :rust), &(&1 >= 0.9), "×"},
      {"NIF call on the scheduler p99 ≤ 20 µs (16 in flight)", scheduler.light.nif_call.p99_us, &(&1 <= 20),
       " µs"},
      {"ticker lateness p99 ≤ 2 ms with #{config.in_flight} in flight (NIF)", ticker.nif.p99_us / 1000,
       &(&1 <= 2.0), " ms"},
      {"memory growth after #{memory.registrations} registrations ≤ 20 MB", growth, &(&1 <= 20), " MB"},
      {"longest normal-scheduler slice of a worst-case call < 1 ms (long_schedule)",
       max(worst.largest_request.caller_slice_ms, worst.largest_answer.caller_slice_ms), &(&1 < 1), " ms"}
    ]

    target_rows =
      for {name, value, ok?, unit} <- targets do
        status =
          cond do
            is_nil(value) -> "not measured"
            ok?.(value) -> "**met**"
            true -> "**missed**"
          end

        "| #{name} | #{value}#{unit} | #{status} |"
      end

    """
    # Registration benchmark results

    #{if quick?, do: "_Smoke run (--quick): tiny counts, figures are not meaningful._\n", else: ""}
    - Date: #{Date.utc_today()} · command: `bin/bench` (`mix run bench/registration.exs`)
    - Machine: #{m.cpu}, #{m.cores} cores, #{m.memory}; #{m.os}
    - Erlang/OTP #{System.otp_release()} (#{System.schedulers_online()} schedulers), Elixir #{System.version()}, #{m.rustc}
    - Each runner registers against a fresh embedded server in its own OS process
      (`target/release/registration_server`, 2 tokio workers), all on loopback and on the same #{m.cores} cores.
    - #{config.runs} runs of #{config.seconds} s per cell after a #{config.warmup} s warm-up (wrk: no warm-up,
      whole seconds). Figures are medians; the spread is min–max of the runs' rates.
    - `:httpc` posts a templated JSON body and only looks for `"client_id"` in the answer, with
      `max_sessions` raised to the concurrency: this favours the baseline. CPU is this OS process's
      user + system time per registration (BEAM and tokio threads), server excluded.

    ## Throughput and latency

    | runner | concurrency | registrations/s | spread | p50 ms | p99 ms | max ms | CPU µs/reg | errors |
    |---|---|---|---|---|---|---|---|---|
    #{Enum.join(rows, "\n")}

    ## Ratios

    | concurrency | NIF / :httpc | NIF / pure Rust | NIF / wrk |
    |---|---|---|---|
    #{Enum.join(ratios, "\n")}

    ## Scheduler and memory

    - NIF call on the scheduler (wall clock around `Native.register/3`, #{config.memory_total} calls):
      16 in flight p50 #{scheduler.light.nif_call.p50_us} / p99 #{scheduler.light.nif_call.p99_us} / max #{scheduler.light.nif_call.max_us} µs;
      256 in flight p50 #{scheduler.heavy.nif_call.p50_us} / p99 #{scheduler.heavy.nif_call.p99_us} / max #{scheduler.heavy.nif_call.max_us} µs.
      Decoding a reply (`binary_to_term` on the scheduler; these replies are under 1 KiB), 16 in flight: p50 #{scheduler.light.reply_decode.p50_us} µs, p99 #{scheduler.light.reply_decode.p99_us} µs.
    - Lateness of a process ticking every 1 ms: idle p99 #{ms(ticker.idle.p99_us)} ms; with #{config.in_flight} registrations in flight,
      NIF p50 #{ms(ticker.nif.p50_us)} / p99 #{ms(ticker.nif.p99_us)} / max #{ms(ticker.nif.max_us)} ms,
      :httpc p50 #{ms(ticker.httpc.p50_us)} / p99 #{ms(ticker.httpc.p99_us)} / max #{ms(ticker.httpc.max_us)} ms.
    - Memory (BEAM total / OS RSS): baseline #{mb(memory.baseline.beam)} / #{mb(memory.baseline.rss)} MB;
      peak with #{config.in_flight} in flight #{mb(memory.peak_in_flight.beam)} / #{mb(memory.peak_in_flight.rss)} MB;
      after #{memory.registrations} more registrations and a GC #{mb(memory.after_registrations.beam)} / #{mb(memory.after_registrations.rss)} MB
      (growth #{memory.growth_beam_mb} / #{memory.growth_rss_mb} MB).

    ## Worst cases: bounded scheduler time

    The largest request map the library accepts and the largest answer it reads by default, each
    registered against a canned loopback responder, in this process, #{if config.runs > 1, do: 5, else: 2} times. "Longest slice"
    is the longest time a process ran uninterrupted on a normal scheduler, as reported by
    `:erlang.system_monitor(_, [{:long_schedule, 1}])` (whole ms; 0 = none reached 1 ms).

    | case | wall ms (median) | longest slice of the caller |
    |---|---|---|
    | largest accepted request: 49,000 `extra` members, #{worst.request_json_bytes} bytes of JSON (converted on a dirty scheduler) | #{worst.largest_request.wall_ms} | #{worst.largest_request.caller_slice_ms} ms |
    | largest accepted answer: 100,000 members, #{worst.answer_bytes} bytes (#{worst.reply_etf_bytes} bytes of ETF, decoded on a dirty scheduler) | #{worst.largest_answer.wall_ms} | #{worst.largest_answer.caller_slice_ms} ms |
    | the same reply decoded by `binary_to_term/2` on the normal scheduler (how every reply was decoded before) | #{worst.answer_on_scheduler.wall_ms} | #{worst.answer_on_scheduler.caller_slice_ms} ms |

    ## Targets

    What was profiled and tried for the missed targets: `bench/PROFILING.md`.

    | target | measured | status |
    |---|---|---|
    #{Enum.join(target_rows, "\n")}
    """
  end

  # -- Cancellation and deadlines ----------------------------------------------------
  #
  # Figures the test suite cannot assert on a shared machine: how soon a
  # killed caller's connection is closed (the suite asserts < 100 ms), and
  # how far past `timeout:` a call to a silent server returns (the suite
  # allows 250 ms of scheduling slack). Both against a local server that
  # reads the request and never answers.

  defp cancellation_figures(config) do
    samples = if config.runs == 1, do: 20, else: 200
    {listener, port} = silent_server()
    request = %{registration_request("http://127.0.0.1:#{port}/register") | client_name: "Cancellation"}

    kill_to_close_us =
      for _ <- 1..samples do
        {caller, monitor} =
          spawn_monitor(fn -> ClientRegistration.register_client(request, timeout: 30_000) end)

        holder =
          receive(do: ({:request_held, holder} -> holder), after: (10_000 -> raise("no request arrived")))

        killed_at = System.monotonic_time(:microsecond)
        Process.exit(caller, :kill)
        receive(do: ({:DOWN, ^monitor, _, _, _} -> :ok))
        receive(do: ({:closed, ^holder, at} -> at - killed_at), after: (10_000 -> raise("never closed")))
      end

    timeout = 100

    overshoot_us =
      for _ <- 1..div(samples, 4) do
        {us, {:error, {:request_failed, :timeout}}} =
          :timer.tc(fn -> ClientRegistration.register_client(request, timeout: timeout) end)

        holder =
          receive(do: ({:request_held, holder} -> holder), after: (10_000 -> raise("no request arrived")))

        receive(do: ({:closed, ^holder, _} -> :ok), after: (10_000 -> raise("never closed")))
        us - timeout * 1000
      end

    :gen_tcp.close(listener)

    %{
      kill_to_close: stats_us(kill_to_close_us, nil),
      timeout: timeout,
      overshoot: stats_us(overshoot_us, nil)
    }
  end

  defp cancellation_report(c) do
    """

    ## Cancellation and deadlines

    - A caller killed while its request is held by a silent local server: the server sees the
      connection close p50 #{c.kill_to_close.p50_us} / p99 #{c.kill_to_close.p99_us} / max #{c.kill_to_close.max_us} µs after the kill.
    - `timeout: #{c.timeout}` against the same server returns `{:request_failed, :timeout}` this late:
      p50 #{c.overshoot.p50_us} / p99 #{c.overshoot.p99_us} / max #{c.overshoot.max_us} µs past the deadline.
    """
  end

  # -- Client store: obtain_client cached hits ----------------------------------------
  #
  # obtain_client(discovery, metadata, store: store) on a warm store: one
  # registration, then `calls` calls that each find the stored client and
  # return it without a request. Per adapter, from one process and from 16
  # at once (each doing calls / 16); the server's client count proves that
  # none of the measured calls registered.

  @store_levels [1, 16]

  defp client_store_hits(calls) do
    dir = Path.join(System.tmp_dir!(), "ex_mcp_bench_store_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    # A RAM schema: Mnesia writes nothing, but keep its directory out of the tree.
    Application.put_env(:mnesia, :dir, String.to_charlist(Path.join(dir, "mnesia")))
    {:ok, _} = Application.ensure_all_started(:mnesia)
    {:ok, server} = RegistrationServer.start_link(port: 0, protected_resource: [resource: "/mcp"])

    try do
      {:ok, discovery} = ClientRegistration.discover(RegistrationServer.resource_url(server))
      metadata = %{client_name: "Bench", redirect_uris: ["http://127.0.0.1:8080/callback"]}

      adapters = [
        {"ETS", fn -> ClientStore.ETS.start_link(name: :bench_ets) end, {ClientStore.ETS, :bench_ets}},
        {"DETS",
         fn -> ClientStore.DETS.start_link(name: :bench_dets, path: Path.join(dir, "clients.dets")) end,
         {ClientStore.DETS, :bench_dets}},
        {"Mnesia ram_copies (this node)", fn -> ClientStore.Mnesia.start_link(table: :bench_mnesia) end,
         {ClientStore.Mnesia, :bench_mnesia}}
      ]

      for {label, start, store} <- adapters do
        {:ok, pid} = start.()
        before = RegistrationServer.count(server)
        {:ok, %{client_id: id}} = ClientRegistration.obtain_client(discovery, metadata, store: store)
        RegistrationServer.count(server) == before + 1 || raise "#{label}: the first call did not register"
        # Warm-up: code loaded, caches filled.
        hits(discovery, metadata, store, id, 1, min(calls, 1_000))

        rows =
          for level <- @store_levels do
            registered = RegistrationServer.count(server)
            {wall_us, samples} = :timer.tc(fn -> hits(discovery, metadata, store, id, level, calls) end)
            sorted = Enum.sort(samples)
            n = length(sorted)

            row = %{
              adapter: label,
              processes: level,
              calls: n,
              p50_us: Float.round(percentile(sorted, 0.5) / 1000, 1),
              p99_us: Float.round(percentile(sorted, 0.99) / 1000, 1),
              mean_us: Float.round(Enum.sum(sorted) / n / 1000, 1),
              calls_per_s: round(n / (wall_us / 1_000_000)),
              registrations: RegistrationServer.count(server) - registered
            }

            log("client store #{label}, #{level} process(es): #{inspect(row)}")
            row
          end

        GenServer.stop(pid)
        rows
      end
      |> List.flatten()
    after
      RegistrationServer.stop(server)
      :stopped = :mnesia.stop()
      File.rm_rf!(dir)
    end
  end

  # `level` processes share `calls`; each sample is one call's wall time (ns).
  defp hits(discovery, metadata, store, id, level, calls) do
    per_process = div(calls, level)

    1..level
    |> Enum.map(fn _ ->
      Task.async(fn ->
        for _ <- 1..per_process do
          t0 = System.monotonic_time(:nanosecond)
          {:ok, %{client_id: ^id}} = ClientRegistration.obtain_client(discovery, metadata, store: store)
          System.monotonic_time(:nanosecond) - t0
        end
      end)
    end)
    |> Enum.flat_map(&Task.await(&1, 120_000))
  end

  defp client_store_report(rows, quick?) do
    m = machine()

    lines =
      for r <- rows do
        "| #{r.adapter} | #{r.processes} | #{r.calls} | #{r.p50_us} | #{r.p99_us} | #{r.mean_us} | #{r.calls_per_s} | #{r.registrations} |"
      end

    """

    ## Client store: obtain_client cached hit

    #{if quick?, do: "_Smoke run (--quick): tiny counts, figures are not meaningful._\n\n", else: ""}`obtain_client(discovery, metadata, store: store)` on a warm store: one registration against
    the embedded server (in this VM), then each call finds the stored client and returns it without
    a request. The processes share the calls; latency is each call's wall time, calls/s is over the
    whole batch; "registrations" counts those the measured calls made (0: every call was a hit).
    With 16 processes on #{System.schedulers_online()} schedulers, a call's wall time includes waiting for a
    scheduler, so compare the rates there, and the p50 with the single process.
    #{Date.utc_today()}, #{m.cpu}, #{m.cores} cores, Erlang/OTP #{System.otp_release()}; the machine is shared.

    | adapter | processes | calls | p50 µs | p99 µs | mean µs | calls/s | registrations |
    |---|---|---|---|---|---|---|---|
    #{Enum.join(lines, "\n")}
    """
  end

  defp registration_request(endpoint) do
    %{
      registration_endpoint: endpoint,
      client_name: "Benchmark Client",
      redirect_uris: ["http://127.0.0.1:8080/callback"]
    }
  end

  # Accepts connections, tells the bench process `{:request_held, pid}` once
  # a request's first bytes arrive, never answers, and sends
  # `{:closed, pid, monotonic_us}` when the client closes.
  defp silent_server do
    {:ok, listener} = :gen_tcp.listen(0, [:binary, active: false, ip: {127, 0, 0, 1}, backlog: 128])
    {:ok, port} = :inet.port(listener)
    bench = self()
    spawn(fn -> accept_silently(listener, bench) end)
    {listener, port}
  end

  defp accept_silently(listener, bench) do
    case :gen_tcp.accept(listener) do
      {:ok, socket} ->
        holder = spawn(fn -> receive(do: (:go -> hold_silently(socket, bench, false))) end)
        :ok = :gen_tcp.controlling_process(socket, holder)
        send(holder, :go)
        accept_silently(listener, bench)

      {:error, _} ->
        :ok
    end
  end

  defp hold_silently(socket, bench, told?) do
    case :gen_tcp.recv(socket, 0) do
      {:ok, _data} ->
        unless told?, do: send(bench, {:request_held, self()})
        hold_silently(socket, bench, true)

      {:error, _} ->
        send(bench, {:closed, self(), System.monotonic_time(:microsecond)})
    end
  end

  defp list_flag(nil, default, _parse), do: default
  defp list_flag(text, _default, parse), do: text |> String.split(",", trim: true) |> Enum.map(parse)

  defp ratio(throughput, a, b, level) do
    case {throughput[{a, level}], throughput[{b, level}]} do
      {%{rps: x}, %{rps: y}} when y > 0 -> Float.round(x / y, 2)
      _ -> nil
    end
  end

  defp machine do
    cpu =
      case File.read("/proc/cpuinfo") do
        {:ok, info} -> (Regex.run(~r/model name\s*:\s*(.+)/, info) || [nil, "unknown CPU"]) |> List.last()
        _ -> "unknown CPU"
      end

    memory =
      case File.read("/proc/meminfo") do
        {:ok, info} ->
          (Regex.run(~r/MemTotal:\s+(\d+)/, info)
           |> List.last()
           |> String.to_integer()
           |> div(1_048_576)
           |> to_string()) <> " GiB"

        _ ->
          "unknown memory"
      end

    os =
      case File.read("/etc/os-release"),
        do:
          (
            {:ok, t} -> (Regex.run(~r/PRETTY_NAME="(.+)"/, t) || [nil, "Linux"]) |> List.last()
            _ -> "Linux"
          )

    {rustc, _} = System.cmd("rustc", ["--version"])
    %{cpu: cpu, cores: System.schedulers_online(), memory: memory, os: os, rustc: String.trim(rustc)}
  end

  defp percentile([], _q), do: 0
  defp percentile(sorted, q), do: Enum.at(sorted, min(round((length(sorted) - 1) * q), length(sorted) - 1))

  defp median(values), do: values |> Enum.sort() |> percentile(0.5)
  defp ms(us) when is_number(us), do: Float.round(us / 1000, 2)
  defp mb(bytes), do: Float.round(bytes / 1_048_576, 1)

  defp wrk_us(text) do
    [_, number, unit] = Regex.run(~r/([\d.]+)(us|ms|s)/, text)
    value = String.to_float(if String.contains?(number, "."), do: number, else: number <> ".0")
    round(value * %{"us" => 1, "ms" => 1_000, "s" => 1_000_000}[unit])
  end

  defp format_rate(s),
    do:
      "#{round(s.rps)}/s (#{round(s.rps_min)}–#{round(s.rps_max)}), p99 #{ms(s.p99_us)} ms, errors #{s.errors}"

  defp log(message), do: IO.puts(:stderr, "[bench] " <> message)
end

Bench.main(System.argv())
