//! Owns the CDR Register's word on data recipients and software products: the two status lists, polled on the
//! operator's interval with conditional requests, held with a bounded staleness, and the verdict on a client.
//!
//! Endpoints (CDR Register standards, "Register Data Recipient discovery", API 1.36 as published by the DSB):
//! `GET /cdr-register/v1/{industry}/data-recipients/brands/software-products/status` (Get Software Products
//! Statuses, x-v 3: `data[].softwareProductId`, `data[].status` ∈ ACTIVE | INACTIVE | REMOVED) and
//! `GET /cdr-register/v1/{industry}/data-recipients/status` (Get Data Recipients Statuses, x-v 3:
//! `data[].legalEntityId`, `data[].status` ∈ ACTIVE | SUSPENDED | REVOKED | SURRENDERED). Both take `x-v`,
//! `x-min-v` and `If-None-Match`, and answer 200 with an `Etag` or 304. Older list shapes (v1/v2) are read too.
//! `gate.rs` finds the client a request names and asks [`RegisterStatus::decide`].

mod gate;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use serde_json::{Value, json};
use tokio::time::Instant;
use url::Url;

pub use gate::{RegisterGate, Screened};

use crate::error::{ProxyError, RegisterCheck};
use crate::metrics::{METRICS, RegisterFeedLabels, RegisterStatusLabels};
use crate::outbound::{HttpClient, redact_url};
pub use crate::tls::revocation::StalePolicy;

/// The versions asked for: the newest the standards publish, and the oldest whose list shape [`parse`] reads.
const X_V: &str = "3";
const X_MIN_V: &str = "1";

/// At most one fetch a feed makes on demand (no usable list held) in this long, so a dead Register is not
/// hammered by every token request.
const DEMAND_RETRY: Duration = Duration::from_secs(5);

/// The status settings of `[profile]` (CDR only).
#[derive(Clone, Debug)]
pub struct RegisterStatusConfig {
    /// Get Software Products Statuses.
    pub software_products: Url,
    /// Get Data Recipients Statuses; None: data recipients are not checked.
    pub data_recipients: Option<Url>,
    /// How often both lists are fetched.
    pub interval: Duration,
    /// How long past `interval` a list not confirmed since is still believed.
    pub max_stale: Duration,
    /// What happens when a list is older than that (or was never fetched).
    pub policy: StalePolicy,
    /// Connect plus download, per fetch.
    pub timeout: Duration,
    pub max_bytes: usize,
    /// Trust roots for the Register; `jwks.ca_bundle` when None.
    pub ca_bundle: Option<PathBuf>,
    /// Let requests that only withdraw consent (token or CDR arrangement revocation) through for a client that is
    /// not ACTIVE, as the Register's Data Holder Responsibilities ask ("facilitate consent withdrawal").
    pub allow_withdrawal: bool,
}

/// One list: what the Register last said, and when it last said it (a 200 or a 304).
struct Feed {
    name: &'static str,
    url: Url,
    held: Mutex<Held>,
    /// Held across a fetch, so the poller and demand fetches never run two at once.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Held {
    statuses: Arc<BTreeMap<String, String>>,
    confirmed_at: Option<Instant>,
    confirmed_unix: Option<i64>,
    etag: Option<String>,
    attempted_at: Option<Instant>,
    last_error: Option<String>,
    stale: bool,
}

/// What one list says about one id.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Active,
    NotActive(String),
    /// No list, or only one older than interval + max_stale that last said ACTIVE.
    Unconfirmed,
}

pub struct RegisterStatus {
    cfg: RegisterStatusConfig,
    http: HttpClient,
    products: Feed,
    recipients: Option<Feed>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl RegisterStatus {
    /// `http` carries the fetch timeout and the Register's trust roots.
    pub fn new(cfg: RegisterStatusConfig, http: HttpClient) -> Self {
        let feed = |name, url: &Url| Feed {
            name,
            url: url.clone(),
            held: Mutex::new(Held::default()),
            fetching: tokio::sync::Mutex::new(()),
        };
        RegisterStatus {
            products: feed("software_products", &cfg.software_products),
            recipients: cfg
                .data_recipients
                .as_ref()
                .map(|u| feed("data_recipients", u)),
            http,
            cfg,
        }
    }

    pub fn policy(&self) -> StalePolicy {
        self.cfg.policy
    }

    pub fn allows_withdrawal(&self) -> bool {
        self.cfg.allow_withdrawal
    }

    fn feeds(&self) -> impl Iterator<Item = &Feed> {
        std::iter::once(&self.products).chain(self.recipients.as_ref())
    }

    /// Polls both lists every `interval`, and keeps the staleness metrics current in between. The first
    /// fetch is left to the first request that needs a list (or the first tick): a Register that is down at
    /// start-up does not hold the start.
    pub async fn run(self: Arc<Self>) {
        let step = self.cfg.interval.min(Duration::from_secs(5));
        let mut next_poll = Instant::now() + self.cfg.interval;
        loop {
            tokio::time::sleep(step).await;
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + self.cfg.interval;
                self.refresh(&self.products).await;
                if let Some(feed) = &self.recipients {
                    self.refresh(feed).await;
                }
            }
            self.publish();
        }
    }

