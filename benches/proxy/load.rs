//! The load generator: mutual-TLS connections, request bodies, one timed run and the medians of several.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::servers::{Server, cpu_seconds};
use crate::{duration, rounds};

pub(super) type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub(super) async fn connect(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Option<Sender> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("localhost").ok()?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .ok()?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// The cipher suite `addr` chooses for a client configured as `tls`: the (b) rows show it for both servers, so a
/// reader sees that the handshakes compared did the same work.
pub(super) async fn negotiated_suite(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> String {
    let name = ServerName::try_from("localhost").expect("server name");
    let suite = match TcpStream::connect(addr).await {
        Ok(tcp) => tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .ok()
            .and_then(|s| s.get_ref().1.negotiated_cipher_suite()),
        Err(_) => None,
    };
    suite.map_or_else(
        || "no handshake".to_string(),
        |s| format!("{:?}", s.suite()),
    )
}

/// Where request bodies come from: the same bytes each time, or a pre-signed queue (one use each).
#[derive(Clone)]
pub(super) enum Bodies {
    Fixed(&'static str, Bytes, &'static str),
    Queue(&'static str, Arc<Vec<Bytes>>, Arc<AtomicU64>, &'static str),
}

impl Bodies {
    fn next(&self) -> Option<(&'static str, Bytes, &'static str)> {
        match self {
            Bodies::Fixed(p, b, ct) => Some((p, b.clone(), ct)),
            Bodies::Queue(p, q, i, ct) => {
                let n = i.fetch_add(1, Ordering::Relaxed) as usize;
                q.get(n).map(|b| (*p, b.clone(), *ct))
            }
        }
    }
}

pub(super) struct Run {
    pub(super) requests: u64,
    pub(super) rps: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) p999_ms: f64,
    pub(super) errors: u64,
    pub(super) gen_cpu: f64,
    pub(super) server_cpu: f64,
    pub(super) server_sys: f64,
}

pub(super) async fn load(
    server: &Server,
    tls: &Arc<rustls::ClientConfig>,
    bodies: Bodies,
    concurrency: usize,
    keep_alive: bool,
    expect: u16,
) -> Run {
    let dur = duration();
    let gen_before = cpu_seconds(std::process::id());
    let srv_before = server.cpu();
    let sys_before = server.sys_cpu();
    let started = Instant::now();
    let deadline = started + dur;
    let addr = server.addr;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let tls = tls.clone();
        let bodies = bodies.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut errors = 0u64;
            let mut sender: Option<Sender> = None;
            while Instant::now() < deadline {
                let Some((path, body, ct)) = bodies.next() else {
                    break;
                };
                let t0 = Instant::now();
                if sender.is_none() || !keep_alive {
                    sender = connect(addr, &tls).await;
                }
                let Some(s) = sender.as_mut() else {
                    errors += 1;
                    continue;
                };
                let req = http::Request::post(path)
                    .header("host", "localhost")
                    .header("content-type", ct)
                    .body(Full::new(body))
                    .expect("request");
                let ok = match s.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let _ = resp.into_body().collect().await;
                        status == expect
                    }
                    Err(_) => {
                        sender = None;
                        false
                    }
                };
                if ok {
                    let _ = hist.record(t0.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
                if !keep_alive {
                    sender = None;
                }
            }
            (hist, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    for t in tasks {
        if let Ok((h, e)) = t.await {
            let _ = hist.add(h);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Run {
        requests: hist.len(),
        rps: hist.len() as f64 / elapsed,
        p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        p999_ms: hist.value_at_quantile(0.999) as f64 / 1000.0,
        errors,
        gen_cpu: cpu_seconds(std::process::id()) - gen_before,
        server_cpu: server.cpu() - srv_before,
        server_sys: server.sys_cpu() - sys_before,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[derive(Default)]
pub(super) struct Med {
    pub(super) rps: f64,
    /// The server's CPU (user + system, all its processes and threads) per answered request.
    pub(super) cpu_us: f64,
    /// The kernel's part of `cpu_us` (system time): what no user-space change can remove.
    pub(super) sys_us: f64,
    /// What one core of the server answers per second at that cost: requests per server CPU-second. It does
    /// not depend on how the scheduler shared the cores with the generator or with other work on the machine.
    pub(super) per_core: f64,
    pub(super) p50: f64,
    pub(super) p99: f64,
    pub(super) p999: f64,
    pub(super) errors: u64,
    pub(super) gen_cpu: f64,
    pub(super) cpu: f64,
}

pub(super) fn med(runs: &[Run]) -> Med {
    let cpu_us = |r: &Run| r.server_cpu * 1e6 / (r.requests.max(1) as f64);
    Med {
        rps: median(runs.iter().map(|r| r.rps).collect()),
        cpu_us: median(runs.iter().map(cpu_us).collect()),
        sys_us: median(
            runs.iter()
                .map(|r| r.server_sys * 1e6 / (r.requests.max(1) as f64))
                .collect(),
        ),
        per_core: median(runs.iter().map(|r| 1e6 / cpu_us(r).max(1e-9)).collect()),
        p50: median(runs.iter().map(|r| r.p50_ms).collect()),
        p99: median(runs.iter().map(|r| r.p99_ms).collect()),
        p999: median(runs.iter().map(|r| r.p999_ms).collect()),
        errors: runs.iter().map(|r| r.errors).sum(),
        gen_cpu: median(runs.iter().map(|r| r.gen_cpu).collect()),
        cpu: median(runs.iter().map(|r| r.server_cpu).collect()),
    }
}

/// Alternates dcr-proxy and nginx for `rounds()` rounds; returns medians (dcr, nginx).
pub(super) async fn compare(
    dcr: &Server,
    nginx: &Server,
    tls: &Arc<rustls::ClientConfig>,
    bodies: &Bodies,
    concurrency: usize,
    keep_alive: bool,
) -> (Med, Med) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds() {
        a.push(load(dcr, tls, bodies.clone(), concurrency, keep_alive, 200).await);
        b.push(load(nginx, tls, bodies.clone(), concurrency, keep_alive, 200).await);
    }
    (med(&a), med(&b))
}

pub(super) async fn load_once(
    server: &Server,
    tls: &Arc<rustls::ClientConfig>,
    bodies: &Bodies,
) -> Option<u16> {
    let (path, body, ct) = bodies.next()?;
    let mut s = connect(server.addr, tls).await?;
    let req = http::Request::post(path)
        .header("host", "localhost")
        .header("content-type", ct)
        .body(Full::new(body))
        .ok()?;
    Some(s.send_request(req).await.ok()?.status().as_u16())
}
