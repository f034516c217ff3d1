//! Revoked TPP certificates are refused at the front door: CRLs from a file and from an https URL, signed by the
//! test PKI's root, against the real proxy binary; stale CRLs under the closed and the pass-through-open policies;
//! a certificate that expires after the verifier remembered its chain.

mod support;

use std::future::Future;
use std::time::Duration;

use rustls::AlertDescription;
use serde_json::json;
use support::client::tls_alert;
use support::pki::ClientCertSpec;
use support::world::{CRL_PATH, Options, Tpp, World, base62};

/// Reload polls run every 200ms in the test world and CRL URLs here every 500ms; this is ample on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(15);

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(w: &World) -> String {
    w.proxy.admin_get("/metrics").await.text()
}

/// Polls `check` until it holds; panics with `what` when it does not within [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The TLS alert the proxy answers `tpp`'s handshake with; None when the handshake completes. A connection the
/// proxy closes right after the handshake also counts as refused (`Some(CloseNotify)`): that is an open connection
/// cut by a CRL that came into force while the handshake ran.
async fn handshake_alert(w: &World, tpp: &Tpp) -> Option<AlertDescription> {
    match tpp.client.connect_only(w.proxy.addr).await {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Some(AlertDescription::CloseNotify)
        }
        Err(e) => Some(tls_alert(&e).unwrap_or_else(|| panic!("not a TLS alert: {e}"))),
    }
}

fn logged(w: &World, needle: &str) -> bool {
    w.proxy.logs().iter().any(|l| l.contains(needle))
}

/// The verifier remembers accepted chains (src/tls/chains.rs); the dates must still be checked on every
/// handshake, so a certificate that expires after it was accepted is refused from then on.
#[tokio::test]
async fn a_certificate_accepted_before_it_expired_is_refused_after() {
    let w = World::start(Options::default()).await;
    // X.509 dates have whole seconds: each certificate ends 9 to 10 s after `issued`, time enough for four
    // handshakes on a loaded machine.
    let issued = tokio::time::Instant::now();
    let tpp = w.tpp_with(ClientCertSpec::ob(base62(18), base62(18)).expires_in_secs(10));
    let intermediate = w.tpp_with(
        ClientCertSpec::ob(base62(18), base62(18))
            .via_intermediate()
            .expires_in_secs(10),
    );
    for t in [&tpp, &intermediate] {
        assert_eq!(handshake_alert(&w, t).await, None, "valid now");
        assert_eq!(handshake_alert(&w, t).await, None, "and remembered");
    }
    tokio::time::sleep_until(issued + Duration::from_millis(11_500)).await;
    for t in [&tpp, &intermediate] {
        assert_eq!(
            handshake_alert(&w, t).await,
            Some(AlertDescription::CertificateExpired)
        );
    }
}

#[tokio::test]
async fn a_revoked_tpp_certificate_is_refused_at_the_handshake_once_the_crl_file_changes() {
    let w = World::start(Options {
        crl_file: true,
        ..Options::default()
    })
    .await;
    let revoked = w.tpp();
    let other = w.tpp();
    assert_eq!(handshake_alert(&w, &revoked).await, None, "not revoked yet");

    w.publish_crl_file(&w.pki.fresh_crl(&[&revoked.cert]));
    eventually("the rewritten CRL file is in force", || async {
        handshake_alert(&w, &revoked).await.is_some()
    })
    .await;
    assert_eq!(
        handshake_alert(&w, &revoked).await,
        Some(AlertDescription::CertificateRevoked)
    );
    // The same CA's other certificates are untouched: a whole registration goes through.
    w.register(&other, json!({})).await;

    let m = metrics(&w).await;
    assert!(
        metric(
            &m,
            "dcr_proxy_tls_handshake_failures_total{reason=\"revoked_certificate\"}"
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "dcr_proxy_crl_stale "), 0.0, "{m}");
    assert!(logged(&w, "\"reason\":\"revoked_certificate\""));
    assert!(logged(&w, "CRL file loaded"));
}

