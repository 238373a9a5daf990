//! Who is this request: the verified session, the local user and the app's profile,
//! resolved together and cached; and race-free first-login provisioning.
//!
//! Resolution: context cache (L1, then L2) → the store (user and profile) → on a
//! user's first request, the Clerk user (through the user cache) becomes the local
//! row and the profile is ensured. The cache holds only complete contexts (a user
//! *with* its profile), written after the rows exist, so the next request sees them
//! and no cached context can make a dashboard wait for a profile forever.

pub mod api;
mod auth;
pub mod roles;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use auth::Auth;
pub use roles::{role_of, upsert_from_clerk};

use crate::bus::{Bus, Overflow};
use crate::clock::SharedClock;
use crate::config::ContextConfig;
use crate::error::{Error, Result};
use crate::generations::Generations;
use crate::redis_link::RedisLink;
use crate::singleflight::{Flight, SingleFlight};
use crate::store::{Ensured, LocalUser, Profile, Store};
use crate::users::UserCache;
use crate::weigh;

/// A request's identity as the app sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Context {
    pub user: LocalUser,
    pub profile: Profile,
    /// `"user":{…},"profile":{…}` as `/me` answers them, rendered once per cached
    /// context rather than once per request.
    #[serde(skip)]
    rendered: std::sync::OnceLock<Vec<u8>>,
}

impl PartialEq for Context {
    fn eq(&self, other: &Self) -> bool {
        self.user == other.user && self.profile == other.profile
    }
}

/// The user as `/me` shows it (no Clerk bookkeeping columns).
#[derive(Serialize)]
struct UserOut<'a> {
    id: i64,
    clerk_id: &'a str,
    email: Option<&'a str>,
    name: Option<&'a str>,
    image_url: Option<&'a str>,
    role: &'a str,
    created_at: i64,
    updated_at: i64,
}

impl Context {
    pub fn new(user: LocalUser, profile: Profile) -> Self {
        Self {
            user,
            profile,
            rendered: std::sync::OnceLock::new(),
        }
    }

    /// Bytes this context holds in the cache: the rows' strings and profile data and
    /// the rendered `/me` members (rendered now if they were not, since every
    /// context served by `/me` holds them), for the L1 weigher (see `weigh.rs`).
    pub fn heap_bytes(&self) -> usize {
        let u = &self.user;
        let p = &self.profile;
        std::mem::size_of::<Self>()
            + 16
            + weigh::ALLOC
            + weigh::string(&u.clerk_id)
            + weigh::opt_string(u.email.as_deref())
            + weigh::opt_string(u.name.as_deref())
            + weigh::opt_string(u.image_url.as_deref())
            + weigh::string(&u.role)
            + weigh::opt_string(p.email.as_deref())
            + weigh::opt_string(p.display_name.as_deref())
            + weigh::json(&p.data)
            // Rendered into a 512-byte buffer that grows by doubling.
            + self.rendered().len().next_power_of_two().max(512)
            + weigh::ALLOC
    }

    /// `"user":{…},"profile":{…}` (a JSON object's members, without braces).
    pub fn rendered(&self) -> &[u8] {
        self.rendered.get_or_init(|| {
            let u = &self.user;
            let user = UserOut {
                id: u.id,
                clerk_id: &u.clerk_id,
                email: u.email.as_deref(),
                name: u.name.as_deref(),
                image_url: u.image_url.as_deref(),
                role: &u.role,
                created_at: u.created_at,
                updated_at: u.updated_at,
            };
            let mut out = Vec::with_capacity(512);
            out.extend_from_slice(b"\"user\":");
            // Serialising plain structs of strings and numbers cannot fail.
            let _ = serde_json::to_writer(&mut out, &user);
            out.extend_from_slice(b",\"profile\":");
            let _ = serde_json::to_writer(&mut out, &self.profile);
            out
        })
    }
}

#[derive(Clone)]
struct Cached {
    context: Arc<Context>,
    fresh_until_ms: u64,
}

/// Where a context came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    CacheL1,
    CacheL2,
    Store,
    /// Made now: the user's first request (or first since its profile went missing).
    Provisioned(Ensured),
}

/// Shared provisioning of one user: concurrent first requests on this instance wait
/// for one run (across instances the store's `ON CONFLICT` makes them converge).
type Provisioning = Flight<ProvisionResult>;
type ProvisionResult = Result<(Arc<Context>, Ensured), Arc<Error>>;

