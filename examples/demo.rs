//! The local demo behind `./demo.sh`: see `tests/support/demo.rs`, shared with the test that keeps it working.
//! `--cdr` runs the Australian CDR profile; `--once` exits after showing the registration.

#[path = "../tests/support/mod.rs"]
mod support;

#[tokio::main]
async fn main() {
    let once = std::env::args().any(|a| a == "--once");
    let cdr = std::env::args().any(|a| a == "--cdr");
    if let Err(e) = support::demo::run(cdr, once).await {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
