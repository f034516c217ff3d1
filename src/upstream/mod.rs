//! The RFC 7591/7592 client to the IdP: create, read, replace and delete clients, and how we authenticate there.
//! What differs between IdPs is data in `flavour`; Keycloak's Admin REST calls for crash recovery are in
//! `keycloak`, AM's endpoints and administrator session in `forgerock_am`, cached credentials in `tokens`.

pub mod flavour;
pub mod forgerock_am;
pub mod keycloak;
mod tokens;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use crate::outbound::{HttpClient, OutboundError, redact_url};
use crate::secret::Secret;
pub use flavour::Flavour;
use flavour::{AdminApi, ClientUri, CreateCredential, Refused401};
pub use tokens::ClientCredentialsConfig;
use tokens::TokenCache;

/// `[upstream]`: where the IdP's registration API is and how the proxy authenticates there.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// `upstream.flavour`: which dialect of RFC 7591/7592 the IdP speaks.
    pub flavour: Flavour,
    pub base_url: Url,
    pub registration_endpoint: Url,
    pub initial_access_token_env: String,
    /// Empty when the flavour creates with the `[upstream.admin]` credential instead.
    pub initial_access_token: Secret,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// How long a create or replace that outlived `timeout` is still awaited, so it can be undone or kept.
    pub settle_timeout: Duration,
    pub ca_bundle: Option<PathBuf>,
    /// Crash recovery through an administrator's credential; None keeps plain RFC 7591/7592.
    pub admin: Option<UpstreamAdminConfig>,
    /// `[upstream.iat]`: the client whose client_credentials tokens are the initial access tokens (AM).
    pub iat: Option<ClientCredentialsConfig>,
}

/// `[upstream.admin]`: a client_credentials token of an administrator client (Keycloak: a service account
/// with realm-management manage-clients) for crash recovery. With a plain RFC 7591 server the proxy names each
/// client_id before the upstream creates the client, and deletes clients whose registration access token it
/// never learnt (or lost); with Keycloak it finds such clients through Admin REST and mints new tokens. With AM
/// it is an administrator user: `token_endpoint` is AM's authenticate endpoint, `client_id` and
/// `client_secret` the user name and password, and the SSO token goes in `session_header`.
#[derive(Clone)]
pub struct UpstreamAdminConfig {
    pub token_endpoint: Url,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: Option<String>,
    /// Keycloak: the realm's Admin REST base, `…/admin/realms/{realm}/`; AM: its OAuth2Client agents collection.
    pub api_base: Option<Url>,
    /// AM: the header the SSO token is sent in (its cookie name); None: a client_credentials Bearer.
    pub session_header: Option<String>,
}

impl fmt::Debug for UpstreamAdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamAdminConfig")
            .field("token_endpoint", &self.token_endpoint.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("scope", &self.scope)
            .field("api_base", &self.api_base.as_ref().map(Url::as_str))
            .field("session_header", &self.session_header)
            .finish()
    }
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("flavour", &self.flavour)
            .field("base_url", &self.base_url.as_str())
            .field(
                "registration_endpoint",
                &self.registration_endpoint.as_str(),
            )
            .field("initial_access_token_env", &self.initial_access_token_env)
            .field("initial_access_token", &self.initial_access_token)
            .field("admin", &self.admin)
            .field("iat", &self.iat)
            .finish_non_exhaustive()
    }
}

/// Upstream answers are small JSON documents; anything bigger is not a registration response.
pub(super) const MAX_UPSTREAM_BODY: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The IdP refused (4xx): the request was wrong, and nothing was created.
    #[error("upstream refused with HTTP {status}: {description}")]
    Rejected { status: u16, description: String },
    /// The client (or its registration) no longer exists upstream.
    #[error("upstream says the client is gone (HTTP {0})")]
    Gone(u16),
    /// The upstream refused our registration access token and will not say why: the token is stale, or the
    /// client is gone (Keycloak). Only an administrator can tell which.
    #[error(
        "upstream refused the registration access token (HTTP {0}): stale, or the client is gone"
    )]
    TokenRefused(u16),
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    #[error("upstream timed out")]
    Timeout,
    /// 5xx or a body we cannot read: the outcome upstream is unknown.
    #[error("upstream failed: {0}")]
    Failed(String),
}

