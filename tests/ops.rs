//! Running it like a sidecar: admin endpoints, metrics, drain on SIGTERM, certificate rotation, logs.

mod support;

use std::time::Duration;

use serde_json::json;
use support::client::TlsClient;
use support::world::{Options, World};

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn live_and_metrics_answer_and_metrics_change_as_requests_are_made() {
    let w = World::ob().await;
    let live = w.proxy.admin_get("/live").await;
    assert_eq!(live.status, 200);
    let before = w.proxy.admin_get("/metrics").await.text();
    let tpp = w.tpp();
    assert_eq!(
        w.post_register(&tpp.client, &w.ob_request(&tpp, json!({})))
            .await
            .status,
        201
    );
    let bad = w.ob_request(&tpp, json!({"redirect_uris": ["http://x.example/cb"]}));
    assert_eq!(w.post_register(&tpp.client, &bad).await.status, 400);
    let _ = TlsClient::new(
        &w.pki.ca_pem(),
        Some(
            &w.pki
                .client(support::pki::ClientCertSpec::ob("u", "o").untrusted()),
        ),
    )
    .connect_only(w.proxy.addr)
    .await;
    let after = w.proxy.admin_get("/metrics").await;
    assert_eq!(after.status, 200);
    let after = after.text();
    let created = r#"dcr_proxy_requests_total{route="register",method="POST",outcome="2xx",error_code="none"}"#;
    let refused = r#"dcr_proxy_requests_total{route="register",method="POST",outcome="4xx",error_code="invalid_redirect_uri"}"#;
    assert_eq!(
        metric(&after, created) - metric(&before, created),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, refused) - metric(&before, refused),
        1.0,
        "{after}"
    );
    assert!(
        metric(&after, "dcr_proxy_jwks_fetches_total") >= 2.0,
        "{after}"
    );
    assert!(
        metric(&after, "dcr_proxy_jwks_cache_hits_total") >= 1.0,
        "{after}"
    );
    assert!(
        metric(
            &after,
            r#"dcr_proxy_upstream_duration_seconds_count{operation="create"}"#
        ) >= 1.0
    );
    assert!(
        metric(
            &after,
            r#"dcr_proxy_tls_handshake_failures_total{reason="unknown_ca"}"#
        ) >= 1.0,
        "{after}"
    );
    assert!(
        metric(
            &after,
            r#"dcr_proxy_registration_decisions_total{operation="register",profile="ob-v3.1",outcome="success""#
        ) >= 1.0
    );
    // Labels are closed sets: no client id, software id or DN ever appears.
    assert!(!after.contains(&tpp.software_id), "{after}");
}

