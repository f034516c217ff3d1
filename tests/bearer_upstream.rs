//! Management tokens checked against the real upstream (oidc-provider, or its Keycloak stand-in by
//! `DCR_TEST_UPSTREAM`): its RFC 7662 introspection and RFC 7009 revocation endpoints, its client_credentials
//! tokens, and RFC 8705 certificate-bound tokens.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use dcr_proxy::bearer::{BearerConfig, BearerError, BearerMode, BearerValidator, token_of};
use dcr_proxy::secret::Secret;
use http::HeaderValue;
use serde_json::json;
use url::Url;

use support::client::Response;
use support::world::{Flavour, Options, World, not_for_this_flavour, urlencode};

fn validator(w: &World, require_certificate_binding: bool) -> BearerValidator {
    let url = |p: &str| Url::parse(&w.upstream.url(p)).expect("upstream url");
    BearerValidator::new(BearerConfig {
        mode: BearerMode::Introspection {
            endpoint: url(&w.upstream.paths.introspection),
            client_id: w.upstream.introspection_client_id.clone(),
            client_secret: Secret::new(w.upstream.introspection_secret.clone()),
        },
        // Keycloak lets a client revoke only its own tokens: the proxy is given no revocation endpoint there.
        revocation_endpoint: match w.flavour() {
            Flavour::Rfc7591 => Some(url(&w.upstream.paths.revocation)),
            // AM: revoking another client's token is not shown to work (assumed refused, as the stand-in does).
            Flavour::Keycloak | Flavour::ForgeRockAm => None,
        },
        required_scope: Some("cdr:registration".into()),
        require_certificate_binding,
        cache_ttl: Duration::from_secs(60),
        max_token_len: 8192,
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        ca_bundle: Some(w.files.ca.clone()),
    })
    .expect("validator")
}

fn access_token(w: &World, answer: Response) -> String {
    assert_eq!(
        answer.status,
        200,
        "{}\n{}",
        answer.text(),
        w.upstream.stderr()
    );
    answer.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("header")
}

#[tokio::test]
async fn introspects_and_revokes_real_upstream_tokens() {
    let w = World::ob().await;
    let tpp = w.tpp();
    let client_id = w
        .register_upstream(json!({
            "redirect_uris": [],
            "response_types": [],
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "PS256",
            "jwks_uri": tpp.jwks_url,
            "scope": "openid cdr:registration",
        }))
        .await;
    let answer = w
        .token_private_key_jwt(&client_id, &tpp.key, &tpp.cert, "cdr:registration")
        .await;
    let access_token = access_token(&w, answer);

    let v = validator(&w, false);
    let header = bearer(&access_token);
    let info = v
        .authorize(Some(&header), &client_id, None)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", w.upstream.stderr()));
    assert_eq!(info.client_id, client_id);
    assert!(info.scopes.iter().any(|s| s == "cdr:registration"));
    assert!(info.exp.is_some_and(|exp| exp > support::claims::now()));
    assert_eq!(
        info.cnf_x5t_s256, None,
        "the client did not ask for certificate-bound tokens"
    );
    assert_eq!(v.introspections(), 1);
    let seen = w.upstream.requests(&w.upstream.paths.introspection).await;
    let expected_basic = format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            w.upstream.introspection_client_id, w.upstream.introspection_secret
        ))
    );
    assert_eq!(
        seen.last().map(|r| r["headers"]["authorization"].clone()),
        Some(json!(expected_basic)),
        "the ids and secrets of the test upstream need no form-encoding, so this is plain Basic"
    );

    // The same token presented for another client: refused, then revoked at the upstream (OB's rule).
    assert!(matches!(
        v.authorize(Some(&header), "someone-else", None).await,
        Err(BearerError::WrongClient)
    ));
    assert_eq!(v.introspections(), 1, "served from the cache");
    v.revoke(token_of(Some(&header)).expect("well-formed"))
        .await;
    match w.flavour() {
        Flavour::Rfc7591 => {
            assert!(matches!(
                v.authorize(Some(&header), &client_id, None).await,
                Err(BearerError::Inactive)
            ));
            assert_eq!(v.introspections(), 2);
            assert!(
                !w.upstream
                    .requests(&w.upstream.paths.revocation)
                    .await
                    .is_empty()
            );
        }
        Flavour::Keycloak => {
            // Nothing to revoke with: Keycloak refuses the introspection client's revocation of another
            // client's token (TokenRevocationEndpoint.checkIssuedFor), as this direct call shows.
            assert!(
                w.upstream
                    .requests(&w.upstream.paths.revocation)
                    .await
                    .is_empty()
            );
            let basic = STANDARD.encode(format!(
                "{}:{}",
                w.upstream.introspection_client_id, w.upstream.introspection_secret
            ));
            let resp = support::client::http_request(
                "POST",
                &w.upstream.url(&w.upstream.paths.revocation),
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("authorization", &format!("Basic {basic}")),
                ],
                format!("token={}", urlencode(&access_token)),
            )
            .await;
            assert_eq!(resp.status, 400, "{}", resp.text());
            assert_eq!(resp.json()["error_description"], "Unmatching clients");
            assert!(v.authorize(Some(&header), &client_id, None).await.is_ok());
        }
        Flavour::ForgeRockAm => {
            // Nothing to revoke with (see `validator`): the token stays good.
            assert!(
                w.upstream
                    .requests(&w.upstream.paths.revocation)
                    .await
                    .is_empty()
            );
            assert!(v.authorize(Some(&header), &client_id, None).await.is_ok());
        }
    }
}

