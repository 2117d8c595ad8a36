//! The authorization server's side of Client ID Metadata Documents
//! (draft-ietf-oauth-client-id-metadata-document-00): fetching the document a
//! client names by its URL `client_id` and checking it. §4 (fetch it), §4.1
//! (checked by [`crate::client_id_metadata_document::verify`], the rules the
//! client side uses too), §4.3 (a failed fetch aborts the authorization
//! request), §4.4 (valid documents are cached within their HTTP caching
//! limits, bounded by [`MAX_CACHE_AGE`]; errors and invalid documents never
//! are), §6.5 (SSRF: the host is resolved once, every address is checked —
//! loopback, private, link-local, unique-local, CGNAT, unspecified, multicast
//! and cloud-metadata addresses are refused unless loopback is allowed for
//! development — and the connection goes to the checked address; redirects
//! are not followed) and §6.6 (the body is capped, 5 KB by default).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{ACCEPT, CACHE_CONTROL};
use serde_json::{Map, Value};
use url::{Host, Url};

use crate::client_id_metadata_document::{self as cimd, MAX_DOCUMENT_BYTES};

/// The longest a document is reused without fetching it again, whatever its
/// `Cache-Control` says.
pub const MAX_CACHE_AGE: Duration = Duration::from_secs(3600);
/// At most this many documents are cached; beyond it expired ones are
/// dropped, then the whole cache if needed.
const MAX_CACHED: usize = 1024;

/// How the server accepts Client ID Metadata Documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdDocuments {
    /// Accept documents on loopback addresses, and plain http to loopback:
    /// for local development only.
    pub allow_loopback: bool,
    /// Deadline for one fetch: resolving, connecting and reading.
    pub fetch_timeout: Duration,
    /// Largest document read (§6.6).
    pub max_document_bytes: u64,
    /// PEM CA certificates trusted in addition to the built-in roots.
    pub cacertfile: Option<PathBuf>,
}

impl Default for ClientIdDocuments {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            fetch_timeout: Duration::from_secs(5),
            max_document_bytes: MAX_DOCUMENT_BYTES,
            cacertfile: None,
        }
    }
}

/// Why a document could not be used. The message names the URL's problem
/// and never holds more of the document than a field name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRefused(pub String);

/// A checked document, shared between the cache and its users.
type Document = Arc<Map<String, Value>>;

/// Fetches, checks and caches documents.
pub(super) struct DocumentFetcher {
    config: ClientIdDocuments,
    cache: Mutex<HashMap<String, (Document, Instant)>>,
}

impl DocumentFetcher {
    pub(super) fn new(config: ClientIdDocuments) -> Self {
        Self {
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The checked document of `client_id`, from the cache or fetched.
    pub(super) async fn document(&self, client_id: &str) -> Result<Document, DocumentRefused> {
        let url = cimd::check_url(client_id, self.config.allow_loopback)
            .map_err(|e| DocumentRefused(format!("the client_id URL {e}")))?;
        if let Some(doc) = self.cached(client_id) {
            return Ok(doc);
        }
        let (body, max_age) =
            match tokio::time::timeout(self.config.fetch_timeout, self.fetch(&url)).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(DocumentRefused(format!(
                        "fetching the document timed out after {} ms",
                        self.config.fetch_timeout.as_millis()
                    )))
                }
            };
        let doc = cimd::verify(client_id, &body)
            .map(Arc::new)
            .map_err(|e| DocumentRefused(format!("the document is invalid: {e}")))?;
        if let Some(age) = max_age.filter(|age| !age.is_zero()) {
            self.store(client_id, Arc::clone(&doc), age.min(MAX_CACHE_AGE));
        }
        Ok(doc)
    }

