//! proxy.toml -> a typed, validated `Config`; every problem is reported with its dotted key, all at once.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::identity::{DnMatchRule, attribute_oid};

/// Exit code of `--check-config` and of start-up when the configuration is wrong (sysexits EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

#[derive(Debug, Clone)]
pub struct Problem {
    pub key: String,
    pub problem: String,
}

#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.key.is_empty() {
                write!(f, "{}: {}", self.file, p.problem)?;
            } else {
                write!(f, "{}: {}: {}", self.file, p.key, p.problem)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where environment variables come from; tests pass a map instead of touching the process environment.
pub trait Env: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

// ---------------------------------------------------------------------------------------------
// The validated configuration.

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub upstream: UpstreamConfig,
    pub jwks: JwksConfig,
    pub profile: ProfileConfig,
    pub trust_anchors: Vec<TrustAnchor>,
    pub store: StoreConfig,
    pub log: LogConfig,
    /// GET/PUT/DELETE /register/{ClientId}; None when the bank does not offer management.
    pub management: Option<crate::bearer::BearerConfig>,
    /// Everything that is not a registration route goes to the IdP.
    pub forward: crate::forward::ForwardConfig,
    pub reconcile: crate::dcr::reconcile::ReconcileConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The plaintext admin listener (/live, /ready, /metrics); None disables it.
    pub admin_listen: Option<SocketAddr>,
    pub drain_timeout: Duration,
    pub reload_interval: Duration,
    pub public_url: Url,
    pub handshake_timeout: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Optional,
    Required,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub client_auth: ClientAuth,
}

#[derive(Clone)]
pub struct UpstreamConfig {
    pub base_url: Url,
    pub registration_endpoint: Url,
    pub initial_access_token_env: String,
    pub initial_access_token: crate::secret::Secret,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// How long a create or replace that outlived `timeout` is still awaited, so it can be undone or kept.
    pub settle_timeout: Duration,
    pub ca_bundle: Option<PathBuf>,
    /// Crash recovery through an administrator's credential; None keeps plain RFC 7591/7592.
    pub admin: Option<UpstreamAdminConfig>,
}

/// `[upstream.admin]`: with it the proxy names each client_id before the upstream creates the client, and
/// deletes clients whose registration access token it never learnt (or lost) with a client_credentials token
/// of an administrator client (Keycloak: a service account with the manage-clients role).
#[derive(Clone)]
pub struct UpstreamAdminConfig {
    pub token_endpoint: Url,
    pub client_id: String,
    pub client_secret: crate::secret::Secret,
    pub scope: Option<String>,
}

impl fmt::Debug for UpstreamAdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamAdminConfig")
            .field("token_endpoint", &self.token_endpoint.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("scope", &self.scope)
            .finish()
    }
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("base_url", &self.base_url.as_str())
            .field(
                "registration_endpoint",
                &self.registration_endpoint.as_str(),
            )
            .field("initial_access_token_env", &self.initial_access_token_env)
            .field("initial_access_token", &self.initial_access_token)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct JwksConfig {
    pub ca_bundle: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_bytes: usize,
    pub ttl: Duration,
    pub stale_for: Duration,
    pub refetch_interval: Duration,
    pub max_urls: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    ObV31,
    Cdr113,
}

impl ProfileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::ObV31 => "ob-v3.1",
            ProfileKind::Cdr113 => "cdr-1.13",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProfileConfig {
    pub kind: ProfileKind,
    pub audiences: Vec<String>,
    pub clock_skew: Duration,
    pub ssa_max_age: Option<Duration>,
    pub request_algorithms: Vec<jsonwebtoken::Algorithm>,
    pub signing_algorithms: Vec<String>,
    pub token_endpoint_auth_methods: Vec<String>,
    pub allowed_scopes: Vec<String>,
    pub default_scopes: Vec<String>,
    pub response_types: Vec<String>,
    pub id_token_encryption_algs: Vec<String>,
    pub id_token_encryption_encs: Vec<String>,
    pub require_transport_cert_in_ssa_jwks: bool,
    pub dn_match: DnMatchRule,
    pub unique_software_id: bool,
    /// CDR: consult the Register's software product status (off when None).
    pub software_product_status: Option<crate::dcr::status::StatusConfig>,
}

