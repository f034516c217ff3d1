//! Everything that is not the registration API passes through to the IdP. This file holds the
//! pass-through itself; the deny-list, the header rules, the client-certificate encodings and the
//! discovery rewrite each have their own submodule.

mod cert_header;
mod deny;
mod discovery;
mod headers;
mod limits;
mod pool;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Map, Value};
use url::Url;

pub use cert_header::{CertHeaderConfig, CertHeaders, ClientAnchors};
pub use limits::ForwardLimits;

use crate::body::{BoxError, RespBody, boxed};
use crate::error::{ErrorCode, ProxyError};
use crate::identity::PeerCert;
use crate::listener::Guarded;
use crate::outbound::OutboundError;
use cert_header::CertEncoder;
use deny::{DenyPattern, NormalPath};
use discovery::{Discovery, is_discovery_path};
use headers::{Forwarding, client_authority, prepare_request_headers, remove_hop_by_hop};
use limits::{BodyFault, ClientBody};
use pool::{PoolSettings, UpstreamPool};
use tokio::sync::Semaphore;

/// Below the 5 s keep-alive timeout of Node's HTTP server (oidc-provider): a connection the upstream
/// is about to close must not be picked from the pool. The upstream is a sidecar neighbour, so
/// reconnecting is cheap.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// How the verified client certificate is handed to the IdP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertHeaderFormat {
    /// RFC 9440 `Client-Cert` / `Client-Cert-Chain` (Keycloak `rfc9440` lookup provider).
    Rfc9440,
    /// `ssl-client-cert: <URL-encoded PEM>` and `ssl-client-verify: SUCCESS`, as nginx sends
    /// `$ssl_client_escaped_cert` (Keycloak `nginx` lookup provider, ForgeRock AM's header option).
    Nginx,
    /// Envoy's `x-forwarded-client-cert` with `Hash`, `Cert` and `Chain`.
    Envoy,
}

#[derive(Clone, Debug)]
pub struct ForwardConfig {
    /// `http(s)://host:port[/prefix]`; the prefix is put in front of every forwarded path.
    pub upstream_base: Url,
    /// The proxy's public URL; discovery advertises `<public_url>/register`.
    pub public_url: Url,
    pub cert_header: CertHeaderConfig,
    /// Path patterns never forwarded; see [`ForwardConfig::default_deny_paths`] for the syntax.
    pub deny_paths: Vec<String>,
    pub connect_timeout: Duration,
    /// Time until the upstream's response headers arrive; the body then streams without a limit.
    pub response_timeout: Duration,
    /// Zero disables the discovery cache.
    pub discovery_ttl: Duration,
    /// Put into discovery as-is when set.
    pub mtls_endpoint_aliases: Option<Map<String, Value>>,
    /// Trust roots for an https upstream; the system's when absent.
    pub ca_bundle: Option<PathBuf>,
    pub limits: ForwardLimits,
}

/// The pass-through to the IdP; one per proxy, holding the upstream connections.
pub struct Forwarder {
    pool: UpstreamPool,
    /// The upstream base path without its trailing `/`.
    prefix: String,
    upstream_host: HeaderValue,
    /// `host[:port]` of the public URL, used when the client's Host is unusable and for discovery.
    public_authority: String,
    cert: CertEncoder,
    deny: Vec<DenyPattern>,
    discovery: Discovery,
    limits: ForwardLimits,
    /// Places under `limits.max_concurrent_requests`.
    in_flight: Arc<Semaphore>,
    /// CDR Register status (`register_status`); unset, nothing is checked.
    register_gate: std::sync::OnceLock<Arc<crate::register_status::RegisterGate>>,
}

/// Whether `path` is a deny-list pattern the forwarder can use (checked by `config` with its key).
pub fn check_deny_path(path: &str) -> Result<(), String> {
    DenyPattern::parse(path).map(drop)
}

impl Forwarder {
    /// Settings arrive checked by `config` (scheme, user information, query, timeouts, deny-path syntax); what
    /// can still fail is loading the trust roots.
    pub fn new(cfg: ForwardConfig) -> Result<Self, String> {
        Self::for_workers(cfg, 1)
    }

