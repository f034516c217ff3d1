//! The distinguished-name model: a DN reduced to comparable form, and its matching against a
//! registered `tls_client_auth_dn` under a [`DnMatchRule`].
//!
//! Both sides of the comparison are reduced to the same shape, a sequence of RDNs each holding a
//! set of (attribute type OID, folded value) pairs, so that the many ways banks and TPPs spell one
//! DN compare equal while a DN that differs in any attribute does not. Text forms are separate
//! from the model: `rfc4514` reads and writes RFC 4514 strings, `x500` writes what Java's
//! `X500Principal` prints, `attributes` knows the type names, `ber` decodes attribute values.

use std::cmp::Ordering;

use x509_parser::x509::X509Name;

mod attributes;
mod ber;
#[cfg(test)]
pub(super) mod fixtures;
mod rfc4514;
mod x500;

pub use attributes::attribute_oid;
use attributes::canonical_numeric_oid;
use ber::{Encoded, decode_value};
pub use x500::DnRendering;

/// A distinguished name reduced for comparison: RDNs in DER order (least specific first), each a
/// set of attribute type OIDs in dotted form with folded values.
///
/// `==` is exact structural equality of the folded forms (RDN order and grouping included); the
/// comparisons the DCR rules ask for are in [`DistinguishedName::matches`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistinguishedName {
    rdns: Vec<Rdn>,
}

/// How a presented certificate subject is compared with a registered `tls_client_auth_dn`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DnMatchRule {
    /// The attributes of both DNs are equal as multisets, whatever the RDN order and grouping.
    #[default]
    Unordered,
    /// RDN by RDN in sequence: the RFC 4514 string reversed equals the certificate's DER order.
    Ordered,
    /// Only AVAs of these attribute types are compared, and each must be present on both sides.
    /// Entries are dotted OIDs; names that [`attribute_oid`] knows are resolved too, and an entry
    /// it cannot resolve makes every comparison fail.
    Attributes(Vec<String>),
}

/// One RDN: its AVAs kept sorted, so that RDNs holding the same set compare equal element-wise.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rdn(Vec<Ava>);

impl Rdn {
    /// `avas` in the order the certificate's SET or the string held them; that order is recorded
    /// in each AVA before sorting.
    fn new(mut avas: Vec<Ava>) -> Rdn {
        for (position, ava) in avas.iter_mut().enumerate() {
            ava.position = position;
        }
        avas.sort();
        Rdn(avas)
    }
}

#[derive(Clone, Debug)]
struct Ava {
    oid: String,
    value: Value,
    /// The value as written or encoded, before folding, so that logs show what the peer sent.
    shown: String,
    /// The value's ASN.1 type and content octets: always known for a certificate and for a
    /// `#hex` value in a string, never for text written in a string.
    encoded: Option<Encoded>,
    /// Place within its RDN as stored (certificate) or written (string), set by [`Rdn::new`].
    /// Java prints a multi-valued RDN in this order rather than sorted.
    position: usize,
}

impl Ava {
    fn key(&self) -> (&str, &Value) {
        (&self.oid, &self.value)
    }
}

