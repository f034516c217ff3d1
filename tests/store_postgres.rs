//! The PostgreSQL store against a real server: the shared store behaviour, the replay cache, migrations under
//! concurrent start-up, and failure when the database stops, hangs or holds a lock.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dcr_proxy::secret::Secret;
use dcr_proxy::store::postgres::{PgTls, PostgresConfig, PostgresStore};
use dcr_proxy::store::replay::ReplayGuard;
use dcr_proxy::store::{PendingOp, RegistrationStore, StoreError};
use serde_json::json;
use uuid::Uuid;

use support::pki::Pki;
use support::postgres::{PgOptions, PgServer, ServerTls};
use support::store_conformance::{self as conformance, Backend};
use support::temp::TempDir;

/// Each case gets a database of its own on the shared server.
struct Postgres {
    db: String,
}

impl Postgres {
    async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&PgServer::shared().await.config(&self.db))
            .await
            .expect("connect to the test database")
    }
}

impl Backend for Postgres {
    async fn fresh() -> Self {
        Postgres {
            db: PgServer::shared().await.create_database().await,
        }
    }

    async fn connect(&self) -> Arc<dyn RegistrationStore> {
        Arc::new(self.store().await)
    }

    async fn guard(&self) -> Arc<dyn ReplayGuard> {
        Arc::new(self.store().await)
    }

    async fn stored_state_and_rat(&self, client_id: &str) -> (String, Option<String>) {
        let row = PgServer::shared()
            .await
            .admin(&self.db)
            .await
            .query_one(
                "SELECT state, registration_access_token FROM dcr_registrations WHERE client_id = $1",
                &[&client_id],
            )
            .await
            .expect("the row is kept");
        (row.get(0), row.get(1))
    }
}

conformance::store_conformance_tests!(Postgres);

/// A store on a new database of the shared server, and that database's name.
async fn fresh_store() -> (PostgresStore, String) {
    let pg = Postgres::fresh().await;
    (pg.store().await, pg.db)
}

/// Two stores on one new database: two pools, as two replicas would have.
async fn two_replicas() -> (PostgresStore, PostgresStore) {
    let pg = Postgres::fresh().await;
    (pg.store().await, pg.store().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_begin_change_starts_one_change() {
    let (a, b) = two_replicas().await;
    conformance::create_active(&a, "sw", "c-1").await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { store.begin_change("c-1", PendingOp::Replace).await })
        })
        .collect();
    let mut started = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => started += 1,
            Err(StoreError::Conflict) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(started, 1);
}

