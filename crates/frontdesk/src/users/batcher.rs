//! Gathers look-ups of different users into list calls
//! (`GET /v1/users?user_id=…`, at most `max` ids each), adapting to how callers arrive
//! and to how Clerk answers. One task per [`Kind`] holds the waiting ids and decides,
//! each time something happens (an id arrives, a list call returns, a timer fires),
//! whether to send a batch now ([`Policy::decide`]):
//!
//! - **Nothing in flight**: what has queued goes at once — a lone miss pays no window.
//! - **A list call in flight** (or the shared Clerk budget tight): the next batch stays
//!   open, so the misses that arrive meanwhile share one call. It is sent when it
//!   reaches `max` ids, when a call returns (a slot frees), or when its oldest id has
//!   waited a share (`wait_share`) of Clerk's observed list-call latency, whichever
//!   comes first. The latency is an EWMA kept here; `max_wait` caps that bound, and is
//!   the bound until a call has been measured.
//! - At most `max_in_flight` list calls per kind are in flight; past it, batches wait
//!   for a slot (and fill up meanwhile). An id still queued after the upstream's
//!   `queue_timeout_ms` is refused (`Busy`, a 503 with `Retry-After`), as a call that
//!   waited that long for the budget would be.
//!
//! So a burst costs about one call per `max` ids plus the first, and a miss that
//! arrives alone costs Clerk's latency and nothing more.
//!
//! The queue is bounded: every id waiting for an answer (queued, or in a batch being
//! sent) holds one of `queue_max` places. When none is left — Clerk is slow and
//! misses keep coming — [`BatchQueue::submit`] refuses at once with
//! [`QUEUE_FULL`] (a 503 with `Retry-After` to the client) instead of letting waiting
//! look-ups grow memory without bound.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::upstream::{ClerkClient, Endpoint, UpstreamError};

pub type BatchAnswer = Result<Option<Bytes>, UpstreamError>;

/// One id waiting for its answer.
struct Waiting {
    id: String,
    reply: oneshot::Sender<BatchAnswer>,
    place: Place,
    since: Instant,
}

/// A place in the bounded queue, freed (and uncounted) when dropped.
struct Place {
    _permit: OwnedSemaphorePermit,
    stats: Arc<BatchStats>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The detail of the error a look-up gets when the queue is full.
pub const QUEUE_FULL: &str = "the user look-up queue is full";

#[derive(Debug, Default)]
pub struct BatchStats {
    /// List calls sent, and the ids (or alias values) they carried.
    pub batches: AtomicU64,
    pub ids: AtomicU64,
    /// Ids waiting for an answer now (queued or in a call being sent).
    pub waiting: AtomicU64,
    /// List calls in flight now.
    pub in_flight: AtomicU64,
}

/// How batches are cut (see the module header).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Ids per batch (Clerk accepts at most 100 per filter).
    pub max: usize,
    /// List calls in flight at once, for this kind.
    pub max_in_flight: usize,
    /// Share of the observed list-call latency an id may wait while a batch is held.
    pub wait_share: f64,
    /// Cap of that wait, and the wait before any call has been measured.
    pub max_wait: Duration,
    /// Ids waiting for an answer at once, queued or in flight.
    pub queue_max: usize,
}

/// What the batcher knows when it decides.
#[derive(Debug, Clone, Copy)]
pub struct Situation {
    /// Ids queued (not yet in a call).
    pub pending: usize,
    /// How long the oldest of them has waited.
    pub oldest_waited: Duration,
    pub in_flight: usize,
    /// The shared Clerk budget would make a call wait (or the endpoint is paused).
    pub tight: bool,
    /// A list call has just returned.
    pub freed: bool,
    /// Observed list-call latency (EWMA), once a call has been measured.
    pub latency: Option<Duration>,
}

/// What the batcher does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send the oldest `n` ids now.
    Send(usize),
    /// Wait for an arrival or a returning call, or at most this long when set.
    Wait(Option<Duration>),
}

