//! An exclusive advisory lock (`flock(2)`) on a file, held by a resource.
//!
//! DETS does not stop a second OS process (another VM, a second `mix
//! mcp.register`) from opening a file that one VM already has open, and two
//! writers corrupt it. The DETS client store (`ClientStore.DETS`) takes this
//! lock on a file beside its own (`<path>.lock`, created empty with mode
//! 0600 if missing: a DETS repair replaces the store's file itself, which
//! would orphan a lock held there) and keeps the resource in its process's
//! state: when that process exits, in whatever way, the resource is
//! collected, the descriptor closed and the lock released. `flock` locks
//! belong to an open file description, so a second store on the same file
//! in the same VM is refused too. Runs on a dirty I/O scheduler.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;

use rustler::{Encoder, Env, Resource, ResourceArc, Term};

use crate::atoms;

/// Holds the locked descriptor; dropping it releases the lock.
pub struct FileLock {
    _file: File,
}

#[rustler::resource_impl]
impl Resource for FileLock {}

/// `{:ok, lock}`, `{:error, :locked}` when another holder has it, or
/// `{:error, message}`.
#[rustler::nif(schedule = "DirtyIo")]
fn lock_file(env: Env<'_>, path: String) -> Term<'_> {
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) => return (atoms::error(), e.to_string()).encode(env),
    };
    match file.try_lock() {
        Ok(()) => (atoms::ok(), ResourceArc::new(FileLock { _file: file })).encode(env),
        Err(TryLockError::WouldBlock) => (atoms::error(), atoms::locked()).encode(env),
        Err(TryLockError::Error(e)) => (atoms::error(), e.to_string()).encode(env),
    }
}
