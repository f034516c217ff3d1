//! What both listeners share so that no client can exhaust them: caps on open connections (overall and
//! per source address) checked at accept, accept errors that back off and are logged at a bounded rate,
//! the idle timeout that closes a connection no request is using, and the file-descriptor budget that
//! keeps room for the store, the upstream and JWKS fetches.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::{ListenerLabels, METRICS, RefusalLabels};

/// How long a connection asked to close (idle, or draining) may take to do so before it is dropped: an h2
/// client that never acknowledges the GOAWAY's PING, or an HTTP/1.1 client halfway through a header,
/// would otherwise keep it open.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Accept errors back off from this to [`ACCEPT_BACKOFF_MAX`], doubling.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per this period about accept errors; the rest are counted into the next one.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The connection caps of one listener. A slot is taken at accept, before any TLS work, and given back
/// when the connection is dropped.
pub struct Gate {
    listener: &'static str,
    slots: Arc<Semaphore>,
    max: u32,
    /// 0: no per-address cap.
    per_address: usize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection. Dropping it frees its place under both caps.
pub struct Slot {
    gate: Arc<Gate>,
    address: Option<IpAddr>,
    _permit: OwnedSemaphorePermit,
}

impl Gate {
    pub fn new(listener: &'static str, max: u32, per_address: u32) -> Arc<Self> {
        Arc::new(Gate {
            listener,
            slots: Arc::new(Semaphore::new(max as usize)),
            max,
            per_address: per_address as usize,
            by_address: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a connection from `peer`, or the cap that refused it (for the metric and the log).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, &'static str> {
        let refuse = |reason: &'static str| {
            METRICS
                .connections_refused
                .get_or_create(&RefusalLabels {
                    listener: self.listener,
                    reason,
                })
                .inc();
            Err(reason)
        };
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            return refuse("max_connections");
        };
        let address = if self.per_address > 0 {
            let key = address_key(peer);
            let mut counts = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
            let n = counts.entry(key).or_insert(0);
            if *n >= self.per_address {
                drop(counts);
                return refuse("per_address");
            }
            *n += 1;
            Some(key)
        } else {
            None
        };
        METRICS.connections_open.get_or_create(&self.labels()).inc();
        Ok(Slot {
            gate: self.clone(),
            address,
            _permit: permit,
        })
    }

    /// Waits until every connection has closed, for at most `within`; false if some were still open.
    pub async fn drained(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.slots.acquire_many(self.max))
            .await
            .is_ok()
    }

    fn labels(&self) -> ListenerLabels {
        ListenerLabels {
            listener: self.listener,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(key) = self.address {
            let mut counts = self
                .gate
                .by_address
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = counts.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&key);
                }
            }
        }
        METRICS
            .connections_open
            .get_or_create(&self.gate.labels())
            .dec();
    }
}

/// The unit the per-address cap counts: an IPv4 address, or an IPv6 /64, since one subscriber usually
/// holds a whole /64 and could otherwise open its cap again from every address in it.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Accept failures (EMFILE when out of descriptors, ENOBUFS, ECONNABORTED): each one waits a little
/// longer before the next accept, so a listener out of descriptors does not spin, and the log gets one
/// line per [`ACCEPT_LOG_EVERY`] with a count instead of a line per failure.
pub struct AcceptErrors {
    listener: &'static str,
    delay: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    pub fn new(listener: &'static str) -> Self {
        AcceptErrors {
            listener,
            delay: ACCEPT_BACKOFF_MIN,
            last_log: None,
            unlogged: 0,
        }
    }

    /// Counts and maybe logs the failure; returns how long to wait before accepting again.
    pub fn failed(&mut self, e: &std::io::Error) -> Duration {
        METRICS
            .accept_errors
            .get_or_create(&ListenerLabels {
                listener: self.listener,
            })
            .inc();
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|at| now.duration_since(at) >= ACCEPT_LOG_EVERY)
        {
            tracing::warn!(
                listener = self.listener,
                error = %e,
                failures = self.unlogged,
                backoff_ms = self.delay.as_millis() as u64,
                "accept failed; backing off (failures counts those since the last such line)"
            );
            self.last_log = Some(now);
            self.unlogged = 0;
        }
        let wait = self.delay;
        self.delay = (self.delay * 2).min(ACCEPT_BACKOFF_MAX);
        wait
    }

    pub fn succeeded(&mut self) {
        self.delay = ACCEPT_BACKOFF_MIN;
    }
}

/// Whether a connection is in use: requests in flight, and when the last one ended (or the connection
/// started). A connection with nothing in flight for the idle timeout is closed, whether it never sent
/// a request, sits between keep-alive requests, or trickles a header that never completes.
pub struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended, or the connection started: nanoseconds since `epoch`.
    since: AtomicU64,
    epoch: Instant,
}

