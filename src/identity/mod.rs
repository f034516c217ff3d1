//! Client-certificate identity: the verified mTLS leaf parsed once per connection into its subject
//! DN, subjectAltNames, validity and RFC 8705 `x5t#S256` thumbprint.
//!
//! The DN model, its text forms (RFC 4514, and Java's RFC 2253 for Java IdPs) and its comparison
//! with a registered `tls_client_auth_dn` are in the `dn` submodule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

mod dn;

pub use dn::{DistinguishedName, DnError, DnMatchRule, DnRendering, attribute_oid};

/// The verified client certificate, parsed once per connection.
#[derive(Clone, Debug)]
pub struct PeerCert {
    /// The leaf certificate as presented.
    pub der: CertificateDer<'static>,
    /// Every certificate the client presented after the leaf, in its order (may be empty). It may
    /// hold a trust anchor and certificates off the path; forward/cert_header.rs picks what the IdP gets.
    pub chain: Vec<CertificateDer<'static>>,
    pub subject: DistinguishedName,
    /// RFC 4514 rendering of the subject for logs and audit, most-specific RDN first.
    pub subject_text: String,
    /// RFC 8705 `x5t#S256`: base64url (no padding) SHA-256 of the DER leaf.
    pub thumbprint_s256: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// DNS names, IP addresses, URIs and email addresses from subjectAltName, as strings.
    pub sans: Vec<String>,
}

impl PeerCert {
    /// Parses a leaf the TLS layer has already verified; no path validation happens here.
    pub fn from_der(
        leaf: CertificateDer<'static>,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<PeerCert, IdentityError> {
        let (subject, not_before, not_after, sans) = {
            let (rest, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
                .map_err(|e| IdentityError::Certificate(e.to_string()))?;
            // The thumbprint is taken over the whole buffer, so bytes after the certificate would
            // make two encodings of one certificate carry different thumbprints.
            if !rest.is_empty() {
                return Err(IdentityError::TrailingData(rest.len()));
            }
            let subject = DistinguishedName::from_x509_name(cert.subject())?;
            let validity = cert.validity();
            let sans = subject_alt_names(&cert)?;
            (
                subject,
                validity.not_before.timestamp(),
                validity.not_after.timestamp(),
                sans,
            )
        };
        Ok(PeerCert {
            subject_text: subject.to_rfc4514(),
            thumbprint_s256: x5t_s256(leaf.as_ref()),
            der: leaf,
            chain,
            subject,
            not_before,
            not_after,
            sans,
        })
    }

    /// Both bounds are inclusive, as RFC 5280 section 4.1.2.5 defines the validity period.
    pub fn is_valid_at(&self, unix: i64) -> bool {
        self.not_before <= unix && unix <= self.not_after
    }
}

fn x5t_s256(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn subject_alt_names(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<Vec<String>, IdentityError> {
    let Some(ext) = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::SubjectAltName(e.to_string()))?
    else {
        return Ok(Vec::new());
    };
    let mut sans = Vec::new();
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                sans.push((*s).to_owned());
            }
            GeneralName::IPAddress(bytes) => {
                // Other lengths are name-constraint masks, which have no meaning in a leaf's SAN;
                // dropping them means nothing can ever be matched against them.
                if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                    sans.push(IpAddr::from(Ipv4Addr::from(v4)).to_string());
                } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                    sans.push(IpAddr::from(Ipv6Addr::from(v6)).to_string());
                }
            }
            // Directory names, other names and undecodable entries are not identities that
            // RFC 8705 registers a client by.
            _ => {}
        }
    }
    Ok(sans)
}

/// Why a presented certificate cannot serve as a client identity.
#[derive(thiserror::Error, Debug)]
pub enum IdentityError {
    #[error("client certificate is not a parseable X.509 certificate: {0}")]
    Certificate(String),
    #[error("client certificate is followed by {0} unexpected bytes")]
    TrailingData(usize),
    #[error(transparent)]
    Subject(#[from] DnError),
    #[error("client certificate subjectAltName extension is unusable: {0}")]
    SubjectAltName(String),
}

#[cfg(test)]
mod tests {
    use super::dn::fixtures::dn;
    use super::*;
    use rcgen::string::Ia5String;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType, date_time_ymd};

    // rcgen certificates: the shape a real TPP transport certificate has.
    struct Issued {
        der: CertificateDer<'static>,
    }

