//! What differs between UK OB DCR v3.1 and AU CDR DCR 1.13, as data plus small rule functions.

use std::time::Duration;

use url::Url;

use crate::dcr::status::StatusConfig;
use crate::error::ErrorCode;
use crate::identity::DnMatchRule;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    ObV31,
    Cdr113,
}

impl ProfileKind {
    pub const NAMES: &[&str] = &["ob-v3.1", "cdr-1.13"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ob-v3.1" => Some(ProfileKind::ObV31),
            "cdr-1.13" => Some(ProfileKind::Cdr113),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::ObV31 => "ob-v3.1",
            ProfileKind::Cdr113 => "cdr-1.13",
        }
    }

    pub fn rules(self) -> &'static Rules {
        match self {
            ProfileKind::ObV31 => &OB_RULES,
            ProfileKind::Cdr113 => &CDR_RULES,
        }
    }

    /// Whether `a` can be this profile's `aud` of a request JWT; the error says what it should look like.
    pub fn check_audience(self, a: &str) -> Result<(), String> {
        match self {
            ProfileKind::ObV31
                if !(1..=18).contains(&a.len())
                    || a.chars().any(|c| !c.is_ascii_alphanumeric()) =>
            {
                Err(format!(
                    "`{a}`: an OB audience is the bank's Base62 id, 1-18 letters and digits"
                ))
            }
            ProfileKind::Cdr113 if Url::parse(a).is_err() => {
                Err(format!("`{a}`: a CDR audience is the holder's issuer URL"))
            }
            _ => Ok(()),
        }
    }
}

/// `[profile]` once checked: the regulation, and what the operator narrowed within it.
#[derive(Debug, Clone)]
pub struct ProfileConfig {
    pub kind: ProfileKind,
    pub audiences: Vec<String>,
    pub clock_skew: Duration,
    pub ssa_max_age: Option<Duration>,
    /// A request JWT whose `iat` is older than this (plus clock_skew) is refused.
    pub request_max_age: Duration,
    pub request_algorithms: Vec<jsonwebtoken::Algorithm>,
    pub signing_algorithms: Vec<String>,
    pub token_endpoint_auth_methods: Vec<String>,
    pub allowed_scopes: Vec<String>,
    pub default_scopes: Vec<String>,
    pub response_types: Vec<String>,
    pub id_token_encryption_algs: Vec<String>,
    pub id_token_encryption_encs: Vec<String>,
    pub require_transport_cert_in_ssa_jwks: bool,
    pub dn_match: DnMatchRule,
    pub unique_software_id: bool,
    /// CDR: consult the Register's software product status (off when None).
    pub software_product_status: Option<StatusConfig>,
}

/// `[[trust_anchors]]`: an issuer of software statements and the keys its signatures are checked with.
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    pub issuer: String,
    pub jwks_uri: Url,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
}

/// What a regulation allows in the settings an operator may narrow, and what applies when the operator
/// says nothing.
pub struct Rules {
    /// Values the `*_alg` signing metadata may take.
    pub signing_algs: &'static [&'static str],
    pub default_signing_algs: &'static [&'static str],
    /// Allowed and default `token_endpoint_auth_methods`.
    pub auth_methods: &'static [&'static str],
    /// Allowed and default scopes.
    pub scopes: &'static [&'static str],
    pub response_types: &'static [&'static str],
    pub default_response_types: &'static [&'static str],
    /// What a request that omits `response_types` registers; None: the member is required.
    pub omitted_response_types: Option<&'static [&'static str]>,
    /// The error for a software JWKS (the TPP's keys) that cannot be fetched or read.
    pub software_jwks_unusable: ErrorCode,
    /// Allowed and default id_token encryption algorithms and encodings.
    pub id_token_encryption_algs: &'static [&'static str],
    pub id_token_encryption_encs: &'static [&'static str],
    pub require_transport_cert_in_ssa_jwks: bool,
    pub unique_software_id: bool,
    /// The scope a management token must carry unless `management.required_scope` says otherwise.
    pub management_scope: Option<&'static str>,
    /// Whether management tokens must be bound to the client certificate (RFC 8705) by default.
    pub management_certificate_binding: bool,
}

const ENC_ALGS: &[&str] = &["RSA-OAEP", "RSA-OAEP-256", "ECDH-ES"];
const ENC_ENCS: &[&str] = &["A256GCM", "A128CBC-HS256"];
/// PS256 and ES256 are what FAPI permits; RS256 stays available to an operator who opts in (OB).
const FAPI_SIGNING_ALGS: &[&str] = &["PS256", "ES256"];

const OB_RULES: Rules = Rules {
    // The algorithms the OB v3.1 data dictionary enumerates for the *_alg metadata.
    signing_algs: &["RS256", "PS256", "ES256"],
    default_signing_algs: FAPI_SIGNING_ALGS,
    auth_methods: &["private_key_jwt", "tls_client_auth"],
    scopes: &["openid", "accounts", "payments", "fundsconfirmations"],
    response_types: &["code", "code id_token"],
    default_response_types: &["code", "code id_token"],
    // v3.1's data dictionary: response_types "Defaults to code id_token if not specified".
    omitted_response_types: Some(&["code id_token"]),
    software_jwks_unusable: ErrorCode::InvalidSoftwareStatement,
    id_token_encryption_algs: ENC_ALGS,
    id_token_encryption_encs: ENC_ENCS,
    require_transport_cert_in_ssa_jwks: true,
    unique_software_id: false,
    management_scope: None,
    management_certificate_binding: false,
};

