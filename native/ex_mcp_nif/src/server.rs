//! The embedded registration server as a NIF resource.
//!
//! `server_start` binds the socket synchronously (quick) and spawns the
//! server on the global tokio runtime; nothing waits on the runtime. The
//! resource monitors the process that started it: the server stops when
//! that process exits (the `down` callback) or when the resource is garbage
//! collected (`Drop` of `RunningServer`), whichever comes first.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::etf;
use mcp_registration::server::{
    self, ClientIdDocuments, ProtectedResource, RunningServer, ServerConfig, ServerError,
};
use rustler::types::atom::Atom;
use rustler::types::map::map_new;
use rustler::{
    Binary, Encoder, Env, LocalPid, Monitor, NewBinary, NifResult, Resource, ResourceArc, Term,
};

use crate::atoms;
use crate::convert;
use crate::runtime::runtime;

/// How long `server_stop` waits for the listener and connections to close.
const STOP_WAIT: Duration = Duration::from_secs(5);

pub struct ServerResource {
    server: RunningServer,
}

#[rustler::resource_impl]
impl Resource for ServerResource {
    /// The owning process exited: stop serving at once, even if other
    /// processes still hold the resource.
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _monitor: Monitor) {
        self.server.shutdown();
    }
}

/// `server_start(config)`: `{:ok, resource}` or `{:error, reason}`.
#[rustler::nif]
fn server_start<'a>(env: Env<'a>, config: Term<'a>) -> NifResult<Term<'a>> {
    let config = match server_config(env, config) {
        Ok(config) => config,
        Err(reason) => return Ok((atoms::error(), reason).encode(env)),
    };
    Ok(match server::start_on(runtime().handle(), config) {
        Ok(server) => {
            let resource = ResourceArc::new(ServerResource { server });
            // The caller is running this NIF, so it is alive and the monitor
            // is always set.
            let _ = env.monitor(&resource, &env.pid());
            (atoms::ok(), resource).encode(env)
        }
        Err(error) => (atoms::error(), start_error(env, &error)).encode(env),
    })
}

/// `server_stop(resource)`: asks the server to stop and waits, on a dirty
/// I/O scheduler, until its listener and connections are closed. `:ok`, or
/// `{:error, :timeout}` if that took longer than five seconds.
#[rustler::nif(schedule = "DirtyIo")]
fn server_stop(env: Env, resource: ResourceArc<ServerResource>) -> Term {
    let handle = resource.server.shutdown_handle();
    handle.shutdown();
    if handle.wait_stopped(STOP_WAIT) {
        atoms::ok().encode(env)
    } else {
        (atoms::error(), atoms::timeout()).encode(env)
    }
}

/// `server_info(resource)`: `%{base_url: url, registration_endpoint: url,
/// port: port, resource: url | nil}`.
#[rustler::nif]
fn server_info(env: Env, resource: ResourceArc<ServerResource>) -> NifResult<Term> {
    let server = &resource.server;
    let info = map_new(env)
        .map_put(atoms::base_url(), server.base_url())?
        .map_put(
            atoms::registration_endpoint(),
            server.registration_endpoint(),
        )?
        .map_put(atoms::port(), server.local_addr().port())?
        .map_put(atoms::resource(), server.resource())?;
    Ok(info)
}

/// `server_lookup(resource, client_id)`: `{:ok, client_information}` or
/// `:error`, as ETF bytes. A stored client can be as large as the server's
/// `max_body_bytes`: copying and encoding it runs on a dirty scheduler, and
/// the caller decodes it with `Native.decode/1` (see `budget`).
#[rustler::nif(schedule = "DirtyCpu")]
fn server_lookup<'a>(
    env: Env<'a>,
    resource: ResourceArc<ServerResource>,
    client_id: Binary<'a>,
) -> Term<'a> {
    let found = std::str::from_utf8(client_id.as_slice())
        .ok()
        .and_then(|id| resource.server.store().lookup(id));
    Term::from(NewBinary::from_slice(env, &etf::lookup(found.as_ref())))
}

/// `server_list(resource)`: every client's information, by issue time then id. On a
/// dirty scheduler: a store of many thousands of clients is a large term.
#[rustler::nif(schedule = "DirtyCpu")]
fn server_list(env: Env, resource: ResourceArc<ServerResource>) -> Term {
    let clients = resource.server.store().list();
    convert::from_etf(env, &etf::client_list(clients.iter()))
}

