//! Owns the embedded SQLite implementation of [`RegistrationStore`]: file setup, schema migrations and error mapping.
//!
//! One `rusqlite::Connection` sits behind a `std::sync::Mutex` and every call
//! runs on tokio's blocking pool. SQLite admits a single writer per database at
//! a time whatever the number of connections, and every operation here is a
//! write or a one-row read that takes microseconds next to the upstream HTTP
//! call around it, so a pool would add lock contention and `SQLITE_BUSY`
//! handling without adding throughput. A single connection is also what makes
//! `open_in_memory` work: each in-memory connection is its own database.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior, params,
};
use serde_json::Value;
use uuid::Uuid;

use super::{PendingOp, RecordState, Registration, RegistrationStore, StoreError};

/// How long a statement waits for a lock held by another connection (a second
/// process on the same file, a backup tool) before reporting Unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Versioned schema steps, applied in order inside one transaction. Never edit
/// a released step: add a new one.
const MIGRATIONS: &[(i64, &str)] = &[(1, SCHEMA_V1)];

// `unique_sw` is stored per row so that a holder allowed several registrations
// of one software product can insert rows the partial index ignores. The
// client_id index skips Gone rows because some upstreams derive the client_id
// from the software_id, and a product whose client vanished must be able to
// register again under the same client_id.
const SCHEMA_V1: &str = "
CREATE TABLE registrations (
    id                        TEXT    NOT NULL PRIMARY KEY,
    client_id                 TEXT,
    profile                   TEXT    NOT NULL,
    software_id               TEXT    NOT NULL,
    org_id                    TEXT,
    state                     TEXT    NOT NULL CHECK (state IN ('pending', 'active', 'gone')),
    pending_op                TEXT    CHECK (pending_op IN ('create', 'replace', 'delete')),
    unique_sw                 INTEGER NOT NULL CHECK (unique_sw IN (0, 1)),
    software_statement        TEXT    NOT NULL,
    metadata                  TEXT    NOT NULL,
    registration_access_token TEXT,
    registration_client_uri   TEXT,
    cert_subject_dn           TEXT    NOT NULL,
    cert_thumbprint_s256      TEXT    NOT NULL,
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL,
    attempts                  INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    CHECK ((state = 'pending') = (pending_op IS NOT NULL)),
    CHECK (state <> 'active' OR (client_id IS NOT NULL AND registration_access_token IS NOT NULL)),
    CHECK (state <> 'gone' OR registration_access_token IS NULL)
) STRICT;

CREATE UNIQUE INDEX registrations_live_software_id
    ON registrations (profile, software_id)
    WHERE state IN ('pending', 'active') AND unique_sw = 1;

CREATE UNIQUE INDEX registrations_live_client_id
    ON registrations (client_id)
    WHERE client_id IS NOT NULL AND state <> 'gone';

CREATE INDEX registrations_pending_since
    ON registrations (updated_at)
    WHERE state = 'pending';
";

const COLUMNS: &str = "id, client_id, profile, software_id, org_id, state, pending_op, \
     software_statement, metadata, registration_access_token, registration_client_uri, \
     cert_subject_dn, cert_thumbprint_s256, created_at, updated_at, attempts";

/// Rows that GET may see: Active ones, and ones with a management change in
/// flight (their stored data is still what the client last saw).
const VISIBLE: &str =
    "(state = 'active' OR (state = 'pending' AND pending_op IN ('replace', 'delete')))";

/// Rows that still stand for a client the upstream has (or may have).
const LIVE: &str = "state <> 'gone'";

/// The embedded default store.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and brings its
    /// schema up to date. Blocking: call it at startup.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        create_private_file(path)?;
        let conn = Connection::open(path).map_err(map_err)?;
        Self::init(conn, true)
    }

    /// A private database that disappears when the store is dropped: for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(map_err)?;
        Self::init(conn, false)
    }

    fn init(mut conn: Connection, on_disk: bool) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
        if on_disk {
            // WAL lets /ready and GETs read while a write commits, and with
            // synchronous=FULL every commit is fsynced before we answer, so a
            // crash right after a 201 cannot lose the record.
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(map_err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                // Some filesystems (network mounts) refuse WAL; the rollback
                // journal is just as durable, only less concurrent.
                tracing::warn!(journal_mode = %mode, "sqlite store could not enable WAL");
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(map_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(map_err)?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the blocking pool with the connection locked.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A poisoned lock only means an earlier closure panicked; any
            // transaction it held was rolled back when it unwound, so the
            // connection is still consistent and refusing service would turn
            // one bug into an outage.
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

/// The file holds registration access tokens, so it is created readable by
/// the owner only; SQLite gives its -wal and -shm files the same mode.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map(drop).map_err(|e| {
        StoreError::Unavailable(format!("cannot open store file {}: {e}", path.display()))
    })
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER NOT NULL PRIMARY KEY,
             applied_at INTEGER NOT NULL
         ) STRICT;",
    )
    .map_err(map_err)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > latest {
        // A newer build has migrated this file; writing with an older idea of
        // the schema could break its invariants.
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this build supports ({latest})"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(sql).map_err(map_err)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            params![version, now()],
        )
        .map_err(map_err)?;
    }
    tx.commit().map_err(map_err)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation => StoreError::Conflict,
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Unavailable(e.to_string()),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..)
        | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Like [`map_err`], but recognises the live software_id index. SQLite names
