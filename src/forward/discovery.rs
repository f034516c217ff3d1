//! The discovery documents (OpenID Connect, RFC 8414): fetched from the IdP, cached, and rewritten
//! so `registration_endpoint` names the proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use serde_json::{Map, Value};

use super::headers::set_forwarding_headers;
use super::{ForwardConfig, Forwarder};
use crate::body::{RespBody, boxed};
use crate::error::ProxyError;
use crate::outbound::OutboundError;

/// Discovery documents are a few KiB; a larger answer is not one.
const MAX_DISCOVERY_BYTES: usize = 256 * 1024;

/// Distinct discovery paths cached at once. Any path ending in a well-known suffix is fetched, so
/// the bound keeps a client from growing the cache without limit.
const MAX_DISCOVERY_ENTRIES: u64 = 64;

/// What the forwarder keeps for discovery: the rewrite's inputs and the cache of its outputs.
pub(super) struct Discovery {
    registration_endpoint: String,
    mtls_endpoint_aliases: Option<Map<String, Value>>,
    cache: Option<moka::future::Cache<String, Bytes>>,
    fetches: AtomicU64,
}

impl Discovery {
    pub(super) fn new(cfg: &ForwardConfig) -> Discovery {
        let cache = (!cfg.discovery_ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(MAX_DISCOVERY_ENTRIES)
                // moka refuses more than 1000 years; a day is already longer than any sane TTL.
                .time_to_live(cfg.discovery_ttl.min(Duration::from_secs(86_400)))
                .build()
        });
        let public = &cfg.public_url[..url::Position::AfterPath];
        Discovery {
            registration_endpoint: format!("{}/register", public.trim_end_matches('/')),
            mtls_endpoint_aliases: cfg.mtls_endpoint_aliases.clone(),
            cache,
            fetches: AtomicU64::new(0),
        }
    }
}

impl Forwarder {
    /// How many times discovery was fetched from the upstream (cache misses).
    pub fn discovery_fetches(&self) -> u64 {
        self.discovery.fetches.load(Ordering::Relaxed)
    }

    pub(super) async fn discovery(&self, path: &str) -> Response<RespBody> {
        // The query is ignored, so one cached document serves every spelling of the request.
        let result = match &self.discovery.cache {
            Some(cache) => {
                cache
                    .try_get_with(path.to_owned(), self.fetch_discovery(path))
                    .await
            }
            None => self.fetch_discovery(path).await.map_err(Arc::new),
        };
        match result {
            Ok(body) => {
                let mut resp = Response::new(Full::new(body));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                boxed(resp)
            }
            Err(e) => match &*e {
                DiscoveryError::Status {
                    status,
                    content_type,
                    body,
                } => {
                    let mut resp = Response::new(Full::new(body.clone()));
                    *resp.status_mut() = *status;
                    if let Some(ct) = content_type {
                        resp.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
                    }
                    boxed(resp)
                }
                DiscoveryError::Fetch(OutboundError::Timeout(_)) => {
                    tracing::warn!(
                        failure = "upstream",
                        reason = "timeout",
                        "discovery fetch timed out"
                    );
                    boxed(ProxyError::UpstreamTimeout.to_response())
                }
                other => {
                    tracing::warn!(failure = "upstream", reason = %other, "discovery fetch failed");
                    boxed(ProxyError::UpstreamUnavailable(other.to_string()).to_response())
                }
            },
        }
    }

    async fn fetch_discovery(&self, path: &str) -> Result<Bytes, DiscoveryError> {
        self.discovery.fetches.fetch_add(1, Ordering::Relaxed);
        let uri = self
            .upstream_uri(path, None)
            .map_err(|e| DiscoveryError::Uri(e.to_string()))?;
        // Fetched as if the public host had asked, whoever triggered the fetch, so the cached
        // document is the same for every client.
        let mut headers = HeaderMap::new();
        set_forwarding_headers(&mut headers, None, &self.public_authority);
        headers.insert(header::HOST, self.upstream_host.clone());
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let mut req = Request::new(Empty::<Bytes>::new().map_err(|n| match n {}).boxed());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;

        let reply = self.client.send_request(req, MAX_DISCOVERY_BYTES).await?;
        if reply.status != StatusCode::OK {
            // Not cached: a passing upstream error must not outlive itself.
            return Err(DiscoveryError::Status {
                status: reply.status,
                content_type: reply.headers.get(header::CONTENT_TYPE).cloned(),
                body: reply.body,
            });
        }
        rewrite_discovery(
            &reply.body,
            &self.discovery.registration_endpoint,
            self.discovery.mtls_endpoint_aliases.as_ref(),
        )
        .map(Bytes::from)
    }
}

