//! An embedded OAuth authorization server that does dynamic client
//! registration only: RFC 7591 registration, RFC 7592 management and the
//! RFC 8414 metadata that points at them. Meant for tests, development and
//! local MCP setups; everything is kept in memory.
//!
//! | Endpoint | |
//! |---|---|
//! | `GET /.well-known/oauth-authorization-server` | RFC 8414 metadata. `token_endpoint` is a placeholder under the issuer (`/token`): this server does not serve it. With [`ServerConfig::client_id_metadata_documents`], `client_id_metadata_document_supported: true`. |
//! | `POST /register` | RFC 7591 §3: `201` with the full client information. |
//! | `GET`, `PUT`, `DELETE /register/<client_id>` | RFC 7592 §2, with the registration access token as a Bearer token. |
//! | `GET /authorize` | A development authorization endpoint ([`authorize`]): checks `client_id` (registered, or a Client ID Metadata Document URL) and `redirect_uri`, then redirects with a placeholder `code`. |
//! | `GET /.well-known/oauth-protected-resource[/<path>]` | With [`ServerConfig::protected_resource`]: RFC 9728 metadata naming this server as the authorization server ([`protected_resource`]). A request to the resource itself is `401` with `WWW-Authenticate: Bearer resource_metadata=…`. |
//!
//! What clients send is checked and completed by
//! [`crate::metadata::prepare_client_metadata`], the very function the
//! client side runs before sending, with the RFCs' defaults as this server's
//! policy instead of the client's (see `handlers.rs`).
//!
//! The server runs on the caller's tokio runtime: [`start`] inside a runtime,
//! or [`start_on`] with a runtime handle from anywhere (it binds the socket
//! synchronously and never blocks on the runtime).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mcp_registration::server::{self, ServerConfig};
//!
//! let running = server::start(ServerConfig::default())?;
//! println!("register at {}", running.registration_endpoint());
//! // ... clients register ...
//! assert_eq!(running.store().count(), 0);
//! running.shutdown();
//! running.stopped().await;
//! # Ok(())
//! # }
//! ```

pub mod authorize;
pub mod client_id_documents;
mod credentials;
mod handlers;
pub mod protected_resource;
mod store;

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener as StdTcpListener};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use thiserror::Error;
use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use authorize::AUTHORIZE_PATH;
pub use client_id_documents::ClientIdDocuments;
pub use handlers::{
    GRANT_TYPES, METADATA_PATH, REGISTER_PATH, RESPONSE_TYPES, TOKEN_ENDPOINT_AUTH_METHODS,
};
pub use protected_resource::{ProtectedResource, PROTECTED_RESOURCE_METADATA_PATH};
pub use store::{ClientRecord, IssuedSecret, Refused, Store};

use client_id_documents::DocumentFetcher;
use handlers::HttpResponse;
use protected_resource::ServedResource;

/// The default largest request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, at shutdown, a request already being answered may take to
/// finish before its connection is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// How to run the server.
#[derive(Clone)]
pub struct ServerConfig {
    /// Where to listen. Port 0 picks a free port. Default `127.0.0.1:0`.
    pub bind: SocketAddr,
    /// When set, `POST /register` needs `Authorization: Bearer <this>`
    /// (RFC 7591 §3). It must be visible ASCII without spaces.
    pub require_initial_access_token: Option<String>,
    /// Issue a new registration access token on every successful update
    /// (RFC 7592 §2.2); the old one stops working.
    pub rotate_registration_access_token: bool,
    /// How long an issued client secret is valid. `None` or zero: it never
    /// expires (`client_secret_expires_at: 0`). Expired secrets are kept and
    /// still reported.
    pub client_secret_ttl: Option<Duration>,
    /// Largest request body; bigger ones get `413`. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Serve RFC 9728 metadata for this resource, naming this server as its
    /// authorization server. Default: none.
    pub protected_resource: Option<ProtectedResource>,
    /// Accept Client ID Metadata Documents at `/authorize` and advertise
    /// `client_id_metadata_document_supported: true`. Default: off.
    pub client_id_metadata_documents: Option<ClientIdDocuments>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            require_initial_access_token: None,
            rotate_registration_access_token: false,
            client_secret_ttl: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            protected_resource: None,
            client_id_metadata_documents: None,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("bind", &self.bind)
            .field(
                "require_initial_access_token",
                &self
                    .require_initial_access_token
                    .as_ref()
                    .map(|_| "<redacted>"),
            )
            .field(
                "rotate_registration_access_token",
                &self.rotate_registration_access_token,
            )
            .field("client_secret_ttl", &self.client_secret_ttl)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("protected_resource", &self.protected_resource)
            .field(
                "client_id_metadata_documents",
                &self.client_id_metadata_documents,
            )
            .finish()
    }
}

