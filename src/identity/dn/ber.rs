//! Attribute values as BER: the string types certificates use decoded to text, anything else kept
//! as a minimal DER re-encoding that compares byte for byte, and the value's ASN.1 identity
//! ([`Encoded`]) kept beside both for renderings that print the type.

use std::cmp::Ordering;
use std::fmt::Write as _;

use super::{Value, fold};

/// Turns one attribute value (identifier parts and content octets) into the comparable value
/// and its display text. Shared by both sides so that a hex-encoded request value and a
/// certificate value are decoded identically.
pub(super) fn decode_value(
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

/// An attribute value as BER identified it. Comparison ignores the string type, but Java prints
/// attributes it has no RFC 2253 keyword for as the hex of their DER, so a UTF8String and a
/// PrintableString holding the same text render differently there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Encoded {
    class: u8,
    constructed: bool,
    tag: u32,
    content: Vec<u8>,
}

impl Encoded {
    pub(super) fn new(class: u8, constructed: bool, tag: u32, content: &[u8]) -> Encoded {
        Encoded {
            class,
            constructed,
            tag,
            content: content.to_vec(),
        }
    }

    /// Minimal DER: what Java's `DerValue.toByteArray` writes for the same value, since it too
    /// re-encodes the length rather than copying the original octets.
    pub(super) fn to_der(&self) -> Vec<u8> {
        encode_tlv(self.class, self.constructed, self.tag, &self.content)
    }

    /// The universal tag number of a primitive universal value; `None` for anything else.
    pub(super) fn universal_primitive_tag(&self) -> Option<u32> {
        (self.class == 0 && !self.constructed).then_some(self.tag)
    }

    pub(super) fn content(&self) -> &[u8] {
        &self.content
    }
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
pub(super) fn decode_ber(bytes: &[u8]) -> Result<(Value, String, Encoded), &'static str> {
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
        Ordering::Equal => {
            let (value, shown) = decode_value(class, constructed, tag, rest)?;
            Ok((value, shown, Encoded::new(class, constructed, tag, rest)))
        }
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::DnMatchRule;
    use super::super::fixtures::*;

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
            (tlv(0x1e, &zurich_bmp), "L=züRICH"),
            (tlv(0x1c, &omega_universal), "L=Ω"),
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
}
