//! Replies and error reasons as Erlang external term format (ETF) bytes.
//!
//! Why not let the NIF build terms directly: a reply is made on a tokio
//! thread, and on
//! OTP 25 `enif_make_map_from_arrays` crashes the VM when called off a
//! scheduler with a map of more than 128 keys (erlang/otp#8208). A binary is
//! safe to make anywhere; the caller decodes it with
//! `:erlang.binary_to_term(reply, [:safe])`, or, when it is large, with the
//! same function in a dirty-CPU NIF: the BIF does not yield while it builds a
//! large map. A refc binary also crosses the mailbox without being copied.
//!
//! Only what replies need is encoded: atoms from this crate's fixed lists (or
//! the caller's own, checked to exist), binaries, integers, floats, lists,
//! maps and tuples. Strings from a server are always binaries, never atoms.
//! Format: <https://www.erlang.org/doc/apps/erts/erl_ext_dist.html>.

use std::borrow::Cow;

use mcp_registration::discovery::{self, Discovery, MetadataSource};
use mcp_registration::{
    metadata, ClientInformation, DiscoveryError, Error, Outcome, RequestError, TransportError,
};
use serde_json::Value;

const VERSION: u8 = 131;
const NEW_FLOAT_EXT: u8 = 70;
const SMALL_TUPLE_EXT: u8 = 104;
const NIL_EXT: u8 = 106;
const LIST_EXT: u8 = 108;
const BINARY_EXT: u8 = 109;
const SMALL_INTEGER_EXT: u8 = 97;
const INTEGER_EXT: u8 = 98;
const SMALL_BIG_EXT: u8 = 110;
const MAP_EXT: u8 = 116;
const SMALL_ATOM_UTF8_EXT: u8 = 119;

/// Says whether a caller-supplied field name may be sent back as an atom:
/// only when that atom already exists.
pub trait AtomTable {
    fn exists(&self, name: &str) -> bool;
}

/// For replies built off a scheduler: only this crate's fixed names are atoms.
pub struct KnownAtomsOnly;

impl AtomTable for KnownAtomsOnly {
    fn exists(&self, name: &str) -> bool {
        metadata::field(name).is_some() || is_request_key(name)
    }
}

