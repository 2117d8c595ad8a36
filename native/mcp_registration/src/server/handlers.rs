//! Routing and the endpoints: RFC 8414 metadata, RFC 7591 registration and
//! RFC 7592 management.
//!
//! What a client sends is checked and completed by
//! [`metadata::prepare_client_metadata`], the same function the client runs
//! before sending, so both sides apply one set of rules. This module adds
//! only the server's own policy, which is the RFCs' rather than the client
//! library's ([`SERVER_POLICY`]):
//!
//! - an omitted `token_endpoint_auth_method` is `client_secret_basic`
//!   (RFC 7591 §2), and every method but `none` gets a client secret;
//! - metadata the server does not know is ignored: neither stored nor echoed
//!   (RFC 7591 §2, §3.1);
//! - `application_type` is stored only when sent (deriving it is the MCP
//!   client's duty, SEP-837);
//! - a private-use redirect URI scheme must be a reverse domain name with a
//!   period, `com.example.app:/cb` (RFC 8252 §7.1); loopback redirects are
//!   http on an IP literal or `localhost` with any port (§7.3; `localhost`
//!   is NOT RECOMMENDED by §8.3 but accepted, as MCP clients use it); claimed
//!   https URLs (§7.2) are accepted;
//! - a PUT replaces the registration (RFC 7592 §2.2): an omitted field is
//!   reset to its default, so an omitted `token_endpoint_auth_method` is
//!   `client_secret_basic` again and a confidential client keeps its secret.
//!   Only a PUT that sends `token_endpoint_auth_method: "none"` makes a
//!   client public, and its secret is then dropped;
//! - which authentication methods, grant types and response types it
//!   supports.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use http::header::{
    HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, EXPECT, PRAGMA, WWW_AUTHENTICATE,
};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use serde_json::{Map, Value};

use super::credentials::{self, NoRandomness};
use super::store::{ClientRecord, IssuedSecret, Refused};
use super::App;
use crate::error::RequestError;
use crate::metadata;
use crate::response::json_type;
use crate::uri;

pub type HttpResponse = Response<Full<Bytes>>;

pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
pub const REGISTER_PATH: &str = "/register";

/// The server's defaults: RFC 7591 §2's, nothing of the client library's.
pub const SERVER_POLICY: metadata::Policy = metadata::Policy {
    token_endpoint_auth_method: metadata::RFC_TOKEN_ENDPOINT_AUTH_METHOD,
    derive_application_type: false,
};

/// `token_endpoint_auth_method` values this server accepts; every one but
/// `none` gets a client secret.
pub const TOKEN_ENDPOINT_AUTH_METHODS: &[&str] =
    &["none", "client_secret_basic", "client_secret_post"];
/// `grant_types` values this server accepts.
pub const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token", "client_credentials"];
/// `response_types` values this server accepts.
pub const RESPONSE_TYPES: &[&str] = &["code"];

/// How long a client may take to send a request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a refused request's body is read and thrown away before
/// answering, so that the connection can be kept (or closed without a
/// reset). Bigger bodies are not read: the connection is closed, with the
/// lingering close of `serve_connection` taking in what still arrives.
const DRAIN_LIMIT: u64 = 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A refusal: an error status with an OAuth-style JSON body.
#[derive(Debug)]
pub(super) struct Reject {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl Reject {
    pub(super) fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    /// RFC 7591 §3.2.2.
    fn invalid_metadata(description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            description,
        )
    }

    /// RFC 6750 §3.1; sent with `WWW-Authenticate`.
    fn invalid_token(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", description)
    }

    /// RFC 7592 §2: a missing or wrong token and an unknown client look the
    /// same, so that client ids cannot be probed.
    fn not_authorized() -> Self {
        Self::invalid_token(
            "a valid registration access token for this client is required (Authorization: Bearer)",
        )
    }

    fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    fn server_error(description: &str) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            description,
        )
    }
}

impl From<NoRandomness> for Reject {
    fn from(_: NoRandomness) -> Self {
        Self::server_error("the server could not generate a credential")
    }
}

