//! The pass-through's HTTP/1.1 connections to the IdP: one idle list per worker thread, the most recently idle
//! connection reused first.
//!
//! Why not hyper-util's pooled client, which `outbound` keeps for JWKS, the CDR Register and the registration
//! API: a kept-alive pass-through request is a few tens of µs of proxy CPU, and the pooled client spent a share of
//! it on what this traffic never needs: a pool key rebuilt from each request's URI, a checkout racing a lazy
//! connect, and, for every response with a body, a spawned task and a channel that wait for the connection to
//! be ready before it goes back (profile of issue 16 (a)). Here a connection goes back when its response body has
//! been read to the end, on the thread that read it, from the body's own poll; each worker's list is touched by
//! that worker alone, so its lock is never contended.
//!
//! What it keeps of the pooled client: a request that a reused connection refused before sending a byte (the
//! IdP closed it while it idled) is sent again on another connection, never one that may have reached the IdP;
//! idle connections are not reused after `idle_timeout` (below the IdP's own keep-alive timeout); at most
//! `max_idle` idle per worker, so the descriptor reserve (`lib::pass_through_fds`) still holds.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::Url;

use crate::body::RespBody;
use crate::outbound::{OutboundError, client_tls, error_chain, root_store};

/// One worker's idle connections, oldest first.
type IdleList = Arc<Mutex<Vec<Idle>>>;

struct Idle {
    sender: SendRequest<RespBody>,
    since: Instant,
}

pub struct UpstreamPool {
    host: String,
    port: u16,
    /// Set for an `https` upstream.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// One per worker thread (`crate::workers`): a connection's task runs on the runtime that opened it.
    idle: Vec<IdleList>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    response_timeout: Duration,
}

/// How the pool is sized and how long it waits.
pub struct PoolSettings {
    pub workers: usize,
    /// Idle connections kept per worker.
    pub max_idle: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// From the request's start until the upstream's response headers.
    pub response_timeout: Duration,
}

impl UpstreamPool {
    /// `base` arrives checked by `config`: `http` or `https`, a host, no user information. The trust roots are
    /// loaded only for `https`, so a slim sidecar image without system roots can front an `http` IdP.
    pub fn new(
        base: &Url,
        ca_bundle: Option<&std::path::Path>,
        s: PoolSettings,
    ) -> Result<Self, String> {
        let host = base
            .host_str()
            .ok_or("upstream_base: has no host")?
            // A bracketed IPv6 literal is dialled without its brackets.
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = base
            .port_or_known_default()
            .ok_or("upstream_base: has no port")?;
        let tls = if base.scheme() == "https" {
            let mut cfg = client_tls(root_store(ca_bundle)?)?;
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name =
                ServerName::try_from(host.clone()).map_err(|e| format!("upstream_base: {e}"))?;
            Some((TlsConnector::from(Arc::new(cfg)), name))
        } else {
            None
        };
        Ok(UpstreamPool {
            host,
            port,
            tls,
            idle: (0..s.workers.max(1)).map(|_| IdleList::default()).collect(),
            max_idle: s.max_idle,
            idle_timeout: s.idle_timeout,
            connect_timeout: s.connect_timeout,
            response_timeout: s.response_timeout,
        })
    }

