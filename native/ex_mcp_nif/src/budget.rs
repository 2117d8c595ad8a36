//! Bounded scheduler time. A NIF running on a normal BEAM scheduler must
//! return within about a millisecond (erl_nif, "Long-running NIFs"), or it
//! delays every process queued on that scheduler. The work a call NIF does
//! before spawning grows with the caller's input, so it is counted as it goes:
//! on a normal scheduler a request map may cost at most [`ON_SCHEDULER`]; a
//! larger one makes the NIF stop at once and answer `:reschedule`, and the
//! Elixir side runs the same NIF's dirty-CPU twin, where [`REQUEST`] is the
//! documented hard limit. Strings given as arguments (URIs, tokens, headers)
//! have a fixed cap of [`MAX_STRING_BYTES`], cheap to check anywhere.

/// How much of a caller's term may be converted.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Values: every map, list, string, number and atom counts one.
    pub values: usize,
    /// Bytes of text: map keys and strings.
    pub text_bytes: usize,
}

/// What a normal scheduler converts and checks in well under a millisecond.
/// Redirect URIs are the costliest values (each is parsed and checked, about
/// 1 µs): 250 of 128 bytes took 0.25–0.35 ms on this project's 2-core
/// machine under load, 250 `extra` members 0.07 ms. Real registration
/// requests are far smaller.
pub const ON_SCHEDULER: Limits = Limits {
    values: 256,
    text_bytes: 32 * 1024,
};

/// The largest request map (or term given to `json_encode`) accepted at all;
/// it is converted on a dirty CPU scheduler. Documented in the moduledoc.
pub const REQUEST: Limits = Limits {
    values: 50_000,
    text_bytes: 1024 * 1024,
};

/// The longest string argument (a URI, a token, a path) in bytes, and the
/// most bytes of header names and values together.
pub const MAX_STRING_BYTES: usize = 64 * 1024;

/// The most extra request headers (option `:headers`).
pub const MAX_HEADERS: usize = 100;

/// Which scheduler a call NIF runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    Normal,
    DirtyCpu,
}

impl Scheduler {
    pub fn limits(self) -> Limits {
        match self {
            Scheduler::Normal => ON_SCHEDULER,
            Scheduler::DirtyCpu => REQUEST,
        }
    }
}

/// The budget was spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded;

/// What is left of a [`Limits`] while converting one term.
#[derive(Debug)]
pub struct Budget {
    values: usize,
    text_bytes: usize,
}

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Self {
            values: limits.values,
            text_bytes: limits.text_bytes,
        }
    }

    pub fn value(&mut self) -> Result<(), Exceeded> {
        self.values = self.values.checked_sub(1).ok_or(Exceeded)?;
        Ok(())
    }

    pub fn text(&mut self, bytes: usize) -> Result<(), Exceeded> {
        self.text_bytes = self.text_bytes.checked_sub(bytes).ok_or(Exceeded)?;
        Ok(())
    }
}

/// The message of `{:invalid_field, field, message}` for a request over
/// [`REQUEST`].
pub fn too_large_message() -> String {
    format!(
        "is too large: a request map holds at most {} values and {} bytes of text",
        REQUEST.values, REQUEST.text_bytes
    )
}
