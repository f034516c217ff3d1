//! The SQLite store and the in-memory replay guard against the behaviour every backend owes (see
//! `support/store_conformance.rs`), and what only a file has: reopening, corruption, batched commits. WAL and
//! permissions are tested in `src/store/sqlite/tests.rs`.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dcr_proxy::store::RegistrationStore;
use dcr_proxy::store::replay::{MemoryReplayGuard, ReplayGuard};
use dcr_proxy::store::sqlite::SqliteStore;

use support::store_conformance::{self as conformance, Backend};
use support::temp::TempDir;

/// Each case gets a file of its own, in a directory that does not exist yet: opening creates it.
struct Sqlite {
    dir: TempDir,
    // In memory, so one per process: every handle of a deployment shares this one guard.
    guard: Arc<dyn ReplayGuard>,
}

impl Sqlite {
    fn path(&self) -> PathBuf {
        self.dir.join("nested").join("registrations.db")
    }
}

impl Backend for Sqlite {
    async fn fresh() -> Self {
        Sqlite {
            dir: TempDir::new(),
            guard: Arc::new(MemoryReplayGuard::new(16 << 20, Duration::ZERO)),
        }
    }

    async fn connect(&self) -> Arc<dyn RegistrationStore> {
        Arc::new(SqliteStore::open(&self.path()).expect("open the store file"))
    }

    async fn guard(&self) -> Arc<dyn ReplayGuard> {
        Arc::clone(&self.guard)
    }

    async fn stored_state_and_rat(&self, client_id: &str) -> (String, Option<String>) {
        rusqlite::Connection::open(self.path())
            .expect("open the store file")
            .query_row(
                "SELECT state, registration_access_token FROM registrations WHERE client_id = ?1",
                [client_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the row is kept")
    }
}

conformance::store_conformance_tests!(Sqlite);

#[tokio::test]
async fn record_survives_reopen() {
    let dir = TempDir::new();
    let path = dir.join("registrations.db");
    conformance::create_active(&SqliteStore::open(&path).unwrap(), "sw-1", "c-1").await;
    let store = SqliteStore::open(&path).unwrap();
    let rec = store.get_by_client_id("c-1").await.unwrap().unwrap();
    assert_eq!(rec.registration_access_token.as_deref(), Some("rat-1"));
    // Reopening must not re-run migrations.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let versions: i64 = raw
        .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(versions, 2, "one row per migration step");
}

#[tokio::test]
async fn unreadable_row_is_corrupt_not_a_panic() {
    let dir = TempDir::new();
    let path = dir.join("registrations.db");
    let store = SqliteStore::open(&path).unwrap();
    conformance::create_active(&store, "sw", "c-1").await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE registrations SET metadata = 'not json'", [])
        .unwrap();
    assert!(matches!(
        store.get_by_client_id("c-1").await,
        Err(dcr_proxy::store::StoreError::Corrupt(_))
    ));
}

/// Writes queued together share one transaction and one fsync; a failing one is rolled back to its own
/// savepoint while the others commit, and every answered write is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_committed_together_fail_and_succeed_one_by_one() {
    let dir = TempDir::new();
    let path = dir.join("registrations.db");
    let store = SqliteStore::open(&path).expect("open");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        // Even: one software product, unique (one may win). Odd: each its own product.
        let sw = if i % 2 == 0 {
            "same".to_string()
        } else {
            format!("own-{i}")
        };
        tasks.push(tokio::spawn(async move {
            store.begin_create(&conformance::record(&sw), true).await
        }));
    }
    let (mut ok, mut duplicates) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(()) => ok += 1,
            Err(dcr_proxy::store::StoreError::DuplicateSoftwareId { .. }) => duplicates += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, duplicates), (21, 19));
    drop(store);
    // Another connection on the file sees every write that was answered Ok.
    let reopened = SqliteStore::open(&path).expect("reopen");
    assert_eq!(
        reopened
            .pending(i64::MAX, 100)
            .await
            .expect("pending")
            .len(),
        21
    );
}
