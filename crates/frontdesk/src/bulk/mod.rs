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
use tokio::sync::Notify;

use crate::clock::SharedClock;
use crate::store::Store;
use crate::upstream::ClerkClient;
use crate::users::UserCache;

pub use governor::UserGovernor;

pub use crate::config::BulkConfig;

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
