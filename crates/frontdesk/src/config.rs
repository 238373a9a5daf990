//! Typed configuration: embedded defaults, then an optional TOML file, then the
//! environment. Clerk's own variable names are honoured where they exist
//! (`CLERK_SECRET_KEY`, `CLERK_API_URL`, …), `DATABASE_URL` and `REDIS_URL` as every
//! twelve-factor app expects, and `FRONTDESK_*` (with `__` for nesting) for the rest.
//!
//! Everything is validated once at start-up so a bad value stops the process with a
//! message that names the setting, instead of failing on the first request.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use serde::{Deserialize, Serialize};

/// A secret value (API key, signing secret, URL with a password). It never prints:
/// `Debug` and `Display` show a placeholder and serialising it writes the placeholder,
/// so a config dump or a log line cannot leak it. Read it with [`Secret::expose`].
///
/// Written here rather than taken from `secrecy` because the config defaults are built
/// by serialising [`Config`], and `secrecy` deliberately refuses to serialise strings.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself. Call it only where the value is sent to its one consumer.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

const REDACTED: &str = "[redacted]";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// The whole configuration of one Frontdesk instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Public listener: proxied app routes and `/_frontdesk/*`. `FRONTDESK_EDGE_ADDR`.
    pub edge_addr: SocketAddr,
    /// Internal listener (keep it on loopback or a private network): `/clerk/v1/*`,
    /// `/v1/*`, `/metrics`, `/readyz`. `FRONTDESK_API_ADDR`.
    pub api_addr: SocketAddr,
    /// `postgres://…` or `sqlite://path`. `DATABASE_URL`; defaults to an SQLite file in
    /// the working directory.
    pub database_url: Secret,
    /// Maximum connections in the store pool. `FRONTDESK_DATABASE_MAX_CONNECTIONS`.
    pub database_max_connections: u32,
    /// How long a statement waits for a pooled connection before the store counts as
    /// down, in milliseconds; after that, statements fail at once until a background
    /// probe reaches the store. `FRONTDESK_DATABASE_ACQUIRE_TIMEOUT_MS`.
    pub database_acquire_timeout_ms: u64,
    /// Apply pending migrations when `serve` starts. `FRONTDESK_MIGRATE_ON_START`.
    pub migrate_on_start: bool,
    /// Redis for the shared cache tier, pub/sub and shared rate limits. Unset: no L2.
    /// `REDIS_URL`.
    pub redis_url: Option<Secret>,
    /// Prefix of every Redis key and channel, so several deployments (or tests) can
    /// share one Redis. `FRONTDESK_REDIS_PREFIX`.
    pub redis_prefix: String,
    /// Whether `/readyz` fails while Redis is unreachable. Off by default: Frontdesk
    /// keeps answering from L1 and Clerk without Redis. `FRONTDESK_READYZ_REQUIRE_REDIS`.
    pub readyz_require_redis: bool,
    /// TLS to Redis (`rediss://` URLs).
    pub redis: RedisConfig,
    /// Log format: `json` (one object per line) or `pretty`. `FRONTDESK_LOG_FORMAT`.
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info,frontdesk=debug`. `FRONTDESK_LOG`.
    pub log: String,
    /// One `request finished` log line per request (status, latency). Requests that
    /// fail with a 5xx are logged either way. `FRONTDESK_ACCESS_LOG`.
    pub access_log: bool,
    /// Share of successful (< 400) requests that get an access-log line, from 0.0 to
    /// 1.0; 4xx and 5xx answers are always logged. `FRONTDESK_ACCESS_LOG_SAMPLE`.
    pub access_log_sample: f64,
    /// Log lines waiting to be written before new ones are dropped and counted
    /// (`frontdesk_log_dropped_total`): requests never wait for the log.
    /// `FRONTDESK_LOG_QUEUE_LINES`.
    pub log_queue_lines: usize,
    /// How long in-flight requests may run after SIGTERM/SIGINT before the listeners
    /// close anyway, in milliseconds. `FRONTDESK_SHUTDOWN_GRACE_MS`.
    pub shutdown_grace_ms: u64,
    /// Largest request body accepted on either listener, in bytes.
    /// `FRONTDESK_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// Bearer token every api-listener route but `/readyz` and `/metrics` requires
    /// (`/clerk/v1/*` requires the Clerk secret key instead). Defence in depth: keep the
    /// api listener on loopback or a private network too. Unset: no token.
    /// `FRONTDESK_API_TOKEN`.
    pub api_token: Option<Secret>,
    /// Time-outs, header and connection limits of both listeners. `FRONTDESK_HTTP__*`.
    pub http: crate::http::HttpConfig,
    /// Clerk settings; environment names are Clerk's own.
    pub clerk: ClerkConfig,
    /// Dev mode: the embedded Clerk emulator `serve --dev` starts.
    pub dev: DevConfig,
    /// How Frontdesk talks to Clerk's Backend API.
    pub upstream: UpstreamConfig,
    /// The tiered user cache and the Backend API proxy's read cache.
    pub cache: CacheConfig,
    /// Session-token verification (keys and parties come from `[clerk]`).
    /// `FRONTDESK_TOKENS__*`.
    pub tokens: VerifierConfig,
    /// Request context: the local user, its profile, and first-login provisioning.
    pub context: ContextConfig,
    /// Clerk webhook ingestion: verification, the durable inbox and its workers (the
    /// signing secret is `clerk.webhook_signing_secret`).
    pub webhooks: WebhooksConfig,
    /// The reverse proxy in front of the app (edge listener). `FRONTDESK_PROXY__*`.
    pub proxy: ProxyConfig,
    /// Routes of the edge listener forwarded to the app, first match wins. Empty (and
    /// no `proxy.upstream`): nothing is forwarded. `FRONTDESK_ROUTES` (JSON).
    pub routes: Vec<RouteConfig>,
    /// Named rate-limit policies that routes refer to. `FRONTDESK_RATE_LIMITS` (JSON).
    pub rate_limits: Vec<RateLimitConfig>,
    /// Named response-cache policies that routes refer to (`cache = "<name>"`).
    /// `FRONTDESK_CACHE_POLICIES` (JSON).
    pub cache_policies: Vec<PolicyConfig>,
    /// The response cache's own bounds. `FRONTDESK_RESPONSE_CACHE__*`.
    pub response_cache: ResponseCacheConfig,
    /// Bulk metadata jobs (`/v1/users/bulk/metadata`). `FRONTDESK_BULK__*`.
    pub bulk: BulkConfig,
    /// Live events to browsers (`GET /_frontdesk/events`, `POST /v1/events`).
    /// `FRONTDESK_LIVE__*`.
    pub live: LiveConfig,
    /// Refresh jobs run after matching events (Postgres only). `FRONTDESK_JOBS` (JSON).
    pub jobs: Vec<JobConfig>,
}

