//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document-00):
//! the client publishes its metadata as JSON at an https URL and uses that URL
//! as its `client_id`. This module holds the draft's rules, used by the client
//! (building the document it serves, [`document`]) and by the embedded server
//! (checking a document it fetched, [`verify`]): §3 (the client identifier URL:
//! https, a path, no dot segments, no fragment, no user info), §4.1 (the
//! document's `client_id` equals the URL by simple string comparison; no
//! `client_secret`, no `client_secret_expires_at`, no shared-secret
//! `token_endpoint_auth_method`), §4.5 (a redirect URI must exactly match one
//! of the document's `redirect_uris`), §5 (the
//! `client_id_metadata_document_supported` server metadata) and §6.6 (the 5 KB
//! recommended response size). The metadata members themselves are checked by
//! the same [`crate::metadata`] rules as a registration.

use serde_json::{Map, Value};
use url::Url;

use crate::error::RequestError;
use crate::metadata::{self, REGISTRATION_ENDPOINT, REQUIRED_FOR_REGISTRATION};
use crate::request;
use crate::uri;

/// §5: the RFC 8414 member that advertises support.
pub const SUPPORTED_METADATA: &str = "client_id_metadata_document_supported";

/// §6.6: the recommended largest document an authorization server reads.
pub const MAX_DOCUMENT_BYTES: u64 = 5 * 1024;

/// §4.1: a document cannot establish a shared secret, so absent
/// `token_endpoint_auth_method` means a public client.
pub const DEFAULT_TOKEN_ENDPOINT_AUTH_METHOD: &str = "none";

/// The field that holds the document URL.
const CLIENT_ID: &str = "client_id";

/// §4.1, §6.2: `client_secret_basic`, `client_secret_post`,
/// `client_secret_jwt` and any other `client_secret_*` method rest on a
/// shared symmetric secret, which a published document cannot carry.
pub fn is_shared_secret_method(method: &str) -> bool {
    method.starts_with("client_secret_")
}

