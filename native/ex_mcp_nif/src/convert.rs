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
use crate::budget::{Budget, Exceeded, Limits};

/// Bounds the nesting of a caller's term.
const MAX_DEPTH: usize = 32;

/// Why a term could not become JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotJson {
    /// It holds something JSON cannot represent; the message says what.
    Invalid(&'static str),
    /// It is larger than the [`Limits`] it was converted under.
    TooLarge,
}

impl From<Exceeded> for NotJson {
    fn from(_: Exceeded) -> Self {
        NotJson::TooLarge
    }
}

/// Why a caller's map was not converted.
pub enum Refusal<'a> {
    /// `{:invalid_field, key, message}` (or the like), ready to return.
    Invalid(Term<'a>),
    /// Over the limits; `field` is the top-level key being converted.
    TooLarge { field: String },
}

impl<'a> Refusal<'a> {
    /// The reason for the caller; over the limits is `{:invalid_field,
    /// field, "is too large: ..."}` naming them.
    pub fn into_reason(self, env: Env<'a>) -> Term<'a> {
        match self {
            Refusal::Invalid(reason) => reason,
            Refusal::TooLarge { field } => {
                invalid_field(env, &field, &crate::budget::too_large_message())
            }
        }
    }
}

/// Converts a caller's map (atom or string keys) into a JSON object, within
/// `limits`. A value that cannot be converted is `{:invalid_field, key,
/// message}`; `whole` names the map itself when it is not one.
pub fn map_to_json<'a>(
    env: Env<'a>,
    term: Term<'a>,
    whole: &str,
    limits: Limits,
) -> Result<Map<String, Value>, Refusal<'a>> {
    let mut budget = Budget::new(limits);
    let iter = MapIterator::new(term)
        .ok_or_else(|| Refusal::Invalid(invalid_field(env, whole, "must be a map")))?;
    let mut object = Map::new();
    for (key, value) in iter {
        let name = key_to_string(key, &mut budget).map_err(|e| match e {
            NotJson::TooLarge => Refusal::TooLarge {
                field: whole.to_owned(),
            },
            NotJson::Invalid(message) => Refusal::Invalid(invalid_field(env, "<key>", message)),
        })?;
        let value = to_json(value, 1, &mut budget).map_err(|e| match e {
            NotJson::TooLarge => Refusal::TooLarge {
                field: name.clone(),
            },
            NotJson::Invalid(message) => Refusal::Invalid(invalid_field(env, &name, message)),
        })?;
        object.insert(name, value);
    }
    Ok(object)
}

/// Converts any JSON-representable term within `limits`.
pub fn term_to_json(term: Term, limits: Limits) -> Result<Value, NotJson> {
    to_json(term, 0, &mut Budget::new(limits))
}

fn key_to_string(key: Term, budget: &mut Budget) -> Result<String, NotJson> {
    match key.get_type() {
        TermType::Atom => key
            .atom_to_string()
            .map_err(|_| NotJson::Invalid("has an unreadable atom key")),
        TermType::Binary => binary_to_string(key, budget),
        _ => Err(NotJson::Invalid("map keys must be atoms or strings")),
    }
}

/// The size is charged before the bytes are read or copied.
fn binary_to_string(term: Term, budget: &mut Budget) -> Result<String, NotJson> {
    let binary = Binary::from_term(term).map_err(|_| NotJson::Invalid("must be a binary"))?;
    budget.text(binary.len())?;
    std::str::from_utf8(binary.as_slice())
        .map(str::to_owned)
        .map_err(|_| NotJson::Invalid("must be valid UTF-8"))
}

fn to_json(term: Term, depth: usize, budget: &mut Budget) -> Result<Value, NotJson> {
    if depth > MAX_DEPTH {
        return Err(NotJson::Invalid("is nested too deeply"));
    }
    budget.value()?;
    match term.get_type() {
        TermType::Atom => {
            if term == atoms::nil().to_term(term.get_env()) {
                Ok(Value::Null)
            } else if let Ok(flag) = term.decode::<bool>() {
                Ok(Value::Bool(flag))
            } else {
                term.atom_to_string()
                    .map(Value::String)
                    .map_err(|_| NotJson::Invalid("has an unreadable atom"))
            }
        }
        TermType::Binary => binary_to_string(term, budget).map(Value::String),
        TermType::Integer => term
            .decode::<i64>()
            .map(Value::from)
            .or_else(|_| term.decode::<u64>().map(Value::from))
            .map_err(|_| NotJson::Invalid("holds an integer outside the 64-bit range")),
        TermType::Float => term
            .decode::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or(NotJson::Invalid("holds a float JSON cannot represent")),
        TermType::List => {
            let mut items = Vec::new();
            let mut rest = term;
            while !rest.is_empty_list() {
                let (head, tail) = rest
                    .list_get_cell()
                    .map_err(|_| NotJson::Invalid("is an improper list"))?;
                items.push(to_json(head, depth + 1, budget)?);
                rest = tail;
            }
            Ok(Value::Array(items))
        }
        TermType::Map => {
            let mut object = Map::new();
            for (key, value) in MapIterator::new(term).ok_or(NotJson::Invalid("must be a map"))? {
                object.insert(
                    key_to_string(key, budget)?,
                    to_json(value, depth + 1, budget)?,
                );
            }
            Ok(Value::Object(object))
        }
        _ => Err(NotJson::Invalid(
            "holds a value JSON cannot represent (a tuple, pid, reference or function)",
        )),
    }
}

/// Decodes ETF bytes made by `crate::etf` into a term of the calling
/// process. Only for NIFs running on a scheduler, and on a normal one only
/// for small or bounded terms (see `budget`).
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
