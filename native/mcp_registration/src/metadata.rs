//! The one place that knows the client metadata fields and their rules
//! (RFC 7591 §2, RFC 7592 §2.2).
//!
//! The client (building requests, parsing answers) and the embedded server
//! (checking what a client sent) both go through this module, so a field or a
//! rule is never written down twice. Rules are true for everyone ("`jwks` and
//! `jwks_uri` are not both sent"); policies are one party's choice and come
//! in as a [`Policy`]: the client's ([`crate::request::CLIENT_POLICY`]) and
//! the embedded server's (`server::handlers::SERVER_POLICY`) differ, so a test
//! of one against the other can catch a disagreement with the RFC.

use serde_json::{Map, Value};

use crate::error::RequestError;
use crate::uri;

/// The JSON type a field's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A UTF-8 string.
    Text,
    /// An absolute http(s) URL (RFC 7591 §2: `client_uri`, `logo_uri`, ...).
    WebUrl,
    /// A list of strings.
    TextList,
    /// A JSON integer (seconds since the epoch).
    Integer,
    /// A JSON object (`jwks`).
    Object,
}

/// Who sets a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Client metadata: the client sends it (RFC 7591 §2).
    Client,
    /// Issued by the authorization server (RFC 7591 §3.2.1, RFC 7592 §3).
    Server,
}

/// A known client metadata or client information field.
#[derive(Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub origin: Origin,
    /// RFC 7592 §2.2 forbids sending it in a PUT.
    pub forbidden_in_put: bool,
}

const fn client(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        origin: Origin::Client,
        forbidden_in_put: false,
    }
}

const fn issued(name: &'static str, kind: Kind, forbidden_in_put: bool) -> Field {
    Field {
        name,
        kind,
        origin: Origin::Server,
        forbidden_in_put,
    }
}

/// Every field this library knows, in the order the MCP TypeScript SDK's
/// `OAuthClientInformationFull` lists them, plus the RFC 7592 management fields.
/// Anything else a server returns is kept under `extra`.
pub static FIELDS: &[Field] = &[
    client("application_type", Kind::Text),
    issued("client_id", Kind::Text, false),
    issued("client_id_issued_at", Kind::Integer, true),
    client("client_name", Kind::Text),
    issued("client_secret", Kind::Text, false),
    issued("client_secret_expires_at", Kind::Integer, true),
    client("client_uri", Kind::WebUrl),
    client("contacts", Kind::TextList),
    client("grant_types", Kind::TextList),
    client("jwks", Kind::Object),
    client("jwks_uri", Kind::WebUrl),
    client("logo_uri", Kind::WebUrl),
    client("policy_uri", Kind::WebUrl),
    client("redirect_uris", Kind::TextList),
    client("response_types", Kind::TextList),
    client("scope", Kind::Text),
    client("software_id", Kind::Text),
    client("software_statement", Kind::Text),
    client("software_version", Kind::Text),
    client("token_endpoint_auth_method", Kind::Text),
    client("tos_uri", Kind::WebUrl),
    issued("registration_access_token", Kind::Text, true),
    issued("registration_client_uri", Kind::Text, true),
];

/// The request key that names where to register; it is never sent.
pub const REGISTRATION_ENDPOINT: &str = "registration_endpoint";
/// The request and answer key that holds extension metadata with string keys.
pub const EXTRA: &str = "extra";

/// Fields a registration request must have (ExMCP 0.10).
pub const REQUIRED_FOR_REGISTRATION: &[&str] =
    &[REGISTRATION_ENDPOINT, "client_name", "redirect_uris"];

/// RFC 7591 §2: what an omitted `grant_types` and `response_types` mean.
pub const DEFAULT_GRANT_TYPES: &[&str] = &["authorization_code"];
pub const DEFAULT_RESPONSE_TYPES: &[&str] = &["code"];
/// RFC 7591 §2: what an omitted `token_endpoint_auth_method` means.
pub const RFC_TOKEN_ENDPOINT_AUTH_METHOD: &str = "client_secret_basic";

/// One party's defaults for what a registration leaves out. The RFC 7591 §2
/// defaults of `grant_types` and `response_types` are the same for everyone
/// and always applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Filled in when `token_endpoint_auth_method` is absent.
    pub token_endpoint_auth_method: &'static str,
    /// SEP-837: fill in `application_type` from the redirect URIs when absent.
    pub derive_application_type: bool,
}

pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name)
}

