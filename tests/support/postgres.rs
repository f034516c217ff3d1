//! Runs a throwaway PostgreSQL server from the distribution's binaries: one per test binary ([`PgServer::shared`]),
//! or one per test ([`PgServer::start`]) for tests that stop, freeze or restart it. Each test takes its own database.
//!
//! The server is started with `pg_ctl`, so it is not a child of the test process and would outlive it; a small
//! watchdog shell, whose standard input is a pipe from the test process, stops it and deletes its files when that
//! pipe closes: when the [`PgServer`] is dropped, or when the test binary exits however it exits.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dcr_proxy::store::postgres::{PgTls, PostgresConfig};
use tokio::sync::OnceCell;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The superuser `initdb` creates; loopback connections need no password (`--auth=trust`).
pub const SUPERUSER: &str = "postgres";

/// TLS material for the server, PEM.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Clone, Debug, Default)]
pub struct PgOptions {
    /// Turns on `ssl` with this certificate; plain connections stay allowed.
    pub tls: Option<ServerTls>,
    /// Keeps PostgreSQL's durable defaults (`fsync`, `synchronous_commit`, `full_page_writes` on), as a
    /// deployment runs it: for the benchmark. Tests turn them off.
    pub durable: bool,
}

pub struct PgServer {
    root: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    /// `initdb` and `postgres` refuse to run as root, so as root every server command runs as this OS user.
    os_user: Option<&'static str>,
    watchdog: Mutex<Option<Child>>,
}

static SHARED: OnceCell<PgServer> = OnceCell::const_new();