/// The reverse proxy in front of the app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The app's base URL (`http://host:port`). Set alone, it adds one catch-all route
    /// with `auth = "optional"`. `FRONTDESK_UPSTREAM_URL`.
    pub upstream: Option<String>,
    /// Time the app may take to send its response head, in ms (then 504).
    /// `FRONTDESK_PROXY__TIMEOUT_MS`.
    pub timeout_ms: u64,
    /// Idle keep-alive connections to the app kept per host.
    /// `FRONTDESK_PROXY__POOL_MAX_IDLE`.
    pub pool_max_idle: usize,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed; the client is the rightmost
    /// address not in this list. Empty: the socket address. `FRONTDESK_PROXY__TRUSTED_PROXIES`.
    pub trusted_proxies: Vec<String>,
    /// Where a browser navigation (`Accept: text/html`) to an `auth = "required"` route
    /// without a session is redirected (302, with `redirect_url`). Unset: 401.
    /// `FRONTDESK_PROXY__SIGN_IN_URL`.
    pub sign_in_url: Option<String>,
    /// PEM file of the Ed25519 private key (PKCS#8) that signs `X-Frontdesk-Assertion`.
    /// Unset: each instance makes its own key and publishes it through Redis.
    /// `FRONTDESK_PROXY__ASSERTION_KEY_FILE`.
    pub assertion_key_file: Option<String>,
    /// `aud` of the assertion. `FRONTDESK_PROXY__ASSERTION_AUDIENCE`.
    pub assertion_audience: String,
    /// `iss` of the assertion. `FRONTDESK_PROXY__ASSERTION_ISSUER`.
    pub assertion_issuer: String,
    /// Bytes of identity headers and signed assertions kept for reuse: one per
    /// (session token, context, method and path), reused for up to half the
    /// assertion's lifetime instead of signing every request. `0`: sign every request.
    /// `FRONTDESK_PROXY__ASSERTION_CACHE_BYTES`.
    pub assertion_cache_bytes: u64,
    /// A `[[rate_limits]]` name guarding the api listener's `/clerk/v1/*`, one bucket
    /// per bearer key (its `key` setting is not used). `FRONTDESK_PROXY__CLERK_API_RATE_LIMIT`.
    pub clerk_api_rate_limit: Option<String>,
}

/// One route of the edge listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `/exact`, a prefix `/api/*` (matching `/api` too), or a glob with `*` anywhere.
    pub path: String,
    /// `required` | `optional` | `public`.
    #[serde(default = "RouteAuth::optional")]
    pub auth: RouteAuth,
    /// A `[[rate_limits]]` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// This route's upstream, instead of `proxy.upstream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// A `[[cache_policies]]` name: GET/HEAD answers are cached per tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
}

/// What a route asks of the session.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RouteAuth {
    /// No valid session: 401 (or a redirect to `sign_in_url` for a browser).
    Required,
    /// Identity headers when the session is valid; forwarded anonymously otherwise.
    Optional,
    /// Never verified, never any identity header.
    Public,
}

impl RouteAuth {
    fn optional() -> Self {
        Self::Optional
    }
}

/// A named rate-limit policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub name: String,
    /// `user` | `ip` | `org` | `user_or_ip`.
    pub key: RateLimitKey,
    /// Requests admitted per window.
    pub limit: u32,
    /// The sliding window, in seconds.
    pub window_s: u64,
    /// `all`, or `failures` (only responses >= 400 count).
    #[serde(default = "RateLimitCount::all")]
    pub count: RateLimitCount,
    /// Roles never limited.
    #[serde(default)]
    pub bypass_roles: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    /// The Clerk user; requests without a session are not counted.
    User,
    /// The client address (see `proxy.trusted_proxies`).
    Ip,
    /// The session's active organization, else the user, else the address.
    Org,
    /// The user when signed in, else the address.
    UserOrIp,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitCount {
    All,
    Failures,
}

impl RateLimitCount {
    fn all() -> Self {
        Self::All
    }
}

/// Clerk webhook ingestion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// How far a message's `svix-timestamp` may be from now, in seconds (either way).
    /// `FRONTDESK_WEBHOOKS__TOLERANCE_S`.
    pub tolerance_s: u64,
    /// Largest webhook body accepted, in bytes (the listener-wide `max_body_bytes`
    /// applies too). `FRONTDESK_WEBHOOKS__MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// Inbox messages applied at once by this instance. 0 disables the workers (the
    /// endpoint still stores messages). `FRONTDESK_WEBHOOKS__WORKERS`.
    pub workers: usize,
    /// Attempts before a message is marked `dead`. `FRONTDESK_WEBHOOKS__MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// Delay before the first retry, in ms; doubles per attempt, jittered.
    /// `FRONTDESK_WEBHOOKS__BACKOFF_BASE_MS`.
    pub backoff_base_ms: u64,
    /// Largest retry delay, in ms. `FRONTDESK_WEBHOOKS__BACKOFF_MAX_MS`.
    pub backoff_max_ms: u64,
    /// How often workers look for due messages when nothing woke them, in ms (a new
    /// message on this instance wakes them at once). `FRONTDESK_WEBHOOKS__POLL_INTERVAL_MS`.
    pub poll_interval_ms: u64,
    /// How long a claimed message is reserved for its worker, in ms; after that (a
    /// crash, a kill) any instance takes it again. `FRONTDESK_WEBHOOKS__LEASE_MS`.
    pub lease_ms: u64,
    /// Messages applied per second by this instance; 0: no limit.
    /// `FRONTDESK_WEBHOOKS__RATE_PER_S`.
    pub rate_per_s: u32,
    /// How long a processed (`done`) message's payload (a whole Clerk user: personal
    /// data) is kept, in ms; then it is purged. Dead letters are kept until replayed or
    /// purged explicitly. `FRONTDESK_WEBHOOKS__RETENTION_MS`.
    pub retention_ms: u64,
    /// How often the purge of expired `done` messages runs, in ms.
    /// `FRONTDESK_WEBHOOKS__PURGE_INTERVAL_MS`.
    pub purge_interval_ms: u64,
}

