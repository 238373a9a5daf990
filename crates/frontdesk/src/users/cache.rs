//! The tiered user cache. See the module header in `users/mod.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::alias::{Alias, AliasKind};
use super::batcher::{self, BatchQueue, BatchStats, Kind};
use crate::bus::{Bus, BusEvent, Overflow};
use crate::clock::SharedClock;
use crate::config::CacheConfig;
use crate::generations::Generations;
use crate::redis_link::RedisLink;
use crate::singleflight::{Flight, SingleFlight};
use crate::upstream::{ClerkClient, Endpoint, UpstreamError};
use crate::weigh;

/// A Clerk user as cached: Clerk's JSON byte for byte (what the proxy answers; held
/// compressed, see [`Json`]) and the few fields Frontdesk reads itself.
#[derive(Debug)]
pub struct CachedUser {
    raw: Json,
    pub summary: UserSummary,
    /// The user's email addresses other than the primary one (Clerk's
    /// `email_address` filter matches any); usually none, so usually no allocation.
    other_emails: Vec<String>,
}

/// Clerk user objects in both key orders (Clerk's own, and the sorted one of
/// serialisers such as the emulator's): the dictionary L1 compresses users against,
/// so their keys, enumerations and URL prefixes cost a back-reference, not bytes.
static DICTIONARY: &[u8] = include_bytes!("user_dict.json");

/// Clerk's JSON of a user as L1 holds it: LZ4 against [`DICTIONARY`] (about a
/// quarter of the bytes for a typical user; decompressing one takes about a
/// microsecond, on the proxy's and `fields=full` answers only), or as it came when
/// that does not make it smaller.
enum Json {
    Plain(Bytes),
    Lz4 { data: Box<[u8]>, len: u32 },
}

impl Json {
    fn pack(raw: Bytes) -> Self {
        let Ok(len) = u32::try_from(raw.len()) else {
            return Self::Plain(raw);
        };
        let data = lz4_flex::block::compress_with_dict(&raw, DICTIONARY);
        // Kept only if it reads back exactly, so reading it can never fail later.
        let exact = lz4_flex::block::decompress_with_dict(&data, raw.len(), DICTIONARY)
            .is_ok_and(|back| back == raw);
        if exact && data.len() < raw.len() {
            Self::Lz4 {
                data: data.into_boxed_slice(),
                len,
            }
        } else {
            Self::Plain(raw)
        }
    }

    fn bytes(&self) -> Bytes {
        match self {
            Self::Plain(b) => b.clone(),
            Self::Lz4 { data, len } => {
                match lz4_flex::block::decompress_with_dict(data, *len as usize, DICTIONARY) {
                    Ok(v) => Bytes::from(v),
                    // Checked when packed; unreachable short of memory corruption.
                    Err(e) => {
                        tracing::error!(error = %e, "cached user JSON does not decompress");
                        Bytes::new()
                    }
                }
            }
        }
    }

    /// Bytes held on the heap for it.
    fn heap_bytes(&self) -> usize {
        match self {
            // The buffer, and the shared header a clone adds.
            Self::Plain(b) => b.len() + weigh::ALLOC + 32,
            Self::Lz4 { data, .. } => data.len() + weigh::ALLOC,
        }
    }
}

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(b) => write!(f, "Json({} bytes)", b.len()),
            Self::Lz4 { data, len } => write!(f, "Json({len} bytes in {})", data.len()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UserSummary {
    pub id: String,
    pub username: Option<String>,
    pub primary_email: Option<String>,
    /// Clerk marks the primary email verified (`verification.status == "verified"`).
    pub primary_email_verified: bool,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// As Clerk sent it (`None`: absent or `null`): a parsed map would cost a tree
    /// node of over 600 bytes per user in L1; it is parsed where it is read.
    pub public_metadata: Option<Box<serde_json::value::RawValue>>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Deserialize)]
struct ClerkUserIn {
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    primary_email_address_id: Option<String>,
    #[serde(default)]
    email_addresses: Vec<EmailIn>,
    #[serde(default)]
    public_metadata: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    created_at: i64,
    #[serde(default)]
    updated_at: i64,
}

#[derive(Deserialize)]
struct EmailIn {
    id: String,
    email_address: String,
    /// `null` for an address nobody verified yet.
    #[serde(default)]
    verification: Option<VerificationIn>,
}

#[derive(Deserialize)]
struct VerificationIn {
    #[serde(default)]
    status: Option<String>,
}

impl EmailIn {
    fn verified(&self) -> bool {
        self.verification.as_ref().and_then(|v| v.status.as_deref()) == Some("verified")
    }
}

impl CachedUser {
    /// Parses Clerk's user JSON, keeping the bytes.
    pub fn parse(raw: Bytes) -> Result<Self, String> {
        let u: ClerkUserIn = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
        let primary = u
            .primary_email_address_id
            .as_ref()
            .and_then(|pid| u.email_addresses.iter().find(|e| &e.id == pid))
            .or(u.email_addresses.first());
        let primary_email = primary.map(|e| e.email_address.clone());
        let primary_email_verified = primary.is_some_and(EmailIn::verified);
        let other_emails = u
            .email_addresses
            .iter()
            .filter(|e| Some(&e.email_address) != primary_email.as_ref())
            .map(|e| e.email_address.clone())
            .collect();
        Ok(Self {
            other_emails,
            summary: UserSummary {
                id: u.id,
                username: u.username,
                primary_email,
                primary_email_verified,
                first_name: u.first_name,
                last_name: u.last_name,
                public_metadata: u.public_metadata,
                created_at: u.created_at,
                updated_at: u.updated_at,
            },
            raw: Json::pack(raw),
        })
    }

