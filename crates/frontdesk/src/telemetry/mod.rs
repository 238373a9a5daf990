//! Logs and metrics. Logs are JSON lines (or pretty for humans) written by one thread
//! behind a bounded queue (`pipe`): the access log costs a request one queue push,
//! never a format or a write. Every line written while a request is handled carries
//! that request's id and path under `request`: the request's fields live in a tokio
//! task-local (`request`), not in a `tracing` span, because a span per request cost
//! more than the rest of the edge path. Tokens and secrets never reach a log line: the
//! request record holds the method and path only (no query, no headers), and secrets
//! are [`crate::config::Secret`]s.
//!
//! Metrics go through the `metrics` facade into a Prometheus recorder. The facade's
//! recorder is process-wide by design; it is installed once and every instance in the
//! process renders the same registry. The per-request series are registered once per
//! route and status and their handles kept (`request`), so a request touches atomics,
//! not the registry.

mod pipe;
mod request;

pub use pipe::{AccessRecord, LogPipe};
pub use request::{Observe, RouteLayer, in_current_request, observe, record_user};

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::HeaderName;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// A counter with fixed labels, registered once per call site and kept: for the
/// per-request path, where looking the series up in the registry (hashing its labels)
/// on every increment cost more than the increment. The recorder is installed first,
/// so the kept handle is never a no-op.
#[macro_export]
#[doc(hidden)]
macro_rules! hot_counter {
    ($name:literal $(, $k:literal => $v:literal)* $(,)?) => {{
        static COUNTER: ::std::sync::OnceLock<::metrics::Counter> = ::std::sync::OnceLock::new();
        COUNTER.get_or_init(|| {
            let _ = $crate::telemetry::prometheus();
            ::metrics::counter!($name $(, $k => $v)*)
        })
    }};
}

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static PIPE: OnceLock<LogPipe> = OnceLock::new();

/// Installs the global log subscriber writing to stderr through the log pipe. Called
/// by the binary; returns false if a subscriber was installed already.
pub fn init_logging(format: LogFormat, filter: &str, queue_lines: usize) -> bool {
    init_logging_to(format, filter, queue_lines, Box::new(std::io::stderr()))
}

/// Like [`init_logging`] with another output (tests capture lines this way).
pub fn init_logging_to(
    format: LogFormat,
    filter: &str,
    queue_lines: usize,
    out: Box<dyn std::io::Write + Send>,
) -> bool {
    if PIPE.get().is_some() {
        return false;
    }
    let pipe = PIPE.get_or_init(|| LogPipe::start(out, format, queue_lines));
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(PipeWriter(pipe));
    match format {
        LogFormat::Json => builder
            .event_format(request::WithRequest::json(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .try_init()
            .is_ok(),
        LogFormat::Pretty => builder
            .event_format(request::WithRequest::pretty(
                tracing_subscriber::fmt::format(),
            ))
            .try_init()
            .is_ok(),
    }
}

/// The installed log pipe, if the binary (or a test) installed one.
pub fn log_pipe() -> Option<&'static LogPipe> {
    PIPE.get()
}

/// Waits up to `within` for every queued log line to be written. True when there is
/// no pipe. For shutdown and tests.
pub fn flush_logs(within: Duration) -> bool {
    PIPE.get().is_none_or(|p| p.flush(within))
}

/// `tracing`'s writer: each event's formatted bytes become one queued line.
struct PipeWriter(&'static LogPipe);

/// One event's bytes, queued when dropped.
pub struct PipeLine {
    buf: Vec<u8>,
    pipe: &'static LogPipe,
}

impl std::io::Write for PipeLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PipeLine {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.pipe.text(std::mem::take(&mut self.buf));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for PipeWriter {
    type Writer = PipeLine;
    fn make_writer(&'a self) -> PipeLine {
        PipeLine {
            buf: Vec::new(),
            pipe: self.0,
        }
    }
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
                // Sizes, not seconds: ids per list call (at most 100).
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("frontdesk_user_batch_size".into()),
                    &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 75.0, 100.0],
                )
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
    metrics::describe_counter!(
        "frontdesk_log_dropped_total",
        "Log lines dropped because the log queue was full (requests never wait for it)"
    );
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
