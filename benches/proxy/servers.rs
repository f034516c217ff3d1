//! The processes a benchmark run measures: dcr-proxy, the reference nginx and the fixed upstream, their
//! configuration, where they run (pinned to a core or shared), and their CPU and memory as the kernel counts them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::pki::ServerCert;
use crate::{AUD, Env};

/// Where the processes run. Pinned: the generator (this process) and the fixed upstream on [`LOAD_CPU`], the server
/// under test alone on [`SERVER_CPU`] with one worker (nginx `worker_processes 1`, dcr-proxy one runtime worker).
/// Shared: no affinity, nginx `worker_processes auto`, dcr-proxy's default runtime (one worker per core).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Pinned,
    Shared,
}

pub(super) const LOAD_CPU: usize = 0;
pub(super) const SERVER_CPU: usize = 1;

/// Sets the CPU affinity of every thread of `pid` (`taskset -a -p`); None lets it run anywhere.
pub(super) fn set_affinity(pid: u32, cpu: Option<usize>) {
    let cpus = match cpu {
        Some(c) => c.to_string(),
        // Not available_parallelism(): once this process is pinned, that counts only the pinned core.
        None => std::fs::read_to_string("/sys/devices/system/cpu/online")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "0".into()),
    };
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "taskset -a -p -c {cpus} {pid} failed (util-linux is needed for pinned mode)"
    );
}

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub(super) fn cpu_seconds(pid: u32) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// (user, system) CPU seconds: utime and stime in clock ticks (fields 14 and 15 of /proc/<pid>/stat), ticks
/// are 100 Hz on Linux.
pub(super) fn cpu_split(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> f64 { f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) / 100.0 };
    (field(11), field(12))
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

pub(super) struct Server {
    pub(super) name: &'static str,
    pub(super) addr: SocketAddr,
    pub(super) child: Child,
    pub(super) nginx: bool,
}

