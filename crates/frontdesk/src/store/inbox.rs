//! The durable webhook inbox: verified messages are inserted before they are
//! acknowledged (a redelivered message id is not stored twice), then claimed by workers
//! under a lease, applied, and marked `done`, retried later, or `dead`.
//!
//! Claiming is one statement per backend: Postgres takes due rows with
//! `FOR UPDATE SKIP LOCKED`, so concurrent workers on many instances never take the
//! same row; SQLite has a single writer, so its `UPDATE … WHERE id IN (SELECT … LIMIT n)
//! RETURNING` is atomic by itself. A claim sets `locked_until` (the lease) and counts the
//! attempt, so the rows of a worker that died are taken again once the lease runs out,
//! and a message that kills its worker every time still ends `dead`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Backend, Store};
use crate::error::Result;

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboxState {
    Pending,
    Done,
    Dead,
}

impl InboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            InboxState::Pending => "pending",
            InboxState::Done => "done",
            InboxState::Dead => "dead",
        }
    }
}

impl fmt::Display for InboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InboxState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(InboxState::Pending),
            "done" => Ok(InboxState::Done),
            "dead" => Ok(InboxState::Dead),
            other => Err(format!("unknown inbox state {other:?}")),
        }
    }
}

/// A verified message, as the endpoint stores it.
#[derive(Debug, Clone)]
pub struct NewInboxMessage<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    /// The body exactly as received (UTF-8 JSON).
    pub payload: &'a str,
    /// The envelope's `timestamp`, in ms.
    pub event_ts: i64,
}

/// A message a worker has claimed.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub id: String,
    pub kind: String,
    pub payload: String,
    pub event_ts: i64,
    pub received_at: i64,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// This claim's fencing token: `done`/`retry`/`dead` apply only while the row
    /// still carries it.
    pub claim: i64,
}

/// One row as the operations API lists it (no payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxItem {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub state: InboxState,
    pub attempts: i32,
    pub received_at: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// Queue figures for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InboxStats {
    pub pending: i64,
    pub dead: i64,
    /// `received_at` of the oldest pending message.
    pub oldest_pending_at: Option<i64>,
}

type ClaimRow = (String, String, String, i64, i64, i32, i64);
type ItemRow = (String, String, String, i32, i64, i64, Option<String>);

fn item_from_row(
    (id, kind, state, attempts, received_at, next_attempt_at, last_error): ItemRow,
) -> Result<InboxItem> {
    Ok(InboxItem {
        id,
        kind,
        state: state
            .parse()
            .map_err(|e: String| anyhow::anyhow!("webhook_inbox: {e}"))?,
        attempts,
        received_at,
        next_attempt_at,
        last_error,
    })
}

const CLAIM_PG: &str =
    "UPDATE webhook_inbox SET locked_until = $1, attempts = attempts + 1, claim = claim + 1
     WHERE id IN (
         SELECT id FROM webhook_inbox
         WHERE state = 'pending' AND next_attempt_at <= $2 AND locked_until <= $2
         ORDER BY next_attempt_at, received_at
         LIMIT $3
         FOR UPDATE SKIP LOCKED)
     RETURNING id, type, payload, event_ts, received_at, attempts, claim";

#[cfg(feature = "sqlite")]
const CLAIM_SQLITE: &str =
    "UPDATE webhook_inbox SET locked_until = $1, attempts = attempts + 1, claim = claim + 1
     WHERE id IN (
         SELECT id FROM webhook_inbox
         WHERE state = 'pending' AND next_attempt_at <= $2 AND locked_until <= $2
         ORDER BY next_attempt_at, received_at
         LIMIT $3)
     RETURNING id, type, payload, event_ts, received_at, attempts, claim";

