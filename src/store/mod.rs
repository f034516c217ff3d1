//! Owns the registration record, its lifecycle states and the backend-neutral storage contract.
//!
//! # Why records have states
//!
//! Every registration lives in two places: the upstream OAuth server (which owns
//! the client) and this store (which owns what the regulated profile needs on
//! top: the SSA, the certificate binding, the profile-shaped metadata and the
//! registration access token, RAT). A crash or a timeout can strike between the
//! two writes. The states make that window explicit so that the proxy never ends
//! up with an upstream client it does not know about, nor with a record holding
//! a RAT the upstream has already invalidated: the record is always written
//! *before* the upstream call, and the background reconciler finishes whatever a
//! request left half done.
//!
//! # States
//!
//! * `Pending(Create)`: written before the upstream `POST /register`. There is
//!   no `client_id` yet, so the record is keyed by our own [`Uuid`]. Invisible
//!   to [`RegistrationStore::get_by_client_id`]. With the software_id
//!   uniqueness flag set it already holds the `(profile, software_id)` slot, so
//!   two racing registrations of one software product cannot both reach the
//!   upstream.
//! * `Active`: the upstream created (or last confirmed) the client and we hold
//!   its current RAT. The only state in which a new management operation may
//!   start.
//! * `Pending(Replace)` / `Pending(Delete)`: a `PUT` / `DELETE` is in flight
//!   upstream. The old RAT is kept until the upstream answers, because until then
//!   we cannot know whether it rotated. Still visible by `client_id`, so a
//!   concurrent GET keeps answering, but no second change can start.
//! * `Gone`: the upstream no longer has the client. The row stays for audit,
//!   its RAT is erased (it is dead) and it no longer holds the software_id or
//!   the client_id, so the product can register again.
//!
//! # Transitions and who makes them
//!
//! | from | to | method | caller |
//! | --- | --- | --- | --- |
//! | (none) | Pending(Create) | `begin_create` | POST handler, before calling upstream |
//! | Pending(Create) | Active | `complete_create` | POST handler, after upstream 201 |
//! | Pending(Create) | (deleted) | `abandon` | POST handler when upstream refused; reconciler after compensating |
//! | Active | Pending(Replace/Delete) | `begin_change` | PUT/DELETE handler, before calling upstream |
//! | Active | Pending(Replace) | `begin_replace` | PUT handler: `begin_change` that also keeps the replacement |
//! | Pending(Replace) | Active | `complete_replace` | PUT handler, after upstream 200 |
//! | Pending(Replace/Delete) | Active | `cancel_change` | handler when upstream refused (nothing changed there) |
//! | Active, Pending(Replace/Delete) | (deleted) | `remove` | DELETE handler after upstream 204/404; reconciler |
//! | Active, Pending(Replace/Delete) | Gone | `mark_gone` | anyone who learns the upstream dropped the client |
//!
//! # What the reconciler does with each state
//!
//! It asks [`RegistrationStore::pending`] for records that have stayed Pending
//! longer than any request could take, calls [`RegistrationStore::bump_attempts`]
//! before each try (which also pushes the record back in the queue), and:
//!
//! * `Pending(Create)`: the upstream may or may not have created a client.
//!   With `[upstream.admin]` and an upstream that takes a client_id from us
//!   (`upstream.flavour = "rfc7591"`), the record already names the client_id
//!   (the proxy chose it before calling the upstream), so the reconciler
//!   deletes that client with the administrator's token (404 counts as done;
//!   a refused token leaves the record for the next pass) and then
//!   `abandon`s. An upstream that chooses the client_id itself (Keycloak) is
//!   searched instead for clients matching the record's
//!   [`CreateFingerprint`] that no record knows ([`RegistrationStore::pending_creates`]
//!   and [`RegistrationStore::knows_client_id`] serve that search).
//!   Without an administrator there is nothing to find the client by: it
//!   just `abandon`s.
//! * `Pending(Replace)`: reads the client upstream with the old RAT. If the
//!   old RAT still works the PUT did not happen: `cancel_change`. If it is
//!   refused, the PUT rotated it and the new RAT is lost (or the client is
//!   gone). Where the upstream can mint a new RAT for an administrator
//!   (Keycloak), the reconciler mints one and compares the client with the
//!   [`PendingReplacement`] that `begin_replace` stored: the replacement is
//!   completed, or the old metadata kept, either way with the new RAT.
//!   Elsewhere, with `[upstream.admin]` the client is deleted first, then the
//!   record is `mark_gone`d, so no upstream client outlives its record;
//!   without it the record is `mark_gone`d and an error is logged.
//! * `Pending(Delete)`: retries the DELETE with the old RAT; on success,
//!   "not found" or a refused RAT it `remove`s.
//! * `Active` and `Gone` need nothing.
//!
//! # Backends
//!
//! The trait speaks only of records and states, never of SQL: the embedded
//! default is [`sqlite::SqliteStore`]; [`postgres::PostgresStore`] implements
//! the same contract with the same partial unique indexes for deployments with
//! several replicas, and doubles as their shared replay cache. Uniqueness must
//! always be enforced by the database itself, never by a read followed by a
//! write. The behaviour both owe is tested once, against the trait, in
//! `tests/support/store_conformance.rs`.

