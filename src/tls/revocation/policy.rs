//! Owns what the CRLs in force decide: the view handed to rustls, stale and uncovered CAs, and the verdicts on open connections and registrations.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, Error as RustlsError};
use rustls_pki_types::UnixTime;

use super::crl::anchors;
use super::{Crl, CrlView, Revocation, Scope, StalePolicy, lock, sha256, unix_now};
use crate::error::ProxyError;
use crate::identity::PeerCert;
use crate::metrics::{METRICS, ReasonLabels};

impl Revocation {
    /// The view at `now`; with `notify`, wakes the TLS rebuild when it differs from the last one published.
    pub(super) fn publish(&self, notify: bool) -> CrlView {
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

    pub(super) fn view_at(&self, now: i64) -> CrlView {
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
