//! The tenant-scoped response cache on proxied routes (cache-aside at the edge): what
//! apps otherwise write by hand in every route (`tenant:{id}:{resource}:{hash}` in
//! Redis, `X-Cache`, invalidation after mutations), done once, correctly across
//! instances.
//!
//! A route with `cache = "<policy>"` has its `GET`/`HEAD` answers cached per tenant
//! (the verified session's organization or user, or a header the app trusts). L1 is a
//! moka cache bounded by bytes; L2 is Redis, bounded by each entry's TTL. Invalidation
//! is O(1): every entry key holds the tenant's and the `(tenant, resource)`'s version
//! nonces, so replacing a nonce makes every entry under it unreachable (they age out
//! of both tiers on their own). Nonces live in Redis so every instance agrees; an
//! instance knows them for at most `version_recheck_ms` and hears of changes through
//! the bus sooner. Without Redis (or while it is down) everything works on L1 with
//! local nonces: never an error.

pub mod entry;
pub mod key;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

use crate::bus::{Bus, BusEvent, Overflow};
use crate::clock::SharedClock;
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::events::{AppEvent, EventHub};
use crate::generations::Generations;
use crate::json::JsonBody;
use crate::redis_link::RedisLink;
use crate::singleflight::SingleFlight;

pub use entry::Stored;

pub use crate::config::{PolicyConfig, ResponseCacheConfig};

/// Where a policy takes the tenant from.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantFrom {
    Org,
    User,
    Header(HeaderName),
}

impl TenantFrom {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "org" => Ok(Self::Org),
            "user" => Ok(Self::User),
            _ => match s.strip_prefix("header:") {
                Some(name) => HeaderName::from_bytes(name.trim().as_bytes())
                    .map(Self::Header)
                    .map_err(|_| format!("tenant {s:?}: not a header name")),
                None => Err(format!(
                    "tenant {s:?} must be \"org\", \"user\" or \"header:<Name>\""
                )),
            },
        }
    }
}

/// A policy, checked.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub resource: String,
    pub tenant: TenantFrom,
    pub ttl_ms: u64,
    pub swr_ms: u64,
    pub vary_query: bool,
    pub max_body_bytes: usize,
}

impl Policy {
    fn from_config(c: &PolicyConfig) -> Result<Self, String> {
        if c.name.is_empty()
            || !c
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return Err(format!(
                "name {:?} must be letters, digits, '_', '-' or '.'",
                c.name
            ));
        }
        if c.resource.is_empty() {
            return Err(format!("{:?}: resource must not be empty", c.name));
        }
        if c.ttl_s == 0 || c.max_body_bytes == 0 {
            return Err(format!(
                "{:?}: ttl_s and max_body_bytes must be at least 1",
                c.name
            ));
        }
        Ok(Self {
            name: c.name.clone(),
            resource: c.resource.clone(),
            tenant: TenantFrom::parse(&c.tenant).map_err(|e| format!("{:?}: {e}", c.name))?,
            ttl_ms: c.ttl_s.saturating_mul(1000),
            swr_ms: c.stale_while_revalidate_s.saturating_mul(1000),
            vary_query: c.vary_query,
            max_body_bytes: c.max_body_bytes,
        })
    }

    /// The tenant of a request under this policy; `None`: not cached.
    fn tenant_of(&self, who: &Who<'_>, headers: &HeaderMap) -> Option<String> {
        let t = match &self.tenant {
            TenantFrom::Org => who.org_id?.to_string(),
            TenantFrom::User => who.user_id?.to_string(),
            TenantFrom::Header(name) => headers.get(name)?.to_str().ok()?.trim().to_string(),
        };
        (!t.is_empty()).then_some(t)
    }
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

