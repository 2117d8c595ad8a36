//! Turns a caller's request map (already decoded into JSON values) into what
//! goes on the wire, refusing bad input before any network call.

use serde_json::{Map, Value};
use url::Url;

use crate::error::RequestError;
use crate::metadata::{self, Purpose, EXTRA, REGISTRATION_ENDPOINT, REQUIRED_FOR_REGISTRATION};
use crate::uri::{self, EndpointProblem};

/// The client's policy for what a registration request leaves out: a
/// public client (`token_endpoint_auth_method: "none"`, the usual MCP client
/// with PKCE), and `application_type` derived from the redirect URIs, which
/// SEP-837 requires MCP clients to send. The embedded server does not share
/// it: it applies the RFC's defaults.
pub const CLIENT_POLICY: metadata::Policy = metadata::Policy {
    token_endpoint_auth_method: "none",
    derive_application_type: true,
};

/// A checked RFC 7591 §3.1 registration request.
#[derive(Debug, Clone)]
pub struct Registration {
    pub endpoint: Url,
    /// The client metadata to send, with defaults applied.
    pub metadata: Map<String, Value>,
}

/// Checks a registration request map and fills in ExMCP's defaults.
///
/// Keys are the documented field names plus `registration_endpoint` and
/// `extra` (a map of extension metadata with string keys).
pub fn registration(mut request: Map<String, Value>) -> Result<Registration, RequestError> {
    let missing: Vec<&'static str> = REQUIRED_FOR_REGISTRATION
        .iter()
        .copied()
        .filter(|name| !request.get(*name).is_some_and(metadata::has_value))
        .collect();
    if !missing.is_empty() {
        return Err(RequestError::MissingRequiredFields(missing));
    }
    let endpoint = request.remove(REGISTRATION_ENDPOINT).unwrap_or_default();
    let mut metadata = flatten_extra(request)?;
    // The same checks and defaults the embedded server applies to what it
    // receives. `redirect_uris` is required above, so the grant-type rule
    // inside never fires here.
    metadata::prepare_client_metadata(&mut metadata, &CLIENT_POLICY)?;
    let endpoint = endpoint_url(REGISTRATION_ENDPOINT, &endpoint)?;
    Ok(Registration { endpoint, metadata })
}

/// Checks an RFC 7592 §2.2 update map. `null` values are kept: they remove
/// the field when merged over the current registration.
pub fn update(updates: Map<String, Value>) -> Result<Map<String, Value>, RequestError> {
    let updates = flatten_extra(updates)?;
    metadata::check_document(&updates, Purpose::Update)?;
    Ok(updates)
}

/// Checks a registration endpoint or registration client URI.
pub fn endpoint_url(field: &str, value: &Value) -> Result<Url, RequestError> {
    let invalid = |message: &str| RequestError::InvalidField {
        field: field.to_owned(),
        message: message.to_owned(),
    };
    let Value::String(raw) = value else {
        return Err(invalid("must be a string holding an https URL"));
    };
    uri::check_endpoint(raw).map_err(|problem| match problem {
        EndpointProblem::HttpsRequired => RequestError::HttpsRequired,
        EndpointProblem::Invalid(message) => invalid(message),
    })
}

/// Refuses keys that are not client metadata, and lifts the members of
/// `extra` (extension metadata, RFC 7591 §2) to the top level.
pub(crate) fn flatten_extra(
    mut doc: Map<String, Value>,
) -> Result<Map<String, Value>, RequestError> {
    let extra = doc.remove(EXTRA);
    if let Some(unknown) = doc.keys().find(|k| metadata::field(k).is_none()) {
        return Err(RequestError::InvalidField {
            field: unknown.clone(),
            message: "is not a known client metadata field; put extension metadata under :extra with string keys"
                .into(),
        });
    }
    match extra {
        None | Some(Value::Null) => {}
        Some(Value::Object(members)) => {
            for (name, value) in members {
                if metadata::field(&name).is_some()
                    || name == REGISTRATION_ENDPOINT
                    || name == EXTRA
                {
                    return Err(RequestError::InvalidField {
                        field: EXTRA.into(),
                        message: format!(
                            "must not hold {name:?}, which is a known field; set it directly"
                        ),
                    });
                }
                doc.insert(name, value);
            }
        }
        Some(_) => {
            return Err(RequestError::InvalidField {
                field: EXTRA.into(),
                message: "must be a map with string keys".into(),
            })
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn minimal() -> Map<String, Value> {
        request(json!({
            "registration_endpoint": "https://as.example.com/register",
            "client_name": "Café 日本",
            "redirect_uris": ["https://app.example.com/cb"]
        }))
    }

    #[test]
    fn missing_fields_are_listed_in_order() {
        let err = registration(request(json!({"client_name": ""}))).unwrap_err();
        assert_eq!(
            err,
            RequestError::MissingRequiredFields(vec![
                "registration_endpoint",
                "client_name",
                "redirect_uris"
            ])
        );
        let mut r = minimal();
        r.insert("redirect_uris".into(), json!([]));
        assert_eq!(
            registration(r).unwrap_err(),
            RequestError::MissingRequiredFields(vec!["redirect_uris"])
        );
    }

    #[test]
    fn only_fields_with_values_are_sent_and_endpoint_is_not() {
        let mut r = minimal();
        r.insert("logo_uri".into(), Value::Null);
        r.insert("scope".into(), json!(""));
        r.insert("contacts".into(), json!(["ops@example.com"]));
        let reg = registration(r).unwrap();
        assert_eq!(reg.endpoint.as_str(), "https://as.example.com/register");
        assert_eq!(
            Value::Object(reg.metadata),
            json!({
                "client_name": "Café 日本",
                "redirect_uris": ["https://app.example.com/cb"],
                "contacts": ["ops@example.com"],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
                "application_type": "web"
            })
        );
    }

    #[test]
    fn endpoint_rules() {
        let mut r = minimal();
        r.insert(
            "registration_endpoint".into(),
            json!("http://as.example.com/register"),
        );
        assert_eq!(registration(r).unwrap_err(), RequestError::HttpsRequired);
        let mut r = minimal();
        r.insert("registration_endpoint".into(), json!(42));
        assert!(matches!(registration(r).unwrap_err(),
            RequestError::InvalidField { field, .. } if field == "registration_endpoint"));
    }

    #[test]
    fn unknown_keys_and_extra() {
        let mut r = minimal();
        r.insert("redirect_uri".into(), json!("typo"));
        assert!(matches!(registration(r).unwrap_err(),
            RequestError::InvalidField { field, .. } if field == "redirect_uri"));

        let mut r = minimal();
        r.insert(
            "extra".into(),
            json!({"post_logout_redirect_uris": ["https://a.example/bye"]}),
        );
        let reg = registration(r).unwrap();
        assert_eq!(
            reg.metadata["post_logout_redirect_uris"],
            json!(["https://a.example/bye"])
        );

        let mut r = minimal();
        r.insert("extra".into(), json!({"client_name": "sneaky"}));
        assert!(matches!(registration(r).unwrap_err(),
            RequestError::InvalidField { field, .. } if field == "extra"));
    }

    #[test]
    fn update_keeps_nulls_for_removal() {
        let u = update(request(json!({"logo_uri": null, "client_name": "New"}))).unwrap();
        assert_eq!(u["logo_uri"], Value::Null);
        assert!(update(request(json!({"redirect_uris": "x"}))).is_err());
    }
}
