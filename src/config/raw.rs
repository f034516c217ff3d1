//! The file as written: one struct per section, each key read on its own with its default beside it
//! (the same defaults the annotated proxy.toml documents). Meaning is checked later, in validate.rs.

use super::read::Table;

pub(super) struct RawConfig {
    pub server: RawServer,
    pub admin: RawAdmin,
    pub tls: RawTls,
    pub upstream: RawUpstream,
    pub jwks: RawJwks,
    pub profile: RawProfile,
    pub trust_anchors: Vec<RawAnchor>,
    pub store: RawStore,
    pub log: RawLog,
    pub management: Option<RawManagement>,
    pub forward: RawForward,
}

impl RawConfig {
    pub fn read(mut t: Table<'_, '_>) -> Self {
        let raw = RawConfig {
            server: RawServer::read(t.req_table("server")),
            admin: RawAdmin::read(t.table_or_empty("admin")),
            tls: RawTls::read(t.req_table("tls")),
            upstream: RawUpstream::read(t.req_table("upstream")),
            jwks: RawJwks::read(t.table_or_empty("jwks")),
            profile: RawProfile::read(t.req_table("profile")),
            trust_anchors: t
                .tables("trust_anchors")
                .into_iter()
                .map(RawAnchor::read)
                .collect(),
            store: RawStore::read(t.req_table("store")),
            log: RawLog::read(t.table_or_empty("log")),
            management: t.table("management").map(RawManagement::read),
            forward: RawForward::read(t.table_or_empty("forward")),
        };
        t.finish();
        raw
    }
}

pub(super) struct RawServer {
    pub listen: String,
    pub public_url: String,
    pub handshake_timeout: String,
    pub request_timeout: String,
    pub max_body_bytes: u64,
    pub drain_timeout: String,
    pub reload_interval: String,
    pub idle_timeout: String,
    pub max_connections: Option<u64>,
    pub max_connections_per_address: u64,
    pub reserved_fds: u64,
    pub max_concurrent_streams: u64,
    pub max_concurrent_registrations: u64,
    pub max_header_bytes: u64,
    pub max_header_total_bytes: u64,
    pub workers: Option<u64>,
}

impl RawServer {
    fn read(mut t: Table<'_, '_>) -> Self {
        let raw = RawServer {
            listen: t.req("listen"),
            public_url: t.req("public_url"),
            handshake_timeout: t.or("handshake_timeout", "10s"),
            request_timeout: t.or("request_timeout", "30s"),
            max_body_bytes: t.or("max_body_bytes", 64u64 * 1024),
            drain_timeout: t.or("drain_timeout", "20s"),
            reload_interval: t.or("reload_interval", "10s"),
            idle_timeout: t.or("idle_timeout", "10s"),
            max_connections: t.opt("max_connections"),
            max_connections_per_address: t.or("max_connections_per_address", 256u64),
            reserved_fds: t.or("reserved_fds", 128u64),
            max_concurrent_streams: t.or("max_concurrent_streams", 32u64),
            max_concurrent_registrations: t.or("max_concurrent_registrations", 64u64),
            max_header_bytes: t.or("max_header_bytes", 8u64 * 1024),
            max_header_total_bytes: t.or("max_header_total_bytes", 32u64 * 1024),
            workers: t.opt("workers"),
        };
        t.finish();
        raw
    }
}

pub(super) struct RawAdmin {
    pub listen: String,
    pub enabled: bool,
    pub idle_timeout: String,
    pub max_connections: u64,
}

impl RawAdmin {
    fn read(mut t: Table<'_, '_>) -> Self {
        let raw = RawAdmin {
            listen: t.or("listen", "127.0.0.1:9901"),
            enabled: t.or("enabled", true),
            idle_timeout: t.or("idle_timeout", "10s"),
            max_connections: t.or("max_connections", 32u64),
        };
        t.finish();
        raw
    }
}

pub(super) struct RawTls {
    pub cert: String,
    pub key: String,
    pub client_ca: String,
    pub client_auth: String,
    pub crl_files: Vec<String>,
    pub crl_urls: Vec<String>,
    pub crl_refresh_interval: String,
    pub crl_fetch_timeout: String,
    pub crl_max_bytes: u64,
    pub crl_ca_bundle: Option<String>,
    pub crl_max_stale: String,
    pub crl_stale_policy: String,
}

