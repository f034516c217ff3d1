//! What happens to headers on the way through: hop-by-hop fields, spoofable forwarding and
//! client-certificate headers, HTTP/2 cookies, and the Host the client named.
//!
//! The proxy is the TLS edge, so nothing a client says about itself in a header is trusted: every
//! forwarding header (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`) and every client-certificate header
//! in any spelling is removed and, where we know the truth, set again from the connection.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Uri, Version};

/// The authority the client addressed (`Host`, or `:authority` in HTTP/2), when it is a plain
/// `host[:port]`. Anything else is dropped rather than passed on for the IdP to build URLs from.
pub(super) fn client_authority(headers: &HeaderMap, uri: &Uri) -> Option<String> {
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
pub(super) fn folded(name: &HeaderName) -> String {
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

pub(super) fn is_cert_header(folded: &str) -> bool {
    CERT_HEADER_PREFIXES.iter().any(|p| folded.starts_with(p))
}

/// Removes every copy of every client-certificate header we know, and of the names the operator
/// configured (`configured`, folded), in any case, with `_` and `-` folded.
fn strip_cert_headers(headers: &mut HeaderMap, configured: &[String]) {
    remove_where(headers, |f| {
        is_cert_header(f) || configured.iter().any(|c| c == f)
    });
}

/// Headers an operator may not choose for the certificate: ones HTTP or this proxy already gives a
/// meaning to, which the certificate would overwrite or be overwritten by.
pub(super) fn is_reserved_header(folded: &str) -> bool {
    HOP_BY_HOP.contains(&folded)
        || is_forwarding_header(folded)
        || matches!(
            folded,
            "host"
                | "authorization"
                | "content-length"
                | "content-type"
                | "content-encoding"
                | "cookie"
                | "expect"
                | "x-fapi-interaction-id"
        )
}

/// Removes all values of every header whose folded name satisfies `pred`. Runs on every pass-through
/// request and response, so it allocates only for a name with `_` in it or a header to remove (profiled:
/// folding every name into a new String, three passes per request, was ~1.5 % of the pass-through's CPU).
fn remove_where(headers: &mut HeaderMap, pred: impl Fn(&str) -> bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let raw = name.as_str();
        let hit = if raw.contains('_') {
            pred(&folded(name))
        } else {
            pred(raw)
        };
        if hit {
            doomed.push(name.clone());
        }
    }
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
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // The Connection values are shared, not copied, and its tokens compared in place: Node answers every
    // response with `Connection: keep-alive`, and lowercasing each token into a new String per response
    // showed in the pass-through's profile.
    let named: Vec<HeaderValue> = headers
        .get_all(header::CONNECTION)
        .iter()
        .cloned()
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
        HOP_BY_HOP.contains(&f)
            || named
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| folded_eq(t.trim(), f))
    });
    if wants_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether a token names the header `folded` (lowercase, `-`), read as `folded` does: case and `_` ignored.
fn folded_eq(token: &str, folded: &str) -> bool {
    token.len() == folded.len()
        && token.bytes().zip(folded.bytes()).all(|(t, f)| {
            let t = if t == b'_' {
                b'-'
            } else {
                t.to_ascii_lowercase()
            };
            t == f
        })
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

/// The forwarding headers for one client address and one Host, built once: a connection names the same
/// Host request after request, so the pass-through reuses them while it does (`forward::ClientConnection`).
/// Profiled: formatting the address and the values per request was ~1.3 % of a kept-alive pass-through.
#[derive(Debug)]
pub(super) struct Forwarding {
    values: Vec<(HeaderName, HeaderValue)>,
}

impl Forwarding {
    /// For a client connection from `addr` (an IPv4-mapped IPv6 address is named as IPv4).
    pub(super) fn for_client(addr: SocketAddr, host: &str) -> Self {
        Self::new(Some(addr.ip().to_canonical()), host)
    }

    /// `client` is absent for our own requests (discovery).
    pub(super) fn new(client: Option<IpAddr>, host: &str) -> Self {
        use std::fmt::Write as _;
        let mut values = Vec::with_capacity(5);
        let port = port_of(host).unwrap_or(443);
        let mut forwarded = String::with_capacity(host.len() + 64);
        if let Some(ip) = client {
            // RFC 7239 section 6: an IPv6 node is bracketed, and then must be quoted.
            let (open, close) = match ip {
                IpAddr::V4(_) => ("for=", ";"),
                IpAddr::V6(_) => ("for=\"[", "]\";"),
            };
            forwarded.push_str(open);
            let _ = write!(forwarded, "{ip}");
            if let Ok(v) = HeaderValue::from_str(&forwarded[open.len()..]) {
                values.push((X_FORWARDED_FOR, v));
            }
            forwarded.push_str(close);
        }
        values.push((X_FORWARDED_PROTO, HeaderValue::from_static("https")));
        if let Ok(v) = HeaderValue::from_str(host) {
            values.push((X_FORWARDED_HOST, v));
        }
        values.push((X_FORWARDED_PORT, HeaderValue::from(port)));
        // The host is always quoted: with a port it contains `:`, which a token may not.
        let _ = write!(forwarded, "proto=https;host=\"{host}\"");
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            values.push((header::FORWARDED, v));
        }
        Forwarding { values }
    }
}

