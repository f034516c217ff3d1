//! GET/PUT/DELETE /register/{ClientId} with real access tokens from the real upstream.

mod support;

use serde_json::json;
use support::client::{Response, TlsClient};
use support::pki::ClientCertSpec;
use support::world::{Flavour, Options, Tpp, World, not_for_this_flavour};

fn assert_401(resp: &Response, error: &str, case: &str) {
    assert_eq!(resp.status, 401, "{case}: {}", resp.text());
    let challenge = resp.header("www-authenticate").unwrap_or("");
    assert!(challenge.starts_with("Bearer"), "{case}: {challenge}");
    if !error.is_empty() {
        assert!(
            challenge.contains(&format!("error=\"{error}\"")),
            "{case}: {challenge}"
        );
    }
}

async fn world() -> World {
    World::start(Options {
        management_extra: r#"required_scope = "accounts""#.into(),
        ..Options::default()
    })
    .await
}

async fn token(w: &World, client_id: &str, tpp: &Tpp, scope: &str) -> String {
    let resp = w.token_tls(client_id, &tpp.cert, scope).await;
    assert_eq!(resp.status, 200, "token: {}", resp.text());
    resp.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

#[tokio::test]
async fn a_client_reads_replaces_twice_and_deletes_its_registration() {
    let w = world().await;
    let tpp = w.tpp();
    let client_id = w.register(&tpp, json!({})).await;
    let at = token(&w, &client_id, &tpp, "openid accounts").await;

    let resp = w
        .manage(&tpp.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let b = resp.json();
    assert_eq!(b["client_id"], client_id.as_str());
    assert_eq!(b["software_id"], tpp.software_id.as_str());
    assert!(b["software_statement"].is_string());
    assert!(b.get("registration_access_token").is_none());

    // Two replacements in a row: the second works only if the rotated registration token was stored.
    for (n, uris) in [
        (1, json!(["https://tpp.example.com/cb2"])),
        (2, json!(["https://tpp.example.com/cb"])),
    ] {
        let body = w.ob_request(
            &tpp,
            json!({"redirect_uris": uris, "scope": ["openid", "accounts", "payments"]}),
        );
        let resp = w
            .manage(&tpp.client, "PUT", &client_id, Some(&at), &body)
            .await;
        assert_eq!(resp.status, 200, "PUT {n}: {}", resp.text());
        assert_eq!(resp.json()["redirect_uris"], uris, "PUT {n}");
        assert_eq!(
            resp.json()["scope"],
            json!(["openid", "accounts", "payments"])
        );
        assert_eq!(resp.json()["client_id"], client_id.as_str());
    }
    let resp = w
        .manage(&tpp.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.json()["redirect_uris"],
        json!(["https://tpp.example.com/cb"])
    );

    let resp = w
        .manage(&tpp.client, "DELETE", &client_id, Some(&at), "")
        .await;
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert!(resp.body.is_empty());
    assert!(
        w.upstream.clients().await.is_empty(),
        "deleted at the upstream too"
    );

    let resp = w
        .manage(&tpp.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_401(&resp, "", "GET after DELETE");
    let body = w.ob_request(&tpp, json!({}));
    let resp = w
        .manage(&tpp.client, "PUT", &client_id, Some(&at), &body)
        .await;
    assert_401(&resp, "", "PUT after DELETE");
    let resp = w
        .manage(&tpp.client, "DELETE", &client_id, Some(&at), "")
        .await;
    assert_401(&resp, "", "DELETE after DELETE");
}

#[tokio::test]
async fn private_key_jwt_clients_manage_with_their_tokens_too() {
    let w = world().await;
    let tpp = w.tpp();
    let client_id = w
        .register(
            &tpp,
            json!({"token_endpoint_auth_method": "private_key_jwt"}),
        )
        .await;
    let resp = w
        .token_private_key_jwt(&client_id, &tpp.key, &tpp.cert, "accounts")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let at = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    // Certificate-bound as well (tls_client_certificate_bound_access_tokens is always registered).
    let resp = w
        .manage(&tpp.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[tokio::test]
async fn bad_tokens_get_401_with_a_challenge_and_wrong_scope_403() {
    let w = world().await;
    let tpp = w.tpp();
    let client_id = w.register(&tpp, json!({})).await;
    let at = token(&w, &client_id, &tpp, "openid accounts").await;
    let other_tpp = w.tpp();
    let other_id = w.register(&other_tpp, json!({})).await;

    let resp = w.manage(&tpp.client, "GET", &client_id, None, "").await;
    assert_401(&resp, "", "no token");
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    for (token, case) in [
        ("", "empty"),
        ("not a token!", "garbage"),
        ("abc.def.ghi", "unknown"),
    ] {
        let resp = w
            .manage(&tpp.client, "GET", &client_id, Some(token), "")
            .await;
        assert_401(&resp, "invalid_token", case);
        assert_eq!(resp.json()["error"], "invalid_token", "{case}");
    }
    // Expired: valid a moment ago (and cached as such), then past its exp.
    let resp = w
        .token_tls_ttl(&client_id, &tpp.cert, "openid accounts", Some(2))
        .await;
    let short = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(
        w.manage(&tpp.client, "GET", &client_id, Some(&short), "")
            .await
            .status,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    let resp = w
        .manage(&tpp.client, "GET", &client_id, Some(&short), "")
        .await;
    assert_401(&resp, "invalid_token", "expired");

    let resp = tpp
        .client
        .request(
            "GET",
            &w.proxy.url(&format!("/register/{client_id}")),
            &[("authorization", &format!("Basic {at}"))],
            "",
        )
        .await;
    assert_401(&resp, "invalid_token", "another scheme");

    // A token without the management scope: 403 insufficient_scope.
    let narrow = token(&w, &client_id, &tpp, "openid").await;
    let resp = w
        .manage(&tpp.client, "GET", &client_id, Some(&narrow), "")
        .await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.json()["error"], "insufficient_scope");
    assert!(
        resp.header("www-authenticate")
            .unwrap_or("")
            .contains("insufficient_scope")
    );

    // A certificate-bound token presented over another certificate.
    let stranger = w
        .pki
        .client(ClientCertSpec::ob("stranger00001", "org00001"));
    let stranger_client = TlsClient::new(&w.pki.ca_pem(), Some(&stranger));
    let resp = w
        .manage(&stranger_client, "GET", &client_id, Some(&at), "")
        .await;
    assert_401(&resp, "invalid_token", "other certificate");

    // Another client's token: 401, and OB says the bank revokes it. Keycloak lets a client revoke only its own
    // tokens ("Unmatching clients"), so there the token lives on and still works for its own client.
    let other_at = token(&w, &other_id, &other_tpp, "openid accounts").await;
    let resp = w
        .manage(&other_tpp.client, "GET", &client_id, Some(&other_at), "")
        .await;
    assert_401(&resp, "invalid_token", "another client's token");
    let resp = w
        .manage(&other_tpp.client, "GET", &other_id, Some(&other_at), "")
        .await;
    match w.flavour() {
        Flavour::Rfc7591 => assert_401(
            &resp,
            "invalid_token",
            "the revoked token on its own client",
        ),
        // AM: revoking another client's token is not shown to work, so the proxy is given no revocation endpoint.
        Flavour::Keycloak | Flavour::ForgeRockAm => {
            assert_eq!(resp.status, 200, "not revoked: {}", resp.text());
            assert!(
                w.upstream
                    .requests(&w.upstream.paths.revocation)
                    .await
                    .is_empty()
            );
        }
    }

    // The good token still works after all that.
    assert_eq!(
        w.manage(&tpp.client, "GET", &client_id, Some(&at), "")
            .await
            .status,
        200
    );

    // An unknown ClientId looks the same as another client's: nothing reveals whether it exists,
    // and the token presented for it is revoked like any token presented for the wrong client (not with
    // Keycloak, see above).
    let resp = w
        .manage(
            &tpp.client,
            "GET",
            "00000000-0000-0000-0000-000000000000",
            Some(&at),
            "",
        )
        .await;
    assert_401(&resp, "invalid_token", "unknown client id");
    let resp = w
        .manage(&tpp.client, "GET", &client_id, Some(&at), "")
        .await;
    match w.flavour() {
        Flavour::Rfc7591 => assert_401(
            &resp,
            "invalid_token",
            "revoked after use on an unknown client id",
        ),
        Flavour::Keycloak | Flavour::ForgeRockAm => {
            assert_eq!(resp.status, 200, "{}", resp.text())
        }
    }

    // No client certificate at all.
    let anonymous = TlsClient::new(&w.pki.ca_pem(), None);
    let resp = w.manage(&anonymous, "GET", &client_id, Some(&at), "").await;
    assert_eq!(resp.status, 403, "{}", resp.text());

    // Methods RFC 7592 does not define here.
    for method in ["POST", "PATCH"] {
        let resp = w
            .manage(&tpp.client, method, &client_id, Some(&at), "")
            .await;
        assert_eq!(resp.status, 405, "{method}");
        assert_eq!(resp.header("allow"), Some("GET, PUT, DELETE"), "{method}");
    }
    let logs = w.proxy.logs().join("\n");
    assert!(
        !logs.contains(&at) && !logs.contains(&other_at),
        "tokens never reach the logs"
    );
}

#[tokio::test]
async fn a_put_must_pass_every_registration_rule_and_keep_the_software_id() {
    let w = world().await;
    let tpp = w.tpp();
    let client_id = w.register(&tpp, json!({})).await;
    let at = token(&w, &client_id, &tpp, "openid accounts").await;

    let bad = w.ob_request(
        &tpp,
        json!({"redirect_uris": ["https://evil.example.com/cb"]}),
    );
    let resp = w
        .manage(&tpp.client, "PUT", &client_id, Some(&at), &bad)
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"], "invalid_redirect_uri");

    // Another software's SSA (a valid one) cannot take over this client.
    let other = w.tpp_with(ClientCertSpec::ob(
        tpp.software_id.clone() + "X",
        tpp.org_id.clone(),
    ));
    let ssa = w.ob_ssa(&other, json!({}));
    let claims = w.ob_request_claims(
        &other,
        &ssa,
        json!({"tls_client_auth_dn": tpp.cert.subject_rfc4514}),
    );
    let body = other.key.sign(json!({}), claims);
    let resp = w
        .manage(&tpp.client, "PUT", &client_id, Some(&at), &body)
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text());

    // Nothing changed: GET still answers, and a valid PUT still works with the original token.
    assert_eq!(
        w.manage(&tpp.client, "GET", &client_id, Some(&at), "")
            .await
            .status,
        200
    );
    let good = w.ob_request(&tpp, json!({}));
    assert_eq!(
        w.manage(&tpp.client, "PUT", &client_id, Some(&at), &good)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_client_deleted_at_the_upstream_behind_our_back_answers_401_and_is_marked_gone() {
    let w = world().await;
    let tpp = w.tpp();
    let client_id = w.register(&tpp, json!({})).await;
    let at = token(&w, &client_id, &tpp, "openid accounts").await;
    // Checked once while the client exists: the proxy keeps the answer for management.cache_ttl, so the
    // token still passes after the upstream dropped the client (Keycloak answers active:false at once for a
    // deleted client's token, and the request would never reach the record).
    assert_eq!(
        w.manage(&tpp.client, "GET", &client_id, Some(&at), "")
            .await
            .status,
        200
    );
    let db = rusqlite::Connection::open(w.dir.join("dcr.sqlite")).expect("open the store");
    let (rat, uri): (String, String) = db
        .query_row(
            "SELECT registration_access_token, registration_client_uri FROM registrations WHERE client_id = ?1",
            [&client_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("record");
    let resp = support::client::http_request(
        "DELETE",
        &uri,
        &[("authorization", &format!("Bearer {rat}"))],
        "",
    )
    .await;
    // AM answers 200 (secure-api-gateway-ob-uk ManageApiClientFilter: "AM … returns a 200").
    let deleted = if w.flavour() == Flavour::ForgeRockAm {
        200
    } else {
        204
    };
    assert_eq!(resp.status, deleted, "{}", resp.text());

    let resp = w
        .manage(&tpp.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_401(&resp, "", "deleted behind our back");
    let state: String = db
        .query_row(
            "SELECT state FROM registrations WHERE client_id = ?1",
            [&client_id],
            |r| r.get(0),
        )
        .expect("record kept for audit");
    assert_eq!(state, "gone");
}

#[tokio::test]
async fn a_stale_registration_token_is_replaced_by_a_minted_one_and_the_client_kept() {
    if not_for_this_flavour(
        Flavour::Keycloak,
        "only Keycloak answers 401 alike for a stale token and a deleted client, and mints new tokens",
    ) {
        return;
    }
    let w = world().await;
    let tpp = w.tpp();
    let client_id = w.register(&tpp, json!({})).await;
    let at = token(&w, &client_id, &tpp, "openid accounts").await;
    let db = rusqlite::Connection::open(w.dir.join("dcr.sqlite")).expect("open the store");
    let stored = |db: &rusqlite::Connection| -> String {
        db.query_row(
            "SELECT registration_access_token FROM registrations WHERE client_id = ?1",
            [&client_id],
            |r| r.get(0),
        )
        .expect("record")
    };
    let old = stored(&db);
    // Someone regenerates the registration access token in the admin console: ours is stale now.
    w.upstream.mint_registration_token(&client_id).await;

    let resp = w
        .manage(&tpp.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let new = stored(&db);
    assert_ne!(new, old, "a new token was minted and stored");
    assert!(
        w.upstream.admin_client(&client_id).await.is_some(),
        "the client was kept"
    );
    // The stored token works: a PUT goes through with it.
    let body = w.ob_request(
        &tpp,
        json!({"redirect_uris": ["https://tpp.example.com/cb2"]}),
    );
    let resp = w
        .manage(&tpp.client, "PUT", &client_id, Some(&at), &body)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        w.proxy
            .logs()
            .iter()
            .any(|l| l.contains("the stored registration token was stale")),
        "the operator is told"
    );
}
