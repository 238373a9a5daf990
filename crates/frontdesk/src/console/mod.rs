//! The operator console on the api listener: `GET /console` (one server-rendered page,
//! its script and stylesheet embedded in the binary), `GET /console/stream` (SSE, one
//! JSON snapshot of this instance per second) and `/console/api/*`, the api listener's
//! own routes mounted again under the console's path, so the page's actions reach them
//! with the console cookie (see `api_auth`). It reads the whole façade, so it sits above
//! it, as `ops/` does.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::facade::Frontdesk;
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

const PAGE: &str = include_str!("assets/console.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// The page loads nothing from elsewhere and runs no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Requests and their time per listener, counted by a layer on both routers; the
/// stream turns them into rates.
#[derive(Clone, Default)]
pub struct Console(Arc<Inner>);

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
struct Totals {
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

impl Console {
    pub fn new() -> Self {
        Self::default()
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

/// The counting layer (`app::finish`): one request, its status class and its time to
/// the response head.
pub async fn count(
    State((console, listener)): State<(Console, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(req).await;
    let t = console.traffic(listener);
    t.requests.fetch_add(1, Ordering::Relaxed);
    if response.status().is_server_error() {
        t.server_errors.fetch_add(1, Ordering::Relaxed);
    }
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    t.micros.fetch_add(micros, Ordering::Relaxed);
    response
}

/// The console's routes; `api` is the api listener's capability routes, mounted again
/// under `/console/api` for the page's actions.
pub fn router(fd: Frontdesk, api: Router) -> Router {
    Router::new()
        .route("/console", get(page))
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
        .route("/console/stream", get(stream))
        .with_state(fd)
        .nest("/console/api", api)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn page(State(fd): State<Frontdesk>) -> Response {
    let html = PAGE
        .replace("{{instance}}", &escape(fd.bus().instance_id()))
        .replace("{{store}}", &escape(fd.store().kind()))
        .replace("{{version}}", env!("CARGO_PKG_VERSION"))
        .replace(
            "{{redis}}",
            match fd.redis() {
                None => "disabled",
                Some(_) => "configured",
            },
        );
    let mut r = html.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// What the stream remembers between two snapshots, to turn totals into rates.
struct Previous {
    at: Instant,
    edge: Totals,
    api: Totals,
}

fn rates(now: Totals, before: Totals, seconds: f64) -> Value {
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

/// One snapshot of this instance: the figures of `/v1/stats`, request rates per
/// listener, the webhook inbox and the live subscribers.
async fn snapshot(fd: &Frontdesk, previous: &mut Previous) -> Value {
    let console = fd.console();
    let (edge, api) = (console.0.edge.totals(), console.0.api.totals());
    let now = Instant::now();
    let seconds = now.duration_since(previous.at).as_secs_f64();
    let requests = json!({
        "edge": rates(edge, previous.edge, seconds),
        "api": rates(api, previous.api, seconds),
    });
    *previous = Previous { at: now, edge, api };
    let now_ms = fd.clock().now_ms();
    let inbox = match fd.store().inbox_stats().await {
        Ok(s) => json!({
            "pending": s.pending,
            "dead": s.dead,
            "oldest_pending_age_ms": s.oldest_pending_at.map(|t| (now_ms as i64 - t).max(0)),
        }),
        Err(e) => {
            tracing::debug!(code = e.code(), "console: cannot read the inbox figures");
            Value::Null
        }
    };
    let live = fd.live().stats();
    let fleet = match fd.redis() {
        Some(redis) => fleet(redis, now_ms).await,
        None => None,
    };
    json!({
        "at_ms": now_ms,
        "requests": requests,
        "stats": crate::ops::stats_value(fd),
        "inbox": inbox,
        "live": {"subscribers": live.subscribers, "published": live.published, "delivered": live.delivered},
        "fleet": fleet,
    })
}

/// What an instance's fleet entry is made of: the handles it reads, not the façade
/// (a background task must not keep the façade alive).
pub struct FleetWriter {
    pub console: Console,
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
            edge: self.console.0.edge.totals(),
            api: self.console.0.api.totals(),
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
        let (edge, api) = (self.console.0.edge.totals(), self.console.0.api.totals());
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
async fn fleet(redis: &RedisLink, now_ms: u64) -> Option<Vec<Value>> {
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

/// `GET /console/stream`: `event: snapshot` with one JSON object, every second, until
/// the page leaves or shutdown begins.
async fn stream(State(fd): State<Frontdesk>) -> Response {
    let console = fd.console().clone();
    let closing = console.0.closing.clone();
    let previous = Previous {
        at: Instant::now(),
        edge: console.0.edge.totals(),
        api: console.0.api.totals(),
    };
    let body = futures::stream::unfold((fd, previous, true), move |(fd, mut previous, first)| {
        let closing = closing.clone();
        async move {
            if !first {
                tokio::select! {
                    _ = closing.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            } else if closing.is_cancelled() {
                return None;
            }
            let value = snapshot(&fd, &mut previous).await;
            let frame = format!("event: snapshot\ndata: {value}\n\n");
            Some((
                Ok::<_, Infallible>(Bytes::from(frame)),
                (fd, previous, false),
            ))
        }
    });
    let mut r = Body::from_stream(body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn rates_over_a_second() {
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