/// the columns, not the index, in its message, and no other unique rule covers
/// `software_id`.
fn map_insert_err(e: rusqlite::Error, software_id: &str) -> StoreError {
    let on_software_id = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                && msg.contains("registrations.software_id")
    );
    if on_software_id {
        return StoreError::DuplicateSoftwareId {
            software_id: software_id.to_owned(),
        };
    }
    map_err(e)
}

fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    // IMMEDIATE takes the write lock up front, so a read-then-update inside
    // the transaction can never fail half way on a lock upgrade.
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)
}

fn metadata_text(metadata: &Value) -> Result<String, StoreError> {
    serde_json::to_string(metadata)
        .map_err(|e| StoreError::Corrupt(format!("metadata not serialisable: {e}")))
}

fn read_row(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        id: row.get(0)?,
        client_id: row.get(1)?,
        profile: row.get(2)?,
        software_id: row.get(3)?,
        org_id: row.get(4)?,
        state: row.get(5)?,
        pending_op: row.get(6)?,
        software_statement: row.get(7)?,
        metadata: row.get(8)?,
        registration_access_token: row.get(9)?,
        registration_client_uri: row.get(10)?,
        cert_subject_dn: row.get(11)?,
        cert_thumbprint_s256: row.get(12)?,
        created_at: row.get(13)?,
        updated_at: row.get(14)?,
        attempts: row.get(15)?,
    })
}

/// A row as SQLite types it; turned into a [`Registration`] outside the
/// rusqlite callback so parse failures become `Corrupt` with a clear message.
struct RawRow {
    id: String,
    client_id: Option<String>,
    profile: String,
    software_id: String,
    org_id: Option<String>,
    state: String,
    pending_op: Option<String>,
    software_statement: String,
    metadata: String,
    registration_access_token: Option<String>,
    registration_client_uri: Option<String>,
    cert_subject_dn: String,
    cert_thumbprint_s256: String,
    created_at: i64,
    updated_at: i64,
    attempts: i64,
}

impl TryFrom<RawRow> for Registration {
    type Error = StoreError;

    fn try_from(r: RawRow) -> Result<Self, StoreError> {
        Ok(Registration {
            id: Uuid::parse_str(&r.id)
                .map_err(|e| StoreError::Corrupt(format!("bad record id {:?}: {e}", r.id)))?,
            client_id: r.client_id,
            profile: r.profile,
            software_id: r.software_id,
            org_id: r.org_id,
            state: r.state.parse()?,
            pending_op: r.pending_op.as_deref().map(str::parse).transpose()?,
            software_statement: r.software_statement,
            metadata: serde_json::from_str(&r.metadata)
                .map_err(|e| StoreError::Corrupt(format!("bad metadata JSON: {e}")))?,
            registration_access_token: r.registration_access_token,
            registration_client_uri: r.registration_client_uri,
            cert_subject_dn: r.cert_subject_dn,
            cert_thumbprint_s256: r.cert_thumbprint_s256,
            created_at: r.created_at,
            updated_at: r.updated_at,
            attempts: u32::try_from(r.attempts)
                .map_err(|_| StoreError::Corrupt(format!("bad attempts {}", r.attempts)))?,
        })
    }
}

/// The live record for `client_id`, whatever its state short of Gone.
fn live_by_client_id(
    conn: &Connection,
    client_id: &str,
) -> Result<Option<Registration>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM registrations WHERE client_id = ?1 AND {LIVE}"),
        [client_id],
        read_row,
    )
    .optional()
    .map_err(map_err)?
    .map(Registration::try_from)
    .transpose()
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