#[tokio::test]
async fn ready_flips_when_the_upstream_goes_away() {
    let mut w = World::ob().await;
    let ready = w.proxy.admin_get("/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    // Swap in another upstream on another port and stop the one the proxy uses.
    let spare = placeholder_upstream(&w).await;
    let old = std::mem::replace(&mut w.upstream, spare);
    drop(old);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ready = w.proxy.admin_get("/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(
        ready.json()["failed"]["upstream"].is_string(),
        "{}",
        ready.text()
    );
}

/// A second real upstream on another port, so the world has one to hold while the first is gone.
async fn placeholder_upstream(w: &World) -> support::upstream::Upstream {
    support::upstream::Upstream::start(support::upstream::UpstreamOptions {
        ca_pem_path: w.files.ca.clone(),
        cert_header: Default::default(),
        port: 0,
        introspection_client_id: None,
        flavour: w.flavour(),
        env: Vec::new(),
    })
    .await
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_exits_zero() {
    let mut w = World::ob().await;
    let tpp = w.tpp();
    let client = tpp.client.clone();
    let url = w.proxy.url("/__test/slow?ms=1500");
    let admin_token = w.upstream.initial_access_token.clone();
    let slow = tokio::spawn(async move {
        client
            .request("GET", &url, &[("x-test-admin", &admin_token)], "")
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Draining: not ready, and no new connections.
    let anonymous = TlsClient::new(&w.pki.ca_pem(), None);
    assert!(
        anonymous.try_connection(w.proxy.addr).await.is_err(),
        "the listener is closed"
    );
    let resp = slow.await.expect("task");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let status = w.proxy.wait().await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_handshakes_and_old_connections_keep_working() {
    let w = World::ob().await;
    let tpp = w.tpp();
    let mut old_conn = tpp.client.connection(w.proxy.addr).await;
    let old_der = old_conn.handshake.server_certs[0].clone();
    assert_eq!(old_der, w.pki.server().cert_der);

    // A corrupt replacement is refused and the old certificate kept.
    std::fs::write(
        &w.files.server_cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let hs = tpp
        .client
        .connect_only(w.proxy.addr)
        .await
        .expect("handshake");
    assert_eq!(hs.server_certs[0], old_der, "still the old certificate");
    assert!(w.proxy.logs().join("\n").contains("TLS reload failed"));

    // A good replacement (cert and key rewritten, as Kubernetes does with a Secret).
    let new = w.pki.issue_server(&["localhost", "127.0.0.1"]);
    std::fs::write(&w.files.server_key, &new.key_pem).expect("write key");
    std::fs::write(&w.files.server_cert, &new.cert_pem).expect("write cert");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let hs = tpp
        .client
        .connect_only(w.proxy.addr)
        .await
        .expect("handshake");
    assert_eq!(
        hs.server_certs[0], new.cert_der,
        "new handshakes get the new certificate"
    );

    // The connection opened before the rotation still works.
    let resp = old_conn
        .send("GET", "/.well-known/openid-configuration", &[], "")
        .await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn sighup_applies_a_new_trust_anchor() {
    let w = World::ob().await;
    let tpp = w.tpp();
    let other = support::keys::SigningKey::rsa("other-directory-1");
    w.jwks.set(
        "/other.jwks",
        support::world::jwks_doc(&[other.public_jwk(Some("sig"))]),
    );
    let ssa_claims = w.ob_ssa_claims(&tpp, json!({"iss": "Other Directory"}));
    let body = |ssa: &str| {
        tpp.key
            .sign(json!({}), w.ob_request_claims(&tpp, ssa, json!({})))
    };
    let ssa = other.sign(json!({}), ssa_claims.clone());
    let resp = w.post_register(&tpp.client, &body(&ssa)).await;
    assert_eq!(resp.json()["error"], "unapproved_software_statement");

    let cfg = std::fs::read_to_string(&w.proxy.config_path).expect("read");
    let extra = format!(
        "\n[[trust_anchors]]\nissuer = \"Other Directory\"\njwks_uri = \"{}\"\n",
        w.jwks.url("/other.jwks")
    );
    let cfg = cfg.replace("\n[store]", &format!("{extra}\n[store]"));
    std::fs::write(&w.proxy.config_path, cfg).expect("write");
    w.proxy.signal("HUP");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let ssa = other.sign(json!({}), ssa_claims);
    let resp = w.post_register(&tpp.client, &body(&ssa)).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
}

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let w = World::start(Options::default()).await;
    let tpp = w.tpp();
    let ssa = w.ob_ssa(&tpp, json!({}));
    let request = tpp
        .key
        .sign(json!({}), w.ob_request_claims(&tpp, &ssa, json!({})));
    let resp = w.post_register(&tpp.client, &request).await;
    assert_eq!(resp.status, 201);
    let client_id = resp.json()["client_id"].as_str().expect("id").to_string();
    let at = w.token_tls(&client_id, &tpp.cert, "accounts").await.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(
        w.manage(&tpp.client, "GET", &client_id, Some(&at), "")
            .await
            .status,
        200
    );
    // A rejected request with a token in a header we do not use, and garbage tokens.
    let _ = w
        .manage(
            &tpp.client,
            "GET",
            &client_id,
            Some("garbage-token-value"),
            "",
        )
        .await;
    let db = rusqlite::Connection::open(w.dir.join("dcr.sqlite")).expect("open");
    let rat: String = db
        .query_row(
            "SELECT registration_access_token FROM registrations WHERE client_id = ?1",
            [&client_id],
            |r| r.get(0),
        )
        .expect("rat");
    let logs = w.proxy.logs().join("\n");
    assert!(logs.contains(&client_id), "the logs are captured");
    for (name, secret) in [
        (
            "initial access token",
            w.upstream.initial_access_token.as_str(),
        ),
        (
            "introspection secret",
            w.upstream.introspection_secret.as_str(),
        ),
        ("registration access token", rat.as_str()),
        ("access token", at.as_str()),
        ("garbage bearer", "garbage-token-value"),
        ("software statement", ssa.as_str()),
        ("request JWT", request.as_str()),
        ("SSA signature", ssa.rsplit('.').next().unwrap_or("x")),
    ] {
        assert!(!logs.contains(secret), "{name} leaked into the logs");
    }
    // Every line of a request carries its request id and interaction id.
    let request_lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"route\":\"register\""))
        .collect();
    assert!(!request_lines.is_empty());
    for l in request_lines {
        assert!(
            l.contains("\"request_id\"") && l.contains("\"interaction_id\""),
            "{l}"
        );
    }
}
