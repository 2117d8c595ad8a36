//! Discovery against a scripted loopback server: every order case of the
//! MCP specification, 4xx versus 5xx, redirects, and the §3.3 checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::net_guard::{AddressPolicy, GuardedResolver, Lookup};

type Routes = Arc<Mutex<HashMap<String, (u16, Vec<(String, String)>, String)>>>;

/// Answers each route's canned response; anything else is a 404. Records
/// the paths asked for, in order.
struct Fixture {
    base: String,
    routes: Routes,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Fixture {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Routes = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, s) = (Arc::clone(&routes), Arc::clone(&seen));
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (routes, seen) = (Arc::clone(&r), Arc::clone(&s));
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split(' ').nth(1).unwrap_or("").to_owned();
                    seen.lock().unwrap().push(path.clone());
                    let (status, headers, body) = routes
                        .lock()
                        .unwrap()
                        .get(&path)
                        .cloned()
                        .unwrap_or((404, vec![], "{\"error\":\"not found\"}".into()));
                    if status == 0 {
                        // Never answer: the caller's deadline must end it.
                        let _ = socket.read(&mut buf).await;
                        return;
                    }
                    let mut answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                        body.len()
                    );
                    for (name, value) in headers {
                        answer.push_str(&format!("{name}: {value}\r\n"));
                    }
                    answer.push_str("\r\n");
                    answer.push_str(&body);
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { base, routes, seen }
    }

    fn json(&self, path: &str, document: Value) {
        self.respond(path, 200, vec![], document.to_string());
    }

    fn respond(&self, path: &str, status: u16, headers: Vec<(&str, String)>, body: String) {
        let headers = headers
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect();
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), (status, headers, body));
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn as_document(&self, issuer: &str) -> Value {
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{}/authorize", self.base),
            "token_endpoint": format!("{}/token", self.base),
            "registration_endpoint": format!("{}/register", self.base),
            "code_challenge_methods_supported": ["S256"],
            "x-vendor": {"a": 1}
        })
    }
}

async fn discover(server_url: &str, www: &[&str]) -> Result<Discovery, Error> {
    discover_with(server_url, www, None, None).await
}

async fn discover_with(
    server_url: &str,
    www: &[&str],
    resource_metadata_url: Option<&str>,
    issuer: Option<&str>,
) -> Result<Discovery, Error> {
    let options = Options {
        timeout: Duration::from_secs(5),
        ..Options::default()
    };
    discover_options(server_url, www, resource_metadata_url, issuer, options).await
}

async fn discover_options(
    server_url: &str,
    www: &[&str],
    resource_metadata_url: Option<&str>,
    issuer: Option<&str>,
    options: Options,
) -> Result<Discovery, Error> {
    let www: Vec<String> = www.iter().map(|s| s.to_string()).collect();
    Discover::new(
        server_url,
        &www,
        resource_metadata_url,
        issuer,
        false,
        options,
    )?
    .run()
    .await
}

#[tokio::test]
async fn rfc9728_path_aware_url_first_then_rfc8414_for_an_issuer_without_path() {
    let f = Fixture::start().await;
    f.json(
        "/.well-known/oauth-protected-resource/mcp",
        json!({"resource": f.url("/mcp"), "authorization_servers": [f.base], "scopes_supported": ["mcp:read", "mcp:write"]}),
    );
    f.json(
        "/.well-known/oauth-authorization-server",
        f.as_document(&f.base),
    );
    let found = discover(&f.url("/mcp"), &[]).await.unwrap();
    assert_eq!(
        f.seen(),
        [
            "/.well-known/oauth-protected-resource/mcp",
            "/.well-known/oauth-authorization-server"
        ]
    );
    assert_eq!(found.resource, f.url("/mcp"));
    assert_eq!(found.issuer, f.base);
    assert_eq!(found.scope.as_deref(), Some("mcp:read mcp:write"));
    assert_eq!(
        found.authorization_server_metadata,
        MetadataSource::Discovered(f.url("/.well-known/oauth-authorization-server"))
    );
    assert_eq!(
        found.resource_metadata_url,
        Some(f.url("/.well-known/oauth-protected-resource/mcp"))
    );
}

#[tokio::test]
async fn rfc9728_root_url_after_a_404_and_openid_configuration_after_a_404() {
    let f = Fixture::start().await;
    f.json(
        "/.well-known/oauth-protected-resource",
        json!({"resource": f.base, "authorization_servers": [f.base]}),
    );
    f.json("/.well-known/openid-configuration", f.as_document(&f.base));
    let found = discover(&f.url("/mcp/v1/"), &[]).await.unwrap();
    assert_eq!(
        f.seen(),
        [
            "/.well-known/oauth-protected-resource/mcp/v1",
            "/.well-known/oauth-protected-resource",
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration"
        ]
    );
    assert_eq!(found.scope, None);
    // The metadata's own string, not a normalized form of it.
    assert_eq!(found.resource, f.base);
}

