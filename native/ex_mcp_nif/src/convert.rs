//! Elixir terms to JSON values, and error reasons for the calling process.
//! Terms going the other way are written as ETF by `crate::etf`;
//! atoms are only ever this crate's fixed names or the caller's existing
//! ones, never made from data a server sent.

use crate::etf::{self, AtomTable};
use mcp_registration::{Error, RequestError};
use rustler::types::atom::Atom;
use rustler::types::map::MapIterator;
use rustler::{Binary, Encoder, Env, Term, TermType};
use serde_json::{Map, Number, Value};

use crate::atoms;

/// Bounds on a caller's request map, so that checking it on a scheduler stays
/// in the microseconds.
const MAX_TERMS: usize = 50_000;
const MAX_DEPTH: usize = 32;

/// Why a term could not become JSON.
pub struct NotJson(pub &'static str);

/// Converts a caller's map (atom or string keys) into a JSON object. A value
/// that cannot be converted is `{:invalid_field, key, message}`; `whole`
/// names the map itself when it is not one.
pub fn map_to_json<'a>(
    env: Env<'a>,
    term: Term<'a>,
    whole: &str,
) -> Result<Map<String, Value>, Term<'a>> {
    let mut budget = MAX_TERMS;
    let iter = MapIterator::new(term).ok_or_else(|| invalid_field(env, whole, "must be a map"))?;
    let mut object = Map::new();
    for (key, value) in iter {
        let name = key_to_string(key).map_err(|e| invalid_field(env, "<key>", e.0))?;
        let value = to_json(value, 1, &mut budget).map_err(|e| invalid_field(env, &name, e.0))?;
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

/// Decodes ETF bytes made by `crate::etf` into a term of the
/// calling process. Only for NIFs running on a scheduler.
pub fn from_etf<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    env.binary_to_term(bytes)
        .expect("etf.rs writes valid external terms")
        .0
}

/// The caller's atoms, looked up without ever creating one.
pub struct ExistingAtoms<'a>(pub Env<'a>);

impl AtomTable for ExistingAtoms<'_> {
    fn exists(&self, name: &str) -> bool {
        Atom::existing_from_utf8_bytes(self.0, name.as_bytes()).is_ok()
    }
}

/// `{:invalid_field, field, message}` for a value of the caller's.
pub fn invalid_field<'a>(env: Env<'a>, field: &str, message: &str) -> Term<'a> {
    request_reason(
        env,
        RequestError::InvalidField {
            field: field.to_owned(),
            message: message.to_owned(),
        },
    )
}

pub fn request_reason(env: Env, error: RequestError) -> Term {
    from_etf(
        env,
        &etf::reason(&Error::Request(error), &ExistingAtoms(env)),
    )
}

pub fn invalid_option<'a>(env: Env<'a>, option: Atom, message: &str) -> Term<'a> {
    (atoms::invalid_option(), option, message).encode(env)
}