/// TLS to Redis.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// PEM file of the CA that signed a `rediss://` server's certificate, for a private
    /// CA. Unset: the platform's roots (which honour `SSL_CERT_FILE`).
    /// `FRONTDESK_REDIS__CA_FILE`.
    pub ca_file: Option<String>,
}

/// Request context and first-login provisioning.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContextConfig {
    /// How long a resolved context (user + profile) is cached, in ms.
    /// `FRONTDESK_CONTEXT__TTL_MS`.
    pub ttl_ms: u64,
    /// Bytes of contexts (local user and profile rows, the rendered `/me` members,
    /// moka's bookkeeping) held in process. `FRONTDESK_CONTEXT__L1_MAX_BYTES`.
    pub l1_max_bytes: u64,
    /// Deprecated: when set, the budget is this many contexts of
    /// [`TYPICAL_CONTEXT_BYTES`] each and `l1_max_bytes` is ignored. Set `l1_max_bytes`
    /// instead. `FRONTDESK_CONTEXT__L1_MAX_ENTRIES`.
    pub l1_max_entries: Option<u64>,
    /// App-defined fields of a new profile (a JSON object), e.g.
    /// `{"cohort": "neon", "goals": {"revenue": 16000}}`.
    /// `FRONTDESK_CONTEXT__PROFILE_DEFAULTS` (JSON).
    pub profile_defaults: serde_json::Value,
    /// Role of a user whose Clerk `public_metadata.role` is not one of `roles`.
    /// `FRONTDESK_CONTEXT__DEFAULT_ROLE`.
    pub default_role: String,
    /// Roles taken from Clerk's `public_metadata.role`. `FRONTDESK_CONTEXT__ROLES`.
    pub roles: Vec<String>,
    /// Role overrides by Clerk user id or email, winning over Clerk's metadata.
    pub role_overrides: std::collections::BTreeMap<String, String>,
}

/// The Clerk Backend API client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Requests sent to Clerk in any window of `rate_limit_window_ms`, by the whole
    /// fleet (every instance sharing the Redis prefix; this instance alone without
    /// Redis). 0: Clerk's own limit for the key (1,000 per 10 s; 100 for `sk_test_`
    /// keys). `FRONTDESK_UPSTREAM__RATE_LIMIT_REQUESTS`.
    pub rate_limit_requests: u32,
    /// The budget's sliding window, in milliseconds.
    /// `FRONTDESK_UPSTREAM__RATE_LIMIT_WINDOW_MS`.
    pub rate_limit_window_ms: u64,
    /// How long a caller waits for the budget (and a free connection) before it gets
    /// 503 with `Retry-After`, in milliseconds. `FRONTDESK_UPSTREAM__QUEUE_TIMEOUT_MS`.
    pub queue_timeout_ms: u64,
    /// Instances in the fleet: while Redis is unreachable each instance keeps to
    /// `rate_limit_requests ÷ expected_instances`. `FRONTDESK_UPSTREAM__EXPECTED_INSTANCES`.
    pub expected_instances: u32,
    /// Consecutive failures (5xx, time-outs, connection errors) that open an
    /// endpoint's circuit; 0 disables the breakers. `FRONTDESK_UPSTREAM__BREAKER_FAILURES`.
    pub breaker_failures: u32,
    /// How long an open circuit refuses calls before one probe is let through, in
    /// milliseconds. `FRONTDESK_UPSTREAM__BREAKER_COOLDOWN_MS`.
    pub breaker_cooldown_ms: u64,
    /// Retries allowed as a share of calls (0.1: one retry per ten calls, plus a
    /// small reserve). `FRONTDESK_UPSTREAM__RETRY_BUDGET_RATIO`.
    pub retry_budget_ratio: f64,
    /// Calls to Clerk in flight at once. `FRONTDESK_UPSTREAM__MAX_CONCURRENCY`.
    pub max_concurrency: usize,
    /// Time one call may take, in milliseconds. `FRONTDESK_UPSTREAM__TIMEOUT_MS`.
    pub timeout_ms: u64,
    /// Retries of an idempotent call after a 5xx or a transport failure.
    /// `FRONTDESK_UPSTREAM__MAX_RETRIES`.
    pub max_retries: u32,
    /// First retry delay; doubles per retry, jittered. `FRONTDESK_UPSTREAM__BACKOFF_BASE_MS`.
    pub backoff_base_ms: u64,
    /// Largest retry delay. `FRONTDESK_UPSTREAM__BACKOFF_MAX_MS`.
    pub backoff_max_ms: u64,
}