#[tokio::test]
async fn the_challenges_resource_metadata_and_scope_come_first() {
    let f = Fixture::start().await;
    f.json(
        "/meta/prm",
        json!({"resource": f.url("/mcp"), "authorization_servers": [f.base], "scopes_supported": ["a", "b"]}),
    );
    f.json(
        "/.well-known/oauth-authorization-server",
        f.as_document(&f.base),
    );
    let header = format!(
        r#"Basic realm="x", Bearer error="invalid_token", resource_metadata="{}", scope="files:read""#,
        f.url("/meta/prm")
    );
    let found = discover(&f.url("/mcp"), &[&header]).await.unwrap();
    assert_eq!(f.seen()[0], "/meta/prm");
    assert_eq!(f.seen().len(), 2);
    assert_eq!(found.scope.as_deref(), Some("files:read"));
    assert!(found.resource_metadata.is_some());
}

#[tokio::test]
async fn an_issuer_with_a_path_tries_the_three_urls_in_the_specs_order() {
    let f = Fixture::start().await;
    let issuer = f.url("/tenant/one");
    f.json(
        "/.well-known/oauth-protected-resource/mcp",
        json!({"resource": f.url("/mcp"), "authorization_servers": [issuer]}),
    );
    f.json(
        "/tenant/one/.well-known/openid-configuration",
        f.as_document(&issuer),
    );
    let found = discover(&f.url("/mcp"), &[]).await.unwrap();
    assert_eq!(
        f.seen()[1..],
        [
            "/.well-known/oauth-authorization-server/tenant/one",
            "/.well-known/openid-configuration/tenant/one",
            "/tenant/one/.well-known/openid-configuration"
        ]
    );
    assert_eq!(found.issuer, issuer);

    // The first of the three wins when it answers.
    let g = Fixture::start().await;
    let issuer = g.url("/t");
    g.json(
        "/.well-known/oauth-authorization-server/t",
        g.as_document(&issuer),
    );
    g.json("/.well-known/openid-configuration/t", json!({}));
    discover_with(&g.url("/mcp"), &[], None, Some(&issuer))
        .await
        .unwrap();
    assert_eq!(g.seen(), ["/.well-known/oauth-authorization-server/t"]);
}

#[tokio::test]
async fn a_5xx_stops_discovery_and_names_the_url() {
    let f = Fixture::start().await;
    f.respond(
        "/.well-known/oauth-protected-resource/mcp",
        503,
        vec![],
        "busy".into(),
    );
    let err = discover(&f.url("/mcp"), &[]).await.unwrap_err();
    match err {
        Error::Discovery(DiscoveryError::Fetch { url, cause }) => {
            assert_eq!(url, f.url("/.well-known/oauth-protected-resource/mcp"));
            assert!(matches!(*cause, Error::Http { status: 503, .. }));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.seen().len(), 1, "no request after a 5xx");
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let f = Fixture::start().await;
    f.respond(
        "/.well-known/oauth-protected-resource/mcp",
        302,
        vec![("location", f.url("/elsewhere"))],
        String::new(),
    );
    f.json(
        "/elsewhere",
        json!({"resource": f.url("/mcp"), "authorization_servers": [f.base]}),
    );
    let err = discover(&f.url("/mcp"), &[]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Discovery(DiscoveryError::Fetch { cause, .. }) if matches!(**cause, Error::Http { status: 302, .. })),
        "{err:?}"
    );
    assert_eq!(f.seen(), ["/.well-known/oauth-protected-resource/mcp"]);
}

#[tokio::test]
async fn rfc8414_section_3_3_the_issuer_must_match() {
    let f = Fixture::start().await;
    f.json(
        "/.well-known/oauth-protected-resource",
        json!({"resource": f.base, "authorization_servers": [f.base]}),
    );
    f.json(
        "/.well-known/oauth-authorization-server",
        f.as_document("https://evil.example.com"),
    );
    let err = discover(&f.base, &[]).await.unwrap_err();
    assert_eq!(
        err,
        Error::Discovery(DiscoveryError::IssuerMismatch {
            expected: f.base.clone(),
            found: "https://evil.example.com".into()
        })
    );
    // Also for an issuer the caller gave.
    let err = discover_with(&f.base, &[], None, Some(&f.url("/")))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Discovery(DiscoveryError::IssuerMismatch { .. })
    ));
}

