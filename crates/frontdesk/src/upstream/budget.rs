//! One Clerk budget for the fleet: at most `limit` calls in *any* window of `window`
//! length, counted across every instance that shares the Redis prefix.
//!
//! The budget is a sliding-window log kept in Redis (a sorted set of admitted calls
//! scored by their admission time) and checked by one Lua script: drop the entries
//! older than the window, admit if fewer than `limit` remain, otherwise answer how long
//! until the oldest leaves. The same script first checks the endpoint's pause key, set
//! fleet-wide when Clerk answers 429, so a pause and the budget cost one round trip.
//! Time is Redis's `TIME`: one clock for the whole fleet, so instances whose clocks
//! disagree still agree on the window.
//!
//! When Redis cannot answer, each instance falls back to a local sliding-window log
//! of its share (`limit ÷ expected_instances`) on the monotonic clock, and says so in
//! `/v1/stats` and `/metrics` (`frontdesk_upstream_budget_mode`).
//!
//! Both logs count a call when it is admitted, just before it is sent; Clerk counts it
//! when it arrives, a little later (more under load). So when the call has reached
//! Clerk (its answer came back, or it failed), its entry is moved to that moment
//! ([`Budget::complete`]): a call then holds its place in the log from no earlier than
//! its arrival at Clerk, and the next call that may take that place is admitted (and
//! so arrives) at least one window after it. A call still in flight after a whole
//! window (longer than `timeout_ms`) is the one case this does not cover.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::time::Instant;

use super::Endpoint;
use crate::redis_link::RedisLink;

/// The budget check and the pause check in one round trip.
/// KEYS[1]: the log; KEYS[2]: the endpoint's pause key.
/// ARGV[1]: window (ms); ARGV[2]: limit; ARGV[3]: a unique id for this call.
/// Returns {0, 0} admitted; {1, ms} budget spent, retry in ms; {2, ms} paused for ms.
const ACQUIRE_LUA: &str = r"
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return {2, paused} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {0, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait < 1 then wait = 1 end
return {1, wait}
";

/// Moves a call's entry to now (rounded up to the next ms), adding it back if it had
/// left the window. KEYS[1]: the log. ARGV[1]: the call's id; ARGV[2]: window (ms).
const COMPLETE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + 1
redis.call('ZADD', KEYS[1], 'GT', now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Sets a pause unless a longer one is already running. KEYS[1]: pause key; ARGV[1]: ms.
const PAUSE_LUA: &str = r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
";

/// The answer to "may I call Clerk now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Send now, then hand the ticket back to [`Budget::complete`].
    Granted(Ticket),
    /// The budget is spent; the earliest a call may be admitted, in ms.
    Wait(u64),
    /// Clerk asked the fleet to back off this endpoint for this many ms.
    Paused(u64),
}

/// A call's entry in the log it was admitted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ticket {
    Fleet(String),
    Local(u64),
}

/// Where the budget is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In Redis, shared by the fleet.
    Fleet = 0,
    /// Redis is configured but unreachable: this instance's share, locally.
    LocalShare = 1,
    /// No Redis configured: the whole limit, locally (a single instance).
    Local = 2,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fleet => "fleet",
            Mode::LocalShare => "local_share",
            Mode::Local => "local",
        }
    }
    fn from_u8(v: u8) -> Mode {
        match v {
            0 => Mode::Fleet,
            1 => Mode::LocalShare,
            _ => Mode::Local,
        }
    }
}

/// A sliding-window log in process: for each call of the last window, when it was
/// admitted or (once it reached Clerk) completed.
#[derive(Debug)]
pub struct LocalWindow {
    limit: usize,
    window_ms: u64,
    log: Mutex<VecDeque<(u64, Instant)>>,
    next_id: AtomicU64,
}

