//! Everything that is not a registration route reaches the real IdP, with the verified client certificate
//! in the header the IdP reads — and never a spoofed one.

mod support;

use base64::Engine;
use serde_json::{Value, json};
use support::client::TlsClient;
use support::upstream::CertHeader;
use support::world::{Flavour, Options, Tpp, World, urlencode};

/// client_credentials at the token endpoint, through the proxy: the certificate reaches the upstream
/// only through the proxy's header.
async fn token_via_proxy(w: &World, tpp: &Tpp, body: String) -> support::client::Response {
    tpp.client
        .request(
            "POST",
            &w.proxy.url(&w.upstream.paths.token),
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await
}

async fn introspect(w: &World, token: &str) -> Value {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        w.upstream.introspection_client_id, w.upstream.introspection_secret
    ));
    support::client::http_request(
        "POST",
        &w.upstream.url(&w.upstream.paths.introspection),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &format!("Basic {basic}")),
        ],
        format!("token={}", urlencode(token)),
    )
    .await
    .json()
}

#[tokio::test]
async fn tls_client_auth_and_private_key_jwt_get_certificate_bound_tokens_through_the_proxy_in_every_header_format()
 {
    for format in [CertHeader::Rfc9440, CertHeader::Nginx, CertHeader::Envoy] {
        if format == CertHeader::Envoy && Flavour::from_env() == Flavour::Keycloak {
            eprintln!("envoy: not applicable to keycloak, which has no Envoy lookup provider");
            continue;
        }
        let w = World::start(Options {
            cert_header: format,
            ..Options::default()
        })
        .await;
        let tpp = w.tpp();
        let client_id = w.register(&tpp, json!({})).await;
        let resp = token_via_proxy(
            &w,
            &tpp,
            format!("grant_type=client_credentials&client_id={client_id}&scope=accounts"),
        )
        .await;
        assert_eq!(resp.status, 200, "{format:?}: {}", resp.text());
        let at = resp.json()["access_token"]
            .as_str()
            .expect("token")
            .to_string();
        let info = introspect(&w, &at).await;
        assert_eq!(info["active"], true, "{format:?}");
        assert_eq!(info["client_id"], client_id.as_str());
        assert_eq!(
            info["cnf"]["x5t#S256"],
            tpp.cert.thumbprint_s256.as_str(),
            "{format:?}: {info}"
        );
        // The bound token works for management over the same certificate.
        let resp = w
            .manage(&tpp.client, "GET", &client_id, Some(&at), "")
            .await;
        assert_eq!(resp.status, 200, "{format:?}: {}", resp.text());

        // private_key_jwt through the proxy, bound as well.
        let tpp2 = w.tpp();
        let id2 = w
            .register(
                &tpp2,
                json!({"token_endpoint_auth_method": "private_key_jwt"}),
            )
            .await;
        let now = support::claims::now();
        let assertion = tpp2.key.sign(
            json!({}),
            json!({"iss": id2, "sub": id2, "aud": w.upstream.assertion_audience(), "iat": now, "exp": now + 60,
                   "jti": support::claims::jti()}),
        );
        let resp = token_via_proxy(
            &w,
            &tpp2,
            format!(
                "grant_type=client_credentials&scope=accounts&client_assertion_type={}&client_assertion={assertion}",
                urlencode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            ),
        )
        .await;
        assert_eq!(
            resp.status,
            200,
            "{format:?} private_key_jwt: {}",
            resp.text()
        );
        let at2 = resp.json()["access_token"]
            .as_str()
            .expect("token")
            .to_string();
        assert_eq!(
            introspect(&w, &at2).await["cnf"]["x5t#S256"],
            tpp2.cert.thumbprint_s256.as_str()
        );
    }
}

