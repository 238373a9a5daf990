//! Gathers look-ups of different users into list calls. A batch opens with the first
//! id and closes at `max` ids, or once no id has arrived for `window` (a burst keeps
//! it open), or `max_wait` after it opened (a steady stream cannot hold it forever);
//! it is sent as one `GET /v1/users?user_id=…`. Several batches may be in flight at
//! once (bounded by the upstream client's concurrency).
//!
//! The queue is bounded: every id waiting for an answer (queued, or in a batch being
//! sent) holds one of `queue_max` permits. When none is left — Clerk is slow and
//! misses keep coming — [`BatchQueue::submit`] refuses at once with
//! [`QUEUE_FULL`] (a 503 with `Retry-After` to the client) instead of letting waiting
//! look-ups grow memory without bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::upstream::{ClerkClient, UpstreamError};

pub type BatchAnswer = Result<Option<Bytes>, UpstreamError>;
/// An id, where its answer goes, and its place in the queue (freed once answered).
type BatchItem = (String, oneshot::Sender<BatchAnswer>, OwnedSemaphorePermit);

/// The detail of the error a look-up gets when the queue is full.
pub const QUEUE_FULL: &str = "the user look-up queue is full";

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
    /// Ids waiting for an answer at once, queued or in flight.
    pub queue_max: usize,
}

/// The sending side of the batcher. The batcher task ends when this is dropped.
pub struct BatchQueue {
    tx: mpsc::UnboundedSender<BatchItem>,
    permits: Arc<Semaphore>,
}

impl BatchQueue {
    /// Queues `id` for the next batch; the receiver gets its answer. Refuses at once
    /// when `queue_max` ids are already waiting.
    pub fn submit(&self, id: &str) -> Result<oneshot::Receiver<BatchAnswer>, UpstreamError> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("frontdesk_user_batch_queue_full_total").increment(1);
            UpstreamError::Unavailable(QUEUE_FULL.into())
        })?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((id.to_string(), reply, permit))
            .map_err(|_| UpstreamError::Unavailable("batcher stopped".into()))?;
        Ok(answer)
    }
}

/// What a batch's values are: user ids, or one kind of alias. Each is one filter of
/// `GET /v1/users`, and each has its own queue (Clerk combines different filters with
/// AND, so a batch holds values of one kind only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Id,
    Email,
    Username,
}

impl Kind {
    /// The query parameter of `GET /v1/users`.
    pub fn param(self) -> &'static str {
        match self {
            Kind::Id => "user_id",
            Kind::Email => "email_address",
            Kind::Username => "username",
        }
    }
}

pub fn spawn(
    client: Arc<ClerkClient>,
    kind: Kind,
    timing: BatchTiming,
    stats: Arc<BatchStats>,
) -> BatchQueue {
    // Unbounded as a channel, bounded by the permits: each item carries one.
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(client, kind, rx, timing, stats));
    BatchQueue {
        tx,
        permits: Arc::new(Semaphore::new(timing.queue_max.max(1))),
    }
}

async fn run(
    client: Arc<ClerkClient>,
    kind: Kind,
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
        metrics::histogram!("frontdesk_user_batch_size", "kind" => kind.param())
            .record(batch.len() as f64);
        tokio::spawn(dispatch(client.clone(), kind, batch));
    }
}

/// The values a user answers to, for `kind` (aliases normalised).
fn keys_of(kind: Kind, id: &str, raw: &Bytes) -> Vec<String> {
    match kind {
        Kind::Id => vec![id.to_string()],
        Kind::Email | Kind::Username => match super::CachedUser::parse(raw.clone()) {
            Ok(u) => u
                .aliases()
                .into_iter()
                .filter(|a| a.kind_of() == kind)
                .map(|a| a.value)
                .collect(),
            Err(_) => Vec::new(),
        },
    }
}

async fn dispatch(client: Arc<ClerkClient>, kind: Kind, batch: Vec<BatchItem>) {
    let mut ids: Vec<String> = batch.iter().map(|(id, _, _)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    match client.list_users_by(kind.param(), &ids).await {
        Ok(found) => {
            let found: HashMap<String, Bytes> = found
                .into_iter()
                .flat_map(|(id, raw)| {
                    keys_of(kind, &id, &raw)
                        .into_iter()
                        .map(move |k| (k, raw.clone()))
                })
                .collect();
            for (id, reply, place) in batch {
                // The place is freed before the answer, so whoever got it can queue again.
                drop(place);
                let _ = reply.send(Ok(found.get(&id).cloned()));
            }
        }
        Err(e) => {
            for (_, reply, place) in batch {
                drop(place);
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::{Config, Secret};

    /// A Clerk that accepts connections and never answers, so every batch stays in
    /// flight and every id keeps its place in the queue.
    async fn silent_clerk() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (listener, url)
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_frees_places_as_answers_come() {
        let (listener, url) = silent_clerk().await;
        let mut upstream = Config::default().upstream;
        upstream.max_retries = 0;
        upstream.timeout_ms = 60_000;
        let client = Arc::new(
            ClerkClient::new(
                &url,
                Secret::new("sk_test_x"),
                "2025-11-10",
                upstream,
                crate::clock::system(),
                None,
            )
            .unwrap(),
        );
        let queue = spawn(
            client,
            Kind::Id,
            BatchTiming {
                window: Duration::from_millis(1),
                max_wait: Duration::from_millis(1),
                max: 2,
                queue_max: 5,
            },
            Arc::new(BatchStats::default()),
        );
        let mut waiting = Vec::new();
        for i in 0..5 {
            waiting.push(
                queue
                    .submit(&format!("user_{i}"))
                    .expect("a place in the queue"),
            );
        }
        for i in 5..50 {
            match queue.submit(&format!("user_{i}")) {
                Err(UpstreamError::Unavailable(detail)) => assert_eq!(detail, QUEUE_FULL),
                other => panic!("expected a full queue, got {other:?}"),
            }
        }
        // Clerk goes away: the batches fail, their places are freed, and new look-ups
        // are queued again.
        drop(listener);
        for rx in waiting {
            assert!(rx.await.unwrap().is_err());
        }
        assert!(queue.submit("user_again").is_ok());
    }
}
