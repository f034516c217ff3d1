//! Prometheus metrics: one process-wide registry, label values from small closed sets only
//! (never a client id, DN, path or token).

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub outcome: &'static str,
    pub error_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub operation: &'static str,
    pub profile: &'static str,
    pub outcome: &'static str,
    pub error_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// "data" (the mTLS port) or "admin".
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub listener: &'static str,
    /// "max_connections" or "per_address".
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegisterFeedLabels {
    /// "software_products" or "data_recipients".
    pub feed: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegisterStatusLabels {
    pub feed: &'static str,
    /// A Register status (ACTIVE, INACTIVE, ... or `other`), or a decision outcome.
    pub status: &'static str,
}

pub struct Metrics {
    registry: Registry,
    forward: ForwardSeries,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram>,
    pub upstream_duration: Family<OperationLabels, Histogram>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub jwks_fetches: Counter,
    pub jwks_fetch_failures: Counter,
    pub jwks_cache_hits: Counter,
    pub handshake_failures: Family<ReasonLabels, Counter>,
    /// CRLs past nextUpdate + crl_max_stale, plus CRL sources holding none; 0 when all are fresh.
    pub crl_stale: Gauge,
    pub crl_refresh_failures: Counter,
    pub revoked_connections_closed: Family<ReasonLabels, Counter>,
    pub store_errors: Counter,
    pub replay_rejections: Counter,
    pub replay_cache_bytes: Gauge,
    pub replay_cache_full: Counter,
    pub connections_open: Family<ListenerLabels, Gauge>,
    pub connections_refused: Family<RefusalLabels, Counter>,
    pub connections_idle_closed: Family<ListenerLabels, Counter>,
    pub accept_errors: Family<ListenerLabels, Counter>,
    pub headers_too_large: Counter,
    pub forward_in_flight: Gauge,
    pub forward_refused: Family<ReasonLabels, Counter>,
    pub request_body_errors: Family<ReasonLabels, Counter>,
    pub register_status_entries: Family<RegisterStatusLabels, Gauge>,
    pub register_status_fetch_failures: Family<RegisterFeedLabels, Counter>,
    pub register_status_age_seconds: Family<RegisterFeedLabels, Gauge>,
    pub register_status_stale: Family<RegisterFeedLabels, Gauge>,
    pub register_status_decisions: Family<RegisterStatusLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s: handshakes and JWT checks sit at the bottom, slow upstreams at the top.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("dcr_proxy");
    let requests = Family::<RequestLabels, Counter>::default();
    let request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(
        latency_histogram as fn() -> Histogram,
    );
    let upstream_duration = Family::<OperationLabels, Histogram>::new_with_constructor(
        latency_histogram as fn() -> Histogram,
    );
    let decisions = Family::<DecisionLabels, Counter>::default();
    let jwks_fetches = Counter::default();
    let jwks_fetch_failures = Counter::default();
    let jwks_cache_hits = Counter::default();
    let handshake_failures = Family::<ReasonLabels, Counter>::default();
    let crl_stale = Gauge::default();
    let crl_refresh_failures = Counter::default();
    let revoked_connections_closed = Family::<ReasonLabels, Counter>::default();
    let store_errors = Counter::default();
    let replay_rejections = Counter::default();
    let replay_cache_bytes = Gauge::default();
    let replay_cache_full = Counter::default();
    let connections_open = Family::<ListenerLabels, Gauge>::default();
    let connections_refused = Family::<RefusalLabels, Counter>::default();
    let connections_idle_closed = Family::<ListenerLabels, Counter>::default();
    let accept_errors = Family::<ListenerLabels, Counter>::default();
    let headers_too_large = Counter::default();
    let forward_in_flight = Gauge::default();
    let forward_refused = Family::<ReasonLabels, Counter>::default();
    let request_body_errors = Family::<ReasonLabels, Counter>::default();
    let register_status_entries = Family::<RegisterStatusLabels, Gauge>::default();
    let register_status_fetch_failures = Family::<RegisterFeedLabels, Counter>::default();
    let register_status_age_seconds = Family::<RegisterFeedLabels, Gauge>::default();
    let register_status_stale = Family::<RegisterFeedLabels, Gauge>::default();
    let register_status_decisions = Family::<RegisterStatusLabels, Counter>::default();
    registry.register(
        "requests",
        "Requests answered, by route, method, outcome and error code",
        requests.clone(),
    );
    registry.register(
        "request_duration_seconds",
        "Time from request to response headers, by route",
        request_duration.clone(),
    );
    registry.register(
        "upstream_duration_seconds",
        "Time spent waiting for the upstream IdP, by operation",
        upstream_duration.clone(),
    );
    registry.register(
        "registration_decisions",
        "Registration API decisions (the audit events), by operation, profile, outcome and error code",
        decisions.clone(),
    );
    registry.register(
        "jwks_fetches",
        "JWKS fetches from the network",
        jwks_fetches.clone(),
    );
    registry.register(
        "jwks_fetch_failures",
        "JWKS fetches that failed",
        jwks_fetch_failures.clone(),
    );
    registry.register(
        "jwks_cache_hits",
        "JWKS lookups answered from the cache",
        jwks_cache_hits.clone(),
    );
    registry.register(
        "tls_handshake_failures",
        "TLS handshakes that failed, by reason",
        handshake_failures.clone(),
    );
    registry.register(
        "crl_stale",
        "Client-certificate CRLs past nextUpdate plus crl_max_stale, and CRL sources holding none",
        crl_stale.clone(),
    );
    registry.register(
        "crl_refresh_failures",
        "CRL fetches and file reloads that failed (the CRL held before stays in force)",
        crl_refresh_failures.clone(),
    );
    registry.register(
        "revoked_connections_closed",
        "Open connections closed because the CRLs now in force refuse their client certificate, by reason",
        revoked_connections_closed.clone(),
    );
    registry.register(
        "store_errors",
        "Registration store operations that failed",
        store_errors.clone(),
    );
    registry.register(
        "replay_rejections",
        "Request JWTs refused because their jti was seen before",
        replay_rejections.clone(),
    );
    registry.register(
        "replay_cache_bytes",
        "Weighed size of the in-memory replay cache (sqlite backend), in bytes; bounded by store.replay_cache_bytes",
        replay_cache_bytes.clone(),
    );
    registry.register(
        "replay_cache_full",
        "Request JWTs refused with 503 because the replay cache was at store.replay_cache_bytes",
        replay_cache_full.clone(),
    );
    registry.register(
        "connections_open",
        "Connections open now, by listener",
        connections_open.clone(),
    );
    registry.register(
        "connections_refused",
        "Connections closed at accept because a cap was reached, by listener and cap",
        connections_refused.clone(),
    );
    registry.register(
        "connections_idle_closed",
        "Connections closed because no request came within the idle timeout, by listener",
        connections_idle_closed.clone(),
    );
    registry.register(
        "accept_errors",
        "accept() failures (e.g. out of file descriptors), by listener",
        accept_errors.clone(),
    );
    registry.register(
        "headers_too_large",
        "Requests refused with 431 because a header or all headers were over the limit",
        headers_too_large.clone(),
    );
    registry.register(
        "forward_in_flight",
        "Requests being passed through to the upstream now",
        forward_in_flight.clone(),
    );
    registry.register(
        "forward_refused",
        "Pass-through requests refused with 503 at a concurrency cap, by cap (overall, per_connection)",
        forward_refused.clone(),
    );
    registry.register(
        "request_body_errors",
        "Pass-through request bodies the client broke off, malformed or did not send in time, by reason",
        request_body_errors.clone(),
    );
    registry.register(
        "register_status_entries",
        "CDR Register status list entries held, by list and status",
        register_status_entries.clone(),
    );
    registry.register(
        "register_status_fetch_failures",
        "CDR Register status list fetches that failed (the list held before stays in force), by list",
        register_status_fetch_failures.clone(),
    );
    registry.register(
        "register_status_age_seconds",
        "Seconds since the CDR Register last confirmed a status list (200 or 304); -1 before the first",
        register_status_age_seconds.clone(),
    );
    registry.register(
        "register_status_stale",
        "1 while a CDR Register status list is older than interval plus register_status_max_stale",
        register_status_stale.clone(),
    );
    registry.register(
        "register_status_decisions",
        "CDR Register status refusals (not_active, unconfirmed) and fail-open passes (passed_unconfirmed), by list",
        register_status_decisions.clone(),
    );
    Metrics {
        registry,
        requests,
        request_duration,
        upstream_duration,
        decisions,
        jwks_fetches,
        jwks_fetch_failures,
        jwks_cache_hits,
        handshake_failures,
        crl_stale,
        crl_refresh_failures,
        revoked_connections_closed,
        store_errors,
        replay_rejections,
        replay_cache_bytes,
        replay_cache_full,
        connections_open,
        connections_refused,
        connections_idle_closed,
        accept_errors,
        headers_too_large,
        forward_in_flight,
        forward_refused,
        request_body_errors,
        register_status_entries,
        register_status_fetch_failures,
        register_status_age_seconds,
        register_status_stale,
        register_status_decisions,
        forward: ForwardSeries {
            upstream: OnceLock::new(),
            duration: OnceLock::new(),
            ok: [OnceLock::new(), OnceLock::new()],
        },
    }
});

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn observe_upstream(&self, operation: &'static str, elapsed: Duration) {
        if operation == "forward" {
            return self
                .forward
                .upstream
                .get_or_init(|| {
                    self.upstream_duration
                        .get_or_create(&OperationLabels { operation })
                        .clone()
                })
                .observe(elapsed.as_secs_f64());
        }
        self.upstream_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// One answered request: `dcr_proxy_requests_total` and `dcr_proxy_request_duration_seconds`.
    pub fn observe_request(&self, labels: &RequestLabels, elapsed: Duration) {
        if labels.route == "forward" {
            // The pass-through's usual outcome is looked up once (each handle shares its series): a family
            // lookup hashes the label set and takes the family's lock, three times per request otherwise.
            let usual = match labels.method {
                "GET" => Some(&self.forward.ok[0]),
                "POST" => Some(&self.forward.ok[1]),
                _ => None,
            }
            .filter(|_| labels.outcome == "2xx" && labels.error_code == "none");
            match usual {
                Some(cell) => cell
                    .get_or_init(|| self.requests.get_or_create(labels).clone())
                    .inc(),
                None => self.requests.get_or_create(labels).inc(),
            };
            self.forward
                .duration
                .get_or_init(|| {
                    self.request_duration
                        .get_or_create(&RouteLabels { route: "forward" })
                        .clone()
                })
                .observe(elapsed.as_secs_f64());
            return;
        }
        self.requests.get_or_create(labels).inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                route: labels.route,
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// The pass-through's series, resolved on first use.
struct ForwardSeries {
    upstream: OnceLock<Histogram>,
    duration: OnceLock<Histogram>,
    /// GET and POST answered 2xx without an error code.
    ok: [OnceLock<Counter>; 2],
}

/// A method as a closed label value.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// rustls' handshake errors folded into a few reasons an operator can act on.
pub fn handshake_reason(e: &std::io::Error) -> &'static str {
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => "closed",
            _ => "io",
        };
    };
    use rustls::{CertificateError, Error};
    match inner {
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_ca",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired_certificate",
        Error::InvalidCertificate(CertificateError::Revoked) => "revoked_certificate",
        // No fresh CRL speaks for the certificate (closed policy): see tls::revocation.
        Error::InvalidCertificate(
            CertificateError::UnknownRevocationStatus
            | CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. },
        ) => "revocation_unknown",
        Error::InvalidCertificate(_) => "bad_certificate",
        Error::PeerIncompatible(_) => "incompatible",
        Error::AlertReceived(_) => "alert_received",
        Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } => {
            "protocol"
        }
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_encodes_with_closed_labels() {
        METRICS
            .requests
            .get_or_create(&RequestLabels {
                route: "register",
                method: "POST",
                outcome: "4xx",
                error_code: "invalid_redirect_uri",
            })
            .inc();
        METRICS.observe_upstream("create", Duration::from_millis(3));
        let text = METRICS.encode();
        assert!(text.contains("dcr_proxy_requests_total{route=\"register\",method=\"POST\",outcome=\"4xx\",error_code=\"invalid_redirect_uri\"} 1"), "{text}");
        assert!(
            text.contains("dcr_proxy_upstream_duration_seconds_bucket"),
            "{text}"
        );
    }
}