#[derive(Debug, thiserror::Error)]
enum DiscoveryError {
    #[error("the upstream answered HTTP {status}")]
    Status {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    #[error(transparent)]
    Fetch(#[from] OutboundError),
    #[error("document is not a JSON object: {0}")]
    NotJson(String),
    #[error("cannot build the upstream URI: {0}")]
    Uri(String),
}

/// Only `registration_endpoint` (and `mtls_endpoint_aliases` when configured) change; every other
/// member keeps its value. Without serde_json's `preserve_order` the members come out sorted,
/// which JSON objects do not care about.
fn rewrite_discovery(
    body: &[u8],
    registration_endpoint: &str,
    mtls_endpoint_aliases: Option<&Map<String, Value>>,
) -> Result<Vec<u8>, DiscoveryError> {
    let mut doc: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| DiscoveryError::NotJson(e.to_string()))?;
    doc.insert(
        "registration_endpoint".into(),
        Value::String(registration_endpoint.into()),
    );
    if let Some(aliases) = mtls_endpoint_aliases {
        doc.insert(
            "mtls_endpoint_aliases".into(),
            Value::Object(aliases.clone()),
        );
    }
    serde_json::to_vec(&doc).map_err(|e| DiscoveryError::NotJson(e.to_string()))
}

/// OpenID Connect discovery (`<issuer>/.well-known/openid-configuration`, so Keycloak's
/// `/realms/<realm>/...` and AM's `/oauth2/realms/...` too) and RFC 8414 metadata, either appended
/// to the issuer path or inserted before it.
pub(super) fn is_discovery_path(path: &str) -> bool {
    const SUFFIXES: [&str; 2] = [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ];
    SUFFIXES.iter().any(|s| {
        path.ends_with(s)
            || path
                .strip_prefix(s)
                .and_then(|issuer| issuer.strip_prefix('/'))
                .is_some_and(|issuer| !issuer.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_paths_are_recognised_for_every_issuer_shape() {
        for p in [
            "/.well-known/openid-configuration",
            "/realms/bank/.well-known/openid-configuration",
            "/am/oauth2/realms/root/realms/alpha/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
            "/.well-known/oauth-authorization-server/realms/bank",
        ] {
            assert!(is_discovery_path(p), "{p}");
        }
        for p in [
            "/.well-known/openid-configuration/",
            "/.well-known/jwks.json",
            "/openid-configuration",
        ] {
            assert!(!is_discovery_path(p), "{p}");
        }
    }

    #[test]
    fn discovery_rewrite_touches_only_the_registration_endpoint_and_aliases() {
        let upstream = serde_json::json!({
            "issuer": "https://bank.example.com",
            "registration_endpoint": "http://10.0.0.7:3000/reg",
            "token_endpoint": "https://bank.example.com/token",
            "scopes_supported": ["openid", "accounts"],
            "nested": {"a": 1.5, "b": null},
            "big": 12345678901234567u64
        });
        let mut aliases = Map::new();
        aliases.insert(
            "token_endpoint".into(),
            Value::String("https://mtls.bank.example.com/token".into()),
        );
        let out = rewrite_discovery(
            upstream.to_string().as_bytes(),
            "https://proxy.example.com/register",
            Some(&aliases),
        )
        .expect("rewrites");
        let out: Value = serde_json::from_slice(&out).expect("json");
        let mut expected = upstream.clone();
        expected["registration_endpoint"] = "https://proxy.example.com/register".into();
        expected["mtls_endpoint_aliases"] = Value::Object(aliases);
        assert_eq!(out, expected);

        assert!(matches!(
            rewrite_discovery(b"[1]", "x", None),
            Err(DiscoveryError::NotJson(_))
        ));
        assert!(matches!(
            rewrite_discovery(b"<html>", "x", None),
            Err(DiscoveryError::NotJson(_))
        ));
    }
}
