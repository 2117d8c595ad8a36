defmodule Mix.Tasks.Mcp.Client do
  @shortdoc "Shows, updates or deletes a registered OAuth client (RFC 7592)"
  @moduledoc """
  Manages a registration with the registration access token (RFC 7592).

      mix mcp.client show   --from client.json
      mix mcp.client update --from client.json --name "Renamed" --scope "mcp:read"
      mix mcp.client delete --uri https://auth.example.com/reg/abc --token TOKEN

  The registration client URI and token come from `--uri` and `--token`, or
  from `--from FILE`, a JSON file written by `mix mcp.register --output FILE`.
  `update` writes the server's answer back to that file, so a rotated
  registration access token is kept.

  ## Flags

    * `--from FILE` / `--uri URI` / `--token TOKEN` - which registration
    * `--name NAME`, `--scope SCOPE`, `--redirect-uri URI` (repeatable),
      `--logo-uri URI`, `--contact EMAIL` (repeatable) - `update` only: the
      fields to change; the rest of the registration is kept
    * `--replace` - `update` only: send the given fields as the whole record
    * `--cacertfile PATH`, `--proxy URL` (or `system`), `--timeout MS`

  Errors are printed with `ExMCP.Authorization.ClientRegistration.format_error/1`
  and the task exits non-zero.
  """
  use Mix.Task

  alias ExMCP.Authorization.{CLI, ClientRegistration}

  @switches [
    from: :string,
    uri: :string,
    token: :string,
    name: :string,
    scope: :string,
    redirect_uri: :keep,
    logo_uri: :string,
    contact: :keep,
    replace: :boolean,
    cacertfile: :string,
    proxy: :string,
    timeout: :integer
  ]

  @impl Mix.Task
  def run(argv) do
    {opts, args} = CLI.parse!(argv, @switches, "mcp.client")

    action =
      case args do
        [action] when action in ["show", "update", "delete"] -> action
        _ -> Mix.raise("usage: mix mcp.client show|update|delete (--from FILE | --uri URI --token TOKEN)")
      end

    {uri, token} = credentials!(opts)
    Mix.Task.run("app.start")
    call_opts = CLI.call_options(opts)

    case action do
      "show" ->
        ClientRegistration.get_client_information(uri, token, call_opts) |> print()

      "update" ->
        updates = updates!(opts)
        call_opts = call_opts ++ [replace: Keyword.get(opts, :replace, false)]
        result = ClientRegistration.update_client_information(uri, token, updates, call_opts)

        with {:ok, client} <- result, path when is_binary(path) <- opts[:from] do
          CLI.write_credentials!(path, client)
          CLI.info("Updated #{path} with the server's answer")
        end

        print(result)

      "delete" ->
        case ClientRegistration.delete_client(uri, token, call_opts) do
          :ok -> CLI.info("Deleted the registration at #{uri}")
          {:error, reason} -> CLI.fail!(reason)
        end
    end
  end

  defp credentials!(opts) do
    case {opts[:from], opts[:uri], opts[:token]} do
      {path, nil, nil} when is_binary(path) -> CLI.read_credentials!(path)
      {nil, uri, token} when is_binary(uri) and is_binary(token) -> {uri, token}
      _ -> Mix.raise("give either --from FILE, or both --uri and --token")
    end
  end

  defp updates!(opts) do
    updates =
      %{
        client_name: opts[:name],
        scope: opts[:scope],
        logo_uri: opts[:logo_uri],
        redirect_uris: Keyword.get_values(opts, :redirect_uri),
        contacts: Keyword.get_values(opts, :contact)
      }
      |> Enum.reject(fn {_, value} -> value in [nil, []] end)
      |> Map.new()

    if updates == %{},
      do: Mix.raise("update needs at least one of --name, --scope, --redirect-uri, --logo-uri, --contact")

    updates
  end

  defp print({:ok, client}), do: IO.puts(CLI.to_json(client))
  defp print({:error, reason}), do: CLI.fail!(reason)
end
