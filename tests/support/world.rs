//! A whole test world: PKI, an HTTPS JWKS server acting as the directory and the TPPs' key stores,
//! the real oidc-provider upstream (or its Keycloak or AM stand-in, by `Options::flavour`, whose default comes from
//! `DCR_TEST_UPSTREAM`), and the proxy binary configured in front of it.

use serde_json::{Value, json};

use super::claims;
use super::client::{Response, TlsClient};
use super::jwks_server::JwksServer;
use super::keys::{SigningKey, jwks};
use super::pki::{ClientCert, ClientCertSpec, Pki, PkiFiles};
use super::proxy::ProxyProcess;
use super::register::{PRODUCTS_PATH, RECIPIENTS_PATH, RegisterStub};
use super::temp::TempDir;
pub use super::upstream::Flavour;
use super::upstream::{CertHeader, Upstream, UpstreamOptions};

pub const OB_AUD: &str = "0015800001041RHAAY";
pub const CDR_HOLDER: &str = "https://holder.example.com";
pub const IAT_ENV: &str = "DCR_UPSTREAM_INITIAL_ACCESS_TOKEN";
pub const ADMIN_ENV: &str = "DCR_UPSTREAM_ADMIN_CLIENT_SECRET";
pub const IAT_CLIENT_ENV: &str = "DCR_UPSTREAM_IAT_CLIENT_SECRET";
pub const INTROSPECTION_ENV: &str = "DCR_MANAGEMENT_CLIENT_SECRET";
pub const DIRECTORY_JWKS: &str = "/directory/openbanking.jwks";
pub const REGISTER_JWKS: &str = "/cdr-register/v1/jwks";
pub const CRL_PATH: &str = "/pki/root.crl";
pub const REDIRECTS: &[&str] = &["https://tpp.example.com/cb", "https://tpp.example.com/cb2"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Profile {
    Ob,
    Cdr,
}

/// What a test may change about the proxy's configuration.
#[derive(Clone, Debug)]
pub struct Options {
    pub profile: Profile,
    /// Extra lines inside `[profile]`.
    pub profile_extra: String,
    /// Extra TOML appended at the end (more sections).
    pub tail: String,
    pub client_auth: &'static str,
    pub cert_header: CertHeader,
    /// Point the proxy at this upstream URL instead of the real one (e.g. a closed port).
    pub upstream_override: Option<String>,
    /// Extra lines inside `[management]`.
    pub management_extra: String,
    /// The body of `[store]`, replacing the default sqlite file in the world's temp dir.
    pub store: Option<String>,
    /// Extra lines inside `[upstream]` (e.g. `timeout`, `settle_timeout`).
    pub upstream_extra: String,
    /// Adds `[upstream.admin]` with the test upstream's administrator client (default: with Keycloak, as a
    /// Keycloak deployment should have it).
    pub upstream_admin: bool,
    /// Extra lines inside `[tls]` (e.g. `crl_stale_policy`).
    pub tls_extra: String,
    /// A CRL file of the root (fresh, revoking nothing) at [`World::crl_path`], in `tls.crl_files`.
    pub crl_file: bool,
    /// A CRL of the root (fresh, revoking nothing) served at [`CRL_PATH`] by the JWKS server, in `tls.crl_urls`.
    pub crl_url: bool,
    /// The variable `[upstream.admin]` takes its secret from, instead of the admin client's own.
    pub upstream_admin_secret_env: Option<String>,
    /// Which IdP the upstream plays (default: `DCR_TEST_UPSTREAM`).
    pub flavour: Flavour,
    /// More environment for the upstream (e.g. `KEYCLOAK_ALLOWED_SCOPES`).
    pub upstream_env: Vec<(String, String)>,
    /// Extra lines inside `[server]`, `[admin]` and `[forward]`.
    pub server_extra: String,
    pub admin_extra: String,
    pub forward_extra: String,
    /// Runs the proxy with this open-files limit (soft and hard), through util-linux `prlimit`.
    pub nofile: Option<u64>,
    /// Starts a CDR Register stub ([`World::register`]) and points both status URIs of `[profile]` at it; the
    /// string is more `[profile]` lines (interval, bound, policy).
    pub register_status: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            profile: Profile::Ob,
            profile_extra: String::new(),
            tail: String::new(),
            client_auth: "optional",
            cert_header: Flavour::from_env().cert_header(),
            upstream_override: None,
            management_extra: String::new(),
            store: None,
            upstream_extra: String::new(),
            tls_extra: String::new(),
            crl_file: false,
            crl_url: false,
            upstream_admin: Flavour::from_env().has_admin(),
            upstream_admin_secret_env: None,
            flavour: Flavour::from_env(),
            upstream_env: Vec::new(),
            server_extra: String::new(),
            admin_extra: String::new(),
            forward_extra: String::new(),
            nofile: None,
            register_status: None,
        }
    }
}

