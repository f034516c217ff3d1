//! Fixed inputs the fuzz targets share: a loadable configuration directory, the OB and CDR profiles
//! built from it, software statements and a presented certificate. Built once per process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use dcr_proxy::config::Config;
use dcr_proxy::dcr::profile::Profile;
use dcr_proxy::dcr::ssa::Ssa;
use dcr_proxy::identity::{DistinguishedName, PeerCert};
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value, json};

pub const SOFTWARE_ID: &str = "0014H00001lFE7dQAG";
pub const ORG_ID: &str = "0015800001HQQrZAAX";
pub const REDIRECTS: &[&str] = &["https://tpp.example.com/cb", "https://tpp.example.com/cb2"];

/// The secrets the configuration names, so a fuzzed config that is otherwise valid loads.
pub fn env() -> HashMap<String, String> {
    [
        "DCR_UPSTREAM_INITIAL_ACCESS_TOKEN",
        "DCR_MANAGEMENT_CLIENT_SECRET",
        "DCR_UPSTREAM_ADMIN_CLIENT_SECRET",
        "DCR_STORE_PASSWORD",
    ]
    .into_iter()
    .map(|k| (k.to_string(), "fuzz-secret".to_string()))
    .collect()
}

/// A directory holding the files a configuration must name (the validator checks they exist).
pub fn config_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dcr-proxy-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz config dir");
        for f in ["cert.pem", "key.pem", "ca.pem"] {
            std::fs::write(dir.join(f), "x").expect("fuzz config file");
        }
        dir
    })
}

pub fn minimal_toml(kind: &str, audience: &str, issuer: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "https://localhost:8443"

[tls]
cert = "cert.pem"
key = "key.pem"
client_ca = "ca.pem"

[upstream]
base_url = "http://127.0.0.1:9"
registration_endpoint = "/reg"

[profile]
kind = "{kind}"
audiences = ["{audience}"]

[[trust_anchors]]
issuer = "{issuer}"
jwks_uri = "https://localhost:8444/directory/openbanking.jwks"

[store]
backend = "sqlite"
path = "dcr.sqlite"
"#
    )
}

fn load(toml: &str) -> Config {
    Config::from_toml_str(toml, "fuzz.toml", config_dir(), &env())
        .unwrap_or_else(|e| panic!("the fixed fuzz configuration does not load:\n{e}"))
}

pub struct Fixture {
    pub profile: Profile,
    pub ssa: Ssa,
    pub peer: PeerCert,
}

pub fn ob() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let cfg = load(&minimal_toml(
            "ob-v3.1",
            "0015800001041RHAAY",
            "OpenBanking Ltd",
        ));
        let jwks = format!("https://keystore.example.com/{ORG_ID}/{SOFTWARE_ID}.jwks");
        let claims = json!({
            "iss": "OpenBanking Ltd", "iat": 1_700_000_000, "jti": "j",
            "software_id": SOFTWARE_ID, "org_id": ORG_ID,
            "software_jwks_endpoint": jwks,
            "software_redirect_uris": REDIRECTS,
            "software_roles": ["AISP", "PISP"],
            "software_client_uri": "https://tpp.example/",
            "software_logo_uri": "https://tpp.example/logo.png",
            "software_policy_uri": "https://tpp.example/policy",
            "software_tos_uri": "https://tpp.example/tos",
        });
        Fixture {
            profile: Profile::new(cfg.profile.clone()),
            ssa: ssa(claims, "OpenBanking Ltd", &jwks, &["AISP", "PISP"]),
            peer: peer(&format!("CN={SOFTWARE_ID},OU={ORG_ID},O=OpenBanking,C=GB")),
        }
    })
}

pub fn cdr() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let cfg = load(&minimal_toml("cdr-1.13", "https://holder.example.com", "cdr-register"));
        let jwks = "https://adr.example/jwks";
        let claims = json!({
            "iss": "cdr-register", "iat": 1_700_000_000, "exp": 1_700_000_600, "jti": "j",
            "legal_entity_id": "le", "legal_entity_name": "Legal entity",
            "org_id": ORG_ID, "org_name": "Brand", "client_name": "Product",
            "client_description": "A product", "client_uri": "https://adr.example/",
            "redirect_uris": REDIRECTS, "logo_uri": "https://adr.example/logo.png",
            "tos_uri": "https://adr.example/tos", "policy_uri": "https://adr.example/policy",
            "jwks_uri": jwks, "revocation_uri": "https://adr.example/revocation",
            "recipient_base_uri": "https://adr.example", "software_id": SOFTWARE_ID,
            "software_roles": "data-recipient-software-product",
            "scope": "openid profile bank:accounts.basic:read bank:transactions:read cdr:registration",
            "sector_identifier_uri": "https://adr.example/sector",
        });
        Fixture {
            profile: Profile::new(cfg.profile.clone()),
            ssa: ssa(claims, "cdr-register", jwks, &["data-recipient-software-product"]),
            peer: peer("CN=adr-1,O=Data Recipient Pty Ltd,C=AU"),
        }
    })
}

fn ssa(claims: Value, issuer: &str, jwks: &str, roles: &[&str]) -> Ssa {
    let claims: Map<String, Value> = claims.as_object().cloned().expect("object");
    Ssa {
        raw: "eyJhbGciOiJQUzI1NiJ9.e30.c2ln".into(),
        claims,
        issuer: issuer.into(),
        software_id: SOFTWARE_ID.into(),
        org_id: Some(ORG_ID.into()),
        jwks_uri: url::Url::parse(jwks).expect("url"),
        redirect_uris: REDIRECTS.iter().map(|s| s.to_string()).collect(),
        roles: roles.iter().map(|s| s.to_string()).collect(),
    }
}

fn peer(subject: &str) -> PeerCert {
    let subject_dn = DistinguishedName::parse_rfc4514(subject).expect("fixed subject");
    PeerCert {
        der: CertificateDer::from(Vec::new()),
        chain: Vec::new(),
        subject_text: subject_dn.to_rfc4514(),
        subject: subject_dn,
        thumbprint_s256: String::new(),
        not_before: 0,
        not_after: i64::MAX,
        sans: Vec::new(),
    }
}