/// `nil`, `""` and `[]` carry no value: they are never sent, and a required
/// field holding one of them counts as missing.
pub fn has_value(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

/// Checks that `value` has the JSON type `field` requires. Used on answers,
/// where an odd URL must not cost the caller its credentials.
pub fn check_type(field: &Field, value: &Value) -> Result<(), String> {
    match (field.kind, value) {
        (Kind::Text | Kind::WebUrl, Value::String(_)) => Ok(()),
        (Kind::Text | Kind::WebUrl, _) => Err("must be a string".into()),
        (Kind::TextList, Value::Array(items)) if items.iter().all(Value::is_string) => Ok(()),
        (Kind::TextList, _) => Err("must be a list of strings".into()),
        (Kind::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(()),
        (Kind::Integer, _) => Err("must be an integer".into()),
        (Kind::Object, Value::Object(_)) => Ok(()),
        (Kind::Object, _) => Err("must be a map (a JSON object)".into()),
    }
}

/// Checks a value a client sends: its JSON type, and for URL fields that it is
/// an absolute http(s) URL (no `javascript:` logo).
pub fn check_kind(field: &Field, value: &Value) -> Result<(), String> {
    check_type(field, value)?;
    match value {
        Value::String(s) if field.kind == Kind::WebUrl && !uri::is_web_url(s) => {
            Err("must be an absolute http or https URL".into())
        }
        _ => Ok(()),
    }
}

/// The value a `client_information()` map holds for a documented key the
/// server left out (ExMCP 0.10's shape). `None` for keys that are simply absent.
pub fn answer_default(name: &str) -> Option<Value> {
    let strings = |items: &[&str]| Value::Array(items.iter().map(|s| Value::from(*s)).collect());
    match name {
        "client_secret"
        | "client_secret_expires_at"
        | "registration_access_token"
        | "registration_client_uri"
        | "client_name" => Some(Value::Null),
        "redirect_uris" => Some(Value::Array(Vec::new())),
        "grant_types" => Some(strings(DEFAULT_GRANT_TYPES)),
        "response_types" => Some(strings(DEFAULT_RESPONSE_TYPES)),
        "scope" => Some(Value::from("")),
        _ => None,
    }
}

/// SEP-837: `"native"` when any redirect URI uses a non-http(s) scheme or a
/// loopback host, `"web"` otherwise.
pub fn derive_application_type<'a>(
    redirect_uris: impl IntoIterator<Item = &'a str>,
) -> &'static str {
    if redirect_uris.into_iter().any(uri::is_native_redirect) {
        "native"
    } else {
        "web"
    }
}

/// Checks the redirect URIs of a metadata document.
///
/// `redirect_uris` that is present but not a list is
/// [`RequestError::RedirectUrisMustBeList`]; a list with non-strings names the
/// field; the URIs that break RFC 7591 §2 / RFC 8252 rules are listed together.
pub fn check_redirect_uris(value: &Value) -> Result<(), RequestError> {
    let Value::Array(items) = value else {
        return Err(RequestError::RedirectUrisMustBeList);
    };
    let mut invalid = Vec::new();
    for item in items {
        match item {
            Value::String(s) if uri::check_redirect_uri(s).is_ok() => {}
            Value::String(s) => invalid.push(s.clone()),
            _ => {
                return Err(RequestError::InvalidField {
                    field: "redirect_uris".into(),
                    message: "must be a list of strings".into(),
                })
            }
        }
    }
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(RequestError::InvalidRedirectUris(invalid))
    }
}

/// Which metadata a document may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A new registration (RFC 7591 §3.1): only client metadata.
    Register,
    /// A registration update (RFC 7592 §2.2): client metadata plus
    /// `client_id` and `client_secret`; other issued fields are dropped later.
    Update,
}

/// Checks every member of a client metadata document: known fields must have
/// the right type, and `redirect_uris` must hold valid URIs. Unknown members
/// are extension metadata and pass unchecked.
///
/// Members without a value (`null`, `""`, `[]`) are skipped: they are never sent.
pub fn check_document(doc: &Map<String, Value>, purpose: Purpose) -> Result<(), RequestError> {
    for (name, value) in doc {
        if !has_value(value) {
            continue;
        }
        let Some(field) = field(name) else { continue };
        if purpose == Purpose::Register && field.origin == Origin::Server {
            return Err(RequestError::InvalidField {
                field: name.clone(),
                message: "is issued by the authorization server and cannot be sent in a registration request".into(),
            });
        }
        if field.name == "redirect_uris" {
            check_redirect_uris(value)?;
        } else {
            check_kind(field, value).map_err(|message| RequestError::InvalidField {
                field: name.clone(),
                message,
            })?;
        }
    }
    if doc.get("jwks").is_some_and(has_value) && doc.get("jwks_uri").is_some_and(has_value) {
        return Err(RequestError::InvalidField {
            field: "jwks".into(),
            message: "must not be sent together with jwks_uri (RFC 7591 §2)".into(),
        });
    }
    Ok(())
}

