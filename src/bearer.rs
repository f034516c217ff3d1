//! Management-API access tokens (RFC 6750): the `Authorization: Bearer` header, the token's validity by RFC 7662
//! introspection or as a locally verified JWT, the match to the client in the path, RFC 8705 certificate binding,
//! the management scope, and RFC 7009 revocation of tokens presented for the wrong client.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use url::Url;

use crate::jwks::JwksConfig;
use crate::jwks::{JwksCache, JwksError};
use crate::jwt::{self, Jws, TimeRules};
use crate::outbound::{HttpClient, redact_url};
use crate::secret::{Secret, ct_eq};

/// An introspection answer is a few hundred bytes; anything near this is not one.
const MAX_INTROSPECTION_BYTES: usize = 64 * 1024;
/// Distinct live tokens remembered at once; a management API sees few clients, so this is generous.
const CACHE_CAPACITY: u64 = 10_000;
/// Leeway for `nbf`/`iat` of locally verified JWTs, for clock drift between us and the IdP. `exp` gets none in
/// effect: `authorize` re-checks it exactly on every call, cached or not, as it does for introspected tokens.
const JWT_CLOCK_SKEW: i64 = 30;
/// The IdP's signing keys rotate rarely; an unknown `kid` forces a refetch anyway (rate-limited).
const IDP_JWKS_TTL: Duration = Duration::from_secs(300);
const IDP_JWKS_STALE_FOR: Duration = Duration::from_secs(600);
const IDP_JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
const IDP_JWKS_MAX_BYTES: usize = 256 * 1024;

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

impl BearerError {
    /// The HTTP status DCR-RULES asks for; the caller may still override it (CDR's unknown-client wording).
    pub fn status(&self) -> StatusCode {
        match self {
            BearerError::Missing
            | BearerError::Malformed(_)
            | BearerError::Inactive
            | BearerError::WrongClient
            | BearerError::CertificateMismatch => StatusCode::UNAUTHORIZED,
            BearerError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            BearerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A small closed set, for logs and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            BearerError::Missing => "missing_token",
            BearerError::Malformed(_) => "malformed_token",
            BearerError::Inactive => "inactive_token",
            BearerError::WrongClient => "wrong_client",
            BearerError::InsufficientScope(_) => "insufficient_scope",
            BearerError::CertificateMismatch => "certificate_mismatch",
            BearerError::Unavailable(_) => "validation_unavailable",
        }
    }

    /// Words for the client: never the token, never an internal URL or upstream detail.
    pub fn description(&self) -> String {
        match self {
            BearerError::Missing => "an access token is required".into(),
            BearerError::Malformed(why) => why.clone(),
            BearerError::Inactive => "the access token is invalid, expired or revoked".into(),
            BearerError::WrongClient => "the access token was not issued to this client".into(),
            BearerError::InsufficientScope(s) => format!("the access token lacks the scope {s}"),
            BearerError::CertificateMismatch => {
                "the access token is not bound to the client certificate of this connection".into()
            }
            BearerError::Unavailable(_) => {
                "the access token cannot be checked right now; try again later".into()
            }
        }
    }
}

/// Why a lookup did not produce an active token: `Clone` so that coalesced callers can share it.
#[derive(Debug, Clone)]
enum Refusal {
    Inactive(String),
    Unavailable(String),
}

// One per process, built at start: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Introspection {
        http: HttpClient,
        endpoint: Url,
        client_id: String,
        client_secret: Secret,
    },
    Jwt {
        keys: JwksCache,
        jwks_uri: Url,
        issuer: String,
        audience: Option<String>,
        algorithms: Vec<Algorithm>,
    },
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
    revocation: Option<(HttpClient, Url)>,
    required_scope: Option<String>,
    require_certificate_binding: bool,
    cache_ttl: Duration,
    max_token_len: usize,
    /// Keyed by SHA-256 of the token so that a heap dump or a debugger never shows a usable token.
    cache: moka::future::Cache<[u8; 32], Cached>,
    introspections: AtomicU64,
}

