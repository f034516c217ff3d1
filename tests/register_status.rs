//! CDR Register status on every path, through the real binary, the real upstream and a Register stub served over
//! HTTPS: a software product or data recipient that stops being ACTIVE is refused at token, PAR, authorize,
//! introspection and management within one poll interval (revocation, a consent withdrawal, still passes), and
//! served again when ACTIVE; stale lists follow the policy; an unchanged list is confirmed with 304.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::client::Response;
use support::register::{PRODUCTS_PATH, RECIPIENTS_PATH, RegisterStub};
use support::world::{CDR_HOLDER, Options, Profile, Tpp, World, urlencode};

/// The poll interval every test runs with.
const INTERVAL: Duration = Duration::from_secs(1);

async fn world(extra: &str) -> World {
    World::start(Options {
        profile: Profile::Cdr,
        register_status: Some(format!("register_status_interval = \"1s\"\n{extra}")),
        ..Options::default()
    })
    .await
}

fn stub(w: &World) -> &RegisterStub {
    w.register.as_ref().expect("the world runs a Register stub")
}

/// A data recipient registered through the proxy while its product and legal entity are ACTIVE; returns it,
/// its client_id and its legal_entity_id.
async fn registered(w: &World) -> (Tpp, String, String) {
    let adr = w.adr();
    let claims = w.cdr_ssa_claims(&adr, json!({}));
    let legal_entity_id = claims["legal_entity_id"]
        .as_str()
        .expect("legal_entity_id")
        .to_string();
    stub(w).set_product(&adr.software_id, "ACTIVE");
    stub(w).set_recipient(&legal_entity_id, "ACTIVE");
    // The proxy learns of a new product at its next poll (or on demand, at most every 5 s).
    until(
        Duration::from_secs(10),
        "the proxy holds the new product",
        || w.proxy.admin_get("/register-status"),
        |r| r.json()["feeds"]["software_products"]["statuses"][&adr.software_id] == "ACTIVE",
    )
    .await;
    let ssa = w.register_key.sign(json!({}), claims);
    let request = adr.key.sign(
        json!({}),
        support::claims::cdr_request(&adr.software_id, CDR_HOLDER, &ssa, json!({})),
    );
    let resp = w.post_register(&adr.client, &request).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    let client_id = resp.json()["client_id"]
        .as_str()
        .expect("client_id")
        .to_string();
    (adr, client_id, legal_entity_id)
}

fn assertion(w: &World, adr: &Tpp, client_id: &str) -> String {
    let now = support::claims::now();
    adr.key.sign(
        json!({}),
        json!({"iss": client_id, "sub": client_id, "aud": w.upstream.assertion_audience(),
               "iat": now, "exp": now + 60, "jti": support::claims::jti()}),
    )
}

async fn form(w: &World, adr: &Tpp, path: &str, body: String) -> Response {
    adr.client
        .request(
            "POST",
            &w.proxy.url(path),
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await
}

/// client_credentials with private_key_jwt: the client is named only by the assertion's `iss`.
async fn token(w: &World, adr: &Tpp, client_id: &str, scope: &str) -> Response {
    let body = format!(
        "grant_type=client_credentials&scope={}&client_assertion_type={}&client_assertion={}",
        urlencode(scope),
        urlencode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        assertion(w, adr, client_id)
    );
    form(w, adr, &w.upstream.paths.token, body).await
}

/// The path of an endpoint the upstream's discovery document names.
async fn endpoint_path(w: &World, name: &str) -> String {
    let d =
        support::client::http_request("GET", &w.upstream.url(&w.upstream.paths.discovery), &[], "")
            .await
            .json();
    let url = d[name].as_str().unwrap_or_else(|| panic!("{name} in {d}"));
    url::Url::parse(url)
        .expect("an absolute URL")
        .path()
        .to_string()
}

async fn par(w: &World, adr: &Tpp, client_id: &str) -> Response {
    let body = format!(
        "client_id={}&response_type=code&scope=openid&redirect_uri={}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&client_assertion_type={}&client_assertion={}",
        urlencode(client_id),
        urlencode(support::world::REDIRECTS[0]),
        urlencode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        assertion(w, adr, client_id)
    );
    form(
        w,
        adr,
        &endpoint_path(w, "pushed_authorization_request_endpoint").await,
        body,
    )
    .await
}

async fn authorize(w: &World, adr: &Tpp, client_id: &str) -> Response {
    let path = endpoint_path(w, "authorization_endpoint").await;
    let url = w.proxy.url(&format!(
        "{path}?client_id={}&response_type=code&scope=openid&redirect_uri={}",
        urlencode(client_id),
        urlencode(support::world::REDIRECTS[0])
    ));
    adr.client.request("GET", &url, &[], String::new()).await
}

/// Whether the proxy itself refused for the Register's sake, with `status` and `error`.
fn refused_for_register(resp: &Response, status: u16, error: &str) -> bool {
    let body: Value = serde_json::from_slice(resp.text().as_bytes()).unwrap_or(Value::Null);
    resp.status == status
        && body["error"] == error
        && body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("CDR Register lists this client's"))
}

