//! dcr-proxy against nginx on the same machine, in one run: `cargo bench --bench proxy` (or `benches/run.sh`).
//!
//! Both servers terminate mutual TLS and forward to the same upstream: a second nginx answering with a fixed
//! response, so the upstream is never the bottleneck. The load generator lives in this process (hyper +
//! tokio-rustls, client certificates), alternates the two servers over several rounds and reports medians.
//! Everything shares the machine's cores: CPU seconds of the generator and of each server are printed too.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::json;
use support::jwks_server::JwksServer;
use support::keys::{SigningKey, jwks};
use support::pki::{ClientCert, ClientCertSpec, KeyKind, Pki, ServerCert};
use support::temp::TempDir;
use tokio::net::TcpStream;

const ROUNDS: usize = 3;
const TOKEN_BODY_LEN: usize = 600;
const AUD: &str = "0015800001041RHAAY";

fn duration() -> Duration {
    Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn cpu_seconds(pid: u32) -> f64 {
    // utime + stime in clock ticks (fields 14 and 15 of /proc/<pid>/stat), ticks are 100 Hz on Linux.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// nginx's master and its workers.
fn pids_of(master: u32) -> Vec<u32> {
    let mut pids = vec![master];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(master) {
                pids.push(pid);
            }
        }
    }
    pids
}

struct Server {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
    nginx: bool,
}

