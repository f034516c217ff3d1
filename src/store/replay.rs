//! Owns one-time-use checks for signed request objects (jti replay detection) and the in-memory cache behind them.
//!
//! A signed registration request or SSA carries a `jti`; accepting the same
//! one twice within its lifetime would let anyone who captured a request
//! replay it. The guard remembers each key until the token it came from has
//! expired (plus the clock skew the JWT validator tolerates), after which the
//! validator itself rejects the token, so the key can be forgotten.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
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

/// What one remembered key costs besides its own bytes: the cache's hash-table slot, its LRU and
/// timer-wheel nodes, the shared key and the deadline. 200,000 keys of 64 bytes took 479 resident
/// bytes each (the `entry_overhead_is_not_underestimated` test); the margin keeps the byte bound an
/// upper bound on memory.
pub const ENTRY_OVERHEAD_BYTES: u32 = 640;

/// The weight of one entry: what it holds in memory, by the estimate above.
fn weight(key: &str) -> u32 {
    u32::try_from(key.len())
        .unwrap_or(u32::MAX)
        .saturating_add(ENTRY_OVERHEAD_BYTES)
}

/// A single-process replay guard. Replicas behind a load balancer each keep
/// their own, so a multi-replica deployment needs a shared guard instead.
///
/// Bounded twice: by time, since an entry is kept only until its token's
/// `exp` plus the clock skew (and the request JWT check refuses an `exp`
/// more than an hour ahead), and by bytes, since every entry is weighed. At
/// the byte bound it fails closed: a new key is refused (503 to the client)
/// rather than an old one forgotten early, which would make that token
/// replayable. It heals by itself as entries reach their deadline.
#[derive(Clone)]
pub struct MemoryReplayGuard {
    cache: Cache<String, Deadline>,
    max_bytes: u64,
    skew: Duration,
    /// Checks of one key run one at a time (striped by the key's hash). The cache's own coalescing
    /// (`entry().or_insert_with`) let two racing checks of a key whose entry had just expired both see a
    /// fresh insert once in CI (store_sqlite `replay_expired_key_is_reused_once`: 2 of 50 accepted).
    stripes: Arc<[tokio::sync::Mutex<()>]>,
}

/// Enough that unrelated registrations rarely wait on each other; each is one small mutex.
const STRIPES: usize = 64;

impl std::fmt::Debug for MemoryReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReplayGuard")
            .field("max_bytes", &self.max_bytes)
            .field("skew", &self.skew)
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
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
    /// `max_bytes` bounds the memory the remembered keys take (each weighed
    /// as its length plus [`ENTRY_OVERHEAD_BYTES`]); `skew` is the clock
    /// leeway the JWT validator grants past `exp`, added to every entry's
    /// lifetime so a token the validator still accepts is still remembered.
    pub fn new(max_bytes: u64, skew: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &String, _: &Deadline| weight(k))
            // TinyLFU may refuse to admit a brand-new key when full, which
            // here would silently forget a jti we just accepted; LRU always
            // admits the new key.
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(UntilDeadline)
            .build();
        Self {
            cache,
            max_bytes,
            skew,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// The weighed size of what is remembered, in bytes; published as a metric.
    pub fn weighted_bytes(&self) -> u64 {
        self.cache.weighted_size()
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
        // bound is reached new tokens are refused (503) rather than risking it.
        // The size lags concurrent inserts slightly; LRU eviction of the
        // oldest keys is the backstop for that overshoot.
        let used = self.cache.weighted_size();
        crate::metrics::METRICS
            .replay_cache_bytes
            .set(used_as_gauge(used));
        if used.saturating_add(u64::from(weight(key))) > self.max_bytes
            && !self.cache.contains_key(key)
        {
            // Expired entries still count until the cache's housekeeping runs; let it run once
            // before refusing, so a full cache that has aged out heals on the next request.
            self.cache.run_pending_tasks().await;
            let used = self.cache.weighted_size();
            crate::metrics::METRICS
                .replay_cache_bytes
                .set(used_as_gauge(used));
            if used.saturating_add(u64::from(weight(key))) > self.max_bytes {
                crate::metrics::METRICS.replay_cache_full.inc();
                return Err(StoreError::Unavailable(
                    "replay cache is full (store.replay_cache_bytes)".to_owned(),
                ));
            }
        }
        let deadline = self.deadline(expires_at);
        let stripe = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            (h.finish() % self.stripes.len() as u64) as usize
        };
        // Held across the look-up and the insert, so exactly one of several racing checks of a key
        // finds it absent. An expired entry counts as absent (`get` honours the deadline), so the key
        // is accepted again after it.
        let _one_at_a_time = self.stripes[stripe].lock().await;
        if self.cache.get(key).await.is_some() {
            return Ok(false);
        }
        self.cache.insert(key.to_owned(), deadline).await;
        Ok(true)
    }
}

