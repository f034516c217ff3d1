//! Everything that is not the registration API passes through to the IdP: hop-by-hop headers, the
//! client-certificate header, spoof stripping, the deny-list and the discovery rewrite.
//!
//! The proxy is the TLS edge, so nothing a client says about itself in a header is trusted: every
//! forwarding header (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`) and every client-certificate header
//! in any spelling is removed and, where we know the truth, set again from the connection.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};
use url::Url;

use crate::error::{ErrorCode, ProxyError};
use crate::identity::PeerCert;
use crate::outbound::{crypto_provider, root_store};
use crate::server::{BoxError, RespBody, boxed};

/// Discovery documents are a few KiB; a larger answer is not one.
const MAX_DISCOVERY_BYTES: usize = 256 * 1024;

/// Distinct discovery paths cached at once. Any path ending in a well-known suffix is fetched, so
/// the bound keeps a client from growing the cache without limit.
const MAX_DISCOVERY_ENTRIES: u64 = 64;

/// Below the 5 s keep-alive timeout of Node's HTTP server (oidc-provider): a connection the upstream
/// is about to close must not be picked from the pool. The upstream is a sidecar neighbour, so
/// reconnecting is cheap.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// How the verified client certificate is handed to the IdP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertHeaderFormat {
    /// RFC 9440 `Client-Cert` / `Client-Cert-Chain` (Keycloak `rfc9440` lookup provider).
    Rfc9440,
    /// `ssl-client-cert: <URL-encoded PEM>` and `ssl-client-verify: SUCCESS`, as nginx sends
    /// `$ssl_client_escaped_cert` (Keycloak `nginx` lookup provider, ForgeRock AM's header option).
    Nginx,
    /// Envoy's `x-forwarded-client-cert` with `Hash`, `Cert` and `Chain`.
    Envoy,
}

#[derive(Clone, Debug)]
pub struct ForwardConfig {
    /// `http(s)://host:port[/prefix]`; the prefix is put in front of every forwarded path.
    pub upstream_base: Url,
    /// The proxy's public URL; discovery advertises `<public_url>/register`.
    pub public_url: Url,
    pub cert_header: CertHeaderFormat,
    /// Path patterns never forwarded; see [`ForwardConfig::default_deny_paths`] for the syntax.
    pub deny_paths: Vec<String>,
    pub connect_timeout: Duration,
    /// Time until the upstream's response headers arrive; the body then streams without a limit.
    pub response_timeout: Duration,
    /// Zero disables the discovery cache.
    pub discovery_ttl: Duration,
    /// Put into discovery as-is when set.
    pub mtls_endpoint_aliases: Option<Map<String, Value>>,
    /// Trust roots for an https upstream; the system's when absent.
    pub ca_bundle: Option<PathBuf>,
}

