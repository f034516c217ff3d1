//! Owns which registered client a request names, and its refusal when the Register no longer lists that
//! client's software product or data recipient as ACTIVE: for management calls (by the path's ClientId) and for
//! the pass-through (by `client_id` in the query or form, the `iss` of a `client_assertion`, or the user of
//! Basic client authentication).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::time::Instant;

use super::{RegisterStatus, lock};
use crate::body::{RespBody, boxed};
use crate::error::{ProxyError, RegisterCheck};
use crate::store::RegistrationStore;

/// A form larger than this is not read for the client it names; it is refused (a token, PAR, revocation or
/// introspection request is a few kilobytes, a PAR with a request object tens).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// A JWS (client_assertion, stored SSA) longer than this is not decoded.
const MAX_JWS_BYTES: usize = 64 * 1024;

/// How long the store's answer for a client_id is reused: a client's software product and data recipient never
/// change, so a found one is kept longer than a miss (a client may be registered a moment later).
const FOUND_TTL: Duration = Duration::from_secs(300);
const MISSING_TTL: Duration = Duration::from_secs(10);
const MAX_CACHED: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Binding {
    software_id: String,
    legal_entity_id: Option<String>,
}

pub struct RegisterGate {
    status: Arc<RegisterStatus>,
    store: Arc<dyn RegistrationStore>,
    known: Mutex<HashMap<String, (Instant, Option<Binding>)>>,
}

/// Why the pass-through must not go on.
pub enum Screened {
    /// The answer to send instead.
    Refused(hyper::Response<RespBody>),
    /// The client's body failed while it was read (the pass-through knows how, and answers).
    BodyFailed,
}

