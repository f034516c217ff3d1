//! Quoting what a client sent, in answers and logs: bounded, and unable to forge or hide text.

/// At most this many characters of a value a client sent are quoted back in an `error_description` (and so in
/// the log line that carries it): enough for a DN, a redirect URI or a kid, while a 40 KiB `kid` stays 40 KiB
/// nowhere but in the request itself.
pub const ECHO_MAX_CHARS: usize = 256;

/// A value the client sent, for quoting in an answer or a log: cut after [`ECHO_MAX_CHARS`] characters (saying how
/// long it was), with control and bidirectional-formatting characters written as `\u{..}` escapes so that a NUL,
/// a newline or a right-to-left override cannot forge or hide text in a log viewer.
pub fn echo(value: &str) -> Echo<'_> {
    Echo(value)
}

/// See [`echo`]; formats without allocating.
#[derive(Clone, Copy)]
pub struct Echo<'a>(&'a str);

impl std::fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(ECHO_MAX_CHARS) {
            if c.is_control() || is_bidi_or_invisible(c) {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                f.write_char(c)?;
            }
        }
        if chars.next().is_some() {
            write!(f, "… ({} bytes in all)", self.0.len())?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Format characters that change how the text around them reads (Unicode Cf: zero-width, bidi embeddings,
/// overrides and isolates, the byte order mark).
fn is_bidi_or_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_values_are_cut_and_cannot_forge_log_text() {
        assert_eq!(echo("kid-1").to_string(), "kid-1");
        let long = "k".repeat(40 * 1024);
        let shown = echo(&long).to_string();
        assert!(shown.starts_with(&"k".repeat(ECHO_MAX_CHARS)), "{shown}");
        assert!(shown.ends_with("… (40960 bytes in all)"), "{shown}");
        assert!(shown.chars().count() < ECHO_MAX_CHARS + 40, "{shown}");
        // Exactly at the limit nothing is cut.
        let edge = "é".repeat(ECHO_MAX_CHARS);
        assert_eq!(echo(&edge).to_string(), edge);
        assert_eq!(
            echo("a\0b\nc\u{202E}d").to_string(),
            "a\\u{0}b\\u{a}c\\u{202e}d"
        );
    }
}
