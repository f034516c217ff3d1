//! The request JWT (POST/PUT body): keys from the SSA's JWKS, then iss/aud/exp/iat/nbf/jti, then replay.

use serde_json::{Map, Value};

use crate::dcr::profile::Profile;
use crate::dcr::ssa::Ssa;
use crate::echo::echo;
use crate::error::{ErrorCode, ProxyError};
use crate::jwks::{JwksCache, JwksError, KeySet};
use crate::jwt::{self, Jws, TimeRules};
use crate::store::replay::ReplayGuard;
use std::sync::Arc;

/// A request JWT may not live longer than this: its jti is remembered until exp, so exp bounds our memory.
pub const MAX_LIFETIME_SECS: i64 = 3600;

fn invalid(what: impl std::fmt::Display) -> ProxyError {
    ProxyError::rejected(
        ErrorCode::InvalidClientMetadata,
        format!("request JWT {what}"),
    )
}

pub struct VerifiedRequest {
    pub claims: Map<String, Value>,
    /// The TPP's key set as fetched for the signature, reused for the transport-certificate check.
    pub software_keys: Arc<KeySet>,
}

/// Verifies the signature with the TPP's keys and every claim; records the jti last, so that a
/// request that fails any other check does not burn its jti.
pub async fn verify(
    jws: Jws<'_>,
    ssa: &Ssa,
    jwks: &JwksCache,
    profile: &Profile,
    replay: &dyn ReplayGuard,
) -> Result<VerifiedRequest, ProxyError> {
    let (key, software_keys) = jwks
        .key_for(&ssa.jwks_uri, &jws.kid, jws.alg)
        .await
        .map_err(|e| match e {
            // The TPP's key store is unreachable or broken: OB blames the software statement that points
            // there, CDR the client metadata (the profile's rule data says which).
            JwksError::Unavailable { .. } | JwksError::Invalid { .. } => ProxyError::rejected(
                profile.kind().rules().software_jwks_unusable,
                format!("the software statement's JWKS cannot be used: {e}"),
            ),
            // The key named by the request is not there or cannot verify it: the request is at fault.
            JwksError::UnknownKid { .. } | JwksError::Unsuitable { .. } => invalid(format!(
                "cannot be verified with the software statement's JWKS: {e}"
            )),
        })?;
    jws.verify(&key).map_err(invalid)?;

    let iss = jws.required_str("iss").map_err(invalid)?;
    if iss != ssa.software_id {
        return Err(invalid(format!(
            "`iss` is `{}` but must be the software statement's software_id `{}`",
            echo(iss),
            echo(&ssa.software_id)
        )));
    }
    check_audience(jws.claims.get("aud"), &profile.cfg.audiences)?;
    let now = jwt::now();
    jwt::check_times(
        &jws.claims,
        &TimeRules {
            now,
            skew: profile.cfg.clock_skew.as_secs() as i64,
            require_exp: true,
            require_iat: true,
            // Bounds iat from below: without it any iat in the past, down to i64::MIN, passes.
            max_age: Some(profile.cfg.request_max_age.as_secs() as i64),
        },
    )
    .map_err(invalid)?;
    let exp = jwt::numeric(&jws.claims, "exp")
        .map_err(invalid)?
        .unwrap_or(now);
    if exp - now > MAX_LIFETIME_SECS {
        return Err(invalid(format!(
            "`exp` is more than {MAX_LIFETIME_SECS} seconds in the future; request JWTs must be short-lived"
        )));
    }
    let jti = jws.required_str("jti").map_err(invalid)?;
    if jti.len() > 256 {
        return Err(invalid("`jti` is longer than 256 characters"));
    }
    if let Some(sid) = jws.str_claim("software_id").map_err(invalid)?
        && sid != ssa.software_id
    {
        return Err(invalid(format!(
            "`software_id` is `{}` but the software statement says `{}`",
            echo(sid),
            echo(&ssa.software_id)
        )));
    }
    let key = crate::store::replay::replay_key(profile.name(), &ssa.software_id, jti);
    let first = replay
        .check_and_record(&key, exp)
        .await
        .map_err(|e| ProxyError::StoreUnavailable(e.to_string()))?;
    if !first {
        crate::metrics::METRICS.replay_rejections.inc();
        return Err(invalid(format!(
            "replayed jti: `{}` was already used; sign a new request JWT with a fresh jti",
            echo(jti)
        )));
    }
    Ok(VerifiedRequest {
        claims: jws.claims,
        software_keys,
    })
}

fn check_audience(aud: Option<&Value>, allowed: &[String]) -> Result<(), ProxyError> {
    let ok = match aud {
        Some(Value::String(a)) => allowed.iter().any(|x| x == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| allowed.iter().any(|x| x == a)),
        None => return Err(invalid("claim `aud` is required")),
        Some(_) => {
            return Err(invalid(
                "claim `aud` must be a string or an array of strings",
            ));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "`aud` does not name this bank; expected {}",
            allowed.join(" or ")
        )))
    }
}