/// Held while one request is being served, its response body included.
pub struct InFlight(Arc<Activity>);

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            since: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn since(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.since.load(Ordering::Acquire))
    }

    /// Completes once nothing has been in flight for `timeout`.
    ///
    /// A lazy timer: it wakes when the connection could first have been idle that long and then looks,
    /// so a request costs two atomic updates and a clock read, never a wake-up of the connection's task or
    /// a timer set and cancelled (profiled on the kept-alive pass-through: a notified waiter and a fresh
    /// timer per request were ~2 % of its CPU). A busy connection is looked at once per `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        let sleep = tokio::time::sleep_until(self.since() + timeout);
        tokio::pin!(sleep);
        loop {
            sleep.as_mut().await;
            let now = Instant::now();
            let next = if self.in_flight.load(Ordering::Acquire) == 0 {
                let deadline = self.since() + timeout;
                if now >= deadline {
                    return;
                }
                deadline
            } else {
                now + timeout
            };
            sleep.as_mut().reset(next);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let elapsed = Instant::now().saturating_duration_since(a.epoch);
        a.since.store(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds something (a request's [`InFlight`], a concurrency permit) until the
/// body is finished or dropped, since a streamed body keeps the work going after the handler returned.
pub struct Guarded<B, G> {
    inner: B,
    _guard: G,
}

impl<B, G> Guarded<B, G> {
    pub fn new(inner: B, guard: G) -> Self {
        Guarded {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body + Unpin, G: Unpin> Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Drives one HTTP connection until it ends: asks it to close once it has been idle for `idle`, or
/// when `shutdown` turns true (in-flight requests finish), and drops it if it has not closed
/// [`CLOSE_GRACE`] after being asked. `graceful` is hyper's `graceful_shutdown` for the connection type.
pub async fn drive<C, E, F>(
    conn: C,
    mut graceful: F,
    activity: &Activity,
    idle: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    listener: &'static str,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
    F: FnMut(Pin<&mut C>),
{
    tokio::pin!(conn);
    let mut closing_by: Option<Instant> = None;
    let mut draining = *shutdown.borrow();
    if draining {
        graceful(conn.as_mut());
        closing_by = Some(Instant::now() + CLOSE_GRACE);
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            _ = activity.idle_for(idle), if closing_by.is_none() && !draining => {
                METRICS.connections_idle_closed.get_or_create(&ListenerLabels { listener }).inc();
                graceful(conn.as_mut());
                closing_by = Some(Instant::now() + CLOSE_GRACE);
            }
            changed = shutdown.changed(), if !draining => {
                draining = true;
                if changed.is_err() || *shutdown.borrow() {
                    // In-flight requests may finish within the drain period; the server stops
                    // waiting for them when it ends.
                    graceful(conn.as_mut());
                }
            }
            _ = sleep_until_opt(closing_by) => return Ok(()),
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The soft limit on open files after raising it to the hard limit (what Go's runtime also does at
/// start): the descriptors this process may use. None where the platform cannot tell.
pub fn file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
        if soft < hard
            && let Ok(raised) = rlimit::increase_nofile_limit(hard)
        {
            return Some(raised);
        }
        Some(soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_subscriber_counts_as_one_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn caps_refuse_at_accept_and_free_on_drop() {
        let gate = Gate::new("data", 3, 2);
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        let a = gate.admit(one).unwrap();
        let _b = gate.admit(one).unwrap();
        assert_eq!(gate.admit(one).err(), Some("per_address"));
        let _c = gate.admit(two).unwrap();
        assert_eq!(gate.admit(two).err(), Some("max_connections"));
        drop(a);
        assert!(gate.admit(one).is_ok());
    }

    #[tokio::test]
    async fn idle_counts_from_the_end_of_the_last_request() {
        let activity = Activity::new();
        let busy = activity.begin();
        let idle = activity.idle_for(Duration::from_millis(100));
        tokio::pin!(idle);
        assert!(
            tokio::time::timeout(Duration::from_millis(400), idle.as_mut())
                .await
                .is_err(),
            "never idle while a request is in flight"
        );
        drop(busy);
        let ended = Instant::now();
        idle.await;
        assert!(ended.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn accept_errors_back_off_up_to_a_second() {
        let mut errors = AcceptErrors::new("data");
        let e = std::io::Error::other("EMFILE");
        let waits: Vec<Duration> = (0..10).map(|_| errors.failed(&e)).collect();
        assert_eq!(waits[0], ACCEPT_BACKOFF_MIN);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*waits.last().unwrap(), ACCEPT_BACKOFF_MAX);
        errors.succeeded();
        assert_eq!(errors.failed(&e), ACCEPT_BACKOFF_MIN);
    }
}
