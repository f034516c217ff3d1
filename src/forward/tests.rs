//! The pass-through over real sockets: a plain-TCP front whose only route is `forward`, and an
//! IdP stand-in that records what reached it. The fixtures here serve the submodules' tests too.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::StatusCode;
use http::header::HeaderMap;
use http_body_util::Full;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

use super::headers::{folded, is_cert_header};
use super::*;

// ---------------------------------------------------------------- fixtures

/// A leaf issued by a throwaway CA, presented with the CA as its chain.
pub(super) fn peer() -> PeerCert {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
        .expect("self-signed ca");
    let leaf = CertificateParams::new(vec!["client.tpp.example".to_string()])
        .expect("leaf params")
        .signed_by(&KeyPair::generate().expect("leaf key"), &ca)
        .expect("leaf");
    PeerCert::from_der(leaf.der().clone(), vec![ca.der().clone()]).expect("peer cert")
}

// ---------------------------------------------------------------- over real sockets

const CHUNK: usize = 64 * 1024;
const LARGE: usize = 3 * 1024 * 1024;

/// A body fed from a channel, so a test decides when each chunk exists.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into()).map_err(|n| match n {}).boxed()
}

struct Seen {
    method: Method,
    uri: String,
    headers: HeaderMap,
}

/// The IdP stand-in: records what reached it and answers by path.
#[derive(Default)]
struct Upstream {
    seen: Mutex<Vec<Seen>>,
    /// Lets `/stream` send the rest of its body.
    go: Notify,
    /// Raised by `/upload` once its first chunk has arrived.
    upload_started: Notify,
}

impl Upstream {
    fn seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }

    async fn serve(self: Arc<Self>, req: Request<Incoming>) -> Response<RespBody> {
        self.seen.lock().expect("lock").push(Seen {
            method: req.method().clone(),
            uri: req.uri().to_string(),
            headers: req.headers().clone(),
        });
        let path = req.uri().path().to_owned();
        match path.as_str() {
            "/stream" => {
                let (tx, rx) = mpsc::channel(4);
                let me = self.clone();
                tokio::spawn(async move {
                    let _ = tx.send(Bytes::from(vec![b'a'; CHUNK])).await;
                    me.go.notified().await;
                    for _ in 1..LARGE / CHUNK {
                        if tx.send(Bytes::from(vec![b'b'; CHUNK])).await.is_err() {
                            return;
                        }
                    }
                });
                Response::new(ChannelBody(rx).boxed())
            }
            "/upload" => {
                let mut body = req.into_body();
                let mut n = 0usize;
                let mut told = false;
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.expect("upload frame").into_data() {
                        n += data.len();
                    }
                    if n >= CHUNK && !told {
                        told = true;
                        self.upload_started.notify_one();
                    }
                }
                Response::new(full(n.to_string()))
            }
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Response::new(full("too late"))
            }
            p if p.ends_with("/.well-known/openid-configuration") => {
                let doc = serde_json::json!({
                    "issuer": "https://bank.example.com",
                    "registration_endpoint": "http://10.0.0.7:3000/reg",
                    "token_endpoint": "https://bank.example.com/token",
                });
                let mut resp = Response::new(full(doc.to_string()));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp
            }
            "/missing/.well-known/oauth-authorization-server" => {
                let mut resp = Response::new(full("{\"error\":\"not_found\"}"));
                *resp.status_mut() = StatusCode::NOT_FOUND;
                resp
            }
            _ => {
                let mut resp = Response::new(full("ok"));
                let h = resp.headers_mut();
                h.insert(
                    header::CONNECTION,
                    HeaderValue::from_static("x-upstream-hop"),
                );
                h.insert("x-upstream-hop", HeaderValue::from_static("1"));
                h.insert("proxy-authenticate", HeaderValue::from_static("Basic"));
                h.insert("x-kept", HeaderValue::from_static("yes"));
                resp
            }
        }
    }
}

