//! Where discovery may send requests. Discovery follows URLs that other
//! servers chose (RFC 9728 `authorization_servers`, RFC 8414 endpoints, the
//! `resource_metadata` of a `WWW-Authenticate` challenge), so, following the
//! MCP authorization specification's security considerations (2025-11-25,
//! "Communication Security", SSRF) and OAuth 2.1 §1.5:
//!
//! - a learned URL must be https; plain http is allowed only to a loopback
//!   host, and only when the URL the caller started from is itself loopback;
//! - a learned URL whose host is, or resolves to, a loopback, private
//!   (RFC 1918), link-local (RFC 3927, RFC 4291), unique-local (RFC 4193),
//!   CGNAT (RFC 6598), unspecified, other special-purpose (RFC 6890) or
//!   cloud-metadata address is refused, unless the caller allows private
//!   networks; loopback is allowed when the start URL is loopback;
//! - the name is resolved once, by [`GuardedResolver`] inside the HTTP
//!   client, and only the addresses that passed the check are handed to the
//!   connector: the address checked is the address connected to, with no
//!   second lookup an attacker's DNS could answer differently (rebinding).
//!
//! URLs on the start URL's own origin are the caller's choice and are not
//! filtered. IP literals never reach a resolver and are checked directly.
//!
//! Through a proxy (`:proxy`), the proxy resolves the target's name, and the
//! HTTP client's resolver only ever sees the proxy's own host (which may
//! well be on a private network). So a guarded name is then resolved and
//! checked here before the request, and sent through the proxy by name: the
//! proxy resolves it again, which leaves a rebinding window that only the
//! proxy's own egress rules can close.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use once_cell::sync::Lazy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::client::Options;
use crate::error::{DiscoveryError, Error};
use crate::pool::{self, SharedResolver};
use crate::proxy::ProxySetting;
use crate::uri;

/// Which special addresses a guarded connection may reach. It is part of the
/// connection pool's key: each policy has its own HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressPolicy {
    pub allow_loopback: bool,
    pub allow_private: bool,
}

/// The guard for one discovery run, built from the URL the caller started
/// from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetGuard {
    start_origin: url::Origin,
    start_is_loopback: bool,
    allow_private: bool,
}

/// Why a URL or an address was refused. Never holds a secret: only a URL's
/// host and an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl NetGuard {
    pub fn new(start: &Url, allow_private_networks: bool) -> Self {
        Self {
            start_origin: start.origin(),
            start_is_loopback: start.host().is_some_and(uri::is_loopback_host),
            allow_private: allow_private_networks,
        }
    }

    /// [`NetGuard::new`] from the start URL's text.
    pub fn parse(start: &str, allow_private_networks: bool) -> Option<Self> {
        Url::parse(start)
            .ok()
            .map(|url| Self::new(&url, allow_private_networks))
    }

    fn policy(&self) -> AddressPolicy {
        AddressPolicy {
            allow_loopback: self.start_is_loopback || self.allow_private,
            allow_private: self.allow_private,
        }
    }

    /// Checks a URL before any request. `Ok(None)`: the URL is on the start
    /// origin, connect as usual. `Ok(Some(policy))`: connect through a
    /// resolver that enforces `policy`.
    pub fn check(&self, url: &Url) -> Result<Option<AddressPolicy>, Refused> {
        if url.origin() == self.start_origin {
            return Ok(None);
        }
        let host = url
            .host()
            .ok_or_else(|| Refused("the URL has no host".into()))?;
        let loopback_host = uri::is_loopback_host(host.clone());
        match url.scheme() {
            "https" => {}
            "http" if loopback_host && self.start_is_loopback => {}
            "http" if loopback_host => {
                return Err(Refused(
                    "plain http to a loopback host is allowed only when discovery started from a loopback URL"
                        .into(),
                ))
            }
            "http" => {
                return Err(Refused(
                    "a URL learned during discovery must use https".into(),
                ))
            }
            other => return Err(Refused(format!("the scheme {other:?} is not http(s)"))),
        }
        let policy = self.policy();
        let literal = match host {
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            Host::Domain(_) => None,
        };
        if let Some(ip) = literal {
            policy.check(ip).map_err(|category| {
                Refused(format!(
                    "{ip} is a {category} address (allow_private_networks is off)"
                ))
            })?;
        }
        Ok(Some(policy))
    }
}

