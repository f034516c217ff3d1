//! Owns the embedded SQLite implementation of [`RegistrationStore`]: file setup, schema migrations and error mapping.
//!
//! One `rusqlite::Connection` is owned by one thread that takes operations from
//! a queue. SQLite admits a single writer per database at a time whatever the
//! number of connections, so a pool would add lock contention and
//! `SQLITE_BUSY` handling without adding throughput. A single connection is
//! also what makes `open_in_memory` work: each in-memory connection is its own
//! database.
//!
//! # Group commit
//!
//! With `synchronous=FULL` every COMMIT waits for an fsync, which costs far
//! more than the statements before it. The thread therefore takes every
//! operation that is queued when it wakes (up to [`MAX_BATCH`]), runs reads
//! first outside any transaction, then all writes in one transaction, each
//! inside its own SAVEPOINT: an operation that fails is rolled back to its
//! savepoint and does not disturb the others. One COMMIT (one fsync) then
//! makes the whole batch durable, and only after it returns is any write
//! answered, so "answered Ok" still means "on disk". If the COMMIT fails,
//! every write in the batch is answered Unavailable. Under no concurrency a
//! batch is one operation and nothing changes; with sixteen registrations in
//! flight, fsyncs per registration drop several-fold.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};
use serde_json::Value;
use uuid::Uuid;

use super::{
    CreateFingerprint, PendingOp, PendingReplacement, RecordState, Registration, RegistrationStore,
    StoreError,
};
use crate::jwt::now;

/// How long a statement waits for a lock held by another connection (a second
/// process on the same file, a backup tool) before reporting Unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most operations committed together; bounds how long the first of them waits for the others.
const MAX_BATCH: usize = 64;

/// Distinct statements we run, with room to spare, so none is prepared twice.
const STATEMENT_CACHE: usize = 64;

/// Versioned schema steps, applied in order inside one transaction. Never edit
/// a released step: add a new one.
const MIGRATIONS: &[(i64, &str)] = &[(1, SCHEMA_V1), (2, SCHEMA_V2)];

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

// What an in-flight create or replacement needs to be found or finished after a crash (JSON text): for
// upstreams that choose the client_id themselves, and for a replacement whose rotated RAT was lost.
const SCHEMA_V2: &str = "
ALTER TABLE registrations ADD COLUMN create_fingerprint TEXT;
ALTER TABLE registrations ADD COLUMN replacement TEXT;
";

const COLUMNS: &str = "id, client_id, profile, software_id, org_id, state, pending_op, \
     software_statement, metadata, registration_access_token, registration_client_uri, \
     cert_subject_dn, cert_thumbprint_s256, created_at, updated_at, attempts, \
     create_fingerprint, replacement";

/// Rows that GET may see: Active ones, and ones with a management change in
/// flight (their stored data is still what the client last saw).
const VISIBLE: &str =
    "(state = 'active' OR (state = 'pending' AND pending_op IN ('replace', 'delete')))";

/// Rows that still stand for a client the upstream has (or may have).
const LIVE: &str = "state <> 'gone'";

/// The embedded default store.
#[derive(Clone)]
pub struct SqliteStore {
    queue: mpsc::Sender<Job>,
}

/// One queued operation. `work` runs it against the connection and says whether it succeeded (a failed write
/// is rolled back to its savepoint); the returned `Answer` is called once the batch's fate is known.
struct Job {
    write: bool,
    work: Work,
}

/// Runs the operation (given None, it is not run and its answer will carry the batch's error) and returns
/// whether it succeeded, with its answer.
type Work = Box<dyn FnOnce(Option<&Connection>) -> (bool, Answer) + Send>;

