//! `store.commit_delay`: its default, its bound and the backend it belongs to.

use super::*;

fn commit_delay(c: &Config) -> Option<Duration> {
    match &c.store {
        crate::store::StoreConfig::Sqlite { commit_delay, .. } => Some(*commit_delay),
        crate::store::StoreConfig::Postgres(_) => None,
    }
}

fn with(line: &str) -> String {
    GOOD.replace(
        "path = \"dcr.sqlite\"",
        &format!("path = \"dcr.sqlite\"\n{line}"),
    )
}

#[test]
fn commit_delay_defaults_to_2ms_and_zero_turns_it_off() {
    let c = load(GOOD, &env()).expect("valid");
    assert_eq!(commit_delay(&c), Some(Duration::from_millis(2)));
    let c = load(&with("commit_delay = \"0ms\""), &env()).expect("valid");
    assert_eq!(commit_delay(&c), Some(Duration::ZERO));
    let c = load(&with("commit_delay = \"20ms\""), &env()).expect("valid");
    assert_eq!(commit_delay(&c), Some(Duration::from_millis(20)));
}

#[test]
fn commit_delay_past_its_bound_or_without_a_unit_is_named() {
    for (value, says) in [
        ("\"21ms\"", "must be at most 20ms"),
        ("\"1s\"", "must be at most 20ms"),
        ("\"2\"", "has no unit"),
    ] {
        let e = load(&with(&format!("commit_delay = {value}")), &env()).expect_err(value);
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["store.commit_delay"], "{value}: {e}");
        assert!(e.to_string().contains(says), "{value}: {e}");
    }
}

#[test]
fn commit_delay_is_refused_for_postgres_which_groups_commits_itself() {
    let src = GOOD.replace(
        "backend = \"sqlite\"\npath = \"dcr.sqlite\"",
        "backend = \"postgres\"\nurl = \"postgres://dcr@db:5432/dcr\"\ncommit_delay = \"2ms\"",
    );
    let e = load(&src, &env()).expect_err("sqlite-only key");
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].key, "store.commit_delay", "{e}");
    assert!(e.to_string().contains("sqlite backend only"), "{e}");
}