pub mod postgres;
pub mod replay;
pub mod sqlite;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// `[store]`: which backend keeps the records.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sqlite {
        path: PathBuf,
        /// Bound of the in-memory replay cache that goes with this single-process backend.
        replay_cache_bytes: u64,
        /// How long a COMMIT waits for more writes while writers overlap (`store.commit_delay`).
        commit_delay: std::time::Duration,
    },
    Postgres(postgres::PostgresConfig),
}

/// Where a record is in its lifecycle; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordState {
    Pending,
    Active,
    Gone,
}

impl RecordState {
    /// The stable text form every backend stores, so that rows stay readable
    /// whichever enum layout a later build has.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Pending => "pending",
            RecordState::Active => "active",
            RecordState::Gone => "gone",
        }
    }
}

impl FromStr for RecordState {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(RecordState::Pending),
            "active" => Ok(RecordState::Active),
            "gone" => Ok(RecordState::Gone),
            other => Err(StoreError::Corrupt(format!(
                "unknown record state {other:?}"
            ))),
        }
    }
}

/// The upstream operation that was in flight when a record became Pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PendingOp {
    Create,
    Replace,
    Delete,
}

impl PendingOp {
    /// The stable text form every backend stores.
    pub fn as_str(self) -> &'static str {
        match self {
            PendingOp::Create => "create",
            PendingOp::Replace => "replace",
            PendingOp::Delete => "delete",
        }
    }
}

impl FromStr for PendingOp {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "create" => Ok(PendingOp::Create),
            "replace" => Ok(PendingOp::Replace),
            "delete" => Ok(PendingOp::Delete),
            other => Err(StoreError::Corrupt(format!("unknown pending op {other:?}"))),
        }
    }
}

/// What identifies a client we asked the upstream to create, in the fields an IdP stores as sent: taken
/// from the RFC 7591 request before the call, so an upstream that chooses the client_id itself can still be
/// searched for the client after a crash. Redirect URIs form a set (Keycloak stores them as one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateFingerprint {
    /// Sorted, without duplicates.
    pub redirect_uris: Vec<String>,
    pub jwks_uri: Option<String>,
    pub tls_client_auth_subject_dn: Option<String>,
    pub client_name: Option<String>,
}

impl CreateFingerprint {
    /// The fingerprint of an RFC 7591 client metadata document (a request we send, or an upstream's answer).
    pub fn of(metadata: &Value) -> Self {
        let text = |k: &str| {
            metadata
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let mut redirect_uris: Vec<String> = metadata
            .get("redirect_uris")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        redirect_uris.sort();
        redirect_uris.dedup();
        CreateFingerprint {
            redirect_uris,
            jwks_uri: text("jwks_uri"),
            tls_client_auth_subject_dn: text("tls_client_auth_subject_dn"),
            client_name: text("client_name"),
        }
    }
}

/// A PUT in flight: what the record becomes if the upstream applied it. Kept so that a replacement whose
/// answer (and rotated RAT) was lost can still be completed once a new RAT is obtained.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingReplacement {
    /// Of the RFC 7591 metadata sent with the PUT.
    pub fingerprint: CreateFingerprint,
    /// The profile-shaped metadata the record gets (what `complete_replace` would store).
    pub metadata: Value,
    /// The SSA that came with the PUT.
    pub software_statement: String,
}

impl fmt::Debug for PendingReplacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingReplacement")
            .field("fingerprint", &self.fingerprint)
            .field("metadata", &RedactedMetadata(&self.metadata))
            .finish_non_exhaustive()
    }
}

/// One registration as the proxy knows it.
#[derive(Clone, PartialEq)]
pub struct Registration {
    /// Our own key, known before the upstream assigns a client_id. A UUIDv7 (time-ordered): new rows go to the
    /// end of the primary-key index instead of a random page of it, which the commit then journals and syncs.
    pub id: Uuid,
    /// None while a Create is pending.
    pub client_id: Option<String>,
    /// "ob-v3.1" or "cdr-1.13".
    pub profile: String,
    pub software_id: String,
    pub org_id: Option<String>,
    pub state: RecordState,
    /// Set exactly when `state` is Pending.
    pub pending_op: Option<PendingOp>,
    /// The SSA as received, echoed back in GET responses.
    pub software_statement: String,
    /// The registered metadata in the profile's response shape (what GET answers with).
    pub metadata: Value,
    /// Secret: never printed by `Debug`.
    pub registration_access_token: Option<String>,
    pub registration_client_uri: Option<String>,
    pub cert_subject_dn: String,
    pub cert_thumbprint_s256: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; the reconciler's clock for "stuck in Pending".
    pub updated_at: i64,
    /// Reconciler retries since the record last became Pending.
    pub attempts: u32,
    /// Set while a Create is pending: what we sent, to find the client by when we never learnt its id.
    pub create_fingerprint: Option<CreateFingerprint>,
    /// Set while a Replace started by `begin_replace` is pending.
    pub replacement: Option<PendingReplacement>,
}

