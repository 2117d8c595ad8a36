defmodule ExMCP.Test.FixtureServer do
  @moduledoc """
  A scriptable HTTP/1.1 server for tests, built on `:gen_tcp` only. It
  listens on `127.0.0.1`, port 0 (the OS picks a free port).

      server = FixtureServer.start!(fn _request -> {:respond, 201, [], ~s({"client_id":"abc"})} end)
      url = FixtureServer.url(server, "/register")
      # ... make the client call ...
      [%{method: "POST", path: "/register", headers: headers, body: body}] = FixtureServer.requests(server)

  ## Handlers

  The handler decides what happens to each request. It is either

    * a function `fn request -> action end`, called for every request in the
      process serving that connection (so a slow handler delays only its own
      connection), or
    * a list consumed in order, one element per request, across all
      connections. An element is an action, or a `fn request -> action end`
      for that one request. When the list runs out, requests get a
      `500 fixture: no canned action left` answer (and are still recorded).

  `request` is a map:

      %{
        method: "POST",                       # upper case, as sent
        path: "/register",                    # without the query string
        query: nil | "a=1",                   # the raw query string, if any
        headers: [{"content-type", "application/json"}, ...],  # names lower-cased, in order
        body: "...",                          # Content-Length or chunked body, decoded
        conn: 1,                              # which accepted connection carried it (1, 2, ...)
        seq: 1                                # arrival order over the whole server (1, 2, ...)
      }

  ## Actions

    * `{:respond, status, headers, body}` — a complete answer. `headers` is a
      list of `{name, value}` strings sent as given; `content-length` is added
      unless `headers` has `content-length` or `transfer-encoding`, or the
      status is 1xx/204/304. `body` is iodata. The connection stays open for
      the next request (keep-alive) unless the request or `headers` says
      `connection: close`.
    * `{:raw, iodata}` — writes exactly these bytes, nothing added; the
      connection then waits for the next request as after `:respond`.
    * `:close` (or `{:close}`) — closes the connection without answering.
    * `:hang` (or `{:hang}`) — never answers; the connection stays open until
      the peer closes it or the server stops.
    * a list of actions — performed in order (for example
      `[{:raw, "HTTP/1.1 200 OK\\r\\nContent-Length: 10\\r\\n\\r\\nabc"}, :close]`);
      stops after a step that ends the connection.

  Fault injection (mostly used inside step lists):

    * `{:delay, ms}` — waits `ms` milliseconds (a timer inside this
      connection's process; the socket is not watched meanwhile), then goes on.
    * `{:trickle, iodata, chunk_bytes, interval_ms}` — writes `iodata`
      `chunk_bytes` at a time, waiting `interval_ms` between writes. A failed
      write records a `:write_failed` event and ends the connection.
    * `{:stream, iodata, times}` — writes `iodata` `times` times (or forever
      with `:infinity`) as fast as the peer reads, then records a
      `:stream_ended` event with `%{sent: bytes, result: :ok | {:error, reason}}`.
      A failed write ends the connection.
    * `:reset` (or `{:reset}`) — closes with `SO_LINGER` 0, so the peer gets a
      TCP RST instead of a FIN.
    * `{:mark, term}` — records a `:mark` event with `term` as its detail (to
      observe that a step list got that far).

  A failed write in `{:respond, ...}` or `{:raw, ...}` records a
  `:write_failed` event too.

  New fault-injection actions belong in
  `perform/3`: it receives the action, the request and the connection state
  (`%{socket:, transport:, ...}`, where `transport` is the module used for
  `send/2`, `recv/3` and `close/1`, so `:ssl` can stand in for `:gen_tcp`).

  ## Connection-level behaviour

  `start_link/2` and `start!/2` take options:

    * `:on_accept` — `fn %{conn: id, peer: {ip, port}} -> :serve | action end`,
      run as soon as a connection is accepted, before anything is read.
      `:serve` (the default) reads requests; an action (`:close`, `:hang`,
      `{:raw, iodata}`, a list) is performed instead, and the connection is
      then closed unless the action was `{:raw, _}`, which goes on serving.
      With `:tls`, it runs after the TLS handshake.
    * `:tls` — `[certfile: path, keyfile: path]` (any other `:ssl` server
      option may be added): every accepted connection first does a TLS
      handshake, and `url/2` gives `https://` URLs. A failed handshake records
      a `:tls_failed` event (detail: the `:ssl` error) and closes the
      connection.

  ## Synchronisation without sleeps

    * `requests/1` — every request received so far, in arrival order. A
      request is recorded before its action runs, so once a client call has
      returned, the requests it made are there.
    * `await_requests/3` — blocks until at least `n` requests arrived.
    * `await_idle/2` — blocks until no accepted connection is open any more
      (useful after `:hang` or `:close`; note that a pooling client keeps idle
      keep-alive connections open).
    * `connection_count/1` — how many connections were accepted.
    * `events/1` and `await_event/3` — what happened to connections, in
      order, as maps `%{type: atom, conn: id, detail: term, at: ms}` (`at` is
      `System.monotonic_time(:millisecond)`). Types: `:conn_down` (the
      connection's process ended, so its socket is closed), `:write_failed`,
      `:stream_ended`, `:tls_failed`, `:mark`. `await_event/3` blocks until an
      event for which `predicate` returns true exists, and returns the first
      such event.
  """

  use GenServer

  require Logger

  @type request() :: %{
          method: String.t(),
          path: String.t(),
          query: String.t() | nil,
          headers: [{String.t(), String.t()}],
          body: binary(),
          conn: pos_integer(),
          seq: pos_integer()
        }

  @type action() ::
          {:respond, non_neg_integer(), [{String.t(), String.t()}], iodata()}
          | {:raw, iodata()}
          | :close
          | {:close}
          | :hang
          | {:hang}
          | {:delay, non_neg_integer()}
          | {:trickle, iodata(), pos_integer(), non_neg_integer()}
          | {:stream, iodata(), non_neg_integer() | :infinity}
          | :reset
          | {:reset}
          | {:mark, term()}
          | [action()]

  @type event() :: %{type: atom(), conn: pos_integer() | nil, detail: term(), at: integer()}

  @type handler() :: (request() -> action()) | [action() | (request() -> action())]

  @max_header_bytes 64 * 1024

  # -- API ---------------------------------------------------------------------

  @doc """
  Child spec: the argument is a handler, or `{handler, opts}`. The child is
  `:temporary`, so `stop/1` (or `stop_supervised/1`) does not restart it.
  """
  def child_spec({handler, opts}) when (is_function(handler, 1) or is_list(handler)) and is_list(opts) do
    %{id: __MODULE__, start: {__MODULE__, :start_link, [handler, opts]}, restart: :temporary}
  end

  def child_spec(handler), do: child_spec({handler, []})

  @doc "Starts a server linked to the caller. See the moduledoc for `handler` and `opts`."
  @spec start_link(handler(), keyword()) :: GenServer.on_start()
  def start_link(handler, opts \\ []) do
    check_handler!(handler)
    GenServer.start_link(__MODULE__, {handler, opts})
  end

  @doc """
  Starts a server under the test supervisor (`ExUnit.Callbacks.start_supervised!/2`),
  so it stops when the test ends. Call it from the test process. Several per
  test are fine.
  """
  @spec start!(handler(), keyword()) :: pid()
  def start!(handler, opts \\ []) do
    check_handler!(handler)

    ExUnit.Callbacks.start_supervised!(
      Supervisor.child_spec({__MODULE__, {handler, opts}}, id: {__MODULE__, make_ref()})
    )
  end

  @doc "The port the server listens on."
  @spec port(GenServer.server()) :: :inet.port_number()
  def port(server), do: GenServer.call(server, :port)

  @doc """
  A minimal valid registration request whose endpoint is this server's
  `/register`; `overrides` are merged over it.
  """
  @spec registration_request(GenServer.server(), map()) :: map()
  def registration_request(server, overrides \\ %{}) do
    Map.merge(
      %{
        registration_endpoint: url(server, "/register"),
        client_name: "Test Client",
        redirect_uris: ["http://localhost:8080/callback"]
      },
      overrides
    )
  end

  @doc ~S'The URL of `path` on this server, e.g. `"http://127.0.0.1:54321/register"`.'
  @spec url(GenServer.server(), String.t()) :: String.t()
  def url(server, path \\ "/") do
    {scheme, port} = GenServer.call(server, :base)
    "#{scheme}://127.0.0.1:#{port}" <> if(String.starts_with?(path, "/"), do: path, else: "/" <> path)
  end

  @doc "Every request received so far, in arrival order."
  @spec requests(GenServer.server()) :: [request()]
  def requests(server), do: GenServer.call(server, :requests)

  @doc "How many connections were accepted so far."
  @spec connection_count(GenServer.server()) :: non_neg_integer()
  def connection_count(server), do: GenServer.call(server, :connection_count)

  @doc "Waits until at least `count` requests were received; returns them all."
  @spec await_requests(GenServer.server(), pos_integer(), timeout()) :: [request()]
  def await_requests(server, count, timeout \\ 5_000),
    do: GenServer.call(server, {:await_requests, count}, timeout)

  @doc "Waits until every accepted connection is closed."
  @spec await_idle(GenServer.server(), timeout()) :: :ok
  def await_idle(server, timeout \\ 5_000), do: GenServer.call(server, :await_idle, timeout)

  @doc "Every connection event so far, oldest first. See the moduledoc."
  @spec events(GenServer.server()) :: [event()]
  def events(server), do: GenServer.call(server, :events)

  @doc """
  Waits until an event for which `predicate` returns true was recorded;
  returns the first such event.
  """
  @spec await_event(GenServer.server(), (event() -> as_boolean(term())), timeout()) :: event()
  def await_event(server, predicate, timeout \\ 5_000) when is_function(predicate, 1),
    do: GenServer.call(server, {:await_event, predicate}, timeout)

  @doc """
  Stops the server: closes the listener and every open connection. When it
  returns, the server's processes are gone and their sockets closed.
  """
  @spec stop(GenServer.server()) :: :ok
  def stop(server), do: GenServer.stop(server, :normal)

  @doc """
  Starts (`start!/2`) an https server with the certificate `tls`
  (`[certfile: pem, keyfile: pem]`) that answers every request with the JSON
  `document.(url)`, `url` being the request's own URL rebuilt from its Host
  header (the port is known only once it listens). It sends the caller
  `{:document_fetched, path}` for each request. Returns the server and the URL
  of its `/client.json`: a host for Client ID Metadata Documents.
  """
  @spec document_host!((String.t() -> term()), keyword()) :: {pid(), String.t()}
  def document_host!(document, tls) do
    parent = self()

    host =
      start!(
        fn request ->
          send(parent, {:document_fetched, request.path})
          {"host", authority} = List.keyfind(request.headers, "host", 0)
          body = ExMCP.Test.JSON.encode!(document.("https://#{authority}#{request.path}"))
          {:respond, 200, [{"content-type", "application/json"}], body}
        end,
        tls: tls
      )

    {host, url(host, "/client.json")}
  end

  defp check_handler!(handler) when is_function(handler, 1) or is_list(handler), do: :ok

  defp check_handler!(other),
    do: raise(ArgumentError, "a handler is a 1-arity function or a list of actions, got: #{inspect(other)}")

  # -- Server ------------------------------------------------------------------

  @impl GenServer
  def init({handler, opts}) do
    Process.flag(:trap_exit, true)
    tls = tls_options(Keyword.get(opts, :tls))

    listen_opts = [:binary, active: false, packet: :raw, reuseaddr: true, ip: {127, 0, 0, 1}, backlog: 128]

    case :gen_tcp.listen(0, listen_opts) do
      {:ok, listener} ->
        {:ok, port} = :inet.port(listener)
        server = self()
        acceptor = spawn_link(fn -> accept_loop(server, listener) end)

        {:ok,
         %{
           listener: listener,
           port: port,
           acceptor: acceptor,
           handler: handler,
           on_accept: Keyword.get(opts, :on_accept, fn _ -> :serve end),
           tls: tls,
           events: [],
           event_waiters: [],
           requests: [],
           request_count: 0,
           connections: %{},
           connection_count: 0,
           request_waiters: [],
           idle_waiters: []
         }}

      {:error, reason} ->
        {:stop, {:listen_failed, reason}}
    end
  end

  @impl GenServer
  def handle_call(:port, _from, state), do: {:reply, state.port, state}

  def handle_call(:base, _from, state),
    do: {:reply, {if(state.tls, do: "https", else: "http"), state.port}, state}

  def handle_call(:events, _from, state), do: {:reply, Enum.reverse(state.events), state}

  def handle_call({:await_event, predicate}, from, state) do
    case state.events |> Enum.reverse() |> Enum.find(predicate) do
      nil -> {:noreply, %{state | event_waiters: [{predicate, from} | state.event_waiters]}}
      event -> {:reply, event, state}
    end
  end

  def handle_call(:requests, _from, state), do: {:reply, Enum.reverse(state.requests), state}
  def handle_call(:connection_count, _from, state), do: {:reply, state.connection_count, state}

  def handle_call({:await_requests, count}, from, state) do
    if state.request_count >= count,
      do: {:reply, Enum.reverse(state.requests), state},
      else: {:noreply, %{state | request_waiters: [{count, from} | state.request_waiters]}}
  end

  def handle_call(:await_idle, from, state) do
    if map_size(state.connections) == 0,
      do: {:reply, :ok, state},
      else: {:noreply, %{state | idle_waiters: [from | state.idle_waiters]}}
  end

  # The acceptor hands over each socket to a fresh connection process.
  def handle_call(:accepted, _from, state) do
    id = state.connection_count + 1
    server = self()
    on_accept = state.on_accept
    tls = state.tls
    pid = spawn_link(fn -> connection_start(server, id, on_accept, tls) end)

    state = %{state | connections: Map.put(state.connections, pid, id), connection_count: id}
    {:reply, pid, state}
  end

  def handle_call({:request, request}, _from, state) do
    seq = state.request_count + 1
    request = Map.put(request, :seq, seq)
    {next, handler} = next_action(state.handler, request)
    state = %{state | requests: [request | state.requests], request_count: seq, handler: handler}
    {:reply, {next, request}, notify_request_waiters(state)}
  end

  @impl GenServer
  def handle_cast({:event, event}, state), do: {:noreply, add_event(state, event)}

  @impl GenServer
  def handle_info({:EXIT, pid, reason}, state) do
    case Map.pop(state.connections, pid) do
      {nil, _} ->
        if pid == state.acceptor and reason != :normal,
          do: Logger.error("fixture server acceptor exited: #{inspect(reason)}")

        {:noreply, state}

      {id, connections} ->
        state = add_event(state, new_event(:conn_down, id, reason))
        {:noreply, notify_idle_waiters(%{state | connections: connections})}
    end
  end

  def handle_info(_message, state), do: {:noreply, state}

  @impl GenServer
  def terminate(_reason, state) do
    :gen_tcp.close(state.listener)
    # Kill, then wait for the exits (they are linked and we trap them): once
    # stop/1 returns, every connection's process is gone and its socket closed.
    pids = [state.acceptor | Map.keys(state.connections)]
    Enum.each(pids, &Process.exit(&1, :kill))

    Enum.each(pids, fn pid ->
      receive do
        {:EXIT, ^pid, _reason} -> :ok
      after
        5_000 -> :ok
      end
    end)
  end

  defp next_action(handler, _request) when is_function(handler, 1), do: {{:apply, handler}, handler}
  defp next_action([fun | rest], _request) when is_function(fun, 1), do: {{:apply, fun}, rest}
  defp next_action([action | rest], _request), do: {{:action, action}, rest}

  defp next_action([], request) do
    body = "fixture: no canned action left for #{request.method} #{request.path}"
    {{:action, {:respond, 500, [{"content-type", "text/plain"}], body}}, []}
  end

  defp notify_request_waiters(state) do
    {ready, waiting} =
      Enum.split_with(state.request_waiters, fn {count, _} -> state.request_count >= count end)

    requests = Enum.reverse(state.requests)
    Enum.each(ready, fn {_, from} -> GenServer.reply(from, requests) end)
    %{state | request_waiters: waiting}
  end

  defp notify_idle_waiters(%{connections: connections} = state) when map_size(connections) == 0 do
    Enum.each(state.idle_waiters, &GenServer.reply(&1, :ok))
    %{state | idle_waiters: []}
  end

  defp notify_idle_waiters(state), do: state

  defp new_event(type, conn, detail),
    do: %{type: type, conn: conn, detail: detail, at: System.monotonic_time(:millisecond)}

  defp add_event(state, event) do
    {ready, waiting} = Enum.split_with(state.event_waiters, fn {predicate, _} -> predicate.(event) end)
    Enum.each(ready, fn {_, from} -> GenServer.reply(from, event) end)
    %{state | events: [event | state.events], event_waiters: waiting}
  end

  # Called from a connection's process. A cast sent before the process exits
  # arrives before its exit signal, so it is recorded before `:conn_down`.
  defp record(conn, type, detail), do: GenServer.cast(conn.server, {:event, new_event(type, conn.id, detail)})

  defp tls_options(nil), do: nil

  defp tls_options(options) when is_list(options) do
    {:ok, _} = Application.ensure_all_started(:ssl)
    # The client refusing our certificate is the point of some tests: keep
    # :ssl from logging every alert.
    Keyword.merge([mode: :binary, active: false, packet: :raw, log_level: :none], options)
  end

  # -- Acceptor ----------------------------------------------------------------

  defp accept_loop(server, listener) do
    case :gen_tcp.accept(listener) do
      {:ok, socket} ->
        pid = GenServer.call(server, :accepted)
        :ok = :gen_tcp.controlling_process(socket, pid)
        send(pid, {:socket, socket})
        accept_loop(server, listener)

      {:error, :closed} ->
        :ok

      {:error, reason} ->
        exit({:accept_failed, reason})
    end
  end

  # -- Connection --------------------------------------------------------------

  defp connection_start(server, id, on_accept, tls) do
    socket =
      receive do
        {:socket, socket} -> socket
      end

    conn = %{server: server, id: id, socket: socket, transport: :gen_tcp, buffer: <<>>}
    peer = with {:ok, peer} <- :inet.peername(socket), do: peer

    case handshake(conn, tls) do
      {:ok, conn} -> connection_serve(conn, peer, on_accept)
      :stop -> :ok
    end
  end

  defp handshake(conn, nil), do: {:ok, conn}

  defp handshake(conn, tls) do
    # Called through a variable: :ssl is not one of the project's
    # applications (the server starts it at runtime when `:tls` is given).
    ssl = :ssl

    case ssl.handshake(conn.socket, tls, 5_000) do
      {:ok, ssl_socket} ->
        {:ok, %{conn | socket: ssl_socket, transport: :ssl}}

      {:error, reason} ->
        record(conn, :tls_failed, reason)
        close(conn)
    end
  end

  defp connection_serve(conn, peer, on_accept) do
    case on_accept.(%{conn: conn.id, peer: peer}) do
      :serve ->
        serve(conn)

      action ->
        case perform(action, nil, conn) do
          {:continue, conn} -> serve(conn)
          :stop -> :ok
        end
    end
  end

  defp serve(conn) do
    case read_request(conn) do
      {:ok, request, conn} ->
        {next, request} = GenServer.call(conn.server, {:request, request}, :infinity)

        result =
          case next do
            {:action, action} -> perform(action, request, conn)
            {:apply, fun} -> perform({:apply, fun}, request, conn)
          end

        case result do
          {:continue, conn} -> serve(conn)
          :stop -> :ok
        end

      {:closed, conn} ->
        close(conn)

      {:bad_request, message, conn} ->
        send_bytes(conn, response(400, [{"content-type", "text/plain"}, {"connection", "close"}], message))
        close(conn)
    end
  end

  # Performs one action. Returns `{:continue, conn}` to read the next request
  # on this connection, or `:stop` once the connection is closed.
  defp perform({:apply, fun}, request, conn) do
    action =
      try do
        fun.(request)
      rescue
        exception ->
          message = Exception.format(:error, exception, __STACKTRACE__)
          Logger.error("fixture handler raised: " <> message)
          {:respond, 500, [{"content-type", "text/plain"}], "fixture handler raised: " <> message}
      end

    perform(action, request, conn)
  end

  defp perform({:respond, status, headers, body}, request, conn)
       when is_integer(status) and is_list(headers) do
    close? = wants_close?(request && request.headers) or wants_close?(lower(headers))

    headers =
      if close? and not has_header?(headers, "connection"),
        do: headers ++ [{"connection", "close"}],
        else: headers

    case send_bytes(conn, response(status, headers, body)) do
      :ok when close? -> close(conn)
      :ok -> {:continue, conn}
      error -> write_failed(conn, 0, error)
    end
  end

  defp perform({:raw, bytes}, _request, conn) do
    case send_bytes(conn, bytes) do
      :ok -> {:continue, conn}
      error -> write_failed(conn, 0, error)
    end
  end

  defp perform({:delay, ms}, _request, conn) when is_integer(ms) and ms >= 0 do
    # A deliberately slow server: the timer is the point.
    receive do
    after
      ms -> {:continue, conn}
    end
  end

  defp perform({:trickle, bytes, chunk_bytes, interval_ms}, _request, conn)
       when is_integer(chunk_bytes) and chunk_bytes > 0 and is_integer(interval_ms) and interval_ms >= 0 do
    trickle(conn, IO.iodata_to_binary(bytes), chunk_bytes, interval_ms, 0)
  end

  defp perform({:stream, bytes, times}, _request, conn)
       when (is_integer(times) and times >= 0) or times == :infinity do
    stream(conn, IO.iodata_to_binary(bytes), times, 0)
  end

  defp perform(reset, _request, conn) when reset in [:reset, {:reset}] do
    # SO_LINGER {true, 0}: close/1 discards unsent data and sends a RST.
    _ = options_module(conn).setopts(conn.socket, linger: {true, 0})
    close(conn)
  end

  defp perform({:mark, term}, _request, conn) do
    record(conn, :mark, term)
    {:continue, conn}
  end

  defp perform(close, _request, conn) when close in [:close, {:close}], do: close(conn)
  defp perform(hang, _request, conn) when hang in [:hang, {:hang}], do: hang(conn)

  defp perform(steps, request, conn) when is_list(steps) do
    Enum.reduce_while(steps, {:continue, conn}, fn step, {:continue, conn} ->
      case perform(step, request, conn) do
        {:continue, conn} -> {:cont, {:continue, conn}}
        :stop -> {:halt, :stop}
      end
    end)
  end

  defp perform(other, _request, conn) do
    message = "fixture: unknown action #{inspect(other)}"
    Logger.error(message)
    send_bytes(conn, response(500, [{"content-type", "text/plain"}, {"connection", "close"}], message))
    close(conn)
  end

  defp close(conn) do
    conn.transport.close(conn.socket)
    :stop
  end

  defp write_failed(conn, sent, error) do
    record(conn, :write_failed, %{sent: sent, result: error})
    close(conn)
  end

  defp trickle(conn, <<>>, _chunk_bytes, _interval_ms, _sent), do: {:continue, conn}

  defp trickle(conn, bytes, chunk_bytes, interval_ms, sent) do
    size = min(chunk_bytes, byte_size(bytes))
    <<chunk::binary-size(size), rest::binary>> = bytes

    case send_bytes(conn, chunk) do
      :ok when rest == <<>> ->
        {:continue, conn}

      :ok ->
        receive do
        after
          interval_ms -> trickle(conn, rest, chunk_bytes, interval_ms, sent + size)
        end

      error ->
        write_failed(conn, sent, error)
    end
  end

  defp stream(conn, _bytes, 0, sent) do
    record(conn, :stream_ended, %{sent: sent, result: :ok})
    {:continue, conn}
  end

  defp stream(conn, bytes, times, sent) do
    case send_bytes(conn, bytes) do
      :ok ->
        stream(conn, bytes, if(times == :infinity, do: :infinity, else: times - 1), sent + byte_size(bytes))

      error ->
        record(conn, :stream_ended, %{sent: sent, result: error})
        close(conn)
    end
  end

  # Never answers; returns once the peer closes the connection (the server
  # stopping kills this process).
  defp hang(conn) do
    set_active(conn, true)
    hang_loop(conn)
  end

  defp hang_loop(%{socket: socket} = conn) do
    receive do
      {closed, ^socket} when closed in [:tcp_closed, :ssl_closed] -> close(conn)
      {error, ^socket, _reason} when error in [:tcp_error, :ssl_error] -> close(conn)
      {data, ^socket, _bytes} when data in [:tcp, :ssl] -> hang_loop(conn)
    end
  end

  # `:gen_tcp` sockets take options through `:inet`, `:ssl` sockets through `:ssl`.
  defp set_active(conn, mode), do: options_module(conn).setopts(conn.socket, active: mode)

  defp options_module(%{transport: :ssl}), do: :ssl
  defp options_module(_conn), do: :inet

  defp send_bytes(conn, bytes), do: conn.transport.send(conn.socket, bytes)

  # -- HTTP/1.1 reading ----------------------------------------------------------

  defp read_request(conn) do
    case parse_request_line(conn) do
      {:ok, method, target, conn} ->
        with {:ok, headers, conn} <- read_headers(conn, []),
             {:ok, body, conn} <- read_body(conn, headers) do
          {path, query} = split_target(target)
          request = %{method: method, path: path, query: query, headers: headers, body: body, conn: conn.id}
          {:ok, request, conn}
        end

      other ->
        other
    end
  end

  defp parse_request_line(conn) do
    case :erlang.decode_packet(:http_bin, conn.buffer, []) do
      {:ok, {:http_request, method, target, _version}, rest} ->
        {:ok, to_string(method), target_to_string(target), %{conn | buffer: rest}}

      # Tolerate stray empty lines between requests (RFC 9112 §2.2).
      {:ok, {:http_error, line}, rest} when line in ["\r\n", "\n"] ->
        parse_request_line(%{conn | buffer: rest})

      {:ok, {:http_error, line}, _rest} ->
        {:bad_request, "fixture: bad request line #{inspect(line)}", conn}

      {:more, _} ->
        with {:ok, conn} <- fill(conn), do: parse_request_line(conn)

      {:error, reason} ->
        {:bad_request, "fixture: bad request line (#{inspect(reason)})", conn}
    end
  end

  defp read_headers(conn, acc) do
    case :erlang.decode_packet(:httph_bin, conn.buffer, []) do
      {:ok, {:http_header, _, name, _, value}, rest} ->
        read_headers(%{conn | buffer: rest}, [{String.downcase(to_string(name)), value} | acc])

      {:ok, :http_eoh, rest} ->
        {:ok, Enum.reverse(acc), %{conn | buffer: rest}}

      {:ok, {:http_error, line}, _rest} ->
        {:bad_request, "fixture: bad header line #{inspect(line)}", conn}

      {:more, _} when byte_size(conn.buffer) > @max_header_bytes ->
        {:bad_request, "fixture: request headers too large", conn}

      {:more, _} ->
        with {:ok, conn} <- fill(conn), do: read_headers(conn, acc)

      {:error, reason} ->
        {:bad_request, "fixture: bad header (#{inspect(reason)})", conn}
    end
  end

  defp read_body(conn, headers) do
    chunked? =
      headers
      |> header_values("transfer-encoding")
      |> Enum.any?(&(&1 |> String.downcase() |> String.contains?("chunked")))

    case {chunked?, header_values(headers, "content-length")} do
      {true, _} ->
        read_chunks(conn, [])

      {false, []} ->
        {:ok, <<>>, conn}

      {false, [length | _]} ->
        case Integer.parse(String.trim(length)) do
          {length, ""} when length >= 0 -> read_exact(conn, length)
          _ -> {:bad_request, "fixture: bad content-length #{inspect(length)}", conn}
        end
    end
  end

  defp read_chunks(conn, acc) do
    with {:ok, line, conn} <- read_line(conn) do
      size_text = line |> String.split(";", parts: 2) |> hd() |> String.trim()

      case Integer.parse(size_text, 16) do
        {0, ""} ->
          with {:ok, conn} <- skip_trailers(conn), do: {:ok, IO.iodata_to_binary(acc), conn}

        {size, ""} when size > 0 ->
          with {:ok, data, conn} <- read_exact(conn, size),
               {:ok, "", conn} <- read_line(conn) do
            read_chunks(conn, [acc, data])
          else
            {:ok, _, conn} -> {:bad_request, "fixture: chunk without CRLF", conn}
            other -> other
          end

        _ ->
          {:bad_request, "fixture: bad chunk size #{inspect(line)}", conn}
      end
    end
  end

  defp skip_trailers(conn) do
    case read_line(conn) do
      {:ok, "", conn} -> {:ok, conn}
      {:ok, _trailer, conn} -> skip_trailers(conn)
      other -> other
    end
  end

  defp read_line(conn) do
    case :binary.split(conn.buffer, "\r\n") do
      [line, rest] ->
        {:ok, line, %{conn | buffer: rest}}

      [_] when byte_size(conn.buffer) > @max_header_bytes ->
        {:bad_request, "fixture: line too long", conn}

      [_] ->
        with {:ok, conn} <- fill(conn), do: read_line(conn)
    end
  end

  defp read_exact(conn, length) when byte_size(conn.buffer) >= length do
    <<data::binary-size(length), rest::binary>> = conn.buffer
    {:ok, data, %{conn | buffer: rest}}
  end

  defp read_exact(conn, length) do
    with {:ok, conn} <- fill(conn), do: read_exact(conn, length)
  end

  defp fill(conn) do
    case conn.transport.recv(conn.socket, 0, :infinity) do
      {:ok, data} -> {:ok, %{conn | buffer: conn.buffer <> data}}
      {:error, _reason} -> {:closed, conn}
    end
  end

  defp target_to_string({:abs_path, path}), do: path
  defp target_to_string({:absoluteURI, _scheme, _host, _port, path}), do: path
  defp target_to_string(:*), do: "*"
  defp target_to_string({:scheme, scheme, rest}), do: scheme <> ":" <> rest
  defp target_to_string(other) when is_binary(other), do: other

  defp split_target(target) do
    case String.split(target, "?", parts: 2) do
      [path, query] -> {path, query}
      [path] -> {path, nil}
    end
  end

  # -- HTTP/1.1 writing ----------------------------------------------------------

  defp response(status, headers, body) do
    no_body_status? = status in 100..199 or status in [204, 304]

    headers =
      if no_body_status? or has_header?(headers, "content-length") or
           has_header?(headers, "transfer-encoding"),
         do: headers,
         else: headers ++ [{"content-length", Integer.to_string(IO.iodata_length(body))}]

    [
      "HTTP/1.1 #{status} #{reason_phrase(status)}\r\n",
      Enum.map(headers, fn {name, value} -> [name, ": ", value, "\r\n"] end),
      "\r\n",
      body
    ]
  end

  defp lower(headers), do: Enum.map(headers, fn {name, value} -> {String.downcase(name), value} end)

  defp has_header?(headers, name), do: Enum.any?(headers, fn {n, _} -> String.downcase(n) == name end)

  defp header_values(headers, name), do: for({^name, value} <- headers, do: value)

  defp wants_close?(nil), do: false

  defp wants_close?(headers) do
    headers
    |> header_values("connection")
    |> Enum.any?(&(&1 |> String.downcase() |> String.contains?("close")))
  end

  @reasons %{
    100 => "Continue",
    200 => "OK",
    201 => "Created",
    202 => "Accepted",
    204 => "No Content",
    301 => "Moved Permanently",
    302 => "Found",
    303 => "See Other",
    304 => "Not Modified",
    307 => "Temporary Redirect",
    308 => "Permanent Redirect",
    400 => "Bad Request",
    401 => "Unauthorized",
    403 => "Forbidden",
    404 => "Not Found",
    405 => "Method Not Allowed",
    409 => "Conflict",
    413 => "Content Too Large",
    429 => "Too Many Requests",
    500 => "Internal Server Error",
    502 => "Bad Gateway",
    503 => "Service Unavailable",
    504 => "Gateway Timeout"
  }

  defp reason_phrase(status), do: Map.get(@reasons, status, "Status")
end
