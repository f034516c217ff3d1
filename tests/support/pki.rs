//! A throwaway PKI made fresh for each test run: one trusted root, a server certificate for loopback, and client
//! certificates shaped like the ones Open Banking and eIDAS issuers hand out.

use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::string::{Ia5String, PrintableString};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RevocationReason, RevokedCertParams,
    RsaKeySize, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::keys::SigningKey;

/// The key algorithm of a generated certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyKind {
    /// What OB and eIDAS transport certificates use in practice.
    #[default]
    Rsa2048,
    P256,
}

/// Whose subject a client certificate carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// OB Directory transport certificate: `C=GB, O=OpenBanking, OU=<org_id>, CN=<software_id>`.
    Ob { software_id: String, org_id: String },
    /// eIDAS QWAC: `C=GB, O=<o>, organizationIdentifier=<org_identifier>, CN=<cn>`.
    Eidas {
        org_identifier: String,
        cn: String,
        o: String,
    },
    /// Attributes in certificate (DER) order, least specific first. The type is a short name (`CN`, `O`,
    /// `organizationIdentifier`, `emailAddress`, ...) or a dotted OID, optionally prefixed `OID.`.
    /// Each type may appear once: rcgen keeps a distinguished name as a map.
    Custom(Vec<(String, String)>),
}

/// What to put in a client certificate and how it should be (mis)issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertSpec {
    pub subject: Subject,
    /// Issued by a second CA whose root is never in the bundle handed to the proxy.
    pub untrusted: bool,
    /// Validity ended yesterday.
    pub expired: bool,
    /// Validity ends this many seconds after issue (`expired` wins).
    pub expires_in_secs: Option<i64>,
    pub key: KeyKind,
    /// Issued by an intermediate CA under the trusted root, which the client presents after the leaf.
    pub via_intermediate: bool,
}

impl ClientCertSpec {
    pub fn ob(software_id: impl Into<String>, org_id: impl Into<String>) -> Self {
        Self::with_subject(Subject::Ob {
            software_id: software_id.into(),
            org_id: org_id.into(),
        })
    }

    pub fn eidas(
        org_identifier: impl Into<String>,
        cn: impl Into<String>,
        o: impl Into<String>,
    ) -> Self {
        Self::with_subject(Subject::Eidas {
            org_identifier: org_identifier.into(),
            cn: cn.into(),
            o: o.into(),
        })
    }

    /// `attrs` in DER order, e.g. `[("C", "GB"), ("O", "Acme"), ("CN", "client")]`.
    pub fn custom<K: Into<String>, V: Into<String>>(
        attrs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self::with_subject(Subject::Custom(
            attrs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }

    pub fn with_subject(subject: Subject) -> Self {
        Self {
            subject,
            untrusted: false,
            expired: false,
            expires_in_secs: None,
            key: KeyKind::default(),
            via_intermediate: false,
        }
    }

    pub fn via_intermediate(mut self) -> Self {
        self.via_intermediate = true;
        self
    }

    pub fn untrusted(mut self) -> Self {
        self.untrusted = true;
        self
    }

    pub fn expired(mut self) -> Self {
        self.expired = true;
        self
    }

    pub fn expires_in_secs(mut self, secs: i64) -> Self {
        self.expires_in_secs = Some(secs);
        self
    }

    pub fn key(mut self, key: KeyKind) -> Self {
        self.key = key;
        self
    }

    /// Subject attributes in DER order as (OID, value).
    fn attributes(&self) -> Vec<(Vec<u64>, String)> {
        let pairs: Vec<(&str, &str)> = match &self.subject {
            Subject::Ob {
                software_id,
                org_id,
            } => vec![
                ("C", "GB"),
                ("O", "OpenBanking"),
                ("OU", org_id),
                ("CN", software_id),
            ],
            Subject::Eidas {
                org_identifier,
                cn,
                o,
            } => vec![
                ("C", "GB"),
                ("O", o),
                ("organizationIdentifier", org_identifier),
                ("CN", cn),
            ],
            Subject::Custom(attrs) => attrs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        };
        pairs
            .into_iter()
            .map(|(name, value)| (attribute_oid(name), value.to_owned()))
            .collect()
    }
}

/// A client certificate with its key, in every encoding a test tends to need.
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    /// PKCS#8.
    pub key_der: Vec<u8>,
    /// Most specific attribute first, as a TPP writes it in `tls_client_auth_dn`.
    pub subject_rfc4514: String,
    /// RFC 8705 `x5t#S256`: base64url (no padding) of the SHA-256 of the DER.
    pub thumbprint_s256: String,
    pub key_kind: KeyKind,
    /// The intermediate CA certificates the client presents after the leaf (DER), nearest first.
    pub chain_der: Vec<Vec<u8>>,
}

impl ClientCert {
    /// The certificate's key as a JWS signer, e.g. to sign with the same key the TLS layer saw.
    pub fn signing_key(&self, kid: &str) -> SigningKey {
        SigningKey::from_pkcs8(kid, &self.key_der)
    }

