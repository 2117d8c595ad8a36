//! The NIF entry points. Each checks its arguments, spawns the work and
//! returns at once: `{:ok, pending}` or `{:error, reason}`. Options have
//! already been type-checked by the Elixir module; what only Rust can judge
//! (header syntax, token characters) comes back as `{:invalid_option, ...}`.

use std::path::PathBuf;
use std::time::Duration;

use crate::etf;
use mcp_registration::net_guard::NetGuard;
use mcp_registration::{
    metadata, request, Call, Options, ProxySetting, ProxyUrl, RequestError, Secret,
};
use rustler::types::atom::Atom;
use rustler::types::list::ListIterator;
use rustler::{Binary, Encoder, Env, NifResult, Term};
use serde_json::Value;

use crate::atoms;
use crate::budget::{self, Scheduler, MAX_HEADERS, MAX_STRING_BYTES};
use crate::convert::{self, NotJson, Refusal};
use crate::pending::{self, Pending};
use crate::runtime::InFlight;

/// Why a call was not started.
enum Stop<'a> {
    /// `{:error, reason}` for the caller.
    Reason(Term<'a>),
    /// The input is too large for a normal scheduler: answer `:reschedule`,
    /// and the Elixir side calls the dirty-CPU twin of this NIF.
    Reschedule,
}

impl<'a> From<Term<'a>> for Stop<'a> {
    fn from(reason: Term<'a>) -> Self {
        Stop::Reason(reason)
    }
}

type Prepared<'a> = Result<Call, Stop<'a>>;

/// Exported as `register_nif`: `ExMCP.Authorization.Native.register/3`
/// calls it, and `register_dirty` when it answers `:reschedule`.
#[rustler::nif(name = "register_nif")]
fn register<'a>(
    env: Env<'a>,
    request: Term<'a>,
    options: Term<'a>,
    reply_ref: Term<'a>,
) -> NifResult<Term<'a>> {
    start(
        env,
        prepare_register(env, request, options, Scheduler::Normal),
        reply_ref,
    )
}

#[rustler::nif(schedule = "DirtyCpu")]
fn register_dirty<'a>(
    env: Env<'a>,
    request: Term<'a>,
    options: Term<'a>,
    reply_ref: Term<'a>,
) -> NifResult<Term<'a>> {
    start(
        env,
        prepare_register(env, request, options, Scheduler::DirtyCpu),
        reply_ref,
    )
}

fn prepare_register<'a>(
    env: Env<'a>,
    request: Term<'a>,
    options: Term<'a>,
    scheduler: Scheduler,
) -> Prepared<'a> {
    let options = options_from(env, options)?;
    check_endpoint_first(env, request)?;
    let request = request_map(env, request, "request", scheduler)?;
    Call::register(request, options).map_err(|e| convert::request_reason(env, e).into())
}

/// A wrong registration endpoint is refused before a large map is converted.
/// Only a non-empty string is judged here; anything else is left to the full
/// check, which reports it in its usual order.
fn check_endpoint_first<'a>(env: Env<'a>, request: Term<'a>) -> Result<(), Term<'a>> {
    let endpoint = request
        .map_get(atoms::registration_endpoint())
        .or_else(|_| request.map_get(metadata::REGISTRATION_ENDPOINT));
    match endpoint.ok().and_then(string_arg) {
        Some(Ok(endpoint)) if !endpoint.is_empty() => {
            request::endpoint_url(metadata::REGISTRATION_ENDPOINT, &Value::String(endpoint))
                .map(drop)
                .map_err(|e| convert::request_reason(env, e))
        }
        Some(Err(TooLong)) => Err(convert::invalid_field(
            env,
            metadata::REGISTRATION_ENDPOINT,
            &too_long_message(),
        )),
        _ => Ok(()),
    }
}

/// Converts a request or updates map within the scheduler's limits.
fn request_map<'a>(
    env: Env<'a>,
    map: Term<'a>,
    whole: &str,
    scheduler: Scheduler,
) -> Result<serde_json::Map<String, Value>, Stop<'a>> {
    convert::map_to_json(env, map, whole, scheduler.limits()).map_err(|refusal| match refusal {
        Refusal::TooLarge { .. } if scheduler == Scheduler::Normal => Stop::Reschedule,
        refusal => Stop::Reason(refusal.into_reason(env)),
    })
}

