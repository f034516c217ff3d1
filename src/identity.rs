//! Client-certificate identity: the mTLS peer certificate parsed once per connection, and
//! matching of its subject DN against a registered RFC 4514 `tls_client_auth_dn`.
//!
//! Both sides of the comparison are reduced to the same shape, a sequence of RDNs each holding a
//! set of (attribute type OID, folded value) pairs, so that the many ways banks and TPPs spell one
//! DN compare equal while a DN that differs in any attribute does not.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::X509Name;

/// The verified client certificate, parsed once per connection.
#[derive(Clone, Debug)]
pub struct PeerCert {
    /// The leaf certificate as presented.
    pub der: CertificateDer<'static>,
    /// Intermediates as presented (may be empty).
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
    fn new(mut avas: Vec<Ava>) -> Rdn {
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
    /// Parses the request side (`tls_client_auth_dn`), most-specific RDN first.
    pub fn parse_rfc4514(s: &str) -> Result<Self, DnError> {
        Parser { s, pos: 0 }.distinguished_name()
    }

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
                let (value, shown) = decode_value(
                    any.class() as u8,
                    any.header.is_constructed(),
                    any.tag().0,
                    any.data,
                )
                .map_err(|reason| DnError::CertificateValue {
                    oid: oid.clone(),
                    reason,
                })?;
                avas.push(Ava { oid, value, shown });
            }
            rdns.push(Rdn::new(avas));
        }
        Ok(DistinguishedName { rdns })
    }

    /// Most-specific RDN first, as RFC 4514 prescribes; the output parses back to an equal DN.
    pub fn to_rfc4514(&self) -> String {
        let mut out = String::new();
        for (i, rdn) in self.rdns.iter().rev().enumerate() {
            if i > 0 {
                out.push(',');
            }
            for (j, ava) in rdn.0.iter().enumerate() {
                if j > 0 {
                    out.push('+');
                }
                out.push_str(display_name(&ava.oid));
                out.push('=');
                match ava.value {
                    Value::Text(_) => escape_value(&ava.shown, &mut out),
                    Value::Der(_) => out.push_str(&ava.shown),
                }
            }
        }
        out
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
fn canonical_numeric_oid(s: &str) -> Option<String> {
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

fn display_name(oid: &str) -> &str {
    ATTRIBUTE_TYPES
        .iter()
        .find(|(known, _, _)| *known == oid)
        .map_or(oid, |(_, name, _)| name)
}

/// RFC 4518-style folding limited to what the DCR rules ask for: case, and whitespace at the ends
/// and in runs. NFKC and RFC 4518's "map to nothing" step are deliberately left out: each widens
/// equality, and a certificate differing from a registered DN only by an invisible or
/// compatibility character should not pass as that DN.
fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space_pending = false;
    for c in s.chars() {
        if c.is_whitespace() {
            space_pending = !out.is_empty();
            continue;
        }
        if space_pending {
            out.push(' ');
            space_pending = false;
        }
        // Lowercasing the uppercase form approximates Unicode full case folding without a
        // dependency: `ß` and `SS` both become `ss`, final and medial sigma both become `σ`.
        for upper in c.to_uppercase() {
            out.extend(upper.to_lowercase());
        }
    }
    out
}

/// Turns one attribute value (identifier parts and content octets) into the comparable value
/// and its display text. Shared by both sides so that a hex-encoded request value and a
/// certificate value are decoded identically.
fn decode_value(
    class: u8,
    constructed: bool,
    tag: u32,
    content: &[u8],
) -> Result<(Value, String), &'static str> {
    if class == 0 {
        let text = match tag {
            // PrintableString, NumericString, IA5String and VisibleString are subsets of ASCII;
            // their character sets are not enforced because CAs do issue `*` and `@` in them.
            12 | 18 | 19 | 22 | 26 => Some(
                std::str::from_utf8(content)
                    .map_err(|_| "string value is not valid UTF-8")?
                    .to_owned(),
            ),
            // TeletexString: real certificates put Latin-1 in it, not T.61.
            20 => Some(content.iter().map(|&b| char::from(b)).collect()),
            30 => Some(decode_bmp(content)?),
            28 => Some(decode_universal(content)?),
            _ => None,
        };
        if let Some(text) = text {
            if constructed {
                return Err("constructed string encodings are not supported");
            }
            return Ok((Value::Text(fold(&text)), text));
        }
    }
    let der = encode_tlv(class, constructed, tag, content);
    let shown = format!("#{}", hex_upper(&der));
    Ok((Value::Der(der), shown))
}

