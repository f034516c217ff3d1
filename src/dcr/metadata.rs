//! Client metadata: validation against the profile and the SSA, the RFC 7591 translation for the upstream,
//! and the profile-shaped response rendered from what was registered.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value, json};
use url::{Host, Url};

use crate::dcr::profile::{Profile, ProfileKind};
use crate::dcr::ssa::Ssa;
use crate::echo::echo;
use crate::error::{ErrorCode, ProxyError};
use crate::identity::{DistinguishedName, DnRendering, PeerCert};

const GRANT_TYPES: &[&str] = &["client_credentials", "authorization_code", "refresh_token"];
const APPLICATION_TYPES_OB: &[&str] = &["web", "mobile"];
const MAX_REDIRECT_URI_LEN: usize = 256;

/// The metadata we register, after every rule has been applied. Rendered to the upstream and to the TPP.
#[derive(Debug, Clone)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub token_endpoint_auth_signing_alg: Option<String>,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub application_type: String,
    pub id_token_signed_response_alg: Option<String>,
    pub request_object_signing_alg: Option<String>,
    pub id_token_encrypted_response_alg: Option<String>,
    pub id_token_encrypted_response_enc: Option<String>,
    /// CDR with `code` (JARM): how authorisation responses are signed.
    pub authorization_signed_response_alg: Option<String>,
    pub scope: Vec<String>,
    /// As the TPP wrote it (echoed back); the upstream gets the certificate's own rendering.
    pub tls_client_auth_dn: Option<String>,
}

fn bad(what: impl Into<String>) -> ProxyError {
    ProxyError::rejected(ErrorCode::InvalidClientMetadata, what)
}

fn bad_redirect(what: impl Into<String>) -> ProxyError {
    ProxyError::rejected(ErrorCode::InvalidRedirectUri, what)
}

struct Claims<'a>(&'a Map<String, Value>);

impl Claims<'_> {
    fn string(&self, name: &str) -> Result<Option<String>, ProxyError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(format!("`{name}` must be a string"))),
        }
    }

    fn list(&self, name: &str) -> Result<Option<Vec<String>>, ProxyError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("`{name}` must be an array of strings")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(bad(format!("`{name}` must be an array of strings"))),
        }
    }
}

fn one_of(name: &str, value: &str, allowed: &[String]) -> Result<(), ProxyError> {
    if allowed.iter().any(|a| a == value) {
        Ok(())
    } else {
        Err(bad(format!(
            "`{name}` is `{}`; this bank accepts {}",
            echo(value),
            allowed.join(", ")
        )))
    }
}

