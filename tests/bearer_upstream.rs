//! Management tokens checked against the real upstream (oidc-provider): its RFC 7662 introspection and RFC 7009
//! revocation endpoints, opaque client_credentials tokens, and RFC 8705 certificate-bound tokens.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use dcr_proxy::bearer::{BearerConfig, BearerError, BearerMode, BearerValidator, token_of};
use dcr_proxy::secret::Secret;
use http::HeaderValue;
use serde_json::{Value, json};
use url::Url;

use support::claims;
use support::client::http_request;
use support::jwks_server::JwksServer;
use support::keys::{SigningKey, jwks};
use support::pki::{ClientCertSpec, Pki};
use support::temp::TempDir;
use support::upstream::{CertHeader, Upstream, UpstreamOptions};

fn installed() -> bool {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream");
    let node = std::env::var_os("NODE").unwrap_or_else(|| "node".into());
    dir.join("node_modules").is_dir()
        && std::process::Command::new(node)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn validator(
    upstream: &Upstream,
    ca: &std::path::Path,
    require_certificate_binding: bool,
) -> BearerValidator {
    let url = |p: &str| Url::parse(&upstream.url(p)).expect("upstream url");
    BearerValidator::new(BearerConfig {
        mode: BearerMode::Introspection {
            endpoint: url("/token/introspection"),
            client_id: upstream.introspection_client_id.clone(),
            client_secret: Secret::new(upstream.introspection_secret.clone()),
        },
        revocation_endpoint: Some(url("/token/revocation")),
        required_scope: Some("cdr:registration".into()),
        require_certificate_binding,
        cache_ttl: Duration::from_secs(60),
        max_token_len: 8192,
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        ca_bundle: Some(ca.to_path_buf()),
    })
    .expect("validator")
}

async fn register(upstream: &Upstream, metadata: Value) -> String {
    let registered = http_request(
        "POST",
        &upstream.url("/reg"),
        &[
            (
                "authorization",
                &format!("Bearer {}", upstream.initial_access_token),
            ),
            ("content-type", "application/json"),
        ],
        metadata.to_string(),
    )
    .await;
    assert_eq!(registered.status, 201, "{}", registered.text());
    registered.json()["client_id"]
        .as_str()
        .expect("client_id")
        .to_owned()
}

async fn token(upstream: &Upstream, headers: &[(&str, &str)], form: String) -> String {
    let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    let answer = http_request("POST", &upstream.url("/token"), &all, form).await;
    assert_eq!(
        answer.status,
        200,
        "{}\n{}",
        answer.text(),
        upstream.stderr()
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
    if !installed() {
        eprintln!("skipped: tests/upstream is not installed (npm ci --prefix tests/upstream)");
        return;
    }
    let pki = Pki::new();
    let tmp = TempDir::new();
    let files = pki.write_to(tmp.path());
    let upstream = Upstream::start(UpstreamOptions {
        ca_pem_path: files.ca.clone(),
        cert_header: CertHeader::Rfc9440,
        port: 0,
        introspection_client_id: None,
    })
    .await;
    let jwks_server = JwksServer::start(&pki).await;
    let key = SigningKey::rsa("tpp-sig");
    jwks_server.set("/tpp.jwks", jwks(&[key.public_jwk(Some("sig"))]));
    let client_id = register(
        &upstream,
        json!({
            "redirect_uris": [],
            "response_types": [],
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "PS256",
            "jwks_uri": jwks_server.url("/tpp.jwks"),
            "scope": "openid cdr:registration",
        }),
    )
    .await;
    let assertion = key.sign(
        json!({}),
        json!({"iss": client_id, "sub": client_id, "aud": upstream.url("/token"),
               "jti": claims::jti(), "iat": claims::now(), "exp": claims::now() + 60}),
    );
    let access_token = token(
        &upstream,
        &[],
        format!(
            "grant_type=client_credentials&scope=cdr%3Aregistration&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
        ),
    )
    .await;

    let v = validator(&upstream, &files.ca, false);
    let header = bearer(&access_token);
    let info = v
        .authorize(Some(&header), &client_id, None)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", upstream.stderr()));
    assert_eq!(info.client_id, client_id);
    assert!(info.scopes.iter().any(|s| s == "cdr:registration"));
    assert!(info.exp.is_some_and(|exp| exp > claims::now()));
    assert_eq!(info.cnf_x5t_s256, None);
    assert_eq!(v.introspections(), 1);
    let seen = upstream.requests("/token/introspection").await;
    let expected_basic = format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            upstream.introspection_client_id, upstream.introspection_secret
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
    assert!(matches!(
        v.authorize(Some(&header), &client_id, None).await,
        Err(BearerError::Inactive)
    ));
    assert_eq!(v.introspections(), 2);
    assert!(!upstream.requests("/token/revocation").await.is_empty());
}

#[tokio::test]
async fn a_certificate_bound_token_needs_its_certificate() {
    if !installed() {
        eprintln!("skipped: tests/upstream is not installed (npm ci --prefix tests/upstream)");
        return;
    }
    let pki = Pki::new();
    let tmp = TempDir::new();
    let files = pki.write_to(tmp.path());
    let upstream = Upstream::start(UpstreamOptions {
        ca_pem_path: files.ca.clone(),
        cert_header: CertHeader::Rfc9440,
        port: 0,
        introspection_client_id: None,
    })
    .await;
    let tpp = pki.client(ClientCertSpec::ob(
        "0015800001HQQrZAAX",
        "00158000016i44JAAQ",
    ));
    let other = pki.client(ClientCertSpec::ob(
        "0015800001HQQrZAAY",
        "00158000016i44JAAQ",
    ));
    let client_id = register(
        &upstream,
        json!({
            "redirect_uris": [],
            "response_types": [],
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "tls_client_auth",
            "tls_client_auth_subject_dn": tpp.subject_rfc4514,
            "tls_client_certificate_bound_access_tokens": true,
            "scope": "cdr:registration",
        }),
    )
    .await;
    let client_cert = format!(":{}:", STANDARD.encode(&tpp.cert_der));
    let access_token = token(
        &upstream,
        &[("client-cert", &client_cert)],
        format!("grant_type=client_credentials&scope=cdr%3Aregistration&client_id={client_id}"),
    )
    .await;

    let v = validator(&upstream, &files.ca, true);
    let header = bearer(&access_token);
    let info = v
        .authorize(Some(&header), &client_id, Some(&tpp.thumbprint_s256))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", upstream.stderr()));
    assert_eq!(
        info.cnf_x5t_s256.as_deref(),
        Some(tpp.thumbprint_s256.as_str())
    );
    for presented in [Some(other.thumbprint_s256.as_str()), None] {
        assert!(matches!(
            v.authorize(Some(&header), &client_id, presented).await,
            Err(BearerError::CertificateMismatch)
        ));
    }
}
