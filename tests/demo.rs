//! The README's first command works: the shipped demo registers (OB and CDR), gets a token through the
//! proxy and reads the registration back. It uses fixed ports (8443, 8444, 9080) and .local/, so both
//! profiles run in one test, one after the other.

use std::path::PathBuf;
use std::process::Command;

fn demo_binary() -> PathBuf {
    // target/<profile>/deps/<test> -> target/<profile>/examples/demo
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples/demo"))
        .expect("target dir")
}

#[test]
fn the_demo_registers_and_manages_a_client_for_both_profiles() {
    let demo = demo_binary();
    assert!(
        demo.exists(),
        "{} is built by cargo test (examples are)",
        demo.display()
    );
    for args in [vec!["--once"], vec!["--once", "--cdr"]] {
        let out = Command::new(&demo)
            .args(&args)
            .output()
            .expect("run the demo");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}\n{stdout}\n{stderr}");
        assert!(stdout.contains("POST /register -> HTTP 201"), "{stdout}");
        assert!(stdout.contains("POST /token -> HTTP 200"), "{stdout}");
        assert!(stdout.contains("-> HTTP 200\n"), "{stdout}");
    }
}
