defmodule Mix.Tasks.Mcp.Register do
  @shortdoc "Obtains an OAuth client (discovery, CIMD or RFC 7591) and prints its credentials as JSON"
  @moduledoc """
  Registers a client with an authorization server and prints the credentials
  it issued as pretty JSON on stdout (status lines go to stderr).

      mix mcp.register --endpoint https://auth.example.com/register \\
        --name "My MCP Client" --redirect-uri http://localhost:8080/callback \\
        --scope "mcp:read mcp:write" --output client.json

  With `--server`, it starts from an MCP server's URL instead:
  `ExMCP.Authorization.ClientRegistration.discover/2` finds the
  authorization server (RFC 9728, then RFC 8414 or OpenID Connect
  Discovery), and `obtain_client/3` obtains a client in the MCP
  specification's priority (a Client ID Metadata Document with
  `--client-metadata-url` when the server supports it, else dynamic
  registration). The printed JSON then also holds `issuer` and
  `registration_method`.

      mix mcp.register --server https://mcp.example.com/mcp --name "My MCP Client"

  Without `--endpoint` or `--server`, it starts the embedded registration server
  (`ExMCP.Authorization.RegistrationServer`) on 127.0.0.1 and registers
  there, and says so. That server stops when the task ends.

  ## Flags

    * `--endpoint URL` - the registration endpoint
    * `--server URL` - an MCP server URL: discover, then obtain a client
    * `--www-authenticate VALUE` - with `--server`: the `WWW-Authenticate` value of the server's 401
    * `--issuer URL` - with `--server`: skip RFC 9728 and use this authorization server
    * `--client-metadata-url URL` - with `--server`: the client's Client ID Metadata Document URL
    * `--allow-private-networks` - with `--server`: allow learned URLs on private addresses
    * `--name NAME` - `client_name` (default: "ExMCP client")
    * `--redirect-uri URI` - repeatable (default: http://localhost:8080/callback)
    * `--scope SCOPE` - space-separated scopes
    * `--grant-type TYPE` - repeatable (default: authorization_code)
    * `--auth-method METHOD` - `token_endpoint_auth_method` (default: none)
    * `--initial-access-token TOKEN` - RFC 7591 §3 initial access token
    * `--cacertfile PATH` - PEM CA certificates to trust
    * `--proxy URL` - an http:// or https:// proxy (credentials allowed, never
      printed), or `system` for the `HTTP_PROXY`/`HTTPS_PROXY` variables
    * `--timeout MS` - whole-call timeout
    * `--output FILE` - also write the JSON to FILE (mode 0600), for `mix mcp.client`

  Errors are printed with `ExMCP.Authorization.ClientRegistration.format_error/1`
  and the task exits non-zero.
  """
  use Mix.Task

  alias ExMCP.Authorization.{CLI, ClientRegistration, RegistrationServer}

  @switches [
    endpoint: :string,
    server: :string,
    www_authenticate: :string,
    issuer: :string,
    client_metadata_url: :string,
    allow_private_networks: :boolean,
    name: :string,
    redirect_uri: :keep,
    scope: :string,
    grant_type: :keep,
    auth_method: :string,
    initial_access_token: :string,
    cacertfile: :string,
    proxy: :string,
    timeout: :integer,
    output: :string
  ]

  @impl Mix.Task
  def run(argv) do
    {opts, _} = CLI.parse!(argv, @switches, "mcp.register")
    Mix.Task.run("app.start")

    if opts[:server] && opts[:endpoint], do: Mix.raise("give either --server or --endpoint, not both")

    metadata = %{
      client_name: opts[:name] || "ExMCP client",
      redirect_uris: Keyword.get_values(opts, :redirect_uri) |> default(["http://localhost:8080/callback"]),
      grant_types: Keyword.get_values(opts, :grant_type) |> default(nil),
      scope: opts[:scope],
      token_endpoint_auth_method: opts[:auth_method]
    }

    call_opts = CLI.call_options(opts) ++ initial_access_token(opts)

    case opts[:server] do
      nil -> register(opts[:endpoint] || start_embedded_server(), metadata, call_opts, opts)
      server_url -> discover_and_obtain(server_url, metadata, call_opts, opts)
    end
  end

  defp discover_and_obtain(server_url, metadata, call_opts, opts) do
    discover_opts =
      for key <- [:www_authenticate, :issuer, :allow_private_networks],
          Keyword.has_key?(opts, key),
          do: {key, opts[key]}

    with {:ok, discovery} <- ClientRegistration.discover(server_url, CLI.call_options(opts) ++ discover_opts),
         :ok <- report(discovery),
         obtain_opts = call_opts ++ Keyword.take(opts, [:client_metadata_url, :allow_private_networks]),
         {:ok, client} <- ClientRegistration.obtain_client(discovery, drop_nil(metadata), obtain_opts) do
      CLI.info(
        "Obtained client #{client.client_id} from #{client.issuer} by #{method(client.registration_method)}"
      )

      if path = opts[:output], do: CLI.write_credentials!(path, client)
      IO.puts(CLI.to_json(client))
    else
      {:error, reason} -> CLI.fail!(reason)
    end
  end

  defp report(discovery) do
    case discovery.resource_metadata_url do
      nil -> CLI.info("No protected resource metadata (RFC 9728) for #{discovery.server_url}")
      url -> CLI.info("Protected resource metadata: #{url} (resource #{discovery.resource})")
    end

    case discovery.authorization_server_metadata do
      :discovered ->
        CLI.info("Authorization server #{discovery.issuer}: #{discovery.authorization_server_metadata_url}")

      :defaults ->
        CLI.info("Authorization server #{discovery.issuer}: no metadata, using the default endpoints")
    end
  end

  defp method(:dynamic), do: "dynamic registration (RFC 7591)"
  defp method(:client_id_metadata_document), do: "Client ID Metadata Document"
  defp method(:pre_registered), do: "pre-registration"

  defp drop_nil(map), do: map |> Enum.reject(fn {_, v} -> is_nil(v) end) |> Map.new()

  defp register(endpoint, metadata, call_opts, opts) do
    request = Map.put(metadata, :registration_endpoint, endpoint)

    case ClientRegistration.register_client(request, call_opts) do
      {:ok, client} ->
        CLI.info("Registered client #{client.client_id} at #{endpoint}")
        if path = opts[:output], do: CLI.write_credentials!(path, client)
        IO.puts(CLI.to_json(client))

      {:error, reason} ->
        CLI.fail!(reason)
    end
  end

  defp start_embedded_server do
    {:ok, server} = RegistrationServer.start_link(port: 0)
    endpoint = RegistrationServer.registration_endpoint(server)

    CLI.info(
      "No --endpoint given: started the embedded registration server at #{RegistrationServer.url(server)} " <>
        "(it stops when this task ends)"
    )

    endpoint
  end

  defp initial_access_token(opts) do
    case opts[:initial_access_token] do
      nil -> []
      token -> [initial_access_token: token]
    end
  end

  defp default([], fallback), do: fallback
  defp default(values, _), do: values
end