    fn cached(&self, client_id: &str) -> Option<Document> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(client_id) {
            Some((doc, until)) if *until > Instant::now() => Some(Arc::clone(doc)),
            _ => None,
        }
    }

    fn store(&self, client_id: &str, doc: Document, age: Duration) {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(client_id.to_owned(), (doc, now + age));
    }

    /// One GET to a checked address: the body, and how long it may be cached.
    async fn fetch(&self, url: &Url) -> Result<(Vec<u8>, Option<Duration>), DocumentRefused> {
        let address = checked_address(url, self.config.allow_loopback).await?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .resolve(&host, address);
        if let Some(path) = &self.config.cacertfile {
            let pem = std::fs::read(path).map_err(|e| {
                DocumentRefused(format!("the server's cacertfile cannot be read: {e}"))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                DocumentRefused(format!("the server's cacertfile cannot be used: {e}"))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| DocumentRefused(format!("cannot build an HTTP client: {e}")))?;
        let mut response = http
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                DocumentRefused(format!(
                    "fetching the document failed: {}",
                    chain(&e.without_url())
                ))
            })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(DocumentRefused(format!(
                "fetching the document answered a redirect (HTTP {}), which is not followed",
                status.as_u16()
            )));
        }
        if status != reqwest::StatusCode::OK {
            return Err(DocumentRefused(format!(
                "fetching the document answered HTTP {}",
                status.as_u16()
            )));
        }
        let limit = self.config.max_document_bytes;
        let too_large = || DocumentRefused(format!("the document is larger than {limit} bytes"));
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(too_large());
        }
        let max_age = response
            .headers()
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(cache_lifetime);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| DocumentRefused(format!("reading the document failed: {}", chain(&e))))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        parts.push(e.to_string());
        next = e.source();
    }
    parts.join(": ")
}

/// RFC 9111 §5.2.2: `max-age` gives the lifetime; `no-store` and
/// `no-cache` mean none, and so does a response without `max-age`.
fn cache_lifetime(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return None;
        }
        if let Some(seconds) = lower.strip_prefix("max-age=") {
            max_age = seconds
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    max_age
}

/// §6.5: resolves the host once and checks every address; the connection is
/// then made to the first one, so a second resolution cannot swap it.
async fn checked_address(url: &Url, allow_loopback: bool) -> Result<SocketAddr, DocumentRefused> {
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<SocketAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| DocumentRefused(format!("the client_id host does not resolve: {e}")))?
            .collect(),
        None => return Err(DocumentRefused("the client_id URL has no host".into())),
    };
    if addresses.is_empty() {
        return Err(DocumentRefused(
            "the client_id host resolves to no address".into(),
        ));
    }
    for address in &addresses {
        if let Some(kind) = refused_kind(address.ip(), allow_loopback) {
            return Err(DocumentRefused(format!(
                "the client_id host resolves to a {kind} address ({}), which this server does not fetch from",
                address.ip()
            )));
        }
    }
    Ok(addresses[0])
}

/// Which kind of non-public address `ip` is, if it is one.
fn refused_kind(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                (!allow_loopback).then_some("loopback")
            } else if v4.is_unspecified() || v4.is_broadcast() {
                Some("unspecified")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local (cloud metadata)")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (CGNAT)")
            } else if v4.is_multicast() || a >= 240 || a == 0 {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                (!allow_loopback).then_some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_unique_local() {
                Some("unique-local")
            } else if v6.is_unicast_link_local() {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9111_cache_lifetimes() {
        assert_eq!(cache_lifetime("max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(
            cache_lifetime("public, Max-Age=\"5\""),
            Some(Duration::from_secs(5))
        );
        assert_eq!(cache_lifetime("no-store, max-age=60"), None);
        assert_eq!(cache_lifetime("max-age=60, no-cache"), None);
        assert_eq!(cache_lifetime("public"), None);
        assert_eq!(cache_lifetime("max-age=x"), None);
    }

    #[test]
    fn draft_6_5_ssrf_address_classes() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("fd00:ec2::254", "unique-local"),
            ("fe80::1", "link-local"),
            ("224.0.0.1", "reserved"),
        ] {
            assert_eq!(refused_kind(ip(addr), false), Some(kind), "{addr}");
        }
        assert_eq!(refused_kind(ip("127.0.0.1"), true), None);
        assert_eq!(refused_kind(ip("::1"), true), None);
        assert_eq!(refused_kind(ip("10.0.0.1"), true), Some("private"));
        assert_eq!(refused_kind(ip("93.184.216.34"), false), None);
        assert_eq!(refused_kind(ip("2606:4700::1111"), false), None);
        assert_eq!(refused_kind(ip("100.128.0.1"), false), None);
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        let url = Url::parse("https://localhost:1/client.json").unwrap();
        let refused = checked_address(&url, false).await.unwrap_err();
        assert!(refused.0.contains("loopback"), "{refused:?}");
        let address = checked_address(&url, true).await.unwrap();
        assert!(address.ip().is_loopback());
    }
}
