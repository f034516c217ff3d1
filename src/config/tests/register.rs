//! `[profile]`'s CDR Register status keys: defaults, the former names, and problems with their key and line.

use super::*;
use crate::tls::revocation::StalePolicy;

fn cdr(extra: &str) -> String {
    GOOD.replace("kind = \"ob-v3.1\"", "kind = \"cdr-1.13\"")
        .replace(
            "audiences = [\"0015800001041RHAAY\"]",
            &format!("audiences = [\"https://holder.example.com\"]\n{extra}"),
        )
}

const PRODUCTS: &str = "software_product_status_uri = \"https://api.cdr.gov.au/cdr-register/v1/all/data-recipients/brands/software-products/status\"";

#[test]
fn the_register_status_check_has_documented_defaults_and_reads_its_former_key_names() {
    let c = load(&cdr(PRODUCTS), &env()).expect("valid");
    let s = c.profile.software_product_status.expect("on");
    assert_eq!(s.interval, Duration::from_secs(300));
    assert_eq!(s.max_stale, Duration::from_secs(3600));
    assert_eq!(s.policy, StalePolicy::Closed);
    assert_eq!(s.timeout, Duration::from_secs(10));
    assert_eq!(s.max_bytes, 4 * 1024 * 1024);
    assert!(s.data_recipients.is_none() && s.ca_bundle.is_none());
    assert!(s.allow_withdrawal);

    let src = cdr(&format!(
        "{PRODUCTS}\ndata_recipient_status_uri = \"https://api.cdr.gov.au/cdr-register/v1/all/data-recipients/status\"\n\
         software_product_status_ttl = \"2m\"\nsoftware_product_status_max_stale = \"0s\"\nregister_status_policy = \"open_for_passthrough\""
    ));
    let s = load(&src, &env())
        .expect("valid")
        .profile
        .software_product_status
        .expect("on");
    assert_eq!(s.interval, Duration::from_secs(120));
    assert_eq!(s.max_stale, Duration::ZERO);
    assert_eq!(s.policy, StalePolicy::OpenForPassthrough);
    assert!(s.data_recipients.is_some());
}

#[test]
fn register_status_settings_that_cannot_work_are_refused_with_their_key_and_line() {
    let src = cdr(&format!(
        "{PRODUCTS}\nsoftware_product_status_ttl = \"2m\"\nregister_status_interval = \"1m\"\n\
         register_status_policy = \"sometimes\"\ndata_recipient_status_uri = \"http://register.example/status\"\n\
         register_status_max_bytes = 10"
    ));
    let e = load(&src, &env()).expect_err("four problems");
    let got: Vec<(String, Option<usize>)> =
        e.problems.iter().map(|p| (p.key.clone(), p.line)).collect();
    for key in [
        "software_product_status_ttl",
        "register_status_policy",
        "data_recipient_status_uri",
        "register_status_max_bytes",
    ] {
        assert!(
            got.contains(&(format!("profile.{key}"), Some(line(&src, key)))),
            "{key}: {e}"
        );
    }
    let e = e.to_string();
    assert!(
        e.contains("former name of profile.register_status_interval"),
        "{e}"
    );

    // Without the products URI, the other keys do nothing: said so, not ignored.
    let src = cdr("register_status_interval = \"1m\"");
    let e = load(&src, &env()).expect_err("no effect");
    assert_eq!(e.problems[0].key, "profile.register_status_interval", "{e}");
    assert!(e.to_string().contains("has no effect without"), "{e}");

    // OB has no Register.
    let src = GOOD.replace(
        "audiences = [\"0015800001041RHAAY\"]",
        &format!("audiences = [\"0015800001041RHAAY\"]\n{PRODUCTS}"),
    );
    let e = load(&src, &env()).expect_err("ob");
    assert_eq!(
        e.problems[0].key, "profile.software_product_status_uri",
        "{e}"
    );
}