#[derive(Clone)]
pub struct ContextService(Arc<Inner>);

struct Inner {
    store: Store,
    users: Option<UserCache>,
    redis: Option<Arc<RedisLink>>,
    /// Knows which L2 keys have an invalidation still on its way to Redis.
    bus: Arc<Bus>,
    l1: moka::sync::Cache<String, Cached>,
    inflight: SingleFlight<String, ProvisionResult>,
    /// Per-user invalidation generations (see `generations.rs`).
    generations: Generations,
    config: ContextConfig,
    clock: SharedClock,
}

impl ContextService {
    pub fn new(
        store: Store,
        users: Option<UserCache>,
        redis: Option<Arc<RedisLink>>,
        bus: Arc<Bus>,
        config: ContextConfig,
        clock: SharedClock,
    ) -> Self {
        let l1 = moka::sync::Cache::builder()
            .max_capacity(config.l1_budget_bytes())
            .weigher(|k: &String, c: &Cached| {
                weigh::weight(
                    weigh::MOKA_ENTRY
                        + weigh::string(k)
                        + std::mem::size_of::<Cached>()
                        + c.context.heap_bytes(),
                )
            })
            .time_to_live(Duration::from_millis(config.ttl_ms.max(1)))
            .build();
        Self(Arc::new(Inner {
            store,
            users,
            redis,
            bus,
            l1,
            inflight: SingleFlight::new(|e| {
                Err(Arc::new(Error::Internal(anyhow::anyhow!(
                    "provisioning task failed: {e}"
                ))))
            }),
            generations: Generations::default(),
            config,
            clock,
        }))
    }

    /// The context of the Clerk user `clerk_id`, creating what is missing.
    pub async fn resolve(&self, clerk_id: &str) -> Result<(Arc<Context>, Resolved)> {
        let inner = &self.0;
        let now = inner.clock.now_ms();
        if let Some(c) = inner.l1.get(clerk_id).filter(|c| now < c.fresh_until_ms) {
            crate::hot_counter!("frontdesk_context_cache_total", "result" => "hit", "tier" => "l1")
                .increment(1);
            tracing::debug!(user_id = clerk_id, tier = "l1", "context_cache_hit");
            return check_alive(c.context).map(|c| (c, Resolved::CacheL1));
        }
        let generation = inner.generations.current(clerk_id);
        if let Some(c) = self.l2_get(clerk_id, now).await {
            metrics::counter!("frontdesk_context_cache_total", "result" => "hit", "tier" => "l2")
                .increment(1);
            tracing::debug!(user_id = clerk_id, tier = "l2", "context_cache_hit");
            inner.generations.if_unchanged(clerk_id, generation, || {
                inner.l1.insert(clerk_id.to_string(), c.clone());
            });
            return check_alive(c.context).map(|c| (c, Resolved::CacheL2));
        }
        metrics::counter!("frontdesk_context_cache_total", "result" => "miss", "tier" => "all")
            .increment(1);
        tracing::info!(user_id = clerk_id, "context_cache_miss");
        let (context, ensured) = self.provision(clerk_id).await.map_err(unshare)?;
        let how = match ensured {
            Ensured::Existing => Resolved::Store,
            other => Resolved::Provisioned(other),
        };
        Ok((context, how))
    }

    /// Makes sure the user and its profile exist (idempotent), and caches the result.
    /// Returns whether this call created the profile.
    pub async fn ensure(&self, clerk_id: &str) -> Result<(Arc<Context>, bool)> {
        let (context, ensured) = self.provision(clerk_id).await.map_err(unshare)?;
        Ok((context, ensured.created()))
    }

    fn provision(&self, clerk_id: &str) -> Provisioning {
        let this = self.clone();
        let key = clerk_id.to_string();
        // The run carries the span of the request that started it, so its log lines
        // (profile_created, …) have that request's id.
        let run = move || {
            crate::telemetry::in_current_request(async move {
                this.provision_uncoalesced(&key).await.map_err(Arc::new)
            })
        };
        self.0.inflight.load(clerk_id, run).0
    }

