//! The invalidation bus: how one instance tells every other instance that a cached
//! answer is no longer true, and makes sure the shared tier (L2) forgets it too.
//!
//! **Delivery.** Events go into a Redis Stream (`{prefix}bus:stream`, `XADD … MAXLEN ~`)
//! that every instance reads with `XREAD BLOCK`, tracking the last id it has seen, so
//! a reader gets every event after that id, in order. Each event carries the sender's
//! instance id, so an instance ignores its own.
//!
//! **Nothing is dropped on the way in.** An invalidation (the L2 keys to delete and the
//! event to announce) is queued in a bounded in-process outbox and this instance's
//! publisher applies it to Redis in order, one atomic pipeline per batch, retrying
//! until Redis takes it. While a key's delete is queued, L2 reads and writes of that
//! key are skipped ([`Bus::l2_suspect`]), so an old value still in Redis cannot come
//! back into L1. A full outbox is not silence: the queue is replaced by one fleet-wide
//! resync (every `user:`/`ctx:` key deleted from L2, then `Resync` announced), and
//! until that lands every L2 read is skipped and new invalidations are refused (so a
//! webhook effect fails and the inbox retries it).
//!
//! **Nothing is missed on the way out.** A reader that reconnects (after any error, or
//! when a `BLOCK` round trip does not come back in time: a dead or paused Redis), or
//! that finds the stream trimmed past its last id (a gap, or a Redis restarted empty),
//! delivers [`BusEvent::Resync`]: the receiver drops everything it holds in process.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use redis::streams::{StreamRangeReply, StreamReadReply};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::redis_link::{RedisLink, STREAM_BLOCK, stream_newest};

/// Invalidations waiting for Redis at most; beyond, a fleet-wide resync replaces them.
const OUTBOX_CAPACITY: usize = 10_000;
/// Outbox entries applied per round trip.
const BATCH: usize = 128;
/// Entries the stream keeps (approximately): a reader further behind resyncs.
const STREAM_MAXLEN: usize = 10_000;
/// How long one `XREAD` waits for news; it doubles as the heartbeat.
const BLOCK: Duration = STREAM_BLOCK;
/// Pause between reconnection attempts of the reader and retries of the publisher.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_millis(1_000);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusEvent {
    /// A Clerk user changed: drop it from L1.
    UserInvalidated { id: String },
    /// A proxied resource namespace changed (a write went through): its cached reads
    /// are void.
    ProxyNamespaceBumped { namespace: String },
    /// Messages may have been missed: drop everything held in process.
    Resync,
    /// A session was revoked: refuse its tokens until `until_ms` (Unix ms).
    SessionRevoked { sid: String, until_ms: u64 },
    /// The response cache's answers of a tenant (or of one of its resources) are void:
    /// forget the version nonce and read the new one from Redis.
    ResponseCacheInvalidated {
        tenant: String,
        resource: Option<String>,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    event: BusEvent,
}

pub type Handler = Arc<dyn Fn(BusEvent) + Send + Sync>;

/// The outbox is full (or a fleet-wide resync is still waiting for Redis): the
/// invalidation was not queued; the caller's work should fail and be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the invalidation outbox is full; a fleet-wide resync is pending")]
pub struct Overflow;

/// One queued invalidation: L2 keys to delete, then an event to announce.
#[derive(Debug, Clone)]
struct Op {
    del: Vec<String>,
    event: Option<BusEvent>,
}

#[derive(Default)]
struct Outbox {
    queue: VecDeque<Op>,
    /// Bumped when an overflow empties the queue, so a batch in flight does not pop
    /// entries that are no longer its own.
    epoch: u64,
}

pub struct Bus {
    redis: Option<Arc<RedisLink>>,
    instance_id: String,
    stream: String,
    outbox: Mutex<Outbox>,
    wake: Notify,
    /// L2 keys whose delete is queued, with how many queued deletes name them.
    pending: DashMap<String, u32>,
    /// An overflow happened: a fleet-wide resync must land before anything else.
    overflowed: AtomicBool,
    resyncs: AtomicU64,
}

