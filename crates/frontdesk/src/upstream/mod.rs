//! The Clerk Backend API client. Every call Frontdesk makes to Clerk goes through one
//! `ClerkClient`, so one place keeps the instance under Clerk's limits:
//!
//! - one budget for the fleet (`budget.rs`): at most `rate_limit_requests` calls in any
//!   window of `rate_limit_window_ms`, counted in Redis across every instance (Clerk
//!   allows 1,000 requests per 10 s per production instance, 100 in development).
//!   Callers queue for it up to `queue_timeout_ms`, then get
//!   [`UpstreamError::Busy`] (503 with `Retry-After`);
//! - a `429` pauses that endpoint on every instance until `Retry-After` has passed: no
//!   request is sent to it before then, callers get [`UpstreamError::RateLimited`] at
//!   once and can answer from cache;
//! - a circuit breaker per endpoint (`breaker.rs`): while Clerk keeps failing, calls
//!   fail at once with [`UpstreamError::CircuitOpen`] and caches serve stale entries;
//! - idempotent calls (GET) are retried on 5xx and transport failures with jittered
//!   exponential backoff, within a retry budget (a share of the calls); writes are
//!   never retried (Clerk's writes are not idempotent);
//! - bounded concurrency and a per-call timeout;
//! - calls, errors by status, latency and governor waits counted per endpoint.

mod breaker;
mod budget;
mod endpoint;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::Semaphore;

pub use breaker::{Breakers, Pass, RetryBudget};
pub use budget::{Admission, Budget, LocalWindow, Mode as BudgetMode, Ticket};
pub use endpoint::Endpoint;

use crate::clock::SharedClock;
use crate::config::{Secret, UpstreamConfig};
use crate::redis_link::RedisLink;

/// One request to the Backend API, path relative to the API base (`/v1/...`).
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: Method,
    /// Path and query, starting with `/v1/`.
    pub path_and_query: String,
    /// The `Clerk-API-Version` to send; the configured one when `None`.
    pub api_version: Option<String>,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

impl UpstreamRequest {
    pub fn get(path_and_query: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            path_and_query: path_and_query.into(),
            api_version: None,
            content_type: None,
            body: Bytes::new(),
        }
    }
}

/// Clerk's answer, with the headers that matter to callers kept.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Headers of Clerk's answer passed back to callers; the rest (connection, length,
/// encodings) belong to the hop.
const KEPT_RESPONSE_HEADERS: &[&str] = &["content-type", "retry-after", "x-clerk-trace-id"];

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// Clerk said 429 (now or earlier, and the pause has not passed yet).
    #[error("Clerk is rate limiting {endpoint}; retry in {retry_after_ms} ms")]
    RateLimited {
        endpoint: &'static str,
        retry_after_ms: u64,
    },
    /// Clerk could not be reached, timed out, or kept answering 5xx.
    #[error("Clerk is unavailable ({0})")]
    Unavailable(String),
    /// Clerk kept failing: the endpoint's circuit is open and nothing was sent.
    #[error("Clerk is failing; {endpoint} is not called for {retry_after_ms} ms")]
    CircuitOpen {
        endpoint: &'static str,
        retry_after_ms: u64,
    },
    /// The fleet's Clerk budget stayed spent past the queueing deadline; nothing was
    /// sent.
    #[error("the Clerk budget is spent; retry in {retry_after_ms} ms")]
    Busy { retry_after_ms: u64 },
    /// Clerk answered with an unexpected status for a typed call.
    #[error("Clerk answered {status} to {endpoint}")]
    Status {
        endpoint: &'static str,
        status: u16,
        body: Bytes,
    },
    /// The request was not sent: its path would not reach Clerk as written (the URL
    /// parser would resolve a dot segment or re-encode it).
    #[error("refusing to send a path the URL parser would rewrite")]
    PathRewritten,
    /// Clerk's answer did not parse as the documented shape.
    #[error("Clerk's answer to {endpoint} did not parse: {detail}")]
    Malformed {
        endpoint: &'static str,
        detail: String,
    },
}

