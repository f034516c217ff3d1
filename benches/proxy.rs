//! dcr-proxy against nginx on the same machine, in one run: `cargo bench --bench proxy` (or `benches/run.sh`).
//!
//! Both servers terminate mutual TLS and forward to the same upstream: a second nginx answering with a fixed
//! response, so the upstream is never the bottleneck. The load generator lives in this process (hyper +
//! tokio-rustls, client certificates), alternates the two servers over several rounds and reports medians.
//! Everything shares the machine's cores: CPU seconds of the generator and of each server are printed too.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "proxy/load.rs"]
mod load;
#[path = "proxy/servers.rs"]
mod servers;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use support::jwks_server::JwksServer;
use support::keys::{SigningKey, jwks};
use support::pki::{ClientCert, ClientCertSpec, KeyKind, Pki, ServerCert};
use support::temp::TempDir;

use load::{Bodies, Med, compare, connect, load, load_once, med};
use servers::{
    LOAD_CPU, Mode, SERVER_CPU, Server, client_config, cpu_seconds, fill, free_port, start_dcr,
    start_dcr_with_store, start_nginx, start_reference, template,
};
use support::postgres::{PgOptions, PgServer};

const TOKEN_BODY_LEN: usize = 600;
const AUD: &str = "0015800001041RHAAY";

/// A positive whole number from the environment, or `default` when unset or not one.
fn env_count(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(default)
}

/// Alternating rounds per figure; BENCH_ROUNDS raises it for an A/B (`BENCH_VERSUS`) that needs more pairs.
fn rounds() -> usize {
    env_count("BENCH_ROUNDS", 3) as usize
}

fn duration() -> Duration {
    Duration::from_secs(env_count("BENCH_SECONDS", 5))
}

struct Env {
    dir: TempDir,
    pki: Pki,
    upstream_port: u16,
    upstream: Server,
    jwks: JwksServer,
    directory: SigningKey,
    client: ClientCert,
    client_key: Arc<SigningKey>,
    software_jwks: String,
}

struct Table {
    rows: Vec<String>,
}

impl Table {
    fn row(
        &mut self,
        figure: &str,
        metric: &str,
        dcr: f64,
        nginx: f64,
        higher_is_better: bool,
        note: &str,
    ) {
        let ratio = if higher_is_better {
            dcr / nginx
        } else {
            nginx / dcr
        };
        self.rows.push(if nginx > 0.0 {
            format!("| {figure} | {metric} | {dcr:.2} | {nginx:.2} | {ratio:.2} | {note} |")
        } else {
            format!("| {figure} | {metric} | {dcr:.2} | not measured | | {note} |")
        });
        println!("{}", self.rows.last().map(String::as_str).unwrap_or(""));
    }
    fn line(&mut self, s: String) {
        println!("{s}");
        self.rows.push(s);
    }
}

