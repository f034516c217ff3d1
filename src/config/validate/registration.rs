//! The sections of the registration API: `[profile]` (against its regulation's rules), `[[trust_anchors]]`
//! and `[management]`.

use std::collections::BTreeSet;

use url::Url;

use super::Validator;
use crate::bearer::{BearerConfig, BearerMode};
use crate::config::raw::{RawAnchor, RawManagement, RawProfile};
use crate::dcr::profile::{ProfileConfig, ProfileKind, TrustAnchor};
use crate::dcr::status::StatusConfig;
use crate::identity::{DnMatchRule, attribute_oid};
use crate::register_status::StalePolicy;
use crate::upstream::UpstreamConfig;

/// The longest `profile.request_max_age`, the same hour that bounds a request JWT's `exp`.
const MAX_REQUEST_AGE_SECS: u64 = crate::dcr::request::MAX_LIFETIME_SECS.unsigned_abs();

/// Management tokens longer than this are refused before any lookup.
const MAX_TOKEN_LEN: usize = 8192;

impl Validator<'_> {
    pub(super) fn profile_kind(&mut self, kind: &str) -> Option<ProfileKind> {
        let kind_of = ProfileKind::parse(kind);
        if kind_of.is_none() {
            let names: Vec<String> = ProfileKind::NAMES
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect();
            self.problem(
                "profile.kind",
                format!("`{kind}` must be one of {}", names.join(", ")),
            );
        }
        kind_of
    }

    /// `[profile]`, against the rules of its `kind` (dcr/profile.rs).
    pub(super) fn profile(&mut self, kind: ProfileKind, p: RawProfile) -> ProfileConfig {
        let rules = kind.rules();
        let software_product_status = self.register_status(kind, &p);
        if p.audiences.is_empty() {
            self.problem(
                "profile.audiences",
                "must name at least one audience (OB: the bank's id from the directory; CDR: the holder's issuer URL)",
            );
        }
        for a in &p.audiences {
            if let Err(e) = kind.check_audience(a) {
                self.problem("profile.audiences", e);
            }
        }
        let clock_skew = self.duration("profile.clock_skew", &p.clock_skew, true);
        let ssa_max_age = p
            .ssa_max_age
            .as_deref()
            .map(|s| self.duration("profile.ssa_max_age", s, true))
            .filter(|d| !d.is_zero());
        let request_max_age = self.duration("profile.request_max_age", &p.request_max_age, false);
        // FAPI 1.0 Advanced §5.2.2 caps a signed request's lifetime at 60 minutes; no client still sending a
        // registration signed longer ago than that is one a larger bound would help.
        if request_max_age.as_secs() > MAX_REQUEST_AGE_SECS {
            self.problem(
                "profile.request_max_age",
                format!("`{}` is longer than 1h", p.request_max_age),
            );
        }
        let request_algorithms = self.algorithms(
            "profile.request_algorithms",
            p.request_algorithms,
            &["PS256", "ES256"],
        );
        let signing_algorithms = self.subset(
            "profile.signing_algorithms",
            p.signing_algorithms,
            rules.signing_algs,
            rules.default_signing_algs,
        );
        let token_endpoint_auth_methods = self.subset(
            "profile.token_endpoint_auth_methods",
            p.token_endpoint_auth_methods,
            rules.auth_methods,
            rules.auth_methods,
        );
        let allowed_scopes = match p.allowed_scopes {
            Some(s) if s.is_empty() => {
                self.problem("profile.allowed_scopes", "must not be empty");
                s
            }
            Some(s) => s,
            None => rules.scopes.iter().map(|s| s.to_string()).collect(),
        };
        let default_scopes = p.default_scopes.unwrap_or_else(|| allowed_scopes.clone());
        for s in &default_scopes {
            if !allowed_scopes.contains(s) {
                self.problem(
                    "profile.default_scopes",
                    format!("`{s}` is not in profile.allowed_scopes"),
                );
            }
        }
        let response_types = self.subset(
            "profile.response_types",
            p.response_types,
            rules.response_types,
            rules.default_response_types,
        );
        let id_token_encryption_algs = self.subset(
            "profile.id_token_encryption_algs",
            p.id_token_encryption_algs,
            rules.id_token_encryption_algs,
            rules.id_token_encryption_algs,
        );
        let id_token_encryption_encs = self.subset(
            "profile.id_token_encryption_encs",
            p.id_token_encryption_encs,
            rules.id_token_encryption_encs,
            rules.id_token_encryption_encs,
        );
        let dn_match = self.dn_match(&p.dn_match, &p.dn_match_attributes);
        ProfileConfig {
            kind,
            audiences: p.audiences,
            clock_skew,
            ssa_max_age,
            request_max_age,
            request_algorithms,
            signing_algorithms,
            token_endpoint_auth_methods,
            allowed_scopes,
            default_scopes,
            response_types,
            id_token_encryption_algs,
            id_token_encryption_encs,
            require_transport_cert_in_ssa_jwks: p
                .require_transport_cert_in_ssa_jwks
                .unwrap_or(rules.require_transport_cert_in_ssa_jwks),
            dn_match,
            unique_software_id: p.unique_software_id.unwrap_or(rules.unique_software_id),
            software_product_status,
        }
    }

    /// The CDR Register status keys of `[profile]`; on when `software_product_status_uri` is set.
    fn register_status(&mut self, kind: ProfileKind, p: &RawProfile) -> Option<StatusConfig> {
        let others: [(&str, bool); 10] = [
            (
                "register_status_allow_withdrawal",
                p.register_status_allow_withdrawal.is_some(),
            ),
            (
                "data_recipient_status_uri",
                p.data_recipient_status_uri.is_some(),
            ),
            (
                "register_status_interval",
                p.register_status_interval.is_some(),
            ),
            (
                "register_status_max_stale",
                p.register_status_max_stale.is_some(),
            ),
            ("register_status_policy", p.register_status_policy.is_some()),
            (
                "register_status_timeout",
                p.register_status_timeout.is_some(),
            ),
            (
                "register_status_max_bytes",
                p.register_status_max_bytes.is_some(),
            ),
            (
                "register_status_ca_bundle",
                p.register_status_ca_bundle.is_some(),
            ),
            (
                "software_product_status_ttl",
                p.software_product_status_ttl.is_some(),
            ),
            (
                "software_product_status_max_stale",
                p.software_product_status_max_stale.is_some(),
            ),
        ];
        let Some(products) = p.software_product_status_uri.as_deref() else {
            for (key, set) in others {
                if set {
                    self.problem(
                        &format!("profile.{key}"),
                        "has no effect without profile.software_product_status_uri, which turns the CDR Register status check on",
                    );
                }
            }
            return None;
        };
        if kind != ProfileKind::Cdr113 {
            self.problem(
                "profile.software_product_status_uri",
                "the CDR Register status check applies to the cdr-1.13 profile only",
            );
            return None;
        }
        // The first names of two keys stay readable; one setting written under both names is ambiguous.
        let mut renamed = |old: &str,
                           old_v: &Option<String>,
                           new: &str,
                           new_v: &Option<String>,
                           default: &str| {
            match (old_v, new_v) {
                (Some(_), Some(_)) => {
                    self.problem(
                        &format!("profile.{old}"),
                        format!(
                            "is the former name of profile.{new}, which is set too: keep only {new}"
                        ),
                    );
                    (format!("profile.{new}"), new_v.clone().unwrap_or_default())
                }
                (Some(v), None) => (format!("profile.{old}"), v.clone()),
                (None, v) => (
                    format!("profile.{new}"),
                    v.clone().unwrap_or_else(|| default.to_string()),
                ),
            }
        };
        let (interval_key, interval) = renamed(
            "software_product_status_ttl",
            &p.software_product_status_ttl,
            "register_status_interval",
            &p.register_status_interval,
            "5m",
        );
        let (stale_key, max_stale) = renamed(
            "software_product_status_max_stale",
            &p.software_product_status_max_stale,
            "register_status_max_stale",
            &p.register_status_max_stale,
            "1h",
        );
        let software_products =
            self.url("profile.software_product_status_uri", products, &["https"]);
        let data_recipients = p
            .data_recipient_status_uri
            .as_deref()
            .map(|u| self.url("profile.data_recipient_status_uri", u, &["https"]));
        let interval = self.duration(&interval_key, &interval, false);
        let max_stale = self.duration(&stale_key, &max_stale, true);
        let timeout = self.duration(
            "profile.register_status_timeout",
            p.register_status_timeout.as_deref().unwrap_or("10s"),
            false,
        );
        let max_bytes = p.register_status_max_bytes.unwrap_or(4 * 1024 * 1024);
        if !(1024..=64 * 1024 * 1024).contains(&max_bytes) {
            self.problem(
                "profile.register_status_max_bytes",
                "must be between 1024 and 67108864 bytes",
            );
        }
        let policy = self.choice(
            "profile.register_status_policy",
            p.register_status_policy.as_deref().unwrap_or("closed"),
            &[
                ("closed", StalePolicy::Closed),
                ("open", StalePolicy::Open),
                ("open_for_passthrough", StalePolicy::OpenForPassthrough),
            ],
        );
        let ca_bundle = p
            .register_status_ca_bundle
            .as_deref()
            .map(|f| self.file("profile.register_status_ca_bundle", f));
        Some(StatusConfig {
            software_products: software_products?,
            data_recipients: data_recipients.map(|u| u.ok_or(())).transpose().ok()?,
            interval,
            max_stale,
            policy: policy?,
            timeout,
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            ca_bundle,
            allow_withdrawal: p.register_status_allow_withdrawal.unwrap_or(true),
        })
    }

    fn dn_match(&mut self, mode: &str, attributes: &[String]) -> DnMatchRule {
        if attributes.is_empty() {
            return self
                .choice(
                    "profile.dn_match",
                    mode,
                    &[
                        ("unordered", DnMatchRule::Unordered),
                        ("ordered", DnMatchRule::Ordered),
                    ],
                )
                .unwrap_or(DnMatchRule::Unordered);
        }
        let mut oids = Vec::new();
        for a in attributes {
            match attribute_oid(a) {
                Some(o) => oids.push(o),
                None => self.problem(
                    "profile.dn_match_attributes",
                    format!("`{a}` is not a known attribute type or dotted OID"),
                ),
            }
        }
        DnMatchRule::Attributes(oids)
    }

    /// `[[trust_anchors]]`.
    pub(super) fn trust_anchors(&mut self, raw: Vec<RawAnchor>) -> Vec<TrustAnchor> {
        if raw.is_empty() {
            self.problem(
                "trust_anchors",
                "at least one [[trust_anchors]] entry is needed to verify software statements",
            );
        }
        let mut anchors = Vec::new();
        let mut seen = BTreeSet::new();
        for a in raw {
            let key = a.key;
            if a.issuer.trim().is_empty() {
                self.problem(&format!("{key}.issuer"), "must not be empty");
            } else if !seen.insert(a.issuer.clone()) {
                self.problem(
                    &format!("{key}.issuer"),
                    format!("`{}` is named by two trust anchors", a.issuer),
                );
            }
            let jwks_uri = self.url(&format!("{key}.jwks_uri"), &a.jwks_uri, &["https"]);
            let algorithms =
                self.algorithms(&format!("{key}.algorithms"), a.algorithms, &["PS256"]);
            if let Some(jwks_uri) = jwks_uri {
                anchors.push(TrustAnchor {
                    issuer: a.issuer,
                    jwks_uri,
                    algorithms,
                });
            }
        }
        anchors
    }

    /// `[management]`: GET/PUT/DELETE /register/{ClientId}. Every check the token validator would make of
    /// its settings is made here, with the key to blame.
    pub(super) fn management(
        &mut self,
        m: RawManagement,
        kind: Option<ProfileKind>,
        upstream: Option<&UpstreamConfig>,
    ) -> Option<BearerConfig> {
        let base = upstream.map(|u| &u.base_url);
        let rules = kind.unwrap_or(ProfileKind::ObV31).rules();
        let revocation_endpoint = m
            .revocation_endpoint
            .as_deref()
            .and_then(|s| self.relative_url("management.revocation_endpoint", base, s));
        let mode = match m.token_validation.as_str() {
            "introspection" => self.introspection(&m, base),
            "jwt" => {
                if revocation_endpoint.is_some() {
                    self.problem(
                        "management.revocation_endpoint",
                        "needs introspection credentials; not available with jwt validation",
                    );
                }
                self.jwt_validation(&m)
            }
            other => {
                self.problem(
                    "management.token_validation",
                    format!("`{other}` must be \"introspection\" or \"jwt\""),
                );
                None
            }
        };
        let required_scope = m
            .required_scope
            .or_else(|| rules.management_scope.map(str::to_string))
            .filter(|s| !s.is_empty());
        if required_scope.as_deref().is_some_and(|s| s.contains(' ')) {
            self.problem(
                "management.required_scope",
                "must be one scope, without spaces",
            );
        }
        let cache_ttl = self.duration("management.cache_ttl", &m.cache_ttl, true);
        let connect_timeout =
            self.duration("management.connect_timeout", &m.connect_timeout, false);
        let timeout = self.duration("management.timeout", &m.timeout, false);
        Some(BearerConfig {
            mode: mode?,
            revocation_endpoint,
            required_scope,
            require_certificate_binding: m
                .require_certificate_binding
                .unwrap_or(rules.management_certificate_binding),
            cache_ttl,
            max_token_len: MAX_TOKEN_LEN,
            connect_timeout,
            timeout,
            // The token endpoints are the upstream's, so they are trusted like it.
            ca_bundle: upstream.and_then(|u| u.ca_bundle.clone()),
        })
    }

    fn introspection(&mut self, m: &RawManagement, base: Option<&Url>) -> Option<BearerMode> {
        let endpoint = match m.introspection_endpoint.as_deref() {
            Some(s) => self.relative_url("management.introspection_endpoint", base, s),
            None => {
                self.problem(
                    "management.introspection_endpoint",
                    "required for introspection",
                );
                None
            }
        };
        let client_id = m.client_id.clone().unwrap_or_default();
        if client_id.is_empty() {
            self.problem("management.client_id", "required for introspection");
        }
        let client_secret = self.secret("management.client_secret_env", &m.client_secret_env);
        Some(BearerMode::Introspection {
            endpoint: endpoint?,
            client_id,
            client_secret: client_secret?,
        })
    }

    fn jwt_validation(&mut self, m: &RawManagement) -> Option<BearerMode> {
        let jwks_uri = match m.jwks_uri.as_deref() {
            Some(s) => self.url("management.jwks_uri", s, &["https"]),
            None => {
                self.problem("management.jwks_uri", "required for jwt validation");
                None
            }
        };
        let issuer = m.issuer.clone().unwrap_or_default();
        if issuer.is_empty() {
            self.problem("management.issuer", "required for jwt validation");
        }
        let algorithms = self.algorithms(
            "management.algorithms",
            m.algorithms.clone(),
            &["PS256", "ES256", "RS256"],
        );
        Some(BearerMode::Jwt {
            jwks_uri: jwks_uri?,
            issuer,
            audience: m.audience.clone(),
            algorithms,
        })
    }
}
