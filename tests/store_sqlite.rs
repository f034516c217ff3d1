//! The SQLite store and the in-memory replay guard against the behaviour every backend owes (see
//! `support/store_conformance.rs`); what only SQLite has (files, WAL, permissions) is tested in `src/store/sqlite.rs`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use dcr_proxy::store::RegistrationStore;
use dcr_proxy::store::replay::{MemoryReplayGuard, ReplayGuard};
use dcr_proxy::store::sqlite::SqliteStore;

use support::store_conformance as conformance;
use support::temp::TempDir;

fn memory() -> SqliteStore {
    SqliteStore::open_in_memory().expect("in-memory store")
}

#[tokio::test]
async fn full_state_machine() {
    conformance::full_state_machine(&memory()).await;
}

#[tokio::test]
async fn full_state_machine_on_file() {
    let dir = TempDir::new();
    let path = dir.join("nested").join("registrations.db");
    conformance::full_state_machine(&SqliteStore::open(&path).unwrap()).await;
    // A Gone row is kept for audit, but its dead RAT is erased in storage, not just hidden.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let (state, rat): (String, Option<String>) = raw
        .query_row(
            "SELECT state, registration_access_token FROM registrations WHERE client_id = 'c-2'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "gone");
    assert_eq!(rat, None);
}

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
    assert_eq!(versions, 1);
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

#[tokio::test]
async fn change_in_flight_can_end_gone_or_removed() {
    conformance::change_in_flight_can_end_gone_or_removed(&memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_one_wins() {
    conformance::concurrent_creates_one_wins(&[Arc::new(memory()) as Arc<dyn RegistrationStore>])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uniqueness_holds_across_connections() {
    // Two handles on one file are two connections: only the database's index can keep them from both inserting.
    let dir = TempDir::new();
    let path = dir.join("registrations.db");
    let a = SqliteStore::open(&path).unwrap();
    let b = SqliteStore::open(&path).unwrap();
    conformance::concurrent_creates_one_wins(&[
        Arc::new(a) as Arc<dyn RegistrationStore>,
        Arc::new(b) as Arc<dyn RegistrationStore>,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_allowed_when_not_unique() {
    conformance::duplicates_allowed_when_not_unique(Arc::new(memory())).await;
}

#[tokio::test]
async fn software_id_freed_by_gone_and_abandon() {
    conformance::software_id_freed_by_gone_and_abandon(&memory()).await;
}

#[tokio::test]
async fn client_id_taken_by_live_record_conflicts() {
    conformance::client_id_taken_by_live_record_conflicts(&memory()).await;
}

#[tokio::test]
async fn a_pending_create_can_name_its_client_id() {
    conformance::a_pending_create_can_name_its_client_id(&memory()).await;
}

#[tokio::test]
async fn pending_is_ordered_and_limited() {
    conformance::pending_is_ordered_and_limited(&memory()).await;
}

#[tokio::test]
async fn stored_secrets_stay_out_of_debug() {
    conformance::stored_secrets_stay_out_of_debug(&memory()).await;
}

fn guard() -> Arc<dyn ReplayGuard> {
    Arc::new(MemoryReplayGuard::new(10_000, Duration::ZERO))
}

#[tokio::test]
async fn memory_replay_second_use_is_refused() {
    conformance::replay_second_use_is_refused(guard().as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_replay_concurrent_same_key_passes_once() {
    conformance::replay_concurrent_same_key_passes_once(&[guard()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_replay_expired_key_is_reused_once() {
    conformance::replay_expired_key_is_reused_once(&[guard()]).await;
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
