//! `upstream.flavour = "forgerock-am"` against the AM stand-in, whatever `DCR_TEST_UPSTREAM` says: initial access
//! tokens that expire or are revoked mid-run, registration access tokens that die with them (the stand-in's
//! `AM_RAT_IS_IAT=true`, OpenAM's behaviour, assumed for AM), and a client_id AM does not echo.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::world::{Flavour, Options, Tpp, World};

fn am(upstream_env: &[(&str, &str)]) -> Options {
    Options {
        flavour: Flavour::ForgeRockAm,
        cert_header: Flavour::ForgeRockAm.cert_header(),
        upstream_admin: true,
        upstream_env: upstream_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Options::default()
    }
}

async fn token(w: &World, client_id: &str, tpp: &Tpp) -> String {
    let resp = w.token_tls(client_id, &tpp.cert, "openid accounts").await;
    assert_eq!(resp.status, 200, "token: {}", resp.text());
    resp.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// The Bearer of each create the upstream saw, oldest first.
async fn create_bearers(w: &World) -> Vec<String> {
    w.upstream
        .requests(&w.upstream.paths.registration)
        .await
        .iter()
        .filter(|r| r["method"] == "POST")
        .filter_map(|r| r["headers"]["authorization"].as_str().map(str::to_owned))
        .collect()
}

fn logged(w: &World, needle: &str) -> bool {
    w.proxy.logs().iter().any(|l| l.contains(needle))
}

#[tokio::test]
async fn an_initial_access_token_that_expires_mid_run_is_minted_again_and_no_tpp_sees_it() {
    let w = World::start(am(&[("AM_IAT_LIFETIME", "4")])).await;
    let first = w.tpp();
    let first_id = w.register(&first, json!({})).await;
    let first_at = token(&w, &first_id, &first).await;
    // The four-second token lives past its use: the proxy minted it, AM did not see the harness's static one.
    let bearers = create_bearers(&w).await;
    assert_eq!(bearers.len(), 1);
    assert_ne!(
        bearers[0],
        format!("Bearer {}", w.upstream.initial_access_token)
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    // Expired now: the next registration goes through with a new one.
    let second = w.tpp();
    let second_id = w.register(&second, json!({})).await;
    let bearers = create_bearers(&w).await;
    assert_eq!(bearers.len(), 2, "no create was refused: {bearers:?}");
    assert_ne!(bearers[0], bearers[1]);

    // The first client's registration access token was that expired token (AM_RAT_IS_IAT=true): AM refuses
    // it, and the proxy asks AM's admin API whether the client lives before it answers.
    let resp = w
        .manage(&first.client, "GET", &first_id, Some(&first_at), "")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["client_id"], first_id.as_str());
    assert!(logged(&w, "still has the client"));

    // An update needs a live registration access token, which AM does not issue anew: the TPP is told so,
    // and nothing changes.
    let put = w.ob_request(
        &first,
        json!({"redirect_uris": ["https://tpp.example.com/cb2"]}),
    );
    let resp = w
        .manage(&first.client, "PUT", &first_id, Some(&first_at), &put)
        .await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(logged(
        &w,
        "no longer accepts this client's registration access token"
    ));

    // A delete goes through AM's admin API instead.
    let resp = w
        .manage(&first.client, "DELETE", &first_id, Some(&first_at), "")
        .await;
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert_eq!(w.upstream.am_agent("GET", &first_id).await, None);
    assert_eq!(w.upstream.clients().await, vec![second_id]);
}

#[tokio::test]
async fn a_refused_initial_access_token_is_minted_again_and_the_create_sent_once_more() {
    let w = World::start(am(&[])).await;
    w.register(&w.tpp(), json!({})).await;
    let bearer = create_bearers(&w).await.pop().expect("one create");
    let iat = bearer
        .strip_prefix("Bearer ")
        .expect("a Bearer")
        .to_string();
    // The IAT client revokes its own token behind the proxy's back (an operator, or AM's token store reset).
    let basic = support::world::base64_std(
        format!("{}:{}", w.upstream.iat_client_id, w.upstream.iat_secret).as_bytes(),
    );
    let resp = support::client::http_request(
        "POST",
        &w.upstream.url(&w.upstream.paths.revocation),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &format!("Basic {basic}")),
        ],
        format!("token={}", support::world::urlencode(&iat)),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    // AM answers the cached token with 400 access_denied; the TPP never sees it.
    let tpp = w.tpp();
    let client_id = w.register(&tpp, json!({})).await;
    let bearers = create_bearers(&w).await;
    assert_eq!(bearers.len(), 3, "{bearers:?}");
    assert_eq!(bearers[1], bearer, "the cached token was tried first");
    assert_ne!(bearers[2], bearer, "then a new one");
    assert!(logged(
        &w,
        "refused the minted initial access token; minting a new one"
    ));
    assert!(w.upstream.am_agent("GET", &client_id).await.is_some());
}

#[tokio::test]
async fn an_initial_access_token_refused_twice_is_our_failure_not_the_tpps() {
    let w = World::start(am(&[])).await;
    // AM refuses the cached token and the freshly minted one (an IAT client that lost its rights mid-run).
    w.upstream
        .fault(json!({"mode": "refuse_token", "count": 2}))
        .await;
    let tpp = w.tpp();
    let resp = w
        .post_register(&tpp.client, &w.ob_request(&tpp, json!({})))
        .await;
    // Not a 400 the TPP would try to fix: the credential is ours.
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(create_bearers(&w).await.len(), 2, "one retry, no more");
    assert!(logged(
        &w,
        "refused two freshly minted initial access tokens"
    ));
    assert!(w.upstream.clients().await.is_empty());
    // Once AM takes tokens again the same TPP registers, and only its client exists.
    let client_id = w.register(&tpp, json!({})).await;
    assert_eq!(w.upstream.clients().await, vec![client_id]);
}

#[tokio::test]
async fn a_client_id_am_does_not_echo_is_undone_and_leaves_no_client() {
    let w = World::start(am(&[])).await;
    // AM 7 docs say a named client_id is honoured; should a release ignore it, recovery would look for a
    // client that does not exist, so the proxy deletes what AM made and says so.
    w.upstream
        .fault(json!({"mode": "ignore_client_id", "count": 1}))
        .await;
    let tpp = w.tpp();
    let resp = w
        .post_register(&tpp.client, &w.ob_request(&tpp, json!({})))
        .await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(w.upstream.clients().await.is_empty());
    // The next one is whole.
    let client_id = w.register(&tpp, json!({})).await;
    let agent: Value = w.upstream.am_agent("GET", &client_id).await.expect("agent");
    assert_eq!(agent["_id"], client_id.as_str());
}

#[tokio::test]
async fn a_client_removed_in_am_answers_401_and_its_record_is_gone() {
    let w = World::start(am(&[])).await;
    let tpp = w.tpp();
    let client_id = w.register(&tpp, json!({})).await;
    let at = token(&w, &client_id, &tpp).await;
    assert_eq!(
        w.manage(&tpp.client, "GET", &client_id, Some(&at), "")
            .await
            .status,
        200
    );
    // An AM administrator deletes the agent in the console.
    assert!(w.upstream.am_agent("DELETE", &client_id).await.is_some());
    // AM answers 400 invalid_client_metadata for the unknown client; the admin API confirms it is gone.
    let resp = w
        .manage(&tpp.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    let resp = w
        .manage(&tpp.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert!(logged(&w, "client deleted at the upstream behind our back"));
}