/// Delivers a job's result; given the COMMIT's error when the batch did not reach the disk.
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

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
            // No memory-mapped file anywhere: WAL keeps its index in a shared-memory file (`-shm`) that
            // SQLite maps into the process, and a store folder or `-shm` file that is truncated, replaced
            // or made unwritable under a running proxy then kills it with SIGBUS on the next access
            // instead of failing one request. The rollback journal needs no shared memory, and with
            // `mmap_size = 0` every page goes through read()/write(), so such faults come back as SQLite
            // errors (503) instead. WAL+EXCLUSIVE would also avoid the mapping (sqlite.org/wal.html,
            // R-31969-57825) but locks every other reader out of the file, backups included. What WAL
            // gave in speed (one fsync per commit, not three) the group commit below mostly wins back.
            // TRUNCATE rather than DELETE: the same durability with one directory update less per commit.
            // A file a previous version left in WAL mode is converted here, while no one else has it open.
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "TRUNCATE", |row| row.get(0))
                .map_err(map_err)?;
            if !mode.eq_ignore_ascii_case("truncate") {
                return Err(StoreError::Unavailable(format!(
                    "cannot leave journal_mode {mode} for the rollback journal; is another process using the store file?"
                )));
            }
            conn.pragma_update(None, "mmap_size", 0).map_err(map_err)?;
        }
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&mut conn)?;
        let (queue, jobs) = mpsc::channel();
        std::thread::Builder::new()
            .name("dcr-sqlite".into())
            .spawn(move || serve(conn, jobs))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store thread: {e}")))?;
        Ok(Self { queue })
    }

    /// A read: runs outside any transaction, sees only committed data.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(false, f).await
    }

    /// A write: runs inside its own savepoint of the batch's transaction and is answered after the COMMIT.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(true, f).await
    }

    async fn submit<T, F>(&self, write: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            write,
            work: Box::new(move |conn| {
                let out = match conn {
                    // A panic in one operation must not take the store thread (and every later request)
                    // with it; its savepoint is rolled back like any failure.
                    Some(conn) => catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
                        Err(StoreError::Unavailable("store operation panicked".into()))
                    }),
                    None => Err(StoreError::Unavailable("not run".into())),
                };
                let ok = out.is_ok();
                let answer: Answer = Box::new(move |commit_failed: Option<&str>| {
                    let out = match commit_failed {
                        Some(e) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
                        None => out,
                    };
                    let _ = reply.send(out);
                });
                (ok, answer)
            }),
        };
        self.queue
            .send(job)
            .map_err(|_| StoreError::Unavailable("the store thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store thread dropped the operation".into()))?
    }

    /// Active -> Pending(op) for `client_id`, storing `replacement` (JSON) with it; returns the record as it was.
    async fn start_change(
        &self,
        client_id: &str,
        op: PendingOp,
        replacement: Option<String>,
    ) -> Result<Registration, StoreError> {
        let client_id = client_id.to_owned();
        self.write(move |conn| {
            let before = live_by_client_id(conn, &client_id)?.ok_or(StoreError::NotFound)?;
            if before.state != RecordState::Active {
                return Err(StoreError::Conflict);
            }
            exec(
                conn,
                "UPDATE registrations
                 SET state = 'pending', pending_op = ?2, updated_at = ?3, attempts = 0,
                     replacement = ?4
                 WHERE id = ?1 AND state = 'active'",
                params![before.id.to_string(), op.as_str(), now(), replacement],
            )?;
            Ok(before)
        })
        .await
    }
}

/// The store thread: takes what is queued, answers reads, commits writes together. Ends when every
/// `SqliteStore` clone is gone.
fn serve(conn: Connection, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (writes, reads): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.write);
        for job in reads {
            let (_, answer) = (job.work)(Some(&conn));
            answer(None);
        }
        if !writes.is_empty() {
            commit_together(&conn, writes);
        }
    }
}

