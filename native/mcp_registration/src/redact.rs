//! Credentials the library sent never come back inside an error reason.
//!
//! RFC 6750 §5.3 and RFC 7591 §5 treat bearer tokens and client secrets as
//! secrets, yet a server may quote one back in a refusal
//! (`"error_description": "token 2YotnFZ... has expired"`). The library knows
//! exactly what it sent — the initial access token (RFC 7591 §3), the
//! registration access tokens (RFC 7592 §2) and a `client_secret` in an
//! RFC 7592 §2.2 PUT — so every copy of those in a refusal's body is replaced
//! by [`REDACTED`] before the body becomes a reason. Reasons then stay safe
//! to log, inspect and pass to `format_error/1`.

use std::fmt;

use serde_json::{Map, Value};

use crate::error::Error;

/// What stands in for a credential the server quoted back.
pub const REDACTED: &str = "[REDACTED]";

/// The credentials one call has sent so far.
#[derive(Default, Clone)]
pub struct SentSecrets(Vec<String>);

impl fmt::Debug for SentSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SentSecrets(<{} redacted>)", self.0.len())
    }
}

impl SentSecrets {
    /// Remembers a credential as sent. Empty strings are ignored.
    pub fn add(&mut self, secret: &str) {
        if !secret.is_empty() && !self.0.iter().any(|s| s == secret) {
            self.0.push(secret.to_owned());
            // Longest first, so that a secret containing another is replaced whole.
            self.0.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `error` with every sent credential in a server's refusal body replaced.
    pub fn scrub(&self, error: Error) -> Error {
        if self.0.is_empty() {
            return error;
        }
        match error {
            Error::Registration { status, body } => Error::Registration {
                status,
                body: self.scrub_object(body),
            },
            Error::Http { status, body } => Error::Http {
                status,
                body: self.scrub_bytes(body),
            },
            Error::CredentialsRotated { client, reason } => Error::CredentialsRotated {
                client,
                reason: Box::new(self.scrub(*reason)),
            },
            other => other,
        }
    }

    fn scrub_object(&self, object: Map<String, Value>) -> Map<String, Value> {
        object
            .into_iter()
            .map(|(key, value)| (self.scrub_text(key), self.scrub_value(value)))
            .collect()
    }

    fn scrub_value(&self, value: Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.scrub_text(text)),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.scrub_value(v)).collect())
            }
            Value::Object(object) => Value::Object(self.scrub_object(object)),
            other => other,
        }
    }

    fn scrub_text(&self, mut text: String) -> String {
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        text
    }

    fn scrub_bytes(&self, mut bytes: Vec<u8>) -> Vec<u8> {
        for secret in &self.0 {
            bytes = replace_bytes(&bytes, secret.as_bytes(), REDACTED.as_bytes());
        }
        bytes
    }
}

fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc6750_5_3_quoted_tokens_are_redacted_from_refusals() {
        let mut sent = SentSecrets::default();
        sent.add("tok-A");
        sent.add("s3cret");
        let body = json!({
            "error": "invalid_token",
            "error_description": "token tok-A is expired; secret s3cret is wrong",
            "details": [{"tok-A": "tok-A"}]
        });
        let Error::Registration { body, .. } = sent.scrub(Error::Registration {
            status: 401,
            body: body.as_object().unwrap().clone(),
        }) else {
            panic!("the shape is kept")
        };
        let text = serde_json::to_string(&body).unwrap();
        assert!(
            !text.contains("tok-A") && !text.contains("s3cret"),
            "{text}"
        );
        assert_eq!(
            body["error_description"],
            json!("token [REDACTED] is expired; secret [REDACTED] is wrong")
        );

        let Error::Http { body, .. } = sent.scrub(Error::Http {
            status: 500,
            body: b"<p>Bearer tok-A</p>".to_vec(),
        }) else {
            panic!()
        };
        assert_eq!(body, b"<p>Bearer [REDACTED]</p>");
        assert!(!format!("{sent:?}").contains("tok-A"));
    }
}
