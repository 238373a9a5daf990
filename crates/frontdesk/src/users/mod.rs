//! Clerk users without hammering Clerk: the tiered user cache (L1 in process, L2 in
//! Redis, then Clerk), and the native user API on the api listener.
//!
//! A look-up goes L1 → L2 → Clerk. Concurrent misses for one user share one load;
//! loads for different users are gathered into `GET /v1/users?user_id=…` calls of at
//! most 100 ids, held open while a call is in flight (`batcher.rs`). "No such user" is cached briefly.
//! Past its TTL an entry is served while one refresh runs (stale-while-revalidate),
//! and served for longer when Clerk fails or limits us (stale-if-error). Invalidation
//! removes a user from L1 and L2 and reaches every instance's L1 over the bus.
//!
//! Look-ups by email or username go through the alias index (`alias.rs`): alias →
//! user id, in L1 and L2, pointing at the one cached copy of the user. A user loaded
//! by any key indexes all its aliases; alias misses are batched like id misses
//! (`GET /v1/users?email_address=…`); an alias entry is followed only while the user
//! still answers to it, and every invalidation voids the absent-alias entries.

mod alias;
pub mod api;
mod batcher;
mod cache;

pub use alias::{Alias, AliasKind};
pub use cache::{CacheStats, CachedUser, Lookup, Source, UserCache, UserSummary};
