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
      mix mcp.register --server https://mcp.example.com/mcp --store ./clients.dets --client-key ci

  ## The client store

  With `--server`, the client goes into a client store file
  (`ExMCP.Authorization.ClientStore.DETS`), under the discovered issuer and
  a client key (`--client-key`, default `"default"`): `obtain_client/3`
  runs with `store:`, so a later run against the same authorization server
  reuses the stored client instead of registering again, and registers anew
  only when the stored one's secret has expired (30 s of skew) or lacks a
  requested redirect URI. The task says on stderr whether the client was
  reused or registered, for which issuer and key, and in which file.

  The file is `--store PATH`, by default
  `$XDG_CONFIG_HOME/ex_mcp/clients.dets` when `XDG_CONFIG_HOME` is set to an
  absolute path, else `~/.config/ex_mcp/clients.dets`. It is created with
  mode 0600 and holds the secrets and registration access tokens
  unencrypted. `--no-store` skips it. `mix mcp.client list` shows what it
  holds; `mix mcp.client show|update|delete --issuer ISSUER` manage a stored
  client.

  With `--endpoint` there is no discovery, so no issuer is known: the client
  is stored (and reused) only when `--issuer ISSUER` names the issuer to keep
  it under; otherwise the task says it did not store it.

  Without `--endpoint` or `--server`, it starts the embedded registration server
  (`ExMCP.Authorization.RegistrationServer`) on 127.0.0.1 and registers
  there, and says so. That server stops when the task ends, so its client is
  never stored.

  ## Flags

    * `--endpoint URL` - the registration endpoint
    * `--server URL` - an MCP server URL: discover, then obtain a client
    * `--www-authenticate VALUE` - with `--server`: the `WWW-Authenticate` value of the server's 401
    * `--issuer URL` - with `--server`: skip RFC 9728 and use this authorization server;
      with `--endpoint`: the issuer to store the client under
    * `--client-metadata-url URL` - with `--server`: the client's Client ID Metadata Document URL
      (such a client has no issued credentials, so it is not stored)
    * `--allow-private-networks` - with `--server`: allow learned URLs on private addresses
    * `--store PATH` - the client store file (default: see above)
    * `--client-key KEY` - the client's key in the store (default: `default`);
      use one key per distinct client metadata
    * `--no-store` - neither read nor write the client store
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
  and the task exits non-zero; a client store file that cannot be opened
  (corrupt, unreadable) is such an error.
  """
  use Mix.Task

  alias ExMCP.Authorization.{CLI, ClientRegistration, ClientStore, RegistrationServer}

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
    output: :string,
    store: :string,
    no_store: :boolean,
    client_key: :string
  ]

  @impl Mix.Task
  def run(argv) do
    {opts, _} = CLI.parse!(argv, @switches, "mcp.register")

    if opts[:server] && opts[:endpoint], do: Mix.raise("give either --server or --endpoint, not both")

    if opts[:no_store] && (opts[:store] || opts[:client_key]),
      do: Mix.raise("--no-store cannot go with --store or --client-key")

    Mix.Task.run("app.start")

    metadata = %{
      client_name: opts[:name] || "ExMCP client",
      redirect_uris: Keyword.get_values(opts, :redirect_uri) |> default(["http://localhost:8080/callback"]),
      grant_types: Keyword.get_values(opts, :grant_type) |> default(nil),
      scope: opts[:scope],
      token_endpoint_auth_method: opts[:auth_method]
    }

    call_opts = CLI.call_options(opts) ++ initial_access_token(opts)

    cond do
      server_url = opts[:server] ->
        discover_and_obtain(server_url, metadata, call_opts, opts)

      endpoint = opts[:endpoint] ->
        register(endpoint, metadata, call_opts, opts)

      true ->
        endpoint = start_embedded_server()

        client =
          ok!(
            ClientRegistration.register_client(Map.put(metadata, :registration_endpoint, endpoint), call_opts)
          )

        CLI.info("Registered client #{client.client_id} at #{endpoint}")

        CLI.info(
          "Not stored in the client store: the embedded server forgets its clients when this task ends"
        )

        finish(client, opts)
    end
  end

  defp discover_and_obtain(server_url, metadata, call_opts, opts) do
    discover_opts =
      for key <- [:www_authenticate, :issuer, :allow_private_networks],
          Keyword.has_key?(opts, key),
          do: {key, opts[key]}

    discovery = ok!(ClientRegistration.discover(server_url, CLI.call_options(opts) ++ discover_opts))
    report(discovery)
    obtain_opts = call_opts ++ Keyword.take(opts, [:client_metadata_url, :allow_private_networks])
    obtain = &ClientRegistration.obtain_client(discovery, drop_nil(metadata), obtain_opts ++ &1)

    if opts[:no_store] do
      client = ok!(obtain.([]))

      CLI.info(
        "Obtained client #{client.client_id} from #{client.issuer} by #{method(client.registration_method)}"
      )

      CLI.info("Not stored (--no-store)")
      finish(client, opts)
    else
      path = CLI.store_path(opts)
      key = CLI.client_key!(opts)

      CLI.with_store(path, fn store ->
        before = stored_client_id(store, discovery.issuer, key)
        client = ok!(obtain.(store: store, client_key: key))
        report_store(client, before, key, path)
        finish(client, opts)
      end)
    end
  end

  # With --endpoint there is no discovery, so no issuer: the client is kept
  # only under the issuer the caller names, with the rules obtain_client/3
  # applies to a stored client.
  defp register(endpoint, metadata, call_opts, opts) do
    request = Map.put(metadata, :registration_endpoint, endpoint)

    cond do
      opts[:no_store] ->
        client = ok!(ClientRegistration.register_client(request, call_opts))
        CLI.info("Registered client #{client.client_id} at #{endpoint}")
        CLI.info("Not stored (--no-store)")
        finish(client, opts)

      issuer = opts[:issuer] ->
        issuer!(issuer)
        path = CLI.store_path(opts)
        key = CLI.client_key!(opts)
        timeout = ClientRegistration.checked_options!(call_opts, [:initial_access_token])[:timeout]

        CLI.with_store(path, fn store ->
          before = stored_client_id(store, issuer, key)

          register = fn ->
            with {:ok, client} <- ClientRegistration.register_client(request, call_opts) do
              {:ok,
               client
               |> Map.merge(%{issuer: issuer, registration_method: :dynamic})
               |> Map.put_new(:token_endpoint_auth_method, opts[:auth_method] || "none")}
            end
          end

          client =
            ok!(
              ClientStore.get_or_register(
                store,
                {issuer, key},
                &ClientStore.reusable?(&1, issuer, metadata.redirect_uris),
                register,
                timeout
              )
            )

          report_store(client, before, key, path)
          finish(client, opts)
        end)

      true ->
        client = ok!(ClientRegistration.register_client(request, call_opts))
        CLI.info("Registered client #{client.client_id} at #{endpoint}")

        CLI.info(
          "Not stored in the client store: --endpoint skips discovery, so the issuer is unknown " <>
            "(give --issuer ISSUER to keep the client under that issuer)"
        )

        finish(client, opts)
    end
  end

  defp issuer!(issuer) do
    case URI.parse(issuer) do
      %URI{scheme: scheme, host: host} when scheme in ["https", "http"] and is_binary(host) and host != "" ->
        :ok

      _ ->
        Mix.raise("--issuer must be the authorization server's issuer URL, got: #{inspect(issuer)}")
    end
  end

  defp stored_client_id(store, issuer, key) do
    case ClientStore.get(store, issuer, key) do
      {:ok, client} -> client.client_id
      :error -> nil
      {:error, reason} -> CLI.fail!(reason)
    end
  end

  defp report_store(%{registration_method: :dynamic} = client, before, key, path) do
    where = "client key #{inspect(key)} in the store #{path}"

    cond do
      client.client_id == before ->
        CLI.info(
          "Reused client #{client.client_id} of issuer #{client.issuer} (#{where}): no registration made"
        )

      before == nil ->
        CLI.info(
          "Registered client #{client.client_id} at issuer #{client.issuer} by #{method(:dynamic)}; " <>
            "stored under #{where}"
        )

      true ->
        CLI.info(
          "Registered client #{client.client_id} at issuer #{client.issuer} by #{method(:dynamic)}; " <>
            "stored under #{where}, replacing client #{before}, which was expired or lacked a redirect URI"
        )
    end
  end

  defp report_store(client, _before, _key, _path) do
    CLI.info(
      "Obtained client #{client.client_id} from #{client.issuer} by #{method(client.registration_method)}"
    )

    CLI.info("Not stored in the client store: such a client has no issued credentials to keep")
  end

  defp finish(client, opts) do
    if path = opts[:output], do: CLI.write_credentials!(path, client)
    IO.puts(CLI.to_json(client))
  end

  defp ok!({:ok, value}), do: value
  defp ok!({:error, reason}), do: CLI.fail!(reason)

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