impl ForwardConfig {
    /// The IdP endpoints that would bypass the regulated registration API or expose
    /// administration.
    ///
    /// Pattern syntax: `/`-separated segments matched against the whole request path; `*` is
    /// exactly one segment, `**` is zero or more segments, anything else is a literal segment
    /// compared case-insensitively. So `/reg/**` refuses `/reg` and everything below it.
    ///
    /// The path is matched after percent-decoding (repeatedly, so double encoding does not hide
    /// a segment), with `\` read as `/`, `;` parameters cut from each segment, empty and `.`
    /// segments dropped, `..` applied and case folded: `/REG`, `/reg/`, `/./reg`, `/x/../reg`,
    /// `/%72eg`, `//reg` and `/reg;x` are all `/reg`. Each step can only make more paths match,
    /// so whichever of these readings the IdP's own router takes, the refusal still covers it.
    pub fn default_deny_paths() -> Vec<String> {
        [
            // Keycloak: admin console and admin REST API, then its own client registration
            // (every provider: default, openid-connect, install, saml2-entity-descriptor).
            "/admin/**",
            "/realms/*/clients-registrations/**",
            // The same for Keycloak before 17, served under /auth.
            "/auth/admin/**",
            "/auth/realms/*/clients-registrations/**",
            // ForgeRock AM: /am/oauth2/realms/root/realms/<realm>/register, /openam/oauth2/register,
            // /oauth2/connect/register, whatever the deployment's context path.
            "/**/oauth2/**/register",
            // oidc-provider: POST /reg and the RFC 7592 /reg/<client_id>.
            "/reg/**",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }
}

type UpstreamClient = Client<HttpsConnector<HttpConnector>, RespBody>;

/// The pass-through to the IdP; one per proxy, holding the upstream connection pool.
pub struct Forwarder {
    client: UpstreamClient,
    /// `scheme://host[:port]` of the upstream.
    origin: String,
    /// The upstream base path without its trailing `/`.
    prefix: String,
    upstream_host: HeaderValue,
    /// `host[:port]` of the public URL, used when the client's Host is unusable and for discovery.
    public_authority: String,
    registration_endpoint: String,
    cert_header: CertHeaderFormat,
    deny: Vec<DenyPattern>,
    response_timeout: Duration,
    discovery_cache: Option<moka::future::Cache<String, Bytes>>,
    mtls_endpoint_aliases: Option<Map<String, Value>>,
    fetches: AtomicU64,
}

impl Forwarder {
    pub fn new(cfg: ForwardConfig) -> Result<Self, String> {
        let base = &cfg.upstream_base;
        let https = match base.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(format!(
                    "upstream_base: scheme {other:?} is not http or https"
                ));
            }
        };
        let upstream_host = authority_of(base).ok_or("upstream_base: has no host")?;
        // Credentials in the URL would be sent nowhere (we never set Authorization from them)
        // and could end up in logs; a query or fragment has no meaning for a base.
        if !base.username().is_empty() || base.password().is_some() {
            return Err("upstream_base: must not contain user information".into());
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err("upstream_base: must not have a query or fragment".into());
        }
        let public_authority = authority_of(&cfg.public_url).ok_or("public_url: has no host")?;
        if cfg.connect_timeout.is_zero() || cfg.response_timeout.is_zero() {
            return Err("connect_timeout and response_timeout must be greater than 0s".into());
        }
        let deny = cfg
            .deny_paths
            .iter()
            .map(|p| DenyPattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?;

        // An http upstream never uses the TLS config, and a slim sidecar image may have no system
        // roots at all, so they are only loaded when they can matter.
        let roots = if https {
            root_store(cfg.ca_bundle.as_deref())?
        } else {
            rustls::RootCertStore::empty()
        };
        let tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(64)
            .build(connector);

        let discovery_cache = (!cfg.discovery_ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(MAX_DISCOVERY_ENTRIES)
                // moka refuses more than 1000 years; a day is already longer than any sane TTL.
                .time_to_live(cfg.discovery_ttl.min(Duration::from_secs(86_400)))
                .build()
        });
        let public = &cfg.public_url[..url::Position::AfterPath];
        Ok(Forwarder {
            client,
            origin: base[..url::Position::BeforePath].to_owned(),
            prefix: base.path().trim_end_matches('/').to_owned(),
            upstream_host: HeaderValue::from_str(&upstream_host)
                .map_err(|_| "upstream_base: host is not a valid header value")?,
            public_authority,
            registration_endpoint: format!("{}/register", public.trim_end_matches('/')),
            cert_header: cfg.cert_header,
            deny,
            response_timeout: cfg.response_timeout,
            discovery_cache,
            mtls_endpoint_aliases: cfg.mtls_endpoint_aliases,
            fetches: AtomicU64::new(0),
        })
    }

    /// Everything that is not a registration route: the deny-list, then the discovery rewrite,
    /// then a streamed pass-through. Never fails: upstream faults become 502/504 JSON bodies.
    /// `peer` is the connection's verified client certificate, `client_addr` its TCP peer.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        peer: Option<&PeerCert>,
        client_addr: SocketAddr,
    ) -> Response<RespBody> {
        let path = req.uri().path();
        // Asterisk-form (`OPTIONS *`) and authority-form (CONNECT) name no resource of the IdP.
        if !path.starts_with('/') {
            return boxed(ProxyError::NotFound.to_response());
        }
        let normal = NormalPath::new(path);
        if let Some(pattern) = self.deny.iter().find(|p| p.matches(&normal.segments)) {
            tracing::info!(
                path = %normal,
                pattern = %pattern.source,
                "refused: the path is on the deny list"
            );
            return boxed(ProxyError::NotFound.to_response());
        }
        // The deny-list matched the resolved path, but the IdP receives the path as sent: a `..`
        // could climb out of the upstream prefix there. Conforming clients resolve dot segments
        // before sending (RFC 3986 section 5.2.4), so refusing them costs nothing.
        if normal.had_dot_segments {
            tracing::info!(path = %normal, "refused: dot segments in the path");
            return boxed(
                ProxyError::rejected(
                    ErrorCode::InvalidRequest,
                    "the request path must not contain `.` or `..` segments",
                )
                .to_response(),
            );
        }
        if req.method() == Method::GET && is_discovery_path(path) {
            let path = path.to_owned();
            return self.discovery(&path).await;
        }
        self.pass_through(req, peer, client_addr).await
    }

    /// How many times discovery was fetched from the upstream (cache misses).
    pub fn discovery_fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    async fn pass_through(
        &self,
        req: Request<Incoming>,
        peer: Option<&PeerCert>,
        client_addr: SocketAddr,
    ) -> Response<RespBody> {
        let (mut parts, body) = req.into_parts();
        let uri = match self.upstream_uri(parts.uri.path(), parts.uri.query()) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build the upstream URI");
                return boxed(ProxyError::NotFound.to_response());
            }
        };
        let host = client_authority(&parts.headers, &parts.uri)
            .unwrap_or_else(|| self.public_authority.clone());
        prepare_request_headers(
            &mut parts.headers,
            parts.version,
            client_addr,
            &host,
            peer.map(|p| (p, self.cert_header)),
        );
        // Host names the server we talk to; the name the client used travels in the forwarding
        // headers, which the IdP reads only when told to trust its proxy.
        parts
            .headers
            .insert(header::HOST, self.upstream_host.clone());
        parts.uri = uri;
        // hyper's client refuses an HTTP/2 request on the HTTP/1.1 connections it opens upstream.
        parts.version = Version::HTTP_11;
        parts.extensions = http::Extensions::new();
        let req = Request::from_parts(parts, body.map_err(BoxError::from).boxed());

        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => {
                tracing::warn!(
                    failure = "upstream",
                    reason = "timeout",
                    timeout_ms = self.response_timeout.as_millis() as u64,
                    "the upstream sent no response headers in time"
                );
                boxed(ProxyError::UpstreamTimeout.to_response())
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    failure = "upstream",
                    connect = e.is_connect(),
                    reason = %error_chain(&e),
                    "the upstream request failed"
                );
                boxed(ProxyError::UpstreamUnavailable(error_chain(&e)).to_response())
            }
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                remove_hop_by_hop(&mut parts.headers, false);
                Response::from_parts(parts, body.map_err(BoxError::from).boxed())
            }
        }
    }

    fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::uri::InvalidUri> {
        let mut s = String::with_capacity(
            self.origin.len() + self.prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        s.push_str(&self.origin);
        s.push_str(&self.prefix);
        s.push_str(path);
        if let Some(q) = query {
            s.push('?');
            s.push_str(q);
        }
        s.parse()
    }

    async fn discovery(&self, path: &str) -> Response<RespBody> {
        // The query is ignored, so one cached document serves every spelling of the request.
        let result = match &self.discovery_cache {
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
                DiscoveryError::Timeout => {
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
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let uri = self
            .upstream_uri(path, None)
            .map_err(|e| DiscoveryError::Unavailable(e.to_string()))?;
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

        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| DiscoveryError::Unavailable(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > MAX_DISCOVERY_BYTES as u64) {
                return Err(DiscoveryError::TooLarge);
            }
            let body = Limited::new(body, MAX_DISCOVERY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        DiscoveryError::TooLarge
                    } else {
                        DiscoveryError::Unavailable(e.to_string())
                    }
                })?
                .to_bytes();
            Ok((parts, body))
        };
        let (parts, body) = tokio::time::timeout(self.response_timeout, work)
            .await
            .map_err(|_| DiscoveryError::Timeout)??;
        if parts.status != StatusCode::OK {
            // Not cached: a passing upstream error must not outlive itself.
            return Err(DiscoveryError::Status {
                status: parts.status,
                content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
                body,
            });
        }
        rewrite_discovery(
            &body,
            &self.registration_endpoint,
            self.mtls_endpoint_aliases.as_ref(),
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
    #[error("no answer in time")]
    Timeout,
    #[error("document larger than {MAX_DISCOVERY_BYTES} bytes")]
    TooLarge,
    #[error("document is not a JSON object: {0}")]
    NotJson(String),
    #[error("{0}")]
    Unavailable(String),
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
fn is_discovery_path(path: &str) -> bool {
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

/// `host[:port]` of a URL, brackets kept around an IPv6 address.
fn authority_of(u: &Url) -> Option<String> {
    let host = u.host_str()?;
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
}

/// The authority the client addressed (`Host`, or `:authority` in HTTP/2), when it is a plain
/// `host[:port]`. Anything else is dropped rather than passed on for the IdP to build URLs from.
fn client_authority(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let raw = match headers.get(header::HOST) {
        Some(v) => v.to_str().ok()?.to_owned(),
        None => uri.authority()?.as_str().to_owned(),
    };
    let plain = !raw.is_empty()
        && raw.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
        });
    let authority: Authority = raw.parse().ok()?;
    plain.then(|| authority.as_str().to_ascii_lowercase())
}

/// A header name lowercased with `_` read as `-`: several servers (CGI-style environments, some
/// Java containers) treat `SSL_CLIENT_CERT` and `ssl-client-cert` as one header.
fn folded(name: &HeaderName) -> String {
    name.as_str().replace('_', "-")
}

/// Header-name prefixes (folded) that carry client-certificate data in some proxy's convention:
/// RFC 9440, Apache mod_ssl and nginx `SSL_CLIENT_*` (and Keycloak's `CERT_CHAIN_<n>` example),
/// `X-SSL-*`, Envoy, Traefik, AWS ALB and Azure App Service.
const CERT_HEADER_PREFIXES: &[&str] = &[
    "client-cert",
    "ssl-",
    "x-ssl-",
    "cert-chain",
    "x-client-cert",
    "x-client-dn",
    "x-client-s-dn",
    "x-client-i-dn",
    "x-client-verify",
    "x-client-serial",
    "x-tls-client-cert",
    "x-forwarded-client-cert",
    "x-forwarded-tls-client-cert",
    "x-amzn-mtls-clientcert",
    "x-arr-clientcert",
];

fn is_cert_header(folded: &str) -> bool {
    CERT_HEADER_PREFIXES.iter().any(|p| folded.starts_with(p))
}

/// Removes every copy of every client-certificate header we know, in any case, with `_` and `-` folded.
pub fn strip_cert_headers(headers: &mut HeaderMap) {
    remove_where(headers, is_cert_header);
}

/// Removes all values of every header whose folded name satisfies `pred`.
fn remove_where(headers: &mut HeaderMap, pred: impl Fn(&str) -> bool) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| pred(&folded(n)))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// RFC 9110 section 7.6.1 connection-specific fields, plus the proxy pair (Proxy-Authorization is
/// for us, not the IdP) and the pre-standard Proxy-Connection and Keep-Alive.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// `keep_te_trailers`: a request's `TE: trailers` survives, since it says the client accepts
/// trailers end to end (gRPC needs it); every other TE coding concerns this hop only.
fn remove_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase().replace('_', "-"))
        .filter(|t| !t.is_empty())
        .collect();
    let wants_trailers = keep_te_trailers
        && headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("trailers"))
            });
    remove_where(headers, |f| {
        HOP_BY_HOP.contains(&f) || named.iter().any(|n| n == f)
    });
    if wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Headers through which a client could claim another address, scheme, host or path to an IdP
