//! Java's text form of a DN, for IdPs that compare a registered subject DN with the certificate's
//! through `javax.security.auth.x500.X500Principal`.
//!
//! Keycloak's `X509ClientAuthenticator` (keycloak/keycloak
//! `services/src/main/java/org/keycloak/authentication/authenticators/client/`) matches
//! `tls_client_auth` clients by `new X500Principal(registered, CUSTOM_OIDS_REVERSED)
//! .getName(RFC2253, CUSTOM_OIDS)` equalling the same rendering of the certificate's subject.
//! `X500Principal(String)` refuses any keyword outside its table (and Keycloak's additions), so
//! `organizationIdentifier=…` never matches. The rules below were read in openjdk/jdk
//! `src/java.base/share/classes/sun/security/x509/`: `AVA.java` (`toRFC2253String`,
//! `parseString`, `isDerString`, class `AVAKeyword`), `RDN.java` (`toRFC2253StringInternal`) and
//! `X500Name.java` (`parseDN`, `escaped`, `countQuotes`).

use std::fmt::Write as _;

use super::ber::Encoded;
use super::{Ava, DistinguishedName, Value};

/// Which text form of a DN an upstream IdP is given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnRendering {
    /// RFC 4514 with the names this proxy knows (`organizationIdentifier=…`), as
    /// [`DistinguishedName::to_rfc4514`] prints it.
    #[default]
    Rfc4514,
    /// What Java prints for the subject, as [`DistinguishedName::to_java_rfc2253`] writes it:
    /// for IdPs that parse the registered DN with `X500Principal`.
    Java,
}

/// `AVAKeyword`'s entries marked RFC 2253-compliant, the only names `getName(RFC2253)` prints
/// (its javadoc lists the same nine). Every other type prints as `<dotted OID>=#<hex DER>`,
/// which `X500Principal(String)` reads back to the identical DER under any keyword map; so this
/// one rendering also matches under Keycloak's map, which prints SERIALNUMBER,
/// BUSINESSCATEGORY, JURISDICTIONCOUNTRYNAME and EMAILADDRESS as names on both sides.
const RFC2253_KEYWORDS: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

const DOMAIN_COMPONENT: &str = "0.9.2342.19200300.100.1.25";
const EMAIL_ADDRESS: &str = "1.2.840.113549.1.9.1";

const UTF8_STRING: u32 = 12;
const PRINTABLE_STRING: u32 = 19;
const T61_STRING: u32 = 20;
const IA5_STRING: u32 = 22;
const GENERAL_STRING: u32 = 27;

impl DistinguishedName {
    pub fn render(&self, rendering: DnRendering) -> String {
        match rendering {
            DnRendering::Rfc4514 => self.to_rfc4514(),
            DnRendering::Java => self.to_java_rfc2253(),
        }
    }

    /// The DN as Java's `X500Principal.getName(X500Principal.RFC2253)` prints it, written so that
    /// `new X500Principal(s)` reads back the same attribute types, ASN.1 types and values.
    ///
    /// RDNs come most specific first; the AVAs of a multi-valued RDN keep the order the
    /// certificate stores them in (or the string wrote them in), because Java does not sort
    /// them and compares the strings. CN, C, L, ST, O, OU, STREET, DC and UID print as
    /// `keyword=text` with Java's escaping; every other type as `<dotted OID>=#<hex of the DER
    /// value>`, tag and length included, so a UTF8String and a PrintableString differ.
    ///
    /// A keyword's value is written as `#hex` too where Java's own text would not read back to
    /// the same rendering: a value with a `\` (`X500Name.escaped` counts every backslash since
    /// the last separator), a control character (Java skips a leading newline and cannot read
    /// an escaped `\r`), a non-ASCII DC (read back as an IA5String of `?`), a BMPString or
    /// non-UTF-8 T61String (which Java prints by decoding the octets as UTF-8), and types Java
    /// has no text for (which it prints as hex itself). The result then differs from Java's
    /// printout but parses to the same one.
    ///
    /// Text values of a DN parsed from a string have no ASN.1 type; they get the type Java's
    /// parser gives the same text: IA5String for emailAddress and DC, PrintableString when
    /// every character allows it, UTF8String otherwise. Only a certificate's subject renders
    /// exactly as Java prints that certificate.
    pub fn to_java_rfc2253(&self) -> String {
        let mut out = String::new();
        for (i, rdn) in self.rdns.iter().rev().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let mut avas: Vec<&Ava> = rdn.0.iter().collect();
            avas.sort_by_key(|ava| ava.position);
            for (j, ava) in avas.into_iter().enumerate() {
                if j > 0 {
                    out.push('+');
                }
                write_ava(ava, &mut out);
            }
        }
        out
    }
}

