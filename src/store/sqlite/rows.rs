//! Owns the SQL shared by every operation: column lists, row mapping, error mapping and the small queries the operations build on.

use rusqlite::{Connection, ErrorCode, OptionalExtension, Row};
use serde_json::Value;
use uuid::Uuid;

use crate::store::{CreateFingerprint, PendingReplacement, Registration, StoreError};

pub(super) const COLUMNS: &str = "id, client_id, profile, software_id, org_id, state, pending_op, \
     software_statement, metadata, registration_access_token, registration_client_uri, \
     cert_subject_dn, cert_thumbprint_s256, created_at, updated_at, attempts, \
     create_fingerprint, replacement";

/// Rows that GET may see: Active ones, and ones with a management change in
/// flight (their stored data is still what the client last saw).
pub(super) const VISIBLE: &str =
    "(state = 'active' OR (state = 'pending' AND pending_op IN ('replace', 'delete')))";

/// Rows that still stand for a client the upstream has (or may have).
const LIVE: &str = "state <> 'gone'";

pub(super) fn map_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation => StoreError::Conflict,
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Unavailable(e.to_string()),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..)
        | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Like [`map_err`], but recognises the live software_id index. SQLite names
/// the columns, not the index, in its message, and no other unique rule covers
/// `software_id`.
pub(super) fn map_insert_err(e: rusqlite::Error, software_id: &str) -> StoreError {
    let on_software_id = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                && msg.contains("registrations.software_id")
    );
    if on_software_id {
        return StoreError::DuplicateSoftwareId {
            software_id: software_id.to_owned(),
        };
    }
    map_err(e)
}

/// Runs one statement through the connection's statement cache.
pub(super) fn exec(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<usize, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute(params))
        .map_err(map_err)
}

pub(super) fn metadata_text(metadata: &Value) -> Result<String, StoreError> {
    serde_json::to_string(metadata)
        .map_err(|e| StoreError::Corrupt(format!("metadata not serialisable: {e}")))
}

pub(super) fn json_text<T: serde::Serialize>(what: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v)
        .map_err(|e| StoreError::Corrupt(format!("{what} not serialisable: {e}")))
}

fn from_json_text<T: serde::de::DeserializeOwned>(
    what: &str,
    text: Option<String>,
) -> Result<Option<T>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("bad {what} JSON: {e}")))
    })
    .transpose()
}

pub(super) fn read_row(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        id: row.get(0)?,
        client_id: row.get(1)?,
        profile: row.get(2)?,
        software_id: row.get(3)?,
        org_id: row.get(4)?,
        state: row.get(5)?,
        pending_op: row.get(6)?,
        software_statement: row.get(7)?,
        metadata: row.get(8)?,
        registration_access_token: row.get(9)?,
        registration_client_uri: row.get(10)?,
        cert_subject_dn: row.get(11)?,
        cert_thumbprint_s256: row.get(12)?,
        created_at: row.get(13)?,
        updated_at: row.get(14)?,
        attempts: row.get(15)?,
        create_fingerprint: row.get(16)?,
        replacement: row.get(17)?,
    })
}

/// A row as SQLite types it; turned into a [`Registration`] outside the
/// rusqlite callback so parse failures become `Corrupt` with a clear message.
pub(super) struct RawRow {
    pub(super) id: String,
    pub(super) client_id: Option<String>,
    pub(super) profile: String,
    pub(super) software_id: String,
    pub(super) org_id: Option<String>,
    pub(super) state: String,
    pub(super) pending_op: Option<String>,
    pub(super) software_statement: String,
    pub(super) metadata: String,
    pub(super) registration_access_token: Option<String>,
    pub(super) registration_client_uri: Option<String>,
    pub(super) cert_subject_dn: String,
    pub(super) cert_thumbprint_s256: String,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) attempts: i64,
    pub(super) create_fingerprint: Option<String>,
    pub(super) replacement: Option<String>,
}

