//! The HTTP side: one shared connection pool per TLS/connect configuration,
//! a deadline over the whole call, a cap on what is read, no redirects.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use once_cell::sync::Lazy;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use url::Url;

use crate::error::{Error, RequestError, TransportError};
use crate::metadata;
use crate::request::{self, Registration};
use crate::response::{self, ClientInformation};

/// A bearer token. Its `Debug` output never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Checks that `token` can travel in an `Authorization` header.
    pub fn new(field: &str, token: String) -> Result<Self, RequestError> {
        if !crate::token::is_token(&token) {
            return Err(RequestError::InvalidField {
                field: field.to_owned(),
                message: "must be a non-empty string of visible ASCII characters without spaces"
                    .into(),
            });
        }
        Ok(Self(token))
    }

    fn bearer(&self) -> HeaderValue {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", self.0)).expect("checked in Secret::new");
        value.set_sensitive(true);
        value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Headers a caller may not set: the library owns them.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "authorization",
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
];

/// Per-call options. See the Elixir moduledoc for the user-facing table.
#[derive(Debug, Clone)]
pub struct Options {
    /// Deadline for the whole call, every round trip and body read included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_response_bytes: u64,
    pub headers: HeaderMap,
    /// PEM CA certificates trusted in addition to the built-in roots.
    pub cacertfile: Option<PathBuf>,
    /// RFC 7591 §3: sent as a Bearer token on registration.
    pub initial_access_token: Option<Secret>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_response_bytes: 1024 * 1024,
            headers: HeaderMap::new(),
            cacertfile: None,
            initial_access_token: None,
        }
    }
}

impl Options {
    /// Adds an extra request header; returns why it cannot be used.
    /// Neither a rejected name nor a value is echoed in the message: a
    /// misplaced token must not end up in an exception. A reserved name is
    /// safe to name, being one of the library's own.
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| "its name is not a valid header name".to_string())?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(format!(
                "{:?} is set by the library and cannot be overridden",
                header.as_str()
            ));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| "its value is not a valid header value".to_string())?;
        self.headers.append(header, value);
        Ok(())
    }
}

/// The operation a [`Call`] performs.
#[derive(Debug, Clone)]
enum Operation {
    Register(Registration),
    Read,
    Update {
        updates: Map<String, Value>,
        replace: bool,
    },
    Delete,
}

/// What a successful call returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Client(ClientInformation),
    Deleted,
}

/// A checked call, ready to run. Building one does no I/O, so it is cheap
/// enough to do on a BEAM scheduler; [`Call::run`] does the network part.
#[derive(Debug, Clone)]
pub struct Call {
    operation: Operation,
    url: Url,
    token: Option<Secret>,
    options: Options,
}

impl Call {
    /// RFC 7591 §3.1: `POST` the client metadata to the registration endpoint.
    pub fn register(request: Map<String, Value>, options: Options) -> Result<Self, RequestError> {
        let registration = request::registration(request)?;
        Ok(Self {
            url: registration.endpoint.clone(),
            token: options.initial_access_token.clone(),
            operation: Operation::Register(registration),
            options,
        })
    }

    /// RFC 7592 §2.1: `GET` the registration.
    pub fn read(uri: &str, token: String, options: Options) -> Result<Self, RequestError> {
        Self::management(Operation::Read, uri, token, options)
    }

    /// RFC 7592 §2.2: `PUT` the registration. Unless `replace`, the current
    /// registration is read first and `updates` is merged over it.
    pub fn update(
        uri: &str,
        token: String,
        updates: Map<String, Value>,
        replace: bool,
        options: Options,
    ) -> Result<Self, RequestError> {
        let updates = request::update(updates)?;
        Self::management(Operation::Update { updates, replace }, uri, token, options)
    }

    /// RFC 7592 §2.3: `DELETE` the registration.
    pub fn delete(uri: &str, token: String, options: Options) -> Result<Self, RequestError> {
        Self::management(Operation::Delete, uri, token, options)
    }

    fn management(
        operation: Operation,
        uri: &str,
        token: String,
        options: Options,
    ) -> Result<Self, RequestError> {
        let url = request::endpoint_url("registration_client_uri", &Value::from(uri))?;
        let token = Secret::new("registration_access_token", token)?;
        Ok(Self {
            operation,
            url,
            token: Some(token),
            options,
        })
    }

    /// Runs the call within its deadline.
    pub async fn run(self) -> Result<Outcome, Error> {
        let deadline = self.options.timeout;
        match tokio::time::timeout(deadline, self.exchange_all()).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout.into()),
        }
    }

    async fn exchange_all(self) -> Result<Outcome, Error> {
        let http = http_client(&self.options)?;
        let send = |method, body| {
            exchange(
                &http,
                method,
                &self.url,
                self.token.as_ref(),
                body,
                &self.options,
            )
        };
        match &self.operation {
            Operation::Register(registration) => {
                let (status, body) =
                    send(Method::POST, Some(json_body(&registration.metadata))).await?;
                expect(status, &[StatusCode::OK, StatusCode::CREATED], body)
            }
            Operation::Read => {
                let (status, body) = send(Method::GET, None).await?;
                expect(status, &[StatusCode::OK], body)
            }
            Operation::Update { updates, replace } => {
                let current = if *replace {
                    None
                } else {
                    let (status, body) = send(Method::GET, None).await?;
                    match expect(status, &[StatusCode::OK], body)? {
                        Outcome::Client(info) => Some(info.document),
                        Outcome::Deleted => unreachable!("a GET is never a deletion"),
                    }
                };
                let put = metadata::merge_for_put(current.as_ref(), updates);
                let (status, body) = send(Method::PUT, Some(json_body(&put))).await?;
                expect(status, &[StatusCode::OK], body)
            }
            Operation::Delete => {
                let (status, body) = send(Method::DELETE, None).await?;
                let success = [StatusCode::NO_CONTENT, StatusCode::OK];
                if success.contains(&status) {
                    Ok(Outcome::Deleted)
                } else {
                    Err(refused(status, &success, body))
                }
            }
        }
    }
}

