//! Owns the embedded SQLite implementation of [`RegistrationStore`](super::RegistrationStore): file setup, schema migrations and error mapping.
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

mod check;
mod registrations;
mod rows;
mod schema;
#[cfg(test)]
mod tests;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, params};

pub use self::check::check_read_only;
use self::rows::{exec, live_by_client_id, map_err};
use self::schema::{create_private_file, migrate};
use super::{PendingOp, RecordState, Registration, StoreError};
use crate::jwt::now;

/// How long a statement waits for a lock held by another connection (a second
/// process on the same file, a backup tool) before reporting Unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most operations committed together; bounds how long the first of them waits for the others.
const MAX_BATCH: usize = 64;

/// Distinct statements we run, with room to spare, so none is prepared twice.
const STATEMENT_CACHE: usize = 64;

/// Bytes the persisted rollback journal may keep after a commit: a full batch of registrations journals well
/// under this, so the file is normally left as it is and only a rare large transaction is cut back.
const JOURNAL_SIZE_LIMIT: i64 = 4 << 20;

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
            // PERSIST rather than DELETE or TRUNCATE: a commit ends by zeroing the journal's header instead
            // of removing or truncating the file (sqlite.org pragma.html#pragma_journal_mode), the same
            // atomic commit without a directory or inode-size update per commit. Measured with this
            // schema on this project's ext4 VM, synchronous=FULL: ~7 % less CPU and ~14 % less time per
            // commit than TRUNCATE. `journal_size_limit` truncates a journal a large batch left big.
            // A file a previous version left in WAL mode is converted here, while no one else has it open.
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "PERSIST", |row| row.get(0))
                .map_err(map_err)?;
            if !mode.eq_ignore_ascii_case("persist") {
                return Err(StoreError::Unavailable(format!(
                    "cannot leave journal_mode {mode} for the rollback journal; is another process using the store file?"
                )));
            }
            let _: i64 = conn
                .pragma_update_and_check(None, "journal_size_limit", JOURNAL_SIZE_LIMIT, |row| {
                    row.get(0)
                })
                .map_err(map_err)?;
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
