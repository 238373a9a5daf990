//! Clerk webhook ingestion. Clerk (through Svix) delivers at least once and in any
//! order, and a webhook lost in memory on a restart is a change the app never sees.
//! So a message is verified (Standard Webhooks signature, timestamp window), written to
//! the durable inbox in the store, and only then acknowledged; a redelivered message id
//! is acknowledged without a second row. Workers then apply each message's effect
//! (local user upsert or soft delete, cache invalidation on every instance, session
//! revocation, organization cache invalidation, an event for subscribers) with retries,
//! backoff and a `dead` state an operator can replay from the api listener.
//!
//! - `verify`: signatures and headers.
//! - `ingest`: `POST /_frontdesk/webhooks/clerk` on the edge.
//! - `effects`: what each event type does; every effect is idempotent.
//! - `worker`: the claiming loop and its bounded pool.
//! - `ops`: `GET /v1/webhooks`, replay, purge, on the api listener.
//! - `retention`: the loop that purges processed payloads after `retention_ms`.

mod effects;
mod ingest;
mod ops;
pub mod retention;
pub mod verify;
mod worker;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::Notify;

pub use retention::run_retention;
pub use verify::{Rejection, SignedHeaders, SigningKeys};
pub use worker::run_workers;

use std::sync::Arc;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::Result;
use crate::services::Fanout;
use crate::store::Store;

/// The edge route Clerk is configured to call.
pub const ENDPOINT: &str = "/_frontdesk/webhooks/clerk";

/// Per-instance webhook state: the decoded signing keys and the signal that wakes the
/// workers when this instance stores a message.
#[derive(Debug)]
pub struct Webhooks {
    keys: Option<SigningKeys>,
    wake: Notify,
}

impl Webhooks {
    /// Decodes the configured signing secrets, failing start-up on a bad one.
    pub fn from_config(config: &Config) -> Result<Self> {
        let keys = match &config.clerk.webhook_signing_secret {
            Some(s) => Some(SigningKeys::parse(s.expose()).map_err(|e| {
                anyhow::anyhow!("clerk.webhook_signing_secret (CLERK_WEBHOOK_SIGNING_SECRET): {e}")
            })?),
            None => None,
        };
        Ok(Self {
            keys,
            wake: Notify::new(),
        })
    }

    pub fn keys(&self) -> Option<&SigningKeys> {
        self.keys.as_ref()
    }

    /// Tells this instance's workers that a message is waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// What ingestion, the workers, the inbox operations and retention need. Cheap to
/// clone.
#[derive(Clone)]
pub struct WebhooksState {
    pub config: Arc<Config>,
    pub store: Store,
    pub clock: SharedClock,
    pub webhooks: Arc<Webhooks>,
    /// Where the effects' invalidations, revocations and events go.
    pub fanout: Fanout,
}

/// `POST /_frontdesk/webhooks/clerk`.
pub fn edge_router(state: WebhooksState) -> Router {
    Router::new()
        .route(ENDPOINT, post(ingest::receive))
        .with_state(state)
}

/// The inbox operations.
pub fn api_router(state: WebhooksState) -> Router {
    Router::new()
        .route("/v1/webhooks", get(ops::list))
        .route("/v1/webhooks/replay", post(ops::replay_state))
        .route("/v1/webhooks/purge", post(ops::purge_state))
        .route("/v1/webhooks/{id}/replay", post(ops::replay_one))
        .with_state(state)
}
