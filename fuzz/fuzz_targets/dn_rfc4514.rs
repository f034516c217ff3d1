//! `tls_client_auth_dn` as a TPP sends it: RFC 4514 parsing, rendering and matching (src/identity/dn).
#![no_main]

use dcr_proxy::identity::{DistinguishedName, DnMatchRule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(dn) = DistinguishedName::parse_rfc4514(s) else {
        return;
    };
    // to_rfc4514 promises output that parses back to an equal DN; audit lines rely on it too.
    let text = dn.to_rfc4514();
    let again = DistinguishedName::parse_rfc4514(&text)
        .unwrap_or_else(|e| panic!("{s:?} renders as {text:?}, which does not parse: {e}"));
    assert_eq!(
        again, dn,
        "{s:?} renders as {text:?}, which parses to another DN"
    );
    assert!(
        !text.contains(['\n', '\r']),
        "{text:?}: a rendering must not split a log line"
    );
    // A parsed DN is never empty, and every rule accepts a DN against itself.
    assert!(!dn.is_empty());
    assert!(dn.matches(&dn, &DnMatchRule::Unordered), "{s:?}");
    assert!(dn.matches(&dn, &DnMatchRule::Ordered), "{s:?}");
    let _ = dn.matches(
        &dn,
        &DnMatchRule::Attributes(vec!["CN".into(), "2.5.4.97".into()]),
    );
    let _ = dn.values("2.5.4.3").count();
});