/// that trusts its proxy. `X-Original-URL` and `X-Rewrite-URL` make some frameworks route by the
/// header instead of the request line, which would walk around the deny-list.
fn is_forwarding_header(folded: &str) -> bool {
    folded == "forwarded"
        || folded.starts_with("x-forwarded-")
        || matches!(
            folded,
            "x-real-ip" | "x-original-url" | "x-original-uri" | "x-rewrite-url"
        )
}

/// Replaces, never appends: as the TLS edge we are the first proxy, so any value already present
/// came from the client. `client` is absent for our own requests (discovery).
fn set_forwarding_headers(headers: &mut HeaderMap, client: Option<IpAddr>, host: &str) {
    remove_where(headers, is_forwarding_header);
    let port = host
        .parse::<Authority>()
        .ok()
        .and_then(|a| a.port_u16())
        .unwrap_or(443);
    let mut forwarded = String::new();
    if let Some(ip) = client {
        if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
            headers.insert("x-forwarded-for", v);
        }
        // RFC 7239 section 6: an IPv6 node is bracketed, and then must be quoted.
        match ip {
            IpAddr::V4(v4) => forwarded.push_str(&format!("for={v4};")),
            IpAddr::V6(v6) => forwarded.push_str(&format!("for=\"[{v6}]\";")),
        }
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert("x-forwarded-host", v);
    }
    headers.insert("x-forwarded-port", HeaderValue::from(port));
    // The host is always quoted: with a port it contains `:`, which a token may not.
    forwarded.push_str(&format!("proto=https;host=\"{host}\""));
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
}

