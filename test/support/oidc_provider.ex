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

  The server listens on 127.0.0.1 on a free port and is stopped, its OS process
  included, when this GenServer terminates. Its logs go to the BEAM's stderr.

  The Node dependencies must be installed first: `npm ci --prefix test/servers`.
  """

  use GenServer

  @servers_dir Path.expand("../servers", __DIR__)
  @script Path.join(@servers_dir, "oidc_provider.mjs")
  @package_dir Path.join([@servers_dir, "node_modules", "oidc-provider"])
  @stop_timeout 3_000

  @type info() :: %{port: :inet.port_number(), issuer: String.t(), registration_endpoint: String.t()}

  @doc false
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :id, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      shutdown: @stop_timeout + 2_000
    }
  end

  @doc "Starts the server; returns once it listens."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts)

  @doc "Where the server listens."
  @spec info(GenServer.server()) :: info()
  def info(server), do: GenServer.call(server, :info)

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)

    with {:ok, node} <- find_node(opts),
         :ok <- check_installed() do
      port =
        Port.open({:spawn_executable, node}, [
          :binary,
          :exit_status,
          :use_stdio,
          {:line, 65_536},
          {:cd, @servers_dir},
          {:args, [@script | script_args(opts)]},
          {:env, script_env(opts)}
        ])

      os_pid = port |> Port.info(:os_pid) |> elem(1)
      timeout = Keyword.get(opts, :startup_timeout, 20_000)
      deadline = System.monotonic_time(:millisecond) + timeout

      case await_ready(port, "", deadline) do
        {:ok, info} ->
          {:ok, %{port: port, os_pid: os_pid, info: info}}

        {:error, {:oidc_provider_exited, _} = reason} ->
          {:stop, reason}

        {:error, reason} ->
          stop_os_process(port, os_pid)
          {:stop, reason}
      end
    end
  end

  @impl true
  def handle_call(:info, _from, state), do: {:reply, state.info, state}

  @impl true
  def handle_info({port, {:exit_status, status}}, %{port: port} = state),
    do: {:stop, {:oidc_provider_exited, status}, %{state | port: nil}}

  # Nothing but the first line is expected on stdout; anything later is ignored.
  def handle_info({port, {:data, _}}, %{port: port} = state), do: {:noreply, state}
  def handle_info({:EXIT, _port, _reason}, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, %{port: nil}), do: :ok
  def terminate(_reason, %{port: port, os_pid: os_pid}), do: stop_os_process(port, os_pid)

  # -- Startup -------------------------------------------------------------------

  defp find_node(opts) do
    case Keyword.get(opts, :node) || System.find_executable("node") do
      nil -> {:stop, {:oidc_provider_unavailable, "the `node` executable is not on the PATH"}}
      path -> {:ok, path}
    end
  end

  defp check_installed do
    if File.dir?(@package_dir) do
      :ok
    else
      {:stop,
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
      path -> [{~c"NODE_EXTRA_CA_CERTS", String.to_charlist(path)}]
    end
  end

  defp await_ready(port, partial, deadline) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, {:noeol, chunk}}} ->
        await_ready(port, partial <> chunk, deadline)

      {^port, {:data, {:eol, chunk}}} ->
        line = partial <> chunk

        case parse_ready_line(line) do
          {:ok, info} -> {:ok, info}
          :error -> {:error, {:oidc_provider_unexpected_output, line}}
        end

      {^port, {:exit_status, status}} ->
        {:error, {:oidc_provider_exited, status}}
    after
      remaining -> {:error, :oidc_provider_startup_timeout}
    end
  end

  # The line is {"port":N,"issuer":"...","registration_endpoint":"..."}: plain
  # ASCII URLs without escapes, so a few regexes are enough (no JSON library).
  defp parse_ready_line(line) do
    with [_, port] <- Regex.run(~r/"port":(\d+)[,}]/, line),
         [_, issuer] <- Regex.run(~r/"issuer":"([^"\\]*)"/, line),
         [_, endpoint] <- Regex.run(~r/"registration_endpoint":"([^"\\]*)"/, line) do
      {:ok, %{port: String.to_integer(port), issuer: issuer, registration_endpoint: endpoint}}
    else
      _ -> :error
    end
  end

  # -- Shutdown ------------------------------------------------------------------

  # SIGTERM, then wait for the exit status; SIGKILL if it has not come in time.
  # Closing the port also closes the script's stdin, which makes it exit too.
  defp stop_os_process(port, os_pid) do
    signal(os_pid, "TERM")

    receive do
      {^port, {:exit_status, _}} -> :ok
    after
      @stop_timeout -> signal(os_pid, "KILL")
    end

    close(port)
    :ok
  end

  defp signal(os_pid, name) do
    System.cmd("kill", ["-#{name}", Integer.to_string(os_pid)], stderr_to_stdout: true)
  end

  defp close(port) do
    Port.close(port)
  rescue
    ArgumentError -> :ok
  end
end
