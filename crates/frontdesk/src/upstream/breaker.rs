//! Failing fast while Clerk is down: a circuit breaker per endpoint, and a retry
//! budget that keeps retries to a share of the calls.
//!
//! A breaker opens after `threshold` consecutive failures (a 5xx, a time-out, a
//! connection error; never a 4xx or a 429, which prove Clerk is up). While open, calls
//! fail at once. After the cool-down one call goes through as a probe (half-open);
//! its success closes the breaker, its failure opens it for another cool-down. Time is
//! the injected clock, so tests drive the cool-down by hand.

use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::Mutex;

use super::Endpoint;
use crate::clock::SharedClock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until_ms: u64,
    },
    /// A probe is in flight since this time.
    HalfOpen {
        probe_since_ms: u64,
    },
}

/// What the caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The breaker is closed.
    Call,
    /// The breaker was open and its cool-down passed: this call is the probe.
    Probe,
}

#[derive(Debug)]
pub struct Breakers {
    slots: [Mutex<State>; Endpoint::COUNT],
    threshold: u32,
    cooldown_ms: u64,
    /// A probe that has not reported after this long (its caller gave up) lets
    /// another one through.
    probe_timeout_ms: u64,
    clock: SharedClock,
}

impl Breakers {
    /// `threshold` 0 disables the breakers.
    pub fn new(
        threshold: u32,
        cooldown_ms: u64,
        probe_timeout_ms: u64,
        clock: SharedClock,
    ) -> Self {
        Self {
            slots: std::array::from_fn(|_| Mutex::new(State::Closed { failures: 0 })),
            threshold,
            cooldown_ms,
            probe_timeout_ms,
            clock,
        }
    }

    /// `Err(retry_after_ms)` while the endpoint's breaker refuses calls.
    pub fn check(&self, endpoint: Endpoint) -> Result<Pass, u64> {
        if self.threshold == 0 {
            return Ok(Pass::Call);
        }
        let now = self.clock.now_ms();
        let mut slot = self.slots[endpoint.index()].lock();
        match *slot {
            State::Closed { .. } => Ok(Pass::Call),
            State::Open { until_ms } if now < until_ms => Err(until_ms - now),
            State::Open { .. } => {
                *slot = State::HalfOpen {
                    probe_since_ms: now,
                };
                drop(slot);
                self.publish(endpoint, "half_open");
                Ok(Pass::Probe)
            }
            State::HalfOpen { probe_since_ms }
                if now.saturating_sub(probe_since_ms) >= self.probe_timeout_ms =>
            {
                *slot = State::HalfOpen {
                    probe_since_ms: now,
                };
                Ok(Pass::Probe)
            }
            State::HalfOpen { .. } => Err(self.cooldown_ms.clamp(1, 1000)),
        }
    }

    /// A call's outcome: `true` when Clerk answered (any status but 5xx).
    pub fn record(&self, endpoint: Endpoint, answered: bool) {
        if self.threshold == 0 {
            return;
        }
        let now = self.clock.now_ms();
        let mut slot = self.slots[endpoint.index()].lock();
        let next = match (*slot, answered) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 >= self.threshold => State::Open {
                until_ms: now + self.cooldown_ms,
            },
            (State::Closed { failures }, false) => State::Closed {
                failures: failures + 1,
            },
            (State::HalfOpen { .. }, false) => State::Open {
                until_ms: now + self.cooldown_ms,
            },
            (State::Open { until_ms }, false) => State::Open { until_ms },
        };
        let changed = std::mem::discriminant(&next) != std::mem::discriminant(&*slot);
        *slot = next;
        drop(slot);
        if changed {
            let name = state_name(next);
            if name == "open" {
                tracing::warn!(
                    endpoint = endpoint.as_str(),
                    cooldown_ms = self.cooldown_ms,
                    "Clerk keeps failing; circuit open, failing fast"
                );
            } else {
                tracing::info!(
                    endpoint = endpoint.as_str(),
                    state = name,
                    "circuit state changed"
                );
            }
            self.publish(endpoint, name);
        }
    }

    /// Whether calls to `endpoint` are being refused now.
    pub fn is_open(&self, endpoint: Endpoint) -> bool {
        self.threshold != 0
            && matches!(*self.slots[endpoint.index()].lock(), State::Open { until_ms } if self.clock.now_ms() < until_ms)
    }

    /// `closed`, `open` or `half_open`.
    pub fn state(&self, endpoint: Endpoint) -> &'static str {
        state_name(*self.slots[endpoint.index()].lock())
    }

    fn publish(&self, endpoint: Endpoint, state: &str) {
        let value = match state {
            "closed" => 0.0,
            "half_open" => 1.0,
            _ => 2.0,
        };
        metrics::gauge!("frontdesk_upstream_breaker_state", "endpoint" => endpoint.as_str())
            .set(value);
    }
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Closed { .. } => "closed",
        State::Open { .. } => "open",
        State::HalfOpen { .. } => "half_open",
    }
}

/// Retries as a share of calls: each first attempt deposits `ratio` of a retry, each
/// retry withdraws a whole one. A reserve of [`RETRY_RESERVE`] retries (also the
/// cap) lets a quiet instance retry a few isolated failures; under a storm of
/// failures retries stay near `ratio` × calls instead of multiplying them.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a retry.
    balance: AtomicI64,
    deposit: i64,
}

pub const RETRY_RESERVE: i64 = 10;
const ONE: i64 = 1000;

impl RetryBudget {
    pub fn new(ratio: f64) -> Self {
        Self {
            balance: AtomicI64::new(RETRY_RESERVE * ONE),
            deposit: (ratio.clamp(0.0, 1.0) * ONE as f64) as i64,
        }
    }

    pub fn on_call(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((b + self.deposit).min(RETRY_RESERVE * ONE))
            });
    }

    /// Takes one retry if the budget has it.
    pub fn try_retry(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= ONE).then_some(b - ONE)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn opens_after_consecutive_failures_probes_once_and_closes_on_success() {
        let clock = ManualClock::new(1_000);
        let b = Breakers::new(3, 5_000, 10_000, clock.clone());
        let e = Endpoint::ListUsers;
        b.record(e, false);
        b.record(e, false);
        b.record(e, true); // a success resets the count
        b.record(e, false);
        b.record(e, false);
        assert_eq!(b.check(e), Ok(Pass::Call));
        b.record(e, false);
        assert_eq!(b.state(e), "open");
        assert_eq!(b.check(e), Err(5_000));
        assert_eq!(b.check(Endpoint::Jwks), Ok(Pass::Call), "per endpoint");
        clock.advance_ms(5_000);
        assert_eq!(b.check(e), Ok(Pass::Probe));
        assert!(b.check(e).is_err(), "one probe at a time");
        b.record(e, false);
        assert_eq!(b.state(e), "open");
        clock.advance_ms(5_000);
        assert_eq!(b.check(e), Ok(Pass::Probe));
        b.record(e, true);
        assert_eq!(b.state(e), "closed");
        assert_eq!(b.check(e), Ok(Pass::Call));
    }

    #[test]
    fn retries_stay_a_share_of_calls() {
        let r = RetryBudget::new(0.1);
        let mut retries = 0;
        for _ in 0..1000 {
            r.on_call();
            if r.try_retry() {
                retries += 1;
            }
        }
        assert!(retries <= 100 + RETRY_RESERVE, "{retries}");
        assert!(retries >= 100, "{retries}");
    }
}
