//! The reconciler: finishes or rolls back registrations left pending by a timeout, a store outage or a
//! crash, until the upstream and the store agree. Safe to run on every replica at once: each step is
//! idempotent and the store refuses a transition from a state that has already moved on.

use std::sync::Arc;
use std::time::Duration;

use crate::secret::Secret;
use crate::store::{CreateFingerprint, PendingOp, Registration, RegistrationStore, StoreError};
use crate::upstream::{Upstream, UpstreamError};

/// Pending creates looked at by the in-flight sibling guard.
const SIBLINGS: usize = 1000;

#[derive(Clone, Debug)]
pub struct ReconcileConfig {
    pub interval: Duration,
    /// A record must have been pending this long before it is touched, so requests still in flight
    /// (and late upstream answers being settled) are left alone.
    pub after: Duration,
}

pub async fn run(store: Arc<dyn RegistrationStore>, upstream: Arc<Upstream>, cfg: ReconcileConfig) {
    let mut tick = tokio::time::interval(cfg.interval);
    loop {
        tick.tick().await;
        match pass(store.as_ref(), &upstream, cfg.after).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "reconciler settled pending registrations"),
            Err(e) => tracing::warn!(error = %e, "reconciler pass failed; retrying next interval"),
        }
    }
}

/// One pass over pending records; returns how many were settled.
pub async fn pass(
    store: &dyn RegistrationStore,
    upstream: &Upstream,
    after: Duration,
) -> Result<usize, StoreError> {
    let older_than = crate::jwt::now() - after.as_secs() as i64;
    let mut settled = 0;
    for rec in store.pending(older_than, 100).await? {
        match settle(store, upstream, &rec, older_than).await {
            Ok(true) => settled += 1,
            Ok(false) => store.bump_attempts(rec.id).await?,
            Err(StoreError::Conflict | StoreError::NotFound) => {} // another replica got there first
            Err(e) => return Err(e),
        }
    }
    Ok(settled)
}

async fn settle(
    store: &dyn RegistrationStore,
    upstream: &Upstream,
    rec: &Registration,
    settled_before: i64,
) -> Result<bool, StoreError> {
    let target = match (
        &rec.client_id,
        &rec.registration_client_uri,
        &rec.registration_access_token,
    ) {
        (Some(id), Some(uri), Some(rat)) => {
            Some((id.as_str(), uri.as_str(), Secret::new(rat.clone())))
        }
        _ => None,
    };
    // A create that never completed at an upstream that names clients itself (Keycloak): find what it made
    // by what we sent, delete it, then release the reservation.
    if rec.pending_op == Some(PendingOp::Create)
        && upstream.finds_clients_by_fingerprint()
        && let Some(fp) = &rec.create_fingerprint
    {
        return remove_unrecorded(store, upstream, rec, fp, settled_before).await;
    }
    match (rec.pending_op, target) {
        (Some(PendingOp::Delete), Some((client_id, uri, rat))) => {
            match upstream.delete(client_id, uri, &rat).await {
                Ok(()) => {
                    store.remove(client_id).await?;
                    tracing::info!(client_id, "pending delete finished");
                    Ok(true)
                }
                Err(e) => {
                    tracing::warn!(client_id, error = %e, "pending delete still failing");
                    Ok(false)
                }
            }
        }
        (Some(PendingOp::Replace), Some((client_id, uri, rat))) => {
            match upstream.read(uri, &rat).await {
                // The stored token still works: the replacement did not rotate it, so the record is usable.
                Ok(_) => {
                    store.cancel_change(client_id).await?;
                    tracing::info!(
                        client_id,
                        "pending replacement rolled back; the stored token is live"
                    );
                    Ok(true)
                }
                // Keycloak: the PUT rotated the token and its answer was lost, or the client is gone. A new
                // token is minted; the client's metadata says whether the replacement landed.
                Err(UpstreamError::TokenRefused(_)) if upstream.can_mint_tokens() => {
                    heal_lost_rotation(store, upstream, rec, client_id).await
                }
                // The token was rotated and the new one lost, or the client was deleted (AM: or the token
                // expired with the initial access token it was issued as, and no new one can be had). With the
                // admin credential the client is removed first, so no upstream client outlives its record; the
                // TPP registers again.
                Err(UpstreamError::Gone(_)) if upstream.has_admin() => {
                    admin_remove(store, upstream, client_id).await
                }
                Err(UpstreamError::TokenRefused(_)) if upstream.confirms_clients_only() => {
                    admin_remove(store, upstream, client_id).await
                }
                Err(UpstreamError::Gone(_) | UpstreamError::TokenRefused(_)) => {
                    store.mark_gone(client_id).await?;
                    tracing::error!(
                        client_id,
                        "pending replacement: the stored registration token no longer works (rotated and lost, or the client was deleted); record marked gone, the upstream client may need an administrator"
                    );
                    Ok(true)
                }
                Err(e) => {
                    tracing::warn!(client_id, error = %e, "pending replacement: upstream not reachable yet");
                    Ok(false)
                }
            }
        }
        // A create that never completed, and we named its client: delete whatever the upstream made under
        // that name (404 when it made nothing), then release the reservation.
        (Some(PendingOp::Create), _) if upstream.has_admin() && rec.client_id.is_some() => {
            let client_id = rec.client_id.as_deref().unwrap_or_default();
            match upstream.admin_delete(client_id).await {
                Ok(()) => {
                    store.abandon(rec.id).await?;
                    tracing::info!(
                        id = %rec.id,
                        client_id,
                        software_id = %rec.software_id,
                        "abandoned a registration that never completed; its upstream client (if the upstream made one) was deleted with the admin credential"
                    );
                    Ok(true)
                }
                Err(e) => {
                    tracing::warn!(id = %rec.id, client_id, error = %e, "pending create: admin delete failing");
                    Ok(false)
                }
            }
        }
        // A create never learnt its client: RFC 7591 offers no way to find one by our reservation, so
        // the reservation is released (which also frees a unique software_id). Late answers inside
        // this process are settled by the request path before `after` has passed.
        (Some(PendingOp::Create), _) => {
            store.abandon(rec.id).await?;
            tracing::warn!(
                id = %rec.id,
                software_id = %rec.software_id,
                "abandoned a registration that never completed; if its process died after the upstream created the client, that client needs removing by an administrator"
            );
            Ok(true)
        }
        _ => {
            tracing::warn!(id = %rec.id, "pending record without an operation or its upstream handle");
            Ok(false)
        }
    }
}