#[tokio::test]
async fn rfc9728_section_3_3_a_foreign_resource_is_an_error_and_ends_discovery() {
    let f = Fixture::start().await;
    for resource in [
        "https://other.example.com/mcp".to_owned(),
        f.url("/mcp/sub"),
        f.url("/mc"),
    ] {
        f.seen.lock().unwrap().clear();
        f.json(
            "/.well-known/oauth-protected-resource/mcp",
            json!({"resource": resource, "authorization_servers": [f.base]}),
        );
        let err = discover(&f.url("/mcp"), &[]).await.unwrap_err();
        assert_eq!(
            err,
            Error::Discovery(DiscoveryError::ResourceMismatch {
                resource: Url::parse(&resource).unwrap().to_string(),
                server_url: f.url("/mcp")
            })
        );
        assert_eq!(f.seen().len(), 1, "no request after a mismatch");
    }
}

#[test]
fn a_resource_covers_its_own_path_and_below() {
    let u = |s: &str| Url::parse(s).unwrap();
    assert!(covers(
        &u("https://a.example/"),
        &u("https://a.example/mcp")
    ));
    assert!(covers(
        &u("https://a.example/mcp"),
        &u("https://a.example/mcp")
    ));
    assert!(covers(
        &u("https://a.example/mcp/"),
        &u("https://a.example/mcp")
    ));
    assert!(covers(
        &u("https://a.example/mcp"),
        &u("https://a.example/mcp/x")
    ));
    assert!(!covers(
        &u("https://a.example/mcp"),
        &u("https://a.example/mcpx")
    ));
    assert!(!covers(
        &u("https://a.example/mcp"),
        &u("https://a.example:8443/mcp")
    ));
    assert!(!covers(
        &u("http://a.example/mcp"),
        &u("https://a.example/mcp")
    ));
}

#[tokio::test]
async fn mcp_2025_03_26_without_resource_metadata_the_origin_is_the_authorization_server() {
    let f = Fixture::start().await;
    f.json(
        "/.well-known/oauth-authorization-server",
        f.as_document("https://issuer.example.com"),
    );
    let found = discover(&f.url("/api/mcp"), &[]).await.unwrap();
    assert_eq!(
        f.seen(),
        [
            "/.well-known/oauth-protected-resource/api/mcp",
            "/.well-known/oauth-protected-resource",
            "/.well-known/oauth-authorization-server"
        ]
    );
    // That revision had no issuer to check against: the document's own.
    assert_eq!(found.issuer, "https://issuer.example.com");
    assert_eq!(found.resource_metadata, None);
    assert_eq!(found.resource, f.url("/api/mcp"));
}

#[tokio::test]
async fn mcp_2025_03_26_without_any_metadata_the_default_endpoints() {
    let f = Fixture::start().await;
    let found = discover(&f.url("/mcp"), &[]).await.unwrap();
    assert_eq!(
        found.authorization_server_metadata,
        MetadataSource::Defaults
    );
    assert_eq!(found.issuer, f.base);
    assert_eq!(
        found.authorization_server["registration_endpoint"],
        json!(f.url("/register"))
    );
    assert_eq!(
        found.authorization_server["authorization_endpoint"],
        json!(f.url("/authorize"))
    );
    assert_eq!(
        found.authorization_server["token_endpoint"],
        json!(f.url("/token"))
    );
    assert_eq!(f.seen().len(), 4);
}

