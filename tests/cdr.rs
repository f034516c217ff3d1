//! The Australian CDR DCR 1.13 profile through the real binary and the real upstream.

mod support;

use serde_json::{Value, json};
use support::client::assert_error;
use support::world::{CDR_HOLDER, Options, Profile, Tpp, World, urlencode};

const ICM: &str = "invalid_client_metadata";
const ISS: &str = "invalid_software_statement";
const IRU: &str = "invalid_redirect_uri";

async fn cdr_world() -> World {
    World::start(Options {
        profile: Profile::Cdr,
        ..Options::default()
    })
    .await
}

async fn token(w: &World, adr: &Tpp, client_id: &str, scope: &str) -> String {
    let now = support::claims::now();
    let assertion = adr.key.sign(
        json!({}),
        json!({"iss": client_id, "sub": client_id, "aud": w.upstream.assertion_audience(), "iat": now, "exp": now + 60,
               "jti": support::claims::jti()}),
    );
    // Through the proxy: the certificate reaches the upstream only in the proxy's header, so the token is bound.
    let resp = adr
        .client
        .request(
            "POST",
            &w.proxy.url(&w.upstream.paths.token),
            &[("content-type", "application/x-www-form-urlencoded")],
            format!(
                "grant_type=client_credentials&scope={}&client_assertion_type={}&client_assertion={assertion}",
                urlencode(scope),
                urlencode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            ),
        )
        .await;
    assert_eq!(resp.status, 200, "token: {}", resp.text());
    resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string()
}

#[tokio::test]
async fn registers_a_data_recipient_with_every_required_response_field() {
    let w = cdr_world().await;
    let adr = w.adr();
    let ssa_claims = w.cdr_ssa_claims(
        &adr,
        json!({"scope": "openid profile bank:accounts.basic:read energy:accounts.basic:read cdr:registration"}),
    );
    let ssa = w.register_key.sign(json!({}), ssa_claims.clone());
    let body = adr.key.sign(
        json!({}),
        support::claims::cdr_request(&adr.software_id, CDR_HOLDER, &ssa, json!({})),
    );
    let resp = w.post_register(&adr.client, &body).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    let b = resp.json();
    // RegistrationProperties (1.13) marks these required.
    for field in [
        "client_description",
        "client_id",
        "client_name",
        "client_uri",
        "grant_types",
        "id_token_encrypted_response_alg",
        "id_token_encrypted_response_enc",
        "jwks_uri",
        "logo_uri",
        "org_id",
        "org_name",
        "redirect_uris",
        "request_object_signing_alg",
        "response_types",
        "scope",
        "software_id",
        "software_statement",
        "token_endpoint_auth_method",
        "token_endpoint_auth_signing_alg",
    ] {
        assert!(
            b.get(field).is_some_and(|v| !v.is_null()),
            "{field} missing: {b}"
        );
    }
    assert_eq!(b["software_statement"], ssa.as_str());
    assert_eq!(b["software_roles"], "data-recipient-software-product");
    assert_eq!(b["legal_entity_id"], ssa_claims["legal_entity_id"]);
    assert_eq!(b["jwks_uri"], adr.jwks_url.as_str());
    // SSA scope ∩ the holder's supported scopes, as a string.
    assert_eq!(
        b["scope"],
        "openid profile bank:accounts.basic:read cdr:registration"
    );
    assert_eq!(b["token_endpoint_auth_method"], "private_key_jwt");
    assert!(b.get("tls_client_auth_dn").is_none());
    assert_eq!(w.upstream.clients().await.len(), 1);
}