fn commit_together(conn: &Connection, writes: Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = e.to_string();
        for job in writes {
            let (_, answer) = (job.work)(None);
            answer(Some(&e));
        }
        return;
    }
    let mut answers = Vec::with_capacity(writes.len());
    // Set when the transaction itself is in doubt: then nothing of the batch may be committed.
    let mut broken: Option<String> = None;
    for job in writes {
        if broken.is_some() {
            answers.push((job.work)(None).1);
            continue;
        }
        if let Err(e) = conn.execute_batch("SAVEPOINT op") {
            broken = Some(e.to_string());
            answers.push((job.work)(None).1);
            continue;
        }
        let (ok, answer) = (job.work)(Some(conn));
        let close = if ok {
            conn.execute_batch("RELEASE op")
        } else {
            conn.execute_batch("ROLLBACK TO op; RELEASE op")
        };
        if let Err(e) = close {
            broken = Some(e.to_string());
        }
        answers.push(answer);
    }
    let outcome = match broken {
        Some(e) => Err(e),
        None => conn.execute_batch("COMMIT").map_err(|e| e.to_string()),
    };
    match outcome {
        Ok(()) => answers.into_iter().for_each(|answer| answer(None)),
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            answers.into_iter().for_each(|answer| answer(Some(&e)));
        }
    }
}

/// The file holds registration access tokens, so it is created readable by
/// the owner only; SQLite gives its journal file the same mode.
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

/// What `--check-config` can learn about the store file without changing anything on disk: if it
/// exists, that it is a database this build can use (an empty one, or our schema at a version not newer
/// than this build's) in a directory where SQLite may create its journal; if not, that it could be
/// created. Nothing is created, migrated or locked; start-up does all of that in [`SqliteStore::open`].
pub fn check_read_only(path: &Path) -> Result<(), StoreError> {
    let unusable = |why: String| StoreError::Unavailable(format!("{}: {why}", path.display()));
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => std::path::PathBuf::from("."),
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(unusable("is a directory, not a database file".into())),
        Ok(_) => {
            may_write(path).map_err(|e| unusable(format!("cannot be written: {e}")))?;
            // WAL and journal files are created beside the database.
            may_create_in(&dir).map_err(|e| {
                unusable(format!(
                    "its directory {} does not let us create files: {e}",
                    dir.display()
                ))
            })?;
            let version = schema_version_read_only(path)?;
            let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
            match version {
                Some(v) if v > latest => Err(StoreError::Corrupt(format!(
                    "{}: database schema version {v} is newer than this build supports ({latest})",
                    path.display()
                ))),
                _ => Ok(()),
            }
        }
        // Not a directory: a file stands where a folder of the path should be; said below.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            // The file and any missing folders would be created at start: the nearest folder that
            // exists must let us.
            let mut existing = dir.as_path();
            while !existing.exists() {
                existing = match existing.parent().filter(|p| !p.as_os_str().is_empty()) {
                    Some(p) => p,
                    None => Path::new("."),
                };
            }
            if !existing.is_dir() {
                return Err(unusable(format!(
                    "cannot be created: {} is not a directory",
                    existing.display()
                )));
            }
            may_create_in(existing).map_err(|e| {
                unusable(format!(
                    "cannot be created: {} does not let us create files: {e}",
                    existing.display()
                ))
            })
        }
        Err(e) => Err(unusable(format!("cannot be inspected: {e}"))),
    }
}

/// The schema version of an existing file, read without writing: None for an empty database (start-up
/// will create the schema). A file with tables but without our version table is someone else's.
fn schema_version_read_only(path: &Path) -> Result<Option<i64>, StoreError> {
    use rusqlite::OpenFlags;
    let sidecar = |ext: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        std::path::PathBuf::from(p).exists()
    };
    // With both WAL files present a proxy may be writing: a read-only connection reads through them.
    // Otherwise `immutable=1` reads the file alone and never creates -shm or -wal files next to it.
    let conn = if sidecar("-wal") && sidecar("-shm") {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    } else {
        Connection::open_with_flags(
            format!("file:{}?immutable=1", uri_path(path)),
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    }
    .map_err(map_err)?;
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| {
            StoreError::Corrupt(format!("{} is not a SQLite database: {e}", path.display()))
        })?;
    if tables == 0 {
        return Ok(None);
    }
    let ours: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    if ours == 0 {
        return Err(StoreError::Corrupt(format!(
            "{} holds tables but is not a dcr-proxy store",
            path.display()
        )));
    }
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )
    .map(Some)
    .map_err(map_err)
}