impl Store {
    /// Stores a verified message unless its id is already there. Returns whether it was
    /// new. The row is committed when this returns, so the caller may acknowledge.
    pub async fn inbox_insert(&self, m: &NewInboxMessage<'_>, now_ms: i64) -> Result<bool> {
        let sql =
            "INSERT INTO webhook_inbox (id, type, payload, event_ts, received_at, next_attempt_at)
                   VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING";
        let n = on_pool!(self, |pool| sqlx::query(sql)
            .bind(m.id)
            .bind(m.kind)
            .bind(m.payload)
            .bind(m.event_ts)
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Takes up to `limit` due messages for `lease_ms`, counting the attempt.
    pub async fn inbox_claim(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedMessage>> {
        let until = now_ms.saturating_add(lease_ms);
        let rows: Vec<ClaimRow> = on_backend!(self, |backend| match backend {
            Backend::Postgres(pool) => {
                sqlx::query_as(CLAIM_PG)
                    .bind(until)
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => {
                sqlx::query_as(CLAIM_SQLITE)
                    .bind(until)
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
        });
        Ok(rows
            .into_iter()
            .map(
                |(id, kind, payload, event_ts, received_at, attempts, claim)| ClaimedMessage {
                    id,
                    kind,
                    payload,
                    event_ts,
                    received_at,
                    attempts,
                    claim,
                },
            )
            .collect())
    }

    /// The message's effect is applied. Only the current holder (`claim`) can say
    /// so; returns whether it still was.
    pub async fn inbox_done(&self, id: &str, claim: i64, now_ms: i64) -> Result<bool> {
        let sql = "UPDATE webhook_inbox SET state = 'done', done_at = $1, locked_until = 0, last_error = NULL
                   WHERE id = $2 AND state = 'pending' AND claim = $3";
        let n = on_pool!(self, |pool| sqlx::query(sql)
            .bind(now_ms)
            .bind(id)
            .bind(claim)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// The attempt failed: try again at `next_attempt_at` (current holder only).
    pub async fn inbox_retry(
        &self,
        id: &str,
        claim: i64,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<bool> {
        let sql = "UPDATE webhook_inbox SET next_attempt_at = $1, locked_until = 0, last_error = $2
                   WHERE id = $3 AND state = 'pending' AND claim = $4";
        let n = on_pool!(self, |pool| sqlx::query(sql)
            .bind(next_attempt_at)
            .bind(error)
            .bind(id)
            .bind(claim)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// The last attempt failed: the message is kept as `dead` until replayed
    /// (current holder only).
    pub async fn inbox_dead(&self, id: &str, claim: i64, error: &str, now_ms: i64) -> Result<bool> {
        let sql = "UPDATE webhook_inbox SET state = 'dead', done_at = $1, locked_until = 0, last_error = $2
                   WHERE id = $3 AND state = 'pending' AND claim = $4";
        let n = on_pool!(self, |pool| sqlx::query(sql)
            .bind(now_ms)
            .bind(error)
            .bind(id)
            .bind(claim)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Newest first, optionally of one state.
    pub async fn inbox_list(
        &self,
        state: Option<InboxState>,
        limit: i64,
    ) -> Result<Vec<InboxItem>> {
        let cols = "id, type, state, attempts, received_at, next_attempt_at, last_error";
        let rows: Vec<ItemRow> = match state {
            Some(s) => {
                let sql = format!(
                    "SELECT {cols} FROM webhook_inbox WHERE state = $1 ORDER BY received_at DESC, id LIMIT $2"
                );
                on_pool!(self, |pool| sqlx::query_as(&sql)
                    .bind(s.as_str())
                    .bind(limit)
                    .fetch_all(pool)
                    .await?)
            }
            None => {
                let sql = format!(
                    "SELECT {cols} FROM webhook_inbox ORDER BY received_at DESC, id LIMIT $1"
                );
                on_pool!(self, |pool| sqlx::query_as(&sql)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?)
            }
        };
        rows.into_iter().map(item_from_row).collect()
    }

    /// One message, when stored.
    pub async fn inbox_get(&self, id: &str) -> Result<Option<InboxItem>> {
        let sql = "SELECT id, type, state, attempts, received_at, next_attempt_at, last_error
                   FROM webhook_inbox WHERE id = $1";
        let row: Option<ItemRow> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(pool)
            .await?);
        row.map(item_from_row).transpose()
    }

    /// Puts one message back in the queue (attempts reset, due now), whatever its
    /// state. Returns whether it exists.
    pub async fn inbox_replay(&self, id: &str, now_ms: i64) -> Result<bool> {
        let sql = "UPDATE webhook_inbox SET state = 'pending', attempts = 0, next_attempt_at = $1,
                       locked_until = 0, done_at = NULL
                   WHERE id = $2";
        let n = on_pool!(self, |pool| sqlx::query(sql)
            .bind(now_ms)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n == 1)
    }

    /// Puts every message of `state` back in the queue. Returns how many.
    pub async fn inbox_replay_state(&self, state: InboxState, now_ms: i64) -> Result<u64> {
        let sql = "UPDATE webhook_inbox SET state = 'pending', attempts = 0, next_attempt_at = $1,
                       locked_until = 0, done_at = NULL
                   WHERE state = $2";
        Ok(on_pool!(self, |pool| sqlx::query(sql)
            .bind(now_ms)
            .bind(state.as_str())
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// Deletes processed (`done`) messages applied before `cutoff_ms`: their payloads
    /// are whole Clerk users (personal data), kept only for the retention period.
    /// Returns how many.
    pub async fn inbox_purge_done_before(&self, cutoff_ms: i64) -> Result<u64> {
        let sql = "DELETE FROM webhook_inbox WHERE state = 'done' AND done_at < $1";
        Ok(on_pool!(self, |pool| sqlx::query(sql)
            .bind(cutoff_ms)
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// Deletes every message of `state` (an operator's explicit purge). Returns how
    /// many.
    pub async fn inbox_purge_state(&self, state: InboxState) -> Result<u64> {
        let sql = "DELETE FROM webhook_inbox WHERE state = $1";
        Ok(on_pool!(self, |pool| sqlx::query(sql)
            .bind(state.as_str())
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// Queue depth, dead letters and the oldest pending message.
    pub async fn inbox_stats(&self) -> Result<InboxStats> {
        let sql = "SELECT
                (SELECT count(*) FROM webhook_inbox WHERE state = 'pending'),
                (SELECT count(*) FROM webhook_inbox WHERE state = 'dead'),
                (SELECT min(received_at) FROM webhook_inbox WHERE state = 'pending')";
        let (pending, dead, oldest_pending_at): (i64, i64, Option<i64>) =
            on_pool!(self, |pool| sqlx::query_as(sql).fetch_one(pool).await?);
        Ok(InboxStats {
            pending,
            dead,
            oldest_pending_at,
        })
    }

    /// Rows in the inbox, all states.
    pub async fn inbox_count(&self) -> Result<i64> {
        let sql = "SELECT count(*) FROM webhook_inbox";
        Ok(on_pool!(self, |pool| sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await?))
    }
}
