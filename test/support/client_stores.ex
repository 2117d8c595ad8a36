defmodule ExMCP.Test.ClientStores do
  @moduledoc """
  What the client store tests share: a running store of each built-in
  adapter, the embedded `RegistrationServer` with its discovery, and an
  authorization server that holds a registration open until the test lets
  it go.

  Every store is started under the test supervisor (`start_supervised!/1`)
  with a fresh name, so the tests run `async: true`; Mnesia tables are
  `ram_copies` on this node and are deleted when the test ends.

      for kind <- ExMCP.Test.ClientStores.kinds() do
        describe "\#{kind}" do
          @kind kind
          setup do: %{store: ExMCP.Test.ClientStores.start_store!(@kind)}
          # tests using %{store: store}
        end
      end
  """

  import ExUnit.Callbacks

  alias ExMCP.Authorization.{ClientRegistration, ClientStore, RegistrationServer}
  alias ExMCP.Test.{FixtureServer, JSON}

  @kinds [:ets, :dets, :mnesia]

  # A confidential client, so that the server issues a client_secret (and,
  # with :client_secret_expires_in, an expiry).
  @metadata %{
    client_name: "Store test",
    redirect_uris: ["http://127.0.0.1:8080/callback"],
    token_endpoint_auth_method: "client_secret_basic"
  }

  @doc "The three built-in adapters, by short name."
  @spec kinds() :: [atom()]
  def kinds, do: @kinds

  @doc "The adapter module of a short name."
  @spec adapter(atom()) :: module()
  def adapter(:ets), do: ClientStore.ETS
  def adapter(:dets), do: ClientStore.DETS
  def adapter(:mnesia), do: ClientStore.Mnesia

  @doc "Client metadata of a confidential client that the embedded server accepts."
  @spec metadata(map()) :: map()
  def metadata(extra \\ %{}), do: Map.merge(@metadata, extra)

  @doc """
  Starts a store of `kind` under the test supervisor; returns the store
  tuple. A DETS store gets a file in a fresh directory (`:dir` to choose
  it); `:name` picks the name.
  """
  @spec start_store!(atom(), keyword()) :: ClientStore.t()
  def start_store!(kind, opts \\ []) do
    name = Keyword.get_lazy(opts, :name, fn -> unique_name(kind) end)
    {adapter, child_opts} = child(kind, name, opts)
    start_supervised!({adapter, child_opts})
    {adapter, name}
  end

  @doc "The child id under which `start_store!/2` started `store` (for `stop_supervised!/1`)."
  @spec child_id(ClientStore.t()) :: term()
  def child_id({adapter, name}), do: {adapter, name}

  defp child(:ets, name, _opts), do: {ClientStore.ETS, name: name}

  defp child(:dets, name, opts) do
    dir = Keyword.get_lazy(opts, :dir, &tmp_dir!/0)
    {ClientStore.DETS, name: name, path: Keyword.get(opts, :path, Path.join(dir, "clients.dets"))}
  end

  defp child(:mnesia, name, _opts) do
    ensure_mnesia!()

    on_exit(fn ->
      :mnesia.delete_table(name)
      :mnesia.delete_table(:"#{name}.leases")
    end)

    {ClientStore.Mnesia, table: name}
  end

  @doc "A fresh atom for a store name (test code only; never from server data)."
  @spec unique_name(atom()) :: atom()
  def unique_name(kind), do: :"client_store_test_#{kind}_#{System.unique_integer([:positive])}"

  @doc "Starts Mnesia (a RAM schema on this node) if it is not running."
  @spec ensure_mnesia!() :: :ok
  def ensure_mnesia! do
    {:ok, _} = Application.ensure_all_started(:mnesia)
    :ok
  end

  @doc "A fresh directory under the system's temporary directory, removed when the test ends."
  @spec tmp_dir!() :: Path.t()
  def tmp_dir! do
    dir = Path.join(System.tmp_dir!(), "ex_mcp_client_store_test_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    dir
  end

  @doc "Starts the embedded server (with an MCP resource at /mcp) under the test supervisor."
  @spec start_registration_server!(keyword()) :: pid()
  def start_registration_server!(opts \\ []) do
    opts = Keyword.put_new(opts, :protected_resource, resource: "/mcp")
    start_supervised!(Supervisor.child_spec({RegistrationServer, opts}, id: make_ref()))
  end

  @doc "Discovery from the embedded server's MCP resource URL."
  @spec discovery!(pid()) :: ClientRegistration.discovery()
  def discovery!(server) do
    {:ok, discovery} = ClientRegistration.discover(RegistrationServer.resource_url(server))
    discovery
  end

  @doc """
  An authorization server (a `FixtureServer`) with a real RFC 8414 metadata
  document, whose `POST /register` for a client named `"Held"` does not
  answer until the test says so. When such a request arrives the test
  process receives `{:registering, base, connection, n}`; `send(connection,
  :release)` makes it answer `201` with the client `"held-<n>"` (secret
  `"held-secret-<n>"`, token `"held-token-<n>"`). Other registrations are
  answered at once with `"quick-<n>"`. Returns `{server, base, discovery}`.
  """
  @spec holding_authorization_server!() :: {pid(), String.t(), ClientRegistration.discovery()}
  def holding_authorization_server! do
    test = self()
    counter = :counters.new(1, [])

    server =
      FixtureServer.start!(fn request ->
        {"host", authority} = List.keyfind(request.headers, "host", 0)
        base = "http://" <> authority

        case {request.method, request.path} do
          {"GET", "/.well-known/oauth-authorization-server"} ->
            json(200, authorization_server_metadata(base))

          {"POST", "/register"} ->
            :counters.add(counter, 1, 1)
            n = :counters.get(counter, 1)
            sent = JSON.decode!(request.body)

            if sent["client_name"] == "Held" do
              send(test, {:registering, base, self(), n})

              receive do
                :release -> json(201, registered(base, "held", n, sent))
              end
            else
              json(201, registered(base, "quick", n, sent))
            end

          _ ->
            {:respond, 404, [{"content-type", "application/json"}], ~s({"error":"not_found"})}
        end
      end)

    base = String.trim_trailing(FixtureServer.url(server, "/"), "/")
    {:ok, discovery} = ClientRegistration.discover(base <> "/mcp", issuer: base)
    {server, base, discovery}
  end

  @doc "The `POST /register` requests a FixtureServer received."
  @spec registrations(pid()) :: [map()]
  def registrations(server),
    do: for(%{method: "POST", path: "/register"} = request <- FixtureServer.requests(server), do: request)

  defp authorization_server_metadata(base) do
    %{
      "issuer" => base,
      "authorization_endpoint" => base <> "/authorize",
      "token_endpoint" => base <> "/token",
      "registration_endpoint" => base <> "/register",
      "response_types_supported" => ["code"],
      "token_endpoint_auth_methods_supported" => ["client_secret_basic"],
      "code_challenge_methods_supported" => ["S256"]
    }
  end

  defp registered(base, prefix, n, sent) do
    id = "#{prefix}-#{n}"

    Map.merge(sent, %{
      "client_id" => id,
      "client_secret" => "#{prefix}-secret-#{n}",
      "client_secret_expires_at" => 0,
      "registration_access_token" => "#{prefix}-token-#{n}",
      "registration_client_uri" => base <> "/register/" <> id,
      "token_endpoint_auth_method" => "client_secret_basic"
    })
  end

  defp json(status, body), do: {:respond, status, [{"content-type", "application/json"}], JSON.encode!(body)}

  @doc """
  Starts `count` processes that each wait for `:go`, then call `fun`; sends
  them all `:go` and returns their results in order.
  """
  @spec all_at_once(pos_integer(), (() -> term()), timeout()) :: [term()]
  def all_at_once(count, fun, timeout \\ 60_000) do
    test = self()

    pids =
      for _ <- 1..count do
        spawn_link(fn ->
          receive do
            :go -> send(test, {:all_at_once, self(), fun.()})
          end
        end)
      end

    Enum.each(pids, &send(&1, :go))

    for pid <- pids do
      receive do
        {:all_at_once, ^pid, result} -> result
      after
        timeout -> raise "a process did not answer within #{timeout} ms"
      end
    end
  end
end
