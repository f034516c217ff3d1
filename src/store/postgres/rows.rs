//! Owns the SQL shared by every operation: column lists, row mapping, error mapping and the conditional updates the operations build on.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use uuid::Uuid;

use super::schema::LIVE_SOFTWARE_ID_INDEX;
use crate::store::{Registration, StoreError};

pub(super) const COLUMNS: &str = "id, client_id, profile, software_id, org_id, state, pending_op, \
     software_statement, metadata, registration_access_token, registration_client_uri, \
     cert_subject_dn, cert_thumbprint_s256, created_at, updated_at, attempts, \
     create_fingerprint, replacement";

/// Rows that GET may see: Active ones, and ones with a management change in
/// flight. PostgreSQL proves this implies the client_id index's predicate,
/// so lookups by client_id use that index.
pub(super) const VISIBLE: &str =
    "(state = 'active' OR (state = 'pending' AND pending_op IN ('replace', 'delete')))";

/// Rows that still stand for a client the upstream has (or may have).
pub(super) const LIVE: &str = "state <> 'gone'";

/// What a failure means to the caller. Only the SQLSTATE and the primary
/// message are kept: PostgreSQL's DETAIL line for a constraint failure quotes
/// the whole row, registration access token included, and these messages end
/// up in logs.
pub(super) fn map_err(e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        // No SQLSTATE: the connection broke, timed out or could not be made. tokio-postgres keeps the
        // reason (refused, no route, TLS, DNS) in the source chain, not in its own text.
        let mut why = format!("PostgreSQL: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why.push_str(&format!(": {s}"));
            source = s.source();
        }
        return StoreError::Unavailable(why);
    };
    let code = db.code();
    let described = format!("PostgreSQL {}: {}", code.code(), db.message());
    if code.code().starts_with("23") {
        // A uniqueness or other constraint refused the write: someone else's
        // write got there first, as the SQLite backend reports it too.
        StoreError::Conflict
    } else if code.code().starts_with("22")
        || *code == SqlState::DATA_CORRUPTED
        || *code == SqlState::INDEX_CORRUPTED
    {
        // Data exceptions: the value itself cannot be stored or read back,
        // so a retry would fail the same way.
        StoreError::Corrupt(described)
    } else {
        // Shutdowns (57P01), connection failures (08xxx), statement timeouts
        // (57014), resource limits (53xxx), deadlocks and serialisation
        // failures (40xxx): all may pass.
        StoreError::Unavailable(described)
    }
}

/// Like [`map_err`], but recognises the live software_id index by name.
pub(super) fn map_insert_err(e: tokio_postgres::Error, software_id: &str) -> StoreError {
    let on_software_id = e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(LIVE_SOFTWARE_ID_INDEX)
    });
    if on_software_id {
        return StoreError::DuplicateSoftwareId {
            software_id: software_id.to_owned(),
        };
    }
    map_err(e)
}

/// Reads one column; a value of an unexpected type or out of range is a row
/// this build cannot understand.
pub(super) fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx).map_err(|e| {
        let name = row.columns().get(idx).map_or("?", |c| c.name());
        StoreError::Corrupt(format!("column {name}: {e}"))
    })
}

pub(super) fn registration(row: &Row) -> Result<Registration, StoreError> {
    let state: String = col(row, 5)?;
    let pending_op: Option<String> = col(row, 6)?;
    let attempts: i32 = col(row, 15)?;
    let create_fingerprint: Option<Value> = col(row, 16)?;
    let replacement: Option<Value> = col(row, 17)?;
    Ok(Registration {
        id: col(row, 0)?,
        client_id: col(row, 1)?,
        profile: col(row, 2)?,
        software_id: col(row, 3)?,
        org_id: col(row, 4)?,
        state: state.parse()?,
        pending_op: pending_op.as_deref().map(str::parse).transpose()?,
        software_statement: col(row, 7)?,
        metadata: col(row, 8)?,
        registration_access_token: col(row, 9)?,
        registration_client_uri: col(row, 10)?,
        cert_subject_dn: col(row, 11)?,
        cert_thumbprint_s256: col(row, 12)?,
        created_at: col(row, 13)?,
        updated_at: col(row, 14)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("bad attempts {attempts}")))?,
        create_fingerprint: from_json("create_fingerprint", create_fingerprint)?,
        replacement: from_json("replacement", replacement)?,
    })
}

fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    v: Option<Value>,
) -> Result<Option<T>, StoreError> {
    v.map(|v| {
        serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("bad {what}: {e}")))
    })
    .transpose()
}

pub(super) fn to_json<T: serde::Serialize>(what: &str, v: &T) -> Result<Value, StoreError> {
    serde_json::to_value(v)
        .map_err(|e| StoreError::Corrupt(format!("{what} not serialisable: {e}")))
}

pub(super) async fn execute(
    conn: &(impl GenericClient + ?Sized),
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let stmt = conn.prepare_cached(sql).await.map_err(map_err)?;
    conn.execute(&stmt, params).await.map_err(map_err)
}

pub(super) async fn exists(
    conn: &(impl GenericClient + ?Sized),
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<bool, StoreError> {
    let stmt = conn.prepare_cached(sql).await.map_err(map_err)?;
    let row = conn.query_opt(&stmt, params).await.map_err(map_err)?;
    Ok(row.is_some())
}

/// After an UPDATE/DELETE that matched no row: tells "no such record" apart
/// from "it exists but is in another state".
fn missing_or_conflict(exists: bool) -> StoreError {
    if exists {
        StoreError::Conflict
    } else {
        StoreError::NotFound
    }
}

/// Runs a conditional single-row UPDATE/DELETE keyed by id, or explains why
/// no row matched. The statement commits on its own, so the change is atomic
/// however the explanation afterwards turns out.
pub(super) async fn change_by_id(
    conn: &(impl GenericClient + ?Sized),
    sql: &str,
    id: &Uuid,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(), StoreError> {
    if execute(conn, sql, params).await? == 0 {
        let present = exists(conn, "SELECT 1 FROM dcr_registrations WHERE id = $1", &[id]).await?;
        return Err(missing_or_conflict(present));
    }
    Ok(())
}

/// Same as [`change_by_id`] for statements keyed by client_id.
pub(super) async fn change_by_client_id(
    conn: &(impl GenericClient + ?Sized),
    sql: &str,
    client_id: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(), StoreError> {
    if execute(conn, sql, params).await? == 0 {
        let present = exists(
            conn,
            &format!("SELECT 1 FROM dcr_registrations WHERE client_id = $1 AND {LIVE}"),
            &[&client_id],
        )
        .await?;
        return Err(missing_or_conflict(present));
    }
    Ok(())
}