pub struct World {
    pub pki: Pki,
    pub dir: TempDir,
    pub files: PkiFiles,
    pub jwks: JwksServer,
    pub upstream: Upstream,
    pub directory_key: SigningKey,
    pub register_key: SigningKey,
    pub proxy: ProxyProcess,
    pub options: Options,
    /// With `Options::register_status`.
    pub register: Option<RegisterStub>,
}

/// A third party: its transport certificate, its signing key and its published software JWKS.
pub struct Tpp {
    pub software_id: String,
    pub org_id: String,
    pub cert: ClientCert,
    pub key: SigningKey,
    pub jwks_path: String,
    pub jwks_url: String,
    pub client: TlsClient,
}

pub fn base62(n: usize) -> String {
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(uuid::Uuid::new_v4().as_bytes().iter())
        .take(n)
        .map(|b| alphabet[(*b as usize) % 62] as char)
        .collect()
}

impl World {
    /// A form POST to the upstream's token endpoint through the proxy: the certificate reaches the upstream
    /// only in the proxy's header.
    pub async fn token_via_proxy(&self, tpp: &Tpp, form: String) -> Response {
        tpp.client
            .request(
                "POST",
                &self.proxy.url(&self.upstream.paths.token),
                &[("content-type", "application/x-www-form-urlencoded")],
                form,
            )
            .await
    }

