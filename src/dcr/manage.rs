//! GET/PUT/DELETE /register/{ClientId} (RFC 7592 behind OB v3.1 and CDR 1.13): who is calling, then the
//! upstream, then the record — in an order that never leaves a record holding a dead registration token.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;

use super::{Audit, Registrar, Verified, metadata, store_error};
use crate::bearer::BearerError;
use crate::dcr::profile::ProfileKind;
use crate::error::{ErrorCode, ProxyError, json_response, no_content};
use crate::identity::PeerCert;
use crate::secret::Secret;
use crate::store::{
    CreateFingerprint, PendingOp, PendingReplacement, RecordState, Registration, StoreError,
};
use crate::upstream::{Outcome, UpstreamError};

/// How often the rotated token is written back before we hand the job to a background task.
const PERSIST_ATTEMPTS: u32 = 4;

impl Registrar {
    pub async fn handle_client(
        &self,
        method: &Method,
        client_id: &str,
        headers: &HeaderMap,
        body: Incoming,
        peer: Option<&PeerCert>,
    ) -> Response<Full<Bytes>> {
        let mut audit = Audit {
            client_id: Some(client_id.to_string()),
            ..Audit::default()
        };
        let operation = match *method {
            Method::GET => "read",
            Method::PUT => "replace",
            Method::DELETE => "delete",
            _ => "manage",
        };
        let result = self
            .client_inner(method, client_id, headers, body, peer, &mut audit)
            .await;
        self.finish(operation, &audit, peer, result)
    }

    async fn client_inner(
        &self,
        method: &Method,
        client_id: &str,
        headers: &HeaderMap,
        body: Incoming,
        peer: Option<&PeerCert>,
        audit: &mut Audit,
    ) -> Result<Response<Full<Bytes>>, ProxyError> {
        super::allowed(method, false)?;
        let Some(bearer) = &self.bearer else {
            return Err(ProxyError::NotFound);
        };
        // 1. The TLS layer verified the chain; the token check below needs the certificate too.
        let peer = peer.ok_or(ProxyError::NoClientCertificate)?;
        // 2. Exactly one bearer token, valid, issued to this client, bound to this certificate, in scope.
        let mut auths = headers.get_all(header::AUTHORIZATION).iter();
        let auth = auths.next();
        if auths.next().is_some() {
            return Err(BearerError::Malformed("send one Authorization header".into()).into());
        }
        match bearer
            .authorize(auth, client_id, Some(&peer.thumbprint_s256))
            .await
        {
            Ok(_) => {}
            Err(BearerError::WrongClient) => {
                // OB: a token presented for another client is revoked by the bank.
                if self.profile.kind() == ProfileKind::ObV31
                    && let Some(token) = crate::bearer::token_of(auth)
                {
                    bearer.revoke(token).await;
                }
                return Err(self.unknown_client());
            }
            Err(e) => return Err(e.into()),
        }
        // 2b. CDR: the Register still lists the client's software product and data recipient as ACTIVE.
        if let Some(status) = &self.status {
            status.admit_client(client_id).await?;
        }
        // 3. Our record. Unknown or deleted looks exactly like another client's token: the answer
        //    must not reveal whether a ClientId exists.
        let rec = self
            .store
            .get_by_client_id(client_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| self.unknown_client())?;
        audit.software_id = Some(rec.software_id.clone());
        audit.org_id = rec.org_id.clone();
        if rec.state != RecordState::Active {
            return Err(ProxyError::Busy);
        }
        let (Some(uri), Some(rat)) = (
            rec.registration_client_uri.clone(),
            rec.registration_access_token.clone().map(Secret::new),
        ) else {
            return Err(ProxyError::Internal(
                "an active record without its registration token".into(),
            ));
        };
        match *method {
            Method::GET => self.read(&rec, &uri, &rat).await,
            Method::PUT => {
                self.replace(rec, &uri, &rat, headers, body, peer, audit)
                    .await
            }
            _ => self.delete(&rec, &uri, &rat).await,
        }
    }

