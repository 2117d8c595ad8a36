//! The NIF bridge: checks arguments on the calling scheduler, runs the HTTP
//! work on a tokio runtime, and sends the answer back as a message. The
//! embedded registration server (`server`) runs on the same runtime.

mod atoms;
mod convert;
mod nifs;
mod pending;
mod runtime;
mod server;

rustler::init!("Elixir.ExMCP.Authorization.Native", load = runtime::load);
