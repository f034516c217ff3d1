//! Which RFC 7591/7592 dialect the IdP speaks (`upstream.flavour`), as data plus small functions: how a
//! client's URI is formed, who names the client_id, what a refused registration token means, which credential
//! creates, how the subject DN and the certificate are handed over, and what the IdP does with scopes.
//!
//! Keycloak behaviour below was read in keycloak/keycloak, paths under
//! `services/src/main/java/org/keycloak/` unless given whole. ForgeRock / Ping AM is closed source: each AM line
//! says where it was seen (Ping/ForgeRock docs, ForgeRock's Secure API Gateway `SecureApiGateway/*`, the open fork
//! `OpenIdentityPlatform/OpenAM`) and whether it is verified or assumed; /work/shared/idp/forgerock-am.md lists them.

use serde_json::Value;

use crate::forward::CertHeaderFormat;
use crate::identity::DnRendering;

/// `upstream.flavour`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavour {
    /// A plain RFC 7591/7592 server (oidc-provider and the like): the default.
    #[default]
    Rfc7591,
    /// Keycloak's OIDC client registration provider
    /// (`/realms/{realm}/clients-registrations/openid-connect`), with Admin REST for recovery.
    Keycloak,
    /// ForgeRock / Ping AM (`{am}/oauth2/realms/root/realms/{realm}/register`), with minted initial access
    /// tokens and the `/json` realm-config API for recovery.
    ForgeRockAm,
}

/// What a 401 from the RFC 7592 endpoint, given our registration access token, tells us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused401 {
    /// The client is gone (plain RFC 7592 servers answer 401 for a token of a deleted client).
    Gone,
    /// The token is stale, or the client is gone: only an administrator can tell which.
    StaleOrGone,
}

/// How the RFC 7592 URI of a client is formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientUri {
    /// The `registration_client_uri` the upstream answers, if it is on the registration endpoint's origin.
    FromAnswer,
    /// `{registration endpoint}/{client_id}`, built from our configuration whatever the answer says.
    Built,
    /// `{registration endpoint}?client_id={client_id}`, built from our configuration whatever the answer says.
    BuiltQuery,
}

/// Which credential a create is sent with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateCredential {
    InitialAccessToken,
    /// The `[upstream.admin]` client's access token.
    AdminBearer,
    /// An access token minted with client_credentials on the `[upstream.iat]` client, cached and refreshed.
    MintedToken,
}

/// Where the administrator's API is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminApi {
    /// The RFC 7592 endpoint itself, with the administrator's token instead of the client's.
    Rfc7592,
    /// Keycloak's Admin REST API under `/admin/realms/{realm}/`.
    KeycloakAdminRest,
    /// AM's `/json/realms/root/realms/{realm}/realm-config/agents/OAuth2Client/{id}`, with an SSO token.
    AmRealmConfig,
}

