//! Owns the PostgreSQL implementation of [`RegistrationStore`] and [`ReplayGuard`]: connection pool, timeouts, schema migrations and error mapping, for deployments that run several replicas against one database.
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

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deadpool_postgres::{
    ClientWrapper, GenericClient, Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError,
    RecyclingMethod, Runtime, TimeoutType,
};
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

use super::{
    PendingOp, PendingReplacement, RecordState, Registration, RegistrationStore, StoreError,
};
use crate::jwt::now;
use crate::secret::Secret;
use crate::store::replay::ReplayGuard;

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

/// Versioned schema steps, applied in order inside one transaction. Never edit
/// a released step: add a new one.
const MIGRATIONS: &[(i32, &str)] = &[(1, SCHEMA_V1), (2, SCHEMA_V2)];

/// Serialises migrations across replicas. Any fixed value works as long as
/// nothing else in the database uses it; this one is "dcrproxy" in ASCII.
const MIGRATION_LOCK_KEY: i64 = 0x6463_7270_726f_7879;

/// Named so that a unique violation on it can be told apart from the
/// client_id one.
const LIVE_SOFTWARE_ID_INDEX: &str = "dcr_registrations_live_software_id";

// The table mirrors the SQLite one column for column; see the reasons for
// `unique_sw` and the partial indexes there. Timestamps stay unix seconds so
// that both backends compare them with the same arithmetic. Replay keys are
// stored hashed: a jti is attacker-chosen text whose length and bytes (NUL is
// valid JSON, invalid in a PostgreSQL text) must not decide whether the row
// fits a btree entry.
const SCHEMA_V1: &str = "
CREATE TABLE dcr_registrations (
    id                        uuid    NOT NULL PRIMARY KEY,
    client_id                 text,
    profile                   text    NOT NULL,
    software_id               text    NOT NULL,
    org_id                    text,
    state                     text    NOT NULL CHECK (state IN ('pending', 'active', 'gone')),
    pending_op                text    CHECK (pending_op IN ('create', 'replace', 'delete')),
    unique_sw                 boolean NOT NULL,
    software_statement        text    NOT NULL,
    metadata                  jsonb   NOT NULL,
    registration_access_token text,
    registration_client_uri   text,
    cert_subject_dn           text    NOT NULL,
    cert_thumbprint_s256      text    NOT NULL,
    created_at                bigint  NOT NULL,
    updated_at                bigint  NOT NULL,
    attempts                  integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    CHECK ((state = 'pending') = (pending_op IS NOT NULL)),
    CHECK (state <> 'active' OR (client_id IS NOT NULL AND registration_access_token IS NOT NULL)),
    CHECK (state <> 'gone' OR registration_access_token IS NULL)
);

CREATE UNIQUE INDEX dcr_registrations_live_software_id
    ON dcr_registrations (profile, software_id)
    WHERE state IN ('pending', 'active') AND unique_sw;

CREATE UNIQUE INDEX dcr_registrations_live_client_id
    ON dcr_registrations (client_id)
    WHERE client_id IS NOT NULL AND state <> 'gone';

CREATE INDEX dcr_registrations_pending_since
    ON dcr_registrations (updated_at)
    WHERE state = 'pending';

CREATE TABLE dcr_replay (
    key        text   NOT NULL PRIMARY KEY,
    expires_at bigint NOT NULL
);

CREATE INDEX dcr_replay_expires_at ON dcr_replay (expires_at);
";

// As the SQLite store's second step: what an in-flight create or replacement needs to be found or finished
// after a crash.
const SCHEMA_V2: &str = "
ALTER TABLE dcr_registrations ADD COLUMN create_fingerprint jsonb;
ALTER TABLE dcr_registrations ADD COLUMN replacement jsonb;
";

const COLUMNS: &str = "id, client_id, profile, software_id, org_id, state, pending_op, \
     software_statement, metadata, registration_access_token, registration_client_uri, \
     cert_subject_dn, cert_thumbprint_s256, created_at, updated_at, attempts, \
     create_fingerprint, replacement";