#[tokio::test]
async fn a_certificate_revoked_while_connected_is_cut_off_at_the_next_crl_refresh() {
    let w = World::start(Options {
        crl_url: true,
        tls_extra: "crl_refresh_interval = \"500ms\"".into(),
        ..Options::default()
    })
    .await;
    let tpp = w.tpp();
    let bystander = w.tpp();
    let mut conn = tpp.client.connection(w.proxy.addr).await;
    let mut other_conn = bystander.client.connection(w.proxy.addr).await;
    for c in [&mut conn, &mut other_conn] {
        let r = c
            .send("GET", "/.well-known/openid-configuration", &[], "")
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(w.jwks.fetch_count(CRL_PATH) >= 1, "fetched at start");

    w.publish_crl_url(&w.pki.fresh_crl(&[&tpp.cert]));
    eventually(
        "the connection of the revoked certificate is closed",
        || {
            let closed = conn.is_closed();
            async move { closed }
        },
    )
    .await;
    assert!(
        conn.try_send("GET", "/.well-known/openid-configuration", &[], "")
            .await
            .is_err(),
        "no request goes through the closed connection"
    );
    // The other TPP's connection lives on.
    let r = other_conn
        .send("GET", "/.well-known/openid-configuration", &[], "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        handshake_alert(&w, &tpp).await,
        Some(AlertDescription::CertificateRevoked)
    );

    let m = metrics(&w).await;
    assert_eq!(
        metric(
            &m,
            "dcr_proxy_revoked_connections_closed_total{reason=\"revoked_certificate\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(logged(
        &w,
        "closing a connection whose client certificate the current CRLs refuse"
    ));
    assert!(logged(&w, "CRL fetched"));
}

#[tokio::test]
async fn a_stale_crl_under_the_closed_policy_refuses_until_a_fresh_one_loads() {
    let w = World::start(Options {
        crl_file: true,
        tls_extra: "crl_max_stale = \"0s\"".into(),
        ..Options::default()
    })
    .await;
    let tpp = w.tpp();
    assert_eq!(handshake_alert(&w, &tpp).await, None);

    w.publish_crl_file(&w.pki.stale_crl(&[]));
    eventually("the stale CRL refuses handshakes", || async {
        handshake_alert(&w, &tpp).await.is_some()
    })
    .await;
    // rustls answers an unknown revocation status as OpenSSL does, with unknown_ca.
    assert_eq!(
        handshake_alert(&w, &tpp).await,
        Some(AlertDescription::UnknownCA)
    );
    let m = metrics(&w).await;
    assert!(
        metric(
            &m,
            "dcr_proxy_tls_handshake_failures_total{reason=\"revocation_unknown\"}"
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "dcr_proxy_crl_stale "), 1.0, "{m}");
    assert!(logged(&w, "CRL stale beyond crl_max_stale"));

    w.publish_crl_file(&w.pki.fresh_crl(&[]));
    eventually("a fresh CRL lets the certificate in again", || async {
        handshake_alert(&w, &tpp).await.is_none()
    })
    .await;
    w.register(&tpp, json!({})).await;
    assert_eq!(metric(&metrics(&w).await, "dcr_proxy_crl_stale "), 0.0);

    // A CRL goes stale by the clock alone, with no file change: fresh, it revokes `revoked`; stale, the closed
    // policy no longer takes its word and answers unknown_ca.
    let revoked = w.tpp();
    let now = time::OffsetDateTime::now_utc();
    w.publish_crl_file(&w.pki.crl(
        &[&revoked.cert],
        now - time::Duration::hours(1),
        now + time::Duration::seconds(8),
    ));
    eventually("the short-lived CRL is in force", || async {
        handshake_alert(&w, &revoked).await == Some(AlertDescription::CertificateRevoked)
    })
    .await;
    eventually(
        "the short-lived CRL goes stale at its nextUpdate",
        || async { handshake_alert(&w, &revoked).await == Some(AlertDescription::UnknownCA) },
    )
    .await;
    assert_eq!(
        handshake_alert(&w, &tpp).await,
        Some(AlertDescription::UnknownCA)
    );
}

#[tokio::test]
async fn crl_urls_are_fetched_on_sighup_within_size_and_time_caps() {
    let w =
        World::start(Options {
            crl_url: true,
            tls_extra:
                "crl_refresh_interval = \"1h\"\ncrl_max_bytes = 2048\ncrl_fetch_timeout = \"1s\""
                    .into(),
            ..Options::default()
        })
        .await;
    let tpp = w.tpp();
    let failures = |m: &str| metric(m, "dcr_proxy_crl_refresh_failures_total");
    let before = failures(&metrics(&w).await);

    // Too large: refused, and the CRL held stays in force.
    w.jwks
        .set_raw(CRL_PATH, vec![b'x'; 4096], "application/pkix-crl");
    w.proxy.signal("HUP");
    eventually("the oversized CRL is refused", || async {
        failures(&metrics(&w).await) > before
    })
    .await;
    assert!(logged(&w, "larger than 2048 bytes"));
    assert_eq!(handshake_alert(&w, &tpp).await, None);

    // Too slow: refused the same way.
    w.publish_crl_url(&w.pki.fresh_crl(&[&tpp.cert]));
    w.jwks.set_delay(CRL_PATH, Duration::from_secs(3));
    let before = failures(&metrics(&w).await);
    w.proxy.signal("HUP");
    eventually("the slow CRL is given up on", || async {
        failures(&metrics(&w).await) > before
    })
    .await;
    assert!(logged(&w, "no answer within"));
    assert_eq!(handshake_alert(&w, &tpp).await, None);

    // Within the caps, SIGHUP fetches it at once although the refresh interval is an hour.
    w.jwks.set_delay(CRL_PATH, Duration::ZERO);
    w.proxy.signal("HUP");
    eventually("SIGHUP fetched the CRL that revokes the TPP", || async {
        handshake_alert(&w, &tpp).await == Some(AlertDescription::CertificateRevoked)
    })
    .await;
}

#[tokio::test]
async fn a_stale_crl_under_the_pass_through_open_policy_pauses_registration_only() {
    let w = World::start(Options {
        crl_file: true,
        tls_extra: "crl_max_stale = \"0s\"\ncrl_stale_policy = \"open_for_passthrough\"".into(),
        ..Options::default()
    })
    .await;
    let revoked = w.tpp();
    let tpp = w.tpp();
    let registered = w.register(&tpp, json!({})).await;

    w.publish_crl_file(&w.pki.stale_crl(&[&revoked.cert]));
    eventually("the stale CRL is in force", || async {
        handshake_alert(&w, &revoked).await.is_some()
    })
    .await;
    // What the stale CRL lists is still revoked.
    assert_eq!(
        handshake_alert(&w, &revoked).await,
        Some(AlertDescription::CertificateRevoked)
    );
    // Everyone else gets through the handshake, and pass-through traffic flows.
    assert_eq!(handshake_alert(&w, &tpp).await, None);
    let r = tpp
        .client
        .request(
            "GET",
            &w.proxy.url("/.well-known/openid-configuration"),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Registration and management wait for a fresh CRL.
    let r = w
        .post_register(&tpp.client, &w.ob_request(&tpp, json!({})))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert!(
        r.json()["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("revocation")),
        "{}",
        r.text()
    );
    assert!(r.header("retry-after").is_some());
    let r = w
        .manage(&tpp.client, "GET", &registered, Some("any-token"), "")
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    let m = metrics(&w).await;
    assert_eq!(metric(&m, "dcr_proxy_crl_stale "), 1.0, "{m}");
    assert!(logged(&w, "FAIL-OPEN for pass-through"));

    w.publish_crl_file(&w.pki.fresh_crl(&[&revoked.cert]));
    eventually("registration resumes with a fresh CRL", || async {
        w.post_register(&tpp.client, &w.ob_request(&tpp, json!({})))
            .await
            .status
            != 503
    })
    .await;
    assert_eq!(metric(&metrics(&w).await, "dcr_proxy_crl_stale "), 0.0);
    assert_eq!(
        handshake_alert(&w, &revoked).await,
        Some(AlertDescription::CertificateRevoked)
    );
}
