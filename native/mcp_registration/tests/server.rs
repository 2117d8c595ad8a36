//! The embedded registration server against real HTTP on 127.0.0.1: raw
//! requests through reqwest, and this crate's own client (`Call`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcp_registration::server::{self, RunningServer, ServerConfig};
use mcp_registration::{Call, Error, Options, Outcome};
use reqwest::header::{HeaderMap, ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    fn description(&self) -> &str {
        self.body["error_description"].as_str().unwrap_or_default()
    }

    fn str(&self, field: &str) -> &str {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {}", self.body))
    }
}

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(server: &RunningServer) -> Self {
        Self {
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            base: server.base_url().to_owned(),
        }
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let response = request.send().await.expect("the request is answered");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("every answer body is JSON")
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        match body {
            Some(body) => {
                let bytes = serde_json::to_vec(&body).unwrap();
                self.raw(method, path, token, Some("application/json"), bytes)
                    .await
            }
            None => self.raw(method, path, token, None, Vec::new()).await,
        }
    }

    async fn register(&self, metadata: Value) -> Answer {
        self.send(Method::POST, "/register", None, Some(metadata))
            .await
    }
}

fn path_of(info: &Answer) -> String {
    let uri = info.str("registration_client_uri");
    let at = uri.find("/register/").unwrap();
    uri[at..].to_owned()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn public_client() -> Value {
    json!({
        "client_name": "Test Client",
        "redirect_uris": ["http://127.0.0.1:8080/callback"],
        "scope": "mcp:read"
    })
}

fn start(config: ServerConfig) -> RunningServer {
    server::start(config).expect("the server starts")
}

fn obj(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc8414_metadata_document() {
    let server = start(ServerConfig::default());
    let http = Http::new(&server);
    let answer = http
        .send(
            Method::GET,
            "/.well-known/oauth-authorization-server",
            None,
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let base = server.base_url();
    assert!(base.starts_with("http://127.0.0.1:"));
    assert_eq!(answer.body["issuer"], json!(base));
    assert_eq!(
        answer.body["registration_endpoint"],
        json!(format!("{base}/register"))
    );
    assert_eq!(server.registration_endpoint(), format!("{base}/register"));
    assert_eq!(
        answer.body["token_endpoint_auth_methods_supported"],
        json!(["none", "client_secret_basic", "client_secret_post"])
    );
    assert!(answer.body["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("authorization_code")));
    assert_eq!(answer.body["response_types_supported"], json!(["code"]));
    assert!(answer.body["token_endpoint"].is_string());
    assert!(answer.body["authorization_endpoint"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_read_update_delete_cycle() {
    let server = start(ServerConfig::default());
    let http = Http::new(&server);

    let before = now();
    let created = http
        .register(json!({
            "client_name": "Café 日本",
            "redirect_uris": ["http://127.0.0.1:8080/callback"],
            "logo_uri": "https://app.example.com/logo.png",
            "vendor_extension": {"a": 1}
        }))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.headers[CACHE_CONTROL], "no-store");
    assert_eq!(created.headers[CONTENT_TYPE], "application/json");
    let client_id = created.str("client_id").to_owned();
    let token = created.str("registration_access_token").to_owned();
    assert!(token.len() >= 43, "256 bits of entropy");
    assert!(created.body["client_id_issued_at"].as_i64().unwrap() >= before);
    assert_eq!(
        created.str("registration_client_uri"),
        format!("{}/register/{client_id}", server.base_url())
    );
    // RFC 7591 §2: no token_endpoint_auth_method means client_secret_basic,
    // so a secret is issued. Metadata echoed, RFC defaults applied, unknown
    // metadata ignored, and no application_type invented (SEP-837 is the
    // client's duty).
    assert_eq!(
        created.body["token_endpoint_auth_method"],
        json!("client_secret_basic")
    );
    let secret = created.str("client_secret").to_owned();
    assert!(secret.len() >= 43);
    assert_eq!(created.body["client_secret_expires_at"], json!(0));
    assert_eq!(created.body["client_name"], json!("Café 日本"));
    assert!(
        created.body.get("vendor_extension").is_none(),
        "RFC 7591 §2: unknown metadata is ignored, not echoed"
    );
    assert_eq!(created.body["grant_types"], json!(["authorization_code"]));
    assert_eq!(created.body["response_types"], json!(["code"]));
    assert!(created.body.get("application_type").is_none());
    assert!(!server
        .store()
        .lookup(&client_id)
        .unwrap()
        .document
        .contains_key("vendor_extension"));
    let path = path_of(&created);

    let read = http.send(Method::GET, &path, Some(&token), None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.headers[CACHE_CONTROL], "no-store");
    assert_eq!(read.body, created.body);

    // RFC 7592 §2.2: the PUT replaces the registration in full.
    let updated = http
        .send(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({
                "client_id": client_id,
                "client_name": "Renamed",
                "redirect_uris": ["https://app.example.com/cb"]
            })),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["client_name"], json!("Renamed"));
    assert!(
        updated.body.get("logo_uri").is_none(),
        "omitted fields are removed"
    );
    assert!(updated.body.get("application_type").is_none());
    // RFC 7592 §2.2: the omitted auth method resets to the RFC default, which
    // keeps the client confidential, with the same secret.
    assert_eq!(
        updated.body["token_endpoint_auth_method"],
        json!("client_secret_basic")
    );
    assert_eq!(updated.str("client_secret"), secret);
    assert_eq!(
        updated.str("registration_access_token"),
        token,
        "no rotation"
    );
    assert_eq!(
        updated.body["client_id_issued_at"],
        created.body["client_id_issued_at"]
    );
    let stored = server.store().lookup(&client_id).unwrap();
    assert_eq!(stored.document["client_name"], json!("Renamed"));

    let deleted = http.send(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(deleted.body, Value::Null);
    for method in [Method::GET, Method::DELETE] {
        let gone = http.send(method, &path, Some(&token), None).await;
        assert_eq!(gone.status, StatusCode::UNAUTHORIZED);
        assert_eq!(gone.error(), "invalid_token");
    }
    assert_eq!(server.store().count(), 0);
    assert!(server.store().lookup(&client_id).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_client_does_the_full_cycle() {
    let server = start(ServerConfig {
        rotate_registration_access_token: true,
        ..ServerConfig::default()
    });
    let mut request = obj(public_client());
    request.insert(
        "registration_endpoint".into(),
        json!(server.registration_endpoint()),
    );
    let Outcome::Client(info) = Call::register(request, Options::default())
        .unwrap()
        .run()
        .await
        .unwrap()
    else {
        panic!("registration returns client information")
    };
    let uri = info.document["registration_client_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = info.document["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let read = Call::read(&uri, token.clone(), Options::default())
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(read, Outcome::Client(info.clone()));

    // The client reads, merges and PUTs; the server rotates the token.
    let Outcome::Client(updated) = Call::update(
        &uri,
        token.clone(),
        obj(json!({"client_name": "v2", "scope": null})),
        false,
        Options::default(),
    )
    .unwrap()
    .run()
    .await
    .unwrap() else {
        panic!("update returns client information")
    };
    assert_eq!(updated.document["client_name"], json!("v2"));
    assert!(!updated.document.contains_key("scope"));
    assert_eq!(
        updated.document["redirect_uris"],
        info.document["redirect_uris"]
    );
    let new_token = updated.document["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_token, token);

    let stale = Call::read(&uri, token.clone(), Options::default())
        .unwrap()
        .run()
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::Registration { status: 401, .. }));

    assert_eq!(
        Call::delete(&uri, new_token.clone(), Options::default())
            .unwrap()
            .run()
            .await
            .unwrap(),
        Outcome::Deleted
    );
    let after = Call::read(&uri, new_token, Options::default())
        .unwrap()
        .run()
        .await
        .unwrap_err();
    assert!(matches!(after, Error::Registration { status: 401, .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confidential_clients_get_secrets_and_expired_ones_are_kept() {
    let server = start(ServerConfig::default());
    let http = Http::new(&server);
    let mut metadata = public_client();
    metadata["token_endpoint_auth_method"] = json!("client_secret_basic");
    let created = http.register(metadata).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(created.str("client_secret").len() >= 43);
    assert_eq!(created.body["client_secret_expires_at"], json!(0));

    let server = start(ServerConfig {
        client_secret_ttl: Some(Duration::from_secs(1)),
        ..ServerConfig::default()
    });
    let http = Http::new(&server);
    let mut metadata = public_client();
    metadata["token_endpoint_auth_method"] = json!("client_secret_post");
    let created = http.register(metadata).await;
    let expires_at = created.body["client_secret_expires_at"].as_i64().unwrap();
    assert!(expires_at > 0 && expires_at <= now() + 1);
    let secret = created.str("client_secret").to_owned();
    let token = created.str("registration_access_token").to_owned();
    let client_id = created.str("client_id").to_owned();

    while now() <= expires_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read = http
        .send(Method::GET, &path_of(&created), Some(&token), None)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(
        read.str("client_secret"),
        secret,
        "an expired secret is kept"
    );
    assert_eq!(read.body["client_secret_expires_at"], json!(expires_at));
    assert!(expires_at < now());
    let stored = server.store().lookup(&client_id).unwrap();
    assert_eq!(stored.document["client_secret"], json!(secret));
    assert_eq!(server.store().count(), 1);

    // Sending the current secret in an update is fine; another one is not.
    let mut put = json!({
        "client_id": client_id,
        "client_name": "x",
        "redirect_uris": ["https://a.example/cb"],
        "token_endpoint_auth_method": "client_secret_post",
        "client_secret": secret
    });
    let ok = http
        .send(
            Method::PUT,
            &path_of(&created),
            Some(&token),
            Some(put.clone()),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.str("client_secret"), secret);
    put["client_secret"] = json!("not-the-secret");
    let wrong = http
        .send(
            Method::PUT,
            &path_of(&created),
            Some(&token),
            Some(put.clone()),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong.error(), "invalid_client_metadata");
    assert!(wrong.description().contains("client_secret"));

    // Becoming a public client drops the secret.
    put.as_object_mut().unwrap().remove("client_secret");
    put["token_endpoint_auth_method"] = json!("none");
    let public = http
        .send(Method::PUT, &path_of(&created), Some(&token), Some(put))
        .await;
    assert_eq!(public.status, StatusCode::OK);
    assert!(public.body.get("client_secret").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_needs_the_right_token() {
    let server = start(ServerConfig::default());
    let http = Http::new(&server);
    let a = http.register(public_client()).await;
    let b = http.register(public_client()).await;
    let a_path = path_of(&a);
    let b_token = b.str("registration_access_token");
    for (token, path) in [
        (None, a_path.as_str()),
        (Some("wrong"), a_path.as_str()),
        (Some(b_token), a_path.as_str()),
        (Some(b_token), "/register/no-such-client"),
    ] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let body = (method == Method::PUT).then(|| json!({"client_id": a.str("client_id")}));
            let answer = http.send(method.clone(), path, token, body).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(
                answer.headers[WWW_AUTHENTICATE],
                "Bearer error=\"invalid_token\""
            );
            assert_eq!(answer.error(), "invalid_token");
        }
    }
    assert_eq!(server.store().count(), 2, "nothing was deleted");
    let basic = http
        .client
        .get(format!("{}{a_path}", http.base))
        .basic_auth("user", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_are_400_with_rfc7591_codes() {
    let server = start(ServerConfig::default());
    let http = Http::new(&server);
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"client_name": "x", "redirect_uris": ["javascript:alert(1)"]}),
            "invalid_redirect_uri",
            "forbidden scheme",
        ),
        (
            json!({"client_name": "x", "redirect_uris": ["http://evil.example/cb"]}),
            "invalid_redirect_uri",
            "not loopback",
        ),
        (
            json!({"client_name": "x", "redirect_uris": "https://a.example/cb"}),
            "invalid_redirect_uri",
            "array",
        ),
        (
            json!({"client_name": "x"}),
            "invalid_redirect_uri",
            "required by the authorization_code grant",
        ),
        (
            json!({"client_name": 7, "redirect_uris": ["https://a.example/cb"]}),
            "invalid_client_metadata",
            "client_name must be a string",
        ),
        (
            json!({"logo_uri": "javascript:x", "redirect_uris": ["https://a.example/cb"]}),
            "invalid_client_metadata",
            "logo_uri",
        ),
        (
            json!({"client_id": "mine", "redirect_uris": ["https://a.example/cb"]}),
            "invalid_client_metadata",
            "client_id",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "redirect_uris": ["https://a.example/cb"]}),
            "invalid_client_metadata",
            "not supported",
        ),
        (json!([1, 2]), "invalid_client_metadata", "JSON object"),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "jwks": {"keys": []}, "jwks_uri": "https://a.example/jwks"}),
            "invalid_client_metadata",
            "jwks must not be sent together with jwks_uri (RFC 7591 §2)",
        ),
        (
            json!({"redirect_uris": ["myapp://callback"]}),
            "invalid_redirect_uri",
            "not a reverse domain name",
        ),
    ];
    for (body, error, description) in cases {
        let answer = http.register(body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.error(), error, "{body}: {}", answer.body);
        assert!(
            answer.description().contains(description),
            "{body}: {}",
            answer.description()
        );
    }
    // A client without a redirect-based grant needs no redirect URIs.
    let machine = http
        .register(json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic"}))
        .await;
    assert_eq!(machine.status, StatusCode::CREATED, "{}", machine.body);

    let malformed = http
        .raw(
            Method::POST,
            "/register",
            None,
            Some("application/json"),
            b"{\"client_name\":".to_vec(),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error(), "invalid_client_metadata");
    assert!(malformed.description().contains("not valid JSON"));

    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let answer = http
            .raw(
                Method::POST,
                "/register",
                None,
                content_type,
                serde_json::to_vec(&public_client()).unwrap(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{content_type:?}");
        assert!(answer.description().contains("Content-Type"));
    }
    let with_charset = http
        .raw(
            Method::POST,
            "/register",
            None,
            Some("Application/JSON; charset=utf-8"),
            serde_json::to_vec(&public_client()).unwrap(),
        )
        .await;
    assert_eq!(with_charset.status, StatusCode::CREATED);
    assert_eq!(server.store().count(), 2);
}

/// RFC 8252 §7: what a native client may register as a redirect URI here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc8252_native_redirect_uris_are_accepted() {
    let server = start(ServerConfig::default());
    let http = Http::new(&server);
    for uri in [
        "http://127.0.0.1:53123/cb",
        "http://[::1]:8080/cb",
        "http://localhost:3000/callback",
        "com.example.app:/oauth2redirect",
        "https://app.example.com/claimed",
    ] {
        let answer = http.register(json!({"redirect_uris": [uri]})).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{uri}: {}", answer.body);
    }
}

/// RFC 7592 §2.2: an omitted field is reset to its default, and the default
/// `token_endpoint_auth_method` is RFC 7591 §2's `client_secret_basic`: a
/// public client whose PUT omits it becomes confidential, and its new secret
/// is in the answer. Only an explicit `none` makes a client public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7592_2_2_an_omitted_auth_method_resets_to_the_rfc_default() {
    let server = start(ServerConfig::default());
    let http = Http::new(&server);
    let mut metadata = public_client();
    metadata["token_endpoint_auth_method"] = json!("none");
    let created = http.register(metadata).await;
    assert!(created.body.get("client_secret").is_none());
    let token = created.str("registration_access_token");
    let put =
        json!({"client_id": created.str("client_id"), "redirect_uris": ["http://127.0.0.1:1/cb"]});
    let updated = http
        .send(Method::PUT, &path_of(&created), Some(token), Some(put))
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(
        updated.body["token_endpoint_auth_method"],
        json!("client_secret_basic")
    );
    assert!(updated.str("client_secret").len() >= 43);
    assert_eq!(updated.body["client_secret_expires_at"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7592_put_rules() {
    let server = start(ServerConfig::default());
    let http = Http::new(&server);
    let created = http.register(public_client()).await;
    let path = path_of(&created);
    let token = created.str("registration_access_token");
    let client_id = created.str("client_id");
    let valid = json!({"client_id": client_id, "redirect_uris": ["https://a.example/cb"]});
    for field in [
        "registration_access_token",
        "registration_client_uri",
        "client_secret_expires_at",
        "client_id_issued_at",
    ] {
        let mut body = valid.clone();
        body[field] = created.body.get(field).cloned().unwrap_or(json!(0));
        let answer = http.send(Method::PUT, &path, Some(token), Some(body)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{field}");
        assert_eq!(answer.error(), "invalid_client_metadata");
        assert!(answer.description().contains(field));
    }
    let mut other_id = valid.clone();
    other_id["client_id"] = json!("someone-else");
    let no_id = json!({"redirect_uris": ["https://a.example/cb"]});
    let mut bad_uri = valid.clone();
    bad_uri["redirect_uris"] = json!(["https://a.example/cb#frag"]);
    for (body, error) in [
        (other_id, "invalid_client_metadata"),
        (no_id, "invalid_client_metadata"),
        (bad_uri, "invalid_redirect_uri"),
    ] {
        let answer = http
            .send(Method::PUT, &path, Some(token), Some(body.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.error(), error, "{body}");
    }
    let unchanged = server.store().lookup(client_id).unwrap();
    assert_eq!(unchanged.document["client_name"], json!("Test Client"));
    let ok = http
        .send(Method::PUT, &path, Some(token), Some(valid))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.body.get("client_name").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413() {
    let server = start(ServerConfig::default());
    let http = Http::new(&server);
    let mut big = public_client();
    big["client_name"] = json!("x".repeat(70 * 1024));
    let answer = http.register(big.clone()).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.description().contains("65536"));
    assert_eq!(server.store().count(), 0);

    let created = http.register(public_client()).await;
    let token = created.str("registration_access_token");
    big["client_id"] = json!(created.str("client_id"));
    let put = http
        .send(Method::PUT, &path_of(&created), Some(token), Some(big))
        .await;
    assert_eq!(put.status, StatusCode::PAYLOAD_TOO_LARGE);

    let small = start(ServerConfig {
        max_body_bytes: 32,
        ..ServerConfig::default()
    });
    let answer = Http::new(&small).register(public_client()).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[test]
fn chunked_bodies_over_the_limit_are_413() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = server::start_on(runtime.handle(), ServerConfig::default()).unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(
            b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 8192, "x".repeat(8192));
    for _ in 0..9 {
        stream.write_all(chunk.as_bytes()).unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"));
    assert_eq!(server.store().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_are_405_with_allow_and_unknown_paths_404() {
    let server = start(ServerConfig::default());
    let http = Http::new(&server);
    for (method, path, allow) in [
        (Method::GET, "/register", "POST"),
        (Method::DELETE, "/register", "POST"),
        (Method::PATCH, "/register/abc", "GET, PUT, DELETE"),
        (Method::POST, "/register/abc", "GET, PUT, DELETE"),
        (
            Method::POST,
            "/.well-known/oauth-authorization-server",
            "GET",
        ),
    ] {
        let answer = http.send(method.clone(), path, None, Some(json!({}))).await;
        assert_eq!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(answer.headers[ALLOW], allow, "{method} {path}");
    }
    for path in ["/", "/nope", "/register/", "/register/a/b", "/registerx"] {
        let answer = http.send(Method::GET, path, None, None).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.error(), "not_found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_access_token_is_required_when_configured() {
    let server = start(ServerConfig {
        require_initial_access_token: Some("let-me-in".into()),
        ..ServerConfig::default()
    });
    let http = Http::new(&server);
    for token in [None, Some("wrong"), Some("let-me-i"), Some("let-me-inn")] {
        let answer = http
            .send(Method::POST, "/register", token, Some(public_client()))
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(
            answer.headers[WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
    }
    let answer = http
        .send(
            Method::POST,
            "/register",
            Some("let-me-in"),
            Some(public_client()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);

    // Through our own client's option.
    let mut request = obj(public_client());
    request.insert(
        "registration_endpoint".into(),
        json!(server.registration_endpoint()),
    );
    let options = Options {
        initial_access_token: Some(mcp_registration::Secret::new("t", "let-me-in".into()).unwrap()),
        ..Options::default()
    };
    assert!(Call::register(request, options)
        .unwrap()
        .run()
        .await
        .is_ok());
    assert_eq!(server.store().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_invalidates_the_old_token() {
    let server = start(ServerConfig {
        rotate_registration_access_token: true,
        ..ServerConfig::default()
    });
    let http = Http::new(&server);
    let created = http.register(public_client()).await;
    let path = path_of(&created);
    let mut token = created.str("registration_access_token").to_owned();
    for _ in 0..3 {
        let updated = http
            .send(
                Method::PUT,
                &path,
                Some(&token),
                Some(json!({"client_id": created.str("client_id"), "redirect_uris": ["https://a.example/cb"]})),
            )
            .await;
        assert_eq!(updated.status, StatusCode::OK);
        let rotated = updated.str("registration_access_token").to_owned();
        assert_ne!(rotated, token);
        let old = http.send(Method::GET, &path, Some(&token), None).await;
        assert_eq!(old.status, StatusCode::UNAUTHORIZED);
        let new = http.send(Method::GET, &path, Some(&rotated), None).await;
        assert_eq!(new.status, StatusCode::OK);
        token = rotated;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_registrations() {
    let server = start(ServerConfig::default());
    let http = std::sync::Arc::new(Http::new(&server));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let http = std::sync::Arc::clone(&http);
            tokio::spawn(async move {
                let mut metadata = public_client();
                metadata["client_name"] = json!(format!("client {i}"));
                http.register(metadata).await.str("client_id").to_owned()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 64);
    assert_eq!(server.store().count(), 64);
    assert_eq!(server.store().list().len(), 64);
}

fn refused(addr: std::net::SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_listener_and_connections_promptly() {
    let server = start(ServerConfig::default());
    let addr = server.local_addr();
    // An idle keep-alive connection, and one stuck halfway through its headers.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buffer = [0u8; 4096];
    let n = idle.read(&mut buffer).unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    // The stuck one is first answered once, which proves the server accepted
    // it and is serving it (the event a sleep would only make likely), then
    // sends half of a second request.
    let mut stuck = TcpStream::connect(addr).unwrap();
    stuck
        .write_all(b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let n = stuck.read(&mut buffer).unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    stuck
        .write_all(b"POST /register HTTP/1.1\r\nHost: x\r\n")
        .unwrap();

    stop_within(&server, Duration::from_millis(1500)).await;
    assert!(server.shutdown_handle().is_stopped());
    assert!(refused(addr), "the listener is closed");
    for mut stream in [idle, stuck] {
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let read = stream.read(&mut buffer);
        assert!(
            matches!(read, Ok(0))
                || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "the connection is closed: {read:?}"
        );
    }
}

#[test]
fn dropping_the_server_stops_it_and_start_on_needs_no_runtime_context() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // From a plain thread, with only a handle: binding is synchronous.
    let server = server::start_on(runtime.handle(), ServerConfig::default()).unwrap();
    let addr = server.local_addr();
    assert!(!refused(addr));
    let handle = server.shutdown_handle();
    drop(server);
    assert!(handle.wait_stopped(Duration::from_secs(2)));
    assert!(refused(addr));

    // A port in use is a bind error.
    let first = server::start_on(runtime.handle(), ServerConfig::default()).unwrap();
    let taken = ServerConfig {
        bind: first.local_addr(),
        ..ServerConfig::default()
    };
    let error = server::start_on(runtime.handle(), taken).unwrap_err();
    assert!(matches!(&error, server::ServerError::Bind { source, .. }
        if source.kind() == std::io::ErrorKind::AddrInUse));
}

/// What a client that uploads its whole body before reading got.
#[derive(Debug, Default, PartialEq)]
struct Upload {
    /// A write failed: the server had reset the connection. Clients that
    /// stop there (Erlang's passive `gen_tcp`, curl) never see the answer.
    write_failed: bool,
    /// The answer read afterwards, if any.
    answer: Vec<u8>,
}

/// Sends `head`, waits until the server's answer has arrived (without
/// reading it), then sends `body` in 4 KiB pieces and reads the answer.
fn upload_after_the_answer(addr: std::net::SocketAddr, head: &str, body: usize) -> Upload {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    // Blocks until the answer is in this socket's receive queue: the server
    // has written it and decided to close the connection.
    stream.peek(&mut [0u8; 1]).unwrap();
    let mut outcome = Upload::default();
    let piece = [b'x'; 4096];
    let mut left = body;
    while left > 0 {
        let n = left.min(piece.len());
        if stream.write_all(&piece[..n]).is_err() {
            outcome.write_failed = true;
            break;
        }
        left -= n;
    }
    let _ = stream.read_to_end(&mut outcome.answer);
    outcome
}

fn head_413(content_length: usize, extra: &str) -> String {
    format!(
        "POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {content_length}\r\n{extra}\r\n"
    )
}

fn assert_all_answered(outcomes: &[Upload]) {
    let failed = outcomes.iter().filter(|o| o.write_failed).count();
    let unanswered = outcomes
        .iter()
        .filter(|o| !o.answer.starts_with(b"HTTP/1.1 413 "))
        .count();
    assert_eq!(
        (failed, unanswered),
        (0, 0),
        "of {}: {failed} uploads were reset, {unanswered} without a 413",
        outcomes.len()
    );
}

/// A client announcing `Expect: 100-continue` is refused from the headers;
/// one that sends its body anyway (curl does after a second) must still be
/// able to upload it and read the 413: the server reads and drops the rest
/// after answering instead of resetting the connection.
#[test]
fn an_early_413_survives_the_rest_of_the_upload() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = server::start_on(runtime.handle(), ServerConfig::default()).unwrap();
    let head = head_413(200_000, "Expect: 100-continue\r\n");
    let outcomes: Vec<Upload> = (0..200)
        .map(|_| upload_after_the_answer(server.local_addr(), &head, 200_000))
        .collect();
    assert_all_answered(&outcomes);
    assert_eq!(server.store().count(), 0);
}

/// The server waits up to 2 s for an oversized body before answering 413; a
/// client still sending after that (a busy machine, a slow link) must get
/// to finish and read the answer. 100 such clients at once.
#[test]
fn a_413_after_the_body_wait_survives_the_rest_of_the_upload() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = server::start_on(runtime.handle(), ServerConfig::default()).unwrap();
    let addr = server.local_addr();
    let head = head_413(200_000, "");
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let head = head.clone();
            std::thread::spawn(move || upload_after_the_answer(addr, &head, 200_000))
        })
        .collect();
    let outcomes: Vec<Upload> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_all_answered(&outcomes);
}

/// Connects, sends headers refused at once (`Expect: 100-continue` and a
/// body over the limit) and reads the whole 413: the server has answered
/// and shut its side down, and now lingers.
fn refused_upload(addr: std::net::SocketAddr, content_length: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(head_413(content_length, "Expect: 100-continue\r\n").as_bytes())
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 413 "));
    stream
}

/// Writes `piece` until a write fails (the server has closed for good) or
/// `cap` bytes went through; returns how many bytes went through.
fn write_until_reset(stream: &mut TcpStream, piece: &[u8], cap: usize, pause: Duration) -> usize {
    let mut written = 0;
    while written < cap {
        if stream.write_all(piece).is_err() {
            return written;
        }
        written += piece.len();
        std::thread::sleep(pause);
    }
    written
}

#[test]
fn lingering_reads_at_most_a_mebibyte() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = server::start_on(runtime.handle(), ServerConfig::default()).unwrap();
    let mut stream = refused_upload(server.local_addr(), 1 << 30);
    let cap = 256 << 20;
    let written = write_until_reset(&mut stream, &[b'x'; 64 * 1024], cap, Duration::ZERO);
    // The server read its mebibyte, then closed; what else went through sat
    // in the socket buffers.
    assert!((1 << 20..cap).contains(&written), "{written}");
}

#[test]
fn lingering_ends_after_two_seconds() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = server::start_on(runtime.handle(), ServerConfig::default()).unwrap();
    let mut stream = refused_upload(server.local_addr(), 200_000);
    let started = Instant::now();
    // A byte every 20 ms: within every limit but time.
    let written = write_until_reset(&mut stream, b"x", 200_000, Duration::from_millis(20));
    let elapsed = started.elapsed();
    assert!(written < 200_000);
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_connection_does_not_hold_up_shutdown() {
    let server = start(ServerConfig::default());
    let addr = server.local_addr();
    // Answered, shut down by the server, and left open by the client.
    let stream = tokio::task::spawn_blocking(move || refused_upload(addr, 200_000))
        .await
        .unwrap();
    stop_within(&server, Duration::from_millis(500)).await;
    drop(stream);
}

/// Stops `server` and asserts it has stopped within `limit`.
async fn stop_within(server: &RunningServer, limit: Duration) {
    let started = Instant::now();
    server.shutdown();
    tokio::time::timeout(Duration::from_secs(2), server.stopped())
        .await
        .expect("stops promptly");
    assert!(started.elapsed() < limit, "{:?}", started.elapsed());
}