impl AddressPolicy {
    /// `Err(category)` when `ip` may not be reached under this policy.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        match classify(ip) {
            None => Ok(()),
            Some(Category::Loopback) if self.allow_loopback => Ok(()),
            Some(_) if self.allow_private => Ok(()),
            Some(category) => Err(category.name()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Loopback,
    Private,
    LinkLocal,
    UniqueLocal,
    Cgnat,
    Unspecified,
    CloudMetadata,
    SpecialPurpose,
}

impl Category {
    fn name(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::UniqueLocal => "unique-local",
            Self::Cgnat => "carrier-grade NAT",
            Self::Unspecified => "unspecified",
            Self::CloudMetadata => "cloud metadata",
            Self::SpecialPurpose => "special-purpose",
        }
    }
}

/// Cloud instance metadata services that sit on otherwise public or
/// otherwise-classified addresses: AWS/GCP/Azure/OpenStack (169.254.169.254),
/// AWS over IPv6 (fd00:ec2::254), Azure's wire server (168.63.129.16),
/// Alibaba Cloud (100.100.100.200).
const CLOUD_METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(168, 63, 129, 16),
    Ipv4Addr::new(100, 100, 100, 200),
];
const CLOUD_METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

fn classify(ip: IpAddr) -> Option<Category> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Category> {
    let [a, b, c, _] = ip.octets();
    if CLOUD_METADATA_V4.contains(&ip) {
        Some(Category::CloudMetadata)
    } else if ip.is_loopback() {
        Some(Category::Loopback)
    } else if a == 0 {
        Some(Category::Unspecified)
    } else if ip.is_private() {
        Some(Category::Private)
    } else if ip.is_link_local() {
        Some(Category::LinkLocal)
    } else if a == 100 && (64..128).contains(&b) {
        Some(Category::Cgnat)
    } else if (a == 192 && b == 0 && c == 0)   // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19))  // benchmarking
        || a >= 224
    // multicast, reserved, broadcast
    {
        Some(Category::SpecialPurpose)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Category> {
    // IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) reach the
    // embedded IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let segments = ip.segments();
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    if CLOUD_METADATA_V6.contains(&ip) {
        Some(Category::CloudMetadata)
    } else if ip.is_loopback() {
        Some(Category::Loopback)
    } else if ip.is_unspecified() {
        Some(Category::Unspecified)
    } else if segments[0] & 0xffc0 == 0xfe80 {
        Some(Category::LinkLocal)
    } else if segments[0] & 0xfe00 == 0xfc00 {
        Some(Category::UniqueLocal)
    } else if segments[0] & 0xffc0 == 0xfec0 {
        // Deprecated site-local (RFC 3879): private in practice.
        Some(Category::Private)
    } else if segments[0] & 0xff00 == 0xff00 {
        Some(Category::SpecialPurpose)
    } else {
        None
    }
}

type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// How a name becomes addresses; replaceable so tests can inject answers.
pub type Lookup = Arc<dyn Fn(String) -> LookupFuture + Send + Sync>;

/// The system resolver (getaddrinfo on tokio's blocking pool).
pub fn system_lookup() -> Lookup {
    Arc::new(|name: String| {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((name.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    })
}

/// A `reqwest` resolver that drops the addresses `policy` refuses. If none
/// is left, resolving fails with [`Refused`], which the client reports as a
/// refusal, not a connection failure.
pub struct GuardedResolver {
    policy: AddressPolicy,
    lookup: Lookup,
}

impl GuardedResolver {
    pub fn new(policy: AddressPolicy, lookup: Lookup) -> Self {
        Self { policy, lookup }
    }

    /// The resolver's check, without reqwest's types around it.
    pub async fn resolve_checked(&self, name: &str) -> Result<Vec<IpAddr>, Refused> {
        let found = (self.lookup)(name.to_owned())
            .await
            .map_err(|e| Refused(format!("cannot resolve {name}: {e}")))?;
        let mut refused = None;
        let allowed: Vec<IpAddr> = found
            .iter()
            .copied()
            .filter(|ip| match self.policy.check(*ip) {
                Ok(()) => true,
                Err(category) => {
                    refused.get_or_insert((*ip, category));
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (false, _) => Ok(allowed),
            (true, Some((ip, category))) => Err(Refused(format!(
                "{name} resolves to {ip}, a {category} address (allow_private_networks is off)"
            ))),
            (true, None) => Err(Refused(format!("{name} has no address"))),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = GuardedResolver {
            policy: self.policy,
            lookup: Arc::clone(&self.lookup),
        };
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let allowed = this.resolve_checked(&name).await?;
            let addrs: Addrs = Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The pooled HTTP client to use for `url` under `options.guard`: the
/// plain pool for unguarded URLs, a pool whose resolver enforces the
/// address policy for guarded ones (see the module comment for proxies).
pub(crate) async fn http_client(options: &Options, url: &Url) -> Result<reqwest::Client, Error> {
    let client = match options.address_policy(url)? {
        None => pool::http_client(options).await?,
        Some(policy) if options.proxy == ProxySetting::Direct => {
            pool::http_client_with(options, Some(shared_resolver(policy))).await?
        }
        Some(policy) => {
            if let Some(Host::Domain(name)) = url.host() {
                GuardedResolver::new(policy, system_lookup())
                    .resolve_checked(name)
                    .await
                    .map_err(|refused| refusal(url, refused))?;
            }
            pool::http_client(options).await?
        }
    };
    Ok(client)
}

/// One resolver per policy, shared, so that the pools (keyed by resolver
/// identity) stay few.
pub(crate) fn shared_resolver(policy: AddressPolicy) -> SharedResolver {
    static RESOLVERS: Lazy<[SharedResolver; 4]> = Lazy::new(|| {
        [(false, false), (false, true), (true, false), (true, true)].map(
            |(allow_loopback, allow_private)| {
                SharedResolver(Arc::new(GuardedResolver::new(
                    AddressPolicy {
                        allow_loopback,
                        allow_private,
                    },
                    system_lookup(),
                )))
            },
        )
    });
    RESOLVERS[usize::from(policy.allow_loopback) * 2 + usize::from(policy.allow_private)].clone()
}

/// `{:url_refused, url, message}`.
pub(crate) fn refusal(url: &Url, refused: Refused) -> Error {
    DiscoveryError::UrlRefused {
        url: url.to_string(),
        message: refused.0,
    }
    .into()
}

/// Finds a [`Refused`] in an error's causes.
pub fn find_refusal(err: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut next = Some(err);
    while let Some(current) = next {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        next = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const CLOSED: AddressPolicy = AddressPolicy {
        allow_loopback: false,
        allow_private: false,
    };

    #[test]
    fn special_addresses_are_classified() {
        for (addr, category) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("169.254.169.254", "cloud metadata"),
            ("fd00:ec2::254", "cloud metadata"),
            ("168.63.129.16", "cloud metadata"),
            ("100.100.100.200", "cloud metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "cloud metadata"),
            ("255.255.255.255", "special-purpose"),
            ("224.0.0.1", "special-purpose"),
        ] {
            assert_eq!(CLOSED.check(ip(addr)), Err(category), "{addr}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert_eq!(CLOSED.check(ip(public)), Ok(()), "{public}");
        }
        let loopback_only = AddressPolicy {
            allow_loopback: true,
            allow_private: false,
        };
        assert_eq!(loopback_only.check(ip("127.0.0.1")), Ok(()));
        assert!(loopback_only.check(ip("10.0.0.1")).is_err());
    }

    #[test]
    fn learned_urls_need_https_and_public_literals() {
        let remote = NetGuard::new(&Url::parse("https://mcp.example.com/mcp").unwrap(), false);
        let check = |s: &str| remote.check(&Url::parse(s).unwrap());
        assert_eq!(check("https://mcp.example.com/other"), Ok(None));
        assert_eq!(check("https://as.example.com/"), Ok(Some(CLOSED)));
        assert!(check("http://as.example.com/").is_err());
        assert!(check("http://127.0.0.1:9000/").is_err());
        assert!(check("https://127.0.0.1:9000/").is_err());
        assert!(check("https://[::1]/").is_err());
        assert!(check("https://169.254.169.254/latest").is_err());
        assert!(check("https://[::ffff:192.168.0.1]/").is_err());

        let local = NetGuard::new(&Url::parse("http://127.0.0.1:4000/mcp").unwrap(), false);
        let check = |s: &str| local.check(&Url::parse(s).unwrap());
        assert!(check("http://127.0.0.1:5000/").is_ok());
        assert!(check("http://localhost:5000/").is_ok());
        assert!(check("https://10.0.0.1/").is_err());
        assert!(check("http://as.example.com/").is_err());

        let open = NetGuard::new(&Url::parse("https://mcp.example.com/").unwrap(), true);
        assert!(open
            .check(&Url::parse("https://10.0.0.1/").unwrap())
            .is_ok());
    }

    #[tokio::test]
    async fn through_a_proxy_a_guarded_name_is_checked_before_the_request() {
        // The proxy would resolve the name, so the check happens here; the
        // proxy (an unused port) is never contacted.
        let start = Url::parse("https://mcp.example.com/mcp").unwrap();
        let options = Options {
            guard: Some(NetGuard::new(&start, false)),
            proxy: ProxySetting::Url(crate::proxy::ProxyUrl::parse("http://127.0.0.1:9").unwrap()),
            ..Options::default()
        };
        let learned =
            Url::parse("https://localhost:8443/.well-known/oauth-authorization-server").unwrap();
        let err = http_client(&options, &learned).await.unwrap_err();
        assert!(
            matches!(&err, Error::Discovery(DiscoveryError::UrlRefused { message, .. })
                if message.contains("localhost resolves to") && message.contains("loopback")),
            "{err:?}"
        );
    }

    fn fixed(answer: Vec<IpAddr>) -> Lookup {
        Arc::new(move |_name| {
            let answer = answer.clone();
            Box::pin(async move { Ok(answer) })
        })
    }

    #[tokio::test]
    async fn the_resolver_hands_over_only_checked_addresses() {
        // A public name that resolves to 127.0.0.1 when discovery did not
        // start on loopback: refused before any connection.
        let resolver = GuardedResolver::new(CLOSED, fixed(vec![ip("127.0.0.1")]));
        let err = resolver
            .resolve_checked("as.example.com")
            .await
            .unwrap_err();
        assert!(err.0.contains("127.0.0.1, a loopback address"), "{err}");

        let mixed = GuardedResolver::new(CLOSED, fixed(vec![ip("10.0.0.7"), ip("93.184.216.34")]));
        assert_eq!(
            mixed.resolve_checked("as.example.com").await.unwrap(),
            vec![ip("93.184.216.34")]
        );

        let open = GuardedResolver::new(
            AddressPolicy {
                allow_loopback: true,
                allow_private: true,
            },
            fixed(vec![ip("10.0.0.7")]),
        );
        assert_eq!(
            open.resolve_checked("x").await.unwrap(),
            vec![ip("10.0.0.7")]
        );
    }
}
