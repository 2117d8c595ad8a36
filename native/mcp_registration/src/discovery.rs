//! From an MCP server URL to its authorization server, as the MCP
//! authorization specification (2025-11-25, "Authorization Server
//! Discovery") prescribes:
//!
//! 1. Protected resource metadata (RFC 9728): the `resource_metadata` URL of
//!    the 401's `WWW-Authenticate` challenge (§5.1), then the path-aware
//!    well-known URL (§3.1), then the root one. The document's `resource`
//!    must cover the server URL (same origin, path equal or below; the TS
//!    SDK's `checkResourceAllowed` rule), else discovery stops (§3.3).
//! 2. Authorization server metadata for the first of `authorization_servers`:
//!    RFC 8414 §3.1 (`/.well-known/oauth-authorization-server` inserted
//!    before the issuer's path), then OpenID Connect Discovery 1.0 §4 with
//!    path insertion, then appended; an issuer without a path tries the
//!    first two. A 4xx moves on to the next URL; a 5xx, a redirect (never
//!    followed) or a transport failure stops with the URL named. The
//!    document's `issuer` must be the issuer the URL was built from
//!    (RFC 8414 §3.3, OIDC Discovery §4.3).
//! 3. 2025-03-26 compatibility: with no resource metadata, the server URL's
//!    origin is the authorization server's base URL and its document's own
//!    issuer is reported; with no metadata there either, the default
//!    endpoints `/authorize`, `/token` and `/register` are used.
//!
//! The scope to request follows the specification's "Scope Selection
//! Strategy": the challenge's `scope`, else the resource metadata's
//! `scopes_supported`, else none. Every URL learned on the way goes through
//! [`crate::net_guard`]; one deadline covers every fetch.

use serde_json::{Map, Value};
use url::Url;

use crate::client::Options;
use crate::error::{DiscoveryError, Error, RequestError};
use crate::net_guard::{self, NetGuard};
use crate::transport;
use crate::uri::{self, EndpointProblem};
use crate::www_authenticate;

/// The type a known authorization server metadata member must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Url,
    Text,
    TextList,
    Flag,
}

/// RFC 8414 §2 members (and the CIMD draft's flag) returned under atom keys;
/// every other member is returned under `extra`.
pub const AUTHORIZATION_SERVER_FIELDS: &[(&str, Kind)] = &[
    ("issuer", Kind::Url),
    ("authorization_endpoint", Kind::Url),
    ("token_endpoint", Kind::Url),
    ("registration_endpoint", Kind::Url),
    ("jwks_uri", Kind::Url),
    ("revocation_endpoint", Kind::Url),
    ("introspection_endpoint", Kind::Url),
    ("userinfo_endpoint", Kind::Url),
    ("service_documentation", Kind::Url),
    ("scopes_supported", Kind::TextList),
    ("response_types_supported", Kind::TextList),
    ("response_modes_supported", Kind::TextList),
    ("grant_types_supported", Kind::TextList),
    ("token_endpoint_auth_methods_supported", Kind::TextList),
    ("code_challenge_methods_supported", Kind::TextList),
    ("client_id_metadata_document_supported", Kind::Flag),
];

pub const PROTECTED_RESOURCE_WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";
pub const OAUTH_WELL_KNOWN: &str = "/.well-known/oauth-authorization-server";
pub const OPENID_WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// Where the authorization server metadata came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataSource {
    /// Read from this URL.
    Discovered(String),
    /// 2025-03-26 fallback: nothing was found, these are the default endpoints.
    Defaults,
}

/// What discovery found.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub server_url: String,
    /// The canonical resource URI (RFC 8707): the metadata's `resource`, as
    /// written there, or the server URL without its fragment when there is
    /// no metadata.
    pub resource: String,
    pub resource_metadata: Option<Map<String, Value>>,
    pub resource_metadata_url: Option<String>,
    pub issuer: String,
    pub authorization_server: Map<String, Value>,
    pub authorization_server_metadata: MetadataSource,
    pub scope: Option<String>,
    pub allow_private_networks: bool,
}

/// A checked discovery request. Building one does no I/O.
#[derive(Debug, Clone)]
pub struct Discover {
    server_url: Url,
    hints: www_authenticate::BearerHints,
    resource_metadata_url: Option<Url>,
    issuer: Option<String>,
    allow_private_networks: bool,
    options: Options,
}

