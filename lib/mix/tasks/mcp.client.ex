defmodule Mix.Tasks.Mcp.Client do
  @shortdoc "Lists stored OAuth clients; shows, updates or deletes a registration (RFC 7592)"
  @moduledoc """
  Manages a registration with the registration access token (RFC 7592), and
  lists the client store.

      mix mcp.client list
      mix mcp.client show   --issuer https://auth.example.com
      mix mcp.client update --issuer https://auth.example.com --client-key ci --name "Renamed"
      mix mcp.client show   --from client.json
      mix mcp.client update --from client.json --name "Renamed" --scope "mcp:read"
      mix mcp.client delete --uri https://auth.example.com/reg/abc --token TOKEN

  ## Through the client store

  `list` prints every client in the client store file that
  `mix mcp.register` fills (see its docs: `--store PATH`, by default
  `$XDG_CONFIG_HOME/ex_mcp/clients.dets` or `~/.config/ex_mcp/clients.dets`):
  its issuer, client key, `client_id`, registration method and when its
  secret expires. Never a secret or token.

  `show`, `update` and `delete` with `--issuer ISSUER` (and `--client-key
  KEY`, default `"default"`) act on the client stored for that issuer and
  key, with its stored registration access token, and say which issuer the
  client belongs to. They go through
  `ExMCP.Authorization.ClientStore.get_client_information/4`,
  `update_client_information/5` and `delete_client/4`, which store whatever
  the server hands out (a rotated registration access token or client
  secret, the updated metadata) before returning, an update that failed
  after its read rotated the token included; `delete` also removes the
  client from the store. A missing store file is an error, never created.

  ## From a file or the command line

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

    * `--issuer ISSUER` / `--from FILE` / `--uri URI` / `--token TOKEN` - which registration
    * `--client-key KEY` - with `--issuer`: the client's key in the store (default: `default`)
    * `--store PATH` - with `list` or `--issuer`: the client store file
    * `--name NAME`, `--scope SCOPE`, `--redirect-uri URI` (repeatable),
      `--logo-uri URI`, `--contact EMAIL` (repeatable) - `update` only: the
      fields to change; the rest of the registration is kept
    * `--replace` - `update` only: send the given fields as the whole record
    * `--cacertfile PATH`, `--proxy URL` (or `system`), `--timeout MS`

  Errors are printed with `ExMCP.Authorization.ClientRegistration.format_error/1`
  and the task exits non-zero; a client store file that cannot be opened
  (corrupt, unreadable) is such an error.
  """
  use Mix.Task

  alias ExMCP.Authorization.{CLI, ClientRegistration, ClientStore, RotatedCredentials}

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
    timeout: :integer,
    issuer: :string,
    client_key: :string,
    store: :string
  ]

  @impl Mix.Task
  def run(argv) do
    {opts, args} = CLI.parse!(argv, @switches, "mcp.client")

    action =
      case args do
        [action] when action in ["list", "show", "update", "delete"] ->
          action

        _ ->
          Mix.raise(
            "usage: mix mcp.client list [--store PATH], or " <>
              "mix mcp.client show|update|delete (--from FILE | --uri URI --token TOKEN | --issuer ISSUER)"
          )
      end

    cond do
      action == "list" ->
        list(opts)

      opts[:issuer] ->
        if opts[:from] || opts[:uri] || opts[:token],
          do: Mix.raise("give either --issuer (the client store), or --from FILE, or --uri and --token")

        updates = if action == "update", do: updates!(opts)
        Mix.Task.run("app.start")
        through_store(action, opts[:issuer], updates, opts)

      true ->
        if opts[:store] || opts[:client_key],
          do: Mix.raise("--store and --client-key go with --issuer ISSUER (or with list)")

        {uri, token, saved} = credentials!(opts)
        updates = if action == "update", do: updates!(opts)
        Mix.Task.run("app.start")
        with_credentials(action, uri, token, saved, updates, opts)
    end
  end

  defp with_credentials(action, uri, token, saved, updates, opts) do
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

  # -- Through the client store ---------------------------------------------------

  defp list(opts) do
    if opts[:from] || opts[:uri] || opts[:token] || opts[:issuer] || opts[:client_key],
      do: Mix.raise("list takes only --store PATH")

    path = existing_store!(opts)
    Mix.Task.run("app.start")

    CLI.with_store(path, fn store ->
      case ClientStore.list(store) do
        {:ok, []} ->
          CLI.info("No clients stored in #{path}")

        {:ok, entries} ->
          CLI.info("#{length(entries)} stored in #{path}:")

          rows =
            for {{issuer, key}, client} <- entries do
              [
                issuer,
                key,
                client.client_id,
                to_string(Map.get(client, :registration_method, "?")),
                secret_expiry(client)
              ]
            end

          print_table(["ISSUER", "CLIENT KEY", "CLIENT ID", "METHOD", "SECRET EXPIRES"], rows)

        {:error, reason} ->
          CLI.fail!(reason)
      end
    end)
  end

  # Never the secret itself: only whether there is one and when it expires
  # (RFC 7591 §3.2.1: 0 means never).
  defp secret_expiry(client) do
    case {Map.get(client, :client_secret), Map.get(client, :client_secret_expires_at)} do
      {nil, _} ->
        "no secret"

      {_, at} when is_integer(at) and at > 0 ->
        # A server's number, possibly beyond what DateTime can hold.
        stamp =
          case DateTime.from_unix(at) do
            {:ok, time} -> DateTime.to_iso8601(time)
            {:error, _} -> "#{at} (Unix time)"
          end

        if ClientStore.expired?(client, 0), do: stamp <> " (expired)", else: stamp

      _ ->
        "never"
    end
  end

  defp print_table(header, rows) do
    widths =
      Enum.reduce([header | rows], List.duplicate(0, length(header)), fn row, widths ->
        Enum.zip_with(row, widths, &max(String.length(&1), &2))
      end)

    for row <- [header | rows] do
      row
      |> Enum.zip(widths)
      |> Enum.map_join("  ", fn {cell, width} -> String.pad_trailing(cell, width) end)
      |> String.trim_trailing()
      |> IO.puts()
    end

    :ok
  end

  defp through_store(action, issuer, updates, opts) do
    path = existing_store!(opts)
    key = CLI.client_key!(opts)
    call_opts = CLI.call_options(opts)

    CLI.with_store(path, fn store ->
      before =
        case ClientStore.get(store, issuer, key) do
          {:ok, client} ->
            client

          :error ->
            Mix.raise(
              "no client is stored for client key #{inspect(key)} at issuer #{issuer} in #{path} " <>
                "(mix mcp.client list shows what is stored)"
            )

          {:error, reason} ->
            CLI.fail!(reason)
        end

      where =
        "client #{before.client_id} of issuer #{issuer} (client key #{inspect(key)} in the store #{path})"

      case action do
        "show" ->
          client = ok!(ClientStore.get_client_information(store, issuer, key, call_opts))
          CLI.info("Read the registration of #{where}")

          if rotated?(client, before.registration_access_token, %{"client_secret" => before[:client_secret]}),
            do: CLI.info("The server issued new credentials: stored them in #{path}")

          print({:ok, client})

        "update" ->
          call_opts = call_opts ++ [replace: Keyword.get(opts, :replace, false)]

          case ClientStore.update_client_information(store, issuer, key, updates, call_opts) do
            {:ok, client} ->
              CLI.info("Updated the registration of #{where}, and stored the server's answer")
              print({:ok, client})

            {:error, {:credentials_rotated, _, _} = reason} ->
              CLI.info("The server issued new credentials before failing: stored them in #{path}")
              CLI.fail!(reason)

            {:error, reason} ->
              CLI.fail!(reason)
          end

        "delete" ->
          :ok = ok!(ClientStore.delete_client(store, issuer, key, call_opts))
          CLI.info("Deleted the registration of #{where}, and removed it from the store")
      end
    end)
  end

  # Reading or managing a store that does not exist must not create one.
  defp existing_store!(opts) do
    path = CLI.store_path(opts)

    unless File.exists?(path),
      do:
        Mix.raise(
          "no client store at #{path} (mix mcp.register --server URL creates it; --store PATH names another)"
        )

    path
  end

  defp ok!(:ok), do: :ok
  defp ok!({:ok, value}), do: value
  defp ok!({:error, reason}), do: CLI.fail!(reason)

  defp credentials!(opts) do
    case {opts[:from], opts[:uri], opts[:token]} do
      {path, nil, nil} when is_binary(path) ->
        CLI.read_credentials!(path)

      {nil, uri, token} when is_binary(uri) and is_binary(token) ->
        {uri, token, %{}}

      _ ->
        Mix.raise("give either --from FILE, or both --uri and --token, or --issuer ISSUER (the client store)")
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
