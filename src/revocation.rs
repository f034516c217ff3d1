//! Revocation of client certificates: the CRLs (from operator files and from URLs), how fresh they are, and what a
//! revoked certificate or a stale CRL does to handshakes, open connections and registrations.
//!
//! rustls does the checking: tls.rs builds its client verifier from a [`CrlView`]. This module decides which CRLs
//! that verifier gets, keeps them fresh, and acts on its verdicts after the handshake.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, Error as RustlsError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use url::Url;
use x509_parser::oid_registry::{
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, OID_X509_EXT_ISSUER_DISTRIBUTION_POINT,
};

use crate::error::ProxyError;
use crate::identity::PeerCert;
use crate::metrics::{METRICS, ReasonLabels};
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

/// After a failed fetch the next try comes sooner than a refresh, so a blip does not cost a whole interval.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

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

    /// Fetches every URL once, all at the same time; at start, so the first handshakes already have them.
    pub async fn fetch_now(self: &Arc<Self>) {
        self.fetch_due(true).await;
    }

    /// Re-reads the CRL files that changed (all of them when `force`); a file that does not load leaves its
    /// previous CRLs in force.
    pub fn poll_files(&self, force: bool) {
        if self.cfg.files.is_empty() {
            return;
        }
        let mut anchors_cache = None;
        for (i, source) in self.sources.iter().enumerate() {
            let Source::File(path) = source else {
                continue;
            };
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) => {
                    let mut held = lock(&self.held);
                    if force || held[i].fingerprint.is_some() {
                        METRICS.crl_refresh_failures.inc();
                        tracing::error!(file = %path.display(), error = %e, "CRL file cannot be read; keeping the CRLs it held");
                    }
                    held[i].fingerprint = None;
                    continue;
                }
            };
            let fp = sha256(&bytes);
            {
                let mut held = lock(&self.held);
                if !force && held[i].fingerprint == Some(fp) {
                    continue;
                }
                held[i].fingerprint = Some(fp);
            }
            let anchors = anchors_cache.get_or_insert_with(|| anchors(&self.client_ca));
            match parse(&bytes, anchors) {
                Ok(crls) => {
                    for c in &crls {
                        tracing::info!(file = %path.display(), issuer = %c.issuer, revoked = c.revoked, next_update = %c.next_update_text, "CRL file loaded");
                    }
                    lock(&self.held)[i].crls = crls;
                }
                Err(e) => {
                    METRICS.crl_refresh_failures.inc();
                    tracing::error!(file = %path.display(), error = %e, "CRL file does not load; keeping the CRLs it held");
                }
            }
        }
        self.publish(true);
    }

    /// Fetches the URLs when due and wakes when a CRL goes stale, for as long as the process runs.
    pub async fn run(self: Arc<Self>) {
        if !self.enabled() {
            return;
        }
        let mut force = false;
        loop {
            self.fetch_due(force).await;
            let view = self.publish(true);
            let now = Instant::now();
            let mut wake = now + self.cfg.refresh_interval;
            for h in lock(&self.held).iter() {
                if let Some(due) = h.due {
                    wake = wake.min(due);
                }
            }
            if let Some(deadline) = view.next_deadline {
                let secs = u64::try_from(deadline.saturating_sub(unix_now())).unwrap_or(0);
                wake = wake.min(now + Duration::from_secs(secs));
            }
            force = tokio::select! {
                _ = tokio::time::sleep_until(wake) => false,
                _ = self.refetch.notified() => true,
            };
        }
    }

    async fn fetch_due(self: &Arc<Self>, force: bool) {
        let now = Instant::now();
        let due: Vec<(usize, Url)> = {
            let held = lock(&self.held);
            self.sources
                .iter()
                .enumerate()
                .filter_map(|(i, s)| match s {
                    Source::Url(u) if force || held[i].due.is_none_or(|d| d <= now) => {
                        Some((i, u.clone()))
                    }
                    _ => None,
                })
                .collect()
        };
        if due.is_empty() {
            return;
        }
        let mut fetches = tokio::task::JoinSet::new();
        for (i, url) in due {
            let me = self.clone();
            fetches.spawn(async move {
                let got = me.fetch(&url).await;
                (i, url, got)
            });
        }
        let anchors = anchors(&self.client_ca);
        while let Some(done) = fetches.join_next().await {
            let Ok((i, url, got)) = done else {
                continue;
            };
            self.store_fetched(i, &url, got.and_then(|b| parse(&b, &anchors)));
        }
    }

    async fn fetch(&self, url: &Url) -> Result<Vec<u8>, String> {
        let http = self
            .http
            .as_ref()
            .ok_or_else(|| "no HTTP client for CRL URLs".to_string())?;
        let reply = http
            .send(
                Method::GET,
                url,
                &[("accept", "application/pkix-crl, application/x-pem-file")],
                None,
                self.cfg.max_bytes,
            )
            .await
            .map_err(|e| e.to_string())?;
        match reply.status.as_u16() {
            200 => Ok(reply.body.to_vec()),
            s @ 300..=399 => Err(format!(
                "HTTP {s}: redirects are not followed; configure the URL it points to"
            )),
            s => Err(format!("HTTP {s}")),
        }
    }

    fn store_fetched(&self, i: usize, url: &Url, got: Result<Vec<Crl>, String>) {
        let name = redact_url(url);
        let mut held = lock(&self.held);
        let h = &mut held[i];
        let crls = match got {
            Ok(crls) => crls,
            Err(e) => {
                METRICS.crl_refresh_failures.inc();
                h.due = Some(Instant::now() + self.cfg.refresh_interval.min(RETRY_AFTER_FAILURE));
                tracing::warn!(url = %name, error = %e, "CRL fetch failed; keeping the CRL held until it goes stale");
                return;
            }
        };
        // A genuine but older CRL, replayed by whoever sits on a plain-http path, would hide newer revocations.
        if let Some(old) = crls.iter().find_map(|n| {
            h.crls
                .iter()
                .find(|o| o.scope == n.scope && n.this_update < o.this_update)
        }) {
            METRICS.crl_refresh_failures.inc();
            h.due = Some(Instant::now() + self.cfg.refresh_interval.min(RETRY_AFTER_FAILURE));
            tracing::error!(url = %name, issuer = %old.issuer, "CRL fetched is older than the one held; keeping the newer");
            return;
        }
        h.due = Some(Instant::now() + self.cfg.refresh_interval);
        let same =
            h.crls.len() == crls.len() && h.crls.iter().zip(&crls).all(|(a, b)| a.der == b.der);
        if !same {
            for c in &crls {
                tracing::info!(url = %name, issuer = %c.issuer, revoked = c.revoked, next_update = %c.next_update_text, "CRL fetched");
            }
        }
        h.crls = crls;
    }

    /// The view at `now`; with `notify`, wakes the TLS rebuild when it differs from the last one published.
    fn publish(&self, notify: bool) -> CrlView {
        let view = self.view_at(unix_now());
        if !view.enabled {
            return view;
        }
        METRICS
            .crl_stale
            .set(i64::try_from(view.stale_names.len()).unwrap_or(i64::MAX));
        let mut last = lock(&self.published);
        let now_stale: BTreeSet<String> = view.stale_names.iter().cloned().collect();
        for name in now_stale.difference(&last.stale) {
            match self.cfg.stale_policy {
                StalePolicy::Closed => tracing::error!(crl = %name, policy = "closed",
                    "CRL stale beyond crl_max_stale: handshakes with the certificates it covers are refused until a fresh one loads"),
                StalePolicy::Open => tracing::error!(crl = %name, policy = "open",
                    "FAIL-OPEN: CRL stale beyond crl_max_stale; handshakes and registrations go on with the last CRL held"),
                StalePolicy::OpenForPassthrough => {
                    tracing::error!(crl = %name, policy = "open_for_passthrough",
                    "FAIL-OPEN for pass-through: CRL stale beyond crl_max_stale; /register answers 503 for the certificates it covers until a fresh one loads")
                }
            }
        }
        for name in last.stale.difference(&now_stale) {
            tracing::info!(crl = %name, "CRL no longer stale");
        }
        last.stale = now_stale;
        if last.key != Some(view.key) {
            let first = last.key.is_none();
            last.key = Some(view.key);
            drop(last);
            self.warn_uncovered(&view);
            if notify && !first {
                self.changed.notify_one();
            }
        }
        view
    }

    /// Client CAs no CRL speaks for: under the closed policy their certificates are all refused.
    fn warn_uncovered(&self, view: &CrlView) {
        let covered: BTreeSet<Vec<u8>> = view
            .fresh
            .iter()
            .chain(if view.policy == StalePolicy::Closed {
                [].iter()
            } else {
                view.stale.iter()
            })
            .filter_map(|der| {
                x509_parser::parse_x509_crl(der.as_ref())
                    .ok()
                    .map(|(_, c)| c.issuer().as_raw().to_vec())
            })
            .collect();
        for ca in anchors(&self.client_ca) {
            let Ok((_, cert)) = x509_parser::parse_x509_certificate(ca.as_ref()) else {
                continue;
            };
            if !covered.contains(cert.subject().as_raw()) {
                tracing::warn!(ca = %cert.subject(), policy = self.cfg.stale_policy.as_str(),
                    "no usable CRL from this client CA: the certificates it issues have an unknown revocation status");
            }
        }
    }

    fn view_at(&self, now: i64) -> CrlView {
        if !self.enabled() {
            return CrlView::none();
        }
        let held = lock(&self.held);
        let mut stale_names = Vec::new();
        let mut newest: BTreeMap<&Scope, &Crl> = BTreeMap::new();
        for (h, source) in held.iter().zip(&self.sources) {
            if h.crls.is_empty() {
                stale_names.push(format!("{} (no CRL held)", source.name()));
            }
            for c in &h.crls {
                let entry = newest.entry(&c.scope).or_insert(c);
                if c.this_update > entry.this_update {
                    *entry = c;
                }
            }
        }
        let bound = i64::try_from(self.cfg.max_stale.as_secs()).unwrap_or(i64::MAX);
        let mut fresh = Vec::new();
        let mut stale = Vec::new();
        let mut next_deadline: Option<i64> = None;
        let mut key = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for c in newest.values() {
            let stale_at = c.next_update.saturating_add(bound);
            if now > stale_at {
                stale.push(c.der.clone());
                stale_names.push(format!(
                    "CRL of {} (nextUpdate {})",
                    c.issuer, c.next_update_text
                ));
                key.update(b"s");
            } else {
                fresh.push(c.der.clone());
                let wake = stale_at.saturating_add(1);
                next_deadline = Some(next_deadline.map_or(wake, |d| d.min(wake)));
                key.update(b"f");
            }
            key.update(&sha256(c.der.as_ref()));
        }
        let mut k = [0; 32];
        k.copy_from_slice(key.finish().as_ref());
        CrlView {
            enabled: true,
            policy: self.cfg.stale_policy,
            fresh,
            stale,
            stale_names,
            next_deadline,
            key: k,
        }
    }

    /// Runs a connection's future until it ends, or until the CRLs in force say its certificate is revoked (or,
    /// under the closed policy, of unknown status); then drops it, which closes the connection. None when cut.
    /// The future is boxed as a plain `Send` one: held across awaits here, hyper's connection type defeats the
    /// compiler's Send inference.
    pub async fn guard<T>(
        &self,
        peer: Option<&PeerCert>,
        addr: SocketAddr,
        mut served: Pin<Box<dyn Future<Output = T> + Send + '_>>,
    ) -> Option<T> {
        let Some(peer) = peer.filter(|_| self.enabled()) else {
            return Some(served.await);
        };
        let mut rx = self.enforced.subscribe();
        loop {
            // Checked on entry too: CRLs may have changed between this connection's handshake and now.
            let verdict = rx
                .borrow_and_update()
                .as_ref()
                .and_then(|v| revocation_failure(v.handshake.as_ref(), peer));
            if let Some(reason) = verdict {
                METRICS
                    .revoked_connections_closed
                    .get_or_create(&ReasonLabels { reason })
                    .inc();
                tracing::warn!(peer = %addr, failure = "revocation", reason, subject = %peer.subject_text,
                    "closing a connection whose client certificate the current CRLs refuse");
                return None;
            }
            tokio::select! {
                out = &mut served => return Some(out),
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Some(served.await);
                    }
                }
            }
        }
    }

    /// For /register and /register/*: under `open_for_passthrough`, a certificate whose revocation status rests on
    /// a stale CRL (or on none) is refused until a fresh one loads.
    pub fn registration_refusal(&self, peer: Option<&PeerCert>) -> Option<ProxyError> {
        if self.cfg.stale_policy != StalePolicy::OpenForPassthrough {
            return None;
        }
        let peer = peer?;
        let verifiers = self.enforced.borrow().clone()?;
        let strict = verifiers.strict.as_ref()?;
        let reason = revocation_failure(strict.as_ref(), peer)?;
        tracing::warn!(failure = "revocation", reason, subject = %peer.subject_text,
            "registration refused: the client certificate's revocation status cannot be confirmed with a fresh CRL");
        Some(ProxyError::RevocationUnconfirmed)
    }
}

