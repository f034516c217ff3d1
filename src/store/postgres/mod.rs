//! Owns the PostgreSQL implementation of [`RegistrationStore`](super::RegistrationStore) and [`ReplayGuard`](super::replay::ReplayGuard): connection pool, timeouts, schema migrations and error mapping, for deployments that run several replicas against one database.
//!
//! The semantics are those of [`super::sqlite::SqliteStore`], with the same
//! partial unique indexes doing the uniqueness work. What differs is what a
//! shared server brings:
//!
//! * Several replicas may start at once, so migrations run in one transaction
//!   that first takes a transaction-scoped advisory lock; the second replica
//!   waits, then finds the schema current.
//! * The server may stall or vanish, and a request must then fail with
//!   `Unavailable` rather than hang: the pool bounds how long a caller waits
//!   for a connection and how long one takes to open, every connection runs
//!   with a server-side `statement_timeout`, and every call also has a
//!   client-side deadline for the case where the server does not answer at
//!   all (a frozen host, a silent network partition). A connection that hit
//!   that deadline is dropped from the pool, since a reply may still arrive
//!   on it.
//! * The replay cache is shared by all replicas: one `INSERT .. ON CONFLICT`
//!   statement both checks and records a key, so the database's row lock
//!   decides which of two racing replicas saw a token first.

mod registrations;
mod replay;
mod rows;
mod schema;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, GenericClient, Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError,
    RecyclingMethod, Runtime, TimeoutType,
};
use serde_json::Value;
use tokio_postgres::NoTls;

