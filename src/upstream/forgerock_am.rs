//! ForgeRock / Ping AM: where its endpoints are, derived from the one configured registration endpoint (the
//! realm is that URL's path), its administrator session for crash recovery, and the AM-only turns of a create
//! (minted initial access token, refused-but-named client) and of a read. AM is closed source; each
//! claim names where it was seen (see /work/shared/idp/forgerock-am.md) and whether it is verified or assumed.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use super::{
    Flavour, MAX_UPSTREAM_BODY, Upstream, UpstreamClient, UpstreamError, outbound_error, tokens,
};
use crate::outbound::HttpClient;
use crate::secret::Secret;

/// The session header when `[upstream.admin] session_header` is not set: AM's default cookie name (verified:
/// AM 7.2 docs "rest-api-oauth2-client-admin-endpoint" examples send the SSO token in `iPlanetDirectoryPro`).
pub const DEFAULT_SESSION_HEADER: &str = "iPlanetDirectoryPro";

/// The `/json` API version the OAuth2Client agent endpoints are called with (verified: AM 7.2 docs
/// "rest-api-oauth2-client-admin-endpoint").
const AGENTS_API_VERSION: &str = "protocol=2.0,resource=1.0";

/// The version the authenticate endpoint is called with (verified: PingAM 8 docs "login-using-REST" example).
const AUTHENTICATE_API_VERSION: &str = "resource=2.0, protocol=1.0";

/// AM's endpoints for the realm of `registration_endpoint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmUrls {
    /// `{ctx}/oauth2/{realm path}/access_token`, where the initial access tokens are minted.
    pub token: Url,
    /// `{ctx}/json/realms/root/authenticate`, where the administrator logs in (root realm: `amadmin` lives
    /// there; verified: AM 7.2 docs).
    pub authenticate: Url,
    /// `{ctx}/json/{realm path}/realm-config/agents/OAuth2Client/`.
    pub agents: Url,
}

/// AM's endpoints from its registration endpoint `{ctx}/oauth2/realms/root[/realms/<sub>…]/register` (verified:
/// AM 8.1 docs "rest-api-oauth2-register-endpoint"; `access_token` beside it: SecureApiGateway fapi-pep-as
/// `20-as-dcr-endpoint.json`; `/json/realms/…/realm-config/agents/OAuth2Client`: AM 7.2 docs
/// "rest-api-oauth2-client-admin-endpoint"; realms nest as `realms/root/realms/a/realms/b`: PingAM 8 docs
/// "login-using-REST"). The context path (`/am` by default) is whatever comes before `/oauth2/`.
pub fn am_urls(registration_endpoint: &Url) -> Result<AmUrls, String> {
    let path = registration_endpoint.path().trim_end_matches('/');
    let shape = || {
        format!(
            "`{}` is not an AM registration endpoint ({{context}}/oauth2/realms/root/realms/{{realm}}/register)",
            registration_endpoint.path()
        )
    };
    let rest = path.strip_suffix("/register").ok_or_else(shape)?;
    let (context, realm_path) = rest.rsplit_once("/oauth2/").ok_or_else(shape)?;
    let segments: Vec<&str> = realm_path.split('/').collect();
    // realms/root, then any number of realms/<name>.
    let well_formed = segments.len().is_multiple_of(2)
        && segments.first() == Some(&"realms")
        && segments.get(1) == Some(&"root")
        && segments
            .chunks(2)
            .all(|pair| pair[0] == "realms" && !pair[1].is_empty());
    if !well_formed {
        return Err(shape());
    }
    let at = |p: String| {
        let mut u = registration_endpoint.clone();
        u.set_query(None);
        u.set_fragment(None);
        u.set_path(&p);
        u
    };
    Ok(AmUrls {
        token: at(format!("{context}/oauth2/{realm_path}/access_token")),
        authenticate: at(format!("{context}/json/realms/root/authenticate")),
        agents: at(format!(
            "{context}/json/{realm_path}/realm-config/agents/OAuth2Client/"
        )),
    })
}

/// The agent URL of one client.
pub fn agent_url(agents: &Url, client_id: &str) -> Url {
    let mut url = agents.clone();
    if let Ok(mut s) = url.path_segments_mut() {
        s.pop_if_empty().push(client_id);
    }
    url
}

/// The headers every call to the agents API carries besides the session.
pub fn agents_headers() -> [(&'static str, &'static str); 2] {
    [
        ("accept-api-version", AGENTS_API_VERSION),
        ("accept", "application/json"),
    ]
}

/// Zero-page login: `POST authenticate` with `X-OpenAM-Username`/`X-OpenAM-Password` and an empty body (a body
/// would be read as the continuation of an earlier attempt) answers `{"tokenId", "successUrl", "realm"}`
/// (verified: PingAM 8 docs "login-using-REST", 7.2 docs alike). A refused login is our configuration's fault.
pub(super) async fn login(
    http: &HttpClient,
    authenticate: &Url,
    username: &str,
    password: &Secret,
) -> Result<(Secret, Option<Duration>), UpstreamError> {
    let reply = http
        .send(
            Method::POST,
            authenticate,
            &[
                ("x-openam-username", username),
                ("x-openam-password", password.expose()),
                ("accept-api-version", AUTHENTICATE_API_VERSION),
                ("content-type", "application/json"),
                ("accept", "application/json"),
            ],
            None,
            MAX_UPSTREAM_BODY,
        )
        .await
        .map_err(outbound_error)?;
    if !reply.status.is_success() {
        return Err(UpstreamError::Unavailable(format!(
            "AM refused the [upstream.admin] login (HTTP {})",
            reply.status.as_u16()
        )));
    }
    let v: Value = serde_json::from_slice(&reply.body)
        .map_err(|_| UpstreamError::Failed("AM's authenticate answer is not JSON".into()))?;
    v.get("tokenId")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| (Secret::new(t.to_string()), None))
        .ok_or(UpstreamError::Failed(
            "AM's authenticate answer has no tokenId".into(),
        ))
}

