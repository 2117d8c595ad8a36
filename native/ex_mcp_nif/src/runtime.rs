//! The one tokio runtime every call runs on, and the count of calls in flight.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::etf;
use once_cell::sync::OnceCell;
use rustler::{Atom, Env, Term};
use tokio::runtime::Runtime;

static RUNTIME: OnceCell<Runtime> = OnceCell::new();
static WORKER_THREADS: AtomicUsize = AtomicUsize::new(0);
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// NIF `load` and `upgrade`: `load_info` is the worker thread count (0 picks
/// the default; anything but a non-negative integer fails the load). It
/// takes effect when the runtime starts, so an upgrade keeps the running
/// one. Creates every atom a reply can hold, so that the caller can decode
/// replies with `binary_to_term(reply, [:safe])`.
pub fn load(env: Env, load_info: Term) -> bool {
    let Ok(threads) = load_info.decode::<usize>() else {
        return false;
    };
    WORKER_THREADS.store(threads, Ordering::Relaxed);
    etf::reply_atom_names().all(|name| Atom::from_str(env, name).is_ok())
}

/// Two workers by default: HTTP work is I/O-bound, and on a small machine the
/// BEAM's schedulers need the cores more than tokio does.
fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 2))
}

pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        let threads = match WORKER_THREADS.load(Ordering::Relaxed) {
            0 => default_worker_threads(),
            n => n,
        };
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("ex_mcp_tokio")
            .enable_all()
            .build()
            .expect("cannot start the tokio runtime")
    })
}

/// Counts a spawned call until its future is dropped: finished, failed,
/// panicked or aborted.
pub struct InFlight(());

impl InFlight {
    pub fn enter() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        Self(())
    }

    pub fn count() -> usize {
        IN_FLIGHT.load(Ordering::SeqCst)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}