/// Everything done to a client's request headers before they go upstream, except Host.
fn prepare_request_headers(
    headers: &mut HeaderMap,
    version: Version,
    client_addr: SocketAddr,
    host: &str,
    cert: Option<(&PeerCert, CertHeaderFormat)>,
) {
    remove_hop_by_hop(headers, true);
    strip_cert_headers(headers);
    headers.remove(header::HOST);
    // hyper has already answered `100-continue` on the client side; the upstream leg would wait
    // for an interim response that hyper's client does not wait for.
    headers.remove(header::EXPECT);
    if version == Version::HTTP_2 {
        merge_cookies(headers);
    }
    set_forwarding_headers(headers, Some(client_addr.ip().to_canonical()), host);
    if let Some((peer, format)) = cert {
        for (name, value) in cert_headers(peer, format) {
            headers.append(name, value);
        }
    }
}

/// HTTP/2 lets a client split Cookie into several fields; HTTP/1.1 wants one, joined with `; `
/// (RFC 9113 section 8.2.3).
fn merge_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().count() < 2 {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let joined = joined.join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// The headers that carry `peer` in `format`. All values are ASCII by construction.
fn cert_headers(peer: &PeerCert, format: CertHeaderFormat) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    let mut push = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.push((HeaderName::from_static(name), v));
        }
    };
    match format {
        CertHeaderFormat::Rfc9440 => {
            push("client-cert", sf_binary(peer.der.as_ref()));
            if !peer.chain.is_empty() {
                let chain: Vec<String> = peer.chain.iter().map(|c| sf_binary(c.as_ref())).collect();
                push("client-cert-chain", chain.join(", "));
            }
        }
        CertHeaderFormat::Nginx => {
            push("ssl-client-cert", url_encode(&pem(peer.der.as_ref())));
            // Keycloak's trusted nginx provider and our test IdP refuse the certificate without it.
            push("ssl-client-verify", "SUCCESS".into());
        }
        CertHeaderFormat::Envoy => {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, peer.der.as_ref());
            // Envoy's Chain holds the whole presented chain, leaf first.
            let mut chain = pem(peer.der.as_ref());
            for c in &peer.chain {
                chain.push_str(&pem(c.as_ref()));
            }
            push(
                "x-forwarded-client-cert",
                format!(
                    "Hash={};Cert=\"{}\";Chain=\"{}\"",
                    hex(digest.as_ref()),
                    url_encode(&pem(peer.der.as_ref())),
                    url_encode(&chain)
                ),
            );
        }
    }
    out
}