fn is_request_key(name: &str) -> bool {
    name == metadata::REGISTRATION_ENDPOINT || name == metadata::EXTRA
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn new() -> Self {
        Self { out: vec![VERSION] }
    }

    /// Atoms here are short ASCII names from this crate or existing atoms.
    fn atom(&mut self, name: &str) {
        let len = u8::try_from(name.len()).expect("atom names are short");
        self.out.push(SMALL_ATOM_UTF8_EXT);
        self.out.push(len);
        self.out.extend_from_slice(name.as_bytes());
    }

    fn binary(&mut self, bytes: &[u8]) {
        self.out.push(BINARY_EXT);
        self.out
            .extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        self.out.extend_from_slice(bytes);
    }

    fn tuple(&mut self, arity: u8) {
        self.out.push(SMALL_TUPLE_EXT);
        self.out.push(arity);
    }

    fn map(&mut self, arity: usize) {
        self.out.push(MAP_EXT);
        self.out.extend_from_slice(&(arity as u32).to_be_bytes());
    }

    /// A proper list: call this, write `len` elements, then [`Writer::nil`].
    fn list(&mut self, len: usize) {
        if len > 0 {
            self.out.push(LIST_EXT);
            self.out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }

    fn nil(&mut self) {
        self.out.push(NIL_EXT);
    }

    fn unsigned(&mut self, n: u64) {
        if n < 256 {
            self.out.extend_from_slice(&[SMALL_INTEGER_EXT, n as u8]);
        } else if n <= i32::MAX as u64 {
            self.out.push(INTEGER_EXT);
            self.out.extend_from_slice(&(n as i32).to_be_bytes());
        } else {
            self.big(n, false);
        }
    }

    fn signed(&mut self, n: i64) {
        if n >= 0 {
            self.unsigned(n as u64);
        } else if n >= i32::MIN as i64 {
            self.out.push(INTEGER_EXT);
            self.out.extend_from_slice(&(n as i32).to_be_bytes());
        } else {
            self.big(n.unsigned_abs(), true);
        }
    }

    fn big(&mut self, magnitude: u64, negative: bool) {
        let digits = magnitude.to_le_bytes();
        let len = 8 - (magnitude.leading_zeros() / 8) as usize;
        self.out
            .extend_from_slice(&[SMALL_BIG_EXT, len as u8, negative as u8]);
        self.out.extend_from_slice(&digits[..len]);
    }

    fn float(&mut self, f: f64) {
        self.out.push(NEW_FLOAT_EXT);
        self.out.extend_from_slice(&f.to_bits().to_be_bytes());
    }

    fn string(&mut self, s: &str) {
        self.binary(s.as_bytes());
    }

    /// JSON to a term: `null` is `nil`, objects are maps with binary keys.
    fn json(&mut self, value: &Value) {
        match value {
            Value::Null => self.atom("nil"),
            Value::Bool(flag) => self.atom(if *flag { "true" } else { "false" }),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => self.signed(i),
                (None, Some(u), _) => self.unsigned(u),
                (None, None, Some(f)) => self.float(f),
                (None, None, None) => self.atom("nil"),
            },
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.list(items.len());
                items.iter().for_each(|item| self.json(item));
                self.nil();
            }
            Value::Object(members) => {
                self.map(members.len());
                for (key, value) in members {
                    self.string(key);
                    self.json(value);
                }
            }
        }
    }

    /// A `client_information()` map: known fields of the documented type
    /// under their fixed atoms, the ten documented keys always present,
    /// everything else (unknown members, ill-typed known ones) under `:extra`.
    fn client_information(&mut self, info: &ClientInformation) {
        let known: Vec<(&str, Cow<Value>)> = metadata::FIELDS
            .iter()
            .filter_map(|field| match info.known(field.name) {
                Some(value) => Some((field.name, Cow::Borrowed(value))),
                None => metadata::answer_default(field.name)
                    .map(|default| (field.name, Cow::Owned(default))),
            })
            .collect();
        let extra: Vec<(&String, &Value)> = info.extra().collect();
        self.map(known.len() + usize::from(!extra.is_empty()));
        for (name, value) in &known {
            self.atom(name);
            self.json(value);
        }
        if !extra.is_empty() {
            self.atom(metadata::EXTRA);
            self.map(extra.len());
            for (key, value) in extra {
                self.string(key);
                self.json(value);
            }
        }
    }

    /// The `discover/2` result map; see the Elixir moduledoc.
    fn discovery(&mut self, found: &Discovery) {
        let text = |w: &mut Self, value: Option<&str>| match value {
            Some(s) => w.string(s),
            None => w.atom("nil"),
        };
        self.map(10);
        self.atom("server_url");
        self.string(&found.server_url);
        self.atom("resource");
        self.string(&found.resource);
        self.atom("resource_metadata");
        match &found.resource_metadata {
            Some(document) => self.json_object(document),
            None => self.atom("nil"),
        }
        self.atom("resource_metadata_url");
        text(self, found.resource_metadata_url.as_deref());
        self.atom("issuer");
        self.string(&found.issuer);
        self.atom("authorization_server");
        self.authorization_server(&found.authorization_server);
        self.atom("authorization_server_metadata");
        let source_url = match &found.authorization_server_metadata {
            MetadataSource::Discovered(url) => {
                self.atom("discovered");
                Some(url.as_str())
            }
            MetadataSource::Defaults => {
                self.atom("defaults");
                None
            }
        };
        self.atom("authorization_server_metadata_url");
        text(self, source_url);
        self.atom("scope");
        text(self, found.scope.as_deref());
        self.atom("allow_private_networks");
        self.atom(if found.allow_private_networks {
            "true"
        } else {
            "false"
        });
    }

    /// Every known member under its atom (`nil` when absent), the rest
    /// under `:extra` with string keys.
    fn authorization_server(&mut self, document: &serde_json::Map<String, Value>) {
        let known = discovery::AUTHORIZATION_SERVER_FIELDS;
        let extra: Vec<(&String, &Value)> = document
            .iter()
            .filter(|(key, _)| !known.iter().any(|(name, _)| name == key))
            .collect();
        self.map(known.len() + 1);
        for (name, _) in known {
            self.atom(name);
            self.json(document.get(*name).unwrap_or(&Value::Null));
        }
        self.atom(metadata::EXTRA);
        self.map(extra.len());
        for (key, value) in extra {
            self.string(key);
            self.json(value);
        }
    }

    fn json_object(&mut self, document: &serde_json::Map<String, Value>) {
        self.map(document.len());
        for (key, value) in document {
            self.string(key);
            self.json(value);
        }
    }

    fn discovery_reason(&mut self, error: &DiscoveryError, atoms: &dyn AtomTable) {
        match error {
            DiscoveryError::Fetch { url, cause } => {
                self.tuple(3);
                self.atom("discovery_failed");
                self.string(url);
                self.reason(cause, atoms);
            }
            DiscoveryError::InvalidMetadata { url, message } => {
                self.tagged3("invalid_metadata", url, message)
            }
            DiscoveryError::ResourceMismatch {
                resource,
                server_url,
            } => self.tagged3("resource_mismatch", resource, server_url),
            DiscoveryError::IssuerMismatch { expected, found } => {
                self.tagged3("issuer_mismatch", expected, found)
            }
            DiscoveryError::NotFound { issuer, tried } => {
                self.tuple(3);
                self.atom("authorization_server_metadata_not_found");
                self.string(issuer);
                self.list(tried.len());
                tried.iter().for_each(|url| self.string(url));
                self.nil();
            }
            DiscoveryError::UrlRefused { url, message } => {
                self.tagged3("url_refused", url, message)
            }
            DiscoveryError::InvalidWwwAuthenticate(message) => {
                self.tagged("invalid_www_authenticate", message)
            }
        }
    }

    fn tagged3(&mut self, tag: &str, first: &str, second: &str) {
        self.tuple(3);
        self.atom(tag);
        self.string(first);
        self.string(second);
    }

    fn reason(&mut self, error: &Error, atoms: &dyn AtomTable) {
        match error {
            Error::Discovery(discovery) => self.discovery_reason(discovery, atoms),
            Error::Request(request) => self.request_reason(request, atoms),
            Error::Registration { status, body } => {
                self.tuple(3);
                self.atom("registration_error");
                self.unsigned(u64::from(*status));
                self.map(body.len());
                for (key, value) in body {
                    self.string(key);
                    self.json(value);
                }
            }
            Error::Http { status, body } => {
                self.tuple(3);
                self.atom("http_error");
                self.unsigned(u64::from(*status));
                self.binary(body);
            }
            Error::CredentialsRotated { client, reason } => {
                self.tuple(3);
                self.atom("credentials_rotated");
                self.client_information(client);
                self.reason(reason, atoms);
            }
            Error::InvalidResponse(message) => self.tagged("invalid_response", message),
            Error::JsonDecode(message) => self.tagged("json_decode_error", message),
            Error::Transport(transport) => {
                self.tuple(2);
                self.atom("request_failed");
                match transport {
                    TransportError::Timeout => self.atom("timeout"),
                    TransportError::Connect(m) => self.tagged("connect", m),
                    TransportError::Tls(m) => self.tagged("tls", m),
                    TransportError::BodyTooLarge(limit) => {
                        self.tuple(2);
                        self.atom("body_too_large");
                        self.unsigned(*limit);
                    }
                    TransportError::Connection(m) => self.tagged("connection", m),
                    TransportError::CaCertFile(m) => self.tagged("cacertfile", m),
                    TransportError::Proxy(m) => self.tagged("proxy", m),
                    TransportError::Panic(m) => self.tagged("panic", m),
                }
            }
        }
    }

    fn request_reason(&mut self, error: &RequestError, atoms: &dyn AtomTable) {
        match error {
            RequestError::MissingRequiredFields(fields) => {
                self.tuple(2);
                self.atom("missing_required_fields");
                self.list(fields.len());
                fields.iter().for_each(|f| self.atom(f));
                self.nil();
            }
            RequestError::RedirectUrisMustBeList => self.atom("redirect_uris_must_be_list"),
            RequestError::InvalidRedirectUris(uris) => {
                self.tuple(2);
                self.atom("invalid_redirect_uris");
                self.list(uris.len());
                uris.iter().for_each(|u| self.string(u));
                self.nil();
            }
            RequestError::HttpsRequired => self.atom("https_required"),
            RequestError::InvalidField { field, message } => {
                self.tuple(3);
                self.atom("invalid_field");
                if field.len() < 256 && atoms.exists(field) {
                    self.atom(field);
                } else {
                    self.string(field);
                }
                self.string(message);
            }
        }
    }

    fn tagged(&mut self, tag: &str, message: &str) {
        self.tuple(2);
        self.atom(tag);
        self.string(message);
    }
}