#[rustler::nif]
fn get<'a>(
    env: Env<'a>,
    uri: Term<'a>,
    token: Term<'a>,
    options: Term<'a>,
    reply_ref: Term<'a>,
) -> NifResult<Term<'a>> {
    let prepared = prepare_management(env, [uri, token, options], Call::read);
    start(env, prepared, reply_ref)
}

/// A read or a delete (RFC 7592 §2.1, §2.3): the same arguments, one call.
fn prepare_management<'a>(
    env: Env<'a>,
    [uri, token, options]: [Term<'a>; 3],
    call: fn(&str, String, Options) -> Result<Call, RequestError>,
) -> Prepared<'a> {
    let (uri, token, options) = management_args(env, uri, token, options)?;
    call(&uri, token, options).map_err(|e| convert::request_reason(env, e).into())
}

/// Exported as `update_nif`; `update_dirty` is its dirty-CPU twin (see
/// `register`).
#[rustler::nif(name = "update_nif")]
fn update<'a>(
    env: Env<'a>,
    uri: Term<'a>,
    token: Term<'a>,
    updates: Term<'a>,
    replace: bool,
    options: Term<'a>,
    reply_ref: Term<'a>,
) -> NifResult<Term<'a>> {
    let prepared = prepare_update(
        env,
        [uri, token, updates, options],
        replace,
        Scheduler::Normal,
    );
    start(env, prepared, reply_ref)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn update_dirty<'a>(
    env: Env<'a>,
    uri: Term<'a>,
    token: Term<'a>,
    updates: Term<'a>,
    replace: bool,
    options: Term<'a>,
    reply_ref: Term<'a>,
) -> NifResult<Term<'a>> {
    let prepared = prepare_update(
        env,
        [uri, token, updates, options],
        replace,
        Scheduler::DirtyCpu,
    );
    start(env, prepared, reply_ref)
}

fn prepare_update<'a>(
    env: Env<'a>,
    [uri, token, updates, options]: [Term<'a>; 4],
    replace: bool,
    scheduler: Scheduler,
) -> Prepared<'a> {
    let (uri, token, options) = management_args(env, uri, token, options)?;
    // The URI is judged before a large map is converted.
    request::endpoint_url("registration_client_uri", &Value::from(uri.as_str()))
        .map_err(|e| convert::request_reason(env, e))?;
    let updates = request_map(env, updates, "updates", scheduler)?;
    Call::update(&uri, token, updates, replace, options)
        .map_err(|e| convert::request_reason(env, e).into())
}

#[rustler::nif]
fn delete<'a>(
    env: Env<'a>,
    uri: Term<'a>,
    token: Term<'a>,
    options: Term<'a>,
    reply_ref: Term<'a>,
) -> NifResult<Term<'a>> {
    let prepared = prepare_management(env, [uri, token, options], Call::delete);
    start(env, prepared, reply_ref)
}

/// `:cancelled` when the call was stopped before replying, `:delivered` when
/// its reply is already on its way to the caller's mailbox.
#[rustler::nif]
fn cancel(pending: rustler::ResourceArc<Pending>) -> Atom {
    if pending.cancel() {
        atoms::cancelled()
    } else {
        atoms::delivered()
    }
}

/// Calls spawned and not yet finished or aborted (for tests and monitoring).
#[rustler::nif]
fn in_flight() -> usize {
    InFlight::count()
}

fn start<'a>(env: Env<'a>, prepared: Prepared<'a>, reply_ref: Term<'a>) -> NifResult<Term<'a>> {
    Ok(match prepared {
        Ok(call) => (atoms::ok(), pending::spawn(env.pid(), reply_ref, call)).encode(env),
        Err(Stop::Reason(reason)) => (atoms::error(), reason).encode(env),
        Err(Stop::Reschedule) => atoms::reschedule().encode(env),
    })
}

fn management_args<'a>(
    env: Env<'a>,
    uri: Term<'a>,
    token: Term<'a>,
    options: Term<'a>,
) -> Result<(String, String, Options), Term<'a>> {
    let options = options_from(env, options)?;
    let uri = match string_arg(uri) {
        Some(Ok(uri)) => uri,
        Some(Err(TooLong)) => {
            return Err(convert::invalid_field(
                env,
                "registration_client_uri",
                &too_long_message(),
            ))
        }
        None => {
            return Err(convert::invalid_field(
                env,
                "registration_client_uri",
                "must be a string holding an https URL",
            ))
        }
    };
    // The token's value is never echoed back, only named.
    let token = match string_arg(token) {
        Some(Ok(token)) => token,
        Some(Err(TooLong)) => {
            return Err(convert::invalid_field(
                env,
                "registration_access_token",
                &too_long_message(),
            ))
        }
        None => {
            return Err(convert::invalid_field(
                env,
                "registration_access_token",
                "must be a non-empty UTF-8 string",
            ))
        }
    };
    Ok((uri, token, options))
}

