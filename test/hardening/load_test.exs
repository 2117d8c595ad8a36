defmodule ExMCP.Authorization.Hardening.LoadTest do
  # Load on the client and on the embedded server, sized to run in seconds.
  # Bigger runs are in the benchmark (bin/bench).
  use ExUnit.Case, async: false

  alias ExMCP.Authorization.{ClientRegistration, Native, RegistrationServer}

  @moduletag :load
  @moduletag timeout: 180_000

  setup do
    server = start_supervised!({RegistrationServer, port: 0})
    %{server: server, endpoint: RegistrationServer.registration_endpoint(server)}
  end

  defp request(endpoint, n) do
    %{
      registration_endpoint: endpoint,
      client_name: "Load client #{n}",
      redirect_uris: ["http://127.0.0.1:8080/callback"]
    }
  end

  # `total` registrations from `processes` concurrent processes.
  defp register_many(endpoint, processes, total) do
    per_process = div(total, processes)

    1..processes
    |> Enum.map(fn p ->
      Task.async(fn ->
        for i <- 1..per_process do
          ClientRegistration.register_client(request(endpoint, p * per_process + i), timeout: 60_000)
        end
      end)
    end)
    |> Task.await_many(120_000)
    |> List.flatten()
  end

  defp settle do
    for pid <- Process.list(), do: :erlang.garbage_collect(pid)
    :erlang.memory(:total)
  end

  defp rss_mb do
    [_, kb] = Regex.run(~r/VmRSS:\s+(\d+) kB/, File.read!("/proc/self/status"))
    Float.round(String.to_integer(kb) / 1024, 1)
  end

  test "10,000 registrations from 1,000 processes, twice: all succeed, ids are distinct, memory is flat",
       %{server: server, endpoint: endpoint} do
    first = register_many(endpoint, 1_000, 10_000)

    assert length(first) == 10_000

    assert Enum.count(first, &match?({:ok, _}, &1)) == 10_000,
           inspect(Enum.reject(first, &match?({:ok, _}, &1)))

    ids = for {:ok, %{client_id: id}} <- first, do: id
    assert MapSet.size(MapSet.new(ids)) == 10_000
    assert RegistrationServer.count(server) == 10_000
    assert Native.in_flight() == 0

    after_first = settle()
    rss_first = rss_mb()

    second = register_many(endpoint, 1_000, 10_000)
    assert Enum.count(second, &match?({:ok, _}, &1)) == 10_000
    assert RegistrationServer.count(server) == 20_000
    after_second = settle()
    rss_second = rss_mb()

    growth_mb = (after_second - after_first) / 1_048_576

    IO.puts(
      "\n[load] BEAM memory after round 1: #{Float.round(after_first / 1_048_576, 1)} MB, " <>
        "after round 2: #{Float.round(after_second / 1_048_576, 1)} MB (#{Float.round(growth_mb, 2)} MB); " <>
        "OS RSS #{rss_first} -> #{rss_second} MB (the embedded server's store holds 20,000 clients)"
    )

    # The client side keeps nothing per registration: a second round of the
    # same size must not grow the BEAM's memory.
    assert growth_mb < 5
  end

  test "slow clients do not block other clients", %{endpoint: endpoint, server: server} do
    uri = URI.parse(endpoint)

    # Twenty connections that send half a request, then nothing.
    slow =
      for _ <- 1..20 do
        {:ok, socket} = :gen_tcp.connect(~c"127.0.0.1", uri.port, [:binary, active: false])
        :ok = :gen_tcp.send(socket, "POST /register HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-le")
        socket
      end

    # Meanwhile 200 registrations, each with a 2 s deadline, all go through.
    results =
      1..200
      |> Task.async_stream(&ClientRegistration.register_client(request(endpoint, &1), timeout: 2_000),
        max_concurrency: 50
      )
      |> Enum.map(fn {:ok, result} -> result end)

    assert Enum.all?(results, &match?({:ok, _}, &1))
    assert RegistrationServer.count(server) == 200

    # The slow connections are still waiting: none was answered or dropped.
    for socket <- slow do
      assert :gen_tcp.recv(socket, 0, 0) == {:error, :timeout}
      :gen_tcp.close(socket)
    end
  end

  test "1,000 concurrent connections are all served", %{endpoint: endpoint, server: server} do
    uri = URI.parse(endpoint)
    body = ~s({"client_name":"raw","redirect_uris":["http://127.0.0.1:8080/callback"]})

    request =
      "POST /register HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n" <>
        "content-length: #{byte_size(body)}\r\nconnection: close\r\n\r\n" <> body

    parent = self()

    # Every connection is open before any request is sent.
    tasks =
      for _ <- 1..1_000 do
        Task.async(fn ->
          {:ok, socket} = :gen_tcp.connect(~c"127.0.0.1", uri.port, [:binary, active: false], 10_000)
          send(parent, {:connected, self()})
          receive do: (:go -> :ok)
          :ok = :gen_tcp.send(socket, request)
          answer = read_all(socket, "")
          :gen_tcp.close(socket)
          answer
        end)
      end

    for _ <- tasks, do: assert_receive({:connected, _}, 30_000)
    for task <- tasks, do: send(task.pid, :go)
    answers = Task.await_many(tasks, 60_000)

    assert Enum.count(answers, &String.starts_with?(&1, "HTTP/1.1 201 ")) == 1_000
    assert RegistrationServer.count(server) == 1_000
  end

  test "malformed and oversized bodies under concurrency get their answers and break nothing",
       %{endpoint: endpoint, server: server} do
    uri = URI.parse(endpoint)
    valid = ~s({"client_name":"ok","redirect_uris":["http://127.0.0.1:8080/callback"]})

    bodies = [
      {valid, "201"},
      {"{not json", "400"},
      {"[1,2,3]", "400"},
      {~s<{"client_name":"x","redirect_uris":["javascript:alert(1)"]}>, "400"},
      {String.duplicate("x", 70_000), "413"}
    ]

    answers =
      for i <- 1..500 do
        {body, expected} = Enum.at(bodies, rem(i, length(bodies)))

        Task.async(fn ->
          {:ok, socket} = :gen_tcp.connect(~c"127.0.0.1", uri.port, [:binary, active: false], 10_000)

          :ok =
            :gen_tcp.send(socket, [
              "POST /register HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n",
              "content-length: #{byte_size(body)}\r\nconnection: close\r\n\r\n",
              body
            ])

          answer = read_all(socket, "")
          :gen_tcp.close(socket)
          {expected, answer}
        end)
      end
      |> Task.await_many(60_000)

    for {expected, answer} <- answers do
      assert String.starts_with?(answer, "HTTP/1.1 #{expected} "), "expected #{expected}, got: #{answer}"
    end

    assert RegistrationServer.count(server) == 100

    # And the server still works for a real client afterwards.
    assert {:ok, _} = ClientRegistration.register_client(request(endpoint, 0))
  end

  defp read_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 30_000) do
      {:ok, data} -> read_all(socket, acc <> data)
      {:error, :closed} -> acc
    end
  end
end
