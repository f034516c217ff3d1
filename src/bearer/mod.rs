//! Management-API access tokens (RFC 6750): the token's validity by RFC 7662 introspection or as a locally
//! verified JWT, the match to the client in the path, RFC 8705 certificate binding, the management scope, the
//! cache of what tokens are, and RFC 7009 revocation of tokens presented for the wrong client.

#[cfg(test)]
mod fake;
mod header;
mod introspection;
mod jwt;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use jsonwebtoken::Algorithm;
use serde_json::Value;
use url::Url;

use header::parse_authorization;
pub use header::{Challenge, token_of};
use introspection::Introspector;
use jwt::LocalJwt;

use crate::outbound::{HttpClient, redact_url};
use crate::secret::{Secret, ct_eq};

/// Distinct live tokens remembered at once; a management API sees few clients, so this is generous.
const CACHE_CAPACITY: u64 = 10_000;

#[derive(Clone, Debug)]
pub enum BearerMode {
    Introspection {
        endpoint: Url,
        client_id: String,
        client_secret: Secret,
    },
    Jwt {
        jwks_uri: Url,
        issuer: String,
        audience: Option<String>,
        algorithms: Vec<Algorithm>,
    },
}

#[derive(Clone, Debug)]
pub struct BearerConfig {
    pub mode: BearerMode,
    /// RFC 7009, authenticated with the introspection client's credentials.
    pub revocation_endpoint: Option<Url>,
    /// CDR: `cdr:registration`.
    pub required_scope: Option<String>,
    /// CDR: true (holder-of-key, RFC 8705).
    pub require_certificate_binding: bool,
    /// Positive results are cached at most this long and never past the token's `exp`.
    pub cache_ttl: Duration,
    pub max_token_len: usize,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub ca_bundle: Option<PathBuf>,
}

/// What an active token says about itself; holds no secret, so it may be logged.
#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub cnf_x5t_s256: Option<String>,
    pub exp: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    /// No Authorization header: RFC 6750 §3.1 wants a bare challenge, without an error code.
    #[error("no access token")]
    Missing,
    /// Not `Bearer <b64token>`, or too long. RFC 6750 would say invalid_request; DCR-RULES says invalid_token.
    #[error("malformed Authorization header: {0}")]
    Malformed(String),
    /// Introspection said not active, or the JWT does not verify or has expired.
    #[error("the access token is not active")]
    Inactive,
    /// The token belongs to another client than the one in the path.
    #[error("the access token was issued to another client")]
    WrongClient,
    #[error("the access token lacks the scope `{0}`")]
    InsufficientScope(String),
    /// Bound to another certificate, or binding required and absent, or no certificate presented.
    #[error("the access token is not bound to the presented client certificate")]
    CertificateMismatch,
    /// The introspection endpoint or the IdP's JWKS could not be used; the detail is for logs only.
    #[error("token validation is unavailable: {0}")]
    Unavailable(String),
}

/// Why a lookup did not produce an active token: `Clone` so that coalesced callers can share it.
#[derive(Debug, Clone)]
enum Refusal {
    Inactive(String),
    Unavailable(String),
}

/// How a token is learnt about: asked of the IdP, or verified here with its keys.
enum Backend {
    Introspection(Introspector),
    Jwt(LocalJwt),
}

#[derive(Clone)]
struct Cached {
    info: TokenInfo,
    until: Instant,
}

/// Each entry lives exactly as long as computed at insert, so `exp` bounds it rather than a cache-wide TTL.
struct UntilComputed;

impl moka::Expiry<[u8; 32], Cached> for UntilComputed {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Cached,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.until.saturating_duration_since(created_at))
    }
}

pub struct BearerValidator {
    backend: Backend,
    required_scope: Option<String>,
    require_certificate_binding: bool,
    cache_ttl: Duration,
    max_token_len: usize,
    /// Keyed by SHA-256 of the token so that a heap dump or a debugger never shows a usable token.
    cache: moka::future::Cache<[u8; 32], Cached>,
}