impl Server {
    fn pids(&self) -> Vec<u32> {
        if self.nginx {
            pids_of(self.child.id())
        } else {
            vec![self.child.id()]
        }
    }
    /// Moves the server (every process and thread of it) to `cpu`, or lets it run anywhere.
    pub(super) fn pin(&self, cpu: Option<usize>) {
        for pid in self.pids() {
            set_affinity(pid, cpu);
        }
    }
    pub(super) fn cpu(&self) -> f64 {
        self.pids().into_iter().map(cpu_seconds).sum()
    }
    /// System (kernel) CPU seconds alone, all processes and threads.
    pub(super) fn sys_cpu(&self) -> f64 {
        self.pids().into_iter().map(|p| cpu_split(p).1).sum()
    }
    pub(super) fn rss_mib(&self) -> f64 {
        self.pids().into_iter().map(rss_kib).sum::<u64>() as f64 / 1024.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // nginx's workers outlive a SIGKILLed master (each run left its workers behind, idle but holding memory
        // and ports): SIGTERM lets the master stop them first. SIGKILL only if it has not exited in 5 s.
        if self.nginx {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
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

pub(super) fn start_nginx(
    dir: &Path,
    name: &str,
    conf: &str,
    addr: SocketAddr,
    cpu: Option<usize>,
) -> Child {
    let prefix = dir.join(name);
    std::fs::create_dir_all(prefix.join("logs")).expect("nginx prefix");
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("nginx.conf");
    let child = pinned_command(&nginx_binary(), cpu)
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

/// `program`, started on `cpu` when given: taskset execs it, so the child's pid is the program's and every
/// process and thread it starts inherits the affinity.
fn pinned_command(program: &str, cpu: Option<usize>) -> Command {
    match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(super) fn template(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/nginx")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub(super) fn fill(t: &str, vars: &[(&str, String)]) -> String {
    vars.iter().fold(t.to_string(), |s, (k, v)| {
        s.replace(&format!("{{{{{k}}}}}"), v)
    })
}

fn write_server_cert(dir: &Path, name: &str, cert: &ServerCert) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{name}.pem"));
    let k = dir.join(format!("{name}-key.pem"));
    std::fs::write(&c, &cert.cert_pem).expect("cert");
    std::fs::write(&k, &cert.key_pem).expect("key");
    (c, k)
}

/// BENCH_STORE_DIR puts the SQLite store files in another directory than the run's own. Meant for
/// `BENCH_STORE_DIR=/dev/shm`: tmpfs has no device to flush, so (c) then shows what a registration costs with
/// every statement and fsync call made but nothing waiting on a disk; the floor no store tuning can go below.
/// Never a figure of a durable store. The files are left there for the operator of the run to remove.
fn store_dir(env: &Env) -> std::path::PathBuf {
    std::env::var_os("BENCH_STORE_DIR").map_or_else(|| env.dir.path().to_path_buf(), Into::into)
}

/// BENCH_COMMIT_DELAY sets the SQLite store's `commit_delay` (e.g. "0ms" against the default), to measure
/// what waiting for more writes per COMMIT gives on the disk under test.
fn commit_delay() -> String {
    std::env::var("BENCH_COMMIT_DELAY")
        .map(|d| format!("\ncommit_delay = \"{d}\""))
        .unwrap_or_default()
}

pub(super) fn start_dcr(env: &Env, cert: &ServerCert, store_name: &str, mode: Mode) -> Server {
    start_dcr_build(env, cert, store_name, mode, &dcr_binary())
}

/// BENCH_BINARY runs another build of dcr-proxy under the same load (an A/B of two commits, each its own
/// `cargo build --profile bench` in its own target directory).
fn dcr_binary() -> PathBuf {
    std::env::var_os("BENCH_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(crate::support::proxy::binary)
}

fn start_dcr_build(
    env: &Env,
    cert: &ServerCert,
    store_name: &str,
    mode: Mode,
    binary: &Path,
) -> Server {
    let db = store_dir(env).join(format!("{store_name}-{}.sqlite", uuid::Uuid::new_v4()));
    let store = format!(
        "backend = \"sqlite\"\npath = \"{}\"{}",
        db.display(),
        commit_delay()
    );
    start_dcr_on(env, cert, store_name, mode, &store, binary)
}

/// [`start_dcr`] with its own `[store]` table (the keys after the header).
pub(super) fn start_dcr_with_store(
    env: &Env,
    cert: &ServerCert,
    store_name: &str,
    mode: Mode,
    store: &str,
) -> Server {
    start_dcr_on(env, cert, store_name, mode, store, &dcr_binary())
}

fn start_dcr_on(
    env: &Env,
    cert: &ServerCert,
    store_name: &str,
    mode: Mode,
    store: &str,
    binary: &Path,
) -> Server {
    let d = env.dir.path();
    let (c, k) = write_server_cert(d, &format!("dcr-{store_name}"), cert);
    let port = free_port();
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "https://localhost:{port}"
max_body_bytes = 65536
# Every connection of the generator comes from 127.0.0.1: the per-address cap (a defence against one internet
# client) would hold (d) to 256 connections. (e) sends 500 registrations at once to count JWKS fetches; under the
# default cap of 64 most would be turned away with 503 before they fetched anything.
max_connections_per_address = 0
max_concurrent_registrations = 1024
{workers}
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
{store}
[log]
format = "json"
level = "warn"
"#,
        // One worker thread, as nginx has one worker process; shared: one per CPU, the default.
        workers = if mode == Mode::Pinned {
            "workers = 1"
        } else {
            ""
        },
        c = c.display(),
        k = k.display(),
        ca = d.join("ca.pem").display(),
        up = env.upstream_port,
        anchor = env.jwks.url("/directory.jwks"),
    );
    let cfg = d.join(format!("dcr-{store_name}.toml"));
    std::fs::write(&cfg, toml).expect("config");
    let mut cmd = pinned_command(
        &binary.display().to_string(),
        (mode == Mode::Pinned).then_some(SERVER_CPU),
    );
    let child = cmd
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

pub(super) fn start_reference(env: &Env, cert: &ServerCert, tag: &str, mode: Mode) -> Server {
    // BENCH_VERSUS puts another build of dcr-proxy where nginx stands, so that two builds alternate round by
    // round within one run: an A/B that the host's drift between runs cannot decide. The nginx column is then
    // that build's.
    if let Some(other) = std::env::var_os("BENCH_VERSUS") {
        let mut s = start_dcr_build(env, cert, &format!("versus-{tag}"), mode, Path::new(&other));
        s.name = "dcr-proxy (BENCH_VERSUS)";
        return s;
    }
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
            (
                "workers",
                match mode {
                    Mode::Pinned => "1".to_string(),
                    Mode::Shared => "auto".to_string(),
                },
            ),
        ],
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = start_nginx(
        d,
        &format!("reference-{tag}-{port}"),
        &conf,
        addr,
        (mode == Mode::Pinned).then_some(SERVER_CPU),
    );
    Server {
        name: "nginx",
        addr,
        child,
        nginx: true,
    }
}

pub(super) fn client_config(
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
