//! The NIF entry points. Each checks its arguments, spawns the work and
//! returns at once: `{:ok, pending}` or `{:error, reason}`. Options have
//! already been type-checked by the Elixir module; what only Rust can judge
//! (header syntax, token characters) comes back as `{:invalid_option, ...}`.

use std::path::PathBuf;
use std::time::Duration;

use crate::etf;
use mcp_registration::net_guard::NetGuard;
use mcp_registration::{Call, Options, ProxySetting, ProxyUrl, Secret};
use rustler::types::atom::Atom;
use rustler::{Binary, Encoder, Env, NifResult, Term};

use crate::atoms;
use crate::convert;
use crate::pending::{self, Pending};
use crate::runtime::InFlight;

type Prepared<'a> = Result<Call, Term<'a>>;

#[rustler::nif]
fn register<'a>(
    env: Env<'a>,
    request: Term<'a>,
    options: Term<'a>,
    reply_ref: Term<'a>,
) -> NifResult<Term<'a>> {
    let prepared = options_from(env, options).and_then(|options| {
        let request = convert::map_to_json(env, request, "request")?;
        Call::register(request, options).map_err(|e| convert::request_reason(env, e))
    });
    start(env, prepared, reply_ref)
}

#[rustler::nif]
fn get<'a>(
    env: Env<'a>,
    uri: Term<'a>,
    token: Term<'a>,
    options: Term<'a>,
    reply_ref: Term<'a>,
) -> NifResult<Term<'a>> {
    let prepared = management_args(env, uri, token, options).and_then(|(uri, token, options)| {
        Call::read(&uri, token, options).map_err(|e| convert::request_reason(env, e))
    });
    start(env, prepared, reply_ref)
}

#[rustler::nif]
fn update<'a>(
    env: Env<'a>,
    uri: Term<'a>,
    token: Term<'a>,
    updates: Term<'a>,
    replace: bool,
    options: Term<'a>,
    reply_ref: Term<'a>,
) -> NifResult<Term<'a>> {
    let prepared = management_args(env, uri, token, options).and_then(|(uri, token, options)| {
        let updates = convert::map_to_json(env, updates, "updates")?;
        Call::update(&uri, token, updates, replace, options)
            .map_err(|e| convert::request_reason(env, e))
    });
    start(env, prepared, reply_ref)
}

#[rustler::nif]
fn delete<'a>(
    env: Env<'a>,
    uri: Term<'a>,
    token: Term<'a>,
    options: Term<'a>,
    reply_ref: Term<'a>,
) -> NifResult<Term<'a>> {
    let prepared = management_args(env, uri, token, options).and_then(|(uri, token, options)| {
        Call::delete(&uri, token, options).map_err(|e| convert::request_reason(env, e))
    });
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
        Err(reason) => (atoms::error(), reason).encode(env),
    })
}

fn management_args<'a>(
    env: Env<'a>,
    uri: Term<'a>,
    token: Term<'a>,
    options: Term<'a>,
) -> Result<(String, String, Options), Term<'a>> {
    let options = options_from(env, options)?;
    let uri = string_arg(uri).ok_or_else(|| {
        convert::invalid_field(
            env,
            "registration_client_uri",
            "must be a string holding an https URL",
        )
    })?;
    // The token's value is never echoed back, only named.
    let token = string_arg(token).ok_or_else(|| {
        convert::invalid_field(
            env,
            "registration_access_token",
            "must be a non-empty UTF-8 string",
        )
    })?;
    Ok((uri, token, options))
}

fn string_arg(term: Term) -> Option<String> {
    let binary = Binary::from_term(term).ok()?;
    std::str::from_utf8(binary.as_slice())
        .ok()
        .map(str::to_owned)
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
        let pairs: Vec<(String, String)> = headers.decode().map_err(|_| {
            invalid(
                atoms::headers(),
                "must be a list of {name, value} string pairs",
            )
        })?;
        for (position, (name, value)) in pairs.iter().enumerate() {
            options
                .add_header(name, value)
                .map_err(|m| invalid(atoms::headers(), &format!("header {}: {m}", position + 1)))?;
        }
    }
    if let Some(path) = get(atoms::cacertfile()) {
        let path = string_arg(path)
            .ok_or_else(|| invalid(atoms::cacertfile(), "must be a path string"))?;
        options.cacertfile = Some(PathBuf::from(path));
    }
    if let Some(proxy) = get(atoms::proxy()) {
        options.proxy = if proxy == atoms::system().to_term(env) {
            ProxySetting::System
        } else {
            // The URL is never echoed: it may hold a password.
            let url = string_arg(proxy).ok_or_else(|| {
                invalid(
                    atoms::proxy(),
                    "must be an http:// or https:// URL string, :system or nil",
                )
            })?;
            ProxySetting::Url(ProxyUrl::parse(&url).map_err(|m| invalid(atoms::proxy(), &m))?)
        };
    }
    if let Some(token) = get(atoms::initial_access_token()) {
        let token = string_arg(token)
            .and_then(|t| Secret::new("initial_access_token", t).ok())
            .ok_or_else(|| {
                invalid(
                    atoms::initial_access_token(),
                    "must be a non-empty string of visible ASCII characters without spaces",
                )
            })?;
        options.initial_access_token = Some(token);
    }
    // obtain_client/3 registers at an endpoint learned during discovery:
    // the same guard as discovery applies (see mcp_registration::net_guard).
    if let Some(start) = get(atoms::guard_start_url()) {
        let allow_private = get(atoms::allow_private_networks())
            .map(|t| t.decode::<bool>().unwrap_or(false))
            .unwrap_or(false);
        let guard = string_arg(start)
            .and_then(|start| NetGuard::parse(&start, allow_private))
            .ok_or_else(|| invalid(atoms::guard_start_url(), "must be an absolute URL"))?;
        options.guard = Some(guard);
    }
    Ok(options)
}

/// Encodes a term as JSON text (for the Mix tasks' credential files).
/// Small, bounded inputs only: the same limits as a request map apply.
#[rustler::nif]
fn json_encode<'a>(env: Env<'a>, term: Term<'a>, pretty: bool) -> Term<'a> {
    match convert::term_to_json(term) {
        Ok(value) => {
            let text = if pretty {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            };
            (atoms::ok(), text.expect("a JSON value always serializes")).encode(env)
        }
        Err(why) => (atoms::error(), why.0).encode(env),
    }
}

/// Decodes JSON text; objects become maps with string keys.
#[rustler::nif]
fn json_decode<'a>(env: Env<'a>, text: Binary<'a>) -> Term<'a> {
    match serde_json::from_slice::<serde_json::Value>(text.as_slice()) {
        Ok(value) => (atoms::ok(), convert::from_etf(env, &etf::json(&value))).encode(env),
        Err(e) => (atoms::error(), e.to_string()).encode(env),
    }
}
