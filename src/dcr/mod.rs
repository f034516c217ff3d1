//! The registration API: one ordered checklist per operation. `handle` logs and maps once;
//! `*_inner` functions use `?` and read top to bottom like the profile's rules.

pub mod manage;
pub mod metadata;
pub mod profile;
pub mod reconcile;
pub mod request;
pub mod ssa;
pub mod status;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use uuid::Uuid;

use crate::error::{ErrorCode, ProxyError, json_response};
use crate::identity::PeerCert;
use crate::jwks::JwksCache;
use crate::jwt::{self, Jws};
use crate::store::replay::ReplayGuard;
use crate::store::{CreateFingerprint, RecordState, Registration, RegistrationStore, StoreError};
use crate::upstream::{Outcome, Upstream, UpstreamError};
use profile::{Profile, ProfileConfig, TrustAnchor};

/// Everything a registration needs, built once at start-up and shared by all connections.
pub struct Registrar {
    pub profile: Profile,
    /// Swapped whole on reload (SIGHUP or a changed config file); a request keeps the set it started with.
    anchors: std::sync::RwLock<Arc<Vec<TrustAnchor>>>,
    pub jwks: Arc<JwksCache>,
    pub store: Arc<dyn RegistrationStore>,
    pub replay: Arc<dyn ReplayGuard>,
    pub upstream: Arc<Upstream>,
    pub max_body: usize,
    /// Management tokens; None when [management] is not configured.
    pub bearer: Option<crate::bearer::BearerValidator>,
    /// CDR Register software product status; None when not configured.
    pub status: Option<status::StatusChecker>,
}

/// A request JWT that passed every check, with the metadata to register.
pub struct Verified {
    pub ssa: ssa::Ssa,
    pub md: metadata::ClientMetadata,
    pub rendered: Value,
}

/// Facts about one request, carried into logs and the audit event.
#[derive(Default)]
pub struct Audit {
    pub software_id: Option<String>,
    pub org_id: Option<String>,
    pub client_id: Option<String>,
}

/// What a [`Registrar`] is built from; each part that can fail to build is built (and its failure named)
/// by the caller.
pub struct Parts {
    pub profile: ProfileConfig,
    pub trust_anchors: Vec<TrustAnchor>,
    pub jwks: Arc<JwksCache>,
    pub store: Arc<dyn RegistrationStore>,
    pub replay: Arc<dyn ReplayGuard>,
    pub upstream: Arc<Upstream>,
    pub max_body: usize,
    pub bearer: Option<crate::bearer::BearerValidator>,
    pub status: Option<status::StatusChecker>,
}

impl Registrar {
    pub fn new(p: Parts) -> Self {
        Registrar {
            profile: Profile::new(p.profile),
            anchors: std::sync::RwLock::new(Arc::new(p.trust_anchors)),
            jwks: p.jwks,
            store: p.store,
            replay: p.replay,
            upstream: p.upstream,
            max_body: p.max_body,
            bearer: p.bearer,
            status: p.status,
        }
    }