/// Cache tiers and freshness.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes the in-process tier (L1) may hold: cached users (Clerk's JSON, the parsed
    /// fields, moka's bookkeeping) take three quarters, their email/username index a
    /// quarter. A typical Clerk user weighs about 1.8 KB with its aliases, so the
    /// default (1.75 GiB) holds about a million users, the process then under 2 GiB
    /// (BENCHMARKS.md, "Memory"). `FRONTDESK_CACHE__L1_MAX_BYTES`.
    pub l1_max_bytes: u64,
    /// Deprecated (L1 was bounded by entries before): when set, the budget is this
    /// many users of [`TYPICAL_USER_BYTES`] each and `l1_max_bytes` is ignored; a
    /// warning says so at start. Set `l1_max_bytes` instead.
    /// `FRONTDESK_CACHE__L1_MAX_USERS`.
    pub l1_max_users: Option<u64>,
    /// How long a cached user is fresh, in milliseconds. `FRONTDESK_CACHE__USER_TTL_MS`.
    pub user_ttl_ms: u64,
    /// Random spread added to each TTL, as a fraction of it (0.1: up to +10%), so
    /// entries cached together do not expire together. `FRONTDESK_CACHE__TTL_JITTER`.
    pub ttl_jitter: f64,
    /// After the TTL, how long the old entry is served while one refresh runs.
    /// `FRONTDESK_CACHE__STALE_WHILE_REVALIDATE_MS`.
    pub stale_while_revalidate_ms: u64,
    /// After the TTL, how long the old entry is served when Clerk fails or limits us.
    /// `FRONTDESK_CACHE__STALE_IF_ERROR_MS`.
    pub stale_if_error_ms: u64,
    /// How long "no such user" is remembered. `FRONTDESK_CACHE__NOT_FOUND_TTL_MS`.
    pub not_found_ttl_ms: u64,
    /// List calls in flight at once per kind of look-up (id, email, username). Misses
    /// for different users go at once when no call is in flight; while one is, they
    /// gather into the next call, sent when a call returns, at `batch_max` ids, or
    /// when its oldest miss has waited `batch_wait_share` of Clerk's latency.
    /// `FRONTDESK_CACHE__BATCH_MAX_IN_FLIGHT`.
    pub batch_max_in_flight: usize,
    /// How long a miss may wait in a held batch, as a share of Clerk's observed
    /// list-call latency (an EWMA). `FRONTDESK_CACHE__BATCH_WAIT_SHARE`.
    pub batch_wait_share: f64,
    /// Cap of that wait in ms, and the wait before any list call has been timed.
    /// `FRONTDESK_CACHE__BATCH_MAX_WAIT_MS`.
    pub batch_max_wait_ms: u64,
    /// Ids per list call (Clerk accepts at most 100). `FRONTDESK_CACHE__BATCH_MAX`.
    pub batch_max: usize,
    /// User look-ups waiting for Clerk at once (queued or in a list call being sent);
    /// past it, a look-up that needs Clerk is refused at once with a 503 instead of
    /// queueing without bound. `FRONTDESK_CACHE__BATCH_QUEUE_MAX`.
    pub batch_queue_max: usize,
    /// Freshness of other proxied Backend API reads (lists, counts, organizations).
    /// `FRONTDESK_CACHE__PROXY_TTL_MS`.
    pub proxy_ttl_ms: u64,
    /// Freshness of the proxied JWKS. `FRONTDESK_CACHE__JWKS_TTL_MS`.
    pub jwks_ttl_ms: u64,
    /// Bytes of answers (bodies, headers, keys) held by the proxy's read cache: list
    /// answers can be hundreds of KiB each. `FRONTDESK_CACHE__PROXY_MAX_BYTES`.
    pub proxy_max_bytes: u64,
    /// Deprecated: when set, the read cache's budget is this many answers of
    /// [`TYPICAL_PROXY_READ_BYTES`] each and `proxy_max_bytes` is ignored. Set
    /// `proxy_max_bytes` instead. `FRONTDESK_CACHE__PROXY_MAX_ENTRIES`.
    pub proxy_max_entries: Option<u64>,
}

/// A typical cached Clerk user's weight in L1 (with its aliases), for the deprecated
/// `cache.l1_max_users`: measured by `frontdesk-bench memory` (BENCHMARKS.md).
pub const TYPICAL_USER_BYTES: u64 = 1_800;
/// A typical context's weight, for the deprecated `context.l1_max_entries`.
pub const TYPICAL_CONTEXT_BYTES: u64 = 3_600;
/// A typical proxied read's weight, for the deprecated `cache.proxy_max_entries`.
pub const TYPICAL_PROXY_READ_BYTES: u64 = 8 * 1024;

impl CacheConfig {
    /// L1's byte budget (users and aliases): `l1_max_bytes`, or the deprecated
    /// `l1_max_users` in typical users.
    pub fn l1_budget_bytes(&self) -> u64 {
        self.l1_max_users
            .map_or(self.l1_max_bytes, |n| n.saturating_mul(TYPICAL_USER_BYTES))
    }

    /// The proxy read cache's byte budget.
    pub fn proxy_budget_bytes(&self) -> u64 {
        self.proxy_max_entries.map_or(self.proxy_max_bytes, |n| {
            n.saturating_mul(TYPICAL_PROXY_READ_BYTES)
        })
    }
}

impl ContextConfig {
    /// The context cache's byte budget: `l1_max_bytes`, or the deprecated
    /// `l1_max_entries` in typical contexts.
    pub fn l1_budget_bytes(&self) -> u64 {
        self.l1_max_entries.map_or(self.l1_max_bytes, |n| {
            n.saturating_mul(TYPICAL_CONTEXT_BYTES)
        })
    }
}

/// Clerk instance settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClerkConfig {
    /// Backend API secret key (`sk_live_…`/`sk_test_…`). `CLERK_SECRET_KEY`. `serve`
    /// needs it or `jwt_key` (or `--dev`).
    pub secret_key: Option<Secret>,
    /// Base URL of Clerk's Backend API. `CLERK_API_URL`.
    pub api_url: String,
    /// `Clerk-API-Version` sent upstream. `FRONTDESK_CLERK__API_VERSION`.
    pub api_version: String,
    /// PEM public key for networkless token verification. `CLERK_JWT_KEY`.
    pub jwt_key: Option<String>,
    /// Webhook signing secrets (`whsec_…`), comma-separated during rotation.
    /// `CLERK_WEBHOOK_SIGNING_SECRET`.
    pub webhook_signing_secret: Option<Secret>,
    /// Origins allowed in a token's `azp`, comma-separated. Empty: not checked.
    /// `CLERK_AUTHORIZED_PARTIES`.
    pub authorized_parties: Vec<String>,
}

/// Dev-mode settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DevConfig {
    /// Dev mode: `serve` starts an embedded Clerk emulator (never implied by a missing
    /// key; refused when Clerk credentials are set). `FRONTDESK_DEV` or `serve --dev`.
    pub enabled: bool,
    /// Seeded users in the embedded emulator. `FRONTDESK_DEV__USERS`.
    pub users: usize,
    /// Where the embedded emulator listens (loopback; port 0 picks a free one).
    /// `FRONTDESK_DEV__EMULATOR_ADDR`.
    pub emulator_addr: SocketAddr,
}

/// Log lines the queue holds before new ones are dropped and counted.
pub const DEFAULT_LOG_QUEUE_LINES: usize = 16_384;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The documented defaults; `Config::default()` must equal them (a test checks).
pub const DEFAULTS_TOML: &str = include_str!("../config.default.toml");

