defmodule ExMCP.Build.OnePlaceTest do
  # One place per rule (issue 12.7): option defaults and option checks live in
  # the Rust core / NIF, the Bearer token character rule in
  # mcp_registration::token; the Elixir side reads them. And integer options
  # are bounded before anything is sent (issue 9.13).
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.{ClientRegistration, Native, RegistrationServer}

  @request %{
    registration_endpoint: "http://127.0.0.1:1/register",
    client_name: "Bounds",
    redirect_uris: ["http://localhost:4000/cb"]
  }

  test "the options table documents the defaults that the Rust core applies" do
    {:docs_v1, _, :elixir, _, %{"en" => moduledoc}, _, _} = Code.fetch_docs(ClientRegistration)

    for {key, value} <- Native.option_defaults() do
      assert moduledoc =~ "| `#{inspect(key)}` | `#{underscored(value)}` |", "#{key} defaults to #{value}"
    end
  end

  test "RegistrationServer's options table documents the defaults of the Rust core's ServerConfig" do
    {:docs_v1, _, :elixir, _, %{"en" => moduledoc}, _, _} = Code.fetch_docs(RegistrationServer)
    defaults = Native.server_defaults()
    {:ok, ip} = defaults.ip |> String.to_charlist() |> :inet.parse_address()

    for {key, value} <- %{defaults | ip: ip} do
      shown = if is_integer(value) and value >= 10_000, do: underscored(value), else: inspect(value)
      assert moduledoc =~ "| `#{inspect(key)}` | `#{shown}` |", "#{key} defaults to #{inspect(value)}"
    end
  end

  defp underscored(n), do: n |> Integer.to_string() |> then(&Regex.replace(~r/\B(?=(\d{3})+$)/, &1, "_"))

  describe "integer options are checked before anything is sent" do
    # A listener that counts connections: nothing may reach it.
    setup do
      {:ok, listen} = :gen_tcp.listen(0, [:binary, active: false, reuseaddr: true])
      {:ok, port} = :inet.port(listen)
      on_exit(fn -> :gen_tcp.close(listen) end)
      %{listen: listen, request: %{@request | registration_endpoint: "http://127.0.0.1:#{port}/register"}}
    end

    test "timeout above the VM's receive limit (2^32 - 1 ms) is an ArgumentError", %{
      listen: listen,
      request: request
    } do
      for {key, value} <- [
            timeout: 4_294_967_296,
            timeout: 0,
            timeout: -1,
            timeout: 1.5,
            timeout: "soon",
            timeout: nil,
            connect_timeout: 4_294_967_296,
            connect_timeout: 0,
            max_response_bytes: 18_446_744_073_709_551_616,
            max_response_bytes: 0,
            max_response_bytes: :infinity
          ] do
        error =
          assert_raise ArgumentError, fn -> ClientRegistration.register_client(request, [{key, value}]) end

        assert error.message =~ "invalid option #{inspect(key)}: must be an integer from 1 to",
               inspect({key, value})

        for call <- [
              fn ->
                ClientRegistration.get_client_information("http://127.0.0.1:1/r", "t", [{key, value}])
              end,
              fn -> ClientRegistration.delete_client("http://127.0.0.1:1/r", "t", [{key, value}]) end
            ] do
          assert_raise ArgumentError, call
        end
      end

      assert {:error, :timeout} = :gen_tcp.accept(listen, 0), "nothing was sent"
    end

    test "the largest accepted values are accepted" do
      assert {:error, {:request_failed, {:connect, _}}} =
               ClientRegistration.register_client(@request,
                 timeout: 4_294_967_295,
                 connect_timeout: 4_294_967_295,
                 max_response_bytes: 18_446_744_073_709_551_615
               )
    end
  end

  test "the client and the embedded server apply the same Bearer token rule (RFC 6750 §2.1)" do
    for byte <- 0..255 do
      token = "a" <> <<byte>> <> "b"
      visible? = byte in 0x21..0x7E

      client =
        try do
          ClientRegistration.register_client(@request, initial_access_token: token, connect_timeout: 50)
        rescue
          ArgumentError -> :rejected
        end

      assert client == :rejected == not visible?, inspect(token)

      server =
        try do
          RegistrationServer.start_link(initial_access_token: token, port: 0)
        rescue
          ArgumentError -> :rejected
        end

      assert server == :rejected == not visible?, inspect(token)
      with {:ok, pid} <- server, do: RegistrationServer.stop(pid)
    end
  end
end
