//! Outgoing webhooks the way Clerk sends them through Svix: the event envelope
//! (`{data, object: "event", type, timestamp, instance_id, event_attributes}`), signed
//! `svix-id` / `svix-timestamp` / `svix-signature` headers, delivery in the background
//! (bounded concurrency) and retries with exponential backoff while the target answers
//! non-2xx or fails. Every delivery is listed at `GET /__emulator/webhooks`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::knobs::WebhookTarget;
use crate::{Emulator, svix};

pub const USER_CREATED: &str = "user.created";
pub const USER_UPDATED: &str = "user.updated";
pub const USER_DELETED: &str = "user.deleted";
pub const SESSION_REVOKED: &str = "session.revoked";

/// First retry delay; doubles per attempt up to [`BACKOFF_CAP`].
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Deliveries in flight at once.
const CONCURRENCY: usize = 16;
/// Events waiting for the worker before new ones are dropped (and listed as failed).
const QUEUE: usize = 4096;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

/// One webhook message and how its delivery went.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// The `svix-id` (`msg_…`), the same on every attempt.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub url: String,
    pub attempts: u32,
    pub status: DeliveryStatus,
    /// HTTP status of the last attempt, if it got an answer.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: i64,
}

struct Job {
    index: usize,
    target: WebhookTarget,
    body: Vec<u8>,
}

/// Shared between the emulator and its delivery worker.
struct Log {
    deliveries: Mutex<Vec<Delivery>>,
    /// Bumped on every change, so callers can wait for deliveries to settle.
    changed: watch::Sender<u64>,
}