/// `server_count(resource)`: how many clients are registered.
#[rustler::nif]
fn server_count(resource: ResourceArc<ServerResource>) -> usize {
    resource.server.store().count()
}

/// `server_check_config(config)`: `:ok`, or `{:error, {:invalid_option,
/// key, message}}` for the first option `server_start` would refuse. The
/// Elixir module calls it in the caller's process, so that a bad option is
/// an `ArgumentError` there; this reader is the one place options are
/// checked.
#[rustler::nif]
fn server_check_config<'a>(env: Env<'a>, config: Term<'a>) -> Term<'a> {
    match server_config(env, config) {
        Ok(_) => atoms::ok().encode(env),
        Err(reason) => (atoms::error(), reason).encode(env),
    }
}

/// `server_defaults()`: what an absent option means (`ServerConfig::default()`),
/// for the Elixir module's documentation test.
#[rustler::nif]
fn server_defaults(env: Env) -> Term {
    let defaults = ServerConfig::default();
    let pairs = [
        (atoms::ip(), defaults.bind.ip().to_string().encode(env)),
        (atoms::port(), defaults.bind.port().encode(env)),
        (
            atoms::rotate_registration_access_token(),
            defaults.rotate_registration_access_token.encode(env),
        ),
        (
            atoms::client_secret_expires_in(),
            defaults
                .client_secret_ttl
                .map_or(0, |ttl| ttl.as_secs())
                .encode(env),
        ),
        (atoms::max_body_bytes(), defaults.max_body_bytes.encode(env)),
    ];
    Term::map_from_pairs(env, &pairs.map(|(k, v)| (k.encode(env), v))).expect("distinct keys")
}

/// Reads and checks the configuration map the Elixir module built:
/// `ip` (a string), `port`, `initial_access_token` (string or nil),
/// `rotate_registration_access_token`, `client_secret_expires_in` (seconds,
/// 0 for never), `max_body_bytes`, `protected_resource` (a map: `resource`,
/// `scopes_supported`, `resource_name`) and `client_id_metadata_documents`
/// (a map: `allow_loopback`, `fetch_timeout` in ms, `max_document_bytes`,
/// `cacertfile`). Absent keys keep the defaults.
fn server_config<'a>(env: Env<'a>, term: Term<'a>) -> Result<ServerConfig, Term<'a>> {
    let mut config = ServerConfig::default();
    let get = |key: Atom| {
        term.map_get(key)
            .ok()
            .filter(|v| *v != atoms::nil().to_term(env))
    };
    let invalid = |key: Atom, message: &str| convert::invalid_option(env, key, message);

    let ip = match get(atoms::ip()) {
        Some(ip) => string(ip)
            .and_then(|s| s.parse::<IpAddr>().ok())
            .ok_or_else(|| invalid(atoms::ip(), "must be an IP address"))?,
        None => config.bind.ip(),
    };
    let port = match get(atoms::port()) {
        // Through u64: rustler's u16 decoder wraps 70_000 around.
        Some(port) => port
            .decode::<u64>()
            .ok()
            .and_then(|port| u16::try_from(port).ok())
            .ok_or_else(|| invalid(atoms::port(), "must be an integer from 0 to 65535"))?,
        None => config.bind.port(),
    };
    config.bind = SocketAddr::new(ip, port);
    if let Some(token) = get(atoms::initial_access_token()) {
        // The token's value is never echoed back, only named.
        let token = string(token)
            .filter(|token| mcp_registration::token::is_token(token))
            .ok_or_else(|| {
                invalid(
                    atoms::initial_access_token(),
                    "must be a non-empty string of visible ASCII characters without spaces",
                )
            })?;
        config.require_initial_access_token = Some(token);
    }
    if let Some(flag) = get(atoms::rotate_registration_access_token()) {
        config.rotate_registration_access_token = flag.decode().map_err(|_| {
            invalid(
                atoms::rotate_registration_access_token(),
                "must be a boolean",
            )
        })?;
    }
    if let Some(seconds) = get(atoms::client_secret_expires_in()) {
        let seconds: u64 = seconds.decode().map_err(|_| {
            invalid(
                atoms::client_secret_expires_in(),
                "must be a non-negative integer (seconds, 0 for never)",
            )
        })?;
        config.client_secret_ttl = (seconds > 0).then(|| Duration::from_secs(seconds));
    }
    if let Some(bytes) = get(atoms::max_body_bytes()) {
        config.max_body_bytes = bytes
            .decode::<usize>()
            .ok()
            .filter(|b| *b > 0)
            .ok_or_else(|| invalid(atoms::max_body_bytes(), "must be a positive integer"))?;
    }
    if let Some(resource) = get(atoms::protected_resource()) {
        config.protected_resource = Some(protected_resource(env, resource)?);
    }
    if let Some(documents) = get(atoms::client_id_metadata_documents()) {
        config.client_id_metadata_documents = Some(client_id_documents(env, documents)?);
    }
    Ok(config)
}

