//! Owns the SQLite schema: its versioned steps, the private store file and the migration that applies them.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior, params};

use super::rows::map_err;
use crate::jwt::now;
use crate::store::StoreError;

/// Versioned schema steps, applied in order inside one transaction. Never edit
/// a released step: add a new one.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[(1, SCHEMA_V1), (2, SCHEMA_V2)];

// `unique_sw` is stored per row so that a holder allowed several registrations
// of one software product can insert rows the partial index ignores. The
// client_id index skips Gone rows because some upstreams derive the client_id
// from the software_id, and a product whose client vanished must be able to
// register again under the same client_id.
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE registrations (
    id                        TEXT    NOT NULL PRIMARY KEY,
    client_id                 TEXT,
    profile                   TEXT    NOT NULL,
    software_id               TEXT    NOT NULL,
    org_id                    TEXT,
    state                     TEXT    NOT NULL CHECK (state IN ('pending', 'active', 'gone')),
    pending_op                TEXT    CHECK (pending_op IN ('create', 'replace', 'delete')),
    unique_sw                 INTEGER NOT NULL CHECK (unique_sw IN (0, 1)),
    software_statement        TEXT    NOT NULL,
    metadata                  TEXT    NOT NULL,
    registration_access_token TEXT,
    registration_client_uri   TEXT,
    cert_subject_dn           TEXT    NOT NULL,
    cert_thumbprint_s256      TEXT    NOT NULL,
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL,
    attempts                  INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    CHECK ((state = 'pending') = (pending_op IS NOT NULL)),
    CHECK (state <> 'active' OR (client_id IS NOT NULL AND registration_access_token IS NOT NULL)),
    CHECK (state <> 'gone' OR registration_access_token IS NULL)
) STRICT;

CREATE UNIQUE INDEX registrations_live_software_id
    ON registrations (profile, software_id)
    WHERE state IN ('pending', 'active') AND unique_sw = 1;

CREATE UNIQUE INDEX registrations_live_client_id
    ON registrations (client_id)
    WHERE client_id IS NOT NULL AND state <> 'gone';

CREATE INDEX registrations_pending_since
    ON registrations (updated_at)
    WHERE state = 'pending';
";

// What an in-flight create or replacement needs to be found or finished after a crash (JSON text): for
// upstreams that choose the client_id themselves, and for a replacement whose rotated RAT was lost.
const SCHEMA_V2: &str = "
ALTER TABLE registrations ADD COLUMN create_fingerprint TEXT;
ALTER TABLE registrations ADD COLUMN replacement TEXT;
";

/// The file holds registration access tokens, so it is created readable by
/// the owner only; SQLite gives its journal file the same mode.
pub(super) fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map(drop).map_err(|e| {
        StoreError::Unavailable(format!("cannot open store file {}: {e}", path.display()))
    })
}

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER NOT NULL PRIMARY KEY,
             applied_at INTEGER NOT NULL
         ) STRICT;",
    )
    .map_err(map_err)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > latest {
        // A newer build has migrated this file; writing with an older idea of
        // the schema could break its invariants.
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this build supports ({latest})"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(sql).map_err(map_err)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            params![version, now()],
        )
        .map_err(map_err)?;
    }
    tx.commit().map_err(map_err)
}