pub const DEFAULT_CLERK_API_URL: &str = "https://api.clerk.com";
/// The Backend API version whose shapes Frontdesk is built from.
pub const CLERK_API_VERSION: &str = "2026-05-12";

impl Default for Config {
    fn default() -> Self {
        Self {
            edge_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            database_url: Secret::new("sqlite://frontdesk.db"),
            database_max_connections: 16,
            database_acquire_timeout_ms: 3_000,
            migrate_on_start: true,
            redis_url: None,
            redis_prefix: "frontdesk:".into(),
            readyz_require_redis: false,
            redis: RedisConfig { ca_file: None },
            log_format: LogFormat::Json,
            log: "info".into(),
            access_log: true,
            access_log_sample: 1.0,
            log_queue_lines: DEFAULT_LOG_QUEUE_LINES,
            shutdown_grace_ms: 10_000,
            max_body_bytes: 1024 * 1024,
            http: crate::http::HttpConfig::default(),
            clerk: ClerkConfig {
                secret_key: None,
                api_url: DEFAULT_CLERK_API_URL.into(),
                api_version: CLERK_API_VERSION.into(),
                jwt_key: None,
                webhook_signing_secret: None,
                authorized_parties: Vec::new(),
            },
            api_token: None,
            dev: DevConfig {
                enabled: false,
                users: 25,
                emulator_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            upstream: UpstreamConfig {
                rate_limit_requests: 0,
                rate_limit_window_ms: 10_000,
                queue_timeout_ms: 30_000,
                expected_instances: 1,
                breaker_failures: 5,
                breaker_cooldown_ms: 5_000,
                retry_budget_ratio: 0.1,
                max_concurrency: 64,
                timeout_ms: 5_000,
                max_retries: 2,
                backoff_base_ms: 100,
                backoff_max_ms: 2_000,
            },
            cache: CacheConfig {
                l1_max_bytes: 1792 * 1024 * 1024,
                l1_max_users: None,
                user_ttl_ms: 300_000,
                ttl_jitter: 0.1,
                stale_while_revalidate_ms: 60_000,
                stale_if_error_ms: 3_600_000,
                not_found_ttl_ms: 30_000,
                batch_max_in_flight: 2,
                batch_wait_share: 0.5,
                batch_max_wait_ms: 50,
                batch_max: 100,
                batch_queue_max: 10_000,
                proxy_ttl_ms: 30_000,
                jwks_ttl_ms: 3_600_000,
                proxy_max_bytes: 64 * 1024 * 1024,
                proxy_max_entries: None,
            },
            tokens: VerifierConfig::default(),
            context: ContextConfig {
                ttl_ms: 300_000,
                l1_max_bytes: 256 * 1024 * 1024,
                l1_max_entries: None,
                profile_defaults: serde_json::Value::Object(Default::default()),
                default_role: "user".into(),
                roles: vec!["admin".into(), "user".into()],
                role_overrides: Default::default(),
            },
            webhooks: WebhooksConfig {
                tolerance_s: 300,
                max_body_bytes: 1024 * 1024,
                workers: 4,
                max_attempts: 8,
                backoff_base_ms: 5_000,
                backoff_max_ms: 900_000,
                poll_interval_ms: 1_000,
                lease_ms: 60_000,
                rate_per_s: 0,
                retention_ms: 7 * 24 * 60 * 60 * 1000,
                purge_interval_ms: 60_000,
            },
            proxy: ProxyConfig {
                upstream: None,
                timeout_ms: 30_000,
                pool_max_idle: 64,
                trusted_proxies: Vec::new(),
                sign_in_url: None,
                assertion_key_file: None,
                assertion_audience: "frontdesk-app".into(),
                assertion_issuer: "frontdesk".into(),
                assertion_cache_bytes: 16 * 1024 * 1024,
                clerk_api_rate_limit: None,
            },
            routes: Vec::new(),
            rate_limits: Vec::new(),
            cache_policies: Vec::new(),
            response_cache: ResponseCacheConfig::default(),
            bulk: BulkConfig::default(),
            live: LiveConfig::default(),
            jobs: Vec::new(),
        }
    }
}

/// Environment variables read under their own (non-`FRONTDESK_`) names, with the
/// config key each one sets.
const PLAIN_ENV: &[(&str, &str)] = &[
    ("CLERK_SECRET_KEY", "clerk.secret_key"),
    ("CLERK_API_URL", "clerk.api_url"),
    ("CLERK_JWT_KEY", "clerk.jwt_key"),
    (
        "CLERK_WEBHOOK_SIGNING_SECRET",
        "clerk.webhook_signing_secret",
    ),
    ("CLERK_AUTHORIZED_PARTIES", "clerk.authorized_parties"),
    ("DATABASE_URL", "database_url"),
    ("REDIS_URL", "redis_url"),
    ("FRONTDESK_DEV", "dev.enabled"),
    ("FRONTDESK_UPSTREAM_URL", "proxy.upstream"),
];

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "clerk.authorized_parties",
    "context.roles",
    "proxy.trusted_proxies",
];
/// Keys whose environment value is JSON.
const JSON_KEYS: &[&str] = &[
    "context.profile_defaults",
    "context.role_overrides",
    "routes",
    "rate_limits",
    "cache_policies",
    "jobs",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Defaults, then `file` (when given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<(Self, Vec<String>), ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// Like [`Config::load`] with an explicit environment, so tests need not touch the
    /// process's. Returns the config and warnings (unknown `FRONTDESK_*` names).
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Parse(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let mut warnings = Vec::new();
        let known = known_keys();
        for (name, value) in env {
            let key = if let Some((_, key)) = PLAIN_ENV.iter().find(|(n, _)| n == name) {
                (*key).to_string()
            } else if let Some(rest) = name.strip_prefix("FRONTDESK_") {
                let key = rest.to_ascii_lowercase().replace("__", ".");
                if !known.contains(&key) {
                    // Variables of the test ground and of the emulator command share the
                    // prefix but are not settings of `serve`.
                    if !rest.starts_with("TEST_") && !rest.starts_with("EMULATOR_") {
                        warnings.push(format!("unknown environment variable {name} ignored"));
                    }
                    continue;
                }
                key
            } else {
                continue;
            };
            let value = if LIST_KEYS.contains(&key.as_str()) {
                let items: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                Value::from(items)
            } else if JSON_KEYS.contains(&key.as_str()) {
                let json: serde_json::Value = serde_json::from_str(value)
                    .map_err(|e| ConfigError::Parse(format!("{name} must be JSON: {e}")))?;
                Value::serialize(&json).map_err(|e| ConfigError::Parse(format!("{name}: {e}")))?
            } else if key == "database_url"
                || key.ends_with("_file")
                || key.ends_with("secret")
                || key.ends_with("_token")
                || key.ends_with("_key")
                || key.ends_with("_url")
            {
                // Secrets and URLs stay strings, even when they look like numbers.
                Value::from(value.clone())
            } else if !value.is_ascii() && value.contains('\\') {
                // figment 0.10.19 unescapes quoted strings with char indices as byte
                // indices: a backslash after a multibyte character panics (found by
                // the `config_env` fuzz target). No such value is a number or boolean.
                Value::from(value.clone())
            } else {
                // Numbers and booleans parse the way figment's own Env provider does.
                value
                    .parse::<Value>()
                    .unwrap_or_else(|_| Value::from(value.clone()))
            };
            figment = figment.merge(Serialized::global(&key, value));
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        warnings.extend(config.deprecations());
        Ok((config, warnings))
    }

    /// Checks that cannot be expressed in types. The gateway's sections (`routes`,
    /// `rate_limits`, `proxy`) are checked by `gateway::validate`, which
    /// `FrontdeskBuilder::build` runs: config sits below every capability.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let db = self.database_url.expose();
        if !(db.starts_with("postgres://")
            || db.starts_with("postgresql://")
            || db.starts_with("sqlite:"))
        {
            return Err(ConfigError::Invalid {
                key: "database_url",
                reason: "must start with postgres://, postgresql:// or sqlite:".into(),
            });
        }
        if self.http.max_header_bytes < crate::http::MIN_HEADER_BYTES {
            return Err(ConfigError::Invalid {
                key: "http.max_header_bytes",
                reason: format!("must be at least {}", crate::http::MIN_HEADER_BYTES),
            });
        }
        if !(0.0..=1.0).contains(&self.access_log_sample) {
            return Err(ConfigError::Invalid {
                key: "access_log_sample",
                reason: "must be between 0.0 and 1.0".into(),
            });
        }
        if self.log_queue_lines == 0 {
            return Err(ConfigError::Invalid {
                key: "log_queue_lines",
                reason: "must be positive".into(),
            });
        }
        if self.http.max_connections == 0 || self.http.request_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "http",
                reason: "max_connections and request_timeout_ms must be positive".into(),
            });
        }
        if let Some(redis) = &self.redis_url {
            let r = redis.expose();
            if !(r.starts_with("redis://") || r.starts_with("rediss://")) {
                return Err(ConfigError::Invalid {
                    key: "redis_url",
                    reason: "must start with redis:// or rediss://".into(),
                });
            }
        }
        if !(self.clerk.api_url.starts_with("http://")
            || self.clerk.api_url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                key: "clerk.api_url",
                reason: "must be an http:// or https:// URL".into(),
            });
        }
        if let Some(key) = &self.clerk.secret_key {
            if !key.expose().starts_with("sk_") {
                return Err(ConfigError::Invalid {
                    key: "clerk.secret_key",
                    reason: "a Clerk secret key starts with sk_live_ or sk_test_".into(),
                });
            }
        }
        if let Some(secret) = &self.clerk.webhook_signing_secret {
            if secret
                .expose()
                .split(',')
                .any(|s| !s.trim().starts_with("whsec_"))
            {
                return Err(ConfigError::Invalid {
                    key: "clerk.webhook_signing_secret",
                    reason: "each signing secret starts with whsec_".into(),
                });
            }
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "database_max_connections",
                reason: "must be at least 1".into(),
            });
        }
        if !(1..=100).contains(&self.cache.batch_max) {
            return Err(ConfigError::Invalid {
                key: "cache.batch_max",
                reason: "must be between 1 and 100 (Clerk's limit per list call)".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.upstream.retry_budget_ratio) {
            return Err(ConfigError::Invalid {
                key: "upstream.retry_budget_ratio",
                reason: "must be between 0 and 1".into(),
            });
        }
        if self.upstream.expected_instances == 0 {
            return Err(ConfigError::Invalid {
                key: "upstream.expected_instances",
                reason: "must be at least 1".into(),
            });
        }
        if self.cache.batch_max_in_flight == 0 {
            return Err(ConfigError::Invalid {
                key: "cache.batch_max_in_flight",
                reason: "must be at least 1".into(),
            });
        }
        if !(0.0..=4.0).contains(&self.cache.batch_wait_share) {
            return Err(ConfigError::Invalid {
                key: "cache.batch_wait_share",
                reason: "must be between 0 and 4".into(),
            });
        }
        if self.cache.batch_queue_max < self.cache.batch_max {
            return Err(ConfigError::Invalid {
                key: "cache.batch_queue_max",
                reason: "must be at least cache.batch_max".into(),
            });
        }
        for (key, value) in [
            ("cache.l1_max_bytes", Some(self.cache.l1_max_bytes)),
            ("cache.l1_max_users", self.cache.l1_max_users),
            ("cache.proxy_max_bytes", Some(self.cache.proxy_max_bytes)),
            ("cache.proxy_max_entries", self.cache.proxy_max_entries),
            ("context.l1_max_bytes", Some(self.context.l1_max_bytes)),
            ("context.l1_max_entries", self.context.l1_max_entries),
        ] {
            if value == Some(0) {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be at least 1 (a cache bound of 0 holds nothing)".into(),
                });
            }
        }
        if !(0.0..=1.0).contains(&self.cache.ttl_jitter) {
            return Err(ConfigError::Invalid {
                key: "cache.ttl_jitter",
                reason: "must be between 0 and 1".into(),
            });
        }
        if self.upstream.max_concurrency == 0 || self.upstream.timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "upstream",
                reason: "max_concurrency and timeout_ms must be at least 1".into(),
            });
        }
        validate_jobs(
            &self.jobs,
            self.database_url.expose().starts_with("sqlite:"),
        )
        .map_err(|reason| ConfigError::Invalid {
            key: "jobs",
            reason,
        })?;
        if !self.context.profile_defaults.is_object() {
            return Err(ConfigError::Invalid {
                key: "context.profile_defaults",
                reason: "must be a JSON object".into(),
            });
        }
        let w = &self.webhooks;
        if w.max_attempts == 0
            || w.poll_interval_ms == 0
            || w.lease_ms == 0
            || w.purge_interval_ms == 0
        {
            return Err(ConfigError::Invalid {
                key: "webhooks",
                reason:
                    "max_attempts, poll_interval_ms, lease_ms and purge_interval_ms must be at least 1"
                        .into(),
            });
        }
        if self
            .api_token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            return Err(ConfigError::Invalid {
                key: "api_token",
                reason: "must not be empty (unset it for no token)".into(),
            });
        }
        if w.backoff_max_ms < w.backoff_base_ms {
            return Err(ConfigError::Invalid {
                key: "webhooks.backoff_max_ms",
                reason: "must be at least backoff_base_ms".into(),
            });
        }
        if self.redis_prefix.is_empty() {
            return Err(ConfigError::Invalid {
                key: "redis_prefix",
                reason: "must not be empty".into(),
            });
        }
        Ok(())
    }

    /// Warnings for deprecated keys that are set (each still works, read in bytes).
    pub fn deprecations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut note = |old: &str, new: &str, n: Option<u64>, each: u64| {
            if let Some(n) = n {
                out.push(format!(
                    "{old} is deprecated: caches are bounded by bytes; read as {new} = {} \
                     ({n} × {each} bytes), {new} itself ignored; set {new} instead",
                    n.saturating_mul(each)
                ));
            }
        };
        note(
            "cache.l1_max_users",
            "cache.l1_max_bytes",
            self.cache.l1_max_users,
            TYPICAL_USER_BYTES,
        );
        note(
            "cache.proxy_max_entries",
            "cache.proxy_max_bytes",
            self.cache.proxy_max_entries,
            TYPICAL_PROXY_READ_BYTES,
        );
        note(
            "context.l1_max_entries",
            "context.l1_max_bytes",
            self.context.l1_max_entries,
            TYPICAL_CONTEXT_BYTES,
        );
        out
    }

    /// Whether real Clerk credentials are configured: the secret key (Backend API and
    /// JWKS) or a PEM key (networkless verification only).
    pub fn has_clerk_credentials(&self) -> bool {
        self.clerk.secret_key.is_some() || self.clerk.jwt_key.is_some()
    }

    /// The Clerk API base with any trailing slash removed.
    pub fn clerk_api_base(&self) -> &str {
        self.clerk.api_url.trim_end_matches('/')
    }
}

