//! Revocation of client certificates: the CRLs (from operator files and from URLs), how fresh they are, and what a
//! revoked certificate or a stale CRL does to handshakes, open connections and registrations.
//!
//! rustls does the checking: tls.rs builds its client verifier from a [`CrlView`]. This module decides which CRLs
//! that verifier gets, keeps them fresh, and acts on its verdicts after the handshake.

mod crl;
mod fetch;
mod policy;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::CertificateRevocationListDer;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use url::Url;

use self::crl::{anchors, parse};
use crate::outbound::{HttpClient, redact_url};

/// The `crl_*` keys of `[tls]`. No file and no URL: no revocation checking, as before this existed.
#[derive(Debug, Clone)]
pub struct CrlConfig {
    /// PEM or DER CRL files, re-read when they change (every `server.reload_interval`) and on SIGHUP.
    pub files: Vec<PathBuf>,
    /// CRLs fetched at start, every `refresh_interval` and on SIGHUP.
    pub urls: Vec<Url>,
    pub refresh_interval: Duration,
    /// Connect plus download, per fetch.
    pub fetch_timeout: Duration,
    pub max_bytes: usize,
    /// Trust roots for https CRL URLs; the system's when None.
    pub ca_bundle: Option<PathBuf>,
    /// How long past its nextUpdate a CRL is still used.
    pub max_stale: Duration,
    pub stale_policy: StalePolicy,
}

impl CrlConfig {
    /// Revocation checking off.
    pub fn none() -> Self {
        CrlConfig {
            files: Vec::new(),
            urls: Vec::new(),
            refresh_interval: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(10),
            max_bytes: 10 * 1024 * 1024,
            ca_bundle: None,
            max_stale: Duration::from_secs(3600),
            stale_policy: StalePolicy::Closed,
        }
    }

    pub fn enabled(&self) -> bool {
        !self.files.is_empty() || !self.urls.is_empty()
    }
}

/// What a CRL past its bound (or a source that never delivered one) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StalePolicy {
    /// Handshakes with certificates it covers are refused, and so is any certificate no fresh CRL covers.
    Closed,
    /// Handshakes and registrations go on with the last CRL held; a metric and an error log say so.
    Open,
    /// Handshakes and pass-through go on with the last CRL held; /register and /register/* answer 503 for the
    /// certificates it covers until it is fresh again.
    OpenForPassthrough,
}

impl StalePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            StalePolicy::Closed => "closed",
            StalePolicy::Open => "open",
            StalePolicy::OpenForPassthrough => "open_for_passthrough",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("{key}: {problem}")]
    Setup { key: &'static str, problem: String },
}

fn setup(key: &'static str, problem: impl ToString) -> RevocationError {
    RevocationError::Setup {
        key,
        problem: problem.to_string(),
    }
}

#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Url(Url),
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Url(u) => redact_url(u),
        }
    }
}

/// The issuer's DER name and the CRL's issuing distribution point (raw): rustls consults one CRL per scope, so
/// of two CRLs with one scope only the newer is handed to it.
type Scope = (Vec<u8>, Option<Vec<u8>>);

#[derive(Clone, Debug)]
struct Crl {
    der: CertificateRevocationListDer<'static>,
    scope: Scope,
    /// The issuer's name, for logs.
    issuer: String,
    this_update: i64,
    next_update: i64,
    next_update_text: String,
    revoked: usize,
}

#[derive(Default)]
struct Held {
    crls: Vec<Crl>,
    /// SHA-256 of the file as last read; None when it could not be read.
    fingerprint: Option<[u8; 32]>,
    /// When a URL is fetched next.
    due: Option<Instant>,
}

/// The verifiers built from one [`CrlView`]: the handshake's, and for `open_for_passthrough` the one
/// registrations are held to.
pub struct Verifiers {
    pub handshake: Arc<dyn ClientCertVerifier>,
    /// The closed policy's verifier, where registrations must pass it and the handshake need not.
    pub strict: Option<Arc<dyn ClientCertVerifier>>,
}

