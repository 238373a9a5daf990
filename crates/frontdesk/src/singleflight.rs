//! Single-flight loading: concurrent callers asking for the same key share one load.
//!
//! The user cache (one Clerk look-up per user), context provisioning (one store
//! transaction per user) and the proxy's read cache (one Clerk call per read key) all
//! need the same thing, so it lives here once. The load runs as its own task: it
//! finishes, and leaves the in-flight map, even if every caller stops waiting, so a
//! client that disconnects cannot leave a half-done load or a stuck entry behind.
//!
//! Callers check their cache and then ask for a load; between the two, the previous
//! load of the key can fill the cache and leave the map, so a new load starts anyway.
//! Every load here therefore writes its answer into the cache *before* it ends, and
//! starts by reading the cache again: it began after the previous load left the map,
//! so it sees that load's answer, and a key costs one call however its callers arrive.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;

/// The shared answer of one load; every caller of the key awaits a clone of it.
pub type Flight<T> = Shared<BoxFuture<'static, T>>;

/// In-flight loads by key. Cheap to clone; clones share the map.
pub struct SingleFlight<K, T> {
    inflight: Arc<Mutex<HashMap<K, Flight<T>>>>,
    /// The answer when a load's task panicked or was cancelled.
    on_task_failure: fn(tokio::task::JoinError) -> T,
}

impl<K, T> Clone for SingleFlight<K, T> {
    fn clone(&self) -> Self {
        Self {
            inflight: self.inflight.clone(),
            on_task_failure: self.on_task_failure,
        }
    }
}

impl<K, T> SingleFlight<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// `on_task_failure` turns a load task that panicked into an answer for its
    /// callers (typically an "unavailable" error).
    pub fn new(on_task_failure: fn(tokio::task::JoinError) -> T) -> Self {
        Self {
            inflight: Arc::new(Mutex::new(HashMap::new())),
            on_task_failure,
        }
    }

    /// The load of `key`: the one in flight, or a new one started with `load()`.
    /// The flag says whether the caller joined a load already in flight.
    pub fn load<Q, F, Fut>(&self, key: &Q, load: F) -> (Flight<T>, bool)
    where
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        K: Borrow<Q>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        // The lock is held until the flight is in the map, so the task cannot remove
        // its entry before it is inserted.
        let mut inflight = self.inflight.lock();
        if let Some(flight) = inflight.get(key) {
            return (flight.clone(), true);
        }
        let owned = key.to_owned();
        let map = self.inflight.clone();
        let remove_key = owned.clone();
        let run = load();
        let task = tokio::spawn(async move {
            // Dropped when the load ends, also by a panic, so a failed load is not
            // answered from the map forever.
            let _leave = Leave {
                map,
                key: remove_key,
            };
            run.await
        });
        let on_failure = self.on_task_failure;
        let flight = async move { task.await.unwrap_or_else(on_failure) }
            .boxed()
            .shared();
        inflight.insert(owned, flight.clone());
        (flight, false)
    }

    /// Loads in flight now.
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().len()
    }
}

/// Removes a finished load's entry.
struct Leave<K: Hash + Eq, T> {
    map: Arc<Mutex<HashMap<K, Flight<T>>>>,
    key: K,
}

impl<K: Hash + Eq, T> Drop for Leave<K, T> {
    fn drop(&mut self) {
        self.map.lock().remove(&self.key);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hundred_concurrent_callers_share_one_load() {
        let flights: SingleFlight<String, u64> = SingleFlight::new(|_| 0);
        let loads = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let mut callers = Vec::new();
        let mut joined = 0;
        for _ in 0..100 {
            let loads = loads.clone();
            let mut released = released.clone();
            let (flight, was_joined) = flights.load("user_1", move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                // Held until every caller has asked, so none can start a second load.
                let _ = released.wait_for(|r| *r).await;
                42
            });
            joined += usize::from(was_joined);
            callers.push(tokio::spawn(flight));
        }
        assert_eq!(flights.in_flight(), 1);
        release.send(true).unwrap();
        for c in callers {
            assert_eq!(c.await.unwrap(), 42);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(joined, 99);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_load_finishes_when_every_caller_left() {
        let flights: SingleFlight<String, u64> = SingleFlight::new(|_| 0);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        let (flight, _) = flights.load("k", move || async move {
            let _ = released.await;
            let _ = done_tx.send(());
            7
        });
        drop(flight);
        release.send(()).unwrap();
        done.await.expect("the load ran to its end without callers");
        // The entry leaves right after the load's last statement.
        while flights.in_flight() != 0 {
            tokio::task::yield_now().await;
        }
        // A new load of the same key starts afresh.
        let (again, joined) = flights.load("k", || async { 8 });
        assert!(!joined);
        assert_eq!(again.await, 8);
    }

    #[tokio::test]
    async fn a_panicking_load_answers_the_failure_value_and_leaves_no_entry() {
        let flights: SingleFlight<String, Result<u8, String>> =
            SingleFlight::new(|e| Err(format!("task failed: {}", e.is_panic())));
        let (flight, _) = flights.load("k", || async { panic!("boom") });
        assert_eq!(flight.await, Err("task failed: true".to_string()));
        assert_eq!(flights.in_flight(), 0);
        // The next load starts afresh instead of joining the failed one.
        let (again, joined) = flights.load("k", || async { Ok(1) });
        assert!(!joined);
        assert_eq!(again.await, Ok(1));
    }
}
