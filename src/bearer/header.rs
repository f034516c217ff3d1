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

/// The RFC 6750 WWW-Authenticate value for an error: e.g. `Bearer error="invalid_token", error_description="..."`;
/// for Missing (and Unavailable, which is no fault of the token) just `Bearer`; for InsufficientScope
/// `Bearer error="insufficient_scope", scope="cdr:registration"`.
pub fn www_authenticate(e: &BearerError, realm: Option<&str>) -> HeaderValue {
    let mut params = Vec::new();
    if let Some(r) = realm {
        params.push(format!("realm={}", quoted(r)));
    }
    match e {
        BearerError::Missing | BearerError::Unavailable(_) => {}
        BearerError::InsufficientScope(scope) => {
            params.push("error=\"insufficient_scope\"".into());
            params.push(format!("scope=\"{}\"", rfc6750_text(scope)));
        }
        BearerError::Malformed(_)
        | BearerError::Inactive
        | BearerError::WrongClient
        | BearerError::CertificateMismatch => {
            params.push("error=\"invalid_token\"".into());
            params.push(format!(
                "error_description=\"{}\"",
                rfc6750_text(&e.description())
            ));
        }
    }
    let value = if params.is_empty() {
        "Bearer".to_string()
    } else {
        format!("Bearer {}", params.join(", "))
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
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
        let cases: Vec<(BearerError, Option<&str>, &str)> = vec![
            (BearerError::Missing, None, "Bearer"),
            (BearerError::Missing, Some("dcr"), r#"Bearer realm="dcr""#),
            (
                BearerError::Inactive,
                None,
                r#"Bearer error="invalid_token", error_description="the access token is invalid, expired or revoked""#,
            ),
            (
                BearerError::InsufficientScope("cdr:registration".into()),
                None,
                r#"Bearer error="insufficient_scope", scope="cdr:registration""#,
            ),
            (
                BearerError::WrongClient,
                Some("a\"b\\c"),
                r#"Bearer realm="a\"b\\c", error="invalid_token", error_description="the access token was not issued to this client""#,
            ),
            (
                BearerError::CertificateMismatch,
                None,
                r#"Bearer error="invalid_token", error_description="the access token is not bound to the client certificate of this connection""#,
            ),
            (
                BearerError::Malformed("say \"hi\" \\ é\r\n".into()),
                None,
                r#"Bearer error="invalid_token", error_description="say 'hi' / ???""#,
            ),
            (
                BearerError::Unavailable("http://idp/x down".into()),
                None,
                "Bearer",
            ),
        ];
        for (e, realm, want) in cases {
            assert_eq!(www_authenticate(&e, realm), want, "{e:?}");
        }
        assert_eq!(BearerError::InsufficientScope("x".into()).status(), 403);
        assert_eq!(BearerError::Unavailable(String::new()).status(), 503);
        assert_eq!(BearerError::WrongClient.status(), 401);
    }
}
