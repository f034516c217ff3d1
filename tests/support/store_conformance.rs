//! The behaviour every [`RegistrationStore`] and [`ReplayGuard`] backend owes its callers, written once against the
//! traits. A backend's test file implements [`Backend`] and calls [`store_conformance_tests!`], which makes one
//! test per case below.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dcr_proxy::store::replay::{ReplayGuard, replay_key};
use dcr_proxy::store::{
    CreateFingerprint, PendingOp, PendingReplacement, RecordState, Registration, RegistrationStore,
    StoreError,
};
use serde_json::json;
use uuid::Uuid;

/// What the cases need from a backend: fresh storage, and handles on it.
pub trait Backend: Sized {
    /// Empty storage of its own for one case, kept as long as the value lives.
    fn fresh() -> impl Future<Output = Self>;
    /// A new handle on this storage with its own connections; two stand for two replicas.
    fn connect(&self) -> impl Future<Output = Arc<dyn RegistrationStore>>;
    /// A replay guard as a deployment on this storage has it: what two of them share is what two
    /// replicas share.
    fn guard(&self) -> impl Future<Output = Arc<dyn ReplayGuard>>;
    /// The state and RAT of `client_id`'s row as the storage holds them, read past the store.
    fn stored_state_and_rat(
        &self,
        client_id: &str,
    ) -> impl Future<Output = (String, Option<String>)>;
}

