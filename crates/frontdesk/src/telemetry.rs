//! Logs and metrics. Logs are JSON lines (or pretty for humans); every line written
//! while a request is handled carries that request's id, because the request span is
//! entered around the handler and the JSON formatter prints the current span's fields.
//! Tokens and secrets never reach a log line: the request span records the method and
//! path only (no query, no headers), and secrets are [`crate::config::Secret`]s.
//!
//! Metrics go through the `metrics` facade into a Prometheus recorder. The facade's
//! recorder is process-wide by design; it is installed once and every instance in the
//! process renders the same registry.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the global log subscriber. Called by the binary; tests install their own.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use. `None` only
/// if another recorder was installed first (then `/metrics` says so).
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe_metrics();
            Some(handle)
        })
        .clone()
}

fn describe_metrics() {
    metrics::describe_counter!(
        "frontdesk_http_requests_total",
        "HTTP requests answered, by listener, method, route and status"
    );
    metrics::describe_histogram!(
        "frontdesk_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer an HTTP request"
    );
    metrics::describe_gauge!(
        "frontdesk_redis_up",
        "1 while Redis answers, 0 while it does not"
    );
    metrics::describe_gauge!("frontdesk_build_info", "Always 1; labels carry the version");
}

/// Background upkeep the Prometheus recorder needs (draining histogram buffers).
pub async fn prometheus_upkeep(
    handle: PrometheusHandle,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// Label values without an allocation per request for the common cases.
fn method_label(m: &axum::http::Method) -> metrics::SharedString {
    use axum::http::Method;
    let s: &'static str = match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    s.into()
}

fn status_label(status: u16) -> metrics::SharedString {
    let s: &'static str = match status {
        200 => "200",
        201 => "201",
        204 => "204",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return other.to_string().into(),
    };
    s.into()
}

/// A request id: the caller's `X-Request-Id` when it is a sane token (printable ASCII,
/// at most 128 bytes: it ends up in logs), otherwise a fresh UUIDv7.
fn request_id_of(req: &Request) -> String {
    req.headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// The request id carried in request extensions for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Middleware for both listeners: request id in, span around the handler, access log
/// line and metrics out, request id echoed in the response.
pub async fn observe(
    listener: &'static str,
    access_log: bool,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = request_id_of(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        listener,
        method = %method,
        path = %path,
        user_id = tracing::field::Empty,
    );
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    // Errors (5xx) are always logged; the per-request line can be turned off where a
    // load balancer already keeps access logs.
    if access_log || status >= 500 {
        span.in_scope(|| {
            tracing::info!(
                status,
                latency_us = elapsed.as_micros() as u64,
                "request finished"
            );
        });
    }
    // Label by route template when routing matched, so ids in paths do not explode
    // the label set; unmatched paths collapse into one label.
    let route = response
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    metrics::counter!(
        "frontdesk_http_requests_total",
        "listener" => listener,
        "method" => method_label(&method),
        "route" => route.clone(),
        "status" => status_label(status)
    )
    .increment(1);
    metrics::histogram!(
        "frontdesk_http_request_duration_seconds",
        "listener" => listener,
        "route" => route
    )
    .record(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    response
}
