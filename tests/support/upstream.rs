//! Runs the real OAuth upstream (oidc-provider, `tests/upstream/server.mjs`) as a child process for one test, with
//! fresh secrets, and wraps its test-only routes. `Flavour::Keycloak` and `Flavour::ForgeRockAm` run its Keycloak
//! or AM stand-in instead, whose paths, issuer and admin API come from its `listening` line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::{self, SecureRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::client::http_request;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Enough of the upstream's log to explain a failed start without holding a whole chatty run in memory.
const STDERR_KEEP: usize = 64 * 1024;

/// Which header the upstream reads the client certificate from, i.e. which one the proxy must send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CertHeader {
    /// `Client-Cert: :<base64 DER>:`
    #[default]
    Rfc9440,
    /// `ssl-client-cert` (URL-encoded PEM) with `ssl-client-verify: SUCCESS`.
    Nginx,
    /// `x-forwarded-client-cert` with `Cert="<URL-encoded PEM>"`.
    Envoy,
}

impl CertHeader {
    pub fn as_str(self) -> &'static str {
        match self {
            CertHeader::Rfc9440 => "rfc9440",
            CertHeader::Nginx => "nginx",
            CertHeader::Envoy => "envoy",
        }
    }
}

/// Which IdP the upstream plays, i.e. which `upstream.flavour` the proxy in front of it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// oidc-provider as it is, a plain RFC 7591/7592 server.
    Rfc7591,
    /// The Keycloak stand-in (`UPSTREAM_FLAVOUR=keycloak`).
    Keycloak,
    /// The ForgeRock / Ping AM stand-in (`UPSTREAM_FLAVOUR=forgerock-am`).
    ForgeRockAm,
}

impl Flavour {
    /// `DCR_TEST_UPSTREAM=keycloak|forgerock-am|rfc7591` (default rfc7591): the suites run against each.
    pub fn from_env() -> Self {
        match std::env::var("DCR_TEST_UPSTREAM").as_deref() {
            Ok("keycloak") => Flavour::Keycloak,
            Ok("forgerock-am") => Flavour::ForgeRockAm,
            Ok("rfc7591") | Ok("") | Err(_) => Flavour::Rfc7591,
            Ok(other) => panic!("DCR_TEST_UPSTREAM={other}: use keycloak, forgerock-am or rfc7591"),
        }
    }

    /// `upstream.flavour` in proxy.toml.
    pub fn config_name(self) -> &'static str {
        match self {
            Flavour::Rfc7591 => "rfc7591",
            Flavour::Keycloak => "keycloak",
            Flavour::ForgeRockAm => "forgerock-am",
        }
    }

    fn stand_in(self) -> &'static str {
        match self {
            Flavour::Rfc7591 => "oidc-provider",
            Flavour::Keycloak => "keycloak",
            Flavour::ForgeRockAm => "forgerock-am",
        }
    }

    /// The certificate header the upstream reads: AM only a URL-encoded PEM (the stand-in refuses the others).
    pub fn cert_header(self) -> CertHeader {
        match self {
            Flavour::ForgeRockAm => CertHeader::Nginx,
            _ => CertHeader::Rfc9440,
        }
    }

    /// Whether a deployment of this IdP runs with `[upstream.admin]` (recovery needs it with Keycloak and AM).
    pub fn has_admin(self) -> bool {
        self != Flavour::Rfc7591
    }
}

/// Where the upstream serves what, as paths on its base URL.
#[derive(Clone, Debug)]
pub struct Paths {
    pub discovery: String,
    pub registration: String,
    pub token: String,
    pub introspection: String,
    pub revocation: String,
    pub jwks: String,
    /// Keycloak's Admin REST clients collection; AM's OAuth2Client agents collection.
    pub admin_clients: Option<String>,
    /// AM's administrator login.
    pub admin_authenticate: Option<String>,
}