impl fmt::Debug for BearerValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.backend {
            Backend::Introspection { endpoint, .. } => {
                format!("introspection {}", redact_url(endpoint))
            }
            Backend::Jwt { jwks_uri, .. } => format!("jwt {}", redact_url(jwks_uri)),
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

fn check_http_url(what: &str, u: &Url) -> Result<(), String> {
    match u.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match u.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            if !loopback {
                // Allowed for a sidecar on a pod network, but the operator should know what crosses it in clear.
                tracing::warn!(url = %redact_url(u), "{what} is plain http to a non-loopback host: tokens and the client secret travel unencrypted");
            }
            Ok(())
        }
        other => Err(format!("{what} must be an http(s) URL, not {other}:")),
    }
}

impl BearerValidator {
    pub fn new(cfg: BearerConfig) -> Result<Self, String> {
        if cfg.max_token_len == 0 {
            return Err("max_token_len must be greater than 0".into());
        }
        if cfg.connect_timeout.is_zero() || cfg.timeout.is_zero() {
            return Err("timeouts must be greater than 0s".into());
        }
        if cfg
            .required_scope
            .as_deref()
            .is_some_and(|s| s.is_empty() || s.contains(' '))
        {
            return Err("required_scope must be one non-empty scope token".into());
        }
        let http = || {
            HttpClient::new(
                cfg.ca_bundle.as_deref(),
                cfg.connect_timeout,
                cfg.timeout,
                false,
            )
        };
        let backend = match cfg.mode {
            BearerMode::Introspection {
                endpoint,
                client_id,
                client_secret,
            } => {
                check_http_url("the introspection endpoint", &endpoint)?;
                if client_id.is_empty() || client_secret.is_empty() {
                    return Err("the introspection client id and secret must not be empty".into());
                }
                Backend::Introspection {
                    http: http()?,
                    endpoint,
                    client_id,
                    client_secret,
                }
            }
            BearerMode::Jwt {
                jwks_uri,
                issuer,
                audience,
                algorithms,
            } => {
                if cfg.revocation_endpoint.is_some() {
                    return Err(
                        "a revocation endpoint needs client credentials, which only the introspection mode has"
                            .into(),
                    );
                }
                if jwks_uri.scheme() != "https" {
                    return Err("the IdP's jwks_uri must be https".into());
                }
                if issuer.is_empty() {
                    return Err("the token issuer must not be empty".into());
                }
                if algorithms.is_empty() {
                    return Err("at least one JWT algorithm must be allowed".into());
                }
                // A shared-secret algorithm would let anyone who knows a public key forge tokens (RFC 8725 §2.1).
                if let Some(a) = algorithms.iter().find(|a| {
                    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
                        || jwt::alg_label(**a) == "unsupported"
                }) {
                    return Err(format!(
                        "the JWT algorithm {a:?} is not allowed for access tokens"
                    ));
                }
                // Its own cache and key set: the IdP's keys must never verify an SSA, nor the Register's a token.
                let keys = JwksCache::new(JwksConfig {
                    ca_bundle: cfg.ca_bundle.clone(),
                    connect_timeout: cfg.connect_timeout,
                    timeout: cfg.timeout,
                    max_bytes: IDP_JWKS_MAX_BYTES,
                    ttl: IDP_JWKS_TTL,
                    stale_for: IDP_JWKS_STALE_FOR,
                    refetch_interval: IDP_JWKS_REFETCH_INTERVAL,
                    max_urls: 1,
                })?;
                Backend::Jwt {
                    keys,
                    jwks_uri,
                    issuer,
                    audience,
                    algorithms,
                }
            }
        };
        let revocation = match cfg.revocation_endpoint {
            Some(u) => {
                check_http_url("the revocation endpoint", &u)?;
                let client = match &backend {
                    Backend::Introspection { http, .. } => http.clone(),
                    Backend::Jwt { .. } => http()?,
                };
                Some((client, u))
            }
            None => None,
        };
        let cache = moka::future::Cache::builder()
            .max_capacity(CACHE_CAPACITY)
            .expire_after(UntilComputed)
            .build();
        Ok(BearerValidator {
            backend,
            revocation,
            required_scope: cfg.required_scope,
            require_certificate_binding: cfg.require_certificate_binding,
            cache_ttl: cfg.cache_ttl,
            max_token_len: cfg.max_token_len,
            cache,
            introspections: AtomicU64::new(0),
        })
    }

