//! The job runner: one job at a time per instance, claimed under a lease, its items
//! sent with bounded concurrency, each paced by the fleet budget (in the Clerk
//! client) and the per-user governor, retried with backoff, and recorded under the
//! claim. Stopping (or a kill) leaves the job to the next runner once the lease runs
//! out; an update in flight then is sent again, which a metadata merge tolerates.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Method, StatusCode, header};
use bytes::Bytes;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Bulk;
use crate::store::{ItemOutcome, PendingItem};
use crate::upstream::{ClerkClient, UpstreamError, UpstreamRequest};
use crate::users::{CachedUser, UserCache};

/// Pending items read from the store at a time.
const CHUNK: i64 = 1_000;
/// Items waiting for a retry or a per-user slot, at most, before no more are read.
const DEFERRED_MAX: usize = 5_000;

/// What one attempt at an item came to.
#[derive(Debug)]
enum Attempt {
    Done(ItemOutcome),
    /// Try again: after `after_ms` when Clerk said so, `code` if attempts run out.
    Retry {
        after_ms: Option<u64>,
        status: Option<i32>,
        code: String,
    },
}

pub async fn run(bulk: Bulk, stop: CancellationToken) {
    let inner = &bulk.0;
    if inner.clerk.is_none() {
        return;
    }
    let lease = inner.config.lease_ms as i64;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let now = inner.clock.now_ms() as i64;
        match inner.store.job_claim(now, lease).await {
            Ok(Some((id, claim))) => {
                tracing::info!(job_id = %id, claim, "running bulk job");
                metrics::counter!("frontdesk_bulk_jobs_total", "event" => "claimed").increment(1);
                run_job(&bulk, &id, claim, &stop).await;
                inner.governor.prune(inner.clock.now_ms());
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot claim a bulk job"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(inner.config.poll_interval_ms.max(10))) => {}
        }
    }
}

/// The per-user slots this job holds for updates in flight; whatever is still held
/// when the job stops (its tasks aborted) is given back.
struct Held<'a> {
    governor: &'a super::UserGovernor,
    clock: &'a crate::clock::SharedClock,
    users: HashMap<String, u32>,
}

impl Held<'_> {
    fn take(&mut self, user: &str) {
        *self.users.entry(user.to_string()).or_insert(0) += 1;
    }

    fn release(&mut self, user: &str) {
        if let Some(n) = self.users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.users.remove(user);
            }
        }
        self.governor.release(user, self.clock.now_ms());
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let now = self.clock.now_ms();
        for (user, n) in self.users.drain() {
            for _ in 0..n {
                self.governor.release(&user, now);
            }
        }
    }
}

async fn run_job(bulk: &Bulk, id: &str, claim: i64, stop: &CancellationToken) {
    let inner = &bulk.0;
    let mut held = Held {
        governor: &inner.governor,
        clock: &inner.clock,
        users: HashMap::new(),
    };
    let Some(client) = inner.clerk.clone() else {
        return;
    };
    let cfg = &inner.config;
    let lease = cfg.lease_ms;
    let mut next_renew = inner.clock.now_ms() + lease / 3;
    let mut after_seq = -1;
    let mut exhausted = false;
    let mut queue: VecDeque<PendingItem> = VecDeque::new();
    let mut deferred: BinaryHeap<Reverse<(u64, i32)>> = BinaryHeap::new();
    let mut parked: HashMap<i32, PendingItem> = HashMap::new();
    let mut inflight: JoinSet<(PendingItem, Attempt)> = JoinSet::new();
    loop {
        let now = inner.clock.now_ms();
        if now >= next_renew {
            match inner.store.job_renew(id, claim, (now + lease) as i64).await {
                Ok(true) => next_renew = now + lease / 3,
                Ok(false) => {
                    tracing::warn!(job_id = %id, "bulk job lease lost; another runner has it");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, job_id = %id, "cannot renew the bulk job lease")
                }
            }
        }
        if queue.len() < cfg.concurrency && !exhausted && parked.len() < DEFERRED_MAX {
            match inner.store.job_pending(id, after_seq, CHUNK).await {
                Ok(items) if items.is_empty() => exhausted = true,
                Ok(items) => {
                    after_seq = items.last().map_or(after_seq, |i| i.seq);
                    queue.extend(items);
                }
                Err(e) => tracing::warn!(error = %e, job_id = %id, "cannot read bulk job items"),
            }
        }
        while let Some(Reverse((at, seq))) = deferred.peek().copied() {
            if at > now {
                break;
            }
            deferred.pop();
            if let Some(item) = parked.remove(&seq) {
                queue.push_front(item);
            }
        }
        let mut waiting = VecDeque::new();
        while inflight.len() < cfg.concurrency.max(1) {
            let Some(item) = queue.pop_front() else { break };
            match inner.governor.try_take(&item.user_id, now) {
                Ok(()) => {
                    held.take(&item.user_id);
                    let client = client.clone();
                    let users = inner.users.clone();
                    inflight.spawn(async move {
                        let (attempt, user) = send(&client, &item).await;
                        if let (Some(users), Some(user)) = (users, user) {
                            write_through(&users, user).await;
                        }
                        (item, attempt)
                    });
                }
                Err(at) => {
                    deferred.push(Reverse((at, item.seq)));
                    waiting.push_back(item);
                }
            }
        }
        for item in waiting {
            parked.insert(item.seq, item);
        }
        if inflight.is_empty() && queue.is_empty() && parked.is_empty() && exhausted {
            match inner.store.job_finish(id, claim, now as i64).await {
                Ok(true) => {
                    tracing::info!(job_id = %id, "bulk job done");
                    metrics::counter!("frontdesk_bulk_jobs_total", "event" => "done").increment(1);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, job_id = %id, "cannot finish the bulk job"),
            }
            return;
        }
        let wait_ms = deferred
            .peek()
            .map_or(lease / 3, |Reverse((at, _))| at.saturating_sub(now))
            .clamp(1, (lease / 3).max(1));
        let joined = tokio::select! {
            _ = stop.cancelled() => return,
            j = inflight.join_next(), if !inflight.is_empty() => j,
            _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => None,
        };
        let Some(joined) = joined else { continue };
        let Ok((item, attempt)) = joined else {
            continue;
        };
        held.release(&item.user_id);
        let now = inner.clock.now_ms();
        let attempts = item.attempts + 1;
        let outcome = match attempt {
            Attempt::Done(outcome) => outcome,
            Attempt::Retry {
                after_ms,
                status,
                code,
            } => {
                metrics::counter!("frontdesk_bulk_retries_total", "reason" => code.clone())
                    .increment(1);
                if attempts as u32 >= cfg.max_attempts {
                    ItemOutcome::Failed { status, code }
                } else {
                    let at = now + backoff(cfg, attempts as u32).max(after_ms.unwrap_or(0));
                    deferred.push(Reverse((at, item.seq)));
                    parked.insert(item.seq, PendingItem { attempts, ..item });
                    continue;
                }
            }
        };
        let label = match &outcome {
            ItemOutcome::Ok { .. } => "ok",
            ItemOutcome::Failed { .. } => "failed",
        };
        metrics::counter!("frontdesk_bulk_items_total", "outcome" => label).increment(1);
        match inner
            .store
            .job_item_finish(id, claim, item.seq, attempts, &outcome)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(job_id = %id, "bulk job claim lost; stopping");
                return;
            }
            Err(e) => {
                // Left pending: this runner or the next one sends it again.
                tracing::warn!(error = %e, job_id = %id, "cannot record a bulk item");
            }
        }
    }
}

