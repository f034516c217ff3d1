//! Owns one-time-use checks for signed request objects (jti replay detection) and the in-memory cache behind them.
//!
//! A signed registration request or SSA carries a `jti`; accepting the same
//! one twice within its lifetime would let anyone who captured a request
//! replay it. The guard remembers each key until the token it came from has
//! expired (plus the clock skew the JWT validator tolerates), after which the
//! validator itself rejects the token, so the key can be forgotten.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use moka::policy::EvictionPolicy;

use crate::store::StoreError;

/// Records keys once and reports whether a key is new.
#[async_trait]
pub trait ReplayGuard: Send + Sync {
    /// Atomically records `key` until `expires_at` (unix seconds, the token's
    /// `exp`) and returns true if it had not been seen; false means a replay.
    /// Callers namespace keys (see [`replay_key`]) so that equal jtis from
    /// different issuers or profiles do not collide.
    async fn check_and_record(&self, key: &str, expires_at: i64) -> Result<bool, StoreError>;
}

/// Builds an unambiguous key from a namespace (e.g. "ob"), an issuer and a jti.
/// The issuer's length is part of the key because both issuer and jti may
/// contain ':', and without it one issuer could pick a jti that blocks another
/// issuer's tokens.
pub fn replay_key(namespace: &str, issuer: &str, jti: &str) -> String {
    format!("{namespace}:{}:{issuer}:{jti}", issuer.len())
}

/// Entries live at least this long, so that concurrent checks of a token that
/// is already past its expiry still see each other.
const MIN_TTL: Duration = Duration::from_secs(1);

/// A single-process replay guard. Replicas behind a load balancer each keep
/// their own, so a multi-replica deployment needs a shared guard instead.
#[derive(Clone)]
pub struct MemoryReplayGuard {
    cache: Cache<String, Deadline>,
    capacity: u64,
    skew: Duration,
}

impl std::fmt::Debug for MemoryReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReplayGuard")
            .field("capacity", &self.capacity)
            .field("skew", &self.skew)
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

/// When an entry may be forgotten.
#[derive(Debug, Clone, Copy)]
struct Deadline(SystemTime);

struct UntilDeadline;

impl Expiry<String, Deadline> for UntilDeadline {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Deadline,
        _created_at: Instant,
    ) -> Option<Duration> {
        let left = value
            .0
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Some(left.max(MIN_TTL))
    }
}

impl MemoryReplayGuard {
    /// `capacity` bounds the number of remembered keys; `skew` is the clock
    /// leeway the JWT validator grants past `exp`, added to every entry's
    /// lifetime so a token the validator still accepts is still remembered.
    pub fn new(capacity: u64, skew: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            // TinyLFU may refuse to admit a brand-new key when full, which
            // here would silently forget a jti we just accepted; LRU always
            // admits the new key.
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(UntilDeadline)
            .build();
        Self {
            cache,
            capacity,
            skew,
        }
    }

    fn deadline(&self, expires_at: i64) -> Deadline {
        // A negative exp is nonsense the validator rejects anyway; clamping it
        // to the epoch just gives the entry the minimum lifetime.
        let exp = UNIX_EPOCH + Duration::from_secs(u64::try_from(expires_at).unwrap_or(0));
        Deadline(exp.checked_add(self.skew).unwrap_or(exp))
    }
}

#[async_trait]
impl ReplayGuard for MemoryReplayGuard {
    async fn check_and_record(&self, key: &str, expires_at: i64) -> Result<bool, StoreError> {
        // Evicting a live key would let its token be replayed, so once the
        // cache is full new tokens are refused (503) rather than risking it.
        // The count lags concurrent inserts slightly; LRU eviction of the
        // oldest keys is the backstop for that overshoot.
        if self.cache.entry_count() >= self.capacity && !self.cache.contains_key(key) {
            return Err(StoreError::Unavailable("replay cache is full".to_owned()));
        }
        let deadline = self.deadline(expires_at);
        // `or_insert_with` coalesces concurrent callers on one key: exactly
        // one runs the initialiser and sees a fresh entry. An expired entry
        // counts as absent, so the key is accepted again after its deadline.
        let entry = self
            .cache
            .entry_by_ref(key)
            .or_insert_with(async move { deadline })
            .await;
        Ok(entry.is_fresh())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn in_a_minute() -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        i64::try_from(now).unwrap() + 60
    }

    #[tokio::test]
    async fn second_use_is_a_replay() {
        let g = MemoryReplayGuard::new(1000, Duration::from_secs(30));
        let exp = in_a_minute();
        let k = replay_key("ob", "iss", "jti-1");
        assert!(g.check_and_record(&k, exp).await.unwrap());
        assert!(!g.check_and_record(&k, exp).await.unwrap());
        let other = replay_key("cdr", "iss", "jti-1");
        assert!(g.check_and_record(&other, exp).await.unwrap());
    }

    #[test]
    fn keys_are_unambiguous() {
        assert_ne!(replay_key("ob", "a:b", "c"), replay_key("ob", "a", "b:c"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_same_key_passes_once() {
        let g = Arc::new(MemoryReplayGuard::new(1000, Duration::ZERO));
        let exp = in_a_minute();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let g = Arc::clone(&g);
                tokio::spawn(async move { g.check_and_record("ob:3:iss:same", exp).await })
            })
            .collect();
        let mut firsts = 0;
        for t in tasks {
            if t.await.unwrap().unwrap() {
                firsts += 1;
            }
        }
        assert_eq!(firsts, 1);
    }

    #[tokio::test]
    async fn expired_key_is_accepted_again() {
        let g = MemoryReplayGuard::new(1000, Duration::ZERO);
        // Already expired: kept only for MIN_TTL.
        let exp = in_a_minute() - 120;
        assert!(g.check_and_record("k", exp).await.unwrap());
        assert!(!g.check_and_record("k", exp).await.unwrap());
        tokio::time::sleep(MIN_TTL + Duration::from_millis(300)).await;
        assert!(g.check_and_record("k", exp).await.unwrap());
    }

    #[tokio::test]
    async fn skew_extends_retention() {
        let g = MemoryReplayGuard::new(1000, Duration::from_secs(60));
        let exp = in_a_minute() - 90; // expired 30 s ago, inside the skew
        assert!(g.check_and_record("k", exp).await.unwrap());
        tokio::time::sleep(MIN_TTL + Duration::from_millis(300)).await;
        assert!(!g.check_and_record("k", exp).await.unwrap());
    }

    #[tokio::test]
    async fn full_cache_refuses_new_keys() {
        let g = MemoryReplayGuard::new(3, Duration::ZERO);
        let exp = in_a_minute();
        for k in ["a", "b", "c"] {
            assert!(g.check_and_record(k, exp).await.unwrap());
        }
        g.cache.run_pending_tasks().await;
        assert!(matches!(
            g.check_and_record("d", exp).await,
            Err(StoreError::Unavailable(_))
        ));
        // A known key is still recognised as a replay, not refused.
        assert!(!g.check_and_record("a", exp).await.unwrap());
    }
}
