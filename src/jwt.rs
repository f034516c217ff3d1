//! Compact JWS parsing, signature verification and time claims, shared by the SSA and request-JWT validators.
//! The validators stay separate (own key sets, own allow-lists, RFC 8725 §3.12); only the mechanics live here.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::echo::echo;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("is not a compact JWS (three base64url parts separated by dots)")]
    Malformed,
    #[error("is larger than {0} bytes")]
    TooLarge(usize),
    #[error("has a header that is not a JSON object")]
    BadHeader,
    #[error("has claims that are not a JSON object")]
    BadClaims,
    /// RFC 7515 §4 and RFC 7519 §4 let a parser either refuse duplicate names or keep the last one; keeping
    /// one would let two parsers of the same token (ours, the TPP's, an auditor's) read different values.
    #[error("has the member `{1}` more than once in its {0}; JSON member names must be unique")]
    Duplicate(&'static str, String),
    #[error("is signed with `{0}`, which is not accepted here (allowed: {1})")]
    Algorithm(String, String),
    #[error("has no `kid` in its header, so its key cannot be chosen")]
    MissingKid,
    #[error("marks header parameters {0:?} as critical, which we do not understand")]
    Critical(Vec<String>),
    #[error("has a signature that does not verify with key `{0}`")]
    Signature(String),
    #[error("claim `{0}` is required")]
    Missing(&'static str),
    #[error("claim `{0}` {1}")]
    Claim(&'static str, String),
    #[error("has expired (exp {exp}, now {now})")]
    Expired { exp: i64, now: i64 },
    #[error("is not valid yet (nbf {nbf}, now {now})")]
    NotYetValid { nbf: i64, now: i64 },
    #[error("was issued in the future (iat {iat}, now {now})")]
    IssuedInFuture { iat: i64, now: i64 },
    #[error("is too old (iat {iat}, maximum age {max_age}s)")]
    TooOld { iat: i64, max_age: i64 },
}

/// A parsed but not yet verified JWS; nothing in it may be trusted until `verify` succeeds.
pub struct Jws<'a> {
    signing_input: &'a str,
    signature: &'a str,
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    pub alg: Algorithm,
    pub kid: String,
}

impl<'a> Jws<'a> {
    /// Splits and decodes, and applies the header rules: allowed `alg`, `kid` present, no `crit`.
    /// `jku`, `x5u`, `jwk` and `x5c` are deliberately ignored: keys come only from configured JWKS.
    pub fn parse(token: &'a str, allowed: &[Algorithm], max_len: usize) -> Result<Self, JwtError> {
        if token.len() > max_len {
            return Err(JwtError::TooLarge(max_len));
        }
        let mut parts = token.splitn(4, '.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        if h.is_empty() || p.is_empty() {
            return Err(JwtError::Malformed);
        }
        let header = decode_json(h).map_err(|e| e.into_error("header", JwtError::BadHeader))?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(JwtError::BadHeader)?;
        let alg = allowed
            .iter()
            .copied()
            .find(|a| alg_label(*a) == alg_name)
            .ok_or_else(|| {
                JwtError::Algorithm(
                    echo(alg_name).to_string(),
                    allowed
                        .iter()
                        .map(|a| alg_label(*a))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })?;
        if let Some(crit) = header.get("crit") {
            let names = crit
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(|s| echo(s).to_string()))
                        .collect()
                })
                .unwrap_or_default();
            return Err(JwtError::Critical(names));
        }
        let kid = match header.get("kid") {
            Some(Value::String(k)) if !k.is_empty() => k.clone(),
            _ => return Err(JwtError::MissingKid),
        };
        let claims = decode_json(p).map_err(|e| e.into_error("claims", JwtError::BadClaims))?;
        let signing_input = &token[..h.len() + 1 + p.len()];
        Ok(Jws {
            signing_input,
            signature: s,
            header,
            claims,
            alg,
            kid,
        })
    }

    pub fn verify(&self, key: &DecodingKey) -> Result<(), JwtError> {
        match jsonwebtoken::crypto::verify(
            self.signature,
            self.signing_input.as_bytes(),
            key,
            self.alg,
        ) {
            Ok(true) => Ok(()),
            _ => Err(JwtError::Signature(echo(&self.kid).to_string())),
        }
    }

    /// A string claim: absent is `None`, any other JSON type is an error rather than "absent".
    pub fn str_claim(&self, name: &'static str) -> Result<Option<&str>, JwtError> {
        str_claim(&self.claims, name)
    }

    pub fn required_str(&self, name: &'static str) -> Result<&str, JwtError> {
        match self.str_claim(name)? {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(JwtError::Claim(name, "must not be empty".into())),
            None => Err(JwtError::Missing(name)),
        }
    }
}

