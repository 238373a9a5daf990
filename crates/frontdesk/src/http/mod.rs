//! HTTP done the same way on both listeners: every rejection is JSON with a stable
//! `code` (axum's and tower-http's plain-text answers included), every 401 says why in
//! `WWW-Authenticate`, request time-outs, header limits and a bound on concurrent
//! connections. `serve` is the accept loop both listeners run.
//!
//! | what | answer |
//! |---|---|
//! | body over `max_body_bytes` (announced or chunked) | 413 `body_too_large` |
//! | body cut off (client gone mid-body) | 400 `body_incomplete`, never 413 |
//! | body still arriving after `request_timeout_ms` | 408 `request_timeout` |
//! | handler still working after `request_timeout_ms` | 504 `handler_timeout` |
//! | head larger than `max_header_bytes` | 431 (hyper's own answer, no body) |
//! | head not complete after `header_read_timeout_ms` | connection closed (hyper writes nothing) |
//! | more than `max_connections` open | 503 `too_many_connections`, then closed |

mod extract;
mod serve;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use extract::{Path, Query};
pub use serve::serve;

use crate::error::Error;

/// Limits of both listeners. `FRONTDESK_HTTP__*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// A request must be read and answered (up to its response head) within this
    /// many milliseconds: 408 while its body is still arriving, 504 once the handler
    /// has it. Streaming bodies (SSE) are not cut. `FRONTDESK_HTTP__REQUEST_TIMEOUT_MS`.
    pub request_timeout_ms: u64,
    /// A request head (request line and headers) must arrive within this many
    /// milliseconds, else the connection is closed.
    /// `FRONTDESK_HTTP__HEADER_READ_TIMEOUT_MS`.
    pub header_read_timeout_ms: u64,
    /// Largest request head, in bytes (at least 8192); larger gets 431.
    /// `FRONTDESK_HTTP__MAX_HEADER_BYTES`.
    pub max_header_bytes: usize,
    /// Open connections per listener; one more is answered 503 and closed.
    /// `FRONTDESK_HTTP__MAX_CONNECTIONS`.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
        }
    }
}

/// hyper refuses (panics on) a smaller read buffer.
pub const MIN_HEADER_BYTES: usize = 8192;

/// The stable code of an error status, for answers that did not come from [`Error`].
pub fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        409 => "conflict",
        411 => "length_required",
        413 => "body_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "invalid_body",
        429 => "rate_limited",
        431 => "headers_too_large",
        500 => "internal",
        501 => "not_implemented",
        502 => "bad_gateway",
        503 => "unavailable",
        504 => "handler_timeout",
        s if s < 500 => "bad_request",
        _ => "internal",
    }
}

pub use crate::error::www_authenticate;

/// `X-Cache: HIT|MISS|STALE|BYPASS` on the user API and the proxy.
pub const X_CACHE: &str = "x-cache";

/// Whether reading a body failed because it was over its limit (as opposed to the
/// client going away mid-body, which is not a 413).
pub fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Marks a response whose body is someone else's (Clerk's, relayed by the proxy), so
/// [`json_errors`] leaves it byte-faithful.
#[derive(Debug, Clone, Copy)]
pub struct Relayed;

/// Turns any error answer that is not JSON (axum's extractor and 405 answers,
/// tower-http's, a panic-free fallback) into `{"code","message"}`, keeping its status
/// and headers (`Allow`, `Retry-After`), and adds `WWW-Authenticate` to any 401 that
/// lacks it. Run on every answer by the observation middleware (`telemetry`).
pub fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<Relayed>().is_some()
    {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut response = if is_json {
        response
    } else {
        let (mut parts, _) = response.into_parts();
        let message = match status {
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_string(),
            StatusCode::PAYLOAD_TOO_LARGE => "the body is too large".to_string(),
            s => s.canonical_reason().unwrap_or("error").to_lowercase(),
        };
        let fresh = Error::client(status, code_for(status), message).into_response();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_TYPE);
        let (fresh_parts, body) = fresh.into_parts();
        parts.headers.extend(fresh_parts.headers);
        Response::from_parts(parts, body)
    };
    if status == StatusCode::UNAUTHORIZED
        && !response.headers().contains_key(header::WWW_AUTHENTICATE)
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, www_authenticate("unauthorized"));
    }
    response
}

/// The request's body limit and time-out around `run`. A body announced larger than
/// `max_body` is refused at once (413 `body_too_large`); a chunked one is cut at the
/// limit (the handler's extractor answers 413). When time runs out: 408 when the body
/// had not fully arrived, 504 when the handler had it and was still working. A
/// request whose body is already complete (every GET) is not wrapped at all.
pub async fn guard<F, Fut>(limit: Duration, max_body: usize, req: Request, run: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let done = if http_body::Body::is_end_stream(req.body()) {
        None
    } else {
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > max_body as u64) {
            return Error::client(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the body is too large",
            )
            .into_response();
        }
        Some(Arc::new(AtomicBool::new(false)))
    };
    let req = match &done {
        None => req,
        Some(flag) => req.map(|body| {
            Body::new(Tracked {
                inner: http_body_util::Limited::new(body, max_body),
                done: flag.clone(),
            })
        }),
    };
    match tokio::time::timeout(limit, run(req)).await {
        Ok(response) => response,
        Err(_) if done.is_some_and(|d| !d.load(Ordering::Relaxed)) => Error::client(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        )
        .into_response(),
        Err(_) => {
            tracing::warn!(limit_ms = limit.as_millis() as u64, "handler timed out");
            Error::client(
                StatusCode::GATEWAY_TIMEOUT,
                "handler_timeout",
                "the request took too long to answer",
            )
            .into_response()
        }
    }
}

/// A request body that records when it has been read to its end.
struct Tracked {
    inner: http_body_util::Limited<Body>,
    done: Arc<AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    /// Limited's own error, unwrapped: axum recognises a `LengthLimitError` (413) only
    /// under at most two layers of wrapping.
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
