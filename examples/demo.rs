//! The local demo behind `./demo.sh`: see `tests/support/demo.rs`, shared with the test that keeps it working.
//! `--cdr` runs the Australian CDR profile; `--once` exits after showing the registration.
//! `sign-request [--claims '<JSON>']` prints a request JWT for the running demo's TPP, to register your own
//! client with curl.

#[path = "../tests/support/mod.rs"]
mod support;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("sign-request") {
        let claims = match &args[1..] {
            [] => None,
            [flag, json] if flag == "--claims" => Some(json.as_str()),
            _ => {
                eprintln!(
                    "usage: demo sign-request [--claims '<JSON merged into the request claims>']"
                );
                std::process::exit(2);
            }
        };
        match support::demo::sign_request(claims) {
            Ok(jwt) => println!("{jwt}"),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let once = args.iter().any(|a| a == "--once");
    let cdr = args.iter().any(|a| a == "--cdr");
    if let Err(e) = support::demo::run(cdr, once).await {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
