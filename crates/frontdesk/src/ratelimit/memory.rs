//! The in-process sliding log: per bucket, the timestamps of the requests counted in
//! the window, oldest first. Used without Redis, and while Redis fails (each instance
//! then limits on its own, which is the best it can do alone).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use parking_lot::Mutex;

use super::{Decision, Mode, Policy};

const SHARDS: usize = 32;
/// A shard holding more buckets than this sweeps out the ones whose log emptied.
const SWEEP_ABOVE: usize = 4096;

struct Shard {
    logs: HashMap<String, Log>,
}

struct Log {
    entries: VecDeque<u64>,
    window_ms: u64,
}

pub struct MemoryLimiter {
    shards: Vec<Mutex<Shard>>,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        logs: HashMap::new(),
                    })
                })
                .collect(),
        }
    }
}

impl MemoryLimiter {
    pub fn decide(&self, policy: &Policy, bucket: &str, mode: Mode, now_ms: u64) -> Decision {
        let mut h = DefaultHasher::new();
        bucket.hash(&mut h);
        let shard = &self.shards[(h.finish() as usize) % SHARDS];
        let mut shard = shard.lock();
        if shard.logs.len() > SWEEP_ABOVE {
            shard.logs.retain(|_, log| {
                log.entries
                    .back()
                    .is_some_and(|&t| t + log.window_ms > now_ms)
            });
        }
        let log = match shard.logs.get_mut(bucket) {
            Some(log) => log,
            None => shard.logs.entry(bucket.to_string()).or_insert(Log {
                entries: VecDeque::new(),
                window_ms: policy.window_ms,
            }),
        };
        decide_log(log, policy, mode, now_ms)
    }
}

fn decide_log(log: &mut Log, policy: &Policy, mode: Mode, now_ms: u64) -> Decision {
    let window = policy.window_ms;
    log.window_ms = window;
    // An entry at `t` counts while `now - window < t`, as in the Redis script.
    while log
        .entries
        .front()
        .is_some_and(|&t| t.saturating_add(window) <= now_ms)
    {
        log.entries.pop_front();
    }
    let limit = policy.limit as usize;
    let under = log.entries.len() < limit;
    let allowed = match mode {
        Mode::Hit => {
            if under {
                log.entries.push_back(now_ms);
            }
            under
        }
        Mode::Peek => under,
        Mode::Add => {
            log.entries.push_back(now_ms);
            // Failures beyond the limit change nothing a caller sees.
            while log.entries.len() > limit.max(1) {
                log.entries.pop_front();
            }
            true
        }
    };
    let n = log.entries.len() as u32;
    let reset_ms = log
        .entries
        .front()
        .map(|&t| (t + window).saturating_sub(now_ms))
        .unwrap_or(0);
    Decision {
        allowed,
        limit: policy.limit,
        remaining: policy.limit.saturating_sub(n),
        reset_ms,
    }
}
