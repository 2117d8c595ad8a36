//! The NIF side of discovery (MCP authorization 2025-11-25, RFC 9728,
//! RFC 8414): `discover/4` checks its arguments on the scheduler, runs
//! `mcp_registration::Discover` on tokio and replies like every call, as
//! `{ref, etf_binary}` holding `{:ok, discovery} | {:error, reason}`.

use mcp_registration::{Discover, Error};
use rustler::types::list::ListIterator;
use rustler::{Encoder, Env, NifResult, Term};

use crate::atoms;
use crate::budget::MAX_HEADERS;
use crate::convert;
use crate::nifs::{options_from, string_arg};
use crate::pending;

/// `discover(server_url, discover_options, options, reply_ref)`.
/// `discover_options` is the map the Elixir module built:
/// `%{www_authenticate: [binary], resource_metadata_url: binary | nil,
/// issuer: binary | nil, allow_private_networks: boolean}`.
#[rustler::nif]
fn discover<'a>(
    env: Env<'a>,
    server_url: Term<'a>,
    discover_options: Term<'a>,
    options: Term<'a>,
    reply_ref: Term<'a>,
) -> NifResult<Term<'a>> {
    let prepared = options_from(env, options).and_then(|options| {
        let server_url = text(server_url)
            .ok_or_else(|| convert::invalid_field(env, "server_url", "must be a string"))?;
        let get = |key| {
            discover_options
                .map_get(key)
                .ok()
                .filter(|v| *v != atoms::nil().to_term(env))
        };
        let not_strings = || {
            convert::invalid_option(
                env,
                atoms::www_authenticate(),
                "must be a string or a list of strings",
            )
        };
        // Bounded like `:headers` (see budget): the list is read on the
        // calling scheduler.
        let www_authenticate: Vec<String> = match get(atoms::www_authenticate()) {
            None => Vec::new(),
            Some(list) => {
                let items: ListIterator = list.decode().map_err(|_| not_strings())?;
                let mut values = Vec::new();
                for item in items {
                    if values.len() == MAX_HEADERS {
                        return Err(convert::invalid_option(
                            env,
                            atoms::www_authenticate(),
                            &format!("holds more than {MAX_HEADERS} values"),
                        ));
                    }
                    values.push(text(item).ok_or_else(not_strings)?);
                }
                values
            }
        };
        let optional_text = |key| match get(key) {
            None => Ok(None),
            Some(term) => text(term)
                .map(Some)
                .ok_or_else(|| convert::invalid_option(env, key, "must be a string")),
        };
        let resource_metadata_url = optional_text(atoms::resource_metadata_url())?;
        let issuer = optional_text(atoms::issuer())?;
        let allow_private = get(atoms::allow_private_networks())
            .map(|t| t.decode::<bool>().unwrap_or(false))
            .unwrap_or(false);
        Discover::new(
            &server_url,
            &www_authenticate,
            resource_metadata_url.as_deref(),
            issuer.as_deref(),
            allow_private,
            options,
        )
        .map_err(|e| reason(env, &e))
    });
    Ok(match prepared {
        Ok(discover) => (
            atoms::ok(),
            pending::spawn_discovery(env.pid(), reply_ref, discover),
        )
            .encode(env),
        Err(reason) => (atoms::error(), reason).encode(env),
    })
}

/// A UTF-8 binary of at most `MAX_STRING_BYTES` (`nifs::string_arg`); a
/// longer one is refused with the same message as a non-string.
fn text(term: Term) -> Option<String> {
    string_arg(term).and_then(Result::ok)
}

fn reason<'a>(env: Env<'a>, error: &Error) -> Term<'a> {
    convert::from_etf(
        env,
        &crate::etf::reason(error, &convert::ExistingAtoms(env)),
    )
}
