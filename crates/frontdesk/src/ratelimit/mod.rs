//! Rate limiting: named policies (`[[rate_limits]]`) that edge routes refer to, decided
//! by an exact sliding log shared by every instance through Redis, or held in process
//! when there is no Redis (or while it fails).
//!
//! Why an exact log and not the two-window weighted counter: the counter is cheaper
//! (two integers per key) but approximate, and at a window boundary it can admit more
//! than `limit` in any true window. The promise here is "admitted == limit, never
//! more", across instances and under concurrent bursts, and the policies we guard
//! (sign-in attempts, per-user API quotas) are small, so keeping one timestamp per
//! admitted request (at most `limit` per key) is affordable.
//!
//! Time comes from the injected clock and is passed into the Redis script, so tests
//! move windows without sleeping and every instance agrees on what "now" is only as
//! much as their clocks do.

pub mod memory;
pub mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::SharedClock;
use crate::config::{RateLimitConfig, RateLimitCount, RateLimitKey};
use crate::redis_link::RedisLink;

/// One named policy, ready to decide with.
#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub key: RateLimitKey,
    pub limit: u32,
    pub window_ms: u64,
    pub failures_only: bool,
    pub bypass_roles: Vec<String>,
    /// `RateLimit-Policy`, rendered once.
    policy_header: HeaderValue,
    /// The policy name as a key part (base64url), rendered once.
    encoded_name: String,
}

impl Policy {
    pub fn from_config(c: &RateLimitConfig) -> Self {
        let policy_header =
            HeaderValue::from_str(&format!("\"{}\";q={};w={}", c.name, c.limit, c.window_s))
                .unwrap_or_else(|_| HeaderValue::from_static("\"limit\""));
        Self {
            name: c.name.clone(),
            key: c.key,
            limit: c.limit,
            window_ms: c.window_s.saturating_mul(1000),
            failures_only: c.count == RateLimitCount::Failures,
            bypass_roles: c.bypass_roles.clone(),
            policy_header,
            encoded_name: URL_SAFE_NO_PAD.encode(c.name.as_bytes()),
        }
    }

    /// The bucket of one caller under this policy: the policy name and the caller's
    /// identity, each base64url-encoded, so no name or id can collide with another or
    /// smuggle key syntax (`:`, `{…}` hash tags) into Redis.
    pub fn bucket(&self, kind: BucketKind, id: &str) -> String {
        let mut k = String::with_capacity(self.encoded_name.len() + id.len() * 4 / 3 + 8);
        k.push_str(&self.encoded_name);
        k.push(':');
        k.push_str(kind.tag());
        k.push(':');
        URL_SAFE_NO_PAD.encode_string(id.as_bytes(), &mut k);
        k
    }

    pub fn bypasses(&self, role: Option<&str>) -> bool {
        role.is_some_and(|r| self.bypass_roles.iter().any(|b| b == r))
    }
}

/// What a bucket is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketKind {
    User,
    Ip,
    Org,
    /// A caller of the api listener, by the hash of its bearer key.
    Key,
}

impl BucketKind {
    fn tag(self) -> &'static str {
        match self {
            BucketKind::User => "u",
            BucketKind::Ip => "ip",
            BucketKind::Org => "o",
            BucketKind::Key => "k",
        }
    }
}

/// What one decision does to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Admit and record when under the limit (`count = "all"`).
    Hit,
    /// Admit when under the limit, record nothing (`count = "failures"`, before the
    /// response is known).
    Peek,
    /// Record unconditionally (a failure under `count = "failures"`).
    Add,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Hit => "hit",
            Mode::Peek => "peek",
            Mode::Add => "add",
        }
    }
}

/// The outcome of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Milliseconds until the oldest entry leaves the window (a slot frees); 0 when the
    /// log is empty.
    pub reset_ms: u64,
}

impl Decision {
    /// Whole seconds until a slot frees, rounded up (at least 1 when limited).
    pub fn reset_s(&self) -> u64 {
        let s = self.reset_ms.div_ceil(1000);
        if self.allowed { s } else { s.max(1) }
    }