impl UpstreamError {
    /// Seconds a caller should wait before retrying, for `Retry-After`.
    pub fn retry_after_s(&self) -> u64 {
        match self {
            UpstreamError::RateLimited { retry_after_ms, .. }
            | UpstreamError::CircuitOpen { retry_after_ms, .. }
            | UpstreamError::Busy { retry_after_ms } => retry_after_ms.div_ceil(1000).max(1),
            _ => 1,
        }
    }
}

impl From<UpstreamError> for crate::error::Error {
    fn from(e: UpstreamError) -> Self {
        let retry_after_s = Some(e.retry_after_s());
        crate::error::Error::UpstreamUnavailable {
            detail: e.to_string(),
            retry_after_s,
        }
    }
}

/// Calls made, by endpoint, for `/v1/stats`.
#[derive(Debug, Default)]
struct Counters {
    calls: [AtomicU64; Endpoint::COUNT],
    errors: [AtomicU64; Endpoint::COUNT],
    rate_limited: AtomicU64,
    /// Calls refused at once by an open circuit.
    short_circuited: AtomicU64,
    /// Callers that gave up waiting for the budget.
    budget_timeouts: AtomicU64,
    /// Retries sent, and retries the retry budget refused.
    retries: AtomicU64,
    retries_refused: AtomicU64,
}

pub struct ClerkClient {
    http: reqwest::Client,
    base: String,
    secret: Secret,
    api_version: String,
    budget: Budget,
    breakers: Breakers,
    retry_budget: RetryBudget,
    paused_until_ms: Mutex<HashMap<Endpoint, u64>>,
    concurrency: Semaphore,
    config: UpstreamConfig,
    clock: SharedClock,
    counters: Counters,
}

impl std::fmt::Debug for ClerkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClerkClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Clerk's own limits: 1,000 requests per 10 s for a production instance, 100 for a
/// development one (`sk_test_` keys).
pub fn default_rate_limit(secret_key: &str) -> u32 {
    if secret_key.starts_with("sk_test_") {
        100
    } else {
        1000
    }
}

