//! What differs between UK OB DCR v3.1 and AU CDR DCR 1.13, as data plus small rule functions.

use crate::config::{ProfileConfig, ProfileKind};

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