impl LocalWindow {
    pub fn new(limit: u32, window_ms: u64) -> Self {
        Self {
            limit: limit.max(1) as usize,
            window_ms: window_ms.max(1),
            log: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Admits a call now, or says how long until one may be.
    pub fn try_acquire(&self, now: Instant) -> Admission {
        let window = std::time::Duration::from_millis(self.window_ms);
        let mut log = self.log.lock();
        log.retain(|(_, t)| now.saturating_duration_since(*t) < window);
        if log.len() < self.limit {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            log.push_back((id, now));
            return Admission::Granted(Ticket::Local(id));
        }
        let oldest = log.iter().map(|(_, t)| *t).min().unwrap_or(now);
        let left = window.saturating_sub(now.saturating_duration_since(oldest));
        Admission::Wait((left.as_millis() as u64).max(1))
    }

    /// The call reached Clerk at `now`: it holds its place from then.
    pub fn complete(&self, id: u64, now: Instant) {
        let mut log = self.log.lock();
        match log.iter_mut().find(|(i, _)| *i == id) {
            Some(entry) => entry.1 = entry.1.max(now),
            None => log.push_back((id, now)),
        }
    }
}

pub struct Budget {
    limit: u32,
    window_ms: u64,
    redis: Option<Arc<RedisLink>>,
    acquire: redis::Script,
    complete: redis::Script,
    pause: redis::Script,
    local: LocalWindow,
    local_limit: u32,
    mode: AtomicU8,
    /// Ids of this instance's calls in the shared log.
    instance: String,
    seq: AtomicU64,
    /// Calls admitted by the local share although Redis is configured.
    local_grants: AtomicU64,
    /// Monotonic ms (since `started`) before which the budget is known spent: a hint
    /// for callers that can answer from cache instead of queueing.
    spent_until: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("limit", &self.limit)
            .field("window_ms", &self.window_ms)
            .field("mode", &self.mode().as_str())
            .finish_non_exhaustive()
    }
}

impl Budget {
    pub fn new(
        limit: u32,
        window_ms: u64,
        expected_instances: u32,
        redis: Option<Arc<RedisLink>>,
    ) -> Self {
        let limit = limit.max(1);
        let window_ms = window_ms.max(1);
        let local_limit = match redis {
            Some(_) => (limit / expected_instances.max(1)).max(1),
            None => limit,
        };
        let mode = if redis.is_some() {
            Mode::Fleet
        } else {
            Mode::Local
        };
        let budget = Self {
            limit,
            window_ms,
            redis,
            acquire: redis::Script::new(ACQUIRE_LUA),
            complete: redis::Script::new(COMPLETE_LUA),
            pause: redis::Script::new(PAUSE_LUA),
            local: LocalWindow::new(local_limit, window_ms),
            local_limit,
            mode: AtomicU8::new(mode as u8),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            seq: AtomicU64::new(0),
            local_grants: AtomicU64::new(0),
            spent_until: AtomicU64::new(0),
            started: Instant::now(),
        };
        budget.publish_mode(mode);
        budget
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }
    pub fn local_limit(&self) -> u32 {
        self.local_limit
    }
    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(Ordering::Relaxed))
    }
    /// Calls admitted by the local share although Redis is configured.
    pub fn local_grants(&self) -> u64 {
        self.local_grants.load(Ordering::Relaxed)
    }

    /// Whether a call now would have to wait for the budget (as last seen).
    pub fn is_spent(&self) -> bool {
        self.elapsed_ms() < self.spent_until.load(Ordering::Relaxed)
    }

    fn elapsed_ms(&self) -> u64 {
        Instant::now().duration_since(self.started).as_millis() as u64
    }

    fn log_key(&self, redis: &RedisLink) -> String {
        // One hash tag for the log and the pauses: one cluster slot, one script.
        redis.key("upstream:{budget}:log")
    }

    fn pause_key(&self, redis: &RedisLink, endpoint: Endpoint) -> String {
        redis.key(&format!("upstream:{{budget}}:pause:{}", endpoint.index()))
    }

    /// One attempt to take a call from the budget.
    pub async fn try_acquire(&self, endpoint: Endpoint) -> Admission {
        let admission = match self.fleet_acquire(endpoint).await {
            Some(a) => {
                self.set_mode(Mode::Fleet);
                a
            }
            None => {
                let a = self.local.try_acquire(Instant::now());
                if self.redis.is_some() {
                    self.set_mode(Mode::LocalShare);
                    if matches!(a, Admission::Granted(_)) {
                        self.local_grants.fetch_add(1, Ordering::Relaxed);
                    }
                }
                a
            }
        };
        if let Admission::Wait(ms) = admission {
            self.spent_until
                .fetch_max(self.elapsed_ms() + ms, Ordering::Relaxed);
        }
        admission
    }

    /// `None` when there is no Redis or it could not answer.
    async fn fleet_acquire(&self, endpoint: Endpoint) -> Option<Admission> {
        let redis = self.redis.as_ref()?;
        if !redis.is_up() && self.mode() != Mode::Fleet {
            // Known down: the health loop flips the flag back when Redis answers.
            return None;
        }
        let id = format!(
            "{}:{}",
            self.instance,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = redis.conn();
        let result: redis::RedisResult<(i64, i64)> = self
            .acquire
            .key(self.log_key(redis))
            .key(self.pause_key(redis, endpoint))
            .arg(self.window_ms)
            .arg(self.limit)
            .arg(&id)
            .invoke_async(&mut conn)
            .await;
        redis.record(&result);
        match result {
            Ok((0, _)) => Some(Admission::Granted(Ticket::Fleet(id))),
            Ok((2, ms)) => Some(Admission::Paused(ms.max(1) as u64)),
            Ok((_, ms)) => Some(Admission::Wait(ms.max(1) as u64)),
            Err(e) => {
                tracing::warn!(error_kind = ?e.kind(), "the shared Clerk budget is unreachable; using this instance's share");
                None
            }
        }
    }

    /// The call has reached Clerk (or failed): its entry moves to now.
    pub async fn complete(&self, ticket: Ticket) {
        match ticket {
            Ticket::Local(id) => self.local.complete(id, Instant::now()),
            Ticket::Fleet(id) => {
                let Some(redis) = self.redis.as_ref() else {
                    return;
                };
                let mut conn = redis.conn();
                let result: redis::RedisResult<i64> = self
                    .complete
                    .key(self.log_key(redis))
                    .arg(id)
                    .arg(self.window_ms)
                    .invoke_async(&mut conn)
                    .await;
                redis.record(&result);
            }
        }
    }

    /// Clerk answered 429: every instance leaves `endpoint` alone for `ms`.
    pub async fn pause_fleet(&self, endpoint: Endpoint, ms: u64) {
        let Some(redis) = self.redis.as_ref() else {
            return;
        };
        let mut conn = redis.conn();
        let result: redis::RedisResult<i64> = self
            .pause
            .key(self.pause_key(redis, endpoint))
            .arg(ms.max(1))
            .invoke_async(&mut conn)
            .await;
        redis.record(&result);
        if let Err(e) = result {
            tracing::warn!(error_kind = ?e.kind(), "could not announce Clerk's 429 to the fleet");
        }
    }

    fn set_mode(&self, mode: Mode) {
        let was = self.mode.swap(mode as u8, Ordering::Relaxed);
        if was != mode as u8 {
            tracing::info!(mode = mode.as_str(), "Clerk budget mode changed");
            self.publish_mode(mode);
        }
    }

    fn publish_mode(&self, mode: Mode) {
        for m in [Mode::Fleet, Mode::LocalShare, Mode::Local] {
            metrics::gauge!("frontdesk_upstream_budget_mode", "mode" => m.as_str())
                .set(if m == mode { 1.0 } else { 0.0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_local_window_never_admits_more_than_the_limit_in_any_window() {
        let w = LocalWindow::new(3, 1000);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // Idle, then a burst at the end of one "window" and the start of the next: a
        // token bucket with a burst of 3 would admit 6 here.
        let granted = |a: Admission| matches!(a, Admission::Granted(_));
        assert!(granted(w.try_acquire(at(900))));
        assert!(granted(w.try_acquire(at(950))));
        let Admission::Granted(Ticket::Local(third)) = w.try_acquire(at(999)) else {
            panic!("admitted")
        };
        assert_eq!(w.try_acquire(at(1000)), Admission::Wait(900));
        assert_eq!(w.try_acquire(at(1899)), Admission::Wait(1));
        assert!(granted(w.try_acquire(at(1900))));
        // The third call reached Clerk late (at 1,200): it holds its place from then.
        w.complete(third, at(1200));
        assert!(granted(w.try_acquire(at(1950))), "950 has left the window");
        assert_eq!(
            w.try_acquire(at(1960)),
            Admission::Wait(240),
            "1,200 has not"
        );
        assert!(granted(w.try_acquire(at(2200))));
    }

    #[test]
    fn without_redis_the_whole_limit_is_local() {
        let b = Budget::new(30, 2000, 3, None);
        assert_eq!(b.local_limit(), 30);
        assert_eq!(b.mode(), Mode::Local);
    }
}