/// Every dotted key of [`Config`], from its serialised defaults plus the optional ones
/// that serialise as absent.
fn known_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    if let Ok(value) = serde_json::to_value(Config::default()) {
        collect_keys("", &value, &mut keys);
    }
    keys
}

fn collect_keys(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if v.is_object() && !JSON_KEYS.contains(&key.as_str()) {
                collect_keys(&key, v, out);
            } else {
                out.insert(key);
            }
        }
    }
}

/// How verification behaves. Times are milliseconds. This is also the `[tokens]`
/// section of the configuration; the key and the parties are Clerk settings
/// (`CLERK_JWT_KEY`, `CLERK_AUTHORIZED_PARTIES`, under `[clerk]`), so they are not
/// read from that section and are filled in when the verifier is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifierConfig {
    /// `CLERK_JWT_KEY`: the instance's RSA public key as PEM (SPKI `PUBLIC KEY` or
    /// PKCS#1 `RSA PUBLIC KEY`; escaped `\n` and one-line bodies are accepted). When
    /// set, no JWKS is ever fetched and the token's `kid` is not consulted.
    #[serde(skip)]
    pub jwt_key_pem: Option<String>,
    /// `CLERK_AUTHORIZED_PARTIES`: accepted `azp` values (exact origins). Empty: any.
    #[serde(skip)]
    pub authorized_parties: Vec<String>,
    /// Whether a token without `azp` is refused when `authorized_parties` is set.
    /// Default `false`: Clerk mints cookie tokens without `azp` when the minting
    /// request had no `Origin` (native apps, top-level navigations);
    /// `@clerk/backend` < 3.11.1 accepts them, >= 3.11.1 refuses them.
    pub require_azp: bool,
    /// Expected `iss` (the instance's Frontend API URL). `None`: not checked.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp`, `nbf`, `iat`.
    pub skew_ms: u64,
    /// How long a fetched JWKS is used before it is refetched.
    pub jwks_ttl_ms: u64,
    /// An unknown `kid` refetches the JWKS at most once per this period.
    pub unknown_kid_cooldown_ms: u64,
    /// After a failed JWKS fetch, no fetch for this long (or Clerk's `Retry-After`).
    pub failed_fetch_ttl_ms: u64,
    /// Time limit of one JWKS fetch (real time: it bounds I/O).
    pub jwks_fetch_timeout_ms: u64,
    /// Verified tokens kept (each until its `exp`).
    pub token_cache_capacity: u64,
    /// Revoked session ids kept in process.
    pub max_revocations: usize,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            jwt_key_pem: None,
            authorized_parties: Vec::new(),
            require_azp: false,
            issuer: None,
            skew_ms: 5_000,
            jwks_ttl_ms: 3_600_000,
            unknown_kid_cooldown_ms: 300_000,
            failed_fetch_ttl_ms: 5_000,
            jwks_fetch_timeout_ms: 5_000,
            token_cache_capacity: 100_000,
            max_revocations: 100_000,
        }
    }
}