// Identity is the type and folded value only: the unfolded text exists for display, and two
// spellings of one value must not make otherwise equal DNs differ.
impl PartialEq for Ava {
    fn eq(&self, other: &Ava) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Ava {}

impl PartialOrd for Ava {
    fn partial_cmp(&self, other: &Ava) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ava {
    fn cmp(&self, other: &Ava) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// Text and non-string values are kept apart so that a string which happens to read like
/// `#020101` can never equal an INTEGER written as `#020101`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    /// Folded text.
    Text(String),
    /// A minimal DER re-encoding, so that BER length spellings do not matter.
    Der(Vec<u8>),
}

impl DistinguishedName {
    pub fn from_x509_name(name: &X509Name<'_>) -> Result<Self, DnError> {
        let mut rdns = Vec::new();
        for rdn in name.iter() {
            let mut avas = Vec::new();
            for atv in rdn.iter() {
                let oid = atv.attr_type().to_id_string();
                // Without the bigint feature the parser renders huge arcs as hex bytes, which no
                // request could spell; refuse rather than invent a name for it.
                if canonical_numeric_oid(&oid).is_none() {
                    return Err(DnError::CertificateAttributeType(oid));
                }
                let any = atv.attr_value();
                let (class, constructed, tag) =
                    (any.class() as u8, any.header.is_constructed(), any.tag().0);
                let (value, shown) =
                    decode_value(class, constructed, tag, any.data).map_err(|reason| {
                        DnError::CertificateValue {
                            oid: oid.clone(),
                            reason,
                        }
                    })?;
                avas.push(Ava {
                    oid,
                    value,
                    shown,
                    encoded: Some(Encoded::new(class, constructed, tag, any.data)),
                    position: 0,
                });
            }
            rdns.push(Rdn::new(avas));
        }
        Ok(DistinguishedName { rdns })
    }

    /// `self` is the presented certificate subject, `requested` the registered DN.
    ///
    /// An empty `requested` never matches: it would otherwise accept any certificate whose
    /// subject is empty, which SAN-only certificates legitimately have.
    pub fn matches(&self, requested: &DistinguishedName, rule: &DnMatchRule) -> bool {
        if requested.rdns.is_empty() {
            return false;
        }
        match rule {
            DnMatchRule::Ordered => self.rdns == requested.rdns,
            // Flattened on purpose: TPPs copy DNs out of portals and openssl output that do not
            // show RDN grouping, so `CN=a+O=b` and `CN=a,O=b` name the same subject to them. The
            // attribute multiset still has to agree exactly, so no attribute can be added,
            // dropped or duplicated by regrouping.
            DnMatchRule::Unordered => self.flat_avas() == requested.flat_avas(),
            DnMatchRule::Attributes(types) => {
                let mut oids = Vec::with_capacity(types.len());
                for t in types {
                    // An unresolvable type in the rule is a configuration error; comparing fewer
                    // types than configured would silently weaken the check.
                    match attribute_oid(t) {
                        Some(oid) => oids.push(oid),
                        None => return false,
                    }
                }
                oids.sort();
                oids.dedup();
                // With no types every DN would vacuously match.
                !oids.is_empty()
                    && oids.iter().all(|oid| {
                        let presented = self.values_of(oid);
                        !presented.is_empty() && presented == requested.values_of(oid)
                    })
            }
        }
    }

