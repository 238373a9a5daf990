//! One request's observation: its id, its fields for log lines, its metrics and its
//! access record, in one middleware (`observe`) that also applies the request
//! body limit and time-out and turns non-JSON error answers into JSON (`crate::http`).
//!
//! What it costs per request, and why each piece is shaped so:
//! - the request's fields live in a tokio task-local ([`RequestCtx`]) that log lines
//!   read when one is written ([`WithRequest`]); a `tracing` span per request
//!   formatted its fields into a fresh `String` and took locks on every poll, whether
//!   or not anything was logged;
//! - a generated id is a UUIDv7 from the clock and a thread-local generator, encoded
//!   on the stack (no `getrandom` call per request);
//! - the route template comes from [`RouteLayer`], a plain tower service that writes
//!   it into the task-local (no boxed future, no response extension);
//! - metric handles are registered once per (route, method, status) and kept, so a
//!   request increments atomics instead of hashing labels into the registry;
//! - the access record is pushed to the log pipe and formatted by its thread.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::pipe::Fields;
use super::{AccessRecord, X_REQUEST_ID, log_pipe};

/// What a log line written during a request says about it.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub id: HeaderValue,
    pub listener: &'static str,
    pub method: Method,
    pub path: Box<str>,
    route: OnceLock<MatchedPath>,
    user: OnceLock<Box<str>>,
}

impl RequestCtx {
    fn fields(&self) -> Fields<'_> {
        Fields {
            id: self.id.to_str().unwrap_or("-"),
            listener: self.listener,
            method: self.method.as_str(),
            path: &self.path,
            user: self.user.get().map(|u| &**u),
        }
    }
}

tokio::task_local! {
    static REQUEST: RequestCtx;
}

/// Names the signed-in user in the request's log lines and access record.
pub fn record_user(user_id: &str) {
    let _ = REQUEST.try_with(|r| r.user.set(user_id.into()));
}

/// Runs `fut` (work started by this request that may outlive its task, such as a
/// coalesced provisioning run) with this request's fields in its log lines.
pub fn in_current_request<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let ctx = REQUEST.try_with(RequestCtx::clone).ok();
    async move {
        match ctx {
            Some(ctx) => REQUEST.scope(ctx, fut).await,
            None => fut.await,
        }
    }
}

/// A request id: the caller's `X-Request-Id` when it is a sane token (printable ASCII,
/// at most 128 bytes: it ends up in logs), otherwise a fresh UUIDv7.
fn request_id_of(req: &Request) -> HeaderValue {
    if let Some(given) = req.headers().get(&X_REQUEST_ID) {
        let b = given.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic) {
            return given.clone();
        }
    }
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random = fastrand::u128(..).to_le_bytes();
    let mut bytes = [0u8; 10];
    bytes.copy_from_slice(&random[..10]);
    let id = uuid::Builder::from_unix_timestamp_millis(ms, &bytes).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The observation middleware's settings, one per listener.
pub struct Observe {
    listener: &'static str,
    access_log: bool,
    sample: f64,
    timeout: Duration,
    max_body: usize,
    on_done: Option<Box<dyn Fn(u16, u64) + Send + Sync>>,
}

impl Observe {
    /// `sample` is the share of successful (< 400) requests that get an access line
    /// when `access_log` is on; every 4xx and 5xx gets one (5xx even when it is off).
    pub fn new(listener: &'static str, access_log: bool, sample: f64, timeout: Duration) -> Self {
        Self {
            listener,
            access_log,
            sample: sample.clamp(0.0, 1.0),
            timeout,
            max_body: usize::MAX,
            on_done: None,
        }
    }

    /// Largest request body, in bytes (see [`crate::http::guard`]).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Called with each answer's status and microseconds (the console's counters).
    pub fn on_done(mut self, f: impl Fn(u16, u64) + Send + Sync + 'static) -> Self {
        self.on_done = Some(Box::new(f));
        self
    }

    fn logs(&self, status: u16) -> bool {
        if status >= 500 {
            return true;
        }
        if !self.access_log {
            return false;
        }
        status >= 400 || self.sample >= 1.0 || (self.sample > 0.0 && fastrand::f64() < self.sample)
    }
}

/// The middleware of both listeners (outermost): request id in, fields for log lines,
/// the time-out, JSON for every error answer, then metrics, the access record and the
/// id echoed in the response.
pub async fn observe(State(o): State<Arc<Observe>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id_of(&req);
    let ctx = RequestCtx {
        id,
        listener: o.listener,
        method: req.method().clone(),
        path: req.uri().path().into(),
        route: OnceLock::new(),
        user: OnceLock::new(),
    };
    let mut run = pin!(REQUEST.scope(
        ctx,
        crate::http::guard(o.timeout, o.max_body, req, move |req| next.run(req))
    ));
    let response = (&mut run).await;
    let ctx = run.as_mut().take_value();
    let mut response = crate::http::json_errors(response);
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    if let Some(f) = &o.on_done {
        f(status, micros);
    }
    let Some(ctx) = ctx else {
        return response;
    };
    let route = ctx.route.get().map(MatchedPath::as_str);
    record_metrics(o.listener, route, &ctx.method, status, elapsed);
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), ctx.id.clone());
    if o.logs(status) {
        let RequestCtx {
            id,
            listener,
            method,
            path,
            user,
            ..
        } = ctx;
        let record = AccessRecord {
            at: SystemTime::now(),
            listener,
            method,
            path,
            status,
            latency_us: micros,
            request_id: id,
            user_id: user.into_inner(),
        };
        match log_pipe() {
            Some(pipe) => pipe.access(record),
            None => record.emit(),
        }
    }
    response
}