/// Maps a metadata rule violation to its RFC 7591 §3.2.2 error code, with a
/// description that names the field and the rule.
fn metadata_error(error: RequestError) -> Reject {
    match error {
        RequestError::InvalidRedirectUris(uris) => {
            let problems: Vec<String> = uris
                .iter()
                .map(|u| match uri::check_redirect_uri(u) {
                    Err(problem) => format!("{u:?} {}", problem.describe()),
                    Ok(()) => format!("{u:?} is not allowed"),
                })
                .collect();
            Reject::new(
                StatusCode::BAD_REQUEST,
                "invalid_redirect_uri",
                format!("invalid redirect_uris: {}", problems.join("; ")),
            )
        }
        RequestError::RedirectUrisMustBeList => Reject::new(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            "redirect_uris must be an array of URI strings",
        ),
        RequestError::InvalidField { ref field, .. } if field == "redirect_uris" => Reject::new(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            error.to_string(),
        ),
        other => Reject::invalid_metadata(other.to_string()),
    }
}

/// Answers one request. Never panics: a bug becomes a 500.
pub(super) async fn handle(app: Arc<App>, request: Request<Incoming>) -> HttpResponse {
    let (parts, body) = request.into_parts();
    let mut body = Some(body);
    let mut response = AssertUnwindSafe(route(&app, &parts, &mut body))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            rejection(Reject::server_error(
                "an internal error occurred while handling the request",
            ))
        });
    // A refused request's body may still be on its way. Reading it first lets
    // the client see the answer instead of a reset connection.
    let finished = match body {
        Some(body) if response.status() != StatusCode::REQUEST_TIMEOUT => {
            discard(body, &parts.headers).await
        }
        Some(body) => body.is_end_stream(),
        None => true,
    };
    if !finished {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn route(app: &App, parts: &Parts, body: &mut Option<Incoming>) -> HttpResponse {
    if let Some(response) = super::route_discovery(app, parts).await {
        return response;
    }
    let path = parts.uri.path();
    let method = &parts.method;
    if path == METADATA_PATH {
        return match *method {
            Method::GET => json(StatusCode::OK, &app.metadata, false),
            _ => method_not_allowed("GET"),
        };
    }
    if path == REGISTER_PATH {
        return match *method {
            Method::POST => answer(register(app, parts, body).await),
            _ => method_not_allowed("POST"),
        };
    }
    let client_id = path
        .strip_prefix(REGISTER_PATH)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|id| !id.is_empty() && !id.contains('/'));
    if let Some(client_id) = client_id {
        return match *method {
            Method::GET => answer(read(app, parts, client_id)),
            Method::PUT => answer(update(app, parts, client_id, body).await),
            Method::DELETE => answer(delete(app, parts, client_id)),
            _ => method_not_allowed("GET, PUT, DELETE"),
        };
    }
    rejection(Reject::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("there is no endpoint at this path; clients register at {REGISTER_PATH}"),
    ))
}

/// RFC 7591 §3.1: `POST /register`.
async fn register(
    app: &App,
    parts: &Parts,
    body: &mut Option<Incoming>,
) -> Result<HttpResponse, Reject> {
    if let Some(expected) = &app.config.require_initial_access_token {
        match credentials::bearer(&parts.headers) {
            Some(token) if credentials::matches(token, expected) => {}
            _ => {
                return Err(Reject::invalid_token(
                    "a valid initial access token is required to register (Authorization: Bearer)",
                ))
            }
        }
    }
    let mut metadata = read_json_object(app, parts, body).await?;
    checked_metadata(&mut metadata)?;
    let now = unix_now();
    let client_secret = if needs_secret(&metadata) {
        Some(app.new_secret(now)?)
    } else {
        None
    };
    let mut record = ClientRecord {
        client_id: credentials::client_id()?,
        client_id_issued_at: now,
        client_secret,
        registration_access_token: credentials::secret()?,
        metadata,
    };
    // 128 random bits do not collide in practice; still, never overwrite.
    for _ in 0..4 {
        match app.store.insert(record) {
            Ok(stored) => return Ok(client_response(app, StatusCode::CREATED, &stored)),
            Err(taken) => {
                record = taken;
                record.client_id = credentials::client_id()?;
            }
        }
    }
    Err(Reject::server_error(
        "the server could not allocate a client_id",
    ))
}

/// RFC 7592 §2.1: `GET /register/<client_id>`.
fn read(app: &App, parts: &Parts, client_id: &str) -> Result<HttpResponse, Reject> {
    let record = authorized(app, parts, client_id)?;
    Ok(client_response(app, StatusCode::OK, &record))
}