#[tokio::test]
async fn replay_skew_extends_retention() {
    let (store, _) = fresh_store().await;
    let store = store.with_replay_skew(Duration::from_secs(60));
    // Expired 30 s ago, but inside the validator's leeway: still remembered after the minimum lifetime.
    let exp = conformance::from_now(-30);
    assert!(store.check_and_record("k", exp).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert!(!store.check_and_record("k", exp).await.unwrap());
}

#[tokio::test]
async fn replay_keys_of_any_size_and_content() {
    // Keys carry attacker-chosen jtis: neither a huge one nor a NUL byte may turn into a database error.
    let (store, _) = fresh_store().await;
    let exp = conformance::from_now(60);
    let huge = "j".repeat(200_000);
    let nul = "ob:3:iss:a\0b";
    for key in [huge.as_str(), nul, ""] {
        assert!(store.check_and_record(key, exp).await.unwrap());
        assert!(!store.check_and_record(key, exp).await.unwrap());
    }
}

#[tokio::test]
async fn purge_removes_only_expired_keys() {
    let (store, db) = fresh_store().await;
    for i in 0..5 {
        assert!(
            store
                .check_and_record(&format!("old-{i}"), 1)
                .await
                .unwrap()
        );
    }
    assert!(
        store
            .check_and_record("live", conformance::from_now(600))
            .await
            .unwrap()
    );
    // Age the old entries past their minimum lifetime without waiting for it.
    let admin = PgServer::shared().await.admin(&db).await;
    admin
        .execute(
            "UPDATE dcr_replay SET expires_at = 1 WHERE expires_at < extract(epoch FROM now()) + 300",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(store.purge_expired().await.unwrap(), 5);
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    let left: i64 = admin
        .query_one("SELECT count(*) FROM dcr_replay", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
    assert!(
        !store
            .check_and_record("live", conformance::from_now(600))
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_checks_purge_now_and_then_by_themselves() {
    let (store, db) = fresh_store().await;
    for i in 0..3 {
        assert!(
            store
                .check_and_record(&format!("old-{i}"), 1)
                .await
                .unwrap()
        );
    }
    let admin = PgServer::shared().await.admin(&db).await;
    admin
        .execute("UPDATE dcr_replay SET expires_at = 1", &[])
        .await
        .unwrap();
    let exp = conformance::from_now(600);
    for i in 0..1024 {
        store
            .check_and_record(&format!("new-{i}"), exp)
            .await
            .unwrap();
    }
    let begun = Instant::now();
    loop {
        let old: i64 = admin
            .query_one("SELECT count(*) FROM dcr_replay WHERE expires_at = 1", &[])
            .await
            .unwrap()
            .get(0);
        if old == 0 {
            break;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(10),
            "expired keys were never purged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: i64 = admin
        .query_one("SELECT count(*) FROM dcr_replay", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_startups_migrate_once() {
    let server = PgServer::shared().await;
    let db = server.create_database().await;
    let cfg = server.config(&db);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let cfg = cfg.clone();
            tokio::spawn(async move { PostgresStore::connect(&cfg).await })
        })
        .collect();
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await.unwrap().expect("every replica starts"));
    }
    let admin = server.admin(&db).await;
    let versions: Vec<i32> = admin
        .query("SELECT version FROM dcr_schema_migrations", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2]);
    let tables: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('dcr_registrations', 'dcr_replay')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 2);
    // Every replica works on the one schema.
    for (i, store) in stores.iter().enumerate() {
        conformance::create_active(store, &format!("sw-{i}"), &format!("c-{i}")).await;
    }
    // A later start finds the schema current and changes nothing.
    drop(PostgresStore::connect(&cfg).await.unwrap());
    let count: i64 = admin
        .query_one("SELECT count(*) FROM dcr_schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let (store, db) = fresh_store().await;
    drop(store);
    let server = PgServer::shared().await;
    server
        .admin(&db)
        .await
        .execute("INSERT INTO dcr_schema_migrations VALUES (99, now())", &[])
        .await
        .unwrap();
    let err = PostgresStore::connect(&server.config(&db))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt(ref m) if m.contains("99")),
        "{err:?}"
    );
}

#[tokio::test]
async fn unreadable_row_is_corrupt_not_a_panic() {
    let (store, db) = fresh_store().await;
    store
        .begin_create(&conformance::record("sw"), true)
        .await
        .unwrap();
    let admin = PgServer::shared().await.admin(&db).await;
    admin
        .batch_execute(
            "ALTER TABLE dcr_registrations DROP CONSTRAINT dcr_registrations_pending_op_check;
             UPDATE dcr_registrations SET pending_op = 'zombie';",
        )
        .await
        .unwrap();
    let err = store.pending(i64::MAX, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn configuration_mistakes_are_refused() {
    // A password in the URL, a pool of 0 and zero timeouts are refused by the configuration
    // (config::tests::postgres_settings_the_driver_would_refuse_are_refused_here).
    let server = PgServer::shared().await;
    let mut cfg = server.config("postgres");
    cfg.url = "not a url at all".into();
    assert!(matches!(
        PostgresStore::connect(&cfg).await,
        Err(StoreError::Unavailable(_))
    ));

    // The password travels separately; trust auth ignores it, so it just must not get in the way.
    let mut cfg = server.config(&server.create_database().await);
    cfg.password = Some(Secret::new("unused-with-trust"));
    let store = PostgresStore::connect(&cfg).await.unwrap();
    store.ping().await.unwrap();
    assert!(!format!("{cfg:?}").contains("unused-with-trust"));
    let shown = format!("{store:?}");
    assert!(shown.contains("PostgresStore"), "{shown}");
    assert!(!shown.contains("unused-with-trust"), "{shown}");
}

#[tokio::test]
async fn unreachable_database_fails_connect_quickly() {
    let server = PgServer::shared().await;
    let mut cfg = server.config("postgres");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cfg.url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let begun = Instant::now();
    let err = PostgresStore::connect(&cfg).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(begun.elapsed() < Duration::from_secs(5));
}

fn short_timeouts(server: &PgServer, db: &str, pool_size: usize) -> PostgresConfig {
    PostgresConfig {
        pool_size,
        connect_timeout: Duration::from_millis(500),
        statement_timeout: Duration::from_millis(500),
        ..server.config(db)
    }
}

/// The longest a call may take with [`short_timeouts`]: a wait for a free connection, opening one, and the
/// statement deadline, plus room for a loaded machine.
const SHORT_BOUND: Duration = Duration::from_secs(5);

/// Calls every store method at once; each must fail with Unavailable within [`SHORT_BOUND`].
async fn every_method_is_unavailable(store: &PostgresStore) {
    let id = Uuid::new_v4();
    let calls: Vec<(&str, tokio::task::JoinHandle<Result<(), StoreError>>)> = vec![
        ("ping", spawn_call(store, |s| async move { s.ping().await })),
        (
            "begin_create",
            spawn_call(store, |s| async move {
                s.begin_create(&conformance::record("sw-x"), true).await
            }),
        ),
        (
            "complete_create",
            spawn_call(store, move |s| async move {
                s.complete_create(id, "c", "r", "u", &json!({})).await
            }),
        ),
        (
            "abandon",
            spawn_call(store, move |s| async move { s.abandon(id).await }),
        ),
        (
            "get_by_client_id",
            spawn_call(store, |s| async move {
                s.get_by_client_id("c-1").await.map(drop)
            }),
        ),
        (
            "begin_change",
            spawn_call(store, |s| async move {
                s.begin_change("c-1", PendingOp::Delete).await.map(drop)
            }),
        ),
        (
            "complete_replace",
            spawn_call(store, |s| async move {
                s.complete_replace("c-1", "r", &json!({}), "ssa").await
            }),
        ),
        (
            "cancel_change",
            spawn_call(store, |s| async move { s.cancel_change("c-1").await }),
        ),
        (
            "remove",
            spawn_call(store, |s| async move { s.remove("c-1").await }),
        ),
        (
            "mark_gone",
            spawn_call(store, |s| async move { s.mark_gone("c-1").await }),
        ),
        (
            "pending",
            spawn_call(
                store,
                |s| async move { s.pending(i64::MAX, 10).await.map(drop) },
            ),
        ),
        (
            "bump_attempts",
            spawn_call(store, move |s| async move { s.bump_attempts(id).await }),
        ),
        (
            "check_and_record",
            spawn_call(store, |s| async move {
                s.check_and_record("k", conformance::from_now(60))
                    .await
                    .map(drop)
            }),
        ),
        (
            "purge_expired",
            spawn_call(store, |s| async move { s.purge_expired().await.map(drop) }),
        ),
    ];
    for (name, call) in calls {
        match call.await.unwrap() {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("{name}: expected Unavailable, got {other:?}"),
        }
    }
}

/// Runs one call and fails the test if it takes longer than [`SHORT_BOUND`].
fn spawn_call<F, Fut>(
    store: &PostgresStore,
    f: F,
) -> tokio::task::JoinHandle<Result<(), StoreError>>
where
    F: FnOnce(PostgresStore) -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>> + Send + 'static,
{
    let call = f(store.clone());
    tokio::spawn(async move {
        let begun = Instant::now();
        let out = tokio::time::timeout(SHORT_BOUND * 2, call)
            .await
            .expect("a store call hung");
        assert!(begun.elapsed() < SHORT_BOUND, "took {:?}", begun.elapsed());
        out
    })
}

async fn until_ready(store: &PostgresStore) {
    let begun = Instant::now();
    while let Err(e) = store.ping().await {
        assert!(
            begun.elapsed() < Duration::from_secs(15),
            "store did not recover: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_database_is_unavailable_then_recovers() {
    let server = PgServer::start().await;
    let db = server.create_database().await;
    let store = PostgresStore::connect(&short_timeouts(&server, &db, 4))
        .await
        .unwrap();
    conformance::create_active(&store, "sw", "c-1").await;

    server.stop().await;
    every_method_is_unavailable(&store).await;

    server.restart().await;
    until_ready(&store).await;
    let rec = store
        .get_by_client_id("c-1")
        .await
        .unwrap()
        .expect("record survived");
    assert_eq!(rec.registration_access_token.as_deref(), Some("rat-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_database_is_unavailable_then_recovers() {
    let server = PgServer::start().await;
    let db = server.create_database().await;
    let store = PostgresStore::connect(&short_timeouts(&server, &db, 4))
        .await
        .unwrap();
    conformance::create_active(&store, "sw", "c-1").await;

    // Open connections stay open and nothing answers on them, nor on new ones.
    server.freeze();
    every_method_is_unavailable(&store).await;
    server.thaw();

    until_ready(&store).await;
    assert!(store.get_by_client_id("c-1").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_lock_hits_statement_timeout_and_exhausts_pool() {
    let server = PgServer::shared().await;
    let db = server.create_database().await;
    // The statement outlasts the wait for a connection, so the second call gives up while the first still waits.
    let cfg = PostgresConfig {
        statement_timeout: Duration::from_secs(2),
        ..short_timeouts(server, &db, 1)
    };
    let store = PostgresStore::connect(&cfg).await.unwrap();
    conformance::create_active(&store, "sw", "c-1").await;

    let mut admin = server.admin(&db).await;
    let tx = admin.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM dcr_registrations WHERE client_id = 'c-1' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();

    // The one connection waits on the row lock until the server cancels it; meanwhile a second call finds no free
    // connection.
    let blocked = {
        let store = store.clone();
        tokio::spawn(async move {
            let begun = Instant::now();
            (
                store.begin_change("c-1", PendingOp::Delete).await,
                begun.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let begun = Instant::now();
    let second = store.get_by_client_id("c-1").await;
    assert!(
        matches!(second, Err(StoreError::Unavailable(ref m)) if m.contains("pool")),
        "{second:?}"
    );
    assert!(begun.elapsed() < Duration::from_secs(2));
    assert!(!blocked.is_finished());

    let (first, took) = blocked.await.unwrap();
    assert!(
        matches!(first, Err(StoreError::Unavailable(ref m)) if m.contains("57014")),
        "{first:?}"
    );
    assert!(took < SHORT_BOUND, "took {took:?}");
    tx.rollback().await.unwrap();

    // The connection that timed out is still good, and the change can now start.
    store.begin_change("c-1", PendingOp::Delete).await.unwrap();
}

#[tokio::test]
async fn tls_is_verified() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let files = pki.write_to(dir.path());
    let untrusted = dir.join("untrusted.pem");
    std::fs::write(&untrusted, pki.untrusted_ca_pem()).unwrap();
    let server = PgServer::start_with(PgOptions {
        tls: Some(ServerTls {
            cert_pem: pki.server_cert_pem(),
            key_pem: pki.server_key_pem(),
        }),
        ..PgOptions::default()
    })
    .await;
    let db = server.create_database().await;

    let mut cfg = server.config(&db);
    cfg.url = server.url_localhost(&db);
    cfg.tls = PgTls::Require {
        ca_bundle: Some(files.ca.clone()),
    };
    let store = PostgresStore::connect(&cfg).await.expect("TLS connect");
    conformance::create_active(&store, "sw", "c-1").await;
    let admin = server.admin(&db).await;
    let encrypted: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE ssl AND application_name = 'dcr-proxy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "the store's connections are not encrypted");

    // A server certificate from a root we do not trust is refused.
    cfg.tls = PgTls::Require {
        ca_bundle: Some(untrusted),
    };
    assert!(matches!(
        PostgresStore::connect(&cfg).await,
        Err(StoreError::Unavailable(_))
    ));

    // TLS required but the server offers none.
    let plain = PgServer::shared().await;
    let mut cfg = plain.config("postgres");
    cfg.tls = PgTls::Require {
        ca_bundle: Some(files.ca),
    };
    assert!(matches!(
        PostgresStore::connect(&cfg).await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn dropped_server_cleans_up() {
    let server = PgServer::start().await;
    let root = server.root().to_path_buf();
    assert!(root.join("data").is_dir());
    drop(server);
    assert!(!root.exists(), "{} left behind", root.display());
}

/// `--check-config`'s look at PostgreSQL: it proves the database answers and refuses a newer schema, and
/// creates nothing, neither on an empty database nor on one a start-up would migrate.
#[tokio::test]
async fn inspect_reads_the_schema_and_changes_nothing() {
    let server = PgServer::shared().await;
    let db = server.create_database().await;
    let cfg = server.config(&db);
    let admin = server.admin(&db).await;
    let tables = async || -> i64 {
        admin
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    };

    drop(
        PostgresStore::inspect(&cfg)
            .await
            .expect("an empty database is fine"),
    );
    assert_eq!(tables().await, 0, "inspect created a table");

    drop(
        PostgresStore::connect(&cfg)
            .await
            .expect("start-up migrates"),
    );
    let migrated = tables().await;
    assert!(migrated >= 3, "{migrated}");
    admin
        .execute("DELETE FROM dcr_schema_migrations WHERE version = 2", &[])
        .await
        .unwrap();
    drop(
        PostgresStore::inspect(&cfg)
            .await
            .expect("an older schema is fine"),
    );
    let versions: i64 = admin
        .query_one("SELECT count(*) FROM dcr_schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 1, "inspect migrated");

    admin
        .execute("INSERT INTO dcr_schema_migrations VALUES (99, now())", &[])
        .await
        .unwrap();
    let err = PostgresStore::inspect(&cfg).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt(ref m) if m.contains("99")),
        "{err:?}"
    );
}
