//! Outbound HTTP(S) from the proxy (JWKS, the upstream's registration API, the CDR Register, CRLs): pooled,
//! bounded in time and size. The pass-through has its own connections (`forward::pool`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use url::Url;

use crate::body::RespBody;

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("request failed: {0}")]
    Io(String),
    #[error("bad request to {0}")]
    BadUrl(String),
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Request bodies are boxed so the same pool carries both our own small requests and the
/// pass-through's streamed ones.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, RespBody>,
    timeout: Duration,
}

/// The crypto provider every TLS config of ours uses: aws-lc-rs, for its RSA speed.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client TLS config of ours (no client certificate) trusting `roots`: every outbound TLS connection uses it.
pub fn client_tls(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    Ok(
        rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Trust roots: the operator's bundle when given (private PKI, test CAs), else the system's.
pub fn root_store(ca_bundle: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_bundle {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: no PEM certificates", path.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                // A broken system certificate should not stop the proxy; it just is not trusted.
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err("no system CA certificates found; set a ca_bundle".into());
            }
        }
    }
    Ok(roots)
}

impl HttpClient {
    pub fn new(
        ca_bundle: Option<&Path>,
        connect_timeout: Duration,
        timeout: Duration,
        https_only: bool,
    ) -> Result<Self, String> {
        let roots = root_store(ca_bundle)?;
        let pool = (Duration::from_secs(30), 32);
        Self::build(roots, connect_timeout, timeout, https_only, pool)
    }

    /// For servers reached over `http` or `https` (CRL distribution points). The trust roots are
    /// loaded only for `https`: an http server never uses them, and a slim sidecar image may have
    /// none. Idle connections live at most `pool_idle`, so one the upstream is about to close is
    /// not picked; at most `max_idle` are kept.
    pub fn for_upstream(
        https: bool,
        ca_bundle: Option<&Path>,
        connect_timeout: Duration,
        timeout: Duration,
        pool_idle: Duration,
        max_idle: usize,
    ) -> Result<Self, String> {
        let roots = if https {
            root_store(ca_bundle)?
        } else {
            rustls::RootCertStore::empty()
        };
        Self::build(
            roots,
            connect_timeout,
            timeout,
            false,
            (pool_idle, max_idle),
        )
    }

    /// `pool`: how long a connection may idle, and how many may idle per host.
    fn build(
        roots: rustls::RootCertStore,
        connect_timeout: Duration,
        timeout: Duration,
        https_only: bool,
        pool: (Duration, usize),
    ) -> Result<Self, String> {
        let tls = client_tls(roots)?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let connector = if https_only {
            builder.https_only().enable_http1().wrap_connector(http)
        } else {
            builder.https_or_http().enable_http1().wrap_connector(http)
        };
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(pool.0)
            .pool_max_idle_per_host(pool.1)
            .build(connector);
        Ok(HttpClient { inner, timeout })
    }

    /// Sends a request and reads at most `max_bytes` of the answer, all within the client's timeout.
    /// Redirects are never followed: callers decide what a 3xx means.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
        max_bytes: usize,
    ) -> Result<Reply, OutboundError> {
        let mut req = Request::builder().method(method).uri(url.as_str());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = Full::new(body.unwrap_or_default()).map_err(|never| match never {});
        let req = req
            .body(body.boxed())
            .map_err(|_| OutboundError::BadUrl(redact_url(url)))?;
        self.send_request(req, max_bytes).await
    }

    /// As [`send`](Self::send), for a request built by the caller (its URI taken as it is).
    pub async fn send_request(
        &self,
        req: Request<RespBody>,
        max_bytes: usize,
    ) -> Result<Reply, OutboundError> {
        let work = async {
            let resp = self.inner.request(req).await.map_err(request_error)?;
            read_reply(resp, max_bytes).await
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| OutboundError::Timeout(self.timeout))?
    }
}

/// Reads at most `max_bytes` of a response's body; a `Content-Length` over the bound is refused unread.
pub async fn read_reply<B>(resp: Response<B>, max_bytes: usize) -> Result<Reply, OutboundError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = resp.into_parts();
    if let Some(len) = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max_bytes as u64
    {
        return Err(OutboundError::TooLarge(max_bytes));
    }
    let body = Limited::new(body, max_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                OutboundError::TooLarge(max_bytes)
            } else {
                OutboundError::Io(e.to_string())
            }
        })?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

impl HttpClient {
    /// A form POST with the client's credentials in Basic auth, asking for JSON: the shape of RFC 6749 token,
    /// RFC 7662 introspection and RFC 7009 revocation requests.
    pub async fn post_form(
        &self,
        url: &Url,
        client_id: &str,
        secret: &crate::secret::Secret,
        form: Bytes,
        max_bytes: usize,
    ) -> Result<Reply, OutboundError> {
        let auth = basic_auth(client_id, secret);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ];
        self.send(Method::POST, url, &headers, Some(form), max_bytes)
            .await
    }
}

/// RFC 6749 §2.3.1: id and secret are form-urlencoded before they become the Basic user and password, so a `:`
/// in the id cannot shift where the secret starts.
pub fn basic_auth(client_id: &str, secret: &crate::secret::Secret) -> String {
    use base64::Engine as _;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(client_id), enc(secret.expose()));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn request_error(e: hyper_util::client::legacy::Error) -> OutboundError {
    if e.is_connect() {
        OutboundError::Connect(error_chain(&e))
    } else {
        OutboundError::Io(error_chain(&e))
    }
}

/// An error with its sources, `outer: inner: root`: hyper's own message alone ("client error
/// (Connect)") does not say what failed.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A URL safe to log: no userinfo, no query (either may hold a secret).
pub fn redact_url(u: &Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}
