//! The `WWW-Authenticate` header (RFC 9110 §11.6.1, syntax in §11.3 and
//! §5.6): one or more challenges, each an auth-scheme followed by either a
//! token68 or a comma-separated list of auth-params whose values are tokens
//! or quoted strings (§5.6.4, with backslash escapes). Challenges are
//! separated by commas too, so a new challenge is recognised by a token that
//! is not followed by `=`. The MCP authorization specification (2025-11-25,
//! "Protected Resource Metadata Discovery" and "Scope Selection Strategy")
//! reads the `resource_metadata` (RFC 9728 §5.1) and `scope` (RFC 6750 §3)
//! parameters of the `Bearer` challenge.

/// One challenge. The scheme and parameter names are case-insensitive and
/// kept in lower case; values are unquoted and unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub token68: Option<String>,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The first value of a parameter (names are compared in lower case).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What discovery uses from a 401.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BearerHints {
    pub resource_metadata: Option<String>,
    pub scope: Option<String>,
}

/// Reads `resource_metadata` and `scope` from the first `Bearer` challenge
/// of any of the header values that has them.
pub fn bearer_hints<S: AsRef<str>>(values: &[S]) -> Result<BearerHints, String> {
    let mut hints = BearerHints::default();
    for value in values {
        for challenge in parse(value.as_ref())? {
            if challenge.scheme != "bearer" {
                continue;
            }
            if hints.resource_metadata.is_none() {
                hints.resource_metadata = challenge.param("resource_metadata").map(str::to_owned);
            }
            if hints.scope.is_none() {
                hints.scope = challenge
                    .param("scope")
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_owned);
            }
        }
    }
    Ok(hints)
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_token68_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~+/".contains(&c)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    /// Skips whitespace and empty list elements (RFC 9110 §5.6.1 allows
    /// `, ,`). Returns whether at least one comma was crossed.
    fn skip_commas(&mut self) -> bool {
        let mut crossed = false;
        loop {
            self.skip_ows();
            if self.peek() == Some(b',') {
                self.at += 1;
                crossed = true;
            } else {
                return crossed;
            }
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        (self.at > start).then(|| std::str::from_utf8(&self.bytes[start..self.at]).unwrap())
    }

    fn quoted_string(&mut self) -> Result<String, String> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err("a quoted string is not closed".into()),
                Some(b'"') => {
                    self.at += 1;
                    return String::from_utf8(out)
                        .map_err(|_| "a quoted string is not valid UTF-8".into());
                }
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(c) if c == b'\t' || c >= 0x20 && c != 0x7f => {
                            out.push(c);
                            self.at += 1;
                        }
                        _ => return Err("a quoted string has a bad escape".into()),
                    }
                }
                Some(c) if c == b'\t' || c >= 0x20 && c != 0x7f => {
                    out.push(c);
                    self.at += 1;
                }
                Some(_) => return Err("a quoted string holds a control character".into()),
            }
        }
    }

    /// Whether an auth-param (`token BWS "="`, not a token68's `==` padding)
    /// starts here; the cursor does not move.
    fn at_auth_param(&self) -> bool {
        let mut probe = Cursor {
            bytes: self.bytes,
            at: self.at,
        };
        if probe.token().is_none() {
            return false;
        }
        probe.skip_ows();
        if probe.peek() != Some(b'=') {
            return false;
        }
        probe.at += 1;
        probe.skip_ows();
        // `a==` is a token68 (base64 padding), `a=b` or `a="b"` a parameter.
        !matches!(probe.peek(), Some(b'=') | Some(b',') | None)
    }
}

/// Parses one header value into its challenges.
pub fn parse(header: &str) -> Result<Vec<Challenge>, String> {
    let mut cursor = Cursor {
        bytes: header.as_bytes(),
        at: 0,
    };
    let mut challenges = Vec::new();
    cursor.skip_commas();
    while cursor.peek().is_some() {
        let scheme = cursor
            .token()
            .ok_or_else(|| format!("expected an auth-scheme at byte {}", cursor.at))?
            .to_ascii_lowercase();
        let mut challenge = Challenge {
            scheme,
            token68: None,
            params: Vec::new(),
        };
        let had_space = matches!(cursor.peek(), Some(b' ' | b'\t'));
        cursor.skip_ows();
        if had_space && cursor.peek().is_some() && cursor.peek() != Some(b',') {
            if cursor.at_auth_param() {
                parse_params(&mut cursor, &mut challenge)?;
            } else {
                let start = cursor.at;
                while cursor.peek().is_some_and(is_token68_char) {
                    cursor.at += 1;
                }
                while cursor.peek() == Some(b'=') {
                    cursor.at += 1;
                }
                if cursor.at == start {
                    return Err(format!("unexpected character at byte {}", cursor.at));
                }
                challenge.token68 = Some(header[start..cursor.at].to_owned());
                cursor.skip_ows();
                if cursor.peek().is_some() && cursor.peek() != Some(b',') {
                    return Err(format!("unexpected character at byte {}", cursor.at));
                }
            }
        }
        challenges.push(challenge);
        cursor.skip_commas();
    }
    Ok(challenges)
}