/// One `#[tokio::test]` per case for the [`Backend`] `$backend`, named after the case.
// Every test binary compiles `support`; only the store test files call this.
#[allow(unused_macros)]
macro_rules! store_conformance_tests {
    ($backend:ty) => {
        $crate::support::store_conformance::store_conformance_tests! { @run $backend, #[tokio::test], [
            full_state_machine,
            change_in_flight_can_end_gone_or_removed,
            software_id_freed_by_gone_and_abandon,
            client_id_taken_by_live_record_conflicts,
            a_pending_create_can_name_its_client_id,
            a_create_keeps_its_fingerprint_until_it_completes,
            a_replacement_is_kept_only_while_it_is_in_flight,
            pending_is_ordered_and_limited,
            stored_secrets_stay_out_of_debug,
            replay_second_use_is_refused,
        ] }
        // Races need worker threads to race on.
        $crate::support::store_conformance::store_conformance_tests! { @run $backend,
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)], [
            concurrent_creates_one_wins,
            concurrent_creates_one_wins_across_connections,
            duplicates_allowed_when_not_unique,
            replay_concurrent_same_key_passes_once,
            replay_expired_key_is_reused_once,
        ] }
    };
    (@run $backend:ty, #[$test:meta], [$($case:ident,)*]) => {
        $(
            #[$test]
            async fn $case() {
                $crate::support::store_conformance::$case::<$backend>().await;
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use store_conformance_tests;

/// A fresh Pending/Create record.
pub fn record(software_id: &str) -> Registration {
    Registration {
        id: Uuid::new_v4(),
        client_id: None,
        profile: "ob-v3.1".into(),
        software_id: software_id.into(),
        org_id: Some("org-1".into()),
        state: RecordState::Pending,
        pending_op: Some(PendingOp::Create),
        software_statement: "eyJ.ssa.sig".into(),
        metadata: json!({"software_id": software_id}),
        registration_access_token: None,
        registration_client_uri: None,
        cert_subject_dn: "CN=tpp,O=Org".into(),
        cert_thumbprint_s256: "thumb".into(),
        created_at: 1_000,
        updated_at: 1_000,
        attempts: 0,
        create_fingerprint: None,
        replacement: None,
    }
}

/// Creates and completes a record whose RAT is `rat-1`.
pub async fn create_active(
    store: &dyn RegistrationStore,
    software_id: &str,
    client_id: &str,
) -> Uuid {
    let rec = record(software_id);
    store.begin_create(&rec, true).await.expect("begin_create");
    store
        .complete_create(
            rec.id,
            client_id,
            "rat-1",
            "https://proxy/register/c",
            &json!({"client_id": client_id}),
        )
        .await
        .expect("complete_create");
    rec.id
}

fn assert_err<T: std::fmt::Debug>(
    got: Result<T, StoreError>,
    want: fn(&StoreError) -> bool,
    what: &str,
) {
    match got {
        Err(e) if want(&e) => {}
        other => panic!("{what}: unexpected {other:?}"),
    }
}

fn conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict)
}

fn not_found(e: &StoreError) -> bool {
    matches!(e, StoreError::NotFound)
}

fn duplicate(e: &StoreError) -> bool {
    matches!(e, StoreError::DuplicateSoftwareId { .. })
}

/// Walks one record through every transition, ending with `c-2` Gone.
pub async fn full_state_machine<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.connect().await;
    let store = store.as_ref();
    store.ping().await.expect("ping");

    let rec = record("sw-1");
    store.begin_create(&rec, true).await.unwrap();
    // Pending(Create) is reconciler business, not visible to GET.
    let pending = store.pending(i64::MAX, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, rec.id);
    assert_eq!(pending[0].state, RecordState::Pending);
    assert_eq!(pending[0].pending_op, Some(PendingOp::Create));
    assert_eq!(pending[0].client_id, None);
    assert_eq!(pending[0].metadata, rec.metadata);
    assert!(store.pending(1_000, 10).await.unwrap().is_empty());

    store.bump_attempts(rec.id).await.unwrap();
    let bumped = store.pending(i64::MAX, 10).await.unwrap();
    assert_eq!(bumped[0].attempts, 1);
    assert!(bumped[0].updated_at > 1_000);

    let meta = json!({"a": 1, "nested": {"list": [1, "two", null]}});
    store
        .complete_create(rec.id, "c-1", "rat-1", "https://p/register/c-1", &meta)
        .await
        .unwrap();
    // A second completion (the reconciler racing, say) must not overwrite.
    assert_err(
        store
            .complete_create(rec.id, "c-x", "rat-x", "u", &json!({}))
            .await,
        conflict,
        "second complete_create",
    );
    assert_err(
        store.abandon(rec.id).await,
        conflict,
        "abandon of an Active record",
    );
    assert!(store.pending(i64::MAX, 10).await.unwrap().is_empty());

    let active = store
        .get_by_client_id("c-1")
        .await
        .unwrap()
        .expect("active record");
    assert_eq!(active.id, rec.id);
    assert_eq!(active.state, RecordState::Active);
    assert_eq!(active.pending_op, None);
    assert_eq!(active.attempts, 0);
    assert_eq!(active.registration_access_token.as_deref(), Some("rat-1"));
    assert_eq!(
        active.registration_client_uri.as_deref(),
        Some("https://p/register/c-1")
    );
    assert_eq!(active.metadata, meta);
    assert_eq!(active.software_statement, "eyJ.ssa.sig");
    assert_eq!(active.org_id.as_deref(), Some("org-1"));
    assert_eq!(active.cert_subject_dn, "CN=tpp,O=Org");
    assert_eq!(active.cert_thumbprint_s256, "thumb");
    assert_eq!(active.created_at, 1_000);

    // Replace: the old record comes back, stays visible while in flight, one change at a time.
    let before = store.begin_change("c-1", PendingOp::Replace).await.unwrap();
    assert_eq!(before.state, RecordState::Active);
    assert_eq!(before.registration_access_token.as_deref(), Some("rat-1"));
    let during = store.get_by_client_id("c-1").await.unwrap().unwrap();
    assert_eq!(during.pending_op, Some(PendingOp::Replace));
    assert_eq!(during.registration_access_token.as_deref(), Some("rat-1"));
    assert_err(
        store.begin_change("c-1", PendingOp::Delete).await,
        conflict,
        "second begin_change",
    );
    store
        .complete_replace("c-1", "rat-2", &json!({"a": 2}), "eyJ.ssa2.sig")
        .await
        .unwrap();
    let replaced = store.get_by_client_id("c-1").await.unwrap().unwrap();
    assert_eq!(replaced.state, RecordState::Active);
    assert_eq!(replaced.registration_access_token.as_deref(), Some("rat-2"));
    assert_eq!(replaced.metadata, json!({"a": 2}));
    assert_eq!(replaced.software_statement, "eyJ.ssa2.sig");
    assert_err(
        store.complete_replace("c-1", "r", &json!({}), "s").await,
        conflict,
        "complete_replace without begin_change",
    );
    assert_err(
        store.complete_replace("nobody", "r", &json!({}), "s").await,
        not_found,
        "complete_replace of an unknown client",
    );

    // Refused upstream change: back to Active, data untouched.
    store.begin_change("c-1", PendingOp::Replace).await.unwrap();
    store.cancel_change("c-1").await.unwrap();
    let mut cancelled = store.get_by_client_id("c-1").await.unwrap().unwrap();
    cancelled.updated_at = replaced.updated_at;
    assert_eq!(cancelled, replaced);
    assert_err(
        store.cancel_change("c-1").await,
        conflict,
        "cancel without a change",
    );
    assert_err(
        store.begin_change("c-1", PendingOp::Create).await,
        conflict,
        "begin_change(Create)",
    );

    // Delete.
    store.begin_change("c-1", PendingOp::Delete).await.unwrap();
    store.remove("c-1").await.unwrap();
    assert!(store.get_by_client_id("c-1").await.unwrap().is_none());
    assert_err(store.remove("c-1").await, not_found, "second remove");
    assert_err(
        store.begin_change("c-1", PendingOp::Delete).await,
        not_found,
        "begin_change of a removed client",
    );

    // Gone: invisible and further changes refused.
    create_active(store, "sw-2", "c-2").await;
    store.mark_gone("c-2").await.unwrap();
    assert!(store.get_by_client_id("c-2").await.unwrap().is_none());
    assert_err(store.mark_gone("c-2").await, not_found, "second mark_gone");
    assert_err(
        store.cancel_change("c-2").await,
        not_found,
        "cancel_change of a Gone client",
    );

    // Abandon a create the upstream refused.
    let rec3 = record("sw-3");
    store.begin_create(&rec3, true).await.unwrap();
    store.abandon(rec3.id).await.unwrap();
    assert_err(store.abandon(rec3.id).await, not_found, "second abandon");
    assert_err(
        store
            .complete_create(rec3.id, "c-3", "r", "u", &json!({}))
            .await,
        not_found,
        "complete_create of an abandoned record",
    );
    assert_err(
        store.bump_attempts(rec3.id).await,
        not_found,
        "bump_attempts of an abandoned record",
    );

    // A Gone row is kept for audit, but its dead RAT is erased in storage, not just hidden.
    assert_eq!(
        backend.stored_state_and_rat("c-2").await,
        ("gone".to_owned(), None)
    );
}

