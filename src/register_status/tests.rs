//! The list shapes the Register has published, and what a list says about an id as it ages.

use serde_json::json;

use super::*;

#[test]
fn every_published_list_shape_parses() {
    let cases = [
        // Software Products Statuses v3 and Data Recipients Statuses v3.
        json!({"data": [{"softwareProductId": "a", "status": "INACTIVE"}], "links": {"self": "x"}, "meta": {}}),
        json!({"data": [{"legalEntityId": "a", "status": "INACTIVE"}], "links": {"self": "x"}, "meta": {}}),
        // Data Recipients Statuses v2.
        json!({"data": [{"legalEntityId": "a", "legalEntityStatus": "INACTIVE"}]}),
        // v1 of both.
        json!({"softwareProducts": [{"softwareProductId": "a", "softwareProductStatus": "INACTIVE"}]}),
        json!({"dataRecipients": [{"dataRecipientId": "a", "dataRecipientStatus": "INACTIVE"}]}),
        // The shapes the first status check read.
        json!({"softwareProductStatusList": [{"softwareProductId": "a", "softwareProductStatus": "INACTIVE"}]}),
        json!({"data": {"softwareProducts": [{"softwareProductId": "a", "softwareProductStatus": "INACTIVE"}]}}),
    ];
    for v in cases {
        let m = parse(&v).unwrap_or_else(|| panic!("{v}"));
        assert_eq!(m.get("a").map(String::as_str), Some("INACTIVE"), "{v}");
    }
    assert!(parse(&json!({"other": []})).is_none());
    assert_eq!(status_label("SUSPENDED"), "SUSPENDED");
    assert_eq!(status_label("Weird"), "other");
}

fn checker(policy: StalePolicy) -> RegisterStatus {
    let url = Url::parse("https://127.0.0.1:1/status").expect("url");
    let http = HttpClient::new(
        None,
        Duration::from_millis(100),
        Duration::from_millis(100),
        true,
    );
    // No system roots on a slim machine: the lookups below never reach the network anyway.
    let Ok(http) = http else {
        panic!("an outbound client builds");
    };
    RegisterStatus::new(
        RegisterStatusConfig {
            software_products: url,
            data_recipients: None,
            interval: Duration::from_secs(60),
            max_stale: Duration::from_secs(60),
            policy,
            timeout: Duration::from_millis(100),
            max_bytes: 4096,
            ca_bundle: None,
            allow_withdrawal: true,
        },
        http,
    )
}

#[tokio::test]
async fn an_old_list_is_believed_for_refusals_only_and_the_policy_decides_the_rest() {
    for policy in [
        StalePolicy::Closed,
        StalePolicy::Open,
        StalePolicy::OpenForPassthrough,
    ] {
        let c = checker(policy);
        {
            let mut h = lock(&c.products.held);
            h.statuses = Arc::new(BTreeMap::from([
                ("on".to_string(), "ACTIVE".to_string()),
                ("off".to_string(), "INACTIVE".to_string()),
            ]));
            h.confirmed_at = Some(Instant::now());
            // No demand fetch in these checks.
            h.attempted_at = Some(Instant::now());
        }
        assert!(c.decide("on", None, RegisterCheck::OAuth).await.is_ok());
        let e = c
            .decide("off", None, RegisterCheck::OAuth)
            .await
            .expect_err("inactive");
        assert_eq!(e.code(), "register_not_active");
        let e = c
            .decide("gone", None, RegisterCheck::Management)
            .await
            .expect_err("unlisted");
        assert_eq!(e.code(), "register_not_active");
        // Confirmed longer ago than interval + max_stale.
        {
            let mut h = lock(&c.products.held);
            h.confirmed_at = Instant::now().checked_sub(Duration::from_secs(121));
            h.attempted_at = Some(Instant::now());
        }
        assert_eq!(
            c.decide("off", None, RegisterCheck::OAuth)
                .await
                .map_err(|e| e.code()),
            Err("register_not_active"),
            "{policy:?}"
        );
        let oauth = c
            .decide("on", None, RegisterCheck::OAuth)
            .await
            .map_err(|e| e.code());
        let register = c
            .decide("on", None, RegisterCheck::Registration)
            .await
            .map_err(|e| e.code());
        let refused = Err("register_status_unconfirmed");
        match policy {
            StalePolicy::Closed => assert_eq!((oauth, register), (refused, refused)),
            StalePolicy::Open => assert_eq!((oauth, register), (Ok(()), Ok(()))),
            StalePolicy::OpenForPassthrough => assert_eq!((oauth, register), (Ok(()), refused)),
        }
    }
}

#[tokio::test]
async fn a_refusal_for_staleness_marks_the_list_stale_without_waiting_for_a_tick() {
    let c = checker(StalePolicy::Closed);
    {
        let mut h = lock(&c.products.held);
        h.statuses = Arc::new(BTreeMap::from([("on".to_string(), "ACTIVE".to_string())]));
        // Past interval + max_stale, and a fetch tried just now: the lookup neither fetches nor ticks.
        h.confirmed_at = Instant::now().checked_sub(Duration::from_secs(121));
        h.attempted_at = Some(Instant::now());
        h.stale = false;
    }
    let e = c
        .decide("on", None, RegisterCheck::OAuth)
        .await
        .expect_err("stale, closed");
    assert_eq!(e.code(), "register_status_unconfirmed");
    assert!(
        lock(&c.products.held).stale,
        "the gauge and log were not brought up to date with the refusal"
    );
}
