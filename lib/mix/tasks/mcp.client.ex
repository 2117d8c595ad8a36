defmodule Mix.Tasks.Mcp.Client do
  @shortdoc "Shows, updates or deletes a registered OAuth client (RFC 7592)"
  @moduledoc """
  Manages a registration with the registration access token (RFC 7592).

      mix mcp.client show   --from client.json
      mix mcp.client update --from client.json --name "Renamed" --scope "mcp:read"
      mix mcp.client delete --uri https://auth.example.com/reg/abc --token TOKEN

  The registration client URI and token come from `--uri` and `--token`, or
  from `--from FILE`, a JSON file written by `mix mcp.register --output FILE`.
  A server may rotate the registration access token (and the client secret)
  in any answer, a read included (RFC 7592 §2.1), and the old one then stops
  working. So `update` writes the server's answer back to that file, `show`
  does when the token or secret changed, and an update that fails after its
  read rotated the token still writes the new credentials before failing.
  Without `--from`, the rotated credentials are printed as JSON on stdout.
  The file is rewritten with mode 0600 before any secret goes in.

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

  alias ExMCP.Authorization.{CLI, ClientRegistration, RotatedCredentials}

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

    {uri, token, saved} = credentials!(opts)
    Mix.Task.run("app.start")
    call_opts = CLI.call_options(opts)

    case action do
      "show" ->
        result = ClientRegistration.get_client_information(uri, token, call_opts)

        with {:ok, client} <- result,
             true <- rotated?(client, token, saved),
             path when is_binary(path) <- opts[:from] do
          CLI.write_credentials!(path, client)
          CLI.info("The server issued new credentials: updated #{path}")
        end

        print(result)

      "update" ->
        updates = updates!(opts)
        call_opts = call_opts ++ [replace: Keyword.get(opts, :replace, false)]

        case ClientRegistration.update_client_information(uri, token, updates, call_opts) do
          {:ok, client} ->
            keep(client, opts[:from], "Updated #{opts[:from]} with the server's answer")
            print({:ok, client})

          {:error, {:credentials_rotated, %RotatedCredentials{client: client}, _} = reason} ->
            keep(
              client,
              opts[:from],
              "The server issued new credentials before failing: updated #{opts[:from]}"
            )

            unless opts[:from], do: IO.puts(CLI.to_json(client))
            CLI.fail!(reason)

          {:error, reason} ->
            CLI.fail!(reason)
        end

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
      {nil, uri, token} when is_binary(uri) and is_binary(token) -> {uri, token, %{}}
      _ -> Mix.raise("give either --from FILE, or both --uri and --token")
    end
  end

  # RFC 7592 §2.1: a read may hand out a new token or secret.
  defp rotated?(client, token, saved),
    do: client.registration_access_token != token or client.client_secret != saved["client_secret"]

  defp keep(_client, nil, _message), do: :ok

  defp keep(client, path, message) do
    CLI.write_credentials!(path, client)
    CLI.info(message)
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
