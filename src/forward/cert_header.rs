//! The verified client certificate as the IdP wants to read it: RFC 9440, nginx or Envoy headers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{HeaderName, HeaderValue};

use super::CertHeaderFormat;
use crate::identity::PeerCert;

/// A connection's certificate headers, encoded once.
pub type CertHeaders = std::sync::Arc<[(HeaderName, HeaderValue)]>;

/// The headers that carry `peer` in `format`. All values are ASCII by construction.
pub(super) fn cert_headers(
    peer: &PeerCert,
    format: CertHeaderFormat,
) -> Vec<(HeaderName, HeaderValue)> {
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

#[cfg(test)]
mod tests {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    use super::*;
    use crate::forward::deny::percent_decode;
    use crate::forward::tests::peer;

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
}
