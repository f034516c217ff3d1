//! HTTP clients for talking to the proxy and the test servers: HTTPS with an optional client certificate
//! (HTTP/1.1 or h2 by ALPN), a bare handshake probe, a kept-alive connection, and plain HTTP.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::pki::ClientCert;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long [`TlsClient::connect_only`] listens after its side of the handshake is done. Under TLS 1.3 the client
/// finishes first and learns that the server refused its certificate only from the alert that follows; on
/// loopback that arrives within milliseconds.
pub const POST_HANDSHAKE_GRACE: Duration = Duration::from_millis(300);

/// A hung server fails the test instead of stalling the whole CI run.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The name the test servers' certificates are issued for; addresses given as a `SocketAddr` are verified as this.
const SERVER_NAME: &str = "localhost";

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: Version,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "response body (status {}) is not JSON ({err}): {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a completed handshake negotiated.
#[derive(Clone, Debug)]
pub struct Handshake {
    pub alpn: Option<Vec<u8>>,
    pub version: Option<rustls::ProtocolVersion>,
    /// The server's chain, leaf first.
    pub server_certs: Vec<Vec<u8>>,
}

impl Handshake {
    fn of(stream: &TlsStream<TcpStream>) -> Self {
        let (_, conn) = stream.get_ref();
        Self {
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn.protocol_version(),
            server_certs: conn
                .peer_certificates()
                .unwrap_or_default()
                .iter()
                .map(|c| c.to_vec())
                .collect(),
        }
    }
}

/// An HTTPS client trusting one CA bundle and optionally presenting a client certificate. Each call opens a new
/// connection; the rustls session cache is left on, so a server that allowed resumption would be caught skipping
/// its client-certificate check.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    pub fn new(ca_pem: &str, cert: Option<&ClientCert>) -> Self {
        let mut roots = RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(der.expect("CA bundle is valid PEM"))
                .expect("CA certificate is acceptable to rustls");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default TLS versions")
            .with_root_certificates(roots);
        let mut config = match cert {
            Some(cert) => builder
                .with_client_auth_cert(
                    std::iter::once(&cert.cert_der)
                        .chain(&cert.chain_der)
                        .map(|der| CertificateDer::from(der.clone()))
                        .collect(),
                    PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
                        .expect("client key is valid PEM"),
                )
                .expect("rustls accepts the client certificate and key"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self {
            config: Arc::new(config),
        }
    }

    /// Offers only `http/1.1` in ALPN.
    pub fn http1_only(self) -> Self {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            config: Arc::new(config),
        }
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// One request on a new connection; panics if no response comes back.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response {
        self.try_request(method, url, headers, body)
            .await
            .unwrap_or_else(|err| panic!("{method} {url} failed: {err}"))
    }

    pub async fn try_request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, Error> {
        let target = Target::parse(url, "https")?;
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
        let (handshake, stream) = self.handshake(tcp, &target.host).await?;
        let (mut sender, task) = http_handshake(stream, &handshake).await?;
        let response = sender
            .send(
                method,
                &target.authority,
                "https",
                &target.path,
                headers,
                body.into(),
            )
            .await;
        task.abort();
        response
    }

    /// Connects and completes the TLS handshake, sending no request. Err carries the TLS failure (rustls errors
    /// are inside the `io::Error`), including a rejection the server only announces after the client finished.
    pub async fn connect_only(&self, addr: SocketAddr) -> io::Result<Handshake> {
        let tcp = TcpStream::connect(addr).await?;
        let (handshake, mut stream) = self.handshake(tcp, SERVER_NAME).await?;
        let mut buf = [0u8; 1];
        match tokio::time::timeout(POST_HANDSHAKE_GRACE, stream.read(&mut buf)).await {
            Err(_elapsed) => Ok(handshake),
            Ok(Ok(0)) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection right after the handshake",
            )),
            Ok(Ok(_)) => Ok(handshake),
            Ok(Err(err)) => Err(err),
        }
    }

    /// A connection kept open across requests, e.g. to see it survive a certificate reload.
    pub async fn connection(&self, addr: SocketAddr) -> Conn {
        self.try_connection(addr)
            .await
            .unwrap_or_else(|err| panic!("connecting to {addr} failed: {err}"))
    }

    pub async fn try_connection(&self, addr: SocketAddr) -> Result<Conn, Error> {
        let tcp = TcpStream::connect(addr).await?;
        let (handshake, stream) = self.handshake(tcp, SERVER_NAME).await?;
        let (sender, task) = http_handshake(stream, &handshake).await?;
        Ok(Conn {
            sender,
            task,
            authority: format!("{SERVER_NAME}:{}", addr.port()),
            handshake,
        })
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
    ) -> io::Result<(Handshake, TlsStream<TcpStream>)> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let connecting = TlsConnector::from(self.config.clone()).connect(name, tcp);
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, connecting)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        Ok((Handshake::of(&stream), stream))
    }
}

