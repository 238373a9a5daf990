//! Run-time knobs that make the emulator misbehave like a real, remote Clerk: latency
//! (fixed + uniform jitter), an error rate (500s), a sliding-window rate limit (429 +
//! `Retry-After`, as Clerk enforces it) and the webhook target. Set from flags at start-up, changed with
//! `POST /__emulator/config` or [`crate::Emulator::set_knobs`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::Emulator;
use crate::errors::{ApiError, Error};

/// Delay added to every `/v1` call: `fixed_ms` + uniform `0..=jitter_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    pub fixed_ms: u64,
    pub jitter_ms: u64,
}

/// At most `requests` `/v1` calls in any window of `window_ms` (a sliding window: the
/// limit holds for every interval of that length, not only for aligned ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub requests: u32,
    pub window_ms: u64,
}

/// Where webhooks go and the `whsec_…` secret they are signed with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A partial update of the knobs: `None` leaves a knob alone. For `rate_limit` and the
/// webhook fields, `Some(None)` (JSON `null`) clears it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub jitter_ms: Option<u64>,
    #[serde(default)]
    pub error_rate: Option<f64>,
    #[serde(default, deserialize_with = "nullable")]
    pub rate_limit: Option<Option<RateLimit>>,
    /// Clerk's per-user limit on user updates (`PATCH /v1/users/{id}` and its
    /// `/metadata`): at most `requests` per user in any window of `window_ms`
    /// (Clerk: 10 per 10 s).
    #[serde(default, deserialize_with = "nullable")]
    pub user_update_limit: Option<Option<RateLimit>>,
    #[serde(default, deserialize_with = "nullable")]
    pub webhook_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub webhook_secret: Option<Option<String>>,
}

/// Distinguishes an explicit `null` (`Some(None)`) from an absent field (`None`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The knobs in force, plus the rate-limit window.
#[derive(Debug)]
pub struct KnobState {
    pub latency: Latency,
    pub error_rate: f64,
    pub rate_limit: Option<RateLimit>,
    pub webhook: Option<WebhookTarget>,
    pub user_update_limit: Option<RateLimit>,
    /// Admitted updates per user within the last per-user window, oldest first.
    user_updates: HashMap<String, VecDeque<Instant>>,
    /// Updates answered 429 by the per-user limit.
    user_rejected: u64,
    /// Admitted calls within the last window, oldest first.
    admitted: VecDeque<Instant>,
    /// Every call that reached the limiter within the last window (admitted or not).
    arrivals: VecDeque<Instant>,
    /// The most calls that reached the limiter within any one window.
    max_in_window: u64,
    /// Calls answered 429.
    rejected: u64,
}

/// What the limiter saw, for `GET /__emulator/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowStats {
    /// The most `/v1` calls that arrived within any one rate-limit window (0 when no
    /// limit is set), whether or not they were admitted.
    pub max_in_window: u64,
    /// Calls answered 429 by the rate limit.
    pub rate_limited: u64,
    /// User updates answered 429 by the per-user limit.
    pub user_rate_limited: u64,
}

impl KnobState {
    pub fn new(
        latency: Latency,
        error_rate: f64,
        rate_limit: Option<RateLimit>,
        webhook: Option<WebhookTarget>,
    ) -> Self {
        Self {
            latency,
            error_rate,
            rate_limit,
            webhook,
            user_update_limit: None,
            user_updates: HashMap::new(),
            user_rejected: 0,
            admitted: VecDeque::new(),
            arrivals: VecDeque::new(),
            max_in_window: 0,
            rejected: 0,
        }
    }

    pub fn reset_window(&mut self) {
        self.admitted.clear();
        self.arrivals.clear();
        self.max_in_window = 0;
        self.rejected = 0;
        self.user_updates.clear();
        self.user_rejected = 0;
    }

