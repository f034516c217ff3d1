use std::collections::HashMap;
use std::time::Duration;

use super::*;

fn dir_with_files() -> super::scratch::Scratch {
    super::scratch::Scratch::with_tls_files("dcr-cfg")
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

#[test]
fn management_settings_that_cannot_work_are_refused_with_their_key() {
    let jwt = "token_validation = \"jwt\"\nissuer = \"https://idp\"\n";
    let cases: &[(&str, &str)] = &[
        (
            "jwks_uri = \"https://idp/jwks\"\nalgorithms = []\n",
            "management.algorithms",
        ),
        (
            "jwks_uri = \"https://idp/jwks\"\nalgorithms = [\"PS256\", \"HS256\"]\n",
            "management.algorithms",
        ),
        ("jwks_uri = \"http://idp/jwks\"\n", "management.jwks_uri"),
        (
            "jwks_uri = \"https://idp/jwks\"\nrevocation_endpoint = \"/revoke\"\n",
            "management.revocation_endpoint",
        ),
    ];
    for (extra, key) in cases {
        let src = format!("{GOOD}[management]\n{jwt}{extra}");
        let e = load(&src, &env()).expect_err(extra);
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, [*key], "{extra}: {e}");
    }
    let intro = |endpoint: &str| {
        format!(
            "{GOOD}[management]\ntoken_validation = \"introspection\"\nintrospection_endpoint = \"{endpoint}\"\nclient_id = \"c\"\nclient_secret_env = \"MGMT\"\n"
        )
    };
    let mut with_secret = env();
    with_secret.insert("MGMT".into(), "s".into());
    assert!(load(&intro("/introspect"), &with_secret).is_ok());
    let e = load(&intro("/introspect"), &env()).expect_err("no secret");
    assert_eq!(e.problems[0].key, "management.client_secret_env", "{e}");
    let e = load(&intro("ftp://idp/introspect"), &with_secret).expect_err("ftp");
    assert_eq!(
        e.problems[0].key, "management.introspection_endpoint",
        "{e}"
    );
}

#[test]
fn crl_settings_default_to_off_and_closed() {
    let c = load(GOOD, &env()).expect("valid");
    assert!(!c.tls.crl.enabled());
    assert_eq!(
        c.tls.crl.stale_policy,
        crate::tls::revocation::StalePolicy::Closed
    );
    assert_eq!(c.tls.crl.refresh_interval, Duration::from_secs(300));
    assert_eq!(c.tls.crl.max_stale, Duration::from_secs(3600));
    assert_eq!(c.tls.crl.max_bytes, 10 * 1024 * 1024);

    let src = GOOD.replace(
        "client_ca = \"ca.pem\"\n",
        "client_ca = \"ca.pem\"\ncrl_files = [\"ca.pem\"]\ncrl_urls = [\"http://crl.example/ca.crl\"]\n\
         crl_stale_policy = \"open_for_passthrough\"\ncrl_max_stale = \"0s\"\n",
    );
    let c = load(&src, &env()).expect("valid");
    assert!(c.tls.crl.enabled());
    assert_eq!(c.tls.crl.urls[0].as_str(), "http://crl.example/ca.crl");
    assert_eq!(c.tls.crl.max_stale, Duration::ZERO);
    assert_eq!(
        c.tls.crl.stale_policy,
        crate::tls::revocation::StalePolicy::OpenForPassthrough
    );
}

#[test]
fn crl_settings_that_cannot_work_are_refused_with_their_key() {
    let src = GOOD.replace(
        "client_ca = \"ca.pem\"\n",
        "client_ca = \"ca.pem\"\ncrl_files = [\"ca.pem\", \"missing.crl\"]\n\
         crl_urls = [\"ftp://crl.example/ca.crl\", \"https://crl.example/a.crl\", \"https://crl.example/a.crl\"]\n\
         crl_refresh_interval = \"0s\"\ncrl_fetch_timeout = \"10\"\ncrl_max_bytes = 10\n\
         crl_ca_bundle = \"nope.pem\"\ncrl_stale_policy = \"lenient\"\n",
    );
    let e = load(&src, &env()).expect_err("every crl_ key is wrong");
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "tls.crl_files[1]",
            "tls.crl_urls[0]",
            "tls.crl_urls[2]",
            "tls.crl_refresh_interval",
            "tls.crl_fetch_timeout",
            "tls.crl_max_bytes",
            "tls.crl_ca_bundle",
            "tls.crl_stale_policy",
        ],
        "{e}"
    );
    assert!(e.to_string().contains("listed twice"), "{e}");
    assert!(e.to_string().contains("\"open_for_passthrough\""), "{e}");
}