    /// Clerk's JSON of the user, byte for byte as Clerk sent it.
    pub fn raw(&self) -> Bytes {
        self.raw.bytes()
    }

    /// `image_url`, read from Clerk's JSON when asked (`/v1/users` answers,
    /// provisioning) rather than held twice: Clerk's image URLs are long.
    pub fn image_url(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct ImageOnly {
            #[serde(default)]
            image_url: Option<String>,
        }
        serde_json::from_slice::<ImageOnly>(&self.raw())
            .ok()
            .and_then(|u| u.image_url)
    }

    /// Every email address of the user, the primary first.
    fn emails(&self) -> impl Iterator<Item = &str> {
        self.summary
            .primary_email
            .as_deref()
            .into_iter()
            .chain(self.other_emails.iter().map(String::as_str))
    }

    /// `public_metadata`, parsed (`Null` when absent).
    pub fn public_metadata(&self) -> serde_json::Value {
        self.summary
            .public_metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m.get()).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn id(&self) -> &str {
        &self.summary.id
    }

    /// The aliases this user answers to: each email address and the username.
    pub fn aliases(&self) -> Vec<Alias> {
        self.emails()
            .map(|e| Alias::of(AliasKind::Email, e))
            .chain(
                self.summary
                    .username
                    .iter()
                    .map(|u| Alias::of(AliasKind::Username, u)),
            )
            .collect()
    }

    /// Bytes this user holds in L1: Clerk's JSON, the parsed fields and the
    /// allocations around them (see `weigh.rs`), for the L1 weigher.
    pub fn heap_bytes(&self) -> usize {
        let s = &self.summary;
        let emails = if self.other_emails.is_empty() {
            0
        } else {
            self.other_emails.len() * std::mem::size_of::<String>()
                + weigh::ALLOC
                + self
                    .other_emails
                    .iter()
                    .map(|e| weigh::string(e))
                    .sum::<usize>()
        };
        // The `Arc` (two counts) and the JSON.
        std::mem::size_of::<Self>()
            + 16
            + weigh::ALLOC
            + self.raw.heap_bytes()
            + weigh::string(&s.id)
            + weigh::opt_string(s.username.as_deref())
            + weigh::opt_string(s.primary_email.as_deref())
            + weigh::opt_string(s.first_name.as_deref())
            + weigh::opt_string(s.last_name.as_deref())
            + s.public_metadata
                .as_deref()
                .map_or(0, |m| weigh::string(m.get()))
            + emails
    }

    pub fn has_alias(&self, alias: &Alias) -> bool {
        match alias.kind {
            AliasKind::Email => self
                .emails()
                .any(|e| Alias::of(AliasKind::Email, e).value == alias.value),
            AliasKind::Username => self
                .summary
                .username
                .as_deref()
                .is_some_and(|u| Alias::of(AliasKind::Username, u).value == alias.value),
        }
    }
}

/// Where an answer came from; the proxy reports it as `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    L1,
    L2,
    Upstream,
    /// Past its TTL: served while a refresh runs, or because Clerk failed.
    Stale,
}

