//! Owns [`RegistrationStore`] for [`SqliteStore`]: each operation as SQL run on the store thread.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;
use uuid::Uuid;

use super::SqliteStore;
use super::rows::{
    COLUMNS, RawRow, VISIBLE, change_by_client_id, exec, id_exists, json_text, map_err,
    map_insert_err, metadata_text, missing_or_conflict, read_row,
};
use crate::jwt::now;
use crate::store::{PendingOp, PendingReplacement, Registration, RegistrationStore, StoreError};

#[async_trait]
impl RegistrationStore for SqliteStore {
    async fn begin_create(
        &self,
        rec: &Registration,
        unique_software_id: bool,
    ) -> Result<(), StoreError> {
        let row = RawRow::of(rec)?;
        self.write(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "INSERT INTO registrations ({COLUMNS}, unique_sw)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 'create', ?6, ?7, ?8, ?9, ?10, ?11,
                             ?12, ?13, 0, ?15, NULL, ?14)"
                ))
                .map_err(map_err)?;
            // State, operation and attempts are fixed by the statement: this is always a new pending create.
            stmt.execute(params![
                row.id,
                row.client_id,
                row.profile,
                row.software_id,
                row.org_id,
                row.software_statement,
                row.metadata,
                row.registration_access_token,
                row.registration_client_uri,
                row.cert_subject_dn,
                row.cert_thumbprint_s256,
                row.created_at,
                row.updated_at,
                unique_software_id,
                row.create_fingerprint,
            ])
            .map_err(|e| map_insert_err(e, &row.software_id))?;
            Ok(())
        })
        .await
    }

    async fn complete_create(
        &self,
        id: Uuid,
        client_id: &str,
        rat: &str,
        client_uri: &str,
        metadata: &Value,
    ) -> Result<(), StoreError> {
        let (client_id, rat, client_uri) =
            (client_id.to_owned(), rat.to_owned(), client_uri.to_owned());
        let metadata = metadata_text(metadata)?;
        self.write(move |conn| {
            let id = id.to_string();
            let changed = exec(
                conn,
                "UPDATE registrations
                 SET state = 'active', pending_op = NULL, client_id = ?2,
                     registration_access_token = ?3, registration_client_uri = ?4,
                     metadata = ?5, updated_at = ?6, attempts = 0, create_fingerprint = NULL
                 WHERE id = ?1 AND state = 'pending' AND pending_op = 'create'",
                params![id, client_id, rat, client_uri, metadata, now()],
            )?;
            if changed == 0 {
                return Err(missing_or_conflict(id_exists(conn, &id)?));
            }
            Ok(())
        })
        .await
    }

    async fn abandon(&self, id: Uuid) -> Result<(), StoreError> {
        self.write(move |conn| {
            let id = id.to_string();
            let changed = exec(
                conn,
                "DELETE FROM registrations
                 WHERE id = ?1 AND state = 'pending' AND pending_op = 'create'",
                [&id],
            )?;
            if changed == 0 {
                return Err(missing_or_conflict(id_exists(conn, &id)?));
            }
            Ok(())
        })
        .await
    }

    async fn get_by_client_id(&self, client_id: &str) -> Result<Option<Registration>, StoreError> {
        let client_id = client_id.to_owned();
        self.run(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM registrations WHERE client_id = ?1 AND {VISIBLE}"
            ))
            .and_then(|mut stmt| stmt.query_row([&client_id], read_row))
            .optional()
            .map_err(map_err)?
            .map(Registration::try_from)
            .transpose()
        })
        .await
    }

    async fn begin_change(
        &self,
        client_id: &str,
        op: PendingOp,
    ) -> Result<Registration, StoreError> {
        if op == PendingOp::Create {
            return Err(StoreError::Conflict);
        }
        self.start_change(client_id, op, None).await
    }

    async fn begin_replace(
        &self,
        client_id: &str,
        replacement: &PendingReplacement,
    ) -> Result<Registration, StoreError> {
        let replacement = json_text("replacement", replacement)?;
        self.start_change(client_id, PendingOp::Replace, Some(replacement))
            .await
    }

    async fn complete_replace(
        &self,
        client_id: &str,
        rat: &str,
        metadata: &Value,
        software_statement: &str,
    ) -> Result<(), StoreError> {
        let (client_id, rat, ssa) = (
            client_id.to_owned(),
            rat.to_owned(),
            software_statement.to_owned(),
        );
        let metadata = metadata_text(metadata)?;
        self.write(move |conn| {
            change_by_client_id(
                conn,
                "UPDATE registrations
                 SET state = 'active', pending_op = NULL, registration_access_token = ?2,
                     metadata = ?3, software_statement = ?4, updated_at = ?5, attempts = 0,
                     replacement = NULL
                 WHERE client_id = ?1 AND state = 'pending' AND pending_op = 'replace'",
                &client_id,
                params![client_id, rat, metadata, ssa, now()],
            )
        })
        .await
    }

    async fn cancel_change(&self, client_id: &str) -> Result<(), StoreError> {
        let client_id = client_id.to_owned();
        self.write(move |conn| {
            change_by_client_id(
                conn,
                "UPDATE registrations
                 SET state = 'active', pending_op = NULL, updated_at = ?2, attempts = 0,
                     replacement = NULL
                 WHERE client_id = ?1 AND state = 'pending'
                   AND pending_op IN ('replace', 'delete')",
                &client_id,
                params![client_id, now()],
            )
        })
        .await
    }

    async fn remove(&self, client_id: &str) -> Result<(), StoreError> {
        let client_id = client_id.to_owned();
        self.write(move |conn| {
            change_by_client_id(
                conn,
                &format!("DELETE FROM registrations WHERE client_id = ?1 AND {VISIBLE}"),
                &client_id,
                params![client_id],
            )
        })
        .await
    }

    async fn mark_gone(&self, client_id: &str) -> Result<(), StoreError> {
        let client_id = client_id.to_owned();
        self.write(move |conn| {
            change_by_client_id(
                conn,
                &format!(
                    "UPDATE registrations
                     SET state = 'gone', pending_op = NULL, registration_access_token = NULL,
                         updated_at = ?2, replacement = NULL
                     WHERE client_id = ?1 AND {VISIBLE}"
                ),
                &client_id,
                params![client_id, now()],
            )
        })
        .await
    }

    async fn pending(
        &self,
        older_than: i64,
        limit: usize,
    ) -> Result<Vec<Registration>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM registrations
                     WHERE state = 'pending' AND updated_at < ?1
                     ORDER BY updated_at, id LIMIT ?2"
                ))
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![older_than, limit], read_row)
                .map_err(map_err)?;
            rows.map(|r| r.map_err(map_err).and_then(Registration::try_from))
                .collect()
        })
        .await
    }

    async fn pending_creates(&self, limit: usize) -> Result<Vec<Registration>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM registrations
                     WHERE state = 'pending' AND pending_op = 'create'
                     ORDER BY created_at, id LIMIT ?1"
                ))
                .map_err(map_err)?;
            let rows = stmt.query_map(params![limit], read_row).map_err(map_err)?;
            rows.map(|r| r.map_err(map_err).and_then(Registration::try_from))
                .collect()
        })
        .await
    }

    async fn knows_client_id(&self, client_id: &str) -> Result<bool, StoreError> {
        let client_id = client_id.to_owned();
        self.run(move |conn| {
            conn.prepare_cached("SELECT 1 FROM registrations WHERE client_id = ?1 LIMIT 1")
                .and_then(|mut stmt| stmt.query_row([&client_id], |_| Ok(())))
                .optional()
                .map(|o| o.is_some())
                .map_err(map_err)
        })
        .await
    }

    async fn bump_attempts(&self, id: Uuid) -> Result<(), StoreError> {
        self.write(move |conn| {
            let changed = exec(
                conn,
                "UPDATE registrations SET attempts = attempts + 1, updated_at = ?2
                 WHERE id = ?1",
                params![id.to_string(), now()],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Reads a real table rather than `SELECT 1`, so a vanished or locked
        // file shows up here and not on the next registration.
        self.run(|conn| {
            conn.query_row("SELECT COUNT(*) FROM schema_version", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(drop)
            .map_err(map_err)
        })
        .await?;
        // Reads keep working from a file that can no longer be written (moved, replaced, on a full or
        // read-only disk): only a write that reaches the journal and the disk proves registrations can
        // be taken. A row in and out again dirties a page and so goes the whole way, yet leaves nothing.
        self.write(|conn| {
            exec(
                conn,
                "INSERT INTO schema_version (version, applied_at) VALUES (-1, ?1)",
                [now()],
            )?;
            exec(conn, "DELETE FROM schema_version WHERE version = -1", [])?;
            Ok(())
        })
        .await
    }
}