/// The start-up checks of `[[cache_policies]]` and the routes' `cache` names.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let mut names: Vec<&str> = Vec::new();
    let mut policies = Vec::new();
    for c in &config.cache_policies {
        let p = Policy::from_config(c).map_err(|e| invalid("cache_policies", e))?;
        if names.contains(&c.name.as_str()) {
            return Err(invalid(
                "cache_policies",
                format!("name {:?} is used twice", c.name),
            ));
        }
        names.push(&c.name);
        policies.push(p);
    }
    for r in &config.routes {
        let Some(name) = &r.cache else { continue };
        let Some(p) = policies.iter().find(|p| &p.name == name) else {
            return Err(invalid(
                "routes",
                format!("route {:?}: unknown cache policy {name:?}", r.path),
            ));
        };
        let session_tenant = matches!(p.tenant, TenantFrom::Org | TenantFrom::User);
        if r.auth == crate::config::RouteAuth::Public && session_tenant {
            return Err(invalid(
                "routes",
                format!(
                    "route {:?} is public, so its session is never read and cache policy {name:?} (a session tenant) would never apply",
                    r.path
                ),
            ));
        }
    }
    if config.response_cache.l1_max_bytes == 0 {
        return Err(invalid(
            "response_cache.l1_max_bytes",
            "must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Who is asking, as the gateway verified it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Who<'a> {
    pub user_id: Option<&'a str>,
    pub org_id: Option<&'a str>,
}

/// How the cache reaches the app: the gateway's forwarding, for one request.
pub type Fetch = Arc<dyn Fn(Request) -> BoxFuture<'static, Response> + Send + Sync>;

/// What one load produced.
#[derive(Clone)]
enum Loaded {
    /// A cacheable answer; `true` when it came from the app (else from L2).
    Entry(Arc<Stored>, bool),
    /// Not cacheable: the app's answer, for the first caller that takes it (the others
    /// ask the app themselves).
    Pass(Arc<Mutex<Option<Response>>>),
}

/// A version nonce and when it was last read from (or agreed with) Redis.
#[derive(Clone)]
struct Known {
    nonce: Arc<str>,
    checked_ms: u64,
}

/// Where an invalidation came from (a metrics label).
#[derive(Debug, Clone, Copy)]
pub enum Source {
    Mutation,
    Webhook,
    Api,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Mutation => "mutation",
            Source::Webhook => "webhook",
            Source::Api => "api",
        }
    }
}

/// Version keys live this long in Redis (refreshed whenever re-created). One expiring
/// is a spurious invalidation of that tenant, never a stale answer.
const VERSION_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Version nonces known in process at most.
const MAX_KNOWN_VERSIONS: u64 = 200_000;