impl RawTls {
    fn read(mut t: Table<'_, '_>) -> Self {
        let raw = RawTls {
            cert: t.req("cert"),
            key: t.req("key"),
            client_ca: t.req("client_ca"),
            client_auth: t.or("client_auth", "optional"),
            crl_files: t.or("crl_files", Vec::new()),
            crl_urls: t.or("crl_urls", Vec::new()),
            crl_refresh_interval: t.or("crl_refresh_interval", "5m"),
            crl_fetch_timeout: t.or("crl_fetch_timeout", "10s"),
            crl_max_bytes: t.or("crl_max_bytes", 10u64 * 1024 * 1024),
            crl_ca_bundle: t.opt("crl_ca_bundle"),
            crl_max_stale: t.or("crl_max_stale", "1h"),
            crl_stale_policy: t.or("crl_stale_policy", "closed"),
        };
        t.finish();
        raw
    }
}

pub(super) struct RawUpstream {
    pub flavour: String,
    pub base_url: String,
    pub registration_endpoint: String,
    pub initial_access_token_env: String,
    pub connect_timeout: String,
    pub timeout: String,
    pub settle_timeout: String,
    pub ca_bundle: Option<String>,
    pub admin: Option<RawUpstreamAdmin>,
    pub iat: Option<RawUpstreamIat>,
}

impl RawUpstream {
    fn read(mut t: Table<'_, '_>) -> Self {
        let flavour: String = t.or("flavour", "rfc7591");
        // AM's administrator is a user with a password, not an OAuth client: its keys differ.
        let am = flavour == "forgerock-am";
        let raw = RawUpstream {
            flavour,
            base_url: t.req("base_url"),
            registration_endpoint: t.req("registration_endpoint"),
            // Secrets come from variables named DCR_<SECTION>_<KEY> unless a `*_env` key names another.
            initial_access_token_env: t.or(
                "initial_access_token_env",
                "DCR_UPSTREAM_INITIAL_ACCESS_TOKEN",
            ),
            connect_timeout: t.or("connect_timeout", "2s"),
            timeout: t.or("timeout", "10s"),
            settle_timeout: t.or("settle_timeout", "60s"),
            ca_bundle: t.opt("ca_bundle"),
            admin: t.table("admin").map(|a| RawUpstreamAdmin::read(a, am)),
            iat: t.table("iat").map(RawUpstreamIat::read),
        };
        t.finish();
        raw
    }
}

/// `[upstream.admin]`: an OAuth client (`token_endpoint`, `client_id`, `client_secret_env`, `scope`, Keycloak's
/// `realm`), or with `flavour = "forgerock-am"` an AM administrator (`username`, `password_env`,
/// `authenticate_endpoint`, `session_header`), held in the same fields.
pub(super) struct RawUpstreamAdmin {
    pub token_endpoint: Option<String>,
    pub client_id: String,
    pub client_secret_env: String,
    pub scope: Option<String>,
    pub realm: Option<String>,
    /// AM only; None for an OAuth client.
    pub session_header: Option<String>,
}

impl RawUpstreamAdmin {
    fn read(mut t: Table<'_, '_>, am: bool) -> Self {
        let raw = if am {
            RawUpstreamAdmin {
                token_endpoint: t.opt("authenticate_endpoint"),
                client_id: t.req("username"),
                client_secret_env: t.or("password_env", "DCR_UPSTREAM_ADMIN_PASSWORD"),
                scope: None,
                realm: None,
                session_header: Some(t.or("session_header", "iPlanetDirectoryPro")),
            }
        } else {
            RawUpstreamAdmin {
                token_endpoint: Some(t.req("token_endpoint")),
                client_id: t.req("client_id"),
                client_secret_env: t.or("client_secret_env", "DCR_UPSTREAM_ADMIN_CLIENT_SECRET"),
                scope: t.opt("scope"),
                realm: t.opt("realm"),
                session_header: None,
            }
        };
        t.finish();
        raw
    }
}

/// `[upstream.iat]`: the static client whose client_credentials tokens are the initial access tokens.
pub(super) struct RawUpstreamIat {
    /// Default (AM): the realm's `access_token` endpoint beside the registration endpoint.
    pub token_endpoint: Option<String>,
    pub client_id: String,
    pub client_secret_env: String,
    pub scope: String,
}

impl RawUpstreamIat {
    fn read(mut t: Table<'_, '_>) -> Self {
        let raw = RawUpstreamIat {
            token_endpoint: t.opt("token_endpoint"),
            client_id: t.req("client_id"),
            client_secret_env: t.or("client_secret_env", "DCR_UPSTREAM_IAT_CLIENT_SECRET"),
            scope: t.or("scope", "dynamic_client_registration"),
        };
        t.finish();
        raw
    }
}

pub(super) struct RawJwks {
    pub ca_bundle: Option<String>,
    pub connect_timeout: String,
    pub timeout: String,
    pub max_bytes: u64,
    pub ttl: String,
    pub stale_for: String,
    pub refetch_interval: String,
    pub max_urls: u64,
}