#[test]
fn request_max_age_defaults_to_five_minutes_and_stays_within_an_hour() {
    let c = load(GOOD, &env()).expect("valid");
    assert_eq!(c.profile.request_max_age, Duration::from_secs(300));
    let with = |v: &str| {
        GOOD.replace(
            "audiences = [\"0015800001041RHAAY\"]",
            &format!("audiences = [\"0015800001041RHAAY\"]\nrequest_max_age = \"{v}\""),
        )
    };
    let c = load(&with("90s"), &env()).expect("valid");
    assert_eq!(c.profile.request_max_age, Duration::from_secs(90));
    for bad in ["0s", "2h", "61m", "5"] {
        let e = load(&with(bad), &env()).expect_err(bad);
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["profile.request_max_age"], "{bad}: {e}");
    }
    assert!(load(&with("1h"), &env()).is_ok());
}

#[test]
fn certificate_header_names_and_chain_length_are_checked_against_the_format() {
    let c = load(GOOD, &env()).expect("valid");
    assert_eq!(c.forward.cert_header.name, "client-cert");
    assert_eq!(c.forward.cert_header.chain_name, "client-cert-chain");
    assert_eq!(c.forward.cert_header.chain_max, 1);

    let src = format!(
        "{GOOD}[forward]\ncert_header = \"nginx\"\ncert_header_name = \"X-SSL-Client-Cert\"\n\
         cert_verify_header_name = \"X-SSL-Client-Verify\"\ncert_chain_max = 0\n"
    );
    let c = load(&src, &env()).expect("valid");
    assert_eq!(c.forward.cert_header.name, "x-ssl-client-cert");
    assert_eq!(c.forward.cert_header.verify_name, "x-ssl-client-verify");
    assert_eq!(c.forward.cert_header.chain_max, 0);

    let src = format!(
        "{GOOD}[forward]\ncert_header = \"envoy\"\ncert_chain_header_name = \"x-chain\"\n\
         cert_header_name = \"Host\"\ncert_chain_max = 11\n"
    );
    let e = load(&src, &env()).expect_err("three problems").to_string();
    for expected in [
        "forward.cert_chain_header_name: the `envoy` format does not send this header",
        "forward.cert_header_name: `Host` is a header the proxy or HTTP itself uses",
        "forward.cert_chain_max: must be between 0 and 10",
    ] {
        assert!(e.contains(expected), "{expected}\n{e}");
    }

    let src = format!("{GOOD}[forward]\ncert_chain_header_name = \"Client-Cert\"\n");
    let e = load(&src, &env()).expect_err("one name for two headers");
    assert!(e.to_string().contains("would carry two values"), "{e}");
}

/// Problems of the reading pass (syntax, unknown keys, wrong types) on `line`, ignoring what depends on
/// this machine (files, environment variables).
fn reading_problems(src: &str, line: Option<usize>) -> Vec<String> {
    let e = match Config::from_toml_str(src, "annotated.toml", &dir_with_files(), &env()) {
        Ok(_) => return Vec::new(),
        Err(e) => e,
    };
    e.problems
        .iter()
        .filter(|p| line.is_none() || p.line == line)
        .filter(|p| {
            [
                "TOML syntax",
                "unknown key",
                "unknown table",
                "invalid type",
            ]
            .iter()
            .any(|k| p.problem.contains(k))
        })
        .map(|p| format!("{}: {}", p.key, p.problem))
        .collect()
}

#[test]
fn every_commented_out_key_in_the_annotated_configs_is_a_real_key() {
    for (name, src) in [
        ("proxy.toml", include_str!("../../proxy.toml")),
        (
            "deploy/examples/proxy-cdr.toml",
            include_str!("../../deploy/examples/proxy-cdr.toml"),
        ),
    ] {
        assert_eq!(reading_problems(src, None), Vec::<String>::new(), "{name}");
        let lines: Vec<&str> = src.lines().collect();
        let mut seen = 0;
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.strip_prefix('#').map(str::trim_start) else {
                continue;
            };
            let Some((key, _)) = rest.split_once('=') else {
                continue;
            };
            let key = key.trim();
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                continue;
            }
            seen += 1;
            let mut uncommented = lines.clone();
            uncommented[i] = rest;
            let problems = reading_problems(&uncommented.join("\n"), Some(i + 1));
            assert!(
                problems.is_empty(),
                "{name}:{}: `{rest}` does not read as a key: {problems:?}",
                i + 1
            );
        }
        assert!(seen >= 10, "{name}: only {seen} commented-out keys found");
    }
}

