//! Shared by the DN tests: real-world spellings of two DNs, their near misses, and hand-built
//! Name DER for what rcgen cannot produce.

use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use super::{DistinguishedName, DnError};

pub fn dn(s: &str) -> DistinguishedName {
    DistinguishedName::parse_rfc4514(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

pub const OB: &str = "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=OpenBanking,C=GB";

/// Spellings of `OB` seen from banks, TPPs, openssl, Java and Windows tooling.
pub const OB_SPELLINGS: &[&str] = &[
    "CN=0014H00001lFE7dQAG, OU=0014H00001lFE7dQAG, O=OpenBanking, C=GB",
    "C=GB,O=OpenBanking,OU=0014H00001lFE7dQAG,CN=0014H00001lFE7dQAG",
    "C=GB, O=OpenBanking, OU=0014H00001lFE7dQAG, CN=0014H00001lFE7dQAG",
    "cn=0014h00001lfe7dqag,ou=0014h00001lfe7dqag,o=openbanking,c=gb",
    "CN=0014H00001LFE7DQAG,OU=0014H00001LFE7DQAG,O=OPENBANKING,C=GB",
    "commonName=0014H00001lFE7dQAG,organizationalUnitName=0014H00001lFE7dQAG,organizationName=OpenBanking,countryName=GB",
    "2.5.4.3=0014H00001lFE7dQAG,2.5.4.11=0014H00001lFE7dQAG,2.5.4.10=OpenBanking,2.5.4.6=GB",
    "OID.2.5.4.3=0014H00001lFE7dQAG,oid.2.5.4.11=0014H00001lFE7dQAG,O=OpenBanking,C=GB",
    "CN = 0014H00001lFE7dQAG ,  OU =0014H00001lFE7dQAG,O= OpenBanking ,C=GB  ",
    "  CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=OpenBanking,C=GB",
    "CN=\"0014H00001lFE7dQAG\",OU=\"0014H00001lFE7dQAG\",O=\"OpenBanking\",C=\"GB\"",
    "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=#0C0B4F70656E42616E6B696E67,C=#13024742",
    "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=Open\\42anking,C=\\47\\42",
    "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=OpenBanking,C=GB\\ ",
    "CN=0014H00001lFE7dQAG+OU=0014H00001lFE7dQAG,O=OpenBanking,C=GB",
];

pub const OB_NEAR_MISSES: &[&str] = &[
    "CN=0014H00001lFE7dQAH,OU=0014H00001lFE7dQAG,O=OpenBanking,C=GB",
    "OU=0014H00001lFE7dQAG,O=OpenBanking,C=GB",
    "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=OpenBanking",
    "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=OpenBanking,C=GB,L=London",
    "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=OpenBanking,C=GB+L=London",
    "CN=0014H00001lFE7dQAG,CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=OpenBanking,C=GB",
    "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=OpenBanking,C=GB,C=GB",
    "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=Open Banking,C=GB",
    "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=OpenBanking,C=IE",
    "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=OpenBanking\u{200B},C=GB",
    "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,organizationIdentifier=OpenBanking,C=GB",
    "CN=0014H00001lFE7dQAG,O=0014H00001lFE7dQAG,OU=OpenBanking,C=GB",
    "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=#020101,C=GB",
];

pub const ORG_ID: &str =
    "organizationIdentifier=PSDGB-FCA-123456,CN=tpp.example.com,O=Acme\\, Inc.,C=GB";

pub const ORG_ID_SPELLINGS: &[&str] = &[
    "OID.2.5.4.97=PSDGB-FCA-123456, CN=tpp.example.com, O=Acme\\, Inc., C=GB",
    "2.5.4.97=#0C1050534447422D4643412D313233343536,CN=tpp.example.com,O=Acme\\2C Inc.,C=GB",
    "organizationidentifier=psdgb-fca-123456,CN=TPP.EXAMPLE.COM,O=\"Acme, Inc.\",C=GB",
    "C=GB,O=Acme\\2c Inc.,CN=tpp.example.com,2.5.4.97=PSDGB-FCA-123456",
    "organizationIdentifier = PSDGB-FCA-123456 , CN =  tpp.example.com  , O = Acme\\,   Inc. , C = GB",
];

pub const ORG_ID_NEAR_MISSES: &[&str] = &[
    "organizationIdentifier=PSDGB-FCA-123457,CN=tpp.example.com,O=Acme\\, Inc.,C=GB",
    "CN=tpp.example.com,O=Acme\\, Inc.,C=GB",
    "organizationIdentifier=PSDGB-FCA-123456,CN=tpp.example.com,O=Acme Inc.,C=GB",
    "organizationIdentifier=PSDGB-FCA-123456,CN=tpp.example.com,O=Acme\\, Inc,C=GB",
    "organizationIdentifier=PSDGB-FCA-123456,CN=tpp.example.com,O=Acme\\, Inc.,C=GB,C=GB",
];

// Hand-built Name DER for cases rcgen cannot produce: other string types, multi-valued RDNs,
// non-string values and malformed strings.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = u16::try_from(content.len()).expect("test helper uses lengths below 64 KiB");
    let mut out = vec![tag];
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        Ok(one) => out.extend_from_slice(&[0x81, one]),
        Err(_) => {
            out.push(0x82);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(content);
    out
}

pub fn atv(oid: &[u8], value: Vec<u8>) -> Vec<u8> {
    tlv(0x30, &[tlv(0x06, oid), value].concat())
}

pub fn rdn(atvs: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x31, &atvs.concat())
}

pub fn name_der(rdns: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &rdns.concat())
}

pub fn from_name_der(der: &[u8]) -> Result<DistinguishedName, DnError> {
    let (rest, name) = X509Name::from_der(der).expect("test DER should be a Name");
    assert!(rest.is_empty());
    DistinguishedName::from_x509_name(&name)
}

pub const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
pub const OID_C: &[u8] = &[0x55, 0x04, 0x06];
pub const OID_L: &[u8] = &[0x55, 0x04, 0x07];
pub const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
pub const OID_OU: &[u8] = &[0x55, 0x04, 0x0b];

pub fn presented_ob_subject() -> DistinguishedName {
    let der = name_der(&[
        rdn(&[atv(OID_C, tlv(0x13, b"GB"))]),
        rdn(&[atv(OID_O, tlv(0x13, b"OpenBanking"))]),
        rdn(&[atv(OID_OU, tlv(0x13, b"0014H00001lFE7dQAG"))]),
        rdn(&[atv(OID_CN, tlv(0x13, b"0014H00001lFE7dQAG"))]),
    ]);
    from_name_der(&der).expect("OB subject should parse")
}
