//! Test hooks, compiled only with the cargo feature `test-hooks` (the Mix
//! compiler enables it when `Mix.env() == :test`). They let a test observe
//! and force what it otherwise could only hope to hit by chance:
//!
//! - `calls_started/0` counts every call ever spawned on tokio, so a test can
//!   show that a refused request started no work (`in_flight` cannot: a call
//!   that starts and fails at once is back to 0 before anyone looks);
//! - `hold_next_delivery/0` forces the cancel-versus-deliver race of
//!   `pending.rs`: the next call commits its delivery (wins the atomic),
//!   tells the caller `:delivery_held`, and sends its reply only once a
//!   `cancel` has lost to it. The caller's wait therefore times out with the
//!   reply committed but not yet in its mailbox, every time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use once_cell::sync::Lazy;
use rustler::env::OwnedEnv;
use rustler::{Encoder, LocalPid};
use tokio::sync::Notify;

use crate::atoms;

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
fn hold_next_delivery(env: rustler::Env) -> rustler::Atom {
    *HOLD_FOR.lock().unwrap_or_else(|p| p.into_inner()) = Some(env.pid());
    atoms::ok()
}
