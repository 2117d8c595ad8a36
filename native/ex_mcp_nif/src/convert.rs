//! Elixir terms to JSON values and back, and the encoding of results and
//! error reasons. Atoms are only ever made from this crate's fixed names or
//! looked up when they already exist: never from data a server sent.

use mcp_registration::{metadata, ClientInformation, Error, RequestError, TransportError};
use rustler::types::atom::Atom;
use rustler::types::map::MapIterator;
use rustler::{Binary, Encoder, Env, NewBinary, Term, TermType};
use serde_json::{Map, Number, Value};

use crate::atoms;

/// Bounds on a caller's request map, so that checking it on a scheduler stays
/// in the microseconds.
const MAX_TERMS: usize = 50_000;
const MAX_DEPTH: usize = 32;

/// Why a term could not become JSON.
pub struct NotJson(pub &'static str);

/// Converts a caller's map (atom or string keys) into a JSON object.
pub fn map_to_json(term: Term) -> Result<Map<String, Value>, (String, NotJson)> {
    let mut budget = MAX_TERMS;
    let iter = MapIterator::new(term).ok_or_else(|| (String::new(), NotJson("must be a map")))?;
    let mut object = Map::new();
    for (key, value) in iter {
        let name = key_to_string(key).map_err(|e| (String::from("<key>"), e))?;
        let value = to_json(value, 1, &mut budget).map_err(|e| (name.clone(), e))?;
        object.insert(name, value);
    }
    Ok(object)
}

/// Converts any JSON-representable term.
pub fn term_to_json(term: Term) -> Result<Value, NotJson> {
    let mut budget = MAX_TERMS;
    to_json(term, 0, &mut budget)
}

fn key_to_string(key: Term) -> Result<String, NotJson> {
    match key.get_type() {
        TermType::Atom => key
            .atom_to_string()
            .map_err(|_| NotJson("has an unreadable atom key")),
        TermType::Binary => binary_to_string(key),
        _ => Err(NotJson("map keys must be atoms or strings")),
    }
}

fn binary_to_string(term: Term) -> Result<String, NotJson> {
    let binary = Binary::from_term(term).map_err(|_| NotJson("must be a binary"))?;
    std::str::from_utf8(binary.as_slice())
        .map(str::to_owned)
        .map_err(|_| NotJson("must be valid UTF-8"))
}

fn to_json(term: Term, depth: usize, budget: &mut usize) -> Result<Value, NotJson> {
    if depth > MAX_DEPTH {
        return Err(NotJson("is nested too deeply"));
    }
    *budget = budget.checked_sub(1).ok_or(NotJson("is too large"))?;
    match term.get_type() {
        TermType::Atom => {
            if term == atoms::nil().to_term(term.get_env()) {
                Ok(Value::Null)
            } else if let Ok(flag) = term.decode::<bool>() {
                Ok(Value::Bool(flag))
            } else {
                term.atom_to_string()
                    .map(Value::String)
                    .map_err(|_| NotJson("has an unreadable atom"))
            }
        }
        TermType::Binary => binary_to_string(term).map(Value::String),
        TermType::Integer => term
            .decode::<i64>()
            .map(Value::from)
            .or_else(|_| term.decode::<u64>().map(Value::from))
            .map_err(|_| NotJson("holds an integer outside the 64-bit range")),
        TermType::Float => term
            .decode::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or(NotJson("holds a float JSON cannot represent")),
        TermType::List => {
            let mut items = Vec::new();
            let mut rest = term;
            while !rest.is_empty_list() {
                let (head, tail) = rest
                    .list_get_cell()
                    .map_err(|_| NotJson("is an improper list"))?;
                items.push(to_json(head, depth + 1, budget)?);
                rest = tail;
            }
            Ok(Value::Array(items))
        }
        TermType::Map => {
            let mut object = Map::new();
            for (key, value) in MapIterator::new(term).ok_or(NotJson("must be a map"))? {
                object.insert(key_to_string(key)?, to_json(value, depth + 1, budget)?);
            }
            Ok(Value::Object(object))
        }
        _ => Err(NotJson(
            "holds a value JSON cannot represent (a tuple, pid, reference or function)",
        )),
    }
}

/// JSON to an Elixir term: objects become maps with string keys.
pub fn json_to_term<'a>(env: Env<'a>, value: &Value) -> Term<'a> {
    match value {
        Value::Null => atoms::nil().encode(env),
        Value::Bool(flag) => flag.encode(env),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.encode(env)
            } else if let Some(u) = n.as_u64() {
                u.encode(env)
            } else {
                n.as_f64().unwrap_or(f64::NAN).encode(env)
            }
        }
        Value::String(s) => string_term(env, s),
        Value::Array(items) => items
            .iter()
            .map(|v| json_to_term(env, v))
            .collect::<Vec<_>>()
            .encode(env),
        Value::Object(members) => {
            let keys: Vec<Term> = members.keys().map(|k| string_term(env, k)).collect();
            let values: Vec<Term> = members.values().map(|v| json_to_term(env, v)).collect();
            Term::map_from_term_arrays(env, &keys, &values).expect("JSON object keys are unique")
        }
    }
}

