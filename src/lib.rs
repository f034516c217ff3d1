//! dcr-proxy: regulated Dynamic Client Registration (UK OB v3.1, AU CDR 1.13) in front of a plain
//! RFC 7591/7592 OAuth server. The data path: accept → TLS → route → verify → translate → upstream → rewrite.

pub mod admin;
pub mod bearer;
pub mod body;
pub mod config;
pub mod dcr;
pub mod echo;
pub mod error;
pub mod forward;
pub mod identity;
pub mod jwks;
pub mod jwt;
pub mod listener;
pub mod metrics;
pub mod outbound;
pub mod peers;
pub mod register_status;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod workers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use config::{Config, ProcessEnv};
use store::StoreConfig;
use store::replay;
use tls::TlsConfig;
use tls::revocation::{self, Revocation};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{key}: {problem}")]
    Setup { key: &'static str, problem: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl StartError {
    /// The configuration key to blame, if a setting (rather than the network) is at fault.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            StartError::Setup { key, .. } => Some(key),
            StartError::Bind { .. } => None,
        }
    }
}

fn setup(key: &'static str, problem: impl ToString) -> StartError {
    StartError::Setup {
        key,
        problem: problem.to_string(),
    }
}

/// Everything built from the configuration, before any socket is opened. `--check-config` stops here.
pub struct Prepared {
    tls: Arc<rustls::ServerConfig>,
    tls_cfg: TlsConfig,
    tls_material: tls::Material,
    revocation: Arc<Revocation>,
    state: Arc<server::AppState>,
    readiness: Arc<admin::Readiness>,
    admin_limits: admin::AdminLimits,
    listen: SocketAddr,
    admin_listen: Option<SocketAddr>,
    drain: Duration,
    reload_interval: Duration,
    background: Vec<BackgroundTask>,
    /// Threads client connections run on (`server.workers`).
    workers: usize,
}

type BackgroundTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

fn tls_setup(e: tls::TlsError) -> StartError {
    match e {
        tls::TlsError::Material { key, problem } => setup(key, problem),
    }
}

pub async fn prepare(cfg: &Config) -> Result<Prepared, StartError> {
    build(cfg, StoreUse::Open).await
}

