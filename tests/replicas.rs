//! Several replicas, one truth: two proxy processes share a real PostgreSQL in front of the real upstream.

mod support;

use std::time::Duration;

use serde_json::json;
use support::client::{Response, TlsClient};
use support::postgres::PgServer;
use support::proxy::ProxyProcess;
use support::world::{Options, Profile, World};

async fn pg_options(pg: &PgServer, profile: Profile) -> Options {
    let db = pg.create_database().await;
    Options {
        profile,
        store: Some(format!(
            "backend = \"postgres\"\nurl = \"{}\"\npool_size = 4\nconnect_timeout = \"1s\"\nstatement_timeout = \"2s\"",
            pg.url(&db)
        )),
        ..Options::default()
    }
}

async fn post(proxy: &ProxyProcess, client: &TlsClient, body: &str) -> Response {
    client
        .request(
            "POST",
            &proxy.url("/register"),
            &[("content-type", "application/jwt")],
            body.to_string(),
        )
        .await
}

async fn manage(
    proxy: &ProxyProcess,
    client: &TlsClient,
    method: &str,
    id: &str,
    token: &str,
    body: &str,
) -> Response {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("content-type", "application/jwt"));
    }
    client
        .request(
            method,
            &proxy.url(&format!("/register/{id}")),
            &headers,
            body.to_string(),
        )
        .await
}

#[tokio::test]
async fn a_registration_made_on_one_replica_is_managed_on_the_other_and_replays_are_refused() {
    let pg = PgServer::shared().await;
    let options = pg_options(pg, Profile::Ob).await;
    let w = World::start(options.clone()).await;
    let (_dir, b) = w.replica(&options).await;
    let tpp = w.tpp();

    let body = w.ob_request(&tpp, json!({}));
    let resp = post(&w.proxy, &tpp.client, &body).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    let client_id = resp.json()["client_id"].as_str().expect("id").to_string();

    // The same request JWT replayed to the other replica.
    let resp = post(&b, &tpp.client, &body).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(
        resp.json()["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("replayed jti")
    );

    let at = w.token_tls(&client_id, &tpp.cert, "accounts").await.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let resp = manage(&b, &tpp.client, "GET", &client_id, &at, "").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let put = w.ob_request(
        &tpp,
        json!({"redirect_uris": ["https://tpp.example.com/cb2"]}),
    );
    let resp = manage(&b, &tpp.client, "PUT", &client_id, &at, &put).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // A second PUT on the first replica: it must see the token the other replica rotated.
    let put = w.ob_request(&tpp, json!({}));
    let resp = manage(&w.proxy, &tpp.client, "PUT", &client_id, &at, &put).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = manage(&b, &tpp.client, "DELETE", &client_id, &at, "").await;
    assert_eq!(resp.status, 204, "{}", resp.text());
    let resp = manage(&w.proxy, &tpp.client, "GET", &client_id, &at, "").await;
    assert_eq!(resp.status, 401);
    assert!(w.upstream.clients().await.is_empty());
}

#[tokio::test]
async fn twenty_concurrent_cdr_registrations_of_one_product_over_two_replicas_make_one_client() {
    let pg = PgServer::shared().await;
    let options = pg_options(pg, Profile::Cdr).await;
    let w = World::start(options.clone()).await;
    let (_dir, b) = w.replica(&options).await;
    let adr = w.adr();
    let bodies: Vec<String> = (0..20).map(|_| w.cdr_request(&adr, json!({}))).collect();
    let results = futures::future::join_all(bodies.iter().enumerate().map(|(i, body)| {
        let proxy = if i % 2 == 0 { &w.proxy } else { &b };
        post(proxy, &adr.client, body)
    }))
    .await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(w.upstream.clients().await.len(), 1);
}

#[tokio::test]
async fn with_the_database_down_registrations_get_503_forwarding_works_and_ready_says_no() {
    let pg = PgServer::start().await;
    let options = pg_options(&pg, Profile::Ob).await;
    let w = World::start(options).await;
    let tpp = w.tpp();
    assert_eq!(w.proxy.admin_get("/ready").await.status, 200);

    pg.stop().await;
    let resp = post(&w.proxy, &tpp.client, &w.ob_request(&tpp, json!({}))).await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.header("retry-after").is_some());
    assert_eq!(resp.json()["error"], "temporarily_unavailable");
    let text = resp.text();
    assert!(
        !text.contains("postgres") && !text.contains("127.0.0.1"),
        "{text}"
    );
    // Other paths do not need the store.
    let resp = tpp
        .client
        .request(
            "GET",
            &w.proxy.url("/.well-known/openid-configuration"),
            &[],
            "",
        )
        .await;
    assert_eq!(resp.status, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let ready = w.proxy.admin_get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.json()["failed"]["store"].is_string());
    // Nothing was half-made at the upstream.
    assert!(w.upstream.clients().await.is_empty());

    pg.restart().await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(w.proxy.admin_get("/ready").await.status, 200);
    let resp = post(&w.proxy, &tpp.client, &w.ob_request(&tpp, json!({}))).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
}