    async fn read(
        &self,
        rec: &Registration,
        uri: &str,
        rat: &Secret,
    ) -> Result<Response<Full<Bytes>>, ProxyError> {
        let client_id = rec.client_id.as_deref().unwrap_or_default();
        match self.upstream.read(uri, rat).await {
            Ok(_) => Ok(json_response(
                StatusCode::OK,
                &answer(rec, &rec.metadata, &rec.software_statement),
            )),
            Err(UpstreamError::TokenRefused(_)) => match self.confirm_refused_token(rec).await? {
                Confirmed::Reissued | Confirmed::AliveWithoutToken => Ok(json_response(
                    StatusCode::OK,
                    &answer(rec, &rec.metadata, &rec.software_statement),
                )),
                Confirmed::Gone => Err(self.unknown_client()),
            },
            Err(UpstreamError::Gone(_)) => {
                tracing::warn!(
                    client_id,
                    "client deleted at the upstream behind our back; marking the record gone"
                );
                self.store.mark_gone(client_id).await.map_err(store_error)?;
                Err(self.unknown_client())
            }
            Err(e) => Err(upstream_error(e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn replace(
        &self,
        rec: Registration,
        uri: &str,
        rat: &Secret,
        headers: &HeaderMap,
        body: Incoming,
        peer: &PeerCert,
        audit: &mut Audit,
    ) -> Result<Response<Full<Bytes>>, ProxyError> {
        let client_id = rec.client_id.clone().unwrap_or_default();
        // The body is a full registration request, checked exactly like a POST.
        let Verified { ssa, md, rendered } = self.verify(headers, body, peer, audit).await?;
        if ssa.software_id != rec.software_id {
            return Err(ProxyError::rejected(
                ErrorCode::InvalidSoftwareStatement,
                format!(
                    "the software statement is for software `{}`, but this client was registered for `{}`",
                    ssa.software_id, rec.software_id
                ),
            ));
        }
        let mut request = md.to_upstream(
            &ssa,
            peer,
            &self.profile,
            self.upstream.flavour().dn_rendering(),
        );
        if let Some(o) = request.as_object_mut() {
            // RFC 7592 §2.2: the full metadata, including the client_id (Keycloak: "Client Identifier
            // modified" unless it equals the path's).
            o.insert("client_id".into(), Value::from(client_id.clone()));
        }
        let mut stored = rendered;
        if let (Some(o), Some(issued)) = (
            stored.as_object_mut(),
            rec.metadata.get("client_id_issued_at"),
        ) {
            o.insert("client_id_issued_at".into(), issued.clone());
        }

        // Mark the change before the upstream acts, with what the record becomes: a crash from here on leaves
        // a trace to reconcile, and enough to finish the replacement if its rotated token is lost.
        let replacement = PendingReplacement {
            fingerprint: CreateFingerprint::of(&request),
            metadata: stored.clone(),
            software_statement: ssa.raw.clone(),
        };
        self.store
            .begin_replace(&client_id, &replacement)
            .await
            .map_err(change_error)?;
        let asked =
            serde_json::json!({ "scope": request.get("scope").cloned().unwrap_or(Value::Null) });
        let result = match self
            .upstream
            .replace(uri.to_string(), rat.clone(), request)
            .await
        {
            Outcome::Done(r) => r,
            Outcome::Late(call) => {
                // The TPP sees a timeout; the change may still land, and then its rotated token must too.
                let store = self.store.clone();
                let (cid, meta, ssa_raw) = (client_id.clone(), stored.clone(), ssa.raw.clone());
                tokio::spawn(async move {
                    match call.await {
                        Ok(Ok(u)) => {
                            keep_rotated_token(
                                store,
                                cid,
                                u.registration_access_token,
                                meta,
                                ssa_raw,
                            )
                            .await
                        }
                        Ok(Err(UpstreamError::Rejected { .. } | UpstreamError::Unavailable(_))) => {
                            let _ = store.cancel_change(&cid).await;
                        }
                        Ok(Err(UpstreamError::Gone(_))) => {
                            let _ = store.mark_gone(&cid).await;
                        }
                        // Refused before anything changed; whether the client lives is the reconciler's to find.
                        Ok(Err(UpstreamError::TokenRefused(_))) => {}
                        _ => {
                            tracing::warn!(client_id = %cid, "a late replacement never settled; the record stays pending for reconciliation")
                        }
                    }
                });
                return Err(ProxyError::UpstreamTimeout);
            }
        };
        let updated = match result {
            Ok(u) => u,
            Err(UpstreamError::Rejected {
                description,
                status,
            }) => {
                self.store
                    .cancel_change(&client_id)
                    .await
                    .map_err(store_error)?;
                return Err(ProxyError::rejected(
                    ErrorCode::InvalidClientMetadata,
                    self.upstream.flavour().describe_refusal(
                        status,
                        &description,
                        &asked,
                        "update",
                    ),
                ));
            }
            // The token was refused before anything changed: the record goes back to Active, and is either
            // given a new token (the TPP tries again) or found gone.
            Err(UpstreamError::TokenRefused(_)) => {
                self.store
                    .cancel_change(&client_id)
                    .await
                    .map_err(store_error)?;
                return Err(match self.confirm_refused_token(&rec).await? {
                    Confirmed::Reissued => ProxyError::Busy,
                    // AM: the client lives but nobody holds a token that may change it any more.
                    Confirmed::AliveWithoutToken => ProxyError::UpstreamUnavailable(
                        "the bank's authorisation server no longer accepts this client's registration access token (it may have expired with the initial access token it was issued as), so the update cannot be made; the registration itself is unchanged".into(),
                    ),
                    Confirmed::Gone => self.unknown_client(),
                });
            }
            Err(UpstreamError::Gone(_)) => {
                self.store
                    .mark_gone(&client_id)
                    .await
                    .map_err(store_error)?;
                return Err(self.unknown_client());
            }
            Err(e @ UpstreamError::Unavailable(_)) => {
                // Nothing reached the upstream: the stored token is still the live one.
                self.store
                    .cancel_change(&client_id)
                    .await
                    .map_err(store_error)?;
                return Err(upstream_error(e));
            }
            // Timeout or 5xx: the upstream may have rotated the token. The record stays pending for
            // reconciliation rather than pretending the old token still works.
            Err(e) => return Err(upstream_error(e)),
        };

        let ignored = self
            .upstream
            .flavour()
            .ignored_scopes(&asked, &updated.metadata);
        if !ignored.is_empty() {
            tracing::error!(
                client_id = %client_id,
                scopes = %ignored.join(" "),
                "the upstream accepted but ignored these scopes in an update (Keycloak: no client scope of that name in the realm); tokens for them will be refused until the client scopes exist"
            );
        }

        // The upstream has rotated the token: it must reach the store, whatever it takes.
        let new_rat = updated.registration_access_token.clone();
        if let Err(e) = self
            .persist_replace(&client_id, &new_rat, &stored, &ssa.raw)
            .await
        {
            tracing::error!(client_id = %client_id, error = %e, "rotated registration token not yet stored; retrying in the background");
            tokio::spawn(keep_rotated_token(
                self.store.clone(),
                client_id.clone(),
                new_rat,
                stored.clone(),
                ssa.raw.clone(),
            ));
            return Err(store_error(e));
        }
        let shown = Registration {
            metadata: stored.clone(),
            ..rec
        };
        Ok(json_response(
            StatusCode::OK,
            &answer(&shown, &stored, &ssa.raw),
        ))
    }

    async fn persist_replace(
        &self,
        client_id: &str,
        rat: &Secret,
        metadata: &Value,
        ssa: &str,
    ) -> Result<(), StoreError> {
        let mut last = StoreError::Unavailable("not attempted".into());
        for attempt in 0..PERSIST_ATTEMPTS {
            match self
                .store
                .complete_replace(client_id, rat.expose(), metadata, ssa)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e @ StoreError::Unavailable(_)) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn delete(
        &self,
        rec: &Registration,
        uri: &str,
        rat: &Secret,
    ) -> Result<Response<Full<Bytes>>, ProxyError> {
        let client_id = rec.client_id.as_deref().unwrap_or_default();
        self.store
            .begin_change(client_id, PendingOp::Delete)
            .await
            .map_err(change_error)?;
        match self.upstream.delete(client_id, uri, rat).await {
            // Any 2xx, and "already gone", mean the client no longer exists upstream.
            Ok(()) => {}
            Err(e @ (UpstreamError::Unavailable(_) | UpstreamError::Rejected { .. })) => {
                self.store
                    .cancel_change(client_id)
                    .await
                    .map_err(store_error)?;
                return Err(upstream_error(e));
            }
            // Unknown outcome: the pending delete is finished by the reconciler.
            Err(e) => return Err(upstream_error(e)),
        }
        self.store.remove(client_id).await.map_err(store_error)?;
        Ok(no_content())
    }

    /// The upstream refused the record's registration token without saying whether the client still exists
    /// (Keycloak, AM). With Keycloak's administrator a new token is minted and stored (the record works again);
    /// AM's administrator can only say whether the client lives (AM issues no new registration tokens); when
    /// the client is gone, or nobody can tell, the record is marked gone.
    async fn confirm_refused_token(&self, rec: &Registration) -> Result<Confirmed, ProxyError> {
        let client_id = rec.client_id.as_deref().unwrap_or_default();
        if self.upstream.confirms_clients_only() {
            if self
                .upstream
                .admin_has_client(client_id)
                .await
                .map_err(upstream_error)?
            {
                tracing::warn!(
                    client_id,
                    "the upstream refused the stored registration token but still has the client (AM: the token may have expired with the initial access token it was issued as)"
                );
                return Ok(Confirmed::AliveWithoutToken);
            }
            tracing::warn!(
                client_id,
                "client deleted at the upstream behind our back; marking the record gone"
            );
            self.store.mark_gone(client_id).await.map_err(store_error)?;
            return Ok(Confirmed::Gone);
        }
        if !self.upstream.can_mint_tokens() {
            tracing::warn!(
                client_id,
                "the upstream refused the stored registration token; without [upstream.admin] a stale token cannot be told from a deleted client, so the record is marked gone"
            );
            self.store.mark_gone(client_id).await.map_err(store_error)?;
            return Ok(Confirmed::Gone);
        }
        match self
            .upstream
            .mint_registration_token(client_id)
            .await
            .map_err(upstream_error)?
        {
            None => {
                tracing::warn!(
                    client_id,
                    "client deleted at the upstream behind our back; marking the record gone"
                );
                self.store.mark_gone(client_id).await.map_err(store_error)?;
                Ok(Confirmed::Gone)
            }
            Some(new_rat) => {
                self.store
                    .begin_change(client_id, PendingOp::Replace)
                    .await
                    .map_err(change_error)?;
                if let Err(e) = self
                    .persist_replace(client_id, &new_rat, &rec.metadata, &rec.software_statement)
                    .await
                {
                    // The old token is dead now: the new one must reach the store, whatever it takes.
                    tokio::spawn(keep_rotated_token(
                        self.store.clone(),
                        client_id.to_string(),
                        new_rat,
                        rec.metadata.clone(),
                        rec.software_statement.clone(),
                    ));
                    return Err(store_error(e));
                }
                tracing::warn!(
                    client_id,
                    "the stored registration token was stale; a new one was minted with the admin credential and stored"
                );
                Ok(Confirmed::Reissued)
            }
        }
    }

    /// An unknown, deleted or other client's ClientId: one answer for all, so existence is not revealed.
    fn unknown_client(&self) -> ProxyError {
        let (error, description) = match self.profile.kind() {
            // CDR 1.13 prescribes this exact challenge.
            ProfileKind::Cdr113 => ("invalid_request", "The client is unknown"),
            ProfileKind::ObV31 => (
                "invalid_token",
                "the access token is not valid for this client",
            ),
        };
        ProxyError::UnknownClient { error, description }
    }
}

/// What the administrator found behind a refused registration token.
enum Confirmed {
    /// The client lives and the record holds a new token (Keycloak).
    Reissued,
    /// The client lives; no new token can be had (AM).
    AliveWithoutToken,
    /// The client is gone, or nobody can tell: the record is marked gone.
    Gone,
}

/// Stores a rotated registration token however long the store takes to come back (bounded at ten
/// minutes): losing it would leave the record holding a dead token.
async fn keep_rotated_token(
    store: std::sync::Arc<dyn crate::store::RegistrationStore>,
    client_id: String,
    rat: Secret,
    metadata: Value,
    ssa: String,
) {
    for attempt in 0..120u32 {
        match store
            .complete_replace(&client_id, rat.expose(), &metadata, &ssa)
            .await
        {
            Ok(()) => {
                tracing::info!(client_id = %client_id, attempt, "rotated registration token stored");
                return;
            }
            Err(e) => {
                tracing::warn!(client_id = %client_id, attempt, error = %e, "storing the rotated registration token failed")
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    tracing::error!(client_id = %client_id, "gave up storing the rotated registration token; the record stays pending");
}

/// The profile's response for a stored registration.
fn answer(rec: &Registration, metadata: &Value, ssa: &str) -> Value {
    let issued_at = metadata
        .get("client_id_issued_at")
        .and_then(Value::as_i64)
        .unwrap_or(rec.created_at);
    metadata::response_body(
        metadata.clone(),
        rec.client_id.as_deref().unwrap_or_default(),
        issued_at,
        ssa,
    )
}

fn change_error(e: StoreError) -> ProxyError {
    match e {
        StoreError::Conflict | StoreError::NotFound => ProxyError::Busy,
        other => store_error(other),
    }
}

fn upstream_error(e: UpstreamError) -> ProxyError {
    match e {
        UpstreamError::Timeout => ProxyError::UpstreamTimeout,
        other => ProxyError::UpstreamUnavailable(other.to_string()),
    }
}
