//! The certificate headers handed to the IdP (src/forward/cert_header.rs) for arbitrary DER: every
//! configured header must be produced, be a valid header value, and carry the bytes back unchanged.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dcr_proxy::forward::{CertHeaderConfig, CertHeaderFormat, ForwardConfig, ForwardLimits, Forwarder};
use dcr_proxy::identity::{DistinguishedName, PeerCert};
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;

fn forwarders() -> &'static [(CertHeaderFormat, Forwarder); 3] {
    static F: OnceLock<[(CertHeaderFormat, Forwarder); 3]> = OnceLock::new();
    F.get_or_init(|| {
        // The pool's client wants a runtime context while it is built; nothing is ever sent.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        [
            CertHeaderFormat::Rfc9440,
            CertHeaderFormat::Nginx,
            CertHeaderFormat::Envoy,
        ]
        .map(|fmt| {
            let cfg = ForwardConfig {
                upstream_base: url::Url::parse("http://127.0.0.1:9/").expect("url"),
                public_url: url::Url::parse("https://localhost:8443").expect("url"),
                // Room for every chunk the input makes, so each must come back whole.
                cert_header: CertHeaderConfig {
                    chain_max: 8,
                    ..CertHeaderConfig::new(fmt)
                },
                deny_paths: Vec::new(),
                connect_timeout: Duration::from_secs(1),
                response_timeout: Duration::from_secs(1),
                discovery_ttl: Duration::ZERO,
                mtls_endpoint_aliases: None,
                ca_bundle: None,
                limits: ForwardLimits::default(),
            };
            (fmt, Forwarder::new(cfg).expect("forwarder"))
        })
    })
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("two hex digits after %");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn pem_ders(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b64 = None::<String>;
    for line in pem.lines() {
        match line {
            "-----BEGIN CERTIFICATE-----" => b64 = Some(String::new()),
            "-----END CERTIFICATE-----" => {
                let s = b64.take().expect("END after BEGIN");
                out.push(STANDARD.decode(s).expect("PEM body is base64"));
            }
            l => {
                assert!(l.len() <= 64, "PEM line longer than 64");
                b64.as_mut().expect("body inside BEGIN/END").push_str(l);
            }
        }
    }
    out
}

/// Only a certification path built from what the client presented is forwarded (src/forward/cert_header.rs
/// `forwarded_chain`): each item one of the presented certificates, none twice, at most `chain_max` (8). Arbitrary
/// bytes rarely form a path, so usually nothing is forwarded; the unit tests cover the path itself.
fn assert_path_of(items: &[Vec<u8>], presented: &[Vec<u8>]) {
    assert!(!items.is_empty() && items.len() <= 8, "{} items", items.len());
    for (i, item) in items.iter().enumerate() {
        assert!(presented.contains(item), "item {i} was not presented");
        assert!(!items[..i].contains(item), "item {i} forwarded twice");
    }
}

fn sf_binary(item: &str) -> Vec<u8> {
    let b64 = item
        .strip_prefix(':')
        .and_then(|s| s.strip_suffix(':'))
        .expect("colon-delimited byte sequence");
    STANDARD.decode(b64).expect("base64")
}

fuzz_target!(|data: &[u8]| {
    // The first byte says how many chain certificates follow; the rest is split evenly among them.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let parts = usize::from(n % 4) + 1;
    let size = rest.len().div_ceil(parts).max(1);
    let mut chunks: Vec<Vec<u8>> = rest.chunks(size).map(<[u8]>::to_vec).collect();
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    let leaf = chunks.remove(0);
    let peer = PeerCert {
        der: CertificateDer::from(leaf.clone()),
        chain: chunks.iter().cloned().map(CertificateDer::from).collect(),
        subject: DistinguishedName::parse_rfc4514("CN=x").expect("dn"),
        subject_text: "CN=x".into(),
        thumbprint_s256: String::new(),
        not_before: 0,
        not_after: 0,
        sans: Vec::new(),
    };
    for (fmt, fwd) in forwarders() {
        let headers = fwd.cert_headers_for(&peer);
        let text = |name: &str| -> Vec<String> {
            headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| {
                    v.to_str()
                        .expect("header values are visible ASCII")
                        .to_owned()
                })
                .collect()
        };
        match fmt {
            CertHeaderFormat::Rfc9440 => {
                let leaf_h = text("client-cert");
                assert_eq!(
                    leaf_h.len(),
                    1,
                    "client-cert missing for {} bytes",
                    leaf.len()
                );
                assert_eq!(sf_binary(&leaf_h[0]), leaf);
                let chain_h = text("client-cert-chain");
                assert!(chain_h.len() <= 1);
                if let Some(chain) = chain_h.first() {
                    let items: Vec<Vec<u8>> = chain.split(", ").map(sf_binary).collect();
                    assert_path_of(&items, &chunks);
                }
            }
            CertHeaderFormat::Nginx => {
                let h = text("ssl-client-cert");
                assert_eq!(h.len(), 1);
                assert!(
                    h[0].bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b))
                );
                let pem = String::from_utf8(percent_decode(&h[0])).expect("utf-8");
                assert_eq!(pem_ders(&pem), vec![leaf.clone()]);
                assert_eq!(text("ssl-client-verify"), ["SUCCESS"]);
            }
            CertHeaderFormat::Envoy => {
                let h = text("x-forwarded-client-cert");
                assert_eq!(h.len(), 1);
                let pairs: Vec<(&str, &str)> = h[0]
                    .split(';')
                    .map(|p| p.split_once('=').expect("key=value"))
                    .collect();
                assert_eq!(
                    pairs.iter().map(|p| p.0).collect::<Vec<_>>(),
                    ["Hash", "Cert", "Chain"]
                );
                assert_eq!(pairs[0].1.len(), 64);
                let unquote = |v: &str| {
                    let inner = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .expect("quoted");
                    String::from_utf8(percent_decode(inner)).expect("utf-8")
                };
                assert_eq!(pem_ders(&unquote(pairs[1].1)), vec![leaf.clone()]);
                let chain = pem_ders(&unquote(pairs[2].1));
                assert_eq!(chain.first(), Some(&leaf));
                if chain.len() > 1 {
                    assert_path_of(&chain[1..], &chunks);
                }
            }
        }
    }
});