/// The metric reason when `verifier` refuses `peer` on revocation grounds; other failures (expiry since the
/// handshake, say) are not this module's to act on.
fn revocation_failure(verifier: &dyn ClientCertVerifier, peer: &PeerCert) -> Option<&'static str> {
    match verifier.verify_client_cert(&peer.der, &peer.chain, UnixTime::now()) {
        Err(RustlsError::InvalidCertificate(CertificateError::Revoked)) => {
            Some("revoked_certificate")
        }
        Err(RustlsError::InvalidCertificate(
            CertificateError::UnknownRevocationStatus
            | CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. },
        )) => Some("revocation_unknown"),
        _ => None,
    }
}

/// The client CA bundle as it is now; empty when unreadable (the CRLs then load without a signature check here,
/// and rustls still checks it at every handshake).
fn anchors(client_ca: &Path) -> Vec<CertificateDer<'static>> {
    crate::tls::load_certs(client_ca, "tls.client_ca").unwrap_or_default()
}

/// One or more CRLs, PEM (`X509 CRL` blocks) or a single DER. Each must parse as rustls will parse it, carry a
/// nextUpdate, and, when its issuer is in the client CA bundle, be signed by that CA.
fn parse(bytes: &[u8], anchors: &[CertificateDer<'static>]) -> Result<Vec<Crl>, String> {
    let pem = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'-');
    let ders: Vec<CertificateRevocationListDer<'static>> = if pem {
        let all = CertificateRevocationListDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("PEM: {e}"))?;
        if all.is_empty() {
            return Err("no `X509 CRL` PEM block found".into());
        }
        all
    } else {
        vec![CertificateRevocationListDer::from(bytes.to_vec())]
    };
    ders.into_iter()
        .map(|der| parse_one(der, anchors))
        .collect()
}

