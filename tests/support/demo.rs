//! The local demo behind `./demo.sh` (examples/demo.rs) and its test (tests/demo.rs): generates certificates, serves a directory JWKS and a TPP's
//! software JWKS over HTTPS, starts the bundled oidc-provider upstream and the
//! proxy with the repository's proxy.toml, then registers one OB TPP over mutual TLS and prints the answer and
//! the proxy's audit line for it. It then fetches a client-credentials token through the proxy, shows that the
//! token is bound to the TPP's certificate (`cnf.x5t#S256`), and reads the registration back.
//! `--cdr` does the same for the Australian CDR profile (deploy/examples/proxy-cdr.toml).
//! The demo uses .local/ and the fixed ports its config names, and keeps running until Ctrl-C (or exits at once
//! with `--once`); the test runs the same steps in a temp dir on free ports, so it works beside a running demo.
//!
//! The demo keeps the issuer's and the TPP's signing keys in `.local/demo/tpp.json`, so that
//! [`sign_request`] (`./demo.sh sign-request`) can sign a fresh request JWT for a person who wants to register
//! their own client against the running demo with curl.

use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::client::{TlsClient, http_request};
use super::jwks_server::JwksServer;
use super::keys::{SigningKey, jwks};
use super::pki::{ClientCertSpec, Pki};
use super::proxy::ProxyProcess;
use super::temp::TempDir;
use super::upstream::{CertHeader, Upstream, UpstreamOptions};
use super::world::{DIRECTORY_JWKS, OB_AUD, REDIRECTS, REGISTER_JWKS, base62};

/// The ports the shipped configs name for the JWKS server and the upstream: the demo serves on them.
const JWKS_PORT: u16 = 8444;
const UPSTREAM_PORT: u16 = 9080;

/// Where the demo keeps what [`sign_request`] needs.
const STATE: &str = ".local/demo/tpp.json";

/// What the demo saw: the status of the registration, of the token request and of the read-back, whether
/// the token was bound to the TPP's certificate, whether the proxy logged an audit line for the
/// registration, and the status of a second registration signed the way [`sign_request`] signs.
pub struct Outcome {
    pub register: u16,
    pub token: u16,
    pub read: u16,
    pub bound: bool,
    pub audited: bool,
    pub signed_request: u16,
}

/// What `sign-request` needs to sign for the demo's TPP: the profile, the software, the issuer's and the
/// TPP's signing keys (PKCS#8, base64), written by the demo run.
#[derive(serde::Serialize, serde::Deserialize)]
struct DemoState {
    cdr: bool,
    software_id: String,
    org_id: String,
    software_jwks_url: String,
    tls_client_auth_dn: String,
    issuer_kid: String,
    issuer_key: String,
    tpp_kid: String,
    tpp_key: String,
}

/// A fresh RSA-2048 key, as PKCS#8 DER (to save) and as a signer.
fn rsa_key(kid: &str) -> (Vec<u8>, SigningKey) {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .expect("aws-lc-rs generates RSA-2048");
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
        .expect("an RSA key has a PKCS#8 encoding")
        .as_ref()
        .to_vec();
    let key = SigningKey::from_pkcs8(kid, &der);
    (der, key)
}

fn state_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(STATE)
}

/// A registration request JWT for the running demo's TPP, signed with its key, carrying a software statement
/// freshly signed by the demo's issuer: `./demo.sh sign-request [--claims '<JSON>']`. `extra` claims are
/// merged over the request (null removes one). OB registers the same software again (the OB profile allows
/// several registrations of one software_id); CDR gets a new software_id each time, since CDR allows one.
pub fn sign_request(extra: Option<&str>) -> Result<String, String> {
    sign_request_with(&state_path(), extra)
}

/// [`sign_request`] with the demo state at `path` (a test's own temp dir).
fn sign_request_with(path: &Path, extra: Option<&str>) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {e}; run ./demo.sh (or ./demo.sh --cdr) first, and keep it running",
            path.display()
        )
    })?;
    let st: DemoState =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let extra: Value = match extra {
        Some(s) => serde_json::from_str(s).map_err(|e| format!("--claims is not JSON: {e}"))?,
        None => json!({}),
    };
    let key = |kid: &str, b64: &str| {
        STANDARD
            .decode(b64)
            .map(|der| SigningKey::from_pkcs8(kid, &der))
            .map_err(|e| format!("{}: a key is not base64: {e}", path.display()))
    };
    let issuer = key(&st.issuer_kid, &st.issuer_key)?;
    let tpp = key(&st.tpp_kid, &st.tpp_key)?;
    Ok(if st.cdr {
        let software_id = base62(18);
        let ssa = issuer.sign(
            json!({}),
            super::claims::cdr_ssa(&software_id, &st.org_id, &st.software_jwks_url, REDIRECTS),
        );
        tpp.sign(
            json!({}),
            super::claims::cdr_request(&software_id, "https://localhost:8443", &ssa, extra),
        )
    } else {
        let ssa = issuer.sign(
            json!({}),
            super::claims::ob_ssa(
                &st.software_id,
                &st.org_id,
                &st.software_jwks_url,
                REDIRECTS,
                &["AISP", "PISP"],
            ),
        );
        tpp.sign(
            json!({}),
            super::claims::ob_request(&st.software_id, OB_AUD, &ssa, &st.tls_client_auth_dn, extra),
        )
    })
}

