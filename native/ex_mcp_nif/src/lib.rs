//! The NIF bridge: checks arguments on the calling scheduler, runs the HTTP
//! work on a tokio runtime, and sends the answer back as a message. The
//! embedded registration server (`server`) runs on the same runtime.

mod atoms;
mod budget;
mod client_id_metadata_document;
mod convert;
mod discovery;
mod etf;
mod file_lock;
mod init;
mod nifs;
mod pending;
mod private_file;
mod runtime;
mod server;
#[cfg(feature = "test-hooks")]
mod test_hooks;

/// Rust's own allocations (request and answer documents, buffers, tokio
/// and hyper state) come from mimalloc: with the BEAM's schedulers and the
/// tokio workers allocating at once, glibc malloc's locks and consolidation
/// were the largest single cost in a profile of the NIF under load. The BEAM
/// keeps its own allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
