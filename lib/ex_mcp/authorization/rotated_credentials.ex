defmodule ExMCP.Authorization.RotatedCredentials do
  @moduledoc """
  The credentials a server rotated before an update failed (RFC 7592 §2.1).

  Any RFC 7592 answer, the read that starts an update included, may carry a
  new `registration_access_token` (and `client_secret`), and the old one then
  stops working. When
  `ExMCP.Authorization.ClientRegistration.update_client_information/4` fails
  after such a read, it returns

      {:error, {:credentials_rotated, %ExMCP.Authorization.RotatedCredentials{client: client}, reason}}

  where `client` is the read's answer, a
  `t:ExMCP.Authorization.ClientRegistration.client_information/0` holding the
  new credentials, and `reason` is why the update failed. Store `client`
  exactly as after a successful call, then deal with `reason`:

      case ClientRegistration.update_client_information(uri, token, updates) do
        {:ok, client} ->
          store(client)

        {:error, {:credentials_rotated, %RotatedCredentials{client: client}, reason}} ->
          store(client)
          Logger.error(ClientRegistration.format_error(reason))

        {:error, reason} ->
          Logger.error(ClientRegistration.format_error(reason))
      end

  The struct exists so that the credentials stay out of logs: `inspect/2`
  shows the `client_id` only, never a token or a secret.
  """

  @enforce_keys [:client]
  defstruct [:client]

  @typedoc "The read's answer, new credentials included."
  @type t() :: %__MODULE__{client: ExMCP.Authorization.ClientRegistration.client_information()}

  defimpl Inspect do
    def inspect(%{client: client}, opts) do
      client_id = if is_map(client), do: Map.get(client, :client_id)

      Inspect.Algebra.concat([
        "#ExMCP.Authorization.RotatedCredentials<client_id: ",
        Inspect.inspect(client_id, opts),
        ", credentials redacted>"
      ])
    end
  end
end
