//! dcr-proxy: regulated Dynamic Client Registration (UK OB v3.1, AU CDR 1.13) in front of a plain
//! RFC 7591/7592 OAuth server. The data path: accept → TLS → route → verify → translate → upstream → rewrite.

pub mod bearer;
pub mod config;
pub mod dcr;
pub mod error;
pub mod forward;
pub mod identity;
pub mod jwks;
pub mod jwt;
pub mod outbound;
pub mod replay;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use config::{Config, StoreConfig};

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

fn setup(key: &'static str, problem: impl ToString) -> StartError {
    StartError::Setup {
        key,
        problem: problem.to_string(),
    }
}

/// Everything built from the configuration, before any socket is opened. `--check-config` stops here.
pub struct Prepared {
    tls: Arc<rustls::ServerConfig>,
    state: Arc<server::AppState>,
    listen: SocketAddr,
}

pub fn prepare(cfg: &Config) -> Result<Prepared, StartError> {
    let tls = tls::server_config(&cfg.tls).map_err(|e| match e {
        tls::TlsError::Material { key, problem } => setup(key, problem),
    })?;
    let jwks =
        Arc::new(jwks::JwksCache::new(cfg.jwks.clone()).map_err(|e| setup("jwks.ca_bundle", e))?);
    let store: Arc<dyn store::RegistrationStore> = match &cfg.store {
        StoreConfig::Sqlite { path } => {
            Arc::new(store::sqlite::SqliteStore::open(path).map_err(|e| setup("store.path", e))?)
        }
    };
    let replay: Arc<dyn replay::ReplayGuard> = Arc::new(replay::MemoryReplayGuard::new(
        1_000_000,
        cfg.profile.clock_skew,
    ));
    let registrar =
        dcr::Registrar::new(cfg, jwks, store, replay).map_err(|e| setup("upstream", e))?;
    let forwarder =
        forward::Forwarder::new(cfg.forward.clone()).map_err(|e| setup("forward", e))?;
    Ok(Prepared {
        tls,
        state: Arc::new(server::AppState {
            registrar,
            forwarder,
            handshake_timeout: cfg.server.handshake_timeout,
            request_timeout: cfg.server.request_timeout,
        }),
        listen: cfg.server.listen,
    })
}

/// A running proxy. Tests bind port 0 and read the address back.
pub struct Running {
    pub data_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish within the drain period, then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

pub async fn serve(cfg: &Config) -> Result<Running, StartError> {
    let p = prepare(cfg)?;
    start(p, Duration::from_secs(20)).await
}

pub async fn start(p: Prepared, drain: Duration) -> Result<Running, StartError> {
    let listener = tokio::net::TcpListener::bind(p.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: p.listen,
            source,
        })?;
    let data_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: p.listen,
        source,
    })?;
    let (_tls_tx, tls_rx) = watch::channel(p.tls);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        // Keep the sender alive for the life of the server so receivers never see it closed.
        let _tls_tx = _tls_tx;
        server::run(listener, tls_rx, p.state, shutdown_rx, drain).await;
    });
    Ok(Running {
        data_addr,
        shutdown,
        task,
    })
}
