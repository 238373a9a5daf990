//! A faithful in-process stand-in for Clerk's Backend API, for tests, benchmarks and
//! `frontdesk serve` in dev mode.
//!
//! It serves the Backend API subset Frontdesk uses under `/v1/...` with Clerk's JSON
//! shapes (users, organizations, memberships, JWKS), mints RS256 session tokens with
//! Clerk's v2 claims, sends Svix-signed webhooks, and has knobs for latency, errors and
//! rate limits plus per-endpoint call counters under `/__emulator/...`.
//!
//! Backend API (bearer = secret key; Clerk's `ClerkErrors` on failure):
//! `GET|POST /v1/users`, `GET /v1/users/count`, `GET|PATCH|DELETE /v1/users/{user_id}`,
//! `PATCH|PUT /v1/users/{user_id}/metadata`, `POST /v1/email_addresses` (verified or not),
//! `GET /v1/users/{user_id}/organization_memberships`,
//! `GET /v1/organizations`, `GET /v1/organizations/{id_or_slug}`,
//! `GET /v1/organizations/{id_or_slug}/memberships`, `GET /v1/jwks`.
//!
//! Test controls (no auth): `GET /__emulator` (ids, kid), `POST /__emulator/sessions`,
//! `POST /__emulator/sessions/{sid}/revoke`, `GET /__emulator/jwt_key` (PEM),
//! `GET /__emulator/jwks`, `GET /__emulator/stats`, `GET /__emulator/calls` (when each
//! call reached the rate limiter), `POST /__emulator/reset`,
//! `GET|POST /__emulator/config`, `GET /__emulator/webhooks`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), frontdesk_emulator::Error> {
//! use frontdesk_emulator::{Emulator, EmulatorConfig, MintSession};
//! let emu = Emulator::new(EmulatorConfig::default())?;
//! let running = emu.clone().spawn("127.0.0.1:0").await?;
//! let token = emu.mint_session(MintSession {
//!     user_id: Emulator::seed_user_id(0),
//!     ..Default::default()
//! })?;
//! println!("{} {}", running.url, token.jwt);
//! # Ok(()) }
//! ```

pub mod cli;
mod errors;
mod gate;
mod ids;
mod knobs;
mod orgs;
mod query;
mod seed;
mod stats;
mod store;
pub mod svix;
mod tokens;
mod users;
mod webhooks;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use parking_lot::{Mutex, RwLock};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use errors::{ApiError, Error};
pub use knobs::{Knobs, Latency, RateLimit, WebhookTarget};
pub use stats::{CallRecord, Stats, max_in_any_window};
pub use tokens::{MintSession, MintedSession};
pub use webhooks::{Delivery, DeliveryStatus};

/// Default secret key; also what `frontdesk serve` uses in dev mode.
pub const DEFAULT_SECRET_KEY: &str = "sk_test_frontdesk_emulator";
/// Default `iss` of minted tokens (Clerk's is the instance's Frontend API URL).
pub const DEFAULT_ISSUER: &str = "https://frontdesk-emulator.clerk.accounts.dev";

/// Start-up configuration of an [`Emulator`].
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The `sk_…` key callers must send as `Authorization: Bearer`.
    pub secret_key: String,
    /// How many users to seed.
    pub users: usize,
    /// Seed for names, metadata and timestamps (user ids depend only on the index).
    pub seed: u64,
    /// `iss` of minted tokens; [`DEFAULT_ISSUER`] when `None`.
    pub issuer: Option<String>,
    /// Delay added to every `/v1` call.
    pub latency: Latency,
    /// Share of `/v1` calls answered 500, 0.0–1.0.
    pub error_rate: f64,
    /// Sliding-window limit across all `/v1` calls.
    pub rate_limit: Option<RateLimit>,
    /// Where to send webhooks.
    pub webhook: Option<WebhookTarget>,
    /// Attempts per webhook message before it is marked failed.
    pub webhook_max_attempts: u32,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            secret_key: DEFAULT_SECRET_KEY.to_owned(),
            users: 100,
            seed: 42,
            issuer: None,
            latency: Latency::default(),
            error_rate: 0.0,
            rate_limit: None,
            webhook: None,
            webhook_max_attempts: 8,
        }
    }
}

pub(crate) struct Inner {
    secret_key: String,
    seed: u64,
    issuer: String,
    instance_id: String,
    users_seeded: usize,
    keys: tokens::SigningKey,
    store: RwLock<store::Store>,
    knobs: Mutex<knobs::KnobState>,
    stats: stats::Recorder,
    calls: stats::CallLog,
    hooks: webhooks::Dispatcher,
    sessions: Mutex<HashMap<String, tokens::SessionRecord>>,
    /// Drives latency jitter and error injection: reproducible for a given seed.
    rng: Mutex<StdRng>,
}

/// A Clerk Backend API emulator. Cheap to clone; clones share all state.
#[derive(Clone)]
pub struct Emulator {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("kid", &self.kid())
            .field("users_seeded", &self.inner.users_seeded)
            .finish_non_exhaustive()
    }
}