impl RegisterGate {
    pub fn new(status: Arc<RegisterStatus>, store: Arc<dyn RegistrationStore>) -> Self {
        RegisterGate {
            status,
            store,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// The registration record's software product and data recipient for `client_id`; None when the proxy did
    /// not register it as a CDR client (nothing of ours to judge).
    async fn binding(&self, client_id: &str) -> Result<Option<Binding>, ProxyError> {
        if let Some((at, b)) = lock(&self.known).get(client_id) {
            let ttl = if b.is_some() { FOUND_TTL } else { MISSING_TTL };
            if at.elapsed() < ttl {
                return Ok(b.clone());
            }
        }
        let rec = self
            .store
            .get_by_client_id(client_id)
            .await
            .map_err(|e| ProxyError::StoreUnavailable(e.to_string()))?;
        let b = rec.filter(|r| r.profile == "cdr-1.13").map(|r| Binding {
            legal_entity_id: r
                .metadata
                .get("legal_entity_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| unverified_claim(&r.software_statement, "legal_entity_id")),
            software_id: r.software_id,
        });
        let mut known = lock(&self.known);
        // Ids are chosen by callers: a flood of made-up ones must not grow the map without end.
        if known.len() >= MAX_CACHED {
            known.clear();
        }
        known.insert(client_id.to_owned(), (Instant::now(), b.clone()));
        Ok(b)
    }

    /// Refuses a request about `client_id` when the Register says its software product or data recipient is not
    /// ACTIVE (or, per the policy, cannot say).
    pub async fn check_client(&self, client_id: &str, at: RegisterCheck) -> Result<(), ProxyError> {
        let b = match self.binding(client_id).await {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(()),
            // Which client this is cannot be told: the same policy as a list we cannot read.
            Err(e) => {
                tracing::warn!(error = %e, "the registration store cannot say which software product a client is");
                return self.status.unconfirmed("", at);
            }
        };
        self.status
            .decide(&b.software_id, b.legal_entity_id.as_deref(), at)
            .await
    }

    /// A registration's SSA: its software product and (from `legal_entity_id`) its data recipient.
    pub async fn check_registration(
        &self,
        software_id: &str,
        legal_entity_id: Option<&str>,
    ) -> Result<(), ProxyError> {
        self.status
            .decide(software_id, legal_entity_id, RegisterCheck::Registration)
            .await
    }

    /// The pass-through's check: the clients `parts` and its form body name, each judged. Returns the body to send
    /// on (the bytes read, when the form had to be read).
    pub async fn screen(
        &self,
        parts: &http::request::Parts,
        body: RespBody,
    ) -> Result<RespBody, Screened> {
        let mut named: Vec<String> = Vec::new();
        let mut withdrawal = false;
        if let Some(q) = parts.uri.query() {
            named.extend(form_clients(q.as_bytes()));
        }
        if let Some(user) = basic_user(&parts.headers) {
            named.push(user);
        }
        let is_form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.split(';').next().is_some_and(|m| {
                    m.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        let body = if is_form {
            let bytes = match read_form(body).await {
                Ok(b) => b,
                Err(None) => {
                    return Err(Screened::Refused(boxed(
                        ProxyError::PayloadTooLarge(MAX_FORM_BYTES).to_response(),
                    )));
                }
                Err(Some(())) => return Err(Screened::BodyFailed),
            };
            named.extend(form_clients(&bytes));
            withdrawal = is_withdrawal(parts.uri.path(), &bytes);
            Full::new(bytes).map_err(|never| match never {}).boxed()
        } else {
            body
        };
        named.sort();
        named.dedup();
        for client_id in &named {
            if let Err(e) = self.check_client(client_id, RegisterCheck::OAuth).await {
                // Revoking only ever takes access away: the Register's Data Holder Responsibilities keep consent
                // withdrawal open to a product that is no longer ACTIVE.
                if withdrawal && self.status.allows_withdrawal() {
                    super::refusal("any", "passed_withdrawal");
                    tracing::info!(client_id, refusal = %e, "passed: a consent withdrawal (revocation) by a client the CDR Register does not list as ACTIVE");
                    continue;
                }
                return Err(Screened::Refused(boxed(e.to_response())));
            }
        }
        Ok(body)
    }
}

/// The whole form, at most [`MAX_FORM_BYTES`]: Err(None) past that, Err(Some) when the body fails. Read frame by
/// frame rather than with `Limited::collect`, whose future trips rustc's Send inference in the pass-through.
async fn read_form(mut body: RespBody) -> Result<Bytes, Option<()>> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Some(()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_FORM_BYTES {
                return Err(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A request that only withdraws consent: CDR arrangement revocation (`cdr_arrangement_id` or `cdr_arrangement_jwt`
/// in the form), or RFC 7009 token revocation (a `token` and no `grant_type`) at a path whose last segment is
/// `revoke` or `revocation` (Keycloak's `.../protocol/openid-connect/revoke`, oidc-provider's `/token/revocation`),
/// which tells it apart from RFC 7662 introspection of the same form.
fn is_withdrawal(path: &str, form: &[u8]) -> bool {
    let mut token = false;
    let mut grant = false;
    for (k, _) in url::form_urlencoded::parse(form) {
        match k.as_ref() {
            "cdr_arrangement_id" | "cdr_arrangement_jwt" => return true,
            "token" => token = true,
            "grant_type" => grant = true,
            _ => {}
        }
    }
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    token
        && !grant
        && (last.eq_ignore_ascii_case("revoke") || last.eq_ignore_ascii_case("revocation"))
}

/// `client_id` values, and the `iss` of any `client_assertion`, in a form or query string.
fn form_clients(form: &[u8]) -> Vec<String> {
    url::form_urlencoded::parse(form)
        .filter_map(|(k, v)| match k.as_ref() {
            "client_id" if !v.is_empty() => Some(v.into_owned()),
            // RFC 7523 §3: iss is the client_id. Not verified here, and it need not be to refuse: a forged iss
            // can only get its own request refused, and whatever passes is verified by the IdP as before.
            "client_assertion" => unverified_claim(&v, "iss"),
            _ => None,
        })
        .collect()
}

/// A string claim of a JWS payload, read without checking the signature.
fn unverified_claim(jws: &str, claim: &str) -> Option<String> {
    use base64::Engine as _;
    if jws.len() > MAX_JWS_BYTES {
        return None;
    }
    let payload = jws.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get(claim)?.as_str().map(str::to_owned)
}

/// The client of RFC 6749 §2.3.1 Basic authentication (form-urlencoded before base64).
fn basic_user(h: &http::HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next()?;
    let user: String = url::form_urlencoded::parse(format!("u={user}").as_bytes())
        .next()
        .map(|(_, u)| u.into_owned())?;
    (!user.is_empty()).then_some(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_names_its_client_id_and_the_assertion_issuer() {
        use base64::Engine as _;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwt = format!("{}.{}.sig", enc("{}"), enc(r#"{"iss":"c-2","sub":"c-2"}"#));
        let form = format!("grant_type=x&client_id=c-1&client_assertion={jwt}");
        assert_eq!(form_clients(form.as_bytes()), vec!["c-1", "c-2"]);
        assert!(form_clients(b"client_assertion=not-a-jwt&client_id=").is_empty());
        let mut h = http::HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode("a%3Ab:secret");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        assert_eq!(basic_user(&h).as_deref(), Some("a:b"));
    }

    #[test]
    fn revocation_is_told_apart_from_introspection_and_token_requests() {
        assert!(is_withdrawal("/token/revocation", b"token=t&client_id=c"));
        assert!(is_withdrawal(
            "/realms/b/protocol/openid-connect/revoke",
            b"token=t"
        ));
        assert!(is_withdrawal(
            "/arrangements/revoke",
            b"cdr_arrangement_id=a"
        ));
        assert!(is_withdrawal("/anything", b"cdr_arrangement_jwt=j"));
        assert!(!is_withdrawal("/token/introspection", b"token=t"));
        assert!(!is_withdrawal(
            "/token/revocation",
            b"token=t&grant_type=refresh_token"
        ));
        assert!(!is_withdrawal("/token", b"grant_type=client_credentials"));
    }
}
