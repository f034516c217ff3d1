//! `[server]` keys this round added: their defaults and bounds.

use super::*;

#[test]
fn worker_threads_default_to_unset_and_are_held_to_1_to_64() {
    let c = load(GOOD, &env()).expect("valid");
    assert_eq!(
        c.server.workers, None,
        "unset: the CPUs the process may use"
    );
    let c = load(
        &GOOD.replacen("[server]\n", "[server]\nworkers = 3\n", 1),
        &env(),
    )
    .expect("valid");
    assert_eq!(c.server.workers, Some(3));
    for n in ["0", "65"] {
        let src = GOOD.replacen("[server]\n", &format!("[server]\nworkers = {n}\n"), 1);
        let e = load(&src, &env()).expect_err("out of range").to_string();
        assert!(
            e.contains("server.workers: must be between 1 and 64"),
            "{e}"
        );
    }
}
