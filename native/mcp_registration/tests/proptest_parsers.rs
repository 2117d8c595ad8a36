//! Property tests of the answer parser, the request checks and the URI rules.
//!
//! Two kinds of property:
//! - whatever bytes a server sends and whatever a caller puts in a request
//!   map, the parsers and validators return a value or an error, never panic;
//! - what they accept is right: a registration that passes is sendable
//!   (RFC 7591 §2, §3.1), an answer that parses has a usable `client_id`
//!   (RFC 7591 §3.2.1) and keeps every member, a known field of another type
//!   under `extra` rather than failing.
//!
//! Arbitrary maps almost never pass the checks, so the second kind is fed
//! valid-shaped inputs too (built from `metadata::FIELDS`), some of them with
//! one member broken. Each such test counts the cases that reached its
//! property and fails if they are fewer than a third: a property that is
//! never reached is not tested.
//!
//! This is the quick run kept in `cargo test` (512 cases each); for a long run:
//!
//!     PROPTEST_CASES=200000 cargo test -p mcp_registration --release --test proptest_parsers

use std::sync::atomic::{AtomicUsize, Ordering};

use mcp_registration::metadata::{self, Kind, Origin};
use mcp_registration::{request, response, uri};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

/// The least share of generated cases that must reach a property.
const MIN_REACHED: f64 = 0.30;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(512);
    ProptestConfig {
        cases,
        // Run from a plain #[test]: there is no source file to persist to.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `test` on `cases` inputs from `strategy`. `test` returns whether the
/// input reached the property (the parser accepted it); fails when fewer
/// than `MIN_REACHED` of the inputs did.
fn check_reaching<S>(
    what: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let total = AtomicUsize::new(0);
    let reached = AtomicUsize::new(0);
    let mut runner = TestRunner::new(config());
    let result = runner.run(&strategy, |input| {
        total.fetch_add(1, Ordering::Relaxed);
        if test(input)? {
            reached.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{what}: {failure}");
    }
    let (reached, total) = (reached.into_inner(), total.into_inner());
    // Shown with `-- --nocapture`.
    println!("{what}: {reached} of {total} generated cases reached the property");
    assert!(
        reached as f64 >= MIN_REACHED * total as f64,
        "{what}: only {reached} of {total} generated cases reached the property"
    );
}

/// Arbitrary JSON values, biased towards the shapes client metadata has.
fn json_value() -> impl Strategy<Value = Value> {
    json_value_with(true)
}

/// The same without floats, for comparing a parsed answer with what was
/// sent: serde_json's default float parsing may change the last digit.
fn json_value_with(floats: bool) -> impl Strategy<Value = Value> {
    let number = if floats {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
                .map(Value::Number)),
        ]
        .boxed()
    } else {
        any::<i64>().prop_map(Value::from).boxed()
    };
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number,
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
    request_map_with(true)
}

fn request_map_with(floats: bool) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(field_name(), json_value_with(floats), 0..12)
        .prop_map(|m| m.into_iter().collect())
}

/// A non-empty string.
fn text() -> impl Strategy<Value = Value> {
    "\\PC{1,30}".prop_map(Value::String)
}

/// An absolute http(s) URL (RFC 7591 §2: `client_uri`, `logo_uri`, ...).
fn web_url() -> impl Strategy<Value = Value> {
    ("https?", "[a-z]{1,10}", "(/[a-zA-Z0-9._~-]{0,10}){0,3}")
        .prop_map(|(scheme, host, path)| Value::from(format!("{scheme}://{host}.example{path}")))
}

/// A redirect URI the rules accept: https, loopback http, or a private-use
/// scheme (RFC 8252 §7.1), without a fragment.
fn redirect_uri() -> impl Strategy<Value = Value> {
    prop_oneof![
        ("[a-z]{1,10}", "(/[a-z0-9]{1,8}){0,3}")
            .prop_map(|(host, path)| format!("https://{host}.example{path}")),
        (
            prop_oneof![Just("localhost"), Just("127.0.0.1"), Just("[::1]")],
            1u16..,
            "/[a-z]{0,8}"
        )
            .prop_map(|(host, port, path)| format!("http://{host}:{port}{path}")),
        "[a-z]{2,8}\\.[a-z]{2,8}\\.[a-z]{2,8}:/[a-z]{0,8}",
    ]
    .prop_map(Value::from)
}