impl Source {
    pub fn x_cache(self) -> &'static str {
        match self {
            Source::L1 | Source::L2 => "HIT",
            Source::Upstream => "MISS",
            Source::Stale => "STALE",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Lookup {
    /// `None`: Clerk has no such user.
    pub user: Option<Arc<CachedUser>>,
    pub source: Source,
}

#[derive(Clone)]
struct Entry {
    user: Option<Arc<CachedUser>>,
    fresh_until_ms: u64,
}

/// L1's weigher: bytes of the key, the entry and the user, plus moka's own.
fn entry_weight(key: &str, e: &Entry) -> u32 {
    weigh::weight(
        weigh::MOKA_ENTRY
            + weigh::string(key)
            + std::mem::size_of::<Entry>()
            + e.user.as_ref().map_or(0, |u| u.heap_bytes()),
    )
}

/// The alias index's weigher: the key, the entry (both inline in quick_cache's slab)
/// and their strings.
#[derive(Clone)]
struct AliasWeigher;

impl quick_cache::Weighter<String, AliasEntry> for AliasWeigher {
    fn weight(&self, key: &String, e: &AliasEntry) -> u64 {
        (weigh::QUICK_CACHE_ENTRY
            + std::mem::size_of::<String>()
            + std::mem::size_of::<AliasEntry>()
            + weigh::string(key)
            + weigh::opt_string(e.user_id.as_deref())) as u64
    }
}

type LoadResult = Result<(Entry, Source), UpstreamError>;
type AliasLoadResult = Result<Option<Arc<CachedUser>>, UpstreamError>;

/// An alias index entry: the id the alias belongs to (`None`: Clerk has no user with
/// it). A positive entry is only a pointer: the user is read from the user cache and
/// checked to still answer to the alias.
#[derive(Clone)]
struct AliasEntry {
    user_id: Option<String>,
    fresh_until_ms: u64,
    /// For `None` entries: the invalidation epoch they were made in. Any user change
    /// may give some user this alias, so it voids every absent alias at once.
    epoch: u64,
}

#[derive(Debug, Default)]
struct Counters {
    l1_hits: AtomicU64,
    l1_misses: AtomicU64,
    l2_hits: AtomicU64,
    l2_misses: AtomicU64,
    l2_errors: AtomicU64,
    upstream_loads: AtomicU64,
    stale_served: AtomicU64,
    coalesced: AtomicU64,
    invalidations_sent: AtomicU64,
    invalidations_received: AtomicU64,
    alias_l1_hits: AtomicU64,
    alias_l1_misses: AtomicU64,
    alias_l2_hits: AtomicU64,
    alias_upstream_loads: AtomicU64,
    alias_coalesced: AtomicU64,
    alias_stale_dropped: AtomicU64,
}

/// Figures for `/v1/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStats {
    pub l1_entries: u64,
    /// Estimated bytes of L1's users (moka's weighted size; see `weigh.rs`).
    pub l1_weighted_bytes: u64,
    /// Estimated bytes of the alias index.
    pub alias_weighted_bytes: u64,
    pub l1_hits: u64,
    pub l1_misses: u64,
    pub l2_hits: u64,
    pub l2_misses: u64,
    pub l2_errors: u64,
    pub upstream_loads: u64,
    pub stale_served: u64,
    pub coalesced_waits: u64,
    pub batches: u64,
    pub batched_ids: u64,
    /// Ids waiting in the batcher now (queued, or in a list call being sent).
    pub batch_waiting: u64,
    /// List calls by id in flight now.
    pub batch_in_flight: u64,
    pub invalidations_sent: u64,
    pub invalidations_received: u64,
    pub alias_entries: u64,
    pub alias_l1_hits: u64,
    pub alias_l1_misses: u64,
    pub alias_l2_hits: u64,
    pub alias_upstream_loads: u64,
    pub alias_coalesced_waits: u64,
    /// Alias entries found pointing at a user that no longer answers to them.
    pub alias_stale_dropped: u64,
    pub alias_batches: u64,
    pub alias_batched_values: u64,
    /// Alias values waiting in the batchers now (queued, or in a list call being sent).
    pub alias_batch_waiting: u64,
}

#[derive(Clone)]
pub struct UserCache(Arc<Inner>);

struct Inner {
    l1: moka::sync::Cache<String, Entry>,
    redis: Option<Arc<RedisLink>>,
    bus: Arc<Bus>,
    batcher: BatchQueue,
    inflight: SingleFlight<String, LoadResult>,
    /// Asked whether a load would wait (circuit open, paused, budget spent).
    client: Arc<ClerkClient>,
    /// Bumped per user by every invalidation; a load that started before one does
    /// not write its (possibly older) answer into the caches.
    generations: Generations,
    config: CacheConfig,
    clock: SharedClock,
    counters: Counters,
    batch_stats: Arc<BatchStats>,
    /// The alias index (`alias:email:…`, `alias:username:…` → user id).
    aliases: quick_cache::sync::Cache<String, AliasEntry, AliasWeigher>,
    email_batcher: BatchQueue,
    username_batcher: BatchQueue,
    alias_inflight: SingleFlight<String, AliasLoadResult>,
    alias_batch_stats: Arc<BatchStats>,
    /// Bumped by every invalidation: voids absent-alias entries, and keeps a user
    /// loaded by alias out of the cache when an invalidation ran during the load.
    epoch: AtomicU64,
}

impl UserCache {
    pub fn new(
        client: Arc<ClerkClient>,
        redis: Option<Arc<RedisLink>>,
        bus: Arc<Bus>,
        config: CacheConfig,
        clock: SharedClock,
    ) -> Self {
        // moka's own TTL only bounds retention; freshness is judged against `clock`.
        let retention = Duration::from_millis(
            config.user_ttl_ms
                + (config.user_ttl_ms as f64 * config.ttl_jitter) as u64
                + config
                    .stale_if_error_ms
                    .max(config.stale_while_revalidate_ms),
        );
        // One byte budget for users and their alias index: a quarter for the index
        // (about two aliases per user, each far smaller than the user).
        let budget = config.l1_budget_bytes();
        let alias_budget = (budget / 4).max(1);
        let l1 = moka::sync::Cache::builder()
            .max_capacity(budget.saturating_sub(alias_budget).max(1))
            .weigher(|k: &String, e: &Entry| entry_weight(k, e))
            .time_to_live(retention)
            .build();
        let batch_stats = Arc::new(BatchStats::default());
        let alias_batch_stats = Arc::new(BatchStats::default());
        let timing = batcher::Policy {
            max: config.batch_max,
            max_in_flight: config.batch_max_in_flight,
            wait_share: config.batch_wait_share,
            max_wait: Duration::from_millis(config.batch_max_wait_ms),
            queue_max: config.batch_queue_max,
        };
        let batcher = batcher::spawn(client.clone(), Kind::Id, timing, batch_stats.clone());
        let email_batcher = batcher::spawn(
            client.clone(),
            Kind::Email,
            timing,
            alias_batch_stats.clone(),
        );
        let username_batcher = batcher::spawn(
            client.clone(),
            Kind::Username,
            timing,
            alias_batch_stats.clone(),
        );
        // quick_cache, not moka: a third of moka's bookkeeping per entry, and aliases
        // are two entries per user. Freshness is judged on `clock` when read; what
        // can no longer be served leaves by the size bound.
        let aliases = quick_cache::sync::Cache::with_weighter(
            usize::try_from(alias_budget / 160)
                .unwrap_or(usize::MAX)
                .max(16),
            alias_budget,
            AliasWeigher,
        );
        Self(Arc::new(Inner {
            client,
            l1,
            redis,
            bus,
            batcher,
            inflight: SingleFlight::new(|e| {
                Err(UpstreamError::Unavailable(format!("load task failed: {e}")))
            }),
            generations: Generations::default(),
            config,
            clock,
            counters: Counters::default(),
            batch_stats,
            aliases,
            email_batcher,
            username_batcher,
            alias_inflight: SingleFlight::new(|e| {
                Err(UpstreamError::Unavailable(format!("load task failed: {e}")))
            }),
            alias_batch_stats,
            epoch: AtomicU64::new(0),
        }))
    }

