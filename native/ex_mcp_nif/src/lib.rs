//! The NIF bridge: checks arguments on the calling scheduler, runs the HTTP
//! work on a tokio runtime, and sends the answer back as a message.

mod atoms;
mod convert;
mod nifs;
mod pending;
mod runtime;

rustler::init!("Elixir.ExMCP.Authorization.Native", load = runtime::load);
