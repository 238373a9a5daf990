//! Per-endpoint call counters: every `/v1` request that reaches the emulator (including
//! those answered 401, 429 or 500) counts under "METHOD /route/{template}", so tests and
//! benchmarks can assert exactly how many upstream calls a client made.

use std::collections::BTreeMap;

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
        .route("/__emulator/reset", post(reset))
}

async fn stats(State(emu): State<Emulator>) -> Json<Stats> {
    Json(emu.stats())
}

async fn reset(State(emu): State<Emulator>) -> Json<Value> {
    emu.reset();
    Json(json!({"reset": true}))
}
