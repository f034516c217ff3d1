//! CDR Register software product status: fetched, cached with bounded staleness, consulted per registration.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use url::Url;

use crate::outbound::{HttpClient, redact_url};

const MAX_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct StatusConfig {
    pub url: Url,
    pub ttl: Duration,
    pub max_stale: Duration,
}

struct Snapshot {
    fetched_at: Instant,
    attempted_at: Instant,
    statuses: Arc<HashMap<String, String>>,
}

pub struct StatusChecker {
    http: HttpClient,
    cfg: StatusConfig,
    // One lock for the one URL: holding it across the fetch coalesces concurrent refreshes.
    snapshot: tokio::sync::Mutex<Option<Snapshot>>,
}

impl StatusChecker {
    pub fn new(cfg: StatusConfig, http: HttpClient) -> Self {
        StatusChecker {
            http,
            cfg,
            snapshot: tokio::sync::Mutex::new(None),
        }
    }

    /// The Register's status for a software product (`ACTIVE`, `INACTIVE`, `REMOVED`), None if it is not
    /// listed. Err when the Register cannot be read and no copy younger than ttl + max_stale exists.
    pub async fn status(&self, software_id: &str) -> Result<Option<String>, String> {
        let mut guard = self.snapshot.lock().await;
        let now = Instant::now();
        let needs_fetch = match guard.as_ref() {
            None => true,
            Some(s) => {
                now.duration_since(s.fetched_at) >= self.cfg.ttl
                    && now.duration_since(s.attempted_at) >= Duration::from_secs(5)
            }
        };
        if needs_fetch {
            match self.fetch().await {
                Ok(statuses) => {
                    *guard = Some(Snapshot {
                        fetched_at: now,
                        attempted_at: now,
                        statuses: Arc::new(statuses),
                    })
                }
                Err(e) => {
                    tracing::warn!(url = %redact_url(&self.cfg.url), error = %e, "software product status fetch failed");
                    match guard.as_mut() {
                        Some(s) => s.attempted_at = now,
                        None => return Err(e),
                    }
                }
            }
        }
        let s = guard.as_ref().ok_or("no status list")?;
        if now.duration_since(s.fetched_at) > self.cfg.ttl + self.cfg.max_stale {
            return Err("the cached status list is too old to trust".into());
        }
        Ok(s.statuses.get(software_id).cloned())
    }

    async fn fetch(&self) -> Result<HashMap<String, String>, String> {
        let reply = self
            .http
            .send(
                Method::GET,
                &self.cfg.url,
                &[("accept", "application/json"), ("x-v", "2")],
                None,
                MAX_BYTES,
            )
            .await
            .map_err(|e| e.to_string())?;
        if !reply.status.is_success() {
            return Err(format!("HTTP {}", reply.status.as_u16()));
        }
        let v: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
        parse(&v).ok_or_else(|| "not a software product status list".into())
    }
}

/// Accepts the Register's v1 shape (`softwareProductStatusList`) and v2 (`data.softwareProducts`).
fn parse(v: &Value) -> Option<HashMap<String, String>> {
    let list = v
        .get("softwareProductStatusList")
        .or_else(|| v.get("data").and_then(|d| d.get("softwareProducts")))?
        .as_array()?;
    Some(
        list.iter()
            .filter_map(|p| {
                Some((
                    p.get("softwareProductId")?.as_str()?.to_string(),
                    p.get("softwareProductStatus")?.as_str()?.to_string(),
                ))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_register_shapes_parse() {
        let v1 = json!({"softwareProductStatusList": [{"softwareProductId": "a", "softwareProductStatus": "ACTIVE"}]});
        let v2 = json!({"data": {"softwareProducts": [{"softwareProductId": "b", "softwareProductStatus": "INACTIVE"}]}});
        assert_eq!(
            parse(&v1).and_then(|m| m.get("a").cloned()).as_deref(),
            Some("ACTIVE")
        );
        assert_eq!(
            parse(&v2).and_then(|m| m.get("b").cloned()).as_deref(),
            Some("INACTIVE")
        );
        assert!(parse(&json!({"other": []})).is_none());
    }
}
