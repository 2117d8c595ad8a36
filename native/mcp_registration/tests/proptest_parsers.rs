//! Property tests: whatever bytes a server sends and whatever a caller puts in
//! a request map, the parsers and validators return a value or an error and
//! never panic. This is the quick run kept in `cargo test`; for a long run:
//!
//!     PROPTEST_CASES=200000 cargo test -p mcp_registration --release --test proptest_parsers

use mcp_registration::{metadata, request, response, uri};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Arbitrary JSON values, biased towards the shapes client metadata has.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![
            Just("https://app.example.com/cb"),
            Just("http://localhost:8080/cb"),
            Just("com.example.app:/cb"),
            Just("javascript:alert(1)"),
            Just("http://[::1"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    let known: Vec<String> = metadata::FIELDS
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    prop_oneof![
        prop::sample::select(known),
        Just("registration_endpoint".to_string()),
        Just("extra".to_string()),
        "[a-z_]{1,12}",
    ]
}

fn request_map() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(field_name(), json_value(), 0..12)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn response_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = response::client_information(&bytes);
        let _ = response::refusal(400, bytes);
    }

    #[test]
    fn response_parser_never_panics_on_json(members in request_map()) {
        let body = serde_json::to_vec(&Value::Object(members)).unwrap();
        if let Ok(info) = response::client_information(&body) {
            prop_assert!(!info.client_id().is_empty());
            prop_assert!(info.document.values().all(|v| !v.is_null()));
        }
    }

    #[test]
    fn request_checks_never_panic(map in request_map()) {
        if let Ok(registration) = request::registration(map.clone()) {
            // Whatever passes is sendable: no empty values, no endpoint,
            // defaults present, and the metadata checks agree.
            prop_assert!(registration.metadata.values().all(metadata::has_value));
            prop_assert!(!registration.metadata.contains_key("registration_endpoint"));
            prop_assert!(registration.metadata.contains_key("application_type"));
        }
        if let Ok(updates) = request::update(map) {
            let put = metadata::merge_for_put(None, &updates);
            prop_assert!(put.keys().all(|k| !metadata::field(k).is_some_and(|f| f.forbidden_in_put)));
        }
    }

    #[test]
    fn uri_rules_never_panic(raw in ".{0,80}") {
        let _ = uri::check_redirect_uri(&raw);
        let _ = uri::check_endpoint(&raw);
        let _ = metadata::derive_application_type([raw.as_str()]);
    }
}

proptest! {
    /// RFC 9110 §11.6.1: any header value parses or is refused, never a
    /// panic; a parsed Bearer challenge round-trips its quoted parameters.
    #[test]
    fn www_authenticate_never_panics(header in r#"[ -~\t]{0,80}"#) {
        let _ = mcp_registration::www_authenticate::parse(&header);
        let _ = mcp_registration::www_authenticate::bearer_hints(&[header]);
    }

    #[test]
    fn www_authenticate_quoted_values_round_trip(value in r#"[ -~]{0,40}"#, scope in "[a-z_.]{1,12}") {
        let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
        let header = format!(r#"Basic realm="x", Bearer resource_metadata="{quoted}", scope={scope}"#);
        let hints = mcp_registration::www_authenticate::bearer_hints(&[header]).unwrap();
        prop_assert_eq!(hints.resource_metadata.as_deref(), Some(value.as_str()));
        prop_assert_eq!(hints.scope.as_deref(), Some(scope.as_str()));
    }
}