fn to_strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// Applies every metadata rule of the profile. `peer` is the verified transport certificate.
pub fn validate(
    claims: &Map<String, Value>,
    ssa: &Ssa,
    peer: &PeerCert,
    profile: &Profile,
) -> Result<ClientMetadata, ProxyError> {
    let c = Claims(claims);
    let cfg = &profile.cfg;
    let is_cdr = profile.kind() == ProfileKind::Cdr113;

    // redirect_uris: omitted → the SSA's list; each must be in the SSA's list and safe.
    let redirect_uris = match c
        .list("redirect_uris")
        .map_err(|_| bad_redirect("`redirect_uris` must be an array of strings"))?
    {
        Some(list) if list.is_empty() => {
            return Err(bad_redirect("`redirect_uris` must not be empty"));
        }
        Some(list) => list,
        None => ssa.redirect_uris.clone(),
    };
    if redirect_uris.is_empty() {
        return Err(bad_redirect(
            "no redirect_uris in the request and none in the software statement",
        ));
    }
    for uri in &redirect_uris {
        check_redirect_uri(uri)?;
        if !ssa.redirect_uris.iter().any(|s| s == uri) {
            return Err(bad_redirect(format!(
                "redirect URI `{}` is not one of the software statement's redirect URIs",
                echo(uri)
            )));
        }
    }

    let token_endpoint_auth_method = c
        .string("token_endpoint_auth_method")?
        .ok_or_else(|| bad("`token_endpoint_auth_method` is required"))?;
    one_of(
        "token_endpoint_auth_method",
        &token_endpoint_auth_method,
        &cfg.token_endpoint_auth_methods,
    )?;

    let alg = |name: &str| -> Result<Option<String>, ProxyError> {
        let v = c.string(name)?;
        if let Some(a) = &v {
            one_of(name, a, &cfg.signing_algorithms)?;
        }
        Ok(v)
    };
    let token_endpoint_auth_signing_alg = alg("token_endpoint_auth_signing_alg")?;
    if token_endpoint_auth_method == "private_key_jwt" && token_endpoint_auth_signing_alg.is_none()
    {
        return Err(bad(
            "`token_endpoint_auth_signing_alg` is required with private_key_jwt",
        ));
    }
    // Only private_key_jwt signs at the token endpoint; with tls_client_auth the value means nothing
    // and RFC 7591 servers refuse it, so it is not registered (and not echoed).
    let token_endpoint_auth_signing_alg =
        token_endpoint_auth_signing_alg.filter(|_| token_endpoint_auth_method == "private_key_jwt");
    let id_token_signed_response_alg = alg("id_token_signed_response_alg")?;
    let request_object_signing_alg = alg("request_object_signing_alg")?;
    // v3.1's data dictionary makes both 1..1; CDR 1.13 requires request_object_signing_alg. CDR's schema leaves
    // id_token_signed_response_alg out of its required list, but an omitted one lets the upstream pick its
    // default (RS256 for OIDC registration), which CDR forbids; the CDR reference server refuses it too
    // (CdrAuthServer ClientRegistrationValidator: MustBeOne on IdTokenSignedResponseAlg).
    if id_token_signed_response_alg.is_none() {
        return Err(bad(format!(
            "`id_token_signed_response_alg` is required; this bank accepts {}",
            cfg.signing_algorithms.join(", ")
        )));
    }
    if request_object_signing_alg.is_none() {
        return Err(bad("`request_object_signing_alg` is required"));
    }

    let grant_types = c
        .list("grant_types")?
        .ok_or_else(|| bad("`grant_types` is required"))?;
    if grant_types.is_empty() {
        return Err(bad("`grant_types` must name at least one grant type"));
    }
    for g in &grant_types {
        one_of("grant_types", g, &to_strings(GRANT_TYPES))?;
    }
    if is_cdr && !grant_types.iter().any(|g| g == "authorization_code") {
        return Err(bad("`grant_types` must include authorization_code"));
    }

    let response_types = match (
        c.list("response_types")?,
        profile.kind().rules().omitted_response_types,
    ) {
        (Some(list), _) if list.is_empty() => {
            return Err(bad("`response_types` must not be empty"));
        }
        (Some(list), _) => list,
        (None, Some(default)) => to_strings(default),
        (None, None) => {
            return Err(bad(format!(
                "`response_types` is required; this bank supports {}",
                cfg.response_types.join(", ")
            )));
        }
    };
    for r in &response_types {
        one_of("response_types", r, &cfg.response_types)?;
    }

    let application_type = match c.string("application_type")? {
        Some(a) => a,
        None if is_cdr => "web".to_string(),
        None => return Err(bad("`application_type` is required (web or mobile)")),
    };
    let app_types = if is_cdr {
        vec!["web".to_string()]
    } else {
        to_strings(APPLICATION_TYPES_OB)
    };
    one_of("application_type", &application_type, &app_types)?;

    // Hybrid flow in CDR returns an encrypted id_token; the holder says which algorithms it supports.
    let id_token_encrypted_response_alg = c.string("id_token_encrypted_response_alg")?;
    let id_token_encrypted_response_enc = c.string("id_token_encrypted_response_enc")?;
    if is_cdr && response_types.iter().any(|r| r == "code id_token") {
        let a = id_token_encrypted_response_alg.as_deref().ok_or_else(|| {
            bad("`id_token_encrypted_response_alg` is required for the hybrid flow")
        })?;
        let e = id_token_encrypted_response_enc.as_deref().ok_or_else(|| {
            bad("`id_token_encrypted_response_enc` is required for the hybrid flow")
        })?;
        one_of(
            "id_token_encrypted_response_alg",
            a,
            &cfg.id_token_encryption_algs,
        )?;
        one_of(
            "id_token_encrypted_response_enc",
            e,
            &cfg.id_token_encryption_encs,
        )?;
    }

    let authorization_signed_response_alg = alg("authorization_signed_response_alg")?;
    if is_cdr
        && response_types.iter().any(|r| r == "code")
        && authorization_signed_response_alg.is_none()
    {
        return Err(bad(
            "`authorization_signed_response_alg` is required with response type `code` (JARM)",
        ));
    }

    if claims.contains_key("jwks") && claims.contains_key("jwks_uri") {
        return Err(bad("send either `jwks` or `jwks_uri`, not both"));
    }
    if let Some(u) = c.string("jwks_uri")?
        && u != ssa.jwks_uri.as_str()
    {
        return Err(bad(format!(
            "`jwks_uri` must be the software statement's `{}`",
            profile.ssa.jwks_uri
        )));
    }

    let scope = scopes(&c, ssa, profile)?;

    // The DN binds the client to its certificate; OB v3.1 names it tls_client_auth_dn, v3.2+ tls_client_auth_subject_dn.
    let dn = match (
        c.string("tls_client_auth_dn")?,
        c.string("tls_client_auth_subject_dn")?,
    ) {
        (Some(a), Some(b)) if a != b => {
            return Err(bad(
                "`tls_client_auth_dn` and `tls_client_auth_subject_dn` disagree",
            ));
        }
        (Some(a), _) | (None, Some(a)) => Some(a),
        (None, None) => None,
    };
    if token_endpoint_auth_method == "tls_client_auth" && dn.is_none() {
        return Err(bad("`tls_client_auth_dn` is required with tls_client_auth"));
    }
    if let Some(dn) = &dn {
        if dn.len() > 1024 {
            return Err(bad("`tls_client_auth_dn` is too long"));
        }
        let wanted = DistinguishedName::parse_rfc4514(dn).map_err(|e| {
            bad(format!(
                "`tls_client_auth_dn` is not a valid DN: {}",
                echo(&e.to_string())
            ))
        })?;
        if !peer.subject.matches(&wanted, &cfg.dn_match) {
            return Err(bad(format!(
                "`tls_client_auth_dn` `{}` does not match the subject of the presented transport certificate `{}`",
                echo(dn),
                echo(&peer.subject_text)
            )));
        }
    }

    Ok(ClientMetadata {
        redirect_uris,
        token_endpoint_auth_method,
        token_endpoint_auth_signing_alg,
        grant_types,
        response_types,
        application_type,
        id_token_signed_response_alg,
        request_object_signing_alg,
        id_token_encrypted_response_alg,
        id_token_encrypted_response_enc,
        authorization_signed_response_alg,
        scope,
        tls_client_auth_dn: dn,
    })
}

