//! RFC 9728 protected resource metadata for one configured resource, so that
//! an MCP client can start from the MCP server's URL: §3 (the document at
//! `/.well-known/oauth-protected-resource` with the resource's path appended,
//! path-aware per §3.1, and at the bare well-known URL the MCP specification
//! tries next), §2 (`resource`, `authorization_servers` naming this server's
//! issuer, `scopes_supported`, `bearer_methods_supported`, `resource_name`)
//! and §5.1 (a request to the resource itself without a token is answered
//! `401` with `WWW-Authenticate: Bearer resource_metadata="…"`, plus `scope`
//! as the MCP specification asks). The resource serves nothing else: it is a
//! stand-in for an MCP endpoint.

use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use url::Url;

use super::handlers::{json as json_response, method_not_allowed, rejection, HttpResponse, Reject};
use super::ServerError;

/// RFC 9728 §3: the well-known suffix.
pub const PROTECTED_RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// The protected resource the server describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedResource {
    /// The resource identifier (RFC 8707): an absolute http(s) URL, or a
    /// path beginning with `/` resolved against the server's base URL (handy
    /// with port 0), e.g. `/mcp`.
    pub resource: String,
    /// `scopes_supported` of the metadata; also the `scope` of the 401
    /// challenge and the authorization server's `scopes_supported`.
    pub scopes_supported: Vec<String>,
    /// `resource_name`, a human-readable name.
    pub resource_name: Option<String>,
}

impl ProtectedResource {
    /// A resource at `path` under the server, without scopes or name.
    pub fn at(path: &str) -> Self {
        Self {
            resource: path.to_owned(),
            scopes_supported: Vec::new(),
            resource_name: None,
        }
    }

    pub(super) fn check(&self) -> Result<(), ServerError> {
        let invalid = |m: &str| ServerError::InvalidConfig(format!("protected_resource: {m}"));
        if self.resource.starts_with('/') {
            if self.resource.contains(['?', '#']) {
                return Err(invalid("resource must not have a query or fragment"));
            }
        } else {
            let url = Url::parse(&self.resource).map_err(|_| {
                invalid("resource must be an absolute http(s) URL or a path beginning with /")
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(invalid("resource must be an absolute http(s) URL"));
            }
            if url.fragment().is_some() || url.query().is_some() {
                return Err(invalid("resource must not have a query or fragment"));
            }
        }
        let path = if self.resource.starts_with('/') {
            self.resource.clone()
        } else {
            Url::parse(&self.resource)
                .map(|u| u.path().to_owned())
                .unwrap_or_default()
        };
        let path = path.trim_end_matches('/');
        let taken = [super::REGISTER_PATH, super::AUTHORIZE_PATH, "/.well-known"];
        if taken
            .iter()
            .any(|t| path == *t || path.starts_with(&format!("{t}/")))
        {
            return Err(invalid(
                "resource must not be at /register, /authorize or under /.well-known, which the server uses",
            ));
        }
        let scope_token = |s: &String| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        };
        if !self.scopes_supported.iter().all(scope_token) {
            return Err(invalid(
                "scopes_supported must hold scope tokens (visible ASCII, no spaces, quotes or backslashes)",
            ));
        }
        Ok(())
    }

    /// The served form, once the server knows its base URL and issuer.
    pub(super) fn resolve(&self, base_url: &str, issuer: &str) -> ServedResource {
        let resource = if self.resource.starts_with('/') {
            format!("{base_url}{}", self.resource)
        } else {
            self.resource.clone()
        };
        let url = Url::parse(&resource).expect("checked in ProtectedResource::check");
        let path = url.path().trim_end_matches('/').to_owned();
        let metadata_path = format!("{PROTECTED_RESOURCE_METADATA_PATH}{path}");
        let base = Url::parse(base_url).expect("the base URL is absolute");
        // Only a resource on this very server can answer with a challenge.
        let challenge_path = (url.origin() == base.origin()).then(|| path.clone());
        let mut document = json!({
            "resource": resource,
            "authorization_servers": [issuer],
            "bearer_methods_supported": ["header"],
        });
        if !self.scopes_supported.is_empty() {
            document["scopes_supported"] = json!(self.scopes_supported);
        }
        if let Some(name) = &self.resource_name {
            document["resource_name"] = json!(name);
        }
        let mut challenge = format!("Bearer resource_metadata=\"{base_url}{metadata_path}\"");
        if !self.scopes_supported.is_empty() {
            challenge.push_str(&format!(", scope=\"{}\"", self.scopes_supported.join(" ")));
        }
        ServedResource {
            document,
            metadata_path,
            challenge_path,
            www_authenticate: HeaderValue::from_str(&challenge)
                .expect("URLs and checked scope tokens are valid header text"),
        }
    }
}

