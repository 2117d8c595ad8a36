defmodule Mix.Tasks.Mcp.Register do
  @shortdoc "Registers an OAuth client (RFC 7591) and prints its credentials as JSON"
  @moduledoc """
  Registers a client with an authorization server and prints the credentials
  it issued as pretty JSON on stdout (status lines go to stderr).

      mix mcp.register --endpoint https://auth.example.com/register \\
        --name "My MCP Client" --redirect-uri http://localhost:8080/callback \\
        --scope "mcp:read mcp:write" --output client.json

  Without `--endpoint`, it starts the embedded registration server
  (`ExMCP.Authorization.RegistrationServer`) on 127.0.0.1 and registers
  there, and says so. That server stops when the task ends.

  ## Flags

    * `--endpoint URL` - the registration endpoint
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

    endpoint = opts[:endpoint] || start_embedded_server()

    request = %{
      registration_endpoint: endpoint,
      client_name: opts[:name] || "ExMCP client",
      redirect_uris: Keyword.get_values(opts, :redirect_uri) |> default(["http://localhost:8080/callback"]),
      grant_types: Keyword.get_values(opts, :grant_type) |> default(nil),
      scope: opts[:scope],
      token_endpoint_auth_method: opts[:auth_method]
    }

    call_opts = CLI.call_options(opts) ++ initial_access_token(opts)

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
