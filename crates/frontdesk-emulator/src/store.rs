//! The emulator's in-memory Clerk instance: users, organizations and memberships,
//! behind one lock in the [`crate::Emulator`]. Handlers never hold the lock across an
//! await; every operation is a short synchronous call on [`Store`].

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::ids;
use crate::orgs::{Membership, Org};
use crate::users::User;

pub struct Store {
    pub seed: u64,
    pub instance_id: String,
    pub users: HashMap<String, User>,
    pub orgs: Vec<Org>,
    pub memberships: Vec<Membership>,
    /// Counter for ids of objects created at run time.
    next: u64,
    /// Random per emulator instance, so objects created at run time (users, sessions,
    /// webhook messages) never reuse an id from an earlier run, as with real Clerk;
    /// a receiver that dedupes by message id must not drop a new run's events.
    salt: u128,
    /// Last timestamp handed out, so `updated_at` values strictly increase.
    last_ms: i64,
}

impl Store {
    pub fn new(seed: u64, instance_id: String) -> Self {
        Self {
            seed,
            instance_id,
            users: HashMap::new(),
            orgs: Vec::new(),
            memberships: Vec::new(),
            next: 0,
            last_ms: 0,
            salt: rand::random(),
        }
    }

    /// A new id for an object created at run time.
    pub fn next_id(&mut self, prefix: &str) -> String {
        self.next += 1;
        ids::make(
            prefix,
            &format!("runtime:{}:{prefix}:{}", self.salt, self.next),
        )
    }

    /// A timestamp (ms) for a change made now, strictly greater than any handed out
    /// before, so two changes in one millisecond still order.
    pub fn stamp(&mut self, now_ms: i64) -> i64 {
        self.last_ms = now_ms.max(self.last_ms + 1);
        self.last_ms
    }

    /// Keeps `stamp` above timestamps set by seeding.
    pub fn observe(&mut self, ms: i64) {
        self.last_ms = self.last_ms.max(ms);
    }
}

/// Deep-merges `patch` into `target`: objects merge recursively, `null` deletes a key,
/// anything else replaces. This is Clerk's `PATCH …/metadata` semantics.
pub fn deep_merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                if let Some(Value::Object(t)) = target.get_mut(k) {
                    deep_merge(t, p);
                } else {
                    let mut fresh = Map::new();
                    deep_merge(&mut fresh, p);
                    target.insert(k.clone(), Value::Object(fresh));
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deep_merge_merges_nested_and_null_deletes() {
        let mut t = json!({"a": 1, "n": {"x": 1, "y": 2}, "gone": true})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let p = json!({"b": 2, "n": {"y": null, "z": 3}, "gone": null, "new": {"k": null, "j": 1}});
        deep_merge(&mut t, p.as_object().unwrap_or(&Map::new()));
        assert_eq!(
            Value::Object(t),
            json!({"a": 1, "b": 2, "n": {"x": 1, "z": 3}, "new": {"j": 1}})
        );
    }

    #[test]
    fn stamps_strictly_increase() {
        let mut s = Store::new(1, "ins_x".into());
        let a = s.stamp(1000);
        let b = s.stamp(1000);
        let c = s.stamp(999);
        assert!(a < b && b < c);
    }
}
