//! No orphans, no dead tokens: faults between the upstream and the store, with a real PostgreSQL and the
//! real upstream. The upstream's fault hooks (`/__fault/register`) are test doubles for timing a real
//! server cannot be made to produce on demand.

mod support;

use std::time::Duration;

use serde_json::json;
use support::postgres::PgServer;
use support::world::{Options, Profile, World};

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
    let client = adr.client.clone();
    let url = w.proxy.url("/register");
    let body = w.cdr_request(&adr, json!({}));
    let call = tokio::spawn(async move {
        client
            .request("POST", &url, &[("content-type", "application/jwt")], body)
            .await
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    pg.stop().await;
    let resp = call.await.expect("task");
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