/// A path as the path part of an SQLite `file:` URI: everything but unreserved characters and `/`
/// percent-encoded, so `?`, `#` and `%` in a name keep their meaning.
fn uri_path(path: &Path) -> String {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'.' | b'_' | b'~' => {
                char::from(*b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// access(2): asks the kernel whether we may, without trying (trying would change the disk).
#[cfg(unix)]
fn may_write(path: &Path) -> std::io::Result<()> {
    use rustix::fs::Access;
    rustix::fs::access(path, Access::READ_OK | Access::WRITE_OK).map_err(std::io::Error::from)
}

#[cfg(unix)]
fn may_create_in(dir: &Path) -> std::io::Result<()> {
    use rustix::fs::Access;
    rustix::fs::access(dir, Access::WRITE_OK | Access::EXEC_OK).map_err(std::io::Error::from)
}

#[cfg(not(unix))]
fn may_write(path: &Path) -> std::io::Result<()> {
    if std::fs::metadata(path)?.permissions().readonly() {
        return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
    }
    Ok(())
}

#[cfg(not(unix))]
fn may_create_in(dir: &Path) -> std::io::Result<()> {
    may_write(dir)
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

/// Runs one statement through the connection's statement cache.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<usize, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute(params))
        .map_err(map_err)
}

fn metadata_text(metadata: &Value) -> Result<String, StoreError> {
    serde_json::to_string(metadata)
        .map_err(|e| StoreError::Corrupt(format!("metadata not serialisable: {e}")))
}

fn json_text<T: serde::Serialize>(what: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v)
        .map_err(|e| StoreError::Corrupt(format!("{what} not serialisable: {e}")))
}

fn from_json_text<T: serde::de::DeserializeOwned>(
    what: &str,
    text: Option<String>,
) -> Result<Option<T>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("bad {what} JSON: {e}")))
    })
    .transpose()
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
        create_fingerprint: row.get(16)?,
        replacement: row.get(17)?,
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
    create_fingerprint: Option<String>,
    replacement: Option<String>,
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
            create_fingerprint: from_json_text::<CreateFingerprint>(
                "create_fingerprint",
                r.create_fingerprint,
            )?,
            replacement: from_json_text::<PendingReplacement>("replacement", r.replacement)?,
        })
    }
}

/// The live record for `client_id`, whatever its state short of Gone.
fn live_by_client_id(
    conn: &Connection,
    client_id: &str,
) -> Result<Option<Registration>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM registrations WHERE client_id = ?1 AND {LIVE}"
    ))
    .and_then(|mut stmt| stmt.query_row([client_id], read_row))
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