/// A configured resource, ready to answer requests.
#[derive(Debug)]
pub(super) struct ServedResource {
    document: Value,
    /// `/.well-known/oauth-protected-resource/<resource path>`.
    metadata_path: String,
    /// The resource's path when it lives on this server (`""` for the root).
    challenge_path: Option<String>,
    www_authenticate: HeaderValue,
}

impl ServedResource {
    /// The resource identifier, as served in the metadata.
    pub(super) fn resource(&self) -> &str {
        self.document["resource"].as_str().unwrap_or_default()
    }

    /// Answers the requests that concern the resource; `None` for others.
    pub(super) fn route(&self, method: &Method, path: &str) -> Option<HttpResponse> {
        if path == self.metadata_path || path == PROTECTED_RESOURCE_METADATA_PATH {
            return Some(match *method {
                Method::GET => json_response(StatusCode::OK, &self.document, false),
                _ => method_not_allowed("GET"),
            });
        }
        let below = |root: &str| {
            path == root
                || path == format!("{root}/")
                || path
                    .strip_prefix(root)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        match &self.challenge_path {
            Some(root) if !root.is_empty() && below(root) => Some(self.challenge()),
            _ => None,
        }
    }

    /// RFC 9728 §5.1, RFC 6750 §3: no token, so 401 pointing at the metadata.
    fn challenge(&self) -> HttpResponse {
        let mut response = rejection(Reject::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "this resource needs an access token; its metadata names the authorization server",
        ));
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, self.www_authenticate.clone());
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9728_3_1_path_aware_metadata_url_and_document() {
        let resource = ProtectedResource {
            resource: "/mcp".into(),
            scopes_supported: vec!["mcp:read".into(), "mcp:write".into()],
            resource_name: Some("Demo".into()),
        };
        resource.check().unwrap();
        let served = resource.resolve("http://127.0.0.1:9", "http://127.0.0.1:9");
        assert_eq!(
            served.metadata_path,
            "/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(served.document["resource"], json!("http://127.0.0.1:9/mcp"));
        assert_eq!(
            served.document["authorization_servers"],
            json!(["http://127.0.0.1:9"])
        );
        assert_eq!(
            served.www_authenticate,
            "Bearer resource_metadata=\"http://127.0.0.1:9/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:read mcp:write\""
        );
        assert_eq!(served.challenge_path.as_deref(), Some("/mcp"));
    }

    #[test]
    fn a_resource_elsewhere_gets_no_challenge_here() {
        let served = ProtectedResource::at("https://mcp.example.com/v1/mcp/")
            .resolve("http://127.0.0.1:9", "http://127.0.0.1:9");
        assert_eq!(
            served.metadata_path,
            "/.well-known/oauth-protected-resource/v1/mcp"
        );
        assert_eq!(served.challenge_path, None);
        assert!(served.route(&Method::GET, "/v1/mcp").is_none());
    }

    #[test]
    fn configuration_is_checked() {
        for bad in [
            "mcp",
            "ftp://x/mcp",
            "/mcp?x=1",
            "https://x/mcp#f",
            "/register",
            "/authorize/",
            "/.well-known/x",
        ] {
            assert!(ProtectedResource::at(bad).check().is_err(), "{bad}");
        }
        let mut resource = ProtectedResource::at("/mcp");
        resource.scopes_supported = vec!["has space".into()];
        assert!(resource.check().is_err());
        resource.scopes_supported = vec!["quo\"te".into()];
        assert!(resource.check().is_err());
    }

    #[test]
    fn only_the_resource_and_below_are_challenged() {
        let served =
            ProtectedResource::at("/mcp").resolve("http://127.0.0.1:9", "http://127.0.0.1:9");
        for path in ["/mcp", "/mcp/", "/mcp/tools"] {
            let response = served.route(&Method::POST, path).expect(path);
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        assert!(served.route(&Method::GET, "/mcpx").is_none());
        assert!(served.route(&Method::GET, "/register").is_none());
    }
}