    /// The JWK an OB software JWKS lists for its transport certificate: `use` = `tls`, `x5c[0]` = this certificate.
    pub fn tls_jwk(&self, kid: &str) -> serde_json::Value {
        self.signing_key(kid)
            .with_x5c(&[&self.cert_der])
            .public_jwk(Some("tls"))
    }
}

/// A server certificate and its key.
#[derive(Clone, Debug)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

/// A CRL signed by the trusted root.
#[derive(Clone, Debug)]
pub struct Crl {
    pub pem: String,
    pub der: Vec<u8>,
}

/// Where [`Pki::write_to`] put the files.
#[derive(Clone, Debug)]
pub struct PkiFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    untrusted_ca: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
    server: ServerCert,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Self {
        // A per-run suffix, so a certificate left over from another run can never chain to this root by name.
        let run = uuid::Uuid::new_v4().simple().to_string();
        let ca = new_ca(&format!("dcr-proxy test root {}", &run[..8]));
        let untrusted_ca = new_ca(&format!("dcr-proxy untrusted root {}", &run[..8]));
        let server = issue_server(&ca, &["localhost", "127.0.0.1", "::1"], KeyKind::P256);
        let intermediate =
            new_intermediate(&ca, &format!("dcr-proxy test issuing CA {}", &run[..8]));
        Self {
            ca,
            untrusted_ca,
            intermediate,
            server,
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn ca_der(&self) -> Vec<u8> {
        self.ca.der().to_vec()
    }

    /// The root of the CA that signs `untrusted` client certificates, for tests that want to trust it after all.
    pub fn untrusted_ca_pem(&self) -> String {
        self.untrusted_ca.pem()
    }

    pub fn server_cert_pem(&self) -> String {
        self.server.cert_pem.clone()
    }

    pub fn server_key_pem(&self) -> String {
        self.server.key_pem.clone()
    }

    pub fn server(&self) -> &ServerCert {
        &self.server
    }

    /// Another server certificate from the same root, e.g. to rotate the proxy's certificate in a reload test.
    pub fn issue_server(&self, names: &[&str]) -> ServerCert {
        issue_server(&self.ca, names, KeyKind::P256)
    }

    /// A server certificate with the key type the benchmark compares (RSA-2048 or P-256).
    pub fn issue_server_with(&self, names: &[&str], key: KeyKind) -> ServerCert {
        issue_server(&self.ca, names, key)
    }

    pub fn client(&self, spec: ClientCertSpec) -> ClientCert {
        let attributes = spec.attributes();
        let mut dn = DistinguishedName::new();
        for (oid, value) in &attributes {
            let ty = DnType::from_oid(oid);
            assert!(
                dn.get(&ty).is_none(),
                "subject attribute {} given twice: rcgen cannot encode that",
                oid_string(oid)
            );
            dn.push(ty, dn_value(oid, value));
        }

        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        let now = OffsetDateTime::now_utc();
        if spec.expired {
            params.not_before = now - Duration::days(30);
            params.not_after = now - Duration::days(1);
        } else {
            params.not_before = now - Duration::hours(1);
            params.not_after = now
                + spec
                    .expires_in_secs
                    .map_or(Duration::days(365), Duration::seconds);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.key == KeyKind::Rsa2048 {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;

        let key = new_key(spec.key);
        let issuer = if spec.untrusted {
            &self.untrusted_ca
        } else if spec.via_intermediate {
            &self.intermediate
        } else {
            &self.ca
        };
        let chain_der = if spec.via_intermediate {
            vec![self.intermediate.der().to_vec()]
        } else {
            Vec::new()
        };
        let cert = params
            .signed_by(&key, issuer)
            .expect("rcgen signs a client certificate");
        let cert_der = cert.der().to_vec();

        ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
            subject_rfc4514: rfc4514(&attributes),
            thumbprint_s256: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &cert_der)),
            cert_der,
            key_kind: spec.key,
            chain_der,
        }
    }

    /// A CRL of the trusted root revoking `revoked` (key compromise), issued at `this_update` and due again at
    /// `next_update`. Each call carries a higher CRL number, as a CA's successive CRLs do.
    pub fn crl(
        &self,
        revoked: &[&ClientCert],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Crl {
        static NUMBER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let crl = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(
                NUMBER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|c| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial_of(&c.cert_der)),
                    revocation_time: this_update,
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca)
        .expect("rcgen signs a CRL");
        Crl {
            pem: crl.pem().expect("the CRL encodes as PEM"),
            der: crl.der().to_vec(),
        }
    }

    /// A CRL issued an hour ago and due again in a day.
    pub fn fresh_crl(&self, revoked: &[&ClientCert]) -> Crl {
        let now = OffsetDateTime::now_utc();
        self.crl(revoked, now - Duration::hours(1), now + Duration::days(1))
    }

    /// A CRL whose nextUpdate passed an hour ago.
    pub fn stale_crl(&self, revoked: &[&ClientCert]) -> Crl {
        let now = OffsetDateTime::now_utc();
        self.crl(revoked, now - Duration::hours(3), now - Duration::hours(1))
    }

    /// Writes `ca.pem`, `server.pem` and `server-key.pem`, the files the proxy's TLS config points at.
    pub fn write_to(&self, dir: &Path) -> PkiFiles {
        std::fs::create_dir_all(dir).expect("create the PKI output directory");
        let files = PkiFiles {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
        };
        std::fs::write(&files.ca, self.ca_pem()).expect("write ca.pem");
        std::fs::write(&files.server_cert, &self.server.cert_pem).expect("write server.pem");
        std::fs::write(&files.server_key, &self.server.key_pem).expect("write server-key.pem");
        files
    }
}

/// The serial number of a certificate, as its DER writes it.
fn serial_of(cert_der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).expect("a certificate");
    cert.raw_serial().to_vec()
}

