//! Attribute type names: the names and aliases this proxy knows for attribute OIDs, and RFC 4512
//! numeric OIDs for every other type.

/// Attribute types known by name: dotted OID, the name printed by `to_rfc4514`, and every
/// spelling accepted (compared ASCII case-insensitively).
const ATTRIBUTE_TYPES: &[(&str, &str, &[&str])] = &[
    ("2.5.4.3", "CN", &["CN", "commonName"]),
    ("2.5.4.4", "SN", &["SN", "surname"]),
    ("2.5.4.5", "serialNumber", &["serialNumber"]),
    ("2.5.4.6", "C", &["C", "countryName"]),
    ("2.5.4.7", "L", &["L", "localityName"]),
    ("2.5.4.8", "ST", &["ST", "S", "stateOrProvinceName"]),
    ("2.5.4.9", "STREET", &["STREET", "streetAddress"]),
    ("2.5.4.10", "O", &["O", "organizationName"]),
    ("2.5.4.11", "OU", &["OU", "organizationalUnitName"]),
    ("2.5.4.12", "title", &["title"]),
    ("2.5.4.15", "businessCategory", &["businessCategory"]),
    ("2.5.4.17", "postalCode", &["postalCode"]),
    ("2.5.4.42", "GN", &["GN", "givenName"]),
    ("2.5.4.43", "initials", &["initials"]),
    ("2.5.4.44", "generationQualifier", &["generationQualifier"]),
    ("2.5.4.46", "dnQualifier", &["dnQualifier"]),
    ("2.5.4.65", "pseudonym", &["pseudonym"]),
    (
        "2.5.4.97",
        "organizationIdentifier",
        &["organizationIdentifier"],
    ),
    (
        "0.9.2342.19200300.100.1.25",
        "DC",
        &["DC", "domainComponent"],
    ),
    ("0.9.2342.19200300.100.1.1", "UID", &["UID", "userId"]),
    (
        "1.2.840.113549.1.9.1",
        "emailAddress",
        &["emailAddress", "E", "EMAIL"],
    ),
    (
        "1.3.6.1.4.1.311.60.2.1.3",
        "jurisdictionC",
        &["jurisdictionC", "jurisdictionCountryName"],
    ),
    (
        "1.3.6.1.4.1.311.60.2.1.2",
        "jurisdictionST",
        &["jurisdictionST", "jurisdictionStateOrProvinceName"],
    ),
    (
        "1.3.6.1.4.1.311.60.2.1.1",
        "jurisdictionL",
        &["jurisdictionL", "jurisdictionLocalityName"],
    ),
];

/// Resolves an attribute type name, dotted OID or `OID.`-prefixed dotted OID to the dotted OID.
pub fn attribute_oid(name: &str) -> Option<String> {
    let name = name.trim();
    if name
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("oid."))
    {
        return name.get(4..).and_then(canonical_numeric_oid);
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return canonical_numeric_oid(name);
    }
    ATTRIBUTE_TYPES
        .iter()
        .find(|(_, _, aliases)| aliases.iter().any(|a| a.eq_ignore_ascii_case(name)))
        .map(|(oid, _, _)| (*oid).to_owned())
}

/// RFC 4512 `numericoid`: leading zeros are refused rather than normalised, because the
/// certificate side always arrives without them and a zero-padded arc is most likely a typo.
pub(super) fn canonical_numeric_oid(s: &str) -> Option<String> {
    let arcs: Vec<&str> = s.split('.').collect();
    if arcs.len() < 2 {
        return None;
    }
    for arc in &arcs {
        let well_formed = !arc.is_empty()
            && arc.bytes().all(|b| b.is_ascii_digit())
            && (*arc == "0" || !arc.starts_with('0'));
        if !well_formed {
            return None;
        }
    }
    let first_ok = matches!(arcs[0], "0" | "1" | "2");
    let second_ok = arcs[0] == "2" || arcs[1].parse::<u8>().is_ok_and(|n| n <= 39);
    (first_ok && second_ok).then(|| s.to_owned())
}

pub(super) fn display_name(oid: &str) -> &str {
    ATTRIBUTE_TYPES
        .iter()
        .find(|(known, _, _)| *known == oid)
        .map_or(oid, |(_, name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_oid_resolves_names_aliases_and_dotted_oids() {
        let cases: &[(&str, Option<&str>)] = &[
            ("CN", Some("2.5.4.3")),
            ("cn", Some("2.5.4.3")),
            ("commonName", Some("2.5.4.3")),
            ("2.5.4.3", Some("2.5.4.3")),
            ("OID.2.5.4.3", Some("2.5.4.3")),
            ("organizationIdentifier", Some("2.5.4.97")),
            ("OID.2.5.4.97", Some("2.5.4.97")),
            ("S", Some("2.5.4.8")),
            ("ST", Some("2.5.4.8")),
            ("STREET", Some("2.5.4.9")),
            ("SERIALNUMBER", Some("2.5.4.5")),
            ("SN", Some("2.5.4.4")),
            ("surname", Some("2.5.4.4")),
            ("GN", Some("2.5.4.42")),
            ("givenName", Some("2.5.4.42")),
            ("title", Some("2.5.4.12")),
            ("postalCode", Some("2.5.4.17")),
            ("businessCategory", Some("2.5.4.15")),
            ("DC", Some("0.9.2342.19200300.100.1.25")),
            ("UID", Some("0.9.2342.19200300.100.1.1")),
            ("E", Some("1.2.840.113549.1.9.1")),
            ("EMAIL", Some("1.2.840.113549.1.9.1")),
            ("emailAddress", Some("1.2.840.113549.1.9.1")),
            ("jurisdictionC", Some("1.3.6.1.4.1.311.60.2.1.3")),
            ("1.3.6.1.4.1.99999.1", Some("1.3.6.1.4.1.99999.1")),
            ("FOO", None),
            ("OID.CN", None),
            ("2.5.4.03", None),
            ("2", None),
            ("3.1", None),
            ("1.40", None),
            ("2.5..4", None),
            ("", None),
        ];
        for (name, oid) in cases {
            assert_eq!(attribute_oid(name).as_deref(), *oid, "{name:?}");
        }
    }
}
