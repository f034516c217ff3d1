//! The plaintext admin listener: /live, /ready, /metrics. It is off the mTLS port because the kubelet
//! and Prometheus present no client certificate; bind it to the pod network only.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Url;

use crate::metrics::METRICS;
use crate::outbound::HttpClient;
use crate::store::RegistrationStore;

/// What /ready checks. Results of the network checks are reused for a few seconds so a tight probe
/// period cannot turn into load on the IdP or the database.
pub struct Readiness {
    pub draining: AtomicBool,
    store: Arc<dyn RegistrationStore>,
    upstream_discovery: Url,
    http: HttpClient,
    last: tokio::sync::Mutex<Option<(Instant, Failures)>>,
}

/// Failed readiness checks: (check name, why).
pub type Failures = Vec<(&'static str, String)>;

const READY_CACHE: Duration = Duration::from_secs(2);

impl Readiness {
    pub fn new(store: Arc<dyn RegistrationStore>, upstream_base: &Url, http: HttpClient) -> Self {
        let upstream_discovery = upstream_base
            .join(".well-known/openid-configuration")
            .unwrap_or_else(|_| upstream_base.clone());
        Readiness {
            draining: AtomicBool::new(false),
            store,
            upstream_discovery,
            http,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Failed checks by name; empty means ready.
    pub async fn failures(&self) -> Failures {
        if self.draining.load(Ordering::Relaxed) {
            return vec![("draining", "shutting down".into())];
        }
        let mut last = self.last.lock().await;
        if let Some((at, f)) = last.as_ref()
            && at.elapsed() < READY_CACHE
        {
            return f.clone();
        }
        let mut failed = Vec::new();
        if let Err(e) = self.store.ping().await {
            failed.push(("store", e.to_string()));
        }
        match self
            .http
            .send(Method::GET, &self.upstream_discovery, &[], None, 512 * 1024)
            .await
        {
            Ok(r) if r.status.is_success() => {}
            Ok(r) => failed.push((
                "upstream",
                format!("discovery answered HTTP {}", r.status.as_u16()),
            )),
            Err(e) => failed.push(("upstream", e.to_string())),
        }
        *last = Some((Instant::now(), failed.clone()));
        failed
    }
}

pub async fn run(
    listener: TcpListener,
    ready: Arc<Readiness>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let ready = ready.clone();
                async move { Ok::<_, Infallible>(handle(&ready, req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn handle(ready: &Readiness, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET only\n".into(),
            "text/plain",
        );
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/ready" => {
            let failed = ready.failures().await;
            if failed.is_empty() {
                text(StatusCode::OK, "ready\n".into(), "text/plain")
            } else {
                let checks: serde_json::Map<String, serde_json::Value> = failed
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect();
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "ready": false, "failed": checks }).to_string(),
                    "application/json",
                )
            }
        }
        "/metrics" => text(
            StatusCode::OK,
            METRICS.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}
