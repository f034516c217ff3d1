//! The sections of what the proxy talks to: `[upstream]` (with `[upstream.admin]`), `[forward]` and `[store]`.

use std::time::Duration;

use url::Url;

use super::Validator;
use crate::bearer::BearerConfig;
use crate::config::raw::{RawForward, RawStore, RawUpstream, RawUpstreamAdmin, RawUpstreamIat};
use crate::dcr::reconcile::ReconcileConfig;
use crate::forward::{CertHeaderConfig, CertHeaderFormat, ForwardConfig, ForwardLimits};
use crate::secret::Secret;
use crate::store::StoreConfig;
use crate::store::postgres::{PgTls, PostgresConfig};
use crate::store::sqlite::{DEFAULT_COMMIT_DELAY, MAX_COMMIT_DELAY};
use crate::upstream::flavour::CreateCredential;
use crate::upstream::{
    ClientCredentialsConfig, Flavour, UpstreamAdminConfig, UpstreamConfig, forgerock_am, keycloak,
};

impl Validator<'_> {
    /// `[upstream]` and `[upstream.admin]`. None when the base URL or registration endpoint is unusable;
    /// a missing secret is a problem but leaves a stand-in, so the sections built on the base are checked.
    pub(super) fn upstream(&mut self, u: &RawUpstream) -> Option<UpstreamConfig> {
        let flavour = self
            .choice("upstream.flavour", &u.flavour, Flavour::NAMES)
            .unwrap_or_default();
        let base_url = self.url("upstream.base_url", &u.base_url, &["http", "https"]);
        if let Some(b) = &base_url
            && (b.query().is_some() || b.fragment().is_some())
        {
            self.problem("upstream.base_url", "must not have a query or fragment");
        }
        let registration_endpoint =
            base_url
                .as_ref()
                .and_then(|b| match b.join(&u.registration_endpoint) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        self.problem(
                            "upstream.registration_endpoint",
                            format!("`{}` is not a path or URL: {e}", u.registration_endpoint),
                        );
                        None
                    }
                });
        // Keycloak with a manage-clients service account creates with that account's token; the initial
        // access token is then neither needed nor read.
        let initial_access_token = match flavour.create_credential(u.admin.is_some()) {
            CreateCredential::InitialAccessToken => self.secret(
                "upstream.initial_access_token_env",
                &u.initial_access_token_env,
            ),
            CreateCredential::AdminBearer | CreateCredential::MintedToken => None,
        }
        .unwrap_or_else(|| Secret::new(String::new()));
        let connect_timeout = self.duration("upstream.connect_timeout", &u.connect_timeout, false);
        let timeout = self.duration("upstream.timeout", &u.timeout, false);
        let settle_timeout = self.duration("upstream.settle_timeout", &u.settle_timeout, false);
        let ca_bundle = u
            .ca_bundle
            .as_deref()
            .map(|p| self.file("upstream.ca_bundle", p));
        // AM: every other URL follows from the registration endpoint, so its shape is checked once, here.
        let am_urls = match (flavour, registration_endpoint.as_ref()) {
            (Flavour::ForgeRockAm, Some(r)) => forgerock_am::am_urls(r)
                .map_err(|e| self.problem("upstream.registration_endpoint", e))
                .ok(),
            _ => None,
        };
        let admin = u.admin.as_ref().and_then(|a| {
            self.upstream_admin(
                a,
                flavour,
                base_url.as_ref(),
                registration_endpoint.as_ref(),
                am_urls.as_ref(),
            )
        });
        // AM's registration access tokens may die with the initial access token (OpenAM does so; assumed for AM),
        // so a 401 there proves nothing: only the admin API tells a stale token from a deleted client.
        if flavour == Flavour::ForgeRockAm && u.admin.is_none() {
            self.problem(
                "upstream.admin",
                "upstream.flavour = \"forgerock-am\" needs [upstream.admin] (an AM administrator: username, password_env): a 401 from AM does not say whether the client is gone, and only AM's admin API can tell",
            );
        }
        let iat = self.upstream_iat(u.iat.as_ref(), flavour, base_url.as_ref(), am_urls.as_ref());
        Some(UpstreamConfig {
            iat,
            flavour,
            base_url: base_url?,
            registration_endpoint: registration_endpoint?,
            initial_access_token_env: u.initial_access_token_env.clone(),
            initial_access_token,
            connect_timeout,
            timeout,
            settle_timeout,
            ca_bundle,
            admin,
        })
    }

    fn upstream_admin(
        &mut self,
        a: &RawUpstreamAdmin,
        flavour: Flavour,
        base: Option<&Url>,
        registration_endpoint: Option<&Url>,
        am_urls: Option<&forgerock_am::AmUrls>,
    ) -> Option<UpstreamAdminConfig> {
        if flavour == Flavour::ForgeRockAm {
            return self.upstream_am_admin(a, base, am_urls);
        }
        let token_endpoint = self.relative_url(
            "upstream.admin.token_endpoint",
            base,
            a.token_endpoint.as_deref().unwrap_or_default(),
        );
        if a.client_id.trim().is_empty() {
            self.problem("upstream.admin.client_id", "must not be empty");
        }
        let client_secret = self.secret("upstream.admin.client_secret_env", &a.client_secret_env);
        let realm = a.realm.as_deref().map(str::trim);
        let api_base = match (flavour, registration_endpoint) {
            (Flavour::Keycloak, Some(endpoint)) => match keycloak::admin_base(endpoint, realm) {
                Ok(b) => Some(b),
                Err(e) => {
                    let key = if realm.is_some() {
                        "upstream.admin.realm"
                    } else {
                        "upstream.registration_endpoint"
                    };
                    self.problem(key, e);
                    return None;
                }
            },
            (Flavour::Keycloak, None) => return None,
            (Flavour::Rfc7591 | Flavour::ForgeRockAm, _) => {
                if realm.is_some() {
                    self.problem(
                        "upstream.admin.realm",
                        "names a Keycloak realm; it needs upstream.flavour = \"keycloak\"",
                    );
                }
                None
            }
        };
        Some(UpstreamAdminConfig {
            token_endpoint: token_endpoint?,
            client_id: a.client_id.trim().to_string(),
            client_secret: client_secret?,
            scope: a.scope.clone().filter(|s| !s.trim().is_empty()),
            api_base,
            session_header: None,
        })
    }

    /// `[upstream.admin]` for AM: an administrator user whose SSO token reaches the realm's OAuth2Client agents.
    /// The realm is the registration endpoint's: one setting for all of AM's URLs.
    fn upstream_am_admin(
        &mut self,
        a: &RawUpstreamAdmin,
        base: Option<&Url>,
        am_urls: Option<&forgerock_am::AmUrls>,
    ) -> Option<UpstreamAdminConfig> {
        if a.client_id.trim().is_empty() {
            self.problem("upstream.admin.username", "must not be empty");
        }
        let password = self.secret("upstream.admin.password_env", &a.client_secret_env);
        let header = a.session_header.as_deref().unwrap_or_default().trim();
        if !header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            || header.is_empty()
        {
            self.problem(
                "upstream.admin.session_header",
                format!("`{header}` is not a header name (AM's cookie name, default iPlanetDirectoryPro)"),
            );
        }
        let urls = am_urls?;
        let authenticate = match &a.token_endpoint {
            Some(p) => self.relative_url("upstream.admin.authenticate_endpoint", base, p)?,
            None => urls.authenticate.clone(),
        };
        Some(UpstreamAdminConfig {
            token_endpoint: authenticate,
            client_id: a.client_id.trim().to_string(),
            client_secret: password?,
            scope: None,
            api_base: Some(urls.agents.clone()),
            session_header: Some(header.to_string()),
        })
    }

    /// `[upstream.iat]`: required with AM, whose initial access tokens expire; meaningless elsewhere.
    fn upstream_iat(
        &mut self,
        i: Option<&RawUpstreamIat>,
        flavour: Flavour,
        base: Option<&Url>,
        am_urls: Option<&forgerock_am::AmUrls>,
    ) -> Option<ClientCredentialsConfig> {
        let Some(i) = i else {
            if flavour == Flavour::ForgeRockAm {
                self.problem(
                    "upstream.iat",
                    "upstream.flavour = \"forgerock-am\" mints its initial access tokens (AM's expire): add [upstream.iat] with the client_id of a static client allowed scope dynamic_client_registration",
                );
            }
            return None;
        };
        if flavour != Flavour::ForgeRockAm {
            self.problem(
                "upstream.iat",
                format!(
                    "minted initial access tokens are for upstream.flavour = \"forgerock-am\"; \"{}\" takes upstream.initial_access_token_env",
                    flavour.name()
                ),
            );
            return None;
        }
        if i.client_id.trim().is_empty() {
            self.problem("upstream.iat.client_id", "must not be empty");
        }
        let secret = self.secret("upstream.iat.client_secret_env", &i.client_secret_env);
        let token_endpoint = match &i.token_endpoint {
            Some(p) => self.relative_url("upstream.iat.token_endpoint", base, p),
            None => am_urls.map(|u| u.token.clone()),
        };
        let scope = i.scope.trim();
        Some(ClientCredentialsConfig {
            token_endpoint: token_endpoint?,
            client_id: i.client_id.trim().to_string(),
            client_secret: secret?,
            scope: (!scope.is_empty()).then(|| scope.to_string()),
        })
    }

    /// Combinations the upstream's flavour cannot serve, refused at start-up rather than met at the first
    /// request that needs them.
    pub(super) fn upstream_coherence(
        &mut self,
        upstream: &UpstreamConfig,
        forward: Option<&ForwardConfig>,
        management: Option<&BearerConfig>,
    ) {
        let flavour = upstream.flavour;
        if let Some(f) = forward
            && !flavour.reads_cert_header(f.cert_header.format)
        {
            self.problem(
                "forward.cert_header",
                format!(
                    "upstream.flavour = \"{}\" cannot read this certificate header ({})",
                    flavour.name(),
                    match flavour {
                        Flavour::ForgeRockAm =>
                            "AM reads a URL-encoded PEM from its trusted header: use \"nginx\"",
                        _ => "Keycloak has no Envoy lookup provider: use \"rfc9440\" or \"nginx\"",
                    }
                ),
            );
        }
        if let Some(m) = management
            && m.revocation_endpoint.is_some()
            && !flavour.revokes_other_clients_tokens()
        {
            self.problem(
                "management.revocation_endpoint",
                format!(
                    "upstream.flavour = \"{}\" lets a client revoke only its own tokens (Keycloak answers \"Unmatching clients\"), so the proxy cannot revoke a token presented for the wrong client: remove the key",
                    flavour.name()
                ),
            );
        }
    }

    /// `[store]`, with the reconciler's timing (which must let late upstream answers settle first).
    pub(super) fn store(
        &mut self,
        s: RawStore,
        settle: Duration,
    ) -> (Option<StoreConfig>, ReconcileConfig) {
        let reconcile = ReconcileConfig {
            interval: self.duration("store.reconcile_interval", &s.reconcile_interval, false),
            after: self.duration("store.reconcile_after", &s.reconcile_after, true),
        };
        if reconcile.after < settle {
            self.problem(
                "store.reconcile_after",
                "must be at least upstream.settle_timeout, so late upstream answers settle first",
            );
        }
        if !(64 * 1024..=1u64 << 34).contains(&s.replay_cache_bytes) {
            self.problem(
                "store.replay_cache_bytes",
                "must be between 65536 and 17179869184 bytes",
            );
        }
        let commit_delay = self.commit_delay(&s);
        let store = match s.backend.as_str() {
            "sqlite" => match &s.path {
                Some(p) => Some(StoreConfig::Sqlite {
                    path: self.base.join(p),
                    replay_cache_bytes: s.replay_cache_bytes,
                    commit_delay,
                }),
                None => {
                    self.problem("store.path", "required for the sqlite backend");
                    None
                }
            },
            "postgres" => self.postgres(s).map(StoreConfig::Postgres),
            other => {
                self.problem(
                    "store.backend",
                    format!("`{other}` must be \"sqlite\" or \"postgres\""),
                );
                None
            }
        };
        (store, reconcile)
    }

    /// `store.commit_delay`: the SQLite store's wait for more writes to share a COMMIT.
    fn commit_delay(&mut self, s: &RawStore) -> Duration {
        let Some(text) = &s.commit_delay else {
            return DEFAULT_COMMIT_DELAY;
        };
        if s.backend != "sqlite" {
            self.problem(
                "store.commit_delay",
                "applies to the sqlite backend only; PostgreSQL groups commits itself (its own commit_delay setting): remove the key",
            );
        }
        let d = self.duration("store.commit_delay", text, true);
        if d > MAX_COMMIT_DELAY {
            self.problem(
                "store.commit_delay",
                format!(
                    "must be at most {}ms: under load every registration waits up to this long twice",
                    MAX_COMMIT_DELAY.as_millis()
                ),
            );
        }
        d
    }

    fn postgres(&mut self, s: RawStore) -> Option<PostgresConfig> {
        let url = match s.url {
            None => {
                self.problem("store.url", "required for the postgres backend");
                None
            }
            Some(u) => self.postgres_url(u),
        };
        let password = match s.password_env.as_deref() {
            // Optional (trust or certificate auth needs none); the default name is used when set.
            None => self
                .env
                .var("DCR_STORE_PASSWORD")
                .filter(|v| !v.is_empty())
                .map(Secret::new),
            Some(var) => self.secret("store.password_env", var),
        };
        if !(1..=256).contains(&s.pool_size) {
            self.problem("store.pool_size", "must be between 1 and 256");
        }
        // Zero means "no limit" to PostgreSQL and "fail at once" to the pool; neither is what anyone
        // configuring a timeout wants.
        let connect_timeout = self.duration("store.connect_timeout", &s.connect_timeout, false);
        let statement_timeout =
            self.duration("store.statement_timeout", &s.statement_timeout, false);
        let tls = self.choice(
            "store.tls",
            &s.tls,
            &[("disable", false), ("require", true)],
        );
        let tls = match tls {
            Some(true) => PgTls::Require {
                ca_bundle: s
                    .ca_bundle
                    .as_deref()
                    .map(|p| self.file("store.ca_bundle", p)),
            },
            _ => PgTls::Disable,
        };
        Some(PostgresConfig {
            url: url?,
            password,
            pool_size: usize::try_from(s.pool_size).unwrap_or(usize::MAX),
            connect_timeout,
            statement_timeout,
            tls,
        })
    }

    /// Read the way the driver reads it, so whatever passes here also connects, and a password is found
    /// wherever it is written (user info or `?password=`): URLs end up in logs and process listings.
    fn postgres_url(&mut self, u: String) -> Option<String> {
        let is_url = Url::parse(&u).is_ok_and(|p| matches!(p.scheme(), "postgres" | "postgresql"));
        match u.parse::<tokio_postgres::Config>() {
            Ok(pg) if is_url => {
                if pg.get_password().is_some() {
                    self.problem(
                        "store.url",
                        "must not carry a password; name its variable in store.password_env",
                    );
                    return None;
                }
                Some(u)
            }
            _ => {
                self.problem(
                    "store.url",
                    "must be a postgres://user@host:port/database URL",
                );
                None
            }
        }
    }

    /// `[forward]`: everything that is not a registration route goes to the IdP.
    pub(super) fn forward(
        &mut self,
        f: RawForward,
        upstream: Option<&UpstreamConfig>,
        public_url: Option<&Url>,
    ) -> Option<ForwardConfig> {
        let default_format = upstream.map_or(CertHeaderFormat::Rfc9440, |u| {
            u.flavour.default_cert_header()
        });
        let format_name = f.cert_header.clone().unwrap_or_else(|| {
            match default_format {
                CertHeaderFormat::Rfc9440 => "rfc9440",
                CertHeaderFormat::Nginx => "nginx",
                CertHeaderFormat::Envoy => "envoy",
            }
            .to_string()
        });
        let cert_header = self.choice(
            "forward.cert_header",
            &format_name,
            &[
                ("rfc9440", CertHeaderFormat::Rfc9440),
                ("nginx", CertHeaderFormat::Nginx),
                ("envoy", CertHeaderFormat::Envoy),
            ],
        );
        let cert_header = cert_header.map(|format| self.cert_header(format, &format_name, &f));
        let connect_timeout = self.duration("forward.connect_timeout", &f.connect_timeout, false);
        let response_timeout =
            self.duration("forward.response_timeout", &f.response_timeout, false);
        let discovery_ttl = self.duration("forward.discovery_ttl", &f.discovery_ttl, true);
        let limits = ForwardLimits {
            max_concurrent_requests: self.count(
                "forward.max_concurrent_requests",
                f.max_concurrent_requests,
                1,
                100_000,
            ),
            max_concurrent_per_connection: self.count(
                "forward.max_concurrent_per_connection",
                f.max_concurrent_per_connection,
                1,
                1000,
            ),
            body_timeout: self.duration("forward.body_timeout", &f.body_timeout, false),
        };
        let mtls_endpoint_aliases = match f.mtls_endpoint_aliases {
            None => None,
            Some(t) => match serde_json::to_value(t) {
                Ok(serde_json::Value::Object(m)) => Some(m),
                _ => {
                    self.problem(
                        "forward.mtls_endpoint_aliases",
                        "must be a table of endpoint URLs",
                    );
                    None
                }
            },
        };
        let upstream = upstream?;
        let mut deny_paths = ForwardConfig::default_deny_paths();
        // The upstream's own registration endpoint is never reachable around our checks, whatever it is called.
        let (base, reg) = (&upstream.base_url, &upstream.registration_endpoint);
        if reg.origin() == base.origin()
            && let Some(rest) = reg.path().strip_prefix(base.path().trim_end_matches('/'))
            && rest.len() > 1
        {
            deny_paths.push(format!("{}/**", rest.trim_end_matches('/')));
        }
        for p in &f.extra_deny_paths {
            if let Err(e) = crate::forward::check_deny_path(p) {
                self.problem("forward.extra_deny_paths", e);
            }
        }
        deny_paths.extend(f.extra_deny_paths);
        Some(ForwardConfig {
            upstream_base: base.clone(),
            public_url: public_url?.clone(),
            cert_header: cert_header?,
            deny_paths,
            connect_timeout,
            response_timeout,
            discovery_ttl,
            mtls_endpoint_aliases,
            ca_bundle: upstream.ca_bundle.clone(),
            limits,
        })
    }

    /// The certificate header names and chain length of `[forward]`; a name key that the chosen format
    /// does not send is a problem, since the operator evidently expects a header that will not come.
    fn cert_header(
        &mut self,
        format: CertHeaderFormat,
        format_name: &str,
        f: &RawForward,
    ) -> CertHeaderConfig {
        let mut cfg = CertHeaderConfig::new(format);
        let applies = [
            (
                "cert_chain_header_name",
                format == CertHeaderFormat::Rfc9440,
            ),
            ("cert_verify_header_name", format == CertHeaderFormat::Nginx),
        ];
        for (key, value, slot) in [
            ("cert_header_name", &f.cert_header_name, &mut cfg.name),
            (
                "cert_chain_header_name",
                &f.cert_chain_header_name,
                &mut cfg.chain_name,
            ),
            (
                "cert_verify_header_name",
                &f.cert_verify_header_name,
                &mut cfg.verify_name,
            ),
        ] {
            let Some(value) = value else {
                continue;
            };
            let dotted = format!("forward.{key}");
            if applies.iter().any(|(k, ok)| *k == key && !ok) {
                self.problem(
                    &dotted,
                    format!("the `{format_name}` format does not send this header"),
                );
                continue;
            }
            match CertHeaderConfig::header_name(value) {
                Ok(name) => *slot = name,
                Err(e) => self.problem(&dotted, e),
            }
        }
        let sent = match format {
            CertHeaderFormat::Rfc9440 => vec![&cfg.name, &cfg.chain_name],
            CertHeaderFormat::Nginx => vec![&cfg.name, &cfg.verify_name],
            CertHeaderFormat::Envoy => vec![&cfg.name],
        };
        if sent.len() == 2 && sent[0] == sent[1] {
            self.problem(
                "forward.cert_header_name",
                format!(
                    "`{}` would carry two values; name the headers apart",
                    sent[0]
                ),
            );
        }
        // Keycloak refuses a longer chain than its `certificate-chain-length`; beyond 10 nothing
        // real is that deep, and a typo should not make every request carry kilobytes.
        if f.cert_chain_max > 10 {
            self.problem("forward.cert_chain_max", "must be between 0 and 10");
        }
        cfg.chain_max = usize::try_from(f.cert_chain_max.min(10)).unwrap_or(10);
        cfg
    }
}
