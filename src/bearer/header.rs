//! The `Authorization: Bearer` request header (RFC 6750 §2.1) and the `WWW-Authenticate: Bearer` challenge
//! (RFC 6750 §3), with the escaping its values need.

use http::HeaderValue;

use super::BearerError;

/// RFC 6750 §2.1 b64token: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// Splits `Bearer <token>`: scheme case-insensitive (RFC 7235 §2.1), then `1*SP` as RFC 6750 §2.1's ABNF allows.
fn split_bearer(v: &HeaderValue) -> Result<&str, &'static str> {
    let s = v
        .to_str()
        .map_err(|_| "the Authorization header must be `Bearer` followed by an access token")?;
    let (scheme, rest) = s
        .split_once(' ')
        .ok_or("the Authorization header must be `Bearer` followed by an access token")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization header must use the Bearer scheme");
    }
    let token = rest.trim_start_matches(' ');
    if !is_b64token(token) {
        return Err("the access token in the Authorization header is not a valid b64token");
    }
    Ok(token)
}

pub(super) fn parse_authorization(
    v: Option<&HeaderValue>,
    max_len: usize,
) -> Result<&str, BearerError> {
    let v = v.ok_or(BearerError::Missing)?;
    let token = split_bearer(v).map_err(|why| BearerError::Malformed(why.into()))?;
    if token.len() > max_len {
        return Err(BearerError::Malformed(format!(
            "the access token is longer than {max_len} characters"
        )));
    }
    Ok(token)
}

/// The token string from the header (for revoke), if well-formed.
pub fn token_of(authorization: Option<&HeaderValue>) -> Option<&str> {
    split_bearer(authorization?).ok()
}

/// RFC 6750 §3 limits error_description and scope to %x20-21 / %x23-5B / %x5D-7E: no `"` or `\` at all, so
/// they are replaced rather than backslash-escaped, which would still leave them in the decoded value.
fn rfc6750_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// A quoted-string (RFC 9110 §5.6.4) for the realm, which RFC 6750 does not restrict further.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' | '\t' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// What a `WWW-Authenticate: Bearer` challenge says (RFC 6750 §3). Absent parameters are left out; with none
/// it is the bare `Bearer` that §3.1 asks for when no token was sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Challenge<'a> {
    pub realm: Option<&'a str>,
    pub error: Option<&'a str>,
    pub error_description: Option<&'a str>,
    pub scope: Option<&'a str>,
}

impl Challenge<'_> {
    /// The header value, e.g. `Bearer error="invalid_token", error_description="..."`, each value escaped.
    pub fn to_header(&self) -> HeaderValue {
        let mut params = Vec::new();
        if let Some(r) = self.realm {
            params.push(format!("realm={}", quoted(r)));
        }
        let limited = [
            ("error", self.error),
            ("error_description", self.error_description),
            ("scope", self.scope),
        ];
        for (name, value) in limited {
            if let Some(v) = value {
                params.push(format!("{name}=\"{}\"", rfc6750_text(v)));
            }
        }
        let value = if params.is_empty() {
            "Bearer".to_string()
        } else {
            format!("Bearer {}", params.join(", "))
        };
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("test header value")
    }

    #[test]
    fn authorization_headers_parse_as_rfc_6750_says() {
        let ok = |h: &str, want: &str| {
            assert_eq!(
                parse_authorization(Some(&hv(h)), 16).ok(),
                Some(want),
                "{h:?}"
            );
        };
        ok("Bearer abc", "abc");
        ok("bearer abc", "abc");
        ok("BEARER abc", "abc");
        ok("Bearer   abc", "abc");
        ok("Bearer a-b.c_d~e+f/g==", "a-b.c_d~e+f/g==");
        ok("Bearer 0123456789abcdef", "0123456789abcdef");
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearerabc",
            "Bearer\tabc",
            "Basic YTpi",
            "Bearer abc def",
            "Bearer abc,",
            "Bearer a=b",
            "Bearer ==",
            "Bearer a\tb",
            "Bearer \"abc\"",
            "Bearer 0123456789abcdefX",
            "DPoP abc",
        ] {
            assert!(
                matches!(
                    parse_authorization(Some(&hv(bad)), 16),
                    Err(BearerError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        let binary = HeaderValue::from_bytes(b"Bearer ab\xffc").expect("obs-text is a valid value");
        assert!(matches!(
            parse_authorization(Some(&binary), 16),
            Err(BearerError::Malformed(_))
        ));
        assert!(matches!(
            parse_authorization(None, 16),
            Err(BearerError::Missing)
        ));
        assert_eq!(token_of(Some(&hv("bearer  xyz=="))), Some("xyz=="));
        assert_eq!(token_of(Some(&hv("Basic xyz"))), None);
        assert_eq!(token_of(None), None);
    }

    #[test]
    fn challenges_render_per_rfc_6750() {
        let cases: Vec<(Challenge<'_>, &str)> = vec![
            (Challenge::default(), "Bearer"),
            (
                Challenge {
                    realm: Some("dcr"),
                    ..Challenge::default()
                },
                r#"Bearer realm="dcr""#,
            ),
            (
                Challenge {
                    error: Some("insufficient_scope"),
                    scope: Some("cdr:registration"),
                    ..Challenge::default()
                },
                r#"Bearer error="insufficient_scope", scope="cdr:registration""#,
            ),
            (
                Challenge {
                    realm: Some("a\"b\\c"),
                    error: Some("invalid_token"),
                    error_description: Some("the access token was not issued to this client"),
                    scope: None,
                },
                r#"Bearer realm="a\"b\\c", error="invalid_token", error_description="the access token was not issued to this client""#,
            ),
            // RFC 6750 §3 allows neither `"` nor `\` nor anything outside printable ASCII in these values.
            (
                Challenge {
                    error: Some("invalid_token"),
                    error_description: Some("say \"hi\" \\ é\r\n"),
                    ..Challenge::default()
                },
                r#"Bearer error="invalid_token", error_description="say 'hi' / ???""#,
            ),
        ];
        for (c, want) in cases {
            assert_eq!(c.to_header(), want, "{c:?}");
        }
    }
}