/// Rows that GET may see: Active ones, and ones with a management change in
/// flight. PostgreSQL proves this implies the client_id index's predicate,
/// so lookups by client_id use that index.
const VISIBLE: &str =
    "(state = 'active' OR (state = 'pending' AND pending_op IN ('replace', 'delete')))";

/// Rows that still stand for a client the upstream has (or may have).
const LIVE: &str = "state <> 'gone'";

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

impl PostgresStore {
    /// Opens the pool, proves the database answers and brings the schema up
    /// to date. Safe to call from several replicas at once.
    ///
    /// `cfg` is taken as already checked (a URL without a password, a pool of 1 to 256, timeouts of at
    /// least 1 ms: the configuration refuses anything else); what fails here is what only trying can tell.
    pub async fn connect(cfg: &PostgresConfig) -> Result<Self, StoreError> {
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
        store.migrate().await.map_err(|e| match e {
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

    async fn migrate(&self) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            let tx = conn.transaction().await.map_err(map_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
                .await
                .map_err(map_err)?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS dcr_schema_migrations (
                     version    integer     NOT NULL PRIMARY KEY,
                     applied_at timestamptz NOT NULL
                 )",
            )
            .await
            .map_err(map_err)?;
            let row = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM dcr_schema_migrations",
                    &[],
                )
                .await
                .map_err(map_err)?;
            let current: i32 = col(&row, 0)?;
            let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
            if current > latest {
                // A newer build has migrated this database; writing with an
                // older idea of the schema could break its invariants.
                return Err(StoreError::Corrupt(format!(
                    "database schema version {current} is newer than this build supports ({latest})"
                )));
            }
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
                tx.batch_execute(sql).await.map_err(map_err)?;
                tx.execute(
                    "INSERT INTO dcr_schema_migrations (version, applied_at) VALUES ($1, now())",
                    &[version],
                )
                .await
                .map_err(map_err)?;
            }
            tx.commit().await.map_err(map_err)
        })
        .await
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
    let config = rustls::ClientConfig::builder_with_provider(crate::outbound::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("PostgreSQL TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// What a failure means to the caller. Only the SQLSTATE and the primary
/// message are kept: PostgreSQL's DETAIL line for a constraint failure quotes
/// the whole row, registration access token included, and these messages end
/// up in logs.
fn map_err(e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        // No SQLSTATE: the connection broke, timed out or could not be made. tokio-postgres keeps the
        // reason (refused, no route, TLS, DNS) in the source chain, not in its own text.
        let mut why = format!("PostgreSQL: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why.push_str(&format!(": {s}"));
            source = s.source();
        }
        return StoreError::Unavailable(why);
    };
    let code = db.code();
    let described = format!("PostgreSQL {}: {}", code.code(), db.message());
    if code.code().starts_with("23") {
        // A uniqueness or other constraint refused the write: someone else's
        // write got there first, as the SQLite backend reports it too.
        StoreError::Conflict
    } else if code.code().starts_with("22")
        || *code == SqlState::DATA_CORRUPTED
        || *code == SqlState::INDEX_CORRUPTED
    {
        // Data exceptions: the value itself cannot be stored or read back,
        // so a retry would fail the same way.
        StoreError::Corrupt(described)
    } else {
        // Shutdowns (57P01), connection failures (08xxx), statement timeouts
        // (57014), resource limits (53xxx), deadlocks and serialisation
        // failures (40xxx): all may pass.
        StoreError::Unavailable(described)
    }
}

/// Like [`map_err`], but recognises the live software_id index by name.
fn map_insert_err(e: tokio_postgres::Error, software_id: &str) -> StoreError {
    let on_software_id = e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(LIVE_SOFTWARE_ID_INDEX)
    });
    if on_software_id {
        return StoreError::DuplicateSoftwareId {
            software_id: software_id.to_owned(),
        };
    }
    map_err(e)
}

/// Reads one column; a value of an unexpected type or out of range is a row
/// this build cannot understand.
fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx).map_err(|e| {
        let name = row.columns().get(idx).map_or("?", |c| c.name());
        StoreError::Corrupt(format!("column {name}: {e}"))
    })
}

