//! The local demo behind `./demo.sh`: generates certificates under .local/, serves a directory JWKS and a TPP's
//! software JWKS on https://localhost:8444, starts the bundled oidc-provider upstream on 127.0.0.1:9080 and the
//! proxy with the repository's proxy.toml, then registers one OB TPP over mutual TLS and prints the answer.
//! It keeps everything running until Ctrl-C (or exits at once with `--once`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;

use serde_json::json;
use support::client::TlsClient;
use support::jwks_server::JwksServer;
use support::keys::{SigningKey, jwks};
use support::pki::{ClientCertSpec, Pki};
use support::proxy::ProxyProcess;
use support::upstream::{CertHeader, Upstream, UpstreamOptions};
use support::world::{DIRECTORY_JWKS, OB_AUD, REDIRECTS, base62};

const JWKS_PORT: u16 = 8444;
const UPSTREAM_PORT: u16 = 9080;

#[tokio::main]
async fn main() {
    let once = std::env::args().any(|a| a == "--once");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let local = root.join(".local");
    // A fresh world each run: the upstream keeps clients in memory, so old records would point nowhere.
    let _ = std::fs::remove_dir_all(&local);
    std::fs::create_dir_all(&local).expect("create .local");

    step("generating a local CA, the proxy's server certificate and a TPP transport certificate");
    let pki = Pki::new();
    let files = pki.write_to(&local.join("pki"));
    let software_id = base62(18);
    let org_id = base62(18);
    let tpp_cert = pki.client(ClientCertSpec::ob(software_id.clone(), org_id.clone()));
    std::fs::write(local.join("pki/tpp.pem"), &tpp_cert.cert_pem).expect("write tpp.pem");
    std::fs::write(local.join("pki/tpp-key.pem"), &tpp_cert.key_pem).expect("write tpp-key.pem");

    step(&format!(
        "serving the directory and the TPP's software JWKS on https://localhost:{JWKS_PORT}"
    ));
    let jwks_server = JwksServer::start_on(&pki, JWKS_PORT).await;
    let directory = SigningKey::rsa("directory-1");
    jwks_server.set(DIRECTORY_JWKS, jwks(&[directory.public_jwk(Some("sig"))]));
    let tpp_key = SigningKey::rsa("tpp-sig-1");
    let software_jwks = format!("/software/{software_id}.jwks");
    jwks_server.set(
        &software_jwks,
        jwks(&[
            tpp_key.public_jwk(Some("sig")),
            tpp_cert.tls_jwk("tpp-tls-1"),
        ]),
    );

    step(&format!(
        "starting the bundled oidc-provider upstream on 127.0.0.1:{UPSTREAM_PORT}"
    ));
    let upstream = Upstream::start(UpstreamOptions {
        ca_pem_path: files.ca.clone(),
        cert_header: CertHeader::Rfc9440,
        port: UPSTREAM_PORT,
        introspection_client_id: Some("dcr-proxy".into()),
    })
    .await;

    step("starting dcr-proxy with ./proxy.toml");
    let proxy = match ProxyProcess::try_start_config(
        root.join("proxy.toml"),
        &support::world::proxy_env(&upstream),
    )
    .await
    {
        Ok(p) => p,
        Err(logs) => {
            eprintln!("dcr-proxy did not start:\n{logs}");
            std::process::exit(1);
        }
    };
    println!("   listening on {}", proxy.addr);

    step(
        "registering a TPP: SSA signed by the local directory, request JWT signed by the TPP, over mTLS",
    );
    let ssa = directory.sign(
        json!({}),
        support::claims::ob_ssa(
            &software_id,
            &org_id,
            &jwks_server.url(&software_jwks),
            REDIRECTS,
            &["AISP", "PISP"],
        ),
    );
    let request = tpp_key.sign(
        json!({}),
        support::claims::ob_request(
            &software_id,
            OB_AUD,
            &ssa,
            &tpp_cert.subject_rfc4514,
            json!({}),
        ),
    );
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
    if resp.status != 201 {
        eprintln!(
            "registration failed; proxy log:\n{}",
            proxy.logs().join("\n")
        );
        std::process::exit(1);
    }
    println!(
        "\n   upstream now has clients: {:?}\n   the record is in .local/dcr.sqlite; TPP certificate and key: .local/pki/tpp.pem, tpp-key.pem",
        upstream.clients().await
    );
    if once {
        return;
    }
    step("running; press Ctrl-C to stop");
    let _ = tokio::signal::ctrl_c().await;
    drop(proxy);
    drop(upstream);
}

fn step(s: &str) {
    println!("==> {s}");
}