fn caller_url(field: &str, raw: &str) -> Result<Url, RequestError> {
    let url = uri::check_endpoint(raw).map_err(|problem| match problem {
        EndpointProblem::HttpsRequired => RequestError::HttpsRequired,
        EndpointProblem::Invalid(message) => RequestError::InvalidField {
            field: field.to_owned(),
            message: message.to_owned(),
        },
    })?;
    if url.fragment().is_some() {
        return Err(RequestError::InvalidField {
            field: field.to_owned(),
            message: "must not have a fragment".into(),
        });
    }
    Ok(url)
}

impl Discover {
    pub fn new(
        server_url: &str,
        www_authenticate: &[String],
        resource_metadata_url: Option<&str>,
        issuer: Option<&str>,
        allow_private_networks: bool,
        mut options: Options,
    ) -> Result<Self, Error> {
        let server_url = caller_url("server_url", server_url)?;
        let hints = www_authenticate::bearer_hints(www_authenticate)
            .map_err(DiscoveryError::InvalidWwwAuthenticate)?;
        let resource_metadata_url = resource_metadata_url
            .map(|raw| caller_url("resource_metadata_url", raw))
            .transpose()?;
        if let Some(raw) = issuer {
            check_issuer_form(raw).map_err(|message| RequestError::InvalidField {
                field: "issuer".into(),
                message,
            })?;
        }
        options.guard = Some(NetGuard::new(&server_url, allow_private_networks));
        Ok(Self {
            server_url,
            hints,
            resource_metadata_url,
            issuer: issuer.map(str::to_owned),
            allow_private_networks,
            options,
        })
    }

    /// Runs discovery within the call's deadline.
    pub async fn run(self) -> Result<Discovery, Error> {
        let deadline = self.options.timeout;
        match tokio::time::timeout(deadline, self.discover()).await {
            Ok(result) => result,
            Err(_) => Err(crate::TransportError::Timeout.into()),
        }
    }

    async fn discover(self) -> Result<Discovery, Error> {
        let mut found = Discovery {
            server_url: self.server_url.to_string(),
            resource: canonical(&self.server_url),
            resource_metadata: None,
            resource_metadata_url: None,
            issuer: String::new(),
            authorization_server: Map::new(),
            authorization_server_metadata: MetadataSource::Defaults,
            scope: self.hints.scope.clone(),
            allow_private_networks: self.allow_private_networks,
        };

        let issuer = if let Some(issuer) = &self.issuer {
            Some(issuer.clone())
        } else if let Some((url, document)) = self.protected_resource().await? {
            let (resource, issuer, scopes) = read_protected_resource(&url, &document)?;
            if !covers(&resource, &self.server_url) {
                return Err(DiscoveryError::ResourceMismatch {
                    resource: resource.to_string(),
                    server_url: self.server_url.to_string(),
                }
                .into());
            }
            // As the server published it: servers compare the RFC 8707
            // `resource` parameter with their own string.
            found.resource = document["resource"]
                .as_str()
                .map_or_else(|| resource.to_string(), str::to_owned);
            if found.scope.is_none() && !scopes.is_empty() {
                found.scope = Some(scopes.join(" "));
            }
            found.resource_metadata = Some(document);
            found.resource_metadata_url = Some(url.to_string());
            Some(issuer)
        } else {
            None
        };

        match issuer {
            Some(issuer) => {
                let (url, document) = self.authorization_server(&issuer).await?;
                found.issuer = issuer;
                found.authorization_server = document;
                found.authorization_server_metadata = MetadataSource::Discovered(url);
            }
            None => self.legacy_authorization_server(&mut found).await?,
        }
        Ok(found)
    }

    /// RFC 9728: the first document found, or `None` when every URL
    /// answered 4xx.
    async fn protected_resource(&self) -> Result<Option<(Url, Map<String, Value>)>, Error> {
        let mut candidates = Vec::new();
        if let Some(url) = &self.resource_metadata_url {
            candidates.push(url.clone());
        } else if let Some(raw) = &self.hints.resource_metadata {
            let url = Url::parse(raw).map_err(|_| {
                DiscoveryError::InvalidWwwAuthenticate(
                    "resource_metadata is not an absolute URL".into(),
                )
            })?;
            candidates.push(url);
        }
        for url in protected_resource_urls(&self.server_url) {
            if !candidates.contains(&url) {
                candidates.push(url);
            }
        }
        for url in candidates {
            if let Some(document) = self.fetch(&url).await? {
                return Ok(Some((url, document)));
            }
        }
        Ok(None)
    }

