//! Revoked sessions. A session token is a bearer credential good until its `exp`; when
//! Clerk revokes a session (the `session.revoked`/`session.ended`/`session.removed`
//! webhooks) its still-unexpired tokens must stop working. The verifier keeps the
//! revoked session ids until a given time and refuses their tokens with
//! `session_revoked`.
//!
//! [`Revocations`] is the seam for fan-out. Across a fleet, the in-process
//! [`InMemoryRevocations`] is fed from three places (see `app.rs`): the store's
//! `session_revocations` table at start and on a timer, this instance's own webhook
//! effects, and other instances' `SessionRevoked` bus events.
//!
//! The check runs on every request, so the set is a sharded concurrent map
//! (`DashMap`): a look-up takes one shard's read lock, never a lock every request
//! shares.

use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use crate::clock::SharedClock;

/// Where revoked session ids are kept.
pub trait Revocations: Send + Sync + std::fmt::Debug + 'static {
    /// Refuses tokens of session `sid` until `until_ms` (Unix ms). Revoking again keeps
    /// the later time.
    fn revoke(&self, sid: &str, until_ms: u64);
    /// Whether `sid` is revoked at `now_ms`.
    fn is_revoked(&self, sid: &str, now_ms: u64) -> bool;
    /// Forgets revocations expired at `now_ms`.
    fn purge(&self, _now_ms: u64) {}
}

/// Revocations in process memory, bounded: when full, expired entries are dropped
/// first, then the one that would expire soonest (it protects the shortest window).
#[derive(Debug)]
pub struct InMemoryRevocations {
    max_entries: usize,
    clock: SharedClock,
    revoked: DashMap<String, u64>,
    /// Serialises the rare "full" path (evictions) without touching look-ups.
    evicting: parking_lot::Mutex<()>,
    dropped: AtomicUsize,
}

impl InMemoryRevocations {
    pub fn new(max_entries: usize, clock: SharedClock) -> Self {
        Self {
            max_entries: max_entries.max(1),
            clock,
            revoked: DashMap::new(),
            evicting: parking_lot::Mutex::new(()),
            dropped: AtomicUsize::new(0),
        }
    }

    /// How many session ids are held (expired ones included until the next purge).
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    /// Revocations that could not be kept because the set was full of longer ones.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
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
        if let Some(mut existing) = self.revoked.get_mut(sid) {
            *existing = (*existing).max(until_ms);
            return;
        }
        if self.revoked.len() >= self.max_entries {
            let _full = self.evicting.lock();
            Revocations::purge(self, now);
            if self.revoked.len() >= self.max_entries {
                let soonest = self
                    .revoked
                    .iter()
                    .min_by_key(|e| *e.value())
                    .map(|e| (e.key().clone(), *e.value()));
                match soonest {
                    // Never evict a revocation that outlives the new one for it.
                    Some((_, soonest_until)) if soonest_until > until_ms => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            max_entries = self.max_entries,
                            "revocation list full; a revocation was dropped"
                        );
                        return;
                    }
                    Some((victim, _)) => {
                        self.revoked.remove(&victim);
                        tracing::warn!(
                            max_entries = self.max_entries,
                            "revocation list full; the soonest-expiring entry was evicted"
                        );
                    }
                    None => {}
                }
            }
        }
        self.revoked
            .entry(sid.to_owned())
            .and_modify(|u| *u = (*u).max(until_ms))
            .or_insert(until_ms);
    }

    fn is_revoked(&self, sid: &str, now_ms: u64) -> bool {
        self.revoked.get(sid).is_some_and(|until| *until > now_ms)
    }

    fn purge(&self, now_ms: u64) {
        self.revoked.retain(|_, until| *until > now_ms);
    }
}