    /// As `new`, with an upstream pool for each of `workers` worker threads.
    pub fn for_workers(cfg: ForwardConfig, workers: usize) -> Result<Self, String> {
        let base = &cfg.upstream_base;
        let upstream_host = authority_of(base).ok_or("upstream_base: has no host")?;
        let public_authority = authority_of(&cfg.public_url).ok_or("public_url: has no host")?;
        let deny = cfg
            .deny_paths
            .iter()
            .map(|p| DenyPattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?;

        let workers = workers.max(1);
        // One idle list per worker thread (`crate::workers`): a connection's task runs on the runtime that
        // opened it, so a list shared by workers would wake another thread for every request that picked a
        // connection opened elsewhere. Together as many idle connections as may be in flight: a pool smaller
        // than the load closes a connection after nearly every response and opens another for the next
        // request (measured: at c=64 against a pool of 64, 81 µs of CPU per request instead of 67).
        // `lib::connection_budget` reserves the descriptors.
        let pool = UpstreamPool::new(
            base,
            cfg.ca_bundle.as_deref(),
            PoolSettings {
                workers,
                max_idle: (cfg.limits.max_concurrent_requests as usize).div_ceil(workers),
                idle_timeout: POOL_IDLE_TIMEOUT,
                connect_timeout: cfg.connect_timeout,
                response_timeout: cfg.response_timeout,
            },
        )?;
        Ok(Forwarder {
            pool,
            prefix: base.path().trim_end_matches('/').to_owned(),
            upstream_host: HeaderValue::from_str(&upstream_host)
                .map_err(|_| "upstream_base: host is not a valid header value")?,
            public_authority,
            cert: CertEncoder::new(cfg.cert_header.clone()),
            deny,
            discovery: Discovery::new(&cfg),
            limits: cfg.limits,
            in_flight: Arc::new(Semaphore::new(cfg.limits.max_concurrent_requests as usize)),
            register_gate: std::sync::OnceLock::new(),
        })
    }

    /// The certificate headers for a peer, in the configured format. Computed once per distinct chain
    /// (src/peers.rs), not per request: base64 and PEM encoding showed up in profiles when done per request.
    pub fn cert_headers_for(&self, peer: &PeerCert) -> CertHeaders {
        self.cert.headers(peer).into()
    }

    /// Changes whenever the anchors do: headers worked out under another generation may name a
    /// different chain. Read it before `cert_headers_for`.
    pub fn cert_headers_generation(&self) -> u64 {
        self.cert.generation()
    }

    /// The client-CA anchors (`tls.client_ca`), never forwarded in a chain; set at start and on
    /// every TLS reload.
    pub fn set_client_anchors(&self, anchors: ClientAnchors) {
        self.cert.set_anchors(anchors);
    }

    /// Everything that is not a registration route: the deny-list, then the discovery rewrite,
    /// then a streamed pass-through. Never fails: upstream faults become 502/504 JSON bodies.
    /// `peer` is the connection's verified client certificate, `client_addr` its TCP peer.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        peer: Option<&PeerCert>,
        client_addr: SocketAddr,
    ) -> Response<RespBody> {
        let cert = peer.map(|p| self.cert_headers_for(p));
        self.forward_with(req, cert.as_deref(), client_addr).await
    }

    /// What the pass-through keeps for one client connection from `addr`, held to
    /// `max_concurrent_per_connection`.
    pub fn client_connection(&self, addr: SocketAddr) -> ClientConnection {
        ClientConnection::new(
            addr,
            Some(Arc::new(Semaphore::new(
                self.limits.max_concurrent_per_connection as usize,
            ))),
        )
    }

    /// Refuse pass-through requests naming a client the CDR Register no longer lists as ACTIVE.
    pub fn set_register_gate(&self, gate: Arc<crate::register_status::RegisterGate>) {
        let _ = self.register_gate.set(gate);
    }