    /// One user: L1, then L2, then Clerk.
    pub async fn get(&self, id: &str) -> Result<Lookup, UpstreamError> {
        let inner = &self.0;
        let now = inner.clock.now_ms();
        let cached = inner.l1.get(id);
        if let Some(e) = &cached {
            if now < e.fresh_until_ms {
                inner.counters.l1_hits.fetch_add(1, Ordering::Relaxed);
                crate::hot_counter!("frontdesk_user_cache_hits_total", "tier" => "l1").increment(1);
                return Ok(Lookup {
                    user: e.user.clone(),
                    source: Source::L1,
                });
            }
            if now < e.fresh_until_ms + inner.config.stale_while_revalidate_ms {
                // Serve the old answer now; one refresh runs behind it.
                drop(self.load(id));
                return Ok(self.stale(e));
            }
        }
        inner.counters.l1_misses.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("frontdesk_user_cache_misses_total", "tier" => "l1").increment(1);
        if let Some(e) = &cached
            && now < e.fresh_until_ms + inner.config.stale_if_error_ms
            && inner.client.would_wait(Endpoint::ListUsers)
        {
            // Clerk is failing, paused or out of budget: the cache answers now rather
            // than queueing; one refresh runs behind it.
            drop(self.load(id));
            return Ok(self.stale(e));
        }
        match self.load(id).await {
            Ok((entry, source)) => Ok(Lookup {
                user: entry.user,
                source,
            }),
            Err(err) => match &cached {
                Some(e) if now < e.fresh_until_ms + inner.config.stale_if_error_ms => {
                    tracing::warn!(user_id = id, error = %err, "Clerk failed; serving a stale user");
                    Ok(self.stale(e))
                }
                _ => Err(err),
            },
        }
    }

    /// Many users, in the order asked; concurrent misses are batched.
    pub async fn get_many(&self, ids: &[String]) -> Vec<Result<Lookup, UpstreamError>> {
        futures::future::join_all(ids.iter().map(|id| self.get(id))).await
    }

    fn stale(&self, e: &Entry) -> Lookup {
        self.0.counters.stale_served.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("frontdesk_user_cache_stale_total").increment(1);
        Lookup {
            user: e.user.clone(),
            source: Source::Stale,
        }
    }

    /// The shared load of one user. The load runs as its own task, so it completes
    /// (and leaves the in-flight map) even if every caller gives up waiting.
    fn load(&self, id: &str) -> Flight<LoadResult> {
        let this = self.clone();
        let key = id.to_string();
        let (flight, joined) = self
            .0
            .inflight
            .load(id, move || async move { this.load_uncoalesced(&key).await });
        if joined {
            self.0.counters.coalesced.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("frontdesk_user_cache_coalesced_total").increment(1);
        }
        flight
    }