/// Characters RFC 3986 §2 allows in a URI besides letters and digits. Anything else (a space, a backslash, a
/// control character such as NUL, non-ASCII) is parsed differently by different parsers, and the browser that
/// follows the redirect is not the parser that checked it.
const URI_PUNCTUATION: &str = "-._~:/?#[]@!$&'()*+,;=%";

fn check_redirect_uri(uri: &str) -> Result<(), ProxyError> {
    if uri.len() > MAX_REDIRECT_URI_LEN {
        return Err(bad_redirect(format!(
            "redirect URI is longer than {MAX_REDIRECT_URI_LEN} characters"
        )));
    }
    let refused = |why: &str| {
        bad_redirect(format!(
            "redirect URI `{}` {why}, whatever the software statement says",
            echo(uri)
        ))
    };
    if let Some(c) = uri
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !URI_PUNCTUATION.contains(*c))
    {
        return Err(refused(&format!(
            "contains {}, which a URI may not (RFC 3986 §2)",
            match c {
                '\\' => "a backslash".to_string(),
                ' ' => "a space".to_string(),
                c => format!("the character U+{:04X}", u32::from(c)),
            }
        )));
    }
    let u = Url::parse(uri)
        .map_err(|_| bad_redirect(format!("`{}` is not an absolute URI", echo(uri))))?;
    if u.scheme() != "https" {
        return Err(bad_redirect(format!(
            "redirect URI `{}` must use https",
            echo(uri)
        )));
    }
    // Checked on the text too: the parser drops an empty userinfo (`https://@host`) without a trace.
    let authority = uri.split_once("://").map_or("", |(_, rest)| {
        rest.split(['/', '?', '#']).next().unwrap_or("")
    });
    if authority.contains('@') || !u.username().is_empty() || u.password().is_some() {
        return Err(refused(
            "carries userinfo (`name@`), which makes the host hard to read for the user",
        ));
    }
    let local = match u.host() {
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(Host::Ipv4(ip)) => !ipv4_is_public(ip),
        Some(Host::Ipv6(ip)) => !ipv6_is_public(ip),
        None => true,
    };
    if local {
        return Err(refused(
            "points at localhost, a private, link-local or unspecified address, or a multicast group",
        ));
    }
    if u.fragment().is_some() {
        return Err(bad_redirect(format!(
            "redirect URI `{}` must not have a fragment",
            echo(uri)
        )));
    }
    Ok(())
}

