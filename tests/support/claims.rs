//! Claim sets for software statements and registration request JWTs, as the OB Directory, the CDR Register and
//! well-behaved TPPs produce them. Tests start from these and break one thing at a time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since_epoch.as_secs()).expect("seconds fit in i64")
}

pub fn jti() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `extra`'s members over `base`'s; a JSON null in `extra` removes the member.
pub fn merge(mut base: Value, extra: Value) -> Value {
    let target = base
        .as_object_mut()
        .expect("the base claim set is an object");
    match extra {
        Value::Object(extra) => {
            for (name, value) in extra {
                if value.is_null() {
                    target.remove(&name);
                } else {
                    target.insert(name, value);
                }
            }
        }
        Value::Null => {}
        other => panic!("extra claims must be a JSON object or null, got {other}"),
    }
    base
}

/// The payload of a compact JWS, without checking anything; None if it is not a JWS with a JSON object payload.
pub fn payload_of(jws: &str) -> Option<Value> {
    let payload = jws.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// scheme://host[:port] of a URL, so that derived URLs (revocation lists, org JWKS) stay on the test's own server.
fn origin(url: &str) -> String {
    let parsed = url::Url::parse(url).expect("software_jwks_endpoint is an absolute URL");
    parsed.origin().ascii_serialization()
}

/// An OB Directory SSA claim set (v3.1 era), issued now, with no `exp` as the Directory does.
pub fn ob_ssa(
    software_id: &str,
    org_id: &str,
    software_jwks_endpoint: &str,
    redirect_uris: &[&str],
    roles: &[&str],
) -> Value {
    let base = origin(software_jwks_endpoint);
    json!({
        "iss": "OpenBanking Ltd",
        "iat": now(),
        "jti": jti(),
        "software_environment": "production",
        "software_mode": "Live",
        "software_id": software_id,
        "software_client_id": software_id,
        "software_client_name": format!("TPP app {software_id}"),
        "software_client_description": "Account information and payments for dcr-proxy tests",
        "software_version": "1.0",
        "software_client_uri": "https://tpp.example/",
        "software_redirect_uris": redirect_uris,
        "software_roles": roles,
        "organisation_competent_authority_claims": {
            "authority_id": "FCAGBR",
            "registration_id": "123456",
            "status": "Active",
            "authorisations": roles.iter().map(|role| json!({"member_state": "GB", "roles": [role]})).collect::<Vec<_>>(),
        },
        "software_logo_uri": "https://tpp.example/logo.png",
        "org_status": "Active",
        "org_id": org_id,
        "org_name": format!("TPP Org {org_id}"),
        "org_contacts": [
            {"name": "Business contact", "email": "business@tpp.example", "phone": "+441234567890", "type": "Business"},
            {"name": "Technical contact", "email": "tech@tpp.example", "phone": "+441234567891", "type": "Technical"},
        ],
        "org_jwks_endpoint": format!("{base}/{org_id}/{org_id}.jwks"),
        "org_jwks_revoked_endpoint": format!("{base}/{org_id}/revoked/{org_id}.jwks"),
        "software_jwks_endpoint": software_jwks_endpoint,
        "software_jwks_revoked_endpoint": format!("{base}/{org_id}/revoked/{software_id}.jwks"),
        "software_policy_uri": "https://tpp.example/policy",
        "software_tos_uri": "https://tpp.example/tos",
        "software_on_behalf_of_org": "",
        "ob_registry_tos": "https://registry.openbanking.org.uk/tos.html",
    })
}

/// The first redirect URI the SSA allows, so a request by default asks for a proper subset of them.
fn first_redirect_uri(ssa_jwt: &str, claim: &str) -> Option<Value> {
    let first = payload_of(ssa_jwt)?
        .get(claim)?
        .as_array()?
        .first()?
        .clone();
    Some(json!([first]))
}

/// An OB v3.1 registration request claim set for `tls_client_auth`. `extra` is merged over it (null removes).
pub fn ob_request(
    software_id: &str,
    aud: &str,
    ssa_jwt: &str,
    transport_dn: &str,
    extra: Value,
) -> Value {
    let iat = now();
    let mut claims = json!({
        "iss": software_id,
        "aud": aud,
        "iat": iat,
        "exp": iat + 300,
        "jti": jti(),
        "token_endpoint_auth_method": "tls_client_auth",
        "tls_client_auth_dn": transport_dn,
        "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
        "response_types": ["code id_token"],
        "application_type": "web",
        "id_token_signed_response_alg": "PS256",
        "request_object_signing_alg": "PS256",
        "token_endpoint_auth_signing_alg": "PS256",
        "scope": ["openid", "accounts"],
        "software_statement": ssa_jwt,
    });
    if let Some(uris) = first_redirect_uri(ssa_jwt, "software_redirect_uris") {
        claims["redirect_uris"] = uris;
    }
    merge(claims, extra)
}

/// A CDR Register SSA claim set (1.13): issued now, expiring in 10 minutes. `org_id` is the brand id.
pub fn cdr_ssa(software_id: &str, org_id: &str, jwks_uri: &str, redirect_uris: &[&str]) -> Value {
    let iat = now();
    let base = origin(jwks_uri);
    json!({
        "iss": "cdr-register",
        "iat": iat,
        "exp": iat + 600,
        "jti": jti(),
        "legal_entity_id": uuid::Uuid::new_v4().to_string(),
        "legal_entity_name": format!("Legal entity of {org_id}"),
        "org_id": org_id,
        "org_name": format!("Brand {org_id}"),
        "client_name": format!("Data recipient product {software_id}"),
        "client_description": "A data recipient software product for dcr-proxy tests",
        "client_uri": "https://adr.example/",
        "redirect_uris": redirect_uris,
        "logo_uri": "https://adr.example/logo.png",
        "tos_uri": "https://adr.example/tos",
        "policy_uri": "https://adr.example/policy",
        "jwks_uri": jwks_uri,
        "revocation_uri": format!("{base}/revocation"),
        "recipient_base_uri": base,
        "software_id": software_id,
        "software_roles": "data-recipient-software-product",
        "scope": "openid profile bank:accounts.basic:read bank:transactions:read common:customer.basic:read cdr:registration",
        "sector_identifier_uri": "https://adr.example/sector",
    })
}

/// A CDR 1.13 registration request claim set (`private_key_jwt`, hybrid flow with encrypted ID tokens).
/// `aud` is the holder's issuer URL; `extra` is merged over it (null removes).
pub fn cdr_request(software_id: &str, aud: &str, ssa_jwt: &str, extra: Value) -> Value {
    let iat = now();
    let mut claims = json!({
        "iss": software_id,
        "aud": aud,
        "iat": iat,
        "exp": iat + 300,
        "jti": jti(),
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": "PS256",
        "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
        "response_types": ["code id_token"],
        "application_type": "web",
        "id_token_signed_response_alg": "PS256",
        "id_token_encrypted_response_alg": "RSA-OAEP",
        "id_token_encrypted_response_enc": "A256GCM",
        "request_object_signing_alg": "PS256",
        "software_statement": ssa_jwt,
    });
    if let Some(uris) = first_redirect_uri(ssa_jwt, "redirect_uris") {
        claims["redirect_uris"] = uris;
    }
    merge(claims, extra)
}
