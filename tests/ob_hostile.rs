//! POST /register for UK OB v3.1 under attack, through the real binary, over real mTLS, against the real
//! oidc-provider: what the TLS listener offers and refuses, and hostile request JWTs, redirect URIs, keys, DNs
//! and scopes, each refused without leaving a client behind.

mod support;

use serde_json::{Value, json};
use support::client::{TlsClient, assert_error, tls_alert};
use support::keys::SigningKey;
use support::pki::ClientCertSpec;
use support::world::{Flavour, OB_AUD, Options, Tpp, World, jwks_doc, not_for_this_flavour};

const ICM: &str = "invalid_client_metadata";
const IRU: &str = "invalid_redirect_uri";

/// The suite a client that offers `suites` over `version` and no certificate gets from the proxy, if any.
async fn negotiated(
    w: &World,
    version: &'static rustls::SupportedProtocolVersion,
    suites: Vec<rustls::SupportedCipherSuite>,
) -> Option<rustls::CipherSuite> {
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites,
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(w.pki.ca_der()))
        .expect("ca");
    let cfg = rustls::ClientConfig::builder_with_provider(provider.into())
        .with_protocol_versions(&[version])
        .expect("protocol version")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(w.proxy.addr)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .ok()?;
    s.get_ref().1.negotiated_cipher_suite().map(|s| s.suite())
}

#[tokio::test]
async fn tls_offers_only_fapi_suites_and_no_resumption() {
    let w = World::ob().await;
    let tpp = w.tpp();
    // TLS 1.2 with a CBC or ChaCha suite: no shared cipher suite.
    let chacha =
        rustls::crypto::aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256;
    let res = negotiated(&w, &rustls::version::TLS12, vec![chacha]).await;
    assert_eq!(res, None, "ChaCha20 over TLS 1.2 is not a FAPI suite");

    // Two handshakes on one client config: the second is a full handshake (no ticket, no session id reuse).
    let client = TlsClient::new(&w.pki.ca_pem(), Some(&tpp.cert));
    let cfg = client.config();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(w.proxy.addr)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut s = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(name, tcp)
            .await
            .expect("handshake");
        use tokio::io::AsyncWriteExt;
        let _ = s
            .write_all(b"GET /nothing HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        use tokio::io::AsyncReadExt;
        let _ = s.read_to_end(&mut buf).await;
        assert_eq!(
            s.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Full)
        );
    }
}

