//! Every way a call can fail, mirroring ExMCP 0.10's reason shapes.
//!
//! No variant carries a secret: tokens and client secrets never reach an
//! error, so an error can be logged or shown as it is.

use serde_json::{Map, Value};
use thiserror::Error;

/// A request refused before any network traffic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// `{:missing_required_fields, [atom]}`
    #[error("missing required fields: {}", .0.join(", "))]
    MissingRequiredFields(Vec<&'static str>),
    /// `:redirect_uris_must_be_list`
    #[error("redirect_uris must be a list")]
    RedirectUrisMustBeList,
    /// `{:invalid_redirect_uris, [uri]}`
    #[error("invalid redirect URIs: {}", .0.join(", "))]
    InvalidRedirectUris(Vec<String>),
    /// `:https_required`
    #[error("the endpoint must use https (plain http is allowed only on loopback)")]
    HttpsRequired,
    /// `{:invalid_field, field, message}`
    #[error("{field} {message}")]
    InvalidField { field: String, message: String },
}

/// Why the transport failed: `{:request_failed, reason}`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransportError {
    #[error("the request timed out")]
    Timeout,
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("TLS failure: {0}")]
    Tls(String),
    #[error("the response body exceeded {0} bytes")]
    BodyTooLarge(u64),
    /// The connection broke after it was made: reset, closed early, truncated.
    #[error("the connection failed: {0}")]
    Connection(String),
    /// The proxy refused the request: a `CONNECT` tunnel answered with
    /// anything but 2xx, or a 407. Never holds the proxy's credentials.
    #[error("the proxy refused: {0}")]
    Proxy(String),
    /// The `cacertfile` option could not be read or parsed.
    #[error("cannot use cacertfile: {0}")]
    CaCertFile(String),
    /// A bug: a panic in the request path, caught and reported.
    #[error("internal error: {0}")]
    Panic(String),
}

/// Everything a registration call can return instead of a result.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Error {
    #[error(transparent)]
    Request(#[from] RequestError),
    /// `{:registration_error, status, map}`: a refusal with a JSON object body.
    #[error("the server refused the request with status {status}")]
    Registration {
        status: u16,
        body: Map<String, Value>,
    },
    /// `{:http_error, status, body}`: any other non-success answer.
    #[error("the server answered with status {status}")]
    Http { status: u16, body: Vec<u8> },
    /// `{:invalid_response, message}`
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// `{:json_decode_error, message}`
    #[error("the response is not valid JSON: {0}")]
    JsonDecode(String),
    /// `{:request_failed, reason}`
    #[error(transparent)]
    Transport(#[from] TransportError),
}