/// What the upstream returned for a create or replace; secrets wrapped so they never print.
#[derive(Debug)]
pub struct UpstreamClient {
    pub client_id: String,
    pub registration_access_token: Secret,
    pub registration_client_uri: String,
    pub client_id_issued_at: Option<i64>,
    pub metadata: Value,
}

pub struct Upstream {
    flavour: Flavour,
    http: HttpClient,
    registration_endpoint: Url,
    initial_access_token: Secret,
    /// `[upstream.iat]` and its cached token: initial access tokens minted on demand.
    iat: Option<(ClientCredentialsConfig, TokenCache)>,
    /// Crash recovery with an administrator's token; None when `[upstream.admin]` is not configured.
    admin: Option<Admin>,
    /// What a caller waits for an answer. A create or replace still in flight then is not abandoned:
    /// it runs on (up to the HTTP client's own, longer, settle timeout) so its outcome can be put right.
    timeout: std::time::Duration,
}

/// A create or replace either answered in time, or is still running and handed over.
pub enum Outcome<T> {
    Done(Result<T, UpstreamError>),
    Late(tokio::task::JoinHandle<Result<T, UpstreamError>>),
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, String> {
        let http = HttpClient::new(
            cfg.ca_bundle.as_deref(),
            cfg.connect_timeout,
            cfg.settle_timeout.max(cfg.timeout),
            false,
        )?;
        Ok(Upstream {
            flavour: cfg.flavour,
            http,
            registration_endpoint: cfg.registration_endpoint.clone(),
            initial_access_token: cfg.initial_access_token.clone(),
            timeout: cfg.timeout,
            iat: cfg.iat.clone().map(|c| (c, TokenCache::default())),
            admin: cfg.admin.clone().map(|cfg| Admin {
                cfg,
                token: TokenCache::default(),
            }),
        })
    }

    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// Whether an `[upstream.admin]` credential is configured.
    pub fn has_admin(&self) -> bool {
        self.admin.is_some()
    }

    /// Whether the administrator can mint a new registration access token for a client (Keycloak Admin REST).
    pub fn can_mint_tokens(&self) -> bool {
        self.admin.is_some() && self.flavour.admin_api() == AdminApi::KeycloakAdminRest
    }

    /// Whether crash recovery can find a client by a create's fingerprint (Keycloak Admin REST).
    pub fn finds_clients_by_fingerprint(&self) -> bool {
        self.can_mint_tokens()
    }

    /// Whether a refused registration token is checked with the administrator without a new one being minted
    /// (AM: its agents API shows the client, but issues no registration access tokens).
    pub fn confirms_clients_only(&self) -> bool {
        self.admin.is_some() && self.flavour.admin_api() == AdminApi::AmRealmConfig
    }

    /// A new client_id to name in a create, or None when the upstream chooses it. Written to the pending
    /// record before the upstream is called, so a crash after the upstream acted still leaves its name.
    pub fn assign_client_id(&self) -> Option<String> {
        self.flavour
            .names_client_ids(self.admin.is_some())
            .then(|| uuid::Uuid::new_v4().to_string())
    }

