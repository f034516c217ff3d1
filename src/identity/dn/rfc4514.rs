//! RFC 4514 text: parsing a registered `tls_client_auth_dn`, and rendering a DN for logs and audit.

use std::fmt::Write as _;

use super::attributes::display_name;
use super::ber::decode_ber;
use super::{Ava, DistinguishedName, DnError, Encoded, Rdn, Value, attribute_oid, fold};

impl DistinguishedName {
    /// Parses the request side (`tls_client_auth_dn`), most-specific RDN first.
    pub fn parse_rfc4514(s: &str) -> Result<Self, DnError> {
        Parser { s, pos: 0 }.distinguished_name()
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
        let (value, shown, encoded) = match self.peek() {
            Some('#') => {
                let (value, shown, encoded) = self.hex_value()?;
                (value, shown, Some(encoded))
            }
            Some('"') => {
                let (value, shown) = self.quoted_value()?;
                (value, shown, None)
            }
            _ => {
                let (value, shown) = self.plain_value()?;
                (value, shown, None)
            }
        };
        Ok(Ava {
            oid,
            value,
            shown,
            encoded,
            position: 0,
        })
    }

    fn hex_value(&mut self) -> Result<(Value, String, Encoded), DnError> {
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
    use super::super::fixtures::*;
    use super::*;

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
}