#[derive(Debug, Clone)]
pub struct TrustAnchor {
    pub issuer: String,
    pub jwks_uri: Url,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sqlite { path: PathBuf },
    Postgres(crate::store::postgres::PostgresConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

// ---------------------------------------------------------------------------------------------
// The file as written: pass one (syntax, unknown keys, types) is serde's.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    tls: RawTls,
    upstream: RawUpstream,
    #[serde(default)]
    jwks: RawJwks,
    profile: RawProfile,
    #[serde(default)]
    trust_anchors: Vec<RawAnchor>,
    store: RawStore,
    #[serde(default)]
    log: RawLog,
    management: Option<RawManagement>,
    #[serde(default)]
    forward: RawForward,
    #[serde(default)]
    admin: RawAdmin,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    #[serde(default = "d_cert_header")]
    cert_header: String,
    #[serde(default)]
    extra_deny_paths: Vec<String>,
    #[serde(default = "d_connect_timeout")]
    connect_timeout: String,
    #[serde(default = "d_request_timeout")]
    response_timeout: String,
    #[serde(default = "d_discovery_ttl")]
    discovery_ttl: String,
    mtls_endpoint_aliases: Option<toml::Table>,
}

impl Default for RawForward {
    fn default() -> Self {
        RawForward {
            cert_header: d_cert_header(),
            extra_deny_paths: Vec::new(),
            connect_timeout: d_connect_timeout(),
            response_timeout: d_request_timeout(),
            discovery_ttl: d_discovery_ttl(),
            mtls_endpoint_aliases: None,
        }
    }
}

fn d_cert_header() -> String {
    "rfc9440".into()
}
fn d_discovery_ttl() -> String {
    "60s".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManagement {
    #[serde(default = "d_token_validation")]
    token_validation: String,
    introspection_endpoint: Option<String>,
    client_id: Option<String>,
    client_secret_env: Option<String>,
    revocation_endpoint: Option<String>,
    jwks_uri: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    algorithms: Option<Vec<String>>,
    required_scope: Option<String>,
    require_certificate_binding: Option<bool>,
    #[serde(default = "d_token_cache")]
    cache_ttl: String,
    #[serde(default = "d_connect_timeout")]
    connect_timeout: String,
    #[serde(default = "d_jwks_timeout")]
    timeout: String,
}

fn d_token_validation() -> String {
    "introspection".into()
}
fn d_token_cache() -> String {
    "60s".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    #[serde(default = "d_drain")]
    drain_timeout: String,
    #[serde(default = "d_reload")]
    reload_interval: String,
    public_url: String,
    #[serde(default = "d_handshake")]
    handshake_timeout: String,
    #[serde(default = "d_request_timeout")]
    request_timeout: String,
    #[serde(default = "d_max_body")]
    max_body_bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
    client_ca: String,
    #[serde(default = "d_client_auth")]
    client_auth: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    base_url: String,
    registration_endpoint: String,
    #[serde(default = "d_iat_env")]
    initial_access_token_env: String,
    #[serde(default = "d_connect_timeout")]
    connect_timeout: String,
    #[serde(default = "d_upstream_timeout")]
    timeout: String,
    #[serde(default = "d_settle")]
    settle_timeout: String,
    ca_bundle: Option<String>,
    admin: Option<RawUpstreamAdmin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamAdmin {
    token_endpoint: String,
    client_id: String,
    client_secret_env: Option<String>,
    scope: Option<String>,
}

/// Secrets come from environment variables named `DCR_<SECTION>_<KEY>` unless a `*_env` key says otherwise.
fn d_iat_env() -> String {
    "DCR_UPSTREAM_INITIAL_ACCESS_TOKEN".into()
}

fn d_settle() -> String {
    "60s".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwks {
    ca_bundle: Option<String>,
    #[serde(default = "d_connect_timeout")]
    connect_timeout: String,
    #[serde(default = "d_jwks_timeout")]
    timeout: String,
    #[serde(default = "d_jwks_max_bytes")]
    max_bytes: u64,
    #[serde(default = "d_jwks_ttl")]
    ttl: String,
    #[serde(default = "d_jwks_stale")]
    stale_for: String,
    #[serde(default = "d_jwks_refetch")]
    refetch_interval: String,
    #[serde(default = "d_jwks_max_urls")]
    max_urls: u64,
}

impl Default for RawJwks {
    fn default() -> Self {
        RawJwks {
            ca_bundle: None,
            connect_timeout: d_connect_timeout(),
            timeout: d_jwks_timeout(),
            max_bytes: d_jwks_max_bytes(),
            ttl: d_jwks_ttl(),
            stale_for: d_jwks_stale(),
            refetch_interval: d_jwks_refetch(),
            max_urls: d_jwks_max_urls(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    kind: String,
    audiences: Vec<String>,
    #[serde(default = "d_skew")]
    clock_skew: String,
    ssa_max_age: Option<String>,
    request_algorithms: Option<Vec<String>>,
    signing_algorithms: Option<Vec<String>>,
    token_endpoint_auth_methods: Option<Vec<String>>,
    allowed_scopes: Option<Vec<String>>,
    default_scopes: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    id_token_encryption_algs: Option<Vec<String>>,
    id_token_encryption_encs: Option<Vec<String>>,
    require_transport_cert_in_ssa_jwks: Option<bool>,
    #[serde(default = "d_dn_match")]
    dn_match: String,
    #[serde(default)]
    dn_match_attributes: Vec<String>,
    unique_software_id: Option<bool>,
    software_product_status_uri: Option<String>,
    #[serde(default = "d_jwks_ttl")]
    software_product_status_ttl: String,
    #[serde(default = "d_jwks_stale")]
    software_product_status_max_stale: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnchor {
    issuer: String,
    jwks_uri: String,
    algorithms: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: String,
    path: Option<String>,
    url: Option<String>,
    password_env: Option<String>,
    #[serde(default = "d_pool_size")]
    pool_size: usize,
    #[serde(default = "d_connect_timeout")]
    connect_timeout: String,
    #[serde(default = "d_jwks_timeout")]
    statement_timeout: String,
    #[serde(default = "d_pg_tls")]
    tls: String,
    ca_bundle: Option<String>,
    #[serde(default = "d_reconcile_interval")]
    reconcile_interval: String,
    #[serde(default = "d_reconcile_after")]
    reconcile_after: String,
}

fn d_reconcile_interval() -> String {
    "30s".into()
}
fn d_reconcile_after() -> String {
    "2m".into()
}

fn d_pool_size() -> usize {
    8
}
fn d_pg_tls() -> String {
    "disable".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default = "d_log_format")]
    format: String,
    #[serde(default = "d_log_level")]
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: d_log_format(),
            level: d_log_level(),
        }
    }
}

fn d_drain() -> String {
    "20s".into()
}
fn d_reload() -> String {
    "10s".into()
}
fn d_admin_listen() -> String {
    "127.0.0.1:9901".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default = "d_admin_listen")]
    listen: String,
    #[serde(default = "d_true")]
    enabled: bool,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: d_admin_listen(),
            enabled: true,
        }
    }
}

fn d_true() -> bool {
    true
}