use self::rows::{COLUMNS, LIVE, execute, map_err, registration};
use super::{PendingOp, RecordState, Registration, StoreError};
use crate::jwt::now;
use crate::secret::Secret;

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/db`. A password here is refused: URLs end
    /// up in logs, process listings and config repositories.
    pub url: String,
    pub password: Option<Secret>,
    /// Connections per replica; the server's `max_connections` must cover
    /// this times the number of replicas.
    pub pool_size: usize,
    /// Bounds opening a connection (TCP, TLS and authentication) and waiting
    /// for a free one when all are busy.
    pub connect_timeout: Duration,
    /// Server-side limit on any one statement, lock waits included.
    pub statement_timeout: Duration,
    pub tls: PgTls,
}

#[derive(Clone, Debug)]
pub enum PgTls {
    /// Plain TCP: only for a database on the same host or a trusted link.
    Disable,
    /// TLS with the server's certificate verified against `ca_bundle` (or the
    /// system roots) and its name checked against the URL's host.
    Require { ca_bundle: Option<PathBuf> },
}

/// The database's clock in unix seconds. Replay expiry is judged by it rather
/// than by each replica's own clock, so replicas with drifting clocks still
/// agree on whether an entry is live.
const DB_NOW: &str = "floor(extract(epoch FROM now()))::bigint";

/// Time the client allows past `statement_timeout` for the server's own
/// timeout error to arrive before it gives up on the connection.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// One in this many replay checks also clears out expired keys, so the table
/// stays bounded even if nobody calls [`PostgresStore::purge_expired`].
const PURGE_EVERY: u64 = 1024;

/// Rows deleted per purge statement: short statements keep row locks brief
/// and stay well inside `statement_timeout`.
const PURGE_BATCH: i64 = 10_000;

/// The PostgreSQL store. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// Client-side bound on one call once it holds a connection.
    deadline: Duration,
    /// Seconds added to every replay entry's lifetime; see
    /// [`PostgresStore::with_replay_skew`].
    replay_skew: i64,
    replay_checks: Arc<AtomicU64>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("pool_size", &status.max_size)
            .field("connections", &status.size)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum SchemaUse {
    Migrate,
    Inspect,
}

impl PostgresStore {
    /// Opens the pool, proves the database answers and brings the schema up
    /// to date. Safe to call from several replicas at once.
    ///
    /// `cfg` is taken as already checked (a URL without a password, a pool of 1 to 256, timeouts of at
    /// least 1 ms: the configuration refuses anything else); what fails here is what only trying can tell.
    pub async fn connect(cfg: &PostgresConfig) -> Result<Self, StoreError> {
        Self::open(cfg, SchemaUse::Migrate).await
    }

    /// As [`Self::connect`], but the schema is only read, in a read-only transaction: what
    /// `--check-config` may do beside live replicas, or before the database is meant to change.
    /// It still proves the database answers to these credentials and refuses a schema newer than this
    /// build; a missing or older schema is reported as what start-up will do, not as a problem.
    pub async fn inspect(cfg: &PostgresConfig) -> Result<Self, StoreError> {
        Self::open(cfg, SchemaUse::Inspect).await
    }

    async fn open(cfg: &PostgresConfig, schema: SchemaUse) -> Result<Self, StoreError> {
        let mut pg: tokio_postgres::Config = cfg.url.parse().map_err(|e| {
            config_error(format!(
                "invalid PostgreSQL URL (postgres://user@host:port/db): {e}"
            ))
        })?;
        if let Some(password) = &cfg.password {
            pg.password(password.expose());
        }
        pg.connect_timeout(cfg.connect_timeout);
        pg.application_name("dcr-proxy");
        let target = describe_target(&pg);

        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &cfg.tls {
            PgTls::Disable => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                Manager::from_config(pg, NoTls, manager_config)
            }
            PgTls::Require { ca_bundle } => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls = tls_connector(ca_bundle.as_deref())?;
                Manager::from_config(pg, tls, manager_config)
            }
        };

        let deadline = cfg.statement_timeout + DEADLINE_SLACK;
        let session_setup = format!(
            "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}",
            cfg.statement_timeout.as_millis(),
            // A transaction only idles between our own statements; one idle
            // this long belongs to a call that already gave up, and must not
            // keep its row locks.
            (deadline * 2).as_millis(),
        );
        let setup_timeout = cfg.connect_timeout;
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(cfg.connect_timeout))
            .create_timeout(Some(cfg.connect_timeout))
            .recycle_timeout(Some(cfg.connect_timeout))
            .post_create(Hook::async_fn(move |client: &mut ClientWrapper, _| {
                let sql = session_setup.clone();
                Box::pin(async move {
                    // The pool's create timeout does not cover hooks.
                    match tokio::time::timeout(setup_timeout, client.batch_execute(&sql)).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(HookError::Backend(e)),
                        Err(_) => Err(HookError::message(
                            "PostgreSQL did not answer the session setup in time",
                        )),
                    }
                })
            }))
            .build()
            .map_err(|e| config_error(format!("cannot build the PostgreSQL pool: {e}")))?;

        let store = Self {
            pool,
            deadline,
            replay_skew: 0,
            replay_checks: Arc::new(AtomicU64::new(0)),
        };
        // The first connection is made here: a failure says where we went and why it did not work.
        let schema_step = match schema {
            SchemaUse::Migrate => store.migrate().await,
            SchemaUse::Inspect => store.inspect_schema().await,
        };
        schema_step.map_err(|e| match e {
            StoreError::Unavailable(why) => StoreError::Unavailable(format!(
                "cannot use PostgreSQL at {}: {}",
                target,
                why.strip_prefix("PostgreSQL: ").unwrap_or(&why)
            )),
            other => other,
        })?;
        Ok(store)
    }

    /// Keeps every replay entry this much longer than the token's `exp`: the
    /// JWT validator's clock leeway, so that a token it still accepts is
    /// still remembered. Like [`crate::store::replay::MemoryReplayGuard::new`]'s `skew`.
    pub fn with_replay_skew(mut self, skew: Duration) -> Self {
        self.replay_skew = i64::try_from(skew.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// Deletes expired replay entries and returns how many went. Also runs by
    /// itself every [`PURGE_EVERY`] replay checks; a background task may call
    /// it on a timer to keep the table small between bursts.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        // The outer `expires_at` test is not redundant: if a concurrent check
        // reuses an expired key between the subquery's snapshot and the
        // delete, PostgreSQL re-evaluates the outer condition on the updated
        // row, which then survives. `key IN (..)` alone would still match it
        // and delete a live entry, opening that token to replay.
        let sql = format!(
            "DELETE FROM dcr_replay
             WHERE expires_at < {DB_NOW}
               AND key IN (SELECT key FROM dcr_replay WHERE expires_at < {DB_NOW} LIMIT $1)"
        );
        let mut total = 0;
        loop {
            let deleted = self
                .with_conn(async |conn| {
                    let stmt = conn.prepare_cached(&sql).await.map_err(map_err)?;
                    conn.execute(&stmt, &[&PURGE_BATCH]).await.map_err(map_err)
                })
                .await?;
            total += deleted;
            if deleted < PURGE_BATCH.unsigned_abs() {
                return Ok(total);
            }
        }
    }

    /// Active -> Pending(op) for `client_id`, storing `replacement` with it; returns the record as it was.
    async fn start_change(
        &self,
        client_id: &str,
        op: PendingOp,
        replacement: Option<Value>,
    ) -> Result<Registration, StoreError> {
        self.with_conn(async |conn| {
            let tx = conn.transaction().await.map_err(map_err)?;
            // FOR UPDATE makes a racing begin_change wait for this one and
            // then read the row as this one left it (Pending), so exactly
            // one of them starts the change.
            let stmt = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM dcr_registrations
                     WHERE client_id = $1 AND {LIVE} FOR UPDATE"
                ))
                .await
                .map_err(map_err)?;
            let row = tx.query_opt(&stmt, &[&client_id]).await.map_err(map_err)?;
            let before = registration(&row.ok_or(StoreError::NotFound)?)?;
            if before.state != RecordState::Active {
                return Err(StoreError::Conflict);
            }
            let changed = execute(
                &tx,
                "UPDATE dcr_registrations
                 SET state = 'pending', pending_op = $2, updated_at = $3, attempts = 0,
                     replacement = $4
                 WHERE id = $1 AND state = 'active'",
                &[&before.id, &op.as_str(), &now(), &replacement],
            )
            .await?;
            if changed == 0 {
                return Err(StoreError::Conflict);
            }
            tx.commit().await.map_err(map_err)?;
            Ok(before)
        })
        .await
    }

    /// A pooled connection, within the pool's wait and create timeouts.
    async fn conn(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(TimeoutType::Wait) => StoreError::Unavailable(
                "no PostgreSQL connection became free in time (pool exhausted)".to_owned(),
            ),
            PoolError::Timeout(_) => {
                StoreError::Unavailable("PostgreSQL did not accept a connection in time".to_owned())
            }
            PoolError::Backend(e) => map_err(e),
            PoolError::PostCreateHook(HookError::Backend(e)) => map_err(e),
            other => StoreError::Unavailable(format!("PostgreSQL pool: {other}")),
        })
    }

    /// Runs `f` on a pooled connection within [`Self::deadline`]. A call
    /// that ran out of time leaves its connection with a reply possibly still
    /// to come, so the connection is closed instead of going back to the pool.
    async fn with_conn<T>(
        &self,
        f: impl AsyncFnOnce(&mut Object) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        match tokio::time::timeout(self.deadline, f(&mut conn)).await {
            Ok(result) => result,
            Err(_) => {
                drop(Object::take(conn));
                Err(StoreError::Unavailable(format!(
                    "PostgreSQL did not answer within {:?}",
                    self.deadline
                )))
            }
        }
    }
}

/// `host:port` of every address the URL names, with the database and user: what an operator checks
/// first when the connection fails. The password is never part of it.
fn describe_target(pg: &tokio_postgres::Config) -> String {
    let ports = pg.get_ports();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            // tokio-postgres pairs ports with hosts, one port for all, or 5432.
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(dir) => {
                    format!("{}/.s.PGSQL.{port}", dir.display())
                }
            }
        })
        .collect();
    format!(
        "{} (database {:?}, user {:?})",
        hosts.join(", "),
        pg.get_dbname().unwrap_or(""),
        pg.get_user().unwrap_or("")
    )
}

fn config_error(msg: impl Into<String>) -> StoreError {
    // StoreError has no variant for settings. These come only from
    // `connect`, at start-up, where the caller reports them against the store
    // settings and stops, so no retry logic ever sees them.
    StoreError::Unavailable(msg.into())
}

fn tls_connector(
    ca_bundle: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let roots = crate::outbound::root_store(ca_bundle)
        .map_err(|e| config_error(format!("PostgreSQL TLS trust roots: {e}")))?;
    let config = crate::outbound::client_tls(roots)
        .map_err(|e| config_error(format!("PostgreSQL TLS: {e}")))?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