    /// Sends `req` (origin-form URI, `Host` set by the caller) and waits within the response timeout for the
    /// response headers; the body then streams without a limit in time or size.
    pub async fn send(
        &self,
        req: Request<RespBody>,
    ) -> Result<Response<PooledBody>, OutboundError> {
        let list = &self.idle[crate::workers::current_index() % self.idle.len()];
        let work = async {
            let mut req = req;
            loop {
                let (mut sender, reused) = match self.checkout(list) {
                    Some(s) => (s, true),
                    // Boxed: dialling (TCP, TLS) is a large future that a reused connection never needs.
                    None => (Box::pin(self.connect()).await?, false),
                };
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        return Ok(resp.map(|body| {
                            PooledBody::new(body, sender, list.clone(), self.max_idle)
                        }));
                    }
                    Err(mut e) => match e.take_message() {
                        // Not a byte of it left: the IdP closed this idle connection first. The list is
                        // finite and a new connection is not retried, so this ends.
                        Some(r) if reused => req = r,
                        _ => return Err(OutboundError::Io(error_chain(e.error()))),
                    },
                }
            }
        };
        tokio::time::timeout(self.response_timeout, work)
            .await
            .map_err(|_| OutboundError::Timeout(self.response_timeout))?
    }

    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The most recently idle connection that can take a request now; expired and closed ones are dropped.
    fn checkout(&self, list: &IdleList) -> Option<SendRequest<RespBody>> {
        let mut idle = list.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let expired = idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= self.idle_timeout)
            .count();
        idle.drain(..expired);
        while let Some(c) = idle.pop() {
            if c.sender.is_ready() {
                return Some(c.sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<RespBody>, OutboundError> {
        let dial = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| OutboundError::Connect(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => handshake(TokioIo::new(tcp)).await,
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| OutboundError::Connect(format!("TLS: {e}")))?;
                    handshake(TokioIo::new(tls)).await
                }
            }
        };
        tokio::time::timeout(self.connect_timeout, dial)
            .await
            .map_err(|_| {
                OutboundError::Connect(format!("no connection within {:?}", self.connect_timeout))
            })?
    }
}

/// HTTP/1.1 over `io`; the connection's own task runs on the calling worker's runtime and ends when the pool
/// drops its sender or either side closes.
async fn handshake<T>(io: T) -> Result<SendRequest<RespBody>, OutboundError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| OutboundError::Connect(error_chain(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %error_chain(&e), "upstream connection ended");
        }
    });
    Ok(sender)
}

/// A response body that hands its connection back to the worker's idle list once read to the end. Dropped
/// before the end, it drops the connection with it: hyper closes a connection whose response was not read.
pub struct PooledBody {
    inner: Incoming,
    back: Option<(SendRequest<RespBody>, IdleList, usize)>,
}

impl PooledBody {
    fn new(
        inner: Incoming,
        sender: SendRequest<RespBody>,
        list: IdleList,
        max_idle: usize,
    ) -> Self {
        let mut body = PooledBody {
            inner,
            back: Some((sender, list, max_idle)),
        };
        // An empty body (204, `Content-Length: 0`) is never polled by the server that relays it.
        if body.inner.is_end_stream() {
            body.give_back();
        }
        body
    }

    fn give_back(&mut self) {
        let Some((mut sender, list, max_idle)) = self.back.take() else {
            return;
        };
        if sender.is_ready() {
            put(&list, max_idle, sender);
        } else if !sender.is_closed() {
            // The connection's task has not yet seen the end of this exchange (it runs after this poll on the
            // same thread); it goes back once it has. Bounded: one that never turns ready is dropped.
            tokio::spawn(async move {
                let ready = tokio::time::timeout(Duration::from_secs(1), sender.ready()).await;
                if matches!(ready, Ok(Ok(()))) {
                    put(&list, max_idle, sender);
                }
            });
        }
    }
}