impl ServerConfig {
    fn check(&self) -> Result<(), ServerError> {
        if let Some(token) = &self.require_initial_access_token {
            if !crate::token::is_token(token) {
                return Err(ServerError::InvalidConfig(
                    "require_initial_access_token must be a non-empty string of visible ASCII characters without spaces".into(),
                ));
            }
        }
        if self.max_body_bytes == 0 {
            return Err(ServerError::InvalidConfig(
                "max_body_bytes must be positive".into(),
            ));
        }
        if let Some(resource) = &self.protected_resource {
            resource.check()?;
        }
        if let Some(documents) = &self.client_id_metadata_documents {
            if documents.max_document_bytes == 0 || documents.fetch_timeout.is_zero() {
                return Err(ServerError::InvalidConfig(
                    "client_id_metadata_documents: max_document_bytes and fetch_timeout must be positive".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Why the server did not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// [`start`] was called outside a tokio runtime.
    #[error("no tokio runtime: call start from within one, or use start_on")]
    NoRuntime,
    /// The configuration cannot be used.
    #[error("invalid server configuration: {0}")]
    InvalidConfig(String),
    /// The address could not be bound (in use, not local, not permitted...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Starts the server on the current tokio runtime.
pub fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let handle = Handle::try_current().map_err(|_| ServerError::NoRuntime)?;
    start_on(&handle, config)
}

/// Starts the server on the runtime of `handle`. Binding is synchronous and
/// quick; nothing here waits on the runtime, so it may be called from any
/// thread.
pub fn start_on(handle: &Handle, config: ServerConfig) -> Result<RunningServer, ServerError> {
    config.check()?;
    let bind_error = |source| ServerError::Bind {
        addr: config.bind,
        source,
    };
    let std_listener = StdTcpListener::bind(config.bind).map_err(bind_error)?;
    std_listener.set_nonblocking(true).map_err(bind_error)?;
    let local_addr = std_listener.local_addr().map_err(bind_error)?;
    let listener = {
        let _entered = handle.enter();
        TcpListener::from_std(std_listener).map_err(bind_error)?
    };

    let base_url = base_url(local_addr);
    let store = Arc::new(Store::new(format!("{base_url}{REGISTER_PATH}")));
    let issuer = base_url.clone();
    let app = Arc::new(App {
        metadata: authorization_server_metadata(&base_url, &config),
        resource: config
            .protected_resource
            .as_ref()
            .map(|resource| resource.resolve(&base_url, &issuer)),
        documents: config
            .client_id_metadata_documents
            .clone()
            .map(DocumentFetcher::new),
        issuer,
        store: Arc::clone(&store),
        config,
    });
    let lifecycle = Arc::new(Lifecycle::default());
    let resource = app.resource.as_ref().map(|r| r.resource().to_owned());
    handle.spawn(accept_loop(listener, app, Arc::clone(&lifecycle)));
    Ok(RunningServer {
        local_addr,
        resource,
        base_url,
        store,
        shutdown: ShutdownHandle { lifecycle },
    })
}

/// A started server. Dropping it shuts the server down.
pub struct RunningServer {
    local_addr: SocketAddr,
    base_url: String,
    resource: Option<String>,
    store: Arc<Store>,
    shutdown: ShutdownHandle,
}

impl fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningServer")
            .field("local_addr", &self.local_addr)
            .field("base_url", &self.base_url)
            .field("clients", &self.store.count())
            .finish()
    }
}

impl RunningServer {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The issuer and base URL, `http://<ip>:<port>` (an unspecified bind
    /// address such as `0.0.0.0` is replaced by the loopback address).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `<base url>/register`.
    pub fn registration_endpoint(&self) -> String {
        format!("{}{REGISTER_PATH}", self.base_url)
    }

    /// The configured protected resource's identifier (RFC 9728 `resource`),
    /// a path resolved against the base URL; `None` without one.
    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    /// The registered clients.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A handle that can stop the server from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Stops the server; see [`ShutdownHandle::shutdown`].
    pub fn shutdown(&self) {
        self.shutdown.shutdown();
    }

    /// Waits until the server has stopped.
    pub async fn stopped(&self) {
        self.shutdown.stopped().await;
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown.shutdown();
    }
}

/// Stops a server. Cloneable, usable from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    lifecycle: Arc<Lifecycle>,
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("requested", &self.lifecycle.stop.is_raised())
            .field("stopped", &self.lifecycle.stopped.is_raised())
            .finish()
    }
}

impl ShutdownHandle {
    /// Asks the server to stop and returns at once. The listener closes right
    /// away, idle connections too; a request being answered gets a short
    /// grace period (500 ms) before its connection is dropped.
    pub fn shutdown(&self) {
        self.lifecycle.stop.raise();
    }

    /// Whether the server has stopped: listener and connections closed.
    pub fn is_stopped(&self) -> bool {
        self.lifecycle.stopped.is_raised()
    }

    /// Waits until the server has stopped.
    pub async fn stopped(&self) {
        self.lifecycle.stopped.wait().await;
    }

    /// Blocks the calling thread until the server has stopped or `timeout`
    /// has passed; returns whether it stopped. Not for async code.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        self.lifecycle.stopped.wait_blocking(timeout)
    }
}

/// A one-way flag that async and blocking code can both wait for.
struct Flag {
    raised: Mutex<bool>,
    changed: Condvar,
    watch: watch::Sender<bool>,
}

impl Default for Flag {
    fn default() -> Self {
        Self {
            raised: Mutex::new(false),
            changed: Condvar::new(),
            watch: watch::Sender::new(false),
        }
    }
}

impl Flag {
    fn raise(&self) {
        *self.raised.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.changed.notify_all();
        self.watch.send_replace(true);
    }