/// A string argument longer than [`MAX_STRING_BYTES`].
pub(crate) struct TooLong;

fn too_long_message() -> String {
    format!("is longer than {MAX_STRING_BYTES} bytes")
}

/// A UTF-8 binary as a `String`; `None` when it is not one. The length is
/// checked before the bytes are read.
pub(crate) fn string_arg(term: Term) -> Option<Result<String, TooLong>> {
    let binary = Binary::from_term(term).ok()?;
    if binary.len() > MAX_STRING_BYTES {
        return Some(Err(TooLong));
    }
    std::str::from_utf8(binary.as_slice())
        .ok()
        .map(|s| Ok(s.to_owned()))
}

/// The largest duration in milliseconds: the BEAM's `receive ... after`
/// limit (2^32 - 1), so that the caller's wait can always honour it.
const MAX_MILLIS: u64 = u32::MAX as u64;

/// The defaults of the integer options, from `Options::default()`: the
/// Elixir module merges them under the caller's options and documents them.
#[rustler::nif]
fn option_defaults(env: Env) -> Term {
    let defaults = Options::default();
    let pairs = [
        (atoms::timeout(), defaults.timeout.as_millis() as u64),
        (
            atoms::connect_timeout(),
            defaults.connect_timeout.as_millis() as u64,
        ),
        (atoms::max_response_bytes(), defaults.max_response_bytes),
    ];
    Term::map_from_pairs(env, &pairs.map(|(k, v)| (k.encode(env), v.encode(env))))
        .expect("distinct keys")
}

/// `check_options(options)`: `:ok`, or `{:error, {:invalid_option, key,
/// message}}` for the first option a call would refuse. The Elixir module
/// checks every call's options with it before doing anything else, so that a
/// bad option is an `ArgumentError` even on paths that send nothing.
#[rustler::nif]
fn check_options<'a>(env: Env<'a>, options: Term<'a>) -> Term<'a> {
    match options_from(env, options) {
        Ok(_) => atoms::ok().encode(env),
        Err(reason) => (atoms::error(), reason).encode(env),
    }
}