    /// The RFC 7592 URI of `client_id`: the registration endpoint with the id as one more path segment, which
    /// is where Keycloak and oidc-provider put it, or as the `client_id` query parameter (AM).
    pub fn client_uri_of(&self, client_id: &str) -> Url {
        let mut url = self.registration_endpoint.clone();
        if self.flavour.client_uri() == ClientUri::BuiltQuery {
            url.query_pairs_mut()
                .clear()
                .append_pair("client_id", client_id);
            return url;
        }
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(client_id);
        }
        url
    }

    /// The administrator API's URL for `client_id`, and the headers it needs besides the credential.
    fn admin_client_url(&self, client_id: &str) -> Result<Url, UpstreamError> {
        Ok(match self.flavour.admin_api() {
            AdminApi::Rfc7592 => self.client_uri_of(client_id),
            AdminApi::KeycloakAdminRest => self.admin_rest()?.client(client_id),
            AdminApi::AmRealmConfig => {
                let agents = self
                    .admin()?
                    .cfg
                    .api_base
                    .as_ref()
                    .ok_or(UpstreamError::Failed(
                        "no AM agents API is configured".into(),
                    ))?;
                forgerock_am::agent_url(agents, client_id)
            }
        })
    }

    fn admin(&self) -> Result<&Admin, UpstreamError> {
        self.admin.as_ref().ok_or(UpstreamError::Failed(
            "no [upstream.admin] credential is configured".into(),
        ))
    }

    /// A call with the administrator's token, fetched again once if the upstream refuses it (revoked or
    /// expired early); bounded by `upstream.timeout`.
    async fn admin_call(
        &self,
        method: Method,
        url: &Url,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        self.admin_call_within(method, url, body, true).await
    }

    /// `admin_call`; `bounded` false leaves the call to the HTTP client's own (settle) timeout, for a create
    /// whose late answer is awaited by its caller.
    async fn admin_call_within(
        &self,
        method: Method,
        url: &Url,
        body: Option<Bytes>,
        bounded: bool,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        let admin = self.admin()?;
        let mut last = None;
        for _ in 0..2 {
            // Without a token nothing was sent to the registration API: callers may take it as untouched.
            let token = self
                .bounded(admin.token(&self.http))
                .await
                .map_err(|e| UpstreamError::Unavailable(format!("[upstream.admin] token: {e}")))?;
            let call = async {
                match &admin.cfg.session_header {
                    Some(name) => {
                        let [version, accept] = forgerock_am::agents_headers();
                        let headers = [
                            (name.as_str(), token.expose()),
                            version,
                            accept,
                            ("content-type", "application/json"),
                        ];
                        self.call_with(method.clone(), url, &headers, body.clone())
                            .await
                    }
                    None => {
                        let auth = format!("Bearer {}", token.expose());
                        self.call(method.clone(), url, &auth, body.clone()).await
                    }
                }
            };
            let reply = if bounded {
                self.bounded(call).await?
            } else {
                call.await?
            };
            if reply.0 != StatusCode::UNAUTHORIZED {
                return Ok(reply);
            }
            admin.token.forget(&token).await;
            last = Some(reply);
        }
        last.ok_or(UpstreamError::Failed("no answer".into()))
    }

    /// Deletes `client_id` with the administrator's token, for a client whose registration access token we
    /// never learnt or lost. Already absent (404) counts as done; a refused token does not, because then we
    /// know nothing about the client.
    /// AM's agents API answers 200 with the deleted agent, and 404 when absent (verified: AM 7.2 docs
    /// "rest-api-oauth2-client-admin-endpoint").
    pub async fn admin_delete(&self, client_id: &str) -> Result<(), UpstreamError> {
        let url = self.admin_client_url(client_id)?;
        let (status, body) = self.admin_call(Method::DELETE, &url, None).await?;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Ok(()),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                // Perhaps revoked or expired early: fetch a new one next time.
                self.admin()?.token.clear().await;
                Err(rejected(status, &body))
            }
            s if s.is_client_error() => Err(rejected(s, &body)),
            s => Err(UpstreamError::Failed(format!("HTTP {}", s.as_u16()))),
        }
    }

    /// Whether the upstream still has `client_id`, asked with the administrator's token.
    pub async fn admin_has_client(&self, client_id: &str) -> Result<bool, UpstreamError> {
        let url = self.admin_client_url(client_id)?;
        let (status, body) = self.admin_call(Method::GET, &url, None).await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_client_error() => Err(rejected(s, &body)),
            s => Err(UpstreamError::Failed(format!("HTTP {}", s.as_u16()))),
        }
    }

    /// RFC 7591 create. Past `upstream.timeout` the call keeps running and is returned as `Late`.
    pub async fn create(self: &Arc<Self>, metadata: Arc<Value>) -> Outcome<UpstreamClient> {
        let me = self.clone();
        self.detached(async move { me.create_now(&metadata).await })
            .await
    }

    /// RFC 7592 full replacement, with the same hand-over as `create`.
    pub async fn replace(
        self: &Arc<Self>,
        client_uri: String,
        rat: Secret,
        metadata: Value,
    ) -> Outcome<UpstreamClient> {
        let me = self.clone();
        self.detached(async move { me.replace_now(&client_uri, &rat, &metadata).await })
            .await
    }

    async fn detached<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, UpstreamError>> + Send + 'static,
    ) -> Outcome<T> {
        let mut handle = tokio::spawn(work);
        match tokio::time::timeout(self.timeout, &mut handle).await {
            Ok(Ok(r)) => Outcome::Done(r),
            Ok(Err(join)) => Outcome::Done(Err(UpstreamError::Failed(join.to_string()))),
            Err(_) => Outcome::Late(handle),
        }
    }

    /// Any other call: bounded by `upstream.timeout`, abandoned after it.
    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or(Err(UpstreamError::Timeout))
    }

    async fn create_now(&self, metadata: &Value) -> Result<UpstreamClient, UpstreamError> {
        let body = Some(crate::body::json_bytes(metadata));
        let reply = match self.flavour.create_credential(self.admin.is_some()) {
            CreateCredential::InitialAccessToken => {
                let auth = format!("Bearer {}", self.initial_access_token.expose());
                self.call(Method::POST, &self.registration_endpoint, &auth, body)
                    .await?
            }
            // A refused administrator token created nothing (Keycloak rolls a refused request back), so it is
            // fetched again and the create sent once more.
            CreateCredential::AdminBearer => {
                self.admin_call_within(Method::POST, &self.registration_endpoint, body, false)
                    .await?
            }
            CreateCredential::MintedToken => self.create_with_minted_token(body).await?,
        };
        match reply.0 {
            StatusCode::CREATED | StatusCode::OK => {
                let mut c = parse_client(&reply.1, None, None)?;
                if matches!(
                    self.flavour.client_uri(),
                    ClientUri::Built | ClientUri::BuiltQuery
                ) {
                    c.registration_client_uri = self.client_uri_of(&c.client_id).to_string();
                }
                Ok(c)
            }
            s if s.is_client_error() => {
                let refusal = rejected(s, &reply.1);
                self.named_client_exists(metadata, refusal).await
            }
            s => Err(UpstreamError::Failed(format!("HTTP {}", s.as_u16()))),
        }
    }

    /// What a 401 from the RFC 7592 endpoint means for this flavour.
    fn refused(&self, status: StatusCode) -> UpstreamError {
        match (status, self.flavour.refused_401()) {
            (StatusCode::UNAUTHORIZED, Refused401::StaleOrGone) => {
                UpstreamError::TokenRefused(status.as_u16())
            }
            _ => UpstreamError::Gone(status.as_u16()),
        }
    }

    /// RFC 7592 read with the stored registration access token. 404, and for a plain RFC 7592 server 401: the
    /// client is gone; a Keycloak 401 is `TokenRefused`.
    pub async fn read(&self, client_uri: &str, rat: &Secret) -> Result<Value, UpstreamError> {
        let url = self.client_url(client_uri)?;
        let auth = format!("Bearer {}", rat.expose());
        let (status, body) = self
            .bounded(self.call(Method::GET, &url, &auth, None))
            .await?;
        match status {
            StatusCode::OK => serde_json::from_slice(&body)
                .map_err(|_| UpstreamError::Failed("answer is not JSON".into())),
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => Err(self.refused(status)),
            s if self.unknown_client_answer(s, &body) => {
                Err(self.refused(StatusCode::UNAUTHORIZED))
            }
            s if s.is_client_error() => Err(rejected(s, &body)),
            s => Err(UpstreamError::Failed(format!("HTTP {}", s.as_u16()))),
        }
    }

    /// RFC 7592 full replacement. Keycloak and oidc-provider rotate the registration access token here;
    /// a server that does not keeps the old one, which we then keep too.
    async fn replace_now(
        &self,
        client_uri: &str,
        rat: &Secret,
        metadata: &Value,
    ) -> Result<UpstreamClient, UpstreamError> {
        let url = self.client_url(client_uri)?;
        let auth = format!("Bearer {}", rat.expose());
        let (status, body) = self
            .call(
                Method::PUT,
                &url,
                &auth,
                Some(crate::body::json_bytes(metadata)),
            )
            .await?;
        match status {
            StatusCode::OK => {
                let mut c = parse_client(&body, Some(client_uri), Some(rat))?;
                // The upstream must not move the client somewhere else.
                if self.flavour.client_uri() == ClientUri::Built
                    || self.client_url(&c.registration_client_uri).is_err()
                {
                    c.registration_client_uri = client_uri.to_string();
                }
                Ok(c)
            }
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => Err(self.refused(status)),
            s if s.is_client_error() => Err(rejected(s, &body)),
            s => Err(UpstreamError::Failed(format!("HTTP {}", s.as_u16()))),
        }
    }

    /// RFC 7592 delete. Already gone counts as done: the goal is "the client does not exist". A token Keycloak
    /// refuses may be stale while the client lives on: then the administrator deletes it, where configured.
    pub async fn delete(
        &self,
        client_id: &str,
        client_uri: &str,
        rat: &Secret,
    ) -> Result<(), UpstreamError> {
        let url = self.client_url(client_uri)?;
        let auth = format!("Bearer {}", rat.expose());
        let (status, body) = self
            .bounded(self.call(Method::DELETE, &url, &auth, None))
            .await?;
        let status = if self.unknown_client_answer(status, &body) {
            StatusCode::UNAUTHORIZED
        } else {
            status
        };
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => match self.refused(status) {
                UpstreamError::TokenRefused(_) if self.has_admin() => {
                    self.admin_delete(client_id).await
                }
                UpstreamError::TokenRefused(_) => {
                    tracing::warn!(
                        client_id,
                        "the upstream refused the registration token on delete; without [upstream.admin] the proxy cannot tell a stale token from a deleted client, and takes the client for gone"
                    );
                    Ok(())
                }
                _ => Ok(()),
            },
            s if s.is_client_error() => Err(rejected(s, &body)),
            s => Err(UpstreamError::Failed(format!("HTTP {}", s.as_u16()))),
        }
    }

    /// The client URI must point at the same origin as the registration endpoint: a record is not
    /// allowed to make us send a registration access token somewhere else.
    fn client_url(&self, client_uri: &str) -> Result<Url, UpstreamError> {
        let url = Url::parse(client_uri).map_err(|_| {
            UpstreamError::Failed("stored registration_client_uri is not a URL".into())
        })?;
        if url.origin() != self.registration_endpoint.origin() {
            return Err(UpstreamError::Failed(format!(
                "registration_client_uri {} is not on the upstream's origin",
                redact_url(&url)
            )));
        }
        Ok(url)
    }

    async fn call(
        &self,
        method: Method,
        url: &Url,
        auth: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        let headers = [
            ("authorization", auth),
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ];
        self.call_with(method, url, &headers, body).await
    }

    async fn call_with(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        let operation = match method {
            Method::POST => "create",
            Method::GET => "read",
            Method::PUT => "replace",
            _ => "delete",
        };
        let started = std::time::Instant::now();
        let reply = self
            .http
            .send(method, url, headers, body, MAX_UPSTREAM_BODY)
            .await
            .map_err(outbound_error);
        crate::metrics::METRICS.observe_upstream(operation, started.elapsed());
        let reply = reply?;
        Ok((reply.status, reply.body))
    }
}