impl ClerkClient {
    pub fn new(
        base_url: &str,
        secret: Secret,
        api_version: &str,
        config: UpstreamConfig,
        clock: SharedClock,
        redis: Option<Arc<RedisLink>>,
    ) -> crate::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(2_000)))
            .pool_max_idle_per_host(config.max_concurrency)
            .user_agent(concat!("frontdesk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
        let per_window = match config.rate_limit_requests {
            0 => default_rate_limit(secret.expose()),
            n => n,
        };
        let budget = Budget::new(
            per_window,
            config.rate_limit_window_ms,
            config.expected_instances,
            redis,
        );
        // A probe that has not reported after two call time-outs has been abandoned.
        let breakers = Breakers::new(
            config.breaker_failures,
            config.breaker_cooldown_ms,
            config.timeout_ms.saturating_mul(2),
            clock.clone(),
        );
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            secret,
            api_version: api_version.to_string(),
            budget,
            breakers,
            retry_budget: RetryBudget::new(config.retry_budget_ratio),
            paused_until_ms: Mutex::new(HashMap::new()),
            concurrency: Semaphore::new(config.max_concurrency.max(1)),
            config,
            clock,
            counters: Counters::default(),
        })
    }

    /// How long a caller may queue for the budget before it is refused (`Busy`); the
    /// user batcher holds ids no longer than this either.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.config.queue_timeout_ms)
    }

    /// The `Clerk-API-Version` sent when a request names none.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// Sends one request, honouring pauses, the governor and the concurrency bound;
    /// GETs are retried on 5xx and transport failures. Any HTTP answer (including
    /// 4xx, 429 and a final 5xx) comes back as `Ok` so a proxy can relay it; only
    /// "not sent" (paused) and "no answer" are errors.
    pub async fn send(&self, req: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        let endpoint = Endpoint::classify(&req.method, path_of(&req.path_and_query));
        let retryable = req.method == Method::GET || req.method == Method::HEAD;
        let max_attempts = if retryable {
            self.config.max_retries + 1
        } else {
            1
        };
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.queue_timeout_ms);
        self.retry_budget.on_call();
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.check_pause(endpoint)?;
            if let Err(retry_after_ms) = self.breakers.check(endpoint) {
                self.counters
                    .short_circuited
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!("frontdesk_upstream_short_circuited_total", "endpoint" => endpoint.as_str()).increment(1);
                return Err(UpstreamError::CircuitOpen {
                    endpoint: endpoint.as_str(),
                    retry_after_ms,
                });
            }
            let outcome = self.send_once(endpoint, &req, deadline).await;
            let failed = match &outcome {
                Ok(resp) => Some(resp.status.is_server_error()),
                Err(UpstreamError::Unavailable(_)) => Some(true),
                // Not sent (paused, budget spent): says nothing about Clerk's health.
                Err(_) => None,
            };
            if let Some(failed) = failed {
                self.breakers.record(endpoint, !failed);
            }
            let retry = failed == Some(true);
            if !retry || attempt >= max_attempts || self.breakers.is_open(endpoint) {
                return outcome;
            }
            if !self.retry_budget.try_retry() {
                self.counters
                    .retries_refused
                    .fetch_add(1, Ordering::Relaxed);
                return outcome;
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            let backoff = self.backoff(attempt);
            tracing::debug!(
                endpoint = endpoint.as_str(),
                attempt,
                backoff_ms = backoff.as_millis() as u64,
                "retrying Clerk call"
            );
            tokio::time::sleep(backoff).await;
        }
    }

    fn check_pause(&self, endpoint: Endpoint) -> Result<(), UpstreamError> {
        let now = self.clock.now_ms();
        let paused = self.paused_until_ms.lock().get(&endpoint).copied();
        match paused {
            Some(until) if until > now => {
                self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("frontdesk_upstream_paused_total", "endpoint" => endpoint.as_str()).increment(1);
                Err(UpstreamError::RateLimited {
                    endpoint: endpoint.as_str(),
                    retry_after_ms: until - now,
                })
            }
            _ => Ok(()),
        }
    }

    /// Remembers a pause here (the fleet-wide key is Redis's).
    fn note_pause(&self, endpoint: Endpoint, ms: u64) {
        let until = self.clock.now_ms().saturating_add(ms);
        let mut paused = self.paused_until_ms.lock();
        let slot = paused.entry(endpoint).or_insert(0);
        *slot = (*slot).max(until);
    }

    /// Whether a call to `endpoint` now would not be sent at once (circuit open,
    /// paused, or the budget spent as last seen): a caller holding a usable stale
    /// answer serves it instead of queueing.
    pub fn would_wait(&self, endpoint: Endpoint) -> bool {
        let paused = self
            .paused_until_ms
            .lock()
            .get(&endpoint)
            .is_some_and(|until| *until > self.clock.now_ms());
        paused || self.breakers.is_open(endpoint) || self.budget.is_spent()
    }

    /// The budget and the breakers, for `/v1/stats`.
    pub fn health(&self) -> serde_json::Value {
        let breakers: serde_json::Map<String, serde_json::Value> = Endpoint::ALL
            .iter()
            .map(|e| (e.as_str().to_string(), self.breakers.state(*e).into()))
            .filter(|(_, s)| s != "closed")
            .collect();
        serde_json::json!({
            "budget": {
                "mode": self.budget.mode().as_str(),
                "limit": self.budget.limit(),
                "window_ms": self.budget.window_ms(),
                "local_share": self.budget.local_limit(),
                "local_grants": self.budget.local_grants(),
                "timeouts": self.counters.budget_timeouts.load(Ordering::Relaxed),
            },
            "breakers_not_closed": breakers,
            "short_circuited": self.counters.short_circuited.load(Ordering::Relaxed),
            "retries": self.counters.retries.load(Ordering::Relaxed),
            "retries_refused": self.counters.retries_refused.load(Ordering::Relaxed),
        })
    }

    /// `closed`, `open` or `half_open`.
    pub fn breaker_state(&self, endpoint: Endpoint) -> &'static str {
        self.breakers.state(endpoint)
    }

    pub fn budget_mode(&self) -> BudgetMode {
        self.budget.mode()
    }

    /// Jittered exponential backoff: base × 2^(attempt-1), capped, then a random
    /// point in its upper half so retries from many callers spread out.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .config
            .backoff_base_ms
            .saturating_mul(1u64 << (attempt - 1).min(16))
            .min(self.config.backoff_max_ms);
        let jittered = exp / 2 + rand::random_range(0..=exp / 2);
        Duration::from_millis(jittered)
    }

    /// Waits for a share of the fleet's budget until `deadline`; the caller already
    /// holds a concurrency permit, so the call is sent right after admission.
    async fn acquire_budget(
        &self,
        endpoint: Endpoint,
        deadline: tokio::time::Instant,
    ) -> Result<Ticket, UpstreamError> {
        loop {
            match self.budget.try_acquire(endpoint).await {
                Admission::Granted(ticket) => return Ok(ticket),
                Admission::Paused(ms) => {
                    self.note_pause(endpoint, ms);
                    self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    return Err(UpstreamError::RateLimited {
                        endpoint: endpoint.as_str(),
                        retry_after_ms: ms,
                    });
                }
                Admission::Wait(ms) => {
                    let now = tokio::time::Instant::now();
                    let wake = now + Duration::from_millis(ms);
                    if wake > deadline {
                        self.counters
                            .budget_timeouts
                            .fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("frontdesk_upstream_budget_timeouts_total", "endpoint" => endpoint.as_str()).increment(1);
                        return Err(UpstreamError::Busy { retry_after_ms: ms });
                    }
                    // A little spread so the queue does not ask all at once.
                    let spread = rand::random_range(0..=(ms / 8).clamp(1, 50));
                    tokio::time::sleep_until(wake + Duration::from_millis(spread)).await;
                }
            }
        }
    }

    async fn send_once(
        &self,
        endpoint: Endpoint,
        req: &UpstreamRequest,
        deadline: tokio::time::Instant,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let waited = Instant::now();
        let _permit = match tokio::time::timeout_at(deadline, self.concurrency.acquire()).await {
            Ok(p) => p.map_err(|_| UpstreamError::Unavailable("client closed".into()))?,
            Err(_) => {
                self.counters
                    .budget_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                return Err(UpstreamError::Busy {
                    retry_after_ms: 1000,
                });
            }
        };
        let ticket = self.acquire_budget(endpoint, deadline).await?;
        metrics::histogram!("frontdesk_upstream_governor_wait_seconds", "endpoint" => endpoint.as_str())
            .record(waited.elapsed().as_secs_f64());
        // Waiting may have outlasted a pause set meanwhile by another caller's 429.
        if let Err(e) = self.check_pause(endpoint) {
            self.budget.complete(ticket).await;
            return Err(e);
        }

        let url = upstream_url(&self.base, &req.path_and_query)?;
        let mut builder = self
            .http
            .request(req.method.clone(), url)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.secret.expose()),
            )
            .header(
                "clerk-api-version",
                req.api_version.as_deref().unwrap_or(&self.api_version),
            );
        if let Some(ct) = &req.content_type {
            builder = builder.header(header::CONTENT_TYPE, ct.clone());
        }
        if !req.body.is_empty() || req.method == Method::POST || req.method == Method::PATCH {
            builder = builder.body(req.body.clone());
        }
        let idx = endpoint.index();
        self.counters.calls[idx].fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = builder.send().await;
        // Clerk has the request by now (or never will): its place in the budget
        // starts here.
        self.budget.complete(ticket).await;
        let elapsed = started.elapsed().as_secs_f64();
        metrics::histogram!("frontdesk_upstream_request_duration_seconds", "endpoint" => endpoint.as_str())
            .record(elapsed);
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                self.counters.errors[idx].fetch_add(1, Ordering::Relaxed);
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                metrics::counter!("frontdesk_upstream_requests_total", "endpoint" => endpoint.as_str(), "status" => kind)
                    .increment(1);
                // reqwest's error text holds the URL only, never headers.
                return Err(UpstreamError::Unavailable(format!(
                    "{kind}: {}",
                    e.without_url()
                )));
            }
        };
        let status = response.status();
        metrics::counter!("frontdesk_upstream_requests_total", "endpoint" => endpoint.as_str(), "status" => status.as_u16().to_string())
            .increment(1);
        let mut headers = HeaderMap::new();
        for name in KEPT_RESPONSE_HEADERS {
            if let Some(v) = response.headers().get(*name) {
                headers.insert(*name, v.clone());
            }
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| UpstreamError::Unavailable(format!("body: {}", e.without_url())))?;
        if !status.is_success() {
            self.counters.errors[idx].fetch_add(1, Ordering::Relaxed);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let secs = retry_after_s(&headers);
            let ms = secs.saturating_mul(1000);
            self.note_pause(endpoint, ms);
            self.budget.pause_fleet(endpoint, ms).await;
            tracing::warn!(
                endpoint = endpoint.as_str(),
                retry_after_s = secs,
                "Clerk answered 429; pausing this endpoint"
            );
        }
        Ok(UpstreamResponse {
            status,
            headers,
            body,
        })
    }

    /// `GET /v1/users?user_id=…` for at most 100 ids: each user Clerk returned, as its
    /// own byte-faithful JSON object, by id. Ids Clerk does not know are absent.
    pub async fn list_users_by_ids(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, Bytes)>, UpstreamError> {
        self.list_users_by("user_id", ids).await
    }

    /// `GET /v1/users?{param}=…` for at most 100 values of one filter (`user_id`,
    /// `email_address`, `username`): each user Clerk returned, by id. Identifiers are
    /// unique in Clerk, so the values match at most as many users as there are values.
    pub async fn list_users_by(
        &self,
        param: &str,
        values: &[String],
    ) -> Result<Vec<(String, Bytes)>, UpstreamError> {
        let endpoint = Endpoint::ListUsers.as_str();
        let path = {
            let mut query = form_urlencoded::Serializer::new(String::from("/v1/users?"));
            for v in values {
                query.append_pair(param, v);
            }
            query.append_pair("limit", &values.len().clamp(1, 500).to_string());
            query.finish()
        };
        let resp = self.send(UpstreamRequest::get(path)).await?;
        if resp.status.is_server_error() {
            return Err(UpstreamError::Unavailable(format!(
                "status {}",
                resp.status
            )));
        }
        if resp.status == StatusCode::TOO_MANY_REQUESTS {
            return Err(UpstreamError::RateLimited {
                endpoint,
                retry_after_ms: retry_after_ms(&resp.headers),
            });
        }
        if !resp.status.is_success() {
            return Err(UpstreamError::Status {
                endpoint,
                status: resp.status.as_u16(),
                body: resp.body,
            });
        }
        split_user_array(&resp.body).map_err(|detail| UpstreamError::Malformed { endpoint, detail })
    }

    /// `GET /v1/jwks`.
    pub async fn jwks(&self) -> Result<serde_json::Value, UpstreamError> {
        let endpoint = Endpoint::Jwks.as_str();
        let resp = self.send(UpstreamRequest::get("/v1/jwks")).await?;
        if resp.status == StatusCode::TOO_MANY_REQUESTS {
            return Err(UpstreamError::RateLimited {
                endpoint,
                retry_after_ms: retry_after_ms(&resp.headers),
            });
        }
        if resp.status.is_server_error() {
            return Err(UpstreamError::Unavailable(format!(
                "status {}",
                resp.status
            )));
        }
        if !resp.status.is_success() {
            return Err(UpstreamError::Status {
                endpoint,
                status: resp.status.as_u16(),
                body: resp.body,
            });
        }
        serde_json::from_slice(&resp.body).map_err(|e| UpstreamError::Malformed {
            endpoint,
            detail: e.to_string(),
        })
    }

    /// Calls sent so far, by endpoint label, for `/v1/stats`.
    pub fn calls_by_endpoint(&self) -> Vec<(&'static str, u64, u64)> {
        Endpoint::ALL
            .iter()
            .map(|e| {
                let i = e.index();
                (
                    e.as_str(),
                    self.counters.calls[i].load(Ordering::Relaxed),
                    self.counters.errors[i].load(Ordering::Relaxed),
                )
            })
            .filter(|(_, calls, _)| *calls > 0)
            .collect()
    }

    pub fn total_calls(&self) -> u64 {
        self.counters
            .calls
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Requests refused locally because their endpoint was paused after a 429.
    pub fn refused_while_paused(&self) -> u64 {
        self.counters.rate_limited.load(Ordering::Relaxed)
    }
}

