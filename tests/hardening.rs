//! No client can exhaust the front door, no store fault can kill it: idle connections are reaped,
//! connection floods meet caps that leave descriptors for the store and the upstream, the admin port has
//! timeouts, a broken store answers 503 instead of killing the process, the replay cache keeps to its byte
//! bound, pass-through concurrency is capped, oversized headers and broken bodies are the client's fault.
//! All against the real binary on real sockets.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use support::client::TlsClient;
use support::jwks_server::JwksServer;
use support::keys::SigningKey;
use support::pki::ClientCertSpec;
use support::world::{Options, Tpp, World, base62, jwks_doc};

/// A TLS connection to the proxy that then says nothing, with or without `tpp`'s client certificate,
/// offering `alpn`; and when its handshake finished.
async fn tls_connection(
    w: &World,
    tpp: Option<&Tpp>,
    alpn: &[&[u8]],
) -> (TlsStream<TcpStream>, Instant) {
    let client = TlsClient::new(&w.pki.ca_pem(), tpp.map(|t| &t.cert));
    let mut config = (*client.config()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(w.proxy.addr).await.expect("connect");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    (tls, Instant::now())
}

/// How long after `started` the peer closed `stream` (reading and discarding whatever it sends), or None
/// if it is still open `limit` after that.
async fn closed_after<S: tokio::io::AsyncRead + Unpin>(
    mut stream: S,
    started: Instant,
    limit: Duration,
) -> Option<Duration> {
    let limit = limit.saturating_sub(started.elapsed());
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

/// The value of one sample on the admin port's /metrics, e.g. `dcr_proxy_replay_cache_bytes`; 0 when absent.
async fn metric(w: &World, sample: &str) -> f64 {
    let text = w.proxy.admin_get("/metrics").await.text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// A TCP connection from `source` (any 127/8 address is this machine) that sends nothing.
async fn connect_from(source: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    tokio::time::timeout(Duration::from_secs(2), socket.connect(to))
        .await
        .ok()?
        .ok()
}

/// One raw HTTP/1.1 exchange over TLS: writes `request` as is and returns the response's status.
async fn raw_h1_status(w: &World, tpp: &Tpp, request: &[u8]) -> u16 {
    let client = tpp.client.clone().http1_only();
    let tcp = TcpStream::connect(w.proxy.addr).await.expect("connect");
    let mut tls = TlsConnector::from(client.config())
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    tls.write_all(request).await.expect("write");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(15), async {
        while !head.windows(2).any(|w| w == b"\r\n") {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("a response within 15 s");
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {line:?}"))
}

#[tokio::test]
async fn idle_tls_connections_are_closed_within_the_idle_timeout() {
    let w = World::start(Options {
        server_extra: "idle_timeout = \"1s\"".into(),
        ..Options::default()
    })
    .await;
    let tpp = w.tpp();
    let (h1_cert, t1) = tls_connection(&w, Some(&tpp), &[b"http/1.1"]).await;
    let (mut h2_preface, t2) = tls_connection(&w, Some(&tpp), &[b"h2"]).await;
    // The client preface and an empty SETTINGS frame, then silence.
    h2_preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let (h2_no_cert, t3) = tls_connection(&w, None, &[b"h2"]).await;
    let (h1_no_cert, t4) = tls_connection(&w, None, &[b"http/1.1"]).await;
    let limit = Duration::from_secs(5);
    let closed = futures::future::join_all([
        Box::pin(closed_after(h1_cert, t1, limit))
            as std::pin::Pin<Box<dyn std::future::Future<Output = Option<Duration>>>>,
        Box::pin(closed_after(h2_preface, t2, limit)),
        Box::pin(closed_after(h2_no_cert, t3, limit)),
        Box::pin(closed_after(h1_no_cert, t4, limit)),
    ])
    .await;
    for (what, after) in [
        "h1 with a certificate",
        "h2 preface then silence",
        "h2 without a certificate",
        "h1 without a certificate",
    ]
    .iter()
    .zip(&closed)
    {
        let after = after.unwrap_or_else(|| panic!("{what}: still open after {limit:?}"));
        assert!(
            after >= Duration::from_millis(800),
            "{what}: closed after {after:?}, before the idle timeout"
        );
    }
    assert!(
        metric(
            &w,
            "dcr_proxy_connections_idle_closed_total{listener=\"data\"}"
        )
        .await
            >= 4.0
    );
    // A connection in use is not idle: a request after 700 ms of silence is still answered.
    let mut conn = tpp.client.connection(w.proxy.addr).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let resp = conn
        .send("GET", "/.well-known/openid-configuration", &[], "")
        .await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn a_header_trickling_in_on_the_data_port_is_cut_at_the_idle_timeout() {
    // hyper's own header timer is off on the data port; the idle timeout alone must end this.
    let w = World::start(Options {
        server_extra: "idle_timeout = \"1s\"".into(),
        ..Options::default()
    })
    .await;
    let tpp = w.tpp();
    let (mut tls, _) = tls_connection(&w, Some(&tpp), &[b"http/1.1"]).await;
    tls.write_all(b"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .expect("write");
    let started = Instant::now();
    let mut cut = None;
    // One byte every 200 ms: never a whole header, never silent for long.
    while started.elapsed() < Duration::from_secs(6) {
        if tls.write_all(b"a").await.is_err() || tls.flush().await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), tls.read(&mut buf)).await
        {
            cut = Some(started.elapsed());
            break;
        }
    }
    assert!(
        cut.is_some_and(|t| t >= Duration::from_millis(800) && t < Duration::from_secs(4)),
        "a header trickle is cut off after the idle timeout: {cut:?}"
    );
}

#[tokio::test]
async fn the_admin_port_closes_idle_and_trickling_connections_and_caps_them() {
    let w = World::start(Options {
        admin_extra: "idle_timeout = \"1s\"\nmax_connections = 8".into(),
        ..Options::default()
    })
    .await;
    let admin = w.proxy.admin.expect("admin listener");
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(admin).await.expect("connect"));
    }
    let mut trickle = TcpStream::connect(admin).await.expect("connect");
    trickle
        .write_all(b"GET /live HTTP/1.1\r\nHost: admin\r\nX-Slow: ")
        .await
        .expect("write");
    let trickling = tokio::spawn(async move {
        let started = Instant::now();
        // One byte every 200 ms: never a whole header, never silent for long.
        while started.elapsed() < Duration::from_secs(6) {
            if trickle.write_all(b"a").await.is_err() {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut buf = [0u8; 512];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), trickle.read(&mut buf)).await
            {
                return Some(started.elapsed());
            }
        }
        None
    });
    let limit = Duration::from_secs(4);
    let now = Instant::now();
    let closed =
        futures::future::join_all(idle.into_iter().map(|s| closed_after(s, now, limit))).await;
    assert!(
        closed.iter().all(Option::is_some),
        "idle admin connections are closed: {closed:?}"
    );
    let trickled = trickling.await.expect("task");
    assert!(
        trickled.is_some_and(|t| t < Duration::from_secs(4)),
        "a header trickle is cut off: {trickled:?}"
    );
    // Eight open connections fill the cap; the ninth is closed at once.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(admin).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ninth = TcpStream::connect(admin).await.expect("connect");
    let refused = closed_after(ninth, Instant::now(), Duration::from_millis(500)).await;
    assert!(refused.is_some(), "the ninth connection is refused");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(w.proxy.admin_get("/live").await.status, 200);
    assert!(
        metric(
            &w,
            "dcr_proxy_connections_refused_total{listener=\"admin\",reason=\"max_connections\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn registrations_are_served_during_a_connection_flood_with_1024_descriptors() {
    let w = World::start(Options {
        nofile: Some(1024),
        // Flood connections that never start TLS are held for the whole test, not reaped early.
        server_extra: "handshake_timeout = \"60s\"".into(),
        ..Options::default()
    })
    .await;
    let to = w.proxy.addr;
    let flooder: IpAddr = "127.0.0.2".parse().expect("ip");
    let mut flood = Vec::new();
    for _ in 0..1100 {
        if let Some(s) = connect_from(flooder, to).await {
            flood.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds = w.proxy.open_fds().expect("/proc");
    assert!(
        fds < 1024 - 300,
        "{fds} descriptors in use during the flood"
    );
    for _ in 0..5 {
        let tpp = w.tpp();
        let resp = w
            .post_register(&tpp.client, &w.ob_request(&tpp, json!({})))
            .await;
        assert_eq!(resp.status, 201, "{}", resp.text());
    }
    assert!(
        metric(
            &w,
            "dcr_proxy_connections_refused_total{listener=\"data\",reason=\"per_address\"}"
        )
        .await
            >= 800.0
    );

    // Many sources together reach the overall cap: then new connections are refused, but the process keeps
    // its descriptors for the store and the upstream and stays ready.
    for i in 3..=5u8 {
        let from = IpAddr::from([127, 0, 0, i]);
        for _ in 0..250 {
            if let Some(s) = connect_from(from, to).await {
                flood.push(s);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        metric(
            &w,
            "dcr_proxy_connections_refused_total{listener=\"data\",reason=\"max_connections\"}"
        )
        .await
            >= 1.0
    );
    assert_eq!(w.proxy.admin_get("/ready").await.status, 200);
    drop(flood);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tpp = w.tpp();
    let resp = w
        .post_register(&tpp.client, &w.ob_request(&tpp, json!({})))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    let accept_lines = w
        .proxy
        .logs()
        .iter()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert!(accept_lines <= 2, "{accept_lines} accept-failure lines");
}

#[tokio::test]
async fn a_store_folder_replaced_under_the_running_proxy_answers_503_and_leaves_no_upstream_client()
{
    let dir = support::temp::TempDir::new();
    let store_dir = dir.join("store");
    let w = World::start(Options {
        store: Some(format!(
            "backend = \"sqlite\"\npath = \"{}\"",
            store_dir.join("dcr.sqlite").display()
        )),
        upstream_extra: "timeout = \"5s\"\nsettle_timeout = \"5s\"".into(),
        ..Options::default()
    })
    .await;
    let first = w.tpp();
    w.register(&first, json!({})).await;
    let clients_before = w.upstream.clients().await;

    // A registration is in flight at the upstream when the store breaks.
    w.upstream
        .fault(json!({"mode": "delay_after_create", "delay_ms": 1500, "count": 1}))
        .await;
    let tpp = w.tpp();
    let client = tpp.client.clone();
    let url = w.proxy.url("/register");
    let body = w.ob_request(&tpp, json!({}));
    let in_flight = tokio::spawn(async move {
        client
            .try_request("POST", &url, &[("content-type", "application/jwt")], body)
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The faults of the report: a -shm file truncated under the process (a memory-mapped WAL index then
    // raises SIGBUS), and the store folder replaced by one the process cannot write to.
    let shm = store_dir.join("dcr.sqlite-shm");
    if shm.exists() {
        std::fs::write(&shm, b"").expect("truncate -shm");
    }
    std::fs::rename(&store_dir, dir.join("store.gone")).expect("move the store folder");
    std::fs::create_dir(&store_dir).expect("new folder");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&store_dir, std::fs::Permissions::from_mode(0o500))
            .expect("read-only folder");
    }

    let resp = in_flight
        .await
        .expect("task")
        .expect("an answer, not a dead connection");
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(
        w.upstream.clients().await,
        clients_before,
        "the client created upstream for the failed registration was deleted again"
    );
    let other = w.tpp();
    let resp = w
        .post_register(&other.client, &w.ob_request(&other, json!({})))
        .await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    let ready = w.proxy.admin_get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("store"), "{}", ready.text());
    assert_eq!(w.proxy.admin_get("/live").await.status, 200);
    // The pass-through does not need the store.
    let resp = first
        .client
        .request(
            "GET",
            &w.proxy.url("/.well-known/openid-configuration"),
            &[],
            "",
        )
        .await;
    assert_eq!(resp.status, 200);
    let mut w = w;
    assert!(w.proxy.is_running(), "the process is alive");
}

/// A TPP whose request JWTs are signed with ES256, cheap enough to sign twenty thousand of.
fn ec_tpp(w: &World) -> Tpp {
    let (software_id, org_id) = (base62(18), base62(18));
    let cert = w
        .pki
        .client(ClientCertSpec::ob(software_id.clone(), org_id.clone()));
    let key = SigningKey::ec_p256(&format!("sig-{}", base62(8)));
    let jwks_path = format!("/software/{software_id}.jwks");
    let jwks: &JwksServer = &w.jwks;
    jwks.set(
        &jwks_path,
        jwks_doc(&[key.public_jwk(Some("sig")), cert.tls_jwk("tls-1")]),
    );
    let client = TlsClient::new(&w.pki.ca_pem(), Some(&cert));
    Tpp {
        jwks_url: w.jwks.url(&jwks_path),
        software_id,
        org_id,
        cert,
        key,
        jwks_path,
        client,
    }
}

// Two workers: the client side of twenty thousand TLS requests is work too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_cache_keeps_under_its_byte_bound_after_20k_rejected_requests() {
    const BOUND: f64 = 1024.0 * 1024.0;
    let dir = support::temp::TempDir::new();
    let w = World::start(Options {
        store: Some(format!(
            "backend = \"sqlite\"\npath = \"{}\"\nreplay_cache_bytes = 1048576",
            dir.join("dcr.sqlite").display()
        )),
        ..Options::default()
    })
    .await;
    let tpp = ec_tpp(&w);
    let ssa = w.ob_ssa(&tpp, json!({}));
    // Signed, valid request JWTs, each with a fresh jti, refused after the jti is spent: the redirect URI
    // is not one the software statement lists.
    let signing = Instant::now();
    let requests: Vec<String> = (0..20_000)
        .map(|_| {
            tpp.key.sign(
                json!({}),
                w.ob_request_claims(
                    &tpp,
                    &ssa,
                    json!({"redirect_uris": ["https://elsewhere.example/cb"]}),
                ),
            )
        })
        .collect();
    eprintln!("signed in {:?}", signing.elapsed());
    let sending = Instant::now();
    let chunks: Vec<Vec<String>> = requests.chunks(2_500).map(<[String]>::to_vec).collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let mut conn = tpp.client.connection(w.proxy.addr).await;
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::with_capacity(chunk.len());
            for body in chunk {
                let resp = conn
                    .send(
                        "POST",
                        "/register",
                        &[("content-type", "application/jwt")],
                        body,
                    )
                    .await;
                statuses.push(resp.status);
            }
            statuses
        }));
    }
    let mut refused_400 = 0usize;
    let mut full_503 = 0usize;
    for t in tasks {
        for s in t.await.expect("task") {
            match s {
                400 => refused_400 += 1,
                503 => full_503 += 1,
                other => panic!("unexpected status {other}"),
            }
        }
    }
    eprintln!("sent in {:?}", sending.elapsed());
    let bytes = metric(&w, "dcr_proxy_replay_cache_bytes").await;
    assert!(bytes <= BOUND, "{bytes} bytes over the bound");
    assert!(bytes >= BOUND * 0.8, "{bytes} bytes: the bound was reached");
    assert!(
        full_503 > 0,
        "past the bound new jtis are refused (fail closed)"
    );
    assert!(
        refused_400 < 2_000,
        "{refused_400} jtis remembered within 1 MiB"
    );
}

type PendingBody = BoxBody<Bytes, std::convert::Infallible>;

/// An h2 connection to the proxy with the TPP's certificate, for requests whose bodies never come.
async fn h2_sender(w: &World, tpp: &Tpp) -> hyper::client::conn::http2::SendRequest<PendingBody> {
    let mut config = (*tpp.client.config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(w.proxy.addr).await.expect("connect");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

fn request(w: &World, method: &str, path: &str, body: PendingBody) -> Request<PendingBody> {
    Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", w.proxy.addr.port()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .expect("request")
}

fn never() -> PendingBody {
    StreamBody::new(futures::stream::pending::<
        Result<Frame<Bytes>, std::convert::Infallible>,
    >())
    .boxed()
}

fn empty() -> PendingBody {
    http_body_util::Empty::new().map_err(|e| match e {}).boxed()
}

#[tokio::test]
async fn pass_through_past_the_concurrency_caps_answers_503_and_opens_nothing_upstream() {
    let w = World::start(Options {
        forward_extra:
            "max_concurrent_requests = 4\nmax_concurrent_per_connection = 2\nbody_timeout = \"3s\""
                .into(),
        ..Options::default()
    })
    .await;
    let tpp = w.tpp();
    let mut pending = Vec::new();
    let mut a = h2_sender(&w, &tpp).await;
    for _ in 0..2 {
        let send = a.send_request(request(&w, "POST", "/token", never()));
        pending.push(tokio::spawn(send));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = a
        .send_request(request(&w, "GET", "/hardening/cap", empty()))
        .await
        .expect("an answer");
    assert_eq!(third.status(), 503, "the connection's cap");
    let mut b = h2_sender(&w, &tpp).await;
    for _ in 0..2 {
        let send = b.send_request(request(&w, "POST", "/token", never()));
        pending.push(tokio::spawn(send));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = h2_sender(&w, &tpp).await;
    let over = c
        .send_request(request(&w, "GET", "/hardening/cap", empty()))
        .await
        .expect("an answer");
    assert_eq!(over.status(), 503, "the overall cap");
    // Bodies that never started opened no upstream request.
    assert!(w.upstream.requests("/token").await.is_empty());
    assert!(w.upstream.requests("/hardening/cap").await.is_empty());
    // The body timeout frees the places: those requests get 408, and new ones pass.
    for p in pending {
        let resp = p.await.expect("task").expect("an answer");
        assert_eq!(resp.status(), 408);
    }
    let after = c
        .send_request(request(&w, "GET", "/hardening/cap", empty()))
        .await
        .expect("an answer");
    assert_ne!(after.status(), 503);
    assert_eq!(w.upstream.requests("/hardening/cap").await.len(), 1);
    assert!(
        metric(
            &w,
            "dcr_proxy_forward_refused_total{reason=\"per_connection\"}"
        )
        .await
            >= 1.0
    );
    assert!(metric(&w, "dcr_proxy_forward_refused_total{reason=\"overall\"}").await >= 1.0);
}

#[tokio::test]
async fn oversized_headers_are_refused_with_431_and_nothing_reaches_the_upstream() {
    let w = World::ob().await;
    let tpp = w.tpp();
    let h1 = tpp.client.clone().http1_only();
    let kib = |n: usize| "a".repeat(n * 1024);
    let (auth_100, cookie_64, big_300, auth_12) = (kib(100), kib(64), kib(300), kib(12));
    type Case<'a> = (&'a str, &'a TlsClient, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "100 KiB Authorization",
            &h1,
            vec![("authorization", &auth_100)],
        ),
        ("64 KiB cookie", &h1, vec![("cookie", &cookie_64)]),
        ("300 KiB header", &h1, vec![("x-big", &big_300)]),
        // Small enough for the IdP to take, over our 8 KiB for one header.
        (
            "12 KiB Authorization over h1",
            &h1,
            vec![("authorization", &auth_12)],
        ),
        (
            "12 KiB Authorization over h2",
            &tpp.client,
            vec![("authorization", &auth_12)],
        ),
    ];
    for (what, client, headers) in &cases {
        let sent = client
            .try_request("GET", &w.proxy.url("/hardening/431"), headers, "")
            .await;
        let big = headers.iter().map(|(_, v)| v.len()).sum::<usize>() > 64 * 1024;
        match sent {
            Ok(resp) => assert_eq!(resp.status, 431, "{what}: {}", resp.text()),
            // Past hyper's buffer the 431 goes out while the client is still writing, and the close that
            // follows can reset the connection before the client reads it. Nothing went upstream either way.
            Err(e) if big => eprintln!("{what}: reset after the 431 ({e})"),
            Err(e) => panic!("{what}: {e}"),
        }
    }
    // Headers each under 8 KiB, over 32 KiB together.
    let seven = kib(7);
    let many: Vec<(&str, &str)> = ["x-a", "x-b", "x-c", "x-d", "x-e"]
        .iter()
        .map(|n| (*n, seven.as_str()))
        .collect();
    let resp = tpp
        .client
        .request("GET", &w.proxy.url("/hardening/431"), &many, "")
        .await;
    assert_eq!(resp.status, 431, "{}", resp.text());
    assert!(w.upstream.requests("/hardening/431").await.is_empty());
    // A request within the limits is passed through.
    let resp = tpp
        .client
        .request(
            "GET",
            &w.proxy.url("/hardening/ok"),
            &[("authorization", &kib(4))],
            "",
        )
        .await;
    assert_ne!(resp.status, 431);
    assert_eq!(w.upstream.requests("/hardening/ok").await.len(), 1);
    // The three under hyper's own buffer limit were refused by our check (the rest by hyper's).
    assert!(metric(&w, "dcr_proxy_headers_too_large_total").await >= 3.0);
}

#[tokio::test]
async fn malformed_chunked_bodies_answer_400_and_count_as_the_clients_fault() {
    let w = World::ob().await;
    let tpp = w.tpp();
    let overflow = b"POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffffff\r\nab\r\n0\r\n\r\n";
    let bare_lf = b"POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n";
    for (what, req) in [
        ("chunk-size overflow", &overflow[..]),
        ("bare LF", &bare_lf[..]),
    ] {
        assert_eq!(raw_h1_status(&w, &tpp, req).await, 400, "{what}");
    }
    assert!(
        metric(
            &w,
            "dcr_proxy_request_body_errors_total{reason=\"malformed\"}"
        )
        .await
            >= 2.0
    );
    assert!(
        metric(
            &w,
            "dcr_proxy_requests_total{route=\"forward\",method=\"POST\",outcome=\"4xx\",error_code=\"invalid_request\"}"
        )
        .await
            >= 2.0
    );
    assert_eq!(
        metric(
            &w,
            "dcr_proxy_requests_total{route=\"forward\",method=\"POST\",outcome=\"5xx\",error_code=\"upstream_unavailable\"}"
        )
        .await,
        0.0
    );
}
