//! Runs the real dcr-proxy binary for a test: a config written to a temp dir, port 0, JSON logs captured,
//! the bound address read back from the `listening` log line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary under test: cargo tells integration tests where it is; an example finds it beside itself.
pub fn binary() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_dcr-proxy") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/examples/<name> -> target/<profile>/dcr-proxy
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("dcr-proxy"))
        .expect("target directory")
}

pub struct ProxyProcess {
    pub addr: SocketAddr,
    /// The plaintext admin listener, when the config enables it.
    pub admin: Option<SocketAddr>,
    pub config_path: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    child: Child,
}

impl ProxyProcess {
    /// Writes `toml` to `dir/proxy.toml` and starts the proxy with `env`; waits for `listening`.
    pub async fn start(dir: &Path, toml: &str, env: &[(&str, &str)]) -> Self {
        Self::try_start(dir, toml, env)
            .await
            .unwrap_or_else(|logs| panic!("dcr-proxy did not start:\n{logs}"))
    }

    /// As `start`, under an open-files limit (soft and hard) when `nofile` is given.
    pub async fn start_limited(
        dir: &Path,
        toml: &str,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Self {
        let config_path = dir.join("proxy.toml");
        std::fs::write(&config_path, toml).expect("write proxy.toml");
        Self::spawn(config_path, env, nofile)
            .await
            .unwrap_or_else(|logs| panic!("dcr-proxy did not start:\n{logs}"))
    }

    /// Like `start`, but returns the captured output instead of panicking.
    pub async fn try_start(dir: &Path, toml: &str, env: &[(&str, &str)]) -> Result<Self, String> {
        let config_path = dir.join("proxy.toml");
        std::fs::write(&config_path, toml).expect("write proxy.toml");
        Self::try_start_config(config_path, env).await
    }

    /// Starts the proxy with an existing config file. Logs are forced to JSON so the address can be read.
    pub async fn try_start_config(
        config_path: PathBuf,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        Self::spawn(config_path, env, None).await
    }

    async fn spawn(
        config_path: PathBuf,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Result<Self, String> {
        // prlimit sets the limit and execs the proxy in the same process, so the pid is the proxy's.
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        cmd.arg("--config")
            .arg(&config_path)
            .env("DCR_LOG_FORMAT", "json")
            .env_remove("DCR_LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn dcr-proxy");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for stream in [
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if std::env::var_os("DCR_TEST_VERBOSE").is_some() {
                        eprintln!("[proxy] {line}");
                    }
                    logs.lock().expect("logs").push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let line = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(l)) => l,
                Ok(None) | Err(_) => {
                    let _ = child.start_kill();
                    return Err(logs.lock().expect("logs").join("\n"));
                }
            };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "listening"
                && let Some(addr) = v["addr"].as_str().and_then(|a| a.parse().ok())
            {
                // Keep draining output in the background so the child never blocks on a full pipe.
                tokio::spawn(async move { while rx.recv().await.is_some() {} });
                let admin = v["admin_addr"].as_str().and_then(|a| a.parse().ok());
                return Ok(ProxyProcess {
                    addr,
                    admin,
                    config_path,
                    logs,
                    child,
                });
            }
        }
    }

    /// Every line the proxy has written so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// True while the process has not exited (a signal that killed it counts as exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Open file descriptors of the process now (Linux: /proc).
    pub fn open_fds(&self) -> Option<usize> {
        let pid = self.child.id()?;
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()
            .map(|d| d.count())
    }

    /// Sends a signal by name (`TERM`, `HUP`, `KILL`) without waiting.
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{name}"), &pid.to_string()])
                .status();
        }
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("dcr-proxy exits")
            .expect("wait for dcr-proxy")
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> super::client::Response {
        let admin = self.admin.expect("the admin listener is enabled");
        super::client::http_request("GET", &format!("http://{admin}{path}"), &[], "").await
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("dcr-proxy exits after SIGTERM")
            .expect("wait for dcr-proxy")
    }
}

/// Runs `dcr-proxy --check-config` and returns (exit code, stdout + stderr).
pub fn check_config(config: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = std::process::Command::new(binary());
    cmd.arg("--check-config").arg("--config").arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run dcr-proxy --check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}
