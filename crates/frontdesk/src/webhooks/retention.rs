//! Inbox retention: a processed message's payload is a whole Clerk user (personal
//! data), so `done` messages are deleted once `webhooks.retention_ms` has passed since
//! they were applied. Dead letters stay until an operator replays or purges them.
//! Time comes from the injected clock; the loop only decides how often to look.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::WebhooksState;
use crate::error::Result;

/// Deletes the `done` messages older than the retention. Returns how many.
pub async fn purge_expired(state: &WebhooksState) -> Result<u64> {
    let now = state.clock.now_ms();
    let cutoff = now.saturating_sub(state.config.webhooks.retention_ms);
    let cutoff = i64::try_from(cutoff).unwrap_or(i64::MAX);
    let n = state.store.inbox_purge_done_before(cutoff).await?;
    if n > 0 {
        tracing::info!(count = n, "webhook_inbox_purged");
        metrics::counter!("frontdesk_webhooks_purged_total").increment(n);
    }
    Ok(n)
}

/// Runs [`purge_expired`] every `webhooks.purge_interval_ms` until `stop` fires.
pub async fn run_retention(state: WebhooksState, stop: CancellationToken) {
    let every = Duration::from_millis(state.config.webhooks.purge_interval_ms.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = purge_expired(&state).await {
                    tracing::warn!(error = %e, "webhook inbox: cannot purge expired messages");
                }
            }
        }
    }
}