fn id_exists(tx: &Transaction<'_>, id: &str) -> Result<bool, StoreError> {
    tx.query_row(
        "SELECT 1 FROM registrations WHERE id = ?1",
        [id],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
    .map_err(map_err)
}

fn client_live(tx: &Transaction<'_>, client_id: &str) -> Result<bool, StoreError> {
    tx.query_row(
        &format!("SELECT 1 FROM registrations WHERE client_id = ?1 AND {LIVE}"),
        [client_id],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
    .map_err(map_err)
}

/// Runs a conditional single-row UPDATE/DELETE keyed by client_id and commits
/// it, or explains why no row matched.
fn change_by_client_id(
    conn: &mut Connection,
    sql: &str,
    client_id: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<(), StoreError> {
    let tx = write_tx(conn)?;
    let changed = tx.execute(sql, params).map_err(map_err)?;
    if changed == 0 {
        let exists = client_live(&tx, client_id)?;
        return Err(missing_or_conflict(exists));
    }
    tx.commit().map_err(map_err)
}

#[async_trait]
impl RegistrationStore for SqliteStore {
    async fn begin_create(
        &self,
        rec: &Registration,
        unique_software_id: bool,
    ) -> Result<(), StoreError> {
        let rec = rec.clone();
        let metadata = metadata_text(&rec.metadata)?;
        self.run(move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO registrations ({COLUMNS}, unique_sw)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 'create', ?6, ?7, ?8, ?9, ?10, ?11,
                             ?12, ?13, 0, ?14)"
                ),
                params![
                    rec.id.to_string(),
                    rec.client_id,
                    rec.profile,
                    rec.software_id,
                    rec.org_id,
                    rec.software_statement,
                    metadata,
                    rec.registration_access_token,
                    rec.registration_client_uri,
                    rec.cert_subject_dn,
                    rec.cert_thumbprint_s256,
                    rec.created_at,
                    rec.updated_at,
                    unique_software_id,
                ],
            )
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
        let (client_id, rat, client_uri) =
            (client_id.to_owned(), rat.to_owned(), client_uri.to_owned());
        let metadata = metadata_text(metadata)?;
        self.run(move |conn| {
            let id = id.to_string();
            let tx = write_tx(conn)?;
            let changed = tx
                .execute(
                    "UPDATE registrations
                     SET state = 'active', pending_op = NULL, client_id = ?2,
                         registration_access_token = ?3, registration_client_uri = ?4,
                         metadata = ?5, updated_at = ?6, attempts = 0
                     WHERE id = ?1 AND state = 'pending' AND pending_op = 'create'",
                    params![id, client_id, rat, client_uri, metadata, now()],
                )
                .map_err(map_err)?;
            if changed == 0 {
                return Err(missing_or_conflict(id_exists(&tx, &id)?));
            }
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn abandon(&self, id: Uuid) -> Result<(), StoreError> {
        self.run(move |conn| {
            let id = id.to_string();
            let tx = write_tx(conn)?;
            let changed = tx
                .execute(
                    "DELETE FROM registrations
                     WHERE id = ?1 AND state = 'pending' AND pending_op = 'create'",
                    [&id],
                )
                .map_err(map_err)?;
            if changed == 0 {
                return Err(missing_or_conflict(id_exists(&tx, &id)?));
            }
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn get_by_client_id(&self, client_id: &str) -> Result<Option<Registration>, StoreError> {
        let client_id = client_id.to_owned();
        self.run(move |conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM registrations WHERE client_id = ?1 AND {VISIBLE}"),
                [&client_id],
                read_row,
            )
            .optional()
            .map_err(map_err)?
            .map(Registration::try_from)
            .transpose()
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
        let client_id = client_id.to_owned();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let before = live_by_client_id(&tx, &client_id)?.ok_or(StoreError::NotFound)?;
            if before.state != RecordState::Active {
                return Err(StoreError::Conflict);
            }
            tx.execute(
                "UPDATE registrations
                 SET state = 'pending', pending_op = ?2, updated_at = ?3, attempts = 0
                 WHERE id = ?1 AND state = 'active'",
                params![before.id.to_string(), op.as_str(), now()],
            )
            .map_err(map_err)?;
            tx.commit().map_err(map_err)?;
            Ok(before)
        })
        .await
    }

    async fn complete_replace(
        &self,
        client_id: &str,
        rat: &str,
        metadata: &Value,
        software_statement: &str,
    ) -> Result<(), StoreError> {
        let (client_id, rat, ssa) = (
            client_id.to_owned(),
            rat.to_owned(),
            software_statement.to_owned(),
        );
        let metadata = metadata_text(metadata)?;
        self.run(move |conn| {
            change_by_client_id(
                conn,
                "UPDATE registrations
                 SET state = 'active', pending_op = NULL, registration_access_token = ?2,
                     metadata = ?3, software_statement = ?4, updated_at = ?5, attempts = 0
                 WHERE client_id = ?1 AND state = 'pending' AND pending_op = 'replace'",
                &client_id,
                params![client_id, rat, metadata, ssa, now()],
            )
        })
        .await
    }

    async fn cancel_change(&self, client_id: &str) -> Result<(), StoreError> {
        let client_id = client_id.to_owned();
        self.run(move |conn| {
            change_by_client_id(
                conn,
                "UPDATE registrations
                 SET state = 'active', pending_op = NULL, updated_at = ?2, attempts = 0
                 WHERE client_id = ?1 AND state = 'pending'
                   AND pending_op IN ('replace', 'delete')",
                &client_id,
                params![client_id, now()],
            )
        })
        .await
    }

    async fn remove(&self, client_id: &str) -> Result<(), StoreError> {
        let client_id = client_id.to_owned();
        self.run(move |conn| {
            change_by_client_id(
                conn,
                &format!("DELETE FROM registrations WHERE client_id = ?1 AND {VISIBLE}"),
                &client_id,
                params![client_id],
            )
        })
        .await
    }

    async fn mark_gone(&self, client_id: &str) -> Result<(), StoreError> {
        let client_id = client_id.to_owned();
        self.run(move |conn| {
            change_by_client_id(
                conn,
                &format!(
                    "UPDATE registrations
                     SET state = 'gone', pending_op = NULL, registration_access_token = NULL,
                         updated_at = ?2
                     WHERE client_id = ?1 AND {VISIBLE}"
                ),
                &client_id,
                params![client_id, now()],
            )
        })
        .await
    }

    async fn pending(
        &self,
        older_than: i64,
        limit: usize,
    ) -> Result<Vec<Registration>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM registrations
                     WHERE state = 'pending' AND updated_at < ?1
                     ORDER BY updated_at, id LIMIT ?2"
                ))
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![older_than, limit], read_row)
                .map_err(map_err)?;
            rows.map(|r| r.map_err(map_err).and_then(Registration::try_from))
                .collect()
        })
        .await
    }

    async fn bump_attempts(&self, id: Uuid) -> Result<(), StoreError> {
        self.run(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE registrations SET attempts = attempts + 1, updated_at = ?2
                     WHERE id = ?1",
                    params![id.to_string(), now()],
                )
                .map_err(map_err)?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Reads a real table rather than `SELECT 1`, so a vanished or locked
        // file shows up here and not on the next registration.
        self.run(|conn| {
            conn.query_row("SELECT COUNT(*) FROM schema_version", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(drop)
            .map_err(map_err)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    // Behaviour every backend shares is tested once for all of them in
    // tests/support/store_conformance.rs; what stays here is SQLite's own.
    use super::*;
    use std::path::PathBuf;

    /// A database file under the system temp dir, deleted (with its WAL
    /// companions) when dropped.
    struct TempDb(PathBuf);

    impl TempDb {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("dcr-proxy-store-{}", Uuid::new_v4()));
            Self(dir.join("nested").join("registrations.db"))
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent().and_then(Path::parent) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    #[tokio::test]
    async fn file_store_is_durable_wal() {
        let db = TempDb::new();
        let store = SqliteStore::open(&db.0).unwrap();
        let (mode, sync): (String, i64) = store
            .run(|c| {
                let mode = c
                    .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                    .map_err(map_err)?;
                let sync = c
                    .query_row("PRAGMA synchronous", [], |r| r.get(0))
                    .map_err(map_err)?;
                Ok((mode, sync))
            })
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous must be FULL");
    }

    #[cfg(unix)]
    #[test]
    fn file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let db = TempDb::new();
        let _store = SqliteStore::open(&db.0).unwrap();
        let mode = std::fs::metadata(&db.0).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let db = TempDb::new();
        drop(SqliteStore::open(&db.0).unwrap());
        let conn = Connection::open(&db.0).unwrap();
        conn.execute("INSERT INTO schema_version VALUES (99, 0)", [])
            .unwrap();
        drop(conn);
        assert!(matches!(
            SqliteStore::open(&db.0),
            Err(StoreError::Corrupt(_))
        ));
    }
}