/// `{:ok, client_information}`, `:ok` or `{:error, reason}`.
pub fn result(result: &Result<Outcome, Error>) -> Vec<u8> {
    let mut w = Writer::new();
    match result {
        Ok(Outcome::Client(info)) => {
            w.tuple(2);
            w.atom("ok");
            w.client_information(info);
        }
        Ok(Outcome::Deleted) => w.atom("ok"),
        Err(error) => {
            w.tuple(2);
            w.atom("error");
            w.reason(error, &KnownAtomsOnly);
        }
    }
    w.out
}

/// `{:ok, client_information}`, or `:error` when there is none.
pub fn lookup(info: Option<&ClientInformation>) -> Vec<u8> {
    let mut w = Writer::new();
    match info {
        Some(info) => {
            w.tuple(2);
            w.atom("ok");
            w.client_information(info);
        }
        None => w.atom("error"),
    }
    w.out
}

/// A list of `client_information()` maps.
pub fn client_list<'a>(infos: impl ExactSizeIterator<Item = &'a ClientInformation>) -> Vec<u8> {
    let mut w = Writer::new();
    w.list(infos.len());
    infos.for_each(|info| w.client_information(info));
    w.nil();
    w.out
}

/// `{:ok, discovery}` or `{:error, reason}`.
pub fn discovery(result: &Result<Discovery, Error>) -> Vec<u8> {
    let mut w = Writer::new();
    w.tuple(2);
    match result {
        Ok(found) => {
            w.atom("ok");
            w.discovery(found);
        }
        Err(error) => {
            w.atom("error");
            w.reason(error, &KnownAtomsOnly);
        }
    }
    w.out
}