fn d_handshake() -> String {
    "10s".into()
}
fn d_request_timeout() -> String {
    "30s".into()
}
fn d_max_body() -> u64 {
    64 * 1024
}
fn d_client_auth() -> String {
    "optional".into()
}
fn d_connect_timeout() -> String {
    "2s".into()
}
fn d_upstream_timeout() -> String {
    "10s".into()
}
fn d_jwks_timeout() -> String {
    "5s".into()
}
fn d_jwks_max_bytes() -> u64 {
    256 * 1024
}
fn d_jwks_ttl() -> String {
    "5m".into()
}
fn d_jwks_stale() -> String {
    "1h".into()
}
fn d_jwks_refetch() -> String {
    "30s".into()
}
fn d_jwks_max_urls() -> u64 {
    10_000
}
fn d_skew() -> String {
    "10s".into()
}
fn d_dn_match() -> String {
    "unordered".into()
}
fn d_log_format() -> String {
    "json".into()
}
fn d_log_level() -> String {
    "info".into()
}

// ---------------------------------------------------------------------------------------------
// Profile data: what each regulation allows, before the operator narrows it.

/// Algorithms the OB v3.1 data dictionary enumerates for the *_alg metadata.
pub const OB_SIGNING_ALGS: &[&str] = &["RS256", "PS256", "ES256"];
/// CDR 1.13 allows only these for every signing alg metadata field.
pub const CDR_SIGNING_ALGS: &[&str] = &["PS256", "ES256"];
pub const OB_AUTH_METHODS: &[&str] = &["private_key_jwt", "tls_client_auth"];
pub const CDR_AUTH_METHODS: &[&str] = &["private_key_jwt"];
pub const OB_SCOPES: &[&str] = &["openid", "accounts", "payments", "fundsconfirmations"];
pub const OB_RESPONSE_TYPES: &[&str] = &["code", "code id_token"];
pub const CDR_RESPONSE_TYPES: &[&str] = &["code id_token", "code"];
/// 1.13 data holders must support the hybrid flow; `code` (with JARM) is an operator opt-in.
pub const CDR_DEFAULT_RESPONSE_TYPES: &[&str] = &["code id_token"];
pub const CDR_SCOPES: &[&str] = &[
    "openid",
    "profile",
    "cdr:registration",
    "bank:accounts.basic:read",
    "bank:accounts.detail:read",
    "bank:transactions:read",
    "bank:payees:read",
    "bank:regular_payments:read",
    "common:customer.basic:read",
    "common:customer.detail:read",
];
pub const CDR_ENC_ALGS: &[&str] = &["RSA-OAEP", "RSA-OAEP-256", "ECDH-ES"];
pub const CDR_ENC_ENCS: &[&str] = &["A256GCM", "A128CBC-HS256"];

/// JWS algorithms we are willing to verify at all; `none` and HMAC never appear here.
const VERIFIABLE_ALGS: &[&str] = &[
    "PS256", "PS384", "PS512", "ES256", "ES384", "RS256", "RS384", "RS512", "EdDSA",
];

// ---------------------------------------------------------------------------------------------

impl Config {
    /// Reads, parses and validates a file; relative paths in it are resolved against its directory.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            problems: vec![Problem {
                key: String::new(),
                problem: format!("cannot read: {e}"),
            }],
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::from_toml_str(&src, &file, &base, env)
    }

    pub fn from_toml_str(
        src: &str,
        file: &str,
        base_dir: &Path,
        env: &dyn Env,
    ) -> Result<Config, ConfigError> {
        let fail = |key: String, problem: String| ConfigError {
            file: file.to_string(),
            problems: vec![Problem { key, problem }],
        };
        let de = toml::Deserializer::parse(src).map_err(|e| fail(String::new(), one_line(&e)))?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            fail(key, one_line(e.inner()))
        })?;
        let mut v = Validator {
            problems: Vec::new(),
            base: base_dir.to_path_buf(),
            env,
        };
        let cfg = v.build(raw);
        match cfg {
            Some(cfg) if v.problems.is_empty() => Ok(cfg),
            _ => Err(ConfigError {
                file: file.to_string(),
                problems: v.problems,
            }),
        }
    }
}

fn one_line(e: &dyn fmt::Display) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.starts_with("-->"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses "250ms", "10s", "5m", "1h"; a bare number is refused so units are never guessed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit: write e.g. \"10s\", \"250ms\", \"5m\""))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like \"10s\""))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("`{s}`: unit must be one of ms, s, m, h")),
    };
    Ok(d)
}

pub fn parse_algorithm(s: &str) -> Option<jsonwebtoken::Algorithm> {
    if !VERIFIABLE_ALGS.contains(&s) {
        return None;
    }
    s.parse().ok()
}

struct Validator<'e> {
    problems: Vec<Problem>,
    base: PathBuf,
    env: &'e dyn Env,
}