fn id_exists(tx: &Connection, id: &str) -> Result<bool, StoreError> {
    tx.prepare_cached("SELECT 1 FROM registrations WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([id], |_| Ok(())))
        .optional()
        .map(|o| o.is_some())
        .map_err(map_err)
}

fn client_live(tx: &Connection, client_id: &str) -> Result<bool, StoreError> {
    tx.prepare_cached(&format!(
        "SELECT 1 FROM registrations WHERE client_id = ?1 AND {LIVE}"
    ))
    .and_then(|mut stmt| stmt.query_row([client_id], |_| Ok(())))
    .optional()
    .map(|o| o.is_some())
    .map_err(map_err)
}

/// Runs a conditional single-row UPDATE/DELETE keyed by client_id, or
/// explains why no row matched.
fn change_by_client_id(
    conn: &Connection,
    sql: &str,
    client_id: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<(), StoreError> {
    if exec(conn, sql, params)? == 0 {
        return Err(missing_or_conflict(client_live(conn, client_id)?));
    }
    Ok(())
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
        let fingerprint = rec
            .create_fingerprint
            .as_ref()
            .map(|f| json_text("create_fingerprint", f))
            .transpose()?;
        self.write(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "INSERT INTO registrations ({COLUMNS}, unique_sw)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 'create', ?6, ?7, ?8, ?9, ?10, ?11,
                             ?12, ?13, 0, ?15, NULL, ?14)"
                ))
                .map_err(map_err)?;
            stmt.execute(params![
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
                fingerprint,
            ])
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
        self.write(move |conn| {
            let id = id.to_string();
            let changed = exec(
                conn,
                "UPDATE registrations
                 SET state = 'active', pending_op = NULL, client_id = ?2,
                     registration_access_token = ?3, registration_client_uri = ?4,
                     metadata = ?5, updated_at = ?6, attempts = 0, create_fingerprint = NULL
                 WHERE id = ?1 AND state = 'pending' AND pending_op = 'create'",
                params![id, client_id, rat, client_uri, metadata, now()],
            )?;
            if changed == 0 {
                return Err(missing_or_conflict(id_exists(conn, &id)?));
            }
            Ok(())
        })
        .await
    }

    async fn abandon(&self, id: Uuid) -> Result<(), StoreError> {
        self.write(move |conn| {
            let id = id.to_string();
            let changed = exec(
                conn,
                "DELETE FROM registrations
                 WHERE id = ?1 AND state = 'pending' AND pending_op = 'create'",
                [&id],
            )?;
            if changed == 0 {
                return Err(missing_or_conflict(id_exists(conn, &id)?));
            }
            Ok(())
        })
        .await
    }

    async fn get_by_client_id(&self, client_id: &str) -> Result<Option<Registration>, StoreError> {
        let client_id = client_id.to_owned();
        self.run(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM registrations WHERE client_id = ?1 AND {VISIBLE}"
            ))
            .and_then(|mut stmt| stmt.query_row([&client_id], read_row))
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
        self.start_change(client_id, op, None).await
    }

    async fn begin_replace(
        &self,
        client_id: &str,
        replacement: &PendingReplacement,
    ) -> Result<Registration, StoreError> {
        let replacement = json_text("replacement", replacement)?;
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
        let (client_id, rat, ssa) = (
            client_id.to_owned(),
            rat.to_owned(),
            software_statement.to_owned(),
        );
        let metadata = metadata_text(metadata)?;
        self.write(move |conn| {
            change_by_client_id(
                conn,
                "UPDATE registrations
                 SET state = 'active', pending_op = NULL, registration_access_token = ?2,
                     metadata = ?3, software_statement = ?4, updated_at = ?5, attempts = 0,
                     replacement = NULL
                 WHERE client_id = ?1 AND state = 'pending' AND pending_op = 'replace'",
                &client_id,
                params![client_id, rat, metadata, ssa, now()],
            )
        })
        .await
    }

    async fn cancel_change(&self, client_id: &str) -> Result<(), StoreError> {
        let client_id = client_id.to_owned();
        self.write(move |conn| {
            change_by_client_id(
                conn,
                "UPDATE registrations
                 SET state = 'active', pending_op = NULL, updated_at = ?2, attempts = 0,
                     replacement = NULL
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
        self.write(move |conn| {
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
        self.write(move |conn| {
            change_by_client_id(
                conn,
                &format!(
                    "UPDATE registrations
                     SET state = 'gone', pending_op = NULL, registration_access_token = NULL,
                         updated_at = ?2, replacement = NULL
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

    async fn pending_creates(&self, limit: usize) -> Result<Vec<Registration>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM registrations
                     WHERE state = 'pending' AND pending_op = 'create'
                     ORDER BY created_at, id LIMIT ?1"
                ))
                .map_err(map_err)?;
            let rows = stmt.query_map(params![limit], read_row).map_err(map_err)?;
            rows.map(|r| r.map_err(map_err).and_then(Registration::try_from))
                .collect()
        })
        .await
    }

    async fn knows_client_id(&self, client_id: &str) -> Result<bool, StoreError> {
        let client_id = client_id.to_owned();
        self.run(move |conn| {
            conn.prepare_cached("SELECT 1 FROM registrations WHERE client_id = ?1 LIMIT 1")
                .and_then(|mut stmt| stmt.query_row([&client_id], |_| Ok(())))
                .optional()
                .map(|o| o.is_some())
                .map_err(map_err)
        })
        .await
    }

    async fn bump_attempts(&self, id: Uuid) -> Result<(), StoreError> {
        self.write(move |conn| {
            let changed = exec(
                conn,
                "UPDATE registrations SET attempts = attempts + 1, updated_at = ?2
                 WHERE id = ?1",
                params![id.to_string(), now()],
            )?;
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
        .await?;
        // Reads keep working from a file that can no longer be written (moved, replaced, on a full or
        // read-only disk): only a write that reaches the journal and the disk proves registrations can
        // be taken. A row in and out again dirties a page and so goes the whole way, yet leaves nothing.
        self.write(|conn| {
            exec(
                conn,
                "INSERT INTO schema_version (version, applied_at) VALUES (-1, ?1)",
                [now()],
            )?;
            exec(conn, "DELETE FROM schema_version WHERE version = -1", [])?;
            Ok(())
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

    /// A database file under the system temp dir, deleted (with its journal
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
    async fn file_store_is_durable_and_maps_no_file() {
        let db = TempDb::new();
        let store = SqliteStore::open(&db.0).unwrap();
        let (mode, sync, mmap): (String, i64, i64) = store
            .run(|c| {
                let get = |p: &str| {
                    c.query_row(&format!("PRAGMA {p}"), [], |r| {
                        r.get::<_, rusqlite::types::Value>(0)
                    })
                };
                let text = |v: rusqlite::types::Value| match v {
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                };
                let int = |v: rusqlite::types::Value| match v {
                    rusqlite::types::Value::Integer(i) => i,
                    _ => -1,
                };
                Ok((
                    text(get("journal_mode").map_err(map_err)?),
                    int(get("synchronous").map_err(map_err)?),
                    int(get("mmap_size").map_err(map_err)?),
                ))
            })
            .await
            .unwrap();
        assert_eq!(mode, "truncate");
        assert_eq!(sync, 2, "synchronous must be FULL");
        assert_eq!(mmap, 0, "no memory-mapped I/O");
        store.ping().await.unwrap();
        let shm = db.0.with_extension("db-shm");
        assert!(!shm.exists(), "no shared-memory file: {}", shm.display());
    }

    #[tokio::test]
    async fn a_file_left_in_wal_mode_is_converted() {
        let db = TempDb::new();
        drop(SqliteStore::open(&db.0).unwrap());
        let raw = Connection::open(&db.0).unwrap();
        let mode: String = raw
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(raw);
        let store = SqliteStore::open(&db.0).unwrap();
        store.ping().await.unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_moved_store_fails_writes_and_ping_but_not_the_process() {
        let db = TempDb::new();
        let store = SqliteStore::open(&db.0).unwrap();
        store.ping().await.unwrap();
        let dir = db.0.parent().unwrap().to_path_buf();
        let moved = dir.with_extension("moved");
        std::fs::rename(&dir, &moved).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let e = store
            .ping()
            .await
            .expect_err("a moved store is not healthy");
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        let _ = std::fs::remove_dir_all(&moved);
    }

    #[tokio::test]
    async fn a_panicking_operation_leaves_the_store_working() {
        let store = SqliteStore::open_in_memory().unwrap();
        let r: Result<(), StoreError> = store
            .write(|conn| {
                exec(conn, "DELETE FROM registrations", [])?;
                panic!("bug")
            })
            .await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        let after = store
            .write(|conn| exec(conn, "DELETE FROM registrations", []))
            .await;
        assert_eq!(after.unwrap(), 0);
        store.ping().await.unwrap();
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

    /// A file written by a build that knew only the first schema step keeps its rows, which read back with
    /// no fingerprint and no replacement.
    #[tokio::test]
    async fn a_version_1_file_is_migrated_in_place() {
        let db = TempDb::new();
        std::fs::create_dir_all(db.0.parent().unwrap()).unwrap();
        {
            let conn = Connection::open(&db.0).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT;",
            )
            .unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            conn.execute("INSERT INTO schema_version VALUES (1, 0)", [])
                .unwrap();
            conn.execute(
                "INSERT INTO registrations (id, client_id, profile, software_id, state, unique_sw,
                     software_statement, metadata, registration_access_token, registration_client_uri,
                     cert_subject_dn, cert_thumbprint_s256, created_at, updated_at)
                 VALUES (?1, 'c-old', 'ob-v3.1', 'sw', 'active', 1, 's', '{}', 'rat', 'u', 'CN=x', 't', 1, 1)",
                [Uuid::new_v4().to_string()],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&db.0).unwrap();
        let rec = store.get_by_client_id("c-old").await.unwrap().unwrap();
        assert_eq!(rec.registration_access_token.as_deref(), Some("rat"));
        assert_eq!(rec.create_fingerprint, None);
        assert!(rec.replacement.is_none());
        assert!(store.knows_client_id("c-old").await.unwrap());
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

    /// Every file under `dir` with a digest of its contents, to show that a check left the disk as it was.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries {
                let p = e.unwrap().path();
                if p.is_dir() {
                    out.push((p.clone(), "dir".into()));
                    todo.push(p);
                } else {
                    let digest = aws_lc_rs::digest::digest(
                        &aws_lc_rs::digest::SHA256,
                        &std::fs::read(&p).unwrap(),
                    );
                    out.push((p.clone(), format!("{:?}", digest.as_ref())));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_read_only_check_creates_nothing_for_a_new_file() {
        let db = TempDb::new();
        let top = db.0.parent().and_then(Path::parent).unwrap().to_path_buf();
        check_read_only(&db.0).unwrap();
        assert!(!top.exists(), "the check created {}", top.display());
    }

    #[test]
    fn the_read_only_check_reads_an_existing_store_without_touching_it() {
        let db = TempDb::new();
        drop(SqliteStore::open(&db.0).unwrap());
        // The store's thread closes the connection (and removes the WAL files) on its own time.
        let mut wal = db.0.as_os_str().to_owned();
        wal.push("-wal");
        for _ in 0..100 {
            if !Path::new(&wal).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let dir = db.0.parent().unwrap().to_path_buf();
        let before = snapshot(&dir);
        check_read_only(&db.0).unwrap();
        assert_eq!(snapshot(&dir), before);
        // With a proxy running on the file, the check reads through its WAL.
        let live = SqliteStore::open(&db.0).unwrap();
        check_read_only(&db.0).unwrap();
        drop(live);

        let conn = Connection::open(&db.0).unwrap();
        conn.execute("INSERT INTO schema_version VALUES (99, 0)", [])
            .unwrap();
        drop(conn);
        let before = snapshot(&dir);
        let e = check_read_only(&db.0).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
        assert!(e.to_string().contains("version 99"), "{e}");
        assert_eq!(snapshot(&dir), before);
    }

    #[test]
    fn the_read_only_check_refuses_what_open_could_not_use() {
        let db = TempDb::new();
        let dir = db.0.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&dir).unwrap();

        let not_sqlite = dir.join("notes.txt");
        std::fs::write(&not_sqlite, vec![b'x'; 4096]).unwrap();
        let e = check_read_only(&not_sqlite).unwrap_err();
        assert!(e.to_string().contains("not a SQLite database"), "{e}");

        let foreign = dir.join("other.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        let e = check_read_only(&foreign).unwrap_err();
        assert!(e.to_string().contains("not a dcr-proxy store"), "{e}");

        let e = check_read_only(&dir).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");

        let e = check_read_only(&not_sqlite.join("dcr.sqlite")).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");

        let odd = dir.join("a?b#c%d.sqlite");
        drop(SqliteStore::open(&odd).unwrap());
        check_read_only(&odd).unwrap();
    }
}
