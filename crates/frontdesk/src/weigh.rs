//! What a cached value holds on the heap, for moka's weighers: the in-process caches
//! are bounded by bytes (`cache.l1_max_bytes`, `context.l1_max_bytes`,
//! `cache.proxy_max_bytes`, `response_cache.l1_max_bytes`), not by entries, because a
//! user with ten addresses and big metadata is not the same as one without.
//!
//! Estimates, not measurements: each heap allocation counts its length plus the
//! allocator's bookkeeping ([`ALLOC`]), each entry the structures moka keeps for it
//! ([`MOKA_ENTRY`]). `frontdesk-bench memory` compares them with the process's RSS;
//! a test keeps them within a sane factor of the serialized size.

use serde_json::Value;

/// Bookkeeping and rounding of one heap allocation (glibc: an 8-byte header, sizes
/// rounded up to 16).
pub const ALLOC: usize = 16;

/// What moka keeps per entry beyond the key and value themselves: the key's `Arc`,
/// the value entry and its `Arc`, the entry info, the access-order deque node and
/// the hash table's bucket (with its load factor). Calibrated with
/// `frontdesk-bench memory` so that the weighers' total meets the RSS measured per
/// cached user and context (BENCHMARKS.md, "Memory").
pub const MOKA_ENTRY: usize = 320;

/// What quick_cache keeps per entry beyond the key and value (inline in its slab):
/// the slab links and state, the hash table's index slot, and a share of the ghost
/// entries it remembers for admission.
pub const QUICK_CACHE_ENTRY: usize = 48;

/// A `BTreeMap` leaf node of `serde_json::Map` (11 slots of a `String` key and a
/// `Value`), allocated whole even for one member.
const MAP_NODE: usize = 8 + 11 * (24 + 32) + 8 + ALLOC;

/// An owned string's heap part.
pub fn string(s: &str) -> usize {
    if s.is_empty() { 0 } else { s.len() + ALLOC }
}

pub fn opt_string(s: Option<&str>) -> usize {
    s.map_or(0, string)
}

/// A parsed JSON value's heap part (not the `Value` itself, which its owner counts).
pub fn json(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => string(s),
        Value::Array(a) if a.is_empty() => 0,
        Value::Array(a) => {
            a.len() * std::mem::size_of::<Value>() + ALLOC + a.iter().map(json).sum::<usize>()
        }
        Value::Object(m) if m.is_empty() => 0,
        Value::Object(m) => {
            // Nodes run about two-thirds full once a map has split.
            let nodes = (m.len() * 3).div_ceil(2 * 11).max(1);
            nodes * MAP_NODE + m.iter().map(|(k, v)| string(k) + json(v)).sum::<usize>()
        }
    }
}

/// An entry's weight for moka (`u32`, saturating), from its estimated bytes.
pub fn weight(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_objects_cost_a_whole_node() {
        let v: Value = serde_json::json!({"role": "member"});
        assert_eq!(json(&v), MAP_NODE + string("role") + string("member"));
        assert_eq!(json(&Value::Null), 0);
        assert_eq!(json(&serde_json::json!({})), 0);
        assert_eq!(weight(usize::MAX), u32::MAX);
    }
}
