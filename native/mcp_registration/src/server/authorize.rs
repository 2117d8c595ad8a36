//! A minimal authorization endpoint, for development: it validates the
//! client and the redirect URI the way OAuth 2.1 §4.1.1–§4.1.2.1
//! (draft-ietf-oauth-v2-1) asks, then approves at once, with no user and no
//! consent screen, by redirecting with a `code`, the `state` and RFC 9207's
//! `iss`. The code is a random placeholder: this server has no token
//! endpoint to redeem it.
//!
//! The client is a registered one (RFC 7591), or — when Client ID Metadata
//! Documents are enabled — an https URL `client_id` whose document is
//! fetched and checked (draft-ietf-oauth-client-id-metadata-document-00 §4,
//! §4.1, §4.3) and whose `redirect_uris` must hold the `redirect_uri`
//! exactly (§4.5). Until the client and redirect URI are known good, errors
//! are answered here as JSON (`invalid_client`, `invalid_request`), never by
//! redirecting (OAuth 2.1 §4.1.2.1); afterwards they go to the redirect URI.

use std::collections::HashMap;

use http::header::{HeaderValue, LOCATION};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::Value;
use url::Url;

use super::credentials;
use super::handlers::{no_store, rejection, HttpResponse, Reject};
use super::App;

/// Where the endpoint is served.
pub const AUTHORIZE_PATH: &str = "/authorize";

fn bad_request(description: impl Into<String>) -> Reject {
    Reject::new(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_client(description: impl Into<String>) -> Reject {
    Reject::new(StatusCode::BAD_REQUEST, "invalid_client", description)
}

/// `GET /authorize?response_type=code&client_id=…&redirect_uri=…&code_challenge=…`.
pub(super) async fn authorize(app: &App, parts: &Parts) -> HttpResponse {
    match checked_request(app, parts).await {
        Ok(Approved { redirect, params }) => approve(app, redirect, &params),
        Err(reject) => rejection(reject),
    }
}

struct Approved {
    redirect: Url,
    params: HashMap<String, String>,
}

/// The request's parameters, its client and its redirect URI, or a refusal
/// answered without redirecting.
async fn checked_request(app: &App, parts: &Parts) -> Result<Approved, Reject> {
    let mut params = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        // OAuth 2.1 §3.1: a parameter must not be sent more than once.
        if params.insert(name.to_string(), value.to_string()).is_some() {
            return Err(bad_request(format!("the {name} parameter is repeated")));
        }
    }
    let client_id = params
        .get("client_id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad_request("the client_id parameter is required"))?;
    let redirect_uris = registered_redirect_uris(app, client_id).await?;
    let redirect_uri = match params.get("redirect_uri") {
        Some(uri) if redirect_uris.contains(uri) => uri.clone(),
        Some(_) => {
            return Err(bad_request(
                "redirect_uri does not exactly match a redirect URI registered for this client",
            ))
        }
        None if redirect_uris.len() == 1 => redirect_uris[0].clone(),
        None => {
            return Err(bad_request(
                "the redirect_uri parameter is required: the client has several redirect URIs",
            ))
        }
    };
    let redirect = Url::parse(&redirect_uri)
        .map_err(|_| bad_request("the registered redirect_uri is not an absolute URI"))?;
    Ok(Approved { redirect, params })
}

/// The redirect URIs of a registered client, or of a Client ID Metadata
/// Document.
async fn registered_redirect_uris(app: &App, client_id: &str) -> Result<Vec<String>, Reject> {
    let strings = |doc: &serde_json::Map<String, Value>| -> Vec<String> {
        doc.get("redirect_uris")
            .and_then(Value::as_array)
            .map(|uris| {
                uris.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    if client_id.starts_with("https://") || client_id.starts_with("http://") {
        let Some(documents) = &app.documents else {
            return Err(invalid_client(
                "this server does not accept client ID metadata documents (client_id_metadata_document_supported is false); register the client first",
            ));
        };
        let doc = documents.document(client_id).await.map_err(|refused| {
            invalid_client(format!(
                "the client ID metadata document cannot be used: {}",
                refused.0
            ))
        })?;
        return Ok(strings(&doc));
    }
    match app.store.get(client_id) {
        Some(record) => Ok(strings(&record.metadata)),
        None => Err(invalid_client("unknown client_id")),
    }
}

/// The client and redirect URI are good: from here on, answers go to the
/// redirect URI.
fn approve(app: &App, mut redirect: Url, params: &HashMap<String, String>) -> HttpResponse {
    let param = |name: &str| params.get(name).map(String::as_str);
    let error = match (
        param("response_type"),
        param("code_challenge"),
        param("code_challenge_method"),
    ) {
        (Some("code"), Some(challenge), None | Some("S256")) if !challenge.is_empty() => None,
        (Some("code"), Some(_), Some(_)) => {
            Some(("invalid_request", "code_challenge_method must be S256"))
        }
        (Some("code"), _, _) => Some((
            "invalid_request",
            "code_challenge is required (PKCE with S256, OAuth 2.1 §4.1.1)",
        )),
        (None, _, _) => Some(("invalid_request", "the response_type parameter is required")),
        (Some(_), _, _) => Some((
            "unsupported_response_type",
            "only response_type=code is supported",
        )),
    };
    {
        let mut query = redirect.query_pairs_mut();
        match error {
            Some((code, description)) => {
                query
                    .append_pair("error", code)
                    .append_pair("error_description", description);
            }
            None => match credentials::secret() {
                Ok(code) => {
                    query.append_pair("code", &code);
                }
                Err(_) => {
                    query
                        .append_pair("error", "server_error")
                        .append_pair("error_description", "the server could not generate a code");
                }
            },
        }
        if let Some(state) = param("state") {
            query.append_pair("state", state);
        }
        // RFC 9207 §2: the issuer, against mix-up attacks.
        query.append_pair("iss", &app.issuer);
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    match HeaderValue::from_str(redirect.as_str()) {
        Ok(location) => {
            response.headers_mut().insert(LOCATION, location);
        }
        Err(_) => {
            return rejection(bad_request(
                "the redirect URI cannot be sent in a Location header",
            ))
        }
    }
    no_store(response.headers_mut());
    response
}