#[tokio::test]
async fn spoofed_certificate_headers_never_reach_the_upstream() {
    let w = World::ob().await;
    let tpp = w.tpp();
    let client_id = w.register(&tpp, json!({})).await;
    let victim = w
        .pki
        .client(support::pki::ClientCertSpec::ob("victim000001", "org0001"));
    let forged_der = base64::engine::general_purpose::STANDARD.encode(&victim.cert_der);
    let forged_pem = urlencode(&victim.cert_pem);
    let rfc = format!(":{forged_der}:");
    let xfcc = format!("Hash=00;Cert=\"{forged_pem}\"");
    let spoofs: Vec<(&str, &str)> = vec![
        ("client-cert", &rfc),
        ("Client-Cert-Chain", &rfc),
        ("CLIENT_CERT", &rfc),
        ("ssl-client-cert", &forged_pem),
        ("SSL_CLIENT_CERT", &forged_pem),
        ("Ssl-Client-Verify", "SUCCESS"),
        ("ssl_client_verify", "SUCCESS"),
        ("x-forwarded-client-cert", &xfcc),
        ("X_Forwarded_Client_Cert", &xfcc),
        ("x-ssl-cert", &forged_pem),
        ("x-client-dn", "CN=victim"),
        ("ssl-client-s-dn", "CN=victim"),
        ("x-forwarded-for", "10.0.0.1"),
        ("forwarded", "for=10.0.0.1;proto=http"),
    ];
    // Without a certificate at all, and with the TPP's own: in both cases no forged value passes.
    let anonymous = TlsClient::new(&w.pki.ca_pem(), None);
    for (client, name) in [(&anonymous, "anonymous"), (&tpp.client, "tpp")] {
        let resp = client
            .request(
                "GET",
                &w.proxy
                    .url(&format!("{}?spoof=1", w.upstream.paths.discovery)),
                &spoofs,
                "",
            )
            .await;
        assert_eq!(resp.status, 200, "{name}");
    }
    // A token request with a forged header for the victim gets nothing: the upstream sees the real certificate.
    let body = format!("grant_type=client_credentials&client_id={client_id}&scope=accounts");
    let resp = tpp
        .client
        .request(
            "POST",
            &w.proxy.url(&w.upstream.paths.token),
            &[
                vec![("content-type", "application/x-www-form-urlencoded")],
                spoofs.clone(),
            ]
            .concat(),
            body,
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    let seen = w.upstream.requests("/").await;
    let admin_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            w.upstream.admin_client_id, w.upstream.admin_secret
        ))
    );
    assert!(seen.len() >= 3, "{seen:?}");
    // The proxy's own RFC 7591 calls (/reg) are not forwarded requests.
    for r in seen
        .iter()
        .filter(|r| r["path"] != w.upstream.paths.registration.as_str())
        // Nor are the proxy's own calls as the [upstream.admin] client (its token, Keycloak's Admin REST).
        .filter(|r| !r["path"].as_str().unwrap_or("").starts_with("/admin/"))
        .filter(|r| r["headers"]["authorization"] != admin_basic.as_str())
    {
        let h = r["headers"].as_object().expect("headers");
        for (k, v) in h {
            let v = v.to_string();
            assert!(
                !v.contains(&forged_der) && !v.contains(&forged_pem),
                "forged {k} reached the upstream: {r}"
            );
            let folded = k.replace('_', "-");
            assert!(
                !matches!(
                    folded.as_str(),
                    "ssl-client-cert"
                        | "ssl-client-verify"
                        | "x-forwarded-client-cert"
                        | "x-ssl-cert"
                        | "x-client-dn"
                        | "ssl-client-s-dn"
                ),
                "{k} reached the upstream: {r}"
            );
            assert!(
                !v.contains("10.0.0.1"),
                "a spoofed forwarding header reached the upstream: {r}"
            );
        }
        assert_eq!(h.get("x-forwarded-proto"), Some(&json!("https")), "{r}");
    }
    let anonymous_req = seen.iter().find(|r| {
        r["path"] == w.upstream.paths.discovery.as_str()
            && r["headers"].get("client-cert").is_none()
    });
    assert!(
        anonymous_req.is_some(),
        "the anonymous request carried no certificate header: {seen:?}"
    );
    let token_req = seen
        .iter()
        .find(|r| {
            r["path"] == w.upstream.paths.token.as_str()
                && r["headers"]["authorization"] != admin_basic.as_str()
        })
        .expect("token request");
    let expected = format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(&tpp.cert.cert_der)
    );
    assert_eq!(token_req["headers"]["client-cert"], expected.as_str());
}

