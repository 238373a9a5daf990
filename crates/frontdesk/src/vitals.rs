//! This instance's vital signs, for the operator console (`console/`, above the
//! façade): requests and their time per listener (a layer in `app::finish`), the
//! rates between two readings, and the fleet entry each instance writes to Redis every
//! second (`{prefix}console:fleet`, one field per instance) and the read of that hash.
//! The façade holds a [`Vitals`] and runs the [`FleetWriter`]; nothing here imports it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::live::Live;
use crate::redis_link::RedisLink;
use crate::upstream::ClerkClient;
use crate::users::UserCache;

/// The fleet's figures: one hash, a field per instance (its latest entry as JSON).
const FLEET_KEY: &str = "console:fleet";
/// An instance writes its entry this often.
const FLEET_EVERY: Duration = Duration::from_secs(1);
/// An entry older than this is not shown; older than `FLEET_FORGET_MS`, it is removed.
const FLEET_FRESH_MS: u64 = 5_000;
const FLEET_FORGET_MS: u64 = 60_000;
/// The hash expires when no instance has written for this long.
const FLEET_TTL_MS: u64 = 30_000;

/// Requests and their time per listener, counted by a layer on both routers; the
/// stream turns them into rates.
#[derive(Clone, Default)]
pub struct Vitals(Arc<Inner>);

#[derive(Default)]
struct Inner {
    edge: Traffic,
    api: Traffic,
    /// Fired when shutdown begins: open streams end.
    closing: CancellationToken,
}

#[derive(Default)]
struct Traffic {
    requests: AtomicU64,
    server_errors: AtomicU64,
    micros: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    requests: u64,
    server_errors: u64,
    micros: u64,
}

impl Traffic {
    fn totals(&self) -> Totals {
        Totals {
            requests: self.requests.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            micros: self.micros.load(Ordering::Relaxed),
        }
    }
}

impl Vitals {
    pub fn new() -> Self {
        Self::default()
    }

    /// Per-listener totals now: (edge, api).
    pub fn totals(&self) -> (Totals, Totals) {
        (self.0.edge.totals(), self.0.api.totals())
    }

    /// Fired when shutdown begins: the console's streams end.
    pub fn closing(&self) -> CancellationToken {
        self.0.closing.clone()
    }

    /// A reading to take rates from.
    pub fn reading(&self) -> Previous {
        let (edge, api) = self.totals();
        Previous {
            at: Instant::now(),
            edge,
            api,
        }
    }

    /// Ends every open `/console/stream` (shutdown).
    pub fn close_streams(&self) {
        self.0.closing.cancel();
    }

    fn traffic(&self, listener: &str) -> &Traffic {
        match listener {
            "edge" => &self.0.edge,
            _ => &self.0.api,
        }
    }
}

impl Vitals {
    /// Counts one answer of `listener` (called by the observation layer, `app::finish`):
    /// its status class and its time to the response head.
    pub fn count(&self, listener: &str, status: u16, micros: u64) {
        let t = self.traffic(listener);
        t.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            t.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        t.micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// What the stream remembers between two snapshots, to turn totals into rates.
pub struct Previous {
    pub at: Instant,
    pub edge: Totals,
    pub api: Totals,
}

pub fn rates(now: Totals, before: Totals, seconds: f64) -> Value {
    let requests = now.requests.saturating_sub(before.requests);
    let micros = now.micros.saturating_sub(before.micros);
    let mean_ms = if requests == 0 {
        0.0
    } else {
        micros as f64 / requests as f64 / 1000.0
    };
    json!({
        "requests": now.requests,
        "server_errors": now.server_errors,
        // Over the time since the previous snapshot; 0 in a stream's first one.
        "per_s": if seconds >= 0.5 { requests as f64 / seconds } else { 0.0 },
        "mean_latency_ms": mean_ms,
    })
}

/// What an instance's fleet entry is made of: the handles it reads, not the façade
/// (a background task must not keep the façade alive).
pub struct FleetWriter {
    pub vitals: Vitals,
    pub redis: Arc<RedisLink>,
    pub clock: SharedClock,
    pub instance_id: String,
    pub users: Option<UserCache>,
    pub clerk: Option<Arc<ClerkClient>>,
    pub live: Live,
}

fn ratio(hits: u64, misses: u64) -> f64 {
    if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    }
}

impl FleetWriter {
    /// Writes this instance's entry every second until `stop` fires (a task of
    /// `Frontdesk::start`, with Redis only).
    pub async fn run(self, stop: CancellationToken) {
        let mut previous = Previous {
            at: Instant::now(),
            edge: self.vitals.0.edge.totals(),
            api: self.vitals.0.api.totals(),
        };
        let key = self.redis.key(FLEET_KEY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(FLEET_EVERY) => {}
            }
            let entry = self.entry(&mut previous);
            let mut pipe = redis::pipe();
            pipe.cmd("HSET")
                .arg(&key)
                .arg(&self.instance_id)
                .arg(entry.to_string())
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(FLEET_TTL_MS)
                .ignore();
            let mut conn = self.redis.conn();
            let result: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
            self.redis.record(&result);
        }
    }