#[tokio::test]
async fn every_cdr_rule_rejects_with_its_error_code() {
    let w = cdr_world().await;
    let adr = w.adr();
    let now = support::claims::now();
    let cases: Vec<(&str, Value, Value, u16, &str)> = vec![
        ("SSA without exp", json!({"exp": null}), json!({}), 400, ISS),
        ("SSA expired", json!({"exp": now - 60}), json!({}), 400, ISS),
        (
            "SSA from an unknown register",
            json!({"iss": "not-the-register"}),
            json!({}),
            400,
            "unapproved_software_statement",
        ),
        (
            "SSA jwks_uri over http",
            json!({"jwks_uri": "http://adr.example/jwks"}),
            json!({}),
            400,
            ISS,
        ),
        (
            "SSA logo_uri not https",
            json!({"logo_uri": "ftp://adr.example/logo.png"}),
            json!({}),
            400,
            ISS,
        ),
        (
            "SSA without legal_entity_id",
            json!({"legal_entity_id": null}),
            json!({}),
            400,
            ISS,
        ),
        (
            "SSA without revocation_uri",
            json!({"revocation_uri": null}),
            json!({}),
            400,
            ISS,
        ),
        (
            "SSA without scope",
            json!({"scope": null}),
            json!({}),
            400,
            ISS,
        ),
        (
            "request for another holder",
            json!({}),
            json!({"aud": "https://other-holder.example.com"}),
            400,
            ICM,
        ),
        (
            "request without jti",
            json!({}),
            json!({"jti": null}),
            400,
            ICM,
        ),
        (
            "tls_client_auth",
            json!({}),
            json!({"token_endpoint_auth_method": "tls_client_auth"}),
            400,
            ICM,
        ),
        (
            "RS256 signing",
            json!({}),
            json!({"token_endpoint_auth_signing_alg": "RS256"}),
            400,
            ICM,
        ),
        (
            "id token signed with RS256",
            json!({}),
            json!({"id_token_signed_response_alg": "RS256"}),
            400,
            ICM,
        ),
        (
            "no authorization_code grant",
            json!({}),
            json!({"grant_types": ["client_credentials"]}),
            400,
            ICM,
        ),
        (
            "a mobile application",
            json!({}),
            json!({"application_type": "mobile"}),
            400,
            ICM,
        ),
        (
            "response type code without the holder supporting it",
            json!({}),
            json!({"response_types": ["code"]}),
            400,
            ICM,
        ),
        (
            "hybrid flow without id_token encryption",
            json!({}),
            json!({"id_token_encrypted_response_alg": null}),
            400,
            ICM,
        ),
        (
            "an unsupported id_token enc",
            json!({}),
            json!({"id_token_encrypted_response_enc": "A128GCM"}),
            400,
            ICM,
        ),
        (
            "an unsupported id_token alg",
            json!({}),
            json!({"id_token_encrypted_response_alg": "RSA1_5"}),
            400,
            ICM,
        ),
        (
            "no request_object_signing_alg",
            json!({}),
            json!({"request_object_signing_alg": null}),
            400,
            ICM,
        ),
        (
            "a redirect URI outside the SSA's",
            json!({}),
            json!({"redirect_uris": ["https://evil.example.com/cb"]}),
            400,
            IRU,
        ),
    ];
    for (name, ssa_extra, req_extra, status, code) in cases {
        let ssa = w
            .register_key
            .sign(json!({}), w.cdr_ssa_claims(&adr, ssa_extra));
        let body = adr.key.sign(
            json!({}),
            support::claims::cdr_request(&adr.software_id, CDR_HOLDER, &ssa, req_extra),
        );
        assert_error(
            &w.post_register(&adr.client, &body).await,
            status,
            code,
            name,
        );
    }
    assert!(w.upstream.clients().await.is_empty());
}

#[tokio::test]
async fn a_second_registration_of_one_software_id_is_refused_even_when_twenty_race() {
    let w = cdr_world().await;
    let adr = w.adr();
    let first = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_eq!(first.status, 201, "{}", first.text());
    let second = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_error(&second, 400, ICM, "duplicate");
    assert_eq!(
        second.json()["error_description"],
        "Duplicate registrations for a given software_id are not valid."
    );

    let racer = w.adr();
    let bodies: Vec<String> = (0..20).map(|_| w.cdr_request(&racer, json!({}))).collect();
    let results =
        futures::future::join_all(bodies.iter().map(|b| w.post_register(&racer.client, b))).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    let duplicates = results
        .iter()
        .filter(|r| r.status == 400 && r.json()["error"] == ICM)
        .count();
    assert_eq!(
        (created, duplicates),
        (1, 19),
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(
        w.upstream.clients().await.len(),
        2,
        "one client per software_id at the upstream"
    );
}

#[tokio::test]
async fn duplicates_are_allowed_when_the_holder_says_so() {
    let w = World::start(Options {
        profile: Profile::Cdr,
        profile_extra: "unique_software_id = false".into(),
        ..Options::default()
    })
    .await;
    let adr = w.adr();
    for _ in 0..2 {
        let resp = w
            .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
            .await;
        assert_eq!(resp.status, 201, "{}", resp.text());
    }
}

#[tokio::test]
async fn a_full_cdr_cycle_with_a_real_cdr_registration_token() {
    let w = cdr_world().await;
    let adr = w.adr();
    let resp = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    let created = resp.json();
    let client_id = created["client_id"].as_str().expect("id").to_string();
    let at = token(&w, &adr, &client_id, "cdr:registration").await;

    let resp = w
        .manage(&adr.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = resp.json();
    // The same shape for POST and GET.
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&got), keys(&created));

    let body = w.cdr_request(
        &adr,
        json!({"redirect_uris": ["https://tpp.example.com/cb2"]}),
    );
    let resp = w
        .manage(&adr.client, "PUT", &client_id, Some(&at), &body)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(keys(&resp.json()), keys(&created));
    assert_eq!(
        resp.json()["redirect_uris"],
        json!(["https://tpp.example.com/cb2"])
    );

    // Without cdr:registration: 403.
    let narrow = token(&w, &adr, &client_id, "openid").await;
    let resp = w
        .manage(&adr.client, "GET", &client_id, Some(&narrow), "")
        .await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.json()["error"], "insufficient_scope");

    let resp = w
        .manage(&adr.client, "DELETE", &client_id, Some(&at), "")
        .await;
    assert_eq!(resp.status, 204, "{}", resp.text());
    // CDR's prescribed answer for an unknown client.
    let resp = w
        .manage(&adr.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_eq!(resp.status, 401);
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Bearer error="invalid_request", error_description="The client is unknown""#)
    );
    // After the delete, the software_id may register again.
    let resp = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
}

