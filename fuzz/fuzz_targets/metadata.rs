//! The OB and CDR client-metadata rules (src/dcr/metadata.rs) fed arbitrary JSON claims, with a
//! fixed software statement and transport certificate; then both renderings of what passed.
#![no_main]

use dcr_proxy::dcr::metadata;
use dcr_proxy::identity::DnRendering;
use dcr_proxy_fuzz::{Fixture, cdr, ob};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(claims) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    for f in [ob(), cdr()] {
        check(f, &claims);
    }
});

fn check(f: &Fixture, claims: &Map<String, Value>) {
    let Ok(md) = metadata::validate(claims, &f.ssa, &f.peer, &f.profile) else {
        return;
    };
    // Nothing registers a redirect URI the software statement does not list.
    assert!(!md.redirect_uris.is_empty());
    for uri in &md.redirect_uris {
        assert!(f.ssa.redirect_uris.contains(uri), "{uri}");
    }
    assert!(!md.grant_types.is_empty());
    for dn in [DnRendering::Rfc4514, DnRendering::Java] {
        let upstream = md.to_upstream(&f.ssa, &f.peer, &f.profile, dn);
        assert!(upstream.get("software_statement").is_none());
    }
    let rendered = md.render(&f.ssa, &f.profile);
    let body = metadata::response_body(rendered, "client", 0, &f.ssa.raw);
    assert_eq!(body["client_id"], "client");
}