/// The administrator and its cached credential.
struct Admin {
    cfg: UpstreamAdminConfig,
    token: TokenCache,
}

impl Admin {
    async fn token(&self, http: &HttpClient) -> Result<Secret, UpstreamError> {
        let cfg = &self.cfg;
        self.token
            .get(|| async move {
                match &cfg.session_header {
                    Some(_) => {
                        forgerock_am::login(
                            http,
                            &cfg.token_endpoint,
                            &cfg.client_id,
                            &cfg.client_secret,
                        )
                        .await
                    }
                    None => {
                        let cc = ClientCredentialsConfig {
                            token_endpoint: cfg.token_endpoint.clone(),
                            client_id: cfg.client_id.clone(),
                            client_secret: cfg.client_secret.clone(),
                            scope: cfg.scope.clone(),
                        };
                        tokens::client_credentials(http, &cc, "[upstream.admin]").await
                    }
                }
            })
            .await
    }
}

pub(super) fn outbound_error(e: OutboundError) -> UpstreamError {
    match e {
        OutboundError::Timeout(_) => UpstreamError::Timeout,
        OutboundError::Connect(m) => UpstreamError::Unavailable(m),
        other => UpstreamError::Failed(other.to_string()),
    }
}

fn parse_client(
    body: &[u8],
    keep_uri: Option<&str>,
    keep_rat: Option<&Secret>,
) -> Result<UpstreamClient, UpstreamError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| UpstreamError::Failed("answer is not JSON".into()))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let client_id =
        s("client_id").ok_or(UpstreamError::Failed("answer has no client_id".into()))?;
    let rat = s("registration_access_token")
        .map(Secret::new)
        .or_else(|| keep_rat.cloned())
        .ok_or(UpstreamError::Failed(
            "answer has no registration_access_token".into(),
        ))?;
    let uri = s("registration_client_uri")
        .or_else(|| keep_uri.map(str::to_string))
        .ok_or(UpstreamError::Failed(
            "answer has no registration_client_uri".into(),
        ))?;
    Ok(UpstreamClient {
        client_id,
        registration_access_token: rat,
        registration_client_uri: uri,
        client_id_issued_at: v.get("client_id_issued_at").and_then(Value::as_i64),
        metadata: v,
    })
}

/// The upstream's words, made safe to show a TPP: only its error code and description, printable and short.
pub(super) fn rejected(status: StatusCode, body: &[u8]) -> UpstreamError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = v.get("error").and_then(Value::as_str).unwrap_or("rejected");
    let desc = v
        .get("error_description")
        .and_then(Value::as_str)
        .unwrap_or("");
    let text: String = format!("{code}: {desc}")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    UpstreamError::Rejected {
        status: status.as_u16(),
        description: text.trim_end_matches([':', ' ']).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_refusal_is_trimmed_to_its_code_and_description() {
        let body = br#"{"error":"invalid_client_metadata","error_description":"redirect_uris must\nbe https","stack":"at x"}"#;
        match rejected(StatusCode::BAD_REQUEST, body) {
            UpstreamError::Rejected { description, .. } => {
                assert_eq!(
                    description,
                    "invalid_client_metadata: redirect_uris mustbe https"
                )
            }
            other => panic!("{other:?}"),
        }
        match rejected(StatusCode::BAD_REQUEST, b"<html>oops</html>") {
            UpstreamError::Rejected { description, .. } => assert_eq!(description, "rejected"),
            other => panic!("{other:?}"),
        }
    }
}