/// A bare error reason.
pub fn reason(error: &Error, atoms: &dyn AtomTable) -> Vec<u8> {
    let mut w = Writer::new();
    w.reason(error, atoms);
    w.out
}

/// Any JSON value.
pub fn json(value: &Value) -> Vec<u8> {
    let mut w = Writer::new();
    w.json(value);
    w.out
}

/// The fixed atoms a reply can hold besides field names.
const REPLY_ATOMS: &[&str] = &[
    "ok",
    "error",
    "nil",
    "true",
    "false",
    "missing_required_fields",
    "redirect_uris_must_be_list",
    "invalid_redirect_uris",
    "https_required",
    "invalid_field",
    "registration_error",
    "http_error",
    "invalid_response",
    "json_decode_error",
    "request_failed",
    "timeout",
    "connect",
    "tls",
    "body_too_large",
    "connection",
    "cacertfile",
    "proxy",
    "panic",
    // discover/2 results and reasons.
    "server_url",
    "resource",
    "resource_metadata",
    "resource_metadata_url",
    "authorization_server",
    "authorization_server_metadata",
    "authorization_server_metadata_url",
    "allow_private_networks",
    "discovered",
    "defaults",
    "discovery_failed",
    "invalid_metadata",
    "resource_mismatch",
    "issuer_mismatch",
    "authorization_server_metadata_not_found",
    "url_refused",
    "invalid_www_authenticate",
    "credentials_rotated",
];

/// Every atom a reply can hold. The NIF creates them all when it loads, so
/// that `binary_to_term(reply, [:safe])` never needs to create one.
pub fn reply_atom_names() -> impl Iterator<Item = &'static str> {
    metadata::FIELDS
        .iter()
        .map(|f| f.name)
        .chain([metadata::REGISTRATION_ENDPOINT, metadata::EXTRA])
        .chain(REPLY_ATOMS.iter().copied())
        .chain(
            discovery::AUTHORIZATION_SERVER_FIELDS
                .iter()
                .map(|(name, _)| *name),
        )
}