    /// Counts one update of `user` against the per-user window; `Err(retry_after_s)`
    /// when the window ending now already holds `requests` updates of that user.
    pub fn admit_user_update(&mut self, user: &str, now: Instant) -> Result<(), u64> {
        let Some(limit) = self.user_update_limit else {
            return Ok(());
        };
        let window = Duration::from_millis(limit.window_ms.max(1));
        let q = self.user_updates.entry(user.to_owned()).or_default();
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            q.pop_front();
        }
        if q.len() < limit.requests as usize {
            q.push_back(now);
            return Ok(());
        }
        self.user_rejected += 1;
        let oldest = q.front().copied().unwrap_or(now);
        let left = window.saturating_sub(now.saturating_duration_since(oldest));
        Err(left.as_millis().div_ceil(1000).max(1) as u64)
    }

    pub fn window_stats(&self) -> WindowStats {
        WindowStats {
            max_in_window: self.max_in_window,
            rate_limited: self.rejected,
            user_rate_limited: self.user_rejected,
        }
    }

    /// Counts one call against the sliding window; `Err(retry_after_s)` when the
    /// window ending now already holds `requests` admitted calls. `Retry-After` is
    /// when the oldest of them leaves the window.
    pub fn admit(&mut self, now: Instant) -> Result<(), u64> {
        let Some(limit) = self.rate_limit else {
            return Ok(());
        };
        let window = Duration::from_millis(limit.window_ms.max(1));
        let expired = |t: &Instant| now.saturating_duration_since(*t) >= window;
        while self.admitted.front().is_some_and(expired) {
            self.admitted.pop_front();
        }
        while self.arrivals.front().is_some_and(expired) {
            self.arrivals.pop_front();
        }
        self.arrivals.push_back(now);
        self.max_in_window = self.max_in_window.max(self.arrivals.len() as u64);
        if self.admitted.len() < limit.requests as usize {
            self.admitted.push_back(now);
            return Ok(());
        }
        self.rejected += 1;
        let oldest = self.admitted.front().copied().unwrap_or(now);
        let left = window.saturating_sub(now.saturating_duration_since(oldest));
        Err(left.as_millis().div_ceil(1000).max(1) as u64)
    }

    /// Applies a partial update after validating it (nothing changes on error).
    pub fn apply(&mut self, k: Knobs) -> Result<(), Error> {
        if let Some(r) = k.error_rate
            && !(0.0..=1.0).contains(&r)
        {
            return Err(Error::Config("error_rate must be between 0 and 1".into()));
        }
        if [k.rate_limit, k.user_update_limit]
            .iter()
            .any(|l| matches!(l, Some(Some(rl)) if rl.requests == 0 || rl.window_ms == 0))
        {
            return Err(Error::Config(
                "rate_limit needs requests >= 1 and window_ms >= 1".into(),
            ));
        }
        let webhook = match (k.webhook_url, k.webhook_secret) {
            (None, None) => self.webhook.clone(),
            (Some(None), _) => None,
            (Some(Some(url)), secret) => {
                let secret = match secret {
                    Some(Some(s)) => s,
                    Some(None) => {
                        return Err(Error::Config("a webhook needs a secret".into()));
                    }
                    None => self
                        .webhook
                        .as_ref()
                        .map(|w| w.secret.clone())
                        .ok_or_else(|| Error::Config("a webhook needs a secret".into()))?,
                };
                Some(WebhookTarget { url, secret })
            }
            (None, Some(secret)) => match (self.webhook.clone(), secret) {
                (Some(w), Some(s)) => Some(WebhookTarget {
                    url: w.url,
                    secret: s,
                }),
                (_, None) => None,
                (None, Some(_)) => {
                    return Err(Error::Config("set webhook_url with webhook_secret".into()));
                }
            },
        };
        if let Some(w) = &webhook {
            crate::svix::secret_key(&w.secret)?;
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(Error::Config("webhook_url must be an http(s) URL".into()));
            }
        }
        if let Some(ms) = k.latency_ms {
            self.latency.fixed_ms = ms;
        }
        if let Some(ms) = k.jitter_ms {
            self.latency.jitter_ms = ms;
        }
        if let Some(r) = k.error_rate {
            self.error_rate = r;
        }
        if let Some(rl) = k.rate_limit {
            self.rate_limit = rl;
            self.reset_window();
        }
        if let Some(rl) = k.user_update_limit {
            self.user_update_limit = rl;
            self.user_updates.clear();
        }
        self.webhook = webhook;
        Ok(())
    }

    /// What `GET /__emulator/config` shows (never the webhook secret).
    pub fn to_json(&self) -> Value {
        json!({
            "latency_ms": self.latency.fixed_ms,
            "jitter_ms": self.latency.jitter_ms,
            "error_rate": self.error_rate,
            "rate_limit": self.rate_limit,
            "user_update_limit": self.user_update_limit,
            "webhook_url": self.webhook.as_ref().map(|w| w.url.clone()),
            "webhook_secret_set": self.webhook.is_some(),
        })
    }
}