fn fingerprint(name: &str) -> CreateFingerprint {
    CreateFingerprint::of(&json!({
        "redirect_uris": ["https://tpp.example/cb2", "https://tpp.example/cb"],
        "jwks_uri": "https://directory.example/sw.jwks",
        "tls_client_auth_subject_dn": "CN=tpp,2.5.4.97=#0c0b50534447422d4643412d31",
        "client_name": name,
    }))
}

/// The fingerprint of a Pending(Create) survives the store (and a second handle on it) until the create
/// completes; the reconciler sees every pending create whatever its age, and every client_id the store has
/// known, Gone ones included.
pub async fn a_create_keeps_its_fingerprint_until_it_completes<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.connect().await;
    let replica = backend.connect().await;
    let mut rec = record("sw-fp");
    rec.create_fingerprint = Some(fingerprint("App"));
    rec.created_at = 5_000;
    store.begin_create(&rec, true).await.unwrap();
    let plain = record("sw-plain");
    store.begin_create(&plain, true).await.unwrap();

    let creates = replica.pending_creates(10).await.unwrap();
    assert_eq!(
        creates.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![plain.id, rec.id],
        "oldest first"
    );
    assert_eq!(creates[1].create_fingerprint, Some(fingerprint("App")));
    assert_eq!(creates[0].create_fingerprint, None);
    assert_eq!(replica.pending_creates(1).await.unwrap().len(), 1);
    let pending = replica.pending(i64::MAX, 10).await.unwrap();
    assert!(
        pending
            .iter()
            .any(|r| r.id == rec.id && r.create_fingerprint == Some(fingerprint("App")))
    );

    store
        .complete_create(
            rec.id,
            "c-fp",
            "rat-1",
            "https://p/register/c-fp",
            &json!({}),
        )
        .await
        .unwrap();
    let active = replica.get_by_client_id("c-fp").await.unwrap().unwrap();
    assert_eq!(active.create_fingerprint, None, "cleared once complete");
    assert_eq!(replica.pending_creates(10).await.unwrap().len(), 1);

    assert!(replica.knows_client_id("c-fp").await.unwrap());
    assert!(!replica.knows_client_id("c-never").await.unwrap());
    store.mark_gone("c-fp").await.unwrap();
    assert!(
        replica.knows_client_id("c-fp").await.unwrap(),
        "a Gone record still knows its client"
    );
    store.abandon(plain.id).await.unwrap();
    assert!(replica.pending_creates(10).await.unwrap().is_empty());
}

