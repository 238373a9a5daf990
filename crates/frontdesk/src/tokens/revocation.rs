//! Revoked sessions. A session token is a bearer credential good until its `exp`; when
//! Clerk revokes a session (the `session.revoked`/`session.ended`/`session.removed`
//! webhooks) its still-unexpired tokens must stop working. The verifier keeps the
//! revoked session ids until a given time and refuses their tokens with
//! `session_revoked`.
//!
//! [`Revocations`] is the seam for fan-out: the in-process [`InMemoryRevocations`]
//! serves one instance; a Redis-backed implementation (or one fed by pub/sub into this
//! one) can serve many without the verifier changing.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::clock::SharedClock;

/// Where revoked session ids are kept.
pub trait Revocations: Send + Sync + std::fmt::Debug + 'static {
    /// Refuses tokens of session `sid` until `until_ms` (Unix ms). Revoking again keeps
    /// the later time.
    fn revoke(&self, sid: &str, until_ms: u64);
    /// Whether `sid` is revoked at `now_ms`.
    fn is_revoked(&self, sid: &str, now_ms: u64) -> bool;
}

/// Revocations in process memory, bounded: when full, expired entries are dropped
/// first, then the one that would expire soonest (it protects the shortest window).
#[derive(Debug)]
pub struct InMemoryRevocations {
    max_entries: usize,
    clock: SharedClock,
    revoked: Mutex<HashMap<String, u64>>,
}

impl InMemoryRevocations {
    pub fn new(max_entries: usize, clock: SharedClock) -> Self {
        Self {
            max_entries: max_entries.max(1),
            clock,
            revoked: Mutex::new(HashMap::new()),
        }
    }

    /// How many session ids are held (expired ones included until the next purge).
    pub fn len(&self) -> usize {
        self.revoked.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Revocations for InMemoryRevocations {
    fn revoke(&self, sid: &str, until_ms: u64) {
        let now = self.clock.now_ms();
        if until_ms <= now {
            return;
        }
        let mut map = self.revoked.lock();
        if let Some(existing) = map.get_mut(sid) {
            *existing = (*existing).max(until_ms);
            return;
        }
        if map.len() >= self.max_entries {
            map.retain(|_, until| *until > now);
        }
        if map.len() >= self.max_entries {
            let soonest = map
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(sid, until)| (sid.clone(), *until));
            match soonest {
                // Never evict a revocation that outlives the new one for it.
                Some((_, soonest_until)) if soonest_until > until_ms => {
                    tracing::warn!(
                        max_entries = self.max_entries,
                        "revocation list full; a revocation was dropped"
                    );
                    return;
                }
                Some((victim, _)) => {
                    map.remove(&victim);
                    tracing::warn!(
                        max_entries = self.max_entries,
                        "revocation list full; the soonest-expiring entry was evicted"
                    );
                }
                None => {}
            }
        }
        map.insert(sid.to_owned(), until_ms);
    }

    fn is_revoked(&self, sid: &str, now_ms: u64) -> bool {
        self.revoked
            .lock()
            .get(sid)
            .is_some_and(|until| *until > now_ms)
    }
}