/// Where a run keeps its files and which ports it takes.
enum Place {
    /// `./demo.sh`: the checkout's .local/ and the shipped config as it is, with its fixed ports.
    Checkout,
    /// The test: a copy of the shipped config in a temp dir (its relative paths then resolve there), pointed at
    /// free ports.
    Scratch(TempDir),
}

/// Runs the demo in the checkout; with `once` it returns after the read-back, else it keeps everything up
/// until Ctrl-C.
pub async fn run(cdr: bool, once: bool) -> Result<Outcome, String> {
    run_in(Place::Checkout, cdr, once).await
}

/// Runs the demo's steps once in a temp dir on free ports, with the shipped config retargeted there.
pub async fn run_isolated(cdr: bool) -> Result<Outcome, String> {
    run_in(Place::Scratch(TempDir::new()), cdr, true).await
}

async fn run_in(place: Place, cdr: bool, once: bool) -> Result<Outcome, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = if cdr {
        "deploy/examples/proxy-cdr.toml"
    } else {
        "proxy.toml"
    };
    let base = match &place {
        Place::Checkout => root.to_path_buf(),
        Place::Scratch(dir) => dir.path().to_path_buf(),
    };
    let (jwks_port, upstream_port) = match place {
        Place::Checkout => (JWKS_PORT, UPSTREAM_PORT),
        Place::Scratch(_) => (0, 0),
    };
    let local = base.join(".local");
    // A fresh world each run: the upstream keeps clients in memory, so old records would point nowhere.
    clear_local(&local)?;

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
    let jwks_server = JwksServer::start_on(&pki, jwks_port).await;
    step(&format!(
        "serving {issuer_name}'s and the third party's JWKS on {}",
        jwks_server.url("/")
    ));
    let (issuer_der, issuer_key) = rsa_key("issuer-1");
    jwks_server.set(issuer_path, jwks(&[issuer_key.public_jwk(Some("sig"))]));
    let (tpp_der, tpp_key) = rsa_key("tpp-sig-1");
    let software_jwks = format!("/software/{software_id}.jwks");
    jwks_server.set(
        &software_jwks,
        jwks(&[
            tpp_key.public_jwk(Some("sig")),
            tpp_cert.tls_jwk("tpp-tls-1"),
        ]),
    );
    let software_jwks_url = jwks_server.url(&software_jwks);
    let state = DemoState {
        cdr,
        software_id: software_id.clone(),
        org_id: org_id.clone(),
        software_jwks_url: software_jwks_url.clone(),
        tls_client_auth_dn: tpp_cert.subject_rfc4514.clone(),
        issuer_kid: issuer_key.kid().to_owned(),
        issuer_key: STANDARD.encode(&issuer_der),
        tpp_kid: tpp_key.kid().to_owned(),
        tpp_key: STANDARD.encode(&tpp_der),
    };
    std::fs::create_dir_all(local.join("demo")).expect("create .local/demo");
    std::fs::write(
        local.join("demo/tpp.json"),
        serde_json::to_string_pretty(&state).expect("state serialises"),
    )
    .expect("write .local/demo/tpp.json");

    step("starting the bundled oidc-provider upstream");
    let upstream = Upstream::start(UpstreamOptions {
        ca_pem_path: files.ca.clone(),
        cert_header: CertHeader::Rfc9440,
        port: upstream_port,
        introspection_client_id: Some("dcr-proxy".into()),
        flavour: super::upstream::Flavour::Rfc7591,
        env: Vec::new(),
    })
    .await;
    println!("   listening on {}", upstream.issuer);

    let config = match place {
        Place::Checkout => root.join(shipped),
        Place::Scratch(_) => retarget(
            &root.join(shipped),
            &base.join(shipped),
            &jwks_server,
            &upstream,
        )?,
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
    // The proxy writes one audit event per decision (target "audit"), with the certificate's thumbprint.
    let audit = proxy.logs().into_iter().find_map(|l| {
        let v: Value = serde_json::from_str(&l).ok()?;
        (v["target"] == "audit"
            && v["operation"] == "register"
            && v["client_id"] == client_id.as_str())
        .then_some(v)
    });
    println!(
        "   the proxy's audit line for it:\n   {}",
        audit
            .as_ref()
            .map_or_else(|| "(none found)".to_string(), Value::to_string)
    );
    let audited = audit.is_some_and(|a| {
        a["outcome"] == "success" && a["cert_thumbprint"] == tpp_cert.thumbprint_s256.as_str()
    });

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
    // What the IdP bound the token to, as its introspection endpoint says (RFC 8705 section 3.2).
    let basic = STANDARD.encode(format!(
        "{}:{}",
        upstream.introspection_client_id, upstream.introspection_secret
    ));
    let info = http_request(
        "POST",
        &upstream.url("/token/introspection"),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &format!("Basic {basic}")),
        ],
        format!("token={}", super::world::urlencode(&token)),
    )
    .await
    .json();
    let cnf = info["cnf"]["x5t#S256"].as_str().unwrap_or("(none)");
    let bound = cnf == tpp_cert.thumbprint_s256;
    println!("   token cnf.x5t#S256:               {cnf}");
    println!(
        "   x5t#S256 of .local/pki/tpp.pem:   {}   ({})",
        tpp_cert.thumbprint_s256,
        if bound {
            "the same: the token is bound to the certificate the TPP presented"
        } else {
            "different: the token is NOT bound to this certificate"
        }
    );
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

    step("a second registration, with a request JWT signed as `./demo.sh sign-request` signs one");
    let own = sign_request_with(&local.join("demo/tpp.json"), None)?;
    let resp = client
        .request(
            "POST",
            &proxy.url("/register"),
            &[("content-type", "application/jwt")],
            own,
        )
        .await;
    println!(
        "   POST /register -> HTTP {} (client_id {})",
        resp.status,
        resp.json()["client_id"].as_str().unwrap_or("-")
    );
    let signed_request = resp.status;

    println!(
        "\n   upstream clients: {:?}\n   the records are in {}; the third party's certificate and key: {}, tpp-key.pem",
        upstream.clients().await,
        local.join("dcr.sqlite").display(),
        local.join("pki/tpp.pem").display()
    );
    println!(
        "\n   Register your own client against the running demo:\n\
         \x20    ./demo.sh sign-request > request.jwt      # or: --claims '{{\"redirect_uris\": [\"https://tpp.example.com/cb2\"]}}' changes claims\n\
         \x20    curl --cacert .local/pki/ca.pem --cert .local/pki/tpp.pem --key .local/pki/tpp-key.pem \\\n\
         \x20         -H 'content-type: application/jwt' --data-binary @request.jwt https://localhost:8443/register"
    );
    let outcome = Outcome {
        register,
        token: token_status,
        read,
        bound,
        audited,
        signed_request,
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

/// Empties `.local/` except `node/`, where scripts/node-env.sh keeps a fetched Node.js.
fn clear_local(local: &Path) -> Result<(), String> {
    std::fs::create_dir_all(local).map_err(|e| format!("create {}: {e}", local.display()))?;
    let entries = std::fs::read_dir(local).map_err(|e| format!("read {}: {e}", local.display()))?;
    for entry in entries.flatten() {
        if entry.file_name() == "node" {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| format!("remove {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Copies the shipped config `from` to `to`, changing only what ties it to the demo's fixed ports: both listeners
/// to port 0, the upstream and the trust anchors' JWKS to the servers started here. Each value is first checked
/// against what the demo serves, so a shipped config that the demo no longer matches fails here too.
fn retarget(
    from: &Path,
    to: &Path,
    jwks_server: &JwksServer,
    upstream: &Upstream,
) -> Result<PathBuf, String> {
    let src = std::fs::read_to_string(from).map_err(|e| format!("read {}: {e}", from.display()))?;
    let mut t: toml::Table = src
        .parse()
        .map_err(|e| format!("{}: {e}", from.display()))?;
    let name = from.display().to_string();
    for key in ["server", "admin"] {
        let section = t
            .get_mut(key)
            .and_then(toml::Value::as_table_mut)
            .ok_or_else(|| format!("{name}: no [{key}]"))?;
        if !matches!(section.get("listen"), Some(toml::Value::String(_))) {
            return Err(format!("{name}: {key}.listen is not set"));
        }
        section.insert("listen".into(), "127.0.0.1:0".into());
    }
    let demo_upstream = format!("http://127.0.0.1:{UPSTREAM_PORT}");
    let upstream_table = t
        .get_mut("upstream")
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| format!("{name}: no [upstream]"))?;
    match upstream_table.get("base_url").and_then(toml::Value::as_str) {
        Some(u) if u.trim_end_matches('/') == demo_upstream => {}
        other => {
            return Err(format!(
                "{name}: upstream.base_url is {other:?}, the demo's upstream is {demo_upstream}"
            ));
        }
    }
    upstream_table.insert("base_url".into(), upstream.issuer.clone().into());
    let anchors = t
        .get_mut("trust_anchors")
        .and_then(toml::Value::as_array_mut)
        .ok_or_else(|| format!("{name}: no [[trust_anchors]]"))?;
    for anchor in anchors.iter_mut().filter_map(toml::Value::as_table_mut) {
        let uri = anchor
            .get("jwks_uri")
            .and_then(toml::Value::as_str)
            .unwrap_or_default();
        let path = uri
            .strip_prefix(&format!("https://localhost:{JWKS_PORT}"))
            .ok_or_else(|| {
                format!("{name}: trust_anchors.jwks_uri {uri:?} is not on the demo's https://localhost:{JWKS_PORT}")
            })?;
        anchor.insert("jwks_uri".into(), jwks_server.url(path).into());
    }
    let out = toml::to_string(&t).map_err(|e| format!("{name}: {e}"))?;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::write(to, out).map_err(|e| format!("write {}: {e}", to.display()))?;
    Ok(to.to_path_buf())
}
