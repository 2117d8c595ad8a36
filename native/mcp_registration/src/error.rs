//! Every way a call can fail, mirroring ExMCP 0.10's reason shapes.
//!
//! No variant carries a secret, with one deliberate exception:
//! [`Error::CredentialsRotated`] holds the credentials a server handed out
//! before the call failed, because losing them would lock the caller out. Its
//! `Display` and `Debug` never show them.

use std::fmt;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::response::ClientInformation;

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
#[derive(Clone, PartialEq, Error)]
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
    /// Discovery (RFC 9728, RFC 8414) failed; see [`DiscoveryError`].
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// `{:credentials_rotated, client_information, reason}`: an update failed
    /// after its read (RFC 7592 §2.1) returned a new registration access
    /// token. `client` is that read's answer, new credentials included;
    /// `reason` is why the update failed.
    #[error("{reason} (the server issued new credentials first; they are kept in this error)")]
    CredentialsRotated {
        client: Box<ClientInformation>,
        reason: Box<Error>,
    },
}

/// Shows what failed, never the rotated credentials.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request(e) => f.debug_tuple("Request").field(e).finish(),
            Self::Registration { status, body } => f
                .debug_struct("Registration")
                .field("status", status)
                .field("body", body)
                .finish(),
            Self::Http { status, body } => f
                .debug_struct("Http")
                .field("status", status)
                .field("body", &String::from_utf8_lossy(body))
                .finish(),
            Self::InvalidResponse(m) => f.debug_tuple("InvalidResponse").field(m).finish(),
            Self::JsonDecode(m) => f.debug_tuple("JsonDecode").field(m).finish(),
            Self::Transport(e) => f.debug_tuple("Transport").field(e).finish(),
            Self::CredentialsRotated { client, reason } => f
                .debug_struct("CredentialsRotated")
                .field("client_id", &client.client_id())
                .field("reason", reason)
                .finish(),
            Self::Discovery(e) => f.debug_tuple("Discovery").field(e).finish(),
        }
    }
}

/// Why discovery failed. URLs are the ones discovery built or followed; none
/// carries credentials (they are refused in URLs).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DiscoveryError {
    /// `{:discovery_failed, url, reason}`: a 5xx, a redirect (never
    /// followed) or a transport failure at `url`; `cause` is an
    /// `Error::Http` or `Error::Transport`.
    #[error("discovery failed at {url}: {cause}")]
    Fetch { url: String, cause: Box<Error> },
    /// `{:invalid_metadata, url, message}`: the document at `url` is not a
    /// JSON object, or a member has the wrong type.
    #[error("the metadata at {url} is invalid: {message}")]
    InvalidMetadata { url: String, message: String },
    /// `{:resource_mismatch, resource, server_url}`: the protected resource
    /// metadata is for another resource (RFC 9728 §3.3, MCP 2025-11-25).
    #[error("the protected resource metadata names {resource}, which does not cover {server_url}")]
    ResourceMismatch {
        resource: String,
        server_url: String,
    },
    /// `{:issuer_mismatch, expected, found}` (RFC 8414 §3.3).
    #[error("the authorization server metadata names issuer {found}, expected {expected}")]
    IssuerMismatch { expected: String, found: String },
    /// `{:authorization_server_metadata_not_found, issuer, urls}`: every
    /// well-known URL answered 4xx.
    #[error("no authorization server metadata for {issuer}")]
    NotFound { issuer: String, tried: Vec<String> },
    /// `{:url_refused, url, message}`: the URL breaks the rules in
    /// `net_guard` (https, loopback, private networks).
    #[error("refused to fetch {url}: {message}")]
    UrlRefused { url: String, message: String },
    /// `{:invalid_www_authenticate, message}`
    #[error("the WWW-Authenticate value cannot be parsed: {0}")]
    InvalidWwwAuthenticate(String),
}
