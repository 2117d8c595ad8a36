defmodule ExMCP.Authorization.MixTasksTest do
  # The main job's commands, run in-process against the embedded server.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO

  alias ExMCP.Authorization.{Native, RegistrationServer}

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

  test "mcp.register without --endpoint starts the embedded server and says so" do
    {stdout, stderr} = run_task("mcp.register", ["--name", "Embedded"])
    assert stderr =~ "No --endpoint given: started the embedded registration server at http://127.0.0.1:"
    assert %{"client_name" => "Embedded", "application_type" => "native"} = decode!(stdout)
  end

  test "mcp.register --server discovers from the MCP URL, then registers" do
    server =
      start_supervised!(
        {RegistrationServer, port: 0, protected_resource: [resource: "/mcp", scopes_supported: ["mcp:read"]]},
        id: :prm
      )

    mcp_url = RegistrationServer.resource_url(server)

    {stdout, stderr} = run_task("mcp.register", ["--server", mcp_url, "--name", "Discovered"])
    printed = decode!(stdout)

    assert stderr =~
             "Protected resource metadata: #{RegistrationServer.url(server)}/.well-known/oauth-protected-resource/mcp"

    assert stderr =~
             "Obtained client #{printed["client_id"]} from #{RegistrationServer.url(server)} by dynamic registration"

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
          "3. obtain_client through dynamic registration (RFC 7591 §3)",
          "registration_method: :dynamic",
          "4. get_client_information",
          "5. update_client_information",
          "6. delete_client"
        ] do
      assert stdout =~ step
    end

    # The embedded server fetched the demo's document and approved it.
    assert stdout =~
             ~r{/authorize and answered HTTP 302\n   → http://localhost:8080/callback\?code=[^&]+&state=demo-state&iss=}

    assert stdout =~ "the server rotated the registration access token: true"

    assert stdout =~
             "7. reading the deleted client fails\n   the authorization server refused the request (HTTP 401)"

    assert stdout =~ "Clients left on the server: 0"
  end
end
