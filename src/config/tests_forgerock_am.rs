//! `upstream.flavour = "forgerock-am"`: its `[upstream.iat]` and `[upstream.admin]` keys, the URLs derived from
//! the registration endpoint, and the certificate header default.

use std::collections::HashMap;

use super::*;
use crate::forward::CertHeaderFormat;

const AM: &str = r#"
[server]
listen = "127.0.0.1:8443"
public_url = "https://localhost:8443"
[tls]
cert = "cert.pem"
key = "key.pem"
client_ca = "ca.pem"
[upstream]
flavour = "forgerock-am"
base_url = "https://am.internal:8443"
registration_endpoint = "/am/oauth2/realms/root/realms/alpha/register"
[upstream.iat]
client_id = "dcr-proxy-iat"
[upstream.admin]
username = "amadmin"
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

fn dir_with_files() -> super::scratch::Scratch {
    super::scratch::Scratch::with_tls_files("dcr-cfg-am")
}

fn env() -> HashMap<String, String> {
    HashMap::from([
        ("DCR_UPSTREAM_IAT_CLIENT_SECRET".into(), "iat-secret".into()),
        (
            "DCR_UPSTREAM_ADMIN_PASSWORD".into(),
            "admin-password".into(),
        ),
    ])
}

fn load(src: &str, vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
    Config::from_toml_str(src, "proxy.toml", &dir_with_files(), vars)
}

fn keys(e: &ConfigError) -> Vec<String> {
    e.problems.iter().map(|p| p.key.clone()).collect()
}

#[test]
fn am_endpoints_come_from_the_registration_endpoint_and_the_header_defaults_to_nginx() {
    let c = load(AM, &env()).expect("valid");
    let iat = c.upstream.iat.as_ref().expect("iat");
    assert_eq!(
        iat.token_endpoint.as_str(),
        "https://am.internal:8443/am/oauth2/realms/root/realms/alpha/access_token"
    );
    assert_eq!(iat.scope.as_deref(), Some("dynamic_client_registration"));
    let admin = c.upstream.admin.as_ref().expect("admin");
    assert_eq!(
        admin.token_endpoint.as_str(),
        "https://am.internal:8443/am/json/realms/root/authenticate"
    );
    assert_eq!(admin.client_id, "amadmin");
    assert_eq!(admin.session_header.as_deref(), Some("iPlanetDirectoryPro"));
    assert_eq!(
        admin.api_base.as_ref().map(url::Url::as_str),
        Some(
            "https://am.internal:8443/am/json/realms/root/realms/alpha/realm-config/agents/OAuth2Client/"
        )
    );
    assert_eq!(c.forward.cert_header.format, CertHeaderFormat::Nginx);
    let shown = format!("{:?}", c.upstream);
    assert!(
        !shown.contains("iat-secret") && !shown.contains("admin-password"),
        "{shown}"
    );
    // No initial_access_token_env is read: the variable need not exist.
    assert!(c.upstream.initial_access_token.expose().is_empty());
}

#[test]
fn am_keys_are_checked_one_by_one() {
    // Without [upstream.iat] AM's expiring initial access tokens would end registration after an hour.
    let no_iat = AM.replace("[upstream.iat]\nclient_id = \"dcr-proxy-iat\"\n", "");
    let e = load(&no_iat, &env()).expect_err("no iat");
    assert_eq!(keys(&e), ["upstream.iat"], "{e}");

    let e = load(AM, &HashMap::new()).expect_err("no secrets");
    assert_eq!(
        keys(&e),
        [
            "upstream.iat.client_secret_env",
            "upstream.admin.password_env"
        ],
        "{e}"
    );

    // The OAuth-client keys of [upstream.admin] mean nothing to AM, and the other way round.
    let oauth_admin = AM.replace(
        "username = \"amadmin\"",
        "token_endpoint = \"/token\"\nclient_id = \"a\"",
    );
    let e = load(&oauth_admin, &env()).expect_err("wrong keys");
    let k = keys(&e);
    assert!(k.contains(&"upstream.admin.username".to_string()), "{e}");
    assert!(
        k.contains(&"upstream.admin.token_endpoint".to_string()),
        "{e}"
    );

    let no_admin = AM.replace("[upstream.admin]\nusername = \"amadmin\"\n", "");
    let e = load(&no_admin, &env()).expect_err("no admin");
    assert_eq!(keys(&e), ["upstream.admin"], "{e}");

    let not_am = AM.replace(
        "/am/oauth2/realms/root/realms/alpha/register",
        "/am/oauth2/register",
    );
    let e = load(&not_am, &env()).expect_err("not an AM endpoint");
    assert_eq!(keys(&e), ["upstream.registration_endpoint"], "{e}");

    let rfc9440 = format!("{AM}[forward]\ncert_header = \"rfc9440\"\n");
    let e = load(&rfc9440, &env()).expect_err("AM reads no RFC 9440 header");
    assert_eq!(keys(&e), ["forward.cert_header"], "{e}");
    assert!(e.to_string().contains("URL-encoded PEM"), "{e}");

    let bad_header = AM.replace(
        "username = \"amadmin\"",
        "username = \"amadmin\"\nsession_header = \"a b\"",
    );
    let e = load(&bad_header, &env()).expect_err("bad header");
    assert_eq!(keys(&e), ["upstream.admin.session_header"], "{e}");
}

#[test]
fn minted_initial_access_tokens_are_for_am_only() {
    let keycloak = AM
        .replace(
            "flavour = \"forgerock-am\"",
            "flavour = \"rfc7591\"\ninitial_access_token_env = \"IAT\"",
        )
        .replace("[upstream.admin]\nusername = \"amadmin\"\n", "");
    let mut vars = env();
    vars.insert("IAT".into(), "t".into());
    let e = load(&keycloak, &vars).expect_err("iat with rfc7591");
    assert_eq!(keys(&e), ["upstream.iat"], "{e}");
}

#[test]
fn the_am_example_configuration_loads() {
    let src = include_str!("../../deploy/examples/proxy-forgerock-am.toml")
        .replace("/etc/dcr-proxy/tls/server.pem", "cert.pem")
        .replace("/etc/dcr-proxy/tls/server-key.pem", "key.pem")
        .replace("/etc/dcr-proxy/tls/client-ca.pem", "ca.pem")
        .replace("/etc/dcr-proxy/upstream-ca.pem", "ca.pem");
    let mut vars = env();
    vars.insert("DCR_MANAGEMENT_CLIENT_SECRET".into(), "m".into());
    vars.insert("DCR_STORE_PASSWORD".into(), "p".into());
    let c = load(&src, &vars).expect("the example is valid");
    assert_eq!(c.upstream.flavour, crate::upstream::Flavour::ForgeRockAm);
    assert_eq!(
        c.upstream.iat.as_ref().map(|i| i.token_endpoint.as_str()),
        Some("https://am.internal:8443/am/oauth2/realms/root/realms/alpha/access_token")
    );
}