    async fn provision_uncoalesced(&self, clerk_id: &str) -> Result<(Arc<Context>, Ensured)> {
        let inner = &self.0;
        let generation = inner.generations.current(clerk_id);
        let started = Instant::now();
        let now = inner.clock.now_ms() as i64;
        let user = match inner.store.context_by_clerk_id(clerk_id).await? {
            Some((user, Some(profile))) => {
                let context = check_alive(Arc::new(Context::new(user, profile)))?;
                self.cache(clerk_id, &context, generation).await;
                return Ok((context, Ensured::Existing));
            }
            Some((user, None)) => user,
            None => {
                let users = inner.users.as_ref().ok_or_else(|| {
                    Error::client(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "upstream_unconfigured",
                        "no Clerk instance is configured to look up new users",
                    )
                })?;
                let lookup = users.get(clerk_id).await?;
                let clerk_user = lookup.user.ok_or_else(|| {
                    Error::unauthorized(
                        "user_not_found",
                        "the token's user does not exist in Clerk",
                    )
                })?;
                let upsert = upsert_from_clerk(&clerk_user, &inner.config);
                inner.store.upsert_user(&upsert, now).await?
            }
        };
        if user.deleted_at.is_some() {
            return Err(user_deleted());
        }
        let ensured = inner
            .store
            .ensure_profile(&user, &inner.config.profile_defaults, now)
            .await;
        let (profile, ensured) = match ensured {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(user_id = clerk_id, error = %e, "profile_creation_failed");
                metrics::counter!("frontdesk_provisioning_total", "outcome" => "failed")
                    .increment(1);
                return Err(e);
            }
        };
        match ensured {
            Ensured::Created => {
                tracing::info!(
                    user_id = clerk_id,
                    profile_id = profile.id,
                    "profile_created"
                );
            }
            Ensured::LinkedByEmail => {
                tracing::info!(
                    user_id = clerk_id,
                    profile_id = profile.id,
                    "profile_linked_by_email"
                );
            }
            Ensured::CreatedAmbiguous => {
                tracing::warn!(user_id = clerk_id, "profile_link_ambiguous");
                tracing::info!(
                    user_id = clerk_id,
                    profile_id = profile.id,
                    "profile_created"
                );
            }
            Ensured::CreatedUnverifiedEmail => {
                tracing::warn!(
                    user_id = clerk_id,
                    decision = "profile_link",
                    "profile_link_unverified_email"
                );
                tracing::info!(
                    user_id = clerk_id,
                    profile_id = profile.id,
                    "profile_created"
                );
            }
            Ensured::Existing => {}
        }
        let outcome = match ensured {
            Ensured::Existing => "existing",
            Ensured::Created => "created",
            Ensured::LinkedByEmail => "linked_by_email",
            Ensured::CreatedAmbiguous => "created_ambiguous",
            Ensured::CreatedUnverifiedEmail => "created_unverified_email",
        };
        metrics::counter!("frontdesk_provisioning_total", "outcome" => outcome).increment(1);
        metrics::histogram!("frontdesk_provisioning_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let context = Arc::new(Context::new(user, profile));
        self.cache(clerk_id, &context, generation).await;
        Ok((context, ensured))
    }