fn invalid(field: &str, message: impl Into<String>) -> RequestError {
    RequestError::InvalidField {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// §3: checks a client identifier URL. It must be https (or, when
/// `allow_loopback_http` is set for local development, http on a loopback
/// host), have a path other than `/`, no `.` or `..` segment, no fragment and
/// no user name or password, and be written in its normalized form, so that
/// the simple string comparison of §4.1 cannot be fooled by two spellings of
/// one URL. A query is allowed (the draft says SHOULD NOT, not MUST NOT).
pub fn check_url(raw: &str, allow_loopback_http: bool) -> Result<Url, RequestError> {
    let url = Url::parse(raw).map_err(|_| invalid(CLIENT_ID, "must be an absolute https URL"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_loopback_http && url.host().is_some_and(uri::is_loopback_host) => {}
        "http" if allow_loopback_http => return Err(invalid(
            CLIENT_ID,
            "must be an https URL (plain http is allowed only on a loopback host in development)",
        )),
        _ => return Err(invalid(CLIENT_ID, "must be an https URL")),
    }
    if url.host().is_none() {
        return Err(invalid(CLIENT_ID, "must have a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            CLIENT_ID,
            "must not contain a user name or password",
        ));
    }
    if raw.contains('#') {
        return Err(invalid(CLIENT_ID, "must not contain a fragment"));
    }
    if has_dot_segment(raw) {
        return Err(invalid(
            CLIENT_ID,
            "must not contain single-dot or double-dot path segments",
        ));
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err(invalid(
            CLIENT_ID,
            "must contain a path, such as https://app.example.com/client.json",
        ));
    }
    if url.as_str() != raw {
        return Err(invalid(
            CLIENT_ID,
            format!("must be written in normalized form: {}", url.as_str()),
        ));
    }
    Ok(url)
}

/// Whether the path of `raw` (before `?` or `#`) has a `.` or `..` segment,
/// percent-encoded or not. Checked on the text, because URL parsing removes
/// them.
fn has_dot_segment(raw: &str) -> bool {
    let after_scheme = raw.split_once("://").map_or(raw, |(_, rest)| rest);
    let path = after_scheme
        .find('/')
        .map_or("", |start| &after_scheme[start..]);
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.split('/').any(|segment| {
        let lower = segment.to_ascii_lowercase().replace("%2e", ".");
        lower == "." || lower == ".."
    })
}

/// §4.1: `client_secret` and `client_secret_expires_at` must not be used,
/// and `token_endpoint_auth_method` must not name a shared-secret method.
fn check_no_secret(doc: &Map<String, Value>) -> Result<(), RequestError> {
    for field in ["client_secret", "client_secret_expires_at"] {
        if doc.contains_key(field) {
            return Err(invalid(
                field,
                "must not appear in a client ID metadata document: it has no shared secret",
            ));
        }
    }
    match doc.get("token_endpoint_auth_method") {
        Some(Value::String(method)) if is_shared_secret_method(method) => Err(invalid(
            "token_endpoint_auth_method",
            format!(
                "must not be {method:?} in a client ID metadata document: shared-secret methods are not allowed; use \"none\" or \"private_key_jwt\""
            ),
        )),
        _ => Ok(()),
    }
}

/// The client's defaults for the document it publishes: no shared secret
/// is possible (§4.1), so an absent `token_endpoint_auth_method` is
/// `"none"`; `application_type` is derived (SEP-837 puts it on the client).
pub const CLIENT_DOCUMENT_POLICY: metadata::Policy = metadata::Policy {
    token_endpoint_auth_method: DEFAULT_TOKEN_ENDPOINT_AUTH_METHOD,
    derive_application_type: true,
};

/// The authorization server's reading of a fetched document: a public
/// client when the method is absent, and `application_type` only as sent.
pub const SERVER_DOCUMENT_POLICY: metadata::Policy = metadata::Policy {
    token_endpoint_auth_method: DEFAULT_TOKEN_ENDPOINT_AUTH_METHOD,
    derive_application_type: false,
};

/// Builds the document a client serves at `url` (its `client_id`).
///
/// `client_metadata` is a registration request without
/// `registration_endpoint`: the documented fields, plus `extra` for extension
/// metadata. `client_name` and `redirect_uris` are required, as for a
/// registration. A `client_id` member, if given, must equal `url`. The
/// metadata is checked and completed by the registration rules, secrets are
/// refused (§4.1), and the result carries `"client_id": url`.
pub fn document(
    url: &str,
    mut client_metadata: Map<String, Value>,
    allow_loopback_http: bool,
) -> Result<Map<String, Value>, RequestError> {
    check_url(url, allow_loopback_http)?;
    match client_metadata.remove(CLIENT_ID) {
        None | Some(Value::Null) => {}
        Some(Value::String(id)) if id == url => {}
        Some(_) => {
            return Err(invalid(
                CLIENT_ID,
                "must equal the URL the document is served at, or be left out",
            ))
        }
    }
    if client_metadata.contains_key(REGISTRATION_ENDPOINT) {
        return Err(invalid(
            REGISTRATION_ENDPOINT,
            "has no place in a client ID metadata document",
        ));
    }
    let missing: Vec<&'static str> = REQUIRED_FOR_REGISTRATION
        .iter()
        .copied()
        .filter(|name| *name != REGISTRATION_ENDPOINT)
        .filter(|name| !client_metadata.get(*name).is_some_and(metadata::has_value))
        .collect();
    if !missing.is_empty() {
        return Err(RequestError::MissingRequiredFields(missing));
    }
    let mut doc = request::flatten_extra(client_metadata)?;
    check_no_secret(&doc)?;
    metadata::prepare_client_metadata(&mut doc, &CLIENT_DOCUMENT_POLICY)?;
    doc.insert(CLIENT_ID.into(), Value::from(url));
    Ok(doc)
}

/// Checks a document an authorization server fetched from `url` (§4.1): a
/// JSON object whose `client_id` equals `url` by simple string comparison,
/// without secrets, whose metadata passes the registration rules. Returns the
/// document completed with the defaults (`token_endpoint_auth_method:
/// "none"`, `grant_types`, `response_types`; `application_type` only as
/// sent). Members that are not client metadata are kept as they are.
pub fn verify(url: &str, body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    let Ok(Value::Object(mut doc)) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid("document", "is not a JSON object"));
    };
    match doc.remove(CLIENT_ID) {
        Some(Value::String(id)) if id == url => {}
        Some(Value::String(_)) => {
            return Err(invalid(
                CLIENT_ID,
                "of the document does not equal the URL it was fetched from",
            ))
        }
        _ => return Err(invalid(CLIENT_ID, "is missing from the document")),
    }
    check_no_secret(&doc)?;
    metadata::prepare_client_metadata(&mut doc, &SERVER_DOCUMENT_POLICY)?;
    doc.insert(CLIENT_ID.into(), Value::from(url));
    Ok(doc)
}

/// §4.5: `redirect_uri` must exactly match one of the document's
/// `redirect_uris`.
pub fn redirect_uri_registered(doc: &Map<String, Value>, redirect_uri: &str) -> bool {
    doc.get("redirect_uris")
        .and_then(Value::as_array)
        .is_some_and(|uris| uris.iter().any(|u| u.as_str() == Some(redirect_uri)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const URL: &str = "https://app.example.com/oauth/client.json";

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn metadata() -> Map<String, Value> {
        obj(json!({"client_name": "Café", "redirect_uris": ["http://127.0.0.1:9/cb"]}))
    }

    fn field_of(error: RequestError) -> String {
        match error {
            RequestError::InvalidField { field, .. } => field,
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn section_3_client_identifier_urls() {
        for ok in [
            URL,
            "https://app.example.com/c",
            "https://app.example.com:8443/c.json",
            "https://app.example.com/c?v=1",
        ] {
            assert!(check_url(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "http://app.example.com/c",
            "https://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/a/../c",
            "https://app.example.com/./c",
            "https://app.example.com/a/%2E%2E/c",
            "https://app.example.com/c#frag",
            "https://user:pw@app.example.com/c",
            "https://APP.example.com/c",
            "ftp://app.example.com/c",
            "app.example.com/c",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_http_only_when_allowed() {
        let url = "http://127.0.0.1:4000/client.json";
        assert!(check_url(url, false).is_err());
        assert!(check_url(url, true).is_ok());
        assert!(check_url("http://localhost:4000/c", true).is_ok());
        assert!(check_url("http://app.example.com/c", true).is_err());
    }

    #[test]
    fn section_4_1_document_has_client_id_and_defaults() {
        let doc = document(URL, metadata(), false).unwrap();
        assert_eq!(
            Value::Object(doc),
            json!({
                "client_id": URL,
                "client_name": "Café",
                "redirect_uris": ["http://127.0.0.1:9/cb"],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
                "application_type": "native"
            })
        );
    }

    #[test]
    fn section_4_1_no_shared_secret() {
        for method in [
            "client_secret_basic",
            "client_secret_post",
            "client_secret_jwt",
        ] {
            let mut m = metadata();
            m.insert("token_endpoint_auth_method".into(), json!(method));
            assert_eq!(
                field_of(document(URL, m, false).unwrap_err()),
                "token_endpoint_auth_method"
            );
        }
        let mut m = metadata();
        m.insert(
            "token_endpoint_auth_method".into(),
            json!("private_key_jwt"),
        );
        m.insert(
            "jwks_uri".into(),
            json!("https://app.example.com/jwks.json"),
        );
        assert!(document(URL, m, false).is_ok());
        let mut m = metadata();
        m.insert("client_secret".into(), json!("s"));
        assert_eq!(
            field_of(document(URL, m, false).unwrap_err()),
            "client_secret"
        );
    }

    #[test]
    fn the_same_metadata_rules_as_registration() {
        let mut m = metadata();
        m.insert("redirect_uris".into(), json!(["javascript:x"]));
        assert_eq!(
            document(URL, m, false).unwrap_err(),
            RequestError::InvalidRedirectUris(vec!["javascript:x".into()])
        );
        let m = obj(json!({"redirect_uris": ["https://a.example/cb"]}));
        assert_eq!(
            document(URL, m, false).unwrap_err(),
            RequestError::MissingRequiredFields(vec!["client_name"])
        );
        let mut m = metadata();
        m.insert("registration_endpoint".into(), json!("https://as/r"));
        assert_eq!(
            field_of(document(URL, m, false).unwrap_err()),
            "registration_endpoint"
        );
        let mut m = metadata();
        m.insert("redirect_uri".into(), json!("typo"));
        assert_eq!(
            field_of(document(URL, m, false).unwrap_err()),
            "redirect_uri"
        );
        let mut m = metadata();
        m.insert("client_id".into(), json!("https://other.example/c"));
        assert_eq!(field_of(document(URL, m, false).unwrap_err()), "client_id");
        let mut m = metadata();
        m.insert("client_id".into(), json!(URL));
        assert!(document(URL, m, false).is_ok());
        let mut m = metadata();
        m.insert("extra".into(), json!({"vendor": 1}));
        assert_eq!(document(URL, m, false).unwrap()["vendor"], json!(1));
    }

    #[test]
    fn section_4_1_server_verifies_fetched_documents() {
        let good = json!({"client_id": URL, "client_name": "x", "redirect_uris": ["https://a.example/cb"], "vendor": true});
        let doc = verify(URL, good.to_string().as_bytes()).unwrap();
        assert_eq!(doc["token_endpoint_auth_method"], json!("none"));
        assert_eq!(doc["vendor"], json!(true));

        let other = json!({"client_id": "https://evil.example/c", "redirect_uris": ["https://a.example/cb"]});
        assert_eq!(
            field_of(verify(URL, other.to_string().as_bytes()).unwrap_err()),
            "client_id"
        );
        let missing = json!({"redirect_uris": ["https://a.example/cb"]});
        assert_eq!(
            field_of(verify(URL, missing.to_string().as_bytes()).unwrap_err()),
            "client_id"
        );
        let secret = json!({"client_id": URL, "redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "client_secret_basic"});
        assert_eq!(
            field_of(verify(URL, secret.to_string().as_bytes()).unwrap_err()),
            "token_endpoint_auth_method"
        );
        let expires = json!({"client_id": URL, "redirect_uris": ["https://a.example/cb"], "client_secret_expires_at": 0});
        assert_eq!(
            field_of(verify(URL, expires.to_string().as_bytes()).unwrap_err()),
            "client_secret_expires_at"
        );
        let no_redirects = json!({"client_id": URL});
        assert_eq!(
            field_of(verify(URL, no_redirects.to_string().as_bytes()).unwrap_err()),
            "redirect_uris"
        );
        assert_eq!(field_of(verify(URL, b"[1]").unwrap_err()), "document");
        assert_eq!(field_of(verify(URL, b"not json").unwrap_err()), "document");
    }

    #[test]
    fn section_4_5_exact_redirect_uri_match() {
        let doc = document(URL, metadata(), false).unwrap();
        assert!(redirect_uri_registered(&doc, "http://127.0.0.1:9/cb"));
        assert!(!redirect_uri_registered(&doc, "http://127.0.0.1:9/cb/"));
        assert!(!redirect_uri_registered(&doc, "http://127.0.0.1:9/cb?x=1"));
    }
}