impl Validator<'_> {
    fn problem(&mut self, key: &str, problem: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            problem: problem.into(),
        });
    }

    fn duration(&mut self, key: &str, s: &str, allow_zero: bool) -> Duration {
        match parse_duration(s) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.problem(key, "must be greater than 0s");
                d
            }
            Ok(d) => d,
            Err(e) => {
                self.problem(key, e);
                Duration::ZERO
            }
        }
    }

    fn url(&mut self, key: &str, s: &str, schemes: &[&str]) -> Option<Url> {
        match Url::parse(s) {
            Ok(u) if schemes.contains(&u.scheme()) && u.host().is_some() => {
                if !u.username().is_empty() || u.password().is_some() {
                    self.problem(
                        key,
                        "must not carry credentials; secrets belong in environment variables",
                    );
                    return None;
                }
                Some(u)
            }
            Ok(u) => {
                self.problem(
                    key,
                    format!(
                        "`{s}` must be an absolute {} URL with a host (got scheme `{}`)",
                        schemes.join(" or "),
                        u.scheme()
                    ),
                );
                None
            }
            Err(e) => {
                self.problem(key, format!("`{s}` is not a URL: {e}"));
                None
            }
        }
    }

    /// A file the proxy must be able to read at start-up.
    fn file(&mut self, key: &str, s: &str) -> PathBuf {
        let p = self.base.join(s);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => {}
            Ok(_) => self.problem(key, format!("{} is not a file", p.display())),
            Err(e) => self.problem(key, format!("cannot read {}: {e}", p.display())),
        }
        p
    }

    fn subset(
        &mut self,
        key: &str,
        given: Option<Vec<String>>,
        allowed: &[&str],
        default: &[&str],
    ) -> Vec<String> {
        match given {
            None => default.iter().map(|s| s.to_string()).collect(),
            Some(list) => {
                if list.is_empty() {
                    self.problem(key, "must not be empty");
                }
                for item in &list {
                    if !allowed.contains(&item.as_str()) {
                        self.problem(
                            key,
                            format!("`{item}` is not one of {}", allowed.join(", ")),
                        );
                    }
                }
                list
            }
        }
    }

    fn algorithms(
        &mut self,
        key: &str,
        given: Option<Vec<String>>,
        default: &[&str],
    ) -> Vec<jsonwebtoken::Algorithm> {
        let list = given.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
        if list.is_empty() {
            self.problem(key, "must not be empty");
        }
        let mut out = Vec::new();
        for a in &list {
            match parse_algorithm(a) {
                Some(alg) => out.push(alg),
                None => self.problem(
                    key,
                    format!(
                        "`{a}` is not an allowed JWS algorithm (asymmetric only: {}; `none` and HMAC are never accepted)",
                        VERIFIABLE_ALGS.join(", ")
                    ),
                ),
            }
        }
        out
    }

    /// `s` as a path on the upstream's `base` (or an absolute http(s) URL); None when the base itself is bad.
    fn relative_url(&mut self, key: &str, base: Option<&Url>, s: &str) -> Option<Url> {
        match base.map(|b| b.join(s)) {
            Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => Some(u),
            Some(_) => {
                self.problem(key, format!("`{s}` is not a path or URL"));
                None
            }
            None => None,
        }
    }

    /// A required secret from the environment variable `var`; a missing or empty one is a problem at `key`.
    fn secret(&mut self, key: &str, var: &str) -> Option<crate::secret::Secret> {
        match self.env.var(var) {
            Some(v) if !v.is_empty() => Some(crate::secret::Secret::new(v)),
            _ => {
                self.problem(
                    key,
                    format!("environment variable {var} is not set or empty"),
                );
                None
            }
        }
    }

    fn upstream_admin(
        &mut self,
        a: &RawUpstreamAdmin,
        base: Option<&Url>,
    ) -> Option<UpstreamAdminConfig> {
        let token_endpoint =
            self.relative_url("upstream.admin.token_endpoint", base, &a.token_endpoint);
        if a.client_id.trim().is_empty() {
            self.problem("upstream.admin.client_id", "must not be empty");
        }
        let var = a
            .client_secret_env
            .as_deref()
            .unwrap_or("DCR_UPSTREAM_ADMIN_CLIENT_SECRET");
        let secret = self.secret("upstream.admin.client_secret_env", var);
        Some(UpstreamAdminConfig {
            token_endpoint: token_endpoint?,
            client_id: a.client_id.trim().to_string(),
            client_secret: secret?,
            scope: a.scope.clone().filter(|s| !s.trim().is_empty()),
        })
    }

    fn management(
        &mut self,
        m: RawManagement,
        kind: ProfileKind,
        upstream: Option<&Url>,
        ca_bundle: Option<PathBuf>,
    ) -> Option<crate::bearer::BearerConfig> {
        use crate::bearer::{BearerConfig, BearerMode};
        let is_cdr = kind == ProfileKind::Cdr113;
        let revocation_endpoint = m
            .revocation_endpoint
            .as_deref()
            .and_then(|s| self.relative_url("management.revocation_endpoint", upstream, s));
        let mode = match m.token_validation.as_str() {
            "introspection" => {
                let endpoint = match m.introspection_endpoint.as_deref() {
                    Some(s) => self.relative_url("management.introspection_endpoint", upstream, s),
                    None => {
                        self.problem(
                            "management.introspection_endpoint",
                            "required for introspection",
                        );
                        None
                    }
                };
                let client_id = m.client_id.clone().unwrap_or_default();
                if client_id.is_empty() {
                    self.problem("management.client_id", "required for introspection");
                }
                let var = m
                    .client_secret_env
                    .as_deref()
                    .unwrap_or("DCR_MANAGEMENT_CLIENT_SECRET");
                let secret = self.secret("management.client_secret_env", var);
                BearerMode::Introspection {
                    endpoint: endpoint?,
                    client_id,
                    client_secret: secret?,
                }
            }
            "jwt" => {
                let jwks_uri = match m.jwks_uri.as_deref() {
                    Some(s) => self.url("management.jwks_uri", s, &["https"]),
                    None => {
                        self.problem("management.jwks_uri", "required for jwt validation");
                        None
                    }
                };
                let issuer = m.issuer.clone().unwrap_or_default();
                if issuer.is_empty() {
                    self.problem("management.issuer", "required for jwt validation");
                }
                if revocation_endpoint.is_some() {
                    self.problem(
                        "management.revocation_endpoint",
                        "needs introspection credentials; not available with jwt validation",
                    );
                }
                let algorithms = self.algorithms(
                    "management.algorithms",
                    m.algorithms.clone(),
                    &["PS256", "ES256", "RS256"],
                );
                BearerMode::Jwt {
                    jwks_uri: jwks_uri?,
                    issuer,
                    audience: m.audience.clone(),
                    algorithms,
                }
            }
            other => {
                self.problem(
                    "management.token_validation",
                    format!("`{other}` must be \"introspection\" or \"jwt\""),
                );
                return None;
            }
        };
        let required_scope = m
            .required_scope
            .or_else(|| is_cdr.then(|| "cdr:registration".to_string()))
            .filter(|s| !s.is_empty());
        Some(BearerConfig {
            mode,
            revocation_endpoint,
            required_scope,
            require_certificate_binding: m.require_certificate_binding.unwrap_or(is_cdr),
            cache_ttl: self.duration("management.cache_ttl", &m.cache_ttl, true),
            max_token_len: 8192,
            connect_timeout: self.duration("management.connect_timeout", &m.connect_timeout, false),
            timeout: self.duration("management.timeout", &m.timeout, false),
            ca_bundle,
        })
    }

    fn forward(
        &mut self,
        f: RawForward,
        base: Option<&Url>,
        registration: Option<&Url>,
        public_url: Option<&Url>,
        ca_bundle: Option<PathBuf>,
    ) -> Option<crate::forward::ForwardConfig> {
        use crate::forward::{CertHeaderFormat, ForwardConfig};
        let cert_header = match f.cert_header.as_str() {
            "rfc9440" => CertHeaderFormat::Rfc9440,
            "nginx" => CertHeaderFormat::Nginx,
            "envoy" => CertHeaderFormat::Envoy,
            other => {
                self.problem(
                    "forward.cert_header",
                    format!("`{other}` must be \"rfc9440\", \"nginx\" or \"envoy\""),
                );
                CertHeaderFormat::Rfc9440
            }
        };
        let mut deny_paths = ForwardConfig::default_deny_paths();
        // The upstream's own registration endpoint is never reachable around our checks, whatever it is called.
        if let (Some(base), Some(reg)) = (base, registration)
            && reg.origin() == base.origin()
            && let Some(rest) = reg.path().strip_prefix(base.path().trim_end_matches('/'))
            && rest.len() > 1
        {
            deny_paths.push(format!("{}/**", rest.trim_end_matches('/')));
        }
        deny_paths.extend(f.extra_deny_paths);
        let mtls_endpoint_aliases = match f.mtls_endpoint_aliases {
            None => None,
            Some(t) => match serde_json::to_value(t) {
                Ok(serde_json::Value::Object(m)) => Some(m),
                _ => {
                    self.problem(
                        "forward.mtls_endpoint_aliases",
                        "must be a table of endpoint URLs",
                    );
                    None
                }
            },
        };
        Some(ForwardConfig {
            upstream_base: base?.clone(),
            public_url: public_url?.clone(),
            cert_header,
            deny_paths,
            connect_timeout: self.duration("forward.connect_timeout", &f.connect_timeout, false),
            response_timeout: self.duration("forward.response_timeout", &f.response_timeout, false),
            discovery_ttl: self.duration("forward.discovery_ttl", &f.discovery_ttl, true),
            mtls_endpoint_aliases,
            ca_bundle,
        })
    }

    fn postgres(&mut self, s: RawStore) -> Option<StoreConfig> {
        use crate::store::postgres::{PgTls, PostgresConfig};
        let url = match s.url {
            Some(u) => match Url::parse(&u) {
                Ok(parsed) if matches!(parsed.scheme(), "postgres" | "postgresql") => {
                    if parsed.password().is_some() {
                        self.problem(
                            "store.url",
                            "must not carry a password; name its variable in store.password_env",
                        );
                    }
                    Some(u)
                }
                _ => {
                    self.problem(
                        "store.url",
                        "must be a postgres://user@host:port/database URL",
                    );
                    None
                }
            },
            None => {
                self.problem("store.url", "required for the postgres backend");
                None
            }
        };
        let password = match s.password_env.as_deref() {
            // Optional (trust or certificate auth needs none); the default name is used when set.
            None => self
                .env
                .var("DCR_STORE_PASSWORD")
                .filter(|v| !v.is_empty())
                .map(crate::secret::Secret::new),
            Some(var) => self.secret("store.password_env", var),
        };
        if s.pool_size == 0 || s.pool_size > 256 {
            self.problem("store.pool_size", "must be between 1 and 256");
        }
        let tls = match s.tls.as_str() {
            "disable" => PgTls::Disable,
            "require" => PgTls::Require {
                ca_bundle: s
                    .ca_bundle
                    .as_deref()
                    .map(|p| self.file("store.ca_bundle", p)),
            },
            other => {
                self.problem(
                    "store.tls",
                    format!("`{other}` must be \"disable\" or \"require\""),
                );
                PgTls::Disable
            }
        };
        Some(StoreConfig::Postgres(PostgresConfig {
            url: url?,
            password,
            pool_size: s.pool_size,
            connect_timeout: self.duration("store.connect_timeout", &s.connect_timeout, false),
            statement_timeout: self.duration(
                "store.statement_timeout",
                &s.statement_timeout,
                false,
            ),
            tls,
        }))
    }

    fn build(&mut self, raw: RawConfig) -> Option<Config> {
        // [server]
        let listen = match raw.server.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    "server.listen",
                    format!(
                        "`{}` is not an address like 0.0.0.0:8443",
                        raw.server.listen
                    ),
                );
                None
            }
        };
        let public_url = self.url("server.public_url", &raw.server.public_url, &["https"]);
        let handshake_timeout = self.duration(
            "server.handshake_timeout",
            &raw.server.handshake_timeout,
            false,
        );
        let drain_timeout = self.duration("server.drain_timeout", &raw.server.drain_timeout, true);
        let reload_interval =
            self.duration("server.reload_interval", &raw.server.reload_interval, false);
        let admin_listen = if raw.admin.enabled {
            match raw.admin.listen.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.problem(
                        "admin.listen",
                        format!("`{}` is not an address like 0.0.0.0:9901", raw.admin.listen),
                    );
                    None
                }
            }
        } else {
            None
        };
        let request_timeout =
            self.duration("server.request_timeout", &raw.server.request_timeout, false);
        if raw.server.max_body_bytes < 1024 || raw.server.max_body_bytes > 16 * 1024 * 1024 {
            self.problem(
                "server.max_body_bytes",
                "must be between 1024 and 16777216 bytes",
            );
        }

        // [tls]
        let cert = self.file("tls.cert", &raw.tls.cert);
        let key = self.file("tls.key", &raw.tls.key);
        let client_ca = self.file("tls.client_ca", &raw.tls.client_ca);
        let client_auth = match raw.tls.client_auth.as_str() {
            "optional" => ClientAuth::Optional,
            "required" => ClientAuth::Required,
            other => {
                self.problem(
                    "tls.client_auth",
                    format!("`{other}` must be \"optional\" or \"required\""),
                );
                ClientAuth::Optional
            }
        };

        // [upstream]
        let base_url = self.url(
            "upstream.base_url",
            &raw.upstream.base_url,
            &["http", "https"],
        );
        let registration_endpoint =
            base_url
                .as_ref()
                .and_then(|b| match b.join(&raw.upstream.registration_endpoint) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        self.problem(
                            "upstream.registration_endpoint",
                            format!(
                                "`{}` is not a path or URL: {e}",
                                raw.upstream.registration_endpoint
                            ),
                        );
                        None
                    }
                });
        let iat_env = raw.upstream.initial_access_token_env.clone();
        let iat = match self.env.var(&iat_env) {
            Some(v) if !v.trim().is_empty() => crate::secret::Secret::new(v.trim().to_string()),
            _ => {
                self.problem(
                    "upstream.initial_access_token_env",
                    format!("environment variable {iat_env} is not set or empty"),
                );
                crate::secret::Secret::new(String::new())
            }
        };
        let up_connect = self.duration(
            "upstream.connect_timeout",
            &raw.upstream.connect_timeout,
            false,
        );
        let up_timeout = self.duration("upstream.timeout", &raw.upstream.timeout, false);
        let up_settle = self.duration(
            "upstream.settle_timeout",
            &raw.upstream.settle_timeout,
            false,
        );
        let up_ca = raw
            .upstream
            .ca_bundle
            .as_deref()
            .map(|p| self.file("upstream.ca_bundle", p));
        let up_admin = raw
            .upstream
            .admin
            .as_ref()
            .and_then(|a| self.upstream_admin(a, base_url.as_ref()));

        // [jwks]
        let j = &raw.jwks;
        let jwks = JwksConfig {
            ca_bundle: j
                .ca_bundle
                .as_deref()
                .map(|p| self.file("jwks.ca_bundle", p)),
            connect_timeout: self.duration("jwks.connect_timeout", &j.connect_timeout, false),
            timeout: self.duration("jwks.timeout", &j.timeout, false),
            max_bytes: usize::try_from(j.max_bytes).unwrap_or(usize::MAX),
            ttl: self.duration("jwks.ttl", &j.ttl, false),
            stale_for: self.duration("jwks.stale_for", &j.stale_for, true),
            refetch_interval: self.duration("jwks.refetch_interval", &j.refetch_interval, true),
            max_urls: j.max_urls,
        };
        if !(1024..=4 * 1024 * 1024).contains(&j.max_bytes) {
            self.problem("jwks.max_bytes", "must be between 1024 and 4194304 bytes");
        }

        // [profile]
        let p = raw.profile;
        let kind = match p.kind.as_str() {
            "ob-v3.1" => Some(ProfileKind::ObV31),
            "cdr-1.13" => Some(ProfileKind::Cdr113),
            other => {
                self.problem(
                    "profile.kind",
                    format!("`{other}` must be \"ob-v3.1\" or \"cdr-1.13\""),
                );
                None
            }
        };
        let kind = kind?;
        let is_ob = kind == ProfileKind::ObV31;
        if p.audiences.is_empty() {
            self.problem(
                "profile.audiences",
                "must name at least one audience (OB: the bank's id from the directory; CDR: the holder's issuer URL)",
            );
        }
        for a in &p.audiences {
            if is_ob
                && (!(1..=18).contains(&a.len()) || a.chars().any(|c| !c.is_ascii_alphanumeric()))
            {
                self.problem(
                    "profile.audiences",
                    format!(
                        "`{a}`: an OB audience is the bank's Base62 id, 1-18 letters and digits"
                    ),
                );
            }
            if !is_ob && Url::parse(a).is_err() {
                self.problem(
                    "profile.audiences",
                    format!("`{a}`: a CDR audience is the holder's issuer URL"),
                );
            }
        }
        let clock_skew = self.duration("profile.clock_skew", &p.clock_skew, true);
        let ssa_max_age = p
            .ssa_max_age
            .as_deref()
            .map(|s| self.duration("profile.ssa_max_age", s, true))
            .filter(|d| !d.is_zero());
        let request_algorithms = self.algorithms(
            "profile.request_algorithms",
            p.request_algorithms,
            &["PS256", "ES256"],
        );
        let (sign_allowed, auth_allowed, scope_allowed, rt_allowed) = if is_ob {
            (
                OB_SIGNING_ALGS,
                OB_AUTH_METHODS,
                OB_SCOPES,
                OB_RESPONSE_TYPES,
            )
        } else {
            (
                CDR_SIGNING_ALGS,
                CDR_AUTH_METHODS,
                CDR_SCOPES,
                CDR_RESPONSE_TYPES,
            )
        };
        // PS256 and ES256 are what FAPI permits; RS256 stays available to an operator who opts in.
        let signing_algorithms = self.subset(
            "profile.signing_algorithms",
            p.signing_algorithms,
            sign_allowed,
            &["PS256", "ES256"],
        );
        let token_endpoint_auth_methods = self.subset(
            "profile.token_endpoint_auth_methods",
            p.token_endpoint_auth_methods,
            auth_allowed,
            auth_allowed,
        );
        let allowed_scopes = match p.allowed_scopes {
            Some(s) if s.is_empty() => {
                self.problem("profile.allowed_scopes", "must not be empty");
                s
            }
            Some(s) => s,
            None => scope_allowed.iter().map(|s| s.to_string()).collect(),
        };
        let default_scopes = p.default_scopes.unwrap_or_else(|| allowed_scopes.clone());
        for s in &default_scopes {
            if !allowed_scopes.contains(s) {
                self.problem(
                    "profile.default_scopes",
                    format!("`{s}` is not in profile.allowed_scopes"),
                );
            }
        }
        let rt_default = if is_ob {
            OB_RESPONSE_TYPES
        } else {
            CDR_DEFAULT_RESPONSE_TYPES
        };
        let response_types = self.subset(
            "profile.response_types",
            p.response_types,
            rt_allowed,
            rt_default,
        );
        let id_token_encryption_algs = self.subset(
            "profile.id_token_encryption_algs",
            p.id_token_encryption_algs,
            CDR_ENC_ALGS,
            CDR_ENC_ALGS,
        );
        let id_token_encryption_encs = self.subset(
            "profile.id_token_encryption_encs",
            p.id_token_encryption_encs,
            CDR_ENC_ENCS,
            CDR_ENC_ENCS,
        );
        let dn_match = if !p.dn_match_attributes.is_empty() {
            let mut oids = Vec::new();
            for a in &p.dn_match_attributes {
                match attribute_oid(a) {
                    Some(o) => oids.push(o),
                    None => self.problem(
                        "profile.dn_match_attributes",
                        format!("`{a}` is not a known attribute type or dotted OID"),
                    ),
                }
            }
            DnMatchRule::Attributes(oids)
        } else {
            match p.dn_match.as_str() {
                "unordered" => DnMatchRule::Unordered,
                "ordered" => DnMatchRule::Ordered,
                other => {
                    self.problem(
                        "profile.dn_match",
                        format!("`{other}` must be \"unordered\" or \"ordered\""),
                    );
                    DnMatchRule::Unordered
                }
            }
        };

        let software_product_status = match p.software_product_status_uri.as_deref() {
            None => None,
            Some(_) if is_ob => {
                self.problem(
                    "profile.software_product_status_uri",
                    "the CDR Register status check applies to the cdr-1.13 profile only",
                );
                None
            }
            Some(u) => self
                .url("profile.software_product_status_uri", u, &["https"])
                .map(|url| crate::dcr::status::StatusConfig {
                    url,
                    ttl: self.duration(
                        "profile.software_product_status_ttl",
                        &p.software_product_status_ttl,
                        false,
                    ),
                    max_stale: self.duration(
                        "profile.software_product_status_max_stale",
                        &p.software_product_status_max_stale,
                        true,
                    ),
                }),
        };

        // [[trust_anchors]]
        let mut trust_anchors = Vec::new();
        let mut seen = BTreeSet::new();
        if raw.trust_anchors.is_empty() {
            self.problem(
                "trust_anchors",
                "at least one [[trust_anchors]] entry is needed to verify software statements",
            );
        }
        for (i, a) in raw.trust_anchors.into_iter().enumerate() {
            let key = format!("trust_anchors[{i}]");
            if a.issuer.trim().is_empty() {
                self.problem(&format!("{key}.issuer"), "must not be empty");
            }
            if !seen.insert(a.issuer.clone()) {
                self.problem(
                    &format!("{key}.issuer"),
                    format!("`{}` is named by two trust anchors", a.issuer),
                );
            }
            let jwks_uri = self.url(&format!("{key}.jwks_uri"), &a.jwks_uri, &["https"]);
            let algorithms =
                self.algorithms(&format!("{key}.algorithms"), a.algorithms, &["PS256"]);
            if let Some(jwks_uri) = jwks_uri {
                trust_anchors.push(TrustAnchor {
                    issuer: a.issuer,
                    jwks_uri,
                    algorithms,
                });
            }
        }

        // [store]
        let reconcile = crate::dcr::reconcile::ReconcileConfig {
            interval: self.duration(
                "store.reconcile_interval",
                &raw.store.reconcile_interval,
                false,
            ),
            after: self.duration("store.reconcile_after", &raw.store.reconcile_after, true),
        };
        if reconcile.after < up_settle {
            self.problem(
                "store.reconcile_after",
                "must be at least upstream.settle_timeout, so late upstream answers settle first",
            );
        }
        let store = match raw.store.backend.as_str() {
            "sqlite" => match raw.store.path {
                Some(p) => Some(StoreConfig::Sqlite {
                    path: self.base.join(p),
                }),
                None => {
                    self.problem("store.path", "required for the sqlite backend");
                    None
                }
            },
            "postgres" => self.postgres(raw.store),
            other => {
                self.problem(
                    "store.backend",
                    format!("`{other}` must be \"sqlite\" or \"postgres\""),
                );
                None
            }
        };

        // [log]
        let format = match self
            .env
            .var("DCR_LOG_FORMAT")
            .unwrap_or(raw.log.format.clone())
            .as_str()
        {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            other => {
                self.problem(
                    "log.format",
                    format!("`{other}` must be \"json\" or \"text\""),
                );
                LogFormat::Json
            }
        };
        let level = self.env.var("DCR_LOG_LEVEL").unwrap_or(raw.log.level);
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.problem(
                "log.level",
                format!("`{level}` is not a log filter like \"info\""),
            );
        }

        let forward = self.forward(
            raw.forward,
            base_url.as_ref(),
            registration_endpoint.as_ref(),
            public_url.as_ref(),
            up_ca.clone(),
        );
        let management = raw
            .management
            .and_then(|m| self.management(m, kind, base_url.as_ref(), up_ca.clone()));

        Some(Config {
            reconcile,
            forward: forward?,
            management,
            server: ServerConfig {
                listen: listen?,
                admin_listen,
                drain_timeout,
                reload_interval,
                public_url: public_url?,
                handshake_timeout,
                request_timeout,
                max_body_bytes: usize::try_from(raw.server.max_body_bytes).unwrap_or(usize::MAX),
            },
            tls: TlsConfig {
                cert,
                key,
                client_ca,
                client_auth,
            },
            upstream: UpstreamConfig {
                base_url: base_url?,
                registration_endpoint: registration_endpoint?,
                initial_access_token_env: iat_env,
                initial_access_token: iat,
                connect_timeout: up_connect,
                timeout: up_timeout,
                settle_timeout: up_settle,
                ca_bundle: up_ca,
                admin: up_admin,
            },
            jwks,
            profile: ProfileConfig {
                kind,
                audiences: p.audiences,
                clock_skew,
                ssa_max_age,
                request_algorithms,
                signing_algorithms,
                token_endpoint_auth_methods,
                allowed_scopes,
                default_scopes,
                response_types,
                id_token_encryption_algs,
                id_token_encryption_encs,
                require_transport_cert_in_ssa_jwks: p
                    .require_transport_cert_in_ssa_jwks
                    .unwrap_or(is_ob),
                dn_match,
                unique_software_id: p.unique_software_id.unwrap_or(!is_ob),
                software_product_status,
            },
            trust_anchors,
            store: store?,
            log: LogConfig { format, level },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn dir_with_files() -> PathBuf {
        let d = std::env::temp_dir().join(format!("dcr-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).expect("temp dir");
        for f in ["cert.pem", "key.pem", "ca.pem"] {
            std::fs::write(d.join(f), "x").expect("write");
        }
        d
    }

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8443"
public_url = "https://localhost:8443"
[tls]
cert = "cert.pem"
key = "key.pem"
client_ca = "ca.pem"
[upstream]
base_url = "http://127.0.0.1:3000"
registration_endpoint = "/reg"
initial_access_token_env = "IAT"
[profile]
kind = "ob-v3.1"
audiences = ["0015800001041RHAAY"]
[[trust_anchors]]
issuer = "OpenBanking Ltd"
jwks_uri = "https://keystore.example/openbanking.jwks"
[store]
backend = "sqlite"
path = "dcr.sqlite"
"#;

    fn env() -> HashMap<String, String> {
        HashMap::from([("IAT".to_string(), "secret-token".to_string())])
    }

    #[test]
    fn loads_the_minimal_example_with_defaults() {
        let d = dir_with_files();
        let c = Config::from_toml_str(GOOD, "proxy.toml", &d, &env()).expect("valid");
        assert_eq!(c.server.handshake_timeout, Duration::from_secs(10));
        assert_eq!(
            c.upstream.registration_endpoint.as_str(),
            "http://127.0.0.1:3000/reg"
        );
        assert!(c.profile.require_transport_cert_in_ssa_jwks);
        assert!(!c.profile.unique_software_id);
        assert_eq!(
            c.trust_anchors[0].algorithms,
            vec![jsonwebtoken::Algorithm::PS256]
        );
        assert!(!format!("{:?}", c.upstream).contains("secret-token"));
    }

    #[test]
    fn an_unknown_key_is_named_with_its_dotted_path() {
        let d = dir_with_files();
        let src = GOOD.replace("[tls]\n", "[tls]\nclient_auht = \"required\"\n");
        let e = Config::from_toml_str(&src, "proxy.toml", &d, &env()).expect_err("unknown key");
        let s = e.to_string();
        assert!(s.starts_with("proxy.toml: tls"), "{s}");
        assert!(s.contains("client_auht"), "{s}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let d = dir_with_files();
        let src = GOOD
            .replace("public_url = ", "handshake_timeout = \"0s\"\npublic_url = ")
            .replace("cert = \"cert.pem\"", "cert = \"missing.pem\"")
            .replace(
                "kind = \"ob-v3.1\"",
                "kind = \"ob-v3.1\"\nrequest_algorithms = [\"HS256\", \"none\"]",
            )
            .replace(
                "\"https://keystore.example/openbanking.jwks\"",
                "\"http://keystore.example/x\"",
            );
        let e = Config::from_toml_str(&src, "proxy.toml", &d, &HashMap::new())
            .expect_err("several problems");
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"tls.cert"), "{keys:?}");
        assert!(keys.contains(&"profile.request_algorithms"), "{keys:?}");
        assert!(keys.contains(&"trust_anchors[0].jwks_uri"), "{keys:?}");
        assert!(
            keys.contains(&"upstream.initial_access_token_env"),
            "{keys:?}"
        );
        assert!(e.problems.len() >= 5, "{e}");
    }

    #[test]
    fn the_upstream_admin_section_is_checked_key_by_key() {
        let d = dir_with_files();
        let with_admin = |body: &str| {
            GOOD.replace(
                "[profile]\n",
                &format!("[upstream.admin]\n{body}\n[profile]\n"),
            )
        };
        let src = with_admin("token_endpoint = \"/token\"\nclient_id = \"dcr-admin\"");
        let e = Config::from_toml_str(&src, "proxy.toml", &d, &env()).expect_err("no secret");
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["upstream.admin.client_secret_env"], "{e}");
        assert!(
            e.to_string().contains("DCR_UPSTREAM_ADMIN_CLIENT_SECRET"),
            "{e}"
        );

        let mut vars = env();
        vars.insert(
            "DCR_UPSTREAM_ADMIN_CLIENT_SECRET".into(),
            "admin-secret".into(),
        );
        let c = Config::from_toml_str(&src, "proxy.toml", &d, &vars).expect("valid");
        let admin = c.upstream.admin.as_ref().expect("admin");
        assert_eq!(admin.token_endpoint.as_str(), "http://127.0.0.1:3000/token");
        assert!(!format!("{:?}", c.upstream).contains("admin-secret"));

        let typo = with_admin("token_endpoint = \"/token\"\nclient = \"x\"");
        let e = Config::from_toml_str(&typo, "proxy.toml", &d, &vars).expect_err("typo");
        assert!(e.to_string().contains("upstream.admin"), "{e}");
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10 days").is_err());
    }
}
