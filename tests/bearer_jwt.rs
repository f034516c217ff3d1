//! Management tokens in local-JWT mode: the IdP's key set served over HTTPS, tokens signed by our test keys.

mod support;

use std::time::Duration;

use dcr_proxy::bearer::{BearerConfig, BearerError, BearerMode, BearerValidator};
use http::HeaderValue;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use url::Url;

use support::claims;
use support::jwks_server::JwksServer;
use support::keys::{SigningKey, jwks};
use support::pki::Pki;
use support::temp::TempDir;

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "https://bank.example/register";
const CLIENT: &str = "client-1";
const X5T: &str = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2";

struct Idp {
    _pki: Pki,
    _tmp: TempDir,
    server: JwksServer,
    key: SigningKey,
    validator: BearerValidator,
}

async fn idp() -> Idp {
    let pki = Pki::new();
    let tmp = TempDir::new();
    let files = pki.write_to(tmp.path());
    let server = JwksServer::start(&pki).await;
    let key = SigningKey::rsa("idp-1");
    server.set("/jwks", jwks(&[key.public_jwk(Some("sig"))]));
    let validator = BearerValidator::new(BearerConfig {
        mode: BearerMode::Jwt {
            jwks_uri: Url::parse(&server.url("/jwks")).expect("url"),
            issuer: ISSUER.into(),
            audience: Some(AUDIENCE.into()),
            algorithms: vec![Algorithm::PS256, Algorithm::ES256],
        },
        revocation_endpoint: None,
        required_scope: Some("cdr:registration".into()),
        require_certificate_binding: true,
        cache_ttl: Duration::from_secs(60),
        max_token_len: 8192,
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
        ca_bundle: Some(files.ca),
    })
    .expect("validator");
    Idp {
        _pki: pki,
        _tmp: tmp,
        server,
        key,
        validator,
    }
}

fn access_claims() -> Value {
    let now = claims::now();
    json!({
        "iss": ISSUER, "aud": [AUDIENCE, "other"], "sub": CLIENT, "client_id": CLIENT,
        "scope": "openid cdr:registration", "iat": now, "exp": now + 300, "jti": claims::jti(),
        "cnf": {"x5t#S256": X5T},
    })
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("header")
}

async fn check(idp: &Idp, token: &str) -> Result<dcr_proxy::bearer::TokenInfo, BearerError> {
    idp.validator
        .authorize(Some(&bearer(token)), CLIENT, Some(X5T))
        .await
}

#[tokio::test]
async fn accepts_a_signed_access_token_from_the_idp() {
    let idp = idp().await;
    let token = idp.key.sign(json!({"typ": "at+jwt"}), access_claims());
    let info = check(&idp, &token).await.expect("accepted");
    assert_eq!(info.client_id, CLIENT);
    assert_eq!(info.scopes, ["openid", "cdr:registration"]);
    assert_eq!(info.cnf_x5t_s256.as_deref(), Some(X5T));
    assert!(check(&idp, &token).await.is_ok());
    assert_eq!(idp.validator.introspections(), 1, "one JWKS fetch");
    assert_eq!(idp.server.fetch_count("/jwks"), 1);
    assert!(matches!(
        idp.validator
            .authorize(Some(&bearer(&token)), "client-2", Some(X5T))
            .await,
        Err(BearerError::WrongClient)
    ));
}

#[tokio::test]
async fn accepts_keycloak_style_azp_and_scp_array() {
    let idp = idp().await;
    let c = claims::merge(
        access_claims(),
        json!({"client_id": null, "azp": CLIENT, "typ": "Bearer"}),
    );
    let token = idp.key.sign(json!({"typ": "JWT"}), c);
    assert!(check(&idp, &token).await.is_ok());
    let c = claims::merge(
        access_claims(),
        json!({"scope": null, "scp": ["cdr:registration"]}),
    );
    assert!(check(&idp, &idp.key.sign(json!({}), c)).await.is_ok());
}