/// Gets each version nonce, or sets it to the proposed one when absent.
const VERSIONS_SCRIPT: &str = r#"
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v then
    v = ARGV[i]
    redis.call('SET', k, v, 'PX', ARGV[#KEYS + 1])
  end
  out[i] = v
end
return out
"#;

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

pub struct ResponseCache {
    policies: Vec<Arc<Policy>>,
    l1: moka::sync::Cache<String, Arc<Stored>>,
    versions: moka::sync::Cache<String, Known>,
    /// Guards `versions` against a Redis read that an invalidation overtook.
    generations: Generations,
    inflight: SingleFlight<String, Loaded>,
    redis: Option<Arc<RedisLink>>,
    bus: Arc<Bus>,
    events: EventHub,
    clock: SharedClock,
    recheck_ms: u64,
    script: redis::Script,
}

impl ResponseCache {
    pub fn new(
        config: &Config,
        redis: Option<Arc<RedisLink>>,
        bus: Arc<Bus>,
        events: EventHub,
        clock: SharedClock,
    ) -> crate::Result<Self> {
        validate(config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let policies = config
            .cache_policies
            .iter()
            .map(|c| Policy::from_config(c).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("cache_policies: {e}"))?;
        // Freshness is judged on the injected clock; this only bounds how long moka
        // keeps what can no longer be served.
        let longest = policies
            .iter()
            .map(|p| p.ttl_ms + p.swr_ms)
            .max()
            .unwrap_or(1_000);
        Ok(Self {
            l1: moka::sync::Cache::builder()
                .max_capacity(config.response_cache.l1_max_bytes)
                .weigher(|k: &String, v: &Arc<Stored>| v.weight().saturating_add(k.len() as u32))
                .time_to_live(Duration::from_millis(longest.max(1)))
                .build(),
            versions: moka::sync::Cache::new(MAX_KNOWN_VERSIONS),
            generations: Generations::default(),
            inflight: SingleFlight::new(|_| Loaded::Pass(Arc::new(Mutex::new(None)))),
            policies,
            redis,
            bus,
            events,
            clock,
            recheck_ms: config.response_cache.version_recheck_ms,
            script: redis::Script::new(VERSIONS_SCRIPT),
        })
    }

    fn policy(&self, name: &str) -> Option<&Arc<Policy>> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// The request header policy `name` reads its tenant from, if it does.
    pub fn tenant_header(&self, name: &str) -> Option<&HeaderName> {
        match &self.policy(name)?.tenant {
            TenantFrom::Header(h) => Some(h),
            TenantFrom::Org | TenantFrom::User => None,
        }
    }

    /// Whether `resource` belongs to a configured policy.
    pub fn knows_resource(&self, resource: &str) -> bool {
        self.policies.iter().any(|p| p.resource == resource)
    }

    /// Answers one request of a route with `cache = policy`: from the cache, or through
    /// `fetch` (once per key, however many ask at the same time), with `X-Cache`.
    pub async fn handle(
        self: &Arc<Self>,
        policy: &str,
        who: Who<'_>,
        req: Request,
        fetch: Fetch,
    ) -> Response {
        let Some(policy) = self.policy(policy).cloned() else {
            // Routes are validated at start; a name not found is not cached.
            return with_x_cache(fetch(req).await, "BYPASS");
        };
        let tenant = policy.tenant_of(&who, req.headers());
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            let response = fetch(req).await;
            if response.status().is_success() {
                if let Some(t) = &tenant {
                    if let Err(e) = self
                        .invalidate(t, Some(&policy.resource), Source::Mutation)
                        .await
                    {
                        tracing::warn!(error = %e, "a mutation's invalidation could not be queued");
                    }
                }
            }
            return with_x_cache(response, "BYPASS");
        }
        let Some(tenant) = tenant else {
            count("bypass");
            return with_x_cache(fetch(req).await, "BYPASS");
        };
        let head = method == Method::HEAD;
        let (tv, rv) = self.versions(&tenant, &policy.resource).await;
        let key = key::entry_key(key::EntryParts {
            tenant: &tenant,
            resource: &policy.resource,
            tenant_version: &tv,
            resource_version: &rv,
            path: req.uri().path(),
            query: policy.vary_query.then(|| req.uri().query().unwrap_or("")),
        });
        let now = self.clock.now_ms();
        if let Some(e) = self.l1.get(&key) {
            if now < e.stored_at_ms + policy.ttl_ms {
                count("hit");
                return serve(&e, &policy, now, "HIT", head);
            }
            if now < e.stored_at_ms + policy.ttl_ms + policy.swr_ms {
                self.refresh(&key, &policy, &req, &fetch);
                count("stale");
                return serve(&e, &policy, now, "STALE", head);
            }
        }
        let (flight, _) = self.inflight.load(&key, || {
            self.clone().load(
                key.clone(),
                policy.clone(),
                upstream_request(&req),
                fetch.clone(),
                true,
            )
        });
        match flight.await {
            Loaded::Entry(e, from_app) => {
                let now = self.clock.now_ms();
                if from_app {
                    count("miss");
                    serve(&e, &policy, now, "MISS", head)
                } else if now < e.stored_at_ms + policy.ttl_ms {
                    count("hit");
                    serve(&e, &policy, now, "HIT", head)
                } else {
                    self.refresh(&key, &policy, &req, &fetch);
                    count("stale");
                    serve(&e, &policy, now, "STALE", head)
                }
            }
            Loaded::Pass(slot) => {
                count("bypass");
                let taken = slot.lock().take();
                match taken {
                    Some(r) => with_x_cache(r, "BYPASS"),
                    None => with_x_cache(fetch(req).await, "BYPASS"),
                }
            }
        }
    }

    /// Starts one background refresh of `key` (joins the one running).
    fn refresh(self: &Arc<Self>, key: &str, policy: &Arc<Policy>, req: &Request, fetch: &Fetch) {
        let _ = self.inflight.load(key, || {
            self.clone().load(
                key.to_string(),
                policy.clone(),
                upstream_request(req),
                fetch.clone(),
                false,
            )
        });
    }

    /// L2, else the app. Runs as its own task (see `SingleFlight`).
    async fn load(
        self: Arc<Self>,
        key: String,
        policy: Arc<Policy>,
        req: Request,
        fetch: Fetch,
        try_l2: bool,
    ) -> Loaded {
        if try_l2 {
            // A caller can miss L1 just before the previous load of this key fills it
            // and leaves the in-flight map, then start this load: that answer is here.
            if let Some(e) = self.l1.get(&key)
                && self.clock.now_ms() < e.stored_at_ms + policy.ttl_ms
            {
                return Loaded::Entry(e, false);
            }
            if let Some(e) = self.l2_get(&key).await {
                if self.clock.now_ms() < e.stored_at_ms + policy.ttl_ms + policy.swr_ms {
                    let e = Arc::new(e);
                    self.l1.insert(key, e.clone());
                    return Loaded::Entry(e, false);
                }
            }
        }
        let response = fetch(req).await;
        if !cacheable(&response, &policy) {
            return Loaded::Pass(Arc::new(Mutex::new(Some(response))));
        }
        let (parts, body) = response.into_parts();
        match read_limited(body, policy.max_body_bytes).await {
            Ok(body) => {
                let mut headers = parts.headers;
                for h in [
                    header::CONTENT_LENGTH,
                    header::CACHE_CONTROL,
                    header::AGE,
                    X_CACHE,
                ] {
                    headers.remove(h);
                }
                let e = Arc::new(Stored::new(self.clock.now_ms(), headers, body));
                self.l1.insert(key.clone(), e.clone());
                // Written before the flight answers (one round trip): an answer
                // served as a MISS is in L2 for every other instance.
                if let Some(redis) = self.redis.as_ref().filter(|r| r.is_up()) {
                    let mut conn = redis.conn();
                    let r: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(redis.key(&key))
                        .arg(e.encode())
                        .arg("PX")
                        .arg((policy.ttl_ms + policy.swr_ms).max(1))
                        .query_async(&mut conn)
                        .await;
                    redis.record(&r);
                }
                Loaded::Entry(e, true)
            }
            Err(body) => Loaded::Pass(Arc::new(Mutex::new(Some(Response::from_parts(
                parts, body,
            ))))),
        }
    }

    async fn l2_get(&self, key: &str) -> Option<Stored> {
        let redis = self.redis.as_ref().filter(|r| r.is_up())?;
        let mut conn = redis.conn();
        let r: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("GET")
            .arg(redis.key(key))
            .query_async(&mut conn)
            .await;
        redis.record(&r);
        Stored::decode(&r.ok()??)
    }

    /// The tenant's and the `(tenant, resource)`'s version nonces.
    async fn versions(&self, tenant: &str, resource: &str) -> (Arc<str>, Arc<str>) {
        let (rk, tenant_len) = key::version_keys(tenant, resource);
        let now = self.clock.now_ms();
        let t = self.versions.get(&rk[..tenant_len]);
        let r = self.versions.get(rk.as_str());
        let recent = |k: &Option<Known>| {
            k.as_ref()
                .is_some_and(|k| now < k.checked_ms.saturating_add(self.recheck_ms))
        };
        if let (true, true, Some(t), Some(r)) = (recent(&t), recent(&r), &t, &r) {
            return (t.nonce.clone(), r.nonce.clone());
        }
        let tk = rk[..tenant_len].to_string();
        if let Some(redis) = self.redis.as_ref().filter(|r| r.is_up()) {
            let (tk_full, rk_full) = (redis.key(&tk), redis.key(&rk));
            // A queued delete of either key means Redis still holds the old nonce.
            if !self.bus.l2_suspect(&tk_full) && !self.bus.l2_suspect(&rk_full) {
                let seen = (self.generations.current(&tk), self.generations.current(&rk));
                let mut conn = redis.conn();
                let got: redis::RedisResult<Vec<String>> = self
                    .script
                    .key(&tk_full)
                    .key(&rk_full)
                    .arg(nonce())
                    .arg(nonce())
                    .arg(VERSION_TTL_MS)
                    .invoke_async(&mut conn)
                    .await;
                redis.record(&got);
                if let Ok([tn, rn]) = got.as_deref() {
                    let (tn, rn): (Arc<str>, Arc<str>) = (tn.as_str().into(), rn.as_str().into());
                    for (k, n, s) in [(&tk, &tn, seen.0), (&rk, &rn, seen.1)] {
                        let known = Known {
                            nonce: n.clone(),
                            checked_ms: now,
                        };
                        self.generations
                            .if_unchanged(k, s, || self.versions.insert(k.clone(), known));
                    }
                    return (tn, rn);
                }
            }
        }
        // Without Redis: what this instance knows, else a nonce of its own (an unknown
        // nonce only means misses). Concurrent first requests agree on one nonce (the
        // first one in), or each would miss under a key of its own.
        let local = |k: &String, known: Option<Known>| -> Arc<str> {
            match known {
                Some(k) => k.nonce,
                None => {
                    let mut n: Arc<str> = nonce().into();
                    let seen = self.generations.current(k);
                    let known = Known {
                        nonce: n.clone(),
                        checked_ms: 0,
                    };
                    self.generations.if_unchanged(k, seen, || {
                        n = self.versions.get_with(k.clone(), || known).nonce;
                    });
                    n
                }
            }
        };
        (local(&tk, t), local(&rk, r))
    }

    /// Voids every cached answer of `tenant` (or only of its `resource`), here at once,
    /// in Redis now (or, if Redis is down, as soon as the bus can), and on the other
    /// instances when the bus delivers it; announced as an `invalidate` event. `Err`
    /// when the bus outbox is full (the caller should fail and be retried).
    pub async fn invalidate(
        &self,
        tenant: &str,
        resource: Option<&str>,
        source: Source,
    ) -> Result<(), Overflow> {
        let vk = match resource {
            Some(r) => key::resource_version_key(tenant, r),
            None => key::tenant_version_key(tenant),
        };
        let now = self.clock.now_ms();
        let fresh_nonce: Arc<str> = nonce().into();
        let fresh = Known {
            nonce: fresh_nonce.clone(),
            checked_ms: now,
        };
        self.generations
            .bump_with(&vk, || self.versions.insert(vk.clone(), fresh));
        let event = BusEvent::ResponseCacheInvalidated {
            tenant: tenant.to_string(),
            resource: resource.map(str::to_string),
        };
        if let Some(redis) = &self.redis {
            let full = redis.key(&vk);
            // The new nonce goes to Redis as it is, so the other instances adopt it
            // and share the answers this one caches next. If Redis cannot take it now,
            // the bus deletes the old one as soon as it can (whoever reads next makes
            // a new one), and until then nobody here reads that key from Redis.
            let mut stored = false;
            if redis.is_up() && !self.bus.l2_suspect(&full) {
                let mut conn = redis.conn();
                let r: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(&full)
                    .arg(&*fresh_nonce)
                    .arg("PX")
                    .arg(VERSION_TTL_MS)
                    .query_async(&mut conn)
                    .await;
                redis.record(&r);
                stored = r.is_ok();
            }
            if stored {
                self.bus.publish(event).await;
            } else {
                self.bus.enqueue(vec![full], Some(event))?;
            }
        }
        metrics::counter!("frontdesk_respcache_invalidations_total", "source" => source.as_str())
            .increment(1);
        self.events.publish(AppEvent {
            kind: "invalidate".into(),
            subject: tenant.to_string(),
            at_ms: now,
            detail: json!({ "resource": resource }),
        });
        Ok(())
    }

    /// Another instance invalidated: forget the nonce, so the next request reads the
    /// new one from Redis.
    pub fn on_invalidated(&self, tenant: &str, resource: Option<&str>) {
        let vk = match resource {
            Some(r) => key::resource_version_key(tenant, r),
            None => key::tenant_version_key(tenant),
        };
        self.generations
            .bump_with(&vk, || self.versions.invalidate(&vk));
    }

    /// Messages may have been missed (bus resync): forget every nonce.
    pub fn clear_local(&self) {
        self.generations.bump_all();
        self.versions.invalidate_all();
    }

    /// `POST /v1/cache/invalidate` (api listener).
    pub fn router<S: Clone + Send + Sync + 'static>(self: &Arc<Self>) -> Router<S> {
        Router::new()
            .route("/v1/cache/invalidate", post(invalidate_api))
            .with_state(self.clone())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateIn {
    tenant: String,
    #[serde(default)]
    resource: Option<String>,
}

async fn invalidate_api(
    State(cache): State<Arc<ResponseCache>>,
    JsonBody(body): JsonBody<InvalidateIn>,
) -> Result<Response, Error> {
    if body.tenant.trim().is_empty() || body.tenant.len() > 512 {
        return Err(Error::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_tenant",
            "tenant must be a non-empty id of at most 512 bytes",
        ));
    }
    if let Some(r) = &body.resource {
        if !cache.knows_resource(r) {
            return Err(Error::client(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_resource",
                "resource is not the resource of any [[cache_policies]] entry",
            ));
        }
    }
    cache
        .invalidate(&body.tenant, body.resource.as_deref(), Source::Api)
        .await
        .map_err(|_| {
            Error::client(
                StatusCode::SERVICE_UNAVAILABLE,
                "invalidation_queue_full",
                "the invalidation could not be queued; retry shortly",
            )
        })?;
    Ok(axum::Json(json!({
        "tenant": body.tenant,
        "resource": body.resource,
        "invalidated": true,
    }))
    .into_response())
}

fn count(outcome: &'static str) {
    metrics::counter!("frontdesk_respcache_requests_total", "outcome" => outcome).increment(1);
}

fn nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The request a load sends: a `GET` (also for `HEAD`, so the answer can be stored)
/// with the caller's headers but nothing that would make the app answer partially,
/// conditionally or compressed for this one client.
fn upstream_request(req: &Request) -> Request {
    let mut headers = req.headers().clone();
    for h in [
        header::ACCEPT_ENCODING,
        header::RANGE,
        header::IF_RANGE,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(h);
    }
    let mut out = Request::new(Body::empty());
    *out.method_mut() = Method::GET;
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = headers;
    out
}

/// Whether the app's answer may be stored, judged on its head.
fn cacheable(r: &Response, policy: &Policy) -> bool {
    if r.status() != StatusCode::OK || r.headers().contains_key(header::SET_COOKIE) {
        return false;
    }
    let refused = r
        .headers()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.split('=').next().unwrap_or("").trim())
        .any(|d| d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("private"));
    if refused {
        return false;
    }
    if r.headers()
        .get_all(header::VARY)
        .iter()
        .any(|v| v.as_bytes().trim_ascii() == b"*")
    {
        return false;
    }
    let too_long = r
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > policy.max_body_bytes);
    !too_long
}