impl PgServer {
    /// The server this test binary shares; started on first use, stopped when the binary exits.
    pub async fn shared() -> &'static PgServer {
        SHARED.get_or_init(PgServer::start).await
    }

    /// A server of the caller's own, stopped and deleted on drop.
    pub async fn start() -> Self {
        Self::start_with(PgOptions::default()).await
    }

    pub async fn start_with(options: PgOptions) -> Self {
        let bin = find_bin_dir();
        let os_user = if is_root() { Some("postgres") } else { None };
        let root = std::env::temp_dir().join(format!("dcr-pg-{}", uuid::Uuid::new_v4().simple()));
        let data = root.join("data");
        std::fs::create_dir_all(&root).expect("create the PostgreSQL scratch directory");
        if let Some(user) = os_user {
            run(Command::new("chown")
                .arg(format!("{user}:{user}"))
                .arg(&root));
        }
        let port = free_port();
        let server = Self {
            root,
            data,
            bin,
            port,
            os_user,
            watchdog: Mutex::new(None),
        };
        // Arm the watchdog before anything can be left behind.
        server.spawn_watchdog();
        run(server.command("initdb").arg("-D").arg(&server.data).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]));
        server.write_settings(&options);
        server.pg_ctl_start().await;
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The scratch directory holding the data, the socket and the server log; gone once the server is dropped.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Like [`Self::url`] but naming the host `localhost`, which the test PKI's server certificate covers.
    pub fn url_localhost(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@localhost:{}/{db}", self.port)
    }

    /// A store configuration for `db` with timeouts short enough for tests and long enough for a loaded CI machine.
    pub fn config(&self, db: &str) -> PostgresConfig {
        PostgresConfig {
            url: self.url(db),
            password: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            tls: PgTls::Disable,
        }
    }

    /// Creates an empty database `t_<uuid>` and returns its name.
    pub async fn create_database(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        self.admin("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("CREATE DATABASE");
        name
    }

    /// [`Self::config`] for a database made for the caller.
    pub async fn fresh_config(&self) -> PostgresConfig {
        let db = self.create_database().await;
        self.config(&db)
    }

    /// A superuser connection to `db`, for looking at or tampering with rows behind the store's back. Its connection
    /// task runs on the caller's runtime.
    pub async fn admin(&self, db: &str) -> tokio_postgres::Client {
        self.try_admin(db)
            .await
            .unwrap_or_else(|e| panic!("connect to PostgreSQL on port {}: {e}", self.port))
    }

    async fn try_admin(&self, db: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user={SUPERUSER} dbname={db} connect_timeout=5",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Fast shutdown: sessions are ended, the data stays for [`Self::restart`].
    pub async fn stop(&self) {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "30"]);
        run_async(cmd).await;
    }

    /// Starts the server again (stopping it first if it runs) on the same port and data.
    pub async fn restart(&self) {
        if self.data.join("postmaster.pid").exists() {
            self.stop().await;
        }
        self.pg_ctl_start().await;
    }

    /// Suspends every server process (SIGSTOP): connections stay open and nothing answers, like a hung host.
    pub fn freeze(&self) {
        self.signal_all("-STOP");
    }

    pub fn thaw(&self) {
        self.signal_all("-CONT");
    }

    fn signal_all(&self, signal: &str) {
        let pids = self.server_pids();
        assert!(!pids.is_empty(), "PostgreSQL is not running");
        let mut cmd = Command::new("kill");
        cmd.arg(signal).args(pids.iter().map(u32::to_string));
        run(&mut cmd);
    }

    /// The postmaster and its children (backends and background processes) as they are now, found through /proc.
    pub fn server_pids(&self) -> Vec<u32> {
        let Ok(pidfile) = std::fs::read_to_string(self.data.join("postmaster.pid")) else {
            return Vec::new();
        };
        let Some(master) = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![master];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // The command name in field 2 may contain spaces; the parent pid is the second field after its ')'.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(master) {
                pids.push(pid);
            }
        }
        pids
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match self.os_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        // A server command must never hold the test harness's output pipes open.
        cmd.stdin(Stdio::null());
        cmd
    }

    fn write_settings(&self, options: &PgOptions) {
        let mut settings = format!(
            "\n# dcr-proxy tests\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 200\nshared_buffers = 32MB\n",
            self.port,
            self.root.display()
        );
        if !options.durable {
            // Durability is worthless for a database deleted after the test.
            settings.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        if let Some(tls) = &options.tls {
            let cert = self.data.join("server.crt");
            let key = self.data.join("server.key");
            std::fs::write(&cert, &tls.cert_pem).expect("write server.crt");
            std::fs::write(&key, &tls.key_pem).expect("write server.key");
            // PostgreSQL refuses a key file others can read.
            run(Command::new("chmod").arg("600").arg(&key));
            if let Some(user) = self.os_user {
                run(Command::new("chown")
                    .arg(format!("{user}:{user}"))
                    .arg(&cert)
                    .arg(&key));
            }
            settings.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                cert.display(),
                key.display()
            ));
        }
        let conf = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("write postgresql.conf");
    }

    async fn pg_ctl_start(&self) {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.root.join("server.log"))
            .args(["-w", "-t", "30"]);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("pg_ctl task")
            .expect("run pg_ctl start");
        if !out.status.success() {
            panic!(
                "pg_ctl start failed: {}\n{}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
            );
        }
        let begun = Instant::now();
        loop {
            match self.try_admin("postgres").await {
                Ok(client) => match client.simple_query("SELECT 1").await {
                    Ok(_) => return,
                    Err(e) if begun.elapsed() > READY_TIMEOUT => {
                        panic!("PostgreSQL not ready: {e}")
                    }
                    Err(_) => {}
                },
                Err(e) if begun.elapsed() > READY_TIMEOUT => panic!("PostgreSQL not ready: {e}"),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn spawn_watchdog(&self) {
        // `cat` returns when the pipe from the test process closes. A frozen server would ignore pg_ctl, so it is
        // woken first; `immediate` skips the shutdown checkpoint of data about to be deleted.
        let script = r#"cat >/dev/null
pid=$(head -n 1 "$2/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ]; then
    for p in $pid $(grep -l "^PPid:[[:space:]]*$pid\$" /proc/[0-9]*/status 2>/dev/null | cut -d/ -f3); do
        kill -CONT "$p" 2>/dev/null
    done
    "$1/pg_ctl" stop -D "$2" -m immediate -w -t 30 >/dev/null 2>&1
fi
rm -rf "$3""#;
        let mut cmd = match self.os_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "sh"]);
                c
            }
            None => Command::new("sh"),
        };
        cmd.arg("-c")
            .arg(script)
            .arg("pg-watchdog")
            .arg(&self.bin)
            .arg(&self.data)
            .arg(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn the PostgreSQL watchdog");
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let child = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut child) = child {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

fn find_bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install PostgreSQL: apt-get install -y postgresql"
        ),
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free loopback port")
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn run_async(mut cmd: Command) {
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .expect("command task");
}