fn expect(status: StatusCode, success: &[StatusCode], body: Vec<u8>) -> Result<Outcome, Error> {
    if success.contains(&status) {
        response::client_information(&body).map(Outcome::Client)
    } else {
        Err(refused(status, success, body))
    }
}

/// A 2xx the protocol does not use here is a broken answer, not a refusal.
fn refused(status: StatusCode, success: &[StatusCode], body: Vec<u8>) -> Error {
    if status.is_success() {
        let expected: Vec<&str> = success.iter().map(StatusCode::as_str).collect();
        Error::InvalidResponse(format!(
            "unexpected status {} (expected {})",
            status.as_u16(),
            expected.join(" or ")
        ))
    } else {
        response::refusal(status.as_u16(), body)
    }
}

fn json_body(document: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(document).expect("a JSON map always serializes")
}

/// One request and its capped body.
async fn exchange(
    http: &reqwest::Client,
    method: Method,
    url: &Url,
    token: Option<&Secret>,
    body: Option<Vec<u8>>,
    options: &Options,
) -> Result<(StatusCode, Vec<u8>), Error> {
    let mut request = http
        .request(method, url.clone())
        .headers(options.headers.clone())
        .header(ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, token.bearer());
    }
    if let Some(body) = body {
        request = request.header(CONTENT_TYPE, "application/json").body(body);
    }
    let mut response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    let limit = options.max_response_bytes;
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(TransportError::BodyTooLarge(limit).into());
    }
    let mut buffer = Vec::with_capacity(response.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if (buffer.len() + chunk.len()) as u64 > limit {
            return Err(TransportError::BodyTooLarge(limit).into());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok((status, buffer))
}

/// Names a transport failure without the URL (it may be long) and never with
/// headers (they may hold tokens).
fn transport_error(err: reqwest::Error) -> TransportError {
    let timeout = err.is_timeout();
    let connect = err.is_connect();
    let message = error_chain(&err.without_url());
    let lower = message.to_ascii_lowercase();
    if ["certificate", "tls", "handshake", "x509"]
        .iter()
        .any(|w| lower.contains(w))
    {
        TransportError::Tls(message)
    } else if connect {
        TransportError::Connect(message)
    } else if timeout {
        TransportError::Timeout
    } else {
        TransportError::Connection(message)
    }
}

/// The causes of an error, outermost first, without the generic wrappers
/// ("error sending request", "client error (Connect)") that say nothing.
fn error_chain(err: &dyn std::error::Error) -> String {
    const GENERIC: &[&str] = &[
        "error sending request",
        "client error (",
        "request or response body error",
        "error decoding response body",
        "builder error",
    ];
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(current) = next {
        let text = current.to_string();
        if !GENERIC.iter().any(|g| text.starts_with(g)) && !parts.iter().any(|p| p.contains(&text))
        {
            parts.push(text);
        }
        next = current.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    cacertfile: Option<PathBuf>,
    connect_timeout: Duration,
}

/// Connection pools, one per distinct TLS and connect configuration; the
/// default options all share one.
static POOLS: Lazy<Mutex<HashMap<PoolKey, reqwest::Client>>> = Lazy::new(Default::default);

fn http_client(options: &Options) -> Result<reqwest::Client, TransportError> {
    let key = PoolKey {
        cacertfile: options.cacertfile.clone(),
        connect_timeout: options.connect_timeout,
    };
    let mut pools = POOLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(client) = pools.get(&key) {
        return Ok(client.clone());
    }
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(key.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(path) = &key.cacertfile {
        let pem = std::fs::read(path)
            .map_err(|e| TransportError::CaCertFile(format!("{}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| TransportError::CaCertFile(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(TransportError::CaCertFile(format!(
                "{}: no PEM certificate found",
                path.display()
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(|e| {
        TransportError::Connect(format!("cannot build the HTTP client: {}", error_chain(&e)))
    })?;
    pools.insert(key, client.clone());
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let secret = Secret::new("t", "s3cr3t-token".into()).unwrap();
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        let options = Options {
            initial_access_token: Some(secret),
            ..Options::default()
        };
        assert!(!format!("{options:?}").contains("s3cr3t"));
        assert!(Secret::new("t", String::new()).is_err());
        assert!(Secret::new("t", "a\r\nInjected: x".into()).is_err());
    }

    #[test]
    fn reserved_and_invalid_headers_are_refused() {
        let mut options = Options::default();
        assert!(options.add_header("x-request-id", "42").is_ok());
        assert!(options.add_header("Authorization", "Bearer x").is_err());
        assert!(options.add_header("bad header", "x").is_err());
        assert!(options.add_header("x-ok", "bad\nvalue").is_err());
    }

    #[test]
    fn management_calls_check_uri_and_token() {
        assert_eq!(
            Call::read(
                "http://as.example.com/reg/1",
                "t".into(),
                Options::default()
            )
            .unwrap_err(),
            RequestError::HttpsRequired
        );
        assert!(matches!(
            Call::read("https://as.example.com/reg/1", String::new(), Options::default()).unwrap_err(),
            RequestError::InvalidField { field, .. } if field == "registration_access_token"
        ));
    }
}