    fn issue_tpp_certificate() -> Issued {
        let mut params = CertificateParams::new(vec![
            "client.tpp.example.com".to_string(),
            "192.0.2.10".to_string(),
        ])
        .expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress("2001:db8::1".parse().expect("ipv6")));
        params.subject_alt_names.push(SanType::URI(
            Ia5String::try_from("https://tpp.example.com/software/1").expect("uri"),
        ));
        params.subject_alt_names.push(SanType::Rfc822Name(
            Ia5String::try_from("ops@tpp.example.com").expect("email"),
        ));
        let mut subject = rcgen::DistinguishedName::new();
        subject.push(DnType::CountryName, "GB");
        subject.push(DnType::OrganizationName, "Acme Bank Ltd");
        subject.push(DnType::CustomDnType(vec![2, 5, 4, 97]), "PSDGB-FCA-123456");
        subject.push(DnType::CommonName, "0014H00001lFE7dQAG");
        params.distinguished_name = subject;
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(2026, 1, 1);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("certificate");
        Issued {
            der: cert.der().clone(),
        }
    }

    #[test]
    fn a_peer_cert_exposes_subject_thumbprint_sans_and_validity_of_the_leaf() {
        let issued = issue_tpp_certificate();
        let intermediate = issue_tpp_certificate().der;
        let peer = PeerCert::from_der(issued.der.clone(), vec![intermediate.clone()])
            .expect("rcgen certificate should parse");

        assert_eq!(peer.der, issued.der);
        assert_eq!(peer.chain, vec![intermediate]);
        assert_eq!(
            peer.subject_text,
            "CN=0014H00001lFE7dQAG,organizationIdentifier=PSDGB-FCA-123456,O=Acme Bank Ltd,C=GB"
        );
        assert_eq!(
            peer.subject.values("2.5.4.97").collect::<Vec<_>>(),
            ["PSDGB-FCA-123456"]
        );

        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, issued.der.as_ref());
        assert_eq!(
            peer.thumbprint_s256,
            URL_SAFE_NO_PAD.encode(digest.as_ref())
        );
        assert_eq!(peer.thumbprint_s256.len(), 43);

        assert_eq!(
            peer.sans,
            [
                "client.tpp.example.com",
                "192.0.2.10",
                "2001:db8::1",
                "https://tpp.example.com/software/1",
                "ops@tpp.example.com",
            ]
        );
        assert_eq!(peer.not_before, 1_704_067_200);
        assert_eq!(peer.not_after, 1_767_225_600);
    }

    #[test]
    fn a_peer_cert_subject_matches_the_forms_a_tpp_would_register() {
        let peer = PeerCert::from_der(issue_tpp_certificate().der, Vec::new()).expect("parses");
        let registered = [
            "CN=0014H00001lFE7dQAG,organizationIdentifier=PSDGB-FCA-123456,O=Acme Bank Ltd,C=GB",
            "CN=0014H00001lFE7dQAG, OID.2.5.4.97=PSDGB-FCA-123456, O=Acme Bank Ltd, C=GB",
            "C=GB,O=Acme Bank Ltd,2.5.4.97=#0C1050534447422D4643412D313233343536,CN=0014H00001lFE7dQAG",
            "cn=0014h00001lfe7dqag,organizationidentifier=psdgb-fca-123456,o=acme  bank ltd,c=gb",
        ];
        for requested in registered {
            assert!(
                peer.subject
                    .matches(&dn(requested), &DnMatchRule::Unordered),
                "{requested:?}"
            );
        }
        assert!(
            peer.subject
                .matches(&dn(registered[0]), &DnMatchRule::Ordered)
        );
        assert!(
            !peer
                .subject
                .matches(&dn(registered[2]), &DnMatchRule::Ordered)
        );
        assert!(peer.subject.matches(
            &dn("organizationIdentifier=PSDGB-FCA-123456"),
            &DnMatchRule::Attributes(vec!["2.5.4.97".into()])
        ));
        assert!(!peer.subject.matches(
            &dn("CN=0014H00001lFE7dQAG,O=Acme Bank Ltd,C=GB"),
            &DnMatchRule::Unordered
        ));
    }

    #[test]
    fn validity_bounds_are_inclusive() {
        let peer = PeerCert::from_der(issue_tpp_certificate().der, Vec::new()).expect("parses");
        assert!(!peer.is_valid_at(peer.not_before - 1));
        assert!(peer.is_valid_at(peer.not_before));
        assert!(peer.is_valid_at(peer.not_after));
        assert!(!peer.is_valid_at(peer.not_after + 1));
    }

    #[test]
    fn the_thumbprint_is_base64url_sha256_without_padding() {
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        assert_eq!(
            x5t_s256(b"abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }

    #[test]
    fn bytes_that_are_not_a_certificate_are_refused() {
        let garbage = CertificateDer::from(b"not a certificate".to_vec());
        assert!(matches!(
            PeerCert::from_der(garbage, Vec::new()),
            Err(IdentityError::Certificate(_))
        ));
        let mut padded = issue_tpp_certificate().der.to_vec();
        padded.push(0);
        assert!(matches!(
            PeerCert::from_der(CertificateDer::from(padded), Vec::new()),
            Err(IdentityError::TrailingData(1))
        ));
    }
}