/// `--check-config`: everything [`prepare`] builds, except that the store is only inspected
/// (`store::sqlite::check_read_only`, `PostgresStore::inspect`): no file, folder, schema, table or lock is
/// created, so a check can run beside live replicas or before the volume is ready without changing either.
pub async fn check(cfg: &Config) -> Result<(), StartError> {
    build(cfg, StoreUse::Inspect).await.map(drop)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StoreUse {
    Open,
    Inspect,
}

async fn build(cfg: &Config, store_use: StoreUse) -> Result<Prepared, StartError> {
    let tls_material = tls::Material::load(&cfg.tls).map_err(tls_setup)?;
    let revocation = Revocation::new(&cfg.tls.crl, &cfg.tls.client_ca).map_err(|e| match e {
        revocation::RevocationError::Setup { key, problem } => setup(key, problem),
    })?;
    // A CRL URL that does not answer does not stop the start: its CRL counts as stale until it does.
    revocation.fetch_now().await;
    let built = tls::build(&cfg.tls, &tls_material, &revocation.view()).map_err(tls_setup)?;
    revocation.enforce(built.verifiers);
    let tls = built.server;
    let jwks =
        Arc::new(jwks::JwksCache::new(cfg.jwks.clone()).map_err(|e| setup("jwks.ca_bundle", e))?);
    let mut background: Vec<BackgroundTask> = Vec::new();
    background.push(Box::pin(revocation.clone().run()));
    let (store, replay): (
        Arc<dyn store::RegistrationStore>,
        Arc<dyn replay::ReplayGuard>,
    ) = match &cfg.store {
        StoreConfig::Sqlite {
            path,
            replay_cache_bytes,
            commit_delay,
        } => (
            Arc::new(
                match store_use {
                    StoreUse::Open => store::sqlite::SqliteStore::open_with(path, *commit_delay),
                    // The rest of the build needs a store; nothing is written to this one.
                    StoreUse::Inspect => store::sqlite::check_read_only(path)
                        .and_then(|()| store::sqlite::SqliteStore::open_in_memory()),
                }
                .map_err(|e| setup("store.path", e))?,
            ),
            Arc::new(replay::MemoryReplayGuard::new(
                *replay_cache_bytes,
                cfg.profile.clock_skew,
            )),
        ),
        StoreConfig::Postgres(pg) => {
            // One database for every replica: records, software_id uniqueness and the replay cache.
            let s = match store_use {
                StoreUse::Open => store::postgres::PostgresStore::connect(pg).await,
                StoreUse::Inspect => store::postgres::PostgresStore::inspect(pg).await,
            }
            .map_err(|e| setup("store.url", e))?
            .with_replay_skew(cfg.profile.clock_skew);
            let purger = s.clone();
            background.push(Box::pin(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    if let Err(e) = purger.purge_expired().await {
                        tracing::warn!(error = %e, "purging expired replay entries failed");
                    }
                }
            }));
            let s = Arc::new(s);
            (s.clone(), s)
        }
    };
    // What is left to fail in these constructors is loading trust roots, named by the key that chose them.
    let upstream = Arc::new(
        upstream::Upstream::new(&cfg.upstream).map_err(|e| setup("upstream.ca_bundle", e))?,
    );
    // CDR Register status: polled in the background, consulted at /register, management and the pass-through.
    let register_gate = match &cfg.profile.software_product_status {
        Some(s) => {
            // The Register is fetched like the JWKS it also publishes, unless it has its own trust roots.
            let (key, roots) = match &s.ca_bundle {
                Some(p) => ("profile.register_status_ca_bundle", Some(p.as_path())),
                None => ("jwks.ca_bundle", cfg.jwks.ca_bundle.as_deref()),
            };
            let http = outbound::HttpClient::new(
                roots,
                cfg.jwks.connect_timeout.min(s.timeout),
                s.timeout,
                true,
            )
            .map_err(|e| setup(key, e))?;
            let poller = Arc::new(register_status::RegisterStatus::new(s.clone(), http));
            background.push(Box::pin(poller.clone().run()));
            Some((
                poller.clone(),
                Arc::new(register_status::RegisterGate::new(poller, store.clone())),
            ))
        }
        None => None,
    };
    let status = register_gate
        .as_ref()
        .map(|(_, g)| dcr::status::StatusChecker::new(g.clone()));
    // Management calls the upstream's token endpoints, so it trusts what the upstream is trusted with.
    let bearer = cfg
        .management
        .clone()
        .map(bearer::BearerValidator::new)
        .transpose()
        .map_err(|e| setup("upstream.ca_bundle", e))?;
    let registrar = dcr::Registrar::new(dcr::Parts {
        profile: cfg.profile.clone(),
        trust_anchors: cfg.trust_anchors.clone(),
        jwks,
        store: store.clone(),
        replay,
        upstream: upstream.clone(),
        max_body: cfg.server.max_body_bytes,
        bearer,
        status,
    });
    background.push(Box::pin(dcr::reconcile::run(
        store.clone(),
        upstream,
        cfg.reconcile.clone(),
    )));
    // The upstream's trust roots loaded above, so only an extra deny path can be refused here.
    let forwarder = forward::Forwarder::for_workers(cfg.forward.clone(), worker_count(cfg))
        .map_err(|e| setup("forward.extra_deny_paths", e))?;
    // The same file the TLS verifier just loaded: its anchors are never forwarded in a chain.
    forwarder.set_client_anchors(client_anchors(&cfg.tls).map_err(|e| match e {
        tls::TlsError::Material { key, problem } => setup(key, problem),
    })?);
    let probe_http = outbound::HttpClient::new(
        cfg.upstream.ca_bundle.as_deref(),
        cfg.upstream.connect_timeout,
        Duration::from_secs(2),
        false,
    )
    .map_err(|e| setup("upstream.ca_bundle", e))?;
    if let Some((_, gate)) = &register_gate {
        forwarder.set_register_gate(gate.clone());
    }
    let readiness = Arc::new(
        admin::Readiness::new(store, &cfg.upstream.base_url, probe_http)
            .with_register_status(register_gate.as_ref().map(|(p, _)| p.clone())),
    );
    let budget = connection_budget(cfg, listener::file_limit())?;
    tracing::info!(
        nofile = budget.nofile,
        reserved_fds = budget.reserved,
        max_connections = budget.data,
        max_connections_per_address = cfg.server.max_connections_per_address,
        admin_max_connections = cfg.server.admin_max_connections,
        "connection limits"
    );
    let s = &cfg.server;
    Ok(Prepared {
        tls,
        tls_cfg: cfg.tls.clone(),
        tls_material,
        revocation: revocation.clone(),
        state: Arc::new(server::AppState {
            registrar,
            forwarder,
            revocation,
            handshake_timeout: s.handshake_timeout,
            request_timeout: s.request_timeout,
            registrations: Arc::new(tokio::sync::Semaphore::new(
                s.max_concurrent_registrations as usize,
            )),
            peers: peers::Peers::new(),
            limits: server::ConnLimits {
                gate: listener::Gate::new("data", budget.data, s.max_connections_per_address),
                idle_timeout: s.idle_timeout,
                max_concurrent_streams: s.max_concurrent_streams,
                max_header_bytes: s.max_header_bytes,
                max_header_total_bytes: s.max_header_total_bytes,
            },
        }),
        admin_limits: admin::AdminLimits {
            gate: listener::Gate::new("admin", s.admin_max_connections, 0),
            idle_timeout: s.admin_idle_timeout,
        },
        readiness,
        listen: cfg.server.listen,
        admin_listen: cfg.server.admin_listen,
        drain: cfg.server.drain_timeout,
        workers: worker_count(cfg),
        reload_interval: cfg.server.reload_interval,
        background,
    })
}