pub fn str_claim<'m>(
    claims: &'m Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'m str>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JwtError::Claim(name, "must be a string".into())),
    }
}

pub fn alg_label(a: Algorithm) -> &'static str {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        // A future variant: never on an allow-list until this match names it.
        _ => "unsupported",
    }
}

/// Why a JWS part did not decode to a JSON object.
enum DecodeFailure {
    NotAnObject,
    Duplicate(String),
}

impl DecodeFailure {
    fn into_error(self, part: &'static str, otherwise: JwtError) -> JwtError {
        match self {
            DecodeFailure::NotAnObject => otherwise,
            DecodeFailure::Duplicate(name) => JwtError::Duplicate(part, echo(&name).to_string()),
        }
    }
}

fn decode_json(part: &str) -> Result<Map<String, Value>, DecodeFailure> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| DecodeFailure::NotAnObject)?;
    let duplicate = std::cell::Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let parsed = Unique {
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match (parsed, duplicate.take()) {
        (_, Some(name)) => Err(DecodeFailure::Duplicate(name)),
        (Ok(Value::Object(m)), None) => Ok(m),
        _ => Err(DecodeFailure::NotAnObject),
    }
}

/// Builds a `serde_json::Value` as `serde_json` would, except that an object naming a member twice, at any
/// depth, is an error; the name is left in `duplicate`. One pass, no second parse.
#[derive(Clone, Copy)]
struct Unique<'a> {
    duplicate: &'a std::cell::Cell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                self.duplicate.set(Some(name));
                return Err(de::Error::custom("duplicate member name"));
            }
            let value = map.next_value_seed(self)?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

/// What a token kind demands of its time claims.
pub struct TimeRules {
    pub now: i64,
    pub skew: i64,
    pub require_exp: bool,
    pub require_iat: bool,
    pub max_age: Option<i64>,
}

/// `exp`, `nbf` and `iat` must be numbers when present (a string is an error, never "absent").
/// The arithmetic saturates: a claim near `i64::MAX` or `i64::MIN` (or a huge float, which `numeric`
/// saturates) must be judged as very late or very early, not wrap around or panic.
pub fn check_times(claims: &Map<String, Value>, r: &TimeRules) -> Result<(), JwtError> {
    let exp = numeric(claims, "exp")?;
    let nbf = numeric(claims, "nbf")?;
    let iat = numeric(claims, "iat")?;
    match exp {
        // Saturating: an attacker chooses these numbers, and i64::MIN or MAX must not wrap into range.
        Some(exp) if r.now > exp.saturating_add(r.skew) => {
            return Err(JwtError::Expired { exp, now: r.now });
        }
        None if r.require_exp => return Err(JwtError::Missing("exp")),
        _ => {}
    }
    if let Some(nbf) = nbf
        && nbf > r.now.saturating_add(r.skew)
    {
        return Err(JwtError::NotYetValid { nbf, now: r.now });
    }
    match iat {
        Some(iat) if iat > r.now.saturating_add(r.skew) => {
            return Err(JwtError::IssuedInFuture { iat, now: r.now });
        }
        Some(iat) => {
            if let Some(max_age) = r.max_age
                && r.now.saturating_sub(iat) > max_age.saturating_add(r.skew)
            {
                return Err(JwtError::TooOld { iat, max_age });
            }
        }
        None if r.require_iat => return Err(JwtError::Missing("iat")),
        None => {}
    }
    Ok(())
}

pub fn numeric(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(JwtError::Claim(name, "is not a usable number".into())),
        Some(_) => Err(JwtError::Claim(
            name,
            "must be a number (seconds since the epoch)".into(),
        )),
    }
}

