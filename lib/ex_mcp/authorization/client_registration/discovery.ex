defmodule ExMCP.Authorization.ClientRegistration.Discovery do
  @moduledoc false
  # The flow behind ClientRegistration.discover/2 and obtain_client/3 (MCP
  # authorization 2025-11-25: "Authorization Server Discovery" and "Client
  # Registration Approaches"). Options arrive checked by ClientRegistration;
  # the HTTP, the discovery order and the address guard are in Rust
  # (native/mcp_registration/src/discovery.rs, net_guard.rs). What is here is
  # the registration priority: pre-registered, Client ID Metadata Document,
  # dynamic registration (RFC 7591), else an error naming what was checked.

  alias ExMCP.Authorization.{ClientRegistration, ClientStore, Native}

  # RFC 8414 §2 / RFC 7591 §2: the methods a public or confidential client
  # picks from, in this order; client_secret_basic when the server lists
  # none of them (or nothing).
  @auth_method_preference ["none", "client_secret_basic", "client_secret_post"]
  @default_auth_method "client_secret_basic"

  @doc false
  @spec discover(String.t(), keyword()) ::
          {:ok, ClientRegistration.discovery()} | {:error, ClientRegistration.reason()}
  def discover(server_url, opts) do
    discover_options = %{
      www_authenticate: List.wrap(opts[:www_authenticate]),
      resource_metadata_url: opts[:resource_metadata_url],
      issuer: opts[:issuer],
      allow_private_networks: Keyword.get(opts, :allow_private_networks, false)
    }

    Native.call(
      &Native.discover(server_url, discover_options, native(opts), &1),
      opts[:timeout]
    )
  end

  @doc false
  @spec obtain_client(ClientRegistration.discovery() | String.t(), map(), keyword()) ::
          {:ok, ClientRegistration.obtained_client()} | {:error, ClientRegistration.reason()}
  def obtain_client(target, client_metadata, opts) do
    deadline = System.monotonic_time(:millisecond) + opts[:timeout]

    cond do
      opts[:client_id] ->
        {:ok, pre_registered(target, client_metadata, opts)}

      is_binary(target) ->
        with {:ok, discovery} <- discover(target, opts) do
          obtain_from(discovery, client_metadata, opts, deadline)
        end

      true ->
        obtain_from(target, client_metadata, opts, deadline)
    end
  end

  defp obtain_from(discovery, client_metadata, opts, deadline) do
    server = discovery.authorization_server
    cimd_url = opts[:client_metadata_url]

    cond do
      cimd_url && server[:client_id_metadata_document_supported] == true ->
        metadata_document_client(discovery, cimd_url, client_metadata)

      opts[:store] ->
        stored_or_registered(discovery, client_metadata, opts, deadline)

      is_binary(server[:registration_endpoint]) ->
        register(discovery, client_metadata, opts, deadline)

      true ->
        {:error, {:no_registration_path, checked(discovery, opts)}}
    end
  end

  defp pre_registered(target, client_metadata, opts) do
    secret = opts[:client_secret]
    method = opts[:token_endpoint_auth_method] || if(secret, do: @default_auth_method, else: "none")

    client_metadata
    |> base_client(target)
    |> Map.merge(%{
      client_id: opts[:client_id],
      client_secret: secret,
      issuer: opts[:issuer] || discovered(target, :issuer),
      registration_method: :pre_registered,
      token_endpoint_auth_method: method
    })
  end

  # The draft's client_id is the document's URL and there is no secret. The
  # URL and the metadata are checked by the draft's rules, the ones
  # client_metadata_document/3 applies to the document the caller serves;
  # loopback http is accepted only when discovery started on loopback, as
  # for every other URL (net_guard.rs).
  defp metadata_document_client(discovery, url, client_metadata) do
    allow_loopback_http = Native.loopback_url(discovery.server_url)

    with {:ok, document} <-
           ClientRegistration.client_metadata_document(url, client_metadata,
             allow_loopback_http: allow_loopback_http
           ) do
      {:ok,
       document
       |> base_client(discovery)
       |> Map.merge(%{
         client_id: url,
         client_secret: nil,
         issuer: discovery.issuer,
         registration_method: :client_id_metadata_document,
         token_endpoint_auth_method: "none"
       })}
    end
  end

  defp register(discovery, client_metadata, opts, deadline) do
    server = discovery.authorization_server

    request =
      client_metadata
      |> put_new(:scope, discovery.scope)
      |> put_new(:token_endpoint_auth_method, auth_method(server[:token_endpoint_auth_methods_supported]))
      |> Map.put(:registration_endpoint, server.registration_endpoint)

    sent_method = fetch(request, :token_endpoint_auth_method)

    native =
      opts
      |> native()
      |> Map.merge(%{
        guard_start_url: discovery.server_url,
        allow_private_networks: Keyword.get(opts, :allow_private_networks, discovery.allow_private_networks)
      })
      |> maybe_put(:initial_access_token, opts[:initial_access_token])

    remaining = remaining(deadline)
    native = %{native | timeout: remaining}

    case Native.call(&Native.register(request, native, &1), remaining) do
      {:ok, client} ->
        {:ok,
         Map.merge(client, %{
           issuer: discovery.issuer,
           registration_method: :dynamic,
           token_endpoint_auth_method: Map.get(client, :token_endpoint_auth_method) || sent_method
         })}

      error ->
        error
    end
  end

  # The store is read before the registration endpoint is even looked at: a
  # client stored for this issuer is still valid if the server stopped
  # advertising registration.
  defp stored_or_registered(discovery, client_metadata, opts, deadline) do
    issuer = discovery.issuer
    skew = Keyword.get(opts, :expiry_skew, ClientStore.default_expiry_skew())
    wanted_redirect_uris = fetch(client_metadata, :redirect_uris)

    valid? = &ClientStore.reusable?(&1, issuer, wanted_redirect_uris, skew)

    register = fn ->
      if is_binary(discovery.authorization_server[:registration_endpoint]),
        do: register(discovery, client_metadata, opts, deadline),
        else: {:error, {:no_registration_path, checked(discovery, opts)}}
    end

    key = {issuer, Keyword.get(opts, :client_key, "default")}
    ClientStore.get_or_register(opts[:store], key, valid?, register, remaining(deadline))
  end

  defp remaining(deadline), do: max(deadline - System.monotonic_time(:millisecond), 1)

  defp auth_method(supported) when is_list(supported),
    do: Enum.find(@auth_method_preference, @default_auth_method, &(&1 in supported))

  defp auth_method(_), do: @default_auth_method

  defp checked(discovery, opts) do
    cimd =
      if opts[:client_metadata_url],
        do:
          "Client ID Metadata Document: the authorization server does not advertise client_id_metadata_document_supported",
        else: "Client ID Metadata Document: no :client_metadata_url option"

    [
      "pre-registered client: no :client_id option",
      cimd,
      "dynamic registration: the authorization server metadata of #{discovery.issuer} has no registration_endpoint"
    ]
  end

  # The ten documented client_information() keys, from the caller's metadata.
  defp base_client(client_metadata, target) do
    %{
      client_secret_expires_at: nil,
      registration_access_token: nil,
      registration_client_uri: nil,
      client_name: fetch(client_metadata, :client_name),
      redirect_uris: fetch(client_metadata, :redirect_uris) || [],
      grant_types: fetch(client_metadata, :grant_types) || ["authorization_code"],
      response_types: fetch(client_metadata, :response_types) || ["code"],
      scope: fetch(client_metadata, :scope) || discovered(target, :scope) || ""
    }
  end

  defp discovered(%{} = discovery, key), do: Map.get(discovery, key)
  defp discovered(_url, _key), do: nil

  # Client metadata may use atom or string keys, like register_client/2.
  defp fetch(map, key), do: Map.get(map, key) || Map.get(map, Atom.to_string(key))

  defp put_new(map, key, value) do
    if is_nil(fetch(map, key)) and not is_nil(value),
      do: map |> Map.delete(Atom.to_string(key)) |> Map.put(key, value),
      else: map
  end

  defp maybe_put(map, _key, nil), do: map
  defp maybe_put(map, key, value), do: Map.put(map, key, value)

  # The transport options, as register_client/2 passes them to the NIF.
  defp native(opts), do: opts |> Keyword.take(ClientRegistration.transport_options()) |> Map.new()
end
