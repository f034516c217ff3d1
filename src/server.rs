//! accept → TLS handshake (bounded) → peer identity parsed once → hyper (h1/h2) → route.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
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
use crate::listener::{AcceptErrors, Activity, Gate, Guarded, drive};
use crate::metrics::{METRICS, ReasonLabels, RequestLabels, handshake_reason, method_label};
use crate::peers::Peer;

/// `[server]` and `[admin]`: where the proxy listens, how long it waits and how much it takes on.
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
    /// No request in flight for this long closes a connection: from the end of the TLS handshake to
    /// the first request, between keep-alive requests, and while a header trickles in.
    pub idle_timeout: Duration,
    /// Open connections at most; None: as many as the file-descriptor budget allows, up to 4096.
    pub max_connections: Option<u32>,
    /// Open connections from one IPv4 address or IPv6 /64 at most; 0 turns the cap off.
    pub max_connections_per_address: u32,
    /// Descriptors kept back from client connections for everything else (see `lib::connection_budget`).
    pub reserved_fds: u64,
    /// SETTINGS_MAX_CONCURRENT_STREAMS for h2 connections.
    pub max_concurrent_streams: u32,
    /// Registration API requests (POST /register, /register/{id}) in flight at once; each may hold a JWKS
    /// fetch or an upstream call, so this bounds the descriptors they use.
    pub max_concurrent_registrations: u32,
    /// One header's name and value together, in bytes; over it the request is refused with 431.
    pub max_header_bytes: usize,
    /// All headers of a request together, in bytes; over it the request is refused with 431.
    pub max_header_total_bytes: usize,
    pub admin_idle_timeout: Duration,
    pub admin_max_connections: u32,
    /// Threads client connections run on, each with its own single-threaded runtime (see `workers`);
    /// None: the CPUs the process may use.
    pub workers: Option<u32>,
}

/// What every data connection is held to.
pub struct ConnLimits {
    pub gate: Arc<Gate>,
    pub idle_timeout: Duration,
    pub max_concurrent_streams: u32,
    pub max_header_bytes: usize,
    pub max_header_total_bytes: usize,
}

/// Shared by every connection.
pub struct AppState {
    pub registrar: Registrar,
    pub forwarder: crate::forward::Forwarder,
    pub revocation: Arc<crate::tls::revocation::Revocation>,
    pub handshake_timeout: Duration,
    pub request_timeout: Duration,
    pub limits: ConnLimits,
    /// Places under `max_concurrent_registrations`.
    pub registrations: Arc<tokio::sync::Semaphore>,
    /// Peers worked out once per certificate chain, shared by the connections presenting it.
    pub peers: crate::peers::Peers,
}

