//! The worker pool: one dispatcher loop claims due messages (as many as there are free
//! permits) and runs each on its own task, bounded by a semaphore and an optional rate.
//! It wakes when this instance stores a message and polls otherwise (messages stored by
//! other instances, retries coming due, leases of crashed workers running out).
//! "Now" is the injected clock: due times, leases and backoff are decided with it.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::WebhooksState;
use super::effects;
use crate::config::WebhooksConfig;
use crate::store::ClaimedMessage;

/// How often the queue gauges are refreshed.
const STATS_EVERY: Duration = Duration::from_secs(1);

/// How long an effect may run: well inside its lease, so that no other worker can
/// have taken the message while this one still writes (and the fenced `done`/`retry`
/// refuse a holder that overran anyway).
pub(super) fn effect_timeout(cfg: &WebhooksConfig) -> Duration {
    Duration::from_millis((cfg.lease_ms * 3 / 4).max(1))
}

/// Runs until `stop` fires. With `workers = 0` it only keeps the queue gauges fresh.
pub async fn run_workers(state: WebhooksState, stop: CancellationToken) {
    let cfg = state.config.webhooks.clone();
    let poll = Duration::from_millis(cfg.poll_interval_ms);
    let permits = Arc::new(Semaphore::new(cfg.workers));
    let limiter: Option<Arc<DefaultDirectRateLimiter>> = NonZeroU32::new(cfg.rate_per_s)
        .map(|n| Arc::new(RateLimiter::direct(Quota::per_second(n))));
    let mut tasks = JoinSet::new();
    let mut stats_at: Option<Instant> = None;
    tracing::info!(workers = cfg.workers, "webhook workers started");
    loop {
        while tasks.try_join_next().is_some() {}
        if stats_at.is_none_or(|t| t.elapsed() >= STATS_EVERY) {
            refresh_gauges(&state).await;
            stats_at = Some(Instant::now());
        }
        let free = permits.available_permits();
        if free == 0 {
            if cfg.workers == 0 {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(STATS_EVERY) => continue,
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                p = permits.clone().acquire_owned() => { drop(p); continue; }
            }
        }
        let now = state.clock.now_ms() as i64;
        let claimed = match state
            .store
            .inbox_claim(now, cfg.lease_ms as i64, free as i64)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "webhook inbox: cannot claim messages");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(poll) => continue,
                }
            }
        };
        let got = claimed.len();
        for msg in claimed {
            if let Some(l) = &limiter {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = l.until_ready() => {}
                }
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let state = state.clone();
            let cfg = cfg.clone();
            tasks.spawn(async move {
                process(&state, &cfg, msg).await;
                drop(permit);
            });
        }
        if stop.is_cancelled() {
            break;
        }
        if got == 0 {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = state.webhooks.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
    // Let in-flight messages finish (the caller bounds this by the shutdown grace
    // period); whatever does not is retaken after its lease.
    while tasks.join_next().await.is_some() {}
    tracing::info!("webhook workers stopped");
}

async fn process(state: &WebhooksState, cfg: &WebhooksConfig, msg: ClaimedMessage) {
    let max = cfg.max_attempts as i32;
    let store = &state.store;
    if msg.attempts > max {
        // Claimed more times than allowed without finishing: its worker died each
        // time (a crash, a kill, a lease too short).
        let err = format!("abandoned after {} attempts", msg.attempts - 1);
        finish_dead(state, &msg, &err).await;
        return;
    }
    let started = Instant::now();
    let timeout = effect_timeout(cfg);
    let outcome = match tokio::time::timeout(timeout, effects::apply(state, &msg)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("effect timed out after {} ms", timeout.as_millis())),
    };
    let now = state.clock.now_ms() as i64;
    match outcome {
        Ok(()) => {
            metrics::histogram!("frontdesk_webhooks_apply_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("frontdesk_webhooks_processing_lag_seconds")
                .record(now.saturating_sub(msg.received_at).max(0) as f64 / 1000.0);
            metrics::counter!("frontdesk_webhooks_processed_total", "outcome" => "done")
                .increment(1);
            match store.inbox_done(&msg.id, msg.claim, now).await {
                Ok(true) => {}
                Ok(false) => fenced(&msg),
                // The effect is applied; after the lease the message runs again, which
                // is harmless (effects are idempotent).
                Err(e) => {
                    tracing::warn!(msg_id = %msg.id, error = %e, "webhook inbox: cannot mark done")
                }
            }
        }
        Err(err) if msg.attempts >= max => finish_dead(state, &msg, &err).await,
        Err(err) => {
            let delay = backoff_ms(cfg, msg.attempts);
            metrics::counter!("frontdesk_webhooks_processed_total", "outcome" => "retry")
                .increment(1);
            tracing::warn!(
                msg_id = %msg.id, kind = %msg.kind, attempts = msg.attempts, retry_in_ms = delay,
                error = %err, "webhook effect failed; will retry"
            );
            match store
                .inbox_retry(&msg.id, msg.claim, now.saturating_add(delay as i64), &err)
                .await
            {
                Ok(true) => {}
                Ok(false) => fenced(&msg),
                Err(e) => {
                    tracing::warn!(msg_id = %msg.id, error = %e, "webhook inbox: cannot schedule retry")
                }
            }
        }
    }
}

async fn finish_dead(state: &WebhooksState, msg: &ClaimedMessage, err: &str) {
    metrics::counter!("frontdesk_webhooks_processed_total", "outcome" => "dead").increment(1);
    tracing::error!(
        msg_id = %msg.id, kind = %msg.kind, attempts = msg.attempts, error = %err,
        "webhook message is dead; replay it from the api listener once fixed"
    );
    let now = state.clock.now_ms() as i64;
    match state.store.inbox_dead(&msg.id, msg.claim, err, now).await {
        Ok(true) => {}
        Ok(false) => fenced(msg),
        Err(e) => tracing::warn!(msg_id = %msg.id, error = %e, "webhook inbox: cannot mark dead"),
    }
}

/// This worker's claim is no longer the row's: another worker took it after the lease
/// ran out (or it was replayed). Its outcome is theirs to record.
fn fenced(msg: &ClaimedMessage) {
    metrics::counter!("frontdesk_webhooks_fenced_total").increment(1);
    tracing::warn!(msg_id = %msg.id, kind = %msg.kind, "webhook claim lost to another worker; outcome not recorded");
}

/// Delay before the attempt after `attempts`: base·2^(attempts−1), capped, with "equal
/// jitter" (a random point in its upper half) so retries of a burst spread out.
pub(super) fn backoff_ms(cfg: &WebhooksConfig, attempts: i32) -> u64 {
    let exp = attempts.clamp(1, 32) as u32 - 1;
    let full = cfg
        .backoff_base_ms
        .saturating_mul(1u64 << exp.min(30))
        .min(cfg.backoff_max_ms);
    full / 2 + rand::random_range(0..=full / 2)
}

async fn refresh_gauges(state: &WebhooksState) {
    match state.store.inbox_stats().await {
        Ok(s) => {
            let now = state.clock.now_ms() as i64;
            metrics::gauge!("frontdesk_webhooks_queue_depth").set(s.pending as f64);
            metrics::gauge!("frontdesk_webhooks_dead").set(s.dead as f64);
            let age = s
                .oldest_pending_at
                .map(|t| now.saturating_sub(t).max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            metrics::gauge!("frontdesk_webhooks_oldest_pending_age_seconds").set(age);
        }
        Err(e) => tracing::debug!(error = %e, "webhook inbox: stats unavailable"),
    }
}