impl Server {
    fn pids(&self) -> Vec<u32> {
        if self.nginx {
            pids_of(self.child.id())
        } else {
            vec![self.child.id()]
        }
    }
    fn cpu(&self) -> f64 {
        self.pids().into_iter().map(cpu_seconds).sum()
    }
    fn rss_mib(&self) -> f64 {
        self.pids().into_iter().map(rss_kib).sum::<u64>() as f64 / 1024.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> String {
    for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("nginx is needed for the reference: apt-get install -y nginx-light (or nginx)");
}

fn start_nginx(dir: &Path, name: &str, conf: &str, addr: SocketAddr) -> Child {
    let prefix = dir.join(name);
    std::fs::create_dir_all(prefix.join("logs")).expect("nginx prefix");
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("nginx.conf");
    let child = Command::new(nginx_binary())
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-g")
        .arg("daemon off;")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx");
    wait_listening(addr);
    child
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn template(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/nginx")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn fill(t: &str, vars: &[(&str, String)]) -> String {
    vars.iter().fold(t.to_string(), |s, (k, v)| {
        s.replace(&format!("{{{{{k}}}}}"), v)
    })
}

struct Env {
    dir: TempDir,
    pki: Pki,
    upstream_port: u16,
    _upstream: Server,
    jwks: JwksServer,
    directory: SigningKey,
    client: ClientCert,
    client_key: Arc<SigningKey>,
    software_jwks: String,
}

fn write_server_cert(dir: &Path, name: &str, cert: &ServerCert) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{name}.pem"));
    let k = dir.join(format!("{name}-key.pem"));
    std::fs::write(&c, &cert.cert_pem).expect("cert");
    std::fs::write(&k, &cert.key_pem).expect("key");
    (c, k)
}

fn start_dcr(env: &Env, cert: &ServerCert, store_name: &str) -> Server {
    let d = env.dir.path();
    let (c, k) = write_server_cert(d, &format!("dcr-{store_name}"), cert);
    let port = free_port();
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "https://localhost:{port}"
max_body_bytes = 65536
[admin]
enabled = false
[tls]
cert = "{c}"
key = "{k}"
client_ca = "{ca}"
[upstream]
base_url = "http://127.0.0.1:{up}"
registration_endpoint = "/reg"
[jwks]
ca_bundle = "{ca}"
[profile]
kind = "ob-v3.1"
audiences = ["{AUD}"]
[[trust_anchors]]
issuer = "OpenBanking Ltd"
jwks_uri = "{anchor}"
[store]
backend = "sqlite"
path = "{db}"
[log]
format = "json"
level = "warn"
"#,
        c = c.display(),
        k = k.display(),
        ca = d.join("ca.pem").display(),
        up = env.upstream_port,
        anchor = env.jwks.url("/directory.jwks"),
        db = d
            .join(format!("{store_name}-{}.sqlite", uuid::Uuid::new_v4()))
            .display(),
    );
    let cfg = d.join(format!("dcr-{store_name}.toml"));
    std::fs::write(&cfg, toml).expect("config");
    let child = Command::new(support::proxy::binary())
        .arg("--config")
        .arg(&cfg)
        .env("DCR_UPSTREAM_INITIAL_ACCESS_TOKEN", "bench")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dcr-proxy");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(addr);
    Server {
        name: "dcr-proxy",
        addr,
        child,
        nginx: false,
    }
}

fn start_reference(env: &Env, cert: &ServerCert, tag: &str) -> Server {
    let d = env.dir.path();
    let (c, k) = write_server_cert(d, &format!("nginx-{tag}"), cert);
    let port = free_port();
    let conf = fill(
        &template("reference.conf.template"),
        &[
            ("port", port.to_string()),
            ("cert", c.display().to_string()),
            ("key", k.display().to_string()),
            ("ca", d.join("ca.pem").display().to_string()),
            ("upstream_port", env.upstream_port.to_string()),
        ],
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = start_nginx(d, &format!("reference-{tag}-{port}"), &conf, addr);
    Server {
        name: "nginx",
        addr,
        child,
        nginx: true,
    }
}

fn client_config(
    env: &Env,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(env.pki.ca_der()))
        .expect("ca");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(env.client.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(env.client.key_der.clone())),
        )
        .expect("client cert");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Option<Sender> {
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

/// Where request bodies come from: the same bytes each time, or a pre-signed queue (one use each).
#[derive(Clone)]
enum Bodies {
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

struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
    gen_cpu: f64,
    server_cpu: f64,
}

async fn load(
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
        rps: hist.len() as f64 / elapsed,
        p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        p999_ms: hist.value_at_quantile(0.999) as f64 / 1000.0,
        errors,
        gen_cpu: cpu_seconds(std::process::id()) - gen_before,
        server_cpu: server.cpu() - srv_before,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

struct Med {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: u64,
    gen_cpu: f64,
    cpu: f64,
}

fn med(runs: &[Run]) -> Med {
    Med {
        rps: median(runs.iter().map(|r| r.rps).collect()),
        p50: median(runs.iter().map(|r| r.p50_ms).collect()),
        p99: median(runs.iter().map(|r| r.p99_ms).collect()),
        p999: median(runs.iter().map(|r| r.p999_ms).collect()),
        errors: runs.iter().map(|r| r.errors).sum(),
        gen_cpu: median(runs.iter().map(|r| r.gen_cpu).collect()),
        cpu: median(runs.iter().map(|r| r.server_cpu).collect()),
    }
}

/// Alternates dcr-proxy and nginx for ROUNDS rounds; returns medians (dcr, nginx).
async fn compare(
    dcr: &Server,
    nginx: &Server,
    tls: &Arc<rustls::ClientConfig>,
    bodies: &Bodies,
    concurrency: usize,
    keep_alive: bool,
) -> (Med, Med) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(load(dcr, tls, bodies.clone(), concurrency, keep_alive, 200).await);
        b.push(load(nginx, tls, bodies.clone(), concurrency, keep_alive, 200).await);
    }
    (med(&a), med(&b))
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
        child: start_nginx(dir.path(), "upstream", &conf, up_addr),
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
        _upstream: upstream,
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
    let mut t = Table { rows: Vec::new() };
    t.line(format!(
        "## dcr-proxy vs nginx ({date}; {ROUNDS} alternating rounds of {}s, medians)",
        duration().as_secs()
    ));
    t.line(String::new());
    t.line(format!("Machine: {} cores shared by the load generator, both servers and the upstream (loopback). The upstream is nginx returning a fixed response, never the bottleneck. nginx runs `worker_processes auto`; dcr-proxy its default tokio runtime (one worker per core).", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)));
    t.line(String::new());
    t.line(
        "| figure | metric | dcr-proxy | nginx | ratio (higher = dcr-proxy better) | notes |"
            .into(),
    );
    t.line("|---|---|---|---|---|---|".into());

    let tls13 = client_config(&env, &[&rustls::version::TLS13]);
    let tls12 = client_config(&env, &[&rustls::version::TLS12]);
    let p256 = env
        .pki
        .issue_server_with(&["localhost", "127.0.0.1"], KeyKind::P256);
    let rsa = env
        .pki
        .issue_server_with(&["localhost", "127.0.0.1"], KeyKind::Rsa2048);

    // BENCH_ONLY=ac runs figures (a) and (c) only, and so on; unset runs all. A figure whose reference was not
    // measured in this run shows no ratio.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let want = |figure: char| only.is_empty() || only.contains(figure);

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
    let dcr = start_dcr(&env, &p256, "p256");
    let ngx = start_reference(&env, &p256, "p256");
    let mut nginx_keepalive_rps = 0.0;
    for c in [16, 64].into_iter().filter(|_| want('a')) {
        let (d, n) = compare(&dcr, &ngx, &tls13, &token_body, c, true).await;
        if c == 16 {
            nginx_keepalive_rps = n.rps;
        }
        t.row(
            &format!("(a) pass-through, keep-alive, c={c}"),
            "req/s",
            d.rps,
            n.rps,
            true,
            &format!(
                "errors {}/{}; server CPU s {:.1}/{:.1}; generator CPU s {:.1}",
                d.errors, n.errors, d.cpu, n.cpu, d.gen_cpu
            ),
        );
        t.row(&format!("(a) c={c}"), "p50 ms", d.p50, n.p50, false, "");
        t.row(
            &format!("(a) c={c}"),
            "p99 ms",
            d.p99,
            n.p99,
            false,
            &format!("p99.9 {:.2} / {:.2}", d.p999, n.p999),
        );
    }