impl Policy {
    /// The longest an id waits in an open batch while a slot is free.
    pub fn bound(&self, latency: Option<Duration>) -> Duration {
        match latency {
            Some(l) => l.mul_f64(self.wait_share).min(self.max_wait),
            None => self.max_wait,
        }
    }

    pub fn decide(&self, s: Situation) -> Step {
        let max = self.max.clamp(1, 100);
        if s.pending == 0 || s.in_flight >= self.max_in_flight.max(1) {
            return Step::Wait(None);
        }
        let n = s.pending.min(max);
        if s.pending >= max {
            return Step::Send(n);
        }
        let bound = self.bound(s.latency);
        if s.oldest_waited >= bound {
            return Step::Send(n);
        }
        if !s.tight && (s.in_flight == 0 || s.freed) {
            return Step::Send(n);
        }
        Step::Wait(Some(bound - s.oldest_waited))
    }
}

/// Exponentially weighted moving average of list-call latency.
#[derive(Debug, Default, Clone, Copy)]
struct Ewma(Option<f64>);

impl Ewma {
    /// Weight of the newest sample.
    const ALPHA: f64 = 0.2;

    fn observe(&mut self, d: Duration) {
        let x = d.as_secs_f64();
        self.0 = Some(match self.0 {
            Some(v) => v + Self::ALPHA * (x - v),
            None => x,
        });
    }

    fn get(self) -> Option<Duration> {
        self.0.map(Duration::from_secs_f64)
    }
}

/// The sending side of the batcher. The batcher task ends when this is dropped and
/// every waiting id has its answer.
pub struct BatchQueue {
    tx: mpsc::UnboundedSender<Waiting>,
    permits: Arc<Semaphore>,
    stats: Arc<BatchStats>,
}

impl BatchQueue {
    /// Queues `id` for the next batch; the receiver gets its answer. Refuses at once
    /// when `queue_max` ids are already waiting.
    pub fn submit(&self, id: &str) -> Result<oneshot::Receiver<BatchAnswer>, UpstreamError> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("frontdesk_user_batch_queue_full_total").increment(1);
            UpstreamError::Unavailable(QUEUE_FULL.into())
        })?;
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let place = Place {
            _permit: permit,
            stats: self.stats.clone(),
        };
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Waiting {
                id: id.to_string(),
                reply,
                place,
                since: Instant::now(),
            })
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
    policy: Policy,
    stats: Arc<BatchStats>,
) -> BatchQueue {
    // Unbounded as a channel, bounded by the places: each item carries one.
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(client, kind, rx, policy, stats.clone()));
    BatchQueue {
        tx,
        permits: Arc::new(Semaphore::new(policy.queue_max.max(1))),
        stats,
    }
}