fn put(list: &IdleList, max_idle: usize, sender: SendRequest<RespBody>) {
    let mut idle = list.lock().unwrap_or_else(PoisonError::into_inner);
    if idle.len() < max_idle {
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// An HTTP/1.1 upstream that counts the connections it accepted. `/big` answers 1 MiB, `/close-soon` closes
    /// the connection 50 ms after answering (an IdP whose keep-alive timeout ends while the connection idles),
    /// anything else answers `ok`.
    async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let close = Arc::new(tokio::sync::Notify::new());
                    let closing = close.clone();
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let closing = closing.clone();
                        async move {
                            let body = match req.uri().path() {
                                "/big" => Bytes::from(vec![b'x'; 1 << 20]),
                                "/close-soon" => {
                                    closing.notify_one();
                                    Bytes::from_static(b"ok")
                                }
                                _ => Bytes::from_static(b"ok"),
                            };
                            Ok::<_, Infallible>(Response::new(Full::new(body)))
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = async {
                            close.notified().await;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        } => {}
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn pool(addr: SocketAddr, idle_timeout: Duration) -> UpstreamPool {
        let base = Url::parse(&format!("http://{addr}")).expect("url");
        UpstreamPool::new(
            &base,
            None,
            PoolSettings {
                workers: 1,
                max_idle: 4,
                idle_timeout,
                connect_timeout: Duration::from_secs(2),
                response_timeout: Duration::from_secs(5),
            },
        )
        .expect("pool")
    }

    fn get(path: &str) -> Request<RespBody> {
        Request::get(path)
            .header(http::header::HOST, "upstream")
            .body(Empty::new().map_err(|n| match n {}).boxed())
            .expect("request")
    }

    async fn fetch(pool: &UpstreamPool, path: &str) -> Bytes {
        let resp = pool.send(get(path)).await.expect("response");
        resp.into_body().collect().await.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn requests_one_after_another_share_one_upstream_connection() {
        let (addr, accepted) = upstream().await;
        let pool = pool(addr, Duration::from_secs(4));
        for _ in 0..5 {
            assert_eq!(fetch(&pool, "/").await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced_and_the_request_still_answered()
     {
        let (addr, accepted) = upstream().await;
        let pool = pool(addr, Duration::from_secs(4));
        assert_eq!(fetch(&pool, "/close-soon").await, "ok");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(fetch(&pool, "/").await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_response_dropped_unread_takes_its_connection_with_it() {
        let (addr, accepted) = upstream().await;
        let pool = pool(addr, Duration::from_secs(4));
        let resp = pool.send(get("/big")).await.expect("response");
        drop(resp);
        // The next request must not be queued behind the rest of the unread megabyte.
        assert_eq!(fetch(&pool, "/").await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(fetch(&pool, "/").await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the new one is reused");
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_idle_timeout_is_not_reused() {
        let (addr, accepted) = upstream().await;
        let pool = pool(addr, Duration::from_millis(100));
        assert_eq!(fetch(&pool, "/").await, "ok");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(fetch(&pool, "/").await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_https_upstream_is_reached_only_with_a_trusted_certificate() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let dir = std::env::temp_dir().join(format!("dcr-pool-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let trusted = dir.join("upstream-ca.pem");
        std::fs::write(&trusted, ck.cert.pem()).expect("write");
        let other =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let untrusted = dir.join("other-ca.pem");
        std::fs::write(&untrusted, other.cert.pem()).expect("write");

        let key =
            rustls_pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).expect("key");
        let server =
            rustls::ServerConfig::builder_with_provider(crate::outbound::crypto_provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
                .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        let base = Url::parse(&format!("https://localhost:{port}")).expect("url");
        let settings = || PoolSettings {
            workers: 1,
            max_idle: 4,
            idle_timeout: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
        };
        let pool = UpstreamPool::new(&base, Some(&trusted), settings()).expect("pool");
        assert_eq!(fetch(&pool, "/").await, "ok");
        let stranger = UpstreamPool::new(&base, Some(&untrusted), settings()).expect("pool");
        let refused = stranger.send(get("/")).await.err();
        assert!(
            matches!(&refused, Some(OutboundError::Connect(why)) if why.starts_with("TLS")),
            "{refused:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn no_more_idle_connections_are_kept_than_max_idle() {
        let (addr, accepted) = upstream().await;
        let pool = pool(addr, Duration::from_secs(4));
        // Six at once need six connections; four go back idle, so six more at once open two.
        for round in [6, 8] {
            let all = (0..6).map(|_| fetch(&pool, "/"));
            for body in futures::future::join_all(all).await {
                assert_eq!(body, "ok");
            }
            assert_eq!(accepted.load(Ordering::SeqCst), round);
        }
        assert_eq!(pool.idle[0].lock().expect("lock").len(), 4);
    }
}