/// One `[[cache_policies]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// What routes name in `cache = "…"`.
    pub name: String,
    /// The namespace invalidated as a unit (by a mutation, or the API's `resource`).
    pub resource: String,
    /// `org` | `user` | `header:<Name>`: whose answers these are. `org` and `user` come
    /// from the verified session (the Clerk id, `org_…` or `user_…`); a header only
    /// when something the app trusts sets it. No tenant: the request is not cached.
    pub tenant: String,
    /// How long an answer is fresh, in seconds.
    pub ttl_s: u64,
    /// How long past `ttl_s` a stale answer is still served while one refresh runs.
    #[serde(default)]
    pub stale_while_revalidate_s: u64,
    /// Whether the normalised query (decoded once, pairs sorted) is part of the key.
    #[serde(default = "policy_yes")]
    pub vary_query: bool,
    /// Larger answers are passed through, not cached.
    #[serde(default = "policy_default_max_body")]
    pub max_body_bytes: usize,
}

fn policy_yes() -> bool {
    true
}

fn policy_default_max_body() -> usize {
    1024 * 1024
}

/// `[response_cache]`: bounds shared by every policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResponseCacheConfig {
    /// Bytes of cached answers (bodies and headers) held in process.
    /// `FRONTDESK_RESPONSE_CACHE__L1_MAX_BYTES`.
    pub l1_max_bytes: u64,
    /// A tenant's version nonces are re-read from Redis at least this often, in ms: the
    /// bound on serving an invalidated L1 entry when the bus is late.
    /// `FRONTDESK_RESPONSE_CACHE__VERSION_RECHECK_MS`.
    pub version_recheck_ms: u64,
}

