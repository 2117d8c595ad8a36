//! Test-only NIFs, compiled only with the cargo feature `test-hooks` (the Mix
//! compiler enables it when `Mix.env() == :test`; release builds never carry
//! it). They let a test observe and force what it otherwise could only hope
//! to hit by chance:
//!
//! - `panic_next_call/0`: the next call panics inside the request path;
//! - `calls_started/0` counts every call ever spawned on tokio, so a test can
//!   show that a refused request started no work (`in_flight` cannot: a call
//!   that starts and fails at once is back to 0 before anyone looks);
//! - `hold_next_delivery/0` forces the cancel-versus-deliver race of
//!   `pending.rs`: the next call commits its delivery (wins the atomic),
//!   tells the caller `:delivery_held`, and sends its reply only once a
//!   `cancel` has lost to it. The caller's wait therefore times out with the
//!   reply committed but not yet in its mailbox, every time;
//! - `etf_encode_json/1` and `reply_atom_names/0` give ExUnit the ETF reply
//!   writer, to check it against `:erlang.binary_to_term/2` (external term
//!   format, erts `erl_ext_dist`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use once_cell::sync::Lazy;
use rustler::env::OwnedEnv;
use rustler::types::atom::Atom;
use rustler::{Encoder, Env, LocalPid, NewBinary, Term};
use tokio::sync::Notify;

use crate::atoms;
use crate::convert;
use crate::etf;

rustler::atoms! { delivery_held }

static CALLS_STARTED: AtomicUsize = AtomicUsize::new(0);
static HOLD_FOR: Mutex<Option<LocalPid>> = Mutex::new(None);
static CANCEL_LOST: Lazy<Notify> = Lazy::new(Notify::new);
static HOLDING: AtomicBool = AtomicBool::new(false);

/// A held delivery waits at most this long for a losing cancel, so that a
/// broken test fails instead of hanging.
const HOLD_LIMIT: Duration = Duration::from_secs(10);

pub fn call_started() {
    CALLS_STARTED.fetch_add(1, Ordering::SeqCst);
}

/// Called by the task that won the delivery, before it sends the reply.
pub async fn before_send() {
    let held_for = HOLD_FOR.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(pid) = held_for else { return };
    HOLDING.store(true, Ordering::SeqCst);
    let _ = OwnedEnv::new().send_and_clear(&pid, |env| delivery_held().encode(env));
    let _ = tokio::time::timeout(HOLD_LIMIT, CANCEL_LOST.notified()).await;
    HOLDING.store(false, Ordering::SeqCst);
}

/// Called when a cancel found the reply already committed.
pub fn cancel_lost() {
    if HOLDING.load(Ordering::SeqCst) {
        CANCEL_LOST.notify_one();
    }
}

#[rustler::nif]
fn calls_started() -> usize {
    CALLS_STARTED.load(Ordering::SeqCst)
}

#[rustler::nif]
fn hold_next_delivery(env: Env) -> Atom {
    *HOLD_FOR.lock().unwrap_or_else(|p| p.into_inner()) = Some(env.pid());
    atoms::ok()
}

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
    match convert::term_to_json(term, crate::budget::REQUEST) {
        Ok(value) => {
            let bytes = etf::json(&value);
            let mut binary = NewBinary::new(env, bytes.len());
            binary.as_mut_slice().copy_from_slice(&bytes);
            Term::from(binary)
        }
        Err(convert::NotJson::Invalid(why)) => (atoms::error(), why).encode(env),
        Err(convert::NotJson::TooLarge) => {
            (atoms::error(), crate::budget::too_large_message()).encode(env)
        }
    }
}

/// Every atom name a reply may hold (created when the NIF loads).
#[rustler::nif]
fn reply_atom_names() -> Vec<&'static str> {
    etf::reply_atom_names().collect()
}