    fn entry(&self, previous: &mut Previous) -> Value {
        let (edge, api) = (self.vitals.0.edge.totals(), self.vitals.0.api.totals());
        let now = Instant::now();
        let seconds = now.duration_since(previous.at).as_secs_f64();
        let requests = json!({
            "edge": rates(edge, previous.edge, seconds),
            "api": rates(api, previous.api, seconds),
        });
        *previous = Previous { at: now, edge, api };
        let users = self.users.as_ref().map(|u| {
            let s = u.stats();
            json!({"l1_hit_ratio": ratio(s.l1_hits, s.l1_misses), "l2_hit_ratio": ratio(s.l2_hits, s.l2_misses)})
        });
        json!({
            "instance_id": self.instance_id,
            "at_ms": self.clock.now_ms(),
            "requests": requests,
            "users": users,
            "upstream_calls": self.clerk.as_ref().map(|c| c.total_calls()),
            "live_subscribers": self.live.stats().subscribers,
        })
    }
}

/// The instances seen on Redis in the last `FLEET_FRESH_MS`, by id; entries older than
/// `FLEET_FORGET_MS` are removed. `None` without Redis or when it does not answer.
pub async fn fleet(redis: &RedisLink, now_ms: u64) -> Option<Vec<Value>> {
    let key = redis.key(FLEET_KEY);
    let mut conn = redis.conn();
    let result: redis::RedisResult<Vec<(String, String)>> =
        redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await;
    redis.record(&result);
    let entries = result.ok()?;
    let mut seen = Vec::new();
    let mut forget = Vec::new();
    for (id, raw) in entries {
        let Ok(entry) = serde_json::from_str::<Value>(&raw) else {
            forget.push(id);
            continue;
        };
        let age = now_ms.saturating_sub(entry["at_ms"].as_u64().unwrap_or(0));
        if age > FLEET_FORGET_MS {
            forget.push(id);
        } else if age <= FLEET_FRESH_MS {
            seen.push(entry);
        }
    }
    if !forget.is_empty() {
        let result: redis::RedisResult<()> = redis::cmd("HDEL")
            .arg(&key)
            .arg(&forget)
            .query_async(&mut conn)
            .await;
        redis.record(&result);
    }
    seen.sort_by(|a, b| a["instance_id"].as_str().cmp(&b["instance_id"].as_str()));
    Some(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_two_seconds() {
        let before = Totals {
            requests: 10,
            server_errors: 0,
            micros: 1_000,
        };
        let now = Totals {
            requests: 14,
            server_errors: 1,
            micros: 9_000,
        };
        let v = rates(now, before, 2.0);
        assert_eq!(v["per_s"], 2.0);
        assert_eq!(v["mean_latency_ms"], 2.0);
        assert_eq!(v["requests"], 14);
    }
}
