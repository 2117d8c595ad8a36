defmodule ExMCP.Hardening.FaultMatrixTest do
  # Transport faults injected by ExMCP.Test.FixtureServer on 127.0.0.1, one
  # per test. Every case asserts the documented reason, that the call ended
  # within its deadline, and that the caller's mailbox is left empty.
  #
  # Set HARDENING_REPORT=1 to print the measured figures.
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.ClientRegistration, as: CR
  alias ExMCP.Test.FixtureServer

  import ExMCP.Test.FixtureServer, only: [registration_request: 1]
  import ExMCP.Test.HardeningReport, only: [report: 2]

  @json [{"content-type", "application/json"}]
  @ok {:respond, 201, @json, ~s({"client_id":"abc"})}
  @ok_answer {:ok,
              %{
                client_id: "abc",
                client_secret: nil,
                client_secret_expires_at: nil,
                registration_access_token: nil,
                registration_client_uri: nil,
                client_name: nil,
                redirect_uris: [],
                grant_types: ["authorization_code"],
                response_types: ["code"],
                scope: ""
              }}

  # A call must end within its deadline plus this, and a refusal within this.
  # Loose on purpose: the suite runs on a shared two-core machine (load
  # average 11 when measured), where the worst of 5 runs of this module was
  # 84 ms past the deadline (typically 1-2 ms) and 83 ms for a refusal
  # (typically 0-2 ms). The precise figures are in the benchmark's
  # "Cancellation and deadlines" section.
  @slack 250

  # Runs a call, checks the mailbox is clean right after it, returns
  # {result, elapsed_ms}.
  defp timed(fun) do
    started = System.monotonic_time(:millisecond)
    result = fun.()
    elapsed = System.monotonic_time(:millisecond) - started
    assert Process.info(self(), :messages) == {:messages, []}
    {result, elapsed}
  end

  defp register(server, opts \\ []),
    do: timed(fn -> CR.register_client(registration_request(server), opts) end)

  defp headers_only(status, headers) do
    ["HTTP/1.1 #{status} Status\r\n", Enum.map(headers, fn {n, v} -> [n, ": ", v, "\r\n"] end), "\r\n"]
  end

  defp conn_event?(event, type), do: event.type == type

  describe "no answer, or an answer too slow: the deadline covers the whole call" do
    test "a server that accepts, reads the request and never answers gives :timeout" do
      server = FixtureServer.start!(fn _ -> :hang end)

      {result, elapsed} = register(server, timeout: 300)

      assert result == {:error, {:request_failed, :timeout}}
      assert elapsed >= 300 and elapsed < 300 + @slack
      assert [%{method: "POST"}] = FixtureServer.requests(server)
      # The abandoned call closes its connection.
      assert FixtureServer.await_idle(server, 1_000) == :ok
      assert Process.info(self(), :messages) == {:messages, []}
      report("no answer: elapsed ms", elapsed)
    end

    test "a server that accepts and never even reads gives :timeout" do
      server = FixtureServer.start!(fn _ -> @ok end, on_accept: fn _ -> :hang end)

      {result, elapsed} = register(server, timeout: 300)

      assert result == {:error, {:request_failed, :timeout}}
      assert elapsed >= 300 and elapsed < 300 + @slack
      assert FixtureServer.requests(server) == []
      assert FixtureServer.connection_count(server) == 1
      assert FixtureServer.await_idle(server, 1_000) == :ok
    end

    test "headers trickling in one byte every 100 ms, past the deadline, give :timeout" do
      head = [
        headers_only(201, [{"content-type", "application/json"}, {"content-length", "17"}]),
        ~s({"client_id":"a"})
      ]

      # 90 bytes at 10 per second: 9 s if the client waited for all of them.
      server = FixtureServer.start!(fn _ -> {:trickle, head, 1, 100} end)

      {result, elapsed} = register(server, timeout: 300)

      assert result == {:error, {:request_failed, :timeout}}
      assert elapsed >= 300 and elapsed < 300 + @slack

      # The client hung up: the fixture's writes start failing soon after.
      event = FixtureServer.await_event(server, &conn_event?(&1, :write_failed), 2_000)
      assert %{sent: sent, result: {:error, _}} = event.detail
      assert sent > 0 and sent < IO.iodata_length(head)
      report("slow headers: elapsed ms, header bytes sent before the client hung up", {elapsed, sent})
    end

    test "a body trickling 4 bytes every 50 ms is cut off by the 500 ms deadline for the whole call" do
      # Every single read gets data within 50 ms, ten times faster than the
      # deadline: only a deadline over the whole call can end this, after
      # about 40 body bytes, instead of the 12.5 s the body would take.
      body = String.duplicate("x", 1_000)

      server =
        FixtureServer.start!(fn _ ->
          [{:raw, headers_only(201, [{"content-length", "1000"}])}, {:trickle, body, 4, 50}]
        end)

      {result, elapsed} = register(server, timeout: 500)

      assert result == {:error, {:request_failed, :timeout}}
      assert elapsed >= 500 and elapsed < 500 + @slack

      event = FixtureServer.await_event(server, &conn_event?(&1, :write_failed), 2_000)
      assert %{sent: sent, result: {:error, _}} = event.detail
      # Data was flowing when the deadline struck, and far from finished.
      assert sent >= 12 and sent < 200
      report("trickled body: elapsed ms, body bytes sent before the client hung up", {elapsed, sent})
    end

    test "the deadline covers both round trips of an update, not each one" do
      current = ~s({"client_id":"c1","client_name":"Old"})
      # Each exchange takes 300 ms, well inside the 500 ms deadline on its
      # own; the two together are not.
      slow = [{:delay, 300}, {:respond, 200, @json, current}]
      server = FixtureServer.start!([slow, slow])
      uri = FixtureServer.url(server, "/register/c1")

      {result, elapsed} =
        timed(fn -> CR.update_client_information(uri, "tok", %{client_name: "New"}, timeout: 500) end)

      assert result == {:error, {:request_failed, :timeout}}
      assert elapsed >= 500 and elapsed < 500 + @slack
      # The read was answered and the PUT sent before the deadline struck.
      assert [%{method: "GET"}, %{method: "PUT"}] = FixtureServer.await_requests(server, 2, 1_000)
      assert Process.info(self(), :messages) == {:messages, []}
    end
  end

  describe "connections that break" do
    test "a reset in the middle of the headers is {:connection, _}" do
      server =
        FixtureServer.start!(fn _ -> [{:raw, "HTTP/1.1 201 Created\r\ncontent-type: applic"}, :reset] end)

      {result, elapsed} = register(server)

      assert {:error, {:request_failed, {:connection, message}}} = result
      assert message =~ ~r/reset/i
      assert elapsed < @slack
      report("reset in headers", result)
    end

    test "a reset in the middle of the body is {:connection, _}" do
      server =
        FixtureServer.start!(fn _ ->
          [{:raw, [headers_only(201, [{"content-length", "100"}]), ~s({"client_id":)]}, :reset]
        end)

      {result, elapsed} = register(server)

      assert {:error, {:request_failed, {:connection, message}}} = result
      assert message =~ ~r/reset/i
      assert elapsed < @slack
      report("reset in body", result)
    end

    test "a server that closes right after accepting is {:connection, _}" do
      server = FixtureServer.start!(fn _ -> @ok end, on_accept: fn _ -> :close end)

      {result, elapsed} = register(server)

      assert {:error, {:request_failed, {:connection, message}}} = result
      assert is_binary(message) and message != ""
      assert elapsed < @slack
      assert FixtureServer.requests(server) == []
      report("closed on accept", result)
    end

    test "a server that resets right after accepting is {:connection, _}, or {:connect, _} if the RST wins the race" do
      # When the RST arrives before the client's connect future has seen the
      # handshake complete, the kernel reports ECONNRESET as the connect
      # result (SO_ERROR) and the call fails as a connect error; otherwise the
      # RST breaks the exchange. Under load both happen (about 1 in 3 was
      # {:connect, _} with a busy CPU). Either way nothing was sent.
      server = FixtureServer.start!(fn _ -> @ok end, on_accept: fn _ -> :reset end)

      for _ <- 1..20 do
        {result, elapsed} = register(server)

        case result do
          {:error, {:request_failed, {:connection, message}}} -> assert is_binary(message) and message != ""
          {:error, {:request_failed, {:connect, message}}} -> assert message =~ ~r/reset/i
        end

        assert elapsed < @slack
      end

      assert FixtureServer.requests(server) == []
    end

    test "a server that reads the request and closes without answering is {:connection, _}" do
      server = FixtureServer.start!(fn _ -> :close end)

      {result, _elapsed} = register(server)

      assert {:error, {:request_failed, {:connection, message}}} = result
      assert message =~ "closed"
      assert [%{method: "POST"}] = FixtureServer.requests(server)
      report("closed after request", result)
    end

    test "a Content-Length larger than the body sent, then a close, is {:connection, _}" do
      server =
        FixtureServer.start!(fn _ ->
          [{:raw, [headers_only(201, [{"content-length", "100"}]), ~s({"client_id":"abc"})]}, :close]
        end)

      {result, _elapsed} = register(server)

      assert {:error, {:request_failed, {:connection, message}}} = result
      assert message =~ "end of file"
      report("truncated body", result)
    end

    test "a refused connection is {:connect, _}" do
      # A port that was just free: nothing listens there any more.
      {:ok, listener} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
      {:ok, port} = :inet.port(listener)
      :ok = :gen_tcp.close(listener)

      request = %{
        registration_endpoint: "http://127.0.0.1:#{port}/register",
        client_name: "Hardening",
        redirect_uris: ["http://localhost:8080/callback"]
      }

      {result, elapsed} = timed(fn -> CR.register_client(request) end)

      assert {:error, {:request_failed, {:connect, message}}} = result
      assert message =~ ~r/refused/i
      assert elapsed < @slack

      {result, _} = timed(fn -> CR.get_client_information("http://127.0.0.1:#{port}/register/c1", "tok") end)
      assert {:error, {:request_failed, {:connect, _}}} = result
      report("refused", result)
    end
  end

  describe "answers larger than :max_response_bytes" do
    test "a body of exactly the limit is read; one byte more is {:body_too_large, limit}" do
      limit = 65_536
      fill = fn size -> ~s({"client_id":"abc","pad":") <> String.duplicate("p", size - 28) <> ~s("}) end
      assert byte_size(fill.(limit)) == limit

      chunked = fn body ->
        [headers_only(201, [{"transfer-encoding", "chunked"}]), chunks(body, 1000), "0\r\n\r\n"]
      end

      server =
        FixtureServer.start!([
          {:respond, 201, @json, fill.(limit)},
          {:respond, 201, @json, fill.(limit + 1)},
          {:raw, chunked.(fill.(limit))},
          {:raw, chunked.(fill.(limit + 1))}
        ])

      assert {{:ok, %{client_id: "abc"}}, _} = register(server, max_response_bytes: limit)

      assert {{:error, {:request_failed, {:body_too_large, ^limit}}}, _} =
               register(server, max_response_bytes: limit)

      assert {{:ok, %{client_id: "abc"}}, _} = register(server, max_response_bytes: limit)

      assert {{:error, {:request_failed, {:body_too_large, ^limit}}}, _} =
               register(server, max_response_bytes: limit)
    end

    test "a 10 MB body announced by Content-Length is refused from its headers" do
      chunk = String.duplicate("x", 65_536)
      header = headers_only(201, [{"content-length", Integer.to_string(160 * 65_536)}])
      server = FixtureServer.start!(fn _ -> [{:raw, header}, {:stream, chunk, 160}] end)

      {result, elapsed} = register(server, max_response_bytes: 65_536)

      assert result == {:error, {:request_failed, {:body_too_large, 65_536}}}
      assert elapsed < @slack
      # The client hung up at once, without reading the body: the fixture's
      # writes fail (socket buffers can absorb a few MB, never the 10 MB),
      # and the connection is closed.
      event = FixtureServer.await_event(server, &conn_event?(&1, :stream_ended), 5_000)
      assert %{sent: sent, result: {:error, _}} = event.detail
      assert sent < 10 * 1024 * 1024
      assert FixtureServer.await_idle(server, 2_000) == :ok
      report("10 MB with content-length: elapsed ms, bytes the fixture wrote", {elapsed, sent})
    end

    test "a 10 MB Content-Length followed by silence is refused from the headers, not at the deadline" do
      # The body never comes: a client that reads it until the cap would wait
      # for the 5 s deadline and report :timeout. Only the up-front check of
      # Content-Length gives body_too_large here.
      header = headers_only(201, [{"content-length", Integer.to_string(10 * 1024 * 1024)}])
      server = FixtureServer.start!(fn _ -> [{:raw, header}, :hang] end)

      {result, elapsed} = register(server, max_response_bytes: 65_536, timeout: 5_000)

      assert result == {:error, {:request_failed, {:body_too_large, 65_536}}}
      assert elapsed < @slack
      assert FixtureServer.await_idle(server, 2_000) == :ok
      report("10 MB content-length then silence: elapsed ms", elapsed)
    end

    test "a 10 MB body without Content-Length is cut off once past the limit" do
      chunk = String.duplicate("x", 65_536)

      server =
        FixtureServer.start!(fn _ ->
          # No close afterwards: a client reading to EOF would wait for it.
          [{:raw, headers_only(201, [{"connection", "close"}])}, {:stream, chunk, 160}]
        end)

      {result, elapsed} = register(server, max_response_bytes: 65_536)

      assert result == {:error, {:request_failed, {:body_too_large, 65_536}}}
      assert elapsed < @slack
      event = FixtureServer.await_event(server, &conn_event?(&1, :stream_ended), 5_000)
      assert %{sent: sent, result: {:error, _}} = event.detail
      assert sent < 10 * 1024 * 1024
      assert FixtureServer.await_idle(server, 2_000) == :ok
      report("10 MB close-delimited: elapsed ms, bytes the fixture wrote", {elapsed, sent})
    end

    test "an endless chunked body is cut off once past the limit, and the connection is closed" do
      chunk = ["1000\r\n", String.duplicate("y", 4096), "\r\n"]

      server =
        FixtureServer.start!(fn _ ->
          [{:raw, headers_only(201, [{"transfer-encoding", "chunked"}])}, {:stream, chunk, :infinity}]
        end)

      {result, elapsed} = register(server, max_response_bytes: 65_536)

      assert result == {:error, {:request_failed, {:body_too_large, 65_536}}}
      assert elapsed < @slack

      # The endless writer stops only when its writes fail, that is once the
      # client has closed the connection; it must be soon.
      event = FixtureServer.await_event(server, &conn_event?(&1, :stream_ended), 3_000)
      assert %{sent: sent, result: {:error, _}} = event.detail
      assert FixtureServer.await_idle(server, 1_000) == :ok
      # What was written beyond 64 KiB sits in socket buffers, not in the client.
      assert sent < 32 * 1024 * 1024
      report("endless chunked: elapsed ms, bytes the fixture wrote before its writes failed", {elapsed, sent})
    end
  end

  describe "heads that never end" do
    test "an endless header section is refused once past the client's head limit" do
      server =
        FixtureServer.start!(fn _ ->
          [
            {:raw, "HTTP/1.1 201 Created\r\n"},
            {:stream, "x-pad: #{String.duplicate("a", 40)}\r\n", :infinity}
          ]
        end)

      {result, elapsed} = register(server, timeout: 5_000)

      assert result == {:error, {:request_failed, {:connection, "message head is too large"}}}
      assert elapsed < @slack
      event = FixtureServer.await_event(server, &conn_event?(&1, :stream_ended), 3_000)
      assert %{sent: sent, result: {:error, _}} = event.detail
      report("endless headers: elapsed ms, bytes the fixture wrote", {elapsed, sent})
    end

    test "an endless stream of 1xx informational answers is ended by the deadline" do
      server =
        FixtureServer.start!(fn _ ->
          {:stream, "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n", :infinity}
        end)

      {result, elapsed} = register(server, timeout: 300)

      assert result == {:error, {:request_failed, :timeout}}
      assert elapsed >= 300 and elapsed < 300 + @slack
      event = FixtureServer.await_event(server, &conn_event?(&1, :stream_ended), 3_000)
      assert %{sent: sent, result: {:error, _}} = event.detail
      report("endless 1xx: elapsed ms, bytes the client read and discarded", {elapsed, sent})
    end
  end

  defp chunks(<<>>, _size), do: []

  defp chunks(body, size) do
    take = min(size, byte_size(body))
    <<chunk::binary-size(take), rest::binary>> = body
    [Integer.to_string(take, 16), "\r\n", chunk, "\r\n" | chunks(rest, size)]
  end

  describe "hostile JSON in a success answer: an error or a defined result, never a crash" do
    defp answer(body) do
      server = FixtureServer.start!(fn _ -> {:respond, 201, @json, body} end)
      {result, _elapsed} = register(server)
      result
    end

    test "invalid UTF-8 inside a JSON string" do
      assert answer(~s({"client_id":"a\xFF"})) ==
               {:error, {:json_decode_error, "invalid unicode code point at line 1 column 16"}}

      assert answer(~s({"client_id":"abc","vendor":"\xC3\x28"})) ==
               {:error, {:json_decode_error, "invalid unicode code point at line 1 column 30"}}
    end

    test "JSON nested 100,000 levels deep" do
      deep = String.duplicate("[", 100_000) <> String.duplicate("]", 100_000)

      assert answer(deep) ==
               {:error, {:json_decode_error, "recursion limit exceeded at line 1 column 128"}}

      nested =
        ~s({"client_id":"abc","x":) <>
          String.duplicate(~s({"a":), 100_000) <> "1" <> String.duplicate("}", 100_000) <> "}"

      assert answer(nested) ==
               {:error, {:json_decode_error, "recursion limit exceeded at line 1 column 654"}}
    end

    test "a number of 400 digits" do
      huge = String.duplicate("9", 400)

      assert answer(~s({"client_id":"abc","vendor_number":#{huge}})) ==
               {:error, {:json_decode_error, "number out of range at line 1 column 435"}}

      assert answer(~s({"client_id":"abc","client_secret_expires_at":#{huge}})) ==
               {:error, {:json_decode_error, "number out of range at line 1 column 446"}}
    end

    test "duplicate keys: the last one wins" do
      {:ok, expected} = @ok_answer

      assert answer(~s({"client_id":"first","client_id":"abc","vendor":1,"vendor":2})) ==
               {:ok, Map.put(expected, :extra, %{"vendor" => 2})}
    end

    test "the same bodies in a refusal are an http_error carrying the raw body" do
      deep = String.duplicate("[", 100_000) <> String.duplicate("]", 100_000)
      invalid = ~s({"error":"a\xFF"})
      server = FixtureServer.start!([{:respond, 400, @json, deep}, {:respond, 400, @json, invalid}])

      assert register(server) |> elem(0) == {:error, {:http_error, 400, deep}}
      assert register(server) |> elem(0) == {:error, {:http_error, 400, invalid}}
    end
  end

  describe "redirects to another origin (never followed)" do
    setup do
      # The other origin records everything it receives.
      elsewhere = FixtureServer.start!(fn _ -> @ok end)
      %{elsewhere: elsewhere}
    end

    defp redirecting(to, status),
      do: FixtureServer.start!(fn _ -> {:respond, status, [{"location", to}], "moved"} end)

    defp bearer(request), do: for({"authorization", value} <- request.headers, do: value)

    test "register with an initial access token: a 3xx is an http_error and the other origin gets nothing",
         %{elsewhere: elsewhere} do
      for status <- [301, 302, 303, 307, 308] do
        server = redirecting(FixtureServer.url(elsewhere, "/register"), status)

        {result, _} = register(server, initial_access_token: "iat-redirect-test")

        assert result == {:error, {:http_error, status, "moved"}}
        # The token went to the origin it was meant for, and only there.
        assert [request] = FixtureServer.requests(server)
        assert bearer(request) == ["Bearer iat-redirect-test"]
      end

      assert FixtureServer.requests(elsewhere) == []
      assert FixtureServer.connection_count(elsewhere) == 0
    end

    test "management calls: a 3xx is an http_error and the other origin gets nothing", %{elsewhere: elsewhere} do
      for status <- [301, 302, 303, 307, 308] do
        server = redirecting(FixtureServer.url(elsewhere, "/register/c1"), status)
        uri = FixtureServer.url(server, "/register/c1")
        moved = {:error, {:http_error, status, "moved"}}

        assert {^moved, _} = timed(fn -> CR.get_client_information(uri, "rat-redirect-test") end)

        assert {^moved, _} =
                 timed(fn -> CR.update_client_information(uri, "rat-redirect-test", %{client_name: "x"}) end)

        assert {^moved, _} =
                 timed(fn ->
                   CR.update_client_information(uri, "rat-redirect-test", %{client_id: "c1"}, replace: true)
                 end)

        assert {^moved, _} = timed(fn -> CR.delete_client(uri, "rat-redirect-test") end)

        requests = FixtureServer.requests(server)
        assert Enum.map(requests, & &1.method) == ["GET", "GET", "PUT", "DELETE"]
        assert Enum.all?(requests, &(bearer(&1) == ["Bearer rat-redirect-test"]))
      end

      assert FixtureServer.requests(elsewhere) == []
      assert FixtureServer.connection_count(elsewhere) == 0
    end
  end
end
