//! Owns keeping the CRLs fresh: re-reading the files, fetching the URLs on their schedule and taking what arrives.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use tokio::time::Instant;
use url::Url;

use super::crl::{anchors, parse};
use super::{Crl, Revocation, Source, lock, sha256, unix_now};
use crate::metrics::METRICS;
use crate::outbound::redact_url;

/// After a failed fetch the next try comes sooner than a refresh, so a blip does not cost a whole interval.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

impl Revocation {
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

    pub(super) fn store_fetched(&self, i: usize, url: &Url, got: Result<Vec<Crl>, String>) {
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
}
