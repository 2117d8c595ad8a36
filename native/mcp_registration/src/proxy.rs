//! The `proxy` option: which HTTP proxy a call goes through.
//!
//! - Plain `http` targets are sent to the proxy in absolute form
//!   (RFC 9112 §3.2.2); `https` targets go through a `CONNECT` tunnel
//!   (RFC 9110 §9.3.6), so TLS stays end to end.
//! - Credentials in the proxy URL (`http://user:pass@proxy:3128`) are sent as
//!   `Proxy-Authorization: Basic` (RFC 9110 §11.7.1, RFC 7617). They never
//!   appear in a `Debug` output, an error or a log line.
//! - Environment variables (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`,
//!   `NO_PROXY`) are ignored unless the setting is [`ProxySetting::System`].
//! - A proxy's refusal is `TransportError::Proxy`: a `CONNECT` answered with
//!   anything but 2xx, or a 407 (RFC 9110 §15.5.8, sent only by proxies).

use std::fmt;
use std::hash::{Hash, Hasher};

use url::Url;

use crate::error::TransportError;

/// Where a call's connections go.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub enum ProxySetting {
    /// Straight to the server; environment variables are ignored.
    #[default]
    Direct,
    /// The proxy the environment variables name, read when a pool is made.
    /// A change of those variables makes a new pool.
    System,
    /// This proxy.
    Url(ProxyUrl),
}

impl fmt::Debug for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct => f.write_str("Direct"),
            Self::System => f.write_str("System"),
            Self::Url(url) => write!(f, "Url({url:?})"),
        }
    }
}

/// An `http://` or `https://` proxy URL, possibly with credentials.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyUrl(Url);

impl ProxyUrl {
    /// Checks a proxy URL. The message never quotes it: it may hold a
    /// password.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = Url::parse(text).map_err(|_| "must be an absolute URL".to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http:// or https:// URL".into());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host".into());
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err("must have no path, query or fragment".into());
        }
        Ok(Self(url))
    }

    /// The URL without credentials, for messages.
    pub fn redacted(&self) -> String {
        let credentials = if self.0.username().is_empty() && self.0.password().is_none() {
            ""
        } else {
            "<credentials>@"
        };
        let port = self.0.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{credentials}{}{port}",
            self.0.scheme(),
            self.0.host_str().unwrap_or_default()
        )
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({:?})", self.redacted())
    }
}

/// The environment variables a system proxy is read from (reqwest's list).
const ENVIRONMENT: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "REQUEST_METHOD",
];

/// A digest of the proxy environment, so that a pool made for one set of
/// variables is not used after they change.
pub(crate) fn environment_digest() -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for name in ENVIRONMENT {
        std::env::var_os(name).hash(&mut hasher);
    }
    hasher.finish()
}

impl ProxySetting {
    pub(crate) fn apply(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, TransportError> {
        Ok(match self {
            Self::Direct => builder.no_proxy(),
            // reqwest reads the environment when the client is built.
            Self::System => builder,
            Self::Url(url) => {
                // reqwest takes the credentials out of the URL and sends them
                // as Proxy-Authorization.
                let proxy = reqwest::Proxy::all(url.0.as_str()).map_err(|_| {
                    TransportError::Proxy(format!("{} cannot be used", url.redacted()))
                })?;
                builder.no_proxy().proxy(proxy)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_are_checked_and_never_shown_with_credentials() {
        let url = ProxyUrl::parse("http://alice:s3cr3t@proxy.example:3128").unwrap();
        let shown = format!("{:?}", ProxySetting::Url(url.clone()));
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("alice"),
            "{shown}"
        );
        assert_eq!(url.redacted(), "http://<credentials>@proxy.example:3128");
        assert!(ProxyUrl::parse("https://proxy.example").is_ok());
        for bad in [
            "socks5://alice:s3cr3t@proxy.example:1080",
            "proxy.example:3128",
            "http://alice:s3cr3t@proxy.example:3128/path",
            "http://proxy.example:3128/?q=1",
        ] {
            let message = ProxyUrl::parse(bad).unwrap_err();
            assert!(!message.contains("s3cr3t") && !message.contains("proxy.example"));
        }
    }
}
