//! The local demo behind `./demo.sh` (examples/demo.rs) and its test (tests/demo.rs): generates certificates under .local/, serves a directory JWKS and a TPP's
//! software JWKS on https://localhost:8444, starts the bundled oidc-provider upstream on 127.0.0.1:9080 and the
//! proxy with the repository's proxy.toml, then registers one OB TPP over mutual TLS and prints the answer.
//! It then fetches a client-credentials token through the proxy and reads the registration back.
//! `--cdr` does the same for the Australian CDR profile (deploy/examples/proxy-cdr.toml).
//! It keeps everything running until Ctrl-C (or exits at once with `--once`).

use std::path::Path;

use super::client::TlsClient;
use super::jwks_server::JwksServer;
use super::keys::{SigningKey, jwks};
use super::pki::{ClientCertSpec, Pki};
use super::proxy::ProxyProcess;
use super::upstream::{CertHeader, Upstream, UpstreamOptions};
use super::world::{DIRECTORY_JWKS, OB_AUD, REDIRECTS, REGISTER_JWKS, base62};
use serde_json::json;

const JWKS_PORT: u16 = 8444;
const UPSTREAM_PORT: u16 = 9080;

/// What the demo saw: the status of the registration, of the token request and of the read-back.
pub struct Outcome {
    pub register: u16,
    pub token: u16,
    pub read: u16,
}

