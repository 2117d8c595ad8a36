//! A registration call: checked up front, then run within one deadline over
//! every round trip. The HTTP exchange is `transport`, the pools `pool`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use url::Url;

use crate::error::{Error, RequestError, TransportError};
use crate::metadata;
use crate::net_guard::{self, AddressPolicy, NetGuard};
use crate::proxy::ProxySetting;
use crate::request::{self, Registration};
use crate::response::{self, ClientInformation};
use crate::rotation::Progress;
use crate::transport::exchange;

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

    /// The token itself, for comparing and redacting; never for display.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn bearer(&self) -> HeaderValue {
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
    /// Where connections go: straight, the environment's proxy, or this one.
    pub proxy: ProxySetting,
    /// Set when the URL was learned during discovery: see [`net_guard`].
    pub guard: Option<NetGuard>,
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
            proxy: ProxySetting::Direct,
            guard: None,
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
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| "its value is not a valid header value".to_string())?;
        // A caller's header may carry a credential (an API key, a gateway
        // token): `Debug` of these options then shows `Sensitive`, not it.
        value.set_sensitive(true);
        self.headers.append(header, value);
        Ok(())
    }

    /// The address policy for `url` under the guard, if any (see
    /// [`NetGuard::check`]).
    pub(crate) fn address_policy(&self, url: &Url) -> Result<Option<AddressPolicy>, Error> {
        match &self.guard {
            None => Ok(None),
            Some(guard) => guard
                .check(url)
                .map_err(|refused| net_guard::refusal(url, refused)),
        }
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
    ///
    /// What the call sent and what an update's read handed out are kept in
    /// `progress`, outside the deadline's future, so that neither a refusal
    /// nor the deadline itself can lose a rotated credential (RFC 7592 §2.1)
    /// or let a sent one into the reason.
    pub async fn run(self) -> Result<Outcome, Error> {
        let deadline = self.options.timeout;
        let mut progress = Progress::default();
        if let Some(token) = &self.token {
            progress.sent.add(token.expose());
        }
        let result = match tokio::time::timeout(deadline, self.exchange_all(&mut progress)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout.into()),
        };
        progress.settle(result)
    }

    async fn exchange_all(&self, progress: &mut Progress) -> Result<Outcome, Error> {
        let http = net_guard::http_client(&self.options, &self.url).await?;
        let send = |method, token: Option<Secret>, body| {
            let http = &http;
            async move { exchange(http, method, &self.url, token.as_ref(), body, &self.options).await }
        };
        let token = self.token.clone();
        match &self.operation {
            Operation::Register(registration) => {
                let (status, body) =
                    send(Method::POST, token, Some(json_body(&registration.metadata))).await?;
                expect(status, &[StatusCode::OK, StatusCode::CREATED], body)
            }
            Operation::Read => {
                let (status, body) = send(Method::GET, token, None).await?;
                expect(status, &[StatusCode::OK], body)
            }
            Operation::Update { updates, replace } => {
                let mut put_token = token.clone();
                let current = if *replace {
                    None
                } else {
                    let (status, body) = send(Method::GET, token.clone(), None).await?;
                    let info = match expect(status, &[StatusCode::OK], body)? {
                        Outcome::Client(info) => info,
                        Outcome::Deleted => unreachable!("a GET is never a deletion"),
                    };
                    // RFC 7592 §2.1: a new token in the read replaces the old one at once.
                    put_token = Some(progress.read(info.clone(), token.as_ref())?);
                    Some(info.document)
                };
                let put = metadata::merge_for_put(current.as_ref(), updates);
                if let Some(Value::String(secret)) = put.get("client_secret") {
                    progress.sent.add(secret);
                }
                let (status, body) = send(Method::PUT, put_token, Some(json_body(&put))).await?;
                expect(status, &[StatusCode::OK], body)
            }
            Operation::Delete => {
                let (status, body) = send(Method::DELETE, token, None).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let secret = Secret::new("t", "s3cr3t-token".into()).unwrap();
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        let proxy =
            crate::proxy::ProxyUrl::parse("http://alice:pr0xy-pw@proxy.example:3128").unwrap();
        let mut options = Options {
            initial_access_token: Some(secret),
            proxy: ProxySetting::Url(proxy),
            ..Options::default()
        };
        options.add_header("x-api-key", "h3ader-key").unwrap();
        let shown = format!("{options:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("pr0xy-pw") && !shown.contains("h3ader"),
            "{shown}"
        );
        assert!(shown.contains("x-api-key"), "{shown}");
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
