//! Identifiers, secrets and tokens: generated from the operating system's
//! CSPRNG, compared in constant time, read from `Authorization` headers.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use subtle::ConstantTimeEq;

/// Random bytes behind a `client_id`: unique, not secret.
const CLIENT_ID_BYTES: usize = 16;
/// Random bytes behind a client secret or an access token: 256 bits.
const SECRET_BYTES: usize = 32;

/// The operating system's random source failed (it essentially never does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRandomness;

fn random_base64url(len: usize) -> Result<String, NoRandomness> {
    let mut bytes = [0u8; SECRET_BYTES];
    let bytes = &mut bytes[..len];
    getrandom::fill(bytes).map_err(|_| NoRandomness)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A new `client_id`: 128 random bits, base64url (22 characters).
pub fn client_id() -> Result<String, NoRandomness> {
    random_base64url(CLIENT_ID_BYTES)
}

/// A new client secret or access token: 256 random bits, base64url
/// (43 characters).
pub fn secret() -> Result<String, NoRandomness> {
    random_base64url(SECRET_BYTES)
}

/// Compares a presented credential with the expected one without leaking,
/// through timing, how much of it matched. (The length is not secret: every
/// issued credential has the same length.)
pub fn matches(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1;
/// the scheme is case-insensitive). `None` when there is no such header, or
/// more than one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && crate::token::is_token(token)).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn generated_credentials_are_long_unique_and_url_safe() {
        let a = secret().unwrap();
        let b = secret().unwrap();
        assert_eq!(a.len(), 43, "256 bits in base64url");
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(client_id().unwrap().len(), 22);
    }

    #[test]
    fn constant_time_comparison() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abd", "abc"));
        assert!(!matches("ab", "abc"));
        assert!(!matches("", "abc"));
    }

    #[test]
    fn bearer_header_parsing() {
        let headers = |values: &[&str]| {
            let mut map = HeaderMap::new();
            for v in values {
                map.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            map
        };
        assert_eq!(bearer(&headers(&["Bearer abc"])), Some("abc"));
        assert_eq!(bearer(&headers(&["bearer  abc "])), Some("abc"));
        assert_eq!(bearer(&headers(&["Basic abc"])), None);
        assert_eq!(bearer(&headers(&["Bearer"])), None);
        assert_eq!(bearer(&headers(&["Bearer "])), None);
        assert_eq!(bearer(&headers(&["Bearer a b"])), None);
        assert_eq!(bearer(&headers(&["Bearer a", "Bearer b"])), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
