//! The operator console on the api listener: `GET /console` (one server-rendered page,
//! its script and stylesheet embedded in the binary), `GET /console/stream` (SSE, one
//! JSON snapshot of this instance per second) and `/console/api/*`, the api listener's
//! own routes mounted again under the console's path, so the page's actions reach them
//! with the console cookie (see `api_auth`). It reads the whole façade, so it sits above
//! it, as `ops/` does.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::facade::Frontdesk;
use crate::vitals::{Previous, fleet, rates};

const PAGE: &str = include_str!("assets/console.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// The page loads nothing from elsewhere and runs no inline script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

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

/// Counters kept only by the process's Prometheus recorder, read from its text: response
/// cache outcomes, rate-limit decisions per policy, provisioning outcomes, Clerk pauses,
/// and Clerk's 429s. Process-wide (two façades in one process share them).
const PROCESS_COUNTERS: &[&str] = &[
    "frontdesk_respcache_requests_total",
    "frontdesk_ratelimit_decisions_total",
    "frontdesk_provisioning_total",
    "frontdesk_upstream_paused_total",
];

/// `{"name{labels}": value}` for [`PROCESS_COUNTERS`] and the 429s of
/// `frontdesk_upstream_requests_total`; `None` without the recorder.
fn process_counters(fd: &Frontdesk) -> Option<Value> {
    let text = fd.prometheus()?.render();
    Some(Value::Object(pick_counters(&text)))
}

fn pick_counters(text: &str) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        let wanted = PROCESS_COUNTERS.contains(&name)
            || (name == "frontdesk_upstream_requests_total" && series.contains("status=\"429\""));
        if let (true, Ok(v)) = (wanted, value.parse::<f64>()) {
            out.insert(series.to_string(), json!(v));
        }
    }
    out
}

/// One snapshot of this instance: the figures of `/v1/stats`, request rates per
/// listener, the webhook inbox and the live subscribers.
async fn snapshot(fd: &Frontdesk, previous: &mut Previous) -> Value {
    let (edge, api) = fd.vitals().totals();
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
        "process": process_counters(fd),
    })
}

/// `GET /console/stream`: `event: snapshot` with one JSON object, every second, until
/// the page leaves or shutdown begins.
async fn stream(State(fd): State<Frontdesk>) -> Response {
    let closing = fd.vitals().closing();
    let previous = fd.vitals().reading();
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
    fn picks_the_process_counters() {
        let text = "# TYPE frontdesk_respcache_requests_total counter\n\
            frontdesk_respcache_requests_total{outcome=\"hit\"} 3\n\
            frontdesk_upstream_requests_total{endpoint=\"users\",status=\"200\"} 9\n\
            frontdesk_upstream_requests_total{endpoint=\"users\",status=\"429\"} 2\n\
            frontdesk_http_requests_total{route=\"/x\"} 5\n";
        let m = pick_counters(text);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(
            m["frontdesk_respcache_requests_total{outcome=\"hit\"}"],
            3.0
        );
        assert_eq!(
            m["frontdesk_upstream_requests_total{endpoint=\"users\",status=\"429\"}"],
            2.0
        );
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
