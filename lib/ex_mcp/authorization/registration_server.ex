defmodule ExMCP.Authorization.RegistrationServer do
  @moduledoc """
  An embedded OAuth authorization server that does dynamic client
  registration: RFC 7591 registration, RFC 7592 management of a
  registration, and the RFC 8414 metadata document that points at them. It
  can also stand in for an MCP server's authorization side: RFC 9728
  protected resource metadata for a configured resource, and Client ID
  Metadata Documents (draft-ietf-oauth-client-id-metadata-document-00) at a
  development authorization endpoint.

  The HTTP server runs in Rust (hyper on the library's tokio runtime); this
  GenServer owns it. The listener closes when the process stops, exits for
  any reason, or is killed. Registered clients are kept in memory and are
  lost when the server stops, so it suits tests, development and local MCP
  setups — it is not a production authorization server.

  ## Example

      alias ExMCP.Authorization.{ClientRegistration, RegistrationServer}

      {:ok, server} = RegistrationServer.start_link(port: 0)

      RegistrationServer.url(server)
      #=> "http://127.0.0.1:54021"

      {:ok, client} =
        ClientRegistration.register_client(%{
          registration_endpoint: RegistrationServer.registration_endpoint(server),
          client_name: "My MCP Client",
          redirect_uris: ["http://127.0.0.1:8080/callback"]
        })

      RegistrationServer.count(server)
      #=> 1

      {:ok, stored} = RegistrationServer.lookup(server, client.client_id)
      stored.client_name
      #=> "My MCP Client"

      :ok = RegistrationServer.stop(server)

  Under a supervisor:

      children = [
        {ExMCP.Authorization.RegistrationServer,
         port: 4001, initial_access_token: "let-me-in", name: MyApp.RegistrationServer}
      ]

  ## Endpoints

  | Endpoint | Answer |
  |---|---|
  | `GET /.well-known/oauth-authorization-server` | RFC 8414 metadata: `issuer` (the base URL), `authorization_endpoint`, `registration_endpoint`, `token_endpoint_auth_methods_supported`, `grant_types_supported`, `response_types_supported`, `code_challenge_methods_supported`, `authorization_response_iss_parameter_supported`; `scopes_supported` with a protected resource that has scopes; `client_id_metadata_document_supported: true` when `:client_id_metadata_documents` is on. `token_endpoint` (`/token`) is a placeholder: this server does not serve it. |
  | `POST /register` | RFC 7591: `201` with the full client information. |
  | `GET /register/<client_id>` | RFC 7592 §2.1: `200` with the client information. |
  | `PUT /register/<client_id>` | RFC 7592 §2.2: replaces the registration in full; `200`. |
  | `DELETE /register/<client_id>` | RFC 7592 §2.3: `204`; the client and its token are gone. |
  | `GET /authorize` | A development authorization endpoint; see below. |
  | `GET /.well-known/oauth-protected-resource/<path>` and `GET /.well-known/oauth-protected-resource` | With `:protected_resource`: RFC 9728 metadata, `%{"resource" => ..., "authorization_servers" => [url], "scopes_supported" => ..., "bearer_methods_supported" => ["header"], "resource_name" => ...}`. |
  | any request to the resource's path (and below it) | With `:protected_resource` on this server: `401` with `WWW-Authenticate: Bearer resource_metadata="<metadata URL>", scope="<scopes>"` (RFC 9728 §5.1), as an MCP server answers a request without a token. |

  ## An MCP protected resource

  With `protected_resource: [resource: "/mcp", scopes_supported: ["mcp:read"]]`
  the server describes the resource `url(server) <> "/mcp"` (see
  `resource_url/1`), so a client can start from the MCP URL:
  `ExMCP.Authorization.ClientRegistration.discover/2` finds the resource
  metadata at the path-aware well-known URL, the issuer in its
  `authorization_servers` (this server's `url/1`, which is also the
  metadata's `issuer`, as RFC 8414 §3.3 requires), and the registration
  endpoint in the RFC 8414 metadata. `:resource` may also be an absolute
  URL (a resource served elsewhere); then no `401` is answered here. It must
  not be `/register`, `/authorize` or under `/.well-known`.

  ## The authorization endpoint and Client ID Metadata Documents

  `GET /authorize` is for development and tests: there is no user and no
  consent. It checks `client_id` and `redirect_uri` and, when both are good,
  redirects to the redirect URI with a random `code` (a placeholder: there is
  no token endpoint to redeem it), the `state` and `iss` (RFC 9207). The
  client is a registered one, or — with `:client_id_metadata_documents` — an
  https URL `client_id` whose document the server fetches and checks by the
  draft's rules, shared with
  `ExMCP.Authorization.ClientRegistration.client_metadata_document/3`:

    * the document's `client_id` equals the URL (simple string comparison,
      §4.1); it has no `client_secret` or `client_secret_expires_at`, and no
      shared-secret `token_endpoint_auth_method` (`client_secret_*`); its
      metadata passes the registration rules;
    * `redirect_uri` is one of its `redirect_uris`, exactly (§4.5); when the
      parameter is absent the client must have exactly one;
    * the fetch (§6.5, §6.6): the URL must be https with a path; the host is
      resolved once, and loopback, private, link-local (cloud metadata),
      unique-local, CGNAT, multicast and unspecified addresses are refused —
      loopback (and plain http to it) is allowed only with
      `allow_loopback: true`, for development; the connection goes to the
      checked address; redirects are not followed; the body is capped
      (`:max_document_bytes`, 5,120 bytes); the fetch has a deadline
      (`:fetch_timeout`, 5 s);
    * valid documents are cached for their `Cache-Control: max-age` (at most
      an hour; `no-store`/`no-cache` or no `max-age`: not cached); errors and
      invalid documents never are (§4.4).

  A refused client or redirect URI is answered `400` with
  `%{"error" => "invalid_client" | "invalid_request", "error_description" => ...}`
  and no redirect (OAuth 2.1 §4.1.2.1). Once both are good, other errors go
  to the redirect URI (`unsupported_response_type`; `invalid_request` for a
  missing `code_challenge` — PKCE is required — or a method other than
  `S256`). Documents are not clients: `lookup/2`, `list/1` and `count/1` do
  not show them.

  ## What the server does

    * Client metadata is checked by the same Rust rules that
      `ExMCP.Authorization.ClientRegistration` applies before sending: field
      types, redirect URI rules (https, loopback http or a private-use
      scheme; no fragment; no `javascript:`, `data:`, `vbscript:`, `file:`),
      `jwks` and `jwks_uri` not both (RFC 7591 §2). `redirect_uris` is
      required when a grant type needs it (`authorization_code`, `implicit`).
    * It is a strict RFC server, not a mirror of the client: it completes
      metadata with the RFC's defaults, not the client's policy
      (`grant_types: ["authorization_code"]`, `response_types: ["code"]`,
      `token_endpoint_auth_method: "client_secret_basic"` with a secret,
      RFC 7591 §2), stores `application_type` only when sent, and ignores
      metadata it does not know: it is neither stored nor echoed (RFC 7591
      §2, §3.1). A private-use redirect scheme must be a reverse domain name
      with a period, `com.example.app:/cb` (RFC 8252 §7.1); `localhost`
      loopback redirects are accepted although RFC 8252 §8.3 does not
      recommend them, since MCP clients use them.
    * A `PUT` replaces the registration (RFC 7592 §2.2): what it omits is
      reset to the default. An omitted `token_endpoint_auth_method` is
      `client_secret_basic` again, so a confidential client keeps its secret
      and a public one receives a secret in the answer; only an explicit
      `"none"` makes a client public (and drops its secret).
    * Supported: `token_endpoint_auth_method` `none`, `client_secret_basic`,
      `client_secret_post`; `grant_types` `authorization_code`,
      `refresh_token`, `client_credentials`; `response_types` `code`.
    * The answer carries a generated `client_id`, `client_id_issued_at`, a
      `registration_access_token`, the `registration_client_uri`
      (`<url>/register/<client_id>`), every metadata field, and — unless the
      method is `"none"` — a `client_secret` with `client_secret_expires_at`
      (`0` means never). Secrets and tokens have 256 bits from the operating
      system's CSPRNG. Expired secrets are kept and still reported.
    * Answers carrying credentials have `Cache-Control: no-store`.
    * RFC 7592 requests need `Authorization: Bearer <registration_access_token>`;
      a missing or wrong token, or an unknown client, is `401` with
      `WWW-Authenticate: Bearer error="invalid_token"`. Tokens are compared
      in constant time.
    * A `PUT` must carry the client's `client_id`; it must not carry
      `registration_access_token`, `registration_client_uri`,
      `client_secret_expires_at` or `client_id_issued_at`; a `client_secret`
      in it must be the current one. Otherwise it is `400`.
    * Invalid metadata is `400` with `%{"error" => "invalid_redirect_uri" |
      "invalid_client_metadata", "error_description" => ...}` (RFC 7591
      §3.2.2), and so are malformed JSON, a body that is not a JSON object,
      and a `Content-Type` other than `application/json`. A body over
      `:max_body_bytes` is `413`; an unsupported method on a known path is
      `405` with an `Allow` header; an unknown path is `404`.

  ## Options

  | Option | Default | Meaning |
  |---|---|---|
  | `:port` | `0` | TCP port; `0` picks a free one (see `url/1`). |
  | `:ip` | `{127, 0, 0, 1}` | Address to listen on, an `:inet.ip_address()` tuple. |
  | `:initial_access_token` | `nil` | When set, `POST /register` needs `Authorization: Bearer <token>` (RFC 7591 §3). Visible ASCII without spaces. |
  | `:rotate_registration_access_token` | `false` | Issue a new registration access token on every update; the old one stops working. |
  | `:client_secret_expires_in` | `0` | Lifetime of issued client secrets in seconds; `0` means they never expire. |
  | `:max_body_bytes` | `65_536` | Largest request body accepted. |
  | `:protected_resource` | `nil` | RFC 9728: `[resource: "/mcp", scopes_supported: [scope], resource_name: name]`; `:resource`, required, is a path on this server or an absolute URL. |
  | `:client_id_metadata_documents` | `false` | `true`, or `[allow_loopback: false, fetch_timeout: 5_000, max_document_bytes: 5_120, cacertfile: nil]`: accept Client ID Metadata Documents at `/authorize` and advertise `client_id_metadata_document_supported`. `allow_loopback: true` (development) fetches documents from loopback addresses, over http too; `cacertfile` adds CA certificates for the fetch. |
  | `:name` | `nil` | Registers the process under this name (`GenServer` naming). |

  An unknown or ill-typed option raises `ArgumentError` naming the option.
  If the address cannot be bound, `start_link/1` returns
  `{:error, :eaddrinuse}` (or `:eaddrnotavail`, `:eacces`,
  `{:bind_failed, message}`), and, as with any `GenServer`, the linked
  caller receives an exit signal with that reason.
  """

  use GenServer

  alias ExMCP.Authorization.{ClientRegistration, Native}

  @typedoc "A running server: its pid or registered name."
  @type server() :: GenServer.server()

  @typedoc "Options of `start_link/1`; see the moduledoc's table."
  @type option() ::
          {:port, :inet.port_number()}
          | {:ip, :inet.ip_address()}
          | {:initial_access_token, String.t() | nil}
          | {:rotate_registration_access_token, boolean()}
          | {:client_secret_expires_in, non_neg_integer()}
          | {:max_body_bytes, pos_integer()}
          | {:protected_resource, [protected_resource_option()] | nil}
          | {:client_id_metadata_documents, boolean() | [client_id_metadata_documents_option()]}
          | {:name, GenServer.name()}

  @typedoc "Keys of the `:protected_resource` option (RFC 9728)."
  @type protected_resource_option() ::
          {:resource, String.t()} | {:scopes_supported, [String.t()]} | {:resource_name, String.t() | nil}

  @typedoc "Keys of the `:client_id_metadata_documents` option."
  @type client_id_metadata_documents_option() ::
          {:allow_loopback, boolean()}
          | {:fetch_timeout, pos_integer()}
          | {:max_document_bytes, pos_integer()}
          | {:cacertfile, Path.t() | nil}

  @option_keys [
    :port,
    :ip,
    :initial_access_token,
    :rotate_registration_access_token,
    :client_secret_expires_in,
    :max_body_bytes,
    :protected_resource,
    :client_id_metadata_documents,
    :name
  ]
  @protected_resource_keys [:resource, :scopes_supported, :resource_name]
  @client_id_metadata_documents_keys [:allow_loopback, :fetch_timeout, :max_document_bytes, :cacertfile]

  @doc """
  Starts the server, linked to the caller, and returns once it is listening.

  ## Example

      {:ok, server} = RegistrationServer.start_link(port: 0, rotate_registration_access_token: true)
  """
  @spec start_link([option()]) :: GenServer.on_start()
  def start_link(opts \\ []) do
    {name, config} = options!(opts)
    GenServer.start_link(__MODULE__, config, if(name, do: [name: name], else: []))
  end

  @doc """
  A child specification, so the server can be supervised:
  `{ExMCP.Authorization.RegistrationServer, opts}`. The child id is the
  `:name` option when given, the module otherwise.

  ## Example

      Supervisor.start_link([{RegistrationServer, port: 4001}], strategy: :one_for_one)
  """
  @spec child_spec([option()]) :: Supervisor.child_spec()
  def child_spec(opts) do
    unless is_list(opts), do: raise(ArgumentError, "options must be a keyword list, got: #{kind(opts)}")

    %{
      id: Keyword.get(opts, :name) || __MODULE__,
      start: {__MODULE__, :start_link, [opts]},
      type: :worker,
      shutdown: 10_000
    }
  end

  @doc """
  The base URL, which is also the issuer: `"http://127.0.0.1:PORT"`. An
  unspecified listen address (`{0, 0, 0, 0}`, `{0, 0, 0, 0, 0, 0, 0, 0}`)
  shows as the loopback address.

  ## Example

      RegistrationServer.url(server)
      #=> "http://127.0.0.1:54021"
  """
  @spec url(server()) :: String.t()
  def url(server), do: info(server).base_url

  @doc """
  The registration endpoint, `url(server) <> "/register"`: what goes in a
  registration request's `:registration_endpoint`.

  ## Example

      RegistrationServer.registration_endpoint(server)
      #=> "http://127.0.0.1:54021/register"
  """
  @spec registration_endpoint(server()) :: String.t()
  def registration_endpoint(server), do: info(server).registration_endpoint

  @doc """
  The protected resource's identifier (RFC 9728 `resource`, RFC 8707): the
  MCP server URL a client starts discovery from. A `:resource` path is
  resolved against `url/1`. `nil` without the `:protected_resource` option.

  ## Example

      {:ok, server} = RegistrationServer.start_link(protected_resource: [resource: "/mcp"])
      RegistrationServer.resource_url(server)
      #=> "http://127.0.0.1:54021/mcp"
  """
  @spec resource_url(server()) :: String.t() | nil
  def resource_url(server), do: info(server).resource

  @doc """
  The TCP port the server listens on.

  ## Example

      RegistrationServer.port(server)
      #=> 54021
  """
  @spec port(server()) :: :inet.port_number()
  def port(server), do: info(server).port

  @doc """
  Stops the server. Returns once the listener and every connection are
  closed.

  ## Example

      :ok = RegistrationServer.stop(server)
  """
  @spec stop(server()) :: :ok
  def stop(server), do: GenServer.stop(server, :normal)

  @doc """
  The stored registration of one client: the same map shape
  `ExMCP.Authorization.ClientRegistration` returns
  (`t:ExMCP.Authorization.ClientRegistration.client_information/0`),
  credentials included. `:error` if there is no such client.

  ## Example

      {:ok, %{client_name: "My MCP Client"}} = RegistrationServer.lookup(server, client_id)
      :error = RegistrationServer.lookup(server, "no-such-client")
  """
  @spec lookup(server(), String.t()) :: {:ok, ClientRegistration.client_information()} | :error
  def lookup(server, client_id) when is_binary(client_id), do: GenServer.call(server, {:lookup, client_id})

  def lookup(_server, client_id),
    do: raise(ArgumentError, "client_id must be a string, got: #{inspect(client_id)}")

  @doc """
  Every registered client, ordered by `client_id_issued_at` (whole seconds),
  then by `client_id`: registrations within one second are not in arrival order.

  ## Example

      [%{client_id: _} | _] = RegistrationServer.list(server)
  """
  @spec list(server()) :: [ClientRegistration.client_information()]
  def list(server), do: GenServer.call(server, :list)

  @doc """
  How many clients are registered.

  ## Example

      0 = RegistrationServer.count(server)
  """
  @spec count(server()) :: non_neg_integer()
  def count(server), do: GenServer.call(server, :count)

  defp info(server), do: GenServer.call(server, :info)

  # -- GenServer -----------------------------------------------------------------

  @impl GenServer
  def init(config) do
    # Trapping exits lets a supervisor's shutdown run terminate/2, which
    # closes the listener before the process is gone.
    Process.flag(:trap_exit, true)

    # The NIF monitors this process: if it dies without terminate/2 (a kill),
    # the server stops all the same.
    case Native.server_start(config) do
      {:ok, resource} -> {:ok, %{resource: resource, info: Native.server_info(resource)}}
      {:error, reason} -> {:stop, reason}
    end
  end

  @impl GenServer
  def handle_call(:info, _from, state), do: {:reply, state.info, state}

  def handle_call({:lookup, client_id}, _from, state),
    do: {:reply, Native.decode(Native.server_lookup(state.resource, client_id)), state}

  def handle_call(:list, _from, state), do: {:reply, Native.server_list(state.resource), state}
  def handle_call(:count, _from, state), do: {:reply, Native.server_count(state.resource), state}

  # Exits of linked processes other than the parent (which GenServer handles
  # itself): behave as if exits were not trapped.
  @impl GenServer
  def handle_info({:EXIT, _pid, :normal}, state), do: {:noreply, state}
  def handle_info({:EXIT, _pid, reason}, state), do: {:stop, reason, state}
  def handle_info(_message, state), do: {:noreply, state}

  @impl GenServer
  def terminate(_reason, %{resource: resource}) do
    # Stopping is best effort: {:error, :timeout} leaves nothing to do here.
    _ = Native.server_stop(resource)
    :ok
  end

  # -- Options -------------------------------------------------------------------

  defp kind(term) when is_map(term), do: "a map"
  defp kind(term) when is_list(term), do: "a list that is not a keyword list"
  defp kind(term) when is_tuple(term), do: "a tuple"
  defp kind(term) when is_binary(term), do: "a string"
  defp kind(_term), do: "another kind of value"

  defp options!(opts) do
    unless is_list(opts) and Enum.all?(opts, &match?({key, _} when is_atom(key), &1)) do
      # Not inspected: the options may hold the initial access token.
      raise ArgumentError, "options must be a keyword list, got: #{kind(opts)}"
    end

    Enum.each(opts, fn {key, value} ->
      unless key in @option_keys do
        raise ArgumentError,
              "unknown option #{inspect(key)}; #{inspect(__MODULE__)} accepts " <>
                Enum.map_join(@option_keys, ", ", &inspect/1)
      end

      check_option!(key, value)
    end)

    # One place per rule: absent options take the Rust core's defaults
    # (ServerConfig::default()), and the NIF's reader checks every value.
    config = opts |> Keyword.delete(:name) |> Map.new(fn {key, value} -> {key, native_value(key, value)} end)

    case Native.server_check_config(config) do
      :ok ->
        {opts[:name], config}

      {:error, {:invalid_option, key, message}} ->
        raise ArgumentError, "invalid option #{inspect(key)}: #{message}"
    end
  end

  # The NIF reads an address as a string.
  defp native_value(:ip, ip) do
    unless :inet.is_ip_address(ip) do
      raise ArgumentError,
            "option :ip must be an IP address tuple such as {127, 0, 0, 1}, got: #{inspect(ip)}"
    end

    ip |> :inet.ntoa() |> List.to_string()
  end

  defp native_value(:protected_resource, nil), do: nil
  defp native_value(:protected_resource, opts), do: Map.new(opts)
  defp native_value(:client_id_metadata_documents, false), do: nil
  defp native_value(:client_id_metadata_documents, true), do: %{}
  defp native_value(:client_id_metadata_documents, opts), do: Map.new(opts)
  defp native_value(_key, value), do: value

  defp check_option!(:protected_resource, nil), do: :ok

  defp check_option!(:protected_resource, opts) do
    check_keyword!(:protected_resource, opts, @protected_resource_keys)

    unless is_binary(opts[:resource]) do
      raise ArgumentError,
            "option :protected_resource needs :resource, an absolute http(s) URL or a path such as \"/mcp\""
    end

    unless is_list(opts[:scopes_supported] || []) and Enum.all?(opts[:scopes_supported] || [], &is_binary/1) do
      raise ArgumentError, "option :protected_resource's :scopes_supported must be a list of strings"
    end

    unless is_nil(opts[:resource_name]) or is_binary(opts[:resource_name]) do
      raise ArgumentError, "option :protected_resource's :resource_name must be a string"
    end
  end

  defp check_option!(:client_id_metadata_documents, flag) when is_boolean(flag), do: :ok

  defp check_option!(:client_id_metadata_documents, opts) do
    check_keyword!(:client_id_metadata_documents, opts, @client_id_metadata_documents_keys)

    Enum.each(opts, fn
      {:allow_loopback, flag} when is_boolean(flag) ->
        :ok

      {key, n} when key in [:fetch_timeout, :max_document_bytes] and is_integer(n) and n > 0 ->
        :ok

      {:cacertfile, path} when is_nil(path) or is_binary(path) ->
        :ok

      {key, value} ->
        raise ArgumentError,
              "option :client_id_metadata_documents has an invalid #{inspect(key)}: #{inspect(value)}"
    end)
  end

  defp check_option!(:name, name) when is_atom(name) and not is_nil(name), do: :ok
  defp check_option!(:name, {:global, _}), do: :ok
  defp check_option!(:name, {:via, module, _}) when is_atom(module), do: :ok

  defp check_option!(:name, other),
    do:
      raise(
        ArgumentError,
        "option :name must be an atom, {:global, term} or {:via, module, term}, got: #{inspect(other)}"
      )

  defp check_option!(_key, _value), do: :ok

  defp check_keyword!(option, opts, keys) do
    unless is_list(opts) and Keyword.keyword?(opts) do
      raise ArgumentError, "option #{inspect(option)} must be a keyword list, got: #{kind(opts)}"
    end

    Enum.each(opts, fn {key, _} ->
      unless key in keys do
        raise ArgumentError,
              "option #{inspect(option)} has an unknown key #{inspect(key)}; it accepts " <>
                Enum.map_join(keys, ", ", &inspect/1)
      end
    end)
  end
end
