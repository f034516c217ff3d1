// Behaviour every backend shares is tested once for all of them in
// tests/support/store_conformance.rs; what stays here is SQLite's own.
use super::schema::SCHEMA_V1;
use super::*;
use crate::store::RegistrationStore;
use std::path::PathBuf;
use uuid::Uuid;

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
    let (mode, sync, mmap, limit): (String, i64, i64, i64) = store
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
                int(get("journal_size_limit").map_err(map_err)?),
            ))
        })
        .await
        .unwrap();
    assert_eq!(mode, "persist");
    assert_eq!(limit, JOURNAL_SIZE_LIMIT, "a persisted journal is bounded");
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

#[test]
fn a_record_turned_into_columns_reads_back_unchanged() {
    use crate::store::{CreateFingerprint, PendingOp, PendingReplacement, RecordState};
    let md = serde_json::json!({"redirect_uris": ["https://tpp/cb"], "client_name": "App"});
    let rec = Registration {
        id: Uuid::new_v4(),
        client_id: Some("client-1".into()),
        profile: "cdr-1.13".into(),
        software_id: "sw-1".into(),
        org_id: None,
        state: RecordState::Pending,
        pending_op: Some(PendingOp::Replace),
        software_statement: "eyJ.ssa.sig".into(),
        metadata: md.clone(),
        registration_access_token: Some("rat".into()),
        registration_client_uri: Some("https://idp/register/client-1".into()),
        cert_subject_dn: "CN=tpp,O=Org".into(),
        cert_thumbprint_s256: "thumb".into(),
        created_at: 1_000,
        updated_at: 2_000,
        attempts: 3,
        create_fingerprint: Some(CreateFingerprint::of(&md)),
        replacement: Some(PendingReplacement {
            fingerprint: CreateFingerprint::of(&md),
            metadata: md,
            software_statement: "eyJ.ssa2.sig".into(),
        }),
    };
    let back = Registration::try_from(super::rows::RawRow::of(&rec).unwrap()).unwrap();
    assert!(back == rec, "columns and record disagree");
}

/// A queued operation that does nothing; `ran` learns when it is run.
fn job(write: bool, ran: Option<mpsc::Sender<()>>) -> Job {
    Job {
        write,
        work: Box::new(move |_| {
            if let Some(ran) = ran {
                let _ = ran.send(());
            }
            (true, Box::new(|_: Option<&str>| {}) as Answer)
        }),
    }
}

#[test]
fn a_write_that_does_not_overlap_others_is_committed_without_waiting() {
    let conn = Connection::open_in_memory().unwrap();
    let (queue, jobs) = mpsc::channel();
    queue.send(job(true, None)).unwrap();
    let first = jobs.recv().unwrap();
    let started = Instant::now();
    // The previous COMMIT carried 3 writes: below DELAY_SIBLINGS, so its delay must not be waited.
    let writes = gather(&conn, &jobs, first, Duration::from_secs(30), 3);
    assert_eq!(writes.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(10), "it waited");
}

#[test]
fn overlapping_writes_wait_for_more_to_share_the_commit_and_reads_are_answered_meanwhile() {
    let conn = Connection::open_in_memory().unwrap();
    let (queue, jobs) = mpsc::channel();
    queue.send(job(true, None)).unwrap();
    let first = jobs.recv().unwrap();
    let (read_ran, read_seen) = mpsc::channel();
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        queue.send(job(false, Some(read_ran))).unwrap();
        // The read is answered while the writes still wait for their COMMIT.
        read_seen
            .recv_timeout(Duration::from_secs(5))
            .expect("read answered during the wait");
        queue.send(job(true, None)).unwrap();
        queue.send(job(true, None)).unwrap();
    });
    // The previous COMMIT carried DELAY_SIBLINGS writes: writers overlap, so this one waits for more.
    let writes = gather(&conn, &jobs, first, Duration::from_secs(10), DELAY_SIBLINGS);
    late.join().unwrap();
    assert_eq!(
        writes.len(),
        3,
        "the two later writes share the first one's COMMIT"
    );
    assert!(writes.iter().all(|j| j.write));
}

#[test]
fn a_full_batch_is_committed_without_waiting_out_the_delay() {
    let conn = Connection::open_in_memory().unwrap();
    let (queue, jobs) = mpsc::channel();
    for _ in 0..MAX_BATCH + 1 {
        queue.send(job(true, None)).unwrap();
    }
    let first = jobs.recv().unwrap();
    let started = Instant::now();
    let writes = gather(&conn, &jobs, first, Duration::from_secs(30), MAX_BATCH);
    assert_eq!(writes.len(), MAX_BATCH);
    assert!(started.elapsed() < Duration::from_secs(10), "it waited");
    assert!(
        jobs.try_recv().is_ok(),
        "the one past the bound goes to the next batch"
    );
}

#[tokio::test]
async fn a_lone_registration_write_is_not_delayed_by_a_long_commit_delay() {
    let db = TempDb::new();
    let store = SqliteStore::open_with(&db.0, Duration::from_secs(30)).unwrap();
    let started = Instant::now();
    for n in 0..3 {
        store
            .write(move |c| exec(c, "INSERT INTO schema_version VALUES (?1, 0)", [100 + n]))
            .await
            .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a lone write waited"
    );
}