/// Client connections when `server.max_connections` is not set: enough for a busy bank's TPPs, and a
/// bound on memory (each TLS connection holds buffers) whatever the descriptor limit.
const DEFAULT_MAX_CONNECTIONS: u64 = 4096;

/// Fewer client connections than this is a deployment that cannot work; refuse to start.
const MIN_CONNECTIONS: u64 = 16;

/// How the descriptor limit is shared out.
#[derive(Debug, PartialEq, Eq)]
struct Budget {
    nofile: u64,
    /// Kept from client connections: `server.reserved_fds` (the process itself, the store's files,
    /// background JWKS and status fetches, the reconciler), one per pass-through request in flight (each may
    /// hold an upstream connection), one per registration API request in flight (a JWKS fetch or an
    /// upstream call at a time), the database pool, and the admin listener's connections.
    reserved: u64,
    /// Client connections on the data port.
    data: u32,
}

/// Checks at start-up that the client-connection cap leaves the reserve free under the open-files
/// limit, so a flood of connections runs into our refusal and never into EMFILE for the store or the
/// upstream. `nofile` None (a platform that cannot tell) trusts the configuration.
/// `server.workers`, or the CPUs the process may use.
fn worker_count(cfg: &Config) -> usize {
    cfg.server
        .workers
        .map_or_else(workers::default_count, |n| n as usize)
}

/// Upstream connections the pass-through may hold: with one pool, a connection is opened only when none is
/// idle, so never more than are in flight; with a pool per worker, a worker's idle connections (at most its
/// share of the cap, see `Forwarder::for_workers`) may stand beside the others' busy ones.
fn pass_through_fds(cap: u32, workers: usize) -> u64 {
    let cap = u64::from(cap);
    let workers = workers.max(1) as u64;
    if workers == 1 {
        cap
    } else {
        cap + workers * cap.div_ceil(workers)
    }
}

