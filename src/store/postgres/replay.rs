//! Owns [`ReplayGuard`] for [`PostgresStore`]: the replay cache shared by all replicas.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::rows::map_err;
use super::{DB_NOW, PURGE_EVERY, PostgresStore};
use crate::store::StoreError;
use crate::store::replay::ReplayGuard;

#[async_trait]
impl ReplayGuard for PostgresStore {
    async fn check_and_record(&self, key: &str, expires_at: i64) -> Result<bool, StoreError> {
        let hashed = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, key.as_bytes()));
        let until = expires_at.saturating_add(self.replay_skew);
        let fresh = self
            .with_conn(async |conn| {
                // Racing inserts of one key queue on the unique index; each later
                // one then sees the committed row and updates it only if it has
                // expired, re-checking that condition on the newest row version
                // after waiting for its lock. So of any number of racers exactly
                // one gets a row back. An entry lives at least until the second
                // after it was written, so that racers on a token already past
                // its `exp` still see each other.
                let stmt = conn
                    .prepare_cached(&format!(
                        "INSERT INTO dcr_replay AS r (key, expires_at)
                     VALUES ($1, GREATEST($2::bigint, {DB_NOW} + 1))
                     ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
                     WHERE r.expires_at < {DB_NOW}
                     RETURNING 1"
                    ))
                    .await
                    .map_err(map_err)?;
                let row = conn
                    .query_opt(&stmt, &[&hashed, &until])
                    .await
                    .map_err(map_err)?;
                Ok(row.is_some())
            })
            .await?;
        if self.replay_checks.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            let store = self.clone();
            tokio::spawn(async move {
                if let Err(e) = store.purge_expired().await {
                    tracing::warn!(error = %e, "purging expired replay keys failed");
                }
            });
        }
        Ok(fresh)
    }
}