    /// Writes a complete context to L1 and L2, unless it was invalidated meanwhile:
    /// the L1 insert is checked atomically with the generation, and an L2 write that
    /// an invalidation overtook is taken back.
    async fn cache(&self, clerk_id: &str, context: &Arc<Context>, generation: u64) {
        let inner = &self.0;
        let fresh_until_ms = inner.clock.now_ms() + inner.config.ttl_ms;
        let cached = inner.generations.if_unchanged(clerk_id, generation, || {
            inner.l1.insert(
                clerk_id.to_string(),
                Cached {
                    context: context.clone(),
                    fresh_until_ms,
                },
            );
        });
        if !cached {
            return;
        }
        let Some(redis) = inner.redis.as_ref().filter(|r| r.is_up()) else {
            return;
        };
        let key = redis.key(&format!("ctx:{clerk_id}"));
        if inner.bus.l2_suspect(&key) {
            return;
        }
        let Ok(json) = serde_json::to_vec(&**context) else {
            return;
        };
        let mut conn = redis.conn();
        let result: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg(&json)
            .arg("PX")
            .arg(inner.config.ttl_ms.max(1))
            .query_async(&mut conn)
            .await;
        redis.record(&result);
        if result.is_ok() && !inner.generations.unchanged(clerk_id, generation) {
            let result: redis::RedisResult<i64> = redis::Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
            )
            .key(&key)
            .arg(&json)
            .invoke_async(&mut conn)
            .await;
            redis.record(&result);
        }
    }

    async fn l2_get(&self, clerk_id: &str, now: u64) -> Option<Cached> {
        let redis = self.0.redis.as_ref().filter(|r| r.is_up())?;
        let key = redis.key(&format!("ctx:{clerk_id}"));
        if self.0.bus.l2_suspect(&key) {
            return None;
        }
        let mut conn = redis.conn();
        let result: redis::RedisResult<Option<Vec<u8>>> =
            redis::cmd("GET").arg(&key).query_async(&mut conn).await;
        redis.record(&result);
        let bytes = result.ok()??;
        let context: Context = serde_json::from_slice(&bytes).ok()?;
        // L2 expiry is Redis's PX; L1 keeps it at most one more TTL.
        Some(Cached {
            context: Arc::new(context),
            fresh_until_ms: now + self.0.config.ttl_ms,
        })
    }

    /// Forgets a user's context here and returns its L2 key, for the caller to queue
    /// for deletion on the bus.
    pub fn forget_local(&self, clerk_id: &str) -> Option<String> {
        self.evict_local(clerk_id);
        self.0
            .redis
            .as_ref()
            .map(|r| r.key(&format!("ctx:{clerk_id}")))
    }

    /// Forgets a user's context here and in L2 (other instances hear it through the
    /// user invalidation on the bus).
    pub async fn invalidate(&self, clerk_id: &str) -> Result<(), Overflow> {
        let key = self.forget_local(clerk_id);
        self.0.bus.enqueue(key.into_iter().collect(), None)
    }

    pub fn evict_local(&self, clerk_id: &str) {
        self.0
            .generations
            .bump_with(clerk_id, || self.0.l1.invalidate(clerk_id));
    }

    pub fn clear_local(&self) {
        self.0.generations.bump_all();
        self.0.l1.invalidate_all();
    }

    /// Puts a complete context in L1 as a resolution would (warming, and
    /// `frontdesk-bench memory`, which fills the cache without a store round trip
    /// per user).
    pub fn cache_local(&self, context: Arc<Context>) {
        let inner = &self.0;
        let clerk_id = context.user.clerk_id.clone();
        let fresh_until_ms = inner.clock.now_ms() + inner.config.ttl_ms;
        inner.l1.insert(
            clerk_id,
            Cached {
                context,
                fresh_until_ms,
            },
        );
    }

    /// L1's contexts and their estimated bytes (moka's weighted size), after
    /// applying pending inserts and evictions.
    pub fn l1_size(&self) -> (u64, u64) {
        self.0.l1.run_pending_tasks();
        (self.0.l1.entry_count(), self.0.l1.weighted_size())
    }

    /// Sets the gauge of the context cache's weighted bytes, read at scrape time.
    pub fn record_gauges(&self) {
        metrics::gauge!("frontdesk_cache_l1_weighted_bytes", "cache" => "contexts")
            .set(self.0.l1.weighted_size() as f64);
    }
}

fn user_deleted() -> Error {
    Error::unauthorized("user_deleted", "this user has been deleted")
}

fn check_alive(c: Arc<Context>) -> Result<Arc<Context>> {
    if c.user.deleted_at.is_some() {
        Err(user_deleted())
    } else {
        Ok(c)
    }
}

/// A shared provisioning error, as an answer for one caller.
fn unshare(e: Arc<Error>) -> Error {
    match Arc::try_unwrap(e) {
        Ok(e) => e,
        Err(shared) => match &*shared {
            Error::Client {
                status,
                code,
                detail,
            } => Error::Client {
                status: *status,
                code,
                detail: detail.clone(),
            },
            Error::StoreUnavailable(e) => Error::StoreUnavailable(e.clone()),
            Error::UpstreamUnavailable {
                detail,
                retry_after_s,
            } => Error::UpstreamUnavailable {
                detail: detail.clone(),
                retry_after_s: *retry_after_s,
            },
            Error::Internal(e) => Error::Internal(anyhow::anyhow!("{e:#}")),
        },
    }
}