fn string_term<'a>(env: Env<'a>, s: &str) -> Term<'a> {
    bytes_term(env, s.as_bytes())
}

fn bytes_term<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    NewBinary::from_slice(env, bytes).into()
}

/// A `client_information()` map: known fields under their fixed atoms, the
/// ten documented keys always present, everything else under `:extra`.
pub fn client_information<'a>(env: Env<'a>, info: &ClientInformation) -> Term<'a> {
    let mut keys = Vec::with_capacity(metadata::FIELDS.len() + 1);
    let mut values = Vec::with_capacity(metadata::FIELDS.len() + 1);
    for field in metadata::FIELDS {
        let value = match info.document.get(field.name) {
            Some(value) => json_to_term(env, value),
            None => match metadata::answer_default(field.name) {
                Some(default) => json_to_term(env, &default),
                None => continue,
            },
        };
        keys.push(known_atom(env, field.name));
        values.push(value);
    }
    let extra: Vec<(Term, Term)> = info
        .extra()
        .map(|(k, v)| (string_term(env, k), json_to_term(env, v)))
        .collect();
    if !extra.is_empty() {
        let (extra_keys, extra_values): (Vec<_>, Vec<_>) = extra.into_iter().unzip();
        keys.push(atoms::extra().encode(env));
        values.push(
            Term::map_from_term_arrays(env, &extra_keys, &extra_values).expect("unique keys"),
        );
    }
    Term::map_from_term_arrays(env, &keys, &values).expect("field names are unique")
}

/// An atom for one of this crate's fixed field names.
fn known_atom<'a>(env: Env<'a>, name: &'static str) -> Term<'a> {
    Atom::from_str(env, name)
        .expect("field names are valid atoms")
        .encode(env)
}

/// A field name from the caller's map: the existing atom when there is one,
/// the string otherwise. Never creates an atom.
fn field_name<'a>(env: Env<'a>, name: &str) -> Term<'a> {
    match Atom::existing_from_utf8_bytes(env, name.as_bytes()) {
        Ok(atom) => atom.encode(env),
        Err(_) => string_term(env, name),
    }
}

pub fn invalid_field<'a>(env: Env<'a>, field: &str, message: &str) -> Term<'a> {
    (atoms::invalid_field(), field_name(env, field), message).encode(env)
}

pub fn invalid_option<'a>(env: Env<'a>, option: Atom, message: &str) -> Term<'a> {
    (atoms::invalid_option(), option, message).encode(env)
}

pub fn error_reason<'a>(env: Env<'a>, error: &Error) -> Term<'a> {
    match error {
        Error::Request(request) => request_reason(env, request),
        Error::Registration { status, body } => {
            let body = json_to_term(env, &Value::Object(body.clone()));
            (atoms::registration_error(), *status, body).encode(env)
        }
        Error::Http { status, body } => {
            (atoms::http_error(), *status, bytes_term(env, body)).encode(env)
        }
        Error::InvalidResponse(message) => {
            (atoms::invalid_response(), message.as_str()).encode(env)
        }
        Error::JsonDecode(message) => (atoms::json_decode_error(), message.as_str()).encode(env),
        Error::Transport(transport) => {
            (atoms::request_failed(), transport_reason(env, transport)).encode(env)
        }
    }
}

pub fn request_reason<'a>(env: Env<'a>, error: &RequestError) -> Term<'a> {
    match error {
        RequestError::MissingRequiredFields(fields) => {
            let fields: Vec<Term> = fields.iter().map(|f| known_atom(env, f)).collect();
            (atoms::missing_required_fields(), fields).encode(env)
        }
        RequestError::RedirectUrisMustBeList => atoms::redirect_uris_must_be_list().encode(env),
        RequestError::InvalidRedirectUris(uris) => {
            let uris: Vec<Term> = uris.iter().map(|u| string_term(env, u)).collect();
            (atoms::invalid_redirect_uris(), uris).encode(env)
        }
        RequestError::HttpsRequired => atoms::https_required().encode(env),
        RequestError::InvalidField { field, message } => invalid_field(env, field, message),
    }
}

fn transport_reason<'a>(env: Env<'a>, error: &TransportError) -> Term<'a> {
    match error {
        TransportError::Timeout => atoms::timeout().encode(env),
        TransportError::Connect(m) => (atoms::connect(), m.as_str()).encode(env),
        TransportError::Tls(m) => (atoms::tls(), m.as_str()).encode(env),
        TransportError::BodyTooLarge(limit) => (atoms::body_too_large(), *limit).encode(env),
        TransportError::Connection(m) => (atoms::connection(), m.as_str()).encode(env),
        TransportError::CaCertFile(m) => (atoms::cacertfile(), m.as_str()).encode(env),
        TransportError::Panic(m) => (atoms::panic(), m.as_str()).encode(env),
    }
}
