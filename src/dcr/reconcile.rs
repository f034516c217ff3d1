//! The reconciler: finishes or rolls back registrations left pending by a timeout, a store outage or a
//! crash, until the upstream and the store agree. Safe to run on every replica at once: each step is
//! idempotent and the store refuses a transition from a state that has already moved on.

use std::sync::Arc;
use std::time::Duration;

use crate::secret::Secret;
use crate::store::{PendingOp, Registration, RegistrationStore, StoreError};
use crate::upstream::{Upstream, UpstreamError};

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
        match settle(store, upstream, &rec).await {
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
    match (rec.pending_op, target) {
        (Some(PendingOp::Delete), Some((client_id, uri, rat))) => {
            match upstream.delete(uri, &rat).await {
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
                // The token was rotated and the new one lost, or the client was deleted. With the admin
                // credential the client is removed first, so no upstream client outlives its record; the TPP
                // registers again.
                Err(UpstreamError::Gone(_)) if upstream.has_admin() => {
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
                Err(UpstreamError::Gone(_)) => {
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