const CDR_RULES: Rules = Rules {
    // CDR 1.13 allows only these for every signing alg metadata field.
    signing_algs: FAPI_SIGNING_ALGS,
    default_signing_algs: FAPI_SIGNING_ALGS,
    auth_methods: &["private_key_jwt"],
    scopes: &[
        "openid",
        "profile",
        "cdr:registration",
        "bank:accounts.basic:read",
        "bank:accounts.detail:read",
        "bank:transactions:read",
        "bank:payees:read",
        "bank:regular_payments:read",
        "common:customer.basic:read",
        "common:customer.detail:read",
    ],
    response_types: &["code id_token", "code"],
    // 1.13 data holders must support the hybrid flow; `code` (with JARM) is an operator opt-in.
    default_response_types: &["code id_token"],
    // 1.13's RegistrationProperties lists response_types as required, and the CDR reference server
    // (CdrAuthServer ClientRegistrationValidator: "Response types is mandatory") refuses a request without it.
    omitted_response_types: None,
    // The CDR reference server answers ERR-GEN-021 "Could not load JWKS from Data Recipient endpoint" with
    // invalid_client_metadata (CdrAuthServer ErrorCatalogue, UNABLE_TO_LOAD_JWKS_DATA_RECIPIENT).
    software_jwks_unusable: ErrorCode::InvalidClientMetadata,
    id_token_encryption_algs: ENC_ALGS,
    id_token_encryption_encs: ENC_ENCS,
    require_transport_cert_in_ssa_jwks: false,
    unique_software_id: true,
    management_scope: Some("cdr:registration"),
    management_certificate_binding: true,
};

/// Claim names and requirements of a profile's software statement.
pub struct SsaShape {
    /// The claim holding the TPP's signing JWKS URL.
    pub jwks_uri: &'static str,
    /// The claim holding the master list of redirect URIs.
    pub redirect_uris: &'static str,
    pub roles: &'static str,
    /// Claims that must be present (besides `iss`, checked first); wrong or missing → invalid_software_statement.
    pub required: &'static [&'static str],
    pub requires_exp: bool,
    /// Claims that, when present, must be absolute https URLs.
    pub https_claims: &'static [&'static str],
}

const OB_SSA: SsaShape = SsaShape {
    jwks_uri: "software_jwks_endpoint",
    redirect_uris: "software_redirect_uris",
    roles: "software_roles",
    required: &[
        "software_id",
        "org_id",
        "software_jwks_endpoint",
        "software_redirect_uris",
        "software_roles",
    ],
    requires_exp: false,
    https_claims: &[
        "software_jwks_endpoint",
        "software_client_uri",
        "software_logo_uri",
        "software_policy_uri",
        "software_tos_uri",
    ],
};

const CDR_SSA: SsaShape = SsaShape {
    jwks_uri: "jwks_uri",
    redirect_uris: "redirect_uris",
    roles: "software_roles",
    required: &[
        "jti",
        "legal_entity_id",
        "legal_entity_name",
        "org_id",
        "org_name",
        "client_name",
        "client_description",
        "client_uri",
        "redirect_uris",
        "logo_uri",
        "jwks_uri",
        "revocation_uri",
        "recipient_base_uri",
        "software_id",
        "software_roles",
        "scope",
    ],
    requires_exp: true,
    https_claims: &[
        "jwks_uri",
        "client_uri",
        "logo_uri",
        "tos_uri",
        "policy_uri",
        "revocation_uri",
        "recipient_base_uri",
        "sector_identifier_uri",
    ],
};

pub struct Profile {
    pub cfg: ProfileConfig,
    pub ssa: &'static SsaShape,
}

impl Profile {
    pub fn new(cfg: ProfileConfig) -> Self {
        let ssa = match cfg.kind {
            ProfileKind::ObV31 => &OB_SSA,
            ProfileKind::Cdr113 => &CDR_SSA,
        };
        Profile { cfg, ssa }
    }

    pub fn kind(&self) -> ProfileKind {
        self.cfg.kind
    }

    pub fn name(&self) -> &'static str {
        self.cfg.kind.as_str()
    }

    /// OB: the SSA's roles decide which scopes a TPP may ask for (DCR-RULES: AISP → accounts,
    /// PISP → payments, CBPII → fundsconfirmations, openid always).
    pub fn scope_allowed_by_roles(&self, scope: &str, roles: &[String]) -> bool {
        match self.cfg.kind {
            ProfileKind::ObV31 => {
                let role = match scope {
                    "openid" => return true,
                    "accounts" => "AISP",
                    "payments" => "PISP",
                    "fundsconfirmations" => "CBPII",
                    // Scopes outside the regulated set are the operator's business (allowed_scopes).
                    _ => return true,
                };
                roles.iter().any(|r| r == role)
            }
            ProfileKind::Cdr113 => true,
        }
    }
}