    /// Fetches one list now (waiting for a fetch already running instead of starting another).
    async fn refresh(&self, feed: &Feed) {
        let started = Instant::now();
        let _one = feed.fetching.lock().await;
        // Someone else fetched while we waited.
        if lock(&feed.held).attempted_at.is_some_and(|a| a >= started) {
            return;
        }
        let etag = {
            let mut h = lock(&feed.held);
            h.attempted_at = Some(Instant::now());
            h.etag.clone()
        };
        let result = self.fetch(feed, etag.as_deref()).await;
        let mut h = lock(&feed.held);
        match result {
            Ok(Fetched::NotModified) => {
                h.confirmed_at = Some(Instant::now());
                h.confirmed_unix = Some(unix_now());
                h.last_error = None;
            }
            Ok(Fetched::List(statuses, etag)) => {
                h.statuses = Arc::new(statuses);
                h.etag = etag;
                h.confirmed_at = Some(Instant::now());
                h.confirmed_unix = Some(unix_now());
                h.last_error = None;
            }
            Err(e) => {
                METRICS
                    .register_status_fetch_failures
                    .get_or_create(&RegisterFeedLabels { feed: feed.name })
                    .inc();
                tracing::warn!(feed = feed.name, url = %redact_url(&feed.url), error = %e,
                    "CDR Register status fetch failed; the list held before stays in force until it is too old");
                h.last_error = Some(e);
            }
        }
        drop(h);
        self.publish();
    }