/// RFC 7592 §2.2: `PUT /register/<client_id>` replaces the registration.
async fn update(
    app: &App,
    parts: &Parts,
    client_id: &str,
    body: &mut Option<Incoming>,
) -> Result<HttpResponse, Reject> {
    // Nobody gets the body read without the token.
    let token = authorized_token(parts)?;
    authorized(app, parts, client_id)?;
    let mut doc = read_json_object(app, parts, body).await?;
    metadata::check_put_document(&doc).map_err(metadata_error)?;
    match doc.remove("client_id") {
        Some(Value::String(sent)) if sent == client_id => {}
        Some(Value::String(_)) => {
            return Err(Reject::invalid_metadata(
                "client_id does not match the client being updated",
            ))
        }
        Some(_) => return Err(Reject::invalid_metadata("client_id must be a string")),
        None => {
            return Err(Reject::invalid_metadata(
                "client_id is required in an update (RFC 7592 §2.2)",
            ))
        }
    }
    let sent_secret = match doc.remove("client_secret") {
        Some(Value::String(secret)) if !secret.is_empty() => Some(secret),
        Some(value) if metadata::has_value(&value) => {
            return Err(Reject::invalid_metadata("client_secret must be a string"))
        }
        _ => None,
    };
    checked_metadata(&mut doc)?;
    let now = unix_now();
    // Made before taking the lock; used only if the client needs a secret
    // and has none, or if tokens rotate.
    let fresh_secret = app.new_secret(now)?;
    let fresh_token = match app.config.rotate_registration_access_token {
        true => Some(credentials::secret()?),
        false => None,
    };
    let record = app
        .store
        .update(client_id, |current| {
            if !credentials::matches(token, &current.registration_access_token) {
                return Err(Reject::not_authorized());
            }
            if let Some(sent) = &sent_secret {
                let same = current
                    .client_secret
                    .as_ref()
                    .is_some_and(|secret| credentials::matches(sent, &secret.value));
                if !same {
                    return Err(Reject::invalid_metadata(
                        "client_secret does not match the client's current secret",
                    ));
                }
            }
            let client_secret = match needs_secret(&doc) {
                true => current.client_secret.clone().or(Some(fresh_secret)),
                false => None,
            };
            Ok(ClientRecord {
                client_id: current.client_id.clone(),
                client_id_issued_at: current.client_id_issued_at,
                client_secret,
                registration_access_token: fresh_token
                    .unwrap_or_else(|| current.registration_access_token.clone()),
                metadata: doc,
            })
        })
        .map_err(|refused| match refused {
            Refused::Unknown => Reject::not_authorized(),
            Refused::Check(reject) => reject,
        })?;
    Ok(client_response(app, StatusCode::OK, &record))
}

/// RFC 7592 §2.3: `DELETE /register/<client_id>`.
fn delete(app: &App, parts: &Parts, client_id: &str) -> Result<HttpResponse, Reject> {
    let token = authorized_token(parts)?;
    app.store
        .remove_if(client_id, |record| {
            credentials::matches(token, &record.registration_access_token)
        })
        .map_err(|_| Reject::not_authorized())?;
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    no_store(response.headers_mut());
    Ok(response)
}

fn authorized_token(parts: &Parts) -> Result<&str, Reject> {
    credentials::bearer(&parts.headers).ok_or_else(Reject::not_authorized)
}

fn authorized(app: &App, parts: &Parts, client_id: &str) -> Result<Arc<ClientRecord>, Reject> {
    let token = authorized_token(parts)?;
    match app.store.get(client_id) {
        Some(record) if credentials::matches(token, &record.registration_access_token) => {
            Ok(record)
        }
        _ => Err(Reject::not_authorized()),
    }
}

/// The shared metadata rules, then this server's policy.
fn checked_metadata(doc: &mut Map<String, Value>) -> Result<(), Reject> {
    metadata::prepare_client_metadata(doc, &SERVER_POLICY).map_err(metadata_error)?;
    metadata::retain_client_metadata(doc);
    if let Some(Value::Array(uris)) = doc.get("redirect_uris") {
        let problems: Vec<String> = uris
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|u| match uri::check_native_scheme(u) {
                Err(problem) => Some(format!("{u:?} {}", problem.describe())),
                Ok(()) => None,
            })
            .collect();
        if !problems.is_empty() {
            return Err(Reject::new(
                StatusCode::BAD_REQUEST,
                "invalid_redirect_uri",
                format!("invalid redirect_uris: {}", problems.join("; ")),
            ));
        }
    }
    supported(
        doc,
        "token_endpoint_auth_method",
        TOKEN_ENDPOINT_AUTH_METHODS,
    )?;
    supported(doc, "grant_types", GRANT_TYPES)?;
    supported(doc, "response_types", RESPONSE_TYPES)
}

