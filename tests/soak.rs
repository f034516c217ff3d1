//! Soak: the real proxy, upstream and JWKS server on loopback under mixed traffic at a bounded rate for
//! `SOAK_MINUTES` (default 30): pass-through, registrations, management and hostile connections. The
//! proxy's RSS and open fds are printed every minute, and the test fails unless both stay within 10 %
//! of their value at the end of the warm-up. `#[ignore]`d: `scripts/soak.sh [minutes]` runs it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};

use support::client::{Conn, TlsClient, try_http_request};
use support::world::{Options, Tpp, World, base64_std, urlencode};

/// Allowed growth over the post-warm-up baseline.
const TOLERANCE: f64 = 0.10;
/// Pass-through requests per second.
const PASSTHROUGH_PER_SEC: u64 = 8;
/// One register → token → GET → PUT → DELETE cycle this often.
const LIFECYCLE_EVERY: Duration = Duration::from_secs(2);
/// Connections held open after a completed handshake without a request (half h2, half HTTP/1.1), and how
/// long each is held unless the proxy closes it first.
const IDLE_TLS_SLOTS: usize = 8;
const IDLE_HOLD: Duration = Duration::from_secs(20);
/// Connections that never finish their handshake (half send nothing, half a truncated ClientHello).
const STALLED_SLOTS: usize = 8;
/// Longer than the proxy's default handshake_timeout (10s): a stalled connection still open then is a leak.
const STALLED_GIVE_UP: Duration = Duration::from_secs(20);
/// Plain-text bytes sent to the TLS port this often.
const GARBAGE_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Counter {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Counter {
    fn record(&self, ok: bool) {
        let c = if ok { &self.ok } else { &self.failed };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

#[derive(Default)]
struct Stats {
    passthrough: Counter,
    register: Counter,
    manage: Counter,
    idle_tls: Counter,
    /// Idle TLS connections the proxy closed before we let go of them.
    idle_closed_by_proxy: AtomicU64,
    /// ok: the proxy closed the stalled connection; failed: it was still open when we gave up.
    stalled: Counter,
    garbage: Counter,
    /// Set while a sample is taken, so that no request is in flight at that moment.
    paused: AtomicBool,
    in_flight: AtomicU64,
}

impl Stats {
    fn line(&self) -> String {
        let f = |c: &Counter| {
            let (ok, failed) = c.get();
            format!("{ok}/{failed}")
        };
        format!(
            "ok/failed: passthrough {} register {} manage {} idle-tls {} (closed by proxy {}) stalled {} garbage {}",
            f(&self.passthrough),
            f(&self.register),
            f(&self.manage),
            f(&self.idle_tls),
            self.idle_closed_by_proxy.load(Ordering::Relaxed),
            f(&self.stalled),
            f(&self.garbage),
        )
    }

    fn totals(&self) -> (u64, u64) {
        [
            &self.passthrough,
            &self.register,
            &self.manage,
            &self.idle_tls,
            &self.stalled,
            &self.garbage,
        ]
        .iter()
        .map(|c| c.get())
        .fold((0, 0), |(a, b), (ok, failed)| (a + ok, b + failed))
    }

    /// Waits while a sample is being taken, then counts the caller as in flight until the guard drops.
    async fn begin(self: &Arc<Self>) -> InFlight {
        while self.paused.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

struct InFlight(Arc<Stats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    rss_kib: u64,
    fds: u64,
}

fn sample(pid: u32) -> Sample {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the proxy is running");
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .count() as u64;
    Sample { rss_kib, fds }
}

fn minutes() -> u64 {
    std::env::var("SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .filter(|&m| m >= 2)
        .unwrap_or(30)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak run takes minutes: scripts/soak.sh [minutes]"]
async fn the_proxy_stays_flat_in_memory_and_fds_under_mixed_traffic() {
    let minutes = minutes();
    // A tenth of the run, at least a minute: connection pools, caches and allocator arenas fill up first.
    let warm_up = (minutes / 10).max(1);
    let w = Arc::new(World::start(Options::default()).await);
    let pid = w.proxy.pid().expect("proxy pid");
    let stats = Arc::new(Stats::default());

    // Clients that stay registered for the whole run and fetch tokens through the proxy.
    let mut resident = Vec::new();
    for _ in 0..2 {
        let tpp = w.tpp();
        let id = w.register(&tpp, json!({})).await;
        resident.push((tpp, id));
    }
    let cyclers: Vec<Tpp> = (0..4).map(|_| w.tpp()).collect();

    println!(
        "soak: {minutes} min (warm-up {warm_up} min), proxy pid {pid} on {}; rates: {PASSTHROUGH_PER_SEC} pass-through/s, \
         a register+GET+PUT+DELETE cycle every {}s, {IDLE_TLS_SLOTS} idle TLS + {STALLED_SLOTS} stalled handshakes held, \
         a plain-text probe every {}s",
        w.proxy.addr,
        LIFECYCLE_EVERY.as_secs(),
        GARBAGE_EVERY.as_secs()
    );
    let start = Instant::now();
    // Traffic outlasts the last sample a little, so that every sample sees the full hostile load.
    let deadline = start + Duration::from_secs(minutes * 60 + 5);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(passthrough(
        w.clone(),
        stats.clone(),
        resident,
        deadline,
    )));
    tasks.push(tokio::spawn(lifecycle(
        w.clone(),
        stats.clone(),
        cyclers,
        deadline,
    )));
    let anonymous = TlsClient::new(&w.pki.ca_pem(), None);
    for slot in 0..IDLE_TLS_SLOTS {
        // Half negotiate h2 (the client's preference), half HTTP/1.1 only.
        let client = if slot % 2 == 0 {
            anonymous.clone()
        } else {
            anonymous.clone().http1_only()
        };
        tasks.push(tokio::spawn(idle_tls(
            client,
            w.proxy.addr,
            stats.clone(),
            deadline,
            // Spread the reconnects over the hold time.
            IDLE_HOLD * slot as u32 / IDLE_TLS_SLOTS as u32,
        )));
    }
    for slot in 0..STALLED_SLOTS {
        tasks.push(tokio::spawn(stalled(
            w.proxy.addr,
            stats.clone(),
            deadline,
            slot % 2 == 1,
        )));
    }
    tasks.push(tokio::spawn(garbage(w.proxy.addr, stats.clone(), deadline)));

    let mut samples = Vec::new();
    for minute in 1..=minutes {
        tokio::time::sleep_until(start + Duration::from_secs(minute * 60)).await;
        // Sample with no request in flight; the long-lived hostile connections stay as they are.
        stats.paused.store(true, Ordering::Release);
        let quiet_by = Instant::now() + Duration::from_secs(10);
        while stats.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < quiet_by {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = sample(pid);
        stats.paused.store(false, Ordering::Release);
        println!(
            "soak: minute {minute:>2}/{minutes}  rss {:>7} KiB  fds {:>4}  {}",
            s.rss_kib,
            s.fds,
            stats.line()
        );
        samples.push(s);
    }
    for t in tasks {
        t.await.expect("traffic task");
    }

    let base = samples[warm_up as usize - 1];
    let after = &samples[warm_up as usize..];
    let max_rss = after
        .iter()
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(base.rss_kib);
    let max_fds = after.iter().map(|s| s.fds).max().unwrap_or(base.fds);
    let growth = |max: u64, base: u64| (max as f64 / base as f64 - 1.0) * 100.0;
    let rss_flat = max_rss as f64 <= base.rss_kib as f64 * (1.0 + TOLERANCE);
    let fds_flat = max_fds as f64 <= base.fds as f64 * (1.0 + TOLERANCE);
    let (ok, failed) = stats.totals();
    let verdict = |flat: bool| if flat { "flat" } else { "GROWING" };
    println!(
        "soak: verdict: rss {} (baseline {} KiB at minute {warm_up}, max after {max_rss} KiB, {:+.1} %); \
         fds {} (baseline {}, max after {max_fds}, {:+.1} %); operations {ok} ok, {failed} failed",
        verdict(rss_flat),
        base.rss_kib,
        growth(max_rss, base.rss_kib),
        verdict(fds_flat),
        base.fds,
        growth(max_fds, base.fds),
    );
    assert!(
        rss_flat,
        "RSS grew beyond {:.0} % after warm-up",
        TOLERANCE * 100.0
    );
    assert!(
        fds_flat,
        "open fds grew beyond {:.0} % after warm-up",
        TOLERANCE * 100.0
    );
    // The traffic must really have flowed, and failures stay rare (a shared machine may time one out).
    for (name, c) in [
        ("passthrough", &stats.passthrough),
        ("register", &stats.register),
        ("manage", &stats.manage),
        ("stalled", &stats.stalled),
    ] {
        assert!(c.get().0 > 0, "no successful {name} operation");
    }
    assert!(
        failed * 100 <= ok,
        "more than 1 % of operations failed: {}",
        stats.line()
    );
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_ok(),
        "the proxy is still running"
    );
}

/// Discovery on a new connection, a client_credentials token through the proxy (the certificate reaches
/// the IdP in the configured header), and discovery again on a kept-alive connection.
async fn passthrough(
    w: Arc<World>,
    stats: Arc<Stats>,
    resident: Vec<(Tpp, String)>,
    deadline: Instant,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / PASSTHROUGH_PER_SEC));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut kept = None;
    let mut n = 0usize;
    while Instant::now() < deadline {
        tick.tick().await;
        let _g = stats.begin().await;
        let (tpp, client_id) = &resident[n % resident.len()];
        let ok = match n % 3 {
            0 => tpp
                .client
                .try_request(
                    "GET",
                    &w.proxy.url("/.well-known/openid-configuration"),
                    &[],
                    "",
                )
                .await
                .is_ok_and(|r| r.status == 200),
            1 => {
                let body = format!(
                    "grant_type=client_credentials&client_id={}&scope={}",
                    urlencode(client_id),
                    urlencode("openid accounts")
                );
                tpp.client
                    .try_request(
                        "POST",
                        &w.proxy.url("/token"),
                        &[("content-type", "application/x-www-form-urlencoded")],
                        body,
                    )
                    .await
                    .is_ok_and(|r| r.status == 200)
            }
            _ => {
                if kept.as_ref().is_none_or(Conn::is_closed) {
                    kept = tpp.client.try_connection(w.proxy.addr).await.ok();
                }
                match kept.as_mut() {
                    Some(c) => c
                        .try_send("GET", "/.well-known/openid-configuration", &[], "")
                        .await
                        .is_ok_and(|r| r.status == 200),
                    None => false,
                }
            }
        };
        stats.passthrough.record(ok);
        n += 1;
    }
}

/// Register, fetch a token at the IdP, then GET, PUT and DELETE the registration through the proxy.
/// Every call here returns an error instead of panicking: one slow answer must not end the run.
async fn lifecycle(w: Arc<World>, stats: Arc<Stats>, tpps: Vec<Tpp>, deadline: Instant) {
    let mut tick = tokio::time::interval(LIFECYCLE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 0usize;
    while Instant::now() < deadline {
        tick.tick().await;
        let _g = stats.begin().await;
        let tpp = &tpps[n % tpps.len()];
        n += 1;
        let jwt = [("content-type", "application/jwt")];
        let client_id = tpp
            .client
            .try_request(
                "POST",
                &w.proxy.url("/register"),
                &jwt,
                w.ob_request(tpp, json!({})),
            )
            .await
            .ok()
            .filter(|r| r.status == 201)
            .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .and_then(|v| v["client_id"].as_str().map(str::to_owned));
        stats.register.record(client_id.is_some());
        let Some(client_id) = client_id else {
            continue;
        };
        let Some(at) = token(&w, tpp, &client_id).await else {
            stats.manage.record(false);
            continue;
        };
        let bearer = format!("Bearer {at}");
        let url = w.proxy.url(&format!("/register/{client_id}"));
        let put_body = w.ob_request(
            tpp,
            json!({"redirect_uris": ["https://tpp.example.com/cb2"]}),
        );
        for (method, body, want) in [
            ("GET", String::new(), 200),
            ("PUT", put_body, 200),
            ("DELETE", String::new(), 204),
        ] {
            let mut headers = vec![("authorization", bearer.as_str())];
            if !body.is_empty() {
                headers.push(jwt[0]);
            }
            let status = tpp
                .client
                .try_request(method, &url, &headers, body)
                .await
                .map_or(0, |r| r.status);
            stats.manage.record(status == want);
        }
    }
}

/// A client_credentials token from the IdP for a `tls_client_auth` client, the certificate passed in
/// the RFC 9440 header as the proxy would.
async fn token(w: &World, tpp: &Tpp, client_id: &str) -> Option<String> {
    let cert = format!(":{}:", base64_std(&tpp.cert.cert_der));
    let body = format!(
        "grant_type=client_credentials&client_id={}&scope={}",
        urlencode(client_id),
        urlencode("openid accounts")
    );
    let resp = try_http_request(
        "POST",
        &w.upstream.url("/token"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("client-cert", &cert),
        ],
        body,
    )
    .await
    .ok()
    .filter(|r| r.status == 200)?;
    let v: Value = serde_json::from_slice(&resp.body).ok()?;
    v["access_token"].as_str().map(str::to_owned)
}

/// Completes a handshake, sends nothing, and holds the connection until the proxy closes it or
/// `IDLE_HOLD` passes; then opens the next one.
async fn idle_tls(
    client: TlsClient,
    addr: std::net::SocketAddr,
    stats: Arc<Stats>,
    deadline: Instant,
    offset: Duration,
) {
    tokio::time::sleep(offset).await;
    while Instant::now() < deadline {
        let Ok(conn) = client.try_connection(addr).await else {
            stats.idle_tls.record(false);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        stats.idle_tls.record(true);
        let until = (Instant::now() + IDLE_HOLD).min(deadline);
        while Instant::now() < until && !conn.is_closed() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if conn.is_closed() {
            stats.idle_closed_by_proxy.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Opens a TCP connection that never completes a handshake: either silent, or a ClientHello record
/// header announcing more bytes than ever arrive. The proxy must close it (handshake_timeout).
async fn stalled(addr: std::net::SocketAddr, stats: Arc<Stats>, deadline: Instant, partial: bool) {
    while Instant::now() < deadline {
        let Ok(mut tcp) = TcpStream::connect(addr).await else {
            stats.stalled.record(false);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if partial {
            // TLS record: handshake, TLS 1.0 legacy version, 512 bytes announced; ClientHello, 508 announced.
            let _ = tcp
                .write_all(&[
                    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                ])
                .await;
        }
        let give_up = (Instant::now() + STALLED_GIVE_UP).min(deadline);
        let mut buf = [0u8; 256];
        let closed = loop {
            match tokio::time::timeout_at(give_up, tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(_)) => {}
                Err(_) => break false,
            }
        };
        // Cut short by the end of the run says nothing about the proxy.
        if closed || give_up < deadline {
            stats.stalled.record(closed);
        }
    }
}

/// Plain HTTP to the TLS port: the proxy must answer with a TLS alert or close, and not keep it.
async fn garbage(addr: std::net::SocketAddr, stats: Arc<Stats>, deadline: Instant) {
    let mut tick = tokio::time::interval(GARBAGE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while Instant::now() < deadline {
        tick.tick().await;
        let ok = async {
            let mut tcp = TcpStream::connect(addr).await.ok()?;
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .ok()?;
            let mut buf = [0u8; 256];
            loop {
                match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(()),
                    Ok(Ok(_)) => {}
                    Err(_) => return None,
                }
            }
        }
        .await
        .is_some();
        stats.garbage.record(ok);
    }
}

/// Kept-alive connections the memory check holds open at once, and the floods after it.
const HELD: usize = 1000;
const FLOOD: usize = 2000;
const FLOODS: usize = 2;
/// How long after the load stops the "after load" figure is taken (issue 16 (d)).
const SETTLE: Duration = Duration::from_secs(60);
/// How long the 1000 are held before the figure is taken.
const HELD_FOR: Duration = Duration::from_secs(20);
/// Handshakes in flight at once while connections are opened: fast, yet no burst a listener would refuse.
const OPENING: usize = 32;

/// Memory of the proxy as an operator sees it: idle, with 1000 kept-alive mTLS connections that each made
/// a pass-through request, a minute after they close, and a minute after each of two floods of 2000 such
/// connections. Prints one line per phase (RSS, and the samples taken every 10 s while settling) and
/// fails unless the targets of issue 16 (d) hold: ≤ 20 MiB idle, ≤ 64 MiB with 1000 open, and ≤ 1.5× the
/// idle figure a minute after each load. `scripts/rss.sh` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes about 4 minutes: scripts/rss.sh"]
async fn memory_returns_after_connection_floods() {
    let w = World::start(Options {
        // Connections stay open for the whole measurement, all from 127.0.0.1.
        server_extra: format!(
            "idle_timeout = \"600s\"\nmax_connections = {}\nmax_connections_per_address = {}",
            FLOOD + 100,
            FLOOD + 100
        ),
        ..Options::default()
    })
    .await;
    let pid = w.proxy.pid().expect("proxy pid");
    let tpps: Vec<Tpp> = (0..4).map(|_| w.tpp()).collect();
    // One registration and a few pass-through requests first: the figure of a proxy that has served.
    let id = w.register(&tpps[0], json!({})).await;
    for tpp in &tpps {
        let r = tpp
            .client
            .request(
                "GET",
                &w.proxy.url("/.well-known/openid-configuration"),
                &[],
                "",
            )
            .await;
        assert_eq!(r.status, 200);
    }
    println!("rss: registered {id}; proxy pid {pid}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = sample(pid);
    println!(
        "rss: idle                      {:>6.1} MiB  fds {}",
        mib(idle),
        idle.fds
    );

    let (conns, failed) = open_kept_alive(&w, &tpps, HELD).await;
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = sample(pid);
    // Held: what the open connections cost once the garbage of their handshakes has been given back
    // (the allocator purges freed pages over ~10 s); the peak includes that garbage.
    tokio::time::sleep_until(opened + HELD_FOR).await;
    let held = sample(pid);
    println!(
        "rss: {} kept-alive open      {:>6.1} MiB  fds {}  ({failed} failed to open; {:.1} MiB 2 s after the last opened)",
        conns.len(),
        mib(held),
        held.fds,
        mib(peak)
    );
    drop(conns);
    let after_held = settle(pid, "after the 1000").await;

    let mut after_floods = Vec::new();
    for flood in 1..=FLOODS {
        let (conns, failed) = open_kept_alive(&w, &tpps, FLOOD).await;
        let peak = sample(pid);
        println!(
            "rss: flood {flood}: {} open          {:>6.1} MiB  fds {}  ({failed} failed to open)",
            conns.len(),
            mib(peak),
            peak.fds
        );
        drop(conns);
        after_floods.push(settle(pid, &format!("after flood {flood}")).await);
    }

    let worst_after = after_floods
        .iter()
        .chain(std::iter::once(&after_held))
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(after_held.rss_kib);
    println!(
        "rss: summary: idle {:.1} MiB, {HELD} open {:.1} MiB, {}s after {:.1} MiB, after floods {} MiB; worst after load {:.2}x idle",
        mib(idle),
        mib(held),
        SETTLE.as_secs(),
        mib(after_held),
        after_floods
            .iter()
            .map(|s| format!("{:.1}", mib(*s)))
            .collect::<Vec<_>>()
            .join(" / "),
        worst_after as f64 / idle.rss_kib as f64
    );
    assert!(mib(idle) <= 20.0, "idle RSS over 20 MiB");
    assert!(
        mib(held) <= 64.0,
        "RSS with {HELD} open connections over 64 MiB"
    );
    assert!(
        worst_after as f64 <= idle.rss_kib as f64 * 1.5,
        "RSS a minute after the load is over 1.5x the idle figure"
    );
}

fn mib(s: Sample) -> f64 {
    s.rss_kib as f64 / 1024.0
}

/// Opens `n` mTLS connections (alternately h2 and HTTP/1.1), each making one pass-through request and
/// then held open. Returns the open ones and how many failed.
async fn open_kept_alive(w: &World, tpps: &[Tpp], n: usize) -> (Vec<Conn>, usize) {
    let gate = Arc::new(tokio::sync::Semaphore::new(OPENING));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let tpp = &tpps[i % tpps.len()];
        let client = if i % 2 == 0 {
            tpp.client.clone()
        } else {
            tpp.client.clone().http1_only()
        };
        let addr = w.proxy.addr;
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let mut conn = client.try_connection(addr).await.ok()?;
            let r = conn
                .try_send("GET", "/.well-known/openid-configuration", &[], "")
                .await
                .ok()?;
            (r.status == 200).then_some(conn)
        }));
    }
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(c) => conns.push(c),
            None => failed += 1,
        }
    }
    (conns, failed)
}

/// Samples every 10 s for [`SETTLE`] after the load stopped; returns the last sample.
async fn settle(pid: u32, what: &str) -> Sample {
    let started = Instant::now();
    let mut trail = Vec::new();
    let mut last = sample(pid);
    for step in 1..=SETTLE.as_secs() / 10 {
        tokio::time::sleep_until(started + Duration::from_secs(step * 10)).await;
        last = sample(pid);
        trail.push(format!("{:.1}", mib(last)));
    }
    println!(
        "rss: {what}, {}s later {:>6.1} MiB  fds {}  (every 10 s: {})",
        SETTLE.as_secs(),
        mib(last),
        last.fds,
        trail.join(" ")
    );
    last
}
