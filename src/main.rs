//! CLI: --config, --check-config, --version → telemetry → Config::load → serve → signals → drain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dcr_proxy::config::{Config, EXIT_CONFIG, ProcessEnv};

#[derive(Parser)]
#[command(
    version,
    about = "Regulated Dynamic Client Registration (UK OB v3.1, AU CDR 1.13) in front of an RFC 7591 OAuth server"
)]
struct Args {
    /// Path of the configuration file.
    #[arg(long, default_value = "proxy.toml")]
    config: PathBuf,
    /// Load and cross-check the configuration and every file and variable it names, then exit (0 = OK, 78 = problems).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let file = args.config.display().to_string();
    let cfg = match Config::load(&args.config, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        // Building everything but the sockets proves the files, keys and URLs are usable.
        let checked = rt.block_on(async { dcr_proxy::prepare(&cfg).map(|_| ()) });
        return match checked {
            Ok(()) => {
                println!("{file}: OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{file}: {e}");
                ExitCode::from(EXIT_CONFIG as u8)
            }
        };
    }
    dcr_proxy::telemetry::init(cfg.log.format, &cfg.log.level);
    rt.block_on(async move {
        let running = match dcr_proxy::serve(&cfg).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                eprintln!("{file}: {e}");
                return ExitCode::from(EXIT_CONFIG as u8);
            }
        };
        tracing::info!(addr = %running.data_addr, profile = cfg.profile.kind.as_str(), version = env!("CARGO_PKG_VERSION"), "listening");
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
