//! The authorization server's side of Client ID Metadata Documents
//! (draft-ietf-oauth-client-id-metadata-document-00): fetching the document a
//! client names by its URL `client_id` and checking it. §4 (fetch it), §4.1
//! (checked by [`crate::client_id_metadata_document::verify`], the rules the
//! client side uses too), §4.3 (a failed fetch aborts the authorization
//! request), §4.4 (valid documents are cached within their HTTP caching
//! limits, bounded by [`MAX_CACHE_AGE`]; errors and invalid documents never
//! are), §6.5 (SSRF: the address rules of [`crate::net_guard`], the ones
//! discovery applies — loopback, private, link-local, unique-local, CGNAT,
//! unspecified, special-purpose and cloud-metadata addresses are refused,
//! loopback only unless allowed for development; the name is resolved once
//! and only checked addresses are connected to; redirects are not followed)
//! and §6.6 (the body is capped, 5 KB by default). Fetches go through the
//! library's shared connection pools ([`crate::pool`]), which read a CA file
//! off the async workers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{ACCEPT, CACHE_CONTROL};
use serde_json::{Map, Value};
use url::{Host, Url};

use crate::client::Options;
use crate::client_id_metadata_document::{self as cimd, MAX_DOCUMENT_BYTES};
use crate::net_guard::{self, AddressPolicy};
use crate::pool;
use crate::transport::error_chain;
use crate::uri;

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
            .map_err(|e| DocumentRefused(format!("the document is invalid: {e}")))?;
        // This server's policy, as at registration: RFC 8252 §7.1 private-use
        // schemes are reverse domain names.
        let uris = doc.get("redirect_uris").and_then(Value::as_array);
        for uri in uris.into_iter().flatten().filter_map(Value::as_str) {
            if let Err(problem) = uri::check_native_scheme(uri) {
                return Err(DocumentRefused(format!(
                    "the document is invalid: redirect URI {uri:?} {}",
                    problem.describe()
                )));
            }
        }
        let doc = Arc::new(doc);
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
        let policy = AddressPolicy {
            allow_loopback: self.config.allow_loopback,
            allow_private: false,
        };
        // An IP literal never reaches the resolver: it is checked here.
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            policy.check(ip).map_err(|category| {
                DocumentRefused(format!(
                    "the client_id host {ip} is a {category} address, which this server does not fetch from"
                ))
            })?;
        }
        // The shared pool for this address policy: its resolver checks what
        // a name resolves to and connects only there; the CA file is read off
        // the async workers; redirects are not followed.
        let options = Options {
            cacertfile: self.config.cacertfile.clone(),
            ..Options::default()
        };
        let http = pool::http_client_with(&options, Some(net_guard::shared_resolver(policy)))
            .await
            .map_err(|e| DocumentRefused(format!("no HTTP client for the fetch: {e}")))?;
        let request = http
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .send();
        let mut response = pool::with_connect_timeout(self.config.fetch_timeout, request)
            .await
            .map_err(|e| match net_guard::find_refusal(&e) {
                Some(refused) => {
                    DocumentRefused(format!("the client_id host is refused: {refused}"))
                }
                None => DocumentRefused(format!(
                    "fetching the document failed: {}",
                    error_chain(&e.without_url())
                )),
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
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            DocumentRefused(format!("reading the document failed: {}", error_chain(&e)))
        })? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
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
}