impl AccessRecord {
    /// Without a log pipe (an embedding app with its own subscriber): an ordinary
    /// `tracing` event, formatted by whatever the app installed.
    fn emit(&self) {
        let user = self.user_id.as_deref().unwrap_or("");
        let id = self.request_id.to_str().unwrap_or("-");
        if self.status >= 500 {
            tracing::error!(target: "frontdesk::access", status = self.status, latency_us = self.latency_us, request_id = id, listener = self.listener, method = self.method.as_str(), path = &*self.path, user_id = user, "request finished");
        } else {
            tracing::info!(target: "frontdesk::access", status = self.status, latency_us = self.latency_us, request_id = id, listener = self.listener, method = self.method.as_str(), path = &*self.path, user_id = user, "request finished");
        }
    }
}

/// A route layer (`Router::route_layer`) that tells the observation middleware which
/// route template matched, for metric labels: ids in paths must not explode the label
/// set, and unmatched paths collapse into one label.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteLayer;

impl<S> tower::Layer<S> for RouteLayer {
    type Service = RouteService<S>;
    fn layer(&self, inner: S) -> RouteService<S> {
        RouteService(inner)
    }
}

#[derive(Debug, Clone)]
pub struct RouteService<S>(S);

impl<S, B> tower::Service<axum::http::Request<B>> for RouteService<S>
where
    S: tower::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> S::Future {
        if let Some(m) = req.extensions().get::<MatchedPath>() {
            let _ = REQUEST.try_with(|r| r.route.set(m.clone()));
        }
        self.0.call(req)
    }
}

/// A route's registered series: the duration histogram and one counter per (method,
/// status) seen.
struct RouteMetrics {
    duration: Histogram,
    counts: RwLock<Vec<(u8, u16, Counter)>>,
}

impl RouteMetrics {
    fn record(
        &self,
        listener: &'static str,
        route: &str,
        method: &Method,
        status: u16,
        elapsed: Duration,
    ) {
        self.duration.record(elapsed.as_secs_f64());
        let m = method_index(method);
        let found = self.counts.read().ok().and_then(|c| {
            c.iter()
                .find(|(cm, cs, _)| *cm == m && *cs == status)
                .map(|(_, _, counter)| counter.clone())
        });
        let counter = found.unwrap_or_else(|| {
            let c = metrics::counter!(
                "frontdesk_http_requests_total",
                "listener" => listener,
                "method" => METHODS[m as usize],
                "route" => route.to_string(),
                "status" => status.to_string()
            );
            if let Ok(mut counts) = self.counts.write() {
                counts.push((m, status, c.clone()));
            }
            c
        });
        counter.increment(1);
    }
}

type RouteTable = RwLock<HashMap<Box<str>, Arc<RouteMetrics>>>;

/// Per listener: route template → its series. Bounded by the routes that exist (plus
/// "unmatched").
static ROUTES: LazyLock<[RouteTable; 2]> = LazyLock::new(Default::default);

/// Counts one answer and records its time under its route's series.
fn record_metrics(
    listener: &'static str,
    route: Option<&str>,
    method: &Method,
    status: u16,
    elapsed: Duration,
) {
    let route = route.unwrap_or("unmatched");
    let table = &ROUTES[usize::from(listener != "edge")];
    let found = table.read().ok().and_then(|t| t.get(route).cloned());
    let entry = found.unwrap_or_else(|| {
        let fresh = Arc::new(RouteMetrics {
            duration: metrics::histogram!(
                "frontdesk_http_request_duration_seconds",
                "listener" => listener,
                "route" => route.to_string()
            ),
            counts: RwLock::new(Vec::new()),
        });
        match table.write() {
            Ok(mut t) => t.entry(route.into()).or_insert(fresh).clone(),
            Err(_) => fresh,
        }
    });
    entry.record(listener, route, method, status, elapsed);
}

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
];

fn method_index(m: &Method) -> u8 {
    match *m {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Adds the request's fields (`request` in JSON, `key=value` pairs in pretty) to every
/// event written while a request is handled.
pub(super) struct WithRequest<F> {
    inner: F,
    json: bool,
}

impl<F> WithRequest<F> {
    pub(super) fn json(inner: F) -> Self {
        Self { inner, json: true }
    }
    pub(super) fn pretty(inner: F) -> Self {
        Self { inner, json: false }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithRequest<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Vec::with_capacity(160);
        let in_request = REQUEST
            .try_with(|r| {
                let f = r.fields();
                if self.json {
                    f.json(&mut fields);
                } else {
                    f.pretty(&mut fields);
                }
            })
            .is_ok();
        if !in_request {
            return self.inner.format_event(ctx, writer, event);
        }
        let fields = std::str::from_utf8(&fields).map_err(|_| std::fmt::Error)?;
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end();
        if self.json {
            match line.strip_suffix('}') {
                Some(open) => writeln!(writer, "{open},\"request\":{fields}}}"),
                None => writeln!(writer, "{line}"),
            }
        } else {
            writeln!(writer, "{line}{fields}")
        }
    }
}