    /// The values of attributes of type `oid` (dotted), as presented rather than folded; a
    /// non-string value reads as `#` and the hex of its DER.
    pub fn values(&self, oid: &str) -> impl Iterator<Item = &str> {
        self.rdns
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .filter(move |ava| ava.oid == oid)
            .map(|ava| ava.shown.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.rdns.is_empty()
    }

    fn flat_avas(&self) -> Vec<&Ava> {
        let mut avas: Vec<&Ava> = self.rdns.iter().flat_map(|rdn| rdn.0.iter()).collect();
        avas.sort();
        avas
    }

    fn values_of(&self, oid: &str) -> Vec<&Value> {
        let mut values: Vec<&Value> = self
            .rdns
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .filter(|ava| ava.oid == oid)
            .map(|ava| &ava.value)
            .collect();
        values.sort();
        values
    }
}

/// RFC 4518-style folding limited to what the DCR rules ask for: ASCII case, and whitespace at
/// the ends and in runs. Only ASCII letters are case-folded: Unicode case mapping sends `ſ`
/// (U+017F) to `s`, the Kelvin sign (U+212A) to `k` and `ﬀ` to `ff`, so a certificate whose
/// subject is spelt with such look-alikes would pass as the registered ASCII DN. Every other
/// character must be equal as written. NFKC and RFC 4518's "map to nothing" step are left out
/// for the same reason: each widens equality to characters a reader cannot tell apart.
fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space_pending = false;
    for c in s.chars() {
        // RFC 4518 §2.2 maps every separator to SPACE before §2.6.1 collapses them.
        if c.is_whitespace() {
            space_pending = !out.is_empty();
            continue;
        }
        if space_pending {
            out.push(' ');
            space_pending = false;
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Why a DN could not be understood. Request-side messages name the field and the character
/// position (counted in characters from 0) so an integrator can find the mistake.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum DnError {
    #[error("tls_client_auth_dn: the DN is empty")]
    Empty,
    #[error("tls_client_auth_dn: expected an attribute type such as `CN` at position {position}")]
    MissingAttributeType { position: usize },
    #[error("tls_client_auth_dn: unknown attribute type `{name}` at position {position}{hint}")]
    UnknownAttributeType {
        name: String,
        position: usize,
        hint: &'static str,
    },
    #[error(
        "tls_client_auth_dn: `{text}` at position {position} is not an attribute type (a name such as `CN` or a dotted OID such as `2.5.4.97`){hint}"
    )]
    InvalidAttributeType {
        text: String,
        position: usize,
        hint: &'static str,
    },
    #[error(
        "tls_client_auth_dn: expected `=` after attribute type `{name}` at position {position}"
    )]
    MissingEquals { name: String, position: usize },
    #[error(
        "tls_client_auth_dn: character {ch:?} at position {position} must be escaped with `\\`{hint}"
    )]
    UnescapedCharacter {
        ch: char,
        position: usize,
        hint: &'static str,
    },
    #[error(
        "tls_client_auth_dn: invalid escape at position {position}: `\\` must be followed by one of `,+\"\\<>;= #` or two hex digits"
    )]
    InvalidEscape { position: usize },
    #[error(
        "tls_client_auth_dn: the value at position {position} is not valid UTF-8 once its `\\XX` escapes are decoded"
    )]
    InvalidUtf8 { position: usize },
    #[error("tls_client_auth_dn: the quoted value at position {position} has no closing `\"`")]
    UnterminatedQuote { position: usize },
    #[error(
        "tls_client_auth_dn: unexpected {found:?} at position {position}; expected `,`, `+` or the end of the DN"
    )]
    UnexpectedCharacter { found: char, position: usize },
    #[error(
        "tls_client_auth_dn: the `#` value at position {position} is not hex-encoded BER: {reason}"
    )]
    InvalidHexValue {
        position: usize,
        reason: &'static str,
    },
    #[error("certificate subject: attribute {oid} has an unusable value: {reason}")]
    CertificateValue { oid: String, reason: &'static str },
    #[error("certificate subject: attribute type `{0}` is not a dotted OID this proxy can compare")]
    CertificateAttributeType(String),
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn unordered(presented: &str, requested: &str) -> bool {
        dn(presented).matches(&dn(requested), &DnMatchRule::Unordered)
    }

    fn ordered(presented: &str, requested: &str) -> bool {
        dn(presented).matches(&dn(requested), &DnMatchRule::Ordered)
    }

    #[test]
    fn every_real_world_spelling_of_one_dn_matches_in_either_direction() {
        for (reference, spellings) in [(OB, OB_SPELLINGS), (ORG_ID, ORG_ID_SPELLINGS)] {
            for spelling in spellings {
                assert!(
                    unordered(reference, spelling),
                    "{spelling:?} should match {reference:?}"
                );
                assert!(
                    unordered(spelling, reference),
                    "{reference:?} should match {spelling:?}"
                );
            }
        }
    }

    #[test]
    fn near_misses_of_a_dn_never_match_in_either_direction() {
        for (reference, misses) in [(OB, OB_NEAR_MISSES), (ORG_ID, ORG_ID_NEAR_MISSES)] {
            for miss in misses {
                assert!(
                    !unordered(reference, miss),
                    "{miss:?} must not match {reference:?}"
                );
                assert!(
                    !unordered(miss, reference),
                    "{reference:?} must not match {miss:?}"
                );
            }
        }
    }

    #[test]
    fn whitespace_around_and_inside_values_is_collapsed_but_not_removed() {
        assert!(unordered("CN=x y", "CN =  x  y"));
        assert!(unordered("CN=x y", "CN=\tx \t y\t"));
        assert!(!unordered("CN=xy", "CN =  x  y"));
    }

    #[test]
    fn only_ascii_letters_are_case_folded() {
        assert!(unordered("CN=TPP Ltd,O=ACME", "cn=tpp ltd,o=acme"));
        assert!(unordered("CN=école", "CN=\\C3\\A9cole"));
        assert!(!unordered("CN=école", "CN=ecole"));
        // Unicode case mapping would make each of these equal; none of them is the same text.
        assert!(!unordered("CN=ÉCOLE", "CN=école"));
        assert!(!unordered("L=STRASSE", "L=straße"));
        assert!(!unordered("O=ΟΔΟΣ", "O=οδος"));
    }

    #[test]
    fn look_alikes_that_unicode_folding_would_equate_never_match() {
        // ſ (U+017F) folds to s, the Kelvin sign (U+212A) to k, ﬀ (U+FB00) to ff.
        for (presented, requested) in [
            ("CN=tpp-ſigning,O=Acme", "CN=tpp-signing,O=Acme"),
            ("CN=\u{212A}ey Service,O=Acme", "CN=Key Service,O=Acme"),
            ("CN=tpp,O=Acme Staﬀ", "CN=tpp,O=Acme Staff"),
            ("CN=tpp,O=ACME STAﬀ", "CN=tpp,O=acme staff"),
        ] {
            assert!(
                !unordered(presented, requested),
                "{presented} vs {requested}"
            );
            assert!(
                !unordered(requested, presented),
                "{requested} vs {presented}"
            );
        }
    }

    #[test]
    fn a_text_value_never_equals_a_hex_encoded_non_string_value() {
        assert!(!unordered("CN=\\#020101", "CN=#020101"));
        assert!(unordered("CN=#020101", "CN=#020101"));
        assert!(unordered("CN=\\#020101", "CN=\\#020101"));
    }

    #[test]
    fn hex_values_are_compared_by_content_whatever_string_type_or_length_form_they_use() {
        // PrintableString, BMPString and a long-form length all spell "abc".
        for spelling in ["CN=#1303616263", "CN=#1E06006100620063", "CN=#0C8103616263"] {
            assert!(unordered("CN=ABC", spelling), "{spelling}");
        }
    }

    #[test]
    fn ordered_matching_expects_the_string_order_reversed_from_der_order() {
        let presented = presented_ob_subject();
        let most_specific_first = dn(OB);
        let der_order = dn("C=GB,O=OpenBanking,OU=0014H00001lFE7dQAG,CN=0014H00001lFE7dQAG");
        assert!(presented.matches(&most_specific_first, &DnMatchRule::Ordered));
        assert!(!presented.matches(&der_order, &DnMatchRule::Ordered));
        assert!(presented.matches(&der_order, &DnMatchRule::Unordered));
    }

    #[test]
    fn ordered_matching_still_folds_case_and_spacing() {
        assert!(ordered(OB, OB_SPELLINGS[0]));
        assert!(ordered(OB, OB_SPELLINGS[3]));
        assert!(!ordered(OB, OB_NEAR_MISSES[0]));
    }

    #[test]
    fn a_multi_valued_rdn_equals_separate_rdns_only_when_unordered() {
        assert!(unordered("CN=a+O=b", "CN=a,O=b"));
        assert!(unordered("CN=a+O=b", "O=b+CN=a"));
        assert!(!ordered("CN=a+O=b", "CN=a,O=b"));
        assert!(ordered("CN=a+O=b", "O=b+CN=a"));
        assert!(!unordered("CN=a+O=b", "CN=a+O=b+O=b"));
    }

    #[test]
    fn duplicated_attributes_count_as_a_multiset() {
        assert!(!unordered("OU=a,OU=a,CN=x", "OU=a,CN=x"));
        assert!(!unordered("OU=a,OU=b,CN=x", "OU=a,OU=a,CN=x"));
        assert!(unordered("OU=a,OU=b,CN=x", "OU=b,CN=x,OU=a"));
    }

    #[test]
    fn the_attributes_rule_compares_only_the_listed_types() {
        let rule = DnMatchRule::Attributes(vec!["2.5.4.97".into()]);
        let presented = dn(ORG_ID);
        assert!(presented.matches(&dn("organizationIdentifier=PSDGB-FCA-123456"), &rule));
        assert!(presented.matches(&dn("2.5.4.97=psdgb-fca-123456,CN=other,O=Other"), &rule));
        assert!(!presented.matches(&dn("organizationIdentifier=PSDGB-FCA-654321"), &rule));
        let both = DnMatchRule::Attributes(vec!["2.5.4.97".into(), "2.5.4.3".into()]);
        assert!(presented.matches(
            &dn("CN=tpp.example.com,organizationIdentifier=PSDGB-FCA-123456"),
            &both
        ));
        assert!(!presented.matches(&dn("organizationIdentifier=PSDGB-FCA-123456"), &both));
    }

    #[test]
    fn the_attributes_rule_requires_each_listed_type_on_both_sides() {
        let rule = DnMatchRule::Attributes(vec!["2.5.4.97".into()]);
        assert!(!dn("CN=x").matches(&dn("organizationIdentifier=PSDGB-FCA-123456"), &rule));
        assert!(!dn(ORG_ID).matches(&dn("CN=tpp.example.com"), &rule));
        assert!(!dn("CN=x").matches(&dn("CN=x"), &rule));
    }

    #[test]
    fn the_attributes_rule_counts_duplicates() {
        let rule = DnMatchRule::Attributes(vec!["OU".into()]);
        assert!(!dn("OU=a,OU=a,CN=x").matches(&dn("OU=a"), &rule));
        assert!(dn("OU=b,OU=a,CN=x").matches(&dn("OU=a,OU=b"), &rule));
    }

    #[test]
    fn an_attributes_rule_with_no_usable_type_never_matches() {
        let presented = dn(ORG_ID);
        let requested = dn(ORG_ID);
        assert!(!presented.matches(&requested, &DnMatchRule::Attributes(Vec::new())));
        let unknown = DnMatchRule::Attributes(vec!["2.5.4.97".into(), "FOO".into()]);
        assert!(!presented.matches(&requested, &unknown));
    }

    #[test]
    fn an_empty_requested_dn_never_matches_even_an_empty_subject() {
        let empty = DistinguishedName { rdns: Vec::new() };
        for rule in [
            DnMatchRule::Unordered,
            DnMatchRule::Ordered,
            DnMatchRule::Attributes(vec!["CN".into()]),
        ] {
            assert!(!empty.matches(&empty, &rule));
        }
    }

    #[test]
    fn a_multi_valued_rdn_in_a_certificate_is_kept_as_one_rdn() {
        let presented = from_name_der(&name_der(&[
            rdn(&[atv(OID_C, tlv(0x13, b"GB"))]),
            rdn(&[
                atv(OID_OU, tlv(0x0c, b"Payments")),
                atv(OID_CN, tlv(0x0c, b"tpp")),
            ]),
        ]))
        .expect("parses");
        assert!(presented.matches(&dn("CN=tpp+OU=Payments,C=GB"), &DnMatchRule::Ordered));
        assert!(!presented.matches(&dn("CN=tpp,OU=Payments,C=GB"), &DnMatchRule::Ordered));
        assert!(presented.matches(&dn("CN=tpp,OU=Payments,C=GB"), &DnMatchRule::Unordered));
        // Within an RDN the AVAs print in a fixed order (by OID), since a set has no order of its own.
        assert_eq!(presented.to_rfc4514(), "OU=Payments+CN=tpp,C=GB");
    }
}
