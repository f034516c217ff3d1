use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn dir_with_files() -> PathBuf {
    let d = std::env::temp_dir().join(format!("dcr-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).expect("temp dir");
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(d.join(f), "x").expect("write");
    }
    d
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8443"
public_url = "https://localhost:8443"
[tls]
cert = "cert.pem"
key = "key.pem"
client_ca = "ca.pem"
[upstream]
base_url = "http://127.0.0.1:3000"
registration_endpoint = "/reg"
initial_access_token_env = "IAT"
[profile]
kind = "ob-v3.1"
audiences = ["0015800001041RHAAY"]
[[trust_anchors]]
issuer = "OpenBanking Ltd"
jwks_uri = "https://keystore.example/openbanking.jwks"
[store]
backend = "sqlite"
path = "dcr.sqlite"
"#;

fn env() -> HashMap<String, String> {
    HashMap::from([("IAT".to_string(), "secret-token".to_string())])
}

fn load(src: &str, vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
    Config::from_toml_str(src, "proxy.toml", &dir_with_files(), vars)
}

/// The 1-based line of the first line of `src` containing `needle`.
fn line(src: &str, needle: &str) -> usize {
    src.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` is not in the config"))
}

#[test]
fn loads_the_minimal_example_with_defaults() {
    let c = load(GOOD, &env()).expect("valid");
    assert_eq!(c.server.handshake_timeout, Duration::from_secs(10));
    assert_eq!(
        c.upstream.registration_endpoint.as_str(),
        "http://127.0.0.1:3000/reg"
    );
    assert!(c.profile.require_transport_cert_in_ssa_jwks);
    assert!(!c.profile.unique_software_id);
    assert_eq!(
        c.trust_anchors[0].algorithms,
        vec![jsonwebtoken::Algorithm::PS256]
    );
    assert!(!format!("{:?}", c.upstream).contains("secret-token"));
    assert_eq!(
        c.line_of("upstream.timeout"),
        Some(line(GOOD, "[upstream]"))
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line_and_dotted_path() {
    let src = GOOD.replace("[tls]\n", "[tls]\nclient_auht = \"required\"\n");
    let e = load(&src, &env()).expect_err("unknown key");
    assert_eq!(
        e.to_string(),
        format!(
            "proxy.toml:{}: tls.client_auht: unknown key; did you mean `client_auth`?",
            line(&src, "client_auht")
        )
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let src = GOOD
        .replace("public_url = ", "handshake_timeout = \"0s\"\npublic_url = ")
        .replace("cert = \"cert.pem\"", "cert = \"missing.pem\"")
        .replace(
            "kind = \"ob-v3.1\"",
            "kind = \"ob-v3.1\"\nrequest_algorithms = [\"HS256\", \"none\"]",
        )
        .replace(
            "\"https://keystore.example/openbanking.jwks\"",
            "\"http://keystore.example/x\"",
        );
    let e = load(&src, &HashMap::new()).expect_err("several problems");
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"tls.cert"), "{keys:?}");
    assert!(keys.contains(&"profile.request_algorithms"), "{keys:?}");
    assert!(keys.contains(&"trust_anchors[0].jwks_uri"), "{keys:?}");
    assert!(
        keys.contains(&"upstream.initial_access_token_env"),
        "{keys:?}"
    );
    assert!(e.problems.len() >= 5, "{e}");
}

/// Syntax aside, one of each kind of mistake: reading (unknown key, wrong type, missing key) and meaning.
#[test]
fn ten_mistakes_give_ten_messages_each_with_its_line() {
    let src = GOOD
        .replace("[tls]\n", "[tls]\nclient_auht = \"required\"\n")
        .replace("public_url = ", "max_body_bytes = \"big\"\npublic_url = ")
        .replace("registration_endpoint = \"/reg\"\n", "timeout = \"1.5s\"\n")
        .replace("kind = \"ob-v3.1\"", "kind = \"ob-v4\"")
        .replace("listen = \"127.0.0.1:8443\"", "listen = \"nowhere\"")
        .replace(
            "\"https://keystore.example/openbanking.jwks\"",
            "\"http://keystore.example/x\"",
        )
        .replace("backend = \"sqlite\"", "backend = \"mysql\"")
        + "[log]\nformat = \"yaml\"\n[extra]\nx = 1\n";
    let e = load(&src, &env()).expect_err("ten problems");
    assert_eq!(e.problems.len(), 10, "{e}");
    let at = |needle: &str| line(&src, needle);
    let expected = [
        (
            at("listen ="),
            "server.listen",
            "`nowhere` is not an address",
        ),
        (
            at("max_body_bytes"),
            "server.max_body_bytes",
            "invalid type: string \"big\"",
        ),
        (
            at("client_auht"),
            "tls.client_auht",
            "unknown key; did you mean `client_auth`?",
        ),
        (
            at("[upstream]"),
            "upstream.registration_endpoint",
            "missing; this key is required",
        ),
        (
            at("timeout ="),
            "upstream.timeout",
            "`1.5s`: decimals are not allowed; use 1500ms",
        ),
        (
            at("kind ="),
            "profile.kind",
            "`ob-v4` must be one of \"ob-v3.1\", \"cdr-1.13\"",
        ),
        (
            at("jwks_uri ="),
            "trust_anchors[0].jwks_uri",
            "must be an absolute https URL",
        ),
        (
            at("backend ="),
            "store.backend",
            "`mysql` must be \"sqlite\" or \"postgres\"",
        ),
        (
            at("format ="),
            "log.format",
            "`yaml` must be \"json\" or \"text\"",
        ),
        (at("[extra]"), "extra", "unknown table"),
    ];
    let lines: Vec<String> = e.to_string().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), expected.len(), "{e}");
    for (n, key, text) in expected {
        let prefix = format!("proxy.toml:{n}: {key}: ");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(text)),
            "no `{prefix}…{text}…` in:\n{e}"
        );
    }
}

#[test]
fn a_syntax_error_shows_the_line_with_a_caret_under_the_spot() {
    let src = GOOD.replace("backend = \"sqlite\"", "backend = sqlite");
    let e = load(&src, &env()).expect_err("syntax");
    let n = line(&src, "backend =");
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(&format!("proxy.toml:{n}: TOML syntax: ")),
        "{text}"
    );
    assert_eq!(lines[1], format!("  {n} | backend = sqlite"), "{text}");
    assert_eq!(
        lines[2],
        format!(
            "  {} | {}^",
            " ".repeat(n.to_string().len()),
            " ".repeat(10)
        ),
        "{text}"
    );
}

#[test]
fn a_missing_table_is_one_problem_not_one_per_key() {
    let src = GOOD.replace(
        "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nclient_ca = \"ca.pem\"\n",
        "",
    );
    let e = load(&src, &env()).expect_err("no [tls]");
    assert_eq!(
        e.to_string(),
        "proxy.toml: tls: missing; the [tls] table is required"
    );
}

#[test]
fn a_key_of_the_wrong_type_is_named_and_not_checked_again() {
    let src = GOOD.replace("listen = \"127.0.0.1:8443\"", "listen = 8443");
    let e = load(&src, &env()).expect_err("wrong type");
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].key, "server.listen");
    assert_eq!(e.problems[0].line, Some(line(&src, "listen =")));
}

#[test]
fn a_bad_profile_kind_does_not_hide_the_rest_of_the_profile() {
    let src = GOOD.replace(
        "kind = \"ob-v3.1\"",
        "kind = \"ob\"\nclock_skew = \"ten\"\ndn_match = \"fuzzy\"",
    );
    let e = load(&src, &env()).expect_err("bad kind");
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["profile.kind"], "{e}");
    let src = src.replace("kind = \"ob\"", "kind = \"cdr-1.13\"");
    let e = load(&src, &env()).expect_err("bad values");
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"profile.clock_skew"), "{e}");
    assert!(keys.contains(&"profile.dn_match"), "{e}");
}

#[test]
fn a_bad_log_format_from_the_environment_is_blamed_on_the_variable() {
    let mut vars = env();
    vars.insert("DCR_LOG_FORMAT".into(), "yaml".into());
    let e = load(GOOD, &vars).expect_err("bad env");
    assert_eq!(
        e.to_string(),
        "environment variable DCR_LOG_FORMAT (overrides log.format in proxy.toml): `yaml` must be \"json\" or \"text\""
    );
    vars.insert("DCR_LOG_FORMAT".into(), "text".into());
    let c = load(&format!("{GOOD}[log]\nformat = \"yaml\"\n"), &vars).expect("env wins");
    assert_eq!(c.log.format, crate::telemetry::LogFormat::Text);
}

#[test]
fn the_upstream_admin_section_is_checked_key_by_key() {
    let with_admin = |body: &str| {
        GOOD.replace(
            "[profile]\n",
            &format!("[upstream.admin]\n{body}\n[profile]\n"),
        )
    };
    let src = with_admin("token_endpoint = \"/token\"\nclient_id = \"dcr-admin\"");
    let e = load(&src, &env()).expect_err("no secret");
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, vec!["upstream.admin.client_secret_env"], "{e}");
    assert!(
        e.to_string().contains("DCR_UPSTREAM_ADMIN_CLIENT_SECRET"),
        "{e}"
    );

    let mut vars = env();
    vars.insert(
        "DCR_UPSTREAM_ADMIN_CLIENT_SECRET".into(),
        "admin-secret".into(),
    );
    let c = load(&src, &vars).expect("valid");
    let admin = c.upstream.admin.as_ref().expect("admin");
    assert_eq!(admin.token_endpoint.as_str(), "http://127.0.0.1:3000/token");
    assert!(!format!("{:?}", c.upstream).contains("admin-secret"));

    let typo = with_admin("token_endpoint = \"/token\"\nclient = \"x\"");
    let e = load(&typo, &vars).expect_err("typo");
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["upstream.admin.client_id", "upstream.admin.client"],
        "{e}"
    );
}

#[test]
fn postgres_settings_the_driver_would_refuse_are_refused_here() {
    let pg = |store: &str| {
        GOOD.replace(
            "backend = \"sqlite\"\npath = \"dcr.sqlite\"",
            &format!("backend = \"postgres\"\n{store}"),
        )
    };
    let e = load(
        &pg("url = \"postgres://dcr:hunter2@db:5432/dcr\"\npool_size = 0\nstatement_timeout = \"0s\""),
        &env(),
    )
    .expect_err("password, pool, timeout");
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["store.url", "store.pool_size", "store.statement_timeout"],
        "{e}"
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");

    // The driver also takes a password as a query parameter.
    let e = load(
        &pg("url = \"postgres://dcr@db/dcr?password=hunter2\""),
        &env(),
    )
    .expect_err("password parameter");
    assert_eq!(e.problems[0].key, "store.url", "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");

    let c = load(&pg("url = \"postgres://dcr@db:5432/dcr\""), &env()).expect("valid");
    assert!(matches!(c.store, crate::store::StoreConfig::Postgres(_)));
}

#[test]
fn management_scope_must_be_one_token() {
    let src = format!(
        "{GOOD}[management]\ntoken_validation = \"jwt\"\njwks_uri = \"https://idp/jwks\"\nissuer = \"https://idp\"\nrequired_scope = \"a b\"\n"
    );
    let e = load(&src, &env()).expect_err("two scopes");
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["management.required_scope"], "{e}");
}

#[test]
fn durations_need_units_and_whole_numbers() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert!(parse_duration("10").is_err());
    assert!(parse_duration("10 days").is_err());
    let decimal = |s: &str| parse_duration(s).expect_err("decimal");
    assert_eq!(
        decimal("1.5s"),
        "`1.5s`: decimals are not allowed; use 1500ms"
    );
    assert_eq!(decimal("0.5m"), "`0.5m`: decimals are not allowed; use 30s");
    assert_eq!(decimal("1.5h"), "`1.5h`: decimals are not allowed; use 90m");
    assert!(decimal("0.0001s").contains("whole number"));
}

/// The annotated proxy.toml at the repository root loads, and what it writes for the connection, store and
/// pass-through limits is what a file that leaves them out gets: the documented defaults are the real ones.
#[test]
fn the_annotated_example_loads_with_the_default_limits() {
    let d = std::env::temp_dir().join(format!("dcr-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(d.join(".local/pki")).expect("temp dir");
    for f in ["server.pem", "server-key.pem", "ca.pem"] {
        std::fs::write(d.join(".local/pki").join(f), "x").expect("write");
    }
    let vars = HashMap::from(
        [
            "DCR_UPSTREAM_INITIAL_ACCESS_TOKEN",
            "DCR_UPSTREAM_ADMIN_CLIENT_SECRET",
            "DCR_MANAGEMENT_CLIENT_SECRET",
        ]
        .map(|k| (k.to_string(), "x".to_string())),
    );
    let annotated =
        Config::from_toml_str(include_str!("../../proxy.toml"), "proxy.toml", &d, &vars)
            .expect("the annotated example is valid");
    let _ = std::fs::remove_dir_all(&d);
    let defaults = load(GOOD, &env()).expect("valid");
    let (a, b) = (&annotated.server, &defaults.server);
    assert_eq!(a.idle_timeout, b.idle_timeout);
    assert_eq!(a.idle_timeout, Duration::from_secs(10));
    assert_eq!(a.max_connections, None);
    assert_eq!(a.max_connections_per_address, b.max_connections_per_address);
    assert_eq!(a.reserved_fds, b.reserved_fds);
    assert_eq!(a.max_concurrent_streams, b.max_concurrent_streams);
    assert_eq!(
        a.max_concurrent_registrations,
        b.max_concurrent_registrations
    );
    assert_eq!(a.max_header_bytes, b.max_header_bytes);
    assert_eq!(a.max_header_total_bytes, b.max_header_total_bytes);
    assert_eq!(a.admin_idle_timeout, b.admin_idle_timeout);
    assert_eq!(a.admin_max_connections, b.admin_max_connections);
    assert_eq!(
        annotated.forward.limits,
        crate::forward::ForwardLimits::default()
    );
    assert_eq!(
        defaults.forward.limits,
        crate::forward::ForwardLimits::default()
    );
    let replay = |c: &Config| match &c.store {
        crate::store::StoreConfig::Sqlite {
            replay_cache_bytes, ..
        } => *replay_cache_bytes,
        crate::store::StoreConfig::Postgres(_) => 0,
    };
    assert_eq!(replay(&annotated), replay(&defaults));
    assert_eq!(replay(&annotated), 64 << 20);
}

#[test]
fn connection_and_header_limits_out_of_range_are_named() {
    let src = GOOD.replace(
        "[server]\n",
        "[server]\nmax_connections = 10\nmax_connections_per_address = 20\nmax_header_bytes = 4096\nmax_header_total_bytes = 2048\nidle_timeout = \"0s\"\n",
    );
    let e = load(&src, &env()).expect_err("invalid");
    let text = e.to_string();
    for key in [
        "server.max_connections_per_address",
        "server.max_header_total_bytes",
        "server.idle_timeout",
    ] {
        assert!(text.contains(key), "{key} in {text}");
    }
}
