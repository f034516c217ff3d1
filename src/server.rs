//! accept → TLS handshake (bounded) → peer identity parsed once → hyper (h1/h2) → route.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;
use url::Url;
use uuid::Uuid;

use crate::body::{RespBody, boxed};
use crate::dcr::Registrar;
use crate::error::ProxyError;
use crate::identity::PeerCert;
use crate::metrics::{
    METRICS, ReasonLabels, RequestLabels, RouteLabels, handshake_reason, method_label,
};

/// `[server]` and `[admin]`: where the proxy listens and how long it waits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The plaintext admin listener (/live, /ready, /metrics); None disables it.
    pub admin_listen: Option<SocketAddr>,
    pub drain_timeout: Duration,
    pub reload_interval: Duration,
    pub public_url: Url,
    pub handshake_timeout: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
}

/// Shared by every connection.
pub struct AppState {
    pub registrar: Registrar,
    pub forwarder: crate::forward::Forwarder,
    pub revocation: Arc<crate::revocation::Revocation>,
    pub handshake_timeout: Duration,
    pub request_timeout: Duration,
}

/// The accept loop. Each accepted connection reads the newest TLS config from `tls`, so a reload
/// applies to new handshakes while open connections keep theirs.
pub async fn run(
    listener: TcpListener,
    tls: watch::Receiver<Arc<rustls::ServerConfig>>,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.borrow().clone());
        let state = state.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(state.handshake_timeout, acceptor.accept(tcp))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let reason = handshake_reason(&e);
                    METRICS
                        .handshake_failures
                        .get_or_create(&ReasonLabels { reason })
                        .inc();
                    if reason == "closed" {
                        // A TCP probe (load balancer, port check) that never starts TLS is not news.
                        tracing::debug!(peer = %addr, failure = "tls_handshake", reason, "closed before the handshake");
                    } else {
                        tracing::warn!(peer = %addr, failure = "tls_handshake", reason, detail = %e, "TLS handshake failed");
                    }
                    return;
                }
                Err(_) => {
                    METRICS
                        .handshake_failures
                        .get_or_create(&ReasonLabels { reason: "timeout" })
                        .inc();
                    tracing::warn!(peer = %addr, failure = "tls_handshake", reason = "timeout", "TLS handshake timed out");
                    return;
                }
            };
            let peer = peer_identity(&stream, addr);
            let cert_headers = peer.as_ref().map(|p| state.forwarder.cert_headers_for(p));
            let conn = Arc::new(ConnInfo { peer, cert_headers });
            let (info, revocation) = (conn.clone(), state.revocation.clone());
            let svc = service_fn(move |req| {
                let state = state.clone();
                let conn = conn.clone();
                async move { Ok::<_, Infallible>(handle(state, conn, addr, req).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            let served = Box::pin(watcher.watch(conn.into_owned()));
            // Closed early (None) once the CRLs in force refuse the peer's certificate.
            if let Some(Err(e)) = revocation.guard(info.peer.as_ref(), addr, served).await {
                tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(drain_s = drain.as_secs(), "draining open connections");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain period over; closing remaining connections");
    }
}

/// Parses the verified leaf once per connection. A certificate we cannot parse is treated as absent
/// (and logged): routes that need one then refuse with 403, never 500.
fn peer_identity(
    stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    addr: SocketAddr,
) -> Option<PeerCert> {
    let (_, conn) = stream.get_ref();
    let (leaf, chain) = conn.peer_certificates()?.split_first()?;
    match PeerCert::from_der(
        leaf.clone().into_owned(),
        chain.iter().map(|c| c.clone().into_owned()).collect(),
    ) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(peer = %addr, failure = "client_cert", reason = %e, "verified client certificate could not be parsed");
            None
        }
    }
}

enum Route<'a> {
    Register,
    Client(&'a str),
    Other,
}

fn route(path: &str) -> Route<'_> {
    match path.strip_prefix("/register") {
        Some("") | Some("/") => Route::Register,
        Some(rest) => match rest.strip_prefix('/') {
            Some(id) if !id.is_empty() && !id.contains('/') => Route::Client(id),
            _ => Route::Other,
        },
        None => Route::Other,
    }
}