    fn is_raised(&self) -> bool {
        *self.watch.borrow()
    }

    async fn wait(&self) {
        let mut receiver = self.watch.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = receiver.wait_for(|raised| *raised).await;
    }

    fn wait_blocking(&self, timeout: Duration) -> bool {
        let raised = self.raised.lock().unwrap_or_else(|p| p.into_inner());
        let (raised, _) = self
            .changed
            .wait_timeout_while(raised, timeout, |raised| !*raised)
            .unwrap_or_else(|p| p.into_inner());
        *raised
    }
}

#[derive(Default)]
struct Lifecycle {
    /// Shutdown was asked for.
    stop: Flag,
    /// Listener and connections are closed.
    stopped: Flag,
}

/// What every request handler shares.
pub(crate) struct App {
    config: ServerConfig,
    store: Arc<Store>,
    /// The RFC 8414 document, built once.
    metadata: Value,
    /// The issuer identifier: the base URL.
    issuer: String,
    /// RFC 9728 metadata and challenge, when configured.
    resource: Option<ServedResource>,
    /// Client ID Metadata Documents, when accepted.
    documents: Option<DocumentFetcher>,
}

/// The routes of the optional parts, tried before registration's:
/// protected resource metadata and the resource's challenge, and the
/// authorization endpoint. `None` for every other request.
async fn route_discovery(app: &App, parts: &Parts) -> Option<HttpResponse> {
    let path = parts.uri.path();
    if path == AUTHORIZE_PATH {
        return Some(match parts.method {
            http::Method::GET => authorize::authorize(app, parts).await,
            _ => handlers::method_not_allowed("GET"),
        });
    }
    app.resource
        .as_ref()
        .and_then(|resource| resource.route(&parts.method, path))
}

/// Raises `stopped` however the accept loop ends, even if its task is
/// dropped with the runtime.
struct StoppedOnDrop(Arc<Lifecycle>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.stopped.raise();
    }
}

async fn accept_loop(listener: TcpListener, app: Arc<App>, lifecycle: Arc<Lifecycle>) {
    let _stopped = StoppedOnDrop(Arc::clone(&lifecycle));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = lifecycle.stop.wait() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&app), Arc::clone(&lifecycle)));
                }
                // Out of file descriptors or similar: back off instead of spinning.
                Err(error) if !is_per_connection(&error) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(_) => {}
            },
        }
    }
    drop(listener);
    // Every connection saw the same signal and is closing; give them their
    // grace period, then drop the rest.
    let drain = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_millis(100), drain).await;
    connections.shutdown().await;
}

/// Accept errors that concern one connection only.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn serve_connection(mut stream: TcpStream, app: Arc<App>, lifecycle: Arc<Lifecycle>) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(handlers::handle(app, request).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    {
        // Hyper only borrows the stream, so that it is still ours to close
        // however hyper ends (done, error, or dropped at shutdown).
        let connection = builder.serve_connection(TokioIo::new(&mut stream), service);
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => {}
            () = lifecycle.stop.wait() => {
                // Idle connections close at once; one mid-request gets the
                // grace period. No lingering: the server is going away.
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
                return;
            }
        }
    }
    linger(stream, &lifecycle.stop).await;
}