#[tokio::test]
async fn the_server_chooses_aes_128_gcm_whichever_suite_the_client_lists_first() {
    use rustls::CipherSuite as Suite;
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let w = World::ob().await;
    let tls13 = &rustls::version::TLS13;
    let tls12 = &rustls::version::TLS12;
    // The order of OpenSSL's and rustls' default lists: AES-256 (SHA-384) before AES-128 (SHA-256).
    let aes256_first_13 = vec![cs::TLS13_AES_256_GCM_SHA384, cs::TLS13_AES_128_GCM_SHA256];
    let got = negotiated(&w, tls13, aes256_first_13).await;
    assert_eq!(got, Some(Suite::TLS13_AES_128_GCM_SHA256));
    let aes256_first_12 = vec![
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    let got = negotiated(&w, tls12, aes256_first_12).await;
    assert!(
        matches!(
            got,
            Some(
                Suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                    | Suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            )
        ),
        "TLS 1.2 negotiated {got:?}"
    );
    // A client that offers only AES-256 still connects, with AES-256.
    let only_aes256 = vec![cs::TLS13_AES_256_GCM_SHA384];
    let got = negotiated(&w, tls13, only_aes256).await;
    assert_eq!(got, Some(Suite::TLS13_AES_256_GCM_SHA384));
}

#[tokio::test]
async fn a_listener_requiring_client_auth_refuses_handshakes_without_a_certificate() {
    let w = World::start(Options {
        client_auth: "required",
        ..Options::default()
    })
    .await;
    let client = TlsClient::new(&w.pki.ca_pem(), None);
    let err = client
        .connect_only(w.proxy.addr)
        .await
        .expect_err("no certificate");
    assert_eq!(
        tls_alert(&err),
        Some(rustls::AlertDescription::CertificateRequired),
        "{err}"
    );
    let _ = OB_AUD;
}

/// The request JWT for `tpp` with the header used byte for byte and `dup` (a JSON member, `"name":value`) put in
/// front of the claims' own members, so that the claims name it twice and a last-wins parser reads the real one.
fn with_duplicate(w: &World, tpp: &Tpp, header: &str, extra: Value, dup: &str) -> String {
    let ssa = w.ob_ssa(tpp, json!({}));
    let claims = w.ob_request_claims(tpp, &ssa, extra).to_string();
    let payload = format!("{{{dup},{}", &claims[1..]);
    tpp.key.sign_raw(header, payload.as_bytes())
}

#[tokio::test]
async fn hostile_request_jwts_are_refused_and_create_nothing() {
    let w = World::ob().await;
    let tpp = w.tpp();
    let kid = tpp.key.kid().to_string();
    let now = support::claims::now();

    // A member named twice: a last-wins parser reads PS256 and the real software_id, another parser would not.
    let header_twice = format!(r#"{{"alg":"none","kid":"{kid}","alg":"PS256"}}"#);
    let plain_header = format!(r#"{{"alg":"PS256","kid":"{kid}"}}"#);
    let twice = [
        (
            "alg twice in the header",
            with_duplicate(&w, &tpp, &header_twice, json!({}), r#""iss":"x""#),
            "`alg` more than once in its header",
        ),
        (
            "software_id twice in the claims",
            with_duplicate(
                &w,
                &tpp,
                &plain_header,
                json!({"software_id": tpp.software_id}),
                r#""software_id":"someone-else""#,
            ),
            "`software_id` more than once in its claims",
        ),
    ];
    for (case, body, words) in twice {
        let resp = w.post_register(&tpp.client, &body).await;
        assert_error(&resp, 400, ICM, case);
        let desc = resp.json()["error_description"].to_string();
        assert!(desc.contains(words), "{case}: {desc}");
    }

    // iat far in the past: -2^63 must neither wrap into range nor crash the request.
    for (case, iat) in [
        ("iat = -2^63", json!(i64::MIN)),
        ("iat as a huge negative float", json!(-1e300)),
        ("iat an hour ago", json!(now - 3600)),
        ("iat just past the 5 minute default", json!(now - 330)),
    ] {
        let resp = w
            .post_register(&tpp.client, &w.ob_request(&tpp, json!({ "iat": iat })))
            .await;
        assert_error(&resp, 400, ICM, case);
        let desc = resp.json()["error_description"].to_string();
        assert!(desc.contains("too old"), "{case}: {desc}");
    }

    // A 40 KiB kid is quoted back cut short, in the body and in the log line of the decision.
    let long_kid = "k".repeat(40 * 1024);
    let body = tpp.key.sign(
        json!({ "kid": long_kid }),
        w.ob_request_claims(&tpp, &w.ob_ssa(&tpp, json!({})), json!({})),
    );
    let resp = w.post_register(&tpp.client, &body).await;
    assert_error(&resp, 400, ICM, "a 40 KiB kid");
    let desc = resp.json()["error_description"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(desc.len() < 1024, "{} bytes: {desc}", desc.len());
    assert!(desc.contains("40960 bytes in all"), "{desc}");
    assert!(w.upstream.clients().await.is_empty());
    let logs = w.proxy.logs();
    let longest = logs.iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");

    // The same request, well formed, still registers: the refusals above were for what was changed.
    let resp = w
        .post_register(&tpp.client, &w.ob_request(&tpp, json!({ "iat": now - 60 })))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
}

#[tokio::test]
async fn dangerous_redirect_uris_are_refused_even_when_the_ssa_lists_them() {
    let w = World::ob().await;
    let tpp = w.tpp();
    for uri in [
        "https://[::ffff:127.0.0.1]/cb",
        "https://0.0.0.0/cb",
        "https://127.0.0.2/cb",
        "https://[fe80::1]/cb",
        "https://169.254.169.254/cb",
        "https://192.168.0.10/cb",
        "https://good.example@evil.example/cb",
        "https://good.example\\evil.example/cb",
        "https://tpp.example.com/cb\u{0}",
    ] {
        let ssa = w.ob_ssa(&tpp, json!({ "software_redirect_uris": [uri] }));
        // Named in the request, and omitted (the SSA's list is then registered).
        for named in [json!([uri]), Value::Null] {
            let claims = w.ob_request_claims(&tpp, &ssa, json!({ "redirect_uris": named }));
            let resp = w
                .post_register(&tpp.client, &tpp.key.sign(json!({}), claims))
                .await;
            assert_error(&resp, 400, IRU, &format!("{uri:?} ({named})"));
            let desc = resp.json()["error_description"].to_string();
            assert!(!desc.contains('\0'), "{desc}");
        }
    }
    assert!(w.upstream.clients().await.is_empty());
}

#[tokio::test]
async fn weak_or_misused_tpp_keys_do_not_verify_a_request() {
    let w = World::ob().await;
    let e3 = SigningKey::rsa_e3("sig-e3");
    assert_eq!(
        e3.public_jwk(None)["e"],
        "Aw",
        "the fixture's exponent is 3"
    );
    // Each case is its own TPP, so its JWKS URL is fetched fresh rather than served from the cache.
    type Jwk = fn(&Tpp, &SigningKey) -> Value;
    let cases: [(&str, Option<&SigningKey>, Jwk); 4] = [
        ("RSA with e = 3", Some(&e3), |_, k| {
            k.public_jwk(Some("sig"))
        }),
        ("key_ops [encrypt]", None, |_, k| {
            let mut jwk = k.public_jwk(None);
            jwk["key_ops"] = json!(["encrypt"]);
            jwk
        }),
        ("key_ops [sign] with use sig", None, |_, k| {
            let mut jwk = k.public_jwk(Some("sig"));
            jwk["key_ops"] = json!(["sign"]);
            jwk
        }),
        ("use enc", None, |_, k| k.public_jwk(Some("enc"))),
    ];
    for (case, signer, jwk) in cases {
        let tpp = w.tpp();
        let signer = signer.unwrap_or(&tpp.key);
        w.jwks.set(
            &tpp.jwks_path,
            jwks_doc(&[jwk(&tpp, signer), tpp.cert.tls_jwk("tls-1")]),
        );
        let claims = w.ob_request_claims(&tpp, &w.ob_ssa(&tpp, json!({})), json!({}));
        let resp = w
            .post_register(&tpp.client, &signer.sign(json!({}), claims))
            .await;
        assert_error(&resp, 400, ICM, case);
        // The JWKS was served, so the refusal is about the key, not the fetch.
        let desc = resp.json()["error_description"].to_string();
        assert!(desc.contains("cannot verify"), "{case}: {desc}");
    }
    assert!(w.upstream.clients().await.is_empty());
    // key_ops naming verify, and a well-formed key, still verify.
    let tpp = w.tpp();
    let mut jwk = tpp.key.public_jwk(Some("sig"));
    jwk["key_ops"] = json!(["verify"]);
    w.jwks
        .set(&tpp.jwks_path, jwks_doc(&[jwk, tpp.cert.tls_jwk("tls-1")]));
    let resp = w
        .post_register(&tpp.client, &w.ob_request(&tpp, json!({})))
        .await;
    assert_eq!(resp.status, 201, "{}", resp.text());
}

#[tokio::test]
async fn a_dn_spelt_with_look_alike_letters_is_not_the_certificates_dn() {
    let w = World::ob().await;
    // ſ (U+017F) folds to s, the Kelvin sign (U+212A) to k, ﬀ (U+FB00) to ff under Unicode case folding.
    for (subject_cn, requested_cn) in [
        ("tpp-\u{17F}igning", "tpp-signing"),
        ("tpp-signing", "tpp-\u{17F}igning"),
        ("\u{212A}ey-service", "Key-service"),
        ("sta\u{FB00}-app", "staff-app"),
    ] {
        let tpp = w.tpp_with(ClientCertSpec::custom([
            ("C", "GB"),
            ("O", "OpenBanking"),
            ("CN", subject_cn),
        ]));
        let dn = format!("CN={requested_cn},O=OpenBanking,C=GB");
        let resp = w
            .post_register(
                &tpp.client,
                &w.ob_request(&tpp, json!({ "tls_client_auth_dn": dn })),
            )
            .await;
        assert_error(&resp, 400, ICM, &format!("{subject_cn} vs {requested_cn}"));
        // ASCII case still folds.
        let dn = format!("cn={},o=OPENBANKING,c=gb", subject_cn.to_ascii_uppercase());
        let resp = w
            .post_register(
                &tpp.client,
                &w.ob_request(&tpp, json!({ "tls_client_auth_dn": dn })),
            )
            .await;
        assert_eq!(resp.status, 201, "{subject_cn}: {}", resp.text());
    }
}

#[tokio::test]
async fn a_scope_keycloak_ignores_silently_is_refused_and_leaves_no_client() {
    // Allowed by the realm's "Allowed Client Scopes" policy but no client scope of that name: Keycloak registers
    // the client without it and says nothing.
    if not_for_this_flavour(
        Flavour::Keycloak,
        "oidc-provider refuses an unknown scope outright (see an_upstream_refusal_is_a_400...)",
    ) {
        return;
    }
    let w = World::start(Options {
        profile_extra: r#"allowed_scopes = ["openid", "accounts", "payments", "nosuchscope"]"#
            .into(),
        upstream_env: vec![(
            "KEYCLOAK_ALLOWED_SCOPES".into(),
            "openid,accounts,payments,nosuchscope".into(),
        )],
        ..Options::default()
    })
    .await;
    let tpp = w.tpp();
    let body = w.ob_request(
        &tpp,
        json!({"scope": ["openid", "accounts", "nosuchscope"]}),
    );
    let resp = w.post_register(&tpp.client, &body).await;
    assert_error(&resp, 400, ICM, "an ignored scope");
    assert!(
        resp.json()["error_description"]
            .as_str()
            .unwrap_or("")
            .contains("does not offer scope nosuchscope"),
        "{}",
        resp.text()
    );
    assert!(
        w.upstream
            .stderr()
            .contains("Referenced client scope 'nosuchscope' doesn't exist"),
        "Keycloak ignored it"
    );
    assert!(
        w.upstream.clients().await.is_empty(),
        "the client made without the scope was deleted again"
    );
    assert!(
        w.proxy
            .logs()
            .iter()
            .any(|l| l.contains("accepted but ignored these scopes")),
        "the operator is told which client scope to create"
    );
    // Without it the same TPP registers.
    let body = w.ob_request(&tpp, json!({"scope": ["openid", "accounts"]}));
    let resp = w.post_register(&tpp.client, &body).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
}
