//! RFC 7662 introspection of an opaque management token, and RFC 7009 revocation with the same client
//! credentials: the calls, and the strict reading of the answers.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Map, Value};
use url::Url;

use super::{Refusal, TokenInfo, confirmation, split_scope};
use crate::outbound::{HttpClient, redact_url};
use crate::secret::Secret;

/// An introspection answer is a few hundred bytes; anything near this is not one.
const MAX_INTROSPECTION_BYTES: usize = 64 * 1024;

/// The introspection endpoint, the optional revocation endpoint and the client credentials for both.
pub(super) struct Introspector {
    http: HttpClient,
    pub(super) endpoint: Url,
    revocation_endpoint: Option<Url>,
    client_id: String,
    client_secret: Secret,
    calls: AtomicU64,
}

/// Plain http is allowed for a sidecar on a pod network, but the operator should know what crosses it in clear.
fn warn_if_plain_http(what: &str, u: &Url) {
    let loopback = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if u.scheme() == "http" && !loopback {
        tracing::warn!(url = %redact_url(u), "{what} is plain http to a non-loopback host: tokens and the client secret travel unencrypted");
    }
}

impl Introspector {
    pub(super) fn new(
        http: HttpClient,
        endpoint: Url,
        revocation_endpoint: Option<Url>,
        client_id: String,
        client_secret: Secret,
    ) -> Result<Self, String> {
        warn_if_plain_http("the introspection endpoint", &endpoint);
        if let Some(u) = &revocation_endpoint {
            warn_if_plain_http("the revocation endpoint", u);
        }
        Ok(Introspector {
            http,
            endpoint,
            revocation_endpoint,
            client_id,
            client_secret,
            calls: AtomicU64::new(0),
        })
    }

    /// Introspection requests sent so far.
    pub(super) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub(super) async fn introspect(&self, token: &str) -> Result<TokenInfo, Refusal> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let endpoint = &self.endpoint;
        let reply = self
            .http
            .post_form(
                endpoint,
                &self.client_id,
                &self.client_secret,
                token_form(token),
                MAX_INTROSPECTION_BYTES,
            )
            .await
            .map_err(|e| {
                Refusal::Unavailable(format!("introspection at {}: {e}", redact_url(endpoint)))
            })?;
        if reply.status != StatusCode::OK {
            if reply.status == StatusCode::UNAUTHORIZED {
                tracing::error!(endpoint = %redact_url(endpoint), "the introspection endpoint refused our client credentials");
            }
            return Err(Refusal::Unavailable(format!(
                "introspection at {} answered HTTP {}",
                redact_url(endpoint),
                reply.status.as_u16()
            )));
        }
        let body: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| Refusal::Unavailable(format!("introspection answer is not JSON: {e}")))?;
        let Value::Object(fields) = body else {
            return Err(Refusal::Unavailable(
                "introspection answer is not a JSON object".into(),
            ));
        };
        parse_introspection(&fields, crate::jwt::now())
    }

    /// RFC 7009. Best effort: failures are logged, never returned.
    pub(super) async fn revoke(&self, token: &str) {
        let Some(endpoint) = &self.revocation_endpoint else {
            tracing::debug!("no revocation endpoint configured; token not revoked");
            return;
        };
        let result = self
            .http
            .post_form(
                endpoint,
                &self.client_id,
                &self.client_secret,
                token_form(token),
                MAX_INTROSPECTION_BYTES,
            )
            .await;
        match result {
            // RFC 7009 §2.2: 200 whether or not the token was still valid.
            Ok(r) if r.status == StatusCode::OK => {
                tracing::info!("revoked an access token presented for another client");
            }
            Ok(r) => tracing::warn!(
                endpoint = %redact_url(endpoint),
                status = r.status.as_u16(),
                "token revocation refused"
            ),
            Err(e) => tracing::warn!(
                endpoint = %redact_url(endpoint),
                error = %e,
                "token revocation failed"
            ),
        }
    }
}

fn token_form(token: &str) -> Bytes {
    Bytes::from(
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish(),
    )
}