impl fmt::Debug for BearerValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.backend {
            Backend::Introspection(i) => format!("introspection {}", redact_url(&i.endpoint)),
            Backend::Jwt(j) => format!("jwt {}", redact_url(&j.jwks_uri)),
        };
        f.debug_struct("BearerValidator")
            .field("mode", &mode)
            .field("required_scope", &self.required_scope)
            .field(
                "require_certificate_binding",
                &self.require_certificate_binding,
            )
            .field("cached_tokens", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl BearerValidator {
    pub fn new(cfg: BearerConfig) -> Result<Self, String> {
        // Settings arrive validated by `config` (timeouts, scope shape, URLs, credentials, which mode may revoke);
        // what can still fail here is loading files and building clients.
        let backend = match cfg.mode {
            BearerMode::Introspection {
                endpoint,
                client_id,
                client_secret,
            } => Backend::Introspection(Introspector::new(
                HttpClient::new(
                    cfg.ca_bundle.as_deref(),
                    cfg.connect_timeout,
                    cfg.timeout,
                    false,
                )?,
                endpoint,
                cfg.revocation_endpoint,
                client_id,
                client_secret,
            )?),
            BearerMode::Jwt {
                jwks_uri,
                issuer,
                audience,
                algorithms,
            } => Backend::Jwt(LocalJwt::new(
                jwks_uri,
                issuer,
                audience,
                algorithms,
                cfg.ca_bundle,
                cfg.connect_timeout,
                cfg.timeout,
            )?),
        };
        let cache = moka::future::Cache::builder()
            .max_capacity(CACHE_CAPACITY)
            .expire_after(UntilComputed)
            .build();
        Ok(BearerValidator {
            backend,
            required_scope: cfg.required_scope,
            require_certificate_binding: cfg.require_certificate_binding,
            cache_ttl: cfg.cache_ttl,
            max_token_len: cfg.max_token_len,
            cache,
        })
    }

    /// Network calls made to learn about tokens: introspections, or in JWT mode fetches of the IdP's JWKS.
    pub fn introspections(&self) -> u64 {
        match &self.backend {
            Backend::Introspection(i) => i.calls(),
            Backend::Jwt(j) => j.fetch_count(),
        }
    }

    /// Validates the Authorization header value for a request on /register/{client_id} over a connection whose
    /// verified certificate thumbprint is `presented_x5t`.
    pub async fn authorize(
        &self,
        authorization: Option<&HeaderValue>,
        client_id: &str,
        presented_x5t: Option<&str>,
    ) -> Result<TokenInfo, BearerError> {
        let token = parse_authorization(authorization, self.max_token_len)?;
        let info = self.lookup(token).await.map_err(|r| match r {
            Refusal::Inactive(why) => {
                tracing::debug!(client_id, reason = %why, "access token refused");
                BearerError::Inactive
            }
            Refusal::Unavailable(why) => {
                tracing::warn!(client_id, reason = %why, "access token could not be checked");
                BearerError::Unavailable(why)
            }
        })?;
        // A cached entry may outlive `exp` by the rounding of the cache's clock; the token may not.
        if info.exp.is_some_and(|exp| exp <= crate::jwt::now()) {
            return Err(BearerError::Inactive);
        }
        self.check(&info, client_id, presented_x5t)?;
        Ok(info)
    }

    /// Runs on every call, cached or not: the cache says what a token is, never what it may do here.
    fn check(
        &self,
        info: &TokenInfo,
        client_id: &str,
        presented_x5t: Option<&str>,
    ) -> Result<(), BearerError> {
        if !ct_eq(info.client_id.as_bytes(), client_id.as_bytes()) {
            return Err(BearerError::WrongClient);
        }
        // Binding before scope: until the caller has proved it holds the token's key, it learns nothing more
        // about the token. Checking scope first would let someone with a stolen token but without the
        // certificate probe, by 403 versus 401, whether that token could manage registrations.
        match (&info.cnf_x5t_s256, presented_x5t) {
            (Some(bound), Some(presented)) if ct_eq(bound.as_bytes(), presented.as_bytes()) => {}
            (Some(_), _) => return Err(BearerError::CertificateMismatch),
            (None, _) if self.require_certificate_binding => {
                return Err(BearerError::CertificateMismatch);
            }
            (None, _) => {}
        }
        if let Some(scope) = &self.required_scope
            && !info.scopes.iter().any(|s| s == scope)
        {
            return Err(BearerError::InsufficientScope(scope.clone()));
        }
        Ok(())
    }

    /// What the token is, from the cache or the backend. Concurrent callers with one token share one lookup.
    async fn lookup(&self, token: &str) -> Result<TokenInfo, Refusal> {
        let key = token_key(token);
        self.cache
            .try_get_with(key, async {
                let info = match &self.backend {
                    Backend::Introspection(i) => i.introspect(token).await?,
                    Backend::Jwt(j) => j.verify(token, self.max_token_len).await?,
                };
                let until =
                    Instant::now() + cache_lifetime(self.cache_ttl, info.exp, SystemTime::now());
                Ok::<_, Refusal>(Cached { info, until })
            })
            .await
            .map(|c| c.info)
            .map_err(|e| (*e).clone())
    }

    /// RFC 7009 revocation of a token presented for the wrong client (OB: the bank revokes it). Best effort;
    /// failures are logged, never returned, because the caller's answer to the client does not depend on them.
    pub async fn revoke(&self, token: &str) {
        if token.is_empty() {
            return;
        }
        self.cache.invalidate(&token_key(token)).await;
        match &self.backend {
            Backend::Introspection(i) => i.revoke(token).await,
            Backend::Jwt(_) => {
                tracing::debug!("no revocation endpoint configured; token not revoked")
            }
        }
    }
}

fn token_key(token: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// How long a positive result may be reused: the configured TTL, cut short by the token's own expiry.
fn cache_lifetime(ttl: Duration, exp: Option<i64>, now: SystemTime) -> Duration {
    let Some(exp) = exp else {
        return ttl;
    };
    let Ok(secs) = u64::try_from(exp) else {
        return Duration::ZERO;
    };
    match UNIX_EPOCH.checked_add(Duration::from_secs(secs)) {
        Some(at) => ttl.min(at.duration_since(now).unwrap_or(Duration::ZERO)),
        // Beyond what the clock can represent: the TTL alone bounds it.
        None => ttl,
    }
}

fn split_scope(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// The RFC 8705 thumbprint from `cnf`. A token bound some other way (DPoP's `jkt`) cannot be honoured as a
/// Bearer token, and a `cnf` we cannot read must not silently become "unbound".
fn confirmation(cnf: Option<&Value>) -> Result<Option<String>, String> {
    let cnf = match cnf {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(c)) => c,
        Some(_) => return Err("cnf is not an object".into()),
    };
    if cnf.contains_key("jkt") {
        return Err("the token is DPoP-bound (cnf.jkt) but was presented as a Bearer token".into());
    }
    match cnf.get("x5t#S256") {
        None => {
            if cnf.is_empty() {
                Ok(None)
            } else {
                Err("cnf holds a confirmation method we cannot check".into())
            }
        }
        Some(Value::String(t)) if !t.trim_end_matches('=').is_empty() => {
            Ok(Some(t.trim_end_matches('=').to_string()))
        }
        Some(_) => Err("cnf.x5t#S256 is not a non-empty string".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use tokio::task::JoinSet;

    use super::fake::*;
    use super::*;

    #[test]
    fn cache_lifetime_is_the_ttl_cut_short_by_exp() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ttl = Duration::from_secs(60);
        let cases = [
            (None, ttl),
            (Some(2_000_000), ttl),
            (Some(1_000_010), Duration::from_secs(10)),
            (Some(1_000_000), Duration::ZERO),
            (Some(999_000), Duration::ZERO),
            (Some(-5), Duration::ZERO),
            (Some(i64::MAX), ttl),
        ];
        for (exp, want) in cases {
            assert_eq!(cache_lifetime(ttl, exp, now), want, "{exp:?}");
        }
        assert_eq!(
            cache_lifetime(Duration::ZERO, None, now),
            Duration::ZERO,
            "a zero TTL disables caching"
        );
    }

    #[tokio::test]
    async fn an_active_token_of_the_client_with_the_scope_is_accepted() {
        let fake = fake_introspection_endpoint().await;
        fake.answer("tok1", active(CLIENT, "openid cdr:registration"));
        let v = BearerValidator::new(config(&fake)).expect("validator");
        let info = v
            .authorize(Some(&bearer("tok1")), CLIENT, None)
            .await
            .expect("accepted");
        assert_eq!(info.client_id, CLIENT);
        assert_eq!(info.scopes, ["openid", "cdr:registration"]);
        assert_eq!(v.introspections(), 1);
    }

    #[tokio::test]
    async fn a_token_without_the_required_scope_is_insufficient_scope() {
        let fake = fake_introspection_endpoint().await;
        fake.answer("narrow", active(CLIENT, "openid cdr:registrationX"));
        fake.answer("none", json!({"active": true, "client_id": CLIENT}));
        let v = BearerValidator::new(config(&fake)).expect("validator");
        for t in ["narrow", "none"] {
            match v.authorize(Some(&bearer(t)), CLIENT, None).await {
                Err(BearerError::InsufficientScope(s)) => assert_eq!(s, "cdr:registration"),
                other => panic!("{t}: {other:?}"),
            }
        }
        let mut cfg = config(&fake);
        cfg.required_scope = None;
        let v = BearerValidator::new(cfg).expect("validator");
        assert!(
            v.authorize(Some(&bearer("none")), CLIENT, None)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn certificate_binding_is_checked_before_scope() {
        let fake = fake_introspection_endpoint().await;
        let bound = |scope: &str, x5t: &str| {
            json!({"active": true, "client_id": CLIENT, "scope": scope, "exp": crate::jwt::now() + 600,
                   "cnf": {"x5t#S256": x5t}})
        };
        fake.answer("bound", bound("cdr:registration", X5T));
        fake.answer("bound-narrow", bound("openid", X5T));
        fake.answer("unbound", active(CLIENT, "cdr:registration"));
        let other = "AAAK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2";
        let mut cfg = config(&fake);
        cfg.require_certificate_binding = true;
        let v = BearerValidator::new(cfg).expect("validator");
        let run = |t: &'static str, x5t: Option<&'static str>| {
            let v = &v;
            async move { v.authorize(Some(&bearer(t)), CLIENT, x5t).await }
        };
        assert!(run("bound", Some(X5T)).await.is_ok());
        assert!(matches!(
            run("bound", Some(other)).await,
            Err(BearerError::CertificateMismatch)
        ));
        assert!(matches!(
            run("bound", None).await,
            Err(BearerError::CertificateMismatch)
        ));
        assert!(matches!(
            run("unbound", Some(X5T)).await,
            Err(BearerError::CertificateMismatch)
        ));
        // Without the certificate nothing is learnt about the scope; with it, the scope is checked.
        assert!(matches!(
            run("bound-narrow", Some(other)).await,
            Err(BearerError::CertificateMismatch)
        ));
        assert!(matches!(
            run("bound-narrow", Some(X5T)).await,
            Err(BearerError::InsufficientScope(_))
        ));

        let mut cfg = config(&fake);
        cfg.require_certificate_binding = false;
        let v = BearerValidator::new(cfg).expect("validator");
        assert!(
            v.authorize(Some(&bearer("unbound")), CLIENT, None)
                .await
                .is_ok()
        );
        assert!(
            matches!(
                v.authorize(Some(&bearer("bound")), CLIENT, Some(other))
                    .await,
                Err(BearerError::CertificateMismatch)
            ),
            "a bound token is held to its certificate even where binding is optional"
        );
    }

    #[tokio::test]
    async fn a_cached_token_is_still_checked_for_client_binding_and_scope() {
        let fake = fake_introspection_endpoint().await;
        fake.answer(
            "tok",
            json!({"active": true, "client_id": CLIENT, "scope": "cdr:registration",
                   "exp": crate::jwt::now() + 600, "cnf": {"x5t#S256": X5T}}),
        );
        let v = BearerValidator::new(config(&fake)).expect("validator");
        let h = bearer("tok");
        assert!(v.authorize(Some(&h), CLIENT, Some(X5T)).await.is_ok());
        assert!(v.authorize(Some(&h), CLIENT, Some(X5T)).await.is_ok());
        assert!(matches!(
            v.authorize(Some(&h), "client-2", Some(X5T)).await,
            Err(BearerError::WrongClient)
        ));
        assert!(matches!(
            v.authorize(Some(&h), CLIENT, None).await,
            Err(BearerError::CertificateMismatch)
        ));
        assert_eq!(v.introspections(), 1, "one network call, then the cache");
        assert!(
            v.cache.get(&token_key("tok")).await.is_some(),
            "the cache is keyed by the token's hash"
        );
    }

    #[tokio::test]
    async fn concurrent_uses_of_one_token_share_one_introspection() {
        let fake = fake_introspection_endpoint().await;
        fake.answer("tok", active(CLIENT, "cdr:registration"));
        fake.lock().delay = Some(Duration::from_millis(200));
        let v = Arc::new(BearerValidator::new(config(&fake)).expect("validator"));
        let mut set = JoinSet::new();
        for _ in 0..8 {
            let v = v.clone();
            set.spawn(async move {
                v.authorize(Some(&bearer("tok")), CLIENT, None)
                    .await
                    .is_ok()
            });
        }
        while let Some(ok) = set.join_next().await {
            assert!(ok.expect("task"));
        }
        assert_eq!(v.introspections(), 1);
    }

    #[tokio::test]
    async fn a_cached_token_is_not_served_past_the_ttl_or_its_exp() {
        let fake = fake_introspection_endpoint().await;
        fake.answer("long", active(CLIENT, "cdr:registration"));
        let mut cfg = config(&fake);
        cfg.cache_ttl = Duration::from_millis(300);
        let v = BearerValidator::new(cfg).expect("validator");
        assert!(
            v.authorize(Some(&bearer("long")), CLIENT, None)
                .await
                .is_ok()
        );
        assert!(
            v.authorize(Some(&bearer("long")), CLIENT, None)
                .await
                .is_ok()
        );
        assert_eq!(v.introspections(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            v.authorize(Some(&bearer("long")), CLIENT, None)
                .await
                .is_ok()
        );
        assert_eq!(
            v.introspections(),
            2,
            "past the TTL the endpoint is asked again"
        );

        let exp = crate::jwt::now() + 2;
        fake.answer(
            "short",
            json!({"active": true, "client_id": CLIENT, "scope": "cdr:registration", "exp": exp}),
        );
        let mut cfg = config(&fake);
        cfg.cache_ttl = Duration::from_secs(60);
        let v = BearerValidator::new(cfg).expect("validator");
        assert!(
            v.authorize(Some(&bearer("short")), CLIENT, None)
                .await
                .is_ok()
        );
        assert!(v.cache.get(&token_key("short")).await.is_some());
        let past_exp = (UNIX_EPOCH + Duration::from_secs(exp as u64) + Duration::from_millis(100))
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(past_exp).await;
        assert!(
            v.cache.get(&token_key("short")).await.is_none(),
            "the entry died with the token's exp, not the 60 s TTL"
        );
        assert!(matches!(
            v.authorize(Some(&bearer("short")), CLIENT, None).await,
            Err(BearerError::Inactive)
        ));
    }

    #[tokio::test]
    async fn malformed_and_missing_headers_never_reach_the_endpoint() {
        let fake = fake_introspection_endpoint().await;
        let mut cfg = config(&fake);
        cfg.max_token_len = 10;
        let v = BearerValidator::new(cfg).expect("validator");
        assert!(matches!(
            v.authorize(None, CLIENT, None).await,
            Err(BearerError::Missing)
        ));
        for h in ["Basic abc", "Bearer a b", "Bearer 12345678901"] {
            assert!(
                matches!(
                    v.authorize(Some(&hv(h)), CLIENT, None).await,
                    Err(BearerError::Malformed(_))
                ),
                "{h}"
            );
        }
        assert_eq!(v.introspections(), 0);
        assert!(fake.seen().is_empty());
    }

    #[tokio::test]
    async fn secrets_stay_out_of_debug_output() {
        let fake = fake_introspection_endpoint().await;
        fake.answer("tok-secret-value", active("client-2", "cdr:registration"));
        let cfg = config(&fake);
        let v = BearerValidator::new(cfg.clone()).expect("validator");
        let e = v
            .authorize(Some(&bearer("tok-secret-value")), CLIENT, None)
            .await
            .expect_err("wrong client");
        let printed = format!("{cfg:?} {v:?} {e:?} {e}");
        assert!(!printed.contains("s3cr"), "{printed}");
        assert!(!printed.contains("tok-secret-value"), "{printed}");
    }

    #[test]
    fn a_shared_secret_algorithm_is_refused_even_past_config() {
        let jwt = |algorithms: Vec<Algorithm>| BearerConfig {
            mode: BearerMode::Jwt {
                jwks_uri: Url::parse("https://idp.example/jwks").expect("url"),
                issuer: "https://idp.example".into(),
                audience: None,
                algorithms,
            },
            revocation_endpoint: None,
            required_scope: None,
            require_certificate_binding: true,
            cache_ttl: Duration::from_secs(60),
            max_token_len: 8192,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            ca_bundle: Some(ca_bundle()),
        };
        assert!(BearerValidator::new(jwt(vec![Algorithm::PS256])).is_ok());
        assert!(BearerValidator::new(jwt(vec![Algorithm::PS256, Algorithm::HS256])).is_err());
    }
}