fn write_ava(ava: &Ava, out: &mut String) {
    let keyword = RFC2253_KEYWORDS
        .iter()
        .find(|(oid, _)| *oid == ava.oid)
        .map(|(_, keyword)| *keyword);
    out.push_str(keyword.unwrap_or(&ava.oid));
    out.push('=');
    match keyword.and_then(|_| text_that_reads_back(ava)) {
        Some(text) => escape(text, out),
        None => {
            out.push('#');
            // Lower case, as Java prints it (`HexFormat.of()`, formerly `Character.forDigit`).
            for b in java_der(ava) {
                let _ = write!(out, "{b:02x}");
            }
        }
    }
}

/// The text Java prints for a keyword's value, when printing it as text reads back to the same
/// rendering; `None` means the value has to be written as `#hex`.
fn text_that_reads_back(ava: &Ava) -> Option<&str> {
    let text = match (&ava.encoded, &ava.value) {
        (Some(encoded), _) => {
            // `isDerString(value, false)` less BMPString, whose text Java garbles.
            let tag = encoded.universal_primitive_tag()?;
            if !matches!(
                tag,
                UTF8_STRING | PRINTABLE_STRING | T61_STRING | IA5_STRING | GENERAL_STRING
            ) {
                return None;
            }
            std::str::from_utf8(encoded.content()).ok()?
        }
        (None, Value::Text(_)) => ava.shown.as_str(),
        (None, Value::Der(_)) => return None,
    };
    let reads_back = !text.chars().any(|c| c == '\\' || c.is_control())
        && (ava.oid != DOMAIN_COMPONENT || text.is_ascii());
    reads_back.then_some(text)
}

/// The DER Java holds for the value: the certificate's, the one a `#hex` spelled, or the one
/// `AVA.parseString` would build from the text.
fn java_der(ava: &Ava) -> Vec<u8> {
    match (&ava.encoded, &ava.value) {
        (Some(encoded), _) => encoded.to_der(),
        (None, Value::Der(der)) => der.clone(),
        (None, Value::Text(_)) => {
            let text = &ava.shown;
            let ia5 = ava.oid == EMAIL_ADDRESS || ava.oid == DOMAIN_COMPONENT;
            let tag = if ia5 && text.is_ascii() {
                IA5_STRING
            } else if text.chars().all(is_printable_string_char) {
                PRINTABLE_STRING
            } else {
                UTF8_STRING
            };
            Encoded::new(0, false, tag, text.as_bytes()).to_der()
        }
    }
}

/// `DerValue.isPrintableStringChar`.
fn is_printable_string_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c)
}

