//! Bulk jobs and their items (see `bulk/`). A job is stored whole before it is
//! acknowledged; a runner on any instance claims it under a lease (`locked_until`)
//! that it renews while it works, and every write of a result is fenced by the
//! claim, so a runner whose lease was retaken cannot overwrite the new runner's work.

use serde::Serialize;

use super::{Backend, Store};
use crate::error::Result;

/// One item of a new job.
#[derive(Debug, Clone)]
pub struct NewJobItem {
    pub user_id: String,
    /// The metadata update, as JSON.
    pub body: String,
}

/// A pending item, as a runner takes it.
#[derive(Debug, Clone)]
pub struct PendingItem {
    pub seq: i32,
    pub user_id: String,
    pub body: String,
    pub attempts: i32,
}

/// A job's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSummary {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub total: i64,
    pub ok: i64,
    pub failed: i64,
    pub pending: i64,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// One item's outcome, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemResult {
    pub user_id: String,
    pub state: String,
    pub attempts: i32,
    pub status: Option<i32>,
    pub error_code: Option<String>,
}

/// How an item ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    Ok { status: i32 },
    Failed { status: Option<i32>, code: String },
}

const CLAIM_PG: &str = "UPDATE bulk_jobs SET locked_until = $1, claim = claim + 1
     WHERE id IN (
         SELECT id FROM bulk_jobs
         WHERE state = 'running' AND locked_until <= $2
         ORDER BY created_at LIMIT 1
         FOR UPDATE SKIP LOCKED)
     RETURNING id, claim";

#[cfg(feature = "sqlite")]
const CLAIM_SQLITE: &str = "UPDATE bulk_jobs SET locked_until = $1, claim = claim + 1
     WHERE id IN (
         SELECT id FROM bulk_jobs
         WHERE state = 'running' AND locked_until <= $2
         ORDER BY created_at LIMIT 1)
     RETURNING id, claim";

/// Rows per multi-row insert (4 binds each, under both backends' bind limits).
const INSERT_CHUNK: usize = 1000;

