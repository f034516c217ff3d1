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

use crate::body::{BoxError, RespBody, boxed};
use crate::error::{ErrorCode, ProxyError};
use crate::identity::PeerCert;
use crate::outbound::{crypto_provider, error_chain, root_store};

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
    /// The certificate headers for a peer, in the configured format. Computed once per connection by the
    /// server (base64 and PEM encoding showed up in profiles when done per request).
    pub fn cert_headers_for(&self, peer: &PeerCert) -> CertHeaders {
        cert_headers(peer, self.cert_header).into()
    }

    pub async fn forward(
        &self,
        req: Request<Incoming>,
        peer: Option<&PeerCert>,
        client_addr: SocketAddr,
    ) -> Response<RespBody> {
        let cert = peer.map(|p| self.cert_headers_for(p));
        self.forward_with(req, cert.as_deref(), client_addr).await
    }

    /// As `forward`, with the connection's certificate headers already encoded.
    pub async fn forward_with(
        &self,
        req: Request<Incoming>,
        cert: Option<&[(HeaderName, HeaderValue)]>,
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
        self.pass_through(req, cert, client_addr).await
    }

    /// How many times discovery was fetched from the upstream (cache misses).
    pub fn discovery_fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    async fn pass_through(
        &self,
        req: Request<Incoming>,
        cert: Option<&[(HeaderName, HeaderValue)]>,
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
        prepare_request_headers(&mut parts.headers, parts.version, client_addr, &host, cert);
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
/// A connection's certificate headers, encoded once.
pub type CertHeaders = std::sync::Arc<[(HeaderName, HeaderValue)]>;

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
    cert: Option<&[(HeaderName, HeaderValue)]>,
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
    for (name, value) in cert.unwrap_or_default() {
        headers.append(name.clone(), value.clone());
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::task::{Context, Poll};
    use std::time::Instant;

    use hyper::body::Frame;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{Notify, mpsc};

    use super::*;

    // ---------------------------------------------------------------- fixtures

    /// A leaf issued by a throwaway CA, presented with the CA as its chain.
    fn peer() -> PeerCert {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("self-signed ca");
        let leaf = CertificateParams::new(vec!["client.tpp.example".to_string()])
            .expect("leaf params")
            .signed_by(&KeyPair::generate().expect("leaf key"), &ca)
            .expect("leaf");
        PeerCert::from_der(leaf.der().clone(), vec![ca.der().clone()]).expect("peer cert")
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn url_decode(s: &str) -> String {
        String::from_utf8(percent_decode(s.as_bytes())).expect("utf-8")
    }

    fn pem_to_ders(pem: &str) -> Vec<Vec<u8>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| c.expect("a PEM certificate").to_vec())
            .collect()
    }

    fn one<'a>(h: &'a [(HeaderName, HeaderValue)], name: &str) -> &'a str {
        let found: Vec<&str> = h
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().expect("ascii"))
            .collect();
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        found[0]
    }

    // ---------------------------------------------------------------- certificate headers

    #[test]
    fn strip_cert_headers_removes_every_spelling_and_every_copy() {
        let spoofed = [
            "SSL_CLIENT_CERT",
            "ssl-client-cert",
            "Ssl-Client-Verify",
            "ssl_client_verify",
            "X_Forwarded_Client_Cert",
            "x-forwarded-client-cert",
            "client-cert",
            "Client-Cert",
            "client_cert_chain",
            "CLIENT-CERT-CHAIN",
            "ssl-client-s-dn",
            "SSL_CLIENT_I_DN",
            "ssl-client-serial",
            "ssl-client-dn",
            "ssl-client-escaped-cert",
            "ssl_client_cert_chain_0",
            "CERT_CHAIN_0",
            "cert-chain-12",
            "x-ssl-cert",
            "X_SSL_CLIENT_VERIFY",
            "x-client-cert",
            "x-client-certificate",
            "x-client-dn",
            "x-client-verify",
            "x-forwarded-tls-client-cert",
            "X-Forwarded-Tls-Client-Cert-Info",
            "x-amzn-mtls-clientcert-leaf",
            "x-arr-clientcert",
        ];
        let mut h = HeaderMap::new();
        for name in spoofed {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("name");
            h.append(name.clone(), HeaderValue::from_static("spoofed-1"));
            h.append(name, HeaderValue::from_static("spoofed-2"));
        }
        let kept = [
            "authorization",
            "content-type",
            "x-fapi-interaction-id",
            "x-client-id",
            "x-ssl",
            "sslx",
            "cert",
        ];
        for name in kept {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_static("kept"),
            );
        }
        strip_cert_headers(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        let mut expected = kept.to_vec();
        expected.sort_unstable();
        assert_eq!(left, expected);
    }

    #[test]
    fn rfc9440_headers_are_byte_sequences_of_the_der() {
        let peer = peer();
        let h = cert_headers(&peer, CertHeaderFormat::Rfc9440);
        assert_eq!(h.len(), 2);
        let leaf = one(&h, "client-cert");
        let b64 = leaf
            .strip_prefix(':')
            .and_then(|s| s.strip_suffix(':'))
            .expect("colon-delimited");
        assert_eq!(STANDARD.decode(b64).expect("base64"), peer.der.to_vec());
        let chain: Vec<Vec<u8>> = one(&h, "client-cert-chain")
            .split(", ")
            .map(|item| {
                let b64 = item
                    .strip_prefix(':')
                    .and_then(|s| s.strip_suffix(':'))
                    .expect("colon-delimited");
                STANDARD.decode(b64).expect("base64")
            })
            .collect();
        assert_eq!(chain, vec![peer.chain[0].to_vec()]);
    }

    #[test]
    fn rfc9440_sends_no_chain_header_when_only_a_leaf_was_presented() {
        let mut peer = peer();
        peer.chain.clear();
        let h = cert_headers(&peer, CertHeaderFormat::Rfc9440);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].0, "client-cert");
    }

    #[test]
    fn nginx_header_is_the_url_encoded_pem_of_the_leaf_and_says_verified() {
        let peer = peer();
        let h = cert_headers(&peer, CertHeaderFormat::Nginx);
        assert_eq!(h.len(), 2);
        let encoded = one(&h, "ssl-client-cert");
        // Nothing a URL or form decoder would read differently: no `+`, `/`, `=`, spaces or newlines.
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
            "{encoded}"
        );
        let pem = url_decode(encoded);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(pem_to_ders(&pem), vec![peer.der.to_vec()]);
        assert_eq!(one(&h, "ssl-client-verify"), "SUCCESS");
    }

    #[test]
    fn envoy_header_carries_hash_cert_and_the_chain_leaf_first() {
        let peer = peer();
        let h = cert_headers(&peer, CertHeaderFormat::Envoy);
        assert_eq!(h.len(), 1);
        let xfcc = one(&h, "x-forwarded-client-cert");
        let pairs: Vec<(&str, &str)> = xfcc
            .split(';')
            .map(|p| p.split_once('=').expect("key=value"))
            .collect();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["Hash", "Cert", "Chain"]);

        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, peer.der.as_ref());
        assert_eq!(pairs[0].1, hex(digest.as_ref()));
        assert_eq!(pairs[0].1.len(), 64);
        let unquote = |v: &str| {
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .expect("quoted")
                .to_owned()
        };
        let cert = url_decode(&unquote(pairs[1].1));
        assert_eq!(pem_to_ders(&cert), vec![peer.der.to_vec()]);
        let chain = url_decode(&unquote(pairs[2].1));
        assert_eq!(
            pem_to_ders(&chain),
            vec![peer.der.to_vec(), peer.chain[0].to_vec()]
        );
    }

    // ---------------------------------------------------------------- deny-list

    #[test]
    fn default_deny_list_refuses_every_spelling_of_the_idp_registration_and_admin_paths() {
        let deny: Vec<DenyPattern> = ForwardConfig::default_deny_paths()
            .iter()
            .map(|p| DenyPattern::parse(p).expect("default pattern parses"))
            .collect();
        let refused = |path: &str| {
            let normal = NormalPath::new(path);
            deny.iter().any(|p| p.matches(&normal.segments))
        };
        let must_refuse = [
            // oidc-provider
            "/reg",
            "/REG",
            "/reg/",
            "/./reg",
            "/x/../reg",
            "/%72eg",
            "/%2572eg",
            "//reg",
            "/reg;jsessionid=1",
            "/reg/abc123",
            "/Reg/abc/",
            "/x/..%2freg",
            "/x/%2e%2e/reg",
            "/x\\..\\reg",
            "/../../reg",
            // Keycloak
            "/admin",
            "/admin/",
            "/admin/master/console/",
            "/admin/realms/bank/clients",
            "/ADMIN/realms",
            "/realms/bank/clients-registrations/openid-connect",
            "/realms/bank/clients-registrations/default/abc",
            "/realms/bank/clients-registrations",
            "/realms/bank/Clients-Registrations/openid-connect",
            "/realms/bank/%63lients-registrations/openid-connect",
            "/auth/admin/master/console",
            "/auth/realms/bank/clients-registrations/openid-connect",
            // ForgeRock AM
            "/am/oauth2/realms/root/realms/alpha/register",
            "/am/oauth2/register",
            "/openam/oauth2/connect/register",
            "/oauth2/realms/root/register",
            "/am/oauth2/realms/root/realms/alpha/register/",
            "/am/OAuth2/realms/root/REGISTER",
        ];
        for path in must_refuse {
            assert!(refused(path), "{path} should be refused");
        }
        let must_pass = [
            "/",
            "/token",
            "/regex",
            "/registration",
            "/x/reg",
            "/auth",
            "/me",
            "/.well-known/openid-configuration",
            "/realms/bank/protocol/openid-connect/token",
            "/realms/bank/protocol/openid-connect/certs",
            "/realms/bank/.well-known/openid-configuration",
            "/realms/bank/account",
            "/realms/admin/protocol/openid-connect/auth",
            "/administrator",
            "/am/oauth2/realms/root/realms/alpha/access_token",
            "/am/oauth2/realms/root/realms/alpha/authorize",
            "/am/json/realms/root/authenticate",
            "/register-info",
            "/oauth2/register/x",
        ];
        for path in must_pass {
            assert!(!refused(path), "{path} should pass");
        }
    }

    #[test]
    fn dot_segments_are_noticed_even_when_encoded() {
        for path in [
            "/./token",
            "/x/../token",
            "/x/%2e%2E/token",
            "/x/%252e/token",
        ] {
            assert!(NormalPath::new(path).had_dot_segments, "{path}");
        }
        for path in ["/.well-known/openid-configuration", "/a..b", "/token"] {
            assert!(!NormalPath::new(path).had_dot_segments, "{path}");
        }
    }

    #[test]
    fn deny_patterns_use_one_and_many_segment_wildcards() {
        let p = DenyPattern::parse("/a/*/c").expect("parses");
        let m = |path: &str| p.matches(&NormalPath::new(path).segments);
        assert!(m("/a/b/c"));
        assert!(!m("/a/c"));
        assert!(!m("/a/b/b/c"));
        assert!(!m("/a/b/c/d"));

        let p = DenyPattern::parse("/a/**/c/**").expect("parses");
        let m = |path: &str| p.matches(&NormalPath::new(path).segments);
        assert!(m("/a/c"));
        assert!(m("/a/x/y/c/z"));
        assert!(!m("/b/a/c"));

        let everything = DenyPattern::parse("/**").expect("parses");
        assert!(everything.matches(&NormalPath::new("/").segments));

        // A long path against two `**` is answered at once, not by backtracking.
        let long: Vec<String> = std::iter::repeat_n("x".to_string(), 50_000).collect();
        let p = DenyPattern::parse("/**/oauth2/**/register").expect("parses");
        let started = Instant::now();
        assert!(!p.matches(&long));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn malformed_deny_patterns_are_refused_with_the_pattern_named() {
        for bad in [
            "reg", "/re*g", "/a/./b", "/a/../b", "/%72eg", "/reg;x", "/a\\b",
        ] {
            let err = DenyPattern::parse(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    // ---------------------------------------------------------------- request and response headers

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "x_other_hop"),
            ("x-secret-hop", "1"),
            ("x-other-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers, deflate;q=0.5"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("transfer_encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-authenticate", "Basic"),
            ("authorization", "Bearer kept"),
            ("x-fapi-interaction-id", "kept"),
        ]);
        remove_hop_by_hop(&mut h, true);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "te", "x-fapi-interaction-id"]);
        assert_eq!(h["te"], "trailers");

        let mut h = headers(&[("te", "trailers"), ("connection", "close")]);
        remove_hop_by_hop(&mut h, false);
        assert!(h.is_empty());
        let mut h = headers(&[("te", "gzip")]);
        remove_hop_by_hop(&mut h, true);
        assert!(h.is_empty());
    }

    #[test]
    fn forwarding_headers_are_replaced_never_appended() {
        let mut h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("X_Forwarded_For", "203.0.113.10"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-port", "80"),
            ("x-forwarded-prefix", "/evil"),
            ("forwarded", "for=203.0.113.9;host=evil.example"),
            ("x-real-ip", "203.0.113.9"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("host", "bank.example.com"),
            ("expect", "100-continue"),
            (
                "x-fapi-interaction-id",
                "c770aef3-6784-41f7-8e0e-ff5f97bddb3a",
            ),
        ]);
        let addr: SocketAddr = "[::ffff:192.0.2.7]:50000".parse().expect("addr");
        prepare_request_headers(
            &mut h,
            Version::HTTP_11,
            addr,
            "bank.example.com:8443",
            None,
        );
        let all = |name: &str| -> Vec<&str> {
            h.get_all(name)
                .iter()
                .map(|v| v.to_str().expect("ascii"))
                .collect()
        };
        assert_eq!(all("x-forwarded-for"), ["192.0.2.7"]);
        assert_eq!(all("x-forwarded-host"), ["bank.example.com:8443"]);
        assert_eq!(all("x-forwarded-proto"), ["https"]);
        assert_eq!(all("x-forwarded-port"), ["8443"]);
        assert_eq!(
            all("forwarded"),
            ["for=192.0.2.7;proto=https;host=\"bank.example.com:8443\""]
        );
        for gone in [
            "x_forwarded_for",
            "x-forwarded-prefix",
            "x-real-ip",
            "x-original-url",
            "x-rewrite-url",
            "host",
            "expect",
        ] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert_eq!(
            all("x-fapi-interaction-id"),
            ["c770aef3-6784-41f7-8e0e-ff5f97bddb3a"]
        );

        let mut h = HeaderMap::new();
        let v6: SocketAddr = "[2001:db8::1]:443".parse().expect("addr");
        prepare_request_headers(&mut h, Version::HTTP_11, v6, "bank.example.com", None);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-forwarded-port"], "443");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";proto=https;host=\"bank.example.com\""
        );
    }

    #[test]
    fn only_a_plain_host_from_the_client_is_passed_on() {
        let uri: Uri = "/token".parse().expect("uri");
        let host = |v: &str| client_authority(&headers(&[("host", v)]), &uri);
        assert_eq!(
            host("Bank.Example.com").as_deref(),
            Some("bank.example.com")
        );
        assert_eq!(
            host("bank.example.com:8443").as_deref(),
            Some("bank.example.com:8443")
        );
        assert_eq!(
            host("[2001:db8::1]:443").as_deref(),
            Some("[2001:db8::1]:443")
        );
        for bad in ["user@bank.example.com", "a,b", "a\"b", "bank/x", ""] {
            assert_eq!(host(bad), None, "{bad}");
        }
        let h2: Uri = "https://bank.example.com/token".parse().expect("uri");
        assert_eq!(
            client_authority(&HeaderMap::new(), &h2).as_deref(),
            Some("bank.example.com")
        );
    }

    #[test]
    fn http2_cookies_are_joined_into_one_field() {
        let mut h = headers(&[("cookie", "a=1"), ("cookie", "b=2")]);
        let addr: SocketAddr = "192.0.2.1:1".parse().expect("addr");
        prepare_request_headers(&mut h, Version::HTTP_2, addr, "bank.example.com", None);
        assert_eq!(
            h.get_all("cookie").iter().collect::<Vec<_>>(),
            [&HeaderValue::from_static("a=1; b=2")]
        );
    }

    #[test]
    fn a_peer_certificate_replaces_any_spoofed_certificate_header() {
        let peer = peer();
        let mut h = headers(&[
            ("client-cert", ":c3Bvb2Y=:"),
            ("SSL_CLIENT_CERT", "spoof"),
            ("x-forwarded-client-cert", "Hash=00"),
        ]);
        let addr: SocketAddr = "192.0.2.1:1".parse().expect("addr");
        prepare_request_headers(
            &mut h,
            Version::HTTP_11,
            addr,
            "bank.example.com",
            Some(&cert_headers(&peer, CertHeaderFormat::Rfc9440)),
        );
        assert_eq!(h.get_all("client-cert").iter().count(), 1);
        assert_eq!(
            h["client-cert"],
            format!(":{}:", STANDARD.encode(peer.der.as_ref())).as_str()
        );
        assert!(h.get("ssl_client_cert").is_none());
        assert!(h.get("x-forwarded-client-cert").is_none());
    }

    // ---------------------------------------------------------------- discovery

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

    // ---------------------------------------------------------------- over real sockets

    const CHUNK: usize = 64 * 1024;
    const LARGE: usize = 3 * 1024 * 1024;

    /// A body fed from a channel, so a test decides when each chunk exists.
    struct ChannelBody(mpsc::Receiver<Bytes>);

    impl hyper::body::Body for ChannelBody {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
        }
    }

    fn full(body: impl Into<Bytes>) -> RespBody {
        Full::new(body.into()).map_err(|n| match n {}).boxed()
    }

    struct Seen {
        method: Method,
        uri: String,
        headers: HeaderMap,
    }

    /// The IdP stand-in: records what reached it and answers by path.
    #[derive(Default)]
    struct Upstream {
        seen: Mutex<Vec<Seen>>,
        /// Lets `/stream` send the rest of its body.
        go: Notify,
        /// Raised by `/upload` once its first chunk has arrived.
        upload_started: Notify,
    }

    impl Upstream {
        fn seen(&self) -> Vec<Seen> {
            std::mem::take(&mut *self.seen.lock().expect("lock"))
        }

        async fn serve(self: Arc<Self>, req: Request<Incoming>) -> Response<RespBody> {
            self.seen.lock().expect("lock").push(Seen {
                method: req.method().clone(),
                uri: req.uri().to_string(),
                headers: req.headers().clone(),
            });
            let path = req.uri().path().to_owned();
            match path.as_str() {
                "/stream" => {
                    let (tx, rx) = mpsc::channel(4);
                    let me = self.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(Bytes::from(vec![b'a'; CHUNK])).await;
                        me.go.notified().await;
                        for _ in 1..LARGE / CHUNK {
                            if tx.send(Bytes::from(vec![b'b'; CHUNK])).await.is_err() {
                                return;
                            }
                        }
                    });
                    Response::new(ChannelBody(rx).boxed())
                }
                "/upload" => {
                    let mut body = req.into_body();
                    let mut n = 0usize;
                    let mut told = false;
                    while let Some(frame) = body.frame().await {
                        if let Ok(data) = frame.expect("upload frame").into_data() {
                            n += data.len();
                        }
                        if n >= CHUNK && !told {
                            told = true;
                            self.upload_started.notify_one();
                        }
                    }
                    Response::new(full(n.to_string()))
                }
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Response::new(full("too late"))
                }
                p if p.ends_with("/.well-known/openid-configuration") => {
                    let doc = serde_json::json!({
                        "issuer": "https://bank.example.com",
                        "registration_endpoint": "http://10.0.0.7:3000/reg",
                        "token_endpoint": "https://bank.example.com/token",
                    });
                    let mut resp = Response::new(full(doc.to_string()));
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    resp
                }
                "/missing/.well-known/oauth-authorization-server" => {
                    let mut resp = Response::new(full("{\"error\":\"not_found\"}"));
                    *resp.status_mut() = StatusCode::NOT_FOUND;
                    resp
                }
                _ => {
                    let mut resp = Response::new(full("ok"));
                    let h = resp.headers_mut();
                    h.insert(
                        header::CONNECTION,
                        HeaderValue::from_static("x-upstream-hop"),
                    );
                    h.insert("x-upstream-hop", HeaderValue::from_static("1"));
                    h.insert("proxy-authenticate", HeaderValue::from_static("Basic"));
                    h.insert("x-kept", HeaderValue::from_static("yes"));
                    resp
                }
            }
        }
    }

    async fn start_upstream() -> (Arc<Upstream>, SocketAddr) {
        let upstream = Arc::new(Upstream::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = upstream.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let up = up.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let up = up.clone();
                        async move { Ok::<_, Infallible>(up.serve(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (upstream, addr)
    }

    /// The proxy side: a plain-TCP server (h1 and h2 prior knowledge) whose only route is `forward`.
    async fn start_front(forwarder: Arc<Forwarder>, peer: Option<PeerCert>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = Arc::new(peer);
        tokio::spawn(async move {
            while let Ok((tcp, client_addr)) = listener.accept().await {
                let forwarder = forwarder.clone();
                let peer = peer.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let forwarder = forwarder.clone();
                        let peer = peer.clone();
                        async move {
                            Ok::<_, Infallible>(
                                forwarder
                                    .forward(req, peer.as_ref().as_ref(), client_addr)
                                    .await,
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        addr
    }

    fn config(upstream: SocketAddr) -> ForwardConfig {
        ForwardConfig {
            upstream_base: Url::parse(&format!("http://{upstream}")).expect("url"),
            public_url: Url::parse("https://proxy.example.com").expect("url"),
            cert_header: CertHeaderFormat::Rfc9440,
            deny_paths: ForwardConfig::default_deny_paths(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            discovery_ttl: Duration::from_secs(60),
            mtls_endpoint_aliases: None,
            ca_bundle: None,
        }
    }

    async fn front_for(cfg: ForwardConfig, peer: Option<PeerCert>) -> (Arc<Forwarder>, SocketAddr) {
        let forwarder = Arc::new(Forwarder::new(cfg).expect("forwarder"));
        let addr = start_front(forwarder.clone(), peer).await;
        (forwarder, addr)
    }

    async fn send(addr: SocketAddr, req: Request<RespBody>) -> Response<Incoming> {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        tokio::time::timeout(Duration::from_secs(10), tx.send_request(req))
            .await
            .expect("answered in time")
            .expect("response")
    }

    fn get(path: &str) -> Request<RespBody> {
        Request::get(path)
            .header(header::HOST, "bank.example.com")
            .body(full(""))
            .expect("request")
    }

    async fn body_of(resp: Response<Incoming>) -> Bytes {
        tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
            .await
            .expect("body in time")
            .expect("body")
            .to_bytes()
    }

    #[tokio::test]
    async fn spoofed_headers_never_reach_the_upstream_in_any_format() {
        let (upstream, upstream_addr) = start_upstream().await;
        let peer = peer();
        for format in [
            CertHeaderFormat::Rfc9440,
            CertHeaderFormat::Nginx,
            CertHeaderFormat::Envoy,
        ] {
            let mut cfg = config(upstream_addr);
            cfg.cert_header = format;
            let (_, front) = front_for(cfg, Some(peer.clone())).await;
            let req = Request::post("/token?grant_type=x")
                .header(header::HOST, "bank.example.com")
                .header("client-cert", ":c3Bvb2Y=:")
                .header("ssl_client_cert", "spoof")
                .header("SSL-Client-Verify", "SUCCESS")
                .header("x-forwarded-client-cert", "Hash=00;Cert=\"x\"")
                .header("x_forwarded_client_cert", "Hash=00")
                .header("cert_chain_0", "spoof")
                .header("x-forwarded-for", "203.0.113.9")
                .header("x-forwarded-host", "evil.example")
                .header("forwarded", "for=203.0.113.9")
                .header(header::CONNECTION, "x-drop-me")
                .header("x-drop-me", "1")
                .header("proxy-authorization", "Basic Zm9vOmJhcg==")
                .header(
                    "x-fapi-interaction-id",
                    "c770aef3-6784-41f7-8e0e-ff5f97bddb3a",
                )
                .header(header::AUTHORIZATION, "Bearer abc")
                .body(full("grant_type=client_credentials"))
                .expect("request");
            let resp = send(front, req).await;
            assert_eq!(resp.status(), StatusCode::OK, "{format:?}");
            assert_eq!(resp.headers()["x-kept"], "yes");
            for hop in ["x-upstream-hop", "proxy-authenticate"] {
                assert!(
                    resp.headers().get(hop).is_none(),
                    "{hop} leaked to the client"
                );
            }
            assert_eq!(body_of(resp).await, "ok");

            let seen = upstream.seen();
            assert_eq!(seen.len(), 1);
            let s = &seen[0];
            assert_eq!(s.method, Method::POST);
            assert_eq!(s.uri, "/token?grant_type=x");
            let h = &s.headers;
            assert_eq!(h[header::HOST], upstream_addr.to_string().as_str());
            assert_eq!(h["x-forwarded-for"], "127.0.0.1");
            assert_eq!(h["x-forwarded-host"], "bank.example.com");
            assert_eq!(h["x-forwarded-proto"], "https");
            assert_eq!(
                h["forwarded"],
                "for=127.0.0.1;proto=https;host=\"bank.example.com\""
            );
            assert_eq!(
                h["x-fapi-interaction-id"],
                "c770aef3-6784-41f7-8e0e-ff5f97bddb3a"
            );
            assert_eq!(h[header::AUTHORIZATION], "Bearer abc");
            for gone in [
                "x-drop-me",
                "proxy-authorization",
                "ssl_client_cert",
                "x_forwarded_client_cert",
                "cert_chain_0",
            ] {
                assert!(
                    h.get(gone).is_none(),
                    "{format:?}: {gone} reached the upstream"
                );
            }
            // Exactly the certificate headers of the configured format, with our values.
            let mut ours: Vec<(String, String)> = h
                .iter()
                .filter(|(n, _)| is_cert_header(&folded(n)))
                .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned()))
                .collect();
            ours.sort();
            let mut expected: Vec<(String, String)> = cert_headers(&peer, format)
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned()))
                .collect();
            expected.sort();
            assert_eq!(ours, expected, "{format:?}");
        }
    }

    #[tokio::test]
    async fn without_a_certificate_only_the_stripping_happens() {
        let (upstream, upstream_addr) = start_upstream().await;
        let (_, front) = front_for(config(upstream_addr), None).await;
        let req = Request::get("/me")
            .header(header::HOST, "bank.example.com")
            .header("client-cert", ":c3Bvb2Y=:")
            .header("SSL_CLIENT_VERIFY", "SUCCESS")
            .body(full(""))
            .expect("request");
        assert_eq!(send(front, req).await.status(), StatusCode::OK);
        let seen = upstream.seen();
        let cert_headers: Vec<&HeaderName> = seen[0]
            .headers
            .keys()
            .filter(|n| is_cert_header(&folded(n)))
            .collect();
        assert!(cert_headers.is_empty(), "{cert_headers:?}");
    }

    #[tokio::test]
    async fn the_upstream_prefix_is_added_after_matching_and_the_query_kept() {
        let (upstream, upstream_addr) = start_upstream().await;
        let mut cfg = config(upstream_addr);
        cfg.upstream_base = Url::parse(&format!("http://{upstream_addr}/auth/")).expect("url");
        let (_, front) = front_for(cfg, None).await;
        let resp = send(
            front,
            get("/realms/bank/protocol/openid-connect/auth?client_id=a&x=%20"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            upstream.seen()[0].uri,
            "/auth/realms/bank/protocol/openid-connect/auth?client_id=a&x=%20"
        );
    }

    #[tokio::test]
    async fn denied_paths_answer_404_and_never_reach_the_upstream() {
        let (upstream, upstream_addr) = start_upstream().await;
        let (_, front) = front_for(config(upstream_addr), None).await;
        for path in [
            "/reg",
            "/REG",
            "/reg/",
            "/%72eg",
            "//reg",
            "/reg/abc",
            "/admin/realms",
            "/x/../reg",
        ] {
            let resp = send(front, get(path)).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
            let body: Value = serde_json::from_slice(&body_of(resp).await).expect("json");
            assert_eq!(body["error"], "invalid_request", "{path}");
        }
        let resp = send(front, get("/x/../token")).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(upstream.seen().is_empty());
    }

    #[tokio::test]
    async fn a_large_response_streams_through_without_being_buffered() {
        let (upstream, upstream_addr) = start_upstream().await;
        let (_, front) = front_for(config(upstream_addr), None).await;
        let resp = send(front, get("/stream")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut n = 0usize;
        // The upstream holds the rest back until we say so: a buffering proxy would deadlock here.
        while n < CHUNK {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("the first chunk arrives before the upstream finishes")
                .expect("a frame")
                .expect("no error");
            n += frame.into_data().map(|d| d.len()).unwrap_or(0);
        }
        upstream.go.notify_one();
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the rest arrives")
        {
            n += frame
                .expect("no error")
                .into_data()
                .map(|d| d.len())
                .unwrap_or(0);
        }
        assert_eq!(n, LARGE);
    }

    #[tokio::test]
    async fn a_large_request_body_streams_through_without_being_buffered() {
        let (upstream, upstream_addr) = start_upstream().await;
        let (_, front) = front_for(config(upstream_addr), None).await;
        let (tx, rx) = mpsc::channel(4);
        let req = Request::post("/upload")
            .header(header::HOST, "bank.example.com")
            .body(ChannelBody(rx).boxed())
            .expect("request");
        let pending = tokio::spawn(send(front, req));
        tx.send(Bytes::from(vec![b'a'; CHUNK])).await.expect("send");
        // The rest is not sent until the upstream has seen the first chunk.
        tokio::time::timeout(Duration::from_secs(5), upstream.upload_started.notified())
            .await
            .expect("the first chunk reaches the upstream before the body is complete");
        for _ in 1..LARGE / CHUNK {
            tx.send(Bytes::from(vec![b'b'; CHUNK])).await.expect("send");
        }
        drop(tx);
        let resp = pending.await.expect("task");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body_of(resp).await, LARGE.to_string());
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_502_that_names_no_address() {
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr")
        };
        let (_, front) = front_for(config(closed), None).await;
        let resp = send(front, get("/token")).await;
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let body = body_of(resp).await;
        let json: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"], "server_error");
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("127.0.0.1") && !text.contains(&closed.port().to_string()),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_silent_upstream_is_a_504_within_the_response_timeout() {
        let (_upstream, upstream_addr) = start_upstream().await;
        let mut cfg = config(upstream_addr);
        cfg.response_timeout = Duration::from_millis(300);
        let (_, front) = front_for(cfg, None).await;
        let started = Instant::now();
        let resp = send(front, get("/slow")).await;
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let json: Value = serde_json::from_slice(&body_of(resp).await).expect("json");
        assert_eq!(json["error"], "server_error");
    }

    #[tokio::test]
    async fn discovery_is_rewritten_fetched_once_and_served_from_cache() {
        let (upstream, upstream_addr) = start_upstream().await;
        let mut cfg = config(upstream_addr);
        let mut aliases = Map::new();
        aliases.insert(
            "token_endpoint".into(),
            Value::String("https://mtls.bank.example.com/token".into()),
        );
        cfg.mtls_endpoint_aliases = Some(aliases.clone());
        let (forwarder, front) = front_for(cfg, None).await;

        for host in ["bank.example.com", "other.example.com"] {
            let req = Request::get("/.well-known/openid-configuration?x=1")
                .header(header::HOST, host)
                .body(full(""))
                .expect("request");
            let resp = send(front, req).await;
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
            let doc: Value = serde_json::from_slice(&body_of(resp).await).expect("json");
            assert_eq!(
                doc,
                serde_json::json!({
                    "issuer": "https://bank.example.com",
                    "registration_endpoint": "https://proxy.example.com/register",
                    "token_endpoint": "https://bank.example.com/token",
                    "mtls_endpoint_aliases": aliases,
                })
            );
        }
        assert_eq!(forwarder.discovery_fetches(), 1);
        let seen = upstream.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].uri, "/.well-known/openid-configuration");
        assert_eq!(seen[0].headers["x-forwarded-host"], "proxy.example.com");
        assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
        assert!(seen[0].headers.get("x-forwarded-for").is_none());

        // A Keycloak realm's document is a separate entry.
        let resp = send(front, get("/realms/bank/.well-known/openid-configuration")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let doc: Value = serde_json::from_slice(&body_of(resp).await).expect("json");
        assert_eq!(
            doc["registration_endpoint"],
            "https://proxy.example.com/register"
        );
        assert_eq!(forwarder.discovery_fetches(), 2);

        // An upstream error is passed on and not cached.
        for _ in 0..2 {
            let resp = send(
                front,
                get("/missing/.well-known/oauth-authorization-server"),
            )
            .await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        }
        assert_eq!(forwarder.discovery_fetches(), 4);
    }

    #[tokio::test]
    async fn an_http2_client_is_forwarded_over_http1() {
        let (upstream, upstream_addr) = start_upstream().await;
        let (_, front) = front_for(config(upstream_addr), None).await;
        let tcp = TcpStream::connect(front).await.expect("connect");
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let req = Request::get("https://bank.example.com/me")
            .header(header::COOKIE, "a=1")
            .header(header::COOKIE, "b=2")
            .header(header::TE, "trailers")
            .body(full(""))
            .expect("request");
        let resp = tx.send_request(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body_of(resp).await, "ok");
        let seen = upstream.seen();
        let h = &seen[0].headers;
        assert_eq!(seen[0].uri, "/me");
        assert_eq!(h["x-forwarded-host"], "bank.example.com");
        assert_eq!(h[header::HOST], upstream_addr.to_string().as_str());
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let mut cfg = config(addr);
        cfg.upstream_base = Url::parse("ftp://idp").expect("url");
        assert!(Forwarder::new(cfg).is_err());
        let mut cfg = config(addr);
        cfg.upstream_base = Url::parse("http://u:p@idp").expect("url");
        assert!(Forwarder::new(cfg).is_err());
        let mut cfg = config(addr);
        cfg.response_timeout = Duration::ZERO;
        assert!(Forwarder::new(cfg).is_err());
        let mut cfg = config(addr);
        cfg.deny_paths = vec!["reg".into()];
        assert!(
            Forwarder::new(cfg)
                .err()
                .expect("bad pattern")
                .contains("\"reg\"")
        );
    }
}
