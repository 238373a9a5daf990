//! Clerk's per-user limit on updates (10 per user per 10 s), kept before a request is
//! sent. A slot is taken when an update is sent and dated when its answer comes back:
//! Clerk counted the request at some point before that, so a window judged by answer
//! times holds every request Clerk would count in it, and updates in flight count as
//! taken. Time comes from the injected clock.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

#[derive(Debug, Default)]
struct Slots {
    /// Answer times (ms) of recent updates, oldest first.
    done: VecDeque<u64>,
    in_flight: u32,
}

#[derive(Debug)]
pub struct UserGovernor {
    limit: u32,
    window_ms: u64,
    users: Mutex<HashMap<String, Slots>>,
}

impl UserGovernor {
    pub fn new(limit: u32, window_ms: u64) -> Self {
        Self {
            limit: limit.max(1),
            window_ms,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a slot for an update of `user` at `now`, or says when to ask again.
    pub fn try_take(&self, user: &str, now: u64) -> Result<(), u64> {
        let mut users = self.users.lock();
        let s = users.entry(user.to_string()).or_default();
        while s
            .done
            .front()
            .is_some_and(|t| t.saturating_add(self.window_ms) <= now)
        {
            s.done.pop_front();
        }
        if (s.done.len() as u32) + s.in_flight < self.limit {
            s.in_flight += 1;
            return Ok(());
        }
        // The oldest answer leaves the window then; with all slots in flight, ask
        // again shortly.
        Err(match s.done.front() {
            Some(t) if s.in_flight < self.limit => t.saturating_add(self.window_ms).max(now + 1),
            _ => now + 50,
        })
    }

    /// The update's answer came back (or it was never sent) at `now`.
    pub fn release(&self, user: &str, now: u64) {
        let mut users = self.users.lock();
        if let Some(s) = users.get_mut(user) {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.done.push_back(now);
        }
    }

    /// Drops users with nothing in their window (called between jobs).
    pub fn prune(&self, now: u64) {
        self.users.lock().retain(|_, s| {
            s.in_flight > 0
                || s.done
                    .back()
                    .is_some_and(|t| t.saturating_add(self.window_ms) > now)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_updates_per_user_per_window_counted_from_their_answers() {
        let g = UserGovernor::new(10, 10_000);
        for _ in 0..10 {
            assert!(g.try_take("user_a", 0).is_ok());
        }
        // All ten in flight: ask again shortly; another user is not held up.
        assert_eq!(g.try_take("user_a", 0), Err(50));
        assert!(g.try_take("user_b", 0).is_ok());
        for i in 0..10 {
            g.release("user_a", 100 + i);
        }
        // The first answer (t=100) leaves the window at 10,100.
        assert_eq!(g.try_take("user_a", 5_000), Err(10_100));
        assert!(g.try_take("user_a", 10_100).is_ok());
        assert!(g.try_take("user_a", 10_100).is_err());
        g.prune(1_000_000);
        assert!(g.try_take("user_a", 1_000_000).is_ok());
    }
}