/// The TLS alert the peer sent, if that is why `err` happened (e.g. `UnknownCA`, `CertificateRequired`).
pub fn tls_alert(err: &io::Error) -> Option<rustls::AlertDescription> {
    match err.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

/// One kept-alive HTTPS connection (HTTP/1.1 or h2, whichever ALPN chose).
pub struct Conn {
    sender: Sender,
    task: JoinHandle<()>,
    authority: String,
    pub handshake: Handshake,
}

impl Conn {
    /// `path` is origin-form: `/register?x=y`.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response {
        self.try_send(method, path, headers, body)
            .await
            .unwrap_or_else(|err| {
                panic!("{method} {path} on a kept-alive connection failed: {err}")
            })
    }

    pub async fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, Error> {
        self.sender
            .send(method, &self.authority, "https", path, headers, body.into())
            .await
    }

    /// True once the server (or an error) has closed the connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Plain-HTTP request on a new connection (HTTP/1.1), e.g. to the admin listener or the upstream.
pub async fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    try_http_request(method, url, headers, body)
        .await
        .unwrap_or_else(|err| panic!("{method} {url} failed: {err}"))
}

pub async fn try_http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Response, Error> {
    let target = Target::parse(url, "http")?;
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = Sender::H1(sender)
        .send(
            method,
            &target.authority,
            "http",
            &target.path,
            headers,
            body.into(),
        )
        .await;
    task.abort();
    response
}

struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str, scheme: &str) -> Result<Self, Error> {
        let parsed = url::Url::parse(url)?;
        if parsed.scheme() != scheme {
            return Err(format!("{url}: expected a {scheme} URL").into());
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("{url}: no host").into()),
        };
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| format!("{url}: no port"))?;
        let path = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        Ok(Self {
            host,
            port,
            authority: parsed.authority().to_owned(),
            path,
        })
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

async fn http_handshake<S>(
    stream: S,
    handshake: &Handshake,
) -> Result<(Sender, JoinHandle<()>), Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let io = TokioIo::new(stream);
    if handshake.alpn.as_deref() == Some(b"h2") {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((Sender::H2(sender), task))
    } else {
        let (sender, conn) = http1::handshake(io).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((Sender::H1(sender), task))
    }
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    async fn send(
        &mut self,
        method: &str,
        authority: &str,
        scheme: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, Error> {
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.send_untimed(method, authority, scheme, path, headers, body),
        )
        .await
        .map_err(|_| format!("no response within {REQUEST_TIMEOUT:?}"))?
    }

    async fn send_untimed(
        &mut self,
        method: &str,
        authority: &str,
        scheme: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, Error> {
        let method = Method::from_bytes(method.as_bytes())?;
        // h2 carries the authority in :authority, which hyper takes from an absolute URI; HTTP/1.1 wants
        // origin-form plus Host.
        let uri = match self {
            Sender::H1(_) => path.to_owned(),
            Sender::H2(_) => format!("{scheme}://{authority}{path}"),
        };
        let mut request = Request::builder().method(method).uri(uri);
        let has_host = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host"));
        if matches!(self, Sender::H1(_)) && !has_host {
            request = request.header(http::header::HOST, authority);
        }
        let mut request = request.body(Full::new(body))?;
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        let response = match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(request).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(request).await?
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            version: parts.version,
        })
    }
}

/// The registration API's error shape: `status`, the profile's `error` code, and an `error_description` long
/// enough for an integrator to act on. `case` names the input in the failure message.
pub fn assert_error(resp: &Response, status: u16, code: &str, case: &str) {
    let body = resp.json();
    assert_eq!(resp.status, status, "{case}: {body}");
    assert_eq!(body["error"], code, "{case}: {body}");
    let desc = body["error_description"].as_str().unwrap_or("");
    assert!(
        desc.len() > 10,
        "{case}: a description an integrator can act on: {body}"
    );
}