fn registration(row: &Row) -> Result<Registration, StoreError> {
    let state: String = col(row, 5)?;
    let pending_op: Option<String> = col(row, 6)?;
    let attempts: i32 = col(row, 15)?;
    let create_fingerprint: Option<Value> = col(row, 16)?;
    let replacement: Option<Value> = col(row, 17)?;
    Ok(Registration {
        id: col(row, 0)?,
        client_id: col(row, 1)?,
        profile: col(row, 2)?,
        software_id: col(row, 3)?,
        org_id: col(row, 4)?,
        state: state.parse()?,
        pending_op: pending_op.as_deref().map(str::parse).transpose()?,
        software_statement: col(row, 7)?,
        metadata: col(row, 8)?,
        registration_access_token: col(row, 9)?,
        registration_client_uri: col(row, 10)?,
        cert_subject_dn: col(row, 11)?,
        cert_thumbprint_s256: col(row, 12)?,
        created_at: col(row, 13)?,
        updated_at: col(row, 14)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("bad attempts {attempts}")))?,
        create_fingerprint: from_json("create_fingerprint", create_fingerprint)?,
        replacement: from_json("replacement", replacement)?,
    })
}

fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    v: Option<Value>,
) -> Result<Option<T>, StoreError> {
    v.map(|v| {
        serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("bad {what}: {e}")))
    })
    .transpose()
}

fn to_json<T: serde::Serialize>(what: &str, v: &T) -> Result<Value, StoreError> {
    serde_json::to_value(v)
        .map_err(|e| StoreError::Corrupt(format!("{what} not serialisable: {e}")))
}

async fn execute(
    conn: &(impl GenericClient + ?Sized),
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let stmt = conn.prepare_cached(sql).await.map_err(map_err)?;
    conn.execute(&stmt, params).await.map_err(map_err)
}