impl Upstream {
    /// A create with the minted initial access token. A refusal of that token (AM: `access_denied`/
    /// `invalid_token`) is our credential's fault: it is minted again and the create sent once more; refused
    /// again, the outcome is a failure of ours (502), never a refusal the TPP could act on.
    pub(super) async fn create_with_minted_token(
        &self,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        let (cfg, cache) = self.iat.as_ref().ok_or(UpstreamError::Unavailable(
            "no [upstream.iat] client is configured".into(),
        ))?;
        for attempt in 0..2 {
            // Without a token nothing was sent: callers may take the create as untouched.
            let token = self
                .bounded(
                    cache.get(|| tokens::client_credentials(&self.http, cfg, "[upstream.iat]")),
                )
                .await
                .map_err(|e| match e {
                    UpstreamError::Unavailable(m) => UpstreamError::Unavailable(m),
                    other => UpstreamError::Unavailable(format!("[upstream.iat] token: {other}")),
                })?;
            let auth = format!("Bearer {}", token.expose());
            let reply = self
                .call(
                    Method::POST,
                    &self.registration_endpoint,
                    &auth,
                    body.clone(),
                )
                .await?;
            let error = serde_json::from_slice::<Value>(&reply.1)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            if !self.flavour.credential_refused(reply.0.as_u16(), &error) {
                return Ok(reply);
            }
            cache.forget(&token).await;
            tracing::warn!(
                attempt,
                error = %error,
                "the upstream refused the minted initial access token; minting a new one"
            );
        }
        Err(UpstreamError::Failed(
            "the upstream refused two freshly minted initial access tokens; check the [upstream.iat] client (its scope, and that it may register clients)".into(),
        ))
    }

    /// A create refused while we named its client_id: AM turns a taken name into the same 400 as bad metadata
    /// (OpenAM `OpenAMClientDAO.create`; assumed for AM), so the administrator is asked whether the named
    /// client exists. It does: the outcome is ours to settle (the pending record stays, the reconciler deletes
    /// it). It does not, or nobody can tell without an administrator: the refusal stands.
    pub(super) async fn named_client_exists(
        &self,
        metadata: &Value,
        refusal: UpstreamError,
    ) -> Result<UpstreamClient, UpstreamError> {
        let named = metadata.get("client_id").and_then(Value::as_str);
        match named {
            Some(id) if self.confirms_clients_only() => match self.admin_has_client(id).await {
                Ok(false) => Err(refusal),
                Ok(true) => Err(UpstreamError::Failed(format!(
                    "the upstream refused the create ({refusal}) but has a client named {id}"
                ))),
                Err(e) => Err(UpstreamError::Failed(format!(
                    "the upstream refused the create ({refusal}); whether it holds a client named {id} is unknown: {e}"
                ))),
            },
            _ => Err(refusal),
        }
    }

    /// AM answers a read or delete of an unknown client 400 `invalid_client_metadata` (OpenAM `getRegistration`;
    /// assumed for AM): without a body to be wrong, that says the client is not there for this token, which the
    /// administrator confirms like a 401.
    pub(super) fn unknown_client_answer(&self, status: StatusCode, body: &[u8]) -> bool {
        self.flavour == Flavour::ForgeRockAm
            && status == StatusCode::BAD_REQUEST
            && serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .as_deref()
                == Some("invalid_client_metadata")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn every_am_endpoint_follows_from_the_registration_endpoint() {
        let u = am_urls(&url(
            "https://am.example.com:8443/am/oauth2/realms/root/realms/alpha/register",
        ))
        .expect("am");
        assert_eq!(
            u.token.as_str(),
            "https://am.example.com:8443/am/oauth2/realms/root/realms/alpha/access_token"
        );
        assert_eq!(
            u.authenticate.as_str(),
            "https://am.example.com:8443/am/json/realms/root/authenticate"
        );
        assert_eq!(
            u.agents.as_str(),
            "https://am.example.com:8443/am/json/realms/root/realms/alpha/realm-config/agents/OAuth2Client/"
        );
        assert_eq!(
            agent_url(&u.agents, "c 1").as_str(),
            "https://am.example.com:8443/am/json/realms/root/realms/alpha/realm-config/agents/OAuth2Client/c%201"
        );
        // No context path, the root realm, a sub-realm.
        let root = am_urls(&url("http://am/oauth2/realms/root/register")).expect("root");
        assert_eq!(
            root.agents.as_str(),
            "http://am/json/realms/root/realm-config/agents/OAuth2Client/"
        );
        let sub = am_urls(&url(
            "http://am/am/oauth2/realms/root/realms/a/realms/b/register/",
        ))
        .expect("sub");
        assert_eq!(
            sub.token.as_str(),
            "http://am/am/oauth2/realms/root/realms/a/realms/b/access_token"
        );
        for bad in [
            "http://am/am/oauth2/register",
            "http://am/am/oauth2/realms/alpha/register",
            "http://am/am/oauth2/realms/root/realms//register",
            "http://am/am/oauth2/realms/root/realms/alpha/registration",
            "http://am/realms/dcr/clients-registrations/openid-connect",
        ] {
            assert!(am_urls(&url(bad)).is_err(), "{bad}");
        }
    }
}