    /// Network calls made to learn about tokens: introspections, or in JWT mode fetches of the IdP's JWKS.
    pub fn introspections(&self) -> u64 {
        match &self.backend {
            Backend::Introspection { .. } => self.introspections.load(Ordering::Relaxed),
            Backend::Jwt { keys, .. } => keys.fetch_count(),
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
        if info.exp.is_some_and(|exp| exp <= jwt::now()) {
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
                    Backend::Introspection {
                        http,
                        endpoint,
                        client_id,
                        client_secret,
                    } => {
                        self.introspections.fetch_add(1, Ordering::Relaxed);
                        introspect(http, endpoint, client_id, client_secret, token).await?
                    }
                    Backend::Jwt {
                        keys,
                        jwks_uri,
                        issuer,
                        audience,
                        algorithms,
                    } => {
                        let rules = JwtRules {
                            issuer,
                            audience: audience.as_deref(),
                            algorithms,
                            max_len: self.max_token_len,
                            now: jwt::now(),
                        };
                        verify_jwt(keys, jwks_uri, &rules, token).await?
                    }
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
        let Some((http, endpoint)) = &self.revocation else {
            tracing::debug!("no revocation endpoint configured; token not revoked");
            return;
        };
        let Backend::Introspection {
            client_id,
            client_secret,
            ..
        } = &self.backend
        else {
            return;
        };
        let body = token_form(token);
        let auth = basic_auth(client_id, client_secret);
        let result = http
            .send(
                Method::POST,
                endpoint,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("accept", "application/json"),
                ],
                Some(body),
                MAX_INTROSPECTION_BYTES,
            )
            .await;
        match result {
            // RFC 7009 §2.2: 200 whether or not the token was still valid.
            Ok(r) if r.status == StatusCode::OK => {
                tracing::info!("revoked an access token presented for another client");
            }
            Ok(r) => tracing::warn!(
                endpoint = %redact_url(endpoint),
                status = r.status.as_u16(),
                "token revocation refused"
            ),
            Err(e) => tracing::warn!(
                endpoint = %redact_url(endpoint),
                error = %e,
                "token revocation failed"
            ),
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

/// RFC 6749 §2.3.1: id and secret are form-urlencoded before they become the Basic user and password, so a `:`
/// in the id cannot shift where the secret starts.
pub(crate) fn basic_auth(client_id: &str, secret: &Secret) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(client_id), enc(secret.expose()));
    format!("Basic {}", STANDARD.encode(pair))
}

fn token_form(token: &str) -> Bytes {
    Bytes::from(
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish(),
    )
}

async fn introspect(
    http: &HttpClient,
    endpoint: &Url,
    client_id: &str,
    client_secret: &Secret,
    token: &str,
) -> Result<TokenInfo, Refusal> {
    let auth = basic_auth(client_id, client_secret);
    let reply = http
        .send(
            Method::POST,
            endpoint,
            &[
                ("authorization", &auth),
                ("content-type", "application/x-www-form-urlencoded"),
                ("accept", "application/json"),
            ],
            Some(token_form(token)),
            MAX_INTROSPECTION_BYTES,
        )
        .await
        .map_err(|e| {
            Refusal::Unavailable(format!("introspection at {}: {e}", redact_url(endpoint)))
        })?;
    if reply.status != StatusCode::OK {
        if reply.status == StatusCode::UNAUTHORIZED {
            tracing::error!(endpoint = %redact_url(endpoint), "the introspection endpoint refused our client credentials");
        }
        return Err(Refusal::Unavailable(format!(
            "introspection at {} answered HTTP {}",
            redact_url(endpoint),
            reply.status.as_u16()
        )));
    }
    let body: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| Refusal::Unavailable(format!("introspection answer is not JSON: {e}")))?;
    let Value::Object(fields) = body else {
        return Err(Refusal::Unavailable(
            "introspection answer is not a JSON object".into(),
        ));
    };
    parse_introspection(&fields, jwt::now())
}

/// RFC 7662 §2.2, read strictly: only a JSON `true` is active, and an active token must say whose it is.
fn parse_introspection(f: &Map<String, Value>, now: i64) -> Result<TokenInfo, Refusal> {
    let inactive = |why: &str| Refusal::Inactive(why.to_string());
    match f.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Err(inactive("introspection: active is false")),
        _ => {
            return Err(inactive(
                "introspection: active is missing or not a boolean",
            ));
        }
    }
    if let Some(t) = f.get("token_type") {
        let t = t
            .as_str()
            .ok_or_else(|| inactive("introspection: token_type is not a string"))?;
        if !is_access_token_type(t) {
            return Err(Refusal::Inactive(format!(
                "introspection: token_type `{t}` is not an access token"
            )));
        }
    }
    let client_id = match f.get("client_id") {
        Some(Value::String(c)) if !c.is_empty() => c.clone(),
        _ => return Err(inactive("introspection: no client_id")),
    };
    let exp =
        jwt::numeric(f, "exp").map_err(|e| Refusal::Inactive(format!("introspection: {e}")))?;
    if exp.is_some_and(|exp| exp <= now) {
        return Err(inactive("introspection: exp is in the past"));
    }
    let scopes = match f.get("scope") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => split_scope(s),
        Some(_) => return Err(inactive("introspection: scope is not a string")),
    };
    let cnf_x5t_s256 =
        confirmation(f.get("cnf")).map_err(|w| Refusal::Inactive(format!("introspection: {w}")))?;
    Ok(TokenInfo {
        client_id,
        scopes,
        cnf_x5t_s256,
        exp,
    })
}