/// Reads and checks the options map the Elixir module built: this is the one
/// place where option values are checked. Durations are in milliseconds;
/// absent keys keep `Options::default()`. Values are never echoed (a token
/// may be misplaced anywhere).
pub(crate) fn options_from<'a>(env: Env<'a>, term: Term<'a>) -> Result<Options, Term<'a>> {
    let mut options = Options::default();
    let get = |key: Atom| {
        term.map_get(key)
            .ok()
            .filter(|v| *v != atoms::nil().to_term(env))
    };
    let invalid = |key: Atom, message: &str| convert::invalid_option(env, key, message);

    // An integer option given as nil is refused, not taken as the default.
    let integer = |key: Atom, max: u64| -> Result<Option<u64>, Term<'a>> {
        term.map_get(key)
            .ok()
            .map(|term| {
                term.decode::<u64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| invalid(key, &format!("must be an integer from 1 to {max}")))
            })
            .transpose()
    };
    if let Some(ms) = integer(atoms::timeout(), MAX_MILLIS)? {
        options.timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = integer(atoms::connect_timeout(), MAX_MILLIS)? {
        options.connect_timeout = Duration::from_millis(ms);
    }
    if let Some(bytes) = integer(atoms::max_response_bytes(), u64::MAX)? {
        options.max_response_bytes = bytes;
    }
    if let Some(headers) = get(atoms::headers()) {
        let not_pairs = || {
            invalid(
                atoms::headers(),
                "must be a list of {name, value} string pairs",
            )
        };
        let pairs: ListIterator = headers.decode().map_err(|_| not_pairs())?;
        let mut total_bytes = 0;
        for (position, pair) in pairs.enumerate() {
            if position == MAX_HEADERS {
                return Err(invalid(
                    atoms::headers(),
                    &format!("holds more than {MAX_HEADERS} headers"),
                ));
            }
            let (name, value): (Term, Term) = pair.decode().map_err(|_| not_pairs())?;
            let (Some(name), Some(value)) = (string_arg(name), string_arg(value)) else {
                return Err(not_pairs());
            };
            let (Ok(name), Ok(value)) = (name, value) else {
                return Err(invalid(
                    atoms::headers(),
                    &format!("header {}: {}", position + 1, too_long_message()),
                ));
            };
            total_bytes += name.len() + value.len();
            if total_bytes > MAX_STRING_BYTES {
                return Err(invalid(
                    atoms::headers(),
                    &format!("holds more than {MAX_STRING_BYTES} bytes of names and values"),
                ));
            }
            options
                .add_header(&name, &value)
                .map_err(|m| invalid(atoms::headers(), &format!("header {}: {m}", position + 1)))?;
        }
    }
    let string_option = |key: Atom, term: Term<'a>, message: &str| match string_arg(term) {
        Some(Ok(value)) => Ok(value),
        Some(Err(TooLong)) => Err(invalid(key, &too_long_message())),
        None => Err(invalid(key, message)),
    };
    if let Some(path) = get(atoms::cacertfile()) {
        let path = string_option(atoms::cacertfile(), path, "must be a path string")?;
        options.cacertfile = Some(PathBuf::from(path));
    }
    if let Some(proxy) = get(atoms::proxy()) {
        options.proxy = if proxy == atoms::system().to_term(env) {
            ProxySetting::System
        } else {
            // The URL is never echoed: it may hold a password.
            let url = string_option(
                atoms::proxy(),
                proxy,
                "must be an http:// or https:// URL string, :system or nil",
            )?;
            ProxySetting::Url(ProxyUrl::parse(&url).map_err(|m| invalid(atoms::proxy(), &m))?)
        };
    }
    if let Some(token) = get(atoms::initial_access_token()) {
        let message = "must be a non-empty string of visible ASCII characters without spaces";
        let token = string_option(atoms::initial_access_token(), token, message)?;
        let token = Secret::new("initial_access_token", token)
            .map_err(|_| invalid(atoms::initial_access_token(), message))?;
        options.initial_access_token = Some(token);
    }
    // obtain_client/3 registers at an endpoint learned during discovery:
    // the same guard as discovery applies (see mcp_registration::net_guard).
    if let Some(start) = get(atoms::guard_start_url()) {
        let allow_private = get(atoms::allow_private_networks())
            .map(|t| t.decode::<bool>().unwrap_or(false))
            .unwrap_or(false);
        let guard = string_arg(start)
            .and_then(Result::ok)
            .and_then(|start| NetGuard::parse(&start, allow_private))
            .ok_or_else(|| invalid(atoms::guard_start_url(), "must be an absolute URL"))?;
        options.guard = Some(guard);
    }
    Ok(options)
}

/// Encodes a term as JSON text (for the Mix tasks' credential files), within
/// the request limits. On a dirty CPU scheduler: its cost grows with the term.
#[rustler::nif(schedule = "DirtyCpu")]
fn json_encode<'a>(env: Env<'a>, term: Term<'a>, pretty: bool) -> Term<'a> {
    match convert::term_to_json(term, budget::REQUEST) {
        Ok(value) => {
            let text = if pretty {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            };
            (atoms::ok(), text.expect("a JSON value always serializes")).encode(env)
        }
        Err(NotJson::Invalid(why)) => (atoms::error(), why).encode(env),
        Err(NotJson::TooLarge) => (atoms::error(), budget::too_large_message()).encode(env),
    }
}

/// Decodes JSON text; objects become maps with string keys. On a dirty CPU
/// scheduler: its cost grows with the text.
#[rustler::nif(schedule = "DirtyCpu")]
fn json_decode<'a>(env: Env<'a>, text: Binary<'a>) -> Term<'a> {
    match serde_json::from_slice::<serde_json::Value>(text.as_slice()) {
        Ok(value) => (atoms::ok(), convert::from_etf(env, &etf::json(&value))).encode(env),
        Err(e) => (atoms::error(), e.to_string()).encode(env),
    }
}

/// Decodes a reply too large to decode on a normal scheduler: the same as
/// `:erlang.binary_to_term(reply, [:safe])`, on a dirty CPU scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn decode_reply_dirty<'a>(env: Env<'a>, reply: Binary<'a>) -> NifResult<Term<'a>> {
    env.binary_to_term(reply.as_slice())
        .map(|(term, _)| term)
        .ok_or(rustler::Error::BadArg)
}