/// `begin_replace` is `begin_change(Replace)` that also keeps what the record becomes; every way out of
/// the change drops it.
pub async fn a_replacement_is_kept_only_while_it_is_in_flight<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.connect().await;
    let store = store.as_ref();
    create_active(store, "sw-1", "c-1").await;
    let replacement = PendingReplacement {
        fingerprint: fingerprint("App v2"),
        metadata: json!({"client_name": "App v2", "redirect_uris": ["https://tpp.example/cb"]}),
        software_statement: "eyJ.ssa2.sig".into(),
    };

    let before = store.begin_replace("c-1", &replacement).await.unwrap();
    assert_eq!(before.state, RecordState::Active);
    assert!(before.replacement.is_none());
    let during = store.get_by_client_id("c-1").await.unwrap().unwrap();
    assert_eq!(during.pending_op, Some(PendingOp::Replace));
    assert!(during.replacement == Some(replacement.clone()));
    assert_eq!(during.registration_access_token.as_deref(), Some("rat-1"));
    let pending = store.pending(i64::MAX, 10).await.unwrap();
    assert!(pending[0].replacement == Some(replacement.clone()));
    assert_err(
        store.begin_replace("c-1", &replacement).await,
        conflict,
        "second begin_replace",
    );
    assert_err(
        store.begin_replace("nobody", &replacement).await,
        not_found,
        "begin_replace of an unknown client",
    );

    store
        .complete_replace("c-1", "rat-2", &replacement.metadata, "eyJ.ssa2.sig")
        .await
        .unwrap();
    let done = store.get_by_client_id("c-1").await.unwrap().unwrap();
    assert!(done.replacement.is_none());
    assert_eq!(done.metadata, replacement.metadata);

    store.begin_replace("c-1", &replacement).await.unwrap();
    store.cancel_change("c-1").await.unwrap();
    assert!(
        store
            .get_by_client_id("c-1")
            .await
            .unwrap()
            .unwrap()
            .replacement
            .is_none()
    );

    // A plain begin_change(Replace) keeps none.
    store.begin_change("c-1", PendingOp::Replace).await.unwrap();
    assert!(
        store
            .get_by_client_id("c-1")
            .await
            .unwrap()
            .unwrap()
            .replacement
            .is_none()
    );
    store.cancel_change("c-1").await.unwrap();

    store.begin_replace("c-1", &replacement).await.unwrap();
    store.mark_gone("c-1").await.unwrap();
    assert_eq!(
        backend.stored_state_and_rat("c-1").await,
        ("gone".to_owned(), None)
    );
}

pub async fn change_in_flight_can_end_gone_or_removed<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.connect().await;
    let store = store.as_ref();
    create_active(store, "sw-1", "c-1").await;
    store.begin_change("c-1", PendingOp::Replace).await.unwrap();
    store.mark_gone("c-1").await.unwrap();
    assert!(store.get_by_client_id("c-1").await.unwrap().is_none());
    assert!(store.pending(i64::MAX, 10).await.unwrap().is_empty());

    create_active(store, "sw-2", "c-2").await;
    store.begin_change("c-2", PendingOp::Delete).await.unwrap();
    assert_eq!(store.pending(i64::MAX, 10).await.unwrap().len(), 1);
    store.cancel_change("c-2").await.unwrap();
    store.remove("c-2").await.unwrap();
    assert!(store.get_by_client_id("c-2").await.unwrap().is_none());
}