impl Flavour {
    pub const NAMES: &'static [(&'static str, Flavour)] = &[
        ("rfc7591", Flavour::Rfc7591),
        ("keycloak", Flavour::Keycloak),
        ("forgerock-am", Flavour::ForgeRockAm),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Flavour::Rfc7591 => "rfc7591",
            Flavour::Keycloak => "keycloak",
            Flavour::ForgeRockAm => "forgerock-am",
        }
    }

    /// Whether the proxy names the client_id in a create (only possible with `[upstream.admin]`, which is what
    /// the name is for). Keycloak refuses any named client_id: `OIDCClientRegistrationProvider.createOIDC`
    /// answers 400 "Client Identifier included". AM honours a caller-provided client_id when registering with
    /// an access token: verified in the AM 7.0 docs "oauth2-dynamic-client-registration" only (later pages say
    /// just that open registration ignores it), so the echo is checked on every create (`dcr::create`).
    pub fn names_client_ids(self, has_admin: bool) -> bool {
        match self {
            Flavour::Rfc7591 | Flavour::ForgeRockAm => has_admin,
            Flavour::Keycloak => false,
        }
    }

    /// Keycloak builds `registration_client_uri` on its frontend hostname (`getRegistrationClientUri`,
    /// `UrlType.BACKEND`, which is the frontend unless `hostname-backchannel-dynamic`), never the address the
    /// proxy calls; its RFC 7592 routes are `{registration endpoint}/{clientId}`.
    ///
    /// AM addresses an existing client by query, `…/register?client_id=<id>`; `/register/<id>` is not routed
    /// (verified: SecureApiGateway/secure-api-gateway-fapi-pep-as `ProcessRegistrationFilter` rewrites to that
    /// form, wso2-extensions/apim-km-forgerock `ForgerockDCRClient` reads `GET ?client_id=`). The URI AM answers
    /// is built on its own public base URL (assumed from OpenAM, which builds it from the request's host), so
    /// ours is built from the configured endpoint.
    pub fn client_uri(self) -> ClientUri {
        match self {
            Flavour::Rfc7591 => ClientUri::FromAnswer,
            Flavour::Keycloak => ClientUri::Built,
            Flavour::ForgeRockAm => ClientUri::BuiltQuery,
        }
    }

    /// Keycloak answers 401 alike for a stale token and for an unknown client
    /// (`ClientRegistrationAuth.requireView`/`requireUpdateAuth`); 404 only to an administrator's Bearer.
    ///
    /// AM: the registration access token may be the initial access token's string and die with it (OpenAM
    /// `OpenIdConnectClientRegistrationService.createRegistration` keeps the request's Bearer as the client's
    /// token; AM unverified), and an unknown client is a 400 `invalid_client_metadata`, a wrong token a 401
    /// `invalid_token` (OpenAM `getRegistration`; assumed for AM): a 401 is confirmed through the admin API.
    pub fn refused_401(self) -> Refused401 {
        match self {
            Flavour::Rfc7591 => Refused401::Gone,
            Flavour::Keycloak | Flavour::ForgeRockAm => Refused401::StaleOrGone,
        }
    }

    /// With a Keycloak service account holding manage-clients the create needs no initial access token
    /// (`ClientRegistrationAuth.requireCreate` accepts a Bearer with create-client or manage-clients, as
    /// "authenticated", the same policies as an IAT), and IATs carry a count and an expiry to run out of.
    ///
    /// AM's initial access token is an ordinary access token from client_credentials on a static client, with
    /// scope `dynamic_client_registration` for `logo_uri`/`client_uri`/`policy_uri`, and it expires (verified:
    /// AM 7.3 docs "oauth2-dynamic-client-registration"; secure-api-gateway-ob-uk route
    /// `03-ob-dcr-register-tpp.json` mints it with `ClientCredentialsOAuth2ClientFilter`): it is minted.
    pub fn create_credential(self, has_admin: bool) -> CreateCredential {
        match (self, has_admin) {
            (Flavour::Keycloak, true) => CreateCredential::AdminBearer,
            (Flavour::ForgeRockAm, _) => CreateCredential::MintedToken,
            _ => CreateCredential::InitialAccessToken,
        }
    }

    pub fn admin_api(self) -> AdminApi {
        match self {
            Flavour::Rfc7591 => AdminApi::Rfc7592,
            Flavour::Keycloak => AdminApi::KeycloakAdminRest,
            Flavour::ForgeRockAm => AdminApi::AmRealmConfig,
        }
    }

    /// AM answers a refused initial access token on create with 400 `access_denied` "Access Token not valid"
    /// (verified: AM's error log quoted in wso2/api-manager#1398; OpenAM `AccessDeniedException`), or 401
    /// `invalid_token` (assumed): our credential's fault, never the TPP's, and nothing was created (OpenAM checks
    /// the token before reading the body; assumed for AM).
    pub fn credential_refused(self, status: u16, error: &str) -> bool {
        match self {
            Flavour::ForgeRockAm => {
                matches!(status, 400 | 401 | 403)
                    && matches!(error, "access_denied" | "invalid_token")
            }
            _ => false,
        }
    }

    /// Keycloak compares `x509.subjectdn` with `new X500Principal(dn).getName(RFC2253)` of the leaf's subject
    /// (`X509ClientAuthenticator`), and `X500Principal(String)` does not parse `organizationIdentifier`.
    pub fn dn_rendering(self) -> DnRendering {
        match self {
            Flavour::Rfc7591 => DnRendering::Rfc4514,
            // AM stores `tls_client_auth_subject_dn` as `mTLSSubjectDN` and needs an exact match (verified: AM 8
            // docs "client-auth-mtls"); that it renders the certificate's DN like Java's X500Principal is assumed
            // (AM runs on the JVM like Keycloak; ForgeRock's functional tests `DynamicRegistration.kt` register
            // Java-rendered DNs).
            Flavour::Keycloak | Flavour::ForgeRockAm => DnRendering::Java,
        }
    }

    /// What the proxy sends when `forward.cert_header` is not set. Keycloak releases ship an `rfc9440` lookup
    /// (`Rfc9440ClientCertificateLookupFactory`, 26.5+). AM's provider reads a trusted header as URL-encoded PEM
    /// (verified: SecureApiGateway/securebanking-openbanking-uk-fidc-initializer `oauth2provider-update.json`,
    /// `tlsClientCertificateHeaderFormat` = `URLENCODED_PEM`; PingGateway FAPI docs name it `ssl-client-cert`):
    /// the nginx format. RFC 9440 is not shown to work with AM.
    pub fn default_cert_header(self) -> CertHeaderFormat {
        match self {
            Flavour::ForgeRockAm => CertHeaderFormat::Nginx,
            _ => CertHeaderFormat::Rfc9440,
        }
    }

    /// Keycloak releases have no Envoy lookup provider (apache, haproxy, nginx, rfc9440, traefik). AM reads only
    /// the URL-encoded PEM (see `default_cert_header`; other formats assumed absent).
    pub fn reads_cert_header(self, kind: CertHeaderFormat) -> bool {
        match self {
            Flavour::Rfc7591 => true,
            Flavour::Keycloak => kind != CertHeaderFormat::Envoy,
            Flavour::ForgeRockAm => kind == CertHeaderFormat::Nginx,
        }
    }

    /// Whether the introspection client may revoke another client's token. Keycloak's `/revoke` refuses a token
    /// issued for anyone but the caller (`TokenRevocationEndpoint.checkIssuedFor`: 400 "Unmatching clients").
    /// AM: not seen either way; assumed like Keycloak (a client revokes only its own tokens).
    pub fn revokes_other_clients_tokens(self) -> bool {
        match self {
            Flavour::Rfc7591 => true,
            Flavour::Keycloak | Flavour::ForgeRockAm => false,
        }
    }

    /// The scopes we asked for that the create's answer does not carry. Keycloak turns DCR `scope` into
    /// optional client scopes and ignores, with a log line only, a scope the "Allowed Client Scopes" policy lets
    /// through but the realm does not have (`RepresentationToModel` `addClientScopeToClient`); `openid` is never
    /// a client scope, so it is always dropped. AM answers `scope` and `scopes` (verified: ForgeRock's functional
    /// tests `DynamicRegistration.kt` in SecureApiGateway/secure-api-gateway-ob-uk) and refuses scopes outside
    /// its "Client Registration Scope Allowlist" (verified: PingAM 8.1 provider reference); a scope missing from
    /// its echo would be a silent substitution, refused here, `openid` included (OpenAM adds it rather than drops
    /// it; assumed for AM). A plain RFC 7591 server is not checked.
    pub fn ignored_scopes(self, asked: &Value, answer: &Value) -> Vec<String> {
        let words = |v: &Value| -> Vec<String> {
            v.get("scope")
                .and_then(Value::as_str)
                .unwrap_or("")
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        match self {
            Flavour::Rfc7591 => Vec::new(),
            Flavour::Keycloak => {
                let got = words(answer);
                words(asked)
                    .into_iter()
                    .filter(|s| s != "openid" && !got.contains(s))
                    .collect()
            }
            Flavour::ForgeRockAm => {
                let mut got = words(answer);
                if let Some(list) = answer.get("scopes").and_then(Value::as_array) {
                    got.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
                }
                words(asked)
                    .into_iter()
                    .filter(|s| !got.contains(s))
                    .collect()
            }
        }
    }

    /// The words a TPP reads when the upstream refused its registration (`what` is "registration" or
    /// "update"); `upstream` is the upstream's own `error: description`. Keycloak's registration policies answer
    /// 403 `insufficient_scope` "Policy '…' rejected request to client-registration service. Details: …"
    /// (`ClientRegistrationPolicyException`), which names neither the policy's settings nor the scope.
    pub fn describe_refusal(
        self,
        status: u16,
        upstream: &str,
        asked: &Value,
        what: &str,
    ) -> String {
        let scopes = asked.get("scope").and_then(Value::as_str).unwrap_or("");
        match self {
            Flavour::Keycloak if status == 403 && upstream.contains("Allowed Client Scopes") => {
                format!(
                    "the bank's registration policy does not allow one of the requested scopes ({scopes}); \
                     register with the scopes the bank publishes, or ask the bank to allow them (its \
                     authorisation server said: {upstream})"
                )
            }
            Flavour::Keycloak if status == 403 => format!(
                "the bank's registration policy refused the {what} (its authorisation server said: {upstream})"
            ),
            // AM refuses scopes outside its allowlist with 400 "Invalid scopes requested" (OpenAM
            // `ClientBuilder`; the allowlist itself verified: PingAM 8.1 provider reference).
            Flavour::ForgeRockAm if upstream.to_ascii_lowercase().contains("invalid scope") => {
                format!(
                    "the bank's registration scope allowlist does not allow one of the requested scopes ({scopes}); \
                 register with the scopes the bank publishes (its authorisation server said: {upstream})"
                )
            }
            _ => format!("the authorisation server refused the {what}: {upstream}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keycloak_drops_openid_silently_and_reports_other_ignored_scopes() {
        let asked = json!({"scope": "openid accounts payments"});
        assert!(
            Flavour::Keycloak
                .ignored_scopes(&asked, &json!({"scope": "accounts payments"}))
                .is_empty()
        );
        assert_eq!(
            Flavour::Keycloak.ignored_scopes(&asked, &json!({"scope": "accounts"})),
            vec!["payments"]
        );
        assert_eq!(
            Flavour::Keycloak.ignored_scopes(&asked, &json!({})),
            vec!["accounts", "payments"]
        );
        assert!(
            Flavour::Rfc7591
                .ignored_scopes(&asked, &json!({"scope": ""}))
                .is_empty()
        );
    }

    #[test]
    fn am_must_echo_every_scope_asked_for_in_scope_or_scopes() {
        let asked = json!({"scope": "openid accounts payments"});
        let am = Flavour::ForgeRockAm;
        assert!(
            am.ignored_scopes(&asked, &json!({"scope": "openid accounts payments"}))
                .is_empty()
        );
        assert!(
            am.ignored_scopes(
                &asked,
                &json!({"scopes": ["payments", "accounts", "openid"]})
            )
            .is_empty()
        );
        // A substitution: fundsconfirmations for payments.
        assert_eq!(
            am.ignored_scopes(
                &asked,
                &json!({"scope": "openid accounts fundsconfirmations"})
            ),
            vec!["payments"]
        );
        assert_eq!(
            am.ignored_scopes(&asked, &json!({"scope": "accounts payments"})),
            vec!["openid"]
        );
    }

    #[test]
    fn a_keycloak_scope_policy_refusal_reads_as_something_a_tpp_can_act_on() {
        let said = "insufficient_scope: Policy 'Allowed Client Scopes' rejected request to client-registration service. Details: Not permitted to use specified clientScope";
        let d = Flavour::Keycloak.describe_refusal(
            403,
            said,
            &json!({"scope": "openid admin"}),
            "registration",
        );
        assert!(
            d.contains("does not allow one of the requested scopes (openid admin)"),
            "{d}"
        );
        let plain = Flavour::Rfc7591.describe_refusal(
            400,
            "invalid_client_metadata: x",
            &json!({}),
            "update",
        );
        assert_eq!(
            plain,
            "the authorisation server refused the update: invalid_client_metadata: x"
        );
    }

    #[test]
    fn each_flavour_is_data() {
        assert!(Flavour::Rfc7591.names_client_ids(true));
        assert!(!Flavour::Rfc7591.names_client_ids(false));
        assert!(!Flavour::Keycloak.names_client_ids(true));
        assert_eq!(Flavour::Keycloak.client_uri(), ClientUri::Built);
        assert_eq!(Flavour::Keycloak.refused_401(), Refused401::StaleOrGone);
        assert_eq!(
            Flavour::Keycloak.create_credential(true),
            CreateCredential::AdminBearer
        );
        assert_eq!(
            Flavour::Keycloak.create_credential(false),
            CreateCredential::InitialAccessToken
        );
        assert_eq!(Flavour::Keycloak.dn_rendering(), DnRendering::Java);
        assert_eq!(Flavour::Rfc7591.dn_rendering(), DnRendering::Rfc4514);
        assert!(!Flavour::Keycloak.reads_cert_header(CertHeaderFormat::Envoy));
        assert!(!Flavour::Keycloak.revokes_other_clients_tokens());
        assert_eq!(
            Flavour::ForgeRockAm.create_credential(false),
            CreateCredential::MintedToken
        );
        assert_eq!(Flavour::ForgeRockAm.client_uri(), ClientUri::BuiltQuery);
        assert_eq!(Flavour::ForgeRockAm.refused_401(), Refused401::StaleOrGone);
        assert_eq!(
            Flavour::ForgeRockAm.default_cert_header(),
            CertHeaderFormat::Nginx
        );
        assert!(!Flavour::ForgeRockAm.reads_cert_header(CertHeaderFormat::Rfc9440));
        assert!(Flavour::ForgeRockAm.names_client_ids(true));
        assert!(Flavour::ForgeRockAm.credential_refused(400, "access_denied"));
        assert!(!Flavour::ForgeRockAm.credential_refused(400, "invalid_client_metadata"));
        assert!(!Flavour::Keycloak.credential_refused(400, "access_denied"));
        for (name, f) in Flavour::NAMES {
            assert_eq!(f.name(), *name);
        }
    }
}
