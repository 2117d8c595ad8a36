//! URL rules shared by the client and the embedded server: which redirect
//! URIs are acceptable (RFC 7591 §2, RFC 8252 §7, OAuth 2.1 §2.3.1), and which
//! endpoints may be called without TLS.

use std::net::IpAddr;

use url::{Host, Url};

/// Schemes that can run code or read local files when a browser follows them.
const DANGEROUS_SCHEMES: &[&str] = &["javascript", "data", "vbscript", "file"];

/// Why a redirect URI was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectUriProblem {
    NotAbsolute,
    HasFragment,
    DangerousScheme,
    HttpNotLoopback,
    MissingHost,
    NotReverseDomainScheme,
}

impl RedirectUriProblem {
    pub fn describe(&self) -> &'static str {
        match self {
            Self::NotAbsolute => "is not an absolute URI",
            Self::HasFragment => "must not contain a fragment",
            Self::DangerousScheme => "uses a forbidden scheme (javascript, data, vbscript or file)",
            Self::HttpNotLoopback => "uses http on a host that is not loopback; use https",
            Self::MissingHost => "has no host",
            Self::NotReverseDomainScheme => {
                "uses a private-use scheme that is not a reverse domain name such as com.example.app (RFC 8252 §7.1)"
            }
        }
    }
}

/// `localhost`, `127.0.0.0/8` or `[::1]`.
pub fn is_loopback_host(host: Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => IpAddr::V4(ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(ip).is_loopback(),
    }
}

fn is_loopback_url(url: &Url) -> bool {
    url.host().is_some_and(is_loopback_host)
}

/// Whether `raw` is an absolute URL whose host is a loopback host, by
/// [`is_loopback_host`]'s rule.
pub fn names_loopback_host(raw: &str) -> bool {
    Url::parse(raw).is_ok_and(|url| is_loopback_url(&url))
}

/// Checks one redirect URI. Accepted: https with a host; http on a loopback
/// host (RFC 8252 §7.3); a private-use scheme for native apps (RFC 8252 §7.1,
/// e.g. `com.example.app:/cb`).
pub fn check_redirect_uri(raw: &str) -> Result<(), RedirectUriProblem> {
    let url = Url::parse(raw).map_err(|_| RedirectUriProblem::NotAbsolute)?;
    if url.fragment().is_some() {
        return Err(RedirectUriProblem::HasFragment);
    }
    match url.scheme() {
        s if DANGEROUS_SCHEMES.contains(&s) => Err(RedirectUriProblem::DangerousScheme),
        "https" if url.host().is_none() => Err(RedirectUriProblem::MissingHost),
        "https" => Ok(()),
        "http" if is_loopback_url(&url) => Ok(()),
        "http" => Err(RedirectUriProblem::HttpNotLoopback),
        _ => Ok(()),
    }
}

/// RFC 8252 §7.1: a private-use scheme is "based on a domain name under
/// their control, expressed in reverse order", so it holds a period
/// (`com.example.app:/cb`, not `myapp:/cb`). http(s) URIs pass. The embedded
/// server enforces this; the client leaves the judgement to the server it
/// registers with, since MCP clients in use register schemes such as
/// `cursor://`.
pub fn check_native_scheme(raw: &str) -> Result<(), RedirectUriProblem> {
    match Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        Ok(url) if url.scheme().contains('.') => Ok(()),
        Ok(_) => Err(RedirectUriProblem::NotReverseDomainScheme),
        Err(_) => Err(RedirectUriProblem::NotAbsolute),
    }
}

/// SEP-837: a redirect URI that only a native app can receive.
pub fn is_native_redirect(raw: &str) -> bool {
    match Url::parse(raw) {
        Ok(url) => !matches!(url.scheme(), "http" | "https") || is_loopback_url(&url),
        Err(_) => false,
    }
}

