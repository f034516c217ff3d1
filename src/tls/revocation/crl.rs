//! Owns loading CRLs: PEM or DER, parsed as rustls will parse them and checked against the client CA bundle.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::oid_registry::{
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, OID_X509_EXT_ISSUER_DISTRIBUTION_POINT,
};

use super::Crl;

/// The client CA bundle as it is now; empty when unreadable (the CRLs then load without a signature check here,
/// and rustls still checks it at every handshake).
pub(super) fn anchors(client_ca: &Path) -> Vec<CertificateDer<'static>> {
    crate::tls::load_certs(client_ca, "tls.client_ca").unwrap_or_default()
}

/// One or more CRLs, PEM (`X509 CRL` blocks) or a single DER. Each must parse as rustls will parse it, carry a
/// nextUpdate, and, when its issuer is in the client CA bundle, be signed by that CA.
pub(super) fn parse(bytes: &[u8], anchors: &[CertificateDer<'static>]) -> Result<Vec<Crl>, String> {
    let pem = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'-');
    let ders: Vec<CertificateRevocationListDer<'static>> = if pem {
        let all = CertificateRevocationListDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("PEM: {e}"))?;
        if all.is_empty() {
            return Err("no `X509 CRL` PEM block found".into());
        }
        all
    } else {
        vec![CertificateRevocationListDer::from(bytes.to_vec())]
    };
    ders.into_iter()
        .map(|der| parse_one(der, anchors))
        .collect()
}

fn parse_one(
    der: CertificateRevocationListDer<'static>,
    anchors: &[CertificateDer<'static>],
) -> Result<Crl, String> {
    let (rest, crl) =
        x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| format!("not a CRL: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the CRL", rest.len()));
    }
    let issuer = crl.issuer().to_string();
    // RFC 5280 §5.1.2.5: conforming issuers always set it, and without it there is no bound on staleness.
    let next_update = crl
        .next_update()
        .ok_or_else(|| format!("the CRL of {issuer} has no nextUpdate"))?;
    let alg = &crl.signature_algorithm.algorithm;
    if *alg == OID_PKCS1_SHA1WITHRSA || *alg == OID_SHA1_WITH_RSA {
        return Err(format!(
            "the CRL of {issuer} is signed with SHA-1, which rustls refuses"
        ));
    }
    // The same parser the verifier uses, so a CRL it would refuse is refused here, with its file or URL named.
    crate::tls::check_crl(&der).map_err(|e| format!("the CRL of {issuer}: {e}"))?;
    let issuer_raw = crl.issuer().as_raw();
    let mut signers = anchors.iter().filter_map(|a| {
        x509_parser::parse_x509_certificate(a.as_ref())
            .ok()
            .map(|(_, c)| c)
            .filter(|c| c.subject().as_raw() == issuer_raw)
    });
    let mut known_issuer = false;
    let verified = signers.any(|c| {
        known_issuer = true;
        crl.verify_signature(c.public_key()).is_ok()
    });
    if known_issuer && !verified {
        return Err(format!(
            "the CRL's signature does not verify with the key of {issuer} in tls.client_ca"
        ));
    }
    let idp = crl
        .extensions()
        .iter()
        .find(|e| e.oid == OID_X509_EXT_ISSUER_DISTRIBUTION_POINT)
        .map(|e| e.value.to_vec());
    let revoked = crl.iter_revoked_certificates().count();
    let this_update = crl.last_update().timestamp();
    Ok(Crl {
        scope: (issuer_raw.to_vec(), idp),
        issuer,
        this_update,
        next_update: next_update.timestamp(),
        next_update_text: next_update.to_string(),
        revoked,
        der,
    })
}