impl RawRow {
    /// A record as its columns hold it (the inverse of `TryFrom<RawRow>`), made on the caller's thread so the
    /// store thread gets text and numbers to bind, not the record's JSON to serialise.
    pub(super) fn of(rec: &Registration) -> Result<Self, StoreError> {
        Ok(RawRow {
            id: rec.id.to_string(),
            client_id: rec.client_id.clone(),
            profile: rec.profile.clone(),
            software_id: rec.software_id.clone(),
            org_id: rec.org_id.clone(),
            state: rec.state.as_str().to_owned(),
            pending_op: rec.pending_op.map(|op| op.as_str().to_owned()),
            software_statement: rec.software_statement.clone(),
            metadata: metadata_text(&rec.metadata)?,
            registration_access_token: rec.registration_access_token.clone(),
            registration_client_uri: rec.registration_client_uri.clone(),
            cert_subject_dn: rec.cert_subject_dn.clone(),
            cert_thumbprint_s256: rec.cert_thumbprint_s256.clone(),
            created_at: rec.created_at,
            updated_at: rec.updated_at,
            attempts: i64::from(rec.attempts),
            create_fingerprint: rec
                .create_fingerprint
                .as_ref()
                .map(|f| json_text("create_fingerprint", f))
                .transpose()?,
            replacement: rec
                .replacement
                .as_ref()
                .map(|r| json_text("replacement", r))
                .transpose()?,
        })
    }
}

impl TryFrom<RawRow> for Registration {
    type Error = StoreError;

    fn try_from(r: RawRow) -> Result<Self, StoreError> {
        Ok(Registration {
            id: Uuid::parse_str(&r.id)
                .map_err(|e| StoreError::Corrupt(format!("bad record id {:?}: {e}", r.id)))?,
            client_id: r.client_id,
            profile: r.profile,
            software_id: r.software_id,
            org_id: r.org_id,
            state: r.state.parse()?,
            pending_op: r.pending_op.as_deref().map(str::parse).transpose()?,
            software_statement: r.software_statement,
            metadata: serde_json::from_str(&r.metadata)
                .map_err(|e| StoreError::Corrupt(format!("bad metadata JSON: {e}")))?,
            registration_access_token: r.registration_access_token,
            registration_client_uri: r.registration_client_uri,
            cert_subject_dn: r.cert_subject_dn,
            cert_thumbprint_s256: r.cert_thumbprint_s256,
            created_at: r.created_at,
            updated_at: r.updated_at,
            attempts: u32::try_from(r.attempts)
                .map_err(|_| StoreError::Corrupt(format!("bad attempts {}", r.attempts)))?,
            create_fingerprint: from_json_text::<CreateFingerprint>(
                "create_fingerprint",
                r.create_fingerprint,
            )?,
            replacement: from_json_text::<PendingReplacement>("replacement", r.replacement)?,
        })
    }
}

/// The live record for `client_id`, whatever its state short of Gone.
pub(super) fn live_by_client_id(
    conn: &Connection,
    client_id: &str,
) -> Result<Option<Registration>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM registrations WHERE client_id = ?1 AND {LIVE}"
    ))
    .and_then(|mut stmt| stmt.query_row([client_id], read_row))
    .optional()
    .map_err(map_err)?
    .map(Registration::try_from)
    .transpose()
}

/// After an UPDATE/DELETE that matched no row: tells "no such record" apart
/// from "it exists but is in another state".
pub(super) fn missing_or_conflict(exists: bool) -> StoreError {
    if exists {
        StoreError::Conflict
    } else {
        StoreError::NotFound
    }
}

pub(super) fn id_exists(tx: &Connection, id: &str) -> Result<bool, StoreError> {
    tx.prepare_cached("SELECT 1 FROM registrations WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([id], |_| Ok(())))
        .optional()
        .map(|o| o.is_some())
        .map_err(map_err)
}

fn client_live(tx: &Connection, client_id: &str) -> Result<bool, StoreError> {
    tx.prepare_cached(&format!(
        "SELECT 1 FROM registrations WHERE client_id = ?1 AND {LIVE}"
    ))
    .and_then(|mut stmt| stmt.query_row([client_id], |_| Ok(())))
    .optional()
    .map(|o| o.is_some())
    .map_err(map_err)
}

/// Runs a conditional single-row UPDATE/DELETE keyed by client_id, or
/// explains why no row matched.
pub(super) fn change_by_client_id(
    conn: &Connection,
    sql: &str,
    client_id: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<(), StoreError> {
    if exec(conn, sql, params)? == 0 {
        return Err(missing_or_conflict(client_live(conn, client_id)?));
    }
    Ok(())
}
