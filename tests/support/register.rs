//! A CDR Register stand-in over real HTTPS: the Get Software Products Statuses and Get Data Recipients Statuses
//! endpoints (x-v 3 shapes, `Etag`, 304 on a matching `If-None-Match`), with statuses a test changes mid-run and
//! a switch that makes both answer 503.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::pki::Pki;

pub const PRODUCTS_PATH: &str =
    "/cdr-register/v1/all/data-recipients/brands/software-products/status";
pub const RECIPIENTS_PATH: &str = "/cdr-register/v1/all/data-recipients/status";

/// One list: id → status, and a version that moves with every change (the ETag).
#[derive(Default)]
struct List {
    statuses: BTreeMap<String, String>,
    version: u64,
}

#[derive(Default)]
struct State {
    products: List,
    recipients: List,
    failing: bool,
    /// (path, status answered, whether the request carried If-None-Match).
    seen: Vec<(String, u16, bool)>,
}

type Shared = Arc<Mutex<State>>;

pub struct RegisterStub {
    addr: SocketAddr,
    state: Shared,
    accept: JoinHandle<()>,
}

fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RegisterStub {
    pub async fn start(pki: &Pki) -> Self {
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
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the Register stub");
        let addr = listener.local_addr().expect("listener has an address");
        let state = Shared::default();
        let accept = tokio::spawn(accept_loop(listener, acceptor, state.clone()));
        RegisterStub {
            addr,
            state,
            accept,
        }
    }

    /// `https://localhost:PORT/path`: the name the Pki server certificate is issued for.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn set_product(&self, software_id: &str, status: &str) {
        let mut s = lock(&self.state);
        s.products
            .statuses
            .insert(software_id.to_owned(), status.to_owned());
        s.products.version += 1;
    }

    pub fn set_recipient(&self, legal_entity_id: &str, status: &str) {
        let mut s = lock(&self.state);
        s.recipients
            .statuses
            .insert(legal_entity_id.to_owned(), status.to_owned());
        s.recipients.version += 1;
    }

    /// Both endpoints answer 503 while `failing`.
    pub fn set_failing(&self, failing: bool) {
        lock(&self.state).failing = failing;
    }

    /// Answers with `status` to `path` so far, and how many of those requests were conditional.
    pub fn answered(&self, path: &str, status: u16) -> (usize, usize) {
        let s = lock(&self.state);
        let hits: Vec<_> = s
            .seen
            .iter()
            .filter(|(p, st, _)| p == path && *st == status)
            .collect();
        (hits.len(), hits.iter().filter(|(_, _, c)| *c).count())
    }
}

impl Drop for RegisterStub {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: Shared) {
    super::jwks_server::serve_https(listener, acceptor, move |req| respond(state.clone(), req))
        .await;
}

async fn respond(
    state: Shared,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let conditional = req.headers().get(header::IF_NONE_MATCH).cloned();
    let mut s = lock(&state);
    let answer = |s: &mut State, status: u16, etag: Option<String>, body: Bytes| {
        s.seen.push((path.clone(), status, conditional.is_some()));
        let mut r = Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-v", "3");
        if let Some(e) = etag {
            r = r.header(header::ETAG, e);
        }
        Ok(r.body(Full::new(body)).expect("a response builds"))
    };
    // The standards make x-v mandatory; a request without it is the proxy's bug, and shows as a 400 here.
    if req.headers().get("x-v").is_none() {
        return answer(&mut s, 400, None, Bytes::from_static(b"{\"errors\":[]}"));
    }
    if s.failing {
        return answer(&mut s, 503, None, Bytes::new());
    }
    let (list, id_key, prefix) = match path.as_str() {
        PRODUCTS_PATH => (&s.products, "softwareProductId", "p"),
        RECIPIENTS_PATH => (&s.recipients, "legalEntityId", "r"),
        _ => return answer(&mut s, 404, None, Bytes::new()),
    };
    let etag = format!("\"{prefix}-{}\"", list.version);
    if conditional.as_ref().and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return answer(&mut s, 304, Some(etag), Bytes::new());
    }
    let data: Vec<_> = list
        .statuses
        .iter()
        .map(|(id, st)| json!({ id_key: id, "status": st }))
        .collect();
    let body = json!({"data": data, "links": {"self": path}, "meta": {}}).to_string();
    answer(&mut s, 200, Some(etag), Bytes::from(body))
}