fn decode_bmp(content: &[u8]) -> Result<String, &'static str> {
    if !content.len().is_multiple_of(2) {
        return Err("BMPString has an odd number of bytes");
    }
    let units = content
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| "BMPString holds an unpaired surrogate")
}

fn decode_universal(content: &[u8]) -> Result<String, &'static str> {
    if !content.len().is_multiple_of(4) {
        return Err("UniversalString length is not a multiple of 4");
    }
    content
        .chunks_exact(4)
        .map(|quad| {
            char::from_u32(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]]))
                .ok_or("UniversalString holds a value that is not a Unicode scalar")
        })
        .collect()
}

fn encode_tlv(class: u8, constructed: bool, tag: u32, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 8);
    let ident = (class << 6) | if constructed { 0x20 } else { 0 };
    if tag < 31 {
        out.push(ident | tag as u8);
    } else {
        out.push(ident | 0x1f);
        let mut groups = Vec::new();
        let mut t = tag;
        loop {
            groups.push((t & 0x7f) as u8);
            t >>= 7;
            if t == 0 {
                break;
            }
        }
        for (i, g) in groups.iter().rev().enumerate() {
            let more = if i + 1 < groups.len() { 0x80 } else { 0 };
            out.push(g | more);
        }
    }
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Reads exactly one BER TLV with a definite length and decodes it like a certificate value.
fn decode_ber(bytes: &[u8]) -> Result<(Value, String), &'static str> {
    let (&ident, mut rest) = bytes.split_first().ok_or("no bytes after `#`")?;
    let class = ident >> 6;
    let constructed = ident & 0x20 != 0;
    let mut tag = u32::from(ident & 0x1f);
    if tag == 0x1f {
        tag = 0;
        loop {
            let (&b, r) = rest.split_first().ok_or("tag number is truncated")?;
            rest = r;
            if tag > (u32::MAX >> 7) {
                return Err("tag number is too large");
            }
            tag = (tag << 7) | u32::from(b & 0x7f);
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let (&first, r) = rest.split_first().ok_or("length is missing")?;
    rest = r;
    let len = if first & 0x80 == 0 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 {
            return Err("indefinite lengths are not allowed");
        }
        if count > 4 || rest.len() < count {
            return Err("length is truncated or too large");
        }
        let (len_bytes, r) = rest.split_at(count);
        rest = r;
        len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    match rest.len().cmp(&len) {
        Ordering::Less => Err("value is shorter than its encoded length"),
        Ordering::Greater => Err("there are bytes after the encoded value"),
        Ordering::Equal => decode_value(class, constructed, tag, rest),
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// Escapes what RFC 4514 requires, plus control characters so that an audit line cannot be
/// split or forged by a subject containing a newline.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let edge_space = c == ' ' && (i == 0 || i == last);
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if edge_space => out.push_str("\\ "),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
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

const SEPARATOR_HINT: &str =
    "; if it belongs to the previous value, escape the `,` or `+` before it as `\\,` or `\\+`";

/// A cursor over the RFC 4514 string; `pos` is a byte offset kept on character boundaries.
struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    /// Character position for messages: integrators count characters, not UTF-8 bytes.
    fn position(&self, byte: usize) -> usize {
        self.s[..byte].chars().count()
    }

    fn distinguished_name(mut self) -> Result<DistinguishedName, DnError> {
        self.skip_spaces();
        if self.peek().is_none() {
            return Err(DnError::Empty);
        }
        let mut rdns = Vec::new();
        loop {
            let mut avas = vec![self.ava(rdns.is_empty())?];
            while self.peek() == Some('+') {
                self.bump();
                avas.push(self.ava(false)?);
            }
            rdns.push(Rdn::new(avas));
            match self.bump() {
                None => break,
                Some(',') => {}
                Some(found) => {
                    return Err(DnError::UnexpectedCharacter {
                        found,
                        position: self.position(self.pos - found.len_utf8()),
                    });
                }
            }
        }
        // The string lists the most specific RDN first; storage follows DER order.
        rdns.reverse();
        Ok(DistinguishedName { rdns })
    }

    /// Parses one `type=value` and leaves the cursor on `,`, `+` or the end.
    fn ava(&mut self, first: bool) -> Result<Ava, DnError> {
        self.skip_spaces();
        let start = self.pos;
        while self.peek().is_some_and(|c| !matches!(c, '=' | ',' | '+')) {
            self.bump();
        }
        let text = self.s[start..self.pos].trim();
        // Positions are computed only on error: counting characters for every AVA would make a
        // long DN quadratic to parse.
        let position = || self.position(start);
        if text.is_empty() {
            return Err(DnError::MissingAttributeType {
                position: position(),
            });
        }
        let has_equals = self.peek() == Some('=');
        let hint = if first || has_equals {
            ""
        } else {
            SEPARATOR_HINT
        };
        let oid = attribute_oid(text).ok_or_else(|| {
            let looks_like_name = text.starts_with(|c: char| c.is_ascii_alphabetic())
                && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            let is_oid_prefixed = text
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("oid."));
            if looks_like_name && !is_oid_prefixed {
                DnError::UnknownAttributeType {
                    name: text.to_owned(),
                    position: position(),
                    hint,
                }
            } else {
                DnError::InvalidAttributeType {
                    text: text.to_owned(),
                    position: position(),
                    hint,
                }
            }
        })?;
        if !has_equals {
            return Err(DnError::MissingEquals {
                name: text.to_owned(),
                position: self.position(self.pos),
            });
        }
        self.bump();
        self.skip_spaces();
        let (value, shown) = match self.peek() {
            Some('#') => self.hex_value()?,
            Some('"') => self.quoted_value()?,
            _ => self.plain_value()?,
        };
        Ok(Ava { oid, value, shown })
    }

    fn hex_value(&mut self) -> Result<(Value, String), DnError> {
        let start = self.pos;
        self.bump();
        let digits_start = self.pos;
        while self
            .peek()
            .is_some_and(|c| !c.is_ascii_whitespace() && !matches!(c, ',' | '+'))
        {
            self.bump();
        }
        let digits = &self.s[digits_start..self.pos];
        let invalid = |reason| DnError::InvalidHexValue {
            position: self.position(start),
            reason,
        };
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("it contains a character that is not a hex digit"));
        }
        if !digits.len().is_multiple_of(2) {
            return Err(invalid("it has an odd number of hex digits"));
        }
        let bytes: Vec<u8> = digits
            .as_bytes()
            .chunks_exact(2)
            .filter_map(|pair| hex_byte(pair[0], pair[1]))
            .collect();
        let decoded = decode_ber(&bytes).map_err(invalid)?;
        self.expect_value_end()?;
        Ok(decoded)
    }

    /// RFC 1779/2253 quoting, still written by some banks' portals.
    fn quoted_value(&mut self) -> Result<(Value, String), DnError> {
        let open = self.pos;
        self.bump();
        let mut buf = Vec::new();
        loop {
            let here = self.pos;
            match self.bump() {
                None => {
                    return Err(DnError::UnterminatedQuote {
                        position: self.position(open),
                    });
                }
                Some('"') => break,
                Some('\\') => self.escape(here, &mut buf)?,
                Some('\0') => return Err(self.unescaped('\0', here)),
                Some(c) => push_char(&mut buf, c),
            }
        }
        let text = String::from_utf8(buf).map_err(|_| DnError::InvalidUtf8 {
            position: self.position(open),
        })?;
        self.expect_value_end()?;
        Ok((Value::Text(fold(&text)), text))
    }

    fn plain_value(&mut self) -> Result<(Value, String), DnError> {
        let start = self.pos;
        let mut buf = Vec::new();
        // Bytes up to the last character that is not an unescaped space: trailing spaces are
        // separator padding, while an escaped trailing space is part of the value.
        let mut kept = 0;
        loop {
            let here = self.pos;
            match self.peek() {
                None | Some(',' | '+') => break,
                Some('\\') => {
                    self.bump();
                    self.escape(here, &mut buf)?;
                    kept = buf.len();
                }
                // RFC 4514 requires these escaped; guessing what an unescaped one meant could
                // turn two RDNs into one value or the reverse.
                Some(c @ ('"' | ';' | '<' | '>' | '\0')) => return Err(self.unescaped(c, here)),
                Some(c) => {
                    self.bump();
                    push_char(&mut buf, c);
                    if !c.is_ascii_whitespace() {
                        kept = buf.len();
                    }
                }
            }
        }
        buf.truncate(kept);
        let text = String::from_utf8(buf).map_err(|_| DnError::InvalidUtf8 {
            position: self.position(start),
        })?;
        Ok((Value::Text(fold(&text)), text))
    }

    /// Decodes the escape whose backslash was at `at`, the cursor being just past it.
    fn escape(&mut self, at: usize, buf: &mut Vec<u8>) -> Result<(), DnError> {
        let invalid = || DnError::InvalidEscape {
            position: self.position(at),
        };
        match self.peek() {
            Some(c @ (',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' | ' ' | '#')) => {
                self.bump();
                push_char(buf, c);
                Ok(())
            }
            Some(_) => {
                let pair = self.s.as_bytes().get(self.pos..self.pos + 2);
                match pair.and_then(|p| hex_byte(p[0], p[1])) {
                    Some(byte) => {
                        self.pos += 2;
                        buf.push(byte);
                        Ok(())
                    }
                    None => Err(invalid()),
                }
            }
            None => Err(invalid()),
        }
    }

    fn unescaped(&self, ch: char, at: usize) -> DnError {
        DnError::UnescapedCharacter {
            ch,
            position: self.position(at),
            hint: if ch == ';' {
                "; RDNs are separated by `,`, not `;`"
            } else {
                ""
            },
        }
    }

    fn expect_value_end(&mut self) -> Result<(), DnError> {
        self.skip_spaces();
        match self.peek() {
            None | Some(',' | '+') => Ok(()),
            Some(found) => Err(DnError::UnexpectedCharacter {
                found,
                position: self.position(self.pos),
            }),
        }
    }
}

