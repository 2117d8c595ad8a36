//! Connection pools: one `reqwest::Client` per distinct trust, proxy and
//! resolver configuration, shared by every call that uses it.
//!
//! Memory stays bounded whatever option values callers pass:
//! - the pools live in a small LRU cache ([`MAX_POOLS`]); an evicted pool's
//!   idle connections close once no call holds it any more;
//! - `connect_timeout` is not part of a pool's identity: each call's value
//!   applies to the connections that call opens ([`with_connect_timeout`]),
//!   so every `connect_timeout` shares the one pool.
//!
//! The CA file is read by [`crate::cacertfile`] off the async workers; a pool
//! is keyed by the file's identity, so a changed file makes a new pool.
//! RFC 9110 §7.3.2 (proxies) and §7.8 (CONNECT) are reqwest's work; this file
//! only decides which proxy a pool uses.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use lru::LruCache;
use once_cell::sync::Lazy;

use crate::cacertfile::{self, CaBundle, CaIdentity};
use crate::client::Options;
use crate::error::TransportError;
use crate::proxy::ProxySetting;
use crate::transport::error_chain;

/// How many pools are kept. A default configuration needs one; each distinct
/// CA file version, proxy or resolver needs another.
pub const MAX_POOLS: usize = 16;

/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A DNS resolver that replaces the system one for a pool, e.g. one that
/// refuses private addresses. Pools compare resolvers by identity: share one
/// `SharedResolver` (a `static`) rather than making one per call.
#[derive(Clone)]
pub struct SharedResolver(pub Arc<dyn reqwest::dns::Resolve>);

impl PartialEq for SharedResolver {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedResolver {}

impl Hash for SharedResolver {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as *const () as usize).hash(state);
    }
}

impl reqwest::dns::Resolve for SharedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        self.0.resolve(name)
    }
}

impl std::fmt::Debug for SharedResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedResolver(..)")
    }
}

/// What makes two pools different. `connect_timeout` is deliberately not in
/// it (see the module comment).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    ca: Option<CaIdentity>,
    proxy: ProxySetting,
    /// With `ProxySetting::System`: a digest of the proxy variables.
    proxy_environment: Option<u64>,
    resolver: Option<SharedResolver>,
}

static POOLS: Lazy<Mutex<LruCache<PoolKey, reqwest::Client>>> =
    Lazy::new(|| Mutex::new(LruCache::new(NonZeroUsize::new(MAX_POOLS).unwrap())));

/// How many pools exist now (for tests and monitoring).
pub fn pool_count() -> usize {
    lock().len()
}

fn lock() -> std::sync::MutexGuard<'static, LruCache<PoolKey, reqwest::Client>> {
    POOLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The pool for `options`, with the system resolver.
pub(crate) async fn http_client(options: &Options) -> Result<reqwest::Client, TransportError> {
    http_client_with(options, None).await
}

/// The pool for `options` and `resolver`. The lock is held only to look up
/// and insert: reading the CA file and building a client happen outside it,
/// so a slow file delays only the calls that use it.
pub async fn http_client_with(
    options: &Options,
    resolver: Option<SharedResolver>,
) -> Result<reqwest::Client, TransportError> {
    let ca = match &options.cacertfile {
        Some(path) => Some(cacertfile::identify(path).await?),
        None => None,
    };
    let key = PoolKey {
        ca,
        proxy: options.proxy.clone(),
        proxy_environment: (options.proxy == ProxySetting::System)
            .then(crate::proxy::environment_digest),
        resolver,
    };
    if let Some(client) = lock().get(&key) {
        return Ok(client.clone());
    }
    let bundle = match &options.cacertfile {
        Some(path) => Some(cacertfile::load(path).await?),
        None => None,
    };
    // The file may have changed between the two looks: key the pool on the
    // version actually read.
    let key = PoolKey {
        ca: bundle.as_ref().map(|b| b.identity.clone()),
        ..key
    };
    let client = build(&key, bundle.as_ref())?;
    Ok(lock().get_or_insert(key, || client).clone())
}

fn build(key: &PoolKey, bundle: Option<&CaBundle>) -> Result<reqwest::Client, TransportError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .connector_layer(ConnectDeadlineLayer);
    builder = key.proxy.apply(builder)?;
    if let Some(bundle) = bundle {
        for der in &bundle.certificates {
            let certificate = reqwest::Certificate::from_der(der).map_err(|e| {
                TransportError::CaCertFile(format!(
                    "{}: {}",
                    bundle.path.display(),
                    error_chain(&e)
                ))
            })?;
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some(resolver) = &key.resolver {
        builder = builder.dns_resolver(Arc::new(resolver.clone()));
    }
    builder.build().map_err(|e| {
        TransportError::Connect(format!("cannot build the HTTP client: {}", error_chain(&e)))
    })
}

tokio::task_local! {
    static CONNECT_TIMEOUT: Duration;
}

/// Runs `future` (a request on a pooled client) so that any connection it
/// opens must be established (TCP, proxy tunnel and TLS) within `timeout`.
pub async fn with_connect_timeout<F: Future>(timeout: Duration, future: F) -> F::Output {
    CONNECT_TIMEOUT.scope(timeout, future).await
}

/// A connection that was not established within the call's
/// `connect_timeout`.
#[derive(Debug)]
pub struct ConnectTimedOut(pub Duration);

impl std::fmt::Display for ConnectTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no connection within the connect timeout ({} ms)",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for ConnectTimedOut {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The outermost connector layer: reads the calling task's connect timeout
/// when a connection is started (hyper starts it from the request's own
/// task) and bounds the whole connect with it.
#[derive(Clone, Copy)]
struct ConnectDeadlineLayer;

impl<S> tower_layer::Layer<S> for ConnectDeadlineLayer {
    type Service = ConnectDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectDeadline(inner)
    }
}

#[derive(Clone)]
struct ConnectDeadline<S>(S);

impl<S, Request> tower_service::Service<Request> for ConnectDeadline<S>
where
    S: tower_service::Service<Request, Error = BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let limit = CONNECT_TIMEOUT
            .try_with(|t| *t)
            .unwrap_or_else(|_| Options::default().connect_timeout);
        let connect = self.0.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limit, connect).await {
                Ok(result) => result,
                Err(_) => Err(Box::new(ConnectTimedOut(limit)) as BoxError),
            }
        })
    }
}
