//! The verified client certificate as the IdP wants to read it: RFC 9440, nginx or Envoy headers,
//! under the names the operator configured, with only the intermediates the IdP can use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{HeaderName, HeaderValue};
use rustls_pki_types::CertificateDer;

use super::CertHeaderFormat;
use super::headers::{folded, is_reserved_header};
use crate::identity::PeerCert;

/// A connection's certificate headers, encoded once.
pub type CertHeaders = std::sync::Arc<[(HeaderName, HeaderValue)]>;

/// Keycloak's `certificate-chain-length` default: `Rfc9440ClientCertificateLookupFactory`
/// (`HTTP_HEADER_CERT_CHAIN_LENGTH_DEFAULT = 1`). Its lookup counts only the `Client-Cert-Chain`
/// entries, not the leaf, and with one entry too many it throws, so the IdP sees no certificate.
pub const DEFAULT_CHAIN_MAX: usize = 1;

/// `[forward]`'s certificate settings: the format, the header names the IdP reads, and how many
/// intermediates it accepts.
#[derive(Clone, Debug)]
pub struct CertHeaderConfig {
    pub format: CertHeaderFormat,
    /// The leaf's header (rfc9440, nginx) or Envoy's whole `x-forwarded-client-cert`.
    pub name: HeaderName,
    /// rfc9440: the intermediates' header.
    pub chain_name: HeaderName,
    /// nginx: the header that says the proxy verified the certificate. Keycloak reads it under this
    /// fixed name (`NginxProxyTrustedClientCertificateLookup`), so it rarely needs changing.
    pub verify_name: HeaderName,
    /// Intermediates sent at most: `Client-Cert-Chain` entries, or Envoy `Chain` entries after the
    /// leaf. 0 sends the leaf only. The nginx format carries the leaf only, whatever this says.
    pub chain_max: usize,
}

impl CertHeaderConfig {
    /// The format with its conventional header names and Keycloak's default chain length.
    pub fn new(format: CertHeaderFormat) -> CertHeaderConfig {
        let name = match format {
            CertHeaderFormat::Rfc9440 => "client-cert",
            CertHeaderFormat::Nginx => "ssl-client-cert",
            CertHeaderFormat::Envoy => "x-forwarded-client-cert",
        };
        CertHeaderConfig {
            format,
            name: HeaderName::from_static(name),
            chain_name: HeaderName::from_static("client-cert-chain"),
            verify_name: HeaderName::from_static("ssl-client-verify"),
            chain_max: DEFAULT_CHAIN_MAX,
        }
    }

    /// An operator's header name: a valid field name, and not one whose meaning the proxy or HTTP
    /// already owns (hop-by-hop, forwarding, Host, Authorization, the body's framing), since the
    /// value we put there would replace or be replaced by that meaning.
    pub fn header_name(s: &str) -> Result<HeaderName, String> {
        let name = HeaderName::from_bytes(s.as_bytes())
            .map_err(|_| format!("`{s}` is not a valid HTTP header name"))?;
        if is_reserved_header(&folded(&name)) {
            return Err(format!(
                "`{s}` is a header the proxy or HTTP itself uses; name another"
            ));
        }
        Ok(name)
    }

    /// The names this format sends, folded as the strip compares them.
    fn names(&self) -> Vec<String> {
        let mut names = vec![folded(&self.name)];
        match self.format {
            CertHeaderFormat::Rfc9440 => names.push(folded(&self.chain_name)),
            CertHeaderFormat::Nginx => names.push(folded(&self.verify_name)),
            CertHeaderFormat::Envoy => {}
        }
        names
    }
}