#[tokio::test]
async fn the_upstreams_own_registration_and_admin_paths_are_refused() {
    let w = World::ob().await;
    let tpp = w.tpp();
    for path in [
        "/reg",
        "/reg/abc",
        "/REG",
        "/%72eg",
        "//reg",
        "/x/../reg",
        "/admin/master/console",
        "/realms/bank/clients-registrations/openid-connect",
        "/am/oauth2/realms/root/realms/alpha/register",
        &w.upstream.paths.registration,
        &format!("{}/abc", w.upstream.paths.registration),
    ] {
        let resp = tpp
            .client
            .request(
                "POST",
                &w.proxy.url(path),
                &[
                    ("content-type", "application/json"),
                    (
                        "authorization",
                        &format!("Bearer {}", w.upstream.initial_access_token),
                    ),
                ],
                r#"{"redirect_uris":["https://evil.example.com/cb"]}"#,
            )
            .await;
        assert!(
            matches!(resp.status, 400 | 404),
            "{path}: {} {}",
            resp.status,
            resp.text()
        );
    }
    assert!(
        w.upstream.clients().await.is_empty(),
        "nothing registered around the proxy"
    );
    assert!(
        w.upstream
            .requests(&w.upstream.paths.registration)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn discovery_points_registration_at_the_proxy_and_changes_nothing_else() {
    let w = World::ob().await;
    let tpp = w.tpp();
    let direct = support::client::http_request(
        "GET",
        &w.upstream.url(&w.upstream.paths.discovery),
        &[
            ("x-forwarded-host", "localhost:8443"),
            ("x-forwarded-proto", "https"),
        ],
        "",
    )
    .await
    .json();
    let before = w.upstream.requests(&w.upstream.paths.discovery).await.len();
    for _ in 0..2 {
        let resp = tpp
            .client
            .request("GET", &w.proxy.url(&w.upstream.paths.discovery), &[], "")
            .await;
        assert_eq!(resp.status, 200);
        assert!(resp.header("x-fapi-interaction-id").is_some());
        let doc = resp.json();
        assert_eq!(
            doc["registration_endpoint"],
            "https://localhost:8443/register"
        );
        assert_eq!(doc["issuer"], direct["issuer"]);
        assert_eq!(doc["token_endpoint"], direct["token_endpoint"]);
        assert_eq!(doc["jwks_uri"], direct["jwks_uri"]);
    }
    let fetched = w.upstream.requests(&w.upstream.paths.discovery).await.len();
    assert_eq!(fetched - before, 1, "cached briefly");
}

#[tokio::test]
async fn a_large_response_streams_with_bounded_proxy_memory() {
    let w = World::ob().await;
    let tpp = w.tpp();
    let pid = w.proxy.pid().expect("pid");
    let rss = || -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let before = rss();
    let resp = tpp
        .client
        .request(
            "GET",
            &w.proxy.url("/__test/blob?mb=64"),
            &[("x-test-admin", &w.upstream.initial_access_token)],
            "",
        )
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), 64 * 1024 * 1024);
    let after = rss();
    assert!(before > 0 && after > 0, "/proc readable");
    assert!(
        after.saturating_sub(before) < 24 * 1024,
        "64 MiB passed through, RSS grew by {} KiB",
        after.saturating_sub(before)
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_and_a_slow_one_504() {
    let w = World::ob().await;
    let tpp = w.tpp();
    let resp = tpp
        .client
        .request(
            "GET",
            &w.proxy.url("/__test/slow?ms=5000"),
            &[("x-test-admin", &w.upstream.initial_access_token)],
            "",
        )
        .await;
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert_eq!(resp.json()["error"], "server_error");

    let port = support::world::closed_port();
    let w2 = World::start(Options {
        upstream_override: Some(format!("http://127.0.0.1:{port}")),
        ..Options::default()
    })
    .await;
    let tpp2 = w2.tpp();
    let resp = tpp2
        .client
        .request("GET", &w2.proxy.url(&w2.upstream.paths.token), &[], "")
        .await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(!resp.text().contains(&port.to_string()));
}