/// The longest pause a `Retry-After` from Clerk can impose. Clerk's windows are 10 s;
/// a larger value is a fault (or a hostile upstream), and an unbounded one would
/// overflow the arithmetic on it.
pub const MAX_RETRY_AFTER_S: u64 = 300;

/// Clerk's `Retry-After` in seconds (1 when absent or not a number, an HTTP date
/// included), at most [`MAX_RETRY_AFTER_S`].
fn retry_after_s(headers: &HeaderMap) -> u64 {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1)
        .min(MAX_RETRY_AFTER_S)
}

fn retry_after_ms(headers: &HeaderMap) -> u64 {
    retry_after_s(headers) * 1000
}

/// The absolute URL of a request, refused when parsing would change its path: the URL
/// parser resolves `..` and `%2e%2e` segments, which could reach outside `/v1/`. The
/// proxy refuses such paths before this; this is the last line.
fn upstream_url(base: &str, path_and_query: &str) -> Result<reqwest::Url, UpstreamError> {
    let url = reqwest::Url::parse(&format!("{base}{path_and_query}"))
        .map_err(|_| UpstreamError::PathRewritten)?;
    let base_path = reqwest::Url::parse(base)
        .map(|b| b.path().trim_end_matches('/').to_string())
        .map_err(|_| UpstreamError::PathRewritten)?;
    if url.path().strip_prefix(base_path.as_str()) != Some(path_of(path_and_query)) {
        return Err(UpstreamError::PathRewritten);
    }
    Ok(url)
}

