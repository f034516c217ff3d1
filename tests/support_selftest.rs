//! Proves the shared test fixtures do what the other test files rely on.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, RootCertStore};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use support::claims;
use support::client::{TlsClient, http_request, tls_alert};
use support::jwks_server::JwksServer;
use support::keys::{SigningKey, jwks};
use support::pki::{ClientCertSpec, KeyKind, Pki};
use support::temp::TempDir;
use support::upstream::{CertHeader, Upstream, UpstreamOptions};
use support::world::World;

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der)
        .expect("certificate DER parses")
        .1
}

fn pem_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("certificate PEM parses")
        .to_vec()
}

#[test]
fn pki_root_and_server_certificates_have_the_expected_shape() {
    let pki = Pki::new();
    let ca_der = pki.ca_der();
    assert_eq!(pem_der(&pki.ca_pem()), ca_der);
    let ca = parse(&ca_der);
    assert!(ca.is_ca());
    assert_eq!(ca.subject(), ca.issuer());

    let server_der = pem_der(&pki.server_cert_pem());
    let server = parse(&server_der);
    assert!(!server.is_ca());
    assert_eq!(server.issuer(), ca.subject());
    assert!(server.validity().is_valid());
    let san = server
        .subject_alternative_name()
        .expect("SAN extension parses")
        .expect("server certificate has a SAN");
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(d) => (*d).to_owned(),
            GeneralName::IPAddress(ip) if ip.len() == 4 => {
                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).expect("4 bytes")).to_string()
            }
            GeneralName::IPAddress(ip) => {
                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).expect("16 bytes")).to_string()
            }
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect();
    assert_eq!(names, ["localhost", "127.0.0.1", "::1"]);
    PrivateKeyDer::from_pem_slice(pki.server_key_pem().as_bytes()).expect("server key PEM parses");
}

#[test]
fn ob_client_certificate_has_the_directory_subject_in_der_order() {
    let pki = Pki::new();
    let client = pki.client(ClientCertSpec::ob(
        "0015800001HQQrZAAX",
        "00158000016i44JAAQ",
    ));
    let cert = parse(&client.cert_der);
    assert_eq!(
        cert.subject().to_string(),
        "C=GB, O=OpenBanking, OU=00158000016i44JAAQ, CN=0015800001HQQrZAAX"
    );
    assert_eq!(
        client.subject_rfc4514,
        "CN=0015800001HQQrZAAX,OU=00158000016i44JAAQ,O=OpenBanking,C=GB"
    );
    assert_eq!(cert.issuer(), parse(&pki.ca_der()).subject());
    assert!(cert.validity().is_valid());
    assert_eq!(pem_der(&client.cert_pem), client.cert_der);
    assert_eq!(client.key_kind, KeyKind::Rsa2048);
    assert!(
        PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes())
            .expect("client key PEM parses")
            .secret_der()
            == client.key_der.as_slice()
    );

    use base64::Engine;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &client.cert_der);
    assert_eq!(
        client.thumbprint_s256,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    );
}

#[test]
fn eidas_custom_untrusted_and_expired_client_certificates() {
    let pki = Pki::new();
    let ca_subject = parse(&pki.ca_der()).subject().to_string();

    let eidas = pki.client(
        ClientCertSpec::eidas("PSDGB-FCA-123456", "tpp.example", "TPP Ltd").key(KeyKind::P256),
    );
    let cert = parse(&eidas.cert_der);
    let org_id = cert
        .subject()
        .iter_attributes()
        .find(|a| a.attr_type().to_id_string() == "2.5.4.97")
        .expect("organizationIdentifier present");
    assert_eq!(org_id.as_str().expect("string value"), "PSDGB-FCA-123456");
    assert_eq!(
        eidas.subject_rfc4514,
        "CN=tpp.example,organizationIdentifier=PSDGB-FCA-123456,O=TPP Ltd,C=GB"
    );
    assert_eq!(eidas.key_kind, KeyKind::P256);
    assert_eq!(eidas.signing_key("tls").alg(), "ES256");
    assert_eq!(eidas.tls_jwk("tls")["crv"], "P-256");

    let custom = pki.client(ClientCertSpec::custom([
        ("C", "AU"),
        ("O", "Acme, Inc"),
        ("2.5.4.5", "1234"),
        ("CN", " padded"),
    ]));
    assert_eq!(
        parse(&custom.cert_der).subject().to_string(),
        "C=AU, O=Acme, Inc, serialNumber=1234, CN= padded"
    );
    assert_eq!(
        custom.subject_rfc4514,
        "CN=\\ padded,SERIALNUMBER=1234,O=Acme\\, Inc,C=AU"
    );

    let untrusted = pki.client(ClientCertSpec::ob("soft", "org").untrusted());
    let untrusted_cert = parse(&untrusted.cert_der);
    assert_ne!(untrusted_cert.issuer().to_string(), ca_subject);
    assert_eq!(
        untrusted_cert.issuer(),
        parse(&pem_der(&pki.untrusted_ca_pem())).subject()
    );

    let expired = pki.client(ClientCertSpec::ob("soft", "org").expired());
    let expired_cert = parse(&expired.cert_der);
    assert_eq!(expired_cert.issuer().to_string(), ca_subject);
    assert!(!expired_cert.validity().is_valid());
    assert!(expired_cert.validity().time_to_expiration().is_none());
}