    /// As `forward_with`, for a connection made by `client_connection` (its cap, its remembered headers).
    pub async fn forward_limited(
        &self,
        req: Request<Incoming>,
        cert: Option<&[(HeaderName, HeaderValue)]>,
        connection: &ClientConnection,
    ) -> Response<RespBody> {
        self.forward_inner(req, cert, connection).await
    }

    /// As `forward`, with the connection's certificate headers already encoded.
    pub async fn forward_with(
        &self,
        req: Request<Incoming>,
        cert: Option<&[(HeaderName, HeaderValue)]>,
        client_addr: SocketAddr,
    ) -> Response<RespBody> {
        let connection = ClientConnection::new(client_addr, None);
        self.forward_inner(req, cert, &connection).await
    }

    async fn forward_inner(
        &self,
        req: Request<Incoming>,
        cert: Option<&[(HeaderName, HeaderValue)]>,
        connection: &ClientConnection,
    ) -> Response<RespBody> {
        let path = req.uri().path();
        // Asterisk-form (`OPTIONS *`) and authority-form (CONNECT) name no resource of the IdP.
        if !path.starts_with('/') {
            return boxed(ProxyError::NotFound.to_response());
        }
        let normal = NormalPath::new(path);
        if let Some(pattern) = self.deny.iter().find(|p| p.matches(&normal.segments)) {
            tracing::info!(
                path = %normal,
                pattern = %pattern.source,
                "refused: the path is on the deny list"
            );
            return boxed(ProxyError::NotFound.to_response());
        }
        // The deny-list matched the resolved path, but the IdP receives the path as sent: a `..`
        // could climb out of the upstream prefix there. Conforming clients resolve dot segments
        // before sending (RFC 3986 section 5.2.4), so refusing them costs nothing.
        if normal.had_dot_segments {
            tracing::info!(path = %normal, "refused: dot segments in the path");
            return boxed(
                ProxyError::rejected(
                    ErrorCode::InvalidRequest,
                    "the request path must not contain `.` or `..` segments",
                )
                .to_response(),
            );
        }
        // Past the cheap refusals above, every request may take an upstream connection.
        let permit = match limits::admit(&self.in_flight, connection.slots.as_ref()) {
            Ok(p) => p,
            Err(cap) => {
                tracing::info!(cap, "refused: too many pass-through requests in flight");
                return boxed(ProxyError::Overloaded(cap).to_response());
            }
        };
        // The discovery fetch and the Register screen below are boxed: rarely taken (a cached document; CDR
        // only), they would otherwise enlarge the future of every request (docs/decisions.md, Performance).
        let resp = if req.method() == Method::GET && is_discovery_path(path) {
            let path = path.to_owned();
            Box::pin(self.discovery(&path)).await
        } else {
            self.pass_through(req, cert, connection).await
        };
        resp.map(|b| Guarded::new(b, permit).boxed())
    }