fn connection_budget(cfg: &Config, nofile: Option<u64>) -> Result<Budget, StartError> {
    let s = &cfg.server;
    let pool = match &cfg.store {
        StoreConfig::Postgres(pg) => pg.pool_size as u64,
        StoreConfig::Sqlite { .. } => 0,
    };
    let reserved = s.reserved_fds
        + pass_through_fds(
            cfg.forward.limits.max_concurrent_requests,
            worker_count(cfg),
        )
        + u64::from(s.max_concurrent_registrations)
        + pool
        + u64::from(s.admin_max_connections);
    let Some(nofile) = nofile else {
        let data = s.max_connections.map_or(DEFAULT_MAX_CONNECTIONS, u64::from);
        return Ok(Budget {
            nofile: 0,
            reserved,
            data: u32::try_from(data).unwrap_or(u32::MAX),
        });
    };
    let room = nofile.saturating_sub(reserved);
    let data = match s.max_connections {
        Some(n) if u64::from(n) > room => {
            return Err(setup(
                "server.max_connections",
                format!(
                    "{n} connections need {} open files with the reserve of {reserved} (server.reserved_fds, \
                     forward.max_concurrent_requests, server.max_concurrent_registrations, the database pool, \
                     admin.max_connections), but the nofile limit is {nofile}: raise the limit or lower this",
                    u64::from(n) + reserved
                ),
            ));
        }
        Some(n) => u64::from(n),
        None => room.min(DEFAULT_MAX_CONNECTIONS),
    };
    if data < MIN_CONNECTIONS {
        return Err(setup(
            "server.reserved_fds",
            format!(
                "the nofile limit of {nofile} leaves {room} open files for client connections after a \
                 reserve of {reserved}; at least {MIN_CONNECTIONS} are needed: raise the limit"
            ),
        ));
    }
    Ok(Budget {
        nofile,
        reserved,
        data: u32::try_from(data).unwrap_or(u32::MAX),
    })
}

/// A running proxy. Tests bind port 0 and read the addresses back.
pub struct Running {
    pub data_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    server_task: tokio::task::JoinHandle<()>,
    readiness: Arc<admin::Readiness>,
    reloader: Arc<Reloader>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish within the drain period, then returns.
    pub async fn shutdown(self) {
        // Readiness goes first so a load balancer stops sending before the listener closes.
        self.readiness.draining.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        let _ = self.server_task.await;
        for t in self.tasks {
            t.abort();
        }
    }

    /// SIGHUP: reload TLS material, CRL files and trust anchors now, and fetch the CRL URLs.
    pub fn reload(&self) {
        self.reloader.reload_tls(true);
        self.reloader.reload_config(true);
    }
}

/// Watches the TLS files and the config file; applies what changed, keeps the old on any error. The CRLs are
/// tls::revocation's; a change there rebuilds the TLS config from the material last loaded.
struct Reloader {
    tls_cfg: TlsConfig,
    tls_tx: watch::Sender<Arc<rustls::ServerConfig>>,
    tls_material: std::sync::Mutex<tls::Material>,
    revocation: Arc<Revocation>,
    config_path: Option<PathBuf>,
    state: Arc<server::AppState>,
    /// Fingerprints of the TLS files and of the config file last applied (or attempted).
    seen: std::sync::Mutex<Seen>,
}

type Fingerprint = Option<[u8; 32]>;
type Seen = (Fingerprint, Fingerprint);

fn fingerprint(paths: &[&Path]) -> Fingerprint {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in paths {
        ctx.update(&std::fs::read(p).ok()?);
        ctx.update(&[0]);
    }
    ctx.finish().as_ref().try_into().ok()
}

impl Reloader {
    /// Records the material we start with, so the first poll does not "reload" it.
    fn prime(&self) {
        let tls = fingerprint(&[
            self.tls_cfg.cert.as_path(),
            self.tls_cfg.key.as_path(),
            self.tls_cfg.client_ca.as_path(),
        ]);
        let cfg = self.config_path.as_deref().and_then(|p| fingerprint(&[p]));
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = (tls, cfg);
    }