#[test]
fn pki_writes_the_files_the_proxy_config_names() {
    let pki = Pki::new();
    let dir = TempDir::new();
    let files = pki.write_to(dir.path());
    assert_eq!(files.ca, dir.join("ca.pem"));
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("written file reads back");
    assert_eq!(read(&files.ca), pki.ca_pem());
    assert_eq!(read(&files.server_cert), pki.server_cert_pem());
    assert_eq!(read(&files.server_key), pki.server_key_pem());
}

fn verify(token: &str, jwk: &Value, alg: Algorithm) -> Value {
    let jwk: Jwk =
        serde_json::from_value(jwk.clone()).expect("our JWK deserialises as a jsonwebtoken Jwk");
    let key = DecodingKey::from_jwk(&jwk).expect("DecodingKey from JWK");
    let mut validation = Validation::new(alg);
    validation.set_audience(&["bank"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("jsonwebtoken verifies our JWS")
        .claims
}

fn header_of(token: &str) -> Value {
    use base64::Engine;
    let header = token.split('.').next().expect("a JWS has a header");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .expect("header is base64url");
    serde_json::from_slice(&bytes).expect("header is JSON")
}

#[test]
fn signing_keys_make_jws_that_jsonwebtoken_verifies() {
    let claims = json!({"aud": "bank", "exp": claims::now() + 60, "sub": "x"});
    for (key, alg) in [
        (SigningKey::rsa("rsa-1"), Algorithm::PS256),
        (SigningKey::ec_p256("ec-1"), Algorithm::ES256),
    ] {
        let jwk = key.public_jwk(Some("sig"));
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], key.alg());
        let token = key.sign(json!({}), claims.clone());
        assert_eq!(
            header_of(&token),
            json!({"alg": key.alg(), "kid": key.kid(), "typ": "JWT"})
        );
        assert_eq!(verify(&token, &jwk, alg)["sub"], "x");
    }

    let rsa = SigningKey::rsa("rsa-2");
    let rs256 = rsa.sign(json!({"alg": "RS256"}), claims.clone());
    assert_eq!(
        verify(&rs256, &rsa.public_jwk(None), Algorithm::RS256)["sub"],
        "x"
    );
    assert!(rsa.public_jwk(None).get("use").is_none());
}

