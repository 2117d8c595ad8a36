defmodule ExMCP.Test.OidcProvider do
  @moduledoc """
  A real RFC 7591/7592 authorization server for integration tests: the npm
  package `oidc-provider`, run by `test/servers/oidc_provider.mjs` in a Node
  process that this GenServer owns through a Port.

      pid = start_supervised!({ExMCP.Test.OidcProvider, initial_access_token: "secret", rotate: true})
      %{port: port, issuer: issuer, registration_endpoint: endpoint} = ExMCP.Test.OidcProvider.info(pid)

  Options:

    * `:initial_access_token` - registration then requires this bearer token
    * `:rotate` - when `true`, every update rotates the registration access token
      (default `false`)
    * `:issuer_path` - e.g. `"/tenant/a"`: the issuer gets this path and the
      provider is mounted under it (OpenID discovery at
      `<issuer>/.well-known/openid-configuration`, 404 elsewhere)
    * `:client_id_metadata_documents` - when `true`, oidc-provider's experimental
      Client ID Metadata Document feature is on, and documents may be fetched
      from loopback (development)
    * `:extra_ca_certs` - a PEM file Node trusts besides its roots
      (`NODE_EXTRA_CA_CERTS`), for a document host with a test CA
    * `:tls` - `[certfile: pem, keyfile: pem, cacertfile: pem]`: serve https with
      this certificate and key (the issuer and endpoints are then `https://`);
      `cacertfile` is the CA that signed the certificate, which the script
      trusts to read its own discovery document
    * `:startup_timeout` - milliseconds to wait for the server to listen (default `20_000`)
    * `:id` - the child spec id, to run several servers under one supervisor

  The server listens on 127.0.0.1 on a free port. It runs under
  `ExMCP.Test.ScriptServer`, which stops it, its OS process included, when it
  terminates. Its logs go to the BEAM's stderr.

  The Node dependencies must be installed first: `npm ci --prefix test/servers`.
  """

  alias ExMCP.Test.ScriptServer

  @servers_dir Path.expand("../servers", __DIR__)
  @script Path.join(@servers_dir, "oidc_provider.mjs")
  @package_dir Path.join([@servers_dir, "node_modules", "oidc-provider"])

  @type info() :: %{port: :inet.port_number(), issuer: String.t(), registration_endpoint: String.t()}

  @doc false
  def child_spec(opts) do
    %{
      ScriptServer.child_spec(opts)
      | id: Keyword.get(opts, :id, __MODULE__),
        start: {__MODULE__, :start_link, [opts]}
    }
  end

  @doc "Starts the server; returns once it listens."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    with {:ok, node} <- find_node(opts),
         :ok <- check_installed(),
         {:ok, server} <-
           ScriptServer.start_link(
             executable: node,
             args: [@script | script_args(opts)],
             env: script_env(opts),
             startup_timeout: Keyword.get(opts, :startup_timeout, 20_000)
           ) do
      check_ready_line(server)
    end
  end

  @doc "Where the server listens."
  @spec info(GenServer.server()) :: info()
  def info(server) do
    %{"port" => port, "issuer" => issuer, "registration_endpoint" => endpoint} = ScriptServer.info(server)
    %{port: port, issuer: issuer, registration_endpoint: endpoint}
  end

  @doc """
  How many registrations the server has made so far (oidc-provider's
  `registration_create.success` events), read from the script's
  `GET /__test/registrations`.
  """
  @spec registrations(GenServer.server()) :: non_neg_integer()
  def registrations(server) do
    %{port: port} = info(server)
    {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 5_000)

    :ok =
      :gen_tcp.send(
        socket,
        "GET /__test/registrations HTTP/1.0\r\nhost: 127.0.0.1:#{port}\r\nconnection: close\r\n\r\n"
      )

    response = read_all(socket, [])
    :gen_tcp.close(socket)
    ["HTTP/1." <> <<_, " 200 ">> <> _, body] = String.split(response, "\r\n\r\n", parts: 2)
    %{"registrations" => count} = ExMCP.Test.JSON.decode!(body)
    count
  end

  defp read_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, data} -> read_all(socket, [acc, data])
      {:error, :closed} -> IO.iodata_to_binary(acc)
    end
  end

  # -- Startup -------------------------------------------------------------------

  # The script prints {"port":N,"issuer":"...","registration_endpoint":"..."}.
  defp check_ready_line(server) do
    case ScriptServer.info(server) do
      %{"port" => port, "issuer" => issuer, "registration_endpoint" => endpoint}
      when is_integer(port) and is_binary(issuer) and is_binary(endpoint) ->
        {:ok, server}

      other ->
        GenServer.stop(server)
        {:error, {:oidc_provider_unexpected_output, other}}
    end
  end

  defp find_node(opts) do
    case Keyword.get(opts, :node) || System.find_executable("node") do
      nil -> {:error, {:oidc_provider_unavailable, "the `node` executable is not on the PATH"}}
      path -> {:ok, path}
    end
  end

  defp check_installed do
    if File.dir?(@package_dir) do
      :ok
    else
      {:error,
       {:oidc_provider_unavailable,
        "#{@package_dir} is missing: run `npm ci --prefix test/servers` in the project root first"}}
    end
  end

  defp script_args(opts) do
    token_args =
      case Keyword.get(opts, :initial_access_token) do
        nil -> []
        token when is_binary(token) -> ["--initial-access-token", token]
      end

    rotate_args = if Keyword.get(opts, :rotate, false), do: ["--rotate"], else: []

    path_args =
      case Keyword.get(opts, :issuer_path) do
        nil -> []
        path when is_binary(path) -> ["--issuer-path", path]
      end

    cimd_args =
      if Keyword.get(opts, :client_id_metadata_documents, false),
        do: ["--client-id-metadata-documents"],
        else: []

    tls_args =
      case Keyword.get(opts, :tls) do
        nil -> []
        tls -> ["--tls-cert", Keyword.fetch!(tls, :certfile), "--tls-key", Keyword.fetch!(tls, :keyfile)]
      end

    token_args ++ rotate_args ++ path_args ++ cimd_args ++ tls_args
  end

  # Node reads extra trusted CAs from the environment, at start-up only, and
  # from one file: :extra_ca_certs, else the :tls option's CA.
  defp script_env(opts) do
    case Keyword.get(opts, :extra_ca_certs) || get_in(opts, [:tls, :cacertfile]) do
      nil -> []
      path -> [{"NODE_EXTRA_CA_CERTS", path}]
    end
  end
end