    async fn fetch(&self, feed: &Feed, etag: Option<&str>) -> Result<Fetched, String> {
        let mut headers = vec![
            ("accept", "application/json"),
            ("x-v", X_V),
            ("x-min-v", X_MIN_V),
        ];
        if let Some(e) = etag {
            headers.push(("if-none-match", e));
        }
        let reply = self
            .http
            .send(Method::GET, &feed.url, &headers, None, self.cfg.max_bytes)
            .await
            .map_err(|e| e.to_string())?;
        if reply.status == http::StatusCode::NOT_MODIFIED {
            return if etag.is_some() {
                Ok(Fetched::NotModified)
            } else {
                Err("HTTP 304 to a request that was not conditional".into())
            };
        }
        if !reply.status.is_success() {
            return Err(format!("HTTP {}", reply.status.as_u16()));
        }
        let v: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
        let list = parse(&v).ok_or("not a CDR Register status list")?;
        // An empty list would turn every client away at once (the "glitch" of standards-maintenance #433):
        // it is taken for a fault of the Register, not for its word.
        if list.is_empty() {
            return Err("the Register answered an empty status list".into());
        }
        let etag = reply
            .headers
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Fetched::List(list, etag))
    }

    /// The list `feed` holds, fetched first when none is usable (at most every [`DEMAND_RETRY`]).
    async fn lookup(&self, feed: &Feed, id: &str) -> Lookup {
        let usable = {
            let h = lock(&feed.held);
            let recent = h.attempted_at.is_some_and(|a| a.elapsed() < DEMAND_RETRY);
            // An id the list does not name may be one the Register added since (a product activated a moment
            // before its first registration): asked again, at most every DEMAND_RETRY, before it is refused.
            let fresh =
                h.confirmed_at.is_some_and(|t| !self.too_old(t)) && h.statuses.contains_key(id);
            fresh || recent
        };
        if !usable {
            self.refresh(feed).await;
        }
        let (found, announced) = {
            let h = lock(&feed.held);
            let said = h.statuses.get(id).cloned();
            let found = match h.confirmed_at {
                None => Lookup::Unconfirmed,
                Some(t) => match said.as_deref() {
                    Some("ACTIVE") if self.too_old(t) => Lookup::Unconfirmed,
                    Some("ACTIVE") => Lookup::Active,
                    // A product or recipient the list does not name is not ACTIVE there; an old list saying
                    // "not active" is still believed, whatever the policy: it can only have become worse.
                    Some(other) => Lookup::NotActive(other.to_string()),
                    None if self.too_old(t) => Lookup::Unconfirmed,
                    None => Lookup::NotActive(String::new()),
                },
            };
            (found, h.stale)
        };
        // The list can pass its bound between two ticks of `run`, and no fetch is tried within DEMAND_RETRY
        // of the last: the staleness gauge and log are brought up to date here, so that an operator never
        // sees a refusal for staleness beside a gauge that still says fresh. Once only: a stale list stays
        // stale until a fetch (which publishes), and requests served open meanwhile must not each recount it.
        if matches!(found, Lookup::Unconfirmed) && !announced {
            self.publish();
        }
        found
    }

    fn too_old(&self, confirmed: Instant) -> bool {
        confirmed.elapsed() > self.cfg.interval + self.cfg.max_stale
    }

    /// The verdict on a client of `software_id` (and of the data recipient `legal_entity_id`, when known) for a
    /// request at `at`: a status other than ACTIVE refuses, whatever the policy; an unconfirmed one follows it.
    pub async fn decide(
        &self,
        software_id: &str,
        legal_entity_id: Option<&str>,
        at: RegisterCheck,
    ) -> Result<(), ProxyError> {
        let mut unconfirmed = false;
        let products = self.lookup(&self.products, software_id).await;
        unconfirmed |= judged(products, "software product", software_id, at)?;
        if let (Some(feed), Some(le)) = (&self.recipients, legal_entity_id) {
            let recipient = self.lookup(feed, le).await;
            unconfirmed |= judged(recipient, "data recipient", le, at)?;
        }
        if unconfirmed {
            return self.unconfirmed(software_id, at);
        }
        Ok(())
    }

    /// The policy's answer when the Register's word cannot be had: refused, or passed with a metric.
    pub fn unconfirmed(&self, software_id: &str, at: RegisterCheck) -> Result<(), ProxyError> {
        let refuse = match self.cfg.policy {
            StalePolicy::Closed => true,
            StalePolicy::Open => false,
            StalePolicy::OpenForPassthrough => at != RegisterCheck::OAuth,
        };
        if refuse {
            refusal("any", "unconfirmed");
            tracing::warn!(
                failure = "register_status",
                software_id,
                at = at.as_str(),
                policy = self.cfg.policy.as_str(),
                "refused: the CDR Register status cannot be confirmed (no list younger than interval + max_stale)"
            );
            Err(ProxyError::RegisterStatusUnconfirmed)
        } else {
            refusal("any", "passed_unconfirmed");
            Ok(())
        }
    }

    /// Sets the per-status counts and the staleness gauges, and logs a list going stale or fresh again.
    fn publish(&self) {
        for feed in self.feeds() {
            let mut h = lock(&feed.held);
            let age = h.confirmed_at.map(|t| t.elapsed().as_secs());
            // Before the first attempt nothing is known yet, and nothing has failed either.
            let stale = h
                .confirmed_at
                .map_or(h.attempted_at.is_some(), |t| self.too_old(t));
            let labels = RegisterFeedLabels { feed: feed.name };
            METRICS
                .register_status_age_seconds
                .get_or_create(&labels)
                .set(age.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX)));
            METRICS
                .register_status_stale
                .get_or_create(&labels)
                .set(i64::from(stale));
            let mut counts: HashMap<&'static str, i64> = HashMap::new();
            for s in h.statuses.values() {
                *counts.entry(status_label(s)).or_default() += 1;
            }
            for status in STATUS_LABELS {
                METRICS
                    .register_status_entries
                    .get_or_create(&RegisterStatusLabels {
                        feed: feed.name,
                        status,
                    })
                    .set(counts.get(status).copied().unwrap_or(0));
            }
            // Only a list once held can go stale; before the first fetch there is nothing to announce.
            if stale && !h.stale && h.confirmed_at.is_some() {
                match self.cfg.policy {
                    StalePolicy::Closed => tracing::error!(
                        feed = feed.name,
                        policy = "closed",
                        "CDR Register status list stale beyond register_status_max_stale: requests of CDR clients are refused until it is fetched again"
                    ),
                    StalePolicy::Open => tracing::error!(
                        feed = feed.name,
                        policy = "open",
                        "FAIL-OPEN: CDR Register status list stale beyond register_status_max_stale; clients it last listed as ACTIVE are served"
                    ),
                    StalePolicy::OpenForPassthrough => tracing::error!(
                        feed = feed.name,
                        policy = "open_for_passthrough",
                        "FAIL-OPEN for pass-through: CDR Register status list stale beyond register_status_max_stale; /register answers 503 until it is fetched again"
                    ),
                }
            } else if !stale && h.stale {
                tracing::info!(feed = feed.name, "CDR Register status list no longer stale");
            }
            h.stale = stale;
        }
    }

    /// What the admin endpoint shows: each list with its age, ETag, last error and every status held.
    pub fn snapshot(&self) -> Value {
        let feeds: serde_json::Map<String, Value> = self
            .feeds()
            .map(|feed| {
                let h = lock(&feed.held);
                let stale = h
                    .confirmed_at
                    .map_or(h.attempted_at.is_some(), |t| self.too_old(t));
                (
                    feed.name.to_string(),
                    json!({
                        "url": redact_url(&feed.url),
                        "confirmed_at": h.confirmed_unix,
                        "age_seconds": h.confirmed_at.map(|t| t.elapsed().as_secs()),
                        "stale": stale,
                        "etag": h.etag,
                        "last_error": h.last_error,
                        "statuses": *h.statuses,
                    }),
                )
            })
            .collect();
        json!({
            "interval_seconds": self.cfg.interval.as_secs_f64(),
            "max_stale_seconds": self.cfg.max_stale.as_secs_f64(),
            "policy": self.cfg.policy.as_str(),
            "feeds": feeds,
        })
    }
}

