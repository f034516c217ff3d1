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

/// A config in a fresh directory that loads without any server running: its own PKI, an upstream and
/// JWKS that are never contacted before a request, `listen` as given, the SQLite store at `store_path`
/// (relative to the directory), logs in `log_format`.
fn standalone_config(
    dir: &support::temp::TempDir,
    listen: &str,
    store_path: &str,
    log_format: &str,
) -> std::path::PathBuf {
    let files = support::pki::Pki::new().write_to(&dir.join("pki"));
    let toml = format!(
        r#"
[server]
listen = "{listen}"
public_url = "https://localhost:8443"
[admin]
enabled = false
[tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
[upstream]
base_url = "http://127.0.0.1:9"
registration_endpoint = "/reg"
[jwks]
ca_bundle = "{ca}"
[profile]
kind = "ob-v3.1"
audiences = ["{aud}"]
[[trust_anchors]]
issuer = "OpenBanking Ltd"
jwks_uri = "https://localhost:9/directory.jwks"
[store]
backend = "sqlite"
path = "{store_path}"
[log]
format = "{log_format}"
"#,
        cert = files.server_cert.display(),
        key = files.server_key.display(),
        ca = files.ca.display(),
        aud = support::world::OB_AUD,
    );
    let path = dir.join("proxy.toml");
    std::fs::write(&path, toml).expect("write");
    path
}

/// Runs the binary to completion (it must exit by itself) with the initial access token set.
fn run(args: &[&str]) -> std::process::Output {
    let mut child = std::process::Command::new(support::proxy::binary())
        .args(args)
        .env(support::world::IAT_ENV, "x")
        .env_remove("DCR_LOG_FORMAT")
        .env_remove("DCR_LOG_LEVEL")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn dcr-proxy");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("dcr-proxy {args:?} did not exit by itself");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// Every path under `dir` with its modification time and a digest of its contents.
fn disk_state(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let meta = std::fs::metadata(&d).expect("metadata");
        out.push(format!("{} {:?}", d.display(), meta.modified().ok()));
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let p = entry.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
                out.push(format!("{} {:?}", p.display(), digest.as_ref()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn check_config_changes_nothing_on_disk_and_still_finds_an_unusable_store() {
    let dir = support::temp::TempDir::new();
    let config = standalone_config(&dir, "127.0.0.1:0", "data/nested/dcr.sqlite", "json");
    let before = disk_state(dir.path());
    let out = run(&["--check-config", "--config", &config.display().to_string()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(": OK"), "{text}");
    assert_eq!(
        disk_state(dir.path()),
        before,
        "--check-config changed the disk"
    );
    assert!(!dir.join("data").exists());

    // A store written by a newer build is found, read-only, and blamed on store.path.
    std::fs::create_dir_all(dir.join("data/nested")).expect("mkdir");
    let db = rusqlite::Connection::open(dir.join("data/nested/dcr.sqlite")).expect("open");
    db.execute_batch(
        "CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, applied_at INTEGER NOT NULL);
         INSERT INTO schema_version VALUES (99, 0);",
    )
    .expect("schema");
    drop(db);
    let before = disk_state(dir.path());
    let out = run(&["--check-config", "--config", &config.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("store.path") && stderr.contains("version 99"),
        "{stderr}"
    );
    assert_eq!(
        disk_state(dir.path()),
        before,
        "--check-config changed the disk"
    );

    // A folder of the path that is a file cannot become a directory.
    std::fs::write(dir.join("blocked"), "a file").expect("write");
    let config = standalone_config(&dir, "127.0.0.1:0", "blocked/dcr.sqlite", "json");
    let out = run(&["--check-config", "--config", &config.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("is not a directory"), "{stderr}");
}

#[test]
fn an_address_in_use_exits_1_with_one_message_in_each_log_format() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    for format in ["text", "json"] {
        let dir = support::temp::TempDir::new();
        let config = standalone_config(&dir, &addr, "dcr.sqlite", format);
        let out = run(&["--config", &config.display().to_string()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{format}: {stderr}");
        let mentions: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("cannot listen on"))
            .collect();
        assert_eq!(mentions.len(), 1, "{format}: said once: {stderr}");
        assert!(mentions[0].contains(&addr), "{format}: {stderr}");
        if format == "json" {
            let event: serde_json::Value =
                serde_json::from_str(mentions[0]).expect("a JSON log line");
            assert_eq!(event["message"], "start-up failed");
        } else {
            assert!(
                !stderr.contains('\u{1b}'),
                "no colour into a pipe: {stderr:?}"
            );
        }
    }
    drop(taken);
}

#[test]
fn a_wrong_setting_at_start_up_exits_78_and_a_wrong_command_line_2() {
    let dir = support::temp::TempDir::new();
    std::fs::write(dir.join("blocked"), "a file").expect("write");
    let config = standalone_config(&dir, "127.0.0.1:0", "blocked/dcr.sqlite", "text");
    let out = run(&["--config", &config.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.contains("store.path")).count(),
        1,
        "said once: {stderr}"
    );

    let out = run(&["--no-such-flag"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--no-such-flag") && stderr.contains("Usage"),
        "{stderr}"
    );
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit codes"));
}

#[tokio::test]
async fn text_logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = support::temp::TempDir::new();
    let config = standalone_config(&dir, "127.0.0.1:0", "dcr.sqlite", "text");
    let mut child = tokio::process::Command::new(support::proxy::binary())
        .args(["--config", &config.display().to_string()])
        .env(support::world::IAT_ENV, "x")
        .env_remove("DCR_LOG_FORMAT")
        .env_remove("DCR_LOG_LEVEL")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let listening = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("listening") {
                return line;
            }
        }
        panic!("dcr-proxy ended without a listening line");
    })
    .await
    .expect("listening in time");
    assert!(listening.contains("INFO"), "{listening:?}");
    assert!(
        !listening.contains('\u{1b}'),
        "ANSI escapes in a log that is not a terminal: {listening:?}"
    );
    child.kill().await.expect("kill");
}

#[test]
fn a_key_of_another_pair_and_an_unreachable_database_are_explained() {
    let dir = support::temp::TempDir::new();
    let config = standalone_config(&dir, "127.0.0.1:0", "dcr.sqlite", "json");
    let other = support::pki::Pki::new().write_to(&dir.join("other"));
    let src = std::fs::read_to_string(&config).expect("read");
    let key_line = src
        .lines()
        .find(|l| l.starts_with("key = "))
        .expect("key line")
        .to_string();
    let wrong_key = src.replace(
        &key_line,
        &format!("key = \"{}\"", other.server_key.display()),
    );
    std::fs::write(&config, &wrong_key).expect("write");
    let out = run(&["--check-config", "--config", &config.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&other.server_key.display().to_string())
            && stderr.contains(&dir.join("pki/server.pem").display().to_string())
            && stderr.contains("does not belong to the certificate"),
        "{stderr}"
    );
    assert!(!stderr.contains("KeyMismatch"), "{stderr}");

    let closed = support::world::closed_port();
    let port = closed.port();
    let postgres = src.replace(
        "backend = \"sqlite\"\npath = \"dcr.sqlite\"",
        &format!(
            "backend = \"postgres\"\nurl = \"postgres://dcr@127.0.0.1:{port}/registrations\"\nconnect_timeout = \"1s\""
        ),
    );
    assert!(postgres.contains("postgres://"));
    std::fs::write(&config, &postgres).expect("write");
    let out = run(&["--check-config", "--config", &config.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    for part in [
        "store.url",
        &format!("127.0.0.1:{port}"),
        "\"registrations\"",
        "refused",
    ] {
        assert!(stderr.contains(part), "{part}: {stderr}");
    }
}
