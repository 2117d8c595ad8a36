-- wrk posts the same registration document the other runners send.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.body = '{"client_name":"Benchmark Client","redirect_uris":["http://127.0.0.1:8080/callback"],'
  .. '"scope":"mcp:read mcp:write","grant_types":["authorization_code"],"response_types":["code"],'
  .. '"token_endpoint_auth_method":"none","application_type":"native"}'