fn presign(env: &Env, ssa: &str, n: usize) -> Vec<Bytes> {
    // ES256 request JWTs sign in tens of microseconds; signing all of them before the run keeps the
    // generator's CPU out of the proxy's measurement.
    let dn = env.client.subject_rfc4514.clone();
    let sid = env.client_software_id();
    let threads = 2;
    let chunk = n.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let key = env.client_key.clone();
            let (ssa, dn, sid) = (ssa.to_string(), dn.clone(), sid.clone());
            std::thread::spawn(move || {
                (0..chunk)
                    .map(|_| {
                        let claims = support::claims::ob_request(&sid, AUD, &ssa, &dn, json!({}));
                        Bytes::from(key.sign(json!({}), claims))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("signer"))
        .take(n)
        .collect()
}

impl Env {
    fn client_software_id(&self) -> String {
        self.client
            .subject_rfc4514
            .split(',')
            .next()
            .and_then(|cn| cn.strip_prefix("CN="))
            .unwrap_or("")
            .to_string()
    }
}

fn main() {
    // `cargo test --all-targets` builds this target; only `cargo bench` (which passes --bench) runs it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark not run (use `cargo bench --bench proxy`)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let dir = TempDir::new();
    let pki = Pki::new();
    pki.write_to(dir.path());
    let upstream_port = free_port();
    let conf = fill(
        &template("upstream.conf.template"),
        &[("port", upstream_port.to_string())],
    );
    let up_addr: SocketAddr = ([127, 0, 0, 1], upstream_port).into();
    let upstream = Server {
        name: "upstream",
        addr: up_addr,
        child: start_nginx(dir.path(), "upstream", &conf, up_addr, None),
        nginx: true,
    };
    let jwks_server = JwksServer::start(&pki).await;
    let directory = SigningKey::rsa("directory-1");
    jwks_server.set(
        "/directory.jwks",
        jwks(&[directory.public_jwk(Some("sig"))]),
    );
    let software_id = "BenchSoftware00001";
    let client = pki.client(ClientCertSpec::ob(software_id, "BenchOrg0000000001"));
    let client_key = Arc::new(SigningKey::ec_p256("bench-sig"));
    let software_jwks = jwks_server.url("/software.jwks");
    jwks_server.set(
        "/software.jwks",
        jwks(&[client_key.public_jwk(Some("sig")), client.tls_jwk("tls")]),
    );
    let env = Env {
        dir,
        pki,
        upstream_port,
        upstream,
        jwks: jwks_server,
        directory,
        client,
        client_key,
        software_jwks,
    };

    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut t = Table { rows: Vec::new() };
    t.line(format!(
        "## dcr-proxy vs nginx ({date}; {} alternating rounds of {}s, medians; load average before the run {})",
        rounds(),
        duration().as_secs(),
        load_average()
    ));

    let tls13 = client_config(&env, &[&rustls::version::TLS13]);
    let tls12 = client_config(&env, &[&rustls::version::TLS12]);
    let p256 = env
        .pki
        .issue_server_with(&["localhost", "127.0.0.1"], KeyKind::P256);
    let rsa = env
        .pki
        .issue_server_with(&["localhost", "127.0.0.1"], KeyKind::Rsa2048);

    // BENCH_ONLY=ac runs figures (a) and (c) only, and so on; unset runs all. A figure whose reference was not
    // measured in this run shows no ratio. BENCH_MODE=pinned or shared runs one placement; unset runs both
    // (pinned needs two cores).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let want = |figure: char| only.is_empty() || only.contains(figure);
    let modes: Vec<Mode> = match std::env::var("BENCH_MODE").as_deref() {
        Ok("pinned") => vec![Mode::Pinned],
        Ok("shared") => vec![Mode::Shared],
        _ if cores >= 2 => vec![Mode::Pinned, Mode::Shared],
        _ => vec![Mode::Shared],
    };
    for mode in modes {
        t.line(String::new());
        place(&env, mode);
        match mode {
            Mode::Pinned => t.line(format!(
                "### Pinned: the server under test alone on core {SERVER_CPU}, the generator and the upstream on core {LOAD_CPU}\n\nnginx runs `worker_processes 1`, dcr-proxy one worker (`server.workers = 1`: one thread, one single-threaded runtime). CPU µs/request is the server's user + system CPU (all its processes and threads, from /proc) per answered request; per-core req/s is requests per server CPU-second, what one core of the server answers at that cost. Both hold even when other work shares the machine; req/s and latencies do not."
            )),
            Mode::Shared => t.line(format!(
                "### Shared: {cores} cores shared by the generator, both servers and the upstream\n\nnginx runs `worker_processes auto`; dcr-proxy its default tokio runtime (one worker per core). A server that needs less CPU hands the saving to the generator, so the req/s ratio understates the CPU ratio."
            )),
        }
        t.line(String::new());
        t.line(
            "| figure | metric | dcr-proxy | nginx | ratio (higher = dcr-proxy better) | notes |"
                .into(),
        );
        t.line("|---|---|---|---|---|---|".into());
        pass_through_and_registrations(
            &env,
            mode,
            &mut t,
            &want,
            [&tls13, &tls12],
            [&p256, &rsa],
            software_id,
        )
        .await;
    }
    place(&env, Mode::Shared);
    if want('d') || want('e') {
        t.line(String::new());
        t.line("### Memory and the JWKS cache (freshly started servers, shared placement)".into());
        t.line(String::new());
        t.line(
            "| figure | metric | dcr-proxy | nginx | ratio (higher = dcr-proxy better) | notes |"
                .into(),
        );
        t.line("|---|---|---|---|---|---|".into());
    }
    let ssa = bench_ssa(&env, software_id);

    if want('d') {
        memory(&env, &p256, &tls13, &mut t).await;
    }

    // (e) JWKS fetches during 500 concurrent registrations with a cold cache (a fresh proxy).
    if want('e') {
        cold_cache(&env, &p256, &tls13, &ssa, &mut t).await;
    }

    // Only a full run replaces RESULTS.md, the table the README quotes: a partial one would leave it disagreeing
    // with itself and with the README.
    let name = if only.is_empty() {
        "benches/RESULTS.md"
    } else {
        "benches/RESULTS-partial.md"
    };
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    let _ = std::fs::write(&out, t.rows.join("\n") + "\n");
    println!("\nwritten to {}", out.display());
}

/// The generator (this process, every thread) and the fixed upstream on the load core, or anywhere.
fn place(env: &Env, mode: Mode) {
    let cpu = (mode == Mode::Pinned).then_some(LOAD_CPU);
    servers::set_affinity(std::process::id(), cpu);
    env.upstream.pin(cpu);
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn bench_ssa(env: &Env, software_id: &str) -> String {
    env.directory.sign(
        json!({}),
        support::claims::ob_ssa(
            software_id,
            "BenchOrg0000000001",
            &env.software_jwks,
            &["https://tpp.example.com/cb"],
            &["AISP", "PISP"],
        ),
    )
}

/// The rows every figure shares: req/s, server CPU per request and per-core req/s.
fn cost_rows(t: &mut Table, figure: &str, d: &Med, n: &Med, note: &str) {
    t.row(figure, "req/s", d.rps, n.rps, true, note);
    t.row(
        figure,
        "server CPU µs/request",
        d.cpu_us,
        n.cpu_us,
        false,
        &format!("server CPU s {:.2}/{:.2}", d.cpu, n.cpu),
    );
    t.row(
        figure,
        "of which kernel µs/request",
        d.sys_us,
        n.sys_us,
        false,
        "system time: the floor no user-space change moves",
    );
    t.row(figure, "per-core req/s", d.per_core, n.per_core, true, "");
}

/// BENCH_CASE="RSA-2048 TLS 1.2" (any part of "<key> <version>") runs only the (b) cases that contain it, e.g. to
/// profile one handshake kind alone; BENCH_CASE="c=64" runs only that concurrency of (a), BENCH_CASE="keep-alive"
/// only that half of (c), BENCH_CASE="PostgreSQL store" only (c) on the PostgreSQL store. Cases of other figures
/// that do not contain it are left out too.
fn case_wanted(case: &str) -> bool {
    std::env::var("BENCH_CASE").map_or(true, |want| case.contains(want.as_str()))
}

/// Figures (a), (b) and (c) in one placement.
async fn pass_through_and_registrations(
    env: &Env,
    mode: Mode,
    t: &mut Table,
    want: &dyn Fn(char) -> bool,
    [tls13, tls12]: [&Arc<rustls::ClientConfig>; 2],
    [p256, rsa]: [&ServerCert; 2],
    software_id: &str,
) {
    // (a) pass-through, keep-alive.
    let form = format!(
        "grant_type=client_credentials&scope=accounts&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={}",
        "x".repeat(TOKEN_BODY_LEN - 150)
    );
    let token_body = Bodies::Fixed(
        "/token",
        Bytes::from(form),
        "application/x-www-form-urlencoded",
    );
    let dcr = start_dcr(env, p256, "p256", mode);
    let ngx = start_reference(env, p256, "p256", mode);
    let mut nginx_keepalive = None;
    for c in [16, 64]
        .into_iter()
        .filter(|c| want('a') && case_wanted(&format!("c={c}")))
    {
        let (d, n) = compare(&dcr, &ngx, tls13, &token_body, c, true).await;
        cost_rows(
            t,
            &format!("(a) pass-through, keep-alive, c={c}"),
            &d,
            &n,
            &format!(
                "errors {}/{}; generator CPU s {:.1}",
                d.errors, n.errors, d.gen_cpu
            ),
        );
        t.row(&format!("(a) c={c}"), "p50 ms", d.p50, n.p50, false, "");
        t.row(&format!("(a) c={c}"), "p99 ms", d.p99, n.p99, false, "");
        t.row(&format!("(a) c={c}"), "p99.9 ms", d.p999, n.p999, false, "");
        if c == 16 {
            nginx_keepalive = Some(n);
        }
    }

    // (b) a new mTLS connection per request.
    let mut nginx_newconn = None;
    for (key_name, cert) in [("P-256", p256), ("RSA-2048", rsa)]
        .into_iter()
        .filter(|_| want('b'))
    {
        let (dcr_b, ngx_b) = if key_name == "P-256" {
            (None, None)
        } else {
            (
                Some(start_dcr(env, cert, "rsa", mode)),
                Some(start_reference(env, cert, "rsa", mode)),
            )
        };
        let d_srv = dcr_b.as_ref().unwrap_or(&dcr);
        let n_srv = ngx_b.as_ref().unwrap_or(&ngx);
        for (v, tls) in [("TLS 1.3", tls13), ("TLS 1.2", tls12)] {
            if !case_wanted(&format!("{key_name} {v}")) {
                continue;
            }
            let (d, n) = compare(d_srv, n_srv, tls, &token_body, 16, false).await;
            let suites = [
                load::negotiated_suite(d_srv.addr, tls).await,
                load::negotiated_suite(n_srv.addr, tls).await,
            ];
            cost_rows(
                t,
                &format!("(b) new connection per request, {key_name}, {v}, c=16"),
                &d,
                &n,
                &format!(
                    "p99 ms {:.2}/{:.2}; errors {}/{}; suite {}",
                    d.p99,
                    n.p99,
                    d.errors,
                    n.errors,
                    if suites[0] == suites[1] {
                        suites[0].clone()
                    } else {
                        format!("{} / {}", suites[0], suites[1])
                    }
                ),
            );
            if key_name == "P-256" && v == "TLS 1.3" {
                nginx_newconn = Some(n);
            }
        }
    }

    // (c) full registrations: SSA + request JWT verified (warm JWKS), DN check, durable SQLite write, upstream call.
    let ssa = bench_ssa(env, software_id);
    let per_run = 60_000usize.min(8_000 * duration().as_secs() as usize);
    for (mode_name, keep_alive) in [("keep-alive", true), ("new connection per request", false)]
        .into_iter()
        .filter(|(mode_name, _)| want('c') && case_wanted(mode_name))
    {
        let mut runs = Vec::new();
        for _ in 0..rounds() {
            let bodies = Bodies::Queue(
                "/register",
                Arc::new(presign(env, &ssa, per_run)),
                Arc::new(AtomicU64::new(0)),
                "application/jwt",
            );
            // Warm the JWKS cache and the connection pool so the run measures the steady state.
            let _ = load_once(&dcr, tls13, &bodies).await;
            runs.push(load(&dcr, tls13, bodies, 16, keep_alive, 201).await);
        }
        let m = med(&runs);
        let (reference, against, target) = if keep_alive {
            (
                nginx_keepalive.as_ref(),
                "(a) c=16",
                "target ≤ 300 µs and p99 < 5 ms",
            )
        } else {
            (
                nginx_newconn.as_ref(),
                "(b) P-256 TLS 1.3",
                "target ≥ 1.0× on per-core req/s",
            )
        };
        let figure =
            format!("(c) POST /register, {mode_name}, c=16 (vs nginx pass-through {against})");
        let note = format!(
            "{target}; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, errors {}",
            m.p50, m.p99, m.p999, m.errors
        );
        match reference {
            Some(n) => cost_rows(t, &figure, &m, n, &note),
            None => {
                let none = Med::default();
                cost_rows(t, &figure, &m, &none, &note)
            }
        }
    }
    if want('c') && case_wanted("PostgreSQL store") {
        registrations_on_postgres(
            env,
            mode,
            t,
            p256,
            tls13,
            &ssa,
            per_run,
            nginx_keepalive.as_ref(),
        )
        .await;
    }
}

/// (c) kept-alive again with the PostgreSQL store (what replicas share), durable as deployed: `fsync`,
/// `synchronous_commit` and `full_page_writes` on. The durable commit then runs in PostgreSQL's processes, so
/// their CPU per registration gets its own row beside the proxy's; pinned, they share the generator's core.
#[allow(clippy::too_many_arguments)]
async fn registrations_on_postgres(
    env: &Env,
    mode: Mode,
    t: &mut Table,
    cert: &ServerCert,
    tls: &Arc<rustls::ClientConfig>,
    ssa: &str,
    per_run: usize,
    nginx_keepalive: Option<&Med>,
) {
    let pg = PgServer::start_with(PgOptions {
        durable: true,
        ..PgOptions::default()
    })
    .await;
    let cpu = (mode == Mode::Pinned).then_some(LOAD_CPU);
    // Backends fork from the postmaster after this and inherit its placement.
    for pid in pg.server_pids() {
        servers::set_affinity(pid, cpu);
    }
    let db = pg.create_database().await;
    let store = format!(
        "backend = \"postgres\"\nurl = \"{}\"\npool_size = 16",
        pg.url(&db)
    );
    let dcr = start_dcr_with_store(env, cert, "postgres", mode, &store);
    let pg_cpu = |pg: &PgServer| -> f64 { pg.server_pids().into_iter().map(cpu_seconds).sum() };
    let mut runs = Vec::new();
    let mut pg_us = Vec::new();
    for _ in 0..rounds() {
        let bodies = Bodies::Queue(
            "/register",
            Arc::new(presign(env, ssa, per_run)),
            Arc::new(AtomicU64::new(0)),
            "application/jwt",
        );
        let _ = load_once(&dcr, tls, &bodies).await;
        let before = pg_cpu(&pg);
        let run = load(&dcr, tls, bodies, 16, true, 201).await;
        pg_us.push((pg_cpu(&pg) - before) * 1e6 / run.requests.max(1) as f64);
        runs.push(run);
    }
    let m = med(&runs);
    pg_us.sort_by(|a, b| a.total_cmp(b));
    let pg_med = pg_us[pg_us.len() / 2];
    let figure =
        "(c) POST /register, keep-alive, PostgreSQL store, c=16 (vs nginx pass-through (a) c=16)";
    let note = format!(
        "proxy's CPU, PostgreSQL's is the next row; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, errors {}",
        m.p50, m.p99, m.p999, m.errors
    );
    let none = Med::default();
    cost_rows(t, figure, &m, nginx_keepalive.unwrap_or(&none), &note);
    t.row(
        figure,
        "PostgreSQL CPU µs/request",
        pg_med,
        0.0,
        false,
        "all its processes (postmaster, backends, WAL writer, checkpointer) per registration",
    );
}

async fn cold_cache(
    env: &Env,
    cert: &ServerCert,
    tls13: &Arc<rustls::ClientConfig>,
    ssa: &str,
    t: &mut Table,
) {
    let cold = start_dcr(env, cert, "cold", Mode::Shared);
    env.jwks.reset_count("/directory.jwks");
    env.jwks.reset_count("/software.jwks");
    let bodies = presign(env, ssa, 500);
    let mut tasks = Vec::new();
    for b in bodies {
        let tls = tls13.clone();
        let addr = cold.addr;
        tasks.push(tokio::spawn(async move {
            let mut s = connect(addr, &tls).await?;
            let req = http::Request::post("/register")
                .header("host", "localhost")
                .header("content-type", "application/jwt")
                .body(Full::new(b))
                .ok()?;
            let r = s.send_request(req).await.ok()?;
            Some(r.status().as_u16())
        }));
    }
    let mut created = 0;
    for t in tasks {
        if let Ok(Some(201)) = t.await {
            created += 1;
        }
    }
    t.line(format!(
        "| (e) JWKS fetches, 500 concurrent registrations, cold cache | directory / software JWKS fetches | {} / {} | | | {created} of 500 created; target exactly 1 per URL |",
        env.jwks.fetch_count("/directory.jwks"),
        env.jwks.fetch_count("/software.jwks")
    ));
    drop(cold);
}

/// (d) RSS of freshly started servers: idle, then with 1000 open mTLS connections. Fresh, because after
/// the load runs both allocators keep memory they no longer use.
async fn memory(env: &Env, cert: &ServerCert, tls: &Arc<rustls::ClientConfig>, t: &mut Table) {
    for srv in [
        start_dcr(env, cert, "memory", Mode::Shared),
        start_reference(env, cert, "memory", Mode::Shared),
    ] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = srv.rss_mib();
        let mut conns = Vec::new();
        for _ in 0..1000 {
            if let Some(c) = connect(srv.addr, tls).await {
                conns.push(c);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let loaded = srv.rss_mib();
        t.line(format!(
            "| (d) RSS, {} (fresh) | MiB idle / with {} open connections | {idle:.1} / {loaded:.1} | | | targets for dcr-proxy: ≤ 20 idle, ≤ 64 at 1000 |",
            srv.name,
            conns.len()
        ));
        drop(conns);
    }
}