    /// RFC 7662 introspection of `token` at the upstream itself, as its introspection client: what the IdP
    /// recorded, seen without the proxy in between.
    pub async fn introspect_at_upstream(&self, token: &str) -> Value {
        let basic = base64_std(
            format!(
                "{}:{}",
                self.upstream.introspection_client_id, self.upstream.introspection_secret
            )
            .as_bytes(),
        );
        super::client::http_request(
            "POST",
            &self.upstream.url(&self.upstream.paths.introspection),
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &format!("Basic {basic}")),
            ],
            format!("token={}", urlencode(token)),
        )
        .await
        .json()
    }

    pub async fn start(options: Options) -> World {
        let pki = Pki::new();
        let dir = TempDir::new();
        let files = pki.write_to(&dir.join("pki"));
        let jwks = JwksServer::start(&pki).await;
        let directory_key = SigningKey::rsa("directory-1");
        let register_key = SigningKey::rsa("register-1");
        jwks.set(
            DIRECTORY_JWKS,
            jwks_doc(&[directory_key.public_jwk(Some("sig"))]),
        );
        jwks.set(
            REGISTER_JWKS,
            jwks_doc(&[register_key.public_jwk(Some("sig"))]),
        );
        if options.crl_file {
            write_crl(&dir.join("pki").join("root.crl"), &pki.fresh_crl(&[]));
        }
        if options.crl_url {
            jwks.set_raw(CRL_PATH, pki.fresh_crl(&[]).der, "application/pkix-crl");
        }
        let upstream = Upstream::start(UpstreamOptions {
            ca_pem_path: files.ca.clone(),
            cert_header: options.cert_header,
            port: 0,
            introspection_client_id: None,
            flavour: options.flavour,
            env: options.upstream_env.clone(),
        })
        .await;
        let register = match options.register_status {
            Some(_) => Some(RegisterStub::start(&pki).await),
            None => None,
        };
        let toml = config_toml(
            &files,
            &dir,
            &jwks,
            &upstream,
            &with_register(&options, register.as_ref()),
        );
        let proxy =
            ProxyProcess::start_limited(dir.path(), &toml, &proxy_env(&upstream), options.nofile)
                .await;
        World {
            pki,
            dir,
            files,
            jwks,
            upstream,
            directory_key,
            register_key,
            proxy,
            options,
            register,
        }
    }

    pub async fn ob() -> World {
        World::start(Options::default()).await
    }

    pub fn flavour(&self) -> Flavour {
        self.upstream.flavour
    }

    /// The config this world's proxy runs with, for tests that start a second proxy or check it.
    pub fn config_toml(&self, options: &Options) -> String {
        config_toml(&self.files, &self.dir, &self.jwks, &self.upstream, options)
    }

    /// Another proxy process with this world's configuration (its own ports): a second replica.
    pub async fn replica(&self, options: &Options) -> (TempDir, ProxyProcess) {
        let dir = TempDir::new();
        let toml = self.config_toml(&with_register(options, self.register.as_ref()));
        let proxy = ProxyProcess::start(dir.path(), &toml, &proxy_env(&self.upstream)).await;
        (dir, proxy)
    }

    /// SIGKILLs the proxy (no drain, nothing flushed beyond what was committed) and starts it again with the
    /// same config file and store, as a container runtime would after an OOM kill.
    pub async fn kill_and_restart(&mut self) {
        self.proxy.signal("KILL");
        let status = self.proxy.wait().await;
        assert!(!status.success(), "SIGKILL ends the proxy: {status:?}");
        let config = self.proxy.config_path.clone();
        self.proxy = ProxyProcess::try_start_config(config, &proxy_env(&self.upstream))
            .await
            .unwrap_or_else(|logs| panic!("dcr-proxy did not restart:\n{logs}"));
    }

    /// The CRL file `Options::crl_file` puts in `tls.crl_files`.
    pub fn crl_path(&self) -> std::path::PathBuf {
        self.dir.join("pki").join("root.crl")
    }

    /// Replaces the CRL file (atomically, as an operator's job would), for the proxy's next reload poll.
    pub fn publish_crl_file(&self, crl: &super::pki::Crl) {
        write_crl(&self.crl_path(), crl);
    }

    /// Replaces the CRL the JWKS server serves at [`CRL_PATH`].
    pub fn publish_crl_url(&self, crl: &super::pki::Crl) {
        self.jwks
            .set_raw(CRL_PATH, crl.der.clone(), "application/pkix-crl");
    }

    /// A new TPP with an OB transport certificate whose software JWKS lists its signing key and the certificate.
    pub fn tpp(&self) -> Tpp {
        self.tpp_with(ClientCertSpec::ob(base62(18), base62(18)))
    }

    pub fn tpp_with(&self, spec: ClientCertSpec) -> Tpp {
        let (software_id, org_id) = match &spec.subject {
            super::pki::Subject::Ob {
                software_id,
                org_id,
            } => (software_id.clone(), org_id.clone()),
            _ => (base62(18), base62(18)),
        };
        let cert = self.pki.client(spec);
        let key = SigningKey::rsa(&format!("sig-{}", base62(8)));
        let jwks_path = format!("/software/{software_id}.jwks");
        self.jwks.set(
            &jwks_path,
            jwks_doc(&[key.public_jwk(Some("sig")), cert.tls_jwk("tls-1")]),
        );
        let client = TlsClient::new(&self.pki.ca_pem(), Some(&cert));
        Tpp {
            jwks_url: self.jwks.url(&jwks_path),
            software_id,
            org_id,
            cert,
            key,
            jwks_path,
            client,
        }
    }

    /// The OB Directory SSA claims for this TPP, merged with `extra` (null removes a claim).
    pub fn ob_ssa_claims(&self, tpp: &Tpp, extra: Value) -> Value {
        claims::merge(
            claims::ob_ssa(
                &tpp.software_id,
                &tpp.org_id,
                &tpp.jwks_url,
                REDIRECTS,
                &["AISP", "PISP"],
            ),
            extra,
        )
    }

    pub fn ob_ssa(&self, tpp: &Tpp, extra: Value) -> String {
        self.directory_key
            .sign(json!({}), self.ob_ssa_claims(tpp, extra))
    }

    pub fn ob_request_claims(&self, tpp: &Tpp, ssa: &str, extra: Value) -> Value {
        claims::ob_request(
            &tpp.software_id,
            OB_AUD,
            ssa,
            &tpp.cert.subject_rfc4514,
            extra,
        )
    }

    /// A complete, valid OB registration request JWT for `tpp`, with `extra` merged into its claims.
    pub fn ob_request(&self, tpp: &Tpp, extra: Value) -> String {
        let ssa = self.ob_ssa(tpp, json!({}));
        tpp.key
            .sign(json!({}), self.ob_request_claims(tpp, &ssa, extra))
    }

    /// A client_credentials token from the upstream's token endpoint with tls_client_auth, the certificate
    /// passed the way the upstream reads it (`Options::cert_header`), as a proxy in front of it would.
    pub async fn token_tls(&self, client_id: &str, cert: &ClientCert, scope: &str) -> Response {
        self.token_tls_ttl(client_id, cert, scope, None).await
    }

    /// As `token_tls`, asking the test upstream for a token that expires after `ttl` seconds.
    pub async fn token_tls_ttl(
        &self,
        client_id: &str,
        cert: &ClientCert,
        scope: &str,
        ttl: Option<u32>,
    ) -> Response {
        let ttl = ttl.map(|t| t.to_string()).unwrap_or_default();
        let body = format!(
            "grant_type=client_credentials&client_id={}&scope={}",
            urlencode(client_id),
            urlencode(scope)
        );
        let cert_headers = self.upstream.cert_headers(&cert.cert_pem, &cert.cert_der);
        let mut headers: Vec<(&str, &str)> = vec![
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-test-token-ttl", &ttl),
        ];
        headers.extend(cert_headers.iter().map(|(k, v)| (*k, v.as_str())));
        super::client::http_request("POST", &self.upstream.token_url(), &headers, body).await
    }

    /// A client_credentials token with private_key_jwt (a PS256 client assertion signed by `key`).
    pub async fn token_private_key_jwt(
        &self,
        client_id: &str,
        key: &SigningKey,
        cert: &ClientCert,
        scope: &str,
    ) -> Response {
        let cert_headers = self.upstream.cert_headers(&cert.cert_pem, &cert.cert_der);
        let now = claims::now();
        let assertion = key.sign(
            json!({}),
            json!({"iss": client_id, "sub": client_id, "aud": self.upstream.assertion_audience(),
                   "iat": now, "exp": now + 60, "jti": claims::jti()}),
        );
        let body = format!(
            "grant_type=client_credentials&scope={}&client_assertion_type={}&client_assertion={}",
            urlencode(scope),
            urlencode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            assertion
        );
        super::client::http_request(
            "POST",
            &self.upstream.token_url(),
            &std::iter::once(("content-type", "application/x-www-form-urlencoded"))
                .chain(cert_headers.iter().map(|(k, v)| (*k, v.as_str())))
                .collect::<Vec<_>>(),
            body,
        )
        .await
    }

    /// Registers a client at the upstream itself (RFC 7591 with its initial access token), not through the proxy;
    /// returns the client_id, or panics unless 201.
    pub async fn register_upstream(&self, metadata: Value) -> String {
        let resp = super::client::http_request(
            "POST",
            &self.upstream.url(&self.upstream.paths.registration),
            &[
                (
                    "authorization",
                    &format!("Bearer {}", self.upstream.initial_access_token),
                ),
                ("content-type", "application/json"),
            ],
            metadata.to_string(),
        )
        .await;
        assert_eq!(resp.status, 201, "{}", resp.text());
        resp.json()["client_id"]
            .as_str()
            .expect("client_id")
            .to_string()
    }

    /// Calls /register/{client_id} with a bearer token over the TPP's mTLS connection.
    pub async fn manage(
        &self,
        client: &TlsClient,
        method: &str,
        client_id: &str,
        token: Option<&str>,
        body: &str,
    ) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        if !body.is_empty() {
            headers.push(("content-type", "application/jwt"));
        }
        client
            .request(
                method,
                &self.proxy.url(&format!("/register/{client_id}")),
                &headers,
                body.to_string(),
            )
            .await
    }

    /// A CDR data recipient: any transport certificate from the CA, and a signing key in its JWKS.
    pub fn adr(&self) -> Tpp {
        self.tpp_with(ClientCertSpec::custom([
            ("C", "AU"),
            ("O", "Data Recipient Pty Ltd"),
            ("CN", format!("adr-{}", base62(10)).as_str()),
        ]))
    }

    pub fn cdr_ssa_claims(&self, adr: &Tpp, extra: Value) -> Value {
        claims::merge(
            claims::cdr_ssa(&adr.software_id, &adr.org_id, &adr.jwks_url, REDIRECTS),
            extra,
        )
    }

    pub fn cdr_ssa(&self, adr: &Tpp, extra: Value) -> String {
        self.register_key
            .sign(json!({}), self.cdr_ssa_claims(adr, extra))
    }

    pub fn cdr_request(&self, adr: &Tpp, extra: Value) -> String {
        let ssa = self.cdr_ssa(adr, json!({}));
        adr.key.sign(
            json!({}),
            claims::cdr_request(&adr.software_id, CDR_HOLDER, &ssa, extra),
        )
    }

    /// Registers `tpp` with a valid OB request (plus `extra`) and returns the client_id; panics unless 201.
    pub async fn register(&self, tpp: &Tpp, extra: Value) -> String {
        let resp = self
            .post_register(&tpp.client, &self.ob_request(tpp, extra))
            .await;
        assert_eq!(resp.status, 201, "{}", resp.text());
        resp.json()["client_id"]
            .as_str()
            .expect("client_id")
            .to_string()
    }

    pub async fn post_register(&self, client: &TlsClient, body: &str) -> Response {
        client
            .request(
                "POST",
                &self.proxy.url("/register"),
                &[("content-type", "application/jwt")],
                body.to_string(),
            )
            .await
    }
}