/// 20 simultaneous `begin_create`s of one software_id spread over `stores` (several handles stand for several
/// connections or replicas); returns (succeeded, refused as duplicates).
pub async fn race(stores: &[Arc<dyn RegistrationStore>], unique: bool) -> (usize, usize) {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&stores[i % stores.len()]);
            tokio::spawn(async move { store.begin_create(&record("sw-race"), unique).await })
        })
        .collect();
    let (mut ok, mut dup) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(()) => ok += 1,
            Err(StoreError::DuplicateSoftwareId { software_id }) => {
                assert_eq!(software_id, "sw-race");
                dup += 1;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    (ok, dup)
}

pub async fn concurrent_creates_one_wins<B: Backend>() {
    let backend = B::fresh().await;
    assert_eq!(race(&[backend.connect().await], true).await, (1, 19));
}

/// Two handles are two connections (or replicas): only the storage's index can keep them from both inserting.
pub async fn concurrent_creates_one_wins_across_connections<B: Backend>() {
    let backend = B::fresh().await;
    let stores = [backend.connect().await, backend.connect().await];
    assert_eq!(race(&stores, true).await, (1, 19));
}

pub async fn duplicates_allowed_when_not_unique<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.connect().await;
    assert_eq!(race(std::slice::from_ref(&store), false).await, (20, 0));
    // Non-unique rows do not block a unique one, and vice versa.
    store.begin_create(&record("sw-race"), true).await.unwrap();
    store.begin_create(&record("sw-race"), false).await.unwrap();
    assert_err(
        store.begin_create(&record("sw-race"), true).await,
        duplicate,
        "second unique record",
    );
}

pub async fn software_id_freed_by_gone_and_abandon<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.connect().await;
    let store = store.as_ref();
    create_active(store, "sw", "c-1").await;
    assert_err(
        store.begin_create(&record("sw"), true).await,
        duplicate,
        "live duplicate",
    );
    // Uniqueness is per profile.
    let mut cdr = record("sw");
    cdr.profile = "cdr-1.13".into();
    store.begin_create(&cdr, true).await.unwrap();
    store.abandon(cdr.id).await.unwrap();

    store.mark_gone("c-1").await.unwrap();
    let next = record("sw");
    store.begin_create(&next, true).await.unwrap();
    assert_err(
        store.begin_create(&record("sw"), true).await,
        duplicate,
        "pending duplicate",
    );
    store.abandon(next.id).await.unwrap();
    // The upstream may hand out the same client_id again after a Gone.
    create_active(store, "sw", "c-1").await;
    assert!(store.get_by_client_id("c-1").await.unwrap().is_some());
}

pub async fn client_id_taken_by_live_record_conflicts<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.connect().await;
    let store = store.as_ref();
    create_active(store, "sw-a", "c-1").await;
    let rec = record("sw-b");
    store.begin_create(&rec, true).await.unwrap();
    assert_err(
        store
            .complete_create(rec.id, "c-1", "r", "u", &json!({}))
            .await,
        conflict,
        "complete_create onto a taken client_id",
    );
    // The failed completion left the record Pending for the reconciler.
    assert_eq!(store.pending(i64::MAX, 10).await.unwrap().len(), 1);
}

/// With `[upstream.admin]` a pending create already names its client_id: the name is kept for the
/// reconciler, hidden from GET, and unique among live records like any other client_id.
pub async fn a_pending_create_can_name_its_client_id<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.connect().await;
    let store = store.as_ref();
    let mut rec = record("sw-named");
    rec.client_id = Some("named-1".into());
    store.begin_create(&rec, true).await.unwrap();
    assert!(store.get_by_client_id("named-1").await.unwrap().is_none());
    let pending = store.pending(i64::MAX, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].client_id.as_deref(), Some("named-1"));
    let mut twin = record("sw-twin");
    twin.client_id = Some("named-1".into());
    assert!(
        store.begin_create(&twin, false).await.is_err(),
        "a second live record cannot name the same client_id"
    );
    store
        .complete_create(rec.id, "named-1", "rat", "uri", &json!({}))
        .await
        .unwrap();
    let live = store
        .get_by_client_id("named-1")
        .await
        .unwrap()
        .expect("active");
    assert_eq!(live.state, RecordState::Active);
}

