//! No orphans, no dead tokens: faults between the upstream and the store, with a real PostgreSQL and the
//! real upstream (oidc-provider, or its Keycloak stand-in by `DCR_TEST_UPSTREAM`). The upstream's fault hooks
//! (`/__fault/register`) are test doubles for timing a real server cannot be made to produce on demand.
//!
//! Keycloak names its clients itself, so a create whose answer was lost is found again through Admin REST by
//! what the proxy sent (the pending record's fingerprint), and a rotation whose answer was lost is healed with
//! a registration access token minted through Admin REST.

mod support;

use std::time::Duration;

use serde_json::json;
use support::postgres::PgServer;
use support::world::{Flavour, Options, Profile, World, not_for_this_flavour};

fn store_toml(pg: &PgServer, db: &str) -> String {
    format!(
        "backend = \"postgres\"\nurl = \"{}\"\nconnect_timeout = \"1s\"\nstatement_timeout = \"2s\"\nreconcile_interval = \"300ms\"\nreconcile_after = \"3s\"",
        pg.url(db)
    )
}

async fn pending_rows(pg: &PgServer, db: &str) -> i64 {
    pg.admin(db)
        .await
        .query_one(
            "SELECT count(*) FROM dcr_registrations WHERE state = 'pending'",
            &[],
        )
        .await
        .expect("count")
        .get(0)
}

/// A CDR registration sent while the test goes on to break something.
fn register_in_background(
    w: &World,
    adr: &support::world::Tpp,
) -> tokio::task::JoinHandle<Result<support::client::Response, support::client::Error>> {
    let client = adr.client.clone();
    let url = w.proxy.url("/register");
    let body = w.cdr_request(adr, json!({}));
    tokio::spawn(async move {
        client
            .try_request("POST", &url, &[("content-type", "application/jwt")], body)
            .await
    })
}

#[tokio::test]
async fn an_upstream_that_answers_after_our_timeout_has_its_client_deleted_again() {
    let pg = PgServer::shared().await;
    let db = pg.create_database().await;
    let w = World::start(Options {
        profile: Profile::Cdr,
        store: Some(store_toml(pg, &db)),
        upstream_extra: "timeout = \"1s\"\nsettle_timeout = \"3s\"".into(),
        ..Options::default()
    })
    .await;
    let adr = w.adr();
    w.upstream
        .fault(json!({"mode": "delay_after_create", "delay_ms": 2000, "count": 1}))
        .await;
    let started = std::time::Instant::now();
    let resp = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "the TPP is not kept waiting"
    );
    // The upstream created the client a moment ago; once its late answer arrives it is deleted again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        w.upstream.clients().await.is_empty(),
        "the late client was deleted"
    );
    assert_eq!(pending_rows(pg, &db).await, 0);
    // The software_id is free again (CDR allows one registration per product).
    let resp = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(w.upstream.clients().await.len(), 1);
}