/// The whole body when it fits in `max`; otherwise a body that replays what was read
/// and streams the rest.
async fn read_limited(body: Body, max: usize) -> Result<Bytes, Body> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) if buf.len() + c.len() <= max => buf.extend_from_slice(&c),
            Ok(c) => {
                let head = futures::stream::iter([Ok::<Bytes, axum::Error>(buf.freeze()), Ok(c)]);
                return Err(Body::from_stream(head.chain(stream)));
            }
            Err(e) => {
                let head = futures::stream::iter([Ok(buf.freeze()), Err(e)]);
                return Err(Body::from_stream(head));
            }
        }
    }
    Ok(buf.freeze())
}

fn with_x_cache(mut r: Response, value: &'static str) -> Response {
    r.headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(value));
    r
}

/// A stored answer with `X-Cache`, `Age` and the cache's own `Cache-Control`.
fn serve(e: &Stored, policy: &Policy, now: u64, x_cache: &'static str, head: bool) -> Response {
    // Every header set here is already in the template (no growth, values replaced).
    let mut headers = e.served_headers().clone();
    let age_s = now.saturating_sub(e.stored_at_ms) / 1000;
    let remaining_s = (e.stored_at_ms + policy.ttl_ms).saturating_sub(now) / 1000;
    let cc = format!(
        "private, max-age={remaining_s}, stale-while-revalidate={}",
        policy.swr_ms / 1000
    );
    if let Ok(v) = HeaderValue::from_str(&cc) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    headers.insert(header::AGE, HeaderValue::from(age_s));
    headers.insert(X_CACHE, HeaderValue::from_static(x_cache));
    let body = if head {
        Body::empty()
    } else {
        Body::from(e.body.clone())
    };
    let mut r = Response::new(body);
    *r.headers_mut() = headers;
    r
}