fn new_key(kind: KeyKind) -> KeyPair {
    match kind {
        KeyKind::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
        KeyKind::P256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
    }
    .expect("aws-lc-rs generates a key pair")
}

fn new_ca(common_name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "dcr-proxy tests");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3650);
    CertifiedIssuer::self_signed(params, new_key(KeyKind::P256)).expect("rcgen self-signs a CA")
}

fn new_intermediate(
    root: &CertifiedIssuer<'static, KeyPair>,
    common_name: &str,
) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "dcr-proxy tests");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(1825);
    CertifiedIssuer::signed_by(params, new_key(KeyKind::P256), root)
        .expect("rcgen signs an intermediate CA")
}

fn issue_server(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    kind: KeyKind,
) -> ServerCert {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("valid server SAN list");
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = new_key(kind);
    let cert = params
        .signed_by(&key, ca)
        .expect("rcgen signs a server certificate");
    ServerCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    }
}

/// Attribute types with the names DCR-RULES accepts as aliases; the first name is the one we print.
const ATTRIBUTE_NAMES: &[(&str, &[u64])] = &[
    ("CN", &[2, 5, 4, 3]),
    ("OU", &[2, 5, 4, 11]),
    ("O", &[2, 5, 4, 10]),
    ("C", &[2, 5, 4, 6]),
    ("L", &[2, 5, 4, 7]),
    ("ST", &[2, 5, 4, 8]),
    ("STREET", &[2, 5, 4, 9]),
    ("SERIALNUMBER", &[2, 5, 4, 5]),
    ("organizationIdentifier", &[2, 5, 4, 97]),
    ("DC", &[0, 9, 2342, 19200300, 100, 1, 25]),
    ("UID", &[0, 9, 2342, 19200300, 100, 1, 1]),
    ("emailAddress", &[1, 2, 840, 113549, 1, 9, 1]),
    ("E", &[1, 2, 840, 113549, 1, 9, 1]),
];

