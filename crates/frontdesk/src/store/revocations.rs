//! Revoked sessions, persisted so that every instance (and the same instance after a
//! restart) refuses them: the webhook effect writes here first, the verifier's
//! in-process set is loaded from here at start and kept fresh by the bus.

use super::{Backend, Store};
use crate::error::Result;

impl Store {
    /// Records that `sid` is refused until `until_ms`; a second revocation keeps the
    /// later time. With `fence` (an inbox message id and its claim), the write commits
    /// only while that claim is the message's current one, in one transaction that
    /// holds the inbox row: a worker that lost its lease (or was killed mid-write)
    /// cannot commit after another worker took the message.
    pub async fn revocation_put(
        &self,
        sid: &str,
        until_ms: i64,
        now_ms: i64,
        fence: Option<(&str, i64)>,
    ) -> Result<()> {
        let sql = "INSERT INTO session_revocations (sid, until_ms, revoked_at) VALUES ($1, $2, $3)
                   ON CONFLICT (sid) DO UPDATE SET until_ms = CASE
                       WHEN excluded.until_ms > session_revocations.until_ms THEN excluded.until_ms
                       ELSE session_revocations.until_ms END";
        let fence_sql = match self.backend() {
            Backend::Postgres(_) => {
                "SELECT claim FROM webhook_inbox WHERE id = $1 AND claim = $2 AND state = 'pending' FOR UPDATE"
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => {
                "SELECT claim FROM webhook_inbox WHERE id = $1 AND claim = $2 AND state = 'pending'"
            }
        };
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if let Some((id, claim)) = fence {
                let held: Option<i64> = sqlx::query_scalar(fence_sql)
                    .bind(id)
                    .bind(claim)
                    .fetch_optional(&mut *tx)
                    .await?;
                if held.is_none() {
                    return Err(
                        anyhow::anyhow!("the webhook claim was taken by another worker").into(),
                    );
                }
            }
            sqlx::query(sql)
                .bind(sid)
                .bind(until_ms)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Revocations still in force at `now_ms`, latest-expiring first, at most `limit`.
    pub async fn revocations_active(&self, now_ms: i64, limit: i64) -> Result<Vec<(String, i64)>> {
        let sql = "SELECT sid, until_ms FROM session_revocations WHERE until_ms > $1
                   ORDER BY until_ms DESC LIMIT $2";
        Ok(on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Deletes revocations that expired before `now_ms`. Returns how many.
    pub async fn revocations_purge(&self, now_ms: i64) -> Result<u64> {
        let sql = "DELETE FROM session_revocations WHERE until_ms <= $1";
        Ok(on_pool!(self, |pool| sqlx::query(sql)
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected()))
    }
}
