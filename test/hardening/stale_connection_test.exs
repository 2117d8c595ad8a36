defmodule ExMCP.Hardening.StaleConnectionTest do
  # A server that closes a keep-alive connection just as the client reuses
  # it: the request is taken and the connection closed without an answer.
  # GET, PUT and DELETE are idempotent (RFC 9110 §9.2.2), so they are sent
  # once more; a POST may have reached the server and is never repeated
  # (RFC 9112 §9.3.1).
  use ExUnit.Case, async: true

  alias ExMCP.Authorization.ClientRegistration, as: CR
  alias ExMCP.Test.FixtureServer

  import ExMCP.Test.FixtureServer, only: [registration_request: 1]

  @json [{"content-type", "application/json"}]
  @client ~s({"client_id":"c1","client_name":"Old"})

  test "a read whose connection closes before the answer is sent once more" do
    server = FixtureServer.start!([{:respond, 200, @json, @client}, :close, {:respond, 200, @json, @client}])
    uri = FixtureServer.url(server, "/register/c1")

    assert {:ok, %{client_id: "c1"}} = CR.get_client_information(uri, "rat")
    assert {:ok, %{client_id: "c1"}} = CR.get_client_information(uri, "rat")
    assert Enum.map(FixtureServer.requests(server), & &1.method) == ["GET", "GET", "GET"]
  end

  test "an update's PUT whose connection closes before the answer is sent once more" do
    server =
      FixtureServer.start!([
        {:respond, 200, @json, @client},
        :close,
        {:respond, 200, @json, ~s({"client_id":"c1","client_name":"New"})}
      ])

    uri = FixtureServer.url(server, "/register/c1")

    assert {:ok, %{client_name: "New"}} = CR.update_client_information(uri, "rat", %{client_name: "New"})
    assert Enum.map(FixtureServer.requests(server), & &1.method) == ["GET", "PUT", "PUT"]
  end

  test "a registration whose connection closes before the answer is not sent again" do
    server = FixtureServer.start!([{:respond, 201, @json, @client}, :close, {:respond, 201, @json, @client}])

    assert {:ok, _} = CR.register_client(registration_request(server))
    assert {:error, {:request_failed, {:connection, _}}} = CR.register_client(registration_request(server))
    assert Enum.map(FixtureServer.requests(server), & &1.method) == ["POST", "POST"]
  end
end