fn attribute_oid(name: &str) -> Vec<u64> {
    if let Some((_, oid)) = ATTRIBUTE_NAMES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
    {
        return oid.to_vec();
    }
    let dotted = name
        .strip_prefix("OID.")
        .or_else(|| name.strip_prefix("oid."))
        .unwrap_or(name);
    dotted
        .split('.')
        .map(|arc| arc.parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|arcs| arcs.len() >= 2)
        .unwrap_or_else(|| {
            panic!("unknown subject attribute type {name:?}: use a short name or a dotted OID")
        })
}

fn attribute_name(oid: &[u64]) -> String {
    ATTRIBUTE_NAMES
        .iter()
        .find(|(_, known)| *known == oid)
        .map(|(name, _)| (*name).to_owned())
        .unwrap_or_else(|| oid_string(oid))
}

fn oid_string(oid: &[u64]) -> String {
    oid.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// The ASN.1 string type real issuers use: PrintableString where the value allows it (and always for C),
/// IA5String for e-mail and domain components, UTF8String otherwise.
fn dn_value(oid: &[u64], value: &str) -> DnValue {
    let ia5 = oid == [1, 2, 840, 113549, 1, 9, 1] || oid == [0, 9, 2342, 19200300, 100, 1, 25];
    if ia5 {
        if let Ok(s) = Ia5String::try_from(value.to_owned()) {
            return DnValue::Ia5String(s);
        }
    } else if let Ok(s) = PrintableString::try_from(value) {
        return DnValue::PrintableString(s);
    }
    DnValue::Utf8String(value.to_owned())
}

fn rfc4514(attributes: &[(Vec<u64>, String)]) -> String {
    attributes
        .iter()
        .rev()
        .map(|(oid, value)| format!("{}={}", attribute_name(oid), escape_rfc4514(value)))
        .collect::<Vec<_>>()
        .join(",")
}

/// RFC 4514 section 2.4 escaping.
fn escape_rfc4514(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

/// `cert_der` with its subject swapped for `name_der` (a DER `Name`), for tests of DN parsers that need
/// subjects rcgen cannot encode: multi-valued RDNs, repeated attributes, BMPString, T61String, non-string values.
/// The signature no longer verifies, so such a certificate is for parsers only, never for a TLS handshake.
pub fn replace_subject(cert_der: &[u8], name_der: &[u8]) -> Vec<u8> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).expect("a certificate to rewrite");
    let offset = |part: &[u8]| part.as_ptr() as usize - cert_der.as_ptr() as usize;
    let tbs = cert.tbs_certificate.as_ref();
    let (tbs_start, tbs_end) = (offset(tbs), offset(tbs) + tbs.len());
    let subject = cert.subject().as_raw();
    let (subject_start, subject_end) = (offset(subject), offset(subject) + subject.len());
    let tbs_header = der_header_len(tbs);
    let tbs_content = [
        &cert_der[tbs_start + tbs_header..subject_start],
        name_der,
        &cert_der[subject_end..tbs_end],
    ]
    .concat();
    let signed = [&der_sequence(&tbs_content)[..], &cert_der[tbs_end..]].concat();
    der_sequence(&signed)
}

fn der_header_len(tlv: &[u8]) -> usize {
    match tlv[1] {
        short if short < 0x80 => 2,
        long => 2 + usize::from(long & 0x7f),
    }
}

fn der_sequence(content: &[u8]) -> Vec<u8> {
    let mut out = vec![0x30];
    match content.len() {
        len if len < 0x80 => out.push(len as u8),
        len => {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }
    out.extend_from_slice(content);
    out
}
