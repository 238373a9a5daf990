//! Live invalidation to browsers (capabilities 10 and 11): server-sent events per
//! tenant, their history in Redis, the fan-out across instances, and refresh jobs.
//!
//! A browser subscribes at `GET /_frontdesk/events` (edge) with its session; it hears
//! its own tenants: its Clerk user id (`user_…`) and its active organization
//! (`org_…`). Events come from the app (`POST /v1/events`, api listener) and from
//! Frontdesk itself (the in-process [`EventHub`]: webhook effects, cache
//! invalidations), and from refresh jobs (`event: job`).
//!
//! With Redis, publishing is one script: `XADD` to the tenant's stream
//! (`{prefix}live:t:{tenant}`, `MAXLEN ~ history`, its id is the event's id, monotonic
//! per tenant) and to the fleet stream (`{prefix}live:fleet`), which one reader per
//! instance follows (`XREAD BLOCK`) to hand each event to the local subscribers of its
//! tenant. A reconnect, to this instance or another, replays from the tenant streams
//! after its `Last-Event-ID`; a cursor older than the history gets `event: reset`.
//!
//! Without Redis, events reach the subscribers of this instance only, and there is no
//! history: every resume is a `reset`.
//!
//! Each subscriber has a bounded queue; a subscriber that does not keep up is
//! disconnected (and counted), never allowed to grow memory.

pub mod jobs;
mod sse;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::{Mutex, RwLock};
use redis::streams::{StreamRangeReply, StreamReadReply};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::events::{AppEvent, EventHub};
use crate::json::JsonBody;
use crate::redis_link::{RedisLink, STREAM_BLOCK, stream_newest};
use crate::store::Store;
use crate::tokens::Verifier;

pub use jobs::{JobConfig, JobStats};

pub use crate::config::LiveConfig;

/// Entries kept in the fleet stream: enough for a reader to ride out a reconnect.
const FLEET_MAXLEN: usize = 10_000;
const READ_BATCH: usize = 512;
const BLOCK: Duration = STREAM_BLOCK;
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_millis(2_000);
/// The cursor of a tenant whose history was empty when the stream began.
const START: &str = "0-0";
/// Longest accepted `type` and tenant id.
const MAX_NAME: usize = 128;

/// Event types Frontdesk sends itself and apps may not publish.
const RESERVED_TYPES: &[&str] = &["reset", "job"];

/// One event on its way to subscribers.
#[derive(Debug)]
pub struct Delivery {
    pub tenant: String,
    /// The tenant stream's id (monotonic per tenant).
    pub id: String,
    pub kind: String,
    /// Compact JSON (one line).
    pub data: String,
}

/// What a subscriber's queue carries.
#[derive(Debug, Clone)]
enum Msg {
    Event(Arc<Delivery>),
    /// The fan-out lost events (a gap in the fleet stream): the client must refetch.
    Reset,
}

struct Sub {
    id: u64,
    tx: mpsc::Sender<Msg>,
    /// Fired when the subscriber is dropped for being slow.
    kick: CancellationToken,
}

/// Counters for tests and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveStats {
    pub subscribers: u64,
    /// Tenants with at least one subscriber here.
    pub tenants: u64,
    pub published: u64,
    pub delivered: u64,
    pub slow_disconnects: u64,
    pub resets: u64,
}

struct Inner {
    config: LiveConfig,
    store: Store,
    redis: Option<Arc<RedisLink>>,
    #[allow(dead_code)]
    clock: SharedClock,
    hub: EventHub,
    verifier: Option<Verifier>,
    subs: RwLock<HashMap<String, Vec<Sub>>>,
    next_sub: AtomicU64,
    subscribers: AtomicU64,
    /// Ids of events published without Redis (process-local).
    local_seq: AtomicU64,
    /// The newest fleet-stream id this instance's reader has handled.
    fleet_seen: Mutex<Option<String>>,
    published: AtomicU64,
    delivered: AtomicU64,
    slow: AtomicU64,
    resets: AtomicU64,
    jobs: jobs::Jobs,
    script: redis::Script,
    /// Fired when the instance begins to shut down: streams end at once, so browsers
    /// reconnect (to another instance) instead of holding the shutdown back.
    closing: CancellationToken,
}

/// The live-events capability. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

