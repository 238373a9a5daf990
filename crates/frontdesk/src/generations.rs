//! Per-key generations: how a cache knows that an answer it loaded may predate an
//! invalidation of the same key. A load notes its key's generation before asking the
//! slow source and writes its answer into the cache only if the generation has not
//! moved. Keys hash onto a fixed array of counters (striping), so an invalidation of
//! one user discards only loads of users on the same stripe — not every load in
//! flight, as one instance-wide counter would under a steady stream of updates.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};

const STRIPES: usize = 1024;

pub struct Generations {
    stripes: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Generations {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Generations {
    fn slot<K: Hash + ?Sized>(&self, key: &K) -> &AtomicU64 {
        let i = (self.hasher.hash_one(key) as usize) % STRIPES;
        &self.stripes[i]
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
    pub fn bump_all(&self) {
        for s in self.stripes.iter() {
            s.fetch_add(1, Ordering::SeqCst);
        }
    }
}
