defmodule ExMCP.Authorization.ClientRegistration do
  @moduledoc """
  Dynamic Client Registration for OAuth 2.1: an MCP client registers itself
  with an authorization server at runtime (RFC 7591), then reads, updates and
  deletes that registration (RFC 7592).

  A drop-in replacement for ExMCP 0.10's module of the same name: the three
  documented functions keep their arities, argument order and reason shapes.
  The HTTP work runs in Rust on a tokio runtime; no BEAM scheduler ever waits
  on the network.

  ## Example

      {:ok, client} =
        ExMCP.Authorization.ClientRegistration.register_client(%{
          registration_endpoint: "https://auth.example.com/register",
          client_name: "My MCP Client",
          redirect_uris: ["http://localhost:8080/callback"],
          scope: "mcp:read mcp:write"
        })

      client.client_id
      #=> "s6BhdRkqt3"

      # RFC 7592: read, update, delete with the registration access token.
      {:ok, client} =
        ExMCP.Authorization.ClientRegistration.get_client_information(
          client.registration_client_uri,
          client.registration_access_token
        )

      {:ok, client} =
        ExMCP.Authorization.ClientRegistration.update_client_information(
          client.registration_client_uri,
          client.registration_access_token,
          %{client_name: "My MCP Client v2"}
        )

      :ok =
        ExMCP.Authorization.ClientRegistration.delete_client(
          client.registration_client_uri,
          client.registration_access_token
        )

  Store the `registration_access_token` of every answer, reads included: a
  server may rotate it in any RFC 7592 answer (§2.1), and then the old one
  stops working. An update that fails after its read rotated the token
  returns the new credentials in its error: see
  `ExMCP.Authorization.RotatedCredentials`.

  ## The request

  Required: `:registration_endpoint`, `:client_name`, `:redirect_uris`.
  Optional: every client metadata field of RFC 7591 §2 and the MCP
  specification — `:application_type`, `:client_uri`, `:contacts`,
  `:grant_types`, `:jwks`, `:jwks_uri`, `:logo_uri`, `:policy_uri`,
  `:response_types`, `:scope`, `:software_id`, `:software_statement`,
  `:software_version`, `:token_endpoint_auth_method`, `:tos_uri` — and
  `:extra`, a map of extension metadata with string keys, sent as it is.

  Fields holding `nil`, `""` or `[]` are not sent. When absent, `grant_types`
  is `["authorization_code"]`, `response_types` is `["code"]`,
  `token_endpoint_auth_method` is `"none"`, and `application_type` is derived
  from the redirect URIs (SEP-837): `"native"` if any uses a non-http(s)
  scheme or a loopback host, `"web"` otherwise. A value you give always wins.

  Redirect URIs must be absolute, have no fragment, and be https, http on a
  loopback host (`localhost`, `127.0.0.0/8`, `[::1]`), or a private-use scheme
  such as `com.example.app:/cb` (RFC 8252). `javascript:`, `data:`,
  `vbscript:` and `file:` are refused. Endpoints must be https, or http on a
  loopback host.

  ## The answer

  `t:client_information/0`: a map with atom keys. The ten documented keys are
  always present (`nil`, `[]`, the RFC defaults or `""` when the server left
  one out). Every other known field the server returned is there too, such as
  `:client_id_issued_at`, `:token_endpoint_auth_method` and
  `:application_type`. Members this library does not know are under `:extra`,
  with string keys: no atom is ever created from server data. A JSON `null`
  counts as absent.

  Only a usable `client_id` (a non-empty string) is required: the server has
  already created or changed the client, and refusing its answer would throw
  the credentials away. A known member of an unexpected type
  (`client_id_issued_at: 1.5`, `client_secret_expires_at: "0"`,
  `redirect_uris: "x"`) is left out of its atom key (the ten documented keys
  then hold their defaults) and kept, raw, under `:extra` with its string
  name: `extra: %{"client_secret_expires_at" => "0"}`. This holds for
  register, read and update answers alike.

  ## Options

  | Option | Default | Meaning |
  |---|---|---|
  | `:timeout` | `15_000` | Milliseconds for the whole call, every round trip and body read included; at most `4_294_967_295` (the VM's `receive` limit). |
  | `:connect_timeout` | `5_000` | Milliseconds to open a connection (TCP, proxy tunnel and TLS); at most `4_294_967_295`. Applies to the connections this call opens; calls with different values share one connection pool. |
  | `:max_response_bytes` | `1_048_576` | Largest response body read; more is `{:request_failed, {:body_too_large, limit}}`. At most 2^64 − 1. |
  | `:headers` | `[]` | Extra request headers, `[{name, value}]` strings. `accept`, `authorization`, `content-type`, `content-length`, `host`, `connection` and `transfer-encoding` are the library's. |
  | `:cacertfile` | `nil` | PEM file of CA certificates trusted in addition to the built-in roots. A regular file of at most 4 MiB holding only `CERTIFICATE` sections; read off the runtime's async threads, within `:timeout`, and read again when it changes. |
  | `:proxy` | `nil` | `nil`: connect directly, ignoring `HTTP_PROXY` and friends. `"http://host:port"` or `"https://host:port"`, optionally with `user:password@` (sent as `Proxy-Authorization: Basic`, never shown in errors or logs): go through that proxy; https targets use a `CONNECT` tunnel. `:system`: the proxy named by the `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY` environment variables of the OS process, as they were when the VM started (`System.put_env/2` does not change them). |
  | `:initial_access_token` | `nil` | `register_client/2` only: sent as `Authorization: Bearer` (RFC 7591 §3). |
  | `:replace` | `false` | `update_client_information/4` only: send `updates` as the whole record instead of merging over the current one. |
  | `:www_authenticate` | `nil` | `discover/2`, `obtain_client/3`: the `WWW-Authenticate` value (a string) or values (a list) of the MCP server's 401; their `Bearer` challenge's `resource_metadata` and `scope` are used. |
  | `:resource_metadata_url` | `nil` | `discover/2`, `obtain_client/3`: fetch the RFC 9728 metadata here first. |
  | `:issuer` | `nil` | `discover/2`, `obtain_client/3`: skip RFC 9728 and discover this authorization server. |
  | `:allow_private_networks` | `false` | `discover/2`, `obtain_client/3`: let learned URLs reach private and other special addresses (see Discovery). |
  | `:client_id`, `:client_secret`, `:token_endpoint_auth_method` | `nil` | `obtain_client/3`: a pre-registered client. |
  | `:client_metadata_url` | `nil` | `obtain_client/3`: the URL of the client's Client ID Metadata Document. |

  Defaults of `:timeout`, `:connect_timeout`, `:max_response_bytes`,
  `:headers`, `:cacertfile` and `:proxy` can be set in the application
  environment:

      config :ex_mcp_registration, timeout: 30_000, cacertfile: "/etc/ssl/corp-ca.pem"

  An unknown or ill-typed option, or an integer out of its range, raises
  `ArgumentError` naming the option, before anything is sent (a malformed
  `:proxy` is never quoted: it may hold a password). The default values come
  from the Rust core (`Options::default()`), which also checks every value.
  Through a proxy, a refused `CONNECT` or a 407 is `{:request_failed, {:proxy, _}}`;
  for a plain-http endpoint any other answer the proxy writes itself (a
  403, tinyproxy's 401) cannot be told from the server's and is
  `{:http_error, status, body}`.
  The tokio worker count is read once, when the NIF loads:
  `config :ex_mcp_registration, runtime_worker_threads: 2` (default: 2, or 1
  on a one-core machine).

  ## Discovery

  `discover/2` starts from an MCP server's URL, as the MCP authorization
  specification (2025-11-25) prescribes, and `obtain_client/3` gets a client
  identity from what it found:

      {:ok, discovery} = discover("https://mcp.example.com/mcp", www_authenticate: challenge)
      {:ok, client} = obtain_client(discovery, %{client_name: "App", redirect_uris: [cb]})

  The order:

    1. Protected resource metadata (RFC 9728): the challenge's
       `resource_metadata` URL (or `:resource_metadata_url`), then
       `/.well-known/oauth-protected-resource/<path>`, then
       `/.well-known/oauth-protected-resource`. Its `resource` must have the
       server URL's origin, and the server URL's path must be its path or lie
       below it; otherwise `{:resource_mismatch, resource, server_url}` and
       nothing more is fetched. The first of `authorization_servers` is the
       issuer.
    2. Authorization server metadata. For an issuer with a path `/t`:
       `/.well-known/oauth-authorization-server/t`,
       `/.well-known/openid-configuration/t`,
       `/t/.well-known/openid-configuration`. Without a path:
       `/.well-known/oauth-authorization-server`, then
       `/.well-known/openid-configuration`. The document's `issuer` must equal
       the issuer (RFC 8414 §3.3), compared as parsed URLs. `:issuer` skips
       step 1.
    3. A 4xx moves on to the next URL; a 5xx, a redirect (never followed) or
       a transport failure stops with `{:discovery_failed, url, reason}`.
    4. 2025-03-26 compatibility: without resource metadata, the server URL's
       origin is the authorization server's base URL, and its document's own
       `issuer` is reported. Without metadata there either, the endpoints are
       `/authorize`, `/token` and `/register` on that origin and
       `authorization_server_metadata` is `:defaults`.

  `scope` is the challenge's `scope`, else the resource metadata's
  `scopes_supported` joined by spaces, else `nil`. See `t:discovery/0` for
  the result; `resource` is the canonical resource URI to send with RFC 8707
  requests (the metadata's `resource` as written there, else the server URL
  without fragment).

  Security, since discovery follows URLs that other servers chose:

    * The server URL, `:resource_metadata_url` and `:issuer` are the
      caller's: https, or http on a loopback host. URLs on the server URL's
      origin are treated as the caller's.
    * Every other URL (the challenge's `resource_metadata`,
      `authorization_servers`, the registration endpoint `obtain_client/3`
      uses) must be https; plain http is allowed only to a loopback host, and
      only when the server URL is itself loopback.
    * Such a URL whose host is, or resolves to, a loopback, private,
      link-local, unique-local, CGNAT, unspecified, other special-purpose or
      cloud-metadata address is refused with `{:url_refused, url, message}`,
      unless `allow_private_networks: true` (loopback is allowed when the
      server URL is loopback).
    * The host name is resolved once by a resolver inside the HTTP client,
      which keeps only the addresses that pass; the connection goes to one of
      them, so no second DNS answer can redirect it. IP literals are checked
      directly.
    * Through a `:proxy`, which resolves names itself, a learned name is
      resolved and checked before the request, then sent by name; the proxy
      resolves it again, a window only the proxy's egress rules can close.
    * Redirects are never followed, bodies are capped by
      `:max_response_bytes`, and `:timeout` is one deadline over every fetch.

  ## Limits and scheduler time

  No call holds a normal BEAM scheduler for more than about a millisecond,
  whatever it is given, so other processes are never stalled behind it:

    * A request or `updates` map is checked on the calling scheduler while
      it is small (up to 256 values and 32 KiB of text, much more than a
      real registration needs). A larger one is converted and checked on a
      dirty CPU scheduler instead. The registration endpoint, or the
      registration client URI, is judged first, so a wrong one is refused
      before a large map is read.
    * A request or `updates` map holds at most 50,000 values (every map,
      list, string, number and atom counts one), 1 MiB of text (keys and
      strings) and 32 levels of nesting. Beyond that the call returns
      `{:error, {:invalid_field, field, "is too large: a request map holds at
      most 50000 values and 1048576 bytes of text"}}` and sends nothing.
    * A URI, a token and a `:cacertfile` path hold at most 64 KiB, and
      `:headers` at most 100 entries and 64 KiB of names and values
      (`:www_authenticate`: 100 values of 64 KiB). A longer URI or token is
      `{:error, {:invalid_field, field, "is longer than 65536 bytes"}}`; a
      longer option raises `ArgumentError`.
    * `client_metadata_document/3` takes a metadata map within the same
      limits as a request map, converted on a dirty CPU scheduler.
    * Answers are never trimmed: nothing a server sent is dropped. An answer
      that is large once decoded (over 16 KiB as external term format, a few
      hundred members) is decoded on a dirty CPU scheduler. The caller waits
      for it as before; no other process does. `:max_response_bytes` bounds
      its size.

  Dirty schedulers were chosen over a tighter size cap because a cap small
  enough to keep the worst case under a millisecond on the calling scheduler
  (a few hundred values) would refuse unusual but legitimate requests and
  answers, and cutting members out of an answer could lose what a server
  handed out. The cost of the larger work is unchanged; it is only moved to
  the schedulers made for it. Figures: `bench/RESULTS.md`, "Worst cases".

  ## Errors

  Every function returns `{:error, reason}`; `format_error/1` turns any
  reason into one sentence. Reasons:

  | Reason | When |
  |---|---|
  | `{:missing_required_fields, [atom]}` | A required request field is absent or empty. |
  | `:redirect_uris_must_be_list` | `redirect_uris` is not a list. |
  | `{:invalid_redirect_uris, [uri]}` | These redirect URIs break the rules above. |
  | `:https_required` | The endpoint or registration client URI is plain http to a non-loopback host. |
  | `{:invalid_field, field, message}` | A request value has the wrong type or form, is too large (see "Limits and scheduler time"), or `field` is not client metadata. |
  | `{:registration_error, status, map}` | The server refused with a JSON object, usually `%{"error" => _, "error_description" => _}`. |
  | `{:http_error, status, body}` | Any other non-success answer, redirects (never followed) included. `body` is a binary. |
  | `{:invalid_response, message}` | A success answer without a usable `client_id` (a known field of another type does not fail: it goes under `:extra`), or a 2xx status the protocol does not use there (a 201 to a GET). |
  | `{:json_decode_error, message}` | A success answer that is not JSON. |
  | `{:request_failed, reason}` | The transport failed: `:timeout`, `{:connect, message}`, `{:tls, message}`, `{:body_too_large, limit}`, `{:connection, message}` (reset or closed mid-exchange; a GET, PUT or DELETE whose connection closed before any answer is sent once more first, a POST never), `{:cacertfile, message}`, `{:proxy, message}` (the proxy refused a `CONNECT` tunnel, or answered 407) or `{:panic, message}` (a bug, reported rather than crashing). |
  | `{:discovery_failed, url, reason}` | Discovery stopped at `url`: a 5xx or a redirect (`{:http_error, status, body}`) or a transport failure (`{:request_failed, _}`). |
  | `{:invalid_metadata, url, message}` | The document at `url` is not a JSON object, lacks RFC 9728's `resource` or `authorization_servers`, or a known member has the wrong type. |
  | `{:resource_mismatch, resource, server_url}` | The protected resource metadata is for a resource that does not cover the server URL. |
  | `{:issuer_mismatch, expected, found}` | The authorization server metadata names another issuer (RFC 8414 §3.3). |
  | `{:authorization_server_metadata_not_found, issuer, urls}` | Every URL tried for `issuer` answered 4xx. |
  | `{:url_refused, url, message}` | A learned URL is plain http or resolves to a refused address (see Discovery). |
  | `{:invalid_www_authenticate, message}` | `:www_authenticate` is not a valid challenge list (RFC 9110 §11.6.1). |
  | `{:no_registration_path, checked}` | `obtain_client/3` found no way to obtain a client; `checked` says why for each path. |
  | `{:credentials_rotated, %ExMCP.Authorization.RotatedCredentials{client: client}, reason}` | `update_client_information/4` only: its read returned a new `registration_access_token` (RFC 7592 §2.1), then the update failed for `reason` (any reason above, `{:request_failed, :timeout}` included). `client` is the read's answer with the new credentials: store it. |

  No reason, message or log line ever holds a client secret or a token. A
  token or secret the library sent is replaced by `"[REDACTED]"` wherever a
  server quotes it back in a refusal (`error_description`, an HTML page).
  The one reason that must carry live credentials, `:credentials_rotated`,
  holds them in a struct whose `inspect/2` shows only the `client_id`, and
  `format_error/1` never shows them.
  """

  alias ExMCP.Authorization.ClientRegistration.Discovery
  alias ExMCP.Authorization.{ClientStore, Native, RotatedCredentials}

  @app :ex_mcp_registration

  @typedoc "A registration request: the required fields plus any client metadata."
  @type registration_request() :: %{
          required(:registration_endpoint) => String.t(),
          required(:client_name) => String.t(),
          required(:redirect_uris) => [String.t()],
          optional(:grant_types) => [String.t()],
          optional(:response_types) => [String.t()],
          optional(:scope) => String.t() | nil,
          optional(:token_endpoint_auth_method) => String.t(),
          optional(:application_type) => String.t() | nil,
          optional(:client_uri) => String.t() | nil,
          optional(:logo_uri) => String.t() | nil,
          optional(:contacts) => [String.t()] | nil,
          optional(:tos_uri) => String.t() | nil,
          optional(:policy_uri) => String.t() | nil,
          optional(:jwks_uri) => String.t() | nil,
          optional(:jwks) => map() | nil,
          optional(:software_id) => String.t() | nil,
          optional(:software_version) => String.t() | nil,
          optional(:software_statement) => String.t() | nil,
          optional(:extra) => %{optional(String.t()) => term()}
        }

  @typedoc "A registered client, as the server describes it."
  @type client_information() :: %{
          required(:client_id) => String.t(),
          required(:client_secret) => String.t() | nil,
          required(:client_secret_expires_at) => integer() | nil,
          required(:registration_access_token) => String.t() | nil,
          required(:registration_client_uri) => String.t() | nil,
          required(:client_name) => String.t() | nil,
          required(:redirect_uris) => [String.t()],
          required(:grant_types) => [String.t()],
          required(:response_types) => [String.t()],
          required(:scope) => String.t(),
          optional(:client_id_issued_at) => integer(),
          optional(:token_endpoint_auth_method) => String.t(),
          optional(:application_type) => String.t(),
          optional(:client_uri) => String.t(),
          optional(:logo_uri) => String.t(),
          optional(:contacts) => [String.t()],
          optional(:tos_uri) => String.t(),
          optional(:policy_uri) => String.t(),
          optional(:jwks_uri) => String.t(),
          optional(:jwks) => map(),
          optional(:software_id) => String.t(),
          optional(:software_version) => String.t(),
          optional(:software_statement) => String.t(),
          optional(:extra) => %{optional(String.t()) => term()}
        }

  @typedoc "Why the transport failed."
  @type transport_reason() ::
          :timeout
          | {:connect, String.t()}
          | {:tls, String.t()}
          | {:body_too_large, pos_integer()}
          | {:connection, String.t()}
          | {:cacertfile, String.t()}
          | {:proxy, String.t()}
          | {:panic, String.t()}

  @typedoc "Every error reason. See the moduledoc's table."
  @type reason() ::
          {:missing_required_fields, [atom()]}
          | :redirect_uris_must_be_list
          | {:invalid_redirect_uris, [String.t()]}
          | :https_required
          | {:invalid_field, atom() | String.t(), String.t()}
          | {:registration_error, pos_integer(), map()}
          | {:http_error, pos_integer(), binary()}
          | {:invalid_response, String.t()}
          | {:json_decode_error, String.t()}
          | {:request_failed, transport_reason()}
          | {:discovery_failed, String.t(),
             {:http_error, pos_integer(), binary()} | {:request_failed, transport_reason()}}
          | {:invalid_metadata, String.t(), String.t()}
          | {:resource_mismatch, String.t(), String.t()}
          | {:issuer_mismatch, String.t(), String.t()}
          | {:authorization_server_metadata_not_found, String.t(), [String.t()]}
          | {:url_refused, String.t(), String.t()}
          | {:invalid_www_authenticate, String.t()}
          | {:no_registration_path, [String.t()]}
          | {:credentials_rotated, RotatedCredentials.t(), reason()}
          | ClientStore.error()

  @typedoc """
  Authorization server metadata (RFC 8414 §2): every known member under its
  atom (`nil` when absent), everything else under `:extra` with string keys.
  """
  @type authorization_server_metadata() :: %{
          required(:issuer) => String.t() | nil,
          required(:authorization_endpoint) => String.t() | nil,
          required(:token_endpoint) => String.t() | nil,
          required(:registration_endpoint) => String.t() | nil,
          required(:jwks_uri) => String.t() | nil,
          required(:revocation_endpoint) => String.t() | nil,
          required(:introspection_endpoint) => String.t() | nil,
          required(:userinfo_endpoint) => String.t() | nil,
          required(:service_documentation) => String.t() | nil,
          required(:scopes_supported) => [String.t()] | nil,
          required(:response_types_supported) => [String.t()] | nil,
          required(:response_modes_supported) => [String.t()] | nil,
          required(:grant_types_supported) => [String.t()] | nil,
          required(:token_endpoint_auth_methods_supported) => [String.t()] | nil,
          required(:code_challenge_methods_supported) => [String.t()] | nil,
          required(:client_id_metadata_document_supported) => boolean() | nil,
          required(:extra) => %{optional(String.t()) => term()}
        }

  @typedoc "What `discover/2` found; see the moduledoc's Discovery section."
  @type discovery() :: %{
          required(:server_url) => String.t(),
          required(:resource) => String.t(),
          required(:resource_metadata) => %{optional(String.t()) => term()} | nil,
          required(:resource_metadata_url) => String.t() | nil,
          required(:issuer) => String.t(),
          required(:authorization_server) => authorization_server_metadata(),
          required(:authorization_server_metadata) => :discovered | :defaults,
          required(:authorization_server_metadata_url) => String.t() | nil,
          required(:scope) => String.t() | nil,
          required(:allow_private_networks) => boolean()
        }

  @typedoc "A client from `obtain_client/3`: the client information plus how it was obtained."
  @type obtained_client() :: %{
          required(:client_id) => String.t(),
          required(:issuer) => String.t() | nil,
          required(:registration_method) => :pre_registered | :client_id_metadata_document | :dynamic,
          required(:token_endpoint_auth_method) => String.t(),
          optional(atom()) => term()
        }

  @typedoc "Options; see the moduledoc's table."
  @type option() ::
          {:timeout, pos_integer()}
          | {:connect_timeout, pos_integer()}
          | {:max_response_bytes, pos_integer()}
          | {:headers, [{String.t(), String.t()}]}
          | {:cacertfile, Path.t() | nil}
          | {:proxy, String.t() | :system | nil}
          | {:initial_access_token, String.t() | nil}
          | {:replace, boolean()}
          | {:www_authenticate, String.t() | [String.t()]}
          | {:resource_metadata_url, String.t() | nil}
          | {:issuer, String.t() | nil}
          | {:allow_private_networks, boolean()}
          | {:client_id, String.t()}
          | {:client_secret, String.t() | nil}
          | {:token_endpoint_auth_method, String.t()}
          | {:client_metadata_url, String.t()}
          | {:store, ClientStore.t()}
          | {:client_key, String.t()}
          | {:expiry_skew, non_neg_integer()}

  # How much longer than `:timeout` an update waits for the native reply. The
  # native deadline fires at `:timeout` and its reply carries any rotated
  # credentials; this margin keeps the wait from cancelling that reply first.
  @deadline_margin 100

  @common_options [:timeout, :connect_timeout, :max_response_bytes, :headers, :cacertfile, :proxy]

  @doc """
  Registers a new client with the authorization server (RFC 7591 §3).

  Sends the client metadata to `request.registration_endpoint` and returns
  the client information the server issued. Accepts `:initial_access_token`
  besides the common options.

  ## Example

      {:ok, %{client_id: id, registration_access_token: token}} =
        register_client(
          %{
            registration_endpoint: "https://auth.example.com/register",
            client_name: "Café 日本",
            redirect_uris: ["http://127.0.0.1:8080/callback"]
          },
          initial_access_token: System.fetch_env!("AS_INITIAL_TOKEN")
        )
  """
  @spec register_client(registration_request(), [option()]) ::
          {:ok, client_information()} | {:error, reason()}
  def register_client(request, opts \\ []) do
    request = request_map!(request, "request")
    opts = options!(opts, [:initial_access_token])
    Native.call(&Native.register(request, native_options(opts), &1), opts[:timeout])
  end

  @doc """
  Reads the current registration (RFC 7592 §2.1), authenticating with the
  registration access token.

  ## Example

      {:ok, client} = get_client_information(client.registration_client_uri, client.registration_access_token)
  """
  @spec get_client_information(String.t(), String.t(), [option()]) ::
          {:ok, client_information()} | {:error, reason()}
  def get_client_information(registration_client_uri, registration_access_token, opts \\ []) do
    opts = options!(opts, [])

    Native.call(
      &Native.get(registration_client_uri, registration_access_token, native_options(opts), &1),
      opts[:timeout]
    )
  end

  @doc """
  Updates the registration (RFC 7592 §2.2) and returns what the server now
  holds.

  A PUT replaces the whole registration, and servers reset every field it
  leaves out. So by default this reads the current registration, merges
  `updates` over it (a `nil` value removes that field), drops the fields
  §2.2 forbids in a PUT (`registration_access_token`,
  `registration_client_uri`, `client_secret_expires_at`,
  `client_id_issued_at`), keeps `client_id` and the `client_secret` the read
  returned (§2.2 allows it, its example sends it, and an omitted field is
  treated as null), and sends the result.

  When `updates` changes `redirect_uris` and does not name
  `application_type`, `application_type` is derived again from the new URIs
  (SEP-837), as at registration.

  If the read returns a new `registration_access_token` (RFC 7592 §2.1), the
  PUT is sent with it: the old one no longer works. If the update then fails,
  the error is `{:credentials_rotated, %RotatedCredentials{client: client},
  reason}`, with the new credentials in `client`.

  With `replace: true` nothing is read: `updates` is sent as the whole record
  (it should carry `client_id`), after dropping the forbidden fields. The
  registration defaults are not applied, so a field you leave out is reset by
  the server to its own default (oidc-provider, for one, turns a client
  without `token_endpoint_auth_method` into `client_secret_basic` and issues a
  secret).

  Servers may rotate the registration access token here: store the
  `registration_access_token` of the answer. With `replace: true`, when
  `updates` has `redirect_uris` but no `application_type`, it is derived from
  them too.

  ## Example

      {:ok, client} =
        update_client_information(uri, token, %{client_name: "Renamed", logo_uri: nil})

      store_token(client.registration_access_token)
  """
  @spec update_client_information(String.t(), String.t(), map(), [option()]) ::
          {:ok, client_information()} | {:error, reason()}
  def update_client_information(registration_client_uri, registration_access_token, updates, opts \\ []) do
    updates = request_map!(updates, "updates")
    opts = options!(opts, [:replace])

    start =
      &Native.update(
        registration_client_uri,
        registration_access_token,
        updates,
        Keyword.get(opts, :replace, false),
        native_options(opts),
        &1
      )

    # A :timeout that is not an integer is refused by the NIF before any wait.
    wait =
      if is_integer(opts[:timeout]),
        do: min(opts[:timeout] + @deadline_margin, 0xFFFFFFFF),
        else: opts[:timeout]

    case Native.call(start, wait) do
      {:error, {:credentials_rotated, %{} = client, reason}} ->
        {:error, {:credentials_rotated, %RotatedCredentials{client: client}, reason}}

      other ->
        other
    end
  end

  @doc """
  Deletes the registration (RFC 7592 §2.3). Returns `:ok` when the server
  answers 204 (or 200); afterwards the client and its token are gone.

  ## Example

      :ok = delete_client(client.registration_client_uri, client.registration_access_token)
  """
  @spec delete_client(String.t(), String.t(), [option()]) :: :ok | {:error, reason()}
  def delete_client(registration_client_uri, registration_access_token, opts \\ []) do
    opts = options!(opts, [])

    Native.call(
      &Native.delete(registration_client_uri, registration_access_token, native_options(opts), &1),
      opts[:timeout]
    )
  end

  @discover_options [:www_authenticate, :resource_metadata_url, :issuer, :allow_private_networks]
  @obtain_options [
    :client_id,
    :client_secret,
    :token_endpoint_auth_method,
    :client_metadata_url,
    :initial_access_token,
    :store,
    :client_key,
    :expiry_skew
  ]

  @doc """
  Discovers the authorization server of an MCP server, starting from the MCP
  server's URL: RFC 9728 protected resource metadata, then RFC 8414 or
  OpenID Connect Discovery, in the MCP specification's order (2025-11-25).
  See the moduledoc's Discovery section for the order, the checks and the
  result.

  Options: `:www_authenticate` (the `WWW-Authenticate` value or values of the
  server's 401), `:resource_metadata_url`, `:issuer` (skips RFC 9728),
  `:allow_private_networks`, and the common options. `:timeout` covers every
  fetch.

  ## Example

      {:ok, discovery} =
        discover("https://mcp.example.com/mcp",
          www_authenticate: ~s(Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp")
        )

      discovery.issuer
      #=> "https://auth.example.com"
      discovery.authorization_server.registration_endpoint
      #=> "https://auth.example.com/register"
  """
  @spec discover(String.t(), [option()]) :: {:ok, discovery()} | {:error, reason()}
  def discover(server_url, opts \\ []) do
    server_url = url_arg!(server_url, "server_url")
    opts = options!(opts, @discover_options)
    Discovery.discover(server_url, opts)
  end

  @doc """
  Obtains a client identity for an authorization server, in the MCP
  specification's priority (2025-11-25, "Client Registration Approaches"):

    1. `:client_id` given (with `:client_secret` and
       `:token_endpoint_auth_method` if any): a pre-registered client, no
       network call.
    2. `:client_metadata_url` given and the server's metadata has
       `client_id_metadata_document_supported: true`: a Client ID Metadata
       Document client. The `client_id` is that URL, there is no secret, and
       `token_endpoint_auth_method` is `"none"`. Serve the document from
       `client_metadata_document/3` at that URL.
    3. The metadata has a `registration_endpoint`: RFC 7591 registration,
       exactly as `register_client/2` does it. `scope` is the caller's, else
       `discovery.scope`; `token_endpoint_auth_method` is the caller's, else
       the first of `none`, `client_secret_basic`, `client_secret_post` that
       the server lists in `token_endpoint_auth_methods_supported`, else
       `client_secret_basic` (RFC 8414 §2's default). `:initial_access_token`
       is sent as with `register_client/2`. The registration endpoint obeys
       the same address rules as discovery.
    4. Otherwise `{:error, {:no_registration_path, checked}}`, where `checked`
       says, for each of the three paths, why it was not available.

  `discovery_or_server_url` is a `t:discovery/0` or an MCP server URL; with a
  URL, `discover/2` runs first (it takes the discovery options here too), and
  `:timeout` covers discovery and registration together. A pre-registered
  `:client_id` skips discovery altogether; its `:issuer` is then the
  `:issuer` option, the discovery's, or `nil`.

  `client_metadata` is a `t:registration_request/0` without
  `:registration_endpoint`.

  ## With a store

  `store: {adapter, name}` (see `ExMCP.Authorization.ClientStore`) keeps
  dynamically registered clients between calls and restarts, bound to their
  issuer. Before registering (after the pre-registered and Client ID
  Metadata Document paths, which issue nothing to keep), it looks up
  `{discovery.issuer, client_key}`, and returns the stored client when it is
  valid: same issuer, secret not expired within `:expiry_skew` seconds
  (default 30), every requested redirect URI registered. Otherwise it
  registers and stores the answer before returning it. Of many processes
  (or, with `ClientStore.Mnesia`, nodes) asking at once, one registers and
  the others get its client.

  | Option | Default | Meaning |
  |---|---|---|
  | `:store` | `nil` | `{adapter, name}`: where clients are kept. |
  | `:client_key` | `"default"` | The caller's name for this client identity at the issuer: use one key per distinct client metadata. |
  | `:expiry_skew` | `30` | Seconds before `client_secret_expires_at` from which a stored client counts as expired. |

  When the authorization server rejects the client (`invalid_client`), call
  `client_rejected/2`; the next call registers anew.

  The result is a `t:client_information/0` plus `:issuer` (bind the
  credentials to it: when the issuer changes, obtain a new client),
  `:registration_method` (`:pre_registered`, `:client_id_metadata_document`
  or `:dynamic`) and `:token_endpoint_auth_method`, always present.

  ## Example

      {:ok, client} =
        obtain_client("https://mcp.example.com/mcp", %{
          client_name: "My MCP Client",
          redirect_uris: ["http://127.0.0.1:8080/callback"]
        }, client_metadata_url: "https://app.example.com/oauth/client.json")

      client.registration_method
      #=> :client_id_metadata_document

      # Registered once, then read from the file on every later start:
      {:ok, client} =
        obtain_client(discovery, %{client_name: "My MCP Client", redirect_uris: [cb]},
          store: {ExMCP.Authorization.ClientStore.DETS, MyApp.Clients}
        )
  """
  @spec obtain_client(discovery() | String.t(), map(), [option()]) ::
          {:ok, obtained_client()} | {:error, reason()}
  def obtain_client(discovery_or_server_url, client_metadata, opts \\ []) do
    target =
      case discovery_or_server_url do
        %{server_url: url, issuer: _, authorization_server: %{}} = discovery when is_binary(url) ->
          discovery

        url when is_binary(url) ->
          url_arg!(url, "server_url")

        other ->
          raise ArgumentError,
                "obtain_client/3 needs a discovery map from discover/2 or a server URL, got: #{type_name(other)}"
      end

    client_metadata = request_map!(client_metadata, "client metadata")

    if Map.has_key?(client_metadata, :registration_endpoint) or
         Map.has_key?(client_metadata, "registration_endpoint") do
      raise ArgumentError,
            "client metadata must not hold :registration_endpoint; obtain_client/3 takes it from discovery"
    end

    opts = options!(opts, @discover_options ++ @obtain_options)
    Discovery.obtain_client(target, client_metadata, opts)
  end

  @doc """
  Reports that the authorization server rejected `client` (an
  `invalid_client` error at its token endpoint, RFC 6749 §5.2): the client is
  removed from the store, and the next `obtain_client/3` with that store
  registers a new one.

  `client` is what `obtain_client/3` returned. Only that client is removed:
  when another process has already replaced it, the report changes nothing.
  Options: `:store` (required), `:client_key` (default `"default"`, as given
  to `obtain_client/3`) and `:timeout` (milliseconds to wait for the key's
  lock; default the `:timeout` default).

  ## Example

      case exchange_code(client, code) do
        {:error, %{"error" => "invalid_client"}} ->
          :ok = client_rejected(client, store: store)
          {:ok, client} = obtain_client(discovery, metadata, store: store)
          exchange_code(client, code)

        other ->
          other
      end
  """
  @spec client_rejected(obtained_client(), [option()]) :: :ok | {:error, reason()}
  def client_rejected(client, opts) do
    {issuer, client_id} =
      case client do
        %{issuer: issuer, client_id: id} when is_binary(issuer) and is_binary(id) ->
          {issuer, id}

        _ ->
          raise ArgumentError,
                "client_rejected/2 needs a client from obtain_client/3, with an :issuer and a :client_id"
      end

    unless is_list(opts) and Keyword.keyword?(opts) and Keyword.has_key?(opts, :store),
      do: raise(ArgumentError, "client_rejected/2 needs a keyword list with the option :store")

    case Keyword.keys(opts) -- [:store, :client_key, :timeout] do
      [] ->
        :ok

      [key | _] ->
        raise ArgumentError,
              "unknown option #{inspect(key)}; client_rejected/2 accepts :store, :client_key, :timeout"
    end

    opts = options!(Keyword.take(opts, [:timeout]), []) ++ Keyword.take(opts, [:store, :client_key])
    store = option!(:store, opts[:store])
    client_key = option!(:client_key, Keyword.get(opts, :client_key, "default"))
    ClientStore.discard(store, issuer, client_key, client_id, opts[:timeout])
  end

  @doc """
  Builds the Client ID Metadata Document a client serves at `url`, its
  `client_id` (draft-ietf-oauth-client-id-metadata-document-00).

  An authorization server that advertises
  `client_id_metadata_document_supported: true` fetches this document when
  the client presents `url` as its `client_id`, instead of a registration.
  Serve the returned map as JSON (`application/json`) at `url`.

  `client_metadata` is a `t:registration_request/0` without
  `:registration_endpoint` (`:client_name` and `:redirect_uris` required). It
  is checked and completed by the same rules as a registration (field types,
  redirect URIs, `grant_types`, `response_types`, derived `application_type`),
  and:

    * `url` must be https with a path other than `/`, no `.`/`..` segment, no
      fragment, no user name or password, written in normalized form (§3);
    * the document's `"client_id"` is `url` (a `:client_id` you pass must
      equal it) (§4.1);
    * there is no secret: `:client_secret` is refused, and so is a
      shared-secret `:token_endpoint_auth_method` (`client_secret_basic`,
      `client_secret_post`, `client_secret_jwt`); it defaults to `"none"`
      (§4.1).

  Option `allow_loopback_http: true` (default `false`) accepts an
  `http://` URL on a loopback host (`localhost`, `127.0.0.0/8`, `[::1]`), for
  local development against a server that allows loopback documents, such as
  `ExMCP.Authorization.RegistrationServer` with
  `client_id_metadata_documents: [allow_loopback: true]`.

  No network call is made. Errors are the reasons of `register_client/2`,
  such as `{:invalid_field, :client_id, message}` or
  `{:invalid_field, :token_endpoint_auth_method, message}`.

  ## Example

      {:ok, document} =
        client_metadata_document("https://app.example.com/oauth/client.json", %{
          client_name: "My MCP Client",
          redirect_uris: ["http://127.0.0.1:8080/callback"]
        })

      document["client_id"]
      #=> "https://app.example.com/oauth/client.json"
      document["token_endpoint_auth_method"]
      #=> "none"
  """
  @spec client_metadata_document(String.t(), map(), [{:allow_loopback_http, boolean()}]) ::
          {:ok, %{optional(String.t()) => term()}} | {:error, reason()}
  def client_metadata_document(url, client_metadata, opts \\ []) do
    client_metadata = request_map!(client_metadata, "client metadata")

    unless is_list(opts) and Keyword.keyword?(opts) do
      raise ArgumentError, "options must be a keyword list, got: #{type_name(opts)}"
    end

    allow_loopback_http =
      Enum.reduce(opts, false, fn
        {:allow_loopback_http, flag}, _ when is_boolean(flag) ->
          flag

        {:allow_loopback_http, other}, _ ->
          raise ArgumentError, "option :allow_loopback_http must be a boolean, got: #{inspect(other)}"

        {key, _}, _ ->
          raise ArgumentError,
                "unknown option #{inspect(key)}; client_metadata_document/3 accepts :allow_loopback_http"
      end)

    Native.client_metadata_document(url, client_metadata, allow_loopback_http)
  end

  @doc """
  Turns any error reason of this module into one human sentence. It never
  contains a secret or a token.

  ## Example

      iex> ExMCP.Authorization.ClientRegistration.format_error({:missing_required_fields, [:client_name]})
      "the registration request is missing required fields: client_name"

      iex> ExMCP.Authorization.ClientRegistration.format_error(
      ...>   {:registration_error, 400, %{"error" => "invalid_redirect_uri", "error_description" => "no fragments"}}
      ...> )
      "the authorization server refused the request (HTTP 400): invalid_redirect_uri: no fragments"

      iex> ExMCP.Authorization.ClientRegistration.format_error({:request_failed, {:body_too_large, 65_536}})
      "the server's answer was larger than the 65536-byte limit (option :max_response_bytes)"
  """
  @spec format_error(reason() | term()) :: String.t()
  def format_error({:missing_required_fields, fields}),
    do: "the registration request is missing required fields: #{Enum.map_join(fields, ", ", &to_string/1)}"

  def format_error(:redirect_uris_must_be_list), do: "redirect_uris must be a list of URI strings"

  def format_error({:invalid_redirect_uris, uris}),
    do:
      "these redirect URIs are not allowed (they must be absolute, without a fragment, and https, " <>
        "loopback http or a private-use scheme): #{Enum.join(uris, ", ")}"

  def format_error(:https_required),
    do: "the endpoint must use https; plain http is allowed only to localhost, 127.0.0.0/8 or [::1]"

  def format_error({:invalid_field, field, message}), do: "#{field} #{message}"

  def format_error({:registration_error, status, %{} = body}) do
    case {body["error"], body["error_description"]} do
      {error, description} when is_binary(error) and is_binary(description) ->
        "the authorization server refused the request (HTTP #{status}): #{clip(error)}: #{clip(description)}"

      {error, _} when is_binary(error) ->
        "the authorization server refused the request (HTTP #{status}): #{clip(error)}"

      _ ->
        "the authorization server refused the request (HTTP #{status})"
    end
  end

  def format_error({:http_error, status, body}) when status in 300..399,
    do: "the server answered with a redirect (HTTP #{status}), which is not followed#{body_size(body)}"

  def format_error({:http_error, status, body}),
    do: "the server answered HTTP #{status} with a body that is not a JSON object#{body_size(body)}"

  def format_error({:invalid_response, message}),
    do: "the server's answer is not valid client information: #{message}"

  def format_error({:json_decode_error, message}), do: "the server's answer is not valid JSON: #{message}"
  def format_error({:request_failed, :timeout}), do: "the request timed out"
  def format_error({:request_failed, {:connect, message}}), do: "could not connect to the server: #{message}"
  def format_error({:request_failed, {:tls, message}}), do: "the TLS connection failed: #{message}"

  def format_error({:request_failed, {:body_too_large, limit}}),
    do: "the server's answer was larger than the #{limit}-byte limit (option :max_response_bytes)"

  def format_error({:request_failed, {:connection, message}}),
    do: "the connection failed during the exchange: #{message}"

  def format_error({:request_failed, {:cacertfile, message}}),
    do: "the :cacertfile option could not be used: #{message}"

  def format_error({:request_failed, {:proxy, message}}), do: "the proxy refused the request: #{message}"

  def format_error({:request_failed, {:panic, message}}),
    do: "an internal error occurred in the native client (please report it): #{message}"

  def format_error({:request_failed, other}), do: "the request failed: #{inspect(other)}"

  def format_error({:credentials_rotated, _credentials, reason}),
    do:
      format_error(reason) <>
        " (before that, the server issued a new registration access token: the new credentials " <>
        "are in this error's RotatedCredentials, store them; the old token no longer works)"

  def format_error({:discovery_failed, url, reason}),
    do: "discovery stopped at #{url}: #{format_error(reason)}"

  def format_error({:invalid_metadata, url, message}),
    do: "the metadata document at #{url} is not usable: #{message}"

  def format_error({:resource_mismatch, resource, server_url}),
    do:
      "the protected resource metadata is for #{resource}, which does not cover #{server_url} " <>
        "(same origin and path prefix required)"

  def format_error({:issuer_mismatch, expected, found}),
    do: "the authorization server metadata names the issuer #{found}, not #{expected} (RFC 8414 §3.3)"

  def format_error({:authorization_server_metadata_not_found, issuer, urls}),
    do: "no authorization server metadata for #{issuer}; tried #{Enum.join(urls, ", ")}"

  def format_error({:url_refused, url, message}), do: "refused to contact #{url}: #{message}"

  def format_error({:invalid_www_authenticate, message}),
    do: "the WWW-Authenticate value cannot be parsed: #{message}"

  def format_error({:no_registration_path, checked}),
    do: "the authorization server offers no way to obtain a client: #{Enum.join(checked, "; ")}"

  def format_error({:client_store, message}), do: "the client store failed: #{message}"

  def format_error(other), do: "client registration failed: #{inspect(other)}"

  @clip_graphemes 300

  # Server text, cut at a grapheme boundary so the sentence stays valid UTF-8.
  defp clip(text) do
    case String.split_at(valid_utf8(text), @clip_graphemes) do
      {head, ""} -> head
      {head, _rest} -> head <> "…"
    end
  end

  # A reason built by hand may hold any binary: invalid bytes become U+FFFD.
  defp valid_utf8(text) do
    if String.valid?(text), do: text, else: replace_invalid(text, "")
  end

  defp replace_invalid(<<>>, acc), do: acc

  defp replace_invalid(<<char::utf8, rest::binary>>, acc),
    do: replace_invalid(rest, <<acc::binary, char::utf8>>)

  defp replace_invalid(<<_byte, rest::binary>>, acc), do: replace_invalid(rest, acc <> "\uFFFD")

  defp body_size(body) when is_binary(body) and byte_size(body) > 0, do: " (#{byte_size(body)} bytes)"
  defp body_size(_), do: ""

  # -- Arguments and options ---------------------------------------------------

  defp request_map!(map, _what) when is_map(map) and not is_struct(map), do: map

  defp request_map!(other, what),
    do: raise(ArgumentError, "the #{what} must be a map, got: #{type_name(other)}")

  defp options!(opts, extra_keys) do
    unless is_list(opts) and Enum.all?(opts, &match?({key, _} when is_atom(key), &1)) do
      raise ArgumentError, "options must be a keyword list, got: #{type_name(opts)}"
    end

    allowed = @common_options ++ extra_keys

    Enum.each(opts, fn {key, _} ->
      unless key in allowed do
        raise ArgumentError,
              "unknown option #{inspect(key)}; this function accepts #{Enum.map_join(allowed, ", ", &inspect/1)}"
      end
    end)

    configured = for key <- @common_options, (value = Application.get_env(@app, key)) != nil, do: {key, value}

    # One place per rule: the integer defaults come from the Rust core
    # (`Options::default()`, through the NIF), and the NIF checks every value
    # it is given, raising as `ArgumentError` before anything is sent.
    opts =
      Native.option_defaults()
      |> Map.to_list()
      |> Keyword.merge(configured)
      |> Keyword.merge(opts)
      |> Enum.map(fn {key, value} -> {key, option!(key, value)} end)

    case Native.check_options(Map.new(opts)) do
      :ok ->
        opts

      {:error, {:invalid_option, name, message}} ->
        raise ArgumentError, "invalid option #{inspect(name)}: #{message}"
    end
  end

  # A charlist path is a path too.
  defp option!(:cacertfile, path) when is_list(path) do
    case :unicode.characters_to_binary(path) do
      binary when is_binary(binary) -> binary
      _ -> path
    end
  end

  # Only this module reads :replace.
  defp option!(:replace, flag) when is_boolean(flag), do: flag

  defp option!(:replace, other),
    do: raise(ArgumentError, "option :replace must be a boolean, got: #{inspect(other)}")

  # The discovery flow's own options (not read by the transport NIF).
  defp option!(:www_authenticate, value) do
    values = List.wrap(value)

    if values != [] and Enum.all?(values, &is_binary/1),
      do: values,
      else: raise(ArgumentError, "option :www_authenticate must be a string or a list of strings")
  end

  defp option!(key, value) when key in [:resource_metadata_url, :issuer, :client_metadata_url] do
    if is_binary(value) or (is_nil(value) and key != :client_metadata_url),
      do: value,
      else: raise(ArgumentError, "option #{inspect(key)} must be a URL string, got: #{type_name(value)}")
  end

  defp option!(:allow_private_networks, flag) when is_boolean(flag), do: flag

  defp option!(:allow_private_networks, other),
    do: raise(ArgumentError, "option :allow_private_networks must be a boolean, got: #{inspect(other)}")

  defp option!(:client_id, id) when is_binary(id) and id != "", do: id

  defp option!(:client_id, other),
    do: raise(ArgumentError, "option :client_id must be a non-empty string, got: #{type_name(other)}")

  # Never echo a secret, not even a malformed one.
  defp option!(:client_secret, secret) when is_binary(secret) or is_nil(secret), do: secret

  defp option!(:client_secret, other),
    do: raise(ArgumentError, "option :client_secret must be a string, got: #{type_name(other)}")

  defp option!(:token_endpoint_auth_method, method) when is_binary(method) and method != "", do: method

  defp option!(:token_endpoint_auth_method, other),
    do:
      raise(
        ArgumentError,
        "option :token_endpoint_auth_method must be a non-empty string, got: #{inspect(other)}"
      )

  defp option!(:store, store), do: ClientStore.store!(store)

  defp option!(:client_key, key) when is_binary(key) and key != "", do: key

  defp option!(:client_key, other),
    do: raise(ArgumentError, "option :client_key must be a non-empty string, got: #{type_name(other)}")

  defp option!(:expiry_skew, seconds) when is_integer(seconds) and seconds >= 0, do: seconds

  defp option!(:expiry_skew, other),
    do:
      raise(
        ArgumentError,
        "option :expiry_skew must be a non-negative integer (seconds), got: #{inspect(other)}"
      )

  defp option!(_key, value), do: value

  defp native_options(opts), do: Map.new(Keyword.delete(opts, :replace))

  @doc false
  # The options of a call that another module makes on the caller's behalf
  # (ClientStore's management calls), checked in the caller's process.
  @spec checked_options!(keyword(), [atom()]) :: keyword()
  def checked_options!(opts, extra_keys), do: options!(opts, extra_keys)

  @doc false
  # The options every call shares (the transport's), for the discovery flow.
  @spec transport_options() :: [atom()]
  def transport_options, do: @common_options

  defp url_arg!(url, _name) when is_binary(url), do: url

  defp url_arg!(other, name),
    do: raise(ArgumentError, "#{name} must be a URL string, got: #{type_name(other)}")

  defp type_name(term) when is_map(term), do: "a map"
  defp type_name(term) when is_list(term), do: "a list"
  defp type_name(term) when is_binary(term), do: "a string"
  defp type_name(term) when is_atom(term), do: inspect(term)
  defp type_name(term) when is_integer(term), do: "an integer"
  defp type_name(term) when is_tuple(term), do: "a tuple"
  defp type_name(_), do: "an unsupported value"
end
