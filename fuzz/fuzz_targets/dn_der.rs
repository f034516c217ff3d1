//! The presented certificate: X.509 parsing into `PeerCert`, a DER Name into a DN, and the BER value
//! decoder behind both certificate values and `#hex` values of a registered DN (src/identity).
#![no_main]

use dcr_proxy::identity::{DistinguishedName, DnMatchRule, PeerCert};
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fuzz_target!(|data: &[u8]| {
    // The whole input as a certificate, as the TLS layer would hand it over.
    if let Ok(peer) = PeerCert::from_der(CertificateDer::from(data.to_vec()), Vec::new()) {
        assert_eq!(peer.thumbprint_s256.len(), 43);
        let _ = peer.is_valid_at(0);
        round_trips(&peer.subject);
    }

    // The whole input as a Name, the subject inside a certificate.
    if let Ok((_, name)) = X509Name::from_der(data)
        && let Ok(dn) = DistinguishedName::from_x509_name(&name)
    {
        round_trips(&dn);
    }

    // The whole input as one BER value written in hex, as a TPP may register it.
    let mut text = String::with_capacity(4 + 2 * data.len());
    text.push_str("CN=#");
    for b in data {
        text.push(char::from(HEX[usize::from(b >> 4)]));
        text.push(char::from(HEX[usize::from(b & 15)]));
    }
    if let Ok(dn) = DistinguishedName::parse_rfc4514(&text) {
        round_trips(&dn);
    }
});

/// A certificate subject is logged and compared through its RFC 4514 rendering: the rendering must
/// name the same DN.
fn round_trips(dn: &DistinguishedName) {
    let text = dn.to_rfc4514();
    if dn.is_empty() {
        assert!(text.is_empty());
        return;
    }
    let again = DistinguishedName::parse_rfc4514(&text)
        .unwrap_or_else(|e| panic!("subject renders as {text:?}, which does not parse: {e}"));
    assert_eq!(
        &again, dn,
        "subject renders as {text:?}, which parses to another DN"
    );
    assert!(dn.matches(&again, &DnMatchRule::Ordered), "{text:?}");
    assert!(!text.contains(['\n', '\r']), "{text:?}");
}