fn push_char(buf: &mut Vec<u8>, c: char) {
    let mut tmp = [0u8; 4];
    buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    Some((digit(hi)? * 16 + digit(lo)?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::string::Ia5String;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType, date_time_ymd};
    use x509_parser::prelude::FromDer;

    fn dn(s: &str) -> DistinguishedName {
        DistinguishedName::parse_rfc4514(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn unordered(presented: &str, requested: &str) -> bool {
        dn(presented).matches(&dn(requested), &DnMatchRule::Unordered)
    }

    fn ordered(presented: &str, requested: &str) -> bool {
        dn(presented).matches(&dn(requested), &DnMatchRule::Ordered)
    }

    const OB: &str = "CN=0014H00001lFE7dQAG,OU=0014H00001lFE7dQAG,O=OpenBanking,C=GB";

    /// Spellings of `OB` seen from banks, TPPs, openssl, Java and Windows tooling.
    const OB_SPELLINGS: &[&str] = &[
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

    const OB_NEAR_MISSES: &[&str] = &[
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

    const ORG_ID: &str =
        "organizationIdentifier=PSDGB-FCA-123456,CN=tpp.example.com,O=Acme\\, Inc.,C=GB";

    const ORG_ID_SPELLINGS: &[&str] = &[
        "OID.2.5.4.97=PSDGB-FCA-123456, CN=tpp.example.com, O=Acme\\, Inc., C=GB",
        "2.5.4.97=#0C1050534447422D4643412D313233343536,CN=tpp.example.com,O=Acme\\2C Inc.,C=GB",
        "organizationidentifier=psdgb-fca-123456,CN=TPP.EXAMPLE.COM,O=\"Acme, Inc.\",C=GB",
        "C=GB,O=Acme\\2c Inc.,CN=tpp.example.com,2.5.4.97=PSDGB-FCA-123456",
        "organizationIdentifier = PSDGB-FCA-123456 , CN =  tpp.example.com  , O = Acme\\,   Inc. , C = GB",
    ];

    const ORG_ID_NEAR_MISSES: &[&str] = &[
        "organizationIdentifier=PSDGB-FCA-123457,CN=tpp.example.com,O=Acme\\, Inc.,C=GB",
        "CN=tpp.example.com,O=Acme\\, Inc.,C=GB",
        "organizationIdentifier=PSDGB-FCA-123456,CN=tpp.example.com,O=Acme Inc.,C=GB",
        "organizationIdentifier=PSDGB-FCA-123456,CN=tpp.example.com,O=Acme\\, Inc,C=GB",
        "organizationIdentifier=PSDGB-FCA-123456,CN=tpp.example.com,O=Acme\\, Inc.,C=GB,C=GB",
    ];

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
    fn case_folding_covers_sharp_s_sigma_and_non_latin_scripts() {
        assert!(unordered("L=STRASSE", "L=straße"));
        assert!(unordered("O=ΟΔΟΣ", "O=οδος"));
        assert!(unordered("O=ΟΔΟΣ", "O=οδοσ"));
        assert!(unordered("CN=ÉCOLE", "CN=\\C3\\A9cole"));
        assert!(!unordered("CN=école", "CN=ecole"));
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
    fn malformed_dn_strings_are_rejected_with_a_message_naming_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("", "the DN is empty"),
            ("   ", "the DN is empty"),
            (
                "O=Acme, Inc.",
                "`Inc.` at position 8 is not an attribute type",
            ),
            (
                "O=Acme, Inc",
                "unknown attribute type `Inc` at position 8; if it belongs",
            ),
            (
                "CN=x, O=y,",
                "expected an attribute type such as `CN` at position 10",
            ),
            (
                "CN=x,,O=y",
                "expected an attribute type such as `CN` at position 5",
            ),
            (
                "=x",
                "expected an attribute type such as `CN` at position 0",
            ),
            ("CN=x; O=y", "character ';' at position 4 must be escaped"),
            ("CN=a<b", "character '<' at position 4"),
            ("CN=a\"b", "character '\"' at position 4"),
            ("CN=\"x\" garbage", "unexpected 'g' at position 7"),
            ("CN=#0C0178zz", "not a hex digit"),
            ("CN=#0C0178 zz", "unexpected 'z' at position 11"),
            ("CN=#0C017", "odd number of hex digits"),
            ("CN=#", "no bytes after `#`"),
            ("CN=#0C0278", "shorter than its encoded length"),
            ("CN=#0C017878", "bytes after the encoded value"),
            ("CN=#0C0180", "not valid UTF-8"),
            ("CN=#1E0141", "odd number of bytes"),
            ("CN=#2C0178", "constructed string"),
            ("CN=#0C80", "indefinite lengths"),
            ("CN=x\\", "invalid escape at position 4"),
            ("CN=\\q", "invalid escape at position 3"),
            (
                "CN=\\C3",
                "not valid UTF-8 once its `\\XX` escapes are decoded",
            ),
            ("CN=\"abc", "quoted value at position 3 has no closing"),
            ("CN", "expected `=` after attribute type `CN` at position 2"),
            ("FOO=bar", "unknown attribute type `FOO` at position 0"),
            (
                "2.5.4.03=x",
                "`2.5.4.03` at position 0 is not an attribute type",
            ),
            (
                "OID.CN=x",
                "`OID.CN` at position 0 is not an attribute type",
            ),
            ("C N=x", "`C N` at position 0 is not an attribute type"),
            ("CN=ö;", "character ';' at position 4"),
        ];
        for (input, expected) in cases {
            match DistinguishedName::parse_rfc4514(input) {
                Ok(parsed) => panic!("{input:?} should be rejected, parsed as {parsed:?}"),
                Err(e) => {
                    let message = e.to_string();
                    assert!(
                        message.starts_with("tls_client_auth_dn: "),
                        "{input:?}: {message}"
                    );
                    assert!(message.contains(expected), "{input:?}: {message}");
                }
            }
        }
    }

    #[test]
    fn a_long_dn_full_of_escapes_parses_without_quadratic_work() {
        // 60k AVAs of 6 characters: quadratic position counting would take minutes here.
        let long = vec!["OU=\\2C"; 60_000].join(",");
        assert_eq!(dn(&long).values("2.5.4.11").count(), 60_000);
    }

    #[test]
    fn an_unknown_attribute_type_is_reported_with_its_position() {
        let err = DistinguishedName::parse_rfc4514("CN=x, OU=y, FOO=z").err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("tls_client_auth_dn: unknown attribute type `FOO` at position 12")
        );
    }

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

    #[test]
    fn to_rfc4514_prints_most_specific_first_and_parses_back_to_an_equal_dn() {
        let presented = presented_ob_subject();
        assert_eq!(presented.to_rfc4514(), OB);
        assert_eq!(dn(&presented.to_rfc4514()), presented);
        for spelling in ORG_ID_SPELLINGS.iter().chain(OB_SPELLINGS) {
            let parsed = dn(spelling);
            assert_eq!(dn(&parsed.to_rfc4514()), parsed, "{spelling:?}");
        }
    }

    #[test]
    fn to_rfc4514_keeps_the_presented_case_and_escapes_what_rfc4514_requires() {
        assert_eq!(
            dn("O=Acme\\, Inc.+CN=\\#1 \\<x\\> a\\;b\\\"c\\\\d\\+e\\ ").to_rfc4514(),
            "O=Acme\\, Inc.+CN=\\#1 \\<x\\> a\\;b\\\"c\\\\d\\+e\\ "
        );
        assert_eq!(dn("CN=#020101").to_rfc4514(), "CN=#020101");
    }

    #[test]
    fn to_rfc4514_escapes_control_characters_so_audit_lines_cannot_be_split() {
        let text = dn("CN=a\\0Ab\\0D").to_rfc4514();
        assert_eq!(text, "CN=a\\0Ab\\0D");
        assert!(!text.contains('\n'));
    }

    // Hand-built Name DER for cases rcgen cannot produce: other string types, multi-valued RDNs,
    // non-string values and malformed strings.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        assert!(content.len() < 128, "test helper uses short lengths only");
        let mut out = vec![tag, content.len() as u8];
        out.extend_from_slice(content);
        out
    }

    fn atv(oid: &[u8], value: Vec<u8>) -> Vec<u8> {
        tlv(0x30, &[tlv(0x06, oid), value].concat())
    }

    fn rdn(atvs: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x31, &atvs.concat())
    }

    fn name_der(rdns: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &rdns.concat())
    }

    fn from_name_der(der: &[u8]) -> Result<DistinguishedName, DnError> {
        let (rest, name) = X509Name::from_der(der).expect("test DER should be a Name");
        assert!(rest.is_empty());
        DistinguishedName::from_x509_name(&name)
    }

    const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
    const OID_C: &[u8] = &[0x55, 0x04, 0x06];
    const OID_L: &[u8] = &[0x55, 0x04, 0x07];
    const OID_O: &[u8] = &[0x55, 0x04, 0x0a];
    const OID_OU: &[u8] = &[0x55, 0x04, 0x0b];

    fn presented_ob_subject() -> DistinguishedName {
        let der = name_der(&[
            rdn(&[atv(OID_C, tlv(0x13, b"GB"))]),
            rdn(&[atv(OID_O, tlv(0x13, b"OpenBanking"))]),
            rdn(&[atv(OID_OU, tlv(0x13, b"0014H00001lFE7dQAG"))]),
            rdn(&[atv(OID_CN, tlv(0x13, b"0014H00001lFE7dQAG"))]),
        ]);
        from_name_der(&der).expect("OB subject should parse")
    }

    #[test]
    fn certificate_values_of_every_string_type_are_decoded_as_text() {
        let zurich_bmp: Vec<u8> = "Zürich".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let omega_universal = 0x3A9u32.to_be_bytes();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (tlv(0x0c, "Zürich".as_bytes()), "L=zürich"),
            (tlv(0x13, b"Zurich"), "L=ZURICH"),
            (tlv(0x16, b"Zurich"), "L=zurich"),
            (tlv(0x1a, b"Zurich"), "L=zurich"),
            (tlv(0x14, b"Z\xfcrich"), "L=Zürich"),
            (tlv(0x1e, &zurich_bmp), "L=ZÜRICH"),
            (tlv(0x1c, &omega_universal), "L=ω"),
        ];
        for (value, requested) in cases {
            let presented = from_name_der(&name_der(&[rdn(&[atv(OID_L, value.clone())])]))
                .unwrap_or_else(|e| panic!("{value:02X?}: {e}"));
            assert!(
                presented.matches(&dn(requested), &DnMatchRule::Unordered),
                "{value:02X?} should match {requested:?}"
            );
        }
    }

    #[test]
    fn a_non_string_certificate_value_compares_as_the_hex_of_its_der() {
        let presented =
            from_name_der(&name_der(&[rdn(&[atv(OID_CN, tlv(0x02, &[1]))])])).expect("parses");
        assert_eq!(presented.to_rfc4514(), "CN=#020101");
        assert!(presented.matches(&dn("CN=#020101"), &DnMatchRule::Unordered));
        assert!(!presented.matches(&dn("CN=\\#020101"), &DnMatchRule::Unordered));
        assert_eq!(presented.values("2.5.4.3").collect::<Vec<_>>(), ["#020101"]);
    }

    #[test]
    fn a_certificate_string_that_reads_like_hex_is_still_text() {
        let presented =
            from_name_der(&name_der(&[rdn(&[atv(OID_CN, tlv(0x0c, b"#020101"))])])).expect("ok");
        assert!(!presented.matches(&dn("CN=#020101"), &DnMatchRule::Unordered));
        assert!(presented.matches(&dn("CN=\\#020101"), &DnMatchRule::Unordered));
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

    #[test]
    fn malformed_certificate_strings_are_errors_not_guesses() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (tlv(0x1e, &[0x00]), "odd number of bytes"),
            (tlv(0x1e, &[0xd8, 0x00]), "unpaired surrogate"),
            (tlv(0x0c, &[0xff]), "not valid UTF-8"),
            (tlv(0x1c, &[0, 0x11, 0, 0]), "not a Unicode scalar"),
        ];
        for (value, expected) in cases {
            let err = from_name_der(&name_der(&[rdn(&[atv(OID_CN, value.clone())])]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.starts_with("certificate subject: attribute 2.5.4.3") && err.contains(expected),
                "{value:02X?}: {err:?}"
            );
        }
    }

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