/// Runs the demo; with `once` it returns after the read-back, else it keeps everything up until Ctrl-C.
pub async fn run(cdr: bool, once: bool) -> Result<Outcome, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let local = root.join(".local");
    // A fresh world each run: the upstream keeps clients in memory, so old records would point nowhere.
    let _ = std::fs::remove_dir_all(&local);
    std::fs::create_dir_all(&local).expect("create .local");

    step(
        "generating a local CA, the proxy's server certificate and a third party's transport certificate",
    );
    let pki = Pki::new();
    let files = pki.write_to(&local.join("pki"));
    let software_id = base62(18);
    let org_id = base62(18);
    let spec = if cdr {
        ClientCertSpec::custom([
            ("C", "AU"),
            ("O", "Data Recipient Pty Ltd"),
            ("CN", "adr-demo"),
        ])
    } else {
        ClientCertSpec::ob(software_id.clone(), org_id.clone())
    };
    let tpp_cert = pki.client(spec);
    std::fs::write(local.join("pki/tpp.pem"), &tpp_cert.cert_pem).expect("write tpp.pem");
    std::fs::write(local.join("pki/tpp-key.pem"), &tpp_cert.key_pem).expect("write tpp-key.pem");

    let (issuer_name, issuer_path) = if cdr {
        ("the CDR Register", REGISTER_JWKS)
    } else {
        ("the OB Directory", DIRECTORY_JWKS)
    };
    step(&format!(
        "serving {issuer_name}'s and the third party's JWKS on https://localhost:{JWKS_PORT}"
    ));
    let jwks_server = JwksServer::start_on(&pki, JWKS_PORT).await;
    let issuer_key = SigningKey::rsa("issuer-1");
    jwks_server.set(issuer_path, jwks(&[issuer_key.public_jwk(Some("sig"))]));
    let tpp_key = SigningKey::rsa("tpp-sig-1");
    let software_jwks = format!("/software/{software_id}.jwks");
    jwks_server.set(
        &software_jwks,
        jwks(&[
            tpp_key.public_jwk(Some("sig")),
            tpp_cert.tls_jwk("tpp-tls-1"),
        ]),
    );
    let software_jwks_url = jwks_server.url(&software_jwks);

    step(&format!(
        "starting the bundled oidc-provider upstream on 127.0.0.1:{UPSTREAM_PORT}"
    ));
    let upstream = Upstream::start(UpstreamOptions {
        ca_pem_path: files.ca.clone(),
        cert_header: CertHeader::Rfc9440,
        port: UPSTREAM_PORT,
        introspection_client_id: Some("dcr-proxy".into()),
        flavour: super::upstream::Flavour::Rfc7591,
        env: Vec::new(),
    })
    .await;

    let config = if cdr {
        root.join("deploy/examples/proxy-cdr.toml")
    } else {
        root.join("proxy.toml")
    };
    step(&format!("starting dcr-proxy with {}", config.display()));
    let proxy = ProxyProcess::try_start_config(config, &super::world::proxy_env(&upstream))
        .await
        .map_err(|logs| format!("dcr-proxy did not start:\n{logs}"))?;
    println!("   listening on {}", proxy.addr);

    step(
        "registering: software statement signed by the issuer, request JWT signed by the third party, over mTLS",
    );
    let request = if cdr {
        let ssa = issuer_key.sign(
            json!({}),
            super::claims::cdr_ssa(&software_id, &org_id, &software_jwks_url, REDIRECTS),
        );
        tpp_key.sign(
            json!({}),
            super::claims::cdr_request(&software_id, "https://localhost:8443", &ssa, json!({})),
        )
    } else {
        let ssa = issuer_key.sign(
            json!({}),
            super::claims::ob_ssa(
                &software_id,
                &org_id,
                &software_jwks_url,
                REDIRECTS,
                &["AISP", "PISP"],
            ),
        );
        tpp_key.sign(
            json!({}),
            super::claims::ob_request(
                &software_id,
                OB_AUD,
                &ssa,
                &tpp_cert.subject_rfc4514,
                json!({}),
            ),
        )
    };
    let client = TlsClient::new(&pki.ca_pem(), Some(&tpp_cert));
    let resp = client
        .request(
            "POST",
            &proxy.url("/register"),
            &[("content-type", "application/jwt")],
            request,
        )
        .await;
    println!("   POST /register -> HTTP {}", resp.status);
    let mut body = resp.json();
    if let Some(s) = body.get_mut("software_statement") {
        *s = json!("<the SSA, echoed>");
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&body).unwrap_or_default()
    );
    let register = resp.status;
    if register != 201 {
        return Err(format!(
            "registration failed; proxy log:\n{}",
            proxy.logs().join("\n")
        ));
    }
    let client_id = body["client_id"].as_str().unwrap_or_default().to_string();

    step(
        "client credentials at /token through the proxy (certificate forwarded to the IdP), then GET /register/{id}",
    );
    let form = if cdr {
        let now = super::claims::now();
        let assertion = tpp_key.sign(
            json!({}),
            json!({"iss": client_id, "sub": client_id, "aud": upstream.issuer, "iat": now, "exp": now + 60,
                   "jti": super::claims::jti()}),
        );
        format!(
            "grant_type=client_credentials&scope=cdr:registration&client_assertion_type={}&client_assertion={assertion}",
            super::world::urlencode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        )
    } else {
        format!("grant_type=client_credentials&client_id={client_id}&scope=accounts")
    };
    let resp = client
        .request(
            "POST",
            &proxy.url("/token"),
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
        .await;
    println!("   POST /token -> HTTP {}", resp.status);
    let token_status = resp.status;
    let token = resp.json()["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let auth = format!("Bearer {token}");
    let resp = client
        .request(
            "GET",
            &proxy.url(&format!("/register/{client_id}")),
            &[("authorization", &auth)],
            "",
        )
        .await;
    println!("   GET /register/{client_id} -> HTTP {}", resp.status);
    let read = resp.status;
    if read != 200 {
        return Err(format!(
            "{}\nproxy log:\n{}",
            resp.text(),
            proxy.logs().join("\n")
        ));
    }
    println!(
        "\n   upstream clients: {:?}\n   the record is in .local/dcr.sqlite; the third party's certificate and key: .local/pki/tpp.pem, tpp-key.pem",
        upstream.clients().await
    );
    let outcome = Outcome {
        register,
        token: token_status,
        read,
    };
    if once {
        return Ok(outcome);
    }
    step("running; press Ctrl-C to stop");
    let _ = tokio::signal::ctrl_c().await;
    drop(proxy);
    drop(upstream);
    Ok(outcome)
}

fn step(s: &str) {
    println!("==> {s}");
}