/// Calls `probe` until `done` holds; how long that took. Panics after `limit`.
async fn until<F, Fut>(
    limit: Duration,
    what: &str,
    mut probe: F,
    done: impl Fn(&Response) -> bool,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let started = Instant::now();
    loop {
        let r = probe().await;
        if done(&r) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: still {} after {limit:?}: {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One interval, plus the fetch and the request themselves.
fn within_one_interval() -> Duration {
    INTERVAL + Duration::from_millis(1500)
}

#[tokio::test]
async fn a_product_turned_inactive_is_refused_on_every_path_within_one_interval_and_served_again_when_active()
 {
    let w = world("register_status_max_stale = \"1m\"").await;
    let (adr, client_id, _) = registered(&w).await;
    let resp = token(&w, &adr, &client_id, "cdr:registration").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let at = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let get = w
        .manage(&adr.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_eq!(get.status, 200, "{}", get.text());
    let p = par(&w, &adr, &client_id).await;
    assert!(
        !refused_for_register(&p, 400, "invalid_client"),
        "{}",
        p.text()
    );

    stub(&w).set_product(&adr.software_id, "INACTIVE");
    let took = until(
        Duration::from_secs(10),
        "token after INACTIVE",
        || token(&w, &adr, &client_id, "openid"),
        |r| refused_for_register(r, 400, "invalid_client"),
    )
    .await;
    assert!(took <= within_one_interval(), "refused only after {took:?}");
    let p = par(&w, &adr, &client_id).await;
    assert!(
        refused_for_register(&p, 400, "invalid_client"),
        "PAR: {} {}",
        p.status,
        p.text()
    );
    let a = authorize(&w, &adr, &client_id).await;
    assert!(
        refused_for_register(&a, 400, "invalid_client"),
        "authorize: {} {}",
        a.status,
        a.text()
    );
    for method in ["GET", "DELETE"] {
        let m = w
            .manage(&adr.client, method, &client_id, Some(&at), "")
            .await;
        assert!(
            refused_for_register(&m, 403, "invalid_client"),
            "{method}: {} {}",
            m.status,
            m.text()
        );
    }
    // Without this client's token the answer is the one any unknown ClientId gets: the Register's verdict on a
    // client is not told to whoever asks.
    let stranger = w.manage(&adr.client, "GET", &client_id, None, "").await;
    assert_eq!(stranger.status, 401, "{}", stranger.text());
    assert!(!refused_for_register(&stranger, 403, "invalid_client"));
    let put = w
        .manage(
            &adr.client,
            "PUT",
            &client_id,
            Some(&at),
            &w.cdr_request(&adr, json!({})),
        )
        .await;
    assert!(
        refused_for_register(&put, 403, "invalid_client"),
        "PUT: {} {}",
        put.status,
        put.text()
    );
    // Introspection is refused; revocation, a consent withdrawal, still reaches the IdP (whose 200 it is).
    let token_form = |path: String| {
        let body = format!(
            "token={at}&client_assertion_type={}&client_assertion={}",
            urlencode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            assertion(&w, &adr, &client_id)
        );
        let (w, adr) = (&w, &adr);
        async move { form(w, adr, &path, body).await }
    };
    let i = token_form(w.upstream.paths.introspection.clone()).await;
    assert!(
        refused_for_register(&i, 400, "invalid_client"),
        "introspection: {} {}",
        i.status,
        i.text()
    );
    let r = token_form(w.upstream.paths.revocation.clone()).await;
    assert_eq!(r.status, 200, "revocation: {}", r.text());
    // A second registration of the product is refused too, with the DCR error.
    let again = w
        .post_register(&adr.client, &w.cdr_request(&adr, json!({})))
        .await;
    assert_eq!(again.status, 400, "{}", again.text());
    assert_eq!(again.json()["error"], "unapproved_software_statement");

    // What the operator sees.
    let admin = w.proxy.admin_get("/register-status").await;
    assert_eq!(admin.status, 200, "{}", admin.text());
    let doc = admin.json();
    assert_eq!(
        doc["feeds"]["software_products"]["statuses"][&adr.software_id], "INACTIVE",
        "{doc}"
    );
    assert_eq!(doc["feeds"]["software_products"]["stale"], false, "{doc}");
    assert_eq!(doc["policy"], "closed", "{doc}");
    let metrics = w.proxy.admin_get("/metrics").await.text();
    assert!(
        metrics.contains(
            "dcr_proxy_register_status_entries{feed=\"software_products\",status=\"INACTIVE\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("dcr_proxy_register_status_decisions_total{feed=\"software_products\",status=\"not_active\"}"),
        "{metrics}"
    );

    stub(&w).set_product(&adr.software_id, "ACTIVE");
    let took = until(
        Duration::from_secs(10),
        "token after ACTIVE again",
        || token(&w, &adr, &client_id, "openid"),
        |r| r.status == 200,
    )
    .await;
    assert!(
        took <= within_one_interval(),
        "served again only after {took:?}"
    );
    // The token above was revoked while the product was INACTIVE: a new one.
    let resp = token(&w, &adr, &client_id, "cdr:registration").await;
    let at = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let get = w
        .manage(&adr.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_eq!(get.status, 200, "{}", get.text());
    let p = par(&w, &adr, &client_id).await;
    assert!(
        !refused_for_register(&p, 400, "invalid_client"),
        "{}",
        p.text()
    );
}

#[tokio::test]
async fn a_suspended_data_recipient_is_refused_within_one_interval_and_served_again_when_active() {
    let w = world("register_status_max_stale = \"1m\"").await;
    let (adr, client_id, legal_entity_id) = registered(&w).await;
    let resp = token(&w, &adr, &client_id, "cdr:registration").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let at = resp.json()["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    // Another recipient's product on the same proxy is not affected.
    let (other, other_id, _) = registered(&w).await;

    stub(&w).set_recipient(&legal_entity_id, "SUSPENDED");
    let took = until(
        Duration::from_secs(10),
        "token after SUSPENDED",
        || token(&w, &adr, &client_id, "openid"),
        |r| refused_for_register(r, 400, "invalid_client"),
    )
    .await;
    assert!(took <= within_one_interval(), "refused only after {took:?}");
    let r = token(&w, &adr, &client_id, "openid").await;
    assert!(
        r.json()["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("data recipient as SUSPENDED")),
        "{}",
        r.text()
    );
    let p = par(&w, &adr, &client_id).await;
    assert!(
        refused_for_register(&p, 400, "invalid_client"),
        "PAR: {}",
        p.text()
    );
    let m = w
        .manage(&adr.client, "GET", &client_id, Some(&at), "")
        .await;
    assert!(
        refused_for_register(&m, 403, "invalid_client"),
        "GET: {}",
        m.text()
    );
    let o = token(&w, &other, &other_id, "openid").await;
    assert_eq!(o.status, 200, "{}", o.text());

    stub(&w).set_recipient(&legal_entity_id, "ACTIVE");
    let took = until(
        Duration::from_secs(10),
        "token after ACTIVE again",
        || token(&w, &adr, &client_id, "openid"),
        |r| r.status == 200,
    )
    .await;
    assert!(
        took <= within_one_interval(),
        "served again only after {took:?}"
    );
    let m = w
        .manage(&adr.client, "GET", &client_id, Some(&at), "")
        .await;
    assert_eq!(m.status, 200, "{}", m.text());
}

#[tokio::test]
async fn a_list_stale_beyond_its_bound_refuses_when_closed_and_serves_when_open() {
    let w = world("register_status_max_stale = \"1s\"\nregister_status_policy = \"closed\"").await;
    let (adr, client_id, _) = registered(&w).await;
    // A second proxy on the same store and Register, failing open.
    let open = Options {
        profile: Profile::Cdr,
        register_status: Some(
            "register_status_interval = \"1s\"\nregister_status_max_stale = \"1s\"\nregister_status_policy = \"open\""
                .into(),
        ),
        ..Options::default()
    };
    let (_dir, open_proxy) = w.replica(&open).await;
    let via_open = || {
        let url = open_proxy.url(&w.upstream.paths.token);
        let body = format!(
            "grant_type=client_credentials&scope=openid&client_assertion_type={}&client_assertion={}",
            urlencode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            assertion(&w, &adr, &client_id)
        );
        let client = adr.client.clone();
        async move {
            client
                .request(
                    "POST",
                    &url,
                    &[("content-type", "application/x-www-form-urlencoded")],
                    body,
                )
                .await
        }
    };
    let r = via_open().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(token(&w, &adr, &client_id, "openid").await.status, 200);

    stub(&w).set_failing(true);
    // interval + max_stale after the last confirmation, the closed proxy stops serving the client...
    let took = until(
        Duration::from_secs(10),
        "closed policy, stale list",
        || token(&w, &adr, &client_id, "openid"),
        |r| r.status == 503 && r.json()["error"] == "temporarily_unavailable",
    )
    .await;
    assert!(
        took >= Duration::from_secs(1),
        "refused before the bound: {took:?}"
    );
    let m = w.proxy.admin_get("/metrics").await.text();
    assert!(
        m.contains("dcr_proxy_register_status_stale{feed=\"software_products\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("dcr_proxy_register_status_fetch_failures_total{feed=\"software_products\"}"),
        "{m}"
    );
    // ...and registrations stop too.
    let other = w.adr();
    let reg = w
        .post_register(&other.client, &w.cdr_request(&other, json!({})))
        .await;
    assert_eq!(reg.status, 503, "{}", reg.text());
    // The open one goes on serving it once its list is as stale, saying so in its metrics.
    until(
        Duration::from_secs(10),
        "open policy, stale list",
        || open_proxy.admin_get("/metrics"),
        |r| {
            r.text()
                .contains("dcr_proxy_register_status_stale{feed=\"software_products\"} 1")
        },
    )
    .await;
    let r = via_open().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = open_proxy.admin_get("/metrics").await.text();
    assert!(m.contains("status=\"passed_unconfirmed\""), "{m}");
    assert!(
        open_proxy.logs().iter().any(|l| l.contains("FAIL-OPEN")),
        "the open proxy says it fails open"
    );

    stub(&w).set_failing(false);
    until(
        Duration::from_secs(10),
        "closed policy, fresh again",
        || token(&w, &adr, &client_id, "openid"),
        |r| r.status == 200,
    )
    .await;
}

#[tokio::test]
async fn an_unchanged_list_is_confirmed_with_304_and_stays_fresh() {
    // A bound shorter than the run: only the 304s keep the list fresh.
    let w = world("register_status_max_stale = \"1s\"").await;
    let (adr, client_id, _) = registered(&w).await;
    tokio::time::sleep(INTERVAL * 4).await;
    let (full, conditional_full) = stub(&w).answered(PRODUCTS_PATH, 200);
    let (not_modified, conditional_304) = stub(&w).answered(PRODUCTS_PATH, 304);
    assert!(not_modified >= 2, "304s: {not_modified}");
    assert_eq!(
        conditional_304, not_modified,
        "every 304 answered a conditional request"
    );
    assert_eq!(
        full - conditional_full,
        1,
        "one unconditional fetch, the first"
    );
    assert!(stub(&w).answered(RECIPIENTS_PATH, 304).0 >= 2);
    let r = token(&w, &adr, &client_id, "openid").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = w.proxy.admin_get("/register-status").await.json();
    assert_eq!(doc["feeds"]["software_products"]["stale"], false, "{doc}");
    assert!(
        doc["feeds"]["software_products"]["etag"].is_string(),
        "{doc}"
    );
    // A change is a new ETag, and a full answer.
    stub(&w).set_product(&adr.software_id, "REMOVED");
    until(
        Duration::from_secs(10),
        "token after REMOVED",
        || token(&w, &adr, &client_id, "openid"),
        |r| refused_for_register(r, 400, "invalid_client"),
    )
    .await;
    assert_eq!(stub(&w).answered(PRODUCTS_PATH, 200).0, full + 1);
}
