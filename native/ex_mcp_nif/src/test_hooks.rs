//! Test-only NIFs, compiled only with the cargo feature `test-hooks` (the Mix
//! compiler enables it when `Mix.env() == :test`; release builds never carry
//! it): fault injection in the request path, and direct access to the ETF
//! reply writer so that ExUnit can check it against `:erlang.binary_to_term/2`
//! (external term format, erts `erl_ext_dist`).

use std::sync::atomic::{AtomicBool, Ordering};

use rustler::types::atom::Atom;
use rustler::{Encoder, Env, NewBinary, Term};

use crate::atoms;
use crate::convert;
use crate::etf;

/// When set, the next call panics inside the request path.
static PANIC_NEXT_CALL: AtomicBool = AtomicBool::new(false);

/// Takes the flag that `panic_next_call/0` set (the request path calls this).
pub fn take_panic() -> bool {
    PANIC_NEXT_CALL.swap(false, Ordering::SeqCst)
}

/// The next call panics inside the request path.
#[rustler::nif]
fn panic_next_call() -> Atom {
    PANIC_NEXT_CALL.store(true, Ordering::SeqCst);
    atoms::ok()
}

/// The ETF bytes that the reply writer makes for a JSON-representable term
/// (converted the way request maps are), or `{:error, message}`.
#[rustler::nif]
fn etf_encode_json<'a>(env: Env<'a>, term: Term<'a>) -> Term<'a> {
    match convert::term_to_json(term) {
        Ok(value) => {
            let bytes = etf::json(&value);
            let mut binary = NewBinary::new(env, bytes.len());
            binary.as_mut_slice().copy_from_slice(&bytes);
            Term::from(binary)
        }
        Err(why) => (atoms::error(), why.0).encode(env),
    }
}

/// Every atom name a reply may hold (created when the NIF loads).
#[rustler::nif]
fn reply_atom_names() -> Vec<&'static str> {
    etf::reply_atom_names().collect()
}