async fn exists(
    conn: &(impl GenericClient + ?Sized),
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<bool, StoreError> {
    let stmt = conn.prepare_cached(sql).await.map_err(map_err)?;
    let row = conn.query_opt(&stmt, params).await.map_err(map_err)?;
    Ok(row.is_some())
}

/// After an UPDATE/DELETE that matched no row: tells "no such record" apart
/// from "it exists but is in another state".
fn missing_or_conflict(exists: bool) -> StoreError {
    if exists {
        StoreError::Conflict
    } else {
        StoreError::NotFound
    }
}

/// Runs a conditional single-row UPDATE/DELETE keyed by id, or explains why
/// no row matched. The statement commits on its own, so the change is atomic
/// however the explanation afterwards turns out.
async fn change_by_id(
    conn: &(impl GenericClient + ?Sized),
    sql: &str,
    id: &Uuid,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(), StoreError> {
    if execute(conn, sql, params).await? == 0 {
        let present = exists(conn, "SELECT 1 FROM dcr_registrations WHERE id = $1", &[id]).await?;
        return Err(missing_or_conflict(present));
    }
    Ok(())
}

/// Same as [`change_by_id`] for statements keyed by client_id.
async fn change_by_client_id(
    conn: &(impl GenericClient + ?Sized),
    sql: &str,
    client_id: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(), StoreError> {
    if execute(conn, sql, params).await? == 0 {
        let present = exists(
            conn,
            &format!("SELECT 1 FROM dcr_registrations WHERE client_id = $1 AND {LIVE}"),
            &[&client_id],
        )
        .await?;
        return Err(missing_or_conflict(present));
    }
    Ok(())
}

#[async_trait]
impl RegistrationStore for PostgresStore {
    async fn begin_create(
        &self,
        rec: &Registration,
        unique_software_id: bool,
    ) -> Result<(), StoreError> {
        let fingerprint = rec
            .create_fingerprint
            .as_ref()
            .map(|f| to_json("create_fingerprint", f))
            .transpose()?;
        self.with_conn(async |conn| {
            let stmt = conn
                .prepare_cached(&format!(
                    "INSERT INTO dcr_registrations ({COLUMNS}, unique_sw)
                     VALUES ($1, $2, $3, $4, $5, 'pending', 'create', $6, $7, $8, $9, $10, $11,
                             $12, $13, 0, $15, NULL, $14)"
                ))
                .await
                .map_err(map_err)?;
            conn.execute(
                &stmt,
                &[
                    &rec.id,
                    &rec.client_id,
                    &rec.profile,
                    &rec.software_id,
                    &rec.org_id,
                    &rec.software_statement,
                    &rec.metadata,
                    &rec.registration_access_token,
                    &rec.registration_client_uri,
                    &rec.cert_subject_dn,
                    &rec.cert_thumbprint_s256,
                    &rec.created_at,
                    &rec.updated_at,
                    &unique_software_id,
                    &fingerprint,
                ],
            )
            .await
            .map_err(|e| map_insert_err(e, &rec.software_id))?;
            Ok(())
        })
        .await
    }

    async fn complete_create(
        &self,
        id: Uuid,
        client_id: &str,
        rat: &str,
        client_uri: &str,
        metadata: &Value,
    ) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            change_by_id(
                conn,
                "UPDATE dcr_registrations
                 SET state = 'active', pending_op = NULL, client_id = $2,
                     registration_access_token = $3, registration_client_uri = $4,
                     metadata = $5, updated_at = $6, attempts = 0, create_fingerprint = NULL
                 WHERE id = $1 AND state = 'pending' AND pending_op = 'create'",
                &id,
                &[&id, &client_id, &rat, &client_uri, metadata, &now()],
            )
            .await
        })
        .await
    }

    async fn abandon(&self, id: Uuid) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            change_by_id(
                conn,
                "DELETE FROM dcr_registrations
                 WHERE id = $1 AND state = 'pending' AND pending_op = 'create'",
                &id,
                &[&id],
            )
            .await
        })
        .await
    }

    async fn get_by_client_id(&self, client_id: &str) -> Result<Option<Registration>, StoreError> {
        self.with_conn(async |conn| {
            let stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM dcr_registrations WHERE client_id = $1 AND {VISIBLE}"
                ))
                .await
                .map_err(map_err)?;
            let row = conn
                .query_opt(&stmt, &[&client_id])
                .await
                .map_err(map_err)?;
            row.as_ref().map(registration).transpose()
        })
        .await
    }

    async fn begin_change(
        &self,
        client_id: &str,
        op: PendingOp,
    ) -> Result<Registration, StoreError> {
        if op == PendingOp::Create {
            return Err(StoreError::Conflict);
        }
        self.start_change(client_id, op, None).await
    }

    async fn begin_replace(
        &self,
        client_id: &str,
        replacement: &PendingReplacement,
    ) -> Result<Registration, StoreError> {
        let replacement = to_json("replacement", replacement)?;
        self.start_change(client_id, PendingOp::Replace, Some(replacement))
            .await
    }

    async fn complete_replace(
        &self,
        client_id: &str,
        rat: &str,
        metadata: &Value,
        software_statement: &str,
    ) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            // One statement: the new RAT, the metadata it goes with and the
            // state change land together or not at all.
            change_by_client_id(
                conn,
                "UPDATE dcr_registrations
                 SET state = 'active', pending_op = NULL, registration_access_token = $2,
                     metadata = $3, software_statement = $4, updated_at = $5, attempts = 0,
                     replacement = NULL
                 WHERE client_id = $1 AND state = 'pending' AND pending_op = 'replace'",
                client_id,
                &[&client_id, &rat, metadata, &software_statement, &now()],
            )
            .await
        })
        .await
    }

    async fn cancel_change(&self, client_id: &str) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            change_by_client_id(
                conn,
                "UPDATE dcr_registrations
                 SET state = 'active', pending_op = NULL, updated_at = $2, attempts = 0,
                     replacement = NULL
                 WHERE client_id = $1 AND state = 'pending'
                   AND pending_op IN ('replace', 'delete')",
                client_id,
                &[&client_id, &now()],
            )
            .await
        })
        .await
    }

    async fn remove(&self, client_id: &str) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            change_by_client_id(
                conn,
                &format!("DELETE FROM dcr_registrations WHERE client_id = $1 AND {VISIBLE}"),
                client_id,
                &[&client_id],
            )
            .await
        })
        .await
    }

    async fn mark_gone(&self, client_id: &str) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            change_by_client_id(
                conn,
                &format!(
                    "UPDATE dcr_registrations
                     SET state = 'gone', pending_op = NULL, registration_access_token = NULL,
                         updated_at = $2, replacement = NULL
                     WHERE client_id = $1 AND {VISIBLE}"
                ),
                client_id,
                &[&client_id, &now()],
            )
            .await
        })
        .await
    }

    async fn pending(
        &self,
        older_than: i64,
        limit: usize,
    ) -> Result<Vec<Registration>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(async |conn| {
            let stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM dcr_registrations
                     WHERE state = 'pending' AND updated_at < $1
                     ORDER BY updated_at, id LIMIT $2"
                ))
                .await
                .map_err(map_err)?;
            let rows = conn
                .query(&stmt, &[&older_than, &limit])
                .await
                .map_err(map_err)?;
            rows.iter().map(registration).collect()
        })
        .await
    }

    async fn pending_creates(&self, limit: usize) -> Result<Vec<Registration>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(async |conn| {
            let stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM dcr_registrations
                     WHERE state = 'pending' AND pending_op = 'create'
                     ORDER BY created_at, id LIMIT $1"
                ))
                .await
                .map_err(map_err)?;
            let rows = conn.query(&stmt, &[&limit]).await.map_err(map_err)?;
            rows.iter().map(registration).collect()
        })
        .await
    }

    async fn knows_client_id(&self, client_id: &str) -> Result<bool, StoreError> {
        self.with_conn(async |conn| {
            exists(
                conn,
                "SELECT 1 FROM dcr_registrations WHERE client_id = $1 LIMIT 1",
                &[&client_id],
            )
            .await
        })
        .await
    }

    async fn bump_attempts(&self, id: Uuid) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            let changed = execute(
                conn,
                "UPDATE dcr_registrations SET attempts = attempts + 1, updated_at = $2
                 WHERE id = $1",
                &[&id, &now()],
            )
            .await?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Reads a real table rather than `SELECT 1`, so a dropped schema or
        // revoked grant shows up here and not on the next registration.
        self.with_conn(async |conn| {
            exists(conn, "SELECT 1 FROM dcr_schema_migrations LIMIT 1", &[])
                .await
                .map(drop)
        })
        .await
    }
}