/// RFC 8941 Byte Sequence: standard base64 with padding between colons.
fn sf_binary(der: &[u8]) -> String {
    format!(":{}:", STANDARD.encode(der))
}

fn pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters. `+` must be encoded: Java's
/// URLDecoder (Keycloak) reads a bare `+` as a space.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A request path reduced for deny-list matching.
struct NormalPath {
    segments: Vec<String>,
    had_dot_segments: bool,
}

/// Double and triple encoding are undone too; a fourth layer is beyond any server we front.
const DECODE_ROUNDS: usize = 3;

impl NormalPath {
    fn new(raw: &str) -> NormalPath {
        let mut bytes = raw.as_bytes().to_vec();
        for _ in 0..DECODE_ROUNDS {
            let decoded = percent_decode(&bytes);
            if decoded == bytes {
                break;
            }
            bytes = decoded;
        }
        let text = String::from_utf8_lossy(&bytes).replace('\\', "/");
        let mut segments: Vec<String> = Vec::new();
        let mut had_dot_segments = false;
        for seg in text.split('/') {
            // Servlet containers (AM on Tomcat) and JAX-RS (Keycloak) drop `;` path parameters.
            let seg = seg.split(';').next().unwrap_or_default();
            match seg {
                "" => {}
                "." => had_dot_segments = true,
                ".." => {
                    had_dot_segments = true;
                    segments.pop();
                }
                s => segments.push(s.to_lowercase()),
            }
        }
        NormalPath {
            segments,
            had_dot_segments,
        }
    }
}

