//! Reads a server's answer: a registration document (RFC 7591 §3.2.1,
//! RFC 7592 §3) or a refusal (RFC 7591 §3.2.2).

use serde_json::{Map, Value};

use crate::error::Error;
use crate::metadata;

/// A client information response, exactly as the server sent it, minus
/// `null` members (a JSON `null` counts as absent).
///
/// Only `client_id` is required to be usable. A known field of an unexpected
/// type (`client_id_issued_at: 1.5`, `redirect_uris: "x"`) does not make the
/// answer fail: the server has already created or changed the client, and
/// refusing its answer would throw away the credentials in it. Such a member
/// is reported under `extra`, with its raw value, instead of under its name.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientInformation {
    pub document: Map<String, Value>,
}

impl ClientInformation {
    pub fn client_id(&self) -> &str {
        self.document
            .get("client_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The value of a known field, when it has the field's documented type.
    pub fn known(&self, name: &str) -> Option<&Value> {
        let field = metadata::field(name)?;
        self.document
            .get(name)
            .filter(|value| metadata::check_type(field, value).is_ok())
    }

    /// The known field as a string, when it is one.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.known(name).and_then(Value::as_str)
    }

    /// The members that are not known fields, and the known fields whose
    /// value has an unexpected type: they go under `extra`, raw.
    pub fn extra(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.document
            .iter()
            .filter(|(k, v)| metadata::field(k).is_none_or(|f| metadata::check_type(f, v).is_err()))
    }
}

/// Parses a success body. It must be a JSON object with a non-empty string
/// `client_id`; every other member is kept whatever its type (see
/// [`ClientInformation`]).
pub fn client_information(body: &[u8]) -> Result<ClientInformation, Error> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Error::JsonDecode(e.to_string()))?;
    let Value::Object(mut document) = value else {
        return Err(Error::InvalidResponse(format!(
            "expected a JSON object, got {}",
            json_type(&value)
        )));
    };
    document.retain(|_, v| !v.is_null());
    match document.get("client_id") {
        Some(Value::String(id)) if !id.is_empty() => {}
        Some(_) => {
            return Err(Error::InvalidResponse(
                "client_id must be a non-empty string".into(),
            ))
        }
        None => {
            return Err(Error::InvalidResponse(
                "the response has no client_id".into(),
            ))
        }
    }
    Ok(ClientInformation { document })
}

/// Classifies a non-success answer. A 3xx is never followed and is always an
/// `http_error`; otherwise a JSON object body is a `registration_error`.
pub fn refusal(status: u16, body: Vec<u8>) -> Error {
    if !(300..400).contains(&status) {
        if let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) {
            return Error::Registration { status, body };
        }
    }
    Error::Http { status, body }
}

/// "a string", "an array", ...: for messages about a JSON value's type.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7591_3_2_1_answer_with_extras_and_nulls() {
        let info = client_information(
            br#"{"client_id":"abc","client_secret":null,"client_name":"Caf\u00e9","vendor_x":{"a":1},"logo_uri":"not a url"}"#,
        )
        .unwrap();
        assert_eq!(info.client_id(), "abc");
        assert!(
            !info.document.contains_key("client_secret"),
            "null is absent"
        );
        assert_eq!(info.document["client_name"], json!("Café"));
        let extra: Vec<_> = info.extra().map(|(k, _)| k.as_str()).collect();
        assert_eq!(extra, ["vendor_x"]);
    }

    #[test]
    fn answers_without_a_usable_client_id_are_invalid() {
        assert_eq!(
            client_information(br#"{"client_name":"x"}"#),
            Err(Error::InvalidResponse(
                "the response has no client_id".into()
            ))
        );
        assert!(matches!(
            client_information(br#"{"client_id":7}"#),
            Err(Error::InvalidResponse(_))
        ));
        assert!(matches!(
            client_information(br#"{"client_id":null}"#),
            Err(Error::InvalidResponse(_))
        ));
        assert_eq!(
            client_information(b"[1]"),
            Err(Error::InvalidResponse(
                "expected a JSON object, got an array".into()
            ))
        );
        assert!(matches!(
            client_information(b"{"),
            Err(Error::JsonDecode(_))
        ));
    }

    #[test]
    fn rfc7591_3_2_1_ill_typed_optional_members_never_cost_the_client() {
        let info = client_information(
            br#"{"client_id":"a","client_id_issued_at":1.5,"client_secret_expires_at":"0",
                 "redirect_uris":"x","client_secret":"s","registration_access_token":7}"#,
        )
        .expect("a usable client_id is enough");
        assert_eq!(info.client_id(), "a");
        assert_eq!(info.text("client_secret"), Some("s"));
        assert_eq!(info.known("client_id_issued_at"), None);
        assert_eq!(info.text("registration_access_token"), None);
        let mut extra: Vec<_> = info.extra().map(|(k, v)| (k.as_str(), v.clone())).collect();
        extra.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(
            extra,
            [
                ("client_id_issued_at", json!(1.5)),
                ("client_secret_expires_at", json!("0")),
                ("redirect_uris", json!("x")),
                ("registration_access_token", json!(7)),
            ]
        );
    }

    #[test]
    fn hostile_json_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(matches!(
            client_information(deep.as_bytes()),
            Err(Error::JsonDecode(_))
        ));
        let big = format!(r#"{{"client_id":"a","n":{}}}"#, "9".repeat(400));
        assert!(
            client_information(big.as_bytes()).is_ok()
                || matches!(
                    client_information(big.as_bytes()),
                    Err(Error::JsonDecode(_))
                )
        );
        assert!(matches!(
            client_information(b"{\"client_id\":\"\xff\"}"),
            Err(Error::JsonDecode(_))
        ));
        let dup = client_information(br#"{"client_id":"a","client_id":"b"}"#).unwrap();
        assert_eq!(dup.client_id(), "b", "the last duplicate wins");
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            refusal(400, br#"{"error":"invalid_redirect_uri"}"#.to_vec()),
            Error::Registration { status: 400, .. }
        ));
        assert!(matches!(
            refusal(500, b"<html>".to_vec()),
            Error::Http { status: 500, .. }
        ));
        assert!(matches!(
            refusal(400, b"[]".to_vec()),
            Error::Http { status: 400, .. }
        ));
        assert!(matches!(
            refusal(302, b"{}".to_vec()),
            Error::Http { status: 302, .. }
        ));
    }
}
