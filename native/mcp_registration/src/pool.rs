//! Connection pools: one `reqwest::Client` per distinct TLS and connect
//! configuration, shared by every call that uses it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use once_cell::sync::Lazy;

use crate::client::Options;
use crate::error::TransportError;
use crate::transport::error_chain;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    cacertfile: Option<PathBuf>,
    connect_timeout: Duration,
}

/// Connection pools, one per distinct TLS and connect configuration; the
/// default options all share one.
static POOLS: Lazy<Mutex<HashMap<PoolKey, reqwest::Client>>> = Lazy::new(Default::default);

pub(crate) fn http_client(options: &Options) -> Result<reqwest::Client, TransportError> {
    let key = PoolKey {
        cacertfile: options.cacertfile.clone(),
        connect_timeout: options.connect_timeout,
    };
    let mut pools = POOLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(client) = pools.get(&key) {
        return Ok(client.clone());
    }
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(key.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60));
    if let Some(path) = &key.cacertfile {
        let pem = std::fs::read(path)
            .map_err(|e| TransportError::CaCertFile(format!("{}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| TransportError::CaCertFile(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(TransportError::CaCertFile(format!(
                "{}: no PEM certificate found",
                path.display()
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(|e| {
        TransportError::Connect(format!("cannot build the HTTP client: {}", error_chain(&e)))
    })?;
    pools.insert(key, client.clone());
    Ok(client)
}