#[tokio::test]
async fn keycloak_as_shipped_hides_other_clients_tokens_from_introspection() {
    if not_for_this_flavour(
        Flavour::Keycloak,
        "the introspection audience check (CVE-2026-37979) is Keycloak's",
    ) {
        return;
    }
    // Since 26.4.12 / 26.6.2 / 26.7.0 (keycloak/keycloak#49113) an introspecting client not in the token's aud
    // is told active:false, unless it carries allow.token.introspection.without.audience.check: the
    // harness (and deploy/keycloak) sets that attribute; without it every management token is refused.
    let w = World::start(Options {
        upstream_env: vec![("KEYCLOAK_INTROSPECTION_AUDIENCE_CHECK".into(), "on".into())],
        ..Options::default()
    })
    .await;
    let tpp = w.tpp();
    let client_id = w
        .register_upstream(json!({
            "redirect_uris": [],
            "response_types": [],
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "PS256",
            "jwks_uri": tpp.jwks_url,
            "scope": "openid cdr:registration",
        }))
        .await;
    let answer = w
        .token_private_key_jwt(&client_id, &tpp.key, &tpp.cert, "cdr:registration")
        .await;
    let access_token = access_token(&w, answer);
    let v = validator(&w, false);
    assert!(matches!(
        v.authorize(Some(&bearer(&access_token)), &client_id, None)
            .await,
        Err(BearerError::Inactive)
    ));
    assert!(w.upstream.stderr().contains("is not in the token audience"));
}

#[tokio::test]
async fn a_certificate_bound_token_needs_its_certificate() {
    let w = World::ob().await;
    let tpp = w.tpp();
    let other = w.tpp();
    let client_id = w
        .register_upstream(json!({
            "redirect_uris": [],
            "response_types": [],
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": tpp.cert.subject_rfc4514,
            "tls_client_certificate_bound_access_tokens": true,
            "scope": "cdr:registration",
        }))
        .await;
    let answer = w.token_tls(&client_id, &tpp.cert, "cdr:registration").await;
    let access_token = access_token(&w, answer);

    let v = validator(&w, true);
    let header = bearer(&access_token);
    let info = v
        .authorize(Some(&header), &client_id, Some(&tpp.cert.thumbprint_s256))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", w.upstream.stderr()));
    assert_eq!(
        info.cnf_x5t_s256.as_deref(),
        Some(tpp.cert.thumbprint_s256.as_str())
    );
    for presented in [Some(other.cert.thumbprint_s256.as_str()), None] {
        assert!(matches!(
            v.authorize(Some(&header), &client_id, presented).await,
            Err(BearerError::CertificateMismatch)
        ));
    }
}
