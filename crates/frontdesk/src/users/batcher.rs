//! Gathers look-ups of different users into list calls. A batch opens with the first
//! id and closes at `max` ids, or once no id has arrived for `window` (a burst keeps
//! it open), or `max_wait` after it opened (a steady stream cannot hold it forever);
//! it is sent as one `GET /v1/users?user_id=…`. Several batches may be in flight at
//! once (bounded by the upstream client's concurrency).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::upstream::{ClerkClient, UpstreamError};

pub type BatchAnswer = Result<Option<Bytes>, UpstreamError>;
pub type BatchItem = (String, oneshot::Sender<BatchAnswer>);

#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: AtomicU64,
    pub ids: AtomicU64,
}

/// When a batch is cut.
#[derive(Debug, Clone, Copy)]
pub struct BatchTiming {
    /// Quiet time after the last arrival that closes a batch.
    pub window: Duration,
    /// Longest a batch stays open after its first id.
    pub max_wait: Duration,
    /// Ids per batch (Clerk accepts at most 100 per filter).
    pub max: usize,
}

pub fn spawn(
    client: Arc<ClerkClient>,
    timing: BatchTiming,
    stats: Arc<BatchStats>,
) -> mpsc::UnboundedSender<BatchItem> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(client, rx, timing, stats));
    tx
}

async fn run(
    client: Arc<ClerkClient>,
    mut rx: mpsc::UnboundedReceiver<BatchItem>,
    timing: BatchTiming,
    stats: Arc<BatchStats>,
) {
    let max = timing.max.clamp(1, 100);
    // Ends when every sender (the cache) is gone.
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let opened = tokio::time::Instant::now();
        let hard_deadline = opened + timing.max_wait.max(timing.window);
        let mut deadline = (opened + timing.window).min(hard_deadline);
        while batch.len() < max {
            // Take what is already queued without waiting, then wait out the window.
            match rx.try_recv() {
                Ok(item) => {
                    batch.push(item);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => {
                    batch.push(item);
                    deadline = (tokio::time::Instant::now() + timing.window).min(hard_deadline);
                }
                Ok(None) | Err(_) => break,
            }
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.ids.fetch_add(batch.len() as u64, Ordering::Relaxed);
        metrics::histogram!("frontdesk_user_batch_size").record(batch.len() as f64);
        tokio::spawn(dispatch(client.clone(), batch));
    }
}

async fn dispatch(client: Arc<ClerkClient>, batch: Vec<BatchItem>) {
    let mut ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    match client.list_users_by_ids(&ids).await {
        Ok(found) => {
            let found: HashMap<String, Bytes> = found.into_iter().collect();
            for (id, reply) in batch {
                let _ = reply.send(Ok(found.get(&id).cloned()));
            }
        }
        Err(e) => {
            for (_, reply) in batch {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