/// `options` with the Register stub's status URIs and its `register_status` lines added to `[profile]`.
fn with_register(options: &Options, register: Option<&RegisterStub>) -> Options {
    let mut o = options.clone();
    if let (Some(r), Some(extra)) = (register, &options.register_status) {
        o.profile_extra.push_str(&format!(
            "\nsoftware_product_status_uri = \"{}\"\ndata_recipient_status_uri = \"{}\"\n{extra}\n",
            r.url(PRODUCTS_PATH),
            r.url(RECIPIENTS_PATH)
        ));
    }
    o
}

/// The environment the proxy needs for this upstream: its initial access token and introspection secret.
pub fn proxy_env(upstream: &Upstream) -> Vec<(&'static str, &str)> {
    vec![
        (IAT_ENV, upstream.initial_access_token.as_str()),
        (INTROSPECTION_ENV, upstream.introspection_secret.as_str()),
        (ADMIN_ENV, upstream.admin_secret.as_str()),
        (IAT_CLIENT_ENV, upstream.iat_secret.as_str()),
    ]
}

fn write_crl(path: &std::path::Path, crl: &super::pki::Crl) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &crl.pem).expect("write the CRL");
    std::fs::rename(&tmp, path).expect("move the CRL into place");
}

/// For a test that only one flavour can show: true (and a line saying why) when this run is for the other.
pub fn not_for_this_flavour(only: Flavour, why: &str) -> bool {
    let running = Flavour::from_env();
    if running != only {
        eprintln!("not applicable to {}: {why}", running.config_name());
    }
    running != only
}