/// Whether an authorisation response sent here would leave the user's own machine and network. Loopback,
/// unspecified, link-local, private (RFC 1918), shared (RFC 6598), broadcast, multicast and reserved addresses
/// all answer from whatever happens to listen near the user's browser, so a code sent there is not the TPP's.
fn ipv4_is_public(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_link_local()
        || ip.is_private()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || a >= 240)
}

/// As [`ipv4_is_public`]; an IPv4 address embedded in IPv6 (`::ffff:127.0.0.1`, `::127.0.0.1`) is judged as the
/// IPv4 address it reaches.
fn ipv6_is_public(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4() {
        return !ip.is_loopback() && !ip.is_unspecified() && ipv4_is_public(v4);
    }
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fe80::/10 link-local, fc00::/7 unique local, fec0::/10 site-local (deprecated, still routed locally).
        || (first & 0xffc0) == 0xfe80
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfec0)
}

fn scopes(c: &Claims<'_>, ssa: &Ssa, profile: &Profile) -> Result<Vec<String>, ProxyError> {
    let cfg = &profile.cfg;
    if profile.kind() == ProfileKind::Cdr113 {
        // CDR: registered scope = SSA scope ∩ supported; the request's scope is not consulted.
        let ssa_scope = ssa
            .claims
            .get("scope")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Ok(ssa_scope
            .split_whitespace()
            .filter(|s| cfg.allowed_scopes.iter().any(|a| a == s))
            .map(str::to_string)
            .collect());
    }
    let requested: Option<Vec<String>> = match c.0.get("scope") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.split_whitespace().map(str::to_string).collect()),
        Some(Value::Array(_)) => c.list("scope")?,
        Some(_) => {
            return Err(bad(
                "`scope` must be an array of strings or a space-separated string",
            ));
        }
    };
    match requested {
        None => Ok(cfg
            .default_scopes
            .iter()
            .filter(|s| profile.scope_allowed_by_roles(s, &ssa.roles))
            .cloned()
            .collect()),
        Some(list) => {
            if list.is_empty() {
                return Err(bad("`scope` must not be empty"));
            }
            let mut out: Vec<String> = Vec::new();
            for s in list {
                if !cfg.allowed_scopes.contains(&s) {
                    return Err(bad(format!(
                        "scope `{}` is not offered by this bank; it offers {}",
                        echo(&s),
                        cfg.allowed_scopes.join(", ")
                    )));
                }
                if !profile.scope_allowed_by_roles(&s, &ssa.roles) {
                    return Err(bad(format!(
                        "scope `{}` needs a role the software statement does not grant (roles: {})",
                        echo(&s),
                        echo(&ssa.roles.join(", "))
                    )));
                }
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            Ok(out)
        }
    }
}

fn https_claim(ssa: &Ssa, name: &str) -> Option<String> {
    let s = ssa.claims.get(name)?.as_str()?;
    Url::parse(s).ok().filter(|u| u.scheme() == "https")?;
    Some(s.to_string())
}