    pub fn trust_anchors(&self) -> Arc<Vec<TrustAnchor>> {
        self.anchors
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn set_trust_anchors(&self, anchors: Vec<TrustAnchor>) {
        *self
            .anchors
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(anchors);
    }

    /// POST /register. Logs one audit event per decision and maps the outcome to HTTP.
    pub async fn handle_register(
        &self,
        headers: &HeaderMap,
        body: Incoming,
        peer: Option<&PeerCert>,
    ) -> Response<Full<Bytes>> {
        let mut audit = Audit::default();
        let result = self.register_inner(headers, body, peer, &mut audit).await;
        self.finish("register", &audit, peer, result)
    }

    /// The one audit event per decision, then the HTTP mapping.
    pub(crate) fn finish(
        &self,
        operation: &'static str,
        audit: &Audit,
        peer: Option<&PeerCert>,
        result: Result<Response<Full<Bytes>>, ProxyError>,
    ) -> Response<Full<Bytes>> {
        let thumbprint = peer.map(|p| p.thumbprint_s256.as_str()).unwrap_or("");
        let software_id = audit.software_id.as_deref().unwrap_or("");
        let org_id = audit.org_id.as_deref().unwrap_or("");
        let client_id = audit.client_id.as_deref().unwrap_or("");
        let profile = self.profile.name();
        let (outcome, error_code) = match &result {
            Ok(_) => ("success", "none"),
            Err(e) if e.side() == crate::error::Side::Client => ("rejected", e.code()),
            Err(e) => ("failed", e.code()),
        };
        crate::metrics::METRICS
            .decisions
            .get_or_create(&crate::metrics::DecisionLabels {
                operation,
                profile,
                outcome,
                error_code,
            })
            .inc();
        match result {
            Ok(resp) => {
                tracing::info!(
                    target: "audit",
                    operation, profile, software_id, org_id, client_id,
                    outcome = "success",
                    status = resp.status().as_u16(),
                    cert_thumbprint = thumbprint,
                    "registration decision"
                );
                resp
            }
            Err(e) => {
                let description = e.to_string();
                if e.side() == crate::error::Side::Client {
                    tracing::info!(
                        target: "audit",
                        operation, profile, software_id, org_id, client_id,
                        outcome = "rejected",
                        error_code = e.code(),
                        error = %description,
                        cert_thumbprint = thumbprint,
                        "registration decision"
                    );
                } else {
                    tracing::warn!(
                        target: "audit",
                        operation, profile, software_id, org_id, client_id,
                        outcome = "failed",
                        side = e.side().as_str(),
                        error_code = e.code(),
                        error = %description,
                        cert_thumbprint = thumbprint,
                        "registration decision"
                    );
                }
                e.to_response()
            }
        }
    }

    /// Steps shared by POST and PUT: the body, the SSA, the request JWT, the certificate and the metadata.
    pub(crate) async fn verify(
        &self,
        headers: &HeaderMap,
        body: Incoming,
        peer: &PeerCert,
        audit: &mut Audit,
    ) -> Result<Verified, ProxyError> {
        // 2. The body is a signed JWT, within the size cap.
        check_content_type(headers)?;
        let body = read_body(body, self.max_body).await?;
        let token = std::str::from_utf8(&body)
            .map_err(|_| rejected_request("is not UTF-8 text"))?
            .trim();
        let jws = Jws::parse(token, &self.profile.cfg.request_algorithms, self.max_body)
            .map_err(|e| rejected_request(&e.to_string()))?;

        // 3. The SSA decides who the TPP is and where its keys live; it is verified before the
        //    request JWT because the request's keys come from it.
        let ssa_raw = jws.str_claim("software_statement").map_err(|e| {
            ProxyError::rejected(ErrorCode::InvalidSoftwareStatement, e.to_string())
        })?;
        let ssa_raw = ssa_raw.ok_or_else(|| {
            ProxyError::rejected(
                ErrorCode::InvalidSoftwareStatement,
                "the request JWT has no `software_statement` claim",
            )
        })?;
        let ssa = ssa::verify(
            ssa_raw,
            &self.trust_anchors(),
            &self.jwks,
            &self.profile,
            self.max_body,
        )
        .await?;
        audit.software_id = Some(ssa.software_id.clone());
        audit.org_id = ssa.org_id.clone();

        // CDR: a product or recipient the Register no longer lists as ACTIVE may not register (when configured).
        if let Some(checker) = &self.status {
            checker.admit(&ssa).await?;
        }

        // 4. The request JWT: TPP's signature, claims, then the jti is spent.
        let req =
            request::verify(jws, &ssa, &self.jwks, &self.profile, self.replay.as_ref()).await?;

        // 5. The transport certificate must be one the directory lists for this software.
        if self.profile.cfg.require_transport_cert_in_ssa_jwks
            && !req.software_keys.has_tls_certificate(&peer.der)
        {
            return Err(ProxyError::rejected(
                ErrorCode::InvalidSoftwareStatement,
                format!(
                    "the presented transport certificate (x5t#S256 {}) is not listed as a `tls` key in the software statement's JWKS",
                    peer.thumbprint_s256
                ),
            ));
        }

        // 6. Metadata rules, including the DN binding to the presented certificate.
        let md = metadata::validate(&req.claims, &ssa, peer, &self.profile)?;
        let rendered = md.render(&ssa, &self.profile);
        Ok(Verified { ssa, md, rendered })
    }

    async fn register_inner(
        &self,
        headers: &HeaderMap,
        body: Incoming,
        peer: Option<&PeerCert>,
        audit: &mut Audit,
    ) -> Result<Response<Full<Bytes>>, ProxyError> {
        // Only a caller with a verified transport certificate may register.
        let peer = peer.ok_or(ProxyError::NoClientCertificate)?;
        let Verified { ssa, md, rendered } = self.verify(headers, body, peer, audit).await?;

        // 7. Translate for the upstream (the DN in the form it parses), then reserve the record before the
        //    upstream acts, so a crash leaves a trace to reconcile and the software_id uniqueness is decided
        //    by the store, not by check-then-act.
        let flavour = self.upstream.flavour();
        let mut request = md.to_upstream(&ssa, peer, &self.profile, flavour.dn_rendering());
        let now = jwt::now();
        // With [upstream.admin] we name the client before it exists where the upstream lets us, so even a
        // crash between the upstream's create and our commit leaves a record that says which client to
        // remove; where it does not (Keycloak), the fingerprint of what we send finds it.
        let assigned = self.upstream.assign_client_id();
        if let (Some(id), Some(o)) = (&assigned, request.as_object_mut()) {
            o.insert("client_id".into(), Value::from(id.as_str()));
        }
        // Shared, not copied, with the upstream call: a registration's JSON is cloned nowhere on this path
        // (deep clones of these maps were ~8 % of a registration's CPU in the (c) profile).
        let request = Arc::new(request);
        let mut rec = Registration {
            // Time-ordered: see `Registration::id` (scripts/sqlite_journal.sh: 10-14 % less CPU per commit).
            id: Uuid::now_v7(),
            client_id: assigned.clone(),
            profile: self.profile.name().to_string(),
            software_id: ssa.software_id.clone(),
            org_id: ssa.org_id.clone(),
            state: RecordState::Pending,
            pending_op: Some(crate::store::PendingOp::Create),
            software_statement: ssa.raw.clone(),
            metadata: rendered,
            registration_access_token: None,
            registration_client_uri: None,
            cert_subject_dn: peer.subject_text.clone(),
            cert_thumbprint_s256: peer.thumbprint_s256.clone(),
            created_at: now,
            updated_at: now,
            attempts: 0,
            create_fingerprint: Some(CreateFingerprint::of(&request)),
            replacement: None,
        };
        self.store
            .begin_create(&rec, self.profile.cfg.unique_software_id)
            .await
            .map_err(|e| match e {
                StoreError::DuplicateSoftwareId { .. } => ProxyError::rejected(
                    ErrorCode::InvalidClientMetadata,
                    "Duplicate registrations for a given software_id are not valid.",
                ),
                other => store_error(other),
            })?;

        // 8. Create upstream.
        let created = match self.upstream.create(Arc::clone(&request)).await {
            Outcome::Done(Ok(c)) => c,
            Outcome::Done(Err(e)) => return Err(self.create_failed(rec.id, e, &request).await),
            Outcome::Late(call) => {
                // The TPP is told it failed, so whatever the upstream still does must be undone.
                let (store, upstream, id) = (self.store.clone(), self.upstream.clone(), rec.id);
                tokio::spawn(async move {
                    match call.await {
                        Ok(Ok(c)) => undo_create(store.as_ref(), &upstream, id, &c).await,
                        Ok(Err(
                            UpstreamError::Rejected { .. }
                            | UpstreamError::Unavailable(_)
                            | UpstreamError::Gone(_)
                            | UpstreamError::TokenRefused(_),
                        )) => {
                            let _ = store.abandon(id).await;
                        }
                        _ => {
                            tracing::warn!(%id, "a late registration never settled; the pending record stays for reconciliation")
                        }
                    }
                });
                return Err(ProxyError::UpstreamTimeout);
            }
        };
        audit.client_id = Some(created.client_id.clone());
        if let Some(id) = assigned.as_deref()
            && created.client_id != id
        {
            // Recovery would look for a client that does not exist while this one went unrecorded.
            tracing::error!(
                assigned = id,
                client_id = %created.client_id,
                "the upstream ignored the client_id we named; [upstream.admin] needs an IdP that accepts one (Keycloak does)"
            );
            undo_create(self.store.as_ref(), &self.upstream, rec.id, &created).await;
            return Err(ProxyError::UpstreamUnavailable(
                "the upstream did not use the client_id the proxy named".into(),
            ));
        }
        // A scope the upstream let through but silently left out would make every token request for it fail
        // later: the client goes again and the TPP learns now which scope the bank does not offer.
        let ignored = flavour.ignored_scopes(&request, &created.metadata);
        if !ignored.is_empty() {
            let ignored = ignored.join(" ");
            tracing::error!(
                client_id = %created.client_id,
                scopes = %ignored,
                "the upstream accepted but ignored these scopes (Keycloak: allowed by the 'Allowed Client Scopes' policy but no client scope of that name exists in the realm); create the client scopes or remove them from profile.allowed_scopes"
            );
            undo_create(self.store.as_ref(), &self.upstream, rec.id, &created).await;
            return Err(ProxyError::rejected(
                ErrorCode::InvalidClientMetadata,
                format!(
                    "the bank's authorisation server does not offer scope {ignored}; register without it"
                ),
            ));
        }
        let issued_at = created.client_id_issued_at.unwrap_or(now);
        if let Some(o) = rec.metadata.as_object_mut() {
            o.insert("client_id_issued_at".into(), Value::from(issued_at));
        }

        // 9. Record it; if that fails the upstream client must not survive us.
        if let Err(e) = self
            .store
            .complete_create(
                rec.id,
                &created.client_id,
                created.registration_access_token.expose(),
                &created.registration_client_uri,
                &rec.metadata,
            )
            .await
        {
            tracing::warn!(client_id = %created.client_id, error = %e, "store write failed after upstream create; deleting the upstream client");
            undo_create(self.store.as_ref(), &self.upstream, rec.id, &created).await;
            return Err(store_error(e));
        }

        // 10. Answer in the profile's shape, rendered from what we registered.
        let body = metadata::response_body(rec.metadata, &created.client_id, issued_at, &ssa.raw);
        Ok(json_response(StatusCode::CREATED, &body))
    }

    /// The upstream did not create a client (4xx), or we cannot know (5xx, timeout).
    async fn create_failed(&self, id: Uuid, e: UpstreamError, request: &Value) -> ProxyError {
        let flavour = self.upstream.flavour();
        match e {
            // Keycloak: the proxy's own credential (initial access token, or the administrator's token) was
            // refused; nothing the TPP can change, and nothing created (a refused request is rolled back).
            UpstreamError::Rejected {
                status: 401,
                description,
            } if flavour == crate::upstream::Flavour::Keycloak => {
                tracing::error!(upstream_error = %description, "the upstream refused the proxy's registration credential; check upstream.initial_access_token_env or [upstream.admin]");
                let _ = self.store.abandon(id).await;
                ProxyError::UpstreamUnavailable(format!(
                    "registration credential refused: {description}"
                ))
            }
            UpstreamError::Rejected {
                description,
                status,
            } => {
                tracing::info!(status, upstream_error = %description, "upstream refused the registration");
                let _ = self.store.abandon(id).await;
                ProxyError::rejected(
                    ErrorCode::InvalidClientMetadata,
                    flavour.describe_refusal(status, &description, request, "registration"),
                )
            }
            UpstreamError::Gone(s) | UpstreamError::TokenRefused(s) => {
                let _ = self.store.abandon(id).await;
                ProxyError::UpstreamUnavailable(format!("registration endpoint answered {s}"))
            }
            UpstreamError::Unavailable(m) => {
                // Nothing reached the upstream: no client can exist.
                let _ = self.store.abandon(id).await;
                ProxyError::UpstreamUnavailable(m)
            }
            // The upstream may or may not have created a client. We cannot name it, so the pending
            // record stays for reconciliation instead of pretending nothing happened.
            UpstreamError::Timeout => ProxyError::UpstreamTimeout,
            UpstreamError::Failed(m) => ProxyError::UpstreamUnavailable(m),
        }
    }
}

/// Deletes a client the upstream created for a registration we are not keeping, then drops the pending
/// record. If the record cannot be dropped now (store down), the reconciler drops it later: with no
/// client_id it points at nothing.
async fn undo_create(
    store: &dyn RegistrationStore,
    upstream: &Upstream,
    id: Uuid,
    created: &crate::upstream::UpstreamClient,
) {
    match upstream
        .delete(
            &created.client_id,
            &created.registration_client_uri,
            &created.registration_access_token,
        )
        .await
    {
        Ok(()) => {
            tracing::info!(client_id = %created.client_id, "upstream client deleted again");
            if let Err(e) = store.abandon(id).await {
                tracing::warn!(%id, error = %e, "pending record left for the reconciler");
            }
        }
        Err(e) if upstream.has_admin() => tracing::warn!(
            client_id = %created.client_id,
            error = %e,
            "compensating delete failed; the pending record names the client (or, for Keycloak, what was sent) and the reconciler retries"
        ),
        Err(e) => tracing::error!(
            client_id = %created.client_id,
            error = %e,
            "compensating delete failed: this upstream client is orphaned and needs removing by an administrator"
        ),
    }
}

pub fn store_error(e: StoreError) -> ProxyError {
    crate::metrics::METRICS.store_errors.inc();
    match e {
        StoreError::Unavailable(m) => ProxyError::StoreUnavailable(m),
        other => ProxyError::Internal(other.to_string()),
    }
}

fn rejected_request(what: &str) -> ProxyError {
    ProxyError::rejected(
        ErrorCode::InvalidClientMetadata,
        format!("the request body {what}; send the registration as a signed JWT (compact JWS)"),
    )
}

/// OB v3.1 names application/jwt, v3.2+ application/jose; both are accepted always.
fn check_content_type(headers: &HeaderMap) -> Result<(), ProxyError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/jwt" | "application/jose" => Ok(()),
        _ => Err(ProxyError::UnsupportedMediaType(
            ct.chars().filter(|c| !c.is_control()).take(100).collect(),
        )),
    }
}

pub async fn read_body(body: Incoming, max: usize) -> Result<Bytes, ProxyError> {
    match Limited::new(body, max).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ProxyError::PayloadTooLarge(max))
        }
        Err(_) => Err(ProxyError::rejected(
            ErrorCode::InvalidRequest,
            "the request body could not be read",
        )),
    }
}

/// Methods allowed per route, for 405 answers.
pub fn allowed(method: &Method, collection: bool) -> Result<(), ProxyError> {
    let ok = if collection {
        method == Method::POST
    } else {
        matches!(*method, Method::GET | Method::PUT | Method::DELETE)
    };
    if ok {
        Ok(())
    } else {
        Err(ProxyError::MethodNotAllowed {
            allow: if collection {
                "POST"
            } else {
                "GET, PUT, DELETE"
            },
        })
    }
}
