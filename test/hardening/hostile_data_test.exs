defmodule ExMCP.Hardening.HostileDataTest do
  # Server data must never create atoms, and secrets must never show up in
  # logs, error sentences, exception messages or inspected error reasons.
  #
  # Not async: the atom count is global, and the Logger level is changed.
  # Set HARDENING_REPORT=1 to print the measured figures.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias ExMCP.Authorization.ClientRegistration, as: CR
  alias ExMCP.Test.{Certificates, FixtureServer}

  import ExMCP.Test.FixtureServer, only: [registration_request: 1]
  import ExMCP.Test.HardeningReport, only: [report: 2]
  alias ExMCP.Test.JSON

  @json [{"content-type", "application/json"}]

  describe "atoms" do
    defp random_name, do: "m_" <> Base.encode32(:crypto.strong_rand_bytes(10), case: :lower, padding: false)

    # 20 random member names per answer, a different set every time.
    defp random_answer(_request) do
      members = Map.new(1..20, fn i -> {random_name(), if(rem(i, 2) == 0, do: [i], else: %{"k" => i})} end)
      {:respond, 201, @json, JSON.encode!(Map.put(members, "client_id", "abc"))}
    end

    test "10,000 answers with 20 random unknown member names each create no atom" do
      server = FixtureServer.start!(&random_answer/1)
      request = registration_request(server)

      call = fn ->
        assert {:ok, %{client_id: "abc", extra: extra}} = CR.register_client(request)
        assert map_size(extra) == 20
        assert Enum.all?(Map.keys(extra), &is_binary/1)
      end

      # Warm up the same way as the real run: the first calls (and the first
      # Task) load modules, and loading a module creates atoms.
      1..4
      |> Enum.map(fn _ -> Task.async(fn -> for _ <- 1..5, do: call.() end) end)
      |> Task.await_many(10_000)

      before = :erlang.system_info(:atom_count)
      started = System.monotonic_time(:millisecond)

      1..4
      |> Enum.map(fn _ -> Task.async(fn -> for _ <- 1..2_500, do: call.() end) end)
      |> Task.await_many(60_000)

      elapsed = System.monotonic_time(:millisecond) - started
      after_count = :erlang.system_info(:atom_count)

      assert length(FixtureServer.requests(server)) == 10_020
      assert after_count == before
      report("atoms: count before/after 10,000 answers (200,000 random names)", {before, after_count})
      report("atoms: ms for 10,000 calls from 4 processes", elapsed)
    end
  end

  describe "secrets" do
    # Distinctive values: any appearance is a leak.
    @iat "IAT-hardening-4f9c2a7e1b"
    @rat "RAT-hardening-8d3e6b0c5a"
    @secret "SECRET-hardening-2b7f1d9e6c"
    @secrets [@iat, @rat, @secret]

    setup do
      level = Logger.level()
      Logger.configure(level: :debug)
      on_exit(fn -> Logger.configure(level: level) end)
    end

    defp refute_secrets(text, where) do
      for secret <- @secrets do
        refute String.contains?(text, secret), "#{secret} appeared in #{where}: #{text}"
      end
    end

    defp refused_port do
      {:ok, listener} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
      {:ok, port} = :inet.port(listener)
      :ok = :gen_tcp.close(listener)
      port
    end

    @tag :tmp_dir
    test "never appear in logs, error sentences or inspected reasons, on success or failure", %{tmp_dir: dir} do
      issued =
        JSON.encode!(%{
          "client_id" => "c1",
          "client_secret" => @secret,
          "registration_access_token" => @rat,
          "registration_client_uri" => "http://127.0.0.1/register/c1"
        })

      ok = {:respond, 201, @json, issued}
      current = {:respond, 200, @json, issued}
      self_signed = Certificates.self_signed!(dir, "self")

      servers = %{
        # register; read; update (read + PUT); replace (PUT); delete
        success: FixtureServer.start!([ok, current, current, current, current, {:respond, 204, [], ""}]),
        timeout: FixtureServer.start!(fn _ -> :hang end),
        reset: FixtureServer.start!(fn _ -> [{:raw, "HTTP/1.1 200 OK\r\ncontent-le"}, :reset] end),
        truncated:
          FixtureServer.start!(fn _ -> [{:raw, "HTTP/1.1 200 OK\r\ncontent-length: 90\r\n\r\n{"}, :close] end),
        not_json: FixtureServer.start!(fn _ -> {:respond, 200, @json, "{"} end),
        no_client_id: FixtureServer.start!(fn _ -> {:respond, 200, @json, "{}"} end),
        refusal: FixtureServer.start!(fn _ -> {:respond, 401, @json, ~s({"error":"invalid_token"})} end),
        http_error: FixtureServer.start!(fn _ -> {:respond, 500, [], "oops"} end),
        too_large: FixtureServer.start!(fn _ -> {:respond, 201, @json, String.duplicate(" ", 2_000)} end),
        tls: FixtureServer.start!(fn _ -> ok end, tls: [certfile: self_signed.cert, keyfile: self_signed.key])
      }

      base_opts = [timeout: 300, max_response_bytes: 1_000]
      refused = "http://127.0.0.1:#{refused_port()}"

      targets =
        Enum.map(servers, fn {name, server} -> {name, FixtureServer.url(server, "")} end) ++
          [{:refused, refused}]

      {results, log} =
        with_log([level: :debug], fn ->
          for {name, base} <- targets do
            request = %{
              registration_endpoint: base <> "/register",
              client_name: "Hardening",
              redirect_uris: ["http://localhost:8080/callback"]
            }

            uri = base <> "/register/c1"

            calls = [
              CR.register_client(request, [initial_access_token: @iat] ++ base_opts),
              CR.get_client_information(uri, @rat, base_opts),
              CR.update_client_information(uri, @rat, %{client_secret: @secret, client_name: "x"}, base_opts),
              CR.update_client_information(
                uri,
                @rat,
                %{client_id: "c1", client_secret: @secret},
                [replace: true] ++ base_opts
              ),
              CR.delete_client(uri, @rat, base_opts)
            ]

            {name, calls}
          end
          |> tap(fn _ -> crash_on_failures(targets, base_opts) end)
        end)

      assert Process.info(self(), :messages) == {:messages, []}

      errors = for {_name, calls} <- results, {:error, reason} <- calls, do: reason

      # Every kind of failure was produced, so every kind was checked.
      kinds =
        errors
        |> Enum.map(fn
          {:request_failed, reason} when is_atom(reason) -> {:request_failed, reason}
          {:request_failed, {kind, _}} -> {:request_failed, kind}
          {kind, _, _} -> kind
          {kind, _} -> kind
        end)
        |> Enum.uniq()
        |> Enum.sort()

      assert kinds ==
               Enum.sort([
                 :http_error,
                 :invalid_response,
                 :json_decode_error,
                 :registration_error,
                 {:request_failed, :body_too_large},
                 {:request_failed, :connect},
                 {:request_failed, :connection},
                 {:request_failed, :timeout},
                 {:request_failed, :tls}
               ])

      # The success calls really got (and so really handled) the secrets.
      assert {:success, [{:ok, %{client_secret: @secret, registration_access_token: @rat}} | _]} =
               List.keyfind(results, :success, 0)

      # The crashes were logged, with their reasons: the log check has teeth.
      assert log =~ "MatchError"
      assert log =~ "request_failed"
      refute_secrets(log, "the log")

      for reason <- errors do
        refute_secrets(inspect(reason, limit: :infinity, printable_limit: :infinity), "an inspected reason")
        refute_secrets(CR.format_error(reason), "format_error/1")
      end

      # The tokens did travel, each to where it belongs.
      [register | _] = FixtureServer.requests(servers.success)
      assert {"authorization", "Bearer " <> @iat} in register.headers

      report("secrets: error reasons checked", length(errors))
      report("secrets: captured log bytes", byte_size(log))
    end

    # A caller that crashes on a failed call gets its reason logged by OTP's
    # crash report: the report must not hold a secret either.
    defp crash_on_failures(targets, opts) do
      monitors =
        for {name, base} <- targets, name != :success do
          request = %{
            registration_endpoint: base <> "/register",
            client_name: "Hardening",
            redirect_uris: ["http://localhost:8080/callback"]
          }

          # A Task logs its crash itself, before it exits.
          {:ok, pid} =
            Task.start(fn ->
              receive do
                :go -> {:ok, _} = CR.register_client(request, [initial_access_token: @iat] ++ opts)
              end
            end)

          monitor = Process.monitor(pid)
          send(pid, :go)
          monitor
        end

      for monitor <- monitors do
        assert_receive {:DOWN, ^monitor, :process, _, {{:badmatch, {:error, _}}, _}}, 5_000
      end

      Logger.flush()
    end

    test "never appear in exception messages of refused arguments" do
      request = %{
        registration_endpoint: "http://127.0.0.1:1/register",
        client_name: "Hardening",
        redirect_uris: ["http://localhost:8080/callback"]
      }

      uri = "http://127.0.0.1:1/register/c1"

      raising = [
        fn -> CR.register_client(request, initial_access_token: @iat <> "\r\nx-injected: 1") end,
        fn -> CR.register_client(request, initial_access_token: String.to_charlist(@iat)) end,
        fn -> CR.register_client(request, initial_access_token: {:token, @iat}) end,
        fn -> CR.register_client(request, headers: [{"authorization", "Bearer " <> @iat}]) end,
        fn -> CR.register_client(request, headers: [{"x-api-key", @iat <> "\n"}]) end,
        fn -> CR.register_client(request, [{:bogus, @iat}]) end,
        fn -> CR.register_client(request, @iat) end,
        fn -> CR.get_client_information(uri, @rat, initial_access_token: @iat) end,
        fn -> CR.update_client_information(uri, @rat, @secret) end,
        fn -> CR.delete_client(uri, @rat, [@rat]) end
      ]

      log =
        capture_log([level: :debug], fn ->
          for fun <- raising do
            exception = assert_raise(ArgumentError, fun)
            refute_secrets(Exception.message(exception), "an ArgumentError message")
          end
        end)

      refute_secrets(log, "the log")

      # Refused values that come back as reasons instead of exceptions.
      returned = [
        CR.get_client_information(uri, @rat <> "\r\nx: y"),
        CR.delete_client(uri, @rat <> " "),
        CR.update_client_information(uri, @rat, %{client_secret: {:not_json, @secret}}),
        CR.register_client(Map.put(request, :extra, %{"client_secret" => @secret})),
        CR.register_client(Map.put(request, :client_secret, @secret))
      ]

      for result <- returned do
        assert {:error, reason} = result
        refute_secrets(inspect(reason, limit: :infinity, printable_limit: :infinity), "an inspected reason")
        refute_secrets(CR.format_error(reason), "format_error/1")
      end

      assert Process.info(self(), :messages) == {:messages, []}
    end
  end
end