/// Seconds since the epoch (a JWT NumericDate); the one clock of the crate's timestamps.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(header: Value, claims: Value) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    const ALLOWED: &[Algorithm] = &[Algorithm::PS256, Algorithm::ES256];

    #[test]
    fn header_rules_refuse_none_hmac_missing_kid_and_crit() {
        let cases = [
            (json!({"alg":"none","kid":"k"}), "none"),
            (json!({"alg":"HS256","kid":"k"}), "HS256"),
            (json!({"alg":"RS256","kid":"k"}), "RS256"),
            (json!({"alg":"PS256"}), "kid"),
            (json!({"alg":"PS256","kid":""}), "kid"),
            (json!({"alg":"PS256","kid":"k","crit":["b64"]}), "critical"),
            (json!({"kid":"k"}), "header"),
        ];
        for (h, want) in cases {
            let t = token(h.clone(), json!({}));
            let e = Jws::parse(&t, ALLOWED, 1000)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(want), "{h}: {e}");
        }
        let t = token(
            json!({"alg":"PS256","kid":"k","jku":"https://evil"}),
            json!({"a":1}),
        );
        let j = Jws::parse(&t, ALLOWED, 1000).expect("jku is ignored, not used");
        assert_eq!(j.kid, "k");
    }

    #[test]
    fn shapes_that_are_not_compact_jws_are_malformed() {
        for t in ["", "a.b", "a.b.c.d", ".b.c", "a..c", "!!.??.x"] {
            assert!(Jws::parse(t, ALLOWED, 1000).is_err(), "{t}");
        }
        let long = token(
            json!({"alg":"PS256","kid":"k"}),
            json!({"x": "y".repeat(100)}),
        );
        assert_eq!(
            Jws::parse(&long, ALLOWED, 50).err(),
            Some(JwtError::TooLarge(50))
        );
    }

    fn raw_token(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn a_member_named_twice_is_refused_in_the_header_the_claims_and_nested_objects() {
        let ok_header = r#"{"alg":"PS256","kid":"k"}"#;
        let cases = [
            (
                r#"{"alg":"PS256","kid":"k","alg":"none"}"#,
                "{}",
                JwtError::Duplicate("header", "alg".into()),
            ),
            (
                ok_header,
                r#"{"software_id":"a","iss":"a","software_id":"b"}"#,
                JwtError::Duplicate("claims", "software_id".into()),
            ),
            (
                ok_header,
                r#"{"org":{"status":"Active","status":"Revoked"}}"#,
                JwtError::Duplicate("claims", "status".into()),
            ),
            (
                ok_header,
                r#"{"list":[{"a":1},{"b":1,"b":2}]}"#,
                JwtError::Duplicate("claims", "b".into()),
            ),
            // Equal after JSON unescaping is the same name.
            (
                r#"{"alg":"PS256","kid":"k","\u006bid":"other"}"#,
                "{}",
                JwtError::Duplicate("header", "kid".into()),
            ),
        ];
        for (header, claims, want) in cases {
            let got = Jws::parse(&raw_token(header, claims), ALLOWED, 1000).err();
            assert_eq!(got, Some(want), "{header} {claims}");
        }
        let fine = raw_token(
            ok_header,
            r#"{"a":{"x":1},"b":{"x":[1,1.5,-2,null,true,"s"]}}"#,
        );
        let j =
            Jws::parse(&fine, ALLOWED, 1000).expect("the same name in different objects is fine");
        assert_eq!(j.claims["b"]["x"], json!([1, 1.5, -2, null, true, "s"]));
        assert_eq!(
            Jws::parse(&raw_token(ok_header, "{} {}"), ALLOWED, 1000).err(),
            Some(JwtError::BadClaims),
            "trailing data after the object"
        );
    }

    #[test]
    fn extreme_time_values_cannot_wrap_into_range() {
        let c = |v: Value| v.as_object().cloned().expect("object");
        let rules = TimeRules {
            now: 1_700_000_000,
            skew: 10,
            require_exp: true,
            require_iat: true,
            max_age: Some(300),
        };
        let ok_exp = rules.now + 60;
        assert!(matches!(
            check_times(&c(json!({"iat": i64::MIN, "exp": ok_exp})), &rules),
            Err(JwtError::TooOld { .. })
        ));
        assert!(matches!(
            check_times(&c(json!({"iat": -1e300, "exp": ok_exp})), &rules),
            Err(JwtError::TooOld { .. })
        ));
        assert!(matches!(
            check_times(&c(json!({"iat": rules.now - 311, "exp": ok_exp})), &rules),
            Err(JwtError::TooOld { .. })
        ));
        assert!(check_times(&c(json!({"iat": rules.now - 310, "exp": ok_exp})), &rules).is_ok());
        assert!(matches!(
            check_times(&c(json!({"iat": rules.now, "exp": i64::MIN})), &rules),
            Err(JwtError::Expired { .. })
        ));
        assert!(matches!(
            check_times(&c(json!({"iat": i64::MAX, "exp": ok_exp})), &rules),
            Err(JwtError::IssuedInFuture { .. })
        ));
        assert!(matches!(
            check_times(
                &c(json!({"iat": rules.now, "exp": ok_exp, "nbf": i64::MAX})),
                &rules
            ),
            Err(JwtError::NotYetValid { .. })
        ));
    }

    #[test]
    fn time_claims_must_be_numbers_and_in_range() {
        let rules = |require_exp| TimeRules {
            now: 1000,
            skew: 10,
            require_exp,
            require_iat: true,
            max_age: Some(100),
        };
        let c = |v: Value| v.as_object().cloned().expect("object");
        assert!(check_times(&c(json!({"iat":1000,"exp":1100})), &rules(true)).is_ok());
        assert!(
            check_times(&c(json!({"iat":1000,"exp":995})), &rules(true)).is_ok(),
            "within skew"
        );
        assert!(matches!(
            check_times(&c(json!({"iat":1000,"exp":900})), &rules(true)),
            Err(JwtError::Expired { .. })
        ));
        assert_eq!(
            check_times(&c(json!({"iat":1000})), &rules(true)),
            Err(JwtError::Missing("exp"))
        );
        assert!(check_times(&c(json!({"iat":1000})), &rules(false)).is_ok());
        assert!(matches!(
            check_times(&c(json!({"iat":"1000"})), &rules(false)),
            Err(JwtError::Claim("iat", _))
        ));
        assert!(matches!(
            check_times(&c(json!({"iat":1000,"exp":"2000"})), &rules(true)),
            Err(JwtError::Claim("exp", _))
        ));
        assert!(matches!(
            check_times(&c(json!({"iat":1000,"nbf":1100})), &rules(false)),
            Err(JwtError::NotYetValid { .. })
        ));
        assert!(matches!(
            check_times(&c(json!({"iat":1100})), &rules(false)),
            Err(JwtError::IssuedInFuture { .. })
        ));
        assert!(matches!(
            check_times(&c(json!({"iat":800})), &rules(false)),
            Err(JwtError::TooOld { .. })
        ));
        assert_eq!(
            check_times(&c(json!({})), &rules(false)),
            Err(JwtError::Missing("iat"))
        );
    }

    #[test]
    fn time_claims_at_the_ends_of_the_range_neither_wrap_nor_panic() {
        // Found by fuzz/jws: `exp + skew` overflowed (a panic in debug builds, a wrap in release).
        let rules = TimeRules {
            now: 1000,
            skew: 10,
            require_exp: true,
            require_iat: true,
            max_age: Some(100),
        };
        let c = |v: Value| v.as_object().cloned().expect("object");
        assert_eq!(
            check_times(&c(json!({"iat": 1000, "exp": i64::MAX})), &rules),
            Ok(()),
            "an exp at the end of time has not expired"
        );
        assert_eq!(
            check_times(&c(json!({"iat": 1000, "exp": 1.5e300})), &rules),
            Ok(()),
            "a huge float exp saturates to the end of time"
        );
        assert!(matches!(
            check_times(&c(json!({"iat": i64::MIN, "exp": 1100})), &rules),
            Err(JwtError::TooOld { .. })
        ));
        assert!(matches!(
            check_times(&c(json!({"iat": 1000, "exp": i64::MIN})), &rules),
            Err(JwtError::Expired { .. })
        ));
        let at_the_end = TimeRules {
            now: i64::MAX,
            skew: 10,
            require_exp: false,
            require_iat: false,
            max_age: Some(i64::MAX),
        };
        assert_eq!(
            check_times(&c(json!({"nbf": i64::MAX, "iat": i64::MIN})), &at_the_end),
            Ok(())
        );
    }
}