/// Removes members without a value (`null`, `""`, `[]`).
pub fn drop_empty(doc: &mut Map<String, Value>) {
    doc.retain(|_, v| has_value(v));
}

/// Removes the members a server does not understand: RFC 7591 §2 says it
/// MUST ignore them, so they are neither stored nor echoed. Issued fields
/// are removed too; the server sets those itself.
pub fn retain_client_metadata(doc: &mut Map<String, Value>) {
    doc.retain(|name, _| field(name).is_some_and(|f| f.origin == Origin::Client));
}

/// `application_type` derived (SEP-837) from a document's `redirect_uris`.
fn derived_application_type(doc: &Map<String, Value>) -> &'static str {
    match doc.get("redirect_uris") {
        Some(Value::Array(uris)) => derive_application_type(uris.iter().filter_map(Value::as_str)),
        _ => derive_application_type([]),
    }
}

/// Fills the RFC 7591 §2 defaults and `policy`'s into a registration
/// document. A value the sender gave always wins.
pub fn apply_registration_defaults(doc: &mut Map<String, Value>, policy: &Policy) {
    let strings = |items: &[&str]| Value::Array(items.iter().map(|s| Value::from(*s)).collect());
    doc.entry("grant_types")
        .or_insert_with(|| strings(DEFAULT_GRANT_TYPES));
    doc.entry("response_types")
        .or_insert_with(|| strings(DEFAULT_RESPONSE_TYPES));
    doc.entry("token_endpoint_auth_method")
        .or_insert_with(|| Value::from(policy.token_endpoint_auth_method));
    if policy.derive_application_type && !doc.contains_key("application_type") {
        let derived = derived_application_type(doc);
        doc.insert("application_type".into(), Value::from(derived));
    }
}

/// Grant types that send the user agent back to the client, so a client
/// using one of them needs `redirect_uris` (RFC 7591 §2, §2.1).
pub const REDIRECT_GRANT_TYPES: &[&str] = &["authorization_code", "implicit"];

/// Requires `redirect_uris` when `grant_types` holds a redirect-based grant
/// ([`REDIRECT_GRANT_TYPES`]). Run it after [`apply_registration_defaults`],
/// so that the default `authorization_code` grant counts.
pub fn check_redirect_uris_required(doc: &Map<String, Value>) -> Result<(), RequestError> {
    let grant = match doc.get("grant_types") {
        Some(Value::Array(grants)) => grants
            .iter()
            .filter_map(Value::as_str)
            .find(|g| REDIRECT_GRANT_TYPES.contains(g)),
        _ => None,
    };
    match grant {
        Some(grant) if !doc.get("redirect_uris").is_some_and(has_value) => {
            Err(RequestError::InvalidField {
                field: "redirect_uris".into(),
                message: format!("is required by the {grant} grant type"),
            })
        }
        _ => Ok(()),
    }
}

/// Checks and completes the client metadata of a registration: members
/// without a value are dropped, every known field is checked
/// ([`check_document`] with [`Purpose::Register`]), the defaults of the RFC
/// and of `policy` are filled in ([`apply_registration_defaults`]), and
/// `redirect_uris` must be present when a grant type needs it.
///
/// The client runs this on what it is about to send (RFC 7591 §3.1), and the
/// embedded server on what it received, at registration and for the full
/// replacement of an RFC 7592 §2.2 update, so both sides apply the same
/// rules, each with its own policy.
pub fn prepare_client_metadata(
    doc: &mut Map<String, Value>,
    policy: &Policy,
) -> Result<(), RequestError> {
    drop_empty(doc);
    check_document(doc, Purpose::Register)?;
    apply_registration_defaults(doc, policy);
    check_redirect_uris_required(doc)
}

/// Refuses the fields RFC 7592 §2.2 forbids in a PUT (`forbidden_in_put`):
/// the server's check of an update body. A member counts as sent whatever
/// its value.
pub fn check_put_document(doc: &Map<String, Value>) -> Result<(), RequestError> {
    match FIELDS
        .iter()
        .find(|f| f.forbidden_in_put && doc.contains_key(f.name))
    {
        Some(field) => Err(RequestError::InvalidField {
            field: field.name.into(),
            message: "is issued by the authorization server and must not be sent in an update (RFC 7592 §2.2)".into(),
        }),
        None => Ok(()),
    }
}