#[test]
fn the_keycloak_flavour_derives_its_admin_api_and_creates_without_an_iat() {
    let kc = GOOD
        .replace(
            "registration_endpoint = \"/reg\"",
            "flavour = \"keycloak\"\nregistration_endpoint = \"/realms/ob/clients-registrations/openid-connect\"",
        )
        .replace(
            "[profile]\n",
            "[upstream.admin]\ntoken_endpoint = \"/realms/ob/protocol/openid-connect/token\"\nclient_id = \"dcr-admin\"\n[profile]\n",
        );
    // The service account creates: no initial access token is needed.
    let vars = HashMap::from([(
        "DCR_UPSTREAM_ADMIN_CLIENT_SECRET".to_string(),
        "admin-secret".to_string(),
    )]);
    let c = load(&kc, &vars).expect("valid");
    assert_eq!(c.upstream.flavour, crate::upstream::Flavour::Keycloak);
    assert_eq!(
        c.upstream
            .admin
            .as_ref()
            .and_then(|a| a.api_base.as_ref())
            .map(url::Url::as_str),
        Some("http://127.0.0.1:3000/admin/realms/ob/")
    );
    assert!(c.upstream.initial_access_token.expose().is_empty());

    // A registration endpoint that does not name the realm needs upstream.admin.realm.
    let odd = kc.replace(
        "/realms/ob/clients-registrations/openid-connect\"",
        "/register\"",
    );
    let e = load(&odd, &vars).expect_err("no realm");
    assert!(
        e.problems
            .iter()
            .any(|p| p.key == "upstream.registration_endpoint"),
        "{e}"
    );
    let named = odd.replace(
        "client_id = \"dcr-admin\"",
        "client_id = \"dcr-admin\"\nrealm = \"ob\"",
    );
    assert!(load(&named, &vars).is_ok());

    // Without the service account, Keycloak creates with an initial access token as any RFC 7591 server.
    let no_admin = GOOD.replace(
        "registration_endpoint",
        "flavour = \"keycloak\"\nregistration_endpoint",
    );
    assert_eq!(
        load(&no_admin, &env()).expect("valid").upstream.flavour,
        crate::upstream::Flavour::Keycloak
    );
    let e = load(&no_admin, &HashMap::new()).expect_err("no IAT");
    assert!(
        e.problems
            .iter()
            .any(|p| p.key == "upstream.initial_access_token_env"),
        "{e}"
    );

    let bad = GOOD.replace(
        "registration_endpoint",
        "flavour = \"forgerock\"\nregistration_endpoint",
    );
    let e = load(&bad, &env()).expect_err("unknown flavour");
    assert!(e.to_string().contains("\"rfc7591\", \"keycloak\""), "{e}");
}

#[test]
fn combinations_keycloak_cannot_serve_are_refused_at_start_up() {
    let kc = GOOD.replace(
        "registration_endpoint",
        "flavour = \"keycloak\"\nregistration_endpoint",
    );
    let mut vars = env();
    vars.insert("DCR_MANAGEMENT_CLIENT_SECRET".into(), "s".into());
    let src = format!(
        "{kc}[forward]\ncert_header = \"envoy\"\n[management]\nintrospection_endpoint = \"/i\"\nrevocation_endpoint = \"/r\"\nclient_id = \"dcr-proxy\"\n"
    );
    let e = load(&src, &vars).expect_err("incoherent");
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["forward.cert_header", "management.revocation_endpoint"],
        "{e}"
    );
    assert!(e.to_string().contains("Unmatching clients"), "{e}");
    assert!(e.to_string().contains("no Envoy lookup"), "{e}");
    // The same file is fine for a plain RFC 7591 server.
    let plain = src.replace("flavour = \"keycloak\"\n", "");
    assert!(load(&plain, &vars).is_ok());

    // upstream.admin.realm means nothing to a plain RFC 7591 server.
    let mut vars = env();
    vars.insert("DCR_UPSTREAM_ADMIN_CLIENT_SECRET".into(), "a".into());
    let realm = GOOD.replace(
        "[profile]\n",
        "[upstream.admin]\ntoken_endpoint = \"/token\"\nclient_id = \"a\"\nrealm = \"ob\"\n[profile]\n",
    );
    let e = load(&realm, &vars).expect_err("realm without keycloak");
    assert_eq!(e.problems[0].key, "upstream.admin.realm", "{e}");
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
    let delay = |c: &Config| match &c.store {
        crate::store::StoreConfig::Sqlite { commit_delay, .. } => *commit_delay,
        crate::store::StoreConfig::Postgres(_) => Duration::MAX,
    };
    assert_eq!(delay(&annotated), delay(&defaults));
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

#[test]
fn forward_settings_the_forwarder_could_not_use_are_refused_with_their_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "base_url = \"http://127.0.0.1:3000\"",
            "base_url = \"http://u:p@127.0.0.1:3000\"",
            "upstream.base_url",
        ),
        (
            "base_url = \"http://127.0.0.1:3000\"",
            "base_url = \"ftp://127.0.0.1:3000\"",
            "upstream.base_url",
        ),
    ];
    for (from, to, key) in cases {
        let e = load(&GOOD.replace(from, to), &env()).expect_err(to);
        assert!(e.problems.iter().any(|p| p.key == *key), "{to}: {e}");
    }
    for (extra, key) in [
        ("extra_deny_paths = [\"reg\"]", "forward.extra_deny_paths"),
        ("response_timeout = \"0s\"", "forward.response_timeout"),
    ] {
        let e = load(&format!("{GOOD}[forward]\n{extra}\n"), &env()).expect_err(extra);
        let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, [key], "{extra}: {e}");
    }
}

#[path = "tests/register.rs"]
mod register;
mod server;
mod store;