/// RFC 7662 §2.2, read strictly: only a JSON `true` is active, and an active token must say whose it is.
fn parse_introspection(f: &Map<String, Value>, now: i64) -> Result<TokenInfo, Refusal> {
    let inactive = |why: &str| Refusal::Inactive(why.to_string());
    match f.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Err(inactive("introspection: active is false")),
        _ => {
            return Err(inactive(
                "introspection: active is missing or not a boolean",
            ));
        }
    }
    if let Some(t) = f.get("token_type") {
        let t = t
            .as_str()
            .ok_or_else(|| inactive("introspection: token_type is not a string"))?;
        if !is_access_token_type(t) {
            return Err(Refusal::Inactive(format!(
                "introspection: token_type `{t}` is not an access token"
            )));
        }
    }
    let client_id = match f.get("client_id") {
        Some(Value::String(c)) if !c.is_empty() => c.clone(),
        _ => return Err(inactive("introspection: no client_id")),
    };
    let exp = crate::jwt::numeric(f, "exp")
        .map_err(|e| Refusal::Inactive(format!("introspection: {e}")))?;
    if exp.is_some_and(|exp| exp <= now) {
        return Err(inactive("introspection: exp is in the past"));
    }
    let scopes = match f.get("scope") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => split_scope(s),
        Some(_) => return Err(inactive("introspection: scope is not a string")),
    };
    let cnf_x5t_s256 =
        confirmation(f.get("cnf")).map_err(|w| Refusal::Inactive(format!("introspection: {w}")))?;
    Ok(TokenInfo {
        client_id,
        scopes,
        cnf_x5t_s256,
        exp,
    })
}