fn parse_one(
    der: CertificateRevocationListDer<'static>,
    anchors: &[CertificateDer<'static>],
) -> Result<Crl, String> {
    let (rest, crl) =
        x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| format!("not a CRL: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the CRL", rest.len()));
    }
    let issuer = crl.issuer().to_string();
    // RFC 5280 §5.1.2.5: conforming issuers always set it, and without it there is no bound on staleness.
    let next_update = crl
        .next_update()
        .ok_or_else(|| format!("the CRL of {issuer} has no nextUpdate"))?;
    let alg = &crl.signature_algorithm.algorithm;
    if *alg == OID_PKCS1_SHA1WITHRSA || *alg == OID_SHA1_WITH_RSA {
        return Err(format!(
            "the CRL of {issuer} is signed with SHA-1, which rustls refuses"
        ));
    }
    // The same parser the verifier uses, so a CRL it would refuse is refused here, with its file or URL named.
    crate::tls::check_crl(&der).map_err(|e| format!("the CRL of {issuer}: {e}"))?;
    let issuer_raw = crl.issuer().as_raw();
    let mut signers = anchors.iter().filter_map(|a| {
        x509_parser::parse_x509_certificate(a.as_ref())
            .ok()
            .map(|(_, c)| c)
            .filter(|c| c.subject().as_raw() == issuer_raw)
    });
    let mut known_issuer = false;
    let verified = signers.any(|c| {
        known_issuer = true;
        crl.verify_signature(c.public_key()).is_ok()
    });
    if known_issuer && !verified {
        return Err(format!(
            "the CRL's signature does not verify with the key of {issuer} in tls.client_ca"
        ));
    }
    let idp = crl
        .extensions()
        .iter()
        .find(|e| e.oid == OID_X509_EXT_ISSUER_DISTRIBUTION_POINT)
        .map(|e| e.value.to_vec());
    let revoked = crl.iter_revoked_certificates().count();
    let this_update = crl.last_update().timestamp();
    Ok(Crl {
        scope: (issuer_raw.to_vec(), idp),
        issuer,
        this_update,
        next_update: next_update.timestamp(),
        next_update_text: next_update.to_string(),
        revoked,
        der,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
        DistinguishedName, DnType, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
        RevokedCertParams, SerialNumber,
    };
    use time::{Duration as TimeDelta, OffsetDateTime};

    use super::*;
    use crate::tls::{self, ClientAuth, TlsConfig};

    type Ca = CertifiedIssuer<'static, KeyPair>;

    fn ca_params(name: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    }

    fn root(name: &str) -> Ca {
        CertifiedIssuer::self_signed(ca_params(name), KeyPair::generate().expect("key"))
            .expect("root")
    }

    fn intermediate(parent: &Ca, name: &str, serial: u64) -> Ca {
        let mut p = ca_params(name);
        p.serial_number = Some(SerialNumber::from(serial));
        CertifiedIssuer::signed_by(p, KeyPair::generate().expect("key"), parent)
            .expect("intermediate")
    }

    fn leaf(ca: &Ca, serial: u64) -> PeerCert {
        let mut p = CertificateParams::new(vec!["tpp.example".to_string()]).expect("params");
        p.serial_number = Some(SerialNumber::from(serial));
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p
            .signed_by(&KeyPair::generate().expect("key"), ca)
            .expect("leaf");
        PeerCert::from_der(cert.der().clone(), Vec::new()).expect("parse")
    }

    /// A CRL of `ca` revoking `serials`, issued `age` ago and due again `valid` after that.
    fn crl(
        ca: &Ca,
        serials: &[u64],
        age: TimeDelta,
        valid: TimeDelta,
    ) -> rcgen::CertificateRevocationList {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now - age,
            next_update: now - age + valid,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - age,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(ca)
        .expect("crl")
    }

    fn fresh(ca: &Ca, serials: &[u64]) -> rcgen::CertificateRevocationList {
        crl(ca, serials, TimeDelta::hours(1), TimeDelta::days(1))
    }

    /// Two hours past its nextUpdate: stale under the default one-hour bound.
    fn stale(ca: &Ca, serials: &[u64]) -> rcgen::CertificateRevocationList {
        crl(ca, serials, TimeDelta::hours(5), TimeDelta::hours(3))
    }

    struct Setup {
        dir: PathBuf,
        tls: TlsConfig,
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// TLS files trusting `cas`, and one CRL file per entry of `crls` (PEM).
    fn setup(cas: &[&Ca], crls: &[String], policy: StalePolicy) -> Setup {
        let dir = std::env::temp_dir().join(format!("dcr-crl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let server = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        std::fs::write(dir.join("cert.pem"), server.cert.pem()).expect("write");
        std::fs::write(dir.join("key.pem"), server.signing_key.serialize_pem()).expect("write");
        let bundle: String = cas.iter().map(|c| c.pem()).collect();
        std::fs::write(dir.join("ca.pem"), bundle).expect("write");
        let mut files = Vec::new();
        for (i, c) in crls.iter().enumerate() {
            let p = dir.join(format!("crl{i}.pem"));
            std::fs::write(&p, c).expect("write");
            files.push(p);
        }
        let tls = TlsConfig {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: dir.join("ca.pem"),
            client_auth: ClientAuth::Optional,
            crl: CrlConfig {
                files,
                stale_policy: policy,
                ..CrlConfig::none()
            },
        };
        Setup { dir, tls }
    }

    fn revocation(s: &Setup) -> Arc<Revocation> {
        Revocation::new(&s.tls.crl, &s.tls.client_ca).expect("CRLs load")
    }

    fn verifiers(s: &Setup) -> Verifiers {
        let r = revocation(s);
        let m = tls::Material::load(&s.tls).expect("material");
        tls::build(&s.tls, &m, &r.view()).expect("build").verifiers
    }

    fn verdict(v: &Arc<dyn ClientCertVerifier>, peer: &PeerCert) -> Result<(), RustlsError> {
        v.verify_client_cert(&peer.der, &peer.chain, UnixTime::now())
            .map(|_| ())
    }

    const REVOKED: Result<(), RustlsError> =
        Err(RustlsError::InvalidCertificate(CertificateError::Revoked));
    const UNKNOWN: Result<(), RustlsError> = Err(RustlsError::InvalidCertificate(
        CertificateError::UnknownRevocationStatus,
    ));

    #[test]
    fn a_revoked_certificate_is_refused_and_its_neighbour_passes() {
        let ca = root("ca");
        let s = setup(
            &[&ca],
            &[fresh(&ca, &[7]).pem().expect("pem")],
            StalePolicy::Closed,
        );
        let v = verifiers(&s);
        assert_eq!(verdict(&v.handshake, &leaf(&ca, 7)), REVOKED);
        assert_eq!(verdict(&v.handshake, &leaf(&ca, 8)), Ok(()));
        assert!(v.strict.is_none());
    }

    #[test]
    fn a_revoked_issuing_ca_refuses_what_it_issued() {
        let root_ca = root("root");
        let issuing = intermediate(&root_ca, "issuing", 5);
        let crls = [
            fresh(&root_ca, &[5]).pem().expect("pem"),
            fresh(&issuing, &[]).pem().expect("pem"),
        ];
        let s = setup(&[&root_ca], &crls, StalePolicy::Closed);
        let v = verifiers(&s);
        let mut peer = leaf(&issuing, 9);
        peer.chain = vec![issuing.der().clone()];
        assert_eq!(verdict(&v.handshake, &peer), REVOKED);
        // The same chain under a root CRL that does not list the issuing CA passes.
        let crls = [
            fresh(&root_ca, &[]).pem().expect("pem"),
            fresh(&issuing, &[]).pem().expect("pem"),
        ];
        let s = setup(&[&root_ca], &crls, StalePolicy::Closed);
        assert_eq!(verdict(&verifiers(&s).handshake, &peer), Ok(()));
    }

    #[test]
    fn a_stale_crl_refuses_under_closed_and_still_revokes_under_open() {
        let ca = root("ca");
        let crls = [stale(&ca, &[7]).pem().expect("pem")];
        let closed = verifiers(&setup(&[&ca], &crls, StalePolicy::Closed));
        assert_eq!(verdict(&closed.handshake, &leaf(&ca, 8)), UNKNOWN);
        assert_eq!(verdict(&closed.handshake, &leaf(&ca, 7)), UNKNOWN);

        let open = verifiers(&setup(&[&ca], &crls, StalePolicy::Open));
        assert_eq!(verdict(&open.handshake, &leaf(&ca, 8)), Ok(()));
        assert_eq!(verdict(&open.handshake, &leaf(&ca, 7)), REVOKED);
        assert!(open.strict.is_none());

        let split = verifiers(&setup(&[&ca], &crls, StalePolicy::OpenForPassthrough));
        assert_eq!(verdict(&split.handshake, &leaf(&ca, 8)), Ok(()));
        assert_eq!(verdict(&split.handshake, &leaf(&ca, 7)), REVOKED);
        let strict = split
            .strict
            .as_ref()
            .expect("registrations get the closed verifier");
        assert_eq!(verdict(strict, &leaf(&ca, 8)), UNKNOWN);
    }

    #[test]
    fn a_ca_no_crl_speaks_for_is_refused_when_closed_and_passes_when_open() {
        let a = root("a");
        let b = root("b");
        let crls = [fresh(&a, &[]).pem().expect("pem")];
        let closed = verifiers(&setup(&[&a, &b], &crls, StalePolicy::Closed));
        assert_eq!(verdict(&closed.handshake, &leaf(&a, 1)), Ok(()));
        assert_eq!(verdict(&closed.handshake, &leaf(&b, 1)), UNKNOWN);
        let open = verifiers(&setup(&[&a, &b], &crls, StalePolicy::Open));
        assert_eq!(verdict(&open.handshake, &leaf(&b, 1)), Ok(()));
    }

    #[test]
    fn with_no_fresh_crl_at_all_closed_refuses_every_certificate_but_names_an_unknown_ca_as_such() {
        let ca = root("ca");
        let other = root("other");
        let crls = [stale(&ca, &[]).pem().expect("pem")];
        let v = verifiers(&setup(&[&ca], &crls, StalePolicy::Closed));
        assert_eq!(verdict(&v.handshake, &leaf(&ca, 1)), UNKNOWN);
        assert_eq!(
            verdict(&v.handshake, &leaf(&other, 1)),
            Err(RustlsError::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        );
        // Certificates stay optional at the handshake: the wrapper keeps the builder's settings.
        assert!(!v.handshake.client_auth_mandatory());
    }

    #[test]
    fn a_crl_goes_stale_one_bound_after_its_next_update() {
        let ca = root("ca");
        let c = fresh(&ca, &[]);
        let s = setup(&[&ca], &[c.pem().expect("pem")], StalePolicy::Closed);
        let r = revocation(&s);
        let now = unix_now();
        let next_update = now - 3600 + 86_400;
        let view = r.view_at(now);
        assert_eq!((view.fresh.len(), view.stale.len()), (1, 0));
        let deadline = view.next_deadline.expect("a deadline");
        assert!(
            (deadline - (next_update + 3600 + 1)).abs() <= 2,
            "{deadline}"
        );
        let later = r.view_at(deadline);
        assert_eq!((later.fresh.len(), later.stale.len()), (0, 1));
        assert_eq!(later.stale_names.len(), 1, "{:?}", later.stale_names);
        assert_ne!(view.key, later.key);
        assert_eq!(view.key, r.view_at(now + 10).key);
    }

    #[test]
    fn of_two_crls_for_one_ca_the_newer_is_used() {
        let ca = root("ca");
        let older = crl(&ca, &[7], TimeDelta::hours(2), TimeDelta::days(1));
        let newer = crl(&ca, &[], TimeDelta::hours(1), TimeDelta::days(1));
        let crls = [older.pem().expect("pem"), newer.pem().expect("pem")];
        let s = setup(&[&ca], &crls, StalePolicy::Closed);
        let view = revocation(&s).view_at(unix_now());
        assert_eq!(view.fresh, vec![newer.der().clone()]);
        // The certificate the older CRL revoked was un-revoked (removeFromCRL) in the newer one.
        assert_eq!(verdict(&verifiers(&s).handshake, &leaf(&ca, 7)), Ok(()));
    }

    #[test]
    fn crl_files_load_as_pem_or_der_and_a_bad_one_is_named() {
        let ca = root("ca");
        let anchors = vec![ca.der().clone()];
        let c = fresh(&ca, &[1, 2]);
        let pem = parse(c.pem().expect("pem").as_bytes(), &anchors).expect("PEM");
        let der = parse(c.der().as_ref(), &anchors).expect("DER");
        assert_eq!(pem[0].der, der[0].der);
        assert_eq!(pem[0].revoked, 2);
        let e = parse(
            b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            &anchors,
        )
        .expect_err("no CRL in it");
        assert!(e.contains("no `X509 CRL`"), "{e}");
        assert!(parse(b"not a CRL", &anchors).is_err());

        let s = setup(&[&ca], &["garbage".into()], StalePolicy::Closed);
        let e = Revocation::new(&s.tls.crl, &s.tls.client_ca)
            .err()
            .expect("a CRL file that does not load stops the start");
        assert!(e.to_string().starts_with("tls.crl_files: "), "{e}");
        assert!(e.to_string().contains("crl0.pem"), "{e}");
    }

    #[test]
    fn a_crl_under_a_client_ca_name_but_signed_by_another_key_is_refused() {
        let ca = root("ca");
        let impostor = root("ca");
        let e = parse(fresh(&impostor, &[]).der().as_ref(), &[ca.der().clone()])
            .expect_err("the signature does not verify");
        assert!(e.contains("signature does not verify"), "{e}");
        // A CRL whose issuer is not in the bundle is taken: rustls checks its signature at every handshake.
        assert!(parse(fresh(&impostor, &[]).der().as_ref(), &[]).is_ok());
    }

    #[test]
    fn a_fetched_crl_older_than_the_one_held_is_not_taken() {
        let ca = root("ca");
        let s = setup(&[&ca], &[], StalePolicy::Closed);
        let url = Url::parse("http://crl.example/ca.crl").expect("url");
        let cfg = CrlConfig {
            urls: vec![url.clone()],
            ..s.tls.crl.clone()
        };
        let r = Revocation::new(&cfg, &s.tls.client_ca).expect("new");
        let anchors = vec![ca.der().clone()];
        let newer = crl(&ca, &[7], TimeDelta::hours(1), TimeDelta::days(1));
        let older = crl(&ca, &[], TimeDelta::hours(2), TimeDelta::days(1));
        assert_eq!(
            r.view_at(unix_now()).stale_names.len(),
            1,
            "nothing fetched yet"
        );
        r.store_fetched(0, &url, parse(newer.der().as_ref(), &anchors));
        r.store_fetched(0, &url, parse(older.der().as_ref(), &anchors));
        assert_eq!(r.view_at(unix_now()).fresh, vec![newer.der().clone()]);
        r.store_fetched(0, &url, Err("HTTP 500".into()));
        assert_eq!(r.view_at(unix_now()).fresh, vec![newer.der().clone()]);
    }
}