/// Builds the body of an RFC 7592 §2.2 PUT.
///
/// `current` is what the server holds (from a GET), or `None` for a full
/// replacement. `updates` goes over it; a `null` in `updates` removes the
/// field. The fields §2.2 forbids are removed. `client_id` is kept from
/// `current` when `updates` does not name it, and so is `client_secret`:
/// §2.2 allows it in the PUT (its example carries it), and a server treats an
/// omitted field as null.
///
/// SEP-837: when `updates` gives `redirect_uris` that differ from the current
/// ones (or, without `current`, gives any) and does not name
/// `application_type`, `application_type` is derived again from the new URIs.
pub fn merge_for_put(
    current: Option<&Map<String, Value>>,
    updates: &Map<String, Value>,
) -> Map<String, Value> {
    let mut doc = current.cloned().unwrap_or_default();
    let new_redirect_uris = updates.get("redirect_uris").filter(|uris| {
        has_value(uris) && current.and_then(|c| c.get("redirect_uris")) != Some(uris)
    });
    let rederive = new_redirect_uris.is_some() && !updates.contains_key("application_type");
    for (name, value) in updates {
        doc.insert(name.clone(), value.clone());
    }
    drop_empty(&mut doc);
    doc.retain(|name, _| !field(name).is_some_and(|f| f.forbidden_in_put));
    if rederive {
        let derived = derived_application_type(&doc);
        doc.insert("application_type".into(), Value::from(derived));
    }
    if let Some(Value::String(id)) = current.and_then(|c| c.get("client_id")) {
        doc.entry("client_id")
            .or_insert_with(|| Value::from(id.as_str()));
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::CLIENT_POLICY;
    use serde_json::json;

    /// RFC 7591 §2's own defaults, as a server without extra policy applies them.
    const RFC_ONLY: Policy = Policy {
        token_endpoint_auth_method: RFC_TOKEN_ENDPOINT_AUTH_METHOD,
        derive_application_type: false,
    };

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn field_names_are_unique() {
        for (i, a) in FIELDS.iter().enumerate() {
            assert!(
                FIELDS[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
    }

    #[test]
    fn rfc7592_2_2_forbidden_fields() {
        let forbidden: Vec<_> = FIELDS
            .iter()
            .filter(|f| f.forbidden_in_put)
            .map(|f| f.name)
            .collect();
        assert_eq!(
            forbidden,
            [
                "client_id_issued_at",
                "client_secret_expires_at",
                "registration_access_token",
                "registration_client_uri"
            ]
        );
    }

    #[test]
    fn sep837_application_type_derivation() {
        assert_eq!(
            derive_application_type(["https://app.example.com/cb"]),
            "web"
        );
        assert_eq!(
            derive_application_type(["http://localhost:8080/cb"]),
            "native"
        );
        assert_eq!(derive_application_type(["http://127.0.0.1/cb"]), "native");
        assert_eq!(derive_application_type(["http://[::1]:3000/cb"]), "native");
        assert_eq!(derive_application_type(["com.example.app:/cb"]), "native");
        assert_eq!(
            derive_application_type(["https://a.example/cb", "com.example.app:/cb"]),
            "native"
        );
        assert_eq!(derive_application_type([]), "web");
    }

    #[test]
    fn defaults_fill_only_absent_fields() {
        let mut doc = obj(
            json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["client_credentials"]}),
        );
        apply_registration_defaults(&mut doc, &CLIENT_POLICY);
        assert_eq!(doc["grant_types"], json!(["client_credentials"]));
        assert_eq!(doc["response_types"], json!(["code"]));
        assert_eq!(doc["token_endpoint_auth_method"], json!("none"));
        assert_eq!(doc["application_type"], json!("web"));

        let mut doc =
            obj(json!({"redirect_uris": ["http://localhost/cb"], "application_type": "web"}));
        apply_registration_defaults(&mut doc, &CLIENT_POLICY);
        assert_eq!(
            doc["application_type"],
            json!("web"),
            "the caller's value wins"
        );
    }

    #[test]
    fn rfc7591_2_defaults_without_the_clients_policy() {
        let mut doc = obj(json!({"redirect_uris": ["http://127.0.0.1/cb"]}));
        apply_registration_defaults(&mut doc, &RFC_ONLY);
        assert_eq!(
            doc["token_endpoint_auth_method"],
            json!("client_secret_basic")
        );
        assert_eq!(doc["grant_types"], json!(["authorization_code"]));
        assert!(
            !doc.contains_key("application_type"),
            "SEP-837 is the client's duty"
        );
    }

    #[test]
    fn rfc7591_2_jwks_and_jwks_uri_are_exclusive() {
        let doc = obj(json!({"jwks": {"keys": []}, "jwks_uri": "https://a.example/jwks"}));
        assert!(matches!(check_document(&doc, Purpose::Register),
            Err(RequestError::InvalidField { field, message })
                if field == "jwks" && message.contains("jwks_uri")));
        let doc = obj(json!({"jwks": {"keys": []}, "jwks_uri": null}));
        assert!(
            check_document(&doc, Purpose::Register).is_ok(),
            "null is not sent"
        );
    }

    #[test]
    fn rfc7591_2_servers_ignore_unknown_metadata() {
        let mut doc = obj(json!({"client_name": "x", "vendor": 1, "client_id": "c"}));
        retain_client_metadata(&mut doc);
        assert_eq!(Value::Object(doc), json!({"client_name": "x"}));
    }

    #[test]
    fn empty_values_are_dropped() {
        let mut doc = obj(json!({"a": null, "b": "", "c": [], "d": "x", "e": 0, "f": false}));
        drop_empty(&mut doc);
        assert_eq!(Value::Object(doc), json!({"d": "x", "e": 0, "f": false}));
    }

    #[test]
    fn check_document_names_the_ill_typed_field() {
        let err = check_document(&obj(json!({"client_name": 42})), Purpose::Register).unwrap_err();
        assert_eq!(
            err,
            RequestError::InvalidField {
                field: "client_name".into(),
                message: "must be a string".into()
            }
        );
        let err =
            check_document(&obj(json!({"contacts": ["a", 1]})), Purpose::Register).unwrap_err();
        assert!(matches!(err, RequestError::InvalidField { field, .. } if field == "contacts"));
        let err = check_document(
            &obj(json!({"logo_uri": "javascript:alert(1)"})),
            Purpose::Register,
        )
        .unwrap_err();
        assert!(matches!(err, RequestError::InvalidField { field, .. } if field == "logo_uri"));
        let err = check_document(&obj(json!({"jwks": "keys"})), Purpose::Register).unwrap_err();
        assert!(matches!(err, RequestError::InvalidField { field, .. } if field == "jwks"));
    }

    #[test]
    fn rfc7591_3_1_issued_fields_are_not_sent_at_registration() {
        let err = check_document(&obj(json!({"client_id": "abc"})), Purpose::Register).unwrap_err();
        assert!(matches!(err, RequestError::InvalidField { field, .. } if field == "client_id"));
        assert!(check_document(&obj(json!({"client_id": "abc"})), Purpose::Update).is_ok());
    }

    #[test]
    fn redirect_uris_shapes() {
        assert_eq!(
            check_redirect_uris(&json!("https://a.example/cb")),
            Err(RequestError::RedirectUrisMustBeList)
        );
        assert!(matches!(
            check_redirect_uris(&json!(["https://a.example/cb", 7])),
            Err(RequestError::InvalidField { .. })
        ));
        assert_eq!(
            check_redirect_uris(&json!([
                "https://a.example/cb",
                "javascript:x",
                "/relative"
            ])),
            Err(RequestError::InvalidRedirectUris(vec![
                "javascript:x".into(),
                "/relative".into()
            ]))
        );
    }

    #[test]
    fn rfc7592_2_2_put_body_from_current_registration() {
        let current = obj(json!({
            "client_id": "c1",
            "client_secret": "s",
            "client_secret_expires_at": 0,
            "client_id_issued_at": 1,
            "registration_access_token": "t",
            "registration_client_uri": "https://as.example/reg/c1",
            "client_name": "Old",
            "logo_uri": "https://a.example/logo.png",
            "redirect_uris": ["https://a.example/cb"],
            "vendor_field": 1
        }));
        let put = merge_for_put(
            Some(&current),
            &obj(json!({"client_name": "New", "logo_uri": null})),
        );
        assert_eq!(
            Value::Object(put),
            json!({
                "client_id": "c1",
                "client_secret": "s",
                "client_name": "New",
                "redirect_uris": ["https://a.example/cb"],
                "vendor_field": 1
            }),
            "RFC 7592 §2.2: the PUT carries the secret the read returned"
        );
        let put = merge_for_put(Some(&current), &obj(json!({"client_secret": null})));
        assert!(!put.contains_key("client_secret"), "nil removes it");
    }

    #[test]
    fn sep837_application_type_follows_new_redirect_uris_on_update() {
        let current = obj(json!({
            "client_id": "c1",
            "redirect_uris": ["http://127.0.0.1:9/cb"],
            "application_type": "native"
        }));
        let put = merge_for_put(
            Some(&current),
            &obj(json!({"redirect_uris": ["https://app.example/cb"]})),
        );
        assert_eq!(put["application_type"], json!("web"));

        let put = merge_for_put(
            Some(&current),
            &obj(
                json!({"redirect_uris": ["https://app.example/cb"], "application_type": "native"}),
            ),
        );
        assert_eq!(
            put["application_type"],
            json!("native"),
            "the caller's value wins"
        );

        let mut explicit = current.clone();
        explicit.insert("application_type".into(), json!("web"));
        let put = merge_for_put(
            Some(&explicit),
            &obj(json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "client_name": "x"})),
        );
        assert_eq!(
            put["application_type"],
            json!("web"),
            "unchanged URIs: kept"
        );

        let put = merge_for_put(
            None,
            &obj(json!({"client_id": "c1", "redirect_uris": ["com.example.app:/cb"]})),
        );
        assert_eq!(
            put["application_type"],
            json!("native"),
            "replace mode derives too"
        );
    }

    #[test]
    fn rfc7591_2_redirect_grants_need_redirect_uris() {
        // The default grant type is authorization_code.
        let mut doc = obj(json!({"client_name": "x"}));
        let err = prepare_client_metadata(&mut doc, &CLIENT_POLICY).unwrap_err();
        assert!(matches!(&err, RequestError::InvalidField { field, message }
            if field == "redirect_uris" && message.contains("authorization_code")));

        let mut doc = obj(json!({"grant_types": ["implicit"], "redirect_uris": []}));
        assert!(
            prepare_client_metadata(&mut doc, &CLIENT_POLICY).is_err(),
            "[] is no value"
        );

        let mut doc = obj(json!({"grant_types": ["client_credentials"]}));
        prepare_client_metadata(&mut doc, &CLIENT_POLICY).unwrap();
        assert_eq!(doc["application_type"], json!("web"));
        assert_eq!(doc["response_types"], json!(["code"]));
    }

    #[test]
    fn prepare_client_metadata_checks_then_fills_defaults() {
        let mut doc = obj(json!({
            "client_name": "x",
            "logo_uri": null,
            "redirect_uris": ["http://127.0.0.1:9/cb"]
        }));
        prepare_client_metadata(&mut doc, &CLIENT_POLICY).unwrap();
        assert_eq!(
            Value::Object(doc),
            json!({
                "client_name": "x",
                "redirect_uris": ["http://127.0.0.1:9/cb"],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
                "application_type": "native"
            })
        );
        let mut doc = obj(json!({"redirect_uris": ["javascript:x"]}));
        assert_eq!(
            prepare_client_metadata(&mut doc, &CLIENT_POLICY),
            Err(RequestError::InvalidRedirectUris(vec![
                "javascript:x".into()
            ]))
        );
        let mut doc = obj(json!({"client_secret": "s", "redirect_uris": ["https://a.example/cb"]}));
        assert!(matches!(prepare_client_metadata(&mut doc, &CLIENT_POLICY),
            Err(RequestError::InvalidField { field, .. }) if field == "client_secret"));
    }

    #[test]
    fn rfc7592_2_2_server_refuses_issued_fields_in_put() {
        assert!(check_put_document(&obj(json!({"client_id": "c", "client_secret": "s"}))).is_ok());
        for name in [
            "registration_access_token",
            "registration_client_uri",
            "client_secret_expires_at",
            "client_id_issued_at",
        ] {
            let mut doc = obj(json!({"client_id": "c"}));
            doc.insert(name.into(), Value::Null);
            assert!(matches!(check_put_document(&doc),
                Err(RequestError::InvalidField { field, .. }) if field == name));
        }
    }

    #[test]
    fn replace_put_keeps_only_what_the_caller_sent() {
        let put = merge_for_put(
            None,
            &obj(json!({"client_id": "c1", "client_name": "X", "registration_access_token": "t"})),
        );
        assert_eq!(
            Value::Object(put),
            json!({"client_id": "c1", "client_name": "X"})
        );
    }
}
