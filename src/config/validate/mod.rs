//! Pass two: what each section means. One function per section; each records every problem it finds and
//! carries on with a stand-in value, so one run lists everything wrong with a file. The stages' constructors
//! take what comes out of here as valid.

mod backends;
mod registration;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::raw::{RawAdmin, RawConfig, RawJwks, RawLog, RawServer, RawTls};
use super::{Config, Env, Problem};
use crate::jwks::JwksConfig;
use crate::secret::Secret;
use crate::server::ServerConfig;
use crate::telemetry::{LogConfig, LogFormat};
use crate::tls::revocation::{CrlConfig, StalePolicy};
use crate::tls::{ClientAuth, TlsConfig};

/// JWS algorithms we are willing to verify at all; `none` and HMAC never appear here.
const VERIFIABLE_ALGS: &[&str] = &[
    "PS256", "PS384", "PS512", "ES256", "ES384", "RS256", "RS384", "RS512", "EdDSA",
];

/// Parses "250ms", "10s", "5m", "1h"; a bare number is refused so units are never guessed, and so is a
/// decimal, with the whole number to write instead.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("`{s}` has no unit: write e.g. \"10s\", \"250ms\", \"5m\""))?;
    let (num, unit) = s.split_at(split);
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("`{s}`: the unit must be one of ms, s, m, h")),
    };
    if let Some((whole, fraction)) = num.split_once('.') {
        return Err(decimal_problem(s, whole, fraction, unit_ms));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like \"10s\""))?;
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// "1.5s" → "use 1500ms": the same time as a whole number of the largest unit that expresses it.
fn decimal_problem(s: &str, whole: &str, fraction: &str, unit_ms: u64) -> String {
    let exact = (|| {
        if fraction.len() > 9 || !fraction.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let scale = 10u128.pow(u32::try_from(fraction.len()).ok()?);
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let fraction: u128 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().ok()?
        };
        let scaled = (whole.checked_mul(scale)? + fraction).checked_mul(u128::from(unit_ms))?;
        (scaled % scale == 0).then_some(scaled / scale)
    })();
    match exact {
        Some(ms) => {
            let (n, unit) = [(3_600_000, "h"), (60_000, "m"), (1_000, "s")]
                .into_iter()
                .find(|(size, _)| ms > 0 && ms % size == 0)
                .map_or((ms, "ms"), |(size, unit)| (ms / size, unit));
            format!("`{s}`: decimals are not allowed; use {n}{unit}")
        }
        None => format!("`{s}`: decimals are not allowed; write a whole number of ms, s, m or h"),
    }
}

fn parse_algorithm(s: &str) -> Option<jsonwebtoken::Algorithm> {
    if !VERIFIABLE_ALGS.contains(&s) {
        return None;
    }
    s.parse().ok()
}

pub(super) struct Validator<'e> {
    pub(super) problems: Vec<Problem>,
    base: PathBuf,
    env: &'e dyn Env,
    /// Keys whose value could not be read (missing, wrong type): their stand-ins are not checked again.
    failed: BTreeSet<String>,
}

impl<'e> Validator<'e> {
    pub(super) fn new(base: &Path, env: &'e dyn Env, failed: BTreeSet<String>) -> Self {
        Validator {
            problems: Vec::new(),
            base: base.to_path_buf(),
            env,
            failed,
        }
    }

