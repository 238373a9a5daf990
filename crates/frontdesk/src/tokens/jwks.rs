//! The instance's signing keys from its JWKS, fetched through a narrow
//! [`JwksSource`] and cached so that verification needs no network call:
//!
//! - a fetched key set is fresh for `jwks_ttl_ms` (1 h);
//! - a `kid` not in a fresh set triggers a refetch at most once per
//!   `unknown_kid_cooldown_ms` (5 min), so forged kids cannot hammer Clerk;
//! - concurrent misses share one fetch (single flight: one async lock, and a
//!   generation number so that whoever waited re-reads instead of fetching again);
//! - a failed fetch is remembered for `failed_fetch_ttl_ms` (or Clerk's `Retry-After`,
//!   if longer) and nothing is fetched meanwhile;
//! - when a set has gone stale and Clerk cannot be reached, its keys keep verifying.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use jsonwebtoken::DecodingKey;
use parking_lot::RwLock;
use serde_json::Value;

use super::TokenError;
use crate::clock::SharedClock;

/// Where the JWKS comes from: Clerk's `GET /v1/jwks` (through the upstream client) in
/// production, anything in tests. Returns the JSON document `{"keys": [...]}`.
pub trait JwksSource: Send + Sync + 'static {
    fn fetch(&self) -> BoxFuture<'_, Result<Value, JwksFetchError>>;
}

/// Why a JWKS could not be fetched. `detail` must not hold secrets (it is logged).
#[derive(Debug, Clone, thiserror::Error)]
#[error("JWKS fetch failed: {detail}")]
pub struct JwksFetchError {
    pub detail: String,
    /// Clerk's `Retry-After` (seconds) when it answered 429/503; the failure is then
    /// remembered at least that long.
    pub retry_after_s: Option<u64>,
}

impl JwksFetchError {
    pub fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            retry_after_s: None,
        }
    }
}

/// The cache's timings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JwksTimings {
    pub ttl_ms: u64,
    pub unknown_kid_cooldown_ms: u64,
    pub failed_fetch_ttl_ms: u64,
    pub fetch_timeout: Duration,
}

type KeySet = Arc<HashMap<String, Arc<DecodingKey>>>;

#[derive(Default)]
struct State {
    keys: Option<KeySet>,
    /// When `keys` was fetched.
    fetched_at_ms: u64,
    /// No fetch before this time (negative caching of a failure).
    failed_until_ms: u64,
    /// `Retry-After` of the last failure.
    failed_retry_after_s: Option<u64>,
    /// Bumped by every fetch attempt that finished.
    generation: u64,
}

enum Decision {
    Found(Arc<DecodingKey>),
    Fetch,
    Refuse(TokenError),
}

