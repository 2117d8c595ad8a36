//! The one rule for a Bearer token's characters (RFC 6750 §2.1), shared by
//! the client (tokens it sends: initial access tokens, registration access
//! tokens, RFC 7591 §3 and RFC 7592 §3) and the embedded server (tokens it
//! accepts and is configured with).
//!
//! The rule is "non-empty visible ASCII without spaces" (%x21-7E): wider than
//! RFC 6750's b64token, which real servers exceed, and exactly what can sit
//! after `Bearer ` in one header value and be read back unchanged.

/// Whether `token` can be a Bearer credential.
pub fn is_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::is_token;

    #[test]
    fn visible_ascii_only() {
        assert!(is_token("abc-._~+/=!#$%&'*;<>?@[]^`{|}\"\\"));
        for bad in ["", "a b", "a\tb", "é", "a\u{7f}", "a\nb"] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }
}
