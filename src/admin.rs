//! The plaintext admin listener: /live, /ready, /metrics, /register-status. It is off the mTLS port because
//! the kubelet and Prometheus present no client certificate; bind it to the pod network only.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Url;

use crate::listener::{AcceptErrors, Activity, Gate, Guarded, drive};
use crate::metrics::METRICS;
use crate::outbound::HttpClient;
use crate::register_status::RegisterStatus;
use crate::store::RegistrationStore;

/// What /ready checks. Results of the network checks are reused for a few seconds so a tight probe
/// period cannot turn into load on the IdP or the database.
pub struct Readiness {
    pub draining: AtomicBool,
    store: Arc<dyn RegistrationStore>,
    upstream_discovery: Url,
    http: HttpClient,
    last: tokio::sync::Mutex<Option<(Instant, Failures)>>,
    /// Listed at /register-status when configured.
    register_status: Option<Arc<RegisterStatus>>,
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
            register_status: None,
        }
    }

    /// The CDR Register status lists to show at /register-status.
    pub fn with_register_status(self, status: Option<Arc<RegisterStatus>>) -> Self {
        Readiness {
            register_status: status,
            ..self
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

/// `[admin]` limits: the probes and the scraper need a handful of connections, held briefly.
pub struct AdminLimits {
    pub gate: Arc<Gate>,
    pub idle_timeout: Duration,
}

pub async fn run(
    listener: TcpListener,
    ready: Arc<Readiness>,
    limits: AdminLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = Arc::new(limits);
    let mut accept_errors = AcceptErrors::new("admin");
    loop {
        let (tcp, addr) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => {
                    accept_errors.succeeded();
                    a
                }
                Err(e) => {
                    let wait = accept_errors.failed(&e);
                    tokio::time::sleep(wait).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(slot) = limits.gate.admit(addr.ip()) else {
            drop(tcp);
            continue;
        };
        let ready = ready.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let activity = Activity::new();
            let svc = {
                let activity = activity.clone();
                service_fn(move |req| {
                    let busy = activity.begin();
                    let ready = ready.clone();
                    async move {
                        let resp = handle(&ready, req).await;
                        Ok::<_, Infallible>(resp.map(|b| Guarded::new(b, busy)))
                    }
                })
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.idle_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(8);
            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
            let _ = drive(
                conn,
                |c| c.graceful_shutdown(),
                &activity,
                limits.idle_timeout,
                shutdown,
                "admin",
            )
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
        // The statuses the proxy holds and acts on, for an operator asking why a client is refused.
        "/register-status" => match &ready.register_status {
            Some(s) => text(StatusCode::OK, s.snapshot().to_string(), "application/json"),
            None => text(
                StatusCode::NOT_FOUND,
                "the CDR Register status check is not configured\n".into(),
                "text/plain",
            ),
        },
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