impl ClientMetadata {
    /// The optional algorithm fields, identical in the upstream request and in our answer.
    fn insert_optional(&self, m: &mut Map<String, Value>) {
        let fields = [
            (
                "token_endpoint_auth_signing_alg",
                &self.token_endpoint_auth_signing_alg,
            ),
            (
                "id_token_signed_response_alg",
                &self.id_token_signed_response_alg,
            ),
            (
                "request_object_signing_alg",
                &self.request_object_signing_alg,
            ),
            (
                "id_token_encrypted_response_alg",
                &self.id_token_encrypted_response_alg,
            ),
            (
                "id_token_encrypted_response_enc",
                &self.id_token_encrypted_response_enc,
            ),
            (
                "authorization_signed_response_alg",
                &self.authorization_signed_response_alg,
            ),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
    }

    /// The plain RFC 7591 request for the upstream, the subject DN written the way the upstream parses it.
    /// Never carries the SSA.
    pub fn to_upstream(
        &self,
        ssa: &Ssa,
        peer: &PeerCert,
        profile: &Profile,
        dn: DnRendering,
    ) -> Value {
        let mut m = Map::new();
        m.insert("redirect_uris".into(), json!(self.redirect_uris));
        m.insert(
            "token_endpoint_auth_method".into(),
            json!(self.token_endpoint_auth_method),
        );
        m.insert("grant_types".into(), json!(self.grant_types));
        m.insert("response_types".into(), json!(self.response_types));
        // OIDC registration knows web and native; OB's "mobile" is a native app.
        let app = if self.application_type == "mobile" {
            "native"
        } else {
            "web"
        };
        m.insert("application_type".into(), json!(app));
        m.insert("scope".into(), json!(self.scope.join(" ")));
        m.insert("jwks_uri".into(), json!(ssa.jwks_uri.as_str()));
        m.insert("software_id".into(), json!(ssa.software_id));
        m.insert(
            "tls_client_certificate_bound_access_tokens".into(),
            json!(true),
        );
        self.insert_optional(&mut m);
        if self.token_endpoint_auth_method == "tls_client_auth" {
            // The upstream compares this with the certificate we forward, so give it the certificate's
            // own DN (which keeps each value's ASN.1 type) rather than the TPP's spelling: we have already
            // proven the two equal.
            m.insert(
                "tls_client_auth_subject_dn".into(),
                json!(peer.subject.render(dn)),
            );
        }
        let names = match profile.kind() {
            ProfileKind::ObV31 => [
                ("client_name", "software_client_name"),
                ("client_uri", "software_client_uri"),
                ("logo_uri", "software_logo_uri"),
                ("policy_uri", "software_policy_uri"),
                ("tos_uri", "software_tos_uri"),
            ],
            ProfileKind::Cdr113 => [
                ("client_name", "client_name"),
                ("client_uri", "client_uri"),
                ("logo_uri", "logo_uri"),
                ("policy_uri", "policy_uri"),
                ("tos_uri", "tos_uri"),
            ],
        };
        for (ours, theirs) in names {
            let v = if ours == "client_name" {
                ssa.claims
                    .get(theirs)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            } else {
                https_claim(ssa, theirs)
            };
            if let Some(v) = v {
                m.insert(ours.into(), json!(v));
            }
        }
        Value::Object(m)
    }

    /// The profile's response body, without client_id/issued_at/software_statement (added per answer).
    pub fn render(&self, ssa: &Ssa, profile: &Profile) -> Value {
        let mut m = Map::new();
        match profile.kind() {
            ProfileKind::ObV31 => {
                // v3.1: "includes all the claims in the software_statement ... flattened out as a
                // top-level attribute". JWT housekeeping claims of the SSA are left out: they would
                // be mistaken for the client's own.
                for (k, v) in &ssa.claims {
                    if !matches!(
                        k.as_str(),
                        "iss" | "sub" | "aud" | "exp" | "nbf" | "iat" | "jti"
                    ) {
                        m.insert(k.clone(), v.clone());
                    }
                }
                m.insert("scope".into(), json!(self.scope));
                if let Some(dn) = &self.tls_client_auth_dn {
                    m.insert("tls_client_auth_dn".into(), json!(dn));
                }
            }
            ProfileKind::Cdr113 => {
                for k in [
                    "client_name",
                    "client_description",
                    "client_uri",
                    "legal_entity_id",
                    "legal_entity_name",
                    "org_id",
                    "org_name",
                    "sector_identifier_uri",
                    "logo_uri",
                    "tos_uri",
                    "policy_uri",
                    "jwks_uri",
                    "revocation_uri",
                    "recipient_base_uri",
                    "software_roles",
                ] {
                    if let Some(v) = ssa.claims.get(k) {
                        m.insert(k.into(), v.clone());
                    }
                }
                m.insert("scope".into(), json!(self.scope.join(" ")));
            }
        }
        m.insert("software_id".into(), json!(ssa.software_id));
        m.insert("redirect_uris".into(), json!(self.redirect_uris));
        m.insert(
            "token_endpoint_auth_method".into(),
            json!(self.token_endpoint_auth_method),
        );
        m.insert("grant_types".into(), json!(self.grant_types));
        m.insert("response_types".into(), json!(self.response_types));
        m.insert("application_type".into(), json!(self.application_type));
        self.insert_optional(&mut m);
        Value::Object(m)
    }
}

/// The answer for POST/GET/PUT: the stored rendering plus the identifiers and the SSA echoed.
pub fn response_body(rendered: Value, client_id: &str, issued_at: i64, ssa: &str) -> Value {
    let mut body = match rendered {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    body.insert("client_id".into(), json!(client_id));
    body.insert("client_id_issued_at".into(), json!(issued_at));
    body.insert("software_statement".into(), json!(ssa));
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_must_be_https_and_not_local() {
        for ok in [
            "https://tpp.example.com/cb",
            "https://tpp.example.com:8443/a?b=c",
            "https://tpp.example.com/a%20b?x=%2F&y=[1]",
            "https://8.8.8.8/cb",
            "https://[2001:db8::1]/cb",
            "https://[::ffff:8.8.8.8]/cb",
            "https://xn--bcher-kva.example/cb",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://tpp.example.com/cb",
            "https://localhost/cb",
            "https://LOCALHOST./cb",
            "https://app.localhost/cb",
            "https://127.0.0.1/cb",
            "https://[::1]/cb",
            "tpp.example.com/cb",
            "https://tpp.example.com/cb#frag",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
        assert!(check_redirect_uri(&format!("https://e.com/{}", "a".repeat(300))).is_err());
    }

    #[test]
    fn redirect_uris_that_reach_the_users_own_machine_or_network_are_refused() {
        for bad in [
            // IPv4 in its other spellings, and embedded in IPv6.
            "https://127.1.2.3/cb",
            "https://2130706433/cb",
            "https://0x7f.0.0.1/cb",
            "https://[::ffff:127.0.0.1]/cb",
            "https://[::ffff:7f00:1]/cb",
            "https://[::127.0.0.1]/cb",
            "https://0.0.0.0/cb",
            "https://0/cb",
            "https://[::]/cb",
            "https://169.254.169.254/latest/meta-data",
            "https://[fe80::1]/cb",
            "https://10.0.0.5/cb",
            "https://172.16.3.4/cb",
            "https://192.168.1.1/cb",
            "https://100.64.0.1/cb",
            "https://[fd00::1]/cb",
            "https://[::ffff:192.168.1.1]/cb",
            "https://255.255.255.255/cb",
            "https://224.0.0.1/cb",
            "https://[ff02::1]/cb",
        ] {
            let e = check_redirect_uri(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("InvalidRedirectUri"), "{bad}: {e}");
        }
    }

    #[test]
    fn redirect_uris_that_parsers_read_differently_are_refused() {
        for (bad, why) in [
            ("https://good.example@evil.example/cb", "userinfo"),
            ("https://good.example:pw@evil.example/cb", "userinfo"),
            ("https://@evil.example/cb", "userinfo"),
            ("https://evil.example\\@good.example/cb", "backslash"),
            ("https://good.example\\evil.example/cb", "backslash"),
            ("https://tpp.example.com/cb\0", "U+0000"),
            ("https://tpp.example.com/cb\r\nx", "U+000D"),
            ("https://tpp.example.com/c b", "space"),
            ("https://tpp.example.com/cb\t", "U+0009"),
            ("https://tpp.exаmple.com/cb", "U+0430"),
            ("https://tpp.example.com/\"cb", "U+0022"),
        ] {
            let e = check_redirect_uri(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("InvalidRedirectUri") && e.contains(why),
                "{bad:?} ({why}): {e}"
            );
        }
    }
}
