//! Management tokens that are JWTs (RFC 9068, and Keycloak's dialect of it), checked locally against the IdP's
//! published keys instead of introspected.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::Value;
use url::Url;

use super::{Refusal, TokenInfo, confirmation, split_scope};
use crate::jwks::JwksConfig;
use crate::jwks::{JwksCache, JwksError};
use crate::jwt::{Jws, TimeRules};

/// Leeway for `nbf`/`iat` of locally verified JWTs, for clock drift between us and the IdP. `exp` gets none in
/// effect: `authorize` re-checks it exactly on every call, cached or not, as it does for introspected tokens.
const JWT_CLOCK_SKEW: i64 = 30;
/// The IdP's signing keys rotate rarely; an unknown `kid` forces a refetch anyway (rate-limited).
const IDP_JWKS_TTL: Duration = Duration::from_secs(300);
const IDP_JWKS_STALE_FOR: Duration = Duration::from_secs(600);
const IDP_JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
const IDP_JWKS_MAX_BYTES: usize = 256 * 1024;

/// The IdP's key set and what its access tokens must say.
pub(super) struct LocalJwt {
    keys: JwksCache,
    pub(super) jwks_uri: Url,
    issuer: String,
    audience: Option<String>,
    algorithms: Vec<Algorithm>,
}

impl LocalJwt {
    pub(super) fn new(
        jwks_uri: Url,
        issuer: String,
        audience: Option<String>,
        algorithms: Vec<Algorithm>,
        ca_bundle: Option<PathBuf>,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, String> {
        // Config refuses these already; kept here because a forged-token hole must not depend on the caller.
        // A shared-secret algorithm would let anyone who knows a public key forge tokens (RFC 8725 §2.1).
        if let Some(a) = algorithms.iter().find(|a| {
            matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
                || crate::jwt::alg_label(**a) == "unsupported"
        }) {
            return Err(format!(
                "the JWT algorithm {a:?} is not allowed for access tokens"
            ));
        }
        // Its own cache and key set: the IdP's keys must never verify an SSA, nor the Register's a token.
        let keys = JwksCache::new(JwksConfig {
            ca_bundle,
            connect_timeout,
            timeout,
            max_bytes: IDP_JWKS_MAX_BYTES,
            ttl: IDP_JWKS_TTL,
            stale_for: IDP_JWKS_STALE_FOR,
            refetch_interval: IDP_JWKS_REFETCH_INTERVAL,
            max_urls: 1,
        })?;
        Ok(LocalJwt {
            keys,
            jwks_uri,
            issuer,
            audience,
            algorithms,
        })
    }

    /// Fetches of the IdP's JWKS so far.
    pub(super) fn fetch_count(&self) -> u64 {
        self.keys.fetch_count()
    }

    pub(super) async fn verify(&self, token: &str, max_len: usize) -> Result<TokenInfo, Refusal> {
        let rules = JwtRules {
            issuer: &self.issuer,
            audience: self.audience.as_deref(),
            now: crate::jwt::now(),
        };
        let refused = |e: &dyn fmt::Display| Refusal::Inactive(format!("access token JWT {e}"));
        let jws = Jws::parse(token, &self.algorithms, max_len).map_err(|e| refused(&e))?;
        let key = match self.keys.key_for(&self.jwks_uri, &jws.kid, jws.alg).await {
            Ok((key, _)) => key,
            Err(e @ (JwksError::Unavailable { .. } | JwksError::Invalid { .. })) => {
                return Err(Refusal::Unavailable(e.to_string()));
            }
            Err(e @ (JwksError::UnknownKid { .. } | JwksError::Unsuitable { .. })) => {
                return Err(refused(&e));
            }
        };
        jws.verify(&key).map_err(|e| refused(&e))?;
        jwt_claims(&jws, &rules).map_err(|e| refused(&e))
    }
}

struct JwtRules<'a> {
    issuer: &'a str,
    audience: Option<&'a str>,
    now: i64,
}

/// Claim rules for a verified access-token JWT (RFC 9068, with Keycloak's dialect: `azp`, `typ` claim).
fn jwt_claims(jws: &Jws<'_>, rules: &JwtRules<'_>) -> Result<TokenInfo, String> {
    // RFC 9068 §2.1 wants `at+jwt`; Keycloak writes `JWT`. Anything else (an ID token typed as such, a logout
    // token) is some other kind of JWT from the same issuer.
    if let Some(typ) = jws.header.get("typ") {
        let typ = typ.as_str().unwrap_or_default().to_ascii_lowercase();
        if !matches!(typ.as_str(), "at+jwt" | "application/at+jwt" | "jwt") {
            return Err(format!("has header typ `{typ}`, not an access token's"));
        }
    }
    // Keycloak types its tokens in the claims; its ID and refresh tokens verify with the same key.
    if let Some(t) = jws.str_claim("typ").map_err(|e| e.to_string())?
        && !t.eq_ignore_ascii_case("bearer")
    {
        return Err(format!("is a `{t}` token, not an access token"));
    }
    crate::jwt::check_times(
        &jws.claims,
        &TimeRules {
            now: rules.now,
            skew: JWT_CLOCK_SKEW,
            require_exp: true,
            require_iat: false,
            max_age: None,
        },
    )
    .map_err(|e| e.to_string())?;
    let iss = jws.required_str("iss").map_err(|e| e.to_string())?;
    if iss != rules.issuer {
        return Err(format!("has issuer `{iss}`, not `{}`", rules.issuer));
    }
    if let Some(want) = rules.audience {
        let ok = match jws.claims.get("aud") {
            Some(Value::String(a)) => a == want,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want)),
            _ => false,
        };
        if !ok {
            return Err(format!("is not meant for the audience `{want}`"));
        }
    }
    let client_id = match jws.str_claim("client_id").map_err(|e| e.to_string())? {
        Some(c) if !c.is_empty() => c,
        _ => jws
            .required_str("azp")
            .map_err(|_| "names no client_id or azp".to_string())?,
    }
    .to_string();
    let scopes = match (jws.claims.get("scope"), jws.claims.get("scp")) {
        (Some(Value::String(s)), _) => split_scope(s),
        (Some(_), _) => return Err("claim `scope` must be a string".into()),
        (None, Some(Value::Array(a))) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or("claim `scp` must be an array of strings")?,
        (None, Some(Value::String(s))) => split_scope(s),
        (None, Some(_)) => return Err("claim `scp` must be an array of strings".into()),
        (None, None) => Vec::new(),
    };
    let cnf_x5t_s256 = confirmation(jws.claims.get("cnf"))?;
    Ok(TokenInfo {
        client_id,
        scopes,
        cnf_x5t_s256,
        exp: crate::jwt::numeric(&jws.claims, "exp").map_err(|e| e.to_string())?,
    })
}
