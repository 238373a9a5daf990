//! Cached reads of the proxy: the generic read cache (lists, counts, organizations,
//! JWKS) and user lists answered from the user cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::{X_CACHE, json_response, relay, upstream_error_response};
use crate::bus::{Bus, BusEvent};
use crate::clock::SharedClock;
use crate::config::CacheConfig;
use crate::singleflight::SingleFlight;
use crate::upstream::{ClerkClient, UpstreamError, UpstreamRequest, UpstreamResponse};
use crate::weigh;

/// A read's answer, and whether it came from the cache.
type FetchResult = Result<(UpstreamResponse, bool), UpstreamError>;
use crate::users::{Alias, AliasKind, CachedUser, Source, UserCache};

#[derive(Clone)]
struct Cached {
    response: UpstreamResponse,
    fresh_until_ms: u64,
}

pub struct ReadCache {
    entries: moka::future::Cache<ReadKey, Cached>,
    /// Per resource namespace (`users`, `organizations`, …): part of every key, so a
    /// write voids all of its namespace's reads in O(1).
    versions: Mutex<HashMap<String, u64>>,
    inflight: SingleFlight<ReadKey, FetchResult>,
    config: CacheConfig,
    clock: SharedClock,
}

impl ReadCache {
    pub fn new(config: CacheConfig, clock: SharedClock) -> Self {
        let retention = Duration::from_millis(
            config.proxy_ttl_ms.max(config.jwks_ttl_ms) + config.stale_if_error_ms,
        );
        Self {
            entries: moka::future::Cache::builder()
                .max_capacity(config.proxy_budget_bytes())
                .weigher(|k: &ReadKey, c: &Cached| {
                    let r = &c.response;
                    let headers: usize = r
                        .headers
                        .iter()
                        .map(|(n, v)| n.as_str().len() + v.len() + 2 * weigh::ALLOC)
                        .sum();
                    weigh::weight(
                        weigh::MOKA_ENTRY
                            + std::mem::size_of::<ReadKey>()
                            + std::mem::size_of::<Cached>()
                            + weigh::opt_string(k.api_version.as_deref())
                            + weigh::string(&k.namespace)
                            + weigh::string(&k.path)
                            + weigh::string(&k.query)
                            + r.body.len()
                            + weigh::ALLOC
                            + headers,
                    )
                })
                .time_to_live(retention)
                .build(),
            versions: Mutex::new(HashMap::new()),
            inflight: SingleFlight::new(|e| {
                Err(UpstreamError::Unavailable(format!(
                    "proxy task failed: {e}"
                )))
            }),
            config,
            clock,
        }
    }

    fn version(&self, ns: &str) -> u64 {
        self.versions.lock().get(ns).copied().unwrap_or(0)
    }

    /// Voids cached reads of `ns` here and on every other instance.
    pub async fn bump(&self, ns: &str, bus: &Bus) {
        self.bump_local(ns);
        bus.publish(BusEvent::ProxyNamespaceBumped {
            namespace: ns.to_string(),
        })
        .await;
    }

    pub fn bump_local(&self, ns: &str) {
        *self.versions.lock().entry(ns.to_string()).or_insert(0) += 1;
    }

    pub fn clear_local(&self) {
        self.entries.invalidate_all();
    }

    pub async fn get(
        self: &Arc<Self>,
        client: &Arc<ClerkClient>,
        ns: &str,
        path: &str,
        query: &str,
        api_version: Option<String>,
        secret: &str,
    ) -> Response {
        let mut key = ReadKey::new(secret, api_version.as_deref(), path, query);
        // The namespace comes from the validated path the caller parsed.
        key.namespace = ns.to_string();
        key.version = self.version(ns);
        let now = self.clock.now_ms();
        let previous = self.entries.get(&key).await;
        if let Some(c) = &previous {
            if now < c.fresh_until_ms {
                crate::hot_counter!("frontdesk_proxy_requests_total", "outcome" => "hit")
                    .increment(1);
                return relay(c.response.clone(), "HIT");
            }
        }
        // Keyed by the normalized query, forwarded as the client sent it.
        let path_and_query = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        let ttl = if path == "/v1/jwks" {
            self.config.jwks_ttl_ms
        } else {
            self.config.proxy_ttl_ms
        };
        let req = UpstreamRequest {
            api_version,
            ..UpstreamRequest::get(path_and_query)
        };
        match self.fetch(client, key, req, ttl).await {
            // The load this request just missed had filled the entry.
            Ok((resp, true)) => {
                crate::hot_counter!("frontdesk_proxy_requests_total", "outcome" => "hit")
                    .increment(1);
                relay(resp, "HIT")
            }
            Ok((resp, false)) if resp.status == StatusCode::OK => {
                metrics::counter!("frontdesk_proxy_requests_total", "outcome" => "miss")
                    .increment(1);
                relay(resp, "MISS")
            }
            Ok((resp, _))
                if resp.status.is_server_error()
                    || resp.status == StatusCode::TOO_MANY_REQUESTS =>
            {
                match self.stale(&previous, now) {
                    Some(c) => relay(c.response, "STALE"),
                    None => relay(resp, "MISS"),
                }
            }
            Ok((resp, _)) => relay(resp, "MISS"),
            Err(e) => match self.stale(&previous, now) {
                Some(c) => relay(c.response, "STALE"),
                None => upstream_error_response(&e),
            },
        }
    }

    fn stale(&self, previous: &Option<Cached>, now: u64) -> Option<Cached> {
        let c = previous.as_ref()?;
        (now < c.fresh_until_ms + self.config.stale_if_error_ms).then(|| {
            metrics::counter!("frontdesk_proxy_requests_total", "outcome" => "stale").increment(1);
            c.clone()
        })
    }

