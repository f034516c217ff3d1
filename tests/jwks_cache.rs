//! The JWKS client against a real HTTPS server: coalescing, staleness, size and time bounds, redirects.

mod support;

use std::sync::Arc;
use std::time::Duration;

use dcr_proxy::jwks::JwksConfig;
use dcr_proxy::jwks::{JwksCache, JwksError};
use jsonwebtoken::Algorithm;
use support::jwks_server::JwksServer;
use support::keys::{SigningKey, jwks};
use support::pki::Pki;
use support::temp::TempDir;

struct Fixture {
    _dir: TempDir,
    server: JwksServer,
    key: SigningKey,
    ca: std::path::PathBuf,
}

async fn fixture() -> Fixture {
    let pki = Pki::new();
    let dir = TempDir::new();
    let files = pki.write_to(dir.path());
    let server = JwksServer::start(&pki).await;
    let key = SigningKey::rsa("k1");
    server.set("/keys.jwks", jwks(&[key.public_jwk(Some("sig"))]));
    Fixture {
        _dir: dir,
        server,
        key,
        ca: files.ca,
    }
}

fn config(ca: &std::path::Path) -> JwksConfig {
    JwksConfig {
        ca_bundle: Some(ca.to_path_buf()),
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_millis(800),
        max_bytes: 64 * 1024,
        ttl: Duration::from_secs(300),
        stale_for: Duration::from_secs(3600),
        refetch_interval: Duration::from_secs(30),
        max_urls: 100,
    }
}

fn url(f: &Fixture, path: &str) -> url::Url {
    url::Url::parse(&f.server.url(path)).expect("url")
}

#[tokio::test]
async fn five_hundred_concurrent_cold_lookups_make_exactly_one_fetch() {
    let f = fixture().await;
    let cache = Arc::new(JwksCache::new(config(&f.ca)).expect("cache"));
    let u = url(&f, "/keys.jwks");
    f.server.set_delay("/keys.jwks", Duration::from_millis(100));
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let cache = cache.clone();
            let u = u.clone();
            tokio::spawn(async move { cache.key_for(&u, "k1", Algorithm::PS256).await.is_ok() })
        })
        .collect();
    for t in tasks {
        assert!(t.await.expect("task"));
    }
    assert_eq!(f.server.fetch_count("/keys.jwks"), 1);
    assert_eq!(cache.fetch_count(), 1);
}

#[tokio::test]
async fn a_stale_copy_is_served_while_the_endpoint_fails_and_only_for_a_bounded_time() {
    let f = fixture().await;
    let mut cfg = config(&f.ca);
    cfg.ttl = Duration::from_millis(300);
    cfg.stale_for = Duration::from_millis(900);
    cfg.refetch_interval = Duration::from_millis(0);
    let cache = JwksCache::new(cfg).expect("cache");
    let u = url(&f, "/keys.jwks");
    assert!(cache.key_for(&u, "k1", Algorithm::PS256).await.is_ok());
    f.server.set_status("/keys.jwks", 503);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Past ttl, within stale_for: the endpoint fails, the old copy still verifies.
    assert!(cache.key_for(&u, "k1", Algorithm::PS256).await.is_ok());
    assert!(
        f.server.fetch_count("/keys.jwks") >= 2,
        "it did try the endpoint again"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    // Past ttl + stale_for: nothing usable is left.
    let err = cache.key_for(&u, "k1", Algorithm::PS256).await.err();
    assert!(
        matches!(err, Some(JwksError::Unavailable { .. })),
        "{err:?}"
    );
    // The endpoint recovers: keys come back.
    f.server.set_status("/keys.jwks", 200);
    assert!(cache.key_for(&u, "k1", Algorithm::PS256).await.is_ok());
}

#[tokio::test]
async fn oversized_slow_and_wrong_answers_are_refused() {
    let f = fixture().await;
    let cache = JwksCache::new(config(&f.ca)).expect("cache");

    let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(100 * 1024));
    f.server.set_raw("/big.jwks", big, "application/json");
    let err = cache
        .get(&url(&f, "/big.jwks"))
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().unwrap_or("").contains("larger than"),
        "{err:?}"
    );

    f.server
        .set("/slow.jwks", jwks(&[f.key.public_jwk(Some("sig"))]));
    f.server.set_delay("/slow.jwks", Duration::from_secs(3));
    let started = std::time::Instant::now();
    let err = cache.get(&url(&f, "/slow.jwks")).await.err();
    assert!(
        matches!(err, Some(JwksError::Unavailable { .. })),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by jwks.timeout"
    );

    f.server
        .set_raw("/html.jwks", "<html>hello</html>", "text/html");
    assert!(matches!(
        cache.get(&url(&f, "/html.jwks")).await.err(),
        Some(JwksError::Invalid { .. })
    ));

    // A key of the wrong type for the algorithm is unsuitable, not silently used.
    let err = cache
        .key_for(&url(&f, "/keys.jwks"), "k1", Algorithm::ES256)
        .await
        .err();
    assert!(matches!(err, Some(JwksError::Unsuitable { .. })), "{err:?}");

    // Same-origin redirects are followed; another origin is not.
    f.server
        .redirect("/moved.jwks", &f.server.url("/keys.jwks"));
    assert!(cache.get(&url(&f, "/moved.jwks")).await.is_ok());
    let other = format!("https://127.0.0.1:{}/keys.jwks", f.server.port());
    f.server.redirect("/away.jwks", &other);
    let err = cache
        .get(&url(&f, "/away.jwks"))
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().unwrap_or("").contains("another origin"),
        "{err:?}"
    );

    // Plain http is never fetched.
    let http =
        url::Url::parse(&format!("http://localhost:{}/keys.jwks", f.server.port())).expect("url");
    assert!(cache.get(&http).await.is_err());
}
