//! The embedded server as an MCP protected resource (RFC 9728) and as an
//! authorization server that accepts Client ID Metadata Documents
//! (draft-ietf-oauth-client-id-metadata-document-00), over real HTTP on
//! 127.0.0.1. Documents are served by a small listener here that counts the
//! requests it gets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mcp_registration::server::{
    self, ClientIdDocuments, ProtectedResource, RunningServer, ServerConfig,
};
use reqwest::header::{LOCATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

/// What the document listener answers for one path.
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Canned {
    fn ok(body: Vec<u8>) -> Self {
        Canned {
            status: 200,
            headers: vec![],
            body,
        }
    }
}

#[derive(Clone, Default)]
struct DocumentHost {
    base: String,
    routes: Arc<Mutex<HashMap<String, Canned>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl DocumentHost {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = DocumentHost {
            base: format!("http://{}", listener.local_addr().unwrap()),
            ..Default::default()
        };
        let served = host.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let served = served.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    *served.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let canned = served.routes.lock().unwrap().get(&path).cloned();
                    let canned = canned.unwrap_or(Canned {
                        status: 404,
                        headers: vec![],
                        body: b"not found".to_vec(),
                    });
                    if canned.status == 0 {
                        // Never answer; hold the connection until the peer goes.
                        let _ = stream.read(&mut byte).await;
                        return;
                    }
                    let mut answer =
                        format!("HTTP/1.1 {} X\r\nconnection: close\r\n", canned.status);
                    // A body delimited by the connection's end when asked.
                    if !canned
                        .headers
                        .iter()
                        .any(|(name, _)| *name == "x-no-length")
                    {
                        answer.push_str(&format!("content-length: {}\r\n", canned.body.len()));
                    }
                    for (name, value) in &canned.headers {
                        answer.push_str(&format!("{name}: {value}\r\n"));
                    }
                    answer.push_str("\r\n");
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.write_all(&canned.body).await;
                });
            }
        });
        host
    }

    /// Serves `body` as JSON at `path`; returns the document URL.
    fn serve(&self, path: &str, body: &Value, cache_control: Option<&str>) -> String {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(cc) = cache_control {
            headers.push(("cache-control", cc.to_owned()));
        }
        self.routes.lock().unwrap().insert(
            path.to_owned(),
            Canned {
                status: 200,
                headers,
                body: serde_json::to_vec(body).unwrap(),
            },
        );
        format!("{}{path}", self.base)
    }

    fn canned(&self, path: &str, canned: Canned) -> String {
        self.routes.lock().unwrap().insert(path.to_owned(), canned);
        format!("{}{path}", self.base)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

const REDIRECT: &str = "http://127.0.0.1:8765/callback";

fn document(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "client_name": "CIMD test client",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none"
    })
}

fn start(documents: Option<ClientIdDocuments>) -> RunningServer {
    server::start(ServerConfig {
        protected_resource: Some(ProtectedResource {
            resource: "/mcp".into(),
            scopes_supported: vec!["mcp:read".into(), "mcp:write".into()],
            resource_name: Some("Test MCP server".into()),
        }),
        client_id_metadata_documents: documents,
        ..ServerConfig::default()
    })
    .unwrap()
}

fn development() -> Option<ClientIdDocuments> {
    Some(ClientIdDocuments {
        allow_loopback: true,
        ..ClientIdDocuments::default()
    })
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The answer to `/authorize` with PKCE and a state.
async fn authorize(
    server: &RunningServer,
    client_id: &str,
    redirect_uri: &str,
) -> reqwest::Response {
    let mut url = Url::parse(&format!("{}/authorize", server.base_url())).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair(
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        )
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "st-1");
    http().get(url).send().await.unwrap()
}

async fn json_of(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).expect("a JSON body")
}

fn redirect_params(response: &reqwest::Response) -> HashMap<String, String> {
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[LOCATION].to_str().unwrap();
    let url = Url::parse(location).unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    url.query_pairs().into_owned().collect()
}