/// A value of the right kind for `field`.
fn valid_value(field: &'static metadata::Field) -> BoxedStrategy<Value> {
    if field.name == "redirect_uris" {
        return prop::collection::vec(redirect_uri(), 1..4)
            .prop_map(Value::Array)
            .boxed();
    }
    match field.kind {
        Kind::Text => text().boxed(),
        Kind::WebUrl => web_url().boxed(),
        Kind::TextList => prop::collection::vec(text(), 1..4)
            .prop_map(Value::Array)
            .boxed(),
        Kind::Integer => any::<i64>().prop_map(Value::from).boxed(),
        Kind::Object => prop::collection::btree_map("[a-z]{1,8}", text(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
            .boxed(),
    }
}

/// Valid client metadata: `client_name` and `redirect_uris`, plus any subset
/// of the other client fields, and sometimes extension metadata.
fn valid_metadata() -> impl Strategy<Value = Map<String, Value>> {
    let members: Vec<BoxedStrategy<Option<(String, Value)>>> = metadata::FIELDS
        .iter()
        .filter(|f| f.origin == Origin::Client)
        .map(|field| {
            let member = valid_value(field).prop_map(move |v| (field.name.to_string(), v));
            if matches!(field.name, "client_name" | "redirect_uris") {
                member.prop_map(Some).boxed()
            } else {
                prop::option::weighted(0.4, member).boxed()
            }
        })
        .collect();
    let extra = prop::option::of(
        prop::collection::btree_map("x_[a-z]{1,8}", json_value(), 1..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
    );
    (members, extra).prop_map(|(members, extra)| {
        let mut map: Map<String, Value> = members.into_iter().flatten().collect();
        // RFC 7591 §2: jwks and jwks_uri MUST NOT both be present.
        if map.contains_key("jwks") {
            map.remove("jwks_uri");
        }
        if let Some(extra) = extra {
            map.insert("extra".into(), extra);
        }
        map
    })
}

fn endpoint() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just("https://as.example.com/register"),
        Just("http://127.0.0.1:9000/register"),
        Just("http://localhost/reg"),
        Just("https://[::1]/r"),
    ]
    .prop_map(Value::from)
}

/// Valid registration requests, the same with one member replaced by an
/// arbitrary one, and arbitrary maps.
fn registration_request() -> impl Strategy<Value = Map<String, Value>> {
    let valid = (valid_metadata(), endpoint())
        .prop_map(|(mut map, endpoint)| {
            map.insert("registration_endpoint".into(), endpoint);
            map
        })
        .boxed();
    let broken = (valid.clone(), field_name(), json_value()).prop_map(|(mut map, name, value)| {
        map.insert(name, value);
        map
    });
    prop_oneof![3 => valid, 1 => broken, 1 => request_map()]
}

#[test]
fn a_registration_that_passes_the_checks_is_sendable() {
    check_reaching("request::registration", registration_request(), |map| {
        let Ok(registration) = request::registration(map.clone()) else {
            return Ok(false);
        };
        let sent = &registration.metadata;
        // No empty values, no endpoint, the defaults present.
        prop_assert!(sent.values().all(metadata::has_value));
        prop_assert!(!sent.contains_key("registration_endpoint"));
        prop_assert!(!sent.contains_key("extra"));
        for name in [
            "application_type",
            "grant_types",
            "response_types",
            "token_endpoint_auth_method",
        ] {
            prop_assert!(sent.contains_key(name), "{name} missing from {sent:?}");
        }
        // The rules are settled: checking what is sent again, with the
        // client's policy, accepts it and changes nothing.
        let mut again = sent.clone();
        prop_assert!(
            metadata::prepare_client_metadata(&mut again, &request::CLIENT_POLICY).is_ok()
        );
        prop_assert_eq!(&again, sent);
        // A value the caller gave always wins; extension metadata is sent as it is.
        for (name, value) in &map {
            if name == "extra" {
                let members = value.as_object().into_iter().flatten();
                for (member, value) in members.filter(|(_, v)| metadata::has_value(v)) {
                    prop_assert_eq!(sent.get(member), Some(value));
                }
            } else if name != "registration_endpoint" && metadata::has_value(value) {
                prop_assert_eq!(sent.get(name), Some(value));
            }
        }
        prop_assert!(uri::check_endpoint(registration.endpoint.as_str()).is_ok());
        Ok(true)
    });
}

#[test]
fn an_update_that_passes_the_checks_never_puts_a_forbidden_field() {
    let updates = prop_oneof![3 => valid_metadata(), 1 => request_map()];
    check_reaching("request::update", updates, |map| {
        let Ok(updates) = request::update(map) else {
            return Ok(false);
        };
        // RFC 7592 §2.2: the PUT never carries the fields it forbids.
        let put = metadata::merge_for_put(None, &updates);
        prop_assert!(put
            .keys()
            .all(|k| !metadata::field(k).is_some_and(|f| f.forbidden_in_put)));
        prop_assert!(put.values().all(metadata::has_value));
        Ok(true)
    });
}

/// Answers shaped like RFC 7591 §3.2.1 client information: a `client_id`,
/// any known fields with values of their kind (or null), unknown members;
/// sometimes one member replaced by an arbitrary one, or arbitrary maps.
fn client_information_answer() -> impl Strategy<Value = Map<String, Value>> {
    let members: Vec<BoxedStrategy<Option<(String, Value)>>> = metadata::FIELDS
        .iter()
        .filter(|f| f.name != "client_id")
        .map(|field| {
            let value = prop_oneof![9 => valid_value(field), 1 => Just(Value::Null)];
            prop::option::weighted(0.4, value.prop_map(move |v| (field.name.to_string(), v)))
                .boxed()
        })
        .collect();
    let unknown = prop::collection::btree_map("x_[a-z]{1,8}", json_value_with(false), 0..3);
    let valid = ("[A-Za-z0-9_-]{1,30}", members, unknown)
        .prop_map(|(id, members, unknown)| {
            let mut map: Map<String, Value> = members.into_iter().flatten().collect();
            map.extend(unknown);
            map.insert("client_id".into(), Value::from(id));
            map
        })
        .boxed();
    let broken =
        (valid.clone(), field_name(), json_value_with(false)).prop_map(|(mut map, name, value)| {
            map.insert(name, value);
            map
        });
    prop_oneof![3 => valid, 1 => broken, 1 => request_map_with(false)]
}

#[test]
fn an_answer_that_parses_keeps_every_member_under_its_name_or_in_extra() {
    check_reaching(
        "response::client_information",
        client_information_answer(),
        |members| {
            let body = serde_json::to_vec(&Value::Object(members.clone())).unwrap();
            let Ok(info) = response::client_information(&body) else {
                return Ok(false);
            };
            prop_assert!(!info.client_id().is_empty());
            prop_assert!(info.document.values().all(|v| !v.is_null()));
            // Every member is under its name (a known field of its documented
            // type) or in extra (any other member, raw), never both: a
            // mistyped field costs nothing of the answer.
            let extra: Map<String, Value> =
                info.extra().map(|(k, v)| (k.clone(), v.clone())).collect();
            for (name, value) in &info.document {
                let known = info.known(name);
                prop_assert!(
                    known.is_some() != extra.contains_key(name),
                    "{name}: {value}"
                );
                prop_assert_eq!(known.or_else(|| extra.get(name)), Some(value));
                if let Some(field) = metadata::field(name) {
                    prop_assert_eq!(known.is_some(), metadata::check_type(field, value).is_ok());
                }
            }
            // Nothing the server sent is lost, except nulls (absent).
            let sent: Map<String, Value> =
                members.into_iter().filter(|(_, v)| !v.is_null()).collect();
            prop_assert_eq!(&info.document, &sent);
            Ok(true)
        },
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn response_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = response::client_information(&bytes);
        let _ = response::refusal(400, bytes);
    }

    #[test]
    fn response_parser_never_panics_on_json(members in request_map()) {
        let body = serde_json::to_vec(&Value::Object(members)).unwrap();
        let _ = response::client_information(&body);
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

#[test]
fn the_valid_shaped_generators_are_valid() {
    // The generators above are only useful if their "valid" inputs are
    // accepted; pin one by hand so a rule change shows up here first.
    let map = json!({
        "registration_endpoint": "https://as.example.com/register",
        "client_name": "Café",
        "redirect_uris": ["com.example.app:/cb", "http://[::1]:3000/x"],
        "jwks": {"keys": "x"},
        "extra": {"x_vendor": [1, null]}
    });
    let registration = request::registration(map.as_object().unwrap().clone()).unwrap();
    assert_eq!(registration.metadata["application_type"], json!("native"));
    assert_eq!(registration.metadata["x_vendor"], json!([1, null]));
}
