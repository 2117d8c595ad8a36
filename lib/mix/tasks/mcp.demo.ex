defmodule Mix.Tasks.Mcp.Demo do
  @shortdoc "From an MCP server URL to a client (CIMD and RFC 7591), then read, update and delete it"
  @moduledoc """
  The main job in one command, printing each step (secrets shortened):

    1. starts the embedded server (`ExMCP.Authorization.RegistrationServer`)
       on 127.0.0.1 as an MCP protected resource at `/mcp` (RFC 9728), with
       Client ID Metadata Documents accepted from loopback (development);
    2. asks the MCP URL without a token and gets the `401` and its
       `WWW-Authenticate` challenge;
    3. `ClientRegistration.discover/2` from the MCP URL and that challenge:
       the protected resource metadata, then the authorization server's;
    4. `ClientRegistration.obtain_client/3` through a Client ID Metadata
       Document: the document, built by `client_metadata_document/3`, is
       served by a tiny listener on 127.0.0.1 (plain http, allowed on loopback
       for development with `allow_loopback_http: true` on the client side
       and `client_id_metadata_documents: [allow_loopback: true]` on the
       server side); the server's `/authorize` then fetches it, checks it and
       redirects with a code;
    5. `obtain_client/3` through dynamic registration (RFC 7591), as a client
       that has no document URL, with a client store
       (`ExMCP.Authorization.ClientStore.DETS` in a temporary file), then
       again after reopening the store: the same client, no new registration;
    6. reads, updates and deletes that registration (RFC 7592) through the
       store, which keeps the rotated registration access token.

        mix mcp.demo
  """
  use Mix.Task

  alias ExMCP.Authorization.{ClientRegistration, ClientStore, Native, RegistrationServer}

  @redirect_uri "http://localhost:8080/callback"
  @scopes ["mcp:read", "mcp:write"]
  # RFC 7636 Appendix B's S256 challenge (of the verifier
  # dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk): this server has no token
  # endpoint, so the verifier is never sent.
  @code_challenge "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

  @impl Mix.Task
  def run(_argv) do
    Mix.Task.run("app.start")

    {:ok, server} =
      RegistrationServer.start_link(
        port: 0,
        rotate_registration_access_token: true,
        protected_resource: [
          resource: "/mcp",
          scopes_supported: @scopes,
          resource_name: "ExMCP demo MCP server"
        ],
        client_id_metadata_documents: [allow_loopback: true]
      )

    mcp_url = RegistrationServer.resource_url(server)

    step(
      "Started the embedded server as an MCP protected resource",
      "MCP server URL: #{mcp_url}\nissuer:         #{RegistrationServer.url(server)}"
    )

    {status, headers, _body} = http_get(mcp_url)
    challenge = headers["www-authenticate"]
    step("0. The MCP server without a token", "HTTP #{status}\nWWW-Authenticate: #{challenge}")

    {discovery, us} = timed(fn -> ClientRegistration.discover(mcp_url, www_authenticate: challenge) end)
    step("1. discover (RFC 9728 resource metadata, then RFC 8414)", show_discovery(discovery), us)

    metadata = %{
      client_name: "ExMCP demo — Café 日本",
      redirect_uris: [@redirect_uri],
      contacts: ["ops@example.com"]
    }

    {document_host, document_url} = serve_document!(metadata)

    {cimd_client, us} =
      timed(fn -> ClientRegistration.obtain_client(discovery, metadata, client_metadata_url: document_url) end)

    step("2. obtain_client through a Client ID Metadata Document", show_obtained(cimd_client), us)
    {status, headers, _} = authorize(discovery, cimd_client.client_id)
    location = headers["location"] || "(none)"

    IO.puts(
      "   the server fetched #{document_url} at /authorize and answered HTTP #{status}\n" <>
        "   → #{redact_code(location)}\n"
    )

    # The client store: a DETS file in a fresh directory, removed at the end.
    store_dir = Path.join(System.tmp_dir!(), "ex_mcp_demo_#{System.unique_integer([:positive])}")
    store_path = Path.join(store_dir, "clients.dets")
    store = {ClientStore.DETS, ExMCP.Demo.Clients}
    {:ok, store_pid} = ClientStore.DETS.start_link(name: ExMCP.Demo.Clients, path: store_path)

    {client, us} = timed(fn -> ClientRegistration.obtain_client(discovery, metadata, store: store) end)

    step(
      "3. obtain_client through dynamic registration (RFC 7591 §3), kept in a client store",
      show_obtained(client) <> "\nstored in #{store_path} under {#{inspect(client.issuer)}, \"default\"}",
      us
    )

    GenServer.stop(store_pid)
    {:ok, store_pid} = ClientStore.DETS.start_link(name: ExMCP.Demo.Clients, path: store_path)
    {again, us} = timed(fn -> ClientRegistration.obtain_client(discovery, metadata, store: store) end)

    step(
      "4. obtain_client again, after reopening the store (as after a restart)",
      "client_id: #{again.client_id} (the same: #{again.client_id == client.client_id})\n" <>
        "registrations on the server: #{RegistrationServer.count(server)}",
      us
    )

    {read, us} = timed(fn -> ClientStore.get_client_information(store, client.issuer, "default") end)
    step("5. ClientStore.get_client_information (RFC 7592 §2.1, stored credentials)", read, us)

    {updated, us} =
      timed(fn ->
        ClientStore.update_client_information(store, client.issuer, "default", %{
          client_name: "ExMCP demo (renamed)",
          scope: "mcp:read"
        })
      end)

    step("6. ClientStore.update_client_information (RFC 7592 §2.2: read, merge, PUT)", updated, us)
    {:ok, stored} = ClientStore.get(store, client.issuer, "default")

    IO.puts(
      "   the server rotated the registration access token: " <>
        "#{updated.registration_access_token != client.registration_access_token}; " <>
        "the store holds the new one: #{stored.registration_access_token == updated.registration_access_token}; " <>
        "contacts kept: #{inspect(updated.contacts)}\n"
    )

    {deleted, us} = timed(fn -> ClientStore.delete_client(store, client.issuer, "default") end)

    step(
      "7. ClientStore.delete_client (RFC 7592 §2.3)",
      "#{inspect(deleted)}; left in the store: #{inspect(ClientStore.get(store, client.issuer, "default"))}",
      us
    )

    {:error, reason} =
      ClientRegistration.get_client_information(
        updated.registration_client_uri,
        updated.registration_access_token
      )

    step("8. reading the deleted client fails", ClientRegistration.format_error(reason))
    GenServer.stop(store_pid)
    _ = File.rm_rf!(store_dir)
    IO.puts("Clients left on the server: #{RegistrationServer.count(server)}")
    stop_document_host(document_host)
    RegistrationServer.stop(server)
  end

  # -- The client's metadata document, served on loopback ------------------------

  # A listener on 127.0.0.1 that answers every request with the document,
  # built by client_metadata_document/3 once the port (and so the URL) is known.
  defp serve_document!(metadata) do
    {:ok, listener} = :gen_tcp.listen(0, [:binary, active: false, packet: :http_bin, ip: {127, 0, 0, 1}])
    {:ok, port} = :inet.port(listener)
    url = "http://127.0.0.1:#{port}/client.json"

    document =
      case ClientRegistration.client_metadata_document(url, metadata, allow_loopback_http: true) do
        {:ok, document} -> document
        {:error, reason} -> Mix.raise(ClientRegistration.format_error(reason))
      end

    {:ok, json} = Native.json_encode(document, true)

    step(
      "Serving the client's metadata document (draft-ietf-oauth-client-id-metadata-document §4.1)",
      url <> "\n" <> json
    )

    pid = spawn_link(fn -> accept_loop(listener, json) end)
    :ok = :gen_tcp.controlling_process(listener, pid)
    {pid, url}
  end

  defp accept_loop(listener, json) do
    case :gen_tcp.accept(listener) do
      {:ok, socket} ->
        answer(socket, json)
        accept_loop(listener, json)

      {:error, _} ->
        :ok
    end
  end

  defp answer(socket, json) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, :http_eoh} ->
        # The closing below ends the exchange whether or not the send worked.
        _ =
          :gen_tcp.send(socket, [
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=300\r\n",
            "content-length: #{byte_size(json)}\r\nconnection: close\r\n\r\n",
            json
          ])

        :gen_tcp.close(socket)

      {:ok, _request_line_or_header} ->
        answer(socket, json)

      {:error, _} ->
        :gen_tcp.close(socket)
    end
  end

  defp stop_document_host(pid) do
    Process.unlink(pid)
    Process.exit(pid, :shutdown)
  end

  # -- HTTP the way a browser would do it ----------------------------------------

  # The authorization request an MCP client sends the user to (OAuth 2.1
  # §4.1.1, PKCE S256, RFC 8707 resource), without following the redirect.
  defp authorize(discovery, client_id) do
    query =
      URI.encode_query(%{
        "response_type" => "code",
        "client_id" => client_id,
        "redirect_uri" => @redirect_uri,
        "code_challenge" => @code_challenge,
        "code_challenge_method" => "S256",
        "state" => "demo-state",
        "scope" => discovery.scope,
        "resource" => discovery.resource
      })

    http_get(discovery.authorization_server.authorization_endpoint <> "?" <> query)
  end

  # A plain GET on loopback, status and headers only (no :inets needed).
  defp http_get(url) do
    uri = URI.parse(url)
    target = uri.path <> if(uri.query, do: "?" <> uri.query, else: "")
    opts = [:binary, active: false, packet: :http_bin]

    with {:ok, socket} <- :gen_tcp.connect(String.to_charlist(uri.host), uri.port, opts, 5_000),
         :ok <-
           :gen_tcp.send(
             socket,
             "GET #{target} HTTP/1.1\r\nhost: #{uri.host}:#{uri.port}\r\nconnection: close\r\n\r\n"
           ),
         {:ok, {:http_response, _, status, _}} <- :gen_tcp.recv(socket, 0, 5_000) do
      headers = read_headers(socket, %{})
      :gen_tcp.close(socket)
      {status, headers, nil}
    else
      other -> Mix.raise("GET #{url} failed: #{inspect(other)}")
    end
  end

  defp read_headers(socket, acc) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, {:http_header, _, name, _, value}} ->
        read_headers(socket, Map.put(acc, name |> to_string() |> String.downcase(), value))

      _eoh_or_error ->
        acc
    end
  end

  # -- Printing ----------------------------------------------------------------------

  defp timed(fun) do
    {us, result} = :timer.tc(fun)

    case result do
      {:ok, value} -> {value, us}
      :ok -> {:ok, us}
      {:error, reason} -> Mix.raise(ClientRegistration.format_error(reason))
    end
  end

  defp step(title, value, us \\ nil) do
    took = if us, do: " (#{Float.round(us / 1000, 2)} ms)", else: ""
    IO.puts("#{title}#{took}")
    IO.puts("   " <> (value |> show() |> String.replace("\n", "\n   ")) <> "\n")
  end

  defp show_discovery(discovery) do
    server = discovery.authorization_server

    discovery
    |> Map.take([:resource, :resource_metadata_url, :issuer, :authorization_server_metadata_url, :scope])
    |> Map.merge(%{
      authorization_endpoint: server.authorization_endpoint,
      registration_endpoint: server.registration_endpoint,
      client_id_metadata_document_supported: server.client_id_metadata_document_supported
    })
    |> inspect(pretty: true, width: 100)
  end

  defp show_obtained(client) do
    client
    |> Map.take([:client_id, :issuer, :registration_method, :token_endpoint_auth_method, :scope])
    |> Map.merge(Map.new([:client_secret, :registration_access_token], &{&1, redact(client[&1])}))
    |> inspect(pretty: true, width: 100)
  end

  defp show(%{client_id: _} = client) do
    client
    |> Map.take([:client_id, :client_name, :application_type, :scope, :contacts, :redirect_uris, :grant_types])
    |> Map.merge(Map.new([:client_secret, :registration_access_token], &{&1, redact(client[&1])}))
    |> Map.put(:registration_client_uri, client.registration_client_uri)
    |> inspect(pretty: true, width: 100)
  end

  defp show(other) when is_binary(other), do: other
  defp show(other), do: inspect(other)

  defp redact(nil), do: nil
  defp redact(secret), do: String.slice(secret, 0, 6) <> "… (#{byte_size(secret)} chars)"

  # The authorization code is a credential too.
  defp redact_code(location), do: Regex.replace(~r/code=([^&]{6})[^&]*/, location, "code=\\1…")
end
