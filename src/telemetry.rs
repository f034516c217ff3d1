//! tracing-subscriber set-up: JSON in production, human text for a terminal; filter from config or env.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// `[log]`, after the DCR_LOG_FORMAT / DCR_LOG_LEVEL overrides.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the global subscriber once; later calls (tests starting several servers) are no-ops.
/// Text is coloured only when stderr is a terminal: redirected to a file or a collector, ANSI escape
/// codes are noise that breaks grep.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