#[tokio::test]
async fn the_register_status_check_refuses_products_that_are_not_active() {
    // The status endpoint lives on the test's HTTPS server; its URL is only known once it runs, so the
    // world is started once to learn the port layout and the check is configured on a second proxy.
    let w = cdr_world().await;
    let status_path = "/cdr-register/v1/banking/data-recipients/brands/software-products/status";
    let toml = w.config_toml(&Options {
        profile: Profile::Cdr,
        profile_extra: format!(
            "software_product_status_uri = \"{}\"",
            w.jwks.url(status_path)
        ),
        ..Options::default()
    });
    let dir = support::temp::TempDir::new();
    let proxy = support::proxy::ProxyProcess::start(
        dir.path(),
        &toml,
        &support::world::proxy_env(&w.upstream),
    )
    .await;
    let active = w.adr();
    let inactive = w.adr();
    let unlisted = w.adr();
    w.jwks.set(
        status_path,
        json!({"data": {"softwareProducts": [
            {"softwareProductId": active.software_id, "softwareProductStatus": "ACTIVE"},
            {"softwareProductId": inactive.software_id, "softwareProductStatus": "INACTIVE"},
        ]}}),
    );
    let post = |adr: &Tpp, body: String| {
        let client = adr.client.clone();
        let url = proxy.url("/register");
        async move {
            client
                .request("POST", &url, &[("content-type", "application/jwt")], body)
                .await
        }
    };
    let resp = post(&active, w.cdr_request(&active, json!({}))).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(w.jwks.fetch_count(status_path), 1);
    let resp = post(&inactive, w.cdr_request(&inactive, json!({}))).await;
    assert_error(&resp, 400, "unapproved_software_statement", "INACTIVE");
    assert_eq!(
        w.jwks.fetch_count(status_path),
        1,
        "a listed product is judged from the cached list"
    );
    // An id the list does not hold may be new at the Register: one fetch to make sure, at most every 5 s, so
    // whether it happens here depends only on how long the two registrations above took.
    let resp = post(&unlisted, w.cdr_request(&unlisted, json!({}))).await;
    assert_error(&resp, 400, "unapproved_software_statement", "unlisted");
    assert!(w.jwks.fetch_count(status_path) <= 2);
}

#[tokio::test]
async fn a_cdr_request_names_its_response_types_and_id_token_algorithm() {
    let w = cdr_world().await;
    let adr = w.adr();
    for (case, omitted, words) in [
        (
            "no id_token_signed_response_alg (the upstream would choose RS256)",
            json!({"id_token_signed_response_alg": null}),
            "`id_token_signed_response_alg` is required",
        ),
        (
            "no response_types (1.13 RegistrationProperties requires it)",
            json!({"response_types": null}),
            "`response_types` is required",
        ),
    ] {
        let resp = w
            .post_register(&adr.client, &w.cdr_request(&adr, omitted))
            .await;
        assert_error(&resp, 400, ICM, case);
        let desc = resp.json()["error_description"].to_string();
        assert!(desc.contains(words), "{case}: {desc}");
    }
    assert!(
        w.upstream
            .requests(&w.upstream.paths.registration)
            .await
            .is_empty()
    );
    assert!(w.upstream.clients().await.is_empty());
    // Both named, the registration goes through with what was named.
    let resp = w
        .post_register(
            &adr.client,
            &w.cdr_request(&adr, json!({"id_token_signed_response_alg": "ES256"})),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(resp.json()["id_token_signed_response_alg"], "ES256");
    assert_eq!(
        w.upstream
            .requests(&w.upstream.paths.registration)
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_data_recipient_jwks_that_cannot_be_loaded_is_invalid_client_metadata() {
    let w = cdr_world().await;
    // Unreachable (HTTP 500), then reachable but not a JWK Set: the CDR reference server answers both
    // ERR-GEN-021 "Could not load JWKS from Data Recipient endpoint" with invalid_client_metadata.
    let adr = w.adr();
    w.jwks.set_status(&adr.jwks_path, 500);
    let resp = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_error(&resp, 400, ICM, "recipient JWKS answers 500");
    let adr = w.adr();
    w.jwks.set(&adr.jwks_path, json!({"not": "a jwks"}));
    let resp = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_error(&resp, 400, ICM, "recipient JWKS is not a JWK Set");
    assert!(w.upstream.clients().await.is_empty());
}