async fn refusal(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body = json_of(response).await;
    (
        status,
        body["error"].as_str().unwrap().to_owned(),
        body["error_description"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9728_protected_resource_metadata_and_challenge() {
    let server = start(None);
    let base = server.base_url().to_owned();
    assert_eq!(server.resource(), Some(format!("{base}/mcp").as_str()));
    let expected = json!({
        "resource": format!("{base}/mcp"),
        "authorization_servers": [base],
        "scopes_supported": ["mcp:read", "mcp:write"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Test MCP server"
    });
    // §3.1 path-aware URL first, then the root one the MCP spec falls back to.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let response = http().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(json_of(response).await, expected, "{path}");
    }
    // §5.1: the resource answers 401 pointing at its metadata.
    let response = http().post(format!("{base}/mcp")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        format!(
            "Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:read mcp:write\""
        )
        .as_str()
    );
    // RFC 8414 §3.3: the issuer the resource names is the metadata's issuer.
    let metadata = json_of(
        http()
            .get(format!("{base}/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(metadata["issuer"], json!(base));
    assert_eq!(
        metadata["authorization_endpoint"],
        json!(format!("{base}/authorize"))
    );
    assert_eq!(
        metadata["scopes_supported"],
        json!(["mcp:read", "mcp:write"])
    );
    assert_eq!(metadata.get("client_id_metadata_document_supported"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft_5_metadata_advertises_documents() {
    let server = start(development());
    let metadata = json_of(
        http()
            .get(format!(
                "{}/.well-known/oauth-authorization-server",
                server.base_url()
            ))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        metadata["client_id_metadata_document_supported"],
        json!(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft_4_a_valid_document_gets_a_code() {
    let host = DocumentHost::start().await;
    let server = start(development());
    let url = format!("{}/client.json", host.base);
    host.serve("/client.json", &document(&url), None);
    let response = authorize(&server, &url, REDIRECT).await;
    let params = redirect_params(&response);
    assert_eq!(params["code"].len(), 43);
    assert_eq!(params["state"], "st-1");
    // RFC 9207 §2.
    assert_eq!(params["iss"], server.base_url());
    // A document without client_secret_* and without the method is public.
    let mut doc = document(&url);
    doc.as_object_mut()
        .unwrap()
        .remove("token_endpoint_auth_method");
    host.serve("/client.json", &doc, None);
    assert!(redirect_params(&authorize(&server, &url, REDIRECT).await).contains_key("code"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft_4_1_and_4_5_invalid_documents_are_invalid_client() {
    let host = DocumentHost::start().await;
    let server = start(development());
    let at = |path: &str| format!("{}{path}", host.base);

    let cases: Vec<(String, &str)> = vec![
        (
            host.serve("/other.json", &document("https://evil.example/c.json"), None),
            "does not equal the URL",
        ),
        (
            host.serve(
                "/secret.json",
                &json!({"client_id": at("/secret.json"), "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"}),
                None,
            ),
            "token_endpoint_auth_method",
        ),
        (
            host.serve(
                "/has-secret.json",
                &json!({"client_id": at("/has-secret.json"), "redirect_uris": [REDIRECT], "client_secret": "s"}),
                None,
            ),
            "client_secret",
        ),
        (
            host.serve(
                "/bad-redirect.json",
                &json!({"client_id": at("/bad-redirect.json"), "redirect_uris": ["javascript:alert(1)"]}),
                None,
            ),
            "redirect URIs",
        ),
        (
            host.serve(
                "/scheme.json",
                &json!({"client_id": at("/scheme.json"), "redirect_uris": ["myapp://cb"]}),
                None,
            ),
            "reverse domain name",
        ),
        (at("/missing.json"), "HTTP 404"),
        (
            host.canned(
                "/moved.json",
                Canned {
                    status: 302,
                    headers: vec![("location", at("/client.json"))],
                    body: vec![],
                },
            ),
            "redirect (HTTP 302), which is not followed",
        ),
        (
            host.canned(
                "/not-json.json",
                Canned {
                    status: 200,
                    headers: vec![],
                    body: b"<html>".to_vec(),
                },
            ),
            "not a JSON object",
        ),
        (
            host.canned(
                "/huge.json",
                Canned {
                    status: 200,
                    headers: vec![],
                    body: vec![b' '; 6 * 1024],
                },
            ),
            "larger than 5120 bytes",
        ),
    ];
    for (client_id, why) in cases {
        let (status, error, description) =
            refusal(authorize(&server, &client_id, REDIRECT).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{client_id}");
        assert_eq!(error, "invalid_client", "{client_id}");
        assert!(description.contains(why), "{client_id}: {description}");
    }
    assert_eq!(
        host.hits("/client.json"),
        0,
        "the redirect was not followed"
    );

    // §4.5: the redirect URI must be one the document lists, exactly.
    let url = host.serve("/client.json", &document(&at("/client.json")), None);
    let (status, error, _) =
        refusal(authorize(&server, &url, "http://127.0.0.1:8765/callback/other").await).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft_6_5_loopback_documents_need_the_development_option() {
    let host = DocumentHost::start().await;
    let server = start(Some(ClientIdDocuments::default()));
    let port = Url::parse(&host.base).unwrap().port().unwrap();
    host.serve("/client.json", &document("x"), None);
    // Plain http is refused before any lookup.
    let (_, error, description) =
        refusal(authorize(&server, &format!("{}/client.json", host.base), REDIRECT).await).await;
    assert_eq!(error, "invalid_client");
    assert!(description.contains("https"), "{description}");
    // A name that resolves to 127.0.0.1 is refused without connecting.
    let (_, error, description) = refusal(
        authorize(
            &server,
            &format!("https://localhost:{port}/client.json"),
            REDIRECT,
        )
        .await,
    )
    .await;
    assert_eq!(error, "invalid_client");
    assert!(description.contains("loopback address"), "{description}");
    // IP literals are checked without a lookup: loopback, private, cloud
    // metadata. Nothing is sent to any of them.
    for literal in [
        format!("https://127.0.0.1:{port}/client.json"),
        "https://10.0.0.1/client.json".to_owned(),
        "https://169.254.169.254/latest/client.json".to_owned(),
        "https://[fd00:ec2::254]/client.json".to_owned(),
    ] {
        let (_, error, description) = refusal(authorize(&server, &literal, REDIRECT).await).await;
        assert_eq!(error, "invalid_client", "{literal}");
        assert!(
            description.contains("address, which this server does not fetch from"),
            "{literal}: {description}"
        );
    }
    assert_eq!(host.hits("/client.json"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft_4_4_documents_are_cached_within_their_http_lifetime() {
    let host = DocumentHost::start().await;
    let server = start(development());
    let cached = format!("{}/cached.json", host.base);
    host.serve("/cached.json", &document(&cached), Some("max-age=60"));
    let fresh = format!("{}/fresh.json", host.base);
    host.serve("/fresh.json", &document(&fresh), Some("no-store"));
    for _ in 0..3 {
        redirect_params(&authorize(&server, &cached, REDIRECT).await);
        redirect_params(&authorize(&server, &fresh, REDIRECT).await);
    }
    assert_eq!(host.hits("/cached.json"), 1);
    assert_eq!(host.hits("/fresh.json"), 3);
    // An invalid document is never cached: fixing it takes effect at once.
    let broken = format!("{}/broken.json", host.base);
    host.serve(
        "/broken.json",
        &document("https://evil.example/c"),
        Some("max-age=60"),
    );
    refusal(authorize(&server, &broken, REDIRECT).await).await;
    host.serve("/broken.json", &document(&broken), Some("max-age=60"));
    redirect_params(&authorize(&server, &broken, REDIRECT).await);
    assert_eq!(host.hits("/broken.json"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_clients_and_oauth21_authorization_errors() {
    let server = start(None);
    let base = server.base_url().to_owned();
    let registered = json_of(http()
        .post(format!("{base}/register"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(json!({"client_name": "r", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}).to_string())
        .send().await.unwrap()).await;
    let client_id = registered["client_id"].as_str().unwrap();
    let params = redirect_params(&authorize(&server, client_id, REDIRECT).await);
    assert!(params.contains_key("code"));

    // Unknown client, or a document URL when documents are off: no redirect.
    let (_, error, _) = refusal(authorize(&server, "nobody", REDIRECT).await).await;
    assert_eq!(error, "invalid_client");
    let (_, error, description) =
        refusal(authorize(&server, "https://app.example.com/c.json", REDIRECT).await).await;
    assert_eq!(error, "invalid_client");
    assert!(description.contains("client_id_metadata_document_supported"));

    // Once the client and redirect URI are good, errors go to the client.
    let url = format!("{base}/authorize?response_type=code&client_id={client_id}&state=s");
    let response = http().get(url).send().await.unwrap();
    let params = redirect_params(&response);
    assert_eq!(params["error"], "invalid_request");
    assert!(params["error_description"].contains("code_challenge"));
    assert_eq!(params["state"], "s");
    let url =
        format!("{base}/authorize?response_type=token&client_id={client_id}&code_challenge=x");
    let params = redirect_params(&http().get(url).send().await.unwrap());
    assert_eq!(params["error"], "unsupported_response_type");
    let url = format!("{base}/authorize?client_id={client_id}&client_id=x");
    let (_, error, _) = refusal(http().get(url).send().await.unwrap()).await;
    assert_eq!(error, "invalid_request");
    let response = http()
        .post(format!("{base}/authorize"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft_6_6_bounded_reads_and_a_fetch_deadline() {
    let host = DocumentHost::start().await;
    let server = start(Some(ClientIdDocuments {
        allow_loopback: true,
        fetch_timeout: std::time::Duration::from_millis(300),
        ..ClientIdDocuments::default()
    }));
    // No Content-Length: the cap applies while reading.
    let mut endless = Canned::ok(vec![b' '; 64 * 1024]);
    endless.headers.push(("x-no-length", String::new()));
    let url = host.canned("/streamed.json", endless);
    let (_, error, description) = refusal(authorize(&server, &url, REDIRECT).await).await;
    assert_eq!(error, "invalid_client");
    assert!(
        description.contains("larger than 5120 bytes"),
        "{description}"
    );

    // A host that never answers: refused at the fetch deadline, not later.
    let url = host.canned(
        "/silent.json",
        Canned {
            status: 0,
            headers: vec![],
            body: vec![],
        },
    );
    let started = std::time::Instant::now();
    let (_, error, description) = refusal(authorize(&server, &url, REDIRECT).await).await;
    assert_eq!(error, "invalid_client");
    assert!(
        description.contains("timed out after 300 ms"),
        "{description}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
