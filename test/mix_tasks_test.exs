defmodule ExMCP.Authorization.MixTasksTest do
  # The main job's commands, run in-process against the embedded server.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO

  alias ExMCP.Authorization.{ClientStore, Native, RegistrationServer}

  setup do
    server = start_supervised!({RegistrationServer, rotate_registration_access_token: true})
    %{server: server, endpoint: RegistrationServer.registration_endpoint(server)}
  end

  # Runs a task; returns {stdout, stderr}. Mix tasks run once per VM unless re-enabled.
  defp run_task(task, args) do
    Mix.Task.reenable(task)

    stderr =
      capture_io(:stderr, fn -> send(self(), {:stdout, capture_io(fn -> Mix.Task.run(task, args) end)}) end)

    assert_received {:stdout, stdout}
    {stdout, stderr}
  end

  defp decode!(json) do
    {:ok, document} = Native.json_decode(json)
    document
  end

  # The tasks' default client store is under XDG_CONFIG_HOME: point it at a
  # temporary directory, never at the real home.
  defp with_config_home(dir, fun) do
    previous = System.get_env("XDG_CONFIG_HOME")
    System.put_env("XDG_CONFIG_HOME", dir)

    try do
      fun.()
    after
      if previous, do: System.put_env("XDG_CONFIG_HOME", previous), else: System.delete_env("XDG_CONFIG_HOME")
    end
  end

  # Reads the store file the tasks wrote, with the library, after they closed it.
  defp stored(path, issuer, key \\ "default") do
    {:ok, pid} = ClientStore.DETS.start_link(name: :mix_tasks_test_store, path: path)

    try do
      ClientStore.get({ClientStore.DETS, :mix_tasks_test_store}, issuer, key)
    after
      GenServer.stop(pid)
    end
  end

  @tag :tmp_dir
  test "mcp.register prints the credentials as JSON and mcp.client manages them", %{
    server: server,
    endpoint: endpoint,
    tmp_dir: dir
  } do
    file = Path.join(dir, "client.json")

    {stdout, stderr} =
      run_task("mcp.register", [
        "--endpoint",
        endpoint,
        "--name",
        "CLI Café",
        "--redirect-uri",
        "http://127.0.0.1:9000/cb",
        "--redirect-uri",
        "com.example.app:/cb",
        "--scope",
        "mcp:read",
        "--grant-type",
        "authorization_code",
        "--auth-method",
        "client_secret_basic",
        "--output",
        file
      ])

    printed = decode!(stdout)
    assert stderr =~ "Registered client #{printed["client_id"]}"
    assert printed["client_name"] == "CLI Café"
    assert printed["redirect_uris"] == ["http://127.0.0.1:9000/cb", "com.example.app:/cb"]
    assert printed["token_endpoint_auth_method"] == "client_secret_basic"
    assert is_binary(printed["client_secret"])
    assert decode!(File.read!(file)) == printed
    assert File.stat!(file).mode |> Bitwise.band(0o777) == 0o600
    assert {:ok, %{client_name: "CLI Café"}} = RegistrationServer.lookup(server, printed["client_id"])

    {stdout, _} = run_task("mcp.client", ["show", "--from", file])
    assert decode!(stdout)["client_id"] == printed["client_id"]

    {stdout, stderr} = run_task("mcp.client", ["update", "--from", file, "--name", "Renamed"])
    updated = decode!(stdout)
    assert updated["client_name"] == "Renamed"
    assert updated["scope"] == "mcp:read", "the merge keeps what the update does not name"
    assert updated["registration_access_token"] != printed["registration_access_token"]
    assert stderr =~ "Updated #{file}"
    assert decode!(File.read!(file)) == updated, "the rotated token is written back"

    {_, stderr} = run_task("mcp.client", ["delete", "--from", file])
    assert stderr =~ "Deleted the registration"
    assert RegistrationServer.count(server) == 0

    error = assert_raise Mix.Error, fn -> run_task("mcp.client", ["show", "--from", file]) end
    assert error.message =~ "(HTTP 401): invalid_token"
    refute error.message =~ updated["registration_access_token"]
  end

  @tag :tmp_dir
  test "mcp.register without --endpoint starts the embedded server and says so", %{tmp_dir: dir} do
    {stdout, stderr} = with_config_home(dir, fn -> run_task("mcp.register", ["--name", "Embedded"]) end)
    assert stderr =~ "No --endpoint given: started the embedded registration server at http://127.0.0.1:"
    assert stderr =~ "Not stored in the client store: the embedded server forgets its clients"
    assert File.ls!(dir) == [], "nothing is written under XDG_CONFIG_HOME"
    assert %{"client_name" => "Embedded", "application_type" => "native"} = decode!(stdout)
  end

  @tag :tmp_dir
  test "mcp.register --server discovers from the MCP URL, then registers", %{tmp_dir: dir} do
    server =
      start_supervised!(
        {RegistrationServer, port: 0, protected_resource: [resource: "/mcp", scopes_supported: ["mcp:read"]]},
        id: :prm
      )

    mcp_url = RegistrationServer.resource_url(server)
    store = Path.join(dir, "clients.dets")

    {stdout, stderr} =
      run_task("mcp.register", ["--server", mcp_url, "--name", "Discovered", "--store", store])

    printed = decode!(stdout)

    assert stderr =~
             "Protected resource metadata: #{RegistrationServer.url(server)}/.well-known/oauth-protected-resource/mcp"

    assert stderr =~
             "Registered client #{printed["client_id"]} at issuer #{RegistrationServer.url(server)} by dynamic registration"

    assert %{"registration_method" => "dynamic", "client_name" => "Discovered", "scope" => "mcp:read"} =
             printed

    assert printed["issuer"] == RegistrationServer.url(server)

    error =
      assert_raise Mix.Error, fn -> run_task("mcp.register", ["--server", "http://mcp.example.com/mcp"]) end

    assert error.message =~ "must use https"
  end

  test "errors are printed with format_error/1 and fail the task" do
    error =
      assert_raise Mix.Error, fn ->
        run_task("mcp.register", ["--endpoint", "http://auth.example.com/register"])
      end

    assert error.message ==
             "the endpoint must use https; plain http is allowed only to localhost, 127.0.0.0/8 or [::1]"

    assert_raise Mix.Error, ~r/unknown or malformed flag --bogus/, fn ->
      run_task("mcp.register", ["--bogus"])
    end

    assert_raise Mix.Error, ~r/usage: mix mcp.client/, fn -> run_task("mcp.client", ["frobnicate"]) end

    assert_raise Mix.Error, ~r/--from FILE, or both --uri and --token/, fn ->
      run_task("mcp.client", ["show"])
    end

    assert_raise Mix.Error, ~r/update needs at least one of/, fn ->
      run_task("mcp.client", ["update", "--uri", "http://127.0.0.1:1/r", "--token", "t"])
    end
  end

  describe "credential files" do
    @describetag :tmp_dir

    test "mcp.register --output creates the file with mode 0600: a reader of the old file never sees the secret",
         %{endpoint: endpoint, tmp_dir: dir} do
      file = Path.join(dir, "client.json")
      File.write!(file, "")
      File.chmod!(file, 0o644)
      # Someone who could open the file before the secret went in keeps that
      # descriptor: the secret must land in a new file, created 0600.
      {:ok, early_reader} = File.open(file, [:read, :binary])

      {stdout, _} =
        run_task("mcp.register", [
          "--endpoint",
          endpoint,
          "--auth-method",
          "client_secret_basic",
          "--output",
          file
        ])

      secret = decode!(stdout)["client_secret"]
      assert is_binary(secret)
      assert File.stat!(file).mode |> Bitwise.band(0o777) == 0o600
      assert decode!(File.read!(file))["client_secret"] == secret
      assert IO.binread(early_reader, :eof) == :eof, "the old inode stays empty"
      File.close(early_reader)
      assert File.ls!(dir) == ["client.json"], "no temporary file is left behind"
    end

    test "a credential file that cannot be written stops the task with the reason", %{
      endpoint: endpoint,
      tmp_dir: dir
    } do
      file = Path.join([dir, "missing-dir", "client.json"])

      error =
        assert_raise Mix.Error, fn -> run_task("mcp.register", ["--endpoint", endpoint, "--output", file]) end

      assert error.message =~ "cannot write #{file}"
    end
  end

  describe "rotated credentials are written back (RFC 7592 §2.1)" do
    @describetag :tmp_dir

    defp rotating_file(dir, server_answers) do
      server = ExMCP.Test.FixtureServer.start!(server_answers)
      uri = ExMCP.Test.FixtureServer.url(server, "/register/c1")
      file = Path.join(dir, "client.json")

      File.write!(
        file,
        ~s({"client_id":"c1","registration_client_uri":"#{uri}","registration_access_token":"tok-1"})
      )

      {server, file}
    end

    defp answer(status, token, extra \\ "") do
      {:respond, status, [{"content-type", "application/json"}],
       ~s({"client_id":"c1","client_name":"n","registration_access_token":"#{token}"#{extra}})}
    end

    test "mcp.client show writes a token the read rotated back to the file", %{tmp_dir: dir} do
      {_server, file} = rotating_file(dir, [answer(200, "tok-2")])

      {stdout, stderr} = run_task("mcp.client", ["show", "--from", file])
      assert decode!(stdout)["registration_access_token"] == "tok-2"
      assert stderr =~ "The server issued new credentials: updated #{file}"
      assert decode!(File.read!(file))["registration_access_token"] == "tok-2"
      assert File.stat!(file).mode |> Bitwise.band(0o777) == 0o600
    end

    test "mcp.client update that fails after a rotating read still writes the new token", %{tmp_dir: dir} do
      refusal =
        {:respond, 400, [{"content-type", "application/json"}],
         ~s({"error":"invalid_client_metadata","error_description":"no"})}

      {server, file} = rotating_file(dir, [answer(200, "tok-2", ~s(,"client_secret":"sec-2")), refusal])

      error =
        assert_raise Mix.Error, fn -> run_task("mcp.client", ["update", "--from", file, "--name", "x"]) end

      assert error.message =~ "(HTTP 400): invalid_client_metadata: no"
      assert error.message =~ "new credentials"
      refute error.message =~ "tok-2"
      saved = decode!(File.read!(file))
      assert {saved["registration_access_token"], saved["client_secret"]} == {"tok-2", "sec-2"}

      assert [_get, put] = ExMCP.Test.FixtureServer.requests(server)
      assert {"authorization", "Bearer tok-2"} in put.headers
    end
  end

  describe "the client store" do
    @describetag :tmp_dir

    setup %{tmp_dir: dir} do
      server =
        start_supervised!(
          {RegistrationServer,
           port: 0, protected_resource: [resource: "/mcp"], rotate_registration_access_token: true},
          id: :store_server
        )

      %{
        store_server: server,
        mcp_url: RegistrationServer.resource_url(server),
        issuer: RegistrationServer.url(server),
        store: Path.join(dir, "clients.dets")
      }
    end

    test "mcp.register --server registers once: the second run reuses the stored client", %{
      store_server: server,
      mcp_url: mcp_url,
      issuer: issuer,
      store: store
    } do
      args = ["--server", mcp_url, "--store", store, "--auth-method", "client_secret_basic"]

      {stdout, stderr} = run_task("mcp.register", args)
      first = decode!(stdout)

      assert stderr =~
               "Registered client #{first["client_id"]} at issuer #{issuer} by dynamic registration (RFC 7591); " <>
                 ~s(stored under client key "default" in the store #{store})

      assert File.stat!(store).mode |> Bitwise.band(0o777) == 0o600

      {stdout, stderr} = run_task("mcp.register", args)
      second = decode!(stdout)

      assert stderr =~
               ~s|Reused client #{first["client_id"]} of issuer #{issuer} (client key "default" in the store #{store}): no registration made|

      assert second == first
      assert RegistrationServer.count(server) == 1

      # Another client key is another client identity at the same issuer.
      {stdout, stderr} = run_task("mcp.register", args ++ ["--client-key", "ci"])
      other = decode!(stdout)
      assert other["client_id"] != first["client_id"]
      assert stderr =~ ~s(stored under client key "ci")
      assert RegistrationServer.count(server) == 2
      assert {:ok, %{client_id: id, issuer: ^issuer}} = stored(store, issuer, "ci")
      assert id == other["client_id"]
    end

    test "mcp.client list shows each stored client's issuer and key, never a secret", %{
      mcp_url: mcp_url,
      issuer: issuer,
      store: store
    } do
      {stdout, _} =
        run_task("mcp.register", [
          "--server",
          mcp_url,
          "--store",
          store,
          "--auth-method",
          "client_secret_basic"
        ])

      client = decode!(stdout)
      assert is_binary(client["client_secret"])
      {stdout, _} = run_task("mcp.register", ["--server", mcp_url, "--store", store, "--client-key", "ci"])
      ci = decode!(stdout)

      {stdout, stderr} = run_task("mcp.client", ["list", "--store", store])
      assert stderr == "2 stored in #{store}:\n"

      assert [header, row_ci, row_default] = String.split(stdout, "\n", trim: true)

      assert String.split(header, ~r/\s{2,}/) == [
               "ISSUER",
               "CLIENT KEY",
               "CLIENT ID",
               "METHOD",
               "SECRET EXPIRES"
             ]

      assert String.split(row_ci, ~r/\s{2,}/) == [issuer, "ci", ci["client_id"], "dynamic", "no secret"]

      assert String.split(row_default, ~r/\s{2,}/) == [
               issuer,
               "default",
               client["client_id"],
               "dynamic",
               "never"
             ]

      for secret <- [
            client["client_secret"],
            client["registration_access_token"],
            ci["registration_access_token"]
          ] do
        refute stdout <> stderr =~ secret
      end

      empty = Path.join(Path.dirname(store), "empty.dets")
      {:ok, pid} = ClientStore.DETS.start_link(name: :empty_store, path: empty)
      GenServer.stop(pid)
      assert run_task("mcp.client", ["list", "--store", empty]) == {"", "No clients stored in #{empty}\n"}

      missing = Path.join(Path.dirname(store), "missing.dets")
      error = assert_raise Mix.Error, fn -> run_task("mcp.client", ["list", "--store", missing]) end
      assert error.message =~ "no client store at #{missing}"
      refute File.exists?(missing), "reading a store never creates one"
    end

    test "mcp.client list shows secret expiry as a date, marks it expired, and survives a server's absurd number",
         %{store: store} do
      {:ok, pid} = ClientStore.DETS.start_link(name: :expiry_list_store, path: store)
      issuer = "https://as.example"

      for {key, at} <- [
            {"past", 1_000_000_000},
            {"future", 4_102_444_800},
            {"absurd", 100_000_000_000_000_000_000}
          ] do
        client = %{
          client_id: "id-" <> key,
          client_secret: "s3cret-" <> key,
          client_secret_expires_at: at,
          issuer: issuer,
          registration_method: :dynamic
        }

        :ok = ClientStore.put({ClientStore.DETS, :expiry_list_store}, issuer, key, client)
      end

      GenServer.stop(pid)
      {stdout, _} = run_task("mcp.client", ["list", "--store", store])
      rows = stdout |> String.split("\n", trim: true) |> tl() |> Enum.map(&String.split(&1, ~r/\s{2,}/))

      assert rows == [
               [issuer, "absurd", "id-absurd", "dynamic", "100000000000000000000 (Unix time)"],
               [issuer, "future", "id-future", "dynamic", "2100-01-01T00:00:00Z"],
               [issuer, "past", "id-past", "dynamic", "2001-09-09T01:46:40Z (expired)"]
             ]

      refute stdout =~ "s3cret"
    end

    test "mcp.client show, update and delete --issuer act through the store and persist a rotated token", %{
      store_server: server,
      mcp_url: mcp_url,
      issuer: issuer,
      store: store
    } do
      {stdout, _} = run_task("mcp.register", ["--server", mcp_url, "--store", store, "--scope", "mcp:read"])
      registered = decode!(stdout)

      # This server issues a new registration access token on every update.
      {stdout, stderr} =
        run_task("mcp.client", ["update", "--issuer", issuer, "--store", store, "--name", "Renamed"])

      updated = decode!(stdout)
      assert updated["client_name"] == "Renamed"
      assert updated["scope"] == "mcp:read"
      assert updated["issuer"] == issuer
      assert updated["registration_method"] == "dynamic"
      assert updated["registration_access_token"] != registered["registration_access_token"]

      assert stderr =~
               ~s(Updated the registration of client #{registered["client_id"]} of issuer #{issuer} ) <>
                 ~s|(client key "default" in the store #{store}), and stored the server's answer|

      refute stderr =~ updated["registration_access_token"]
      {:ok, kept} = stored(store, issuer)
      assert kept.registration_access_token == updated["registration_access_token"]
      assert kept.client_name == "Renamed"

      # Only the rotated token works now, and show finds it in the store.
      assert {:ok, _} = RegistrationServer.lookup(server, registered["client_id"])
      {stdout, stderr} = run_task("mcp.client", ["show", "--issuer", issuer, "--store", store])
      assert decode!(stdout)["client_name"] == "Renamed"
      assert stderr =~ "Read the registration of client #{registered["client_id"]} of issuer #{issuer}"
      refute stderr =~ "new credentials"

      {_, stderr} = run_task("mcp.client", ["delete", "--issuer", issuer, "--store", store])
      assert stderr =~ "Deleted the registration of client #{registered["client_id"]} of issuer #{issuer}"
      assert RegistrationServer.count(server) == 0
      assert stored(store, issuer) == :error

      error =
        assert_raise Mix.Error, fn ->
          run_task("mcp.client", ["show", "--issuer", issuer, "--store", store])
        end

      assert error.message =~ ~s(no client is stored for client key "default" at issuer #{issuer} in #{store})
    end

    test "mcp.client show --issuer stores a token the read rotated", %{store: store} do
      fixture =
        ExMCP.Test.FixtureServer.start!([
          {:respond, 200, [{"content-type", "application/json"}],
           ~s({"client_id":"c1","client_name":"n","registration_access_token":"tok-2"})}
        ])

      issuer = ExMCP.Test.FixtureServer.url(fixture, "")
      {:ok, pid} = ClientStore.DETS.start_link(name: :seeded_store, path: store)

      :ok =
        ClientStore.put({ClientStore.DETS, :seeded_store}, issuer, "default", %{
          client_id: "c1",
          issuer: issuer,
          registration_method: :dynamic,
          registration_client_uri: ExMCP.Test.FixtureServer.url(fixture, "/register/c1"),
          registration_access_token: "tok-1"
        })

      GenServer.stop(pid)

      {stdout, stderr} = run_task("mcp.client", ["show", "--issuer", issuer, "--store", store])
      assert decode!(stdout)["registration_access_token"] == "tok-2"
      assert stderr =~ "The server issued new credentials: stored them in #{store}"
      assert {:ok, %{registration_access_token: "tok-2", issuer: ^issuer}} = stored(store, issuer)
      assert [request] = ExMCP.Test.FixtureServer.requests(fixture)
      assert {"authorization", "Bearer tok-1"} in request.headers
    end

    test "--no-store registers every time and writes nothing; without it the default file is used", %{
      store_server: server,
      mcp_url: mcp_url,
      issuer: issuer,
      tmp_dir: dir
    } do
      config_home = Path.join(dir, "config")
      File.mkdir!(config_home)

      with_config_home(config_home, fn ->
        for _ <- 1..2 do
          {_, stderr} = run_task("mcp.register", ["--server", mcp_url, "--no-store"])
          assert stderr =~ "Not stored (--no-store)"
        end

        assert RegistrationServer.count(server) == 2
        assert File.ls!(config_home) == []

        {stdout, stderr} = run_task("mcp.register", ["--server", mcp_url])
        default = Path.join([config_home, "ex_mcp", "clients.dets"])
        assert stderr =~ ~s(stored under client key "default" in the store #{default})
        assert {:ok, %{client_id: id}} = stored(default, issuer)
        assert id == decode!(stdout)["client_id"]
        {_, stderr} = run_task("mcp.client", ["list"])
        assert stderr == "1 stored in #{default}:\n"
      end)

      assert RegistrationServer.count(server) == 3

      assert_raise Mix.Error, ~r/--no-store cannot go with --store or --client-key/, fn ->
        run_task("mcp.register", ["--server", mcp_url, "--no-store", "--store", Path.join(dir, "x.dets")])
      end
    end

    test "mcp.register --endpoint stores only under an --issuer it is given", %{
      store_server: server,
      issuer: issuer,
      store: store,
      tmp_dir: dir
    } do
      endpoint = RegistrationServer.registration_endpoint(server)

      {_, stderr} =
        with_config_home(dir, fn -> run_task("mcp.register", ["--endpoint", endpoint, "--store", store]) end)

      assert stderr =~ "Not stored in the client store: --endpoint skips discovery, so the issuer is unknown"
      refute File.exists?(store)

      args = ["--endpoint", endpoint, "--issuer", issuer, "--store", store]
      {stdout, stderr} = run_task("mcp.register", args)
      first = decode!(stdout)
      assert %{"issuer" => ^issuer, "registration_method" => "dynamic"} = first
      assert stderr =~ ~s(Registered client #{first["client_id"]} at issuer #{issuer})

      {stdout, stderr} = run_task("mcp.register", args)
      assert decode!(stdout)["client_id"] == first["client_id"]
      assert stderr =~ "Reused client #{first["client_id"]} of issuer #{issuer}"
      assert RegistrationServer.count(server) == 2

      # A redirect URI the stored client lacks needs a new registration.
      {stdout, stderr} = run_task("mcp.register", args ++ ["--redirect-uri", "http://127.0.0.1:7/cb"])
      third = decode!(stdout)
      assert stderr =~ "replacing client #{first["client_id"]}"
      assert {:ok, %{client_id: id}} = stored(store, issuer)
      assert id == third["client_id"]
      assert RegistrationServer.count(server) == 3
    end

    test "a corrupt store file is a clear error and a non-zero exit, and nothing is registered", %{
      store_server: server,
      mcp_url: mcp_url,
      issuer: issuer,
      store: store
    } do
      File.write!(store, "not a DETS file")

      error =
        assert_raise Mix.Error, fn -> run_task("mcp.register", ["--server", mcp_url, "--store", store]) end

      assert error.message =~
               "the client store failed: #{store} is not a DETS file (corrupt, or another format)"

      assert error.message =~ "--no-store skips the store"
      assert RegistrationServer.count(server) == 0

      for args <- [["list"], ["show", "--issuer", issuer]] do
        error = assert_raise Mix.Error, fn -> run_task("mcp.client", args ++ ["--store", store]) end
        assert error.message =~ "#{store} is not a DETS file"
      end

      assert File.read!(store) == "not a DETS file", "the file is left as it was"

      # The same through a real `mix` process: the message on stderr, exit status 1.
      {output, status} =
        System.cmd("mix", ["mcp.client", "list", "--store", store],
          cd: Path.expand("..", __DIR__),
          env: [{"MIX_ENV", "test"}],
          stderr_to_stdout: true
        )

      assert status == 1
      assert output =~ "#{store} is not a DETS file"
    end
  end

  test "mcp.register prints a localised refusal as valid UTF-8 instead of crashing" do
    # "x" then 2-byte characters: a cut after any even number of bytes splits one.
    description = "x" <> String.duplicate("ü", 400)

    server =
      ExMCP.Test.FixtureServer.start!(fn _ ->
        {:respond, 400, [{"content-type", "application/json"}],
         ExMCP.Test.JSON.encode!(%{"error" => "invalid_client_metadata", "error_description" => description})}
      end)

    error =
      assert_raise Mix.Error, fn ->
        run_task("mcp.register", ["--endpoint", ExMCP.Test.FixtureServer.url(server, "/register")])
      end

    assert String.valid?(error.message)
    assert error.message =~ ~r/\(HTTP 400\): invalid_client_metadata: xü+…\z/u
  end

  test "mcp.demo runs the whole cycle" do
    {stdout, _} = run_task("mcp.demo", [])

    for step <- [
          "0. The MCP server without a token\n   HTTP 401\n   WWW-Authenticate: Bearer resource_metadata=",
          "1. discover (RFC 9728 resource metadata, then RFC 8414)",
          "client_id_metadata_document_supported: true",
          "2. obtain_client through a Client ID Metadata Document",
          "registration_method: :client_id_metadata_document",
          "3. obtain_client through dynamic registration (RFC 7591 §3), kept in a client store",
          "registration_method: :dynamic",
          "4. obtain_client again, after reopening the store (as after a restart)",
          "(the same: true)\n   registrations on the server: 1\n",
          "5. ClientStore.get_client_information",
          "6. ClientStore.update_client_information",
          "7. ClientStore.delete_client (RFC 7592 §2.3)",
          ":ok; left in the store: :error"
        ] do
      assert stdout =~ step
    end

    # The embedded server fetched the demo's document and approved it.
    assert stdout =~
             ~r{/authorize and answered HTTP 302\n   → http://localhost:8080/callback\?code=[^&]+&state=demo-state&iss=}

    assert stdout =~
             "the server rotated the registration access token: true; the store holds the new one: true"

    assert stdout =~
             "8. reading the deleted client fails\n   the authorization server refused the request (HTTP 401)"

    assert stdout =~ "Clients left on the server: 0"
  end
end
