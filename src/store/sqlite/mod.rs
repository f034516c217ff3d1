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
//!
//! A COMMIT costs about the same whatever it carries (measured with
//! `scripts/sqlite_journal.sh`: ~550 µs of CPU for one registration's writes,
//! ~70 µs per registration for sixteen), so while writers overlap the thread
//! waits up to `store.commit_delay` for more writes before it commits, as
//! PostgreSQL's `commit_delay` does. A write that arrives alone is not delayed.

mod check;
mod registrations;
mod rows;
mod schema;
#[cfg(test)]
mod tests;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

pub use self::check::check_read_only;
use self::rows::{exec, live_by_client_id, map_err};
use self::schema::{create_private_file, migrate};
use super::{PendingOp, RecordState, Registration, StoreError};
use crate::jwt::now;

/// How long a statement waits for a lock held by another connection (a second
/// process on the same file, a backup tool) before reporting Unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most writes committed together; bounds how long the first of them waits for the others.
const MAX_BATCH: usize = 64;

/// `store.commit_delay` when the key is absent. Measured in the registration benchmark (keep-alive, c=16,
/// pinned, 16 alternating rounds against "0ms", medians): ~7 → ~13 writes per COMMIT, 589 → 545 µs of CPU per
/// registration, p50 11.7 → 9.8 ms, p99 19.1 → 21.3 ms (docs/decisions.md, Performance).
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_millis(2);

/// Longest `store.commit_delay` the configuration accepts: the wait is paid twice per registration under
/// load, and past the time a COMMIT itself takes (~1–2 ms here) it mostly adds latency.
pub const MAX_COMMIT_DELAY: Duration = Duration::from_millis(20);

/// Writes one COMMIT must carry (this one's, or the previous one's) before the next waits `commit_delay` for
/// more: fewer means writers are not overlapping, and a lone write would only be made later. PostgreSQL's
/// `commit_siblings` plays the same part for its `commit_delay`.
const DELAY_SIBLINGS: usize = 4;

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
    /// schema up to date, committing each batch as soon as it is gathered. Blocking: call it at startup.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, Duration::ZERO)
    }

    /// Like [`SqliteStore::open`]; while writers overlap, a COMMIT waits up to `commit_delay` for more
    /// writes to share it (`store.commit_delay`).
    pub fn open_with(path: &Path, commit_delay: Duration) -> Result<Self, StoreError> {
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
        Self::init(conn, true, commit_delay)
    }

    /// A private database that disappears when the store is dropped: for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(map_err)?;
        Self::init(conn, false, Duration::ZERO)
    }

    fn init(
        mut conn: Connection,
        on_disk: bool,
        commit_delay: Duration,
    ) -> Result<Self, StoreError> {
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
            .spawn(move || serve(conn, jobs, commit_delay))
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
fn serve(conn: Connection, jobs: mpsc::Receiver<Job>, commit_delay: Duration) {
    let mut last_batch = 0;
    while let Ok(first) = jobs.recv() {
        let writes = gather(&conn, &jobs, first, commit_delay, last_batch);
        last_batch = writes.len();
        if !writes.is_empty() {
            commit_together(&conn, writes);
        }
    }
}

/// Answers the reads and collects the writes of one batch: what is queued now and, when writers overlap,
/// what arrives within `commit_delay`. `last_batch` is how many writes the previous batch held (0 when it
/// held only reads, so a pause for reads ends the memory of overlapping writers).
fn gather(
    conn: &Connection,
    jobs: &mpsc::Receiver<Job>,
    first: Job,
    commit_delay: Duration,
    last_batch: usize,
) -> Vec<Job> {
    let mut writes = Vec::new();
    // Reads see committed data only, so they are answered at once, during a wait too.
    let take = |job: Job, writes: &mut Vec<Job>| {
        if job.write {
            writes.push(job);
        } else {
            let (_, answer) = (job.work)(Some(conn));
            answer(None);
        }
    };
    take(first, &mut writes);
    // Counting reads too, so a stream of them cannot hold back the writes already taken.
    for _ in 1..MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => take(job, &mut writes),
            Err(_) => break,
        }
    }
    let overlapping = writes.len().max(last_batch) >= DELAY_SIBLINGS;
    if commit_delay.is_zero() || writes.is_empty() || !overlapping {
        return writes;
    }
    let deadline = Instant::now() + commit_delay;
    while writes.len() < MAX_BATCH {
        // Checked before receiving: a zero timeout still returns what is queued, and reads may keep coming.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match jobs.recv_timeout(left) {
            Ok(job) => take(job, &mut writes),
            Err(_) => break,
        }
    }
    writes
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