    async fn pass_through(
        &self,
        req: Request<Incoming>,
        cert: Option<&[(HeaderName, HeaderValue)]>,
        connection: &ClientConnection,
    ) -> Response<RespBody> {
        let (mut parts, body) = req.into_parts();
        let uri = match self.upstream_uri(parts.uri.path(), parts.uri.query()) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build the upstream URI");
                return boxed(ProxyError::NotFound.to_response());
            }
        };
        let forwarding = connection.forwarding(&parts, || {
            let host = client_authority(&parts.headers, &parts.uri)
                .unwrap_or_else(|| self.public_authority.clone());
            Forwarding::for_client(connection.addr, &host)
        });
        prepare_request_headers(
            &mut parts.headers,
            parts.version,
            &forwarding,
            cert,
            self.cert.strip_names(),
        );
        // Host names the server we talk to; the name the client used travels in the forwarding
        // headers, which the IdP reads only when told to trust its proxy.
        parts
            .headers
            .insert(header::HOST, self.upstream_host.clone());
        parts.uri = uri;
        // hyper's client refuses an HTTP/2 request on the HTTP/1.1 connections it opens upstream.
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let mut body = ClientBody::new(body, self.limits.body_timeout);
        let fault = body.fault();
        // A body that never starts must not hold an upstream connection.
        if let Err(f) = body.wait_for_start().await {
            return client_body_failed(f);
        }
        // CDR: a request naming a client the Register no longer lists as ACTIVE goes no further (the form is
        // read for the client it names, then sent on as read).
        let body = match self.register_gate.get() {
            None => body.boxed(),
            Some(gate) => match Box::pin(gate.screen(&parts, body.boxed())).await {
                Ok(b) => b,
                Err(crate::register_status::Screened::Refused(resp)) => return resp,
                Err(crate::register_status::Screened::BodyFailed) => {
                    return client_body_failed(
                        fault.get().copied().unwrap_or(BodyFault::Malformed),
                    );
                }
            },
        };
        let req = Request::from_parts(parts, body);

        let sent = self.pool.send(req).await;
        if sent.is_err()
            && let Some(f) = fault.get()
        {
            return client_body_failed(*f);
        }
        match sent {
            Err(OutboundError::Timeout(timeout)) => {
                tracing::warn!(
                    failure = "upstream",
                    reason = "timeout",
                    timeout_ms = timeout.as_millis() as u64,
                    "the upstream sent no response headers in time"
                );
                boxed(ProxyError::UpstreamTimeout.to_response())
            }
            Err(e) => {
                tracing::warn!(
                    failure = "upstream",
                    connect = matches!(e, OutboundError::Connect(_)),
                    reason = %e,
                    "the upstream request failed"
                );
                boxed(ProxyError::UpstreamUnavailable(e.to_string()).to_response())
            }
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                remove_hop_by_hop(&mut parts.headers, false);
                Response::from_parts(parts, body.map_err(BoxError::from).boxed())
            }
        }
    }

    /// Origin-form (`/prefix/path?query`): the pool's connections are to the upstream alone.
    fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::uri::InvalidUri> {
        let mut s = String::with_capacity(
            self.prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        s.push_str(&self.prefix);
        s.push_str(path);
        if let Some(q) = query {
            s.push('?');
            s.push_str(q);
        }
        s.parse()
    }
}

/// What the pass-through keeps for one client connection (`Forwarder::client_connection`).
pub struct ClientConnection {
    addr: SocketAddr,
    /// Its places under `max_concurrent_per_connection`; None: not held to that cap.
    slots: Option<Arc<Semaphore>>,
    /// The forwarding headers for the Host it last named (as sent), reused while it names the same one.
    forwarding: Mutex<Option<(Option<Bytes>, Arc<Forwarding>)>>,
}

impl ClientConnection {
    fn new(addr: SocketAddr, slots: Option<Arc<Semaphore>>) -> Self {
        Self {
            addr,
            slots,
            forwarding: Mutex::new(None),
        }
    }

    /// The forwarding headers for this request: the remembered ones when it names the Host (or HTTP/2
    /// `:authority`) of the connection's previous request, byte for byte; else `make`'s, remembered.
    fn forwarding(
        &self,
        parts: &http::request::Parts,
        make: impl FnOnce() -> Forwarding,
    ) -> Arc<Forwarding> {
        let named = parts
            .headers
            .get(header::HOST)
            .map(HeaderValue::as_bytes)
            .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()));
        let mut last = self
            .forwarding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((key, f)) = last.as_ref()
            && key.as_deref() == named
        {
            return f.clone();
        }
        let f = Arc::new(make());
        *last = Some((named.map(Bytes::copy_from_slice), f.clone()));
        f
    }
}

/// The client broke its own request body: its error, not the upstream's.
fn client_body_failed(f: BodyFault) -> Response<RespBody> {
    tracing::info!(failure = "client_body", reason = ?f, "refused: the request body failed");
    boxed(
        match f {
            BodyFault::Timeout => ProxyError::RequestBodyTimeout,
            BodyFault::Malformed => ProxyError::rejected(
                ErrorCode::InvalidRequest,
                "the request body is malformed (bad chunked framing) or was cut off",
            ),
        }
        .to_response(),
    )
}

/// `host[:port]` of a URL, brackets kept around an IPv6 address.
fn authority_of(u: &Url) -> Option<String> {
    let host = u.host_str()?;
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
}