/// Refresh, ID and DPoP tokens are refused: only a token meant to be shown as a Bearer access token manages clients.
fn is_access_token_type(t: &str) -> bool {
    t.eq_ignore_ascii_case("bearer")
        || t == "access_token"
        || t == "urn:ietf:params:oauth:token-type:access_token"
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

struct JwtRules<'a> {
    issuer: &'a str,
    audience: Option<&'a str>,
    algorithms: &'a [Algorithm],
    max_len: usize,
    now: i64,
}

async fn verify_jwt(
    keys: &JwksCache,
    jwks_uri: &Url,
    rules: &JwtRules<'_>,
    token: &str,
) -> Result<TokenInfo, Refusal> {
    let refused = |e: &dyn fmt::Display| Refusal::Inactive(format!("access token JWT {e}"));
    let jws = Jws::parse(token, rules.algorithms, rules.max_len).map_err(|e| refused(&e))?;
    let key = match keys.key_for(jwks_uri, &jws.kid, jws.alg).await {
        Ok((key, _)) => key,
        Err(e @ (JwksError::Unavailable { .. } | JwksError::Invalid { .. })) => {
            return Err(Refusal::Unavailable(e.to_string()));
        }
        Err(e @ (JwksError::UnknownKid { .. } | JwksError::Unsuitable { .. })) => {
            return Err(refused(&e));
        }
    };
    jws.verify(&key).map_err(|e| refused(&e))?;
    jwt_claims(&jws, rules).map_err(|e| refused(&e))
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
    jwt::check_times(
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
        exp: jwt::numeric(&jws.claims, "exp").map_err(|e| e.to_string())?,
    })
}

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

