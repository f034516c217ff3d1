//! An HTTPS document server standing in for the OB Directory keystore, the CDR Register and TPP JWKS endpoints,
//! with knobs for the failures the proxy's JWKS fetcher must survive.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::pki::Pki;

#[derive(Default)]
struct Entry {
    body: Option<(Bytes, String)>,
    status: Option<u16>,
    delay: Option<Duration>,
    redirect: Option<String>,
    fetches: usize,
}

type State = Arc<Mutex<HashMap<String, Entry>>>;

/// Serves documents by path over HTTPS with the [`Pki`] server certificate. Each knob (`set`, `set_status`,
/// `set_delay`, `redirect`) changes only its own aspect of a path, so a test can break and mend an endpoint
/// without re-publishing the document. Stops when dropped.
pub struct JwksServer {
    addr: SocketAddr,
    state: State,
    accept_loops: Vec<JoinHandle<()>>,
}

impl JwksServer {
    pub async fn start(pki: &Pki) -> Self {
        Self::start_on(pki, 0).await
    }

    /// On a fixed port (the local demo's proxy.toml names it); 0 picks a free one.
    pub async fn start_on(pki: &Pki, port: u16) -> Self {
        let cert = CertificateDer::from(pki.server().cert_der.clone());
        let key = PrivateKeyDer::from_pem_slice(pki.server().key_pem.as_bytes())
            .expect("server key is valid PEM");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("rustls accepts the server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));

        // A fixed port may still be held for a moment by a server just dropped (its accept task is
        // aborted, not awaited), so a fixed port is retried briefly.
        let mut tries = 0;
        let v4 = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if port != 0 && tries < 40 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
            }
        };
        let addr = v4.local_addr().expect("listener has an address");
        let state = State::default();
        let mut accept_loops = vec![tokio::spawn(accept_loop(
            v4,
            acceptor.clone(),
            state.clone(),
        ))];
        // `localhost` may resolve to ::1 first; answering there too spares every client the fallback. Best effort:
        // a host without IPv6, or with the port taken there, still has the IPv4 listener.
        if let Ok(v6) = TcpListener::bind(SocketAddr::new(
            std::net::Ipv6Addr::LOCALHOST.into(),
            addr.port(),
        ))
        .await
        {
            accept_loops.push(tokio::spawn(accept_loop(v6, acceptor, state.clone())));
        }
        Self {
            addr,
            state,
            accept_loops,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://localhost:PORT/path`: the name the Pki server certificate is issued for.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), normalise(path))
    }

    /// Serves `json` as `application/json`.
    pub fn set(&self, path: &str, json: serde_json::Value) {
        let body = serde_json::to_vec(&json).expect("JSON serialises");
        self.set_raw(path, body, "application/json");
    }

    pub fn set_raw(&self, path: &str, body: impl Into<Bytes>, content_type: &str) {
        self.entry(path, |e| {
            e.body = Some((body.into(), content_type.to_owned()))
        });
    }

    /// Answers with this status (keeping any document as the body); 200 undoes it.
    pub fn set_status(&self, path: &str, status: u16) {
        assert!(
            StatusCode::from_u16(status).is_ok(),
            "{status} is not an HTTP status code"
        );
        self.entry(path, |e| e.status = Some(status));
    }

    /// Waits this long before answering; `Duration::ZERO` undoes it.
    pub fn set_delay(&self, path: &str, delay: Duration) {
        self.entry(path, |e| e.delay = Some(delay).filter(|d| !d.is_zero()));
    }

    /// Answers 302 with `Location: to_url` until [`Self::clear_redirect`].
    pub fn redirect(&self, path: &str, to_url: &str) {
        self.entry(path, |e| e.redirect = Some(to_url.to_owned()));
    }

    pub fn clear_redirect(&self, path: &str) {
        self.entry(path, |e| e.redirect = None);
    }

    /// Requests seen for `path` (query strings ignored), answered or not.
    pub fn fetch_count(&self, path: &str) -> usize {
        lock(&self.state)
            .get(&normalise(path))
            .map_or(0, |e| e.fetches)
    }

    pub fn reset_count(&self, path: &str) {
        self.entry(path, |e| e.fetches = 0);
    }

    fn entry(&self, path: &str, change: impl FnOnce(&mut Entry)) {
        change(lock(&self.state).entry(normalise(path)).or_default());
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        // Each accept loop owns its connections' JoinSet, so aborting it closes them as well.
        for task in &self.accept_loops {
            task.abort();
        }
    }
}

fn normalise(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

fn lock(state: &State) -> MutexGuard<'_, HashMap<String, Entry>> {
    // A test that panicked while holding the lock has already failed; its state is still readable.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: State) {
    serve_https(listener, acceptor, move |req| respond(state.clone(), req)).await;
}

/// Serves `respond` over TLS on `listener` until the task is aborted; the Register stub uses it too.
pub async fn serve_https<F, Fut>(listener: TcpListener, acceptor: TlsAcceptor, respond: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            // Out of descriptors, typically: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // Reap finished connections so a long test does not accumulate them.
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let respond = respond.clone();
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service_fn(respond))
                .await;
        });
    }
}

async fn respond(
    state: State,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (delay, redirect, status, body) = {
        let mut state = lock(&state);
        let entry = state.entry(req.uri().path().to_owned()).or_default();
        entry.fetches += 1;
        (
            entry.delay,
            entry.redirect.clone(),
            entry.status,
            entry.body.clone(),
        )
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }

    let mut response = Response::builder();
    if let Some(location) = redirect {
        response = response
            .status(StatusCode::FOUND)
            .header(header::LOCATION, location);
        return Ok(response
            .body(Full::default())
            .expect("a redirect response builds"));
    }
    let status = status.unwrap_or(if body.is_some() { 200 } else { 404 });
    let (body, content_type) = match body {
        Some((body, content_type)) => (body, content_type),
        None => (
            Bytes::from(format!("{{\"status\":{status}}}")),
            "application/json".to_owned(),
        ),
    };
    Ok(response
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .expect("a document response builds"))
}
