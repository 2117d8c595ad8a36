//! "Reply later": a call runs on tokio and its result is sent to the caller
//! as `{ref, etf_binary}` (see `crate::etf` for why a binary). The caller holds a `Pending` resource; cancelling it,
//! or the caller dying (which frees the resource), aborts the work.
//!
//! Delivery and cancellation race on one atomic: exactly one of them wins, so
//! a reply is either in the caller's mailbox or never sent at all.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::etf;
use futures_util::FutureExt;
use mcp_registration::{Call, Discover, Error, TransportError};
use rustler::env::OwnedEnv;
use rustler::{LocalPid, NewBinary, Resource, ResourceArc, Term};
use tokio::task::AbortHandle;

use crate::runtime::{runtime, InFlight};

const PENDING: u8 = 0;
const DELIVERED: u8 = 1;
const CANCELLED: u8 = 2;

pub struct Pending {
    state: Arc<AtomicU8>,
    abort: AbortHandle,
}

#[rustler::resource_impl]
impl Resource for Pending {}

impl Pending {
    /// Cancels the call unless its reply was already sent. Returns whether it
    /// was cancelled.
    pub fn cancel(&self) -> bool {
        let won = self
            .state
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            self.abort.abort();
        } else {
            #[cfg(feature = "test-hooks")]
            crate::test_hooks::cancel_lost();
        }
        won
    }
}

impl Drop for Pending {
    /// The caller is gone or no longer waiting: nobody will read the reply.
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Spawns `call`; its result goes to `caller` tagged with `reply_ref`.
pub fn spawn(caller: LocalPid, reply_ref: Term, call: Call) -> ResourceArc<Pending> {
    spawn_reply(caller, reply_ref, async move {
        etf::result(&caught(call.run()).await)
    })
}

/// Spawns a discovery run (`discover/2`), delivered like a call.
pub fn spawn_discovery(
    caller: LocalPid,
    reply_ref: Term,
    discover: Discover,
) -> ResourceArc<Pending> {
    spawn_reply(caller, reply_ref, async move {
        etf::discovery(&caught(discover.run()).await)
    })
}

/// Runs `reply` (which yields the ETF bytes to send) on tokio.
fn spawn_reply(
    caller: LocalPid,
    reply_ref: Term,
    reply: impl Future<Output = Vec<u8>> + Send + 'static,
) -> ResourceArc<Pending> {
    let mut reply_env = OwnedEnv::new();
    let saved_ref = reply_env.save(reply_ref);
    let state = Arc::new(AtomicU8::new(PENDING));
    let task_state = Arc::clone(&state);
    let in_flight = InFlight::enter();
    #[cfg(feature = "test-hooks")]
    crate::test_hooks::call_started();
    let task = runtime().spawn(async move {
        let _in_flight = in_flight;
        let reply = reply.await;
        if task_state
            .compare_exchange(PENDING, DELIVERED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            #[cfg(feature = "test-hooks")]
            crate::test_hooks::before_send().await;
            // Fails only if the caller is already dead; then nobody waits.
            let _ = reply_env.send_and_clear(&caller, |env| {
                (
                    saved_ref.load(env),
                    Term::from(NewBinary::from_slice(env, &reply)),
                )
            });
        }
    });
    ResourceArc::new(Pending {
        state,
        abort: task.abort_handle(),
    })
}

/// A panic in the work becomes `{:request_failed, {:panic, message}}`.
async fn caught<T>(work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    #[cfg(feature = "test-hooks")]
    let work = async {
        if crate::test_hooks::take_panic() {
            panic!("forced panic in the request path (test hook)");
        }
        work.await
    };
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(TransportError::Panic(panic_message(&panic)).into()))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