/// Replaces, never appends: as the TLS edge we are the first proxy, so any value already present
/// came from the client.
pub(super) fn set_forwarding_headers(headers: &mut HeaderMap, forwarding: &Forwarding) {
    remove_where(headers, is_forwarding_header);
    // Growing the map once, not on the way (hyper sizes it for the fields read). Far from http's 32,768-field
    // limit (hyper reads at most 100 fields); `try_` keeps this line panic-free anyway.
    let _ = headers.try_reserve(forwarding.values.len());
    for (name, value) in &forwarding.values {
        headers.insert(name.clone(), value.clone());
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// The port of a `host[:port]` that `client_authority` (or our own configuration) let through: after
/// the last `:`, unless that `:` is inside an IPv6 literal's brackets.
fn port_of(authority: &str) -> Option<u16> {
    let (head, port) = authority.rsplit_once(':')?;
    if head.starts_with('[') && !head.ends_with(']') {
        return None;
    }
    port.parse().ok()
}

/// Everything done to a client's request headers before they go upstream, except Host.
/// `cert_names` (folded) are the configured certificate header names, stripped like the known ones.
pub(super) fn prepare_request_headers(
    headers: &mut HeaderMap,
    version: Version,
    forwarding: &Forwarding,
    cert: Option<&[(HeaderName, HeaderValue)]>,
    cert_names: &[String],
) {
    remove_hop_by_hop(headers, true);
    strip_cert_headers(headers, cert_names);
    headers.remove(header::HOST);
    // hyper has already answered `100-continue` on the client side; the upstream leg would wait
    // for an interim response that hyper's client does not wait for.
    headers.remove(header::EXPECT);
    if version == Version::HTTP_2 {
        merge_cookies(headers);
    }
    set_forwarding_headers(headers, forwarding);
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

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::forward::CertHeaderFormat;
    use crate::forward::cert_header::{CertHeaderConfig, ClientAnchors, cert_headers};
    use crate::forward::tests::peer;

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
        strip_cert_headers(&mut h, &[]);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        let mut expected = kept.to_vec();
        expected.sort_unstable();
        assert_eq!(left, expected);
    }

    #[test]
    fn configured_certificate_header_names_are_stripped_in_every_spelling() {
        let mut h = headers(&[
            ("X_Bank_Client_Cert", "spoofed"),
            ("x-bank-client-cert", "spoofed"),
            (
                "x-bank-client-certificate",
                "kept: only exact names are configured",
            ),
        ]);
        strip_cert_headers(&mut h, &["x-bank-client-cert".to_string()]);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-bank-client-certificate"]);
    }

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
            &Forwarding::for_client(addr, "bank.example.com:8443"),
            None,
            &[],
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
        prepare_request_headers(
            &mut h,
            Version::HTTP_11,
            &Forwarding::for_client(v6, "bank.example.com"),
            None,
            &[],
        );
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-forwarded-port"], "443");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";proto=https;host=\"bank.example.com\""
        );
    }

    #[test]
    fn the_forwarded_port_is_read_past_an_ipv6_literal() {
        for (authority, port) in [
            ("bank.example.com", None),
            ("bank.example.com:8443", Some(8443)),
            ("[2001:db8::1]", None),
            ("[2001:db8::1]:8443", Some(8443)),
            ("127.0.0.1:80", Some(80)),
        ] {
            assert_eq!(port_of(authority), port, "{authority}");
        }
        let mut h = HeaderMap::new();
        let v4: SocketAddr = "192.0.2.7:5000".parse().expect("addr");
        prepare_request_headers(
            &mut h,
            Version::HTTP_11,
            &Forwarding::for_client(v4, "[2001:db8::1]:8443"),
            None,
            &[],
        );
        assert_eq!(h["x-forwarded-port"], "8443");
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.7;proto=https;host=\"[2001:db8::1]:8443\""
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
        prepare_request_headers(
            &mut h,
            Version::HTTP_2,
            &Forwarding::for_client(addr, "bank.example.com"),
            None,
            &[],
        );
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
            &Forwarding::for_client(addr, "bank.example.com"),
            Some(&cert_headers(
                &peer,
                &CertHeaderConfig::new(CertHeaderFormat::Rfc9440),
                &ClientAnchors::default(),
            )),
            &[],
        );
        assert_eq!(h.get_all("client-cert").iter().count(), 1);
        assert_eq!(
            h["client-cert"],
            format!(":{}:", STANDARD.encode(peer.der.as_ref())).as_str()
        );
        assert!(h.get("ssl_client_cert").is_none());
        assert!(h.get("x-forwarded-client-cert").is_none());
    }
}