impl Log {
    fn update(&self, index: usize, f: impl FnOnce(&mut Delivery)) {
        if let Some(d) = self.deliveries.lock().get_mut(index) {
            f(d);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    fn pending(&self) -> bool {
        self.deliveries
            .lock()
            .iter()
            .any(|d| d.status == DeliveryStatus::Pending)
    }
}

pub struct Dispatcher {
    log: Arc<Log>,
    tx: mpsc::Sender<Job>,
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
    started: AtomicBool,
    max_attempts: u32,
    client: Option<reqwest::Client>,
}

impl Dispatcher {
    pub fn new(max_attempts: u32) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent("Svix-Webhooks/1.0 (frontdesk-emulator)")
            .build()
            .map_err(|e| tracing::error!(error = %e, "webhook HTTP client unavailable"))
            .ok();
        Self {
            log: Arc::new(Log {
                deliveries: Mutex::new(Vec::new()),
                changed: watch::Sender::new(0),
            }),
            tx,
            rx: Mutex::new(Some(rx)),
            started: AtomicBool::new(false),
            max_attempts: max_attempts.max(1),
            client,
        }
    }

    /// Starts the delivery worker on the current Tokio runtime, once. Events emitted
    /// before (e.g. from a synchronous call outside a runtime) wait in the queue.
    pub fn ensure_worker(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(rx) = self.rx.lock().take() else {
            return;
        };
        self.started.store(true, Ordering::Release);
        let log = self.log.clone();
        let client = self.client.clone();
        let max_attempts = self.max_attempts;
        handle.spawn(worker(rx, log, client, max_attempts));
    }

    fn enqueue(
        &self,
        target: WebhookTarget,
        event_type: &str,
        msg_id: String,
        body: Vec<u8>,
        now_ms: i64,
    ) {
        let index = {
            let mut ds = self.log.deliveries.lock();
            ds.push(Delivery {
                id: msg_id,
                event_type: event_type.to_owned(),
                url: target.url.clone(),
                attempts: 0,
                status: DeliveryStatus::Pending,
                last_status: None,
                last_error: None,
                created_at: now_ms,
            });
            ds.len() - 1
        };
        if self
            .tx
            .try_send(Job {
                index,
                target,
                body,
            })
            .is_err()
        {
            self.log.update(index, |d| {
                d.status = DeliveryStatus::Failed;
                d.last_error = Some("delivery queue full".into());
            });
        }
        self.ensure_worker();
    }

    pub fn list(&self) -> Vec<Delivery> {
        self.log.deliveries.lock().clone()
    }

    /// Resolves once no delivery is pending (delivered or failed for good).
    pub async fn settled(&self) {
        let mut rx = self.log.changed.subscribe();
        while self.log.pending() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

async fn worker(
    mut rx: mpsc::Receiver<Job>,
    log: Arc<Log>,
    client: Option<reqwest::Client>,
    max_attempts: u32,
) {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let log = log.clone();
        let client = client.clone();
        tokio::spawn(async move {
            deliver(job, &log, client.as_ref(), max_attempts).await;
            drop(permit);
        });
    }
}

async fn deliver(job: Job, log: &Log, client: Option<&reqwest::Client>, max_attempts: u32) {
    let msg_id = log
        .deliveries
        .lock()
        .get(job.index)
        .map(|d| d.id.clone())
        .unwrap_or_default();
    let mut backoff = BACKOFF_START;
    for attempt in 1..=max_attempts {
        let result = attempt_once(&job, &msg_id, client).await;
        let done = matches!(result, Ok(s) if (200..300).contains(&s));
        log.update(job.index, |d| {
            d.attempts = attempt;
            match &result {
                Ok(s) => {
                    d.last_status = Some(*s);
                    d.last_error = None;
                }
                Err(e) => d.last_error = Some(e.clone()),
            }
            if done {
                d.status = DeliveryStatus::Delivered;
            } else if attempt == max_attempts {
                d.status = DeliveryStatus::Failed;
            }
        });
        if done {
            return;
        }
        if attempt < max_attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }
}

/// One POST; the timestamp and signature are fresh per attempt, as Svix does.
async fn attempt_once(
    job: &Job,
    msg_id: &str,
    client: Option<&reqwest::Client>,
) -> Result<u16, String> {
    let client = client.ok_or_else(|| "no HTTP client".to_owned())?;
    let ts = crate::unix_ms().div_euclid(1000);
    let sig = svix::sign(&job.target.secret, msg_id, ts, &job.body).map_err(|e| e.to_string())?;
    let res = client
        .post(&job.target.url)
        .header("content-type", "application/json")
        .header("svix-id", msg_id)
        .header("svix-timestamp", ts.to_string())
        .header("svix-signature", sig)
        .body(job.body.clone())
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    Ok(res.status().as_u16())
}

impl Emulator {
    /// Sends `event_type` with `data` to the configured webhook target, if any.
    pub(crate) fn emit(&self, event_type: &str, data: Value) {
        let Some(target) = self.inner.knobs.lock().webhook.clone() else {
            return;
        };
        let now = self.now_ms();
        let msg_id = {
            let mut store = self.inner.store.write();
            store.next_id("msg")
        };
        let envelope = json!({
            "data": data,
            "event_attributes": {
                "http_request": {"client_ip": "127.0.0.1", "user_agent": "frontdesk-emulator"}
            },
            "instance_id": self.inner.instance_id,
            "object": "event",
            "timestamp": now,
            "type": event_type,
        });
        let body = envelope.to_string().into_bytes();
        self.inner
            .hooks
            .enqueue(target, event_type, msg_id, body, now);
    }

    /// Resolves once every webhook emitted so far is delivered or has failed for good
    /// (tests await this instead of sleeping).
    pub async fn webhooks_settled(&self) {
        self.inner.hooks.settled().await;
    }

    /// Deliveries so far, oldest first.
    pub fn webhook_deliveries(&self) -> Vec<Delivery> {
        self.inner.hooks.list()
    }
}

pub fn control_router() -> Router<Emulator> {
    Router::new().route("/__emulator/webhooks", get(list))
}

async fn list(State(emu): State<Emulator>) -> Json<Value> {
    let ds = emu.webhook_deliveries();
    Json(json!({"data": ds, "total_count": ds.len()}))
}