const REDACTED: &str = "[redacted]";

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Records end up in logs through `?rec`; a RAT there would let anyone
        // with log access manage the client.
        let rat = self.registration_access_token.as_ref().map(|_| REDACTED);
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .field("profile", &self.profile)
            .field("software_id", &self.software_id)
            .field("org_id", &self.org_id)
            .field("state", &self.state)
            .field("pending_op", &self.pending_op)
            .field("software_statement", &self.software_statement)
            .field("metadata", &RedactedMetadata(&self.metadata))
            .field("registration_access_token", &rat)
            .field("registration_client_uri", &self.registration_client_uri)
            .field("cert_subject_dn", &self.cert_subject_dn)
            .field("cert_thumbprint_s256", &self.cert_thumbprint_s256)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("attempts", &self.attempts)
            .field("create_fingerprint", &self.create_fingerprint)
            .field("replacement", &self.replacement)
            .finish()
    }
}

/// Metadata in the response shape may carry a `client_secret` issued by the
/// upstream; it is as sensitive as the RAT.
struct RedactedMetadata<'a>(&'a Value);

impl fmt::Debug for RedactedMetadata<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Object(map) if map.contains_key("client_secret") => {
                let mut copy = map.clone();
                copy.insert(
                    "client_secret".to_owned(),
                    Value::String(REDACTED.to_owned()),
                );
                write!(f, "{}", Value::Object(copy))
            }
            other => write!(f, "{other}"),
        }
    }
}

/// Why a store operation failed. The variants are chosen by what the caller
/// must do next, not by what the backend saw.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    /// The database's uniqueness constraint refused a second live record for
    /// one (profile, software_id): answer the client with a duplicate error.
    #[error("another active registration exists for software_id {software_id}")]
    DuplicateSoftwareId { software_id: String },
    #[error("registration not found")]
    NotFound,
    /// The record was not in the state the transition starts from (someone
    /// else moved it first), or a different uniqueness rule than the
    /// software_id one refused the write.
    #[error("the record changed concurrently")]
    Conflict,
    /// IO failure, lock timeout, pool exhaustion: retryable, maps to 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be understood; retrying will not help.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
}