impl Paths {
    fn rfc7591() -> Self {
        Paths {
            discovery: "/.well-known/openid-configuration".into(),
            registration: "/reg".into(),
            token: "/token".into(),
            introspection: "/token/introspection".into(),
            revocation: "/token/revocation".into(),
            jwks: "/jwks".into(),
            admin_clients: None,
            admin_authenticate: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct UpstreamOptions {
    /// PEM the upstream trusts for its outbound HTTPS (`NODE_EXTRA_CA_CERTS`), e.g. the Pki CA for JWKS fetches.
    pub ca_pem_path: PathBuf,
    pub cert_header: CertHeader,
    /// Fixed port for the local demo; 0 (the tests' choice) picks a free one.
    pub port: u16,
    /// Fixed introspection client id (the demo's proxy.toml names it); None picks a random one.
    pub introspection_client_id: Option<String>,
    pub flavour: Flavour,
    /// More environment for the upstream (e.g. `KEYCLOAK_ALLOWED_SCOPES`), over the flavour's defaults.
    pub env: Vec<(String, String)>,
}

impl UpstreamOptions {
    /// The stand-in's settings for a deployment as recommended: the introspection client exempt from
    /// Keycloak's introspection audience check (keycloak/keycloak#49113), and the client scopes OB and CDR
    /// need allowed for registration, `openid` and `profile` included.
    fn flavour_env(&self) -> Vec<(String, String)> {
        let mut env = match self.flavour {
            Flavour::Rfc7591 => Vec::new(),
            // The realm's "Client Registration Scope Allowlist" as deploy/README.md recommends: CDR asks for
            // `profile` too.
            Flavour::ForgeRockAm => vec![(
                "AM_SCOPE_ALLOWLIST".into(),
                KEYCLOAK_ALLOWED_SCOPES
                    .iter()
                    .chain(&["eventpolling"])
                    .copied()
                    .collect::<Vec<_>>()
                    .join(","),
            )],
            Flavour::Keycloak => vec![
                (
                    "KEYCLOAK_INTROSPECTION_AUDIENCE_CHECK".into(),
                    "client-exempt".into(),
                ),
                (
                    "KEYCLOAK_ALLOWED_SCOPES".into(),
                    KEYCLOAK_ALLOWED_SCOPES.join(","),
                ),
            ],
        };
        for (k, v) in &self.env {
            env.retain(|(have, _)| have != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }
}

/// The "Allowed Client Scopes" registration policy of the test realm (and of deploy/keycloak's realm); with
/// `eventpolling`, AM's "Client Registration Scope Allowlist".
pub const KEYCLOAK_ALLOWED_SCOPES: &[&str] = &[
    "openid",
    "profile",
    "accounts",
    "payments",
    "fundsconfirmations",
    "cdr:registration",
    "bank:accounts.basic:read",
    "bank:accounts.detail:read",
    "bank:transactions:read",
    "bank:payees:read",
    "bank:regular_payments:read",
    "common:customer.basic:read",
    "common:customer.detail:read",
    "energy:accounts.basic:read",
];

/// A running upstream; killed when dropped.
pub struct Upstream {
    /// `http://127.0.0.1:PORT`: where the harness sends requests.
    pub issuer: String,
    pub flavour: Flavour,
    pub paths: Paths,
    /// The issuer tokens and discovery name (Keycloak: the realm on its frontend hostname).
    pub oidc_issuer: String,
    pub realm: Option<String>,
    pub port: u16,
    pub initial_access_token: String,
    pub introspection_client_id: String,
    pub introspection_secret: String,
    /// The client whose client_credentials tokens may read and delete any client (`[upstream.admin]`); with AM
    /// the administrator's user name and password.
    pub admin_client_id: String,
    pub admin_secret: String,
    /// AM: the static client whose client_credentials tokens are initial access tokens (`[upstream.iat]`).
    pub iat_client_id: String,
    pub iat_secret: String,
    /// The header the upstream reads a client certificate from.
    pub cert_header: CertHeader,
    stderr: Arc<Mutex<String>>,
    _child: Child,
}

impl Upstream {
    pub async fn start(options: UpstreamOptions) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream");
        assert!(
            dir.join("node_modules").is_dir(),
            "{} is missing: run `npm ci --prefix tests/upstream` first",
            dir.join("node_modules").display()
        );
        Self::start_script(&dir.join("server.mjs"), options).await
    }

    /// Starts another script that keeps the same contract (env in, one `listening` line out).
    pub async fn start_script(script: &Path, options: UpstreamOptions) -> Self {
        let initial_access_token = random_secret();
        let introspection_client_id = options
            .introspection_client_id
            .clone()
            .unwrap_or_else(|| format!("dcr-proxy-{}", &random_secret()[..8]));
        let introspection_secret = random_secret();
        // Fixed, as in ./proxy.toml (the demo uses it); its secret is random per run.
        let admin_client_id = match options.flavour {
            Flavour::ForgeRockAm => "amadmin".to_string(),
            _ => "dcr-proxy-admin".to_string(),
        };
        let admin_secret = random_secret();
        let iat_client_id = "dcr-proxy-iat".to_string();
        let iat_secret = random_secret();
        let verbose = std::env::var_os("DCR_TEST_VERBOSE").is_some();

        let node = std::env::var_os("NODE").unwrap_or_else(|| "node".into());
        let mut command = Command::new(&node);
        for (k, v) in options.flavour_env() {
            command.env(k, v);
        }
        let mut child = command
            .arg(script)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("UPSTREAM_FLAVOUR", options.flavour.stand_in())
            .env("UPSTREAM_PORT", options.port.to_string())
            .env("INITIAL_ACCESS_TOKEN", &initial_access_token)
            .env("INTROSPECTION_CLIENT_ID", &introspection_client_id)
            .env("INTROSPECTION_CLIENT_SECRET", &introspection_secret)
            .env("ADMIN_CLIENT_ID", &admin_client_id)
            .env("ADMIN_CLIENT_SECRET", &admin_secret)
            .env("AM_ADMIN_USER", &admin_client_id)
            .env("AM_ADMIN_PASSWORD", &admin_secret)
            .env("IAT_CLIENT_ID", &iat_client_id)
            .env("IAT_CLIENT_SECRET", &iat_secret)
            .env("CLIENT_CERT_HEADER", options.cert_header.as_str())
            .env("NODE_EXTRA_CA_CERTS", &options.ca_pem_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {node:?} {}: {err}", script.display()));

        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_task = tokio::spawn(collect_stderr(
            child.stderr.take().expect("stderr is piped"),
            stderr.clone(),
            verbose,
        ));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();

        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(line) = stdout.next_line().await.ok().flatten() {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if event["event"] == "listening" {
                    return Some(event);
                }
            }
            None
        })
        .await;
        let event = match ready {
            Ok(Some(event)) => event,
            failure => {
                let why = if failure.is_err() {
                    format!("no listening line within {READY_TIMEOUT:?}")
                } else {
                    "it exited before listening".to_owned()
                };
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
                let log = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                panic!(
                    "upstream {} failed to start: {why}; its stderr:\n{log}",
                    script.display()
                );
            }
        };

        // Keep draining stdout: a full pipe would stall the child.
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                if verbose {
                    eprintln!("[upstream] {line}");
                }
            }
        });

        let port = event["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("listening line has no port: {event}"));
        let issuer = event["issuer"]
            .as_str()
            .map_or_else(|| format!("http://127.0.0.1:{port}"), str::to_owned);
        let text = |k: &str| event[k].as_str().map(str::to_owned);
        let paths = match options.flavour {
            Flavour::Rfc7591 => Paths::rfc7591(),
            Flavour::Keycloak | Flavour::ForgeRockAm => {
                let path = |k: &str| {
                    text(k).unwrap_or_else(|| panic!("the listening line has no {k}: {event}"))
                };
                Paths {
                    discovery: path("discovery_path"),
                    registration: path("registration_path"),
                    token: path("token_path"),
                    introspection: path("introspection_path"),
                    revocation: path("revocation_path"),
                    jwks: path("jwks_path"),
                    admin_clients: Some(path("admin_clients_path")),
                    admin_authenticate: text("admin_authenticate_path"),
                }
            }
        };
        Self {
            oidc_issuer: text("oidc_issuer").unwrap_or_else(|| issuer.clone()),
            realm: text("realm"),
            flavour: options.flavour,
            paths,
            issuer,
            port,
            initial_access_token,
            introspection_client_id,
            introspection_secret,
            admin_client_id,
            admin_secret,
            iat_client_id,
            iat_secret,
            cert_header: options.cert_header,
            stderr,
            _child: child,
        }
    }

    /// The `[upstream]` lines this flavour needs besides the common ones: AM's `[upstream.iat]`, and
    /// `[upstream.admin]` when `admin` (secrets from `iat_env` and `admin_env`).
    pub fn upstream_toml(&self, admin: bool, iat_env: &str, admin_env: &str) -> String {
        match self.flavour {
            Flavour::ForgeRockAm => {
                let mut t = format!(
                    "[upstream.iat]\nclient_id = \"{}\"\nclient_secret_env = \"{iat_env}\"\n",
                    self.iat_client_id
                );
                if admin {
                    t.push_str(&format!(
                        "[upstream.admin]\nusername = \"{}\"\npassword_env = \"{admin_env}\"\n",
                        self.admin_client_id
                    ));
                }
                t
            }
            _ if admin => format!(
                "[upstream.admin]\ntoken_endpoint = \"{}\"\nclient_id = \"{}\"\nclient_secret_env = \"{admin_env}\"",
                self.paths.token, self.admin_client_id
            ),
            _ => String::new(),
        }
    }

    /// AM: an administrator's SSO token from the stand-in's authenticate endpoint.
    pub async fn am_session(&self) -> String {
        let path = self
            .paths
            .admin_authenticate
            .as_deref()
            .expect("AM authenticate");
        let resp = http_request(
            "POST",
            &self.url(path),
            &[
                ("x-openam-username", &self.admin_client_id),
                ("x-openam-password", &self.admin_secret),
                ("content-type", "application/json"),
            ],
            "{}",
        )
        .await;
        assert_eq!(resp.status, 200, "AM authenticate: {}", resp.text());
        resp.json()["tokenId"].as_str().expect("tokenId").to_owned()
    }

    /// AM: `GET|DELETE …/realm-config/agents/OAuth2Client/{id}` as the administrator (None when 404).
    pub async fn am_agent(&self, method: &str, client_id: &str) -> Option<Value> {
        let path = self.paths.admin_clients.as_deref().expect("AM agents");
        let resp = http_request(
            method,
            &self.url(&format!("{path}/{client_id}")),
            &[
                ("iplanetdirectorypro", &self.am_session().await),
                ("accept-api-version", "protocol=2.0,resource=1.0"),
            ],
            "",
        )
        .await;
        match resp.status {
            200 => Some(resp.json()),
            404 => None,
            s => panic!("AM agent {method} {client_id}: {s} {}", resp.text()),
        }
    }

    /// AM: an initial access token as the proxy would mint it (client_credentials on the IAT client).
    pub async fn am_iat(&self) -> String {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.iat_client_id, self.iat_secret));
        let resp = http_request(
            "POST",
            &self.token_url(),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &format!("Basic {basic}")),
            ],
            "grant_type=client_credentials&scope=dynamic_client_registration",
        )
        .await;
        assert_eq!(resp.status, 200, "IAT: {}", resp.text());
        resp.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// The headers that hand `cert` (PEM and DER) to the upstream the way it reads them, as a proxy in front
    /// of it would.
    pub fn cert_headers(&self, cert_pem: &str, cert_der: &[u8]) -> Vec<(&'static str, String)> {
        let pem: String = url::form_urlencoded::byte_serialize(cert_pem.as_bytes())
            .collect::<String>()
            .replace('+', "%20");
        match self.cert_header {
            CertHeader::Rfc9440 => vec![(
                "client-cert",
                format!(
                    ":{}:",
                    base64::engine::general_purpose::STANDARD.encode(cert_der)
                ),
            )],
            CertHeader::Nginx => vec![
                ("ssl-client-cert", pem),
                ("ssl-client-verify", "SUCCESS".into()),
            ],
            CertHeader::Envoy => vec![("x-forwarded-client-cert", format!("Cert=\"{pem}\""))],
        }
    }

    /// `issuer` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// The token endpoint's URL, where the harness asks for tokens.
    pub fn token_url(&self) -> String {
        self.url(&self.paths.token)
    }

    /// What a private_key_jwt client assertion names as `aud`: the issuer (Keycloak accepts its realm issuer
    /// on the frontend hostname; oidc-provider its own).
    pub fn assertion_audience(&self) -> &str {
        &self.oidc_issuer
    }

    /// A client_credentials token of the administrator client (`ADMIN_CLIENT_*`).
    pub async fn admin_token(&self) -> String {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.admin_client_id, self.admin_secret));
        let resp = http_request(
            "POST",
            &self.token_url(),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &format!("Basic {basic}")),
            ],
            "grant_type=client_credentials",
        )
        .await;
        assert_eq!(resp.status, 200, "admin token: {}", resp.text());
        resp.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Keycloak Admin REST `POST clients/{id}/registration-access-token`: a new registration access token, which
    /// makes the stored one stale behind the proxy's back.
    pub async fn mint_registration_token(&self, client_id: &str) -> String {
        let path = self
            .paths
            .admin_clients
            .as_deref()
            .expect("Keycloak Admin REST");
        let resp = http_request(
            "POST",
            &self.url(&format!("{path}/{client_id}/registration-access-token")),
            &[
                (
                    "authorization",
                    &format!("Bearer {}", self.admin_token().await),
                ),
                ("content-type", "application/json"),
            ],
            "{}",
        )
        .await;
        assert_eq!(resp.status, 200, "mint: {}", resp.text());
        resp.json()["registrationAccessToken"]
            .as_str()
            .expect("registrationAccessToken")
            .to_owned()
    }

    /// Keycloak Admin REST `GET clients/{id}` (None when 404).
    pub async fn admin_client(&self, client_id: &str) -> Option<Value> {
        let path = self
            .paths
            .admin_clients
            .as_deref()
            .expect("Keycloak Admin REST");
        let resp = http_request(
            "GET",
            &self.url(&format!("{path}/{client_id}")),
            &[(
                "authorization",
                &format!("Bearer {}", self.admin_token().await),
            )],
            "",
        )
        .await;
        match resp.status {
            200 => Some(resp.json()),
            404 => None,
            s => panic!("admin GET {client_id}: {s} {}", resp.text()),
        }
    }

    /// What the upstream logged so far (the last 64 KiB).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Client ids registered at the upstream, the introspection client excepted.
    pub async fn clients(&self) -> Vec<String> {
        let body = self.admin("GET", "/__test/clients", "").await;
        serde_json::from_value(body).expect("/__test/clients returns an array of client ids")
    }

    /// The last requests (up to 50) whose path starts with `path_prefix`: `{method, path, headers}`.
    pub async fn requests(&self, path_prefix: &str) -> Vec<Value> {
        let query: String = url::form_urlencoded::byte_serialize(path_prefix.as_bytes()).collect();
        let body = self
            .admin("GET", &format!("/__test/requests?path={query}"), "")
            .await;
        serde_json::from_value(body).expect("/__test/requests returns an array")
    }

    /// Configures a registration fault, e.g. `{"mode": "error_after_create", "status": 500, "count": 1}`;
    /// returns the fault state the upstream reports.
    pub async fn fault(&self, fault: Value) -> Value {
        let body = serde_json::to_vec(&fault).expect("fault JSON serialises");
        self.admin("POST", "/__fault/register", body).await
    }

    async fn admin(&self, method: &str, path: &str, body: impl Into<bytes::Bytes>) -> Value {
        let response = http_request(
            method,
            &self.url(path),
            &[
                ("x-test-admin", &self.initial_access_token),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await;
        assert_eq!(
            response.status,
            200,
            "{method} {path} at the upstream: {}",
            response.text()
        );
        response.json()
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system RNG works");
    URL_SAFE_NO_PAD.encode(bytes)
}

async fn collect_stderr(
    stderr: tokio::process::ChildStderr,
    keep: Arc<Mutex<String>>,
    verbose: bool,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if verbose {
            eprintln!("[upstream] {line}");
        }
        let Ok(mut keep) = keep.lock() else {
            return;
        };
        keep.push_str(&line);
        keep.push('\n');
        if keep.len() > STDERR_KEEP {
            let mut cut = keep.len() - STDERR_KEEP;
            while !keep.is_char_boundary(cut) {
                cut += 1;
            }
            keep.drain(..cut);
        }
    }
}