#[test]
fn forged_headers_come_out_as_asked() {
    let key = SigningKey::ec_p256("ec");
    let claims = json!({"aud": "bank"});

    let none = key.sign(json!({"alg": "none"}), claims.clone());
    assert!(
        none.ends_with('.'),
        "alg=none has an empty signature: {none}"
    );

    let no_kid = key.sign(
        json!({"kid": null, "jku": "https://evil.example/jwks", "crit": ["exp"]}),
        claims.clone(),
    );
    assert_eq!(
        header_of(&no_kid),
        json!({"alg": "ES256", "typ": "JWT", "jku": "https://evil.example/jwks", "crit": ["exp"]})
    );

    let hs256 = key.sign(json!({"alg": "HS256"}), claims.clone());
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&["bank"]);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(
        &hs256,
        &DecodingKey::from_secret(key.public_key_pem().as_bytes()),
        &validation,
    )
    .expect("HS256 is keyed with the public key PEM");

    let raw = key.sign_raw_header(r#"{"alg":"ES256","alg":"none","kid":"ec"}"#, claims);
    assert!(raw.starts_with(&base64_url(r#"{"alg":"ES256","alg":"none","kid":"ec"}"#)));
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn transport_certificate_jwk_carries_the_certificate_and_its_key() {
    use base64::Engine;
    let pki = Pki::new();
    let client = pki.client(ClientCertSpec::ob("soft", "org"));
    let jwk = client.tls_jwk("tls-1");
    assert_eq!(jwk["use"], "tls");
    assert_eq!(
        jwk["x5c"][0],
        base64::engine::general_purpose::STANDARD.encode(&client.cert_der)
    );
    let cert = parse(&client.cert_der);
    let spki_modulus = match cert.public_key().parsed().expect("SPKI parses") {
        x509_parser::public_key::PublicKey::RSA(rsa) => rsa.modulus.to_vec(),
        other => panic!("expected RSA, got {other:?}"),
    };
    let jwk_n = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwk["n"].as_str().expect("n"))
        .expect("n is base64url");
    assert_eq!(
        spki_modulus
            .iter()
            .skip_while(|b| **b == 0)
            .collect::<Vec<_>>(),
        jwk_n.iter().collect::<Vec<_>>()
    );

    let software_jwks = jwks(&[SigningKey::rsa("sig-1").public_jwk(Some("sig")), jwk]);
    assert_eq!(software_jwks["keys"].as_array().map(Vec::len), Some(2));
}

#[test]
fn request_claims_build_on_the_ssa_and_extra_removes_with_null() {
    let ssa = claims::ob_ssa(
        "soft",
        "org",
        "https://localhost:1/org/soft.jwks",
        &["https://tpp.example/cb", "https://tpp.example/cb2"],
        &["AISP", "PISP"],
    );
    assert_eq!(ssa["iss"], "OpenBanking Ltd");
    assert_eq!(ssa["software_roles"], json!(["AISP", "PISP"]));
    assert_eq!(
        ssa["software_jwks_revoked_endpoint"],
        "https://localhost:1/org/revoked/soft.jwks"
    );
    assert!(ssa.get("exp").is_none());
    let ssa_jwt = SigningKey::rsa("dir").sign(json!({}), ssa);

    let request = claims::ob_request(
        "soft",
        "bank",
        &ssa_jwt,
        "CN=soft,OU=org,O=OpenBanking,C=GB",
        json!({"scope": null, "application_type": "mobile"}),
    );
    assert_eq!(request["redirect_uris"], json!(["https://tpp.example/cb"]));
    assert_eq!(request["software_statement"], ssa_jwt.as_str());
    assert_eq!(
        request["exp"].as_i64(),
        request["iat"].as_i64().map(|i| i + 300)
    );
    assert!(request.get("scope").is_none());
    assert_eq!(request["application_type"], "mobile");

    let cdr_ssa = claims::cdr_ssa(
        "sw",
        "brand",
        "https://localhost:1/jwks",
        &["https://adr.example/cb"],
    );
    assert_eq!(
        cdr_ssa["exp"].as_i64(),
        cdr_ssa["iat"].as_i64().map(|i| i + 600)
    );
    let cdr_jwt = SigningKey::rsa("reg").sign(json!({}), cdr_ssa);
    let cdr_request = claims::cdr_request("sw", "https://holder.example", &cdr_jwt, json!({}));
    assert_eq!(
        cdr_request["redirect_uris"],
        json!(["https://adr.example/cb"])
    );
    assert_eq!(cdr_request["token_endpoint_auth_method"], "private_key_jwt");
}

#[tokio::test]
async fn jwks_server_serves_counts_and_fails_on_demand() {
    let pki = Pki::new();
    let server = JwksServer::start(&pki).await;
    let client = TlsClient::new(&pki.ca_pem(), None);
    let keys = jwks(&[SigningKey::ec_p256("k1").public_jwk(Some("sig"))]);
    server.set("/org/soft.jwks", keys.clone());
    let url = server.url("/org/soft.jwks");
    assert!(url.starts_with("https://localhost:"));

    let ok = client.request("GET", &url, &[], "").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.version, http::Version::HTTP_2);
    assert_eq!(ok.header("content-type"), Some("application/json"));
    assert_eq!(ok.json(), keys);

    let h1 = client
        .clone()
        .http1_only()
        .request("GET", &url, &[], "")
        .await;
    assert_eq!(h1.version, http::Version::HTTP_11);
    assert_eq!(server.fetch_count("/org/soft.jwks"), 2);

    server.set_status("/org/soft.jwks", 500);
    assert_eq!(client.request("GET", &url, &[], "").await.status, 500);
    server.set_status("/org/soft.jwks", 200);
    assert_eq!(client.request("GET", &url, &[], "").await.json(), keys);
    assert_eq!(server.fetch_count("/org/soft.jwks"), 4);

    assert_eq!(
        client
            .request("GET", &server.url("/nothing"), &[], "")
            .await
            .status,
        404
    );
    assert_eq!(server.fetch_count("/nothing"), 1);

    server.set_raw("/raw", "not json", "text/plain");
    let raw = client.request("GET", &server.url("/raw"), &[], "").await;
    assert_eq!(
        (raw.header("content-type"), raw.text().as_str()),
        (Some("text/plain"), "not json")
    );

    server.redirect("/moved", "https://elsewhere.example/jwks");
    let moved = client.request("GET", &server.url("/moved"), &[], "").await;
    assert_eq!(moved.status, 302);
    assert_eq!(
        moved.header("location"),
        Some("https://elsewhere.example/jwks")
    );

    server.set_delay("/org/soft.jwks", Duration::from_millis(300));
    let started = std::time::Instant::now();
    client.request("GET", &url, &[], "").await;
    assert!(started.elapsed() >= Duration::from_millis(300));

    let untrusting = TlsClient::new(&pki.untrusted_ca_pem(), None);
    assert!(untrusting.try_request("GET", &url, &[], "").await.is_err());
}

/// A one-shot mTLS server that requires a certificate from the Pki CA and reports what the client presented.
async fn mtls_echo_server(pki: &Pki) -> (std::net::SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca_der()))
        .expect("CA is a valid root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("client verifier builds");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(pki.server().cert_der.clone())],
            PrivateKeyDer::from_pem_slice(pki.server_key_pem().as_bytes()).expect("server key"),
        )
        .expect("server config builds");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(certs) = tls.get_ref().1.peer_certificates() {
                    record.lock().expect("lock").push(certs[0].to_vec());
                }
                let mut buf = vec![0; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn mtls_client_presents_its_certificate_and_bad_ones_fail_the_handshake() {
    let pki = Pki::new();
    let (addr, seen) = mtls_echo_server(&pki).await;
    let good = pki.client(ClientCertSpec::ob("soft", "org"));
    let client = TlsClient::new(&pki.ca_pem(), Some(&good));

    let response = client
        .request(
            "GET",
            &format!("https://localhost:{}/", addr.port()),
            &[],
            "",
        )
        .await;
    assert_eq!((response.status, response.text().as_str()), (200, "ok"));
    assert_eq!(*seen.lock().expect("lock"), vec![good.cert_der.clone()]);

    let handshake = client
        .connect_only(addr)
        .await
        .expect("trusted certificate is accepted");
    assert_eq!(handshake.server_certs[0], pki.server().cert_der);

    let p256 = pki.client(ClientCertSpec::ob("soft", "org").key(KeyKind::P256));
    TlsClient::new(&pki.ca_pem(), Some(&p256))
        .connect_only(addr)
        .await
        .expect("P-256 client certificate is accepted");

    for (cert, alert) in [
        (
            Some(pki.client(ClientCertSpec::ob("soft", "org").untrusted())),
            AlertDescription::UnknownCA,
        ),
        (
            Some(pki.client(ClientCertSpec::ob("soft", "org").expired())),
            AlertDescription::CertificateExpired,
        ),
        (None, AlertDescription::CertificateRequired),
    ] {
        let err = TlsClient::new(&pki.ca_pem(), cert.as_ref())
            .connect_only(addr)
            .await
            .expect_err("the server refuses this certificate");
        assert_eq!(tls_alert(&err), Some(alert), "{err}");
    }
}

#[tokio::test]
async fn kept_alive_connection_serves_several_requests() {
    let pki = Pki::new();
    let server = JwksServer::start(&pki).await;
    server.set("/a", json!({"n": 1}));
    let client = TlsClient::new(&pki.ca_pem(), None);
    let mut conn = client.connection(server.addr()).await;
    assert_eq!(conn.handshake.alpn.as_deref(), Some(&b"h2"[..]));
    for _ in 0..3 {
        assert_eq!(
            conn.send("GET", "/a", &[], "").await.json(),
            json!({"n": 1})
        );
    }
    assert!(!conn.is_closed());
    assert_eq!(server.fetch_count("/a"), 3);
}

fn node_available() -> bool {
    std::process::Command::new(std::env::var_os("NODE").unwrap_or_else(|| "node".into()))
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

const STAND_IN_UPSTREAM: &str = r#"
import * as http from 'node:http';
const token = process.env.INITIAL_ACCESS_TOKEN;
const server = http.createServer((req, res) => {
  if (req.headers['x-test-admin'] !== token) { res.writeHead(401); res.end('{}'); return; }
  const body = req.url.startsWith('/__test/clients') ? ['c1']
    : req.url.startsWith('/__test/requests') ? [{ method: 'GET', path: new URL(req.url, 'http://x').searchParams.get('path'), headers: {} }]
    : { mode: 'none', env: process.env.CLIENT_CERT_HEADER };
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
});
server.listen(Number(process.env.UPSTREAM_PORT), '127.0.0.1', () => {
  const { port } = server.address();
  process.stderr.write('stand-in starting\n');
  process.stdout.write('noise before the event\n');
  process.stdout.write(JSON.stringify({ event: 'listening', port, issuer: `http://127.0.0.1:${port}` }) + '\n');
});
"#;

#[tokio::test]
async fn upstream_launcher_speaks_the_contract_with_a_stand_in() {
    if !node_available() {
        eprintln!("skipped: node is not installed");
        return;
    }
    let dir = TempDir::new();
    let script = dir.join("stand-in.mjs");
    std::fs::write(&script, STAND_IN_UPSTREAM).expect("write the stand-in script");
    let upstream = Upstream::start_script(
        &script,
        UpstreamOptions {
            ca_pem_path: dir.join("ca.pem"),
            cert_header: CertHeader::Envoy,
            port: 0,
            introspection_client_id: None,
            flavour: support::upstream::Flavour::Rfc7591,
            env: Vec::new(),
        },
    )
    .await;
    assert_eq!(
        upstream.issuer,
        format!("http://127.0.0.1:{}", upstream.port)
    );
    assert_eq!(upstream.clients().await, ["c1"]);
    assert_eq!(
        upstream.requests("/reg ister").await[0]["path"],
        "/reg ister"
    );
    assert_eq!(
        upstream.fault(json!({"mode": "none"})).await["env"],
        "envoy"
    );
    assert_eq!(
        http_request("GET", &upstream.url("/__test/clients"), &[], "")
            .await
            .status,
        401
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(upstream.stderr().contains("stand-in starting"));
}

#[tokio::test]
#[should_panic(expected = "boom on stderr")]
async fn upstream_launcher_reports_the_stderr_of_a_failed_start() {
    if !node_available() {
        panic!("boom on stderr (node is not installed, so this stands in for the real check)");
    }
    let dir = TempDir::new();
    let script = dir.join("broken.mjs");
    std::fs::write(
        &script,
        "process.stderr.write('boom on stderr\\n'); process.exit(3);",
    )
    .expect("write the broken script");
    Upstream::start_script(
        &script,
        UpstreamOptions {
            ca_pem_path: dir.join("ca.pem"),
            cert_header: CertHeader::Rfc9440,
            port: 0,
            introspection_client_id: None,
            flavour: support::upstream::Flavour::Rfc7591,
            env: Vec::new(),
        },
    )
    .await;
}

#[tokio::test]
async fn real_upstream_starts_and_answers_its_test_routes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream");
    if !dir.join("server.mjs").is_file() || !dir.join("node_modules").is_dir() || !node_available()
    {
        eprintln!("skipped: tests/upstream is not installed (npm ci --prefix tests/upstream)");
        return;
    }
    let world = World::ob().await;
    let upstream = &world.upstream;
    assert!(upstream.clients().await.is_empty());

    let discovery = http_request(
        "GET",
        &upstream.url("/.well-known/openid-configuration"),
        &[],
        "",
    )
    .await;
    assert_eq!(discovery.json()["issuer"], upstream.issuer.as_str());
    let seen = upstream.requests("/.well-known/").await;
    assert_eq!(
        seen.last().map(|r| r["path"].clone()),
        Some(json!("/.well-known/openid-configuration"))
    );

    // The upstream trusts the world's CA: a private_key_jwt client whose keys live on the JWKS server can get a
    // token.
    let key = SigningKey::rsa("tpp-sig");
    world
        .jwks
        .set("/tpp.jwks", jwks(&[key.public_jwk(Some("sig"))]));
    let client_id = world
        .register_upstream(json!({
            "redirect_uris": [],
            "response_types": [],
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "PS256",
            "jwks_uri": world.jwks.url("/tpp.jwks"),
        }))
        .await;
    assert_eq!(upstream.clients().await, vec![client_id.clone()]);

    let assertion = key.sign(
        json!({}),
        json!({"iss": client_id, "sub": client_id, "aud": upstream.url("/token"),
               "jti": claims::jti(), "iat": claims::now(), "exp": claims::now() + 60}),
    );
    let token = http_request(
        "POST",
        &upstream.url("/token"),
        &[("content-type", "application/x-www-form-urlencoded")],
        format!(
            "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
        ),
    )
    .await;
    assert_eq!(token.status, 200, "{}\n{}", token.text(), upstream.stderr());
    assert!(world.jwks.fetch_count("/tpp.jwks") >= 1);

    let state = upstream
        .fault(json!({"mode": "error_before_create", "status": 503, "count": 1}))
        .await;
    assert_eq!(state["mode"], "error_before_create");
}
