//! Compact JWS parsing and the header rules (src/jwt.rs), then the claim and time helpers and a
//! signature check against a fixed key: everything a request JWT meets before its signature holds.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dcr_proxy::jwt::{self, Jws, TimeRules};
use jsonwebtoken::{Algorithm, DecodingKey};
use libfuzzer_sys::fuzz_target;

const ALLOWED: &[Algorithm] = &[Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA];
const MAX_LEN: usize = 16 * 1024;

/// The P-256 public key of RFC 7515 appendix A.3.
fn key() -> &'static DecodingKey {
    static K: OnceLock<DecodingKey> = OnceLock::new();
    K.get_or_init(|| {
        DecodingKey::from_ec_components(
            "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        )
        .expect("RFC 7515 A.3 key")
    })
}

/// The first byte chooses the form of the rest: a compact token as sent (even), or header JSON,
/// claims JSON and signature separated by newlines and encoded here (odd), so that mutations reach
/// the JSON behind the base64url.
fn token(data: &[u8]) -> Option<String> {
    let (&mode, rest) = data.split_first()?;
    if mode % 2 == 0 {
        return std::str::from_utf8(rest).ok().map(str::to_owned);
    }
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let (h, c, s) = (
        parts.next()?,
        parts.next().unwrap_or(b""),
        parts.next().unwrap_or(b""),
    );
    Some(format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(h),
        URL_SAFE_NO_PAD.encode(c),
        URL_SAFE_NO_PAD.encode(s)
    ))
}

fuzz_target!(|data: &[u8]| {
    let Some(token) = token(data) else {
        return;
    };
    let token = token.as_str();
    let Ok(jws) = Jws::parse(token, ALLOWED, MAX_LEN) else {
        return;
    };
    // What parse promises its callers.
    assert!(token.len() <= MAX_LEN);
    assert!(ALLOWED.contains(&jws.alg));
    assert!(!jws.kid.is_empty());
    assert!(!jws.header.contains_key("crit"));
    assert_eq!(
        jws.header.get("alg").and_then(|v| v.as_str()),
        Some(jwt::alg_label(jws.alg))
    );

    for name in ["iss", "sub", "aud", "jti", "software_statement"] {
        let _ = jws.str_claim(name);
        let _ = jws.required_str(name);
    }
    for name in ["exp", "nbf", "iat"] {
        let _ = jwt::numeric(&jws.claims, name);
    }
    for now in [0, 1_700_000_000, i64::MAX / 2] {
        let _ = jwt::check_times(
            &jws.claims,
            &TimeRules {
                now,
                skew: 10,
                require_exp: true,
                require_iat: true,
                max_age: Some(3600),
            },
        );
    }
    if jws.alg == Algorithm::ES256 {
        let _ = jws.verify(key());
    }
});