impl Default for ResponseCacheConfig {
    fn default() -> Self {
        Self {
            l1_max_bytes: 64 * 1024 * 1024,
            version_recheck_ms: 1_000,
        }
    }
}

/// Bulk jobs. `FRONTDESK_BULK__*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BulkConfig {
    /// Whether this instance runs stored jobs (any instance accepts them).
    /// `FRONTDESK_BULK__ENABLED`.
    pub enabled: bool,
    /// Items per job at most. `FRONTDESK_BULK__MAX_ITEMS`.
    pub max_items: usize,
    /// Updates in flight at once for the job this instance runs.
    /// `FRONTDESK_BULK__CONCURRENCY`.
    pub concurrency: usize,
    /// How long a claimed job is reserved for its runner, in ms; the runner renews it
    /// while it works, and after a crash any instance takes the job once it runs out.
    /// `FRONTDESK_BULK__LEASE_MS`.
    pub lease_ms: u64,
    /// How often an idle runner looks for jobs, in ms (a job stored on this instance
    /// wakes it at once). `FRONTDESK_BULK__POLL_INTERVAL_MS`.
    pub poll_interval_ms: u64,
    /// Attempts per item before a 429 or 5xx fails it. `FRONTDESK_BULK__MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// Delay before retrying an item, in ms; doubles per attempt, jittered, capped;
    /// a `Retry-After` from Clerk is waited out when longer.
    /// `FRONTDESK_BULK__BACKOFF_BASE_MS` / `FRONTDESK_BULK__BACKOFF_MAX_MS`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Clerk's per-user limit on updates: at most this many updates of one user…
    /// `FRONTDESK_BULK__PER_USER_LIMIT`.
    pub per_user_limit: u32,
    /// …in any window of this many ms. `FRONTDESK_BULK__PER_USER_WINDOW_MS`.
    pub per_user_window_ms: u64,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_items: 10_000,
            concurrency: 16,
            lease_ms: 30_000,
            poll_interval_ms: 1_000,
            max_attempts: 8,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
            per_user_limit: 10,
            per_user_window_ms: 10_000,
        }
    }
}

/// Live events: `[live]`. `FRONTDESK_LIVE__*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// Serve `GET /_frontdesk/events` and `POST /v1/events`.
    pub enabled: bool,
    /// A comment line is sent this often on an idle stream, in ms (keeps proxies and
    /// load balancers from closing it, and finds dead clients).
    pub heartbeat_ms: u64,
    /// The `retry:` hint sent to browsers: how long `EventSource` waits before it
    /// reconnects, in ms.
    pub retry_ms: u64,
    /// Events kept per tenant for `Last-Event-ID` replay (Redis `MAXLEN ~`, so a few
    /// more may stay).
    pub history: usize,
    /// A tenant's history expires this long after its last event, in ms.
    pub history_ttl_ms: u64,
    /// Events queued for one subscriber; one more and it is disconnected as too slow.
    pub queue: usize,
    /// Open streams per instance; one more gets 503 `too_many_subscribers`.
    pub max_subscribers: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            heartbeat_ms: 15_000,
            retry_ms: 2_000,
            history: 1_000,
            history_ttl_ms: 86_400_000,
            queue: 256,
            max_subscribers: 100_000,
        }
    }
}

/// One `[[jobs]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Unique name (metrics label, `event: job` data).
    pub name: String,
    /// The statement(s) to run, e.g. `REFRESH MATERIALIZED VIEW CONCURRENTLY kpis`.
    pub sql: String,
    /// Event types that trigger it: Frontdesk's own (`user.updated`), app-published
    /// ones, `invalidate` (any invalidation) or `invalidate:<resource>` (that resource,
    /// and whole-tenant invalidations).
    pub on: Vec<String>,
    /// Runs this long after the last matching event (at most ten times this after the
    /// first), in ms.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
    /// The statement's time limit (Postgres `statement_timeout`), in ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_debounce_ms() -> u64 {
    2_000
}
fn default_timeout_ms() -> u64 {
    30_000
}

/// Checks of `[[jobs]]` that the types cannot express; `Err` names the problem.
pub fn validate_jobs(jobs: &[JobConfig], sqlite: bool) -> Result<(), String> {
    if jobs.is_empty() {
        return Ok(());
    }
    if sqlite {
        return Err("refresh jobs need Postgres; database_url is SQLite".into());
    }
    let mut names = BTreeSet::new();
    for j in jobs {
        if j.name.is_empty()
            || j.name.len() > 64
            || !j
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "job name {:?} must be 1-64 characters of A-Z a-z 0-9 _ -",
                j.name
            ));
        }
        if !names.insert(j.name.as_str()) {
            return Err(format!("job name {:?} is used twice", j.name));
        }
        if j.sql.trim().is_empty() {
            return Err(format!("job {:?} has no sql", j.name));
        }
        if j.on.is_empty() {
            return Err(format!("job {:?} has no trigger (on = [...])", j.name));
        }
        if let Some(t) =
            j.on.iter()
                .find(|t| t.is_empty() || *t == "job" || *t == "reset")
        {
            return Err(format!("job {:?}: {t:?} cannot trigger a job", j.name));
        }
        if j.timeout_ms == 0 {
            return Err(format!("job {:?}: timeout_ms must be positive", j.name));
        }
    }
    Ok(())
}