    async fn load_uncoalesced(&self, id: &str) -> LoadResult {
        let inner = &self.0;
        // A caller can miss L1 just before the previous load of this id fills it and
        // leaves the in-flight map, then start this load: that load's answer is
        // already here. (A load writes L1 before it leaves the map, and this one began
        // after that, so the check cannot miss it.)
        if let Some(e) = inner.l1.get(id)
            && inner.clock.now_ms() < e.fresh_until_ms
        {
            return Ok((e, Source::L1));
        }
        let generation = inner.generations.current(id);
        if let Some(entry) = self.l2_get(id).await {
            let cached = inner.generations.if_unchanged(id, generation, || {
                inner.l1.insert(id.to_string(), entry.clone());
            });
            if cached && let Some(u) = &entry.user {
                self.index_local(u, entry.fresh_until_ms);
            }
            return Ok((entry, Source::L2));
        }
        let raw = inner
            .batcher
            .submit(id)?
            .await
            .map_err(|_| UpstreamError::Unavailable("batch dropped".into()))??;
        inner
            .counters
            .upstream_loads
            .fetch_add(1, Ordering::Relaxed);
        let user = match raw {
            Some(raw) => Some(Arc::new(CachedUser::parse(raw).map_err(|detail| {
                UpstreamError::Malformed {
                    endpoint: "GET /v1/users",
                    detail,
                }
            })?)),
            None => None,
        };
        let now = inner.clock.now_ms();
        let entry = self.entry(user, now);
        let cached = inner.generations.if_unchanged(id, generation, || {
            inner.l1.insert(id.to_string(), entry.clone());
        });
        if cached {
            if let Some(u) = &entry.user {
                self.index_local(u, entry.fresh_until_ms);
                self.index_l2(u, entry.fresh_until_ms, now).await;
            }
            self.l2_put(id, &entry, now, generation).await;
        }
        Ok((entry, Source::Upstream))
    }

    fn entry(&self, user: Option<Arc<CachedUser>>, now: u64) -> Entry {
        let c = &self.0.config;
        let ttl = match &user {
            Some(_) => {
                let spread = (c.user_ttl_ms as f64 * c.ttl_jitter) as u64;
                c.user_ttl_ms
                    + if spread > 0 {
                        rand::random_range(0..=spread)
                    } else {
                        0
                    }
            }
            None => c.not_found_ttl_ms,
        };
        Entry {
            user,
            fresh_until_ms: now + ttl,
        }
    }

    fn l2_key(&self, id: &str) -> Option<String> {
        self.redis_key(&format!("user:{id}"))
    }

    fn redis_key(&self, key: &str) -> Option<String> {
        self.0.redis.as_ref().map(|r| r.key(key))
    }

    // ---- The alias index -------------------------------------------------------

    /// One user by an alias: the alias index (L1, then L2) gives the id, and the user
    /// comes from the user cache, so an alias hit costs no Clerk call when the user is
    /// cached under its id. Misses are batched into `GET /v1/users?email_address=…`
    /// (or `username=…`) calls; an alias Clerk does not know is remembered for
    /// `not_found_ttl_ms`.
    pub async fn get_by_alias(&self, alias: &Alias) -> Result<Lookup, UpstreamError> {
        let inner = &self.0;
        let key = alias.key();
        let now = inner.clock.now_ms();
        if let Some(e) = inner.aliases.get(&key)
            && now < e.fresh_until_ms
        {
            match &e.user_id {
                None if e.epoch == inner.epoch.load(Ordering::SeqCst) => {
                    self.alias_hit("l1");
                    return Ok(Lookup {
                        user: None,
                        source: Source::L1,
                    });
                }
                None => {}
                Some(id) => {
                    if let Some(l) = self.follow(alias, id).await? {
                        self.alias_hit("l1");
                        return Ok(l);
                    }
                }
            }
        }
        inner
            .counters
            .alias_l1_misses
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("frontdesk_user_alias_misses_total", "tier" => "l1", "kind" => alias.label()).increment(1);
        if let Some(id) = self.alias_l2_get(&key).await
            && let Some(l) = self.follow(alias, &id).await?
        {
            self.alias_hit("l2");
            if let Some(u) = &l.user {
                self.index_local(u, now + inner.config.user_ttl_ms);
            }
            return Ok(l);
        }
        let this = self.clone();
        let wanted = alias.clone();
        let (flight, joined) = inner
            .alias_inflight
            .load(&key, move || async move { this.load_alias(&wanted).await });
        if joined {
            inner
                .counters
                .alias_coalesced
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!("frontdesk_user_alias_coalesced_total").increment(1);
        }
        Ok(Lookup {
            user: flight.await?,
            source: Source::Upstream,
        })
    }

    /// Many users by alias, in the order asked; concurrent misses are batched.
    pub async fn get_many_by_alias(&self, aliases: &[Alias]) -> Vec<Result<Lookup, UpstreamError>> {
        futures::future::join_all(aliases.iter().map(|a| self.get_by_alias(a))).await
    }

    fn alias_hit(&self, tier: &'static str) {
        let c = &self.0.counters;
        match tier {
            "l1" => c.alias_l1_hits.fetch_add(1, Ordering::Relaxed),
            _ => c.alias_l2_hits.fetch_add(1, Ordering::Relaxed),
        };
        metrics::counter!("frontdesk_user_alias_hits_total", "tier" => tier).increment(1);
    }

