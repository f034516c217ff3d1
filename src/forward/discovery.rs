//! The discovery documents (OpenID Connect, RFC 8414): fetched from the IdP, cached, and rewritten
//! so `registration_endpoint` (top level and in `mtls_endpoint_aliases`) names the proxy and no
//! endpoint names the upstream's internal address.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use serde_json::{Map, Value};
use url::Url;

use super::headers::{Forwarding, set_forwarding_headers};
use super::{ForwardConfig, Forwarder};
use crate::body::{RespBody, boxed};
use crate::error::ProxyError;
use crate::outbound::{OutboundError, read_reply};

/// Discovery documents are a few KiB; a larger answer is not one.
const MAX_DISCOVERY_BYTES: usize = 256 * 1024;

/// Distinct discovery paths cached at once. Any path ending in a well-known suffix is fetched, so
/// the bound keeps a client from growing the cache without limit.
const MAX_DISCOVERY_ENTRIES: u64 = 64;

/// What the forwarder keeps for discovery: the rewrite's inputs and the cache of its outputs.
pub(super) struct Discovery {
    registration_endpoint: String,
    rebase: Rebase,
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
            rebase: Rebase {
                upstream: cfg.upstream_base.clone(),
                public: public.trim_end_matches('/').to_owned(),
            },
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
        set_forwarding_headers(&mut headers, &Forwarding::new(None, &self.public_authority));
        headers.insert(header::HOST, self.upstream_host.clone());
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let mut req = Request::new(Empty::<Bytes>::new().map_err(|n| match n {}).boxed());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;

