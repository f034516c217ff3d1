//! Software statement assertions: trust anchor by issuer, signature from the anchor's JWKS, claims per profile.

use serde_json::{Map, Value};
use url::Url;

use crate::dcr::profile::{Profile, TrustAnchor};
use crate::echo::echo;
use crate::error::{ErrorCode, ProxyError};
use crate::jwks::{JwksCache, JwksError};
use crate::jwt::{self, Jws, JwtError, TimeRules};

/// A verified software statement, with the claims every later step needs already typed.
pub struct Ssa {
    pub raw: String,
    pub claims: Map<String, Value>,
    pub issuer: String,
    pub software_id: String,
    pub org_id: Option<String>,
    pub jwks_uri: Url,
    pub redirect_uris: Vec<String>,
    pub roles: Vec<String>,
}

fn invalid(what: impl std::fmt::Display) -> ProxyError {
    ProxyError::rejected(
        ErrorCode::InvalidSoftwareStatement,
        format!("software_statement {what}"),
    )
}

pub async fn verify(
    raw: &str,
    anchors: &[TrustAnchor],
    jwks: &JwksCache,
    profile: &Profile,
    max_len: usize,
) -> Result<Ssa, ProxyError> {
    // Which anchor applies is decided by `iss`, so read it before anything else; until the
    // signature verifies it only selects, it is not believed.
    let all_algs: Vec<_> = anchors
        .iter()
        .flat_map(|a| a.algorithms.iter().copied())
        .collect();
    let jws = Jws::parse(raw, &all_algs, max_len).map_err(invalid)?;
    let issuer = jws.required_str("iss").map_err(invalid)?.to_string();
    let Some(anchor) = anchors.iter().find(|a| a.issuer == issuer) else {
        return Err(ProxyError::rejected(
            ErrorCode::UnapprovedSoftwareStatement,
            format!(
                "software statements issued by `{}` are not accepted by this bank",
                echo(&issuer)
            ),
        ));
    };
    if !anchor.algorithms.contains(&jws.alg) {
        return Err(invalid(JwtError::Algorithm(
            jwt::alg_label(jws.alg).into(),
            anchor
                .algorithms
                .iter()
                .map(|a| jwt::alg_label(*a))
                .collect::<Vec<_>>()
                .join(", "),
        )));
    }
    let (key, _) = jwks
        .key_for(&anchor.jwks_uri, &jws.kid, jws.alg)
        .await
        .map_err(|e| match e {
            JwksError::Unavailable { .. } | JwksError::Invalid { .. } => {
                ProxyError::UpstreamUnavailable(format!("trust anchor `{issuer}` JWKS: {e}"))
            }
            other => invalid(format!("cannot be verified: {other}")),
        })?;
    jws.verify(&key).map_err(invalid)?;

    jwt::check_times(
        &jws.claims,
        &TimeRules {
            now: jwt::now(),
            skew: profile.cfg.clock_skew.as_secs() as i64,
            require_exp: profile.ssa.requires_exp,
            require_iat: true,
            max_age: profile.cfg.ssa_max_age.map(|d| d.as_secs() as i64),
        },
    )
    .map_err(invalid)?;

    for name in profile.ssa.required {
        match jws.claims.get(*name) {
            None | Some(Value::Null) => return Err(invalid(format!("has no `{name}` claim"))),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(invalid(format!("has an empty `{name}` claim")));
            }
            _ => {}
        }
    }
    for name in profile.ssa.https_claims {
        if jws.claims.contains_key(*name) {
            https_url(&jws.claims, name)?;
        }
    }
    let software_id = jws
        .required_str("software_id")
        .map_err(invalid)?
        .to_string();
    let org_id = jws
        .str_claim("org_id")
        .map_err(invalid)?
        .map(str::to_string);
    let jwks_uri = https_url(&jws.claims, profile.ssa.jwks_uri)?;
    let redirect_uris = string_list(&jws.claims, profile.ssa.redirect_uris)?;
    let roles = match jws.claims.get(profile.ssa.roles) {
        // CDR carries one role as a string; OB a list.
        Some(Value::String(s)) => vec![s.clone()],
        _ => string_list(&jws.claims, profile.ssa.roles)?,
    };
    let claims = jws.claims;
    Ok(Ssa {
        raw: raw.to_string(),
        claims,
        issuer,
        software_id,
        org_id,
        jwks_uri,
        redirect_uris,
        roles,
    })
}

fn https_url(claims: &Map<String, Value>, name: &'static str) -> Result<Url, ProxyError> {
    let s = jwt::str_claim(claims, name)
        .map_err(invalid)?
        .ok_or_else(|| invalid(format!("has no `{name}` claim")))?;
    match Url::parse(s) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => Ok(u),
        _ => Err(invalid(format!(
            "claim `{name}` must be an absolute https URL"
        ))),
    }
}

fn string_list(claims: &Map<String, Value>, name: &'static str) -> Result<Vec<String>, ProxyError> {
    match claims.get(name) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("claim `{name}` must be an array of strings")))
            })
            .collect(),
        Some(_) => Err(invalid(format!(
            "claim `{name}` must be an array of strings"
        ))),
    }
}