#[tokio::test]
async fn learned_urls_on_private_addresses_are_refused_without_a_request() {
    let f = Fixture::start().await;
    f.json(
        "/.well-known/oauth-protected-resource",
        json!({"resource": f.base, "authorization_servers": ["https://10.0.0.1/"]}),
    );
    let err = discover(&f.base, &[]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Discovery(DiscoveryError::UrlRefused { url, message })
            if url == "https://10.0.0.1/" && message.contains("private")),
        "{err:?}"
    );
    // http to a host that is not loopback, even from a loopback start.
    f.json(
        "/.well-known/oauth-protected-resource",
        json!({"resource": f.base, "authorization_servers": ["http://as.example.com/"]}),
    );
    let err = discover(&f.base, &[]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Discovery(DiscoveryError::UrlRefused { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_when_the_start_was_not_loopback() {
    // The guarded client as discovery builds it, with a resolver that says
    // as.example.test is 127.0.0.1: the connection is never attempted.
    let lookup: Lookup = Arc::new(|_| Box::pin(async { Ok(vec!["127.0.0.1".parse().unwrap()]) }));
    let policy = AddressPolicy {
        allow_loopback: false,
        allow_private: false,
    };
    let http = reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver::new(policy, lookup)))
        .build()
        .unwrap();
    let err = http
        .get("https://as.example.test:1/.well-known/oauth-authorization-server")
        .send()
        .await
        .unwrap_err();
    let refused = crate::net_guard::find_refusal(&err).expect("a refusal in the error chain");
    assert!(
        refused.0.contains("as.example.test resolves to 127.0.0.1"),
        "{refused}"
    );
}

#[tokio::test]
async fn malformed_metadata_names_the_url() {
    let f = Fixture::start().await;
    f.respond(
        "/.well-known/oauth-protected-resource",
        200,
        vec![],
        "[1]".into(),
    );
    let err = discover(&f.base, &[]).await.unwrap_err();
    assert_eq!(
        err,
        Error::Discovery(DiscoveryError::InvalidMetadata {
            url: f.url("/.well-known/oauth-protected-resource"),
            message: "not a JSON object".into()
        })
    );
    f.json(
        "/.well-known/oauth-protected-resource",
        json!({"resource": f.base, "authorization_servers": [f.base]}),
    );
    let mut bad = f.as_document(&f.base);
    bad["registration_endpoint"] = json!(42);
    f.json("/.well-known/oauth-authorization-server", bad);
    let err = discover(&f.base, &[]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Discovery(DiscoveryError::InvalidMetadata { message, .. }) if message == "registration_endpoint must be an absolute URL"),
        "{err:?}"
    );
}

#[tokio::test]
async fn not_found_lists_every_url_tried() {
    let f = Fixture::start().await;
    let err = discover_with(&f.base, &[], None, Some(&f.url("/t")))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::Discovery(DiscoveryError::NotFound {
            issuer: f.url("/t"),
            tried: vec![
                f.url("/.well-known/oauth-authorization-server/t"),
                f.url("/.well-known/openid-configuration/t"),
                f.url("/t/.well-known/openid-configuration"),
            ]
        })
    );
}

#[test]
fn requests_are_checked_before_any_io() {
    let new = |url: &str, www: &[&str]| {
        let www: Vec<String> = www.iter().map(|s| s.to_string()).collect();
        Discover::new(url, &www, None, None, false, Options::default()).map(|_| ())
    };
    assert_eq!(
        new("http://mcp.example.com/", &[]),
        Err(RequestError::HttpsRequired.into())
    );
    assert!(matches!(
        new("https://mcp.example.com/", &["Bearer realm=\"x"]),
        Err(Error::Discovery(DiscoveryError::InvalidWwwAuthenticate(_)))
    ));
    assert!(new("mcp", &[]).is_err());
}

#[tokio::test]
async fn one_deadline_covers_every_fetch() {
    let f = Fixture::start().await;
    f.json(
        "/.well-known/oauth-protected-resource",
        json!({"resource": f.base, "authorization_servers": [f.base]}),
    );
    f.respond(
        "/.well-known/oauth-authorization-server",
        0,
        vec![],
        String::new(),
    );
    let options = Options {
        timeout: Duration::from_millis(300),
        ..Options::default()
    };
    let started = std::time::Instant::now();
    let err = discover_options(&f.base, &[], None, None, options)
        .await
        .unwrap_err();
    assert_eq!(err, Error::Transport(crate::TransportError::Timeout));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn bodies_are_capped() {
    let f = Fixture::start().await;
    let big =
        json!({"resource": f.base, "authorization_servers": [f.base], "pad": "x".repeat(4096)});
    f.json("/.well-known/oauth-protected-resource", big);
    let options = Options {
        timeout: Duration::from_secs(5),
        max_response_bytes: 1024,
        ..Options::default()
    };
    let err = discover_options(&f.base, &[], None, None, options)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Discovery(DiscoveryError::Fetch { url, cause })
            if url == &f.url("/.well-known/oauth-protected-resource")
            && **cause == Error::Transport(crate::TransportError::BodyTooLarge(1024))),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_learned_name_goes_through_the_guarded_resolver_and_loopback_is_allowed_from_loopback() {
    // The issuer is on another origin (localhost, not 127.0.0.1), so its
    // metadata is fetched by the guarded client, whose resolver resolves
    // `localhost` with the system resolver and keeps the loopback addresses
    // because discovery started on loopback.
    let f = Fixture::start().await;
    let port = f.base.rsplit(':').next().unwrap().to_owned();
    let issuer = format!("http://localhost:{port}");
    f.json(
        "/.well-known/oauth-protected-resource",
        json!({"resource": f.base, "authorization_servers": [issuer]}),
    );
    f.json(
        "/.well-known/oauth-authorization-server",
        f.as_document(&issuer),
    );
    let found = discover(&f.base, &[]).await.unwrap();
    assert_eq!(found.issuer, issuer);
}