    /// The user an alias entry points at, if it still answers to the alias; a stale
    /// entry (the user's email or username changed) is dropped.
    async fn follow(&self, alias: &Alias, id: &str) -> Result<Option<Lookup>, UpstreamError> {
        let lookup = self.get(id).await?;
        match &lookup.user {
            Some(u) if u.has_alias(alias) => Ok(Some(lookup)),
            _ => {
                self.0.aliases.remove(&alias.key());
                self.0
                    .counters
                    .alias_stale_dropped
                    .fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    /// Asks Clerk (through the alias's batch queue) and caches what it says: the user
    /// under its id with all its aliases, or the alias as absent.
    async fn load_alias(&self, alias: &Alias) -> AliasLoadResult {
        let inner = &self.0;
        let epoch = inner.epoch.load(Ordering::SeqCst);
        // As in `load_uncoalesced`: the previous load of this alias may have indexed
        // its answer between the caller's miss and this load.
        let now = inner.clock.now_ms();
        if let Some(e) = inner.aliases.get(&alias.key())
            && now < e.fresh_until_ms
        {
            match &e.user_id {
                None if e.epoch == epoch => return Ok(None),
                None => {}
                Some(id) => {
                    if let Some(u) = inner.l1.get(id).and_then(|entry| {
                        (now < entry.fresh_until_ms).then_some(entry.user).flatten()
                    }) && u.has_alias(alias)
                    {
                        return Ok(Some(u));
                    }
                }
            }
        }
        let queue = match alias.kind {
            AliasKind::Email => &inner.email_batcher,
            AliasKind::Username => &inner.username_batcher,
        };
        let raw = queue
            .submit(&alias.value)?
            .await
            .map_err(|_| UpstreamError::Unavailable("batch dropped".into()))??;
        inner
            .counters
            .alias_upstream_loads
            .fetch_add(1, Ordering::Relaxed);
        let now = inner.clock.now_ms();
        let Some(raw) = raw else {
            inner.aliases.insert(
                alias.key(),
                AliasEntry {
                    user_id: None,
                    fresh_until_ms: now + inner.config.not_found_ttl_ms,
                    epoch,
                },
            );
            return Ok(None);
        };
        let user = Arc::new(
            CachedUser::parse(raw).map_err(|detail| UpstreamError::Malformed {
                endpoint: "GET /v1/users",
                detail,
            })?,
        );
        let id = user.id().to_string();
        let entry = self.entry(Some(user.clone()), now);
        // Read before the epoch: an invalidation that bumps the epoch after the check
        // below bumps the generation after this read, so the insert is refused.
        let generation = inner.generations.current(&id);
        if inner.epoch.load(Ordering::SeqCst) == epoch {
            let cached = inner.generations.if_unchanged(&id, generation, || {
                inner.l1.insert(id.clone(), entry.clone());
            });
            if cached {
                self.index_local(&user, entry.fresh_until_ms);
                self.index_l2(&user, entry.fresh_until_ms, now).await;
                self.l2_put(&id, &entry, now, generation).await;
            }
        }
        Ok(Some(user))
    }

    /// Points every alias of `user` at it in L1.
    fn index_local(&self, user: &CachedUser, fresh_until_ms: u64) {
        for a in user.aliases() {
            self.0.aliases.insert(
                a.key(),
                AliasEntry {
                    user_id: Some(user.id().to_string()),
                    fresh_until_ms,
                    epoch: 0,
                },
            );
        }
    }

    /// Points every alias of `user` at it in L2 (`SET … PX`), in one pipeline.
    async fn index_l2(&self, user: &CachedUser, fresh_until_ms: u64, now: u64) {
        let inner = &self.0;
        let Some(redis) = inner.redis.as_ref() else {
            return;
        };
        if !redis.is_up() {
            return;
        }
        let px = fresh_until_ms.saturating_sub(now).max(1);
        let mut pipe = redis::pipe();
        let mut any = false;
        for a in user.aliases() {
            let key = redis.key(&a.key());
            if inner.bus.l2_suspect(&key) {
                continue;
            }
            pipe.cmd("SET")
                .arg(&key)
                .arg(user.id())
                .arg("PX")
                .arg(px)
                .ignore();
            any = true;
        }
        if !any {
            return;
        }
        let mut conn = redis.conn();
        let result: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        redis.record(&result);
    }

    async fn alias_l2_get(&self, key: &str) -> Option<String> {
        let inner = &self.0;
        let redis = inner.redis.as_ref()?;
        if !redis.is_up() {
            return None;
        }
        let key = redis.key(key);
        if inner.bus.l2_suspect(&key) {
            return None;
        }
        let mut conn = redis.conn();
        let result: redis::RedisResult<Option<String>> =
            redis::cmd("GET").arg(&key).query_async(&mut conn).await;
        redis.record(&result);
        let id = result.ok().flatten();
        if id.is_none() {
            metrics::counter!("frontdesk_user_alias_misses_total", "tier" => "l2").increment(1);
        }
        id
    }

    /// L2 record: `fresh_until_ms`, a newline, then Clerk's JSON (empty: no such user).
    async fn l2_get(&self, id: &str) -> Option<Entry> {
        let inner = &self.0;
        let redis = inner.redis.as_ref()?;
        if !redis.is_up() {
            return None;
        }
        let key = self.l2_key(id)?;
        if inner.bus.l2_suspect(&key) {
            // An invalidation of this key is still on its way to Redis.
            return None;
        }
        let mut conn = redis.conn();
        let result: redis::RedisResult<Option<Vec<u8>>> =
            redis::cmd("GET").arg(&key).query_async(&mut conn).await;
        redis.record(&result);
        let bytes = match result {
            Ok(Some(b)) => b,
            Ok(None) => {
                inner.counters.l2_misses.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("frontdesk_user_cache_misses_total", "tier" => "l2").increment(1);
                return None;
            }
            Err(_) => {
                inner.counters.l2_errors.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let split = bytes.iter().position(|b| *b == b'\n')?;
        let head = std::str::from_utf8(&bytes[..split]).ok()?;
        // `v{updated_at} {fresh_until_ms}` (older records: `{fresh_until_ms}` alone).
        let fresh = head.rsplit(' ').next()?;
        let fresh_until_ms: u64 = fresh.parse().ok()?;
        if fresh_until_ms <= inner.clock.now_ms() {
            inner.counters.l2_misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let body = Bytes::from(bytes).slice(split + 1..);
        let user = if body.is_empty() {
            None
        } else {
            Some(Arc::new(CachedUser::parse(body).ok()?))
        };
        inner.counters.l2_hits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("frontdesk_user_cache_hits_total", "tier" => "l2").increment(1);
        Some(Entry {
            user,
            fresh_until_ms,
        })
    }

    /// Writes `entry` to L2 unless L2 holds a newer version of the user (by Clerk's
    /// `updated_at`, compared inside Redis), and undoes the write when an
    /// invalidation of the user arrived while it was on its way (`generation` moved).
    async fn l2_put(&self, id: &str, entry: &Entry, now: u64, generation: u64) {
        let inner = &self.0;
        let Some(redis) = inner.redis.as_ref() else {
            return;
        };
        if !redis.is_up() {
            return;
        }
        let Some(key) = self.l2_key(id) else { return };
        if inner.bus.l2_suspect(&key) {
            return;
        }
        // A user Clerk does not have is version 0: any real user replaces it.
        let version = entry.user.as_ref().map_or(0, |u| u.summary.updated_at);
        let mut value = format!("v{version} {}\n", entry.fresh_until_ms).into_bytes();
        if let Some(u) = &entry.user {
            value.extend_from_slice(&u.raw());
        }
        let px = entry.fresh_until_ms.saturating_sub(now).max(1);
        let mut conn = redis.conn();
        let result: redis::RedisResult<i64> = l2_cas_script()
            .key(&key)
            .arg(version)
            .arg(&value)
            .arg(px)
            .invoke_async(&mut conn)
            .await;
        redis.record(&result);
        match result {
            Ok(1) => {}
            Ok(_) => {
                metrics::counter!("frontdesk_user_cache_l2_cas_lost_total").increment(1);
                return;
            }
            Err(_) => return,
        }
        if !inner.generations.unchanged(id, generation) {
            // Invalidated while the write was on its way: take it back, unless
            // something else has replaced it meanwhile.
            let result: redis::RedisResult<i64> = l2_undo_script()
                .key(&key)
                .arg(&value)
                .invoke_async(&mut conn)
                .await;
            redis.record(&result);
            metrics::counter!("frontdesk_user_cache_l2_undone_total").increment(1);
        }
    }

    /// Forgets a user here (L1, its aliases, loads in flight) and returns its L2 keys
    /// (the user's, and its aliases' as this instance knew them), which the caller
    /// queues for deletion on the bus.
    pub fn forget_local(&self, id: &str) -> Vec<String> {
        let inner = &self.0;
        let old = self.drop_local(id);
        let mut keys: Vec<String> = old
            .iter()
            .flat_map(|u| u.aliases())
            .filter_map(|a| self.redis_key(&a.key()))
            .collect();
        keys.extend(self.l2_key(id));
        inner
            .counters
            .invalidations_sent
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("frontdesk_user_cache_invalidations_total", "direction" => "sent")
            .increment(1);
        keys
    }

    /// Evicts a user from L1 with the aliases its cached copy answers to, voids every
    /// absent alias (the change may have given this user one of them), and returns
    /// the evicted copy.
    fn drop_local(&self, id: &str) -> Option<Arc<CachedUser>> {
        let inner = &self.0;
        inner.epoch.fetch_add(1, Ordering::SeqCst);
        let old = inner.l1.get(id).and_then(|e| e.user);
        inner.generations.bump_with(id, || inner.l1.invalidate(id));
        if let Some(u) = &old {
            for a in u.aliases() {
                inner.aliases.remove(&a.key());
            }
        }
        old
    }

    /// Forgets a user everywhere: L1 here, L2, and every other instance's L1. The L2
    /// delete and the announcement are queued on the bus, which retries them until
    /// Redis takes them; `Err` when its outbox could not take them (a fleet-wide
    /// resync is then on its way).
    pub async fn invalidate(&self, id: &str) -> Result<(), Overflow> {
        let keys = self.forget_local(id);
        self.0
            .bus
            .enqueue(keys, Some(BusEvent::UserInvalidated { id: id.to_string() }))
    }

    /// Stores Clerk's fresh answer after a write (write-through), and tells the other
    /// instances to drop their copy (they will find this one in L2).
    pub async fn put(&self, user: CachedUser) {
        let inner = &self.0;
        let id = user.id().to_string();
        let now = inner.clock.now_ms();
        let user = Arc::new(user);
        let entry = self.entry(Some(user.clone()), now);
        // The aliases the old copy answered to and the new one does not are dropped
        // here and in L2; the other instances drop theirs on the announcement below.
        inner.epoch.fetch_add(1, Ordering::SeqCst);
        let old = inner.l1.get(&id).and_then(|e| e.user);
        let gone: Vec<String> = old
            .iter()
            .flat_map(|o| o.aliases())
            .filter(|a| !user.has_alias(a))
            .map(|a| {
                inner.aliases.remove(&a.key());
                a.key()
            })
            .collect();
        inner.generations.bump_with(&id, || {
            inner.l1.insert(id.clone(), entry.clone());
        });
        if !gone.is_empty() {
            let keys = gone.iter().filter_map(|k| self.redis_key(k)).collect();
            // An overflow is followed by a fleet-wide resync: nothing is lost.
            let _ = inner.bus.enqueue(keys, None);
        }
        self.index_local(&user, entry.fresh_until_ms);
        self.index_l2(&user, entry.fresh_until_ms, now).await;
        let generation = inner.generations.current(&id);
        self.l2_put(&id, &entry, now, generation).await;
        inner
            .counters
            .invalidations_sent
            .fetch_add(1, Ordering::Relaxed);
        inner.bus.publish(BusEvent::UserInvalidated { id }).await;
    }

    /// Applies another instance's invalidation to this instance's L1.
    pub fn evict_local(&self, id: &str) {
        self.drop_local(id);
        self.0
            .counters
            .invalidations_received
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("frontdesk_user_cache_invalidations_total", "direction" => "received")
            .increment(1);
    }

    /// Drops all of L1 (after the bus may have missed messages).
    pub fn clear_local(&self) {
        self.0.epoch.fetch_add(1, Ordering::SeqCst);
        self.0.generations.bump_all();
        self.0.l1.invalidate_all();
        self.0.aliases.clear();
    }

    /// Sets the gauges of L1's weighted bytes (users and aliases), read at scrape time.
    pub fn record_gauges(&self) {
        metrics::gauge!("frontdesk_cache_l1_weighted_bytes", "cache" => "users")
            .set(self.0.l1.weighted_size() as f64);
        metrics::gauge!("frontdesk_cache_l1_weighted_bytes", "cache" => "aliases")
            .set(self.0.aliases.weight() as f64);
    }

    /// Brings L1's entry count and weighted size up to date (moka applies inserts
    /// and evictions in batches).
    pub fn run_pending_tasks(&self) {
        self.0.l1.run_pending_tasks();
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.0.counters;
        self.0.l1.run_pending_tasks();
        CacheStats {
            l1_weighted_bytes: self.0.l1.weighted_size(),
            alias_weighted_bytes: self.0.aliases.weight(),
            alias_entries: self.0.aliases.len() as u64,
            alias_l1_hits: c.alias_l1_hits.load(Ordering::Relaxed),
            alias_l1_misses: c.alias_l1_misses.load(Ordering::Relaxed),
            alias_l2_hits: c.alias_l2_hits.load(Ordering::Relaxed),
            alias_upstream_loads: c.alias_upstream_loads.load(Ordering::Relaxed),
            alias_coalesced_waits: c.alias_coalesced.load(Ordering::Relaxed),
            alias_stale_dropped: c.alias_stale_dropped.load(Ordering::Relaxed),
            alias_batches: self.0.alias_batch_stats.batches.load(Ordering::Relaxed),
            alias_batched_values: self.0.alias_batch_stats.ids.load(Ordering::Relaxed),
            alias_batch_waiting: self.0.alias_batch_stats.waiting.load(Ordering::Relaxed),
            l1_entries: self.0.l1.entry_count(),
            l1_hits: c.l1_hits.load(Ordering::Relaxed),
            l1_misses: c.l1_misses.load(Ordering::Relaxed),
            l2_hits: c.l2_hits.load(Ordering::Relaxed),
            l2_misses: c.l2_misses.load(Ordering::Relaxed),
            l2_errors: c.l2_errors.load(Ordering::Relaxed),
            upstream_loads: c.upstream_loads.load(Ordering::Relaxed),
            stale_served: c.stale_served.load(Ordering::Relaxed),
            coalesced_waits: c.coalesced.load(Ordering::Relaxed),
            batches: self.0.batch_stats.batches.load(Ordering::Relaxed),
            batched_ids: self.0.batch_stats.ids.load(Ordering::Relaxed),
            batch_waiting: self.0.batch_stats.waiting.load(Ordering::Relaxed),
            batch_in_flight: self.0.batch_stats.in_flight.load(Ordering::Relaxed),
            invalidations_sent: c.invalidations_sent.load(Ordering::Relaxed),
            invalidations_received: c.invalidations_received.load(Ordering::Relaxed),
        }
    }
}

/// `SET` unless the stored record's version (`v{updated_at} …`) is newer than ARGV[1].
fn l2_cas_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        redis::Script::new(
            r"local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, '^v(%-?%d+) '))
  if v and v > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1",
        )
    })
}

/// `DEL` only if the key still holds exactly ARGV[1].
fn l2_undo_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        redis::Script::new(
            r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
        )
    })
}
