//! CLI: --config, --check-config, --version → telemetry → Config::load → serve → signals → drain.
//!
//! Exit codes: 0 clean shutdown or a good check; 78 the configuration (or what it names) is wrong;
//! 1 any other start-up failure (an address in use); 2 a bad command line (clap's usage error).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dcr_proxy::StartError;
use dcr_proxy::config::{Config, EXIT_CONFIG, ProcessEnv};
use dcr_proxy::telemetry::LogFormat;

/// jemalloc rather than glibc's malloc: after a burst of connections glibc kept all it had used (62 MiB a
/// minute after 1000 connections closed, from 16 MiB idle), jemalloc's background thread gives freed pages
/// back within seconds. Measured by `scripts/rss.sh`; see docs/decisions.md.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Regulated Dynamic Client Registration (UK OB v3.1, AU CDR 1.13) in front of an RFC 7591 OAuth server",
    after_help = "Exit codes: 0 clean shutdown, or --check-config found no problem; 78 the configuration (or a file, \
                  variable or store it names) is wrong; 1 any other start-up failure, such as an address already in \
                  use; 2 the command line is wrong."
)]
struct Args {
    /// Path of the configuration file.
    #[arg(long, default_value = "proxy.toml")]
    config: PathBuf,
    /// Load and cross-check the configuration and every file and variable it names, changing nothing on
    /// disk, then exit (0 = OK, 78 = problems).
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
    // Client connections run on `server.workers` threads of their own (src/workers.rs); this runtime holds the
    // accept loop, the admin listener and the background tasks.
    let rt = match tokio::runtime::Builder::new_current_thread()
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
        let checked = rt.block_on(dcr_proxy::check(&cfg));
        return match checked {
            Ok(()) => {
                println!("{file}: OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", at(&cfg, &file, &e));
                ExitCode::from(EXIT_CONFIG as u8)
            }
        };
    }
    dcr_proxy::telemetry::init(cfg.log.format, &cfg.log.level);
    rt.block_on(async move {
        let running = match dcr_proxy::serve(&cfg, Some(&args.config)).await {
            Ok(r) => r,
            Err(e) => {
                // Once, in the format the operator chose: a log pipeline gets one JSON event, a
                // terminal the same `file:line: key: problem` line that --check-config prints.
                let at = at(&cfg, &file, &e);
                match cfg.log.format {
                    LogFormat::Json => tracing::error!(at, error = %e, "start-up failed"),
                    LogFormat::Text => eprintln!("{at}: {e}"),
                }
                return exit_code(&e);
            }
        };
        tracing::info!(
            addr = %running.data_addr,
            admin_addr = %running.admin_addr.map(|a| a.to_string()).unwrap_or_default(),
            profile = cfg.profile.kind.as_str(),
            version = env!("CARGO_PKG_VERSION"),
            "listening"
        );
        wait_for_termination(&running).await;
        tracing::info!(
            drain_s = cfg.server.drain_timeout.as_secs(),
            "shutting down"
        );
        running.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// 78 (EX_CONFIG) when a setting, or a file, variable or store it names, is at fault; 1 when the
/// configuration is fine but the machine is not (an address already in use).
fn exit_code(e: &StartError) -> ExitCode {
    match e {
        StartError::Setup { .. } => ExitCode::from(EXIT_CONFIG as u8),
        StartError::Bind { .. } => ExitCode::FAILURE,
    }
}

/// `file:line` of the key a start-up failure blames, as config problems are printed.
fn at(cfg: &Config, file: &str, e: &StartError) -> String {
    match e.key().and_then(|k| cfg.line_of(k)) {
        Some(line) => format!("{file}:{line}"),
        None => file.to_string(),
    }
}

/// Returns on SIGTERM or SIGINT; SIGHUP reloads certificates and trust anchors and keeps serving.
async fn wait_for_termination(running: &dcr_proxy::Running) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
            signal(SignalKind::interrupt()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading certificates and trust anchors");
                    running.reload();
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = running;
        let _ = tokio::signal::ctrl_c().await;
    }
}
