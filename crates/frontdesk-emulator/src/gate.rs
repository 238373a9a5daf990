//! The front door of `/v1`: every request is counted (by route template), delayed by
//! the latency knob, authenticated against the secret key, rate-limited and possibly
//! failed by the error-rate knob — in that order, so 401/429/500 answers are counted too.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngExt;
use subtle::ConstantTimeEq;

use crate::Emulator;
use crate::errors::ApiError;
use crate::stats::CallRecord;

/// Stats key of requests that matched no route.
pub const UNMATCHED: &str = "{unmatched}";

pub async fn v1_gate(State(emu): State<Emulator>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !(path == "/v1" || path.starts_with("/v1/")) {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED.to_owned());
    let key = format!("{} {}", req.method(), route);
    emu.inner.stats.record(key.clone());

    let (delay, fail) = {
        let knobs = emu.inner.knobs.lock();
        let mut rng = emu.inner.rng.lock();
        let jitter = if knobs.latency.jitter_ms > 0 {
            rng.random_range(0..=knobs.latency.jitter_ms)
        } else {
            0
        };
        let fail = knobs.error_rate > 0.0 && rng.random::<f64>() < knobs.error_rate;
        (knobs.latency.fixed_ms + jitter, fail)
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }

    if !authorized(&emu, &req) {
        return ApiError::unauthenticated().into_response();
    }
    let admitted = {
        let mut knobs = emu.inner.knobs.lock();
        let admitted = knobs.admit(Instant::now());
        // Under the limiter's lock, so the log is in the order the limiter saw.
        emu.inner.calls.record(CallRecord {
            at_ms: crate::unix_ms(),
            route: key,
            rate_limited: admitted.is_err(),
        });
        admitted
    };
    if let Err(retry_after_s) = admitted {
        return ApiError::too_many_requests(retry_after_s).into_response();
    }
    // Clerk's second limit: updates of one user (10 per 10 s), same 429 shape.
    if let Some(user) = updated_user(req.method(), &route, req.uri().path()) {
        let admitted = emu
            .inner
            .knobs
            .lock()
            .admit_user_update(&user, Instant::now());
        if let Err(retry_after_s) = admitted {
            return ApiError::too_many_requests(retry_after_s).into_response();
        }
    }
    if fail {
        return ApiError::internal().into_response();
    }
    next.run(req).await
}

/// The user a request updates, for the per-user limit: `PATCH /v1/users/{user_id}`
/// and `PATCH|PUT /v1/users/{user_id}/metadata`.
fn updated_user(method: &axum::http::Method, route: &str, path: &str) -> Option<String> {
    use axum::http::Method;
    let update = match route {
        "/v1/users/{user_id}" => method == Method::PATCH,
        "/v1/users/{user_id}/metadata" => method == Method::PATCH || method == Method::PUT,
        _ => false,
    };
    if !update {
        return None;
    }
    path.split('/').nth(3).map(str::to_owned)
}

fn authorized(emu: &Emulator, req: &Request) -> bool {
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.splitn(2, ' ');
    let scheme = parts.next().unwrap_or("");
    let token = parts.next().unwrap_or("").trim();
    scheme.eq_ignore_ascii_case("bearer")
        && bool::from(token.as_bytes().ct_eq(emu.secret_key().as_bytes()))
}

/// Unknown `/v1` paths: Clerk's 404.
pub async fn not_found() -> ApiError {
    ApiError::not_found()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
