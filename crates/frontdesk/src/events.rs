//! Internal events: what changed, for whoever listens in this process (the SSE
//! capability will carry them to browsers; tests and refresh jobs subscribe too).
//! A bounded broadcast: a slow subscriber loses old events, never blocks a publisher.

use serde::Serialize;
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppEvent {
    /// What happened, e.g. `user.updated`, `session.revoked`, `organization.updated`.
    pub kind: String,
    /// The subject: a Clerk user, session or organization id.
    pub subject: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Extra detail (kept small; never secrets or tokens).
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct EventHub {
    tx: broadcast::Sender<AppEvent>,
}

impl EventHub {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    pub fn publish(&self, event: AppEvent) {
        metrics::counter!("frontdesk_events_published_total", "kind" => event.kind.clone())
            .increment(1);
        // No subscriber is fine: nobody is listening yet.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<AppEvent> {
        self.tx.subscribe()
    }
}