/// The accept loop. Each accepted connection reads the newest TLS config from `tls`, so a reload
/// applies to new handshakes while open connections keep theirs.
pub async fn run(
    listener: TcpListener,
    tls: watch::Receiver<Arc<rustls::ServerConfig>>,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    workers: crate::workers::Workers,
) {
    let mut accept_errors = AcceptErrors::new("data");
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (tcp, addr) = match accepted {
            Ok(a) => {
                accept_errors.succeeded();
                a
            }
            Err(e) => {
                let wait = accept_errors.failed(&e);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        // Refused before any TLS work: closing costs one descriptor for a moment.
        let slot = match state.limits.gate.admit(addr.ip()) {
            Ok(s) => s,
            Err(cap) => {
                tracing::debug!(peer = %addr, cap, "connection refused at a cap");
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.borrow().clone());
        let state = state.clone();
        let shutdown = shutdown.clone();
        workers.spawn_connection(tcp, move |tcp| async move {
            let _slot = slot;
            serve_connection(tcp, addr, acceptor, state, shutdown).await;
        });
    }
    drop(listener);
    tracing::info!(drain_s = drain.as_secs(), "draining open connections");
    if !state.limits.gate.drained(drain).await {
        tracing::warn!("drain period over; closing remaining connections");
    }
    workers.stop().await;
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    state: Arc<AppState>,
    shutdown: watch::Receiver<bool>,
) {
    let stream = match tokio::time::timeout(state.handshake_timeout, acceptor.accept(tcp)).await {
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
    let peer = peer_identity(&stream, addr, &state).await;
    let conn = Arc::new(ConnInfo {
        peer,
        forward: state.forwarder.client_connection(addr),
    });
    let info = conn.clone();
    let activity = Activity::new();
    let svc = {
        let state = state.clone();
        let activity = activity.clone();
        service_fn(move |req| {
            let busy = activity.begin();
            let state = state.clone();
            let conn = conn.clone();
            async move {
                let resp = handle(state, conn, addr, req).await;
                Ok::<_, Infallible>(resp.map(|b| Guarded::new(b, busy)))
            }
        })
    };
    let limits = &state.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The idle timeout (`drive`) already closes a connection whose header trickles in: nothing is in
        // flight until a head is complete. hyper's own header timer would be one more timer set and
        // cancelled per request on the hot path (it defaults to 30 s once a timer is given).
        .header_read_timeout(None)
        // hyper answers 431 itself past this; below it, `handle` does, with the configured limits.
        .max_buf_size(hard_header_limit(limits.max_header_total_bytes));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(
            u32::try_from(hard_header_limit(limits.max_header_total_bytes)).unwrap_or(u32::MAX),
        );
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    let served = Box::pin(drive(
        conn,
        |c| c.graceful_shutdown(),
        &activity,
        limits.idle_timeout,
        shutdown,
        "data",
    ));
    // Closed early (None) once the CRLs in force refuse the peer's certificate.
    if let Some(Err(e)) = state
        .revocation
        .guard(info.peer.as_deref().map(|p| &p.cert), addr, served)
        .await
    {
        tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
    }
}

/// What hyper may buffer for a request head: room for the configured total and some slack, so that
/// `handle` (which names the limit) answers the cases in between; never below hyper's minimum.
fn hard_header_limit(total: usize) -> usize {
    total.saturating_mul(2).max(8192 + total)
}

/// Refuses a header over `per` bytes (name and value) or headers over `total` bytes together.
fn headers_within(headers: &http::HeaderMap, per: usize, total: usize) -> Result<(), String> {
    let mut sum = 0usize;
    for (name, value) in headers {
        let size = name.as_str().len() + value.len();
        if size > per {
            return Err(format!(
                "the `{name}` header is {size} bytes; at most {per} are accepted"
            ));
        }
        sum += size;
    }
    if sum > total {
        return Err(format!(
            "the request headers are {sum} bytes together; at most {total} are accepted"
        ));
    }
    Ok(())
}

/// The verified chain's peer, parsed once per distinct chain (`peers`). A certificate we cannot parse is
/// treated as absent (and logged): routes that need one then refuse with 403, never 500.
async fn peer_identity(
    stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    addr: SocketAddr,
    state: &AppState,
) -> Option<Arc<Peer>> {
    let (_, conn) = stream.get_ref();
    let generation = state.forwarder.cert_headers_generation();
    let found = state
        .peers
        .get(conn.peer_certificates()?, generation, |cert| {
            state.forwarder.cert_headers_for(cert)
        })
        .await?;
    match found {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(peer = %addr, failure = "client_cert", reason = %e, "verified client certificate could not be parsed");
            None
        }
    }
}

enum Route<Id> {
    Register,
    Client(Id),
    Other,
}

fn route(path: &str) -> Route<&str> {
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
    /// The verified certificate and its forwarding headers, shared with other connections presenting the
    /// same chain.
    peer: Option<Arc<Peer>>,
    /// The pass-through's per-connection state: its cap on requests in flight (h2 multiplexes many) and the
    /// forwarding headers for the Host it names.
    forward: crate::forward::ClientConnection,
}

async fn handle(
    state: Arc<AppState>,
    conn: Arc<ConnInfo>,
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Response<RespBody> {
    let peer = conn.peer.as_deref().map(|p| &p.cert);
    let fapi_id = interaction_id(&req);
    let span = tracing::info_span!("request", request_id = tracing::field::Empty, interaction_id = %fapi_id, method = %req.method(), peer = %addr);
    // The request id lives only in the logs: not drawn when no span is recorded (the default `warn` level).
    if !span.is_disabled() {
        span.record("request_id", tracing::field::display(Uuid::new_v4()));
    }
    let mut resp = async {
        let started = std::time::Instant::now();
        let method = req.method().clone();
        let too_large = headers_within(
            req.headers(),
            state.limits.max_header_bytes,
            state.limits.max_header_total_bytes,
        )
        .err();
        // Owned: the request moves into its handler below.
        let route = match route(req.uri().path()) {
            Route::Client(id) => Route::Client(id.to_owned()),
            Route::Register => Route::Register,
            Route::Other => Route::Other,
        };
        let (route_name, resp) = match route {
            _ if too_large.is_some() => {
                METRICS.headers_too_large.inc();
                let why = too_large.unwrap_or_default();
                tracing::info!(reason = %why, "refused: request headers too large");
                (
                    "headers",
                    boxed(ProxyError::HeadersTooLarge(why).to_response()),
                )
            }
            // Boxed: a registration's future is many times the pass-through's, and hyper moves the whole
            // request future into place for every request (3 % of a kept-alive pass-through's CPU in memcpy
            // with them inline). One allocation per registration instead.
            Route::Register => (
                "register",
                admitted(&state, Box::pin(register(&state, peer, req))).await,
            ),
            Route::Client(id) => (
                "register_client",
                admitted(&state, Box::pin(manage(&state, peer, &id, req))).await,
            ),
            Route::Other => {
                let upstream_started = std::time::Instant::now();
                let resp = state
                    .forwarder
                    .forward_limited(
                        req,
                        conn.peer.as_deref().map(|p| &*p.headers),
                        &conn.forward,
                    )
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
        METRICS.observe_request(
            &RequestLabels {
                route: route_name,
                method: method_label(&method),
                outcome,
                error_code,
            },
            started.elapsed(),
        );
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

/// Runs registration API `work` under `max_concurrent_registrations`; 503 past it.
async fn admitted(
    state: &AppState,
    work: impl std::future::Future<Output = Response<RespBody>>,
) -> Response<RespBody> {
    let Ok(_permit) = state.registrations.clone().try_acquire_owned() else {
        tracing::info!("refused: too many registration requests in flight");
        return boxed(ProxyError::Overloaded("registrations").to_response());
    };
    work.await
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
    fn header_limits_name_the_header_or_the_total() {
        let mut h = http::HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("a=b"));
        assert!(headers_within(&h, 16, 64).is_ok());
        h.insert(
            "authorization",
            HeaderValue::from_str(&"x".repeat(20)).unwrap(),
        );
        let e = headers_within(&h, 16, 64).unwrap_err();
        assert!(e.contains("`authorization`"), "{e}");
        let e = headers_within(&h, 64, 30).unwrap_err();
        assert!(e.contains("together"), "{e}");
    }

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
