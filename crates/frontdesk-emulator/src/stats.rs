//! Per-endpoint call counters: every `/v1` request that reaches the emulator (including
//! those answered 401, 429 or 500) counts under "METHOD /route/{template}", so tests and
//! benchmarks can assert exactly how many upstream calls a client made. The call log
//! adds when each call reached the rate limiter, so a client of the emulator can count
//! the calls in any window it likes (around a fault, say) and see when 429s happened.

use std::collections::{BTreeMap, VecDeque};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Emulator;

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Calls per `"METHOD /v1/route/{template}"`.
    pub calls: BTreeMap<String, u64>,
    /// Sum of `calls`.
    pub total: u64,
    /// The most `/v1` calls that reached the rate limiter within any one window of
    /// the `rate_limit` knob (sliding), admitted or not; 0 without a limit. Lets a
    /// test assert "never more than the limit in any window".
    #[serde(default)]
    pub max_in_window: u64,
    /// Calls the rate limit answered 429.
    #[serde(default)]
    pub rate_limited: u64,
    /// User updates the per-user limit (`user_update_limit`) answered 429.
    #[serde(default)]
    pub user_rate_limited: u64,
}

impl Stats {
    /// Calls for one key, 0 when never called.
    pub fn get(&self, key: &str) -> u64 {
        self.calls.get(key).copied().unwrap_or(0)
    }
}

/// One `/v1` call that reached the rate limiter (authenticated), in arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Wall-clock Unix time in milliseconds when the limiter saw it.
    pub at_ms: i64,
    /// `"METHOD /v1/route/{template}"`, as in [`Stats::calls`].
    pub route: String,
    /// Answered 429 by the rate-limit knob.
    pub rate_limited: bool,
}

/// The most recent calls kept by the log; older ones are dropped first.
pub const CALL_LOG_CAP: usize = 100_000;

#[derive(Default)]
pub struct CallLog(Mutex<VecDeque<CallRecord>>);

impl CallLog {
    pub fn record(&self, rec: CallRecord) {
        let mut log = self.0.lock();
        if log.len() >= CALL_LOG_CAP {
            log.pop_front();
        }
        log.push_back(rec);
    }

    pub fn snapshot(&self) -> Vec<CallRecord> {
        self.0.lock().iter().cloned().collect()
    }

    pub fn clear(&self) {
        self.0.lock().clear();
    }
}

/// The most calls within any `window_ms` (both ends inclusive of a call at the same
/// millisecond as the window's start, as the emulator's limiter counts: a call leaves
/// the window exactly `window_ms` later). `calls` must be in arrival order.
pub fn max_in_any_window(calls: &[CallRecord], window_ms: i64) -> usize {
    let mut start = 0;
    let mut best = 0;
    for (end, c) in calls.iter().enumerate() {
        while c.at_ms - calls[start].at_ms >= window_ms {
            start += 1;
        }
        best = best.max(end + 1 - start);
    }
    best
}

#[derive(Default)]
pub struct Recorder(Mutex<Stats>);

impl Recorder {
    pub fn record(&self, key: String) {
        let mut s = self.0.lock();
        *s.calls.entry(key).or_insert(0) += 1;
        s.total += 1;
    }

    pub fn snapshot(&self) -> Stats {
        self.0.lock().clone()
    }

    pub fn clear(&self) {
        *self.0.lock() = Stats::default();
    }
}

pub fn control_router() -> Router<Emulator> {
    Router::new()
        .route("/__emulator/stats", get(stats))
        .route("/__emulator/calls", get(calls))
        .route("/__emulator/reset", post(reset))
}

async fn stats(State(emu): State<Emulator>) -> Json<Stats> {
    Json(emu.stats())
}

async fn calls(State(emu): State<Emulator>) -> Json<Value> {
    Json(json!({ "calls": emu.calls() }))
}

async fn reset(State(emu): State<Emulator>) -> Json<Value> {
    emu.reset();
    Json(json!({"reset": true}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> CallRecord {
        CallRecord {
            at_ms: ms,
            route: "GET /v1/users".into(),
            rate_limited: false,
        }
    }

    #[test]
    fn max_in_any_window_slides_over_the_log() {
        let calls: Vec<_> = [0, 100, 900, 1000, 1050, 1999, 2999].map(at).into();
        // [100, 1050] and [1000, 1999] hold 4 within 1,000 ms; a call leaves the window
        // exactly 1,000 ms after it arrived.
        assert_eq!(max_in_any_window(&calls, 1000), 4);
        assert_eq!(max_in_any_window(&calls, 1), 1);
        assert_eq!(max_in_any_window(&calls, 10_000), 7);
        assert_eq!(max_in_any_window(&[], 1000), 0);
    }

    #[test]
    fn the_log_keeps_the_most_recent_calls() {
        let log = CallLog::default();
        for ms in 0..(CALL_LOG_CAP as i64 + 5) {
            log.record(at(ms));
        }
        let kept = log.snapshot();
        assert_eq!(kept.len(), CALL_LOG_CAP);
        assert_eq!(kept[0].at_ms, 5);
        log.clear();
        assert!(log.snapshot().is_empty());
    }
}