fn parse_authorization(v: Option<&HeaderValue>, max_len: usize) -> Result<&str, BearerError> {
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

    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex, OnceLock};

    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use serde_json::json;
    use tokio::task::{JoinHandle, JoinSet};

    const CLIENT: &str = "client-1";
    const X5T: &str = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2";

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

    #[test]
    fn introspection_answers_are_read_strictly() {
        let now = 1_000;
        let parse = |v: Value| parse_introspection(v.as_object().expect("object"), now);
        let info = parse(
            json!({"active": true, "client_id": "c", "scope": "a  cdr:registration",
            "exp": 2000, "token_type": "Bearer", "cnf": {"x5t#S256": X5T}}),
        )
        .expect("active");
        assert_eq!(info.client_id, "c");
        assert_eq!(info.scopes, ["a", "cdr:registration"]);
        assert_eq!(info.cnf_x5t_s256.as_deref(), Some(X5T));
        assert_eq!(info.exp, Some(2000));
        assert!(
            parse(json!({"active": true, "client_id": "c", "token_type": "access_token"})).is_ok()
        );
        for inactive in [
            json!({"active": false, "client_id": "c"}),
            json!({"active": "true", "client_id": "c"}),
            json!({"active": 1, "client_id": "c"}),
            json!({"client_id": "c"}),
            json!({"active": true}),
            json!({"active": true, "client_id": ""}),
            json!({"active": true, "client_id": "c", "token_type": "refresh_token"}),
            json!({"active": true, "client_id": "c", "token_type": "DPoP"}),
            json!({"active": true, "client_id": "c", "exp": 1000}),
            json!({"active": true, "client_id": "c", "exp": "2000"}),
            json!({"active": true, "client_id": "c", "scope": ["a"]}),
            json!({"active": true, "client_id": "c", "cnf": {"jkt": "abc"}}),
            json!({"active": true, "client_id": "c", "cnf": {"x5t#S256": 5}}),
            json!({"active": true, "client_id": "c", "cnf": "x"}),
        ] {
            assert!(
                matches!(parse(inactive.clone()), Err(Refusal::Inactive(_))),
                "{inactive}"
            );
        }
    }

    /// One request as the double saw it.
    #[derive(Clone, Debug)]
    struct Seen {
        path: String,
        authorization: Option<String>,
        content_type: Option<String>,
        accept: Option<String>,
        body: String,
    }

    #[derive(Default)]
    struct FakeState {
        answers: HashMap<String, Value>,
        status: Option<u16>,
        delay: Option<Duration>,
        seen: Vec<Seen>,
    }

    /// A test double of an RFC 7662 introspection endpoint (`/introspect`) and RFC 7009 revocation endpoint
    /// (`/revoke`); the lead's end-to-end tests use the real oidc-provider instead.
    struct FakeIntrospection {
        addr: SocketAddr,
        state: Arc<Mutex<FakeState>>,
        task: JoinHandle<()>,
    }

    impl Drop for FakeIntrospection {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl FakeIntrospection {
        fn answer(&self, token: &str, v: Value) {
            self.lock().answers.insert(token.into(), v);
        }
        fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.state.lock().expect("fake state lock")
        }
        fn seen(&self) -> Vec<Seen> {
            self.lock().seen.clone()
        }
        fn url(&self, path: &str) -> Url {
            Url::parse(&format!("http://{}{path}", self.addr)).expect("url")
        }
    }

    async fn fake_introspection_endpoint() -> FakeIntrospection {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(FakeState::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| fake_answer(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeIntrospection { addr, state, task }
    }

    async fn fake_answer(
        st: Arc<Mutex<FakeState>>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body).into_owned();
        let token = url::form_urlencoded::parse(body.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let header = |n: &str| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let path = parts.uri.path().to_string();
        let (status, delay, answer) = {
            let mut s = st.lock().expect("fake state lock");
            s.seen.push(Seen {
                path: path.clone(),
                authorization: header("authorization"),
                content_type: header("content-type"),
                accept: header("accept"),
                body,
            });
            if path == "/revoke" {
                s.answers.remove(&token);
                (200, None, json!({}))
            } else {
                let answer = s
                    .answers
                    .get(&token)
                    .cloned()
                    .unwrap_or_else(|| json!({"active": false}));
                (s.status.unwrap_or(200), s.delay, answer)
            }
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let mut resp = Response::new(Full::new(Bytes::from(answer.to_string())));
        *resp.status_mut() = StatusCode::from_u16(status).expect("status");
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }

    /// A CA bundle of our own, so the tests do not depend on the machine having system roots.
    fn ca_bundle() -> PathBuf {
        static PATH: OnceLock<PathBuf> = OnceLock::new();
        PATH.get_or_init(|| {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
                .expect("rcgen certificate");
            let path = std::env::temp_dir().join(format!(
                "dcr-proxy-bearer-test-ca-{}.pem",
                std::process::id()
            ));
            std::fs::write(&path, cert.cert.pem()).expect("write CA bundle");
            path
        })
        .clone()
    }

    fn config(fake: &FakeIntrospection) -> BearerConfig {
        BearerConfig {
            mode: BearerMode::Introspection {
                endpoint: fake.url("/introspect"),
                client_id: "dcr proxy:1".into(),
                client_secret: Secret::new("s3cr+t/ w:x&é"),
            },
            revocation_endpoint: Some(fake.url("/revoke")),
            required_scope: Some("cdr:registration".into()),
            require_certificate_binding: false,
            cache_ttl: Duration::from_secs(60),
            max_token_len: 8192,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            ca_bundle: Some(ca_bundle()),
        }
    }

    fn active(client_id: &str, scope: &str) -> Value {
        json!({"active": true, "client_id": client_id, "scope": scope,
               "exp": jwt::now() + 600, "token_type": "Bearer"})
    }

    fn bearer(token: &str) -> HeaderValue {
        hv(&format!("Bearer {token}"))
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
    async fn introspection_is_a_form_post_with_form_encoded_basic_credentials() {
        let fake = fake_introspection_endpoint().await;
        let token = "tok.en-_~+/==";
        fake.answer(token, active(CLIENT, "cdr:registration"));
        let v = BearerValidator::new(config(&fake)).expect("validator");
        v.authorize(Some(&bearer(token)), CLIENT, None)
            .await
            .expect("accepted");
        let seen = fake.seen();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(s.path, "/introspect");
        // RFC 6749 §2.3.1: each part form-urlencoded (space as +), then joined by ':' and base64-encoded.
        let pair = "dcr+proxy%3A1:s3cr%2Bt%2F+w%3Ax%26%C3%A9";
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Basic {}", STANDARD.encode(pair)).as_str())
        );
        assert_eq!(
            s.body,
            "token=tok.en-_%7E%2B%2F%3D%3D&token_type_hint=access_token"
        );
        assert_eq!(
            s.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(s.accept.as_deref(), Some("application/json"));
    }

    #[tokio::test]
    async fn inactive_unknown_refresh_and_expired_tokens_are_inactive() {
        let fake = fake_introspection_endpoint().await;
        fake.answer("off", json!({"active": false}));
        fake.answer(
            "refresh",
            json!({"active": true, "client_id": CLIENT, "scope": "cdr:registration", "token_type": "refresh_token"}),
        );
        fake.answer(
            "old",
            json!({"active": true, "client_id": CLIENT, "scope": "cdr:registration", "exp": jwt::now() - 1}),
        );
        let v = BearerValidator::new(config(&fake)).expect("validator");
        for t in ["off", "unknown", "refresh", "old"] {
            assert!(
                matches!(
                    v.authorize(Some(&bearer(t)), CLIENT, None).await,
                    Err(BearerError::Inactive)
                ),
                "{t}"
            );
        }
        // Refusals are not cached: each one asked again.
        assert!(
            v.authorize(Some(&bearer("off")), CLIENT, None)
                .await
                .is_err()
        );
        assert_eq!(v.introspections(), 5);
    }

    #[tokio::test]
    async fn a_token_of_another_client_is_wrong_client_and_can_be_revoked() {
        let fake = fake_introspection_endpoint().await;
        let token = "other+client/token=";
        fake.answer(token, active("client-2", "cdr:registration"));
        let v = BearerValidator::new(config(&fake)).expect("validator");
        let header = bearer(token);
        assert!(matches!(
            v.authorize(Some(&header), CLIENT, None).await,
            Err(BearerError::WrongClient)
        ));
        let t = token_of(Some(&header)).expect("well-formed");
        v.revoke(t).await;
        let seen = fake.seen();
        let revocation = seen.last().expect("a revocation request");
        assert_eq!(revocation.path, "/revoke");
        assert_eq!(
            revocation.body,
            "token=other%2Bclient%2Ftoken%3D&token_type_hint=access_token"
        );
        assert_eq!(revocation.authorization, seen[0].authorization);
        assert_eq!(
            revocation.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        // Revocation also drops our cached copy, so the next use asks again and learns it is gone.
        assert!(matches!(
            v.authorize(Some(&header), "client-2", None).await,
            Err(BearerError::Inactive)
        ));
        assert_eq!(v.introspections(), 2);
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
            json!({"active": true, "client_id": CLIENT, "scope": scope, "exp": jwt::now() + 600,
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
                   "exp": jwt::now() + 600, "cnf": {"x5t#S256": X5T}}),
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

        let exp = jwt::now() + 2;
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
    async fn an_endpoint_that_is_down_slow_or_failing_is_unavailable() {
        let fake = fake_introspection_endpoint().await;
        fake.answer("tok", active(CLIENT, "cdr:registration"));

        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let mut cfg = config(&fake);
        if let BearerMode::Introspection { endpoint, .. } = &mut cfg.mode {
            *endpoint = Url::parse(&format!("http://{closed}/introspect")).expect("url");
        }
        let v = BearerValidator::new(cfg).expect("validator");
        assert!(matches!(
            v.authorize(Some(&bearer("tok")), CLIENT, None).await,
            Err(BearerError::Unavailable(_))
        ));

        for status in [500, 401, 302] {
            fake.lock().status = Some(status);
            let v = BearerValidator::new(config(&fake)).expect("validator");
            match v.authorize(Some(&bearer("tok")), CLIENT, None).await {
                Err(BearerError::Unavailable(why)) => {
                    assert!(why.contains(&status.to_string()), "{why}")
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        fake.lock().status = None;

        fake.lock().delay = Some(Duration::from_secs(2));
        let mut cfg = config(&fake);
        cfg.timeout = Duration::from_millis(200);
        let v = BearerValidator::new(cfg).expect("validator");
        let started = Instant::now();
        assert!(matches!(
            v.authorize(Some(&bearer("tok")), CLIENT, None).await,
            Err(BearerError::Unavailable(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
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
    fn configurations_that_cannot_work_are_refused() {
        let jwt = |algorithms: Vec<Algorithm>, jwks: &str| BearerConfig {
            mode: BearerMode::Jwt {
                jwks_uri: Url::parse(jwks).expect("url"),
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
        let https = "https://idp.example/jwks";
        assert!(BearerValidator::new(jwt(vec![Algorithm::PS256], https)).is_ok());
        assert!(BearerValidator::new(jwt(vec![], https)).is_err());
        assert!(
            BearerValidator::new(jwt(vec![Algorithm::PS256, Algorithm::HS256], https)).is_err()
        );
        assert!(
            BearerValidator::new(jwt(vec![Algorithm::PS256], "http://idp.example/jwks")).is_err()
        );
        let mut with_revocation = jwt(vec![Algorithm::PS256], https);
        with_revocation.revocation_endpoint =
            Some(Url::parse("https://idp.example/revoke").expect("url"));
        assert!(BearerValidator::new(with_revocation).is_err());
        let mut two_scopes = jwt(vec![Algorithm::PS256], https);
        two_scopes.required_scope = Some("a b".into());
        assert!(BearerValidator::new(two_scopes).is_err());
        let mut no_len = jwt(vec![Algorithm::PS256], https);
        no_len.max_token_len = 0;
        assert!(BearerValidator::new(no_len).is_err());
        let intro = |endpoint: &str, secret: &str| BearerConfig {
            mode: BearerMode::Introspection {
                endpoint: Url::parse(endpoint).expect("url"),
                client_id: "c".into(),
                client_secret: Secret::new(secret),
            },
            ..jwt(vec![Algorithm::PS256], https)
        };
        assert!(BearerValidator::new(intro("https://idp.example/introspect", "s")).is_ok());
        assert!(BearerValidator::new(intro("https://idp.example/introspect", "")).is_err());
        assert!(BearerValidator::new(intro("ftp://idp.example/introspect", "s")).is_err());
    }
}
