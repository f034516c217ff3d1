//! Owns [`RegistrationStore`] for [`PostgresStore`]: each operation as SQL on a pooled connection.

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use super::PostgresStore;
use super::rows::{
    COLUMNS, VISIBLE, change_by_client_id, change_by_id, execute, exists, map_err, map_insert_err,
    registration, to_json,
};
use crate::jwt::now;
use crate::store::{PendingOp, PendingReplacement, Registration, RegistrationStore, StoreError};

#[async_trait]
impl RegistrationStore for PostgresStore {
    async fn begin_create(
        &self,
        rec: &Registration,
        unique_software_id: bool,
    ) -> Result<(), StoreError> {
        let fingerprint = rec
            .create_fingerprint
            .as_ref()
            .map(|f| to_json("create_fingerprint", f))
            .transpose()?;
        self.with_conn(async |conn| {
            let stmt = conn
                .prepare_cached(&format!(
                    "INSERT INTO dcr_registrations ({COLUMNS}, unique_sw)
                     VALUES ($1, $2, $3, $4, $5, 'pending', 'create', $6, $7, $8, $9, $10, $11,
                             $12, $13, 0, $15, NULL, $14)"
                ))
                .await
                .map_err(map_err)?;
            conn.execute(
                &stmt,
                &[
                    &rec.id,
                    &rec.client_id,
                    &rec.profile,
                    &rec.software_id,
                    &rec.org_id,
                    &rec.software_statement,
                    &rec.metadata,
                    &rec.registration_access_token,
                    &rec.registration_client_uri,
                    &rec.cert_subject_dn,
                    &rec.cert_thumbprint_s256,
                    &rec.created_at,
                    &rec.updated_at,
                    &unique_software_id,
                    &fingerprint,
                ],
            )
            .await
            .map_err(|e| map_insert_err(e, &rec.software_id))?;
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
        self.with_conn(async |conn| {
            change_by_id(
                conn,
                "UPDATE dcr_registrations
                 SET state = 'active', pending_op = NULL, client_id = $2,
                     registration_access_token = $3, registration_client_uri = $4,
                     metadata = $5, updated_at = $6, attempts = 0, create_fingerprint = NULL
                 WHERE id = $1 AND state = 'pending' AND pending_op = 'create'",
                &id,
                &[&id, &client_id, &rat, &client_uri, metadata, &now()],
            )
            .await
        })
        .await
    }

    async fn abandon(&self, id: Uuid) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            change_by_id(
                conn,
                "DELETE FROM dcr_registrations
                 WHERE id = $1 AND state = 'pending' AND pending_op = 'create'",
                &id,
                &[&id],
            )
            .await
        })
        .await
    }

    async fn get_by_client_id(&self, client_id: &str) -> Result<Option<Registration>, StoreError> {
        self.with_conn(async |conn| {
            let stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM dcr_registrations WHERE client_id = $1 AND {VISIBLE}"
                ))
                .await
                .map_err(map_err)?;
            let row = conn
                .query_opt(&stmt, &[&client_id])
                .await
                .map_err(map_err)?;
            row.as_ref().map(registration).transpose()
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
        let replacement = to_json("replacement", replacement)?;
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
        self.with_conn(async |conn| {
            // One statement: the new RAT, the metadata it goes with and the
            // state change land together or not at all.
            change_by_client_id(
                conn,
                "UPDATE dcr_registrations
                 SET state = 'active', pending_op = NULL, registration_access_token = $2,
                     metadata = $3, software_statement = $4, updated_at = $5, attempts = 0,
                     replacement = NULL
                 WHERE client_id = $1 AND state = 'pending' AND pending_op = 'replace'",
                client_id,
                &[&client_id, &rat, metadata, &software_statement, &now()],
            )
            .await
        })
        .await
    }

    async fn cancel_change(&self, client_id: &str) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            change_by_client_id(
                conn,
                "UPDATE dcr_registrations
                 SET state = 'active', pending_op = NULL, updated_at = $2, attempts = 0,
                     replacement = NULL
                 WHERE client_id = $1 AND state = 'pending'
                   AND pending_op IN ('replace', 'delete')",
                client_id,
                &[&client_id, &now()],
            )
            .await
        })
        .await
    }

    async fn remove(&self, client_id: &str) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            change_by_client_id(
                conn,
                &format!("DELETE FROM dcr_registrations WHERE client_id = $1 AND {VISIBLE}"),
                client_id,
                &[&client_id],
            )
            .await
        })
        .await
    }

    async fn mark_gone(&self, client_id: &str) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            change_by_client_id(
                conn,
                &format!(
                    "UPDATE dcr_registrations
                     SET state = 'gone', pending_op = NULL, registration_access_token = NULL,
                         updated_at = $2, replacement = NULL
                     WHERE client_id = $1 AND {VISIBLE}"
                ),
                client_id,
                &[&client_id, &now()],
            )
            .await
        })
        .await
    }

    async fn pending(
        &self,
        older_than: i64,
        limit: usize,
    ) -> Result<Vec<Registration>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(async |conn| {
            let stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM dcr_registrations
                     WHERE state = 'pending' AND updated_at < $1
                     ORDER BY updated_at, id LIMIT $2"
                ))
                .await
                .map_err(map_err)?;
            let rows = conn
                .query(&stmt, &[&older_than, &limit])
                .await
                .map_err(map_err)?;
            rows.iter().map(registration).collect()
        })
        .await
    }

    async fn pending_creates(&self, limit: usize) -> Result<Vec<Registration>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(async |conn| {
            let stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM dcr_registrations
                     WHERE state = 'pending' AND pending_op = 'create'
                     ORDER BY created_at, id LIMIT $1"
                ))
                .await
                .map_err(map_err)?;
            let rows = conn.query(&stmt, &[&limit]).await.map_err(map_err)?;
            rows.iter().map(registration).collect()
        })
        .await
    }

    async fn knows_client_id(&self, client_id: &str) -> Result<bool, StoreError> {
        self.with_conn(async |conn| {
            exists(
                conn,
                "SELECT 1 FROM dcr_registrations WHERE client_id = $1 LIMIT 1",
                &[&client_id],
            )
            .await
        })
        .await
    }

    async fn bump_attempts(&self, id: Uuid) -> Result<(), StoreError> {
        self.with_conn(async |conn| {
            let changed = execute(
                conn,
                "UPDATE dcr_registrations SET attempts = attempts + 1, updated_at = $2
                 WHERE id = $1",
                &[&id, &now()],
            )
            .await?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Reads a real table rather than `SELECT 1`, so a dropped schema or
        // revoked grant shows up here and not on the next registration.
        self.with_conn(async |conn| {
            exists(conn, "SELECT 1 FROM dcr_schema_migrations LIMIT 1", &[])
                .await
                .map(drop)
        })
        .await
    }
}