/// The storage contract every backend implements. Every method is a single
/// atomic step: it either happens entirely or not at all.
#[async_trait]
pub trait RegistrationStore: Send + Sync + 'static {
    /// Writes `rec` as a Pending/Create record, whatever its `state`,
    /// `pending_op`, `attempts` and `replacement` say; its
    /// `create_fingerprint` is kept until the create completes. `created_at` and `updated_at` are
    /// stored as given. When `unique_software_id`, fails with
    /// DuplicateSoftwareId if any Pending or Active record that also asked
    /// for uniqueness has the same (profile, software_id); the database
    /// enforces this, so racing calls cannot both succeed.
    async fn begin_create(
        &self,
        rec: &Registration,
        unique_software_id: bool,
    ) -> Result<(), StoreError>;

    /// Pending/Create -> Active with the upstream's client_id, RAT, client URI
    /// and metadata in one transaction. NotFound if the record is gone
    /// (abandoned meanwhile), Conflict if it is no longer Pending/Create or the
    /// client_id already belongs to another live record.
    async fn complete_create(
        &self,
        id: Uuid,
        client_id: &str,
        rat: &str,
        client_uri: &str,
        metadata: &Value,
    ) -> Result<(), StoreError>;

    /// Deletes a Pending/Create record whose upstream side was compensated (or
    /// never created). NotFound if absent, Conflict if it is in another state.
    async fn abandon(&self, id: Uuid) -> Result<(), StoreError>;

    /// The Active or Pending(Replace/Delete) record for `client_id`; Gone and
    /// Pending(Create) records are not returned.
    async fn get_by_client_id(&self, client_id: &str) -> Result<Option<Registration>, StoreError>;

    /// Active -> Pending(op) before a PUT/DELETE upstream call; returns the
    /// record as it was. NotFound if there is no live record, Conflict if it is
    /// not Active or if `op` is Create (creation starts with `begin_create`).
    async fn begin_change(
        &self,
        client_id: &str,
        op: PendingOp,
    ) -> Result<Registration, StoreError>;

    /// Active -> Pending(Replace), keeping `replacement` with the record;
    /// otherwise exactly `begin_change(client_id, PendingOp::Replace)`.
    async fn begin_replace(
        &self,
        client_id: &str,
        replacement: &PendingReplacement,
    ) -> Result<Registration, StoreError>;

    /// Pending(Replace) -> Active with the rotated RAT, new metadata and the
    /// SSA that came with the PUT, in one transaction.
    async fn complete_replace(
        &self,
        client_id: &str,
        rat: &str,
        metadata: &Value,
        software_statement: &str,
    ) -> Result<(), StoreError>;

    /// Pending(Replace/Delete) -> Active unchanged: the upstream refused, so
    /// nothing happened there.
    async fn cancel_change(&self, client_id: &str) -> Result<(), StoreError>;

    /// Deletes the live (Active or Pending(Replace/Delete)) record once the
    /// upstream delete succeeded or the client turned out to be gone already.
    async fn remove(&self, client_id: &str) -> Result<(), StoreError>;

    /// Active or Pending(Replace/Delete) -> Gone: the upstream no longer knows
    /// the client. Keeps the row for audit, erases its dead RAT and frees its
    /// software_id and client_id.
    async fn mark_gone(&self, client_id: &str) -> Result<(), StoreError>;

    /// Pending records last updated before `older_than` (unix seconds), oldest
    /// first, at most `limit`. Changes nothing.
    async fn pending(&self, older_than: i64, limit: usize)
    -> Result<Vec<Registration>, StoreError>;

    /// Every Pending(Create) record, whatever its age, oldest first, at most
    /// `limit`: the reconciler's view of creates still in flight. Changes
    /// nothing.
    async fn pending_creates(&self, limit: usize) -> Result<Vec<Registration>, StoreError>;

    /// Whether any record, in any state (Gone included), holds `client_id`:
    /// a client the store knows is never taken for an orphan.
    async fn knows_client_id(&self, client_id: &str) -> Result<bool, StoreError>;

    /// Counts one reconciler attempt and stamps `updated_at`, so the record
    /// waits a full `older_than` period before `pending` offers it again.
    async fn bump_attempts(&self, id: Uuid) -> Result<(), StoreError>;

    /// Cheap health check for /ready: proves the store answers a query.
    async fn ping(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_op_text_round_trips() {
        for s in [RecordState::Pending, RecordState::Active, RecordState::Gone] {
            assert_eq!(s.as_str().parse::<RecordState>().unwrap(), s);
        }
        for op in [PendingOp::Create, PendingOp::Replace, PendingOp::Delete] {
            assert_eq!(op.as_str().parse::<PendingOp>().unwrap(), op);
        }
        assert!(matches!(
            "zombie".parse::<RecordState>(),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_fingerprint_treats_redirect_uris_as_a_set_and_empty_text_as_absent() {
        let a = CreateFingerprint::of(&serde_json::json!({
            "redirect_uris": ["https://b/cb", "https://a/cb", "https://b/cb"],
            "jwks_uri": "https://tpp/jwks", "tls_client_auth_subject_dn": "", "client_name": "App",
            "scope": "ignored"
        }));
        let b = CreateFingerprint::of(&serde_json::json!({
            "redirect_uris": ["https://a/cb", "https://b/cb"],
            "jwks_uri": "https://tpp/jwks", "client_name": "App"
        }));
        assert_eq!(a, b);
        assert_eq!(a.redirect_uris, vec!["https://a/cb", "https://b/cb"]);
        assert_eq!(a.tls_client_auth_subject_dn, None);
        assert_ne!(
            a,
            CreateFingerprint::of(&serde_json::json!({"redirect_uris": ["https://a/cb"]}))
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let rec = Registration {
            id: Uuid::new_v4(),
            client_id: Some("c1".into()),
            profile: "ob-v3.1".into(),
            software_id: "sw".into(),
            org_id: None,
            state: RecordState::Active,
            pending_op: None,
            software_statement: "ssa".into(),
            metadata: serde_json::json!({"client_secret": "hunter2", "client_name": "n"}),
            registration_access_token: Some("rat-very-secret".into()),
            registration_client_uri: None,
            cert_subject_dn: "CN=x".into(),
            cert_thumbprint_s256: "t".into(),
            created_at: 0,
            updated_at: 0,
            attempts: 0,
            create_fingerprint: None,
            replacement: Some(PendingReplacement {
                fingerprint: CreateFingerprint::of(&serde_json::json!({})),
                metadata: serde_json::json!({"client_secret": "hunter3"}),
                software_statement: "ssa".into(),
            }),
        };
        let out = format!("{rec:?}");
        assert!(!out.contains("rat-very-secret"), "{out}");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("hunter3"), "{out}");
        assert!(out.contains("[redacted]"));
        assert!(out.contains("client_name"));
    }
}