    fn reload_tls(&self, force: bool) {
        // A changed CRL file wakes the task that calls `rebuild_tls`.
        self.revocation.poll_files(force);
        if force {
            self.revocation.refetch();
        }
        let files = [
            self.tls_cfg.cert.as_path(),
            self.tls_cfg.key.as_path(),
            self.tls_cfg.client_ca.as_path(),
        ];
        let Some(now) = fingerprint(&files) else {
            if force {
                tracing::error!(
                    "TLS reload: a certificate, key or CA file cannot be read; keeping the current ones"
                );
            }
            return;
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !force && seen.0 == Some(now) {
                return;
            }
            seen.0 = Some(now);
        }
        let loaded = tls::Material::load(&self.tls_cfg).and_then(|m| {
            *self.tls_material.lock().unwrap_or_else(|p| p.into_inner()) = m;
            self.rebuild_tls()
        });
        match loaded {
            Ok(()) => {
                if let Ok(anchors) = client_anchors(&self.tls_cfg) {
                    self.state.forwarder.set_client_anchors(anchors);
                }
                tracing::info!(
                    "TLS material reloaded; new handshakes use it, open connections keep theirs"
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; keeping the current certificate, key and CA bundle")
            }
        }
    }

    /// Puts the CRLs in force now into a new TLS config, over the material last loaded.
    fn rebuild_tls(&self) -> Result<(), tls::TlsError> {
        let view = self.revocation.view();
        let built = {
            let m = self.tls_material.lock().unwrap_or_else(|p| p.into_inner());
            tls::build(&self.tls_cfg, &m, &view)?
        };
        let _ = self.tls_tx.send(built.server);
        self.revocation.enforce(built.verifiers);
        Ok(())
    }

    fn reload_config(&self, force: bool) {
        let Some(path) = &self.config_path else {
            return;
        };
        let Some(now) = fingerprint(&[path.as_path()]) else {
            return;
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !force && seen.1 == Some(now) {
                return;
            }
            seen.1 = Some(now);
        }
        match Config::load(path, &ProcessEnv) {
            Ok(cfg) => {
                self.state.registrar.set_trust_anchors(cfg.trust_anchors);
                tracing::info!(
                    "configuration re-read: trust anchors applied; other changed settings take effect on restart"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration reload failed; keeping the current trust anchors")
            }
        }
    }
}

fn client_anchors(cfg: &TlsConfig) -> Result<forward::ClientAnchors, tls::TlsError> {
    tls::load_certs(&cfg.client_ca, "tls.client_ca").map(|c| forward::ClientAnchors::new(&c))
}

/// Builds and starts everything. `config_path` enables reloading trust anchors when the file changes.
pub async fn serve(cfg: &Config, config_path: Option<&Path>) -> Result<Running, StartError> {
    let p = prepare(cfg).await?;
    start(p, config_path).await
}

pub async fn start(p: Prepared, config_path: Option<&Path>) -> Result<Running, StartError> {
    let bind = |addr: SocketAddr| async move {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let a = l
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok::<_, StartError>((l, a))
    };
    let (listener, data_addr) = bind(p.listen).await?;
    let admin = match p.admin_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let admin_addr = admin.as_ref().map(|(_, a)| *a);
    let (tls_tx, tls_rx) = watch::channel(p.tls);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let reloader = Arc::new(Reloader {
        tls_cfg: p.tls_cfg,
        tls_tx,
        tls_material: std::sync::Mutex::new(p.tls_material),
        revocation: p.revocation.clone(),
        config_path: config_path.map(Path::to_path_buf),
        state: p.state.clone(),
        seen: std::sync::Mutex::new((None, None)),
    });
    reloader.prime();
    let mut tasks = Vec::new();
    for t in p.background {
        tasks.push(tokio::spawn(t));
    }
    if let Some((l, _)) = admin {
        tasks.push(tokio::spawn(admin::run(
            l,
            p.readiness.clone(),
            p.admin_limits,
            shutdown_rx.clone(),
        )));
    }
    let poll = reloader.clone();
    let interval = p.reload_interval;
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            poll.reload_tls(false);
            poll.reload_config(false);
        }
    }));
    if p.revocation.enabled() {
        let rebuild = reloader.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                rebuild.revocation.changed().await;
                match rebuild.rebuild_tls() {
                    Ok(()) => tracing::info!(
                        "CRLs in force changed: new handshakes use them, open connections are checked against them"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "applying changed CRLs failed; the previous ones stay in force")
                    }
                }
            }
        }));
    }
    let workers = workers::Workers::start(p.workers).map_err(|e| {
        setup(
            "server.workers",
            format!("cannot start the worker threads: {e}"),
        )
    })?;
    let server_task = tokio::spawn(server::run(
        listener,
        tls_rx,
        p.state,
        shutdown_rx,
        p.drain,
        workers,
    ));
    Ok(Running {
        data_addr,
        admin_addr,
        shutdown,
        tasks,
        server_task,
        readiness: p.readiness,
        reloader,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A config whose files all load, except that `upstream.ca_bundle` names a file that holds no certificate.
    fn config_with_unusable_upstream_ca() -> (PathBuf, Config) {
        let dir = std::env::temp_dir().join(format!("dcr-lib-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).expect("write");
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).expect("write");
        std::fs::write(dir.join("upstream-ca.pem"), "not a certificate").expect("write");
        let src = r#"
[server]
listen = "127.0.0.1:0"
public_url = "https://localhost"
[admin]
enabled = false
[tls]
cert = "cert.pem"
key = "key.pem"
client_ca = "cert.pem"
[upstream]
base_url = "https://127.0.0.1:1"
registration_endpoint = "/reg"
initial_access_token_env = "IAT"
ca_bundle = "upstream-ca.pem"
[jwks]
ca_bundle = "cert.pem"
[profile]
kind = "ob-v3.1"
audiences = ["bank"]
[[trust_anchors]]
issuer = "OpenBanking Ltd"
jwks_uri = "https://keystore.example/openbanking.jwks"
[store]
backend = "sqlite"
path = "dcr.sqlite"
"#;
        let env = HashMap::from([("IAT".to_string(), "x".to_string())]);
        let cfg = Config::from_toml_str(src, "proxy.toml", &dir, &env).expect("valid config");
        (dir, cfg)
    }

    #[test]
    fn client_connections_get_what_the_file_limit_leaves_after_the_reserve() {
        let (dir, mut cfg) = config_with_unusable_upstream_ca();
        let _ = std::fs::remove_dir_all(&dir);
        // Four workers: 256 in flight and 4 x 64 idle upstream connections at most.
        cfg.server.workers = Some(4);
        let b = connection_budget(&cfg, Some(1024)).expect("fits");
        assert_eq!(b.reserved, 128 + 512 + 64 + 32);
        // Defaults, one worker: 128 reserved + 256 pass-through + 64 registration + 32 admin.
        cfg.server.workers = Some(1);
        let b = connection_budget(&cfg, Some(1024)).expect("fits");
        assert_eq!(b.reserved, 480);
        assert_eq!(b.data, 1024 - 480);
        assert_eq!(
            connection_budget(&cfg, Some(1 << 20)).expect("fits").data,
            4096
        );
        cfg.server.max_connections = Some(700);
        let e = connection_budget(&cfg, Some(1024)).expect_err("700 + 480 > 1024");
        assert_eq!(e.key(), Some("server.max_connections"), "{e}");
        cfg.server.max_connections = None;
        let e = connection_budget(&cfg, Some(490)).expect_err("10 left");
        assert_eq!(e.key(), Some("server.reserved_fds"), "{e}");
    }

    #[tokio::test]
    async fn a_trust_root_that_does_not_load_is_blamed_on_its_key() {
        let (dir, cfg) = config_with_unusable_upstream_ca();
        let e = prepare(&cfg)
            .await
            .err()
            .expect("the upstream CA bundle is unusable");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(e.key(), Some("upstream.ca_bundle"), "{e}");
        assert!(e.to_string().contains("upstream-ca.pem"), "{e}");
        assert_eq!(cfg.line_of("upstream.ca_bundle"), Some(15));
    }
}