/// The CRLs at one moment, split by freshness: what tls.rs builds the client verifier from.
#[derive(Debug, Clone)]
pub struct CrlView {
    pub enabled: bool,
    pub policy: StalePolicy,
    pub fresh: Vec<CertificateRevocationListDer<'static>>,
    /// Past nextUpdate + `crl_max_stale`: left out under the closed policy, still used by the open ones.
    pub stale: Vec<CertificateRevocationListDer<'static>>,
    /// Stale CRLs and sources that hold none, as an operator reads them.
    pub stale_names: Vec<String>,
    /// When the next fresh CRL goes stale (Unix seconds).
    next_deadline: Option<i64>,
    key: [u8; 32],
}

impl CrlView {
    /// No revocation checking.
    pub fn none() -> Self {
        CrlView {
            enabled: false,
            policy: StalePolicy::Closed,
            fresh: Vec::new(),
            stale: Vec::new(),
            stale_names: Vec::new(),
            next_deadline: None,
            key: [0; 32],
        }
    }
}

/// What was last published: to notice changes and log transitions once.
#[derive(Default)]
struct Published {
    key: Option<[u8; 32]>,
    stale: BTreeSet<String>,
}

/// The CRL cache and the revocation decisions after the handshake. One per process.
pub struct Revocation {
    cfg: CrlConfig,
    client_ca: PathBuf,
    sources: Vec<Source>,
    http: Option<HttpClient>,
    held: Mutex<Vec<Held>>,
    published: Mutex<Published>,
    /// Wakes whoever rebuilds the TLS config: the set of CRLs in force changed.
    changed: Notify,
    /// SIGHUP: fetch every URL now.
    refetch: Notify,
    enforced: watch::Sender<Option<Arc<Verifiers>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Revocation {
    /// Loads the CRL files now (one that does not load stops the start, like a certificate that does not);
    /// URLs are fetched by [`Revocation::fetch_now`] and [`Revocation::run`].
    pub fn new(cfg: &CrlConfig, client_ca: &Path) -> Result<Arc<Self>, RevocationError> {
        let sources: Vec<Source> = cfg
            .files
            .iter()
            .cloned()
            .map(Source::File)
            .chain(cfg.urls.iter().cloned().map(Source::Url))
            .collect();
        let http = if cfg.urls.is_empty() {
            None
        } else {
            let https = cfg.urls.iter().any(|u| u.scheme() == "https");
            Some(
                HttpClient::for_upstream(
                    https,
                    cfg.ca_bundle.as_deref(),
                    cfg.fetch_timeout,
                    cfg.fetch_timeout,
                    Duration::from_secs(30),
                    4,
                )
                .map_err(|e| setup("tls.crl_ca_bundle", e))?,
            )
        };
        let anchors = anchors(client_ca);
        let mut held: Vec<Held> = sources.iter().map(|_| Held::default()).collect();
        for (h, source) in held.iter_mut().zip(&sources) {
            if let Source::File(path) = source {
                let bytes = std::fs::read(path)
                    .map_err(|e| setup("tls.crl_files", format!("{}: {e}", path.display())))?;
                h.crls = parse(&bytes, &anchors)
                    .map_err(|e| setup("tls.crl_files", format!("{}: {e}", path.display())))?;
                h.fingerprint = Some(sha256(&bytes));
            }
        }
        let (enforced, _) = watch::channel(None);
        let r = Revocation {
            cfg: cfg.clone(),
            client_ca: client_ca.to_path_buf(),
            sources,
            http,
            held: Mutex::new(held),
            published: Mutex::new(Published::default()),
            changed: Notify::new(),
            refetch: Notify::new(),
            enforced,
        };
        Ok(Arc::new(r))
    }

    pub fn enabled(&self) -> bool {
        self.cfg.enabled()
    }

    pub fn policy(&self) -> StalePolicy {
        self.cfg.stale_policy
    }

    /// The CRLs in force now. Also records them as published, so the first change after start is a real one.
    pub fn view(&self) -> CrlView {
        self.publish(false)
    }

    /// Resolves when the CRLs in force have changed since the last call: rebuild the TLS config then.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// SIGHUP: fetch every CRL URL now rather than at its next refresh.
    pub fn refetch(&self) {
        self.refetch.notify_one();
    }

    /// Called with the verifiers of every TLS config put in force, so open connections are held to them too.
    pub fn enforce(&self, verifiers: Verifiers) {
        self.enforced.send_replace(Some(Arc::new(verifiers)));
    }
}