    /// `X-RateLimit-*` and the IETF `RateLimit-Policy` / `RateLimit` fields
    /// (draft-ietf-httpapi-ratelimit-headers).
    pub fn write_headers(&self, policy: &Policy, headers: &mut HeaderMap) {
        let reset = self.reset_s();
        headers.insert(X_LIMIT, HeaderValue::from(self.limit));
        headers.insert(X_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(X_RESET, HeaderValue::from(reset));
        headers.insert(RL_POLICY, policy.policy_header.clone());
        if let Ok(v) = HeaderValue::from_str(&format!(
            "\"{}\";r={};t={}",
            policy.name, self.remaining, reset
        )) {
            headers.insert(RL, v);
        }
    }
}

const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RL_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RL: HeaderName = HeaderName::from_static("ratelimit");

const BACKEND_MEMORY: u8 = 0;
const BACKEND_REDIS: u8 = 1;
const BACKEND_FALLBACK: u8 = 2;

/// Decides for every policy; Redis when configured and up, memory otherwise.
pub struct Limiter {
    memory: memory::MemoryLimiter,
    redis: Option<shared::RedisLimiter>,
    clock: SharedClock,
    backend: AtomicU8,
    fallbacks: AtomicU64,
}

impl Limiter {
    pub fn new(redis: Option<Arc<RedisLink>>, clock: SharedClock) -> Self {
        Self {
            memory: memory::MemoryLimiter::default(),
            redis: redis.map(shared::RedisLimiter::new),
            clock,
            backend: AtomicU8::new(BACKEND_MEMORY),
            fallbacks: AtomicU64::new(0),
        }
    }

    /// One decision for `bucket` under `policy`.
    pub async fn decide(&self, policy: &Policy, bucket: &str, mode: Mode) -> Decision {
        let now = self.clock.now_ms();
        if let Some(redis) = &self.redis {
            if redis.link().is_up() {
                match redis.decide(policy, bucket, mode, now).await {
                    Ok(d) => {
                        self.backend.store(BACKEND_REDIS, Ordering::Relaxed);
                        count(policy, &d, mode, "redis");
                        return d;
                    }
                    Err(e) => {
                        tracing::warn!(error_kind = ?e.kind(), policy = %policy.name,
                            "rate limit: redis failed; deciding in memory");
                    }
                }
            }
            self.backend.store(BACKEND_FALLBACK, Ordering::Relaxed);
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        let d = self.memory.decide(policy, bucket, mode, now);
        count(policy, &d, mode, "memory");
        d
    }

    /// Which backend decided last: `memory` (no Redis configured), `redis`, or
    /// `memory_fallback` (Redis configured but failing), for `/v1/stats`.
    pub fn backend(&self) -> &'static str {
        match self.backend.load(Ordering::Relaxed) {
            BACKEND_REDIS => "redis",
            BACKEND_FALLBACK => "memory_fallback",
            _ if self.redis.is_some() => "redis",
            _ => "memory",
        }
    }

    /// The injected clock's now, in seconds.
    pub fn now_s(&self) -> u64 {
        self.clock.now_s()
    }

    /// Decisions taken in memory while Redis was configured.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }
}

fn count(policy: &Policy, d: &Decision, mode: Mode, backend: &'static str) {
    if mode == Mode::Add {
        return;
    }
    let outcome = if d.allowed { "allowed" } else { "limited" };
    metrics::counter!("frontdesk_ratelimit_decisions_total",
        "policy" => policy.name.clone(), "outcome" => outcome, "backend" => backend)
    .increment(1);
}

/// A request a policy let through without counting (a bypass role).
pub fn count_bypass(policy: &Policy) {
    metrics::counter!("frontdesk_ratelimit_decisions_total",
        "policy" => policy.name.clone(), "outcome" => "bypassed", "backend" => "none")
    .increment(1);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policy(name: &str) -> Policy {
        Policy::from_config(&RateLimitConfig {
            name: name.into(),
            key: RateLimitKey::User,
            limit: 2,
            window_s: 10,
            count: RateLimitCount::All,
            bypass_roles: vec![],
        })
    }

    #[test]
    fn buckets_cannot_collide_or_carry_key_syntax() {
        let a = policy("a:u").bucket(BucketKind::User, "b");
        let b = policy("a").bucket(BucketKind::User, "u:b");
        assert_ne!(a, b);
        let c = policy("x").bucket(BucketKind::Ip, "{tag}:*\r\n");
        assert!(!c.contains('{') && !c.contains('*') && !c.contains('\r'));
        assert_eq!(c.matches(':').count(), 2);
    }

    #[test]
    fn memory_log_slides() {
        let p = policy("p");
        let m = memory::MemoryLimiter::default();
        assert!(m.decide(&p, "k", Mode::Hit, 0).allowed);
        assert!(m.decide(&p, "k", Mode::Hit, 4_000).allowed);
        let d = m.decide(&p, "k", Mode::Hit, 5_000);
        assert_eq!((d.allowed, d.remaining, d.reset_s()), (false, 0, 5));
        assert!(m.decide(&p, "k", Mode::Hit, 10_000).allowed);
        assert!(!m.decide(&p, "k", Mode::Hit, 13_999).allowed);
        assert!(m.decide(&p, "other", Mode::Hit, 13_999).allowed);
    }
}