/// Jittered exponential backoff for the `attempt`-th retry.
fn backoff(cfg: &super::BulkConfig, attempt: u32) -> u64 {
    let exp = cfg
        .backoff_base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(16))
        .min(cfg.backoff_max_ms);
    exp / 2 + rand::random_range(0..=exp / 2)
}

/// Clerk's error code from its error body (`errors[0].code`).
fn clerk_code(body: &Bytes) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["errors"][0]["code"].as_str().map(str::to_string)
}

/// One `PATCH /v1/users/{id}/metadata`, classified, with Clerk's user on success.
async fn send(client: &Arc<ClerkClient>, item: &PendingItem) -> (Attempt, Option<Bytes>) {
    match client.send(metadata_request(item)).await {
        Ok(resp) if resp.status.is_success() => (
            Attempt::Done(ItemOutcome::Ok {
                status: resp.status.as_u16() as i32,
            }),
            Some(resp.body),
        ),
        other => (classify(other), None),
    }
}

fn metadata_request(item: &PendingItem) -> UpstreamRequest {
    UpstreamRequest {
        method: Method::PATCH,
        path_and_query: format!("/v1/users/{}/metadata", item.user_id),
        api_version: None,
        content_type: Some(HeaderValue::from_static("application/json")),
        body: Bytes::from(item.body.clone()),
    }
}

/// What an answer other than a success means for the item.
fn classify(result: Result<crate::upstream::UpstreamResponse, UpstreamError>) -> Attempt {
    match result {
        Ok(resp) if resp.status.is_success() => Attempt::Done(ItemOutcome::Ok {
            status: resp.status.as_u16() as i32,
        }),
        Ok(resp) if resp.status == StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
            after_ms: resp
                .headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|s| s.min(crate::upstream::MAX_RETRY_AFTER_S) * 1000),
            status: Some(429),
            code: "too_many_requests".into(),
        },
        Ok(resp) if resp.status.is_server_error() => Attempt::Retry {
            after_ms: None,
            status: Some(resp.status.as_u16() as i32),
            code: clerk_code(&resp.body).unwrap_or_else(|| "upstream_error".into()),
        },
        Ok(resp) => Attempt::Done(ItemOutcome::Failed {
            status: Some(resp.status.as_u16() as i32),
            code: clerk_code(&resp.body)
                .unwrap_or_else(|| format!("http_{}", resp.status.as_u16())),
        }),
        Err(UpstreamError::PathRewritten) => Attempt::Done(ItemOutcome::Failed {
            status: None,
            code: "invalid_user_id".into(),
        }),
        Err(e) => Attempt::Retry {
            after_ms: match &e {
                UpstreamError::RateLimited { retry_after_ms, .. }
                | UpstreamError::CircuitOpen { retry_after_ms, .. }
                | UpstreamError::Busy { retry_after_ms } => Some(*retry_after_ms),
                _ => None,
            },
            status: None,
            code: match e {
                UpstreamError::RateLimited { .. } => "too_many_requests".into(),
                _ => "upstream_unavailable".into(),
            },
        },
    }
}

/// Writes Clerk's answer through the user cache (the item's user as it now is).
async fn write_through(users: &UserCache, body: Bytes) {
    if let Ok(user) = CachedUser::parse(body) {
        users.put(user).await;
    }
}
