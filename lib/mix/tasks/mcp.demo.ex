defmodule Mix.Tasks.Mcp.Demo do
  @shortdoc "Registers, reads, updates and deletes a client against the embedded server"
  @moduledoc """
  The main job in one command: starts the embedded registration server on
  127.0.0.1 and runs the whole RFC 7591/7592 cycle against it with
  `ExMCP.Authorization.ClientRegistration`, printing each step. Secrets are
  shown shortened.

      mix mcp.demo
  """
  use Mix.Task

  alias ExMCP.Authorization.{ClientRegistration, RegistrationServer}

  @impl Mix.Task
  def run(_argv) do
    Mix.Task.run("app.start")

    {:ok, server} = RegistrationServer.start_link(port: 0, rotate_registration_access_token: true)
    step("Started the embedded registration server", RegistrationServer.url(server))

    {client, us} =
      timed(fn ->
        ClientRegistration.register_client(%{
          registration_endpoint: RegistrationServer.registration_endpoint(server),
          client_name: "ExMCP demo — Café 日本",
          redirect_uris: ["http://localhost:8080/callback"],
          scope: "mcp:read mcp:write",
          contacts: ["ops@example.com"]
        })
      end)

    step("1. register_client (RFC 7591 §3)", client, us)

    {read, us} =
      timed(fn ->
        ClientRegistration.get_client_information(
          client.registration_client_uri,
          client.registration_access_token
        )
      end)

    step("2. get_client_information (RFC 7592 §2.1)", read, us)

    {updated, us} =
      timed(fn ->
        ClientRegistration.update_client_information(
          client.registration_client_uri,
          client.registration_access_token,
          %{client_name: "ExMCP demo (renamed)", scope: "mcp:read"}
        )
      end)

    step("3. update_client_information (RFC 7592 §2.2: read, merge, PUT)", updated, us)

    rotated? = updated.registration_access_token != client.registration_access_token

    IO.puts(
      "   the server rotated the registration access token: #{rotated?}; contacts kept: #{inspect(updated.contacts)}\n"
    )

    {deleted, us} =
      timed(fn ->
        ClientRegistration.delete_client(updated.registration_client_uri, updated.registration_access_token)
      end)

    step("4. delete_client (RFC 7592 §2.3)", deleted, us)

    {:error, reason} =
      ClientRegistration.get_client_information(
        updated.registration_client_uri,
        updated.registration_access_token
      )

    step("5. reading the deleted client fails", ClientRegistration.format_error(reason))
    IO.puts("Clients left on the server: #{RegistrationServer.count(server)}")
    RegistrationServer.stop(server)
  end

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
end
