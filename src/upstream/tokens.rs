//! The proxy's own credentials at the IdP, each fetched when needed and cached until shortly before it expires:
//! an administrator's token (`[upstream.admin]`: client_credentials, or an AM SSO session) and a minted initial
//! access token (`[upstream.iat]`: client_credentials on a static client).

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use url::Url;

use super::{MAX_UPSTREAM_BODY, UpstreamError, outbound_error, rejected};
use crate::outbound::HttpClient;
use crate::secret::Secret;

/// A client_credentials grant: `[upstream.admin]` (Keycloak, plain RFC 7591) and `[upstream.iat]`.
#[derive(Clone)]
pub struct ClientCredentialsConfig {
    pub token_endpoint: Url,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: Option<String>,
}

impl std::fmt::Debug for ClientCredentialsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentialsConfig")
            .field("token_endpoint", &self.token_endpoint.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Tokens are renewed this long before the IdP says they expire, so none dies between being read here and
/// arriving there.
const MARGIN: Duration = Duration::from_secs(30);

/// How long a token whose answer names no lifetime is used. AM's authenticate answer carries none (verified:
/// PingAM 8 docs "login-using-REST": `{tokenId, successUrl, realm}`); its session timeouts are AM settings not
/// read here, so a session is used for a minute and a new one opened after (recovery is rare).
const UNNAMED_LIFETIME: Duration = Duration::from_secs(60);

/// No token is used longer than this, whatever its `expires_in` says.
const LONGEST_KEPT: Duration = Duration::from_secs(24 * 3600);

/// A token and when to stop using it. A mutex, not a lock-free cache: one fetch at a time is what we want,
/// and every caller waiting for it gets the same token.
#[derive(Default)]
pub(super) struct TokenCache {
    slot: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

impl TokenCache {
    /// The cached token, or a new one from `fetch` (token and lifetime).
    pub(super) async fn get<F, Fut>(&self, fetch: F) -> Result<Secret, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(Secret, Option<Duration>), UpstreamError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((token, until)) = slot.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = fetch().await?;
        // `expires_in` is the IdP's number: an absurd one must neither overflow `Instant` nor pin a token for years.
        let lifetime = lifetime.unwrap_or(UNNAMED_LIFETIME).min(LONGEST_KEPT);
        // A lifetime shorter than twice the margin is used for half of it rather than not at all.
        let keep = if lifetime > MARGIN * 2 {
            lifetime - MARGIN
        } else {
            lifetime / 2
        };
        *slot = Some((token.clone(), Instant::now() + keep));
        Ok(token)
    }

    /// Forgets whatever is cached.
    pub(super) async fn clear(&self) {
        *self.slot.lock().await = None;
    }

    /// Forgets `stale` (refused upstream), unless another caller already replaced it.
    pub(super) async fn forget(&self, stale: &Secret) {
        let mut slot = self.slot.lock().await;
        if slot
            .as_ref()
            .is_some_and(|(t, _)| t.expose() == stale.expose())
        {
            *slot = None;
        }
    }
}

/// RFC 6749 §4.4 with client_secret_basic: the token and its `expires_in`.
pub(super) async fn client_credentials(
    http: &HttpClient,
    cfg: &ClientCredentialsConfig,
    what: &str,
) -> Result<(Secret, Option<Duration>), UpstreamError> {
    let form = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(scope) = &cfg.scope {
            form.append_pair("scope", scope);
        }
        form.finish()
    };
    let reply = http
        .post_form(
            &cfg.token_endpoint,
            &cfg.client_id,
            &cfg.client_secret,
            Bytes::from(form),
            MAX_UPSTREAM_BODY,
        )
        .await
        .map_err(outbound_error)?;
    if !reply.status.is_success() {
        let e = rejected(reply.status, &reply.body);
        return Err(UpstreamError::Unavailable(format!(
            "the token endpoint refused the {what} client: {e}"
        )));
    }
    let v: Value = serde_json::from_slice(&reply.body)
        .map_err(|_| UpstreamError::Failed("token answer is not JSON".into()))?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| Secret::new(t.to_string()))
        .ok_or(UpstreamError::Failed(
            "token answer has no access_token".into(),
        ))?;
    let lifetime = v
        .get("expires_in")
        .and_then(Value::as_u64)
        .map(Duration::from_secs);
    Ok((token, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_is_reused_until_shortly_before_it_expires_and_forgotten_when_refused() {
        let cache = TokenCache::default();
        let fetch = |t: &'static str, life: u64| {
            move || async move {
                Ok::<_, UpstreamError>((
                    Secret::new(t.to_string()),
                    Some(Duration::from_secs(life)),
                ))
            }
        };
        let a = cache.get(fetch("a", 3600)).await.expect("a");
        assert_eq!(cache.get(fetch("b", 3600)).await.expect("a").expose(), "a");
        // Forgetting another token than the cached one changes nothing.
        cache.forget(&Secret::new("z".to_string())).await;
        assert_eq!(cache.get(fetch("b", 3600)).await.expect("a").expose(), "a");
        cache.forget(&a).await;
        assert_eq!(cache.get(fetch("b", 1)).await.expect("b").expose(), "b");
        // A one-second token is kept for half a second, then fetched again.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(cache.get(fetch("c", 3600)).await.expect("c").expose(), "c");
    }

    #[tokio::test]
    async fn an_absurd_expires_in_is_capped_not_a_panic() {
        let cache = TokenCache::default();
        let token = cache
            .get(|| async {
                Ok::<_, UpstreamError>((Secret::new("t"), Some(Duration::from_secs(u64::MAX))))
            })
            .await
            .expect("a token");
        assert_eq!(token.expose(), "t");
        let until = cache
            .slot
            .lock()
            .await
            .as_ref()
            .map(|(_, u)| *u)
            .expect("cached");
        assert!(until <= Instant::now() + LONGEST_KEPT);
    }
}