#[tokio::test]
async fn refuses_tokens_that_are_not_valid_access_tokens_of_this_idp() {
    let idp = idp().await;
    let other_key = SigningKey::rsa("idp-1");
    let now = claims::now();
    let cases: Vec<(&str, String)> = vec![
        (
            "issuer",
            idp.key.sign(
                json!({}),
                claims::merge(access_claims(), json!({"iss": "https://evil.example"})),
            ),
        ),
        (
            "audience",
            idp.key.sign(
                json!({}),
                claims::merge(access_claims(), json!({"aud": "other"})),
            ),
        ),
        (
            "no audience",
            idp.key.sign(
                json!({}),
                claims::merge(access_claims(), json!({"aud": null})),
            ),
        ),
        (
            "expired",
            idp.key.sign(
                json!({}),
                claims::merge(access_claims(), json!({"exp": now - 120, "iat": now - 600})),
            ),
        ),
        (
            "no exp",
            idp.key.sign(
                json!({}),
                claims::merge(access_claims(), json!({"exp": null})),
            ),
        ),
        (
            "RS256",
            idp.key.sign(json!({"alg": "RS256"}), access_claims()),
        ),
        (
            "none",
            idp.key.sign(json!({"alg": "none"}), access_claims()),
        ),
        (
            "HS256",
            idp.key.sign(json!({"alg": "HS256"}), access_claims()),
        ),
        (
            "unknown kid",
            idp.key.sign(json!({"kid": "idp-2"}), access_claims()),
        ),
        ("other key", other_key.sign(json!({}), access_claims())),
        (
            "id token typ",
            idp.key
                .sign(json!({"typ": "id_token+jwt"}), access_claims()),
        ),
        (
            "keycloak refresh",
            idp.key.sign(
                json!({}),
                claims::merge(access_claims(), json!({"typ": "Refresh"})),
            ),
        ),
        (
            "no client",
            idp.key.sign(
                json!({}),
                claims::merge(access_claims(), json!({"client_id": null})),
            ),
        ),
        (
            "scope type",
            idp.key.sign(
                json!({}),
                claims::merge(access_claims(), json!({"scope": ["cdr:registration"]})),
            ),
        ),
        (
            "dpop bound",
            idp.key.sign(
                json!({}),
                claims::merge(access_claims(), json!({"cnf": {"jkt": "abc"}})),
            ),
        ),
    ];
    for (what, token) in cases {
        match check(&idp, &token).await {
            Err(BearerError::Inactive) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn binding_and_scope_apply_to_jwts_too() {
    let idp = idp().await;
    let unbound = idp.key.sign(
        json!({}),
        claims::merge(access_claims(), json!({"cnf": null})),
    );
    assert!(matches!(
        check(&idp, &unbound).await,
        Err(BearerError::CertificateMismatch)
    ));
    let narrow = idp.key.sign(
        json!({}),
        claims::merge(access_claims(), json!({"scope": "openid"})),
    );
    assert!(matches!(
        check(&idp, &narrow).await,
        Err(BearerError::InsufficientScope(_))
    ));
}

#[tokio::test]
async fn an_unreachable_key_set_is_unavailable_not_inactive() {
    let idp = idp().await;
    idp.server.set_status("/jwks", 503);
    let token = idp.key.sign(json!({}), access_claims());
    assert!(matches!(
        check(&idp, &token).await,
        Err(BearerError::Unavailable(_))
    ));
}

/// Tokens the Keycloak stand-in issues (its realm key, `azp`, `typ: Bearer`, `cnf`), checked locally: the realm's
/// key set as `/protocol/openid-connect/certs` serves it, republished over HTTPS because the proxy fetches key
/// sets over HTTPS only.
#[tokio::test]
async fn keycloak_access_tokens_validate_locally_against_the_realm_keys() {
    if support::world::not_for_this_flavour(
        support::world::Flavour::Keycloak,
        "oidc-provider issues opaque access tokens here; the JWT cases above cover RFC 9068",
    ) {
        return;
    }
    let w = support::world::World::ob().await;
    let tpp = w.tpp();
    let client_id = w
        .register_upstream(json!({
            "redirect_uris": [],
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": tpp.cert.subject_rfc4514,
            "tls_client_certificate_bound_access_tokens": true,
            "scope": "cdr:registration",
        }))
        .await;
    let certs =
        support::client::http_request("GET", &w.upstream.url(&w.upstream.paths.jwks), &[], "")
            .await
            .json();
    w.jwks.set("/keycloak/certs", certs);
    let validator = BearerValidator::new(BearerConfig {
        mode: BearerMode::Jwt {
            jwks_uri: Url::parse(&w.jwks.url("/keycloak/certs")).expect("url"),
            issuer: w.upstream.oidc_issuer.clone(),
            audience: None,
            algorithms: vec![Algorithm::RS256],
        },
        revocation_endpoint: None,
        required_scope: Some("cdr:registration".into()),
        require_certificate_binding: true,
        cache_ttl: Duration::from_secs(60),
        max_token_len: 8192,
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
        ca_bundle: Some(w.files.ca.clone()),
    })
    .expect("validator");
    let resp = w.token_tls(&client_id, &tpp.cert, "cdr:registration").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let token = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let info = validator
        .authorize(
            Some(&bearer(&token)),
            &client_id,
            Some(&tpp.cert.thumbprint_s256),
        )
        .await
        .expect("a Keycloak token");
    assert_eq!(info.client_id, client_id);
    assert_eq!(
        info.cnf_x5t_s256.as_deref(),
        Some(tpp.cert.thumbprint_s256.as_str())
    );
    assert!(matches!(
        validator
            .authorize(Some(&bearer(&token)), &client_id, Some(X5T))
            .await,
        Err(BearerError::CertificateMismatch)
    ));
    // Without the scope: 403 material.
    let narrow = w.token_tls(&client_id, &tpp.cert, "openid").await.json()["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert!(matches!(
        validator
            .authorize(
                Some(&bearer(&narrow)),
                &client_id,
                Some(&tpp.cert.thumbprint_s256)
            )
            .await,
        Err(BearerError::InsufficientScope(_))
    ));
}