fn used_as_gauge(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
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
        let g = MemoryReplayGuard::new(1 << 20, Duration::from_secs(30));
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
        let g = Arc::new(MemoryReplayGuard::new(1 << 20, Duration::ZERO));
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
        let g = MemoryReplayGuard::new(1 << 20, Duration::ZERO);
        // Already expired: kept only for MIN_TTL.
        let exp = in_a_minute() - 120;
        assert!(g.check_and_record("k", exp).await.unwrap());
        assert!(!g.check_and_record("k", exp).await.unwrap());
        tokio::time::sleep(MIN_TTL + Duration::from_millis(300)).await;
        assert!(g.check_and_record("k", exp).await.unwrap());
    }

    #[tokio::test]
    async fn skew_extends_retention() {
        let g = MemoryReplayGuard::new(1 << 20, Duration::from_secs(60));
        let exp = in_a_minute() - 90; // expired 30 s ago, inside the skew
        assert!(g.check_and_record("k", exp).await.unwrap());
        tokio::time::sleep(MIN_TTL + Duration::from_millis(300)).await;
        assert!(!g.check_and_record("k", exp).await.unwrap());
    }

    #[tokio::test]
    async fn full_cache_refuses_new_keys() {
        // Room for three one-byte keys and not a fourth.
        let g = MemoryReplayGuard::new(3 * u64::from(weight("a")), Duration::ZERO);
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

    #[tokio::test]
    async fn long_keys_weigh_more() {
        let g = MemoryReplayGuard::new(1 << 20, Duration::ZERO);
        let exp = in_a_minute();
        assert!(g.check_and_record(&"k".repeat(300), exp).await.unwrap());
        g.cache.run_pending_tasks().await;
        assert_eq!(g.weighted_bytes(), 300 + u64::from(ENTRY_OVERHEAD_BYTES));
    }

    #[tokio::test]
    async fn a_full_cache_heals_when_its_entries_expire() {
        let g = MemoryReplayGuard::new(2 * u64::from(weight("a")), Duration::ZERO);
        let gone = in_a_minute() - 120;
        assert!(g.check_and_record("a", gone).await.unwrap());
        assert!(g.check_and_record("b", gone).await.unwrap());
        g.cache.run_pending_tasks().await;
        assert!(g.check_and_record("c", in_a_minute()).await.is_err());
        tokio::time::sleep(MIN_TTL + Duration::from_millis(300)).await;
        assert!(g.check_and_record("c", in_a_minute()).await.unwrap());
    }

    /// Resident memory per entry, so [`ENTRY_OVERHEAD_BYTES`] stays an upper bound. Linux only (it reads
    /// /proc), and only meaningful alone: run with `--ignored --test-threads=1`.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    #[ignore]
    async fn entry_overhead_is_not_underestimated() {
        fn rss() -> u64 {
            let s = std::fs::read_to_string("/proc/self/statm").unwrap();
            s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
        }
        const N: u64 = 200_000;
        let g = MemoryReplayGuard::new(1 << 34, Duration::ZERO);
        let exp = in_a_minute() + 3000;
        let before = rss();
        for i in 0..N {
            let key = format!("ob:18:{:021}:{:036}", i, i);
            assert_eq!(key.len(), 64);
            g.check_and_record(&key, exp).await.unwrap();
        }
        g.cache.run_pending_tasks().await;
        let per_entry = (rss() - before) / N;
        eprintln!("resident bytes per entry: {per_entry} (64-byte keys)");
        assert!(
            per_entry <= 64 + u64::from(ENTRY_OVERHEAD_BYTES),
            "{per_entry} bytes per entry"
        );
    }
}
