//! proxy.toml -> a typed, validated `Config` of the stages' own settings types; every problem of a file is
//! reported in one run, each with its file, line and dotted key.
//!
//! Two passes: read.rs/raw.rs read the TOML one key at a time (syntax, unknown keys, types, missing keys);
//! validate.rs checks what the values mean. Both only collect, so nothing stops at the first problem.

mod raw;
mod read;
#[cfg(test)]
mod scratch;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_forgerock_am;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use validate::parse_duration;

use crate::bearer::BearerConfig;
use crate::dcr::profile::{ProfileConfig, TrustAnchor};
use crate::dcr::reconcile::ReconcileConfig;
use crate::forward::ForwardConfig;
use crate::jwks::JwksConfig;
use crate::server::ServerConfig;
use crate::store::StoreConfig;
use crate::telemetry::LogConfig;
use crate::tls::TlsConfig;
use crate::upstream::UpstreamConfig;

/// Exit code of `--check-config` and of start-up when the configuration is wrong (sysexits EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

#[derive(Debug, Clone)]
pub struct Problem {
    /// Dotted key (`upstream.timeout`, `trust_anchors[0].jwks_uri`); empty for the file as a whole.
    pub key: String,
    /// The line of the key in the file, or of its table when the key is left at its default.
    pub line: Option<usize>,
    /// The environment variable the value came from, when it overrides the file.
    pub env: Option<String>,
    pub problem: String,
}

impl Problem {
    fn at(key: &str, problem: impl Into<String>) -> Self {
        Problem {
            key: key.to_string(),
            line: None,
            env: None,
            problem: problem.into(),
        }
    }

    fn file(problem: impl Into<String>) -> Self {
        Problem::at("", problem)
    }
}

#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if let Some(var) = &p.env {
                write!(
                    f,
                    "environment variable {var} (overrides {} in {}): {}",
                    p.key, self.file, p.problem
                )?;
                continue;
            }
            write!(f, "{}", self.file)?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if !p.key.is_empty() {
                write!(f, ": {}", p.key)?;
            }
            write!(f, ": {}", p.problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where environment variables come from; tests pass a map instead of touching the process environment.
pub trait Env: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// The validated configuration: each section in the settings type of the stage that uses it.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub upstream: UpstreamConfig,
    pub jwks: JwksConfig,
    pub profile: ProfileConfig,
    pub trust_anchors: Vec<TrustAnchor>,
    pub store: StoreConfig,
    pub log: LogConfig,
    /// GET/PUT/DELETE /register/{ClientId}; None when the bank does not offer management.
    pub management: Option<BearerConfig>,
    /// Everything that is not a registration route goes to the IdP.
    pub forward: ForwardConfig,
    pub reconcile: ReconcileConfig,
    /// Where each key was written, for problems found after loading (a key that does not match its cert).
    lines: read::Lines,
}

impl Config {
    /// Reads, parses and validates a file; relative paths in it are resolved against its directory.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            problems: vec![Problem::file(format!("cannot read: {e}"))],
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::from_toml_str(&src, &file, &base, env)
    }

    pub fn from_toml_str(
        src: &str,
        file: &str,
        base_dir: &Path,
        env: &dyn Env,
    ) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            file: file.to_string(),
            problems,
        };
        let doc = read::parse(src).map_err(fail)?;
        let reader = read::Reader::default();
        let raw = raw::RawConfig::read(read::Table::root(&reader, &doc.root));
        let (mut problems, failed) = reader.finish();
        let mut v = validate::Validator::new(base_dir, env, failed);
        let cfg = v.build(raw);
        problems.append(&mut v.problems);
        for p in &mut problems {
            if p.env.is_none() {
                p.line = doc.lines.of(&p.key);
            }
        }
        // In file order; problems of the file as a whole and of the environment first.
        problems.sort_by_key(|p| p.line.unwrap_or(0));
        match cfg {
            Some(cfg) if problems.is_empty() => Ok(Config {
                lines: doc.lines,
                ..cfg
            }),
            _ if problems.is_empty() => Err(fail(vec![Problem::file(
                "the configuration is incomplete, but no key was blamed: please report this",
            )])),
            _ => Err(fail(problems)),
        }
    }

    /// The line `key` was written on (or its table, when it was left at its default).
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.lines.of(key)
    }
}
