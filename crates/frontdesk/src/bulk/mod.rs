//! Bulk metadata writes: `POST /v1/users/bulk/metadata` takes up to 10,000 updates,
//! stores them as a job (so it survives a restart) and answers `202 {"job_id"}`;
//! `GET /v1/jobs/{id}` answers progress and each item's outcome, like
//! `Promise.allSettled`.
//!
//! A runner on any instance claims a job under a lease it renews while it works (a
//! killed runner's job is taken again once the lease runs out) and sends each update
//! as `PATCH /v1/users/{id}/metadata` through the Clerk client, so the fleet's budget
//! paces it. Clerk's second limit — 10 updates per user per 10 s — is kept by the
//! per-user governor (`governor.rs`) before a request is sent, so a job with many
//! updates of one user waits instead of drawing 429s (which would pause the endpoint
//! for the whole fleet). 429s and 5xx are retried with backoff up to `max_attempts`;
//! 4xx answers fail the item with Clerk's error code. Each success is written through
//! the user cache.

mod api;
mod governor;
mod runner;

use std::sync::Arc;

use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::clock::SharedClock;
use crate::store::Store;
use crate::upstream::ClerkClient;
use crate::users::UserCache;

pub use governor::UserGovernor;

/// Bulk jobs. `FRONTDESK_BULK__*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BulkConfig {
    /// Whether this instance runs stored jobs (any instance accepts them).
    /// `FRONTDESK_BULK__ENABLED`.
    pub enabled: bool,
    /// Items per job at most. `FRONTDESK_BULK__MAX_ITEMS`.
    pub max_items: usize,
    /// Updates in flight at once for the job this instance runs.
    /// `FRONTDESK_BULK__CONCURRENCY`.
    pub concurrency: usize,
    /// How long a claimed job is reserved for its runner, in ms; the runner renews it
    /// while it works, and after a crash any instance takes the job once it runs out.
    /// `FRONTDESK_BULK__LEASE_MS`.
    pub lease_ms: u64,
    /// How often an idle runner looks for jobs, in ms (a job stored on this instance
    /// wakes it at once). `FRONTDESK_BULK__POLL_INTERVAL_MS`.
    pub poll_interval_ms: u64,
    /// Attempts per item before a 429 or 5xx fails it. `FRONTDESK_BULK__MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// Delay before retrying an item, in ms; doubles per attempt, jittered, capped;
    /// a `Retry-After` from Clerk is waited out when longer.
    /// `FRONTDESK_BULK__BACKOFF_BASE_MS` / `FRONTDESK_BULK__BACKOFF_MAX_MS`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Clerk's per-user limit on updates: at most this many updates of one user…
    /// `FRONTDESK_BULK__PER_USER_LIMIT`.
    pub per_user_limit: u32,
    /// …in any window of this many ms. `FRONTDESK_BULK__PER_USER_WINDOW_MS`.
    pub per_user_window_ms: u64,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_items: 10_000,
            concurrency: 16,
            lease_ms: 30_000,
            poll_interval_ms: 1_000,
            max_attempts: 8,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
            per_user_limit: 10,
            per_user_window_ms: 10_000,
        }
    }
}

/// The bulk-jobs capability: its API and its runner. Cheap to clone.
#[derive(Clone)]
pub struct Bulk(Arc<Inner>);

struct Inner {
    store: Store,
    clerk: Option<Arc<ClerkClient>>,
    users: Option<UserCache>,
    config: BulkConfig,
    clock: SharedClock,
    /// Wakes this instance's runner when a job is stored here.
    wake: Notify,
    governor: UserGovernor,
}

impl Bulk {
    pub fn new(
        config: &crate::Config,
        store: Store,
        clerk: Option<Arc<ClerkClient>>,
        users: Option<UserCache>,
        clock: SharedClock,
    ) -> Self {
        let c = config.bulk.clone();
        let governor = UserGovernor::new(c.per_user_limit, c.per_user_window_ms);
        Self(Arc::new(Inner {
            store,
            clerk,
            users,
            config: c,
            clock,
            wake: Notify::new(),
            governor,
        }))
    }

    /// `POST /v1/users/bulk/metadata` and `GET /v1/jobs/{id}`, for the api listener.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        api::router().with_state(self.clone())
    }

    /// Runs stored jobs until `stop` when `bulk.enabled` (what `serve` starts).
    pub async fn run_if_enabled(self, stop: tokio_util::sync::CancellationToken) {
        if self.0.config.enabled {
            runner::run(self, stop).await
        }
    }

    /// Runs stored jobs until `stop` (see `runner.rs`), whatever `bulk.enabled` says.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        runner::run(self, stop).await
    }
}