async fn run(
    client: Arc<ClerkClient>,
    kind: Kind,
    mut rx: mpsc::UnboundedReceiver<Waiting>,
    policy: Policy,
    stats: Arc<BatchStats>,
) {
    let label = kind.param();
    let give_up = client.queue_timeout();
    let mut pending: VecDeque<Waiting> = VecDeque::new();
    // Each call answers its own waiters and returns Clerk's latency when it answered.
    let mut calls: JoinSet<Option<Duration>> = JoinSet::new();
    let mut latency = Ewma::default();
    let mut open = true;
    let mut freed = false;
    loop {
        // Take what is already queued without waiting.
        while open {
            match rx.try_recv() {
                Ok(w) => pending.push_back(w),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let now = Instant::now();
        // An id queued past the upstream's queueing deadline is refused, as a call
        // that waited that long for the budget would be (the budget spent, or calls
        // slower than arrivals): the caller gets a 503 with Retry-After, not a wait
        // without end.
        while pending
            .front()
            .is_some_and(|w| now.saturating_duration_since(w.since) >= give_up)
        {
            if let Some(w) = pending.pop_front() {
                drop(w.place);
                metrics::counter!("frontdesk_user_batch_expired_total", "kind" => label)
                    .increment(1);
                let _ = w.reply.send(Err(UpstreamError::Busy {
                    retry_after_ms: 1_000,
                }));
            }
        }
        let situation = Situation {
            pending: pending.len(),
            oldest_waited: pending
                .front()
                .map(|w| now.saturating_duration_since(w.since))
                .unwrap_or_default(),
            in_flight: calls.len(),
            tight: !pending.is_empty() && client.would_wait(Endpoint::ListUsers),
            freed,
            latency: latency.get(),
        };
        freed = false;
        let timer = match policy.decide(situation) {
            Step::Send(n) => {
                let batch: Vec<Waiting> = pending.drain(..n).collect();
                record_batch(&stats, label, &batch, now);
                calls.spawn(dispatch(client.clone(), kind, batch));
                set_in_flight(&stats, label, calls.len());
                continue;
            }
            Step::Wait(timer) => timer,
        };
        if !open && pending.is_empty() && calls.is_empty() {
            return;
        }
        let expiry = pending.front().map(|w| w.since + give_up);
        let deadline = match (timer.map(|t| now + t), expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            Some(done) = calls.join_next(), if !calls.is_empty() => {
                if let Ok(Some(took)) = done {
                    latency.observe(took);
                    if let Some(l) = latency.get() {
                        metrics::gauge!("frontdesk_user_batch_latency_ewma_seconds", "kind" => label)
                            .set(l.as_secs_f64());
                    }
                }
                freed = true;
                set_in_flight(&stats, label, calls.len());
            }
            item = rx.recv(), if open => match item {
                Some(w) => pending.push_back(w),
                None => open = false,
            },
            () = sleep_until(deadline) => {}
        }
    }
}

/// List calls in flight now, in the stats and the gauge.
fn set_in_flight(stats: &BatchStats, label: &'static str, n: usize) {
    stats.in_flight.store(n as u64, Ordering::Relaxed);
    metrics::gauge!("frontdesk_user_batch_in_flight", "kind" => label).set(n as f64);
}

/// Sleeps until `deadline`, or forever without one (another branch wakes the loop).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn record_batch(stats: &BatchStats, label: &'static str, batch: &[Waiting], now: Instant) {
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.ids.fetch_add(batch.len() as u64, Ordering::Relaxed);
    metrics::histogram!("frontdesk_user_batch_size", "kind" => label).record(batch.len() as f64);
    let waited = metrics::histogram!("frontdesk_user_batch_wait_seconds", "kind" => label);
    for w in batch {
        waited.record(now.saturating_duration_since(w.since).as_secs_f64());
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

/// Sends one batch and answers its waiters; Clerk's latency when Clerk answered.
async fn dispatch(client: Arc<ClerkClient>, kind: Kind, batch: Vec<Waiting>) -> Option<Duration> {
    let mut ids: Vec<String> = batch.iter().map(|w| w.id.clone()).collect();
    ids.sort();
    ids.dedup();
    let started = Instant::now();
    let result = client.list_users_by(kind.param(), &ids).await;
    let took = started.elapsed();
    match result {
        Ok(found) => {
            let found: HashMap<String, Bytes> = found
                .into_iter()
                .flat_map(|(id, raw)| {
                    keys_of(kind, &id, &raw)
                        .into_iter()
                        .map(move |k| (k, raw.clone()))
                })
                .collect();
            for w in batch {
                // The place is freed before the answer, so whoever got it can queue again.
                drop(w.place);
                let _ = w.reply.send(Ok(found.get(&w.id).cloned()));
            }
            Some(took)
        }
        Err(e) => {
            // An answer from Clerk (a 4xx, say) still measures its latency; no answer
            // (paused, budget spent, unreachable) does not.
            let answered = matches!(
                e,
                UpstreamError::Status { .. } | UpstreamError::Malformed { .. }
            );
            for w in batch {
                drop(w.place);
                let _ = w.reply.send(Err(e.clone()));
            }
            answered.then_some(took)
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
            Policy {
                max: 2,
                max_in_flight: 2,
                wait_share: 0.5,
                max_wait: Duration::from_millis(1),
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

    const POLICY: Policy = Policy {
        max: 100,
        max_in_flight: 2,
        wait_share: 0.5,
        max_wait: Duration::from_millis(50),
        queue_max: 10_000,
    };

    fn at(pending: usize, waited_ms: u64, in_flight: usize) -> Situation {
        Situation {
            pending,
            oldest_waited: Duration::from_millis(waited_ms),
            in_flight,
            tight: false,
            freed: false,
            latency: Some(Duration::from_millis(40)),
        }
    }

    #[test]
    fn with_nothing_in_flight_what_is_queued_goes_at_once() {
        assert_eq!(POLICY.decide(at(1, 0, 0)), Step::Send(1));
        assert_eq!(POLICY.decide(at(37, 0, 0)), Step::Send(37));
        assert_eq!(POLICY.decide(at(250, 0, 0)), Step::Send(100));
        assert_eq!(POLICY.decide(at(0, 0, 0)), Step::Wait(None));
    }

    #[test]
    fn while_a_call_is_in_flight_the_batch_stays_open_until_full_freed_or_the_bound() {
        // Open: the bound is half the observed 40 ms.
        assert_eq!(
            POLICY.decide(at(10, 5, 1)),
            Step::Wait(Some(Duration::from_millis(15)))
        );
        // Full: sent into the free slot.
        assert_eq!(POLICY.decide(at(100, 0, 1)), Step::Send(100));
        // A call returned: sent as it is.
        let freed = Situation {
            freed: true,
            ..at(10, 1, 1)
        };
        assert_eq!(POLICY.decide(freed), Step::Send(10));
        // The oldest id has waited its share of Clerk's latency.
        assert_eq!(POLICY.decide(at(10, 20, 1)), Step::Send(10));
        // No slot: even a full batch waits for a call to return.
        assert_eq!(POLICY.decide(at(300, 500, 2)), Step::Wait(None));
    }

    #[test]
    fn the_bound_follows_clerk_latency_up_to_the_cap() {
        assert_eq!(POLICY.bound(None), Duration::from_millis(50));
        assert_eq!(
            POLICY.bound(Some(Duration::from_millis(2))),
            Duration::from_millis(1)
        );
        assert_eq!(
            POLICY.bound(Some(Duration::from_secs(1))),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn a_tight_budget_holds_the_batch_even_with_nothing_in_flight() {
        let tight = Situation {
            tight: true,
            freed: true,
            ..at(10, 5, 0)
        };
        assert_eq!(
            POLICY.decide(tight),
            Step::Wait(Some(Duration::from_millis(15)))
        );
        let full = Situation {
            tight: true,
            ..at(100, 0, 0)
        };
        assert_eq!(POLICY.decide(full), Step::Send(100));
        let waited = Situation {
            tight: true,
            ..at(10, 20, 0)
        };
        assert_eq!(POLICY.decide(waited), Step::Send(10));
    }

    #[test]
    fn one_slot_sends_three_hundred_waiting_ids_in_three_full_calls() {
        let one = Policy {
            max_in_flight: 1,
            ..POLICY
        };
        let mut pending = 300;
        let mut calls = 0;
        while pending > 0 {
            // Each call returns before the next decision (one slot).
            let s = Situation {
                freed: calls > 0,
                ..at(pending, 0, 0)
            };
            match one.decide(s) {
                Step::Send(n) => {
                    assert_eq!(n, 100);
                    pending -= n;
                    calls += 1;
                }
                other => panic!("expected a send, got {other:?}"),
            }
            assert_eq!(one.decide(at(pending, 0, 1)), Step::Wait(None));
        }
        assert_eq!(calls, 3);
    }

    #[test]
    fn the_ewma_follows_latency() {
        let mut e = Ewma::default();
        assert_eq!(e.get(), None);
        e.observe(Duration::from_millis(50));
        assert_eq!(e.get(), Some(Duration::from_millis(50)));
        for _ in 0..50 {
            e.observe(Duration::from_millis(10));
        }
        let l = e.get().unwrap();
        assert!(
            l < Duration::from_millis(11) && l >= Duration::from_millis(10),
            "{l:?}"
        );
    }
}
