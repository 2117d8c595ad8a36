defmodule ExMCP.Test.HoldingProxy do
  @moduledoc """
  An HTTP endpoint on 127.0.0.1 in front of a registration endpoint, for
  tests that need a registration to be in flight for as long as they
  decide, without sleeping.

  Each POST it receives is forwarded to `:upstream` at once (with
  `connection: close`), so the server has registered the client; the
  answer, read whole, is then held, and the `:notify`
  process receives `{:held, handler}`. `release/1` sends the held answer to
  the client (or fails to, when the client is gone) and closes the
  connection.

  Point a discovery's `registration_endpoint` at `url/1` to use it.
  """

  use GenServer

  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc "The URL clients should POST to."
  @spec url(GenServer.server()) :: String.t()
  def url(proxy), do: GenServer.call(proxy, :url)

  @doc """
  Sends the answer held by `handler` to its client. `:sent`, or
  `{:not_sent, reason}` when the client's connection is gone.
  """
  @spec release(pid(), timeout()) :: :sent | {:not_sent, term()}
  def release(handler, timeout \\ 10_000) do
    monitor = Process.monitor(handler)
    send(handler, {:release, self()})

    receive do
      {:released, ^handler, result} ->
        Process.demonitor(monitor, [:flush])
        result

      {:DOWN, ^monitor, :process, ^handler, reason} ->
        {:not_sent, {:handler_exited, reason}}
    after
      timeout -> exit(:timeout)
    end
  end

  @impl GenServer
  def init(opts) do
    upstream = Keyword.fetch!(opts, :upstream)
    notify = Keyword.fetch!(opts, :notify)

    {:ok, listen} =
      :gen_tcp.listen(0, [:binary, ip: {127, 0, 0, 1}, active: false, reuseaddr: true, backlog: 256])

    {:ok, port} = :inet.port(listen)
    proxy = self()
    acceptor = spawn_link(fn -> accept(listen, proxy, upstream, notify) end)
    {:ok, %{listen: listen, port: port, acceptor: acceptor}}
  end

  @impl GenServer
  def handle_call(:url, _from, state), do: {:reply, "http://127.0.0.1:#{state.port}/register", state}

  @impl GenServer
  def terminate(_reason, state) do
    :gen_tcp.close(state.listen)
    :ok
  end

  defp accept(listen, proxy, upstream, notify) do
    case :gen_tcp.accept(listen) do
      {:ok, socket} ->
        handler = spawn_link(fn -> handle(upstream, notify) end)
        :ok = :gen_tcp.controlling_process(socket, handler)
        send(handler, {:socket, socket})
        accept(listen, proxy, upstream, notify)

      {:error, :closed} ->
        :ok
    end
  end

  defp handle(upstream, notify) do
    socket =
      receive do
        {:socket, socket} -> socket
      end

    {:ok, headers, body} = read_request(socket)
    response = forward(upstream, headers, body)
    send(notify, {:held, self()})

    asker =
      receive do
        {:release, asker} -> asker
      end

    result =
      case :gen_tcp.send(socket, response) do
        :ok -> :sent
        {:error, reason} -> {:not_sent, reason}
      end

    :gen_tcp.close(socket)
    send(asker, {:released, self(), result})
  end

  defp read_request(socket) do
    :ok = :inet.setopts(socket, packet: :http_bin)
    {:ok, {:http_request, :POST, _path, _version}} = :gen_tcp.recv(socket, 0, 10_000)
    headers = read_headers(socket, %{})
    :ok = :inet.setopts(socket, packet: :raw)

    body =
      case String.to_integer(Map.get(headers, "content-length", "0")) do
        0 ->
          ""

        length ->
          {:ok, body} = :gen_tcp.recv(socket, length, 10_000)
          body
      end

    {:ok, headers, body}
  end

  # The request as received (minus its connection header) to the upstream
  # endpoint's host, with `connection: close`; the upstream's whole answer,
  # bytes as they came.
  defp forward(upstream, headers, body) do
    %URI{host: host, port: port} = uri = URI.parse(upstream)
    target = uri.path <> if(uri.query, do: "?" <> uri.query, else: "")

    kept =
      for {name, value} <- headers,
          name not in ["connection", "host", "content-length"],
          do: [name, ": ", value, "\r\n"]

    request = [
      "POST #{target} HTTP/1.1\r\nhost: #{host}:#{port}\r\n",
      kept,
      "content-length: #{byte_size(body)}\r\nconnection: close\r\n\r\n",
      body
    ]

    {:ok, upstream_socket} =
      :gen_tcp.connect(String.to_charlist(host), port, [:binary, active: false], 10_000)

    :ok = :gen_tcp.send(upstream_socket, request)
    response = read_all(upstream_socket, [])
    :gen_tcp.close(upstream_socket)
    response
  end

  defp read_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 10_000) do
      {:ok, data} -> read_all(socket, [acc, data])
      {:error, :closed} -> IO.iodata_to_binary(acc)
    end
  end

  defp read_headers(socket, headers) do
    case :gen_tcp.recv(socket, 0, 10_000) do
      {:ok, {:http_header, _, name, _, value}} ->
        read_headers(socket, Map.put(headers, String.downcase(to_string(name)), value))

      {:ok, :http_eoh} ->
        headers
    end
  end
end