async fn start_upstream() -> (Arc<Upstream>, SocketAddr) {
    let upstream = Arc::new(Upstream::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let up = upstream.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let up = up.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let up = up.clone();
                    async move { Ok::<_, Infallible>(up.serve(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (upstream, addr)
}

/// The proxy side: a plain-TCP server (h1 and h2 prior knowledge) whose only route is `forward`.
async fn start_front(forwarder: Arc<Forwarder>, peer: Option<PeerCert>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peer = Arc::new(peer);
    tokio::spawn(async move {
        while let Ok((tcp, client_addr)) = listener.accept().await {
            let forwarder = forwarder.clone();
            let peer = peer.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let forwarder = forwarder.clone();
                    let peer = peer.clone();
                    async move {
                        Ok::<_, Infallible>(
                            forwarder
                                .forward(req, peer.as_ref().as_ref(), client_addr)
                                .await,
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn config(upstream: SocketAddr) -> ForwardConfig {
    ForwardConfig {
        upstream_base: Url::parse(&format!("http://{upstream}")).expect("url"),
        public_url: Url::parse("https://proxy.example.com").expect("url"),
        cert_header: CertHeaderConfig::new(CertHeaderFormat::Rfc9440),
        deny_paths: ForwardConfig::default_deny_paths(),
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(5),
        discovery_ttl: Duration::from_secs(60),
        mtls_endpoint_aliases: None,
        ca_bundle: None,
        limits: super::ForwardLimits::default(),
    }
}

async fn front_for(cfg: ForwardConfig, peer: Option<PeerCert>) -> (Arc<Forwarder>, SocketAddr) {
    let forwarder = Arc::new(Forwarder::new(cfg).expect("forwarder"));
    let addr = start_front(forwarder.clone(), peer).await;
    (forwarder, addr)
}

async fn send(addr: SocketAddr, req: Request<RespBody>) -> Response<Incoming> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    tokio::time::timeout(Duration::from_secs(10), tx.send_request(req))
        .await
        .expect("answered in time")
        .expect("response")
}

fn get(path: &str) -> Request<RespBody> {
    Request::get(path)
        .header(header::HOST, "bank.example.com")
        .body(full(""))
        .expect("request")
}

async fn body_of(resp: Response<Incoming>) -> Bytes {
    tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes()
}

#[tokio::test]
async fn spoofed_headers_never_reach_the_upstream_in_any_format() {
    let (upstream, upstream_addr) = start_upstream().await;
    let peer = peer();
    for format in [
        CertHeaderFormat::Rfc9440,
        CertHeaderFormat::Nginx,
        CertHeaderFormat::Envoy,
    ] {
        let mut cfg = config(upstream_addr);
        cfg.cert_header = CertHeaderConfig::new(format);
        let (forwarder, front) = front_for(cfg, Some(peer.clone())).await;
        let req = Request::post("/token?grant_type=x")
            .header(header::HOST, "bank.example.com")
            .header("client-cert", ":c3Bvb2Y=:")
            .header("ssl_client_cert", "spoof")
            .header("SSL-Client-Verify", "SUCCESS")
            .header("x-forwarded-client-cert", "Hash=00;Cert=\"x\"")
            .header("x_forwarded_client_cert", "Hash=00")
            .header("cert_chain_0", "spoof")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-host", "evil.example")
            .header("forwarded", "for=203.0.113.9")
            .header(header::CONNECTION, "x-drop-me")
            .header("x-drop-me", "1")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .header(
                "x-fapi-interaction-id",
                "c770aef3-6784-41f7-8e0e-ff5f97bddb3a",
            )
            .header(header::AUTHORIZATION, "Bearer abc")
            .body(full("grant_type=client_credentials"))
            .expect("request");
        let resp = send(front, req).await;
        assert_eq!(resp.status(), StatusCode::OK, "{format:?}");
        assert_eq!(resp.headers()["x-kept"], "yes");
        for hop in ["x-upstream-hop", "proxy-authenticate"] {
            assert!(
                resp.headers().get(hop).is_none(),
                "{hop} leaked to the client"
            );
        }
        assert_eq!(body_of(resp).await, "ok");

        let seen = upstream.seen();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(s.method, Method::POST);
        assert_eq!(s.uri, "/token?grant_type=x");
        let h = &s.headers;
        assert_eq!(h[header::HOST], upstream_addr.to_string().as_str());
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "bank.example.com");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.1;proto=https;host=\"bank.example.com\""
        );
        assert_eq!(
            h["x-fapi-interaction-id"],
            "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"
        );
        assert_eq!(h[header::AUTHORIZATION], "Bearer abc");
        for gone in [
            "x-drop-me",
            "proxy-authorization",
            "ssl_client_cert",
            "x_forwarded_client_cert",
            "cert_chain_0",
        ] {
            assert!(
                h.get(gone).is_none(),
                "{format:?}: {gone} reached the upstream"
            );
        }
        // Exactly the certificate headers of the configured format, with our values.
        let mut ours: Vec<(String, String)> = h
            .iter()
            .filter(|(n, _)| is_cert_header(&folded(n)))
            .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned()))
            .collect();
        ours.sort();
        let mut expected: Vec<(String, String)> = forwarder
            .cert_headers_for(&peer)
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned()))
            .collect();
        expected.sort();
        assert_eq!(ours, expected, "{format:?}");
    }
}

#[tokio::test]
async fn without_a_certificate_only_the_stripping_happens() {
    let (upstream, upstream_addr) = start_upstream().await;
    let (_, front) = front_for(config(upstream_addr), None).await;
    let req = Request::get("/me")
        .header(header::HOST, "bank.example.com")
        .header("client-cert", ":c3Bvb2Y=:")
        .header("SSL_CLIENT_VERIFY", "SUCCESS")
        .body(full(""))
        .expect("request");
    assert_eq!(send(front, req).await.status(), StatusCode::OK);
    let seen = upstream.seen();
    let cert_headers: Vec<&HeaderName> = seen[0]
        .headers
        .keys()
        .filter(|n| is_cert_header(&folded(n)))
        .collect();
    assert!(cert_headers.is_empty(), "{cert_headers:?}");
}

#[tokio::test]
async fn the_upstream_prefix_is_added_after_matching_and_the_query_kept() {
    let (upstream, upstream_addr) = start_upstream().await;
    let mut cfg = config(upstream_addr);
    cfg.upstream_base = Url::parse(&format!("http://{upstream_addr}/auth/")).expect("url");
    let (_, front) = front_for(cfg, None).await;
    let resp = send(
        front,
        get("/realms/bank/protocol/openid-connect/auth?client_id=a&x=%20"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        upstream.seen()[0].uri,
        "/auth/realms/bank/protocol/openid-connect/auth?client_id=a&x=%20"
    );
}

#[tokio::test]
async fn denied_paths_answer_404_and_never_reach_the_upstream() {
    let (upstream, upstream_addr) = start_upstream().await;
    let (_, front) = front_for(config(upstream_addr), None).await;
    for path in [
        "/reg",
        "/REG",
        "/reg/",
        "/%72eg",
        "//reg",
        "/reg/abc",
        "/admin/realms",
        "/x/../reg",
    ] {
        let resp = send(front, get(path)).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = serde_json::from_slice(&body_of(resp).await).expect("json");
        assert_eq!(body["error"], "invalid_request", "{path}");
    }
    let resp = send(front, get("/x/../token")).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_large_response_streams_through_without_being_buffered() {
    let (upstream, upstream_addr) = start_upstream().await;
    let (_, front) = front_for(config(upstream_addr), None).await;
    let resp = send(front, get("/stream")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut n = 0usize;
    // The upstream holds the rest back until we say so: a buffering proxy would deadlock here.
    while n < CHUNK {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the first chunk arrives before the upstream finishes")
            .expect("a frame")
            .expect("no error");
        n += frame.into_data().map(|d| d.len()).unwrap_or(0);
    }
    upstream.go.notify_one();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the rest arrives")
    {
        n += frame
            .expect("no error")
            .into_data()
            .map(|d| d.len())
            .unwrap_or(0);
    }
    assert_eq!(n, LARGE);
}

#[tokio::test]
async fn a_large_request_body_streams_through_without_being_buffered() {
    let (upstream, upstream_addr) = start_upstream().await;
    let (_, front) = front_for(config(upstream_addr), None).await;
    let (tx, rx) = mpsc::channel(4);
    let req = Request::post("/upload")
        .header(header::HOST, "bank.example.com")
        .body(ChannelBody(rx).boxed())
        .expect("request");
    let pending = tokio::spawn(send(front, req));
    tx.send(Bytes::from(vec![b'a'; CHUNK])).await.expect("send");
    // The rest is not sent until the upstream has seen the first chunk.
    tokio::time::timeout(Duration::from_secs(5), upstream.upload_started.notified())
        .await
        .expect("the first chunk reaches the upstream before the body is complete");
    for _ in 1..LARGE / CHUNK {
        tx.send(Bytes::from(vec![b'b'; CHUNK])).await.expect("send");
    }
    drop(tx);
    let resp = pending.await.expect("task");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_of(resp).await, LARGE.to_string());
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_that_names_no_address() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let (_, front) = front_for(config(closed), None).await;
    let resp = send(front, get("/token")).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body = body_of(resp).await;
    let json: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["error"], "server_error");
    let text = String::from_utf8_lossy(&body);
    assert!(
        !text.contains("127.0.0.1") && !text.contains(&closed.port().to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn a_silent_upstream_is_a_504_within_the_response_timeout() {
    let (_upstream, upstream_addr) = start_upstream().await;
    let mut cfg = config(upstream_addr);
    cfg.response_timeout = Duration::from_millis(300);
    let (_, front) = front_for(cfg, None).await;
    let started = Instant::now();
    let resp = send(front, get("/slow")).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let json: Value = serde_json::from_slice(&body_of(resp).await).expect("json");
    assert_eq!(json["error"], "server_error");
}

#[tokio::test]
async fn discovery_is_rewritten_fetched_once_and_served_from_cache() {
    let (upstream, upstream_addr) = start_upstream().await;
    let mut cfg = config(upstream_addr);
    let mut aliases = Map::new();
    aliases.insert(
        "token_endpoint".into(),
        Value::String("https://mtls.bank.example.com/token".into()),
    );
    cfg.mtls_endpoint_aliases = Some(aliases.clone());
    let (forwarder, front) = front_for(cfg, None).await;

    for host in ["bank.example.com", "other.example.com"] {
        let req = Request::get("/.well-known/openid-configuration?x=1")
            .header(header::HOST, host)
            .body(full(""))
            .expect("request");
        let resp = send(front, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let doc: Value = serde_json::from_slice(&body_of(resp).await).expect("json");
        assert_eq!(
            doc,
            serde_json::json!({
                "issuer": "https://bank.example.com",
                "registration_endpoint": "https://proxy.example.com/register",
                "token_endpoint": "https://bank.example.com/token",
                "mtls_endpoint_aliases": aliases,
            })
        );
    }
    assert_eq!(forwarder.discovery_fetches(), 1);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/.well-known/openid-configuration");
    assert_eq!(seen[0].headers["x-forwarded-host"], "proxy.example.com");
    assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
    assert!(seen[0].headers.get("x-forwarded-for").is_none());

    // A Keycloak realm's document is a separate entry.
    let resp = send(front, get("/realms/bank/.well-known/openid-configuration")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body_of(resp).await).expect("json");
    assert_eq!(
        doc["registration_endpoint"],
        "https://proxy.example.com/register"
    );
    assert_eq!(forwarder.discovery_fetches(), 2);

    // An upstream error is passed on and not cached.
    for _ in 0..2 {
        let resp = send(
            front,
            get("/missing/.well-known/oauth-authorization-server"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(forwarder.discovery_fetches(), 4);
}

#[tokio::test]
async fn an_http2_client_is_forwarded_over_http1() {
    let (upstream, upstream_addr) = start_upstream().await;
    let (_, front) = front_for(config(upstream_addr), None).await;
    let tcp = TcpStream::connect(front).await.expect("connect");
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::get("https://bank.example.com/me")
        .header(header::COOKIE, "a=1")
        .header(header::COOKIE, "b=2")
        .header(header::TE, "trailers")
        .body(full(""))
        .expect("request");
    let resp = tx.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_of(resp).await, "ok");
    let seen = upstream.seen();
    let h = &seen[0].headers;
    assert_eq!(seen[0].uri, "/me");
    assert_eq!(h["x-forwarded-host"], "bank.example.com");
    assert_eq!(h[header::HOST], upstream_addr.to_string().as_str());
    assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
    assert_eq!(h[header::COOKIE], "a=1; b=2");
}

#[test]
fn a_deny_pattern_it_cannot_use_is_refused() {
    let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let mut cfg = config(addr);
    cfg.deny_paths = vec!["reg".into()];
    assert!(
        Forwarder::new(cfg)
            .err()
            .expect("bad pattern")
            .contains("\"reg\"")
    );
    assert!(check_deny_path("reg").is_err());
    assert!(check_deny_path("/reg/**").is_ok());
}

#[test]
fn a_connection_rebuilds_its_forwarding_headers_whenever_the_host_it_names_changes() {
    let forwarder =
        Forwarder::new(config("127.0.0.1:1".parse().expect("addr"))).expect("forwarder");
    let conn = forwarder.client_connection("192.0.2.7:5000".parse().expect("addr"));
    let mut built = 0;
    let mut sent_for = |host: &str| {
        let (parts, ()) = Request::get("/token")
            .header(header::HOST, host)
            .body(())
            .expect("request")
            .into_parts();
        let f = conn.forwarding(&parts, || {
            built += 1;
            super::headers::Forwarding::for_client(conn.addr, host)
        });
        let mut h = HeaderMap::new();
        super::headers::set_forwarding_headers(&mut h, &f);
        h["x-forwarded-host"].clone()
    };
    for host in ["a.example", "a.example", "b.example", "a.example"] {
        assert_eq!(sent_for(host), host);
    }
    assert_eq!(built, 3, "built once per change of Host, reused in between");
}