impl std::fmt::Display for NormalPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segments {
            write!(f, "/{}", s.escape_debug())?;
        }
        Ok(())
    }
}

/// One decoding pass; a `%` not followed by two hex digits stays as it is.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    fn val(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(val),
                input.get(i + 2).copied().and_then(val),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Any,
}

#[derive(Clone, Debug)]
struct DenyPattern {
    source: String,
    segments: Vec<Segment>,
}

impl DenyPattern {
    fn parse(p: &str) -> Result<DenyPattern, String> {
        if !p.starts_with('/') {
            return Err(format!("deny path {p:?}: must start with `/`"));
        }
        let mut segments = Vec::new();
        for s in p.split('/').filter(|s| !s.is_empty()) {
            segments.push(match s {
                "*" => Segment::One,
                "**" => Segment::Any,
                "." | ".." => {
                    return Err(format!("deny path {p:?}: `.` and `..` can never match"));
                }
                s if s.contains('*') => {
                    return Err(format!(
                        "deny path {p:?}: `*` and `**` must be whole segments"
                    ));
                }
                s if s.contains(['%', ';', '\\']) => {
                    return Err(format!(
                        "deny path {p:?}: write segments decoded, without `%`, `;` or `\\`"
                    ));
                }
                s => Segment::Literal(s.to_lowercase()),
            });
        }
        Ok(DenyPattern {
            source: p.to_owned(),
            segments,
        })
    }

    /// Dynamic programming over (pattern, path) positions rather than backtracking, so a path of
    /// thousands of segments against two `**` stays linear in the path per pattern segment.
    fn matches(&self, path: &[String]) -> bool {
        let n = path.len();
        // next[j]: the pattern from the following segment on matches path[j..].
        let mut next = vec![false; n + 1];
        next[n] = true;
        for seg in self.segments.iter().rev() {
            let mut cur = vec![false; n + 1];
            for j in (0..=n).rev() {
                cur[j] = match seg {
                    Segment::Any => next[j] || (j < n && cur[j + 1]),
                    Segment::One => j < n && next[j + 1],
                    Segment::Literal(l) => j < n && path[j] == *l && next[j + 1],
                };
            }
            next = cur;
        }
        next[0]
    }
}