fn path_of(path_and_query: &str) -> &str {
    path_and_query.split('?').next().unwrap_or(path_and_query)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod url_tests {
    use super::*;

    #[test]
    fn a_huge_retry_after_is_capped_without_overflow() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::RETRY_AFTER, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(
            retry_after_s(&with("18446744073709551615")),
            MAX_RETRY_AFTER_S
        );
        assert_eq!(
            retry_after_ms(&with("18446744073709551615")),
            MAX_RETRY_AFTER_S * 1000
        );
        assert_eq!(retry_after_s(&with("99999999999999999999999")), 1);
        assert_eq!(retry_after_s(&with("-5")), 1);
        assert_eq!(retry_after_s(&with("Wed, 21 Oct 2015 07:28:00 GMT")), 1);
        assert_eq!(retry_after_s(&with(" 7 ")), 7);
        assert_eq!(retry_after_s(&HeaderMap::new()), 1);
    }

    #[test]
    fn upstream_urls_keep_their_path_or_are_refused() {
        let ok = upstream_url("http://h:1/base", "/v1/users/x%2F..%2Fjwks?a=%2F..").unwrap();
        assert_eq!(ok.path(), "/base/v1/users/x%2F..%2Fjwks");
        assert_eq!(ok.query(), Some("a=%2F.."));
        for bad in [
            "/v1/users/../jwks",
            "/v1/users/%2e%2e/jwks",
            "/v1/./users",
            "/v1/a b",
        ] {
            assert!(upstream_url("http://h:1", bad).is_err(), "{bad}");
        }
    }
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
}

/// Splits Clerk's bare JSON array of users into each user's own bytes, unchanged, so
/// a cached user is byte-for-byte what Clerk sent.
pub fn split_user_array(body: &[u8]) -> Result<Vec<(String, Bytes)>, String> {
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(body).map_err(|e| e.to_string())?;
    items
        .into_iter()
        .map(|raw| {
            let id: IdOnly<'_> = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
            Ok((
                id.id.into_owned(),
                Bytes::copy_from_slice(raw.get().as_bytes()),
            ))
        })
        .collect()
}

/// Convenience for building the client from the app's configuration.
pub fn from_config(
    config: &crate::Config,
    clock: SharedClock,
    redis: Option<Arc<RedisLink>>,
) -> crate::Result<Option<Arc<ClerkClient>>> {
    let Some(secret) = config.clerk.secret_key.clone() else {
        return Ok(None);
    };
    Ok(Some(Arc::new(ClerkClient::new(
        config.clerk_api_base(),
        secret,
        &config.clerk.api_version,
        config.upstream.clone(),
        clock,
        redis,
    )?)))
}