/// An absolute http(s) URL with a host (`client_uri`, `logo_uri`, ...).
pub fn is_web_url(raw: &str) -> bool {
    Url::parse(raw).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// Why an endpoint may not be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointProblem {
    /// Not an absolute http(s) URL.
    Invalid(&'static str),
    /// Plain http to a host that is not loopback (OAuth 2.1 §1.5).
    HttpsRequired,
}

/// Checks a registration endpoint or registration client URI: https, or
/// http on a loopback host. Nothing is sent anywhere else.
pub fn check_endpoint(raw: &str) -> Result<Url, EndpointProblem> {
    let url = Url::parse(raw)
        .map_err(|_| EndpointProblem::Invalid("must be an absolute http or https URL"))?;
    if url.host().is_none() {
        return Err(EndpointProblem::Invalid("must have a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointProblem::Invalid(
            "must not carry credentials in the URL",
        ));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_url(&url) => Ok(url),
        "http" => Err(EndpointProblem::HttpsRequired),
        _ => Err(EndpointProblem::Invalid(
            "must be an absolute http or https URL",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_by_url() {
        for loopback in [
            "http://localhost:3000/mcp",
            "http://LOCALHOST/mcp",
            "http://127.0.0.1/mcp",
            "http://127.1.2.3:8080/",
            "http://[::1]:8080/mcp",
        ] {
            assert!(names_loopback_host(loopback), "{loopback}");
        }
        for other in [
            "https://example.com/mcp",
            "http://10.0.0.1/",
            "http://[::2]/",
            "http://localhost.example.com/",
            "/mcp",
            "not a url",
            "",
        ] {
            assert!(!names_loopback_host(other), "{other}");
        }
    }

    #[test]
    fn rfc8252_redirect_uris() {
        for ok in [
            "https://app.example.com/callback",
            "https://localhost:8080/callback",
            "http://localhost:8080/callback",
            "http://LOCALHOST/cb",
            "http://127.0.0.1:53123/cb",
            "http://127.9.9.9/cb",
            "http://[::1]:8080/cb",
            "com.example.app:/oauth2redirect",
            "myapp://callback",
        ] {
            assert_eq!(check_redirect_uri(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("/callback", RedirectUriProblem::NotAbsolute),
            ("not a uri", RedirectUriProblem::NotAbsolute),
            (
                "https://app.example.com/cb#frag",
                RedirectUriProblem::HasFragment,
            ),
            (
                "http://app.example.com/cb",
                RedirectUriProblem::HttpNotLoopback,
            ),
            (
                "http://localhost.evil.com/cb",
                RedirectUriProblem::HttpNotLoopback,
            ),
            ("http://128.0.0.1/cb", RedirectUriProblem::HttpNotLoopback),
            ("javascript:alert(1)", RedirectUriProblem::DangerousScheme),
            ("JavaScript:alert(1)", RedirectUriProblem::DangerousScheme),
            ("data:text/html,hi", RedirectUriProblem::DangerousScheme),
            ("vbscript:msgbox", RedirectUriProblem::DangerousScheme),
            ("file:///etc/passwd", RedirectUriProblem::DangerousScheme),
        ] {
            assert_eq!(check_redirect_uri(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn rfc8252_7_1_private_use_schemes_are_reverse_domain_names() {
        for ok in [
            "com.example.app:/oauth2redirect",
            "https://app.example.com/cb",
            "http://127.0.0.1:53123/cb",
        ] {
            assert_eq!(check_native_scheme(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_native_scheme("myapp://callback"),
            Err(RedirectUriProblem::NotReverseDomainScheme)
        );
    }

    #[test]
    fn oauth21_endpoints_need_https_or_loopback() {
        assert!(check_endpoint("https://as.example.com/register").is_ok());
        assert!(check_endpoint("http://127.0.0.1:4000/register").is_ok());
        assert!(check_endpoint("http://localhost/register").is_ok());
        assert!(check_endpoint("http://[::1]/register").is_ok());
        assert_eq!(
            check_endpoint("http://as.example.com/register"),
            Err(EndpointProblem::HttpsRequired)
        );
        assert!(matches!(
            check_endpoint("ftp://as.example.com/"),
            Err(EndpointProblem::Invalid(_))
        ));
        assert!(matches!(
            check_endpoint("register"),
            Err(EndpointProblem::Invalid(_))
        ));
        assert!(matches!(
            check_endpoint("https://user:pw@as.example.com/"),
            Err(EndpointProblem::Invalid(_))
        ));
    }
}