#[tokio::test]
async fn a_database_lost_between_the_upstream_call_and_the_commit_leaves_no_client_and_heals() {
    let pg = PgServer::start().await;
    let db = pg.create_database().await;
    let w = World::start(Options {
        profile: Profile::Cdr,
        store: Some(store_toml(&pg, &db)),
        upstream_extra: "timeout = \"3s\"\nsettle_timeout = \"3s\"".into(),
        ..Options::default()
    })
    .await;
    let adr = w.adr();
    w.upstream
        .fault(json!({"mode": "delay_after_create", "delay_ms": 1500, "count": 1}))
        .await;
    let call = register_in_background(&w, &adr);
    tokio::time::sleep(Duration::from_millis(600)).await;
    pg.stop().await;
    let resp = call.await.expect("task").expect("an answer");
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(
        w.upstream.clients().await.is_empty(),
        "the created client was deleted again"
    );

    pg.restart().await;
    // The reservation written before the upstream call is released by the reconciler.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pending_rows(&pg, &db).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reconciler released the reservation"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let resp = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    // Every live record's registration token works: upstream clients = live records.
    let live: Vec<String> = pg
        .admin(&db)
        .await
        .query(
            "SELECT client_id FROM dcr_registrations WHERE state = 'active'",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(live, w.upstream.clients().await);
}

#[tokio::test]
async fn a_pending_delete_left_by_a_timeout_is_finished_by_the_reconciler() {
    let pg = PgServer::shared().await;
    let db = pg.create_database().await;
    let w = World::start(Options {
        store: Some(store_toml(pg, &db)),
        upstream_extra: "timeout = \"3s\"\nsettle_timeout = \"3s\"".into(),
        ..Options::default()
    })
    .await;
    let tpp = w.tpp();
    let resp = w
        .post_register(&tpp.client, &w.ob_request(&tpp, json!({})))
        .await;
    assert_eq!(resp.status, 201);
    let client_id = resp.json()["client_id"].as_str().expect("id").to_string();
    // Simulate a replica that died after marking the delete and before finishing it.
    pg.admin(&db)
        .await
        .execute(
            "UPDATE dcr_registrations SET state = 'pending', pending_op = 'delete', updated_at = updated_at - 60 WHERE client_id = $1",
            &[&client_id],
        )
        .await
        .expect("mark pending delete");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !w.upstream.clients().await.is_empty() || pending_rows(pg, &db).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reconciler finished the delete"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The live records (Active, or with a change in flight; not a create still pending) as (client_id, registration_client_uri, RAT).
async fn live_records(pg: &PgServer, db: &str) -> Vec<(String, String, String)> {
    pg.admin(db)
        .await
        .query(
            "SELECT client_id, registration_client_uri, registration_access_token FROM dcr_registrations
             WHERE state <> 'gone' AND registration_access_token IS NOT NULL ORDER BY client_id",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The invariant the reconciler restores: the upstream's clients are exactly the live records, and every
/// live record's registration access token still works there.
async fn assert_upstream_matches_store(w: &World, pg: &PgServer, db: &str) {
    let live = live_records(pg, db).await;
    let mut upstream = w.upstream.clients().await;
    upstream.sort();
    let ids: Vec<String> = live.iter().map(|(id, _, _)| id.clone()).collect();
    assert_eq!(ids, upstream, "upstream clients = live records");
    for (id, uri, rat) in &live {
        let resp = support::client::http_request(
            "GET",
            uri,
            &[("authorization", &format!("Bearer {rat}"))],
            "",
        )
        .await;
        assert_eq!(
            resp.status,
            200,
            "the stored token of {id} works: {}",
            resp.text()
        );
    }
}

async fn wait_until_settled(w: &World, pg: &PgServer, db: &str, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let live: Vec<String> = live_records(pg, db)
            .await
            .into_iter()
            .map(|r| r.0)
            .collect();
        let mut upstream = w.upstream.clients().await;
        upstream.sort();
        if pending_rows(pg, db).await == 0 && live == upstream {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: pending {} live {live:?} upstream {upstream:?}\n{}",
            pending_rows(pg, db).await,
            w.proxy.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn admin_options(pg: &PgServer, db: &str, profile: Profile) -> Options {
    Options {
        profile,
        store: Some(store_toml(pg, db)),
        upstream_extra: "timeout = \"3s\"\nsettle_timeout = \"3s\"".into(),
        upstream_admin: true,
        ..Options::default()
    }
}

#[tokio::test]
async fn a_keycloak_client_whose_create_answer_was_lost_is_found_but_a_sibling_in_flight_is_spared()
{
    if not_for_this_flavour(
        Flavour::Keycloak,
        "a plain RFC 7591 upstream takes the client_id the proxy names, so there is no search to guard",
    ) {
        return;
    }
    let pg = PgServer::shared().await;
    let db = pg.create_database().await;
    // Wide enough windows that a slow restart cannot reorder the steps: the orphan's record becomes old enough
    // to reconcile 14 s after it was written; the sibling's create starts at 5 s and is held upstream for 12 s,
    // so it is in flight for the reconciler's passes from 14 s to 17 s (ten of them at 300 ms), and it answers
    // 2 s before its own record (written at 5 s) is old enough to be touched. With 10 s / 3 s / 8 s the window
    // was under a second and a slow pass missed it once in CI.
    let mut options = admin_options(pg, &db, Profile::Ob);
    options.store =
        Some(store_toml(pg, &db).replace("reconcile_after = \"3s\"", "reconcile_after = \"14s\""));
    options.upstream_extra = "timeout = \"13s\"\nsettle_timeout = \"13s\"".into();
    let mut w = World::start(options).await;
    let tpp = w.tpp();
    let started = std::time::Instant::now();
    // The first registration is created upstream and its answer never reaches the proxy, which is killed.
    w.upstream
        .fault(json!({"mode": "delay_after_create", "delay_ms": 8000, "count": 1}))
        .await;
    let client = tpp.client.clone();
    let url = w.proxy.url("/register");
    let body = w.ob_request(&tpp, json!({}));
    let first = tokio::spawn(async move {
        client
            .try_request("POST", &url, &[("content-type", "application/jwt")], body)
            .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let orphan = loop {
        if let Some(id) = w.upstream.clients().await.pop() {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "created upstream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    w.kill_and_restart().await;
    assert!(first.await.expect("task").is_err());

    // The same TPP registers again with the same metadata (OB allows it) while the first record becomes old
    // enough to reconcile; this one's answer takes 8 s. Its client carries the same fingerprint and is not
    // known to the store until its answer arrives: the reconciler must leave it alone meanwhile.
    let wait = Duration::from_secs(5).saturating_sub(started.elapsed());
    tokio::time::sleep(wait).await;
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "the restart took so long that the orphan may be reconciled before the sibling is in flight long enough"
    );
    w.upstream
        .fault(json!({"mode": "delay_after_create", "delay_ms": 12000, "count": 1}))
        .await;
    let resp = w
        .post_register(&tpp.client, &w.ob_request(&tpp, json!({})))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    let second = resp.json()["client_id"].as_str().expect("id").to_string();
    assert_ne!(second, orphan);

    wait_until_settled(&w, pg, &db, "the reconciler removed the orphan only").await;
    assert_eq!(w.upstream.clients().await, vec![second.clone()]);
    assert_upstream_matches_store(&w, pg, &db).await;
    let logs = w.proxy.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains(&orphan) && l.contains("deleted with the admin credential")),
        "the reconciler says what it removed"
    );
    assert!(
        logs.iter().any(|l| l.contains("still in flight")),
        "the reconciler waited for the sibling: {}",
        logs.join("\n")
    );
}

#[tokio::test]
async fn a_keycloak_scope_policy_refusal_is_a_400_the_tpp_can_act_on_and_leaves_nothing() {
    if not_for_this_flavour(
        Flavour::Keycloak,
        "registration policies answering 403 are Keycloak's; oidc-provider's refusal is the 400 in ob_register",
    ) {
        return;
    }
    let pg = PgServer::shared().await;
    let db = pg.create_database().await;
    // The bank offers payments in its profile but its realm's "Allowed Client Scopes" policy does not.
    let w = World::start(Options {
        upstream_env: vec![("KEYCLOAK_ALLOWED_SCOPES".into(), "openid,accounts".into())],
        ..admin_options(pg, &db, Profile::Ob)
    })
    .await;
    let tpp = w.tpp();
    let resp = w
        .post_register(
            &tpp.client,
            &w.ob_request(&tpp, json!({"scope": "openid payments"})),
        )
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.json()["error"], "invalid_client_metadata");
    let description = resp.json()["error_description"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        description.contains(
            "registration policy does not allow one of the requested scopes (openid payments)"
        ),
        "{description}"
    );
    assert!(w.upstream.clients().await.is_empty(), "a 403 rolls back");
    assert_eq!(
        pending_rows(pg, &db).await,
        0,
        "the reservation is released"
    );
    let resp = w
        .post_register(
            &tpp.client,
            &w.ob_request(&tpp, json!({"scope": "openid accounts"})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_upstream_matches_store(&w, pg, &db).await;
}

#[tokio::test]
async fn a_proxy_killed_after_the_upstream_created_the_client_leaves_no_orphan_once_restarted() {
    let pg = PgServer::shared().await;
    let db = pg.create_database().await;
    let mut w = World::start(admin_options(pg, &db, Profile::Cdr)).await;
    let adr = w.adr();
    // The upstream creates the client at once and answers 8 s later: the kill lands in between.
    w.upstream
        .fault(json!({"mode": "delay_after_create", "delay_ms": 8000, "count": 1}))
        .await;
    let call = register_in_background(&w, &adr);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let created = loop {
        if let Some(id) = w.upstream.clients().await.pop() {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream created the client"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The pending record written before the upstream call already names that client, or (Keycloak, which
    // refuses a named client_id) carries the fingerprint of what was sent.
    let pending: Vec<(Option<String>, Option<serde_json::Value>)> = pg
        .admin(&db)
        .await
        .query(
            "SELECT client_id, create_fingerprint FROM dcr_registrations WHERE state = 'pending' AND pending_op = 'create'",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(pending.len(), 1);
    match w.flavour() {
        // AM honours a named client_id (AM 7.0 docs), like a plain RFC 7591 server.
        Flavour::Rfc7591 | Flavour::ForgeRockAm => {
            assert_eq!(pending[0].0.as_deref(), Some(created.as_str()))
        }
        Flavour::Keycloak => {
            assert_eq!(pending[0].0, None);
            let fp = pending[0].1.clone().expect("a fingerprint");
            assert_eq!(fp["jwks_uri"], adr.jwks_url.as_str());
            assert_eq!(
                fp["redirect_uris"],
                json!(["https://tpp.example.com/cb"]),
                "{fp}"
            );
        }
    }

    w.kill_and_restart().await;
    assert!(
        call.await.expect("task").is_err(),
        "the TPP's connection died with the proxy"
    );
    assert_eq!(
        w.upstream.clients().await,
        vec![created.clone()],
        "the orphan exists"
    );

    wait_until_settled(&w, pg, &db, "the reconciler removed the orphan").await;
    assert!(w.upstream.clients().await.is_empty());
    assert!(
        w.proxy
            .logs()
            .iter()
            .any(|l| l.contains(&created) && l.contains("deleted with the admin credential")),
        "the reconciler says what it removed"
    );
    // The product's one registration slot is free again, and the new registration is whole.
    let resp = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_upstream_matches_store(&w, pg, &db).await;
}

#[tokio::test]
async fn a_proxy_killed_after_the_upstream_rotated_the_token_leaves_no_dead_token_once_restarted() {
    let pg = PgServer::shared().await;
    let db = pg.create_database().await;
    let mut w = World::start(admin_options(pg, &db, Profile::Ob)).await;
    // A bystander's registration must come through untouched.
    let bystander = w.register(&w.tpp(), json!({})).await;
    let other = w.tpp();
    let client_id_2 = w.register(&other, json!({})).await;
    let at = w
        .token_tls(&client_id_2, &other.cert, "openid accounts")
        .await;
    assert_eq!(at.status, 200, "{}", at.text());
    let at = at.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let (_, uri, old_rat) = live_records(pg, &db)
        .await
        .into_iter()
        .find(|r| r.0 == client_id_2)
        .expect("record");

    // The upstream applies the PUT (rotating the token) at once and answers 8 s later.
    w.upstream
        .fault(json!({"mode": "delay_after_create", "method": "PUT", "delay_ms": 8000, "count": 1}))
        .await;
    let client = other.client.clone();
    let url = w.proxy.url(&format!("/register/{client_id_2}"));
    let body = w.ob_request(
        &other,
        json!({"redirect_uris": ["https://tpp.example.com/cb2"]}),
    );
    let call = tokio::spawn(async move {
        let auth = format!("Bearer {at}");
        client
            .try_request(
                "PUT",
                &url,
                &[
                    ("content-type", "application/jwt"),
                    ("authorization", &auth),
                ],
                body,
            )
            .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let resp = support::client::http_request(
            "GET",
            &uri,
            &[("authorization", &format!("Bearer {old_rat}"))],
            "",
        )
        .await;
        if resp.status == 401 {
            break; // rotated upstream; the new token exists only in the answer still on its way
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream applied the PUT"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.kill_and_restart().await;
    assert!(
        call.await.expect("task").is_err(),
        "the TPP's connection died with the proxy"
    );

    wait_until_settled(&w, pg, &db, "the reconciler settled the lost rotation").await;
    let upstream = w.upstream.clients().await;
    assert!(upstream.contains(&bystander), "{upstream:?}");
    match w.flavour() {
        // The record held a dead token; the reconciler deletes the client it can no longer manage and marks
        // the record gone (AM issues no new registration token either). The other registrations are untouched.
        Flavour::Rfc7591 | Flavour::ForgeRockAm => {
            assert!(!upstream.contains(&client_id_2), "{upstream:?}");
            assert_upstream_matches_store(&w, pg, &db).await;
            let resp = w
                .manage(&other.client, "GET", &client_id_2, Some("x"), "")
                .await;
            assert_eq!(resp.status, 401, "{}", resp.text());
        }
        // Keycloak: a new token is minted through Admin REST; the client carries the PUT's redirect URIs, so
        // the replacement is completed with it. No dead token, and no client deleted for a lost token.
        Flavour::Keycloak => {
            assert!(upstream.contains(&client_id_2), "{upstream:?}");
            assert_upstream_matches_store(&w, pg, &db).await;
            let (_, _, new_rat) = live_records(pg, &db)
                .await
                .into_iter()
                .find(|r| r.0 == client_id_2)
                .expect("record");
            assert_ne!(new_rat, old_rat);
            let at = w
                .token_tls(&client_id_2, &other.cert, "openid accounts")
                .await
                .json()["access_token"]
                .as_str()
                .expect("token")
                .to_string();
            let resp = w
                .manage(&other.client, "GET", &client_id_2, Some(&at), "")
                .await;
            assert_eq!(resp.status, 200, "{}", resp.text());
            assert_eq!(
                resp.json()["redirect_uris"],
                json!(["https://tpp.example.com/cb2"]),
                "the replacement that landed is what the record holds"
            );
            assert!(
                w.proxy
                    .logs()
                    .iter()
                    .any(|l| l.contains("it had landed upstream and its rotated token was lost")),
                "the reconciler says what it did"
            );
        }
    }
}

#[tokio::test]
async fn a_server_error_after_the_upstream_created_the_client_is_cleaned_up_by_the_reconciler() {
    let pg = PgServer::shared().await;
    let db = pg.create_database().await;
    let w = World::start(admin_options(pg, &db, Profile::Cdr)).await;
    let adr = w.adr();
    // The upstream creates the client and then answers 500: we cannot know its registration token.
    w.upstream
        .fault(json!({"mode": "error_after_create", "status": 500, "count": 1}))
        .await;
    let resp = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(
        w.upstream.clients().await.len(),
        1,
        "the upstream kept a client"
    );
    wait_until_settled(
        &w,
        pg,
        &db,
        "the reconciler removed the client behind the 500",
    )
    .await;
    assert!(w.upstream.clients().await.is_empty());
    let resp = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_upstream_matches_store(&w, pg, &db).await;
}

#[tokio::test]
async fn a_refused_admin_credential_keeps_the_pending_record_instead_of_forgetting_the_client() {
    let pg = PgServer::shared().await;
    let db = pg.create_database().await;
    // The admin client with the introspection client's secret: the token endpoint refuses it.
    let w = World::start(Options {
        upstream_admin_secret_env: Some(support::world::INTROSPECTION_ENV.into()),
        ..admin_options(pg, &db, Profile::Ob)
    })
    .await;
    let tpp = w.tpp();
    w.upstream
        .fault(json!({"mode": "error_after_create", "status": 500, "count": 1}))
        .await;
    let resp = w
        .post_register(&tpp.client, &w.ob_request(&tpp, json!({})))
        .await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    if w.flavour() == Flavour::Keycloak {
        // The service account creates the clients: refused, it created nothing and nothing is left pending.
        assert!(w.upstream.clients().await.is_empty());
        assert_eq!(pending_rows(pg, &db).await, 0);
        assert!(
            w.upstream
                .requests(&w.upstream.paths.registration)
                .await
                .is_empty(),
            "no create was sent without a token"
        );
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !w
        .proxy
        .logs()
        .iter()
        .any(|l| l.contains("pending create: admin delete failing"))
    {
        assert!(std::time::Instant::now() < deadline, "the reconciler tried");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still pending, still naming the client the upstream holds: nothing is forgotten.
    assert_eq!(pending_rows(pg, &db).await, 1);
    let upstream = w.upstream.clients().await;
    let named: String = pg
        .admin(&db)
        .await
        .query_one(
            "SELECT client_id FROM dcr_registrations WHERE state = 'pending'",
            &[],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(upstream, vec![named]);
}

#[tokio::test]
async fn an_upstream_that_ignores_the_named_client_id_gets_its_client_deleted_and_the_tpp_a_502() {
    if not_for_this_flavour(
        Flavour::Rfc7591,
        "the proxy names no client_id to Keycloak (it refuses one)",
    ) {
        return;
    }
    let pg = PgServer::shared().await;
    let db = pg.create_database().await;
    let w = World::start(admin_options(pg, &db, Profile::Cdr)).await;
    let adr = w.adr();
    // As a plain RFC 7591 server may: it issues its own client_id, so recovery could never find this client.
    w.upstream
        .fault(json!({"mode": "ignore_client_id", "count": 1}))
        .await;
    let resp = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(
        w.upstream.clients().await.is_empty(),
        "the client made under another name was deleted again"
    );
    assert_eq!(pending_rows(pg, &db).await, 0);
    assert!(
        w.proxy
            .logs()
            .iter()
            .any(|l| l.contains("ignored the client_id we named")),
        "the operator is told why"
    );
    let resp = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_upstream_matches_store(&w, pg, &db).await;
}
