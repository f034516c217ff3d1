//! Everything that is not a registration route reaches the real IdP, with the verified client certificate
//! in the header the IdP reads — and never a spoofed one.

mod support;

use base64::Engine;
use serde_json::{Value, json};
use support::client::TlsClient;
use support::upstream::CertHeader;
use support::world::{Flavour, Options, World, urlencode};

#[tokio::test]
async fn tls_client_auth_and_private_key_jwt_get_certificate_bound_tokens_through_the_proxy_in_every_header_format()
 {
    for format in [CertHeader::Rfc9440, CertHeader::Nginx, CertHeader::Envoy] {
        if format == CertHeader::Envoy && Flavour::from_env() == Flavour::Keycloak {
            eprintln!("envoy: not applicable to keycloak, which has no Envoy lookup provider");
            continue;
        }
        if format != CertHeader::Nginx && Flavour::from_env() == Flavour::ForgeRockAm {
            eprintln!(
                "{format:?}: not applicable to forgerock-am, which reads only a URL-encoded PEM"
            );
            continue;
        }
        let w = World::start(Options {
            cert_header: format,
            ..Options::default()
        })
        .await;
        let tpp = w.tpp();
        let client_id = w.register(&tpp, json!({})).await;
        let resp = w
            .token_via_proxy(
                &tpp,
                format!("grant_type=client_credentials&client_id={client_id}&scope=accounts"),
            )
            .await;
        assert_eq!(resp.status, 200, "{format:?}: {}", resp.text());
        let at = resp.json()["access_token"]
            .as_str()
            .expect("token")
            .to_string();
        let info = w.introspect_at_upstream(&at).await;
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
        let resp = w.token_via_proxy(
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
            w.introspect_at_upstream(&at2).await["cnf"]["x5t#S256"],
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
    let iat_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            w.upstream.iat_client_id, w.upstream.iat_secret
        ))
    );
    // AM reads the real certificate from ssl-client-cert: that header must arrive, carrying the TPP's own.
    let am = w.flavour() == Flavour::ForgeRockAm;
    assert!(seen.len() >= 3, "{seen:?}");
    // The proxy's own RFC 7591 calls (/reg) are not forwarded requests.
    for r in seen
        .iter()
        .filter(|r| r["path"] != w.upstream.paths.registration.as_str())
        // Nor are the proxy's own calls as the [upstream.admin] client (its token, Keycloak's Admin REST, AM's
        // /json API), nor its minting of AM initial access tokens.
        .filter(|r| !r["path"].as_str().unwrap_or("").starts_with("/admin/"))
        .filter(|r| !r["path"].as_str().unwrap_or("").contains("/json/"))
        .filter(|r| r["headers"]["authorization"] != admin_basic.as_str())
        .filter(|r| r["headers"]["authorization"] != iat_basic.as_str())
    {
        let h = r["headers"].as_object().expect("headers");
        for (k, v) in h {
            let v = v.to_string();
            assert!(
                !v.contains(&forged_der) && !v.contains(&forged_pem),
                "forged {k} reached the upstream: {r}"
            );
            let folded = k.replace('_', "-");
            if am && matches!(folded.as_str(), "ssl-client-cert" | "ssl-client-verify") {
                continue;
            }
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
    let real_header = if am { "ssl-client-cert" } else { "client-cert" };
    let anonymous_req = seen.iter().find(|r| {
        r["path"] == w.upstream.paths.discovery.as_str() && r["headers"].get(real_header).is_none()
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
                && r["headers"]["authorization"] != iat_basic.as_str()
        })
        .expect("token request");
    let expected = w
        .upstream
        .cert_headers(&tpp.cert.cert_pem, &tpp.cert.cert_der)
        .remove(0);
    assert_eq!(expected.0, real_header);
    assert_eq!(token_req["headers"][real_header], expected.1.as_str());
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
        // Endpoints on the upstream's own address move to the public URL, path kept.
        let public = |k: &str| {
            direct[k]
                .as_str()
                .map(|u| u.replacen(&w.upstream.issuer, "https://localhost:8443", 1))
        };
        assert_eq!(
            doc["token_endpoint"].as_str(),
            public("token_endpoint").as_deref()
        );
        assert_eq!(doc["jwks_uri"].as_str(), public("jwks_uri").as_deref());
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

    let closed = support::world::closed_port();
    let port = closed.port();
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

#[tokio::test]
async fn discovery_names_no_endpoint_on_the_upstreams_own_address() {
    let w = World::ob().await;
    let direct =
        support::client::http_request("GET", &w.upstream.url(&w.upstream.paths.discovery), &[], "")
            .await
            .json();
    let doc = w
        .tpp()
        .client
        .request("GET", &w.proxy.url(&w.upstream.paths.discovery), &[], "")
        .await
        .json();
    // The issuer is the IdP's to name (it is the `iss` of its tokens); every endpoint is the proxy's.
    assert_eq!(doc["issuer"], direct["issuer"]);
    if matches!(
        Flavour::from_env(),
        Flavour::Keycloak | Flavour::ForgeRockAm
    ) {
        // AM, too, names its endpoints on its own public URL (the stand-in's AM_PUBLIC_URL).
        // Keycloak names its endpoints on its --hostname (the stand-in: a host that is not the upstream's
        // address; deployed: the proxy's public URL), so nothing is on the internal address to move. What the
        // proxy owes: the registration endpoint, top level and among the mTLS aliases, is its own.
        let text = doc.to_string();
        assert!(!text.contains(&w.upstream.issuer), "{text}");
        assert_eq!(
            doc["registration_endpoint"],
            "https://localhost:8443/register"
        );
        let aliases = &doc["mtls_endpoint_aliases"];
        if Flavour::from_env() == Flavour::ForgeRockAm && aliases.is_null() {
            // The AM stand-in publishes no aliases (not modelled); nothing to point at the proxy.
            return;
        }
        assert_eq!(
            aliases["registration_endpoint"], "https://localhost:8443/register",
            "{aliases}"
        );
        assert!(aliases["token_endpoint"].is_string(), "{aliases}");
        return;
    }
    let (doc, direct) = (
        doc.as_object().expect("object"),
        direct.as_object().expect("object"),
    );
    let mut moved = 0;
    for (name, value) in doc {
        let Some(url) = value.as_str().filter(|v| v.starts_with("http")) else {
            continue;
        };
        if name == "issuer" {
            continue;
        }
        assert!(
            url.starts_with("https://localhost:8443/"),
            "{name}: {url} is not on the public URL"
        );
        let original = direct[name].as_str().expect("the upstream's value");
        if name != "registration_endpoint" {
            assert_eq!(
                url.strip_prefix("https://localhost:8443"),
                original.strip_prefix(&w.upstream.issuer),
                "{name}: the path is kept"
            );
        }
        moved += 1;
    }
    assert!(moved >= 4, "{doc:?}");
    assert_eq!(
        doc["registration_endpoint"],
        "https://localhost:8443/register"
    );
}

/// A TPP whose transport certificate hangs below two intermediates of a root only this test knows.
struct ChainedTpp {
    root: rustls::pki_types::CertificateDer<'static>,
    inter1: rustls::pki_types::CertificateDer<'static>,
    inter2: rustls::pki_types::CertificateDer<'static>,
    leaf: rustls::pki_types::CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl ChainedTpp {
    fn new() -> ChainedTpp {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair,
        };
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            p
        };
        let key = || KeyPair::generate().expect("key");
        let run = support::world::base62(8);
        let root =
            CertifiedIssuer::self_signed(ca(&format!("chain root {run}")), key()).expect("root");
        let inter1 = CertifiedIssuer::signed_by(ca(&format!("chain inter 1 {run}")), key(), &root)
            .expect("inter1");
        let inter2 =
            CertifiedIssuer::signed_by(ca(&format!("chain inter 2 {run}")), key(), &inter1)
                .expect("inter2");
        let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
        leaf.distinguished_name
            .push(DnType::CommonName, format!("chained tpp {run}"));
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let leaf_key = key();
        let leaf = leaf.signed_by(&leaf_key, &inter2).expect("leaf");
        ChainedTpp {
            root: root.der().clone(),
            inter1: inter1.der().clone(),
            inter2: inter2.der().clone(),
            leaf: leaf.der().clone(),
            key_der: leaf_key.serialize_der(),
        }
    }

    /// What a TPP typically sends: everything it has, root included.
    fn presented(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        vec![
            self.leaf.clone(),
            self.inter2.clone(),
            self.inter1.clone(),
            self.root.clone(),
        ]
    }
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

fn sf_binary(der: &[u8]) -> String {
    format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// One GET over a new connection that presents `tpp`'s whole chain; the status, or why it failed
/// (a client certificate the proxy does not trust yet shows as an error on the first read).
async fn get_presenting(
    w: &World,
    tpp: &ChainedTpp,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<u16, support::client::Error> {
    use http_body_util::Empty;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(w.pki.ca_pem().as_bytes()) {
        roots.add(der?)?;
    }
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(tpp.key_der.clone()));
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(tpp.presented(), key)?;
    let addr = w.proxy.addr;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", format!("localhost:{}", addr.port()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tx.send_request(req.body(Empty::<bytes::Bytes>::new())?),
    )
    .await??;
    Ok(resp.status().as_u16())
}

/// AM reads the leaf alone as URL-encoded PEM: under its flavour there is no chain header to check.
fn no_chain_header() -> bool {
    support::world::skip_for_flavour(
        Flavour::ForgeRockAm,
        "AM reads the leaf alone as URL-encoded PEM; there is no chain header to check",
    )
}

/// Retries `get_presenting` until the proxy has reloaded a client CA bundle that trusts `tpp`.
async fn once_trusted(w: &World, tpp: &ChainedTpp, path: &str, headers: &[(&str, &str)]) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match get_presenting(w, tpp, path, headers).await {
            Ok(_) => return,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("the proxy never trusted the chained TPP: {e}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

/// The certificate headers the upstream saw on the last request to `path`.
async fn last_headers(w: &World, path: &str) -> serde_json::Map<String, Value> {
    let seen = w.upstream.requests(path).await;
    seen.last()
        .and_then(|r| r["headers"].as_object())
        .cloned()
        .unwrap_or_else(|| panic!("no request to {path} reached the upstream: {seen:?}"))
}

#[tokio::test]
async fn a_client_ca_anchor_added_by_a_reload_is_never_forwarded_in_the_chain() {
    if no_chain_header() {
        return;
    }
    let w = World::ob().await;
    let tpp = ChainedTpp::new();
    // The bank trusts the TPP's issuing CA itself: the verified path is leaf -> anchor, so nothing
    // but the leaf is the chain, whatever the TPP sent.
    let mut bundle = std::fs::read_to_string(&w.files.ca).expect("read");
    bundle.push_str(&pem(&tpp.inter2));
    std::fs::write(&w.files.ca, bundle).expect("write");
    once_trusted(&w, &tpp, "/chain-probe-anchor", &[]).await;
    let h = last_headers(&w, "/chain-probe-anchor").await;
    assert_eq!(h["client-cert"], sf_binary(&tpp.leaf).as_str());
    assert!(
        h.get("client-cert-chain").is_none(),
        "the anchor reached the IdP: {h:?}"
    );
}

#[tokio::test]
async fn the_chain_stops_below_the_root_fits_cert_chain_max_and_travels_under_the_configured_names()
{
    if no_chain_header() {
        return;
    }
    let w = World::ob().await;
    let tpp = ChainedTpp::new();
    let dir = support::temp::TempDir::new();
    let ca = dir.join("client-ca.pem");
    std::fs::write(&ca, format!("{}{}", w.pki.ca_pem(), pem(&tpp.root))).expect("write");
    let toml = w
        .config_toml(&w.options)
        .replace(
            &format!("client_ca = \"{}\"", w.files.ca.display()),
            &format!("client_ca = \"{}\"", ca.display()),
        )
        .replace(
            &w.dir.join("dcr.sqlite").display().to_string(),
            &dir.join("dcr.sqlite").display().to_string(),
        )
        .replace(
            "cert_header = \"rfc9440\"\n",
            "cert_header = \"rfc9440\"\ncert_header_name = \"X-SSL-Client-Cert\"\n\
             cert_chain_header_name = \"X-SSL-Client-Chain\"\ncert_chain_max = 2\n",
        );
    assert!(toml.contains("cert_chain_max = 2") && toml.contains(&ca.display().to_string()));
    let proxy = support::proxy::ProxyProcess::start(
        dir.path(),
        &toml,
        &support::world::proxy_env(&w.upstream),
    )
    .await;
    let w = World { proxy, ..w };
    let forged = sf_binary(&tpp.root);
    let spoofs = [
        ("x-ssl-client-cert", forged.as_str()),
        ("X_SSL_Client_Chain", forged.as_str()),
    ];
    let status = get_presenting(&w, &tpp, "/chain-probe-named", &spoofs)
        .await
        .expect("the root is trusted");
    assert!(status < 500, "{status}");
    let h = last_headers(&w, "/chain-probe-named").await;
    assert_eq!(h["x-ssl-client-cert"], sf_binary(&tpp.leaf).as_str());
    // Leaf side first, the root left out: two entries, as `cert_chain_max` allows.
    assert_eq!(
        h["x-ssl-client-chain"],
        format!("{}, {}", sf_binary(&tpp.inter2), sf_binary(&tpp.inter1)).as_str()
    );
    for gone in ["client-cert", "client-cert-chain", "x_ssl_client_chain"] {
        assert!(h.get(gone).is_none(), "{gone}: {h:?}");
    }
}

/// Connections presenting one chain share its encoded headers (src/peers.rs); a reload that turns an
/// intermediate into an anchor must still change what the same chain forwards.
#[tokio::test]
async fn a_reload_that_makes_an_intermediate_an_anchor_changes_the_chain_sent_for_the_same_certificate()
 {
    if no_chain_header() {
        return;
    }
    let w = World::ob().await;
    let tpp = ChainedTpp::new();
    let original = std::fs::read_to_string(&w.files.ca).expect("read");
    std::fs::write(&w.files.ca, format!("{original}{}", pem(&tpp.root))).expect("write");
    once_trusted(&w, &tpp, "/chain-probe-before", &[]).await;
    let before = last_headers(&w, "/chain-probe-before").await;
    assert_eq!(before["client-cert-chain"], sf_binary(&tpp.inter2).as_str());

    std::fs::write(
        &w.files.ca,
        format!("{original}{}{}", pem(&tpp.root), pem(&tpp.inter2)),
    )
    .expect("write");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        get_presenting(&w, &tpp, "/chain-probe-after", &[])
            .await
            .expect("still trusted");
        let after = last_headers(&w, "/chain-probe-after").await;
        assert_eq!(after["client-cert"], sf_binary(&tpp.leaf).as_str());
        if after.get("client-cert-chain").is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the anchor is still forwarded 10 s after the reload: {after:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