pub(crate) struct JwksCache {
    source: Arc<dyn JwksSource>,
    clock: SharedClock,
    timings: JwksTimings,
    state: RwLock<State>,
    refresh: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state.read();
        f.debug_struct("JwksCache")
            .field("keys", &st.keys.as_ref().map(|k| k.len()))
            .field("fetched_at_ms", &st.fetched_at_ms)
            .field("failed_until_ms", &st.failed_until_ms)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    pub fn new(source: Arc<dyn JwksSource>, clock: SharedClock, timings: JwksTimings) -> Self {
        Self {
            source,
            clock,
            timings,
            state: RwLock::new(State::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// The key for `kid`, fetching the JWKS only as the rules above allow.
    pub async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, TokenError> {
        let (first, generation) = {
            let st = self.state.read();
            (self.decide(&st, kid, self.clock.now_ms()), st.generation)
        };
        match first {
            Decision::Found(key) => return Ok(key),
            Decision::Refuse(e) => return Err(e),
            Decision::Fetch => {}
        }
        // Single flight: one fetch at a time; whoever waited behind a finished fetch
        // uses its outcome instead of fetching again.
        let _flight = self.refresh.lock().await;
        let waited_for_another = self.state.read().generation != generation;
        if !waited_for_another {
            self.fetch().await;
        }
        let st = self.state.read();
        Self::after_fetch(&st, kid)
    }

    fn decide(&self, st: &State, kid: &str, now: u64) -> Decision {
        let t = &self.timings;
        let failing = now < st.failed_until_ms;
        let Some(keys) = &st.keys else {
            return if failing {
                Decision::Refuse(unavailable(st))
            } else {
                Decision::Fetch
            };
        };
        let age = now.saturating_sub(st.fetched_at_ms);
        let fresh = age < t.ttl_ms;
        match keys.get(kid) {
            Some(key) if fresh || failing => Decision::Found(key.clone()),
            Some(_) => Decision::Fetch,
            None if failing => Decision::Refuse(TokenError::UnknownKid),
            None if !fresh || age >= t.unknown_kid_cooldown_ms => Decision::Fetch,
            None => Decision::Refuse(TokenError::UnknownKid),
        }
    }

    /// The answer once a fetch has just been tried: never fetches again.
    fn after_fetch(st: &State, kid: &str) -> Result<Arc<DecodingKey>, TokenError> {
        match &st.keys {
            None => Err(unavailable(st)),
            Some(keys) => keys.get(kid).cloned().ok_or(TokenError::UnknownKid),
        }
    }

    #[tracing::instrument(name = "jwks_fetch", skip_all)]
    async fn fetch(&self) {
        let outcome =
            match tokio::time::timeout(self.timings.fetch_timeout, self.source.fetch()).await {
                Err(_) => Err((
                    "timeout",
                    JwksFetchError::new(format!(
                        "no answer within {} ms",
                        self.timings.fetch_timeout.as_millis()
                    )),
                )),
                Ok(Err(e)) => Err(("error", e)),
                Ok(Ok(doc)) => parse_jwks(&doc).map_err(|e| ("invalid", e)),
            };
        let now = self.clock.now_ms();
        let mut st = self.state.write();
        st.generation += 1;
        match outcome {
            Ok(keys) => {
                metrics::counter!("frontdesk_jwks_fetches_total", "result" => "ok").increment(1);
                tracing::info!(keys = keys.len(), "JWKS fetched");
                st.keys = Some(Arc::new(keys));
                st.fetched_at_ms = now;
                st.failed_until_ms = 0;
                st.failed_retry_after_s = None;
            }
            Err((result, e)) => {
                metrics::counter!("frontdesk_jwks_fetches_total", "result" => result).increment(1);
                tracing::warn!(error = %e, result, "JWKS fetch failed");
                let hold_ms = e
                    .retry_after_s
                    .map(|s| s.saturating_mul(1000))
                    .unwrap_or(0)
                    .max(self.timings.failed_fetch_ttl_ms);
                st.failed_until_ms = now.saturating_add(hold_ms);
                st.failed_retry_after_s = e.retry_after_s;
            }
        }
    }
}

fn unavailable(st: &State) -> TokenError {
    TokenError::JwksUnavailable {
        retry_after_s: st.failed_retry_after_s.or(Some(1)),
    }
}

/// The usable keys of a JWKS: RSA keys with a `kid`, for signing (`use` absent or
/// `sig`), whose `alg` (when given) is RS256/RS384/RS512. Anything else is skipped.
pub(crate) fn parse_jwks(doc: &Value) -> Result<HashMap<String, Arc<DecodingKey>>, JwksFetchError> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| JwksFetchError::new("the JWKS has no `keys` array"))?;
    let mut out = HashMap::new();
    for jwk in keys {
        let s = |name: &str| jwk.get(name).and_then(Value::as_str);
        if s("kty") != Some("RSA") {
            continue;
        }
        if s("use").is_some_and(|u| u != "sig") {
            continue;
        }
        if s("alg").is_some_and(|a| !matches!(a, "RS256" | "RS384" | "RS512")) {
            continue;
        }
        let (Some(kid), Some(n), Some(e)) = (s("kid"), s("n"), s("e")) else {
            continue;
        };
        match DecodingKey::from_rsa_components(n, e) {
            Ok(key) => {
                out.insert(kid.to_owned(), Arc::new(key));
            }
            Err(err) => tracing::warn!(kid, error = %err, "JWKS key skipped: bad RSA components"),
        }
    }
    Ok(out)
}