/// A create whose client_id we never learnt: every client in the realm that carries the create's fingerprint
/// and that no record knows (in any state) is deleted, then the reservation is released. Assumes the realm is
/// the proxy's: a client carrying a TPP's software JWKS URL, redirect URIs, name and DN was made by it. While
/// another create with the same fingerprint is younger than `reconcile.after` (it may still be waiting for
/// its answer), nothing is touched and the record waits for the next pass.
async fn remove_unrecorded(
    store: &dyn RegistrationStore,
    upstream: &Upstream,
    rec: &Registration,
    fp: &CreateFingerprint,
    settled_before: i64,
) -> Result<bool, StoreError> {
    let sibling_in_flight = store.pending_creates(SIBLINGS).await?.iter().any(|other| {
        other.id != rec.id
            && other.created_at >= settled_before
            && other.create_fingerprint.as_ref() == Some(fp)
    });
    if sibling_in_flight {
        tracing::info!(
            id = %rec.id,
            software_id = %rec.software_id,
            "pending create: a newer registration with the same metadata is still in flight; waiting for it before searching the upstream"
        );
        return Ok(false);
    }
    let candidates = match upstream.clients_matching(fp).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(id = %rec.id, error = %e, "pending create: listing the upstream's clients failed");
            return Ok(false);
        }
    };
    for client_id in candidates {
        if store.knows_client_id(&client_id).await? {
            continue;
        }
        if let Err(e) = upstream.admin_delete(&client_id).await {
            tracing::warn!(id = %rec.id, client_id, error = %e, "pending create: admin delete failing");
            return Ok(false);
        }
        tracing::warn!(
            id = %rec.id,
            client_id,
            software_id = %rec.software_id,
            "pending create: the upstream had created this client but its answer was lost; deleted with the admin credential"
        );
    }
    store.abandon(rec.id).await?;
    tracing::info!(
        id = %rec.id,
        software_id = %rec.software_id,
        "abandoned a registration that never completed; no client of it is left upstream"
    );
    Ok(true)
}

/// A replacement whose rotated token was lost (Keycloak refuses the old one): a new token is minted with
/// the administrator's credential and the client read with it. If it carries the replacement, the
/// replacement is completed; otherwise the record goes back to what it held, with the new token. A client
/// the administrator cannot find is gone. No dead token is kept, and no client deleted for a lost token.
async fn heal_lost_rotation(
    store: &dyn RegistrationStore,
    upstream: &Upstream,
    rec: &Registration,
    client_id: &str,
) -> Result<bool, StoreError> {
    let rat = match upstream.mint_registration_token(client_id).await {
        Ok(Some(rat)) => rat,
        Ok(None) => {
            store.mark_gone(client_id).await?;
            tracing::warn!(
                client_id,
                "pending replacement: the upstream no longer has the client; record marked gone"
            );
            return Ok(true);
        }
        Err(e) => {
            tracing::warn!(client_id, error = %e, "pending replacement: minting a new registration token failed");
            return Ok(false);
        }
    };
    let uri = upstream.client_uri_of(client_id).to_string();
    let current = match upstream.read(&uri, &rat).await {
        Ok(v) => v,
        Err(e) => {
            // The minted token is the only live one: keep it rather than lose it too.
            tracing::warn!(client_id, error = %e, "pending replacement: reading the client with the new token failed; keeping the new token with the old metadata");
            store
                .complete_replace(
                    client_id,
                    rat.expose(),
                    &rec.metadata,
                    &rec.software_statement,
                )
                .await?;
            return Ok(true);
        }
    };
    let landed = rec
        .replacement
        .as_ref()
        .filter(|r| CreateFingerprint::of(&current) == r.fingerprint);
    match landed {
        Some(r) => {
            store
                .complete_replace(client_id, rat.expose(), &r.metadata, &r.software_statement)
                .await?;
            tracing::warn!(
                client_id,
                "pending replacement: it had landed upstream and its rotated token was lost; completed with a new token minted with the admin credential"
            );
        }
        None => {
            store
                .complete_replace(
                    client_id,
                    rat.expose(),
                    &rec.metadata,
                    &rec.software_statement,
                )
                .await?;
            tracing::warn!(
                client_id,
                "pending replacement: the upstream does not carry it; the record keeps its metadata, with a new token minted with the admin credential"
            );
        }
    }
    Ok(true)
}

/// A pending replacement whose stored token no longer works: the client is deleted with the administrator's
/// credential (404 counts as done) and the record marked gone, so no upstream client outlives its record.
async fn admin_remove(
    store: &dyn RegistrationStore,
    upstream: &Upstream,
    client_id: &str,
) -> Result<bool, StoreError> {
    match upstream.admin_delete(client_id).await {
        Ok(()) => {
            store.mark_gone(client_id).await?;
            tracing::warn!(
                client_id,
                "pending replacement: the stored registration token no longer works; the upstream client was deleted with the admin credential and the record marked gone"
            );
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(client_id, error = %e, "pending replacement: admin delete failing");
            Ok(false)
        }
    }
}