fn supported(doc: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<(), Reject> {
    let values: Vec<&str> = match doc.get(field) {
        Some(Value::String(value)) => vec![value],
        Some(Value::Array(values)) => values.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    match values.iter().find(|v| !allowed.contains(v)) {
        Some(value) => Err(Reject::invalid_metadata(format!(
            "{field} {value:?} is not supported by this server; supported: {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Every supported authentication method but `none` uses a client secret.
fn needs_secret(doc: &Map<String, Value>) -> bool {
    doc.get("token_endpoint_auth_method")
        .and_then(Value::as_str)
        .is_some_and(|method| method != "none")
}

/// Reads a request body that must be a JSON object of at most
/// `max_body_bytes`.
async fn read_json_object(
    app: &App,
    parts: &Parts,
    body: &mut Option<Incoming>,
) -> Result<Map<String, Value>, Reject> {
    if !is_json(&parts.headers) {
        return Err(Reject::invalid_metadata(
            "the request body must be a JSON object sent with Content-Type: application/json",
        ));
    }
    let limit = app.config.max_body_bytes;
    let incoming = body
        .as_mut()
        .ok_or_else(|| Reject::server_error("the request body was already read"))?;
    if incoming.size_hint().lower() > limit as u64 {
        return Err(Reject::too_large(limit));
    }
    let mut bytes = Vec::new();
    let read = async {
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|_| {
                Reject::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the request body could not be read",
                )
            })?;
            if let Some(data) = frame.data_ref() {
                if bytes.len() + data.len() > limit {
                    return Err(Reject::too_large(limit));
                }
                bytes.extend_from_slice(data);
            }
        }
        Ok(())
    };
    tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .map_err(|_| {
            Reject::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request",
                "the request body was not received in time",
            )
        })??;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(doc)) => Ok(doc),
        Ok(other) => Err(Reject::invalid_metadata(format!(
            "the request body must be a JSON object, not {}",
            json_type(&other)
        ))),
        Err(e) => Err(Reject::invalid_metadata(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// `application/json`, with or without parameters such as `charset`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads and drops what is left of a request body, within bounds. `false`
/// when it was not read to its end: the connection must then close.
async fn discard(mut body: Incoming, headers: &HeaderMap) -> bool {
    if body.is_end_stream() {
        return true;
    }
    // The client waits for a 100 Continue before sending: refusing without
    // reading saves it the upload.
    if headers.contains_key(EXPECT) || body.size_hint().lower() > DRAIN_LIMIT {
        return false;
    }
    let drain = async {
        let mut seen = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                seen += data.len() as u64;
                if seen > DRAIN_LIMIT {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIMEOUT, drain)
        .await
        .unwrap_or(false)
}

fn answer(result: Result<HttpResponse, Reject>) -> HttpResponse {
    result.unwrap_or_else(rejection)
}

fn client_response(app: &App, status: StatusCode, record: &ClientRecord) -> HttpResponse {
    let uri = app.store.registration_client_uri(&record.client_id);
    json(
        status,
        &Value::Object(record.information(uri).document),
        true,
    )
}

pub(super) fn rejection(reject: Reject) -> HttpResponse {
    let body = serde_json::json!({
        "error": reject.error,
        "error_description": reject.description,
    });
    let mut response = json(reject.status, &body, true);
    if reject.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    if matches!(
        reject.status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

pub(super) fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = rejection(Reject::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this endpoint accepts {allow}"),
    ));
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

pub(super) fn json(status: StatusCode, body: &Value, sensitive: bool) -> HttpResponse {
    // Serializing a `Value` cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if sensitive {
        no_store(headers);
    }
    response
}

/// RFC 7591 §3.2.1: answers that carry credentials are never cached.
pub(super) fn no_store(headers: &mut HeaderMap) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
}

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl App {
    /// A new client secret, expiring after the configured lifetime.
    fn new_secret(&self, now: i64) -> Result<IssuedSecret, NoRandomness> {
        Ok(IssuedSecret {
            value: credentials::secret()?,
            expires_at: super::secret_expiry(self.config.client_secret_ttl, now),
        })
    }
}