/// Reads `name=value` pairs until the list ends or the next element is a
/// new challenge (a token not followed by `=`).
fn parse_params(cursor: &mut Cursor, challenge: &mut Challenge) -> Result<(), String> {
    loop {
        let name = cursor.token().expect("checked by at_auth_param");
        cursor.skip_ows();
        cursor.at += 1; // the "="
        cursor.skip_ows();
        let value = match cursor.peek() {
            Some(b'"') => cursor.quoted_string()?,
            _ => cursor
                .token()
                .ok_or_else(|| format!("parameter {name:?} has no value"))?
                .to_owned(),
        };
        challenge.params.push((name.to_ascii_lowercase(), value));
        cursor.skip_ows();
        match cursor.peek() {
            None => return Ok(()),
            Some(b',') => {
                let rewind = cursor.at;
                cursor.skip_commas();
                if cursor.peek().is_none() {
                    return Ok(());
                }
                if !cursor.at_auth_param() {
                    // The next challenge begins: let the caller read it.
                    cursor.at = rewind;
                    return Ok(());
                }
            }
            Some(_) => return Err(format!("unexpected character at byte {}", cursor.at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn rfc9728_section_5_1_example() {
        let header = r#"Bearer resource_metadata="https://resource.example.com/.well-known/oauth-protected-resource""#;
        let hints = bearer_hints(&[header]).unwrap();
        assert_eq!(
            hints.resource_metadata.as_deref(),
            Some("https://resource.example.com/.well-known/oauth-protected-resource")
        );
        assert_eq!(hints.scope, None);
    }

    #[test]
    fn rfc9110_section_11_6_1_several_challenges_with_escapes() {
        let header =
            r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple""#;
        let challenges = parse(header).unwrap();
        assert_eq!(challenges.len(), 2);
        assert_eq!(challenges[0].scheme, "newauth");
        assert_eq!(
            params(&challenges[0]),
            [
                ("realm", "apps"),
                ("type", "1"),
                ("title", r#"Login to "apps""#)
            ]
        );
        assert_eq!(challenges[1].scheme, "basic");
        assert_eq!(params(&challenges[1]), [("realm", "simple")]);
    }

    #[test]
    fn bearer_after_another_scheme_and_commas_inside_quotes() {
        let header = r#"Basic realm="a, b", BEARER error="insufficient_scope", scope="mcp:read mcp:write", Resource_Metadata = "https://x.example/.well-known/oauth-protected-resource/mcp""#;
        let hints = bearer_hints(&[header]).unwrap();
        assert_eq!(hints.scope.as_deref(), Some("mcp:read mcp:write"));
        assert_eq!(
            hints.resource_metadata.as_deref(),
            Some("https://x.example/.well-known/oauth-protected-resource/mcp")
        );
    }

    #[test]
    fn token68_and_bare_schemes() {
        let challenges = parse("Negotiate abc+/==, Bearer, Basic").unwrap();
        assert_eq!(challenges.len(), 3);
        assert_eq!(challenges[0].token68.as_deref(), Some("abc+/=="));
        assert!(challenges[1].params.is_empty() && challenges[1].token68.is_none());
        assert_eq!(challenges[2].scheme, "basic");
    }

    #[test]
    fn hints_come_from_several_header_values() {
        let hints = bearer_hints(&[
            r#"Basic realm="x""#,
            r#"Bearer scope=files, resource_metadata="https://a.example/m""#,
        ])
        .unwrap();
        assert_eq!(hints.scope.as_deref(), Some("files"));
        assert_eq!(
            hints.resource_metadata.as_deref(),
            Some("https://a.example/m")
        );
        assert_eq!(
            bearer_hints(&[r#"Basic resource_metadata="https://a.example/m""#]).unwrap(),
            BearerHints::default()
        );
    }

    #[test]
    fn malformed_headers_are_errors() {
        for bad in [
            r#"Bearer realm="open"#,
            r#"Bearer realm="a\"#,
            "Bearer a=b c",
            "=x",
            "Bearer realm=\"a\u{1}\"",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