    fn problem(&mut self, key: &str, problem: impl Into<String>) {
        let under = |f: &String| {
            key.strip_prefix(f.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        };
        if !self.failed.iter().any(under) {
            self.problems.push(Problem::at(key, problem));
        }
    }

    /// A problem with a value that came from the environment variable `var` (when set) instead of `key`.
    fn blame(&mut self, var: Option<&str>, key: &str, problem: String) {
        match var {
            Some(var) => self.problems.push(Problem {
                env: Some(var.to_string()),
                ..Problem::at(key, problem)
            }),
            None => self.problem(key, problem),
        }
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

    fn socket_addr(&mut self, key: &str, s: &str, example: &str) -> Option<SocketAddr> {
        match s.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(key, format!("`{s}` is not an address like {example}"));
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

    /// One of `choices`, or the problem naming them all.
    fn choice<T: Clone>(&mut self, key: &str, s: &str, choices: &[(&str, T)]) -> Option<T> {
        if let Some((_, t)) = choices.iter().find(|(name, _)| *name == s) {
            return Some(t.clone());
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        self.problem(key, format!("`{s}` must be one of {}", names.join(", ")));
        None
    }

    fn subset(
        &mut self,
        key: &str,
        given: Option<Vec<String>>,
        allowed: &[&str],
        default: &[&str],
    ) -> Vec<String> {
        let Some(list) = given else {
            return default.iter().map(|s| s.to_string()).collect();
        };
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

    /// A required secret from the environment variable `var`; a missing or empty one is a problem at `key`.
    fn secret(&mut self, key: &str, var: &str) -> Option<Secret> {
        match self.env.var(var) {
            Some(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_string())),
            _ => {
                self.problem(
                    key,
                    format!("environment variable {var} is not set or empty"),
                );
                None
            }
        }
    }

    pub(super) fn build(&mut self, raw: RawConfig) -> Option<Config> {
        let server = self.server(&raw.server, &raw.admin);
        let tls = self.tls(&raw.tls);
        let upstream = self.upstream(&raw.upstream);
        let jwks = self.jwks(&raw.jwks);
        let kind = self.profile_kind(&raw.profile.kind);
        let profile = kind.map(|kind| self.profile(kind, raw.profile));
        let trust_anchors = self.trust_anchors(raw.trust_anchors);
        let settle = upstream
            .as_ref()
            .map_or(Duration::ZERO, |u| u.settle_timeout);
        let (store, reconcile) = self.store(raw.store, settle);
        let log = self.log(raw.log);
        let public_url = server.as_ref().map(|s| &s.public_url);
        let forward = self.forward(raw.forward, upstream.as_ref(), public_url);
        let management = match raw.management {
            Some(m) => Some(self.management(m, kind, upstream.as_ref())?),
            None => None,
        };
        if let Some(u) = &upstream {
            self.upstream_coherence(u, forward.as_ref(), management.as_ref());
        }
        Some(Config {
            server: server?,
            tls: tls?,
            upstream: upstream?,
            jwks,
            profile: profile?,
            trust_anchors,
            store: store?,
            log,
            management,
            forward: forward?,
            reconcile,
            lines: Default::default(),
        })
    }

    /// `[server]` and `[admin]`.
    fn server(&mut self, s: &RawServer, a: &RawAdmin) -> Option<ServerConfig> {
        let listen = self.socket_addr("server.listen", &s.listen, "0.0.0.0:8443");
        let public_url = self.url("server.public_url", &s.public_url, &["https"]);
        let handshake_timeout =
            self.duration("server.handshake_timeout", &s.handshake_timeout, false);
        let request_timeout = self.duration("server.request_timeout", &s.request_timeout, false);
        let drain_timeout = self.duration("server.drain_timeout", &s.drain_timeout, true);
        let reload_interval = self.duration("server.reload_interval", &s.reload_interval, false);
        if !(1024..=16 * 1024 * 1024).contains(&s.max_body_bytes) {
            self.problem(
                "server.max_body_bytes",
                "must be between 1024 and 16777216 bytes",
            );
        }
        let admin_listen = if a.enabled {
            Some(self.socket_addr("admin.listen", &a.listen, "0.0.0.0:9901")?)
        } else {
            None
        };
        let idle_timeout = self.duration("server.idle_timeout", &s.idle_timeout, false);
        let max_connections = s
            .max_connections
            .map(|n| self.count("server.max_connections", n, 1, 1_000_000));
        let max_connections_per_address = self.count(
            "server.max_connections_per_address",
            s.max_connections_per_address,
            0,
            1_000_000,
        );
        if let Some(max) = max_connections
            && max_connections_per_address > max
        {
            self.problem(
                "server.max_connections_per_address",
                "must not be above server.max_connections",
            );
        }
        let reserved_fds = self.count("server.reserved_fds", s.reserved_fds, 32, 1_000_000);
        let max_concurrent_streams = self.count(
            "server.max_concurrent_streams",
            s.max_concurrent_streams,
            1,
            1000,
        );
        let max_concurrent_registrations = self.count(
            "server.max_concurrent_registrations",
            s.max_concurrent_registrations,
            1,
            10_000,
        );
        let max_header_bytes =
            self.count("server.max_header_bytes", s.max_header_bytes, 1024, 1 << 20);
        let max_header_total_bytes = self.count(
            "server.max_header_total_bytes",
            s.max_header_total_bytes,
            1024,
            1 << 20,
        );
        if max_header_total_bytes < max_header_bytes {
            self.problem(
                "server.max_header_total_bytes",
                "must be at least server.max_header_bytes",
            );
        }
        let workers = s.workers.map(|n| self.count("server.workers", n, 1, 64));
        let admin_idle_timeout = self.duration("admin.idle_timeout", &a.idle_timeout, false);
        let admin_max_connections =
            self.count("admin.max_connections", a.max_connections, 1, 10_000);
        Some(ServerConfig {
            listen: listen?,
            admin_listen,
            drain_timeout,
            reload_interval,
            public_url: public_url?,
            handshake_timeout,
            request_timeout,
            max_body_bytes: usize::try_from(s.max_body_bytes).unwrap_or(usize::MAX),
            idle_timeout,
            max_connections,
            max_connections_per_address,
            reserved_fds: u64::from(reserved_fds),
            max_concurrent_streams,
            max_concurrent_registrations,
            max_header_bytes: max_header_bytes as usize,
            max_header_total_bytes: max_header_total_bytes as usize,
            admin_idle_timeout,
            admin_max_connections,
            workers,
        })
    }

    /// A whole number within `min..=max`; out of range is a problem, and the nearest bound stands in.
    fn count(&mut self, key: &str, n: u64, min: u32, max: u32) -> u32 {
        if n < u64::from(min) || n > u64::from(max) {
            self.problem(key, format!("must be between {min} and {max}"));
        }
        u32::try_from(n.clamp(u64::from(min), u64::from(max))).unwrap_or(max)
    }

    /// `[tls]`: the files must exist here; that they hold a usable certificate and key is known only
    /// once rustls has loaded them (tls.rs).
    fn tls(&mut self, t: &RawTls) -> Option<TlsConfig> {
        let cert = self.file("tls.cert", &t.cert);
        let key = self.file("tls.key", &t.key);
        let client_ca = self.file("tls.client_ca", &t.client_ca);
        let client_auth = self.choice(
            "tls.client_auth",
            &t.client_auth,
            &[
                ("optional", ClientAuth::Optional),
                ("required", ClientAuth::Required),
            ],
        );
        let crl = self.crl(t);
        Some(TlsConfig {
            cert,
            key,
            client_ca,
            client_auth: client_auth?,
            crl: crl?,
        })
    }

    /// The `crl_*` keys of `[tls]`: files must exist now, like the certificates; that they hold CRLs the client
    /// CAs signed is known once tls::revocation has loaded them.
    fn crl(&mut self, t: &RawTls) -> Option<CrlConfig> {
        let files: Vec<PathBuf> = t
            .crl_files
            .iter()
            .enumerate()
            .map(|(i, f)| self.file(&format!("tls.crl_files[{i}]"), f))
            .collect();
        let mut urls: Vec<Url> = Vec::new();
        for (i, u) in t.crl_urls.iter().enumerate() {
            let key = format!("tls.crl_urls[{i}]");
            if let Some(url) = self.url(&key, u, &["http", "https"]) {
                if urls.contains(&url) {
                    self.problem(&key, format!("`{u}` is listed twice"));
                }
                urls.push(url);
            }
        }
        let refresh_interval =
            self.duration("tls.crl_refresh_interval", &t.crl_refresh_interval, false);
        let fetch_timeout = self.duration("tls.crl_fetch_timeout", &t.crl_fetch_timeout, false);
        let max_stale = self.duration("tls.crl_max_stale", &t.crl_max_stale, true);
        if !(1024..=256 * 1024 * 1024).contains(&t.crl_max_bytes) {
            self.problem(
                "tls.crl_max_bytes",
                "must be between 1024 and 268435456 bytes",
            );
        }
        let ca_bundle = t
            .crl_ca_bundle
            .as_deref()
            .map(|p| self.file("tls.crl_ca_bundle", p));
        let stale_policy = self.choice(
            "tls.crl_stale_policy",
            &t.crl_stale_policy,
            &[
                ("closed", StalePolicy::Closed),
                ("open", StalePolicy::Open),
                ("open_for_passthrough", StalePolicy::OpenForPassthrough),
            ],
        );
        Some(CrlConfig {
            files,
            urls,
            refresh_interval,
            fetch_timeout,
            max_bytes: usize::try_from(t.crl_max_bytes).unwrap_or(usize::MAX),
            ca_bundle,
            max_stale,
            stale_policy: stale_policy?,
        })
    }

    /// `[jwks]`.
    fn jwks(&mut self, j: &RawJwks) -> JwksConfig {
        if !(1024..=4 * 1024 * 1024).contains(&j.max_bytes) {
            self.problem("jwks.max_bytes", "must be between 1024 and 4194304 bytes");
        }
        if j.max_urls == 0 {
            self.problem("jwks.max_urls", "must be at least 1");
        }
        JwksConfig {
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
        }
    }

    /// `[log]`; DCR_LOG_FORMAT and DCR_LOG_LEVEL override the file, and a bad value is blamed on them.
    fn log(&mut self, l: RawLog) -> LogConfig {
        let format_var = self
            .env
            .var("DCR_LOG_FORMAT")
            .map(|v| ("DCR_LOG_FORMAT", v));
        let (var, format) = match format_var {
            Some((var, v)) => (Some(var), v),
            None => (None, l.format),
        };
        let format = match format.as_str() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            other => {
                self.blame(
                    var,
                    "log.format",
                    format!("`{other}` must be \"json\" or \"text\""),
                );
                LogFormat::Json
            }
        };
        let (var, level) = match self.env.var("DCR_LOG_LEVEL") {
            Some(v) => (Some("DCR_LOG_LEVEL"), v),
            None => (None, l.level),
        };
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.blame(
                var,
                "log.level",
                format!("`{level}` is not a log filter like \"info\""),
            );
        }
        LogConfig { format, level }
    }
}