impl Bus {
    pub fn new(redis: Option<Arc<RedisLink>>) -> Self {
        let stream = redis
            .as_ref()
            .map(|r| r.key("bus:stream"))
            .unwrap_or_default();
        Self {
            redis,
            instance_id: uuid::Uuid::new_v4().to_string(),
            stream,
            outbox: Mutex::new(Outbox::default()),
            wake: Notify::new(),
            pending: DashMap::new(),
            overflowed: AtomicBool::new(false),
            resyncs: AtomicU64::new(0),
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Tells the other instances. Never drops the event: it is queued until Redis
    /// takes it, and an outbox overflow becomes a fleet-wide resync.
    pub async fn publish(&self, event: BusEvent) {
        // An overflow is already recorded and turns into a resync: nothing is lost.
        let _ = self.enqueue(Vec::new(), Some(event));
    }

    /// Queues deleting `del` from L2 and then announcing `event`, in this order and
    /// after everything queued before. `Err` when the outbox cannot take it.
    pub fn enqueue(&self, del: Vec<String>, event: Option<BusEvent>) -> Result<(), Overflow> {
        if self.redis.is_none() {
            return Ok(());
        }
        let mut outbox = self.outbox.lock();
        if self.overflowed.load(Ordering::SeqCst) {
            return Err(Overflow);
        }
        if outbox.queue.len() >= OUTBOX_CAPACITY {
            self.overflowed.store(true, Ordering::SeqCst);
            outbox.queue.clear();
            outbox.epoch += 1;
            self.pending.clear();
            metrics::counter!("frontdesk_bus_overflows_total").increment(1);
            tracing::error!(
                capacity = OUTBOX_CAPACITY,
                "invalidation outbox full; a fleet-wide resync replaces it"
            );
            self.wake.notify_one();
            return Err(Overflow);
        }
        for k in &del {
            *self.pending.entry(k.clone()).or_insert(0) += 1;
        }
        outbox.queue.push_back(Op { del, event });
        metrics::gauge!("frontdesk_bus_outbox_depth").set(outbox.queue.len() as f64);
        drop(outbox);
        self.wake.notify_one();
        Ok(())
    }

    /// Whether L2's copy of `key` may be older than an invalidation this instance has
    /// queued: then L2 must be neither read nor written for it.
    pub fn l2_suspect(&self, key: &str) -> bool {
        self.overflowed.load(Ordering::SeqCst) || self.pending.contains_key(key)
    }

    /// Invalidations waiting for Redis.
    pub fn outbox_depth(&self) -> usize {
        self.outbox.lock().queue.len()
    }

    /// How many times this instance's reader resynced.
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    /// Applies the outbox to Redis until `stop`, retrying what fails.
    pub async fn run_publisher(self: Arc<Self>, stop: CancellationToken) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        let mut backoff = RETRY_MIN;
        loop {
            let idle = !self.overflowed.load(Ordering::SeqCst) && self.outbox_depth() == 0;
            if idle {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wake.notified() => {}
                }
            }
            let ok = if self.overflowed.load(Ordering::SeqCst) {
                self.resync_fleet(&redis).await
            } else {
                self.flush_batch(&redis).await
            };
            if ok {
                backoff = RETRY_MIN;
            } else {
                metrics::counter!("frontdesk_bus_publish_failures_total").increment(1);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }

    fn envelope(&self, event: &BusEvent) -> Option<String> {
        serde_json::to_string(&Envelope {
            origin: self.instance_id.clone(),
            event: event.clone(),
        })
        .ok()
    }

    fn xadd(&self, pipe: &mut redis::Pipeline, payload: String) {
        pipe.cmd("XADD")
            .arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("e")
            .arg(payload)
            .ignore();
    }

    /// One batch from the head of the outbox, applied atomically. Returns false when
    /// Redis did not take it (it stays queued).
    async fn flush_batch(&self, redis: &RedisLink) -> bool {
        let (batch, epoch) = {
            let outbox = self.outbox.lock();
            let batch: Vec<Op> = outbox.queue.iter().take(BATCH).cloned().collect();
            (batch, outbox.epoch)
        };
        if batch.is_empty() {
            return true;
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut events = 0u64;
        for op in &batch {
            if !op.del.is_empty() {
                pipe.cmd("DEL").arg(&op.del).ignore();
            }
            if let Some(payload) = op.event.as_ref().and_then(|e| self.envelope(e)) {
                self.xadd(&mut pipe, payload);
                events += 1;
            }
        }
        let mut conn = redis.conn();
        let result: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        redis.record(&result);
        if result.is_err() {
            return false;
        }
        metrics::counter!("frontdesk_bus_published_total").increment(events);
        let mut outbox = self.outbox.lock();
        if outbox.epoch == epoch {
            for _ in 0..batch.len() {
                outbox.queue.pop_front();
            }
            for op in &batch {
                for k in &op.del {
                    self.pending.remove_if_mut(k, |_, n| {
                        *n -= 1;
                        *n == 0
                    });
                }
            }
        }
        metrics::gauge!("frontdesk_bus_outbox_depth").set(outbox.queue.len() as f64);
        true
    }

    /// After an overflow: deletes every cached user and context from L2 and tells
    /// every instance (this one included, through its own handler) to drop L1.
    async fn resync_fleet(&self, redis: &RedisLink) -> bool {
        let mut conn = redis.conn();
        for pattern in ["user:*", "ctx:*"] {
            let mut cursor: u64 = 0;
            loop {
                let result: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(redis.key(pattern))
                    .arg("COUNT")
                    .arg(1_000)
                    .query_async(&mut conn)
                    .await;
                redis.record(&result);
                let Ok((next, keys)) = result else {
                    return false;
                };
                if !keys.is_empty() {
                    let result: redis::RedisResult<i64> =
                        redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
                    redis.record(&result);
                    if result.is_err() {
                        return false;
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        // Announced with a foreign origin so this instance's reader applies it too.
        let Ok(payload) = serde_json::to_string(&Envelope {
            origin: String::new(),
            event: BusEvent::Resync,
        }) else {
            return false;
        };
        let mut pipe = redis::pipe();
        self.xadd(&mut pipe, payload);
        let result: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        redis.record(&result);
        if result.is_err() {
            return false;
        }
        self.overflowed.store(false, Ordering::SeqCst);
        tracing::warn!("fleet-wide resync announced after an outbox overflow");
        true
    }

    /// Runs the reader until `stop`: delivers other instances' events to `handler`,
    /// reconnecting (and delivering `Resync`) after any interruption or gap.
    pub async fn run_subscriber(self: Arc<Self>, handler: Handler, stop: CancellationToken) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        let mut first = true;
        let mut backoff = RETRY_MIN;
        loop {
            if stop.is_cancelled() {
                return;
            }
            match self.read(&redis, &handler, first, &stop).await {
                Ok(()) => return,
                Err(e) => {
                    // Only the very first attempt has nothing to resync: after it,
                    // this instance may have cached what it could not hear about.
                    first = false;
                    if e.connected {
                        backoff = RETRY_MIN;
                        tracing::warn!(error_kind = ?e.kind, "bus reader lost its connection; reconnecting");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }

    fn resync(&self, handler: &Handler, why: &'static str) {
        self.resyncs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("frontdesk_bus_resyncs_total", "reason" => why).increment(1);
        tracing::info!(reason = why, "bus resync: dropping in-process caches");
        handler(BusEvent::Resync);
    }

    /// One connection's life. `Ok` only when stopped.
    async fn read(
        &self,
        redis: &RedisLink,
        handler: &Handler,
        first: bool,
        stop: &CancellationToken,
    ) -> Result<(), ReadError> {
        let mut conn = redis.stream_reader().await.map_err(ReadError::connecting)?;
        // Where the stream stands now: everything after it is read. Taken before the
        // resync, so nothing added between the two can be missed.
        let mut last_id = stream_newest(&mut conn, &self.stream)
            .await
            .map_err(ReadError::connecting)?;
        if !first {
            self.resync(handler, "reconnect");
        }
        loop {
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(&last_id);
            let read = xread.query_async::<Option<StreamReadReply>>(&mut conn);
            let reply = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = read => r.map_err(ReadError::connected)?,
            };
            let Some(reply) = reply else { continue };
            let entries: Vec<_> = reply.keys.into_iter().flat_map(|k| k.ids).collect();
            if entries.is_empty() {
                continue;
            }
            if last_id != "0-0" {
                // A gap: the oldest entry kept is newer than the last one read, so
                // entries in between may have been trimmed (or Redis restarted empty).
                let oldest: StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&self.stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
                    .map_err(ReadError::connected)?;
                if oldest
                    .ids
                    .first()
                    .is_some_and(|e| id_after(&e.id, &last_id))
                {
                    self.resync(handler, "gap");
                }
            }
            for entry in entries {
                last_id = entry.id.clone();
                let Some(redis::Value::BulkString(payload)) = entry.map.get("e") else {
                    continue;
                };
                let Ok(env) = serde_json::from_slice::<Envelope>(payload) else {
                    tracing::warn!("ignoring a malformed bus message");
                    continue;
                };
                if env.origin != self.instance_id {
                    metrics::counter!("frontdesk_bus_received_total").increment(1);
                    if env.event == BusEvent::Resync {
                        self.resync(handler, "announced");
                    } else {
                        handler(env.event);
                    }
                }
            }
        }
    }
}

struct ReadError {
    /// The connection had been made (a later failure means messages may be missed).
    connected: bool,
    kind: redis::ErrorKind,
}

impl ReadError {
    fn connecting(e: redis::RedisError) -> Self {
        Self {
            connected: false,
            kind: e.kind(),
        }
    }
    fn connected(e: redis::RedisError) -> Self {
        Self {
            connected: true,
            kind: e.kind(),
        }
    }
}

/// Whether stream id `a` (`ms-seq`) comes after `b`.
fn id_after(a: &str, b: &str) -> bool {
    fn parse(id: &str) -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    }
    parse(a) > parse(b)
}

#[cfg(test)]
mod tests {
    use super::id_after;

    #[test]
    fn stream_ids_compare_numerically() {
        assert!(id_after("10-0", "9-5"));
        assert!(id_after("10-2", "10-1"));
        assert!(!id_after("10-1", "10-1"));
        assert!(!id_after("9-9", "10-0"));
    }
}