/// For a test one flavour cannot show: true (and a line saying why) when this run is for `skip`.
pub fn skip_for_flavour(skip: Flavour, why: &str) -> bool {
    let running = Flavour::from_env();
    if running == skip {
        eprintln!("not applicable to {}: {why}", running.config_name());
    }
    running == skip
}

pub fn jwks_doc(keys: &[Value]) -> Value {
    jwks(keys)
}

fn config_toml(
    files: &PkiFiles,
    dir: &TempDir,
    jwks: &JwksServer,
    upstream: &Upstream,
    o: &Options,
) -> String {
    let (kind, aud, anchor_issuer, anchor_path) = match o.profile {
        Profile::Ob => ("ob-v3.1", OB_AUD, "OpenBanking Ltd", DIRECTORY_JWKS),
        Profile::Cdr => ("cdr-1.13", CDR_HOLDER, "cdr-register", REGISTER_JWKS),
    };
    let upstream_url = o
        .upstream_override
        .clone()
        .unwrap_or_else(|| upstream.issuer.clone());
    let paths = &upstream.paths;
    // Keycloak lets a client revoke only its own tokens, so the proxy is given no revocation endpoint there.
    let revocation = match upstream.flavour {
        Flavour::Rfc7591 => format!("revocation_endpoint = \"{}\"", paths.revocation),
        Flavour::Keycloak | Flavour::ForgeRockAm => String::new(),
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "https://localhost:8443"
reload_interval = "200ms"
drain_timeout = "5s"
{server_extra}

[admin]
listen = "127.0.0.1:0"
{admin_extra}

[tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
client_auth = "{client_auth}"
{crl}
{tls_extra}

[upstream]
flavour = "{flavour}"
base_url = "{upstream_url}"
registration_endpoint = "{registration}"
initial_access_token_env = "{IAT_ENV}"
connect_timeout = "1s"
{upstream_extra}
{upstream_admin}

[jwks]
ca_bundle = "{ca}"
timeout = "3s"

[profile]
kind = "{kind}"
audiences = ["{aud}"]
{profile_extra}

[[trust_anchors]]
issuer = "{anchor_issuer}"
jwks_uri = "{anchor_jwks}"

[store]
{store}

[log]
format = "json"
level = "info"

[forward]
cert_header = "{cert_header}"
response_timeout = "3s"
{forward_extra}

[management]
introspection_endpoint = "{introspection}"
{revocation}
client_id = "{introspection_client}"
client_secret_env = "{INTROSPECTION_ENV}"
{management_extra}
{tail}
"#,
        introspection_client = upstream.introspection_client_id,
        flavour = upstream.flavour.config_name(),
        registration = paths.registration,
        introspection = paths.introspection,
        cert_header = o.cert_header.as_str(),
        upstream_extra = if o.upstream_extra.is_empty() {
            "timeout = \"5s\"".to_string()
        } else {
            o.upstream_extra.clone()
        },
        upstream_admin = upstream.upstream_toml(
            o.upstream_admin,
            IAT_CLIENT_ENV,
            o.upstream_admin_secret_env.as_deref().unwrap_or(ADMIN_ENV)
        ),
        management_extra = o.management_extra,
        server_extra = o.server_extra,
        admin_extra = o.admin_extra,
        forward_extra = o.forward_extra,
        cert = files.server_cert.display(),
        key = files.server_key.display(),
        ca = files.ca.display(),
        client_auth = o.client_auth,
        crl = {
            let mut lines = String::new();
            if o.crl_file {
                lines.push_str(&format!(
                    "crl_files = [\"{}\"]\n",
                    dir.join("pki").join("root.crl").display()
                ));
            }
            if o.crl_url {
                lines.push_str(&format!(
                    "crl_urls = [\"{}\"]\ncrl_ca_bundle = \"{}\"\n",
                    jwks.url(CRL_PATH),
                    files.ca.display()
                ));
            }
            lines
        },
        tls_extra = o.tls_extra,
        anchor_jwks = jwks.url(anchor_path),
        store = o.store.clone().unwrap_or_else(|| format!(
            "backend = \"sqlite\"\npath = \"{}\"",
            dir.join("dcr.sqlite").display()
        )),
        profile_extra = o.profile_extra,
        tail = o.tail,
    )
}

pub fn base64_std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A loopback port nothing listens on, for "upstream unreachable" cases: bound without listening (a connect
/// is refused) and held while the value lives, so no server started by a test running alongside can take it
/// (a port released after reading its number was taken once and answered 404).
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    port: u16,
}

impl ClosedPort {
    pub fn port(&self) -> u16 {
        self.port
    }
}

pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let port = socket.local_addr().expect("addr").port();
    ClosedPort {
        _socket: socket,
        port,
    }
}