    // (b) a new mTLS connection per request.
    let mut nginx_newconn = 0.0;
    for (key_name, cert) in [("P-256", &p256), ("RSA-2048", &rsa)]
        .into_iter()
        .filter(|_| want('b'))
    {
        let (dcr_b, ngx_b) = if key_name == "P-256" {
            (None, None)
        } else {
            (
                Some(start_dcr(&env, cert, "rsa")),
                Some(start_reference(&env, cert, "rsa")),
            )
        };
        let d_srv = dcr_b.as_ref().unwrap_or(&dcr);
        let n_srv = ngx_b.as_ref().unwrap_or(&ngx);
        for (v, tls) in [("TLS 1.3", &tls13), ("TLS 1.2", &tls12)] {
            let (d, n) = compare(d_srv, n_srv, tls, &token_body, 16, false).await;
            if key_name == "P-256" && v == "TLS 1.3" {
                nginx_newconn = n.rps;
            }
            t.row(
                &format!("(b) new connection per request, {key_name}, {v}, c=16"),
                "req/s",
                d.rps,
                n.rps,
                true,
                &format!(
                    "p99 ms {:.2}/{:.2}; errors {}/{}; server CPU s {:.1}/{:.1}",
                    d.p99, n.p99, d.errors, n.errors, d.cpu, n.cpu
                ),
            );
        }
    }

    // (c) full registrations: SSA + request JWT verified (warm JWKS), DN check, durable SQLite write, upstream call.
    let ssa = env.directory.sign(
        json!({}),
        support::claims::ob_ssa(
            software_id,
            "BenchOrg0000000001",
            &env.software_jwks,
            &["https://tpp.example.com/cb"],
            &["AISP", "PISP"],
        ),
    );
    let per_run = 60_000usize.min(8_000 * duration().as_secs() as usize);
    for (mode, keep_alive) in [("keep-alive", true), ("new connection per request", false)]
        .into_iter()
        .filter(|_| want('c'))
    {
        let mut runs = Vec::new();
        for _ in 0..ROUNDS {
            let bodies = Bodies::Queue(
                "/register",
                Arc::new(presign(&env, &ssa, per_run)),
                Arc::new(AtomicU64::new(0)),
                "application/jwt",
            );
            // Warm the JWKS cache and the connection pool so the run measures the steady state.
            let _ = load_once(&dcr, &tls13, &bodies).await;
            runs.push(load(&dcr, &tls13, bodies, 16, keep_alive, 201).await);
        }
        let m = med(&runs);
        let reference = if keep_alive {
            nginx_keepalive_rps
        } else {
            nginx_newconn
        };
        let target = if keep_alive {
            "target ≥ 0.30 with p99 < 5 ms"
        } else {
            "target ≥ 1.2"
        };
        t.row(
            &format!(
                "(c) POST /register, {mode}, c=16 (vs nginx pass-through {})",
                if keep_alive {
                    "(a) c=16"
                } else {
                    "(b) P-256 TLS 1.3"
                }
            ),
            "req/s",
            m.rps,
            reference,
            true,
            &format!(
                "{target}; p50 {:.2} ms, p99 {:.2} ms, errors {}; proxy CPU s {:.1}",
                m.p50, m.p99, m.errors, m.cpu
            ),
        );
    }

    if want('d') {
        memory(&env, &p256, &tls13, &mut t).await;
    }

    // (e) JWKS fetches during 500 concurrent registrations with a cold cache (a fresh proxy).
    if want('e') {
        cold_cache(&env, &p256, &tls13, &ssa, &mut t).await;
    }

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/RESULTS.md");
    let _ = std::fs::write(&out, t.rows.join("\n") + "\n");
    println!("\nwritten to {}", out.display());
}

async fn cold_cache(
    env: &Env,
    cert: &ServerCert,
    tls13: &Arc<rustls::ClientConfig>,
    ssa: &str,
    t: &mut Table,
) {
    let cold = start_dcr(env, cert, "cold");
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
        start_dcr(env, cert, "memory"),
        start_reference(env, cert, "memory"),
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

async fn load_once(
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