impl Store {
    /// Stores a job and all its items in one transaction.
    pub async fn job_insert(
        &self,
        id: &str,
        kind: &str,
        items: &[NewJobItem],
        now_ms: i64,
    ) -> Result<()> {
        let job_sql = "INSERT INTO bulk_jobs (id, kind, total, created_at) VALUES ($1, $2, $3, $4)";
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(job_sql)
                .bind(id)
                .bind(kind)
                .bind(items.len() as i64)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            for (c, chunk) in items.chunks(INSERT_CHUNK).enumerate() {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO bulk_job_items (job_id, seq, user_id, body) ",
                );
                qb.push_values(chunk.iter().enumerate(), |mut row, (i, item)| {
                    row.push_bind(id)
                        .push_bind((c * INSERT_CHUNK + i) as i32)
                        .push_bind(&item.user_id)
                        .push_bind(&item.body);
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Takes the oldest running job nobody holds (or whose holder's lease ran out)
    /// for `lease_ms`. Returns its id and claim.
    pub async fn job_claim(&self, now_ms: i64, lease_ms: i64) -> Result<Option<(String, i64)>> {
        let until = now_ms.saturating_add(lease_ms);
        let row: Option<(String, i64)> = on_backend!(self, |backend| match backend {
            Backend::Postgres(pool) => {
                sqlx::query_as(CLAIM_PG)
                    .bind(until)
                    .bind(now_ms)
                    .fetch_optional(pool)
                    .await?
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => {
                sqlx::query_as(CLAIM_SQLITE)
                    .bind(until)
                    .bind(now_ms)
                    .fetch_optional(pool)
                    .await?
            }
        });
        Ok(row)
    }

    /// Extends the lease; `false` when the claim is no longer this runner's.
    pub async fn job_renew(&self, id: &str, claim: i64, until_ms: i64) -> Result<bool> {
        let sql = "UPDATE bulk_jobs SET locked_until = $1
                   WHERE id = $2 AND claim = $3 AND state = 'running'";
        let n = on_pool!(self, |pool| sqlx::query(sql)
            .bind(until_ms)
            .bind(id)
            .bind(claim)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Up to `limit` pending items after `after_seq`, in order.
    pub async fn job_pending(
        &self,
        id: &str,
        after_seq: i32,
        limit: i64,
    ) -> Result<Vec<PendingItem>> {
        let sql = "SELECT seq, user_id, body, attempts FROM bulk_job_items
                   WHERE job_id = $1 AND state = 'pending' AND seq > $2
                   ORDER BY seq LIMIT $3";
        let rows: Vec<(i32, String, String, i32)> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(id)
            .bind(after_seq)
            .bind(limit)
            .fetch_all(pool)
            .await?);
        Ok(rows
            .into_iter()
            .map(|(seq, user_id, body, attempts)| PendingItem {
                seq,
                user_id,
                body,
                attempts,
            })
            .collect())
    }

    /// Records an item's outcome, if this runner still holds the job. Returns
    /// whether it was recorded.
    pub async fn job_item_finish(
        &self,
        id: &str,
        claim: i64,
        seq: i32,
        attempts: i32,
        outcome: &ItemOutcome,
    ) -> Result<bool> {
        let sql =
            "UPDATE bulk_job_items SET state = $1, status = $2, error_code = $3, attempts = $4
                   WHERE job_id = $5 AND seq = $6 AND state = 'pending'
                     AND EXISTS (SELECT 1 FROM bulk_jobs WHERE id = $5 AND claim = $7)";
        let (state, status, code) = match outcome {
            ItemOutcome::Ok { status } => ("ok", Some(*status), None),
            ItemOutcome::Failed { status, code } => ("failed", *status, Some(code.as_str())),
        };
        let n = on_pool!(self, |pool| sqlx::query(sql)
            .bind(state)
            .bind(status)
            .bind(code)
            .bind(attempts)
            .bind(id)
            .bind(seq)
            .bind(claim)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Marks the job done when none of its items is pending. Returns whether it did.
    pub async fn job_finish(&self, id: &str, claim: i64, now_ms: i64) -> Result<bool> {
        let sql = "UPDATE bulk_jobs SET state = 'done', finished_at = $1, locked_until = 0
                   WHERE id = $2 AND claim = $3 AND state = 'running'
                     AND NOT EXISTS (SELECT 1 FROM bulk_job_items
                                     WHERE job_id = $2 AND state = 'pending')";
        let n = on_pool!(self, |pool| sqlx::query(sql)
            .bind(now_ms)
            .bind(id)
            .bind(claim)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// A job's figures; `None` when there is no such job.
    pub async fn job_summary(&self, id: &str) -> Result<Option<JobSummary>> {
        let sql = "SELECT j.id, j.kind, j.state, CAST(j.total AS BIGINT), j.created_at, j.finished_at,
                          CAST(COALESCE(SUM(CASE WHEN i.state = 'ok' THEN 1 ELSE 0 END), 0) AS BIGINT),
                          CAST(COALESCE(SUM(CASE WHEN i.state = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT),
                          CAST(COALESCE(SUM(CASE WHEN i.state = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT)
                   FROM bulk_jobs j LEFT JOIN bulk_job_items i ON i.job_id = j.id
                   WHERE j.id = $1
                   GROUP BY j.id, j.kind, j.state, j.total, j.created_at, j.finished_at";
        type Row = (String, String, String, i64, i64, Option<i64>, i64, i64, i64);
        let row: Option<Row> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(
            |(id, kind, state, total, created_at, finished_at, ok, failed, pending)| JobSummary {
                id,
                kind,
                state,
                total,
                ok,
                failed,
                pending,
                created_at,
                finished_at,
            },
        ))
    }

    /// Every item's outcome, in request order.
    pub async fn job_results(&self, id: &str) -> Result<Vec<ItemResult>> {
        let sql = "SELECT user_id, state, attempts, status, error_code FROM bulk_job_items
                   WHERE job_id = $1 ORDER BY seq";
        type Row = (String, String, i32, Option<i32>, Option<String>);
        let rows: Vec<Row> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(id)
            .fetch_all(pool)
            .await?);
        Ok(rows
            .into_iter()
            .map(
                |(user_id, state, attempts, status, error_code)| ItemResult {
                    user_id,
                    state,
                    attempts,
                    status,
                    error_code,
                },
            )
            .collect())
    }
}