        // One bound in time for the headers and the body together: a document trickled in must not hold the
        // requests waiting for the cache beyond `response_timeout`.
        let reply = tokio::time::timeout(self.pool.response_timeout(), async {
            let resp = self.pool.send(req).await?;
            Ok::<_, DiscoveryError>(read_reply(resp, MAX_DISCOVERY_BYTES).await?)
        })
        .await
        .map_err(|_| OutboundError::Timeout(self.pool.response_timeout()))??;
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
            &self.discovery.rebase,
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

/// Moves URLs from the upstream's base to the proxy's public URL. The proxy forwards every path
/// it does not own to `upstream_base` + path, so `public_url` + path reaches the same resource
/// through the mTLS edge, while the upstream's own address is one a client either cannot reach
/// (a sidecar on loopback, a cluster-internal name) or would reach without the proxy's
/// certificate header. Only URLs provably under that base move: another origin (the IdP's own
/// public name, a CDN) may well be right, and the proxy cannot forward to it anyway.
struct Rebase {
    upstream: Url,
    /// The public URL without its trailing `/`.
    public: String,
}

impl Rebase {
    fn apply(&self, s: &str) -> Option<String> {
        let u = Url::parse(s).ok()?;
        if u.origin() != self.upstream.origin() {
            return None;
        }
        let prefix = self.upstream.path().trim_end_matches('/');
        let rest = u.path().strip_prefix(prefix)?;
        // A prefix matches whole segments only: `/auth` is not the start of `/authz`.
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let mut out = format!("{}{rest}", self.public);
        if let Some(q) = u.query() {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }

    fn is_upstream(&self, s: &str) -> bool {
        Url::parse(s).is_ok_and(|u| u.origin() == self.upstream.origin())
    }
}

/// `registration_endpoint` names the proxy, at the top level and among the IdP's
/// `mtls_endpoint_aliases` (Keycloak copies its registration endpoint there:
/// `OIDCWellKnownProvider.getMtlsEndpointAliases`); every other URL member at either level moves
/// off the upstream's internal base ([`Rebase`]). `issuer` is left alone: it must equal the `iss`
/// of the IdP's tokens, which no rewrite here can change. Configured aliases replace the IdP's
/// as written. Without serde_json's `preserve_order` the members come out sorted, which JSON
/// objects do not care about.
fn rewrite_discovery(
    body: &[u8],
    registration_endpoint: &str,
    rebase: &Rebase,
    mtls_endpoint_aliases: Option<&Map<String, Value>>,
) -> Result<Vec<u8>, DiscoveryError> {
    let mut doc: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| DiscoveryError::NotJson(e.to_string()))?;
    let idp_registration = doc
        .get("registration_endpoint")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let ours = || Value::String(registration_endpoint.into());
    for (name, value) in doc.iter_mut() {
        if name == "issuer" {
            if value.as_str().is_some_and(|i| rebase.is_upstream(i)) {
                tracing::warn!(
                    issuer = %value,
                    "the IdP names itself by the upstream's internal address; its tokens will carry that issuer. Configure its public hostname (Keycloak: hostname)"
                );
            }
            continue;
        }
        if let Value::String(s) = value
            && let Some(moved) = rebase.apply(s)
        {
            *s = moved;
        }
    }
    doc.insert("registration_endpoint".into(), ours());
    match mtls_endpoint_aliases {
        Some(aliases) => {
            doc.insert(
                "mtls_endpoint_aliases".into(),
                Value::Object(aliases.clone()),
            );
        }
        None => {
            if let Some(Value::Object(aliases)) = doc.get_mut("mtls_endpoint_aliases") {
                for (name, value) in aliases.iter_mut() {
                    let Value::String(s) = value else {
                        continue;
                    };
                    if name == "registration_endpoint"
                        || idp_registration.as_deref() == Some(s.as_str())
                    {
                        *value = ours();
                    } else if let Some(moved) = rebase.apply(s) {
                        *s = moved;
                    }
                }
            }
        }
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

    fn rebase(upstream: &str) -> Rebase {
        Rebase {
            upstream: Url::parse(upstream).expect("url"),
            public: "https://proxy.example.com".into(),
        }
    }

    fn rewrite(doc: &Value, upstream: &str, aliases: Option<&Map<String, Value>>) -> Value {
        let out = rewrite_discovery(
            doc.to_string().as_bytes(),
            "https://proxy.example.com/register",
            &rebase(upstream),
            aliases,
        )
        .expect("rewrites");
        serde_json::from_slice(&out).expect("json")
    }

    #[test]
    fn discovery_rewrite_leaves_foreign_urls_and_other_members_alone() {
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
        let out = rewrite(&upstream, "http://10.0.0.7:3000", Some(&aliases));
        let mut expected = upstream.clone();
        expected["registration_endpoint"] = "https://proxy.example.com/register".into();
        expected["mtls_endpoint_aliases"] = Value::Object(aliases);
        assert_eq!(out, expected);

        let base = rebase("http://x");
        assert!(matches!(
            rewrite_discovery(b"[1]", "x", &base, None),
            Err(DiscoveryError::NotJson(_))
        ));
        assert!(matches!(
            rewrite_discovery(b"<html>", "x", &base, None),
            Err(DiscoveryError::NotJson(_))
        ));
    }

    /// The shape of Keycloak's document (`OIDCWellKnownProvider.getConfig`): backend URLs on the
    /// address the proxy reached it by, and `mtls_endpoint_aliases` copying them, registration too.
    #[test]
    fn every_endpoint_on_the_upstreams_address_moves_to_the_public_url_and_registration_to_ours() {
        let kc = "http://keycloak:8080/realms/ob/protocol/openid-connect";
        let kc_reg = "http://keycloak:8080/realms/ob/clients-registrations/openid-connect";
        let revoke = "https://bank.example.com/realms/ob/protocol/openid-connect/revoke";
        let doc = serde_json::json!({
            "issuer": "https://bank.example.com/realms/ob",
            "authorization_endpoint": "https://bank.example.com/realms/ob/protocol/openid-connect/auth",
            "token_endpoint": format!("{kc}/token"),
            "introspection_endpoint": format!("{kc}/token/introspect"),
            "userinfo_endpoint": format!("{kc}/userinfo"),
            "jwks_uri": format!("{kc}/certs"),
            "pushed_authorization_request_endpoint": format!("{kc}/ext/par/request"),
            "registration_endpoint": kc_reg,
            "revocation_endpoint": revoke,
            "tls_client_certificate_bound_access_tokens": true,
            "mtls_endpoint_aliases": {
                "token_endpoint": format!("{kc}/token"),
                "revocation_endpoint": revoke,
                "introspection_endpoint": format!("{kc}/token/introspect"),
                "registration_endpoint": kc_reg,
                "userinfo_endpoint": format!("{kc}/userinfo"),
                "pushed_authorization_request_endpoint": format!("{kc}/ext/par/request"),
            }
        });
        let out = rewrite(&doc, "http://keycloak:8080", None);
        let public = "https://proxy.example.com/realms/ob/protocol/openid-connect";
        let ours = "https://proxy.example.com/register";
        assert_eq!(out["issuer"], doc["issuer"]);
        assert_eq!(out["authorization_endpoint"], doc["authorization_endpoint"]);
        assert_eq!(out["revocation_endpoint"], revoke);
        assert_eq!(out["registration_endpoint"], ours);
        assert_eq!(out["token_endpoint"], format!("{public}/token"));
        assert_eq!(out["jwks_uri"], format!("{public}/certs"));
        assert_eq!(
            out["pushed_authorization_request_endpoint"],
            format!("{public}/ext/par/request")
        );
        assert_eq!(out["tls_client_certificate_bound_access_tokens"], true);
        let aliases = &out["mtls_endpoint_aliases"];
        assert_eq!(aliases["registration_endpoint"], ours);
        assert_eq!(aliases["token_endpoint"], format!("{public}/token"));
        assert_eq!(
            aliases["introspection_endpoint"],
            format!("{public}/token/introspect")
        );
        assert_eq!(aliases["userinfo_endpoint"], format!("{public}/userinfo"));
        assert_eq!(aliases["revocation_endpoint"], revoke);
        // Nothing anywhere names the upstream any more.
        assert!(!out.to_string().contains("keycloak:8080"), "{out}");
    }

    #[test]
    fn an_alias_naming_the_idps_registration_endpoint_under_any_member_names_ours() {
        let doc = serde_json::json!({
            "registration_endpoint": "https://idp.example.com/reg",
            "mtls_endpoint_aliases": {
                "dcr": "https://idp.example.com/reg",
                "token_endpoint": "https://mtls.idp.example.com/token"
            }
        });
        let out = rewrite(&doc, "http://127.0.0.1:3000", None);
        assert_eq!(
            out["mtls_endpoint_aliases"]["dcr"],
            "https://proxy.example.com/register"
        );
        assert_eq!(
            out["mtls_endpoint_aliases"]["token_endpoint"],
            "https://mtls.idp.example.com/token"
        );
    }

    #[test]
    fn only_urls_under_the_upstream_base_move_and_keep_their_query() {
        let base = rebase("http://10.0.0.7:3000/auth/");
        for (from, to) in [
            (
                "http://10.0.0.7:3000/auth/realms/x/token?a=1",
                Some("https://proxy.example.com/realms/x/token?a=1"),
            ),
            (
                "http://10.0.0.7:3000/auth",
                Some("https://proxy.example.com"),
            ),
            (
                "HTTP://10.0.0.7:3000/auth/x",
                Some("https://proxy.example.com/x"),
            ),
            ("http://10.0.0.7:3000/authz/x", None),
            ("http://10.0.0.7:3000/other", None),
            ("http://10.0.0.7:3001/auth/x", None),
            ("https://10.0.0.7:3000/auth/x", None),
            ("/auth/x", None),
            ("not a url", None),
        ] {
            assert_eq!(base.apply(from).as_deref(), to, "{from}");
        }
        let default_port = rebase("http://idp.internal");
        assert_eq!(
            default_port
                .apply("http://idp.internal:80/token")
                .as_deref(),
            Some("https://proxy.example.com/token")
        );
    }
}