const PUBLISH_SCRIPT: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'y', ARGV[5], 'd', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 't', ARGV[4], 'i', id, 'y', ARGV[5], 'd', ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return id
";

impl Live {
    pub fn new(
        config: &LiveConfig,
        jobs: &[JobConfig],
        store: Store,
        redis: Option<Arc<RedisLink>>,
        clock: SharedClock,
        hub: EventHub,
        verifier: Option<Verifier>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                store,
                redis,
                clock,
                hub,
                verifier,
                subs: RwLock::new(HashMap::new()),
                next_sub: AtomicU64::new(1),
                subscribers: AtomicU64::new(0),
                local_seq: AtomicU64::new(0),
                fleet_seen: Mutex::new(None),
                published: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                slow: AtomicU64::new(0),
                resets: AtomicU64::new(0),
                jobs: jobs::Jobs::new(jobs),
                script: redis::Script::new(PUBLISH_SCRIPT),
                closing: CancellationToken::new(),
            }),
        }
    }

    pub fn config(&self) -> &LiveConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> LiveStats {
        let i = &self.inner;
        LiveStats {
            subscribers: i.subscribers.load(Ordering::Relaxed),
            tenants: self.tenants_with_subscribers() as u64,
            published: i.published.load(Ordering::Relaxed),
            delivered: i.delivered.load(Ordering::Relaxed),
            slow_disconnects: i.slow.load(Ordering::Relaxed),
            resets: i.resets.load(Ordering::Relaxed),
        }
    }

    /// Ends every open stream (the listener is shutting down: graceful shutdown must not
    /// wait for streams that never end). New subscriptions are refused from then on.
    pub fn close_streams(&self) {
        self.inner.closing.cancel();
    }

    /// A refresh job's counters on this instance (`None`: no such job).
    pub fn job_stats(&self, name: &str) -> Option<JobStats> {
        self.inner.jobs.stats(name)
    }

    /// Edge routes: `GET /_frontdesk/events`.
    pub fn edge_router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        if !self.inner.config.enabled {
            return Router::new();
        }
        Router::new()
            .route("/_frontdesk/events", get(sse::subscribe))
            .with_state(self.clone())
    }

    /// Api routes: `POST /v1/events`.
    pub fn api_router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        if !self.inner.config.enabled {
            return Router::new();
        }
        Router::new()
            .route("/v1/events", post(publish_api))
            .with_state(self.clone())
    }

    /// Background work until `stop`: the fleet reader (with Redis), the forwarder of
    /// Frontdesk's own events, and one loop per refresh job. Open streams end when
    /// `shutdown` fires.
    pub async fn run(self, stop: CancellationToken, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        let closing = self.inner.closing.clone();
        let stopped = stop.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => closing.cancel(),
                _ = stopped.cancelled() => {}
            }
        });
        if self.inner.redis.is_some() {
            tasks.spawn(self.clone().read_fleet(stop.clone()));
        }
        tasks.spawn(self.clone().forward_hub(stop.clone()));
        for job in self.inner.jobs.all() {
            tasks.spawn(jobs::run(self.clone(), job, stop.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Publishes one event to `tenant`'s subscribers on every instance. `data` is sent
    /// as the event's `data:` line. Returns the event's id.
    pub async fn publish(&self, tenant: &str, kind: &str, data: &Value) -> Result<String> {
        let data = serde_json::to_string(data)
            .map_err(|e| Error::Internal(anyhow::anyhow!("rendering event data: {e}")))?;
        let i = &self.inner;
        let id = match &i.redis {
            Some(redis) => {
                let mut conn = redis.conn();
                let result: redis::RedisResult<String> = i
                    .script
                    .key(redis.key(&format!("live:t:{tenant}")))
                    .key(redis.key("live:fleet"))
                    .arg(i.config.history.max(1))
                    .arg(i.config.history_ttl_ms.max(1))
                    .arg(FLEET_MAXLEN)
                    .arg(tenant)
                    .arg(kind)
                    .arg(&data)
                    .invoke_async(&mut conn)
                    .await;
                redis.record(&result);
                result.map_err(|_| {
                    metrics::counter!("frontdesk_live_publish_failures_total").increment(1);
                    Error::client(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "redis_unavailable",
                        "events cannot be published while Redis is unreachable",
                    )
                })?
            }
            None => {
                let n = i.local_seq.fetch_add(1, Ordering::Relaxed) + 1;
                let id = format!("0-{n}");
                let d = Arc::new(Delivery {
                    tenant: tenant.to_string(),
                    id: id.clone(),
                    kind: kind.to_string(),
                    data,
                });
                self.dispatch(&d);
                self.inner.jobs.observe(&d, None);
                id
            }
        };
        i.published.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("frontdesk_live_published_total").increment(1);
        Ok(id)
    }

    /// Hands one event to this instance's subscribers of its tenant. A full queue
    /// disconnects its subscriber.
    fn dispatch(&self, d: &Arc<Delivery>) {
        let mut slow = Vec::new();
        {
            let subs = self.inner.subs.read();
            let Some(list) = subs.get(&d.tenant) else {
                return;
            };
            for s in list {
                match s.tx.try_send(Msg::Event(d.clone())) {
                    Ok(()) => {
                        self.inner.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => slow.push(s.id),
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        for id in slow {
            if self.unregister(std::slice::from_ref(&d.tenant), id, true) {
                self.inner.subscribers.fetch_sub(1, Ordering::SeqCst);
                metrics::gauge!("frontdesk_live_subscribers").decrement(1.0);
                self.inner.slow.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("frontdesk_live_slow_disconnects_total").increment(1);
                tracing::info!(
                    tenant = %d.tenant,
                    "live subscriber disconnected: its queue is full"
                );
            }
        }
    }

    /// Tells every local subscriber that events were lost.
    fn reset_all(&self) {
        let subs = self.inner.subs.read();
        for list in subs.values() {
            for s in list {
                let _ = s.tx.try_send(Msg::Reset);
            }
        }
    }

    fn register(
        &self,
        tenants: &[String],
    ) -> Option<(u64, mpsc::Receiver<Msg>, CancellationToken)> {
        let i = &self.inner;
        let prev = i.subscribers.fetch_add(1, Ordering::SeqCst);
        if prev >= i.config.max_subscribers as u64 {
            i.subscribers.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        metrics::gauge!("frontdesk_live_subscribers").increment(1.0);
        let id = i.next_sub.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(i.config.queue.max(1));
        let kick = CancellationToken::new();
        let mut subs = i.subs.write();
        for t in tenants {
            subs.entry(t.clone()).or_default().push(Sub {
                id,
                tx: tx.clone(),
                kick: kick.clone(),
            });
        }
        Some((id, rx, kick))
    }

    /// Removes subscriber `id` from `tenants` (all of them when `kick`, so that a slow
    /// subscriber of two tenants is dropped from both). Whether it was still there.
    fn unregister(&self, tenants: &[String], id: u64, kick: bool) -> bool {
        let mut subs = self.inner.subs.write();
        let mut found = false;
        let keys: Vec<String> = if kick {
            subs.iter()
                .filter(|(_, l)| l.iter().any(|s| s.id == id))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            tenants.to_vec()
        };
        for t in keys {
            if let Some(list) = subs.get_mut(&t) {
                if let Some(pos) = list.iter().position(|s| s.id == id) {
                    let s = list.swap_remove(pos);
                    if kick {
                        s.kick.cancel();
                    }
                    found = true;
                }
                if list.is_empty() {
                    subs.remove(&t);
                }
            }
        }
        found
    }

    fn tenants_with_subscribers(&self) -> usize {
        self.inner.subs.read().len()
    }

    /// Frontdesk's own events (webhook effects, cache invalidations, …) go to the
    /// tenant they name.
    async fn forward_hub(self, stop: CancellationToken) {
        let mut rx = self.inner.hub.subscribe();
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                r = rx.recv() => r,
            };
            match event {
                Ok(event) => {
                    let Some((tenant, data)) = own_event(&event) else {
                        continue;
                    };
                    if let Err(e) = self.publish(&tenant, &event.kind, &data).await {
                        tracing::warn!(kind = %event.kind, code = e.code(), "cannot forward an event to live subscribers");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    metrics::counter!("frontdesk_live_hub_lagged_total").increment(n);
                    tracing::warn!(lost = n, "live forwarder fell behind the event hub");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// The one reader of the fleet stream on this instance.
    async fn read_fleet(self, stop: CancellationToken) {
        let Some(redis) = self.inner.redis.clone() else {
            return;
        };
        let mut backoff = RETRY_MIN;
        let mut last: Option<String> = None;
        loop {
            if stop.is_cancelled() {
                return;
            }
            match self.read_fleet_once(&redis, &mut last, &stop).await {
                Ok(()) => return,
                Err(e) => {
                    if e.kind() != redis::ErrorKind::Io || last.is_some() {
                        tracing::warn!(error_kind = ?e.kind(), "live fleet reader lost its connection; reconnecting");
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

    async fn read_fleet_once(
        &self,
        redis: &RedisLink,
        last: &mut Option<String>,
        stop: &CancellationToken,
    ) -> redis::RedisResult<()> {
        let mut conn = redis.stream_reader().await?;
        let stream = redis.key("live:fleet");
        match last.clone() {
            None => {
                *last = Some(stream_newest(&mut conn, &stream).await?);
            }
            Some(prev) if prev != "0-0" => {
                // After a reconnect: did the stream drop what this reader had not read?
                let at: StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(&prev)
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await?;
                if at.ids.first().map(|e| e.id.as_str()) != Some(prev.as_str()) {
                    self.inner.resets.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("frontdesk_live_resets_total", "reason" => "fleet_gap")
                        .increment(1);
                    self.reset_all();
                }
            }
            Some(_) => {}
        }
        *self.inner.fleet_seen.lock() = last.clone();
        loop {
            let from = last.clone().unwrap_or_else(|| "0-0".into());
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(READ_BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&from);
            let read = xread.query_async::<Option<StreamReadReply>>(&mut conn);
            let reply = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = read => r?,
            };
            let Some(reply) = reply else { continue };
            for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                *last = Some(entry.id.clone());
                let field = |name: &str| match entry.map.get(name) {
                    Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
                    _ => None,
                };
                let (Some(tenant), Some(id), Some(kind), Some(data)) =
                    (field("t"), field("i"), field("y"), field("d"))
                else {
                    continue;
                };
                let d = Arc::new(Delivery {
                    tenant,
                    id,
                    kind,
                    data,
                });
                self.dispatch(&d);
                self.inner.jobs.observe(&d, Some(&entry.id));
            }
            *self.inner.fleet_seen.lock() = last.clone();
        }
    }

    /// Events of `tenant` after `cursor`, from its history: `None` when the history
    /// no longer holds `cursor` (or Redis cannot say): the caller sends `reset`.
    async fn replay(&self, tenant: &str, cursor: &str) -> Option<Vec<Arc<Delivery>>> {
        let redis = self.inner.redis.as_ref()?;
        let mut conn = redis.conn();
        let result: redis::RedisResult<StreamRangeReply> = redis::cmd("XRANGE")
            .arg(redis.key(&format!("live:t:{tenant}")))
            .arg(if cursor == START { "-" } else { cursor })
            .arg("+")
            .arg("COUNT")
            .arg(self.inner.config.history.max(1) * 2 + 1)
            .query_async(&mut conn)
            .await;
        redis.record(&result);
        let reply = result.ok()?;
        let mut ids = reply.ids.into_iter();
        if cursor == START {
            // Subscribed while the history was empty: all of it was missed, unless
            // some was trimmed (trimming never leaves fewer than `history`).
            if ids.len() >= self.inner.config.history.max(1) {
                return None;
            }
        } else if ids.next().map(|e| e.id) != Some(cursor.to_string()) {
            // The cursor itself must still be there: otherwise what followed it may
            // be gone too.
            return None;
        }
        let field = |map: &HashMap<String, redis::Value>, name: &str| match map.get(name) {
            Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
            _ => None,
        };
        Some(
            ids.filter_map(|e| {
                Some(Arc::new(Delivery {
                    tenant: tenant.to_string(),
                    kind: field(&e.map, "y")?,
                    data: field(&e.map, "d")?,
                    id: e.id,
                }))
            })
            .collect(),
        )
    }

    /// The newest id in `tenant`'s history, where a stream resumes after a `reset`.
    async fn newest(&self, tenant: &str) -> Option<String> {
        let redis = self.inner.redis.as_ref()?;
        let mut conn = redis.conn();
        let result: redis::RedisResult<StreamRangeReply> = redis::cmd("XREVRANGE")
            .arg(redis.key(&format!("live:t:{tenant}")))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await;
        redis.record(&result);
        result.ok()?.ids.into_iter().next().map(|e| e.id)
    }

    /// Whether this instance hears events published anywhere (its fleet reader has
    /// its position), or is on its own (no Redis).
    pub fn fleet_ready(&self) -> bool {
        self.inner.redis.is_none() || self.inner.fleet_seen.lock().is_some()
    }

    fn fleet_seen(&self) -> Option<String> {
        self.inner.fleet_seen.lock().clone()
    }
}

/// The tenant and `data` of one of Frontdesk's own events: its subject when that is a
/// user or organization, else the user it names (`detail.user_id`, e.g. a session's).
fn own_event(event: &AppEvent) -> Option<(String, Value)> {
    let tenant = if is_tenant(&event.subject) {
        event.subject.clone()
    } else {
        event
            .detail
            .get("user_id")
            .and_then(Value::as_str)
            .filter(|t| is_tenant(t))?
            .to_string()
    };
    let data = match &event.detail {
        Value::Object(m) if event.kind != "invalidate" && !m.contains_key("subject") => {
            let mut m = m.clone();
            m.insert("subject".into(), Value::String(event.subject.clone()));
            Value::Object(m)
        }
        Value::Null => serde_json::json!({ "subject": event.subject }),
        other => other.clone(),
    };
    Some((tenant, data))
}

/// `user_…` or `org_…`, Clerk's id alphabet, bounded.
pub fn is_tenant(s: &str) -> bool {
    (s.starts_with("user_") || s.starts_with("org_"))
        && s.len() <= MAX_NAME
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.ends_with('_')
}

fn is_event_type(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// `a > b` for stream ids (`ms-seq`).
fn id_after(a: &str, b: &str) -> bool {
    parse_id(a) > parse_id(b)
}

fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishIn {
    tenant: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

async fn publish_api(
    State(live): State<Live>,
    JsonBody(body): JsonBody<PublishIn>,
) -> Result<Response> {
    if !is_tenant(&body.tenant) {
        return Err(Error::bad_request(
            "invalid_tenant",
            "tenant must be a Clerk user id (user_…) or organization id (org_…)",
        ));
    }
    if !is_event_type(&body.kind) || RESERVED_TYPES.contains(&body.kind.as_str()) {
        return Err(Error::bad_request(
            "invalid_event_type",
            "type must be 1-128 characters of A-Z a-z 0-9 _ . : - and not reset or job",
        ));
    }
    let id = live.publish(&body.tenant, &body.kind, &body.data).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "id": id, "tenant": body.tenant })),
    )
        .into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_clerk_user_or_org_ids() {
        assert!(is_tenant("user_2abcDEF"));
        assert!(is_tenant("org_9"));
        assert!(!is_tenant("user_"));
        assert!(!is_tenant("sess_1"));
        assert!(!is_tenant("user_a:b"));
        assert!(!is_tenant("org_a,b"));
        assert!(!is_tenant(&format!("user_{}", "a".repeat(200))));
    }

    #[test]
    fn own_events_go_to_the_tenant_they_name() {
        let e = |kind: &str, subject: &str, detail: Value| AppEvent {
            kind: kind.into(),
            subject: subject.into(),
            at_ms: 1,
            detail,
        };
        let (t, d) = own_event(&e(
            "invalidate",
            "org_1",
            serde_json::json!({"resource": "invoices"}),
        ))
        .unwrap();
        assert_eq!(t, "org_1");
        assert_eq!(d, serde_json::json!({"resource": "invoices"}));
        let (t, d) = own_event(&e(
            "session.revoked",
            "sess_1",
            serde_json::json!({"user_id": "user_1"}),
        ))
        .unwrap();
        assert_eq!(t, "user_1");
        assert_eq!(d["subject"], "sess_1");
        assert!(own_event(&e("email.created", "idn_1", Value::Null)).is_none());
    }

    #[test]
    fn ids_compare_numerically() {
        assert!(id_after("10-0", "9-5"));
        assert!(id_after("10-2", "10-1"));
        assert!(!id_after("10-1", "10-1"));
    }
}
