//! Per-key generations: how a cache knows that an answer it loaded may predate an
//! invalidation of the same key. A load notes its key's generation before asking the
//! slow source and writes its answer into the cache only if the generation has not
//! moved. Keys hash onto a fixed array of counters (striping), so an invalidation of
//! one user discards only loads of users on the same stripe — not every load in
//! flight, as one instance-wide counter would under a steady stream of updates.
//!
//! The check and the cache write it guards happen under the key's stripe lock
//! ([`Generations::if_unchanged`]), as do a bump and the eviction it goes with
//! ([`Generations::bump_with`]): so an invalidation can never fall between a load's
//! check and its insert. The locks are per stripe, held for an insert, and never
//! across an await.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

const STRIPES: usize = 1024;

pub struct Generations {
    stripes: Box<[AtomicU64]>,
    locks: Box<[parking_lot::Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Generations {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            locks: (0..STRIPES).map(|_| parking_lot::Mutex::new(())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Generations {
    fn index<K: Hash + ?Sized>(&self, key: &K) -> usize {
        (self.hasher.hash_one(key) as usize) % STRIPES
    }

    fn slot<K: Hash + ?Sized>(&self, key: &K) -> &AtomicU64 {
        &self.stripes[self.index(key)]
    }

    /// Runs `write` (a cache insert) only if `key` was not invalidated since `seen`,
    /// atomically with that check. Returns whether it ran.
    pub fn if_unchanged<K: Hash + ?Sized>(&self, key: &K, seen: u64, write: impl FnOnce()) -> bool {
        let i = self.index(key);
        let _stripe = self.locks[i].lock();
        if self.stripes[i].load(Ordering::SeqCst) != seen {
            return false;
        }
        write();
        true
    }

    /// Bumps `key` and runs `evict` (a cache removal) as one step with respect to
    /// [`Generations::if_unchanged`].
    pub fn bump_with<K: Hash + ?Sized>(&self, key: &K, evict: impl FnOnce()) {
        let i = self.index(key);
        let _stripe = self.locks[i].lock();
        self.stripes[i].fetch_add(1, Ordering::SeqCst);
        evict();
    }

    /// The key's generation now; compare with [`Generations::unchanged`] later.
    pub fn current<K: Hash + ?Sized>(&self, key: &K) -> u64 {
        self.slot(key).load(Ordering::SeqCst)
    }

    pub fn unchanged<K: Hash + ?Sized>(&self, key: &K, seen: u64) -> bool {
        self.current(key) == seen
    }

    /// The key was invalidated: loads of it that are in flight must not be cached.
    pub fn bump<K: Hash + ?Sized>(&self, key: &K) {
        self.slot(key).fetch_add(1, Ordering::SeqCst);
    }

    /// Everything was invalidated.
    /// Inserts that passed their check before this call are removed by the caller's
    /// `invalidate_all` after it; inserts after it fail their check.
    pub fn bump_all(&self) {
        for (s, lock) in self.stripes.iter().zip(self.locks.iter()) {
            let _stripe = lock.lock();
            s.fetch_add(1, Ordering::SeqCst);
        }
    }
}