    /// RFC 8414 §3 / OIDC Discovery for `issuer`, with the §3.3 check.
    async fn authorization_server(
        &self,
        issuer: &str,
    ) -> Result<(String, Map<String, Value>), Error> {
        // A learned issuer that breaks the https or address rules is refused
        // as such, before its form is judged.
        if let Ok(url) = Url::parse(issuer) {
            self.options.address_policy(&url)?;
        }
        let issuer_url =
            check_issuer_form(issuer).map_err(|message| DiscoveryError::InvalidMetadata {
                url: issuer.to_owned(),
                message: format!("the issuer {message}"),
            })?;
        let candidates = authorization_server_urls(&issuer_url);
        for url in &candidates {
            if let Some(document) = self.fetch(url).await? {
                check_authorization_server(url, &document)?;
                let named = document.get("issuer").and_then(Value::as_str);
                if !named.is_some_and(|named| same_issuer(named, &issuer_url)) {
                    return Err(DiscoveryError::IssuerMismatch {
                        expected: issuer.to_owned(),
                        found: named.unwrap_or("(none)").to_owned(),
                    }
                    .into());
                }
                return Ok((url.to_string(), document));
            }
        }
        Err(DiscoveryError::NotFound {
            issuer: issuer.to_owned(),
            tried: candidates.iter().map(Url::to_string).collect(),
        }
        .into())
    }

    /// 2025-03-26: no resource metadata, so the server's origin is the
    /// authorization server's base URL.
    async fn legacy_authorization_server(&self, found: &mut Discovery) -> Result<(), Error> {
        let origin = origin_url(&self.server_url);
        for url in authorization_server_urls(&origin) {
            if let Some(document) = self.fetch(&url).await? {
                check_authorization_server(&url, &document)?;
                found.issuer = document
                    .get("issuer")
                    .and_then(Value::as_str)
                    .map_or_else(|| origin_text(&origin), str::to_owned);
                found.authorization_server = document;
                found.authorization_server_metadata = MetadataSource::Discovered(url.to_string());
                return Ok(());
            }
        }
        let base = origin_text(&origin);
        found.issuer = base.clone();
        found.authorization_server = [
            ("issuer", base.clone()),
            ("authorization_endpoint", format!("{base}/authorize")),
            ("token_endpoint", format!("{base}/token")),
            ("registration_endpoint", format!("{base}/register")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
        found.authorization_server_metadata = MetadataSource::Defaults;
        Ok(())
    }

    /// GETs a metadata document: `Some` on 2xx, `None` on 4xx (try the next
    /// URL), an error naming the URL otherwise.
    async fn fetch(&self, url: &Url) -> Result<Option<Map<String, Value>>, Error> {
        let http = net_guard::http_client(&self.options, url).await?;
        let failed = |cause: Error| -> Error {
            match cause {
                Error::Discovery(refusal) => refusal.into(),
                cause => DiscoveryError::Fetch {
                    url: url.to_string(),
                    cause: Box::new(cause),
                }
                .into(),
            }
        };
        let (status, body) =
            transport::exchange(&http, reqwest::Method::GET, url, None, None, &self.options)
                .await
                .map_err(failed)?;
        if status.is_client_error() {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(failed(Error::Http {
                status: status.as_u16(),
                body,
            }));
        }
        let invalid = |message: String| DiscoveryError::InvalidMetadata {
            url: url.to_string(),
            message,
        };
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(document)) => Ok(Some(document)),
            Ok(_) => Err(invalid("not a JSON object".into()).into()),
            Err(e) => Err(invalid(format!("not valid JSON: {e}")).into()),
        }
    }
}

/// RFC 9728 §3.1: the path-aware URL (when the server URL has a path), then
/// the root one.
pub fn protected_resource_urls(server: &Url) -> Vec<Url> {
    let origin = origin_text(server);
    let path = server.path().trim_end_matches('/');
    let mut urls = Vec::new();
    if !path.is_empty() {
        urls.push(format!("{origin}{PROTECTED_RESOURCE_WELL_KNOWN}{path}"));
    }
    urls.push(format!("{origin}{PROTECTED_RESOURCE_WELL_KNOWN}"));
    urls.into_iter()
        .map(|u| Url::parse(&u).expect("built from a parsed URL"))
        .collect()
}