/// The FAPI interaction id: the caller's when it is a UUID, else a fresh one.
fn interaction_id(req: &Request<Incoming>) -> String {
    req.headers()
        .get("x-fapi-interaction-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
        .map(|u| u.hyphenated().to_string())
        .unwrap_or_else(|| Uuid::new_v4().to_string())
}

/// What one connection knows about its peer, worked out once at the handshake.
struct ConnInfo {
    peer: Option<PeerCert>,
    cert_headers: Option<crate::forward::CertHeaders>,
}

async fn handle(
    state: Arc<AppState>,
    conn: Arc<ConnInfo>,
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Response<RespBody> {
    let peer = conn.peer.as_ref();
    let request_id = Uuid::new_v4().to_string();
    let fapi_id = interaction_id(&req);
    let span = tracing::info_span!("request", request_id = %request_id, interaction_id = %fapi_id, method = %req.method(), peer = %addr);
    let mut resp = async {
        let started = std::time::Instant::now();
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let (route_name, resp) = match route(&path) {
            Route::Register => ("register", register(&state, peer, req).await),
            Route::Client(id) => {
                let id = id.to_string();
                ("register_client", manage(&state, peer, &id, req).await)
            }
            Route::Other => {
                let upstream_started = std::time::Instant::now();
                let resp = state
                    .forwarder
                    .forward_with(req, conn.cert_headers.as_deref(), addr)
                    .await;
                METRICS.observe_upstream("forward", upstream_started.elapsed());
                ("forward", resp)
            }
        };
        let status = resp.status().as_u16();
        let error_code = resp
            .extensions()
            .get::<crate::error::ErrorLabel>()
            .map(|l| l.0)
            .unwrap_or("none");
        let outcome = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        METRICS
            .requests
            .get_or_create(&RequestLabels {
                route: route_name,
                method: method_label(&method),
                outcome,
                error_code,
            })
            .inc();
        METRICS
            .request_duration
            .get_or_create(&RouteLabels { route: route_name })
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            route = route_name,
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request"
        );
        resp
    }
    .instrument(span)
    .await;
    if let Ok(v) = HeaderValue::from_str(&fapi_id) {
        resp.headers_mut().insert("x-fapi-interaction-id", v);
    }
    resp
}

async fn register(
    state: &AppState,
    peer: Option<&PeerCert>,
    req: Request<Incoming>,
) -> Response<RespBody> {
    if let Err(e) = crate::dcr::allowed(req.method(), true) {
        return boxed(e.to_response());
    }
    debug_assert_eq!(req.method(), Method::POST);
    if let Some(e) = state.revocation.registration_refusal(peer) {
        return boxed(e.to_response());
    }
    let (parts, body) = req.into_parts();
    let work = state.registrar.handle_register(&parts.headers, body, peer);
    match tokio::time::timeout(state.request_timeout, work).await {
        Ok(r) => boxed(r),
        Err(_) => boxed(ProxyError::UpstreamTimeout.to_response()),
    }
}

async fn manage(
    state: &AppState,
    peer: Option<&PeerCert>,
    client_id: &str,
    req: Request<Incoming>,
) -> Response<RespBody> {
    if let Some(e) = state.revocation.registration_refusal(peer) {
        return boxed(e.to_response());
    }
    let (parts, body) = req.into_parts();
    let work = state
        .registrar
        .handle_client(&parts.method, client_id, &parts.headers, body, peer);
    match tokio::time::timeout(state.request_timeout, work).await {
        Ok(r) => boxed(r),
        Err(_) => boxed(ProxyError::UpstreamTimeout.to_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_the_registration_api_from_everything_else() {
        assert!(matches!(route("/register"), Route::Register));
        assert!(matches!(route("/register/"), Route::Register));
        assert!(matches!(route("/register/abc"), Route::Client("abc")));
        assert!(matches!(route("/register/abc/x"), Route::Other));
        assert!(matches!(route("/registers"), Route::Other));
        assert!(matches!(route("/token"), Route::Other));
    }
}