/// Refresh, ID and DPoP tokens are refused: only a token meant to be shown as a Bearer access token manages clients.
fn is_access_token_type(t: &str) -> bool {
    t.eq_ignore_ascii_case("bearer")
        || t == "access_token"
        || t == "urn:ietf:params:oauth:token-type:access_token"
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    use super::*;
    use crate::bearer::fake::*;
    use crate::bearer::{BearerError, BearerMode, BearerValidator, token_of};
    use crate::jwt;

    #[test]
    fn introspection_answers_are_read_strictly() {
        let now = 1_000;
        let parse = |v: Value| parse_introspection(v.as_object().expect("object"), now);
        let info = parse(
            json!({"active": true, "client_id": "c", "scope": "a  cdr:registration",
            "exp": 2000, "token_type": "Bearer", "cnf": {"x5t#S256": X5T}}),
        )
        .expect("active");
        assert_eq!(info.client_id, "c");
        assert_eq!(info.scopes, ["a", "cdr:registration"]);
        assert_eq!(info.cnf_x5t_s256.as_deref(), Some(X5T));
        assert_eq!(info.exp, Some(2000));
        assert!(
            parse(json!({"active": true, "client_id": "c", "token_type": "access_token"})).is_ok()
        );
        for inactive in [
            json!({"active": false, "client_id": "c"}),
            json!({"active": "true", "client_id": "c"}),
            json!({"active": 1, "client_id": "c"}),
            json!({"client_id": "c"}),
            json!({"active": true}),
            json!({"active": true, "client_id": ""}),
            json!({"active": true, "client_id": "c", "token_type": "refresh_token"}),
            json!({"active": true, "client_id": "c", "token_type": "DPoP"}),
            json!({"active": true, "client_id": "c", "exp": 1000}),
            json!({"active": true, "client_id": "c", "exp": "2000"}),
            json!({"active": true, "client_id": "c", "scope": ["a"]}),
            json!({"active": true, "client_id": "c", "cnf": {"jkt": "abc"}}),
            json!({"active": true, "client_id": "c", "cnf": {"x5t#S256": 5}}),
            json!({"active": true, "client_id": "c", "cnf": "x"}),
        ] {
            assert!(
                matches!(parse(inactive.clone()), Err(Refusal::Inactive(_))),
                "{inactive}"
            );
        }
    }

    #[tokio::test]
    async fn introspection_is_a_form_post_with_form_encoded_basic_credentials() {
        let fake = fake_introspection_endpoint().await;
        let token = "tok.en-_~+/==";
        fake.answer(token, active(CLIENT, "cdr:registration"));
        let v = BearerValidator::new(config(&fake)).expect("validator");
        v.authorize(Some(&bearer(token)), CLIENT, None)
            .await
            .expect("accepted");
        let seen = fake.seen();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(s.path, "/introspect");
        // RFC 6749 §2.3.1: each part form-urlencoded (space as +), then joined by ':' and base64-encoded.
        let pair = "dcr+proxy%3A1:s3cr%2Bt%2F+w%3Ax%26%C3%A9";
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Basic {}", STANDARD.encode(pair)).as_str())
        );
        assert_eq!(
            s.body,
            "token=tok.en-_%7E%2B%2F%3D%3D&token_type_hint=access_token"
        );
        assert_eq!(
            s.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(s.accept.as_deref(), Some("application/json"));
    }

    #[tokio::test]
    async fn inactive_unknown_refresh_and_expired_tokens_are_inactive() {
        let fake = fake_introspection_endpoint().await;
        fake.answer("off", json!({"active": false}));
        fake.answer(
            "refresh",
            json!({"active": true, "client_id": CLIENT, "scope": "cdr:registration", "token_type": "refresh_token"}),
        );
        fake.answer(
            "old",
            json!({"active": true, "client_id": CLIENT, "scope": "cdr:registration", "exp": jwt::now() - 1}),
        );
        let v = BearerValidator::new(config(&fake)).expect("validator");
        for t in ["off", "unknown", "refresh", "old"] {
            assert!(
                matches!(
                    v.authorize(Some(&bearer(t)), CLIENT, None).await,
                    Err(BearerError::Inactive)
                ),
                "{t}"
            );
        }
        // Refusals are not cached: each one asked again.
        assert!(
            v.authorize(Some(&bearer("off")), CLIENT, None)
                .await
                .is_err()
        );
        assert_eq!(v.introspections(), 5);
    }

    #[tokio::test]
    async fn a_token_of_another_client_is_wrong_client_and_can_be_revoked() {
        let fake = fake_introspection_endpoint().await;
        let token = "other+client/token=";
        fake.answer(token, active("client-2", "cdr:registration"));
        let v = BearerValidator::new(config(&fake)).expect("validator");
        let header = bearer(token);
        assert!(matches!(
            v.authorize(Some(&header), CLIENT, None).await,
            Err(BearerError::WrongClient)
        ));
        let t = token_of(Some(&header)).expect("well-formed");
        v.revoke(t).await;
        let seen = fake.seen();
        let revocation = seen.last().expect("a revocation request");
        assert_eq!(revocation.path, "/revoke");
        assert_eq!(
            revocation.body,
            "token=other%2Bclient%2Ftoken%3D&token_type_hint=access_token"
        );
        assert_eq!(revocation.authorization, seen[0].authorization);
        assert_eq!(
            revocation.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        // Revocation also drops our cached copy, so the next use asks again and learns it is gone.
        assert!(matches!(
            v.authorize(Some(&header), "client-2", None).await,
            Err(BearerError::Inactive)
        ));
        assert_eq!(v.introspections(), 2);
    }

    #[tokio::test]
    async fn an_endpoint_that_is_down_slow_or_failing_is_unavailable() {
        let fake = fake_introspection_endpoint().await;
        fake.answer("tok", active(CLIENT, "cdr:registration"));

        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let mut cfg = config(&fake);
        if let BearerMode::Introspection { endpoint, .. } = &mut cfg.mode {
            *endpoint = Url::parse(&format!("http://{closed}/introspect")).expect("url");
        }
        let v = BearerValidator::new(cfg).expect("validator");
        assert!(matches!(
            v.authorize(Some(&bearer("tok")), CLIENT, None).await,
            Err(BearerError::Unavailable(_))
        ));

        for status in [500, 401, 302] {
            fake.lock().status = Some(status);
            let v = BearerValidator::new(config(&fake)).expect("validator");
            match v.authorize(Some(&bearer("tok")), CLIENT, None).await {
                Err(BearerError::Unavailable(why)) => {
                    assert!(why.contains(&status.to_string()), "{why}")
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        fake.lock().status = None;

        fake.lock().delay = Some(Duration::from_secs(2));
        let mut cfg = config(&fake);
        cfg.timeout = Duration::from_millis(200);
        let v = BearerValidator::new(cfg).expect("validator");
        let started = Instant::now();
        assert!(matches!(
            v.authorize(Some(&bearer("tok")), CLIENT, None).await,
            Err(BearerError::Unavailable(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
