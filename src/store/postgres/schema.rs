//! Owns the PostgreSQL schema: its versioned steps and the migration that applies them once across replicas.

use super::PostgresStore;
use super::rows::{col, map_err};
use crate::store::StoreError;

/// Versioned schema steps, applied in order inside one transaction. Never edit
/// a released step: add a new one.
const MIGRATIONS: &[(i32, &str)] = &[(1, SCHEMA_V1), (2, SCHEMA_V2)];

/// Serialises migrations across replicas. Any fixed value works as long as
/// nothing else in the database uses it; this one is "dcrproxy" in ASCII.
const MIGRATION_LOCK_KEY: i64 = 0x6463_7270_726f_7879;

/// Named so that a unique violation on it can be told apart from the
/// client_id one.
pub(super) const LIVE_SOFTWARE_ID_INDEX: &str = "dcr_registrations_live_software_id";

// The table mirrors the SQLite one column for column; see the reasons for
// `unique_sw` and the partial indexes there. Timestamps stay unix seconds so
// that both backends compare them with the same arithmetic. Replay keys are
// stored hashed: a jti is attacker-chosen text whose length and bytes (NUL is
// valid JSON, invalid in a PostgreSQL text) must not decide whether the row
// fits a btree entry.
const SCHEMA_V1: &str = "
CREATE TABLE dcr_registrations (
    id                        uuid    NOT NULL PRIMARY KEY,
    client_id                 text,
    profile                   text    NOT NULL,
    software_id               text    NOT NULL,
    org_id                    text,
    state                     text    NOT NULL CHECK (state IN ('pending', 'active', 'gone')),
    pending_op                text    CHECK (pending_op IN ('create', 'replace', 'delete')),
    unique_sw                 boolean NOT NULL,
    software_statement        text    NOT NULL,
    metadata                  jsonb   NOT NULL,
    registration_access_token text,
    registration_client_uri   text,
    cert_subject_dn           text    NOT NULL,
    cert_thumbprint_s256      text    NOT NULL,
    created_at                bigint  NOT NULL,
    updated_at                bigint  NOT NULL,
    attempts                  integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    CHECK ((state = 'pending') = (pending_op IS NOT NULL)),
    CHECK (state <> 'active' OR (client_id IS NOT NULL AND registration_access_token IS NOT NULL)),
    CHECK (state <> 'gone' OR registration_access_token IS NULL)
);

CREATE UNIQUE INDEX dcr_registrations_live_software_id
    ON dcr_registrations (profile, software_id)
    WHERE state IN ('pending', 'active') AND unique_sw;

CREATE UNIQUE INDEX dcr_registrations_live_client_id
    ON dcr_registrations (client_id)
    WHERE client_id IS NOT NULL AND state <> 'gone';

CREATE INDEX dcr_registrations_pending_since
    ON dcr_registrations (updated_at)
    WHERE state = 'pending';

CREATE TABLE dcr_replay (
    key        text   NOT NULL PRIMARY KEY,
    expires_at bigint NOT NULL
);

CREATE INDEX dcr_replay_expires_at ON dcr_replay (expires_at);
";

// As the SQLite store's second step: what an in-flight create or replacement needs to be found or finished
// after a crash.
const SCHEMA_V2: &str = "
ALTER TABLE dcr_registrations ADD COLUMN create_fingerprint jsonb;
ALTER TABLE dcr_registrations ADD COLUMN replacement jsonb;
";

impl PostgresStore {
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            let tx = conn.transaction().await.map_err(map_err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
                .await
                .map_err(map_err)?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS dcr_schema_migrations (
                     version    integer     NOT NULL PRIMARY KEY,
                     applied_at timestamptz NOT NULL
                 )",
            )
            .await
            .map_err(map_err)?;
            let row = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM dcr_schema_migrations",
                    &[],
                )
                .await
                .map_err(map_err)?;
            let current: i32 = col(&row, 0)?;
            let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
            if current > latest {
                // A newer build has migrated this database; writing with an
                // older idea of the schema could break its invariants.
                return Err(StoreError::Corrupt(format!(
                    "database schema version {current} is newer than this build supports ({latest})"
                )));
            }
            for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
                tx.batch_execute(sql).await.map_err(map_err)?;
                tx.execute(
                    "INSERT INTO dcr_schema_migrations (version, applied_at) VALUES ($1, now())",
                    &[version],
                )
                .await
                .map_err(map_err)?;
            }
            tx.commit().await.map_err(map_err)
        })
        .await
    }

    /// Reads the schema version without changing anything: a schema newer than this build is refused,
    /// as [`Self::migrate`] would; an absent or older one is what the first start will create or bring up.
    pub(super) async fn inspect_schema(&self) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            let tx = conn
                .build_transaction()
                .read_only(true)
                .start()
                .await
                .map_err(map_err)?;
            let row = tx
                .query_one(
                    "SELECT to_regclass('dcr_schema_migrations') IS NOT NULL",
                    &[],
                )
                .await
                .map_err(map_err)?;
            let exists: bool = col(&row, 0)?;
            let current: i32 = if exists {
                let row = tx
                    .query_one(
                        "SELECT COALESCE(MAX(version), 0) FROM dcr_schema_migrations",
                        &[],
                    )
                    .await
                    .map_err(map_err)?;
                col(&row, 0)?
            } else {
                0
            };
            tx.rollback().await.map_err(map_err)?;
            let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
            if current > latest {
                return Err(StoreError::Corrupt(format!(
                    "database schema version {current} is newer than this build supports ({latest})"
                )));
            }
            if current < latest {
                tracing::info!(
                    current,
                    latest,
                    "the PostgreSQL schema is behind this build; start-up will migrate it"
                );
            }
            Ok(())
        })
        .await
    }
}