#[async_trait]
impl ReplayGuard for PostgresStore {
    async fn check_and_record(&self, key: &str, expires_at: i64) -> Result<bool, StoreError> {
        let hashed = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, key.as_bytes()));
        let until = expires_at.saturating_add(self.replay_skew);
        let fresh = self
            .with_conn(async |conn| {
                // Racing inserts of one key queue on the unique index; each later
                // one then sees the committed row and updates it only if it has
                // expired, re-checking that condition on the newest row version
                // after waiting for its lock. So of any number of racers exactly
                // one gets a row back. An entry lives at least until the second
                // after it was written, so that racers on a token already past
                // its `exp` still see each other.
                let stmt = conn
                    .prepare_cached(&format!(
                        "INSERT INTO dcr_replay AS r (key, expires_at)
                     VALUES ($1, GREATEST($2::bigint, {DB_NOW} + 1))
                     ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
                     WHERE r.expires_at < {DB_NOW}
                     RETURNING 1"
                    ))
                    .await
                    .map_err(map_err)?;
                let row = conn
                    .query_opt(&stmt, &[&hashed, &until])
                    .await
                    .map_err(map_err)?;
                Ok(row.is_some())
            })
            .await?;
        if self.replay_checks.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            let store = self.clone();
            tokio::spawn(async move {
                if let Err(e) = store.purge_expired().await {
                    tracing::warn!(error = %e, "purging expired replay keys failed");
                }
            });
        }
        Ok(fresh)
    }
}