pub async fn pending_is_ordered_and_limited<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.connect().await;
    let store = store.as_ref();
    for (i, t) in [300, 100, 200].into_iter().enumerate() {
        let mut rec = record(&format!("sw-{i}"));
        rec.updated_at = t;
        store.begin_create(&rec, true).await.unwrap();
    }
    let got = store.pending(250, 10).await.unwrap();
    let times: Vec<i64> = got.iter().map(|r| r.updated_at).collect();
    assert_eq!(times, vec![100, 200]);
    assert_eq!(store.pending(i64::MAX, 1).await.unwrap().len(), 1);
    assert_eq!(store.pending(i64::MAX, 0).await.unwrap().len(), 0);
}

/// A record read back from storage still keeps its RAT and any client_secret out of `Debug`.
pub async fn stored_secrets_stay_out_of_debug<B: Backend>() {
    let backend = B::fresh().await;
    let store = backend.connect().await;
    let store = store.as_ref();
    let rec = record("sw");
    store.begin_create(&rec, true).await.unwrap();
    store
        .complete_create(
            rec.id,
            "c-1",
            "s3cr3t-rat",
            "u",
            &json!({"client_secret": "hunter2", "client_name": "n"}),
        )
        .await
        .unwrap();
    let read = store.get_by_client_id("c-1").await.unwrap().unwrap();
    assert_eq!(
        read.registration_access_token.as_deref(),
        Some("s3cr3t-rat")
    );
    let out = format!("{read:?}");
    assert!(!out.contains("s3cr3t-rat"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    assert!(out.contains("client_name"), "{out}");
}

/// Unix seconds `secs` from now (negative: in the past).
pub fn from_now(secs: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(now).expect("unix time fits i64") + secs
}

pub async fn replay_second_use_is_refused<B: Backend>() {
    let backend = B::fresh().await;
    let guard = backend.guard().await;
    let guard = guard.as_ref();
    let exp = from_now(60);
    let key = replay_key("ob", "iss", "jti-1");
    assert!(guard.check_and_record(&key, exp).await.unwrap());
    assert!(!guard.check_and_record(&key, exp).await.unwrap());
    // A later, longer-lived token with the same key is still a replay.
    assert!(!guard.check_and_record(&key, exp + 600).await.unwrap());
    assert!(
        guard
            .check_and_record(&replay_key("cdr", "iss", "jti-1"), exp)
            .await
            .unwrap()
    );
    assert!(
        guard
            .check_and_record(&replay_key("ob", "iss", "jti-2"), exp)
            .await
            .unwrap()
    );
}

/// `n` simultaneous checks of one key spread over `guards`; returns how many saw it first.
pub async fn replay_race(guards: &[Arc<dyn ReplayGuard>], key: &str, exp: i64, n: usize) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let guard = Arc::clone(&guards[i % guards.len()]);
            let key = key.to_owned();
            tokio::spawn(async move { guard.check_and_record(&key, exp).await })
        })
        .collect();
    let mut firsts = 0;
    for t in tasks {
        if t.await.expect("task").expect("check_and_record") {
            firsts += 1;
        }
    }
    firsts
}

pub async fn replay_concurrent_same_key_passes_once<B: Backend>() {
    let backend = B::fresh().await;
    let guards = [backend.guard().await, backend.guard().await];
    let guards = guards.as_slice();
    let key = replay_key("ob", "iss", "same");
    assert_eq!(replay_race(guards, &key, from_now(60), 50).await, 1);
}

/// A key is accepted again once its token has expired, and then by exactly one of several racing checks.
pub async fn replay_expired_key_is_reused_once<B: Backend>() {
    let backend = B::fresh().await;
    let guards = [backend.guard().await, backend.guard().await];
    let guards = guards.as_slice();
    let guard = &guards[0];
    let past = from_now(-120);
    let expired = replay_key("ob", "iss", "expired");
    let live = replay_key("ob", "iss", "live");
    assert!(guard.check_and_record(&expired, past).await.unwrap());
    assert!(guard.check_and_record(&live, from_now(600)).await.unwrap());
    // Even a token already past its exp is remembered for a moment, so racing checks of it see each other.
    assert!(!guard.check_and_record(&expired, past).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(replay_race(guards, &expired, from_now(60), 50).await, 1);
    assert!(
        !guard
            .check_and_record(&expired, from_now(60))
            .await
            .unwrap()
    );
    assert!(!guard.check_and_record(&live, from_now(600)).await.unwrap());
}