/// The MCP specification's order for an issuer: with a path `/t`,
/// `oauth-authorization-server/t`, `openid-configuration/t`,
/// `/t/.well-known/openid-configuration`; without one, the first two.
pub fn authorization_server_urls(issuer: &Url) -> Vec<Url> {
    let origin = origin_text(issuer);
    let path = issuer.path().trim_end_matches('/');
    let urls = if path.is_empty() {
        vec![
            format!("{origin}{OAUTH_WELL_KNOWN}"),
            format!("{origin}{OPENID_WELL_KNOWN}"),
        ]
    } else {
        vec![
            format!("{origin}{OAUTH_WELL_KNOWN}{path}"),
            format!("{origin}{OPENID_WELL_KNOWN}{path}"),
            format!("{origin}{path}{OPENID_WELL_KNOWN}"),
        ]
    };
    urls.into_iter()
        .map(|u| Url::parse(&u).expect("built from a parsed URL"))
        .collect()
}

/// The resource covers the server URL: same origin, and the server's path
/// is the resource's path or lies below it.
pub fn covers(resource: &Url, server: &Url) -> bool {
    if resource.origin() != server.origin() {
        return false;
    }
    let base = resource.path().trim_end_matches('/');
    let path = server.path();
    base.is_empty()
        || path.trim_end_matches('/') == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// RFC 8414 §2: an https (or loopback http) URL without query or fragment.
fn check_issuer_form(raw: &str) -> Result<Url, String> {
    let url = uri::check_endpoint(raw).map_err(|problem| match problem {
        EndpointProblem::HttpsRequired => "must use https".to_owned(),
        EndpointProblem::Invalid(message) => message.to_owned(),
    })?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment (RFC 8414 §2)".into());
    }
    Ok(url)
}

/// RFC 8414 §3.3 asks for identical issuers; URLs are compared after
/// parsing, so `https://as.example` and `https://as.example/` are the same
/// (serializers differ on that trailing slash), but `/t` and `/t/` are not.
fn same_issuer(named: &str, expected: &Url) -> bool {
    Url::parse(named).is_ok_and(|named| &named == expected)
}

fn read_protected_resource(
    url: &Url,
    document: &Map<String, Value>,
) -> Result<(Url, String, Vec<String>), Error> {
    let invalid = |message: &str| DiscoveryError::InvalidMetadata {
        url: url.to_string(),
        message: message.to_owned(),
    };
    let resource = document
        .get("resource")
        .and_then(Value::as_str)
        .and_then(|raw| Url::parse(raw).ok())
        .ok_or_else(|| invalid("resource must be an absolute URL (RFC 9728 §2)"))?;
    let issuer = match document.get("authorization_servers") {
        Some(Value::Array(servers)) => servers
            .first()
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("authorization_servers must list at least one issuer"))?
            .to_owned(),
        _ => {
            return Err(invalid("authorization_servers must be a non-empty list of issuers").into())
        }
    };
    let scopes = match document.get("scopes_supported") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(_) => return Err(invalid("scopes_supported must be a list of strings").into()),
    };
    Ok((resource, issuer, scopes))
}

/// Checks the known members' types so that callers can rely on them.
fn check_authorization_server(url: &Url, document: &Map<String, Value>) -> Result<(), Error> {
    for (name, kind) in AUTHORIZATION_SERVER_FIELDS {
        let Some(value) = document.get(*name).filter(|v| !v.is_null()) else {
            continue;
        };
        let ok = match kind {
            Kind::Url => value.as_str().is_some_and(|s| Url::parse(s).is_ok()),
            Kind::Text => value.is_string(),
            Kind::TextList => value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string)),
            Kind::Flag => value.is_boolean(),
        };
        if !ok {
            let expected = match kind {
                Kind::Url => "an absolute URL",
                Kind::Text => "a string",
                Kind::TextList => "a list of strings",
                Kind::Flag => "a boolean",
            };
            return Err(DiscoveryError::InvalidMetadata {
                url: url.to_string(),
                message: format!("{name} must be {expected}"),
            }
            .into());
        }
    }
    Ok(())
}

fn origin_text(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn origin_url(url: &Url) -> Url {
    Url::parse(&origin_text(url)).expect("an origin is a URL")
}

fn canonical(url: &Url) -> String {
    let mut url = url.clone();
    url.set_fragment(None);
    url.to_string()
}

#[cfg(test)]
mod tests;