/// `AVA.toRFC2253String`'s escaping: a backslash before each of `,=+<>#;"\` wherever it stands
/// and before each leading or trailing space. Java also writes NUL as `\00` and escapes a
/// leading or trailing `\r`; values with control characters are written as hex instead.
fn escape(text: &str, out: &mut String) {
    let total = text.chars().count();
    let leading = text.chars().take_while(|&c| c == ' ').count();
    let trailing_from = total - text.chars().rev().take_while(|&c| c == ' ').count();
    for (i, c) in text.chars().enumerate() {
        let edge_space = c == ' ' && (i < leading || i >= trailing_from);
        if edge_space || matches!(c, ',' | '=' | '+' | '<' | '>' | '#' | ';' | '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::super::DnMatchRule;
    use super::super::fixtures::*;
    use super::*;

    const OID_ORG_ID: &[u8] = &[0x55, 0x04, 0x61];
    const OID_SERIAL: &[u8] = &[0x55, 0x04, 0x05];
    const OID_STREET: &[u8] = &[0x55, 0x04, 0x09];
    const OID_ST: &[u8] = &[0x55, 0x04, 0x08];
    const OID_TITLE: &[u8] = &[0x55, 0x04, 0x0c];
    const OID_BUSINESS_CATEGORY: &[u8] = &[0x55, 0x04, 0x0f];
    const OID_DC: &[u8] = &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19];
    const OID_UID: &[u8] = &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01];
    const OID_EMAIL: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];

    const UTF8: u8 = 0x0c;
    const PRINTABLE: u8 = 0x13;

    /// One single-valued RDN per attribute, in DER order (least specific first).
    fn subject(attrs: &[(&[u8], u8, &[u8])]) -> DistinguishedName {
        let rdns: Vec<Vec<u8>> = attrs
            .iter()
            .map(|(oid, tag, content)| rdn(&[atv(oid, tlv(*tag, content))]))
            .collect();
        from_name_der(&name_der(&rdns)).expect("test subject parses")
    }

    fn eidas(org_id_tag: u8) -> DistinguishedName {
        subject(&[
            (OID_C, PRINTABLE, b"GB"),
            (OID_O, UTF8, b"Acme Bank Ltd"),
            (OID_ORG_ID, org_id_tag, b"PSDGB-FCA-123456"),
            (OID_CN, UTF8, b"0014H00001lFE7dQAG"),
        ])
    }

    /// Our own parser reads Java's form back to the same DN: a cheap check that the escaping
    /// and hex are well-formed, beside the Node test against the Keycloak stand-in.
    fn assert_parses_back(presented: &DistinguishedName) {
        let java = presented.to_java_rfc2253();
        assert_eq!(&dn(&java), presented, "{java}");
    }

    #[test]
    fn an_ob_subject_prints_with_keywords_most_specific_first() {
        let presented = presented_ob_subject();
        assert_eq!(presented.to_java_rfc2253(), OB);
        assert_parses_back(&presented);
    }

    #[test]
    fn organization_identifier_prints_as_its_oid_and_the_hex_of_its_own_string_type() {
        assert_eq!(
            eidas(UTF8).to_java_rfc2253(),
            "CN=0014H00001lFE7dQAG,2.5.4.97=#0c1050534447422d4643412d313233343536,O=Acme Bank Ltd,C=GB"
        );
        assert_eq!(
            eidas(PRINTABLE).to_java_rfc2253(),
            "CN=0014H00001lFE7dQAG,2.5.4.97=#131050534447422d4643412d313233343536,O=Acme Bank Ltd,C=GB"
        );
        // Equal for comparison, different for Java: the type is part of the printed value.
        assert_eq!(eidas(UTF8), eidas(PRINTABLE));
        assert_ne!(
            eidas(UTF8).to_java_rfc2253(),
            eidas(PRINTABLE).to_java_rfc2253()
        );
        assert_parses_back(&eidas(UTF8));
        assert_parses_back(&eidas(PRINTABLE));
    }

    #[test]
    fn only_the_nine_rfc2253_keywords_print_as_names() {
        let presented = subject(&[
            (OID_DC, 0x16, b"example"),
            (OID_C, PRINTABLE, b"AU"),
            (OID_ST, UTF8, b"NSW"),
            (OID_L, UTF8, b"Sydney"),
            (OID_STREET, UTF8, b"1 Martin Place"),
            (OID_O, UTF8, b"Mock Data Recipient Pty Ltd"),
            (OID_BUSINESS_CATEGORY, UTF8, b"Private Organization"),
            (OID_SERIAL, PRINTABLE, b"ABN 12 345 678 901"),
            (OID_TITLE, UTF8, b"Ops"),
            (OID_OU, UTF8, b"b1f3c1b0-3c2a-4b8e-9a41-0f2d8c8f5e77"),
            (OID_UID, UTF8, b"adr-1"),
            (OID_EMAIL, 0x16, b"ops@adr.example"),
            (OID_CN, UTF8, b"software-product-1"),
        ]);
        assert_eq!(
            presented.to_java_rfc2253(),
            [
                "CN=software-product-1",
                "1.2.840.113549.1.9.1=#160f6f7073406164722e6578616d706c65",
                "UID=adr-1",
                "OU=b1f3c1b0-3c2a-4b8e-9a41-0f2d8c8f5e77",
                "2.5.4.12=#0c034f7073",
                "2.5.4.5=#131241424e203132203334352036373820393031",
                "2.5.4.15=#0c1450726976617465204f7267616e697a6174696f6e",
                "O=Mock Data Recipient Pty Ltd",
                "STREET=1 Martin Place",
                "L=Sydney",
                "ST=NSW",
                "C=AU",
                "DC=example",
            ]
            .join(",")
        );
        assert_parses_back(&presented);
    }

    #[test]
    fn a_multi_valued_rdn_keeps_the_order_the_certificate_stores() {
        let cn_first = from_name_der(&name_der(&[
            rdn(&[atv(OID_C, tlv(PRINTABLE, b"GB"))]),
            rdn(&[
                atv(OID_CN, tlv(UTF8, b"tpp")),
                atv(OID_OU, tlv(UTF8, b"Payments")),
            ]),
        ]))
        .expect("parses");
        let ou_first = from_name_der(&name_der(&[
            rdn(&[atv(OID_C, tlv(PRINTABLE, b"GB"))]),
            rdn(&[
                atv(OID_OU, tlv(UTF8, b"Payments")),
                atv(OID_CN, tlv(UTF8, b"tpp")),
            ]),
        ]))
        .expect("parses");
        assert_eq!(cn_first.to_java_rfc2253(), "CN=tpp+OU=Payments,C=GB");
        assert_eq!(ou_first.to_java_rfc2253(), "OU=Payments+CN=tpp,C=GB");
        assert!(cn_first.matches(&ou_first, &DnMatchRule::Ordered));
        // A string keeps the order it was written in, as Java's parser does.
        assert_eq!(
            dn("CN=tpp+OU=Payments,C=GB").to_java_rfc2253(),
            "CN=tpp+OU=Payments,C=GB"
        );
        assert_eq!(
            dn("OU=Payments+CN=tpp+2.5.4.97=x,C=GB").to_java_rfc2253(),
            "OU=Payments+CN=tpp+2.5.4.97=#130178,C=GB"
        );
    }

    #[test]
    fn special_characters_are_escaped_as_java_escapes_them() {
        let cases: &[(&[u8], &str)] = &[
            (b"Acme, Inc.", "O=Acme\\, Inc."),
            (b"#1 <x> a;b\"c=d+e", "O=\\#1 \\<x\\> a\\;b\\\"c\\=d\\+e"),
            (b"  two  inner  ", "O=\\ \\ two  inner\\ \\ "),
            (b"   ", "O=\\ \\ \\ "),
            (b"", "O="),
            (b"a#b=c", "O=a\\#b\\=c"),
        ];
        for (value, expected) in cases {
            let presented = subject(&[(OID_O, UTF8, value)]);
            assert_eq!(presented.to_java_rfc2253(), *expected, "{value:?}");
            if !value.is_empty() {
                assert_parses_back(&presented);
            }
        }
    }

    #[test]
    fn non_ascii_text_prints_as_itself() {
        let presented = subject(&[
            (OID_L, UTF8, "Zürich".as_bytes()),
            (OID_O, UTF8, "Łódź 東京 😀 Bank".as_bytes()),
            (OID_CN, UTF8, "ΟΔΟΣ".as_bytes()),
        ]);
        assert_eq!(
            presented.to_java_rfc2253(),
            "CN=ΟΔΟΣ,O=Łódź 東京 😀 Bank,L=Zürich"
        );
        assert_parses_back(&presented);
    }

    #[test]
    fn keyword_values_java_would_not_read_back_are_written_as_hex() {
        let bmp: Vec<u8> = "GB".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let cases: Vec<(&[u8], u8, Vec<u8>, &str)> = vec![
            (
                OID_O,
                UTF8,
                b"back\\slash".to_vec(),
                "O=#0c0a6261636b5c736c617368",
            ),
            (
                OID_O,
                UTF8,
                b"\nleading newline".to_vec(),
                "O=#0c100a6c656164696e67206e65776c696e65",
            ),
            (OID_O, UTF8, b"cr\r".to_vec(), "O=#0c0363720d"),
            (OID_O, UTF8, b"nul\0".to_vec(), "O=#0c046e756c00"),
            (OID_C, 0x1e, bmp, "C=#1e0400470042"),
            (OID_L, 0x14, b"Z\xfcrich".to_vec(), "L=#14065afc72696368"),
            (OID_L, 0x1c, vec![0, 0, 0x03, 0xa9], "L=#1c04000003a9"),
            (OID_CN, 0x1a, b"visible".to_vec(), "CN=#1a0776697369626c65"),
            (OID_CN, 0x02, vec![1], "CN=#020101"),
            (
                OID_DC,
                UTF8,
                "bücher".as_bytes().to_vec(),
                "DC=#0c0762c3bc63686572",
            ),
        ];
        for (oid, tag, content, expected) in cases {
            let presented = subject(&[(oid, tag, &content)]);
            assert_eq!(presented.to_java_rfc2253(), expected, "{content:02x?}");
            assert_parses_back(&presented);
        }
        // Latin-1 is the one T61String reading Java and this proxy share only when it is ASCII.
        assert_eq!(
            subject(&[(OID_L, 0x14, b"Zurich")]).to_java_rfc2253(),
            "L=Zurich"
        );
    }

    #[test]
    fn a_dn_parsed_from_a_string_gets_the_string_types_java_would_give_its_text() {
        assert_eq!(
            dn("organizationIdentifier=PSDGB-FCA-123456,CN=tpp,O=Acme\\, Inc.,C=GB")
                .to_java_rfc2253(),
            "2.5.4.97=#131050534447422d4643412d313233343536,CN=tpp,O=Acme\\, Inc.,C=GB"
        );
        assert_eq!(
            dn("2.5.4.97=PSD_GB,E=ops@tpp.example,emailAddress=pé@x,SERIALNUMBER=Zürich")
                .to_java_rfc2253(),
            "2.5.4.97=#0c065053445f4742,1.2.840.113549.1.9.1=#160f6f7073407470702e6578616d706c65,1.2.840.113549.1.9.1=#0c0570c3a94078,2.5.4.5=#0c075ac3bc72696368"
        );
        // A `#hex` value keeps the type it spelled.
        assert_eq!(
            dn("2.5.4.97=#0C1050534447422D4643412D313233343536,CN=#1303747070").to_java_rfc2253(),
            "2.5.4.97=#0c1050534447422d4643412d313233343536,CN=tpp"
        );
    }

    #[test]
    fn render_picks_the_form_the_upstream_asks_for() {
        let presented = eidas(UTF8);
        assert_eq!(
            presented.render(DnRendering::Rfc4514),
            "CN=0014H00001lFE7dQAG,organizationIdentifier=PSDGB-FCA-123456,O=Acme Bank Ltd,C=GB"
        );
        assert_eq!(
            presented.render(DnRendering::Java),
            presented.to_java_rfc2253()
        );
        assert_eq!(DnRendering::default(), DnRendering::Rfc4514);
        assert_eq!(
            serde_json::from_str::<DnRendering>("\"java\"").ok(),
            Some(DnRendering::Java)
        );
    }
}