impl RawJwks {
    fn read(mut t: Table<'_, '_>) -> Self {
        let raw = RawJwks {
            ca_bundle: t.opt("ca_bundle"),
            connect_timeout: t.or("connect_timeout", "2s"),
            timeout: t.or("timeout", "5s"),
            max_bytes: t.or("max_bytes", 256u64 * 1024),
            ttl: t.or("ttl", "5m"),
            stale_for: t.or("stale_for", "1h"),
            refetch_interval: t.or("refetch_interval", "30s"),
            max_urls: t.or("max_urls", 10_000u64),
        };
        t.finish();
        raw
    }
}

/// Lists left out here take the profile's own defaults (dcr/profile.rs), so they stay `Option`.
pub(super) struct RawProfile {
    pub kind: String,
    pub audiences: Vec<String>,
    pub clock_skew: String,
    pub ssa_max_age: Option<String>,
    pub request_max_age: String,
    pub request_algorithms: Option<Vec<String>>,
    pub signing_algorithms: Option<Vec<String>>,
    pub token_endpoint_auth_methods: Option<Vec<String>>,
    pub allowed_scopes: Option<Vec<String>>,
    pub default_scopes: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub id_token_encryption_algs: Option<Vec<String>>,
    pub id_token_encryption_encs: Option<Vec<String>>,
    pub require_transport_cert_in_ssa_jwks: Option<bool>,
    pub dn_match: String,
    pub dn_match_attributes: Vec<String>,
    pub unique_software_id: Option<bool>,
    pub software_product_status_uri: Option<String>,
    /// Former names of `register_status_interval` and `register_status_max_stale`, still read.
    pub software_product_status_ttl: Option<String>,
    pub software_product_status_max_stale: Option<String>,
    pub data_recipient_status_uri: Option<String>,
    pub register_status_interval: Option<String>,
    pub register_status_max_stale: Option<String>,
    pub register_status_policy: Option<String>,
    pub register_status_timeout: Option<String>,
    pub register_status_max_bytes: Option<u64>,
    pub register_status_ca_bundle: Option<String>,
    pub register_status_allow_withdrawal: Option<bool>,
}

impl RawProfile {
    fn read(mut t: Table<'_, '_>) -> Self {
        let raw = RawProfile {
            kind: t.req("kind"),
            audiences: t.req("audiences"),
            clock_skew: t.or("clock_skew", "10s"),
            ssa_max_age: t.opt("ssa_max_age"),
            request_max_age: t.or("request_max_age", "5m"),
            request_algorithms: t.opt("request_algorithms"),
            signing_algorithms: t.opt("signing_algorithms"),
            token_endpoint_auth_methods: t.opt("token_endpoint_auth_methods"),
            allowed_scopes: t.opt("allowed_scopes"),
            default_scopes: t.opt("default_scopes"),
            response_types: t.opt("response_types"),
            id_token_encryption_algs: t.opt("id_token_encryption_algs"),
            id_token_encryption_encs: t.opt("id_token_encryption_encs"),
            require_transport_cert_in_ssa_jwks: t.opt("require_transport_cert_in_ssa_jwks"),
            dn_match: t.or("dn_match", "unordered"),
            dn_match_attributes: t.or("dn_match_attributes", Vec::new()),
            unique_software_id: t.opt("unique_software_id"),
            software_product_status_uri: t.opt("software_product_status_uri"),
            software_product_status_ttl: t.opt("software_product_status_ttl"),
            software_product_status_max_stale: t.opt("software_product_status_max_stale"),
            data_recipient_status_uri: t.opt("data_recipient_status_uri"),
            register_status_interval: t.opt("register_status_interval"),
            register_status_max_stale: t.opt("register_status_max_stale"),
            register_status_policy: t.opt("register_status_policy"),
            register_status_timeout: t.opt("register_status_timeout"),
            register_status_max_bytes: t.opt("register_status_max_bytes"),
            register_status_ca_bundle: t.opt("register_status_ca_bundle"),
            register_status_allow_withdrawal: t.opt("register_status_allow_withdrawal"),
        };
        t.finish();
        raw
    }
}

pub(super) struct RawAnchor {
    /// Where the anchor sits: `trust_anchors[<i>]`.
    pub key: String,
    pub issuer: String,
    pub jwks_uri: String,
    pub algorithms: Option<Vec<String>>,
}

impl RawAnchor {
    fn read(mut t: Table<'_, '_>) -> Self {
        let raw = RawAnchor {
            key: t.key().to_string(),
            issuer: t.req("issuer"),
            jwks_uri: t.req("jwks_uri"),
            algorithms: t.opt("algorithms"),
        };
        t.finish();
        raw
    }
}