/// Wall-clock Unix time in milliseconds.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Emulator {
    /// Generates a fresh 2048-bit RSA key and seeds users and organizations.
    pub fn new(cfg: EmulatorConfig) -> Result<Self, Error> {
        if cfg.secret_key.is_empty() {
            return Err(Error::Config("secret_key must not be empty".into()));
        }
        if !(0.0..=1.0).contains(&cfg.error_rate) {
            return Err(Error::Config("error_rate must be between 0 and 1".into()));
        }
        if let Some(w) = &cfg.webhook {
            svix::secret_key(&w.secret)?;
        }
        let keys = tokens::SigningKey::generate()?;
        let instance_id = ids::make("ins", &format!("instance:{}", cfg.seed));
        let mut store = store::Store::new(cfg.seed, instance_id.clone());
        seed::seed(&mut store, cfg.users);
        let inner = Inner {
            secret_key: cfg.secret_key,
            seed: cfg.seed,
            issuer: cfg.issuer.unwrap_or_else(|| DEFAULT_ISSUER.to_owned()),
            instance_id,
            users_seeded: cfg.users,
            keys,
            store: RwLock::new(store),
            knobs: Mutex::new(knobs::KnobState::new(
                cfg.latency,
                cfg.error_rate,
                cfg.rate_limit,
                cfg.webhook,
            )),
            stats: stats::Recorder::default(),
            calls: stats::CallLog::default(),
            hooks: webhooks::Dispatcher::new(cfg.webhook_max_attempts),
            sessions: Mutex::new(HashMap::new()),
            rng: Mutex::new(StdRng::seed_from_u64(cfg.seed ^ 0x5eed_f00d)),
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The whole HTTP surface: `/v1/...` (Clerk) and `/__emulator/...` (test controls).
    pub fn router(&self) -> Router {
        self.inner.hooks.ensure_worker();
        let v1 = Router::new()
            .merge(users::router())
            .merge(orgs::router())
            .merge(tokens::v1_router())
            .fallback(gate::not_found)
            .method_not_allowed_fallback(gate::method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                gate::v1_gate,
            ));
        let control = Router::new()
            .merge(tokens::control_router())
            .merge(stats::control_router())
            .merge(knobs::control_router())
            .merge(webhooks::control_router())
            .route("/__emulator", axum::routing::get(info));
        v1.merge(control).with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.router();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Binds `addr` (port 0 is fine) and serves in the background.
    pub async fn spawn(self, addr: impl ToSocketAddrs) -> std::io::Result<RunningEmulator> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let emulator = self.clone();
        let handle = tokio::spawn(self.serve(listener, async move { stop.cancelled().await }));
        Ok(RunningEmulator {
            url: format!("http://{local}"),
            addr: local,
            emulator,
            cancel,
            handle: Some(handle),
        })
    }

    /// The secret key callers must present.
    pub fn secret_key(&self) -> &str {
        &self.inner.secret_key
    }

    /// Per-endpoint call counts since start or the last [`Emulator::reset`].
    pub fn stats(&self) -> Stats {
        let mut s = self.inner.stats.snapshot();
        let w = self.inner.knobs.lock().window_stats();
        s.max_in_window = w.max_in_window;
        s.rate_limited = w.rate_limited;
        s.user_rate_limited = w.user_rate_limited;
        s
    }

    /// Every authenticated `/v1` call since start or the last [`Emulator::reset`], in
    /// arrival order, with the time it reached the rate limiter (the most recent
    /// 100,000 are kept).
    pub fn calls(&self) -> Vec<CallRecord> {
        self.inner.calls.snapshot()
    }

    /// Zeroes the call counters and the call log, and restarts the rate-limit window.
    pub fn reset(&self) {
        self.inner.stats.clear();
        self.inner.calls.clear();
        self.inner.knobs.lock().reset_window();
    }

    /// Applies a partial knob update; an invalid update is logged and ignored
    /// (use [`Emulator::try_set_knobs`] to see the error).
    pub fn set_knobs(&self, k: Knobs) {
        if let Err(e) = self.try_set_knobs(k) {
            tracing::warn!(error = %e, "emulator knobs not changed");
        }
    }

    /// Applies a partial knob update, or changes nothing and says why.
    pub fn try_set_knobs(&self, k: Knobs) -> Result<(), Error> {
        self.inner.knobs.lock().apply(k)
    }

    /// The id of seeded user `i` (independent of the seed).
    pub fn seed_user_id(i: usize) -> String {
        seed::user_id(i)
    }

    /// Ids of all current users, oldest first.
    pub fn user_ids(&self) -> Vec<String> {
        let store = self.inner.store.read();
        let mut users: Vec<_> = store.users.values().collect();
        users.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        users.into_iter().map(|u| u.id.clone()).collect()
    }

    /// Ids of all organizations, oldest first.
    pub fn org_ids(&self) -> Vec<String> {
        self.inner
            .store
            .read()
            .orgs
            .iter()
            .map(|o| o.id.clone())
            .collect()
    }

    /// The User JSON of `id`, as `GET /v1/users/{id}` would answer.
    pub fn user(&self, id: &str) -> Option<serde_json::Value> {
        self.inner
            .store
            .read()
            .users
            .get(id)
            .map(users::User::to_json)
    }

    /// The `ins_…` id put in webhook envelopes.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    /// `iss` of minted tokens.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    pub(crate) fn now_ms(&self) -> i64 {
        unix_ms()
    }
}

async fn info(
    axum::extract::State(emu): axum::extract::State<Emulator>,
) -> axum::Json<serde_json::Value> {
    let ids = emu.user_ids();
    axum::Json(serde_json::json!({
        "instance_id": emu.instance_id(),
        "issuer": emu.issuer(),
        "kid": emu.kid(),
        "users": ids.len(),
        "sample_user_ids": ids.iter().take(5).collect::<Vec<_>>(),
        "organization_ids": emu.org_ids(),
    }))
}

/// An emulator serving in the background. Dropping it starts a graceful shutdown;
/// [`RunningEmulator::shutdown`] also waits for it.
pub struct RunningEmulator {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub addr: SocketAddr,
    /// The served emulator (shares state with the one `spawn` was called on).
    pub emulator: Emulator,
    cancel: CancellationToken,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningEmulator {
    /// Stops serving and waits until the server task has finished.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.cancel.cancel();
        match self.handle.take() {
            Some(h) => h.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