/// The client-CA trust anchors (`tls.client_ca`) as the chain filter compares them: subject and
/// public key, which is what makes a certificate an anchor to the verifier (webpki keeps exactly
/// these of each CA certificate), whichever certificate carried them.
#[derive(Debug, Default)]
pub struct ClientAnchors {
    anchors: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ClientAnchors {
    /// Certificates that do not parse are left out: the TLS verifier would not have loaded them either.
    pub fn new(certs: &[CertificateDer<'_>]) -> ClientAnchors {
        let anchors = certs
            .iter()
            .filter_map(|c| Parsed::new(c))
            .map(|p| (p.subject, p.spki))
            .collect();
        ClientAnchors { anchors }
    }

    fn names(&self, subject: &[u8]) -> bool {
        self.anchors.iter().any(|(s, _)| s == subject)
    }

    fn contains(&self, subject: &[u8], spki: &[u8]) -> bool {
        self.anchors.iter().any(|(s, k)| s == subject && k == spki)
    }
}

/// What the chain walk needs of a certificate: raw DER of its names and key.
struct Parsed {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    spki: Vec<u8>,
}

impl Parsed {
    fn new(der: &CertificateDer<'_>) -> Option<Parsed> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        Some(Parsed {
            subject: cert.subject().as_raw().to_vec(),
            issuer: cert.issuer().as_raw().to_vec(),
            spki: cert.public_key().raw.to_vec(),
        })
    }

    /// A self-issued certificate is a root: it certifies nothing above itself, and an IdP that
    /// validates the path must hold its own copy anyway.
    fn is_root(&self) -> bool {
        self.subject == self.issuer
    }
}

/// The intermediates to forward, leaf side first: the certification path from the leaf's issuer
/// upwards through the presented certificates, ending before a configured anchor (by name) or a
/// root, at most `max` long. A certificate off that path (a client may send extras, in any order)
/// is never forwarded, and neither is an anchor: RFC 9440 section 2.3 lets a trust anchor be left
/// out, and Keycloak counts it against `certificate-chain-length`.
fn forwarded_chain<'a>(
    peer: &'a PeerCert,
    anchors: &ClientAnchors,
    max: usize,
) -> Vec<&'a CertificateDer<'static>> {
    let Some(leaf) = Parsed::new(&peer.der) else {
        return Vec::new();
    };
    let presented: Vec<Option<Parsed>> = peer.chain.iter().map(Parsed::new).collect();
    let mut used = vec![false; presented.len()];
    let mut issuer = leaf.issuer;
    let mut out = Vec::new();
    while !anchors.names(&issuer) {
        let next = presented.iter().enumerate().find_map(|(i, p)| {
            p.as_ref()
                .filter(|p| !used[i] && p.subject == issuer)
                .map(|p| (i, p))
        });
        let Some((i, cert)) = next else {
            break;
        };
        if cert.is_root() || anchors.contains(&cert.subject, &cert.spki) {
            break;
        }
        if out.len() == max {
            tracing::debug!(
                max,
                "the client's certification path is longer than forward.cert_chain_max; the rest is not forwarded"
            );
            break;
        }
        used[i] = true;
        out.push(&peer.chain[i]);
        issuer = cert.issuer.clone();
    }
    out
}

/// Encodes connections' certificates in the configured format. The anchors follow `tls.client_ca`
/// when the TLS material is reloaded.
pub(super) struct CertEncoder {
    cfg: CertHeaderConfig,
    anchors: RwLock<Arc<ClientAnchors>>,
    /// Bumped after every change of `anchors`, so headers cached under an older value are not used again.
    generation: AtomicU64,
    /// Folded names of every header this format sends, stripped from every request whether or
    /// not it carries a certificate.
    strip: Vec<String>,
}

impl CertEncoder {
    pub(super) fn new(cfg: CertHeaderConfig) -> CertEncoder {
        CertEncoder {
            strip: cfg.names(),
            cfg,
            anchors: RwLock::new(Arc::new(ClientAnchors::default())),
            generation: AtomicU64::new(0),
        }
    }