pub fn control_router() -> Router<Emulator> {
    Router::new().route("/__emulator/config", get(get_config).post(post_config))
}

async fn get_config(State(emu): State<Emulator>) -> Json<Value> {
    Json(emu.inner.knobs.lock().to_json())
}

async fn post_config(State(emu): State<Emulator>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let k: Knobs = serde_json::from_slice(&body).map_err(|e| {
        ApiError::malformed_body(format!(
            "expected a JSON object with latency_ms, jitter_ms, error_rate, rate_limit, user_update_limit, webhook_url, webhook_secret: {e}"
        ))
    })?;
    emu.try_set_knobs(k).map_err(|e| match e {
        Error::Config(msg) => ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "form_param_value_invalid",
            "is invalid",
            msg,
        ),
        _ => ApiError::internal(),
    })?;
    Ok(Json(emu.inner.knobs.lock().to_json()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_admits_then_rejects_with_ceil_seconds() {
        let mut k = KnobState::new(
            Latency::default(),
            0.0,
            Some(RateLimit {
                requests: 2,
                window_ms: 2500,
            }),
            None,
        );
        let t0 = Instant::now();
        assert!(k.admit(t0).is_ok());
        assert!(k.admit(t0).is_ok());
        assert_eq!(k.admit(t0 + Duration::from_millis(100)), Err(3));
        assert_eq!(k.admit(t0 + Duration::from_millis(2400)), Err(1));
        assert!(k.admit(t0 + Duration::from_millis(2500)).is_ok());
        assert_eq!(k.window_stats().rate_limited, 2);
    }

    #[test]
    fn updates_of_one_user_are_limited_per_user() {
        let mut k = KnobState::new(Latency::default(), 0.0, None, None);
        let t0 = Instant::now();
        assert!(k.admit_user_update("user_a", t0).is_ok(), "no limit set");
        k.user_update_limit = Some(RateLimit {
            requests: 10,
            window_ms: 10_000,
        });
        k.user_updates.clear();
        for _ in 0..10 {
            assert!(k.admit_user_update("user_a", t0).is_ok());
        }
        assert_eq!(
            k.admit_user_update("user_a", t0 + Duration::from_millis(500)),
            Err(10)
        );
        assert!(k.admit_user_update("user_b", t0).is_ok());
        assert!(
            k.admit_user_update("user_a", t0 + Duration::from_millis(10_000))
                .is_ok()
        );
        assert_eq!(k.window_stats().user_rate_limited, 1);
    }

    #[test]
    fn the_window_slides_so_a_burst_across_a_boundary_is_refused() {
        // A fixed window would admit 2 at 900 ms and 2 more at 1,000 ms: 4 within
        // 100 ms against a limit of 2 per second.
        let mut k = KnobState::new(
            Latency::default(),
            0.0,
            Some(RateLimit {
                requests: 2,
                window_ms: 1000,
            }),
            None,
        );
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(k.admit(at(900)).is_ok());
        assert!(k.admit(at(900)).is_ok());
        assert!(k.admit(at(1000)).is_err());
        assert!(k.admit(at(1899)).is_err());
        assert!(k.admit(at(1900)).is_ok());
        // Arrivals, admitted or not, within one window: 900, 900, 1000, 1899 (and 1900).
        assert_eq!(k.window_stats().max_in_window, 4);
    }

    #[test]
    fn null_clears_and_absent_keeps() {
        let k: Knobs = serde_json::from_str(r#"{"rate_limit": null}"#).unwrap_or_default();
        assert_eq!(k.rate_limit, Some(None));
        let k: Knobs = serde_json::from_str(r#"{"latency_ms": 5}"#).unwrap_or_default();
        assert_eq!(k.rate_limit, None);
        assert_eq!(k.latency_ms, Some(5));
    }
}
