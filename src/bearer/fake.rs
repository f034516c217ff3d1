//! Test double of an RFC 7662 introspection endpoint and an RFC 7009 revocation endpoint, with the
//! configuration and token helpers the bearer unit tests share; the end-to-end tests use the real oidc-provider.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use url::Url;

use super::{BearerConfig, BearerMode};
use crate::secret::Secret;

pub const CLIENT: &str = "client-1";
pub const X5T: &str = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2";

pub fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("test header value")
}

/// One request as the double saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub body: String,
}

#[derive(Default)]
pub struct FakeState {
    pub answers: HashMap<String, Value>,
    pub status: Option<u16>,
    pub delay: Option<Duration>,
    pub seen: Vec<Seen>,
}

/// A test double of an RFC 7662 introspection endpoint (`/introspect`) and RFC 7009 revocation endpoint
/// (`/revoke`); the lead's end-to-end tests use the real oidc-provider instead.
pub struct FakeIntrospection {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    task: JoinHandle<()>,
}

impl Drop for FakeIntrospection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeIntrospection {
    pub fn answer(&self, token: &str, v: Value) {
        self.lock().answers.insert(token.into(), v);
    }
    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state lock")
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }
    pub fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}{path}", self.addr)).expect("url")
    }
}

pub async fn fake_introspection_endpoint() -> FakeIntrospection {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let state = Arc::new(Mutex::new(FakeState::default()));
    let st = state.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let st = st.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| fake_answer(st.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    FakeIntrospection { addr, state, task }
}

async fn fake_answer(
    st: Arc<Mutex<FakeState>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let token = url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let path = parts.uri.path().to_string();
    let (status, delay, answer) = {
        let mut s = st.lock().expect("fake state lock");
        s.seen.push(Seen {
            path: path.clone(),
            authorization: header("authorization"),
            content_type: header("content-type"),
            accept: header("accept"),
            body,
        });
        if path == "/revoke" {
            s.answers.remove(&token);
            (200, None, json!({}))
        } else {
            let answer = s
                .answers
                .get(&token)
                .cloned()
                .unwrap_or_else(|| json!({"active": false}));
            (s.status.unwrap_or(200), s.delay, answer)
        }
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut resp = Response::new(Full::new(Bytes::from(answer.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).expect("status");
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// A CA bundle of our own, so the tests do not depend on the machine having system roots.
pub fn ca_bundle() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("rcgen certificate");
        let path = std::env::temp_dir().join(format!(
            "dcr-proxy-bearer-test-ca-{}.pem",
            std::process::id()
        ));
        std::fs::write(&path, cert.cert.pem()).expect("write CA bundle");
        path
    })
    .clone()
}

pub fn config(fake: &FakeIntrospection) -> BearerConfig {
    BearerConfig {
        mode: BearerMode::Introspection {
            endpoint: fake.url("/introspect"),
            client_id: "dcr proxy:1".into(),
            client_secret: Secret::new("s3cr+t/ w:x&é"),
        },
        revocation_endpoint: Some(fake.url("/revoke")),
        required_scope: Some("cdr:registration".into()),
        require_certificate_binding: false,
        cache_ttl: Duration::from_secs(60),
        max_token_len: 8192,
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
        ca_bundle: Some(ca_bundle()),
    }
}

pub fn active(client_id: &str, scope: &str) -> Value {
    json!({"active": true, "client_id": client_id, "scope": scope,
           "exp": crate::jwt::now() + 600, "token_type": "Bearer"})
}

pub fn bearer(token: &str) -> HeaderValue {
    hv(&format!("Bearer {token}"))
}