    pub(super) fn set_anchors(&self, anchors: ClientAnchors) {
        *self.anchors.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(anchors);
        // After the write: whoever reads the new generation then reads the new anchors.
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(super) fn strip_names(&self) -> &[String] {
        &self.strip
    }

    pub(super) fn headers(&self, peer: &PeerCert) -> Vec<(HeaderName, HeaderValue)> {
        let anchors = self
            .anchors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        cert_headers(peer, &self.cfg, &anchors)
    }
}

/// The headers that carry `peer`. All values are ASCII by construction.
pub(super) fn cert_headers(
    peer: &PeerCert,
    cfg: &CertHeaderConfig,
    anchors: &ClientAnchors,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    let mut push = |name: &HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.push((name.clone(), v));
        }
    };
    match cfg.format {
        CertHeaderFormat::Rfc9440 => {
            push(&cfg.name, sf_binary(peer.der.as_ref()));
            let chain = forwarded_chain(peer, anchors, cfg.chain_max);
            if !chain.is_empty() {
                let chain: Vec<String> = chain.iter().map(|c| sf_binary(c.as_ref())).collect();
                push(&cfg.chain_name, chain.join(", "));
            }
        }
        CertHeaderFormat::Nginx => {
            push(&cfg.name, url_encode(&pem(peer.der.as_ref())));
            // Keycloak's trusted nginx provider and our test IdP refuse the certificate without it.
            push(&cfg.verify_name, "SUCCESS".into());
        }
        CertHeaderFormat::Envoy => {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, peer.der.as_ref());
            // Envoy's Chain is the chain leaf first; the same path rule applies after the leaf.
            let mut chain = pem(peer.der.as_ref());
            for c in forwarded_chain(peer, anchors, cfg.chain_max) {
                chain.push_str(&pem(c.as_ref()));
            }
            push(
                &cfg.name,
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
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls_pki_types::pem::PemObject;

    use super::*;
    use crate::forward::deny::percent_decode;

    /// root -> inter1 -> inter2 -> leaf, and a stray self-signed CA that certifies none of them.
    struct Pki {
        root: CertificateDer<'static>,
        inter1: CertificateDer<'static>,
        inter2: CertificateDer<'static>,
        leaf: CertificateDer<'static>,
        stray: CertificateDer<'static>,
    }

    fn ca_params(name: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_owned());
        p
    }

    fn key() -> KeyPair {
        KeyPair::generate().expect("key")
    }

    fn pki() -> Pki {
        let root = CertifiedIssuer::self_signed(ca_params("Root"), key()).expect("root");
        let inter1 = CertifiedIssuer::signed_by(ca_params("Inter 1"), key(), &root).expect("i1");
        let inter2 = CertifiedIssuer::signed_by(ca_params("Inter 2"), key(), &inter1).expect("i2");
        let leaf = CertificateParams::new(vec!["client.tpp.example".to_string()])
            .expect("leaf params")
            .signed_by(&key(), &inter2)
            .expect("leaf");
        let stray = CertifiedIssuer::self_signed(ca_params("Stray"), key()).expect("stray");
        Pki {
            root: root.der().clone(),
            inter1: inter1.der().clone(),
            inter2: inter2.der().clone(),
            leaf: leaf.der().clone(),
            stray: stray.der().clone(),
        }
    }

    fn presenting(pki: &Pki, chain: &[&CertificateDer<'static>]) -> PeerCert {
        PeerCert::from_der(
            pki.leaf.clone(),
            chain.iter().map(|c| (*c).clone()).collect(),
        )
        .expect("peer cert")
    }

    fn cfg(format: CertHeaderFormat, chain_max: usize) -> CertHeaderConfig {
        CertHeaderConfig {
            chain_max,
            ..CertHeaderConfig::new(format)
        }
    }

    fn anchors(certs: &[&CertificateDer<'static>]) -> ClientAnchors {
        ClientAnchors::new(&certs.iter().map(|c| (*c).clone()).collect::<Vec<_>>())
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

    fn byte_sequence(item: &str) -> Vec<u8> {
        let b64 = item
            .strip_prefix(':')
            .and_then(|s| s.strip_suffix(':'))
            .expect("colon-delimited");
        STANDARD.decode(b64).expect("base64")
    }

    /// The certificates of `Client-Cert-Chain`, as Keycloak splits it (`,\s*`); none when absent.
    fn rfc9440_chain(h: &[(HeaderName, HeaderValue)]) -> Vec<Vec<u8>> {
        match h.iter().find(|(n, _)| n == "client-cert-chain") {
            None => Vec::new(),
            Some(_) => one(h, "client-cert-chain")
                .split(", ")
                .map(byte_sequence)
                .collect(),
        }
    }

    fn envoy_pairs(h: &[(HeaderName, HeaderValue)], name: &str) -> Vec<(String, String)> {
        one(h, name)
            .split(';')
            .map(|p| {
                let (k, v) = p.split_once('=').expect("key=value");
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map_or_else(|| v.to_owned(), url_decode);
                (k.to_owned(), v)
            })
            .collect()
    }

    #[test]
    fn rfc9440_sends_the_leaf_and_the_path_to_the_anchor_without_the_anchor() {
        let pki = pki();
        let peer = presenting(&pki, &[&pki.inter2, &pki.inter1, &pki.root]);
        let h = cert_headers(
            &peer,
            &cfg(CertHeaderFormat::Rfc9440, 5),
            &anchors(&[&pki.root]),
        );
        assert_eq!(h.len(), 2);
        assert_eq!(byte_sequence(one(&h, "client-cert")), pki.leaf.to_vec());
        assert_eq!(
            rfc9440_chain(&h),
            vec![pki.inter2.to_vec(), pki.inter1.to_vec()]
        );
    }

    #[test]
    fn by_default_the_chain_fits_keycloaks_default_length_of_one() {
        let pki = pki();
        let peer = presenting(&pki, &[&pki.inter2, &pki.inter1, &pki.root]);
        let cfg = CertHeaderConfig::new(CertHeaderFormat::Rfc9440);
        assert_eq!(cfg.chain_max, 1);
        let h = cert_headers(&peer, &cfg, &anchors(&[&pki.root]));
        assert_eq!(rfc9440_chain(&h), vec![pki.inter2.to_vec()]);
    }

    #[test]
    fn no_anchor_and_no_root_is_ever_forwarded() {
        let pki = pki();
        let peer = presenting(&pki, &[&pki.inter2, &pki.inter1, &pki.root]);
        let rfc = cfg(CertHeaderFormat::Rfc9440, 10);
        // The operator trusts the issuing CA itself: only the leaf goes.
        let h = cert_headers(&peer, &rfc, &anchors(&[&pki.inter2]));
        assert!(rfc9440_chain(&h).is_empty(), "{h:?}");
        let h = cert_headers(&peer, &rfc, &anchors(&[&pki.inter1]));
        assert_eq!(rfc9440_chain(&h), vec![pki.inter2.to_vec()]);
        // Anchors unknown (or reloaded away): a self-issued root still stays behind.
        let h = cert_headers(&peer, &rfc, &ClientAnchors::default());
        assert_eq!(
            rfc9440_chain(&h),
            vec![pki.inter2.to_vec(), pki.inter1.to_vec()]
        );
    }

    #[test]
    fn the_chain_follows_the_path_whatever_order_and_extras_the_client_sent() {
        let pki = pki();
        let peer = presenting(
            &pki,
            &[&pki.root, &pki.stray, &pki.inter1, &pki.stray, &pki.inter2],
        );
        let h = cert_headers(
            &peer,
            &cfg(CertHeaderFormat::Rfc9440, 10),
            &anchors(&[&pki.root, &pki.stray]),
        );
        assert_eq!(
            rfc9440_chain(&h),
            vec![pki.inter2.to_vec(), pki.inter1.to_vec()]
        );
        // A gap in the path ends it: what lies beyond is not the leaf's chain.
        let peer = presenting(&pki, &[&pki.inter1, &pki.root]);
        let h = cert_headers(
            &peer,
            &cfg(CertHeaderFormat::Rfc9440, 10),
            &anchors(&[&pki.root]),
        );
        assert!(rfc9440_chain(&h).is_empty(), "{h:?}");
    }

    #[test]
    fn a_chain_length_of_zero_sends_the_leaf_alone() {
        let pki = pki();
        let peer = presenting(&pki, &[&pki.inter2, &pki.inter1]);
        let none = ClientAnchors::default();
        let h = cert_headers(&peer, &cfg(CertHeaderFormat::Rfc9440, 0), &none);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].0, "client-cert");
        let h = cert_headers(&peer, &cfg(CertHeaderFormat::Envoy, 0), &none);
        let chain = &envoy_pairs(&h, "x-forwarded-client-cert")[2];
        assert_eq!(chain.0, "Chain");
        assert_eq!(pem_to_ders(&chain.1), vec![pki.leaf.to_vec()]);
    }

    #[test]
    fn nginx_header_is_the_url_encoded_pem_of_the_leaf_and_says_verified() {
        let pki = pki();
        let peer = presenting(&pki, &[&pki.inter2, &pki.inter1]);
        let h = cert_headers(
            &peer,
            &cfg(CertHeaderFormat::Nginx, 10),
            &ClientAnchors::default(),
        );
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
        assert_eq!(pem_to_ders(&pem), vec![pki.leaf.to_vec()]);
        assert_eq!(one(&h, "ssl-client-verify"), "SUCCESS");
    }

    #[test]
    fn envoy_header_carries_hash_cert_and_the_chain_leaf_first() {
        let pki = pki();
        let peer = presenting(&pki, &[&pki.root, &pki.inter1, &pki.inter2]);
        let h = cert_headers(
            &peer,
            &cfg(CertHeaderFormat::Envoy, 10),
            &anchors(&[&pki.root]),
        );
        assert_eq!(h.len(), 1);
        let pairs = envoy_pairs(&h, "x-forwarded-client-cert");
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["Hash", "Cert", "Chain"]);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pki.leaf.as_ref());
        assert_eq!(pairs[0].1, hex(digest.as_ref()));
        assert_eq!(pairs[0].1.len(), 64);
        assert_eq!(pem_to_ders(&pairs[1].1), vec![pki.leaf.to_vec()]);
        assert_eq!(
            pem_to_ders(&pairs[2].1),
            vec![pki.leaf.to_vec(), pki.inter2.to_vec(), pki.inter1.to_vec()]
        );
    }

    #[test]
    fn the_operator_names_the_headers() {
        let pki = pki();
        let peer = presenting(&pki, &[&pki.inter2, &pki.root]);
        let none = ClientAnchors::default();
        let named = |s: &str| CertHeaderConfig::header_name(s).expect("a usable name");
        let rfc = CertHeaderConfig {
            name: named("X-SSL-Client-Cert"),
            chain_name: named("X-SSL-Client-Chain"),
            ..CertHeaderConfig::new(CertHeaderFormat::Rfc9440)
        };
        let h = cert_headers(&peer, &rfc, &none);
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-ssl-client-cert", "x-ssl-client-chain"]);
        let nginx = CertHeaderConfig {
            name: named("X-SSL-Client-Cert"),
            verify_name: named("X-SSL-Client-Verify"),
            ..CertHeaderConfig::new(CertHeaderFormat::Nginx)
        };
        let h = cert_headers(&peer, &nginx, &none);
        assert_eq!(
            pem_to_ders(&url_decode(one(&h, "x-ssl-client-cert"))),
            vec![pki.leaf.to_vec()]
        );
        assert_eq!(one(&h, "x-ssl-client-verify"), "SUCCESS");
        assert_eq!(
            CertEncoder::new(nginx).strip_names(),
            ["x-ssl-client-cert", "x-ssl-client-verify"]
        );
    }

    #[test]
    fn a_header_name_with_another_meaning_is_refused() {
        for bad in [
            "Host",
            "authorization",
            "X_Forwarded_For",
            "forwarded",
            "connection",
            "transfer-encoding",
            "content-length",
            "x-fapi-interaction-id",
            "bad header",
            "",
        ] {
            assert!(CertHeaderConfig::header_name(bad).is_err(), "{bad:?}");
        }
    }
}