    /// One upstream call per key at a time; concurrent callers share its answer, and
    /// the call caches a 200 before it leaves the in-flight map. The flag says the
    /// answer came from the cache: a caller can miss the entry just before the previous
    /// call fills it and start this load after that call has left the map.
    async fn fetch(
        self: &Arc<Self>,
        client: &Arc<ClerkClient>,
        key: ReadKey,
        req: UpstreamRequest,
        ttl: u64,
    ) -> FetchResult {
        let this = self.clone();
        let client = client.clone();
        let (flight, _) = self.inflight.load(&key.clone(), move || async move {
            if let Some(c) = this.entries.get(&key).await
                && this.clock.now_ms() < c.fresh_until_ms
            {
                return Ok((c.response, true));
            }
            let version = key.version;
            let resp = client.send(req).await?;
            // A write may have bumped the namespace while we fetched: do not cache an
            // answer that may predate it.
            if resp.status == StatusCode::OK && this.version(&key.namespace) == version {
                let fresh_until_ms = this.clock.now_ms() + ttl;
                this.entries
                    .insert(
                        key,
                        Cached {
                            response: resp.clone(),
                            fresh_until_ms,
                        },
                    )
                    .await;
            }
            Ok((resp, false))
        });
        flight.await
    }
}

/// What one cached read is keyed by. A struct rather than a joined string, so no
/// `|` or `?` in a header or path can make two different reads share an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadKey {
    /// The first 8 bytes of the SHA-256 of the secret key: reads of different Clerk
    /// instances never mix, and no secret is kept in a key.
    pub scope: [u8; 8],
    /// `Clerk-API-Version` as the client sent it.
    pub api_version: Option<String>,
    /// The resource namespace (`users`, `organizations`, …): the path's first segment.
    pub namespace: String,
    /// The namespace's version when the key was made (see [`ReadCache::bump`]).
    pub version: u64,
    pub path: String,
    /// The query, [normalized](normalize_query).
    pub query: String,
}

impl ReadKey {
    /// The key of a read at namespace version 0.
    pub fn new(secret: &str, api_version: Option<&str>, path: &str, query: &str) -> Self {
        let digest = Sha256::digest(secret.as_bytes());
        let mut scope = [0u8; 8];
        scope.copy_from_slice(&digest[..8]);
        let namespace = path
            .trim_start_matches("/v1/")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        Self {
            scope,
            api_version: api_version.map(str::to_string),
            namespace,
            version: 0,
            path: path.to_string(),
            query: normalize_query(query),
        }
    }
}

/// Query pairs decoded, sorted and re-encoded, so `b=2&a=1` and `a=1&b=2` share a key.
pub fn normalize_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// `GET /v1/users?user_id=…` answered from the user cache when the query asks only
/// for ids (plus paging and creation-time order, which the cache can reproduce);
/// `None` when the query needs Clerk.
pub async fn user_list_from_cache(users: &UserCache, query: &str) -> Option<Response> {
    let mut ids: Vec<String> = Vec::new();
    let mut aliases: Vec<Alias> = Vec::new();
    let mut limit: usize = 10;
    let mut offset: usize = 0;
    let mut descending = true;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            // Only ids of Clerk's syntax become cache keys; Clerk answers the rest.
            "user_id" if super::is_clerk_id(&v) => ids.push(v.into_owned()),
            // `getUserList({ emailAddress })` / `({ username })`: the alias index.
            "email_address" => aliases.push(Alias::parse(AliasKind::Email, &v)?),
            "username" => aliases.push(Alias::parse(AliasKind::Username, &v)?),
            "limit" => limit = v.parse().ok().filter(|n| (1..=500).contains(n))?,
            "offset" => offset = v.parse().ok()?,
            "order_by" => match v.as_ref() {
                "-created_at" => descending = true,
                "+created_at" | "created_at" => descending = false,
                _ => return None,
            },
            _ => return None,
        }
    }
    // Clerk answers 422 beyond 100 values; let it say so. Filters of different kinds
    // combine (AND) in Clerk; only one kind at a time is answered here.
    let kinds = [
        !ids.is_empty(),
        aliases.iter().any(|a| a.kind == AliasKind::Email),
        aliases.iter().any(|a| a.kind == AliasKind::Username),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 || ids.len() > 100 || aliases.len() > 100 {
        return None;
    }
    let results = if ids.is_empty() {
        aliases.sort_by(|a, b| a.value.cmp(&b.value));
        aliases.dedup();
        users.get_many_by_alias(&aliases).await
    } else {
        ids.sort();
        ids.dedup();
        users.get_many(&ids).await
    };
    let mut found: Vec<Arc<CachedUser>> = Vec::with_capacity(results.len());
    let mut x_cache = "HIT";
    for result in results {
        match result {
            Ok(lookup) => {
                match lookup.source {
                    Source::Upstream => x_cache = "MISS",
                    Source::Stale if x_cache == "HIT" => x_cache = "STALE",
                    _ => {}
                }
                if let Some(u) = lookup.user {
                    found.push(u);
                }
            }
            Err(e) => return Some(upstream_error_response(&e)),
        }
    }
    found.sort_by_key(|u| (u.summary.created_at, u.summary.id.clone()));
    // Two emails of one user find it twice; Clerk lists it once.
    found.dedup_by(|a, b| a.summary.id == b.summary.id);
    if descending {
        found.reverse();
    }
    let raws: Vec<Bytes> = found
        .iter()
        .skip(offset)
        .take(limit)
        .map(|u| u.raw())
        .collect();
    let mut body = Vec::with_capacity(raws.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, raw) in raws.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(raw);
    }
    body.push(b']');
    let mut r = json_response(StatusCode::OK, Bytes::from(body));
    r.headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(x_cache));
    Some(r.into_response())
}