pub(super) struct RawStore {
    pub backend: String,
    pub path: Option<String>,
    pub url: Option<String>,
    pub password_env: Option<String>,
    pub pool_size: u64,
    pub connect_timeout: String,
    pub statement_timeout: String,
    pub tls: String,
    pub ca_bundle: Option<String>,
    pub reconcile_interval: String,
    pub reconcile_after: String,
    pub replay_cache_bytes: u64,
    pub commit_delay: Option<String>,
}

impl RawStore {
    fn read(mut t: Table<'_, '_>) -> Self {
        let raw = RawStore {
            backend: t.req("backend"),
            path: t.opt("path"),
            url: t.opt("url"),
            password_env: t.opt("password_env"),
            pool_size: t.or("pool_size", 8u64),
            connect_timeout: t.or("connect_timeout", "2s"),
            statement_timeout: t.or("statement_timeout", "5s"),
            tls: t.or("tls", "disable"),
            ca_bundle: t.opt("ca_bundle"),
            reconcile_interval: t.or("reconcile_interval", "30s"),
            reconcile_after: t.or("reconcile_after", "2m"),
            replay_cache_bytes: t.or("replay_cache_bytes", 64u64 * 1024 * 1024),
            commit_delay: t.opt("commit_delay"),
        };
        t.finish();
        raw
    }
}

pub(super) struct RawLog {
    pub format: String,
    pub level: String,
}

impl RawLog {
    fn read(mut t: Table<'_, '_>) -> Self {
        let raw = RawLog {
            format: t.or("format", "json"),
            level: t.or("level", "info"),
        };
        t.finish();
        raw
    }
}

/// Keys left `Option` here are required or defaulted by the validation mode or the profile.
pub(super) struct RawManagement {
    pub token_validation: String,
    pub introspection_endpoint: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_env: String,
    pub revocation_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub required_scope: Option<String>,
    pub require_certificate_binding: Option<bool>,
    pub cache_ttl: String,
    pub connect_timeout: String,
    pub timeout: String,
}

impl RawManagement {
    fn read(mut t: Table<'_, '_>) -> Self {
        let raw = RawManagement {
            token_validation: t.or("token_validation", "introspection"),
            introspection_endpoint: t.opt("introspection_endpoint"),
            client_id: t.opt("client_id"),
            client_secret_env: t.or("client_secret_env", "DCR_MANAGEMENT_CLIENT_SECRET"),
            revocation_endpoint: t.opt("revocation_endpoint"),
            jwks_uri: t.opt("jwks_uri"),
            issuer: t.opt("issuer"),
            audience: t.opt("audience"),
            algorithms: t.opt("algorithms"),
            required_scope: t.opt("required_scope"),
            require_certificate_binding: t.opt("require_certificate_binding"),
            cache_ttl: t.or("cache_ttl", "60s"),
            connect_timeout: t.or("connect_timeout", "2s"),
            timeout: t.or("timeout", "5s"),
        };
        t.finish();
        raw
    }
}

pub(super) struct RawForward {
    pub cert_header: Option<String>,
    /// Defaults depend on `cert_header`, so they are chosen in validation.
    pub cert_header_name: Option<String>,
    pub cert_chain_header_name: Option<String>,
    pub cert_verify_header_name: Option<String>,
    pub cert_chain_max: u64,
    pub extra_deny_paths: Vec<String>,
    pub connect_timeout: String,
    pub response_timeout: String,
    pub discovery_ttl: String,
    pub mtls_endpoint_aliases: Option<toml::Table>,
    pub max_concurrent_requests: u64,
    pub max_concurrent_per_connection: u64,
    pub body_timeout: String,
}

impl RawForward {
    fn read(mut t: Table<'_, '_>) -> Self {
        let raw = RawForward {
            // Default per upstream.flavour (AM: nginx), chosen in validation.
            cert_header: t.opt("cert_header"),
            cert_header_name: t.opt("cert_header_name"),
            cert_chain_header_name: t.opt("cert_chain_header_name"),
            cert_verify_header_name: t.opt("cert_verify_header_name"),
            cert_chain_max: t.or("cert_chain_max", 1u64),
            extra_deny_paths: t.or("extra_deny_paths", Vec::new()),
            connect_timeout: t.or("connect_timeout", "2s"),
            response_timeout: t.or("response_timeout", "30s"),
            discovery_ttl: t.or("discovery_ttl", "60s"),
            mtls_endpoint_aliases: t.opt("mtls_endpoint_aliases"),
            max_concurrent_requests: t.or("max_concurrent_requests", 256u64),
            max_concurrent_per_connection: t.or("max_concurrent_per_connection", 8u64),
            body_timeout: t.or("body_timeout", "10s"),
        };
        t.finish();
        raw
    }
}