/// Err for a status other than ACTIVE; Ok(true) when the list cannot confirm one.
fn judged(
    l: Lookup,
    entity: &'static str,
    id: &str,
    at: RegisterCheck,
) -> Result<bool, ProxyError> {
    match l {
        Lookup::Active => Ok(false),
        Lookup::Unconfirmed => Ok(true),
        Lookup::NotActive(status) => {
            let feed = if entity == "software product" {
                "software_products"
            } else {
                "data_recipients"
            };
            refusal(feed, "not_active");
            let said = if status.is_empty() {
                "unlisted"
            } else {
                status.as_str()
            };
            tracing::info!(
                failure = "register_status",
                entity,
                id,
                status = said,
                at = at.as_str(),
                "refused: the CDR Register does not list it as ACTIVE"
            );
            Err(ProxyError::RegisterNotActive { at, entity, status })
        }
    }
}

enum Fetched {
    NotModified,
    List(BTreeMap<String, String>, Option<String>),
}

pub(crate) fn refusal(feed: &'static str, outcome: &'static str) {
    METRICS
        .register_status_decisions
        .get_or_create(&RegisterStatusLabels {
            feed,
            status: outcome,
        })
        .inc();
}

/// The statuses the standards define, plus `other`: metric labels stay a closed set whatever the Register sends.
const STATUS_LABELS: [&str; 7] = [
    "ACTIVE",
    "INACTIVE",
    "REMOVED",
    "SUSPENDED",
    "REVOKED",
    "SURRENDERED",
    "other",
];

fn status_label(s: &str) -> &'static str {
    STATUS_LABELS
        .iter()
        .find(|l| **l == s)
        .copied()
        .unwrap_or("other")
}

/// id → status from any published shape: v3 (`data[]` with `softwareProductId`/`legalEntityId` and `status`),
/// v2 of the data recipients list (`legalEntityStatus`), v1 (`softwareProducts[]`, `dataRecipients[]` with
/// `*Status`), and the older `softwareProductStatusList` / `data.softwareProducts` shapes.
fn parse(v: &Value) -> Option<BTreeMap<String, String>> {
    let list = v
        .get("data")
        .and_then(|d| {
            d.as_array()
                .or_else(|| d.get("softwareProducts").and_then(Value::as_array))
                .or_else(|| d.get("dataRecipients").and_then(Value::as_array))
        })
        .or_else(|| v.get("softwareProducts").and_then(Value::as_array))
        .or_else(|| v.get("dataRecipients").and_then(Value::as_array))
        .or_else(|| v.get("softwareProductStatusList").and_then(Value::as_array))?;
    let first = |item: &Value, keys: &[&str]| {
        keys.iter()
            .find_map(|k| item.get(*k).and_then(Value::as_str))
            .map(str::to_owned)
    };
    Some(
        list.iter()
            .filter_map(|item| {
                Some((
                    first(
                        item,
                        &["softwareProductId", "legalEntityId", "dataRecipientId"],
                    )?,
                    first(
                        item,
                        &[
                            "status",
                            "softwareProductStatus",
                            "legalEntityStatus",
                            "dataRecipientStatus",
                        ],
                    )?,
                ))
            })
            .collect(),
    )
}