/// The most a closing connection reads and throws away.
const LINGER_LIMIT: usize = 1024 * 1024;
/// How long a closing connection waits for the client to stop sending.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// A lingering close. Hyper has sent its last answer, but the client may
/// still be sending: a body refused from its headers (`413`, `Connection:
/// close`), or one the server stopped waiting for. Closing a socket with
/// unread data, or receiving data after closing it, makes the kernel reset
/// the connection, and a client that is still uploading then gets a failed
/// write instead of the answer waiting in its receive buffer (Erlang's
/// passive `gen_tcp` and curl both give up there). So: send FIN after the
/// answer, then read and drop what arrives until the client closes its side,
/// at most [`LINGER_LIMIT`] bytes and [`LINGER_TIMEOUT`], or until the
/// server stops.
async fn linger(mut stream: TcpStream, stop: &Flag) {
    // Hyper has shut the write side down already when it ended cleanly;
    // again is harmless, and covers the other ends.
    let _ = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_shutdown(cx)).await;
    let mut buffer = vec![0u8; 16 * 1024];
    let drain = async {
        let mut left = LINGER_LIMIT;
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut buffer) {
                // The client has closed its side: nothing more will come.
                Ok(0) => return,
                Ok(n) if n >= left => return,
                Ok(n) => left -= n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(LINGER_TIMEOUT, drain) => {}
        () = stop.wait() => {}
    }
}

/// `http://<ip>:<port>`; an unspecified address becomes loopback, since
/// clients cannot connect to `0.0.0.0`.
fn base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// RFC 8414 §2. The token endpoint is a placeholder: this server registers
/// clients and has a development authorization endpoint, no token endpoint.
/// `scopes_supported` comes from the protected resource, and
/// `client_id_metadata_document_supported` (draft §5) is there when
/// documents are accepted.
fn authorization_server_metadata(base_url: &str, config: &ServerConfig) -> Value {
    let mut metadata = json!({
        "issuer": base_url,
        "authorization_endpoint": format!("{base_url}{AUTHORIZE_PATH}"),
        "token_endpoint": format!("{base_url}/token"),
        "registration_endpoint": format!("{base_url}{REGISTER_PATH}"),
        "token_endpoint_auth_methods_supported": TOKEN_ENDPOINT_AUTH_METHODS,
        "grant_types_supported": GRANT_TYPES,
        "response_types_supported": RESPONSE_TYPES,
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
    });
    if let Some(resource) = config
        .protected_resource
        .as_ref()
        .filter(|r| !r.scopes_supported.is_empty())
    {
        metadata["scopes_supported"] = json!(resource.scopes_supported);
    }
    if config.client_id_metadata_documents.is_some() {
        metadata[crate::client_id_metadata_document::SUPPORTED_METADATA] = json!(true);
    }
    metadata
}

/// `client_secret_expires_at` for a secret issued at `now`: `0` (never)
/// without a lifetime, otherwise `now` plus the lifetime rounded up to
/// whole seconds.
fn secret_expiry(ttl: Option<Duration>, now: i64) -> i64 {
    match ttl {
        Some(ttl) if !ttl.is_zero() => {
            let secs = ttl
                .as_secs()
                .saturating_add(u64::from(ttl.subsec_nanos() > 0));
            now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX))
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_of_bound_address() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(base_url(addr("127.0.0.1:8080")), "http://127.0.0.1:8080");
        assert_eq!(base_url(addr("0.0.0.0:80")), "http://127.0.0.1:80");
        assert_eq!(base_url(addr("[::]:81")), "http://[::1]:81");
        assert_eq!(base_url(addr("[::1]:82")), "http://[::1]:82");
    }

    #[test]
    fn secret_expiry_rules() {
        assert_eq!(secret_expiry(None, 1000), 0);
        assert_eq!(secret_expiry(Some(Duration::ZERO), 1000), 0);
        assert_eq!(secret_expiry(Some(Duration::from_secs(60)), 1000), 1060);
        assert_eq!(secret_expiry(Some(Duration::from_millis(1500)), 1000), 1002);
        assert_eq!(secret_expiry(Some(Duration::MAX), 1000), i64::MAX);
    }

    #[test]
    fn config_is_checked_and_debug_hides_the_token() {
        let config = ServerConfig {
            require_initial_access_token: Some("has space".into()),
            ..ServerConfig::default()
        };
        assert!(matches!(config.check(), Err(ServerError::InvalidConfig(_))));
        assert!(!format!("{config:?}").contains("space"));
        let config = ServerConfig {
            max_body_bytes: 0,
            ..ServerConfig::default()
        };
        assert!(config.check().is_err());
    }

    #[test]
    fn start_needs_a_runtime() {
        assert!(matches!(
            start(ServerConfig::default()),
            Err(ServerError::NoRuntime)
        ));
    }
}