fn protected_resource<'a>(env: Env<'a>, term: Term<'a>) -> Result<ProtectedResource, Term<'a>> {
    let invalid =
        |message: &str| convert::invalid_option(env, atoms::protected_resource(), message);
    let get = |key: Atom| {
        term.map_get(key)
            .ok()
            .filter(|v| *v != atoms::nil().to_term(env))
    };
    let resource = get(atoms::resource())
        .and_then(string)
        .ok_or_else(|| invalid("resource must be a URL or a path string"))?;
    let scopes_supported = match get(atoms::scopes_supported()) {
        Some(scopes) => scopes
            .decode::<Vec<String>>()
            .map_err(|_| invalid("scopes_supported must be a list of strings"))?,
        None => Vec::new(),
    };
    let resource_name = match get(atoms::resource_name()) {
        Some(name) => Some(string(name).ok_or_else(|| invalid("resource_name must be a string"))?),
        None => None,
    };
    Ok(ProtectedResource {
        resource,
        scopes_supported,
        resource_name,
    })
}

fn client_id_documents<'a>(env: Env<'a>, term: Term<'a>) -> Result<ClientIdDocuments, Term<'a>> {
    let invalid = |message: &str| {
        convert::invalid_option(env, atoms::client_id_metadata_documents(), message)
    };
    let get = |key: Atom| {
        term.map_get(key)
            .ok()
            .filter(|v| *v != atoms::nil().to_term(env))
    };
    let mut documents = ClientIdDocuments::default();
    if let Some(flag) = get(atoms::allow_loopback()) {
        documents.allow_loopback = flag
            .decode()
            .map_err(|_| invalid("allow_loopback must be a boolean"))?;
    }
    if let Some(ms) = get(atoms::fetch_timeout()) {
        let ms: u64 = ms
            .decode()
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| invalid("fetch_timeout must be a positive integer (ms)"))?;
        documents.fetch_timeout = Duration::from_millis(ms);
    }
    if let Some(bytes) = get(atoms::max_document_bytes()) {
        documents.max_document_bytes = bytes
            .decode::<u64>()
            .ok()
            .filter(|b| *b > 0)
            .ok_or_else(|| invalid("max_document_bytes must be a positive integer"))?;
    }
    if let Some(path) = get(atoms::cacertfile()) {
        let path = string(path).ok_or_else(|| invalid("cacertfile must be a path string"))?;
        documents.cacertfile = Some(PathBuf::from(path));
    }
    Ok(documents)
}

fn string(term: Term) -> Option<String> {
    let binary = Binary::from_term(term).ok()?;
    std::str::from_utf8(binary.as_slice())
        .ok()
        .map(str::to_owned)
}

/// `:eaddrinuse`, `:eaddrnotavail` and `:eacces` as `:gen_tcp` names them;
/// `{:bind_failed, message}` or `{:invalid_config, message}` otherwise.
fn start_error<'a>(env: Env<'a>, error: &ServerError) -> Term<'a> {
    match error {
        ServerError::Bind { source, .. } => match source.kind() {
            ErrorKind::AddrInUse => atoms::eaddrinuse().encode(env),
            ErrorKind::AddrNotAvailable => atoms::eaddrnotavail().encode(env),
            ErrorKind::PermissionDenied => atoms::eacces().encode(env),
            _ => (atoms::bind_failed(), error.to_string()).encode(env),
        },
        ServerError::InvalidConfig(message) => {
            (atoms::invalid_config(), message.as_str()).encode(env)
        }
        ServerError::NoRuntime => (atoms::invalid_config(), error.to_string()).encode(env),
    }
}
