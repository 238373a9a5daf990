//! The invalidation bus: how one instance tells every other instance that a cached
//! answer is no longer true. Messages go over Redis pub/sub on `{prefix}bus`; each
//! carries the sender's instance id so an instance ignores its own echoes.
//!
//! Pub/sub is fire-and-forget: an instance that is disconnected misses messages. So
//! when the subscriber (re)connects after an outage it delivers [`BusEvent::Resync`],
//! and receivers drop everything they hold in process rather than trust it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::redis_link::RedisLink;

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
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    event: BusEvent,
}

pub type Handler = Arc<dyn Fn(BusEvent) + Send + Sync>;

pub struct Bus {
    redis: Option<Arc<RedisLink>>,
    instance_id: String,
    channel: String,
}

impl Bus {
    pub fn new(redis: Option<Arc<RedisLink>>) -> Self {
        let channel = redis.as_ref().map(|r| r.key("bus")).unwrap_or_default();
        Self {
            redis,
            instance_id: uuid::Uuid::new_v4().to_string(),
            channel,
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Tells the other instances. Without Redis (or while it is down) there is nobody
    /// to tell, or no way to: the event is dropped and counted.
    pub async fn publish(&self, event: BusEvent) {
        let Some(redis) = &self.redis else { return };
        if !redis.is_up() {
            metrics::counter!("frontdesk_bus_publish_failures_total").increment(1);
            return;
        }
        let Ok(payload) = serde_json::to_string(&Envelope {
            origin: self.instance_id.clone(),
            event,
        }) else {
            return;
        };
        let mut conn = redis.conn();
        let result: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(payload)
            .query_async(&mut conn)
            .await;
        redis.record(&result);
        if result.is_ok() {
            metrics::counter!("frontdesk_bus_published_total").increment(1);
        } else {
            metrics::counter!("frontdesk_bus_publish_failures_total").increment(1);
        }
    }

    /// Runs the subscriber until `stop`: delivers other instances' events to
    /// `handler`, reconnecting (and delivering `Resync`) after any interruption.
    pub async fn run_subscriber(self: Arc<Self>, handler: Handler, stop: CancellationToken) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        let mut first = true;
        loop {
            if stop.is_cancelled() {
                return;
            }
            match redis.client().get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if pubsub.subscribe(&self.channel).await.is_ok() {
                        if !first {
                            tracing::info!("bus resubscribed; dropping in-process caches");
                            handler(BusEvent::Resync);
                        }
                        first = false;
                        let mut messages = pubsub.on_message();
                        loop {
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                msg = messages.next() => {
                                    let Some(msg) = msg else { break };
                                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                                    let Ok(env) = serde_json::from_str::<Envelope>(&payload) else {
                                        tracing::warn!("ignoring a malformed bus message");
                                        continue;
                                    };
                                    if env.origin != self.instance_id {
                                        metrics::counter!("frontdesk_bus_received_total").increment(1);
                                        handler(env.event);
                                    }
                                }
                            }
                        }
                        tracing::warn!("bus subscription lost; reconnecting");
                    }
                }
                Err(_) => {
                    // Redis unreachable: the link's health loop reports it; retry.
                    first = false;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}
