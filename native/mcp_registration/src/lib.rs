//! RFC 7591 dynamic client registration and RFC 7592 registration
//! management, without any BEAM: the NIF crate `ex_mcp_nif` wraps this, and
//! the benchmark uses it directly. [`server`] is an embedded registration
//! server that checks what it receives with the same [`metadata`] rules the
//! client applies before sending.

pub mod cacertfile;
pub mod client;
pub mod client_id_metadata_document;
pub mod discovery;
pub mod error;
pub mod metadata;
pub mod net_guard;
pub mod pool;
pub mod proxy;
pub mod redact;
pub mod request;
pub mod response;
pub mod rotation;
pub mod server;
pub mod token;
pub mod transport;
pub mod uri;
pub mod www_authenticate;

pub use client::{Call, Options, Outcome, Secret};
pub use discovery::{Discover, Discovery};
pub use error::{DiscoveryError, Error, RequestError, TransportError};
pub use proxy::{ProxySetting, ProxyUrl};
pub use response::ClientInformation;
