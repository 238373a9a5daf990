//! `Frontdesk`: the library's façade. Built by [`FrontdeskBuilder`] from a `Config`, it
//! owns every capability (each constructed here with exactly the handles it needs),
//! the `Fanout` where changes spread, and the background tasks, which it starts and
//! stops. HTTP routers and the embedding layer sit above it (`app`, `ops`, `embed`);
//! no capability imports it.
//!
//! Adding a capability: one field on `Inner`, one constructor call in
//! `FrontdeskBuilder::build`, one router merge in `app.rs`, one `spawn` in
//! `Frontdesk::start` (see ARCHITECTURE.md, "Adding a capability").

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bulk::Bulk;
use crate::bus::{Bus, Overflow};
use crate::clock::{self, SharedClock};
use crate::config::Config;
use crate::context::{Auth, Context, ContextService};
use crate::error::{Error, Result};
use crate::events::EventHub;
use crate::gateway::{self, Gateway, GatewayState};
use crate::live::Live;
use crate::proxy::{ProxyState, ReadCache};
use crate::redis_link::RedisLink;
use crate::respcache::ResponseCache;
use crate::services::{ClerkServices, Fanout};
use crate::store::Store;
use crate::telemetry;
use crate::tokens::{ClerkJwks, JwksSource, Session, Verifier, VerifierConfig};
use crate::upstream;
use crate::users::UserCache;
use crate::vitals::{FleetWriter, Vitals};
use crate::webhooks::{self, Webhooks, WebhooksState};

/// One Frontdesk instance: cheap to clone (an `Arc`), no globals, so two can run side
/// by side in one process.
#[derive(Clone)]
pub struct Frontdesk(Arc<Inner>);

struct Inner {
    config: Arc<Config>,
    store: Store,
    redis: Option<Arc<RedisLink>>,
    clock: SharedClock,
    prometheus: Option<PrometheusHandle>,
    /// Cross-instance invalidations (a Redis Stream; inert without Redis).
    bus: Arc<Bus>,
    /// `None` only when no Clerk secret key is configured.
    clerk: Option<ClerkServices>,
    /// Session verification and request context (local user + profile).
    auth: Auth,
    /// In-process events for subscribers (SSE, refresh jobs, tests).
    events: EventHub,
    fanout: Fanout,
    /// Webhook signing keys and the signal that wakes the inbox workers.
    webhooks: Arc<Webhooks>,
    /// The reverse proxy in front of the app, its rate limits and assertion keys.
    gateway: Arc<Gateway>,
    /// The tenant-scoped response cache of proxied routes.
    respcache: Arc<ResponseCache>,
    /// Bulk metadata jobs: their API and runner.
    bulk: Bulk,
    /// Live events to browsers (SSE) and refresh jobs.
    live: Live,
    /// This instance's vital signs for the operator console.
    vitals: Vitals,
    tasks: Mutex<Tasks>,
}

/// The background tasks: all but the webhook workers stop on `background`; the
/// workers on their own token, so they can drain while the bus publisher still runs.
#[derive(Default)]
struct Tasks {
    started: bool,
    background: CancellationToken,
    workers_stop: CancellationToken,
    running: Vec<JoinHandle<()>>,
    workers: Option<JoinHandle<()>>,
}

/// Builds a [`Frontdesk`]: connects the store (migrating it when configured), prepares
/// Redis without waiting for it, and constructs every capability.
pub struct FrontdeskBuilder {
    config: Config,
    clock: SharedClock,
}

impl FrontdeskBuilder {
    /// Time as a parameter: tests pass a `ManualClock`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    pub async fn build(self) -> Result<Frontdesk> {
        let Self { config, clock } = self;
        crate::tls::install_crypto_provider();
        gateway::validate(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let store = connect_store(&config).await?;
        let redis = connect_redis(&config).await?;
        metrics::gauge!("frontdesk_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let bus = Arc::new(Bus::new(redis.clone()));
        let clerk = upstream::from_config(&config, clock.clone(), redis.clone())?.map(|client| {
            ClerkServices {
                users: UserCache::new(
                    client.clone(),
                    redis.clone(),
                    bus.clone(),
                    config.cache.clone(),
                    clock.clone(),
                ),
                reads: Arc::new(ReadCache::new(config.cache.clone(), clock.clone())),
                client,
            }
        });
        let verifier = build_verifier(&config, clerk.as_ref(), clock.clone())?;
        let context = ContextService::new(
            store.clone(),
            clerk.as_ref().map(|c| c.users.clone()),
            redis.clone(),
            bus.clone(),
            config.context.clone(),
            clock.clone(),
        );
        if let Some(v) = &verifier {
            // Revocations outlive a restart: what is stored is refused from the start.
            if let Err(e) = crate::services::load_revocations(&store, v, clock.now_ms()).await {
                tracing::warn!(error = %e, "cannot load stored revocations; retrying in the background");
            }
        }
        let events = EventHub::new(1024);
        let bulk = Bulk::new(
            &config,
            store.clone(),
            clerk.as_ref().map(|c| c.client.clone()),
            clerk.as_ref().map(|c| c.users.clone()),
            clock.clone(),
        );
        let live = Live::new(
            &config.live,
            &config.jobs,
            store.clone(),
            redis.clone(),
            clock.clone(),
            events.clone(),
            verifier.clone(),
        );
        let respcache = Arc::new(ResponseCache::new(
            &config,
            redis.clone(),
            bus.clone(),
            events.clone(),
            clock.clone(),
        )?);
        let fanout = Fanout::new(
            clerk.clone(),
            context.clone(),
            verifier.clone(),
            bus.clone(),
            store.clone(),
            clock.clone(),
            events.clone(),
            respcache.clone(),
        );
        let webhooks = Arc::new(Webhooks::from_config(&config)?);
        let gateway = Arc::new(Gateway::new(&config, redis.clone(), clock.clone())?);
        Ok(Frontdesk(Arc::new(Inner {
            config: Arc::new(config),
            store,
            redis,
            clock,
            prometheus: telemetry::prometheus(),
            bus,
            clerk,
            auth: Auth::new(verifier, context),
            events,
            fanout,
            webhooks,
            gateway,
            respcache,
            bulk,
            live,
            vitals: Vitals::new(),
            tasks: Mutex::new(Tasks::default()),
        })))
    }
}

impl Frontdesk {
    pub fn builder(config: Config) -> FrontdeskBuilder {
        FrontdeskBuilder {
            config,
            clock: clock::system(),
        }
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.0.config
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn redis(&self) -> Option<&Arc<RedisLink>> {
        self.0.redis.as_ref()
    }

    pub fn clock(&self) -> &SharedClock {
        &self.0.clock
    }

    pub fn prometheus(&self) -> Option<&PrometheusHandle> {
        self.0.prometheus.as_ref()
    }

    pub fn bus(&self) -> &Arc<Bus> {
        &self.0.bus
    }

    /// The Clerk client and its caches; `None` without a Clerk secret key.
    pub fn clerk(&self) -> Option<&ClerkServices> {
        self.0.clerk.as_ref()
    }

    /// The tiered user cache (`clerk().users`).
    pub fn users(&self) -> Option<&UserCache> {
        self.0.clerk.as_ref().map(|c| &c.users)
    }

    pub fn auth(&self) -> &Auth {
        &self.0.auth
    }

    /// `None` when neither `CLERK_JWT_KEY` nor a Clerk instance is configured.
    pub fn verifier(&self) -> Option<&Verifier> {
        self.0.auth.verifier()
    }

    pub fn context(&self) -> &ContextService {
        self.0.auth.context()
    }

    pub fn events(&self) -> &EventHub {
        &self.0.events
    }

    pub fn fanout(&self) -> &Fanout {
        &self.0.fanout
    }

    pub fn webhooks(&self) -> &Arc<Webhooks> {
        &self.0.webhooks
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.0.gateway
    }

    /// Verifies a request's session token (Bearer, else a `__session*` cookie).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Session> {
        self.0.auth.authenticate(headers).await
    }

    /// The session's context, provisioning the user and profile on first use.
    pub async fn context_of(&self, session: &Session) -> Result<Arc<Context>> {
        Ok(self.0.auth.resolve(session).await?.0)
    }

    /// See [`Fanout::user_changed`].
    pub async fn user_changed(&self, clerk_id: &str) -> std::result::Result<(), Overflow> {
        self.0.fanout.user_changed(clerk_id).await
    }

    /// See [`Fanout::session_revoked`].
    pub async fn session_revoked(
        &self,
        sid: &str,
        until_ms: u64,
        fence: Option<(&str, i64)>,
    ) -> Result<()> {
        self.0.fanout.session_revoked(sid, until_ms, fence).await
    }

    /// The proxy's state; `None` without Clerk.
    pub fn proxy_state(&self) -> Option<ProxyState> {
        self.0.clerk.as_ref().map(|c| ProxyState {
            client: c.client.clone(),
            users: c.users.clone(),
            reads: c.reads.clone(),
            bus: self.0.bus.clone(),
        })
    }

    pub fn webhooks_state(&self) -> WebhooksState {
        WebhooksState {
            config: self.0.config.clone(),
            store: self.0.store.clone(),
            clock: self.0.clock.clone(),
            webhooks: self.0.webhooks.clone(),
            fanout: self.0.fanout.clone(),
        }
    }

    pub fn gateway_state(&self) -> GatewayState {
        GatewayState {
            gateway: self.0.gateway.clone(),
            auth: self.0.auth.clone(),
            redis: self.0.redis.clone(),
            clock: self.0.clock.clone(),
            respcache: self.0.respcache.clone(),
        }
    }

    /// The tenant-scoped response cache of proxied routes.
    pub fn respcache(&self) -> &Arc<ResponseCache> {
        &self.0.respcache
    }

    /// Bulk metadata jobs.
    pub fn bulk(&self) -> &Bulk {
        &self.0.bulk
    }

    /// Live events (SSE) and refresh jobs.
    pub fn live(&self) -> &Live {
        &self.0.live
    }

    /// This instance's vital signs (request counters, the console's streams).
    pub fn vitals(&self) -> &Vitals {
        &self.0.vitals
    }

    fn fleet_writer(&self, redis: Arc<RedisLink>) -> FleetWriter {
        FleetWriter {
            vitals: self.0.vitals.clone(),
            redis,
            clock: self.0.clock.clone(),
            instance_id: self.0.bus.instance_id().to_string(),
            users: self.users().cloned(),
            clerk: self.0.clerk.as_ref().map(|c| c.client.clone()),
            live: self.0.live.clone(),
        }
    }

    /// Starts the background tasks (Prometheus upkeep, revocation sync, Redis health,
    /// the bus publisher and reader, webhook workers and retention, the gateway's key
    /// publisher). Idempotent. An embedding app calls it once, and [`Frontdesk::stop`]
    /// when it shuts down.
    pub fn start(&self) {
        let mut tasks = self.0.tasks.lock();
        if tasks.started {
            return;
        }
        tasks.started = true;
        let stop = tasks.background.clone();
        if let Some(handle) = self.0.prometheus.clone() {
            tasks.spawn(telemetry::prometheus_upkeep(handle, stop.clone()));
        }
        if let Some(v) = self.verifier().cloned() {
            tasks.spawn(revocation_loop(
                self.0.store.clone(),
                v,
                self.0.clock.clone(),
                stop.clone(),
            ));
        }
        if let Some(redis) = self.0.redis.clone() {
            tasks.spawn(redis_health_loop(redis, stop.clone()));
            tasks.spawn(self.0.bus.clone().run_publisher(stop.clone()));
            tasks.spawn(
                self.0
                    .bus
                    .clone()
                    .run_subscriber(self.0.fanout.handler(), stop.clone()),
            );
        }
        tasks.spawn(gateway::run_key_publisher(
            self.gateway_state(),
            stop.clone(),
        ));
        tasks.spawn(self.0.bulk.clone().run_if_enabled(stop.clone()));
        tasks.spawn(self.0.live.clone().run(stop.clone(), stop.clone()));
        if let Some(redis) = &self.0.redis {
            tasks.spawn(self.fleet_writer(redis.clone()).run(stop.clone()));
        }
        tasks.spawn(webhooks::run_retention(self.webhooks_state(), stop));
        let workers_stop = tasks.workers_stop.clone();
        tasks.workers = Some(tokio::spawn(webhooks::run_workers(
            self.webhooks_state(),
            workers_stop,
        )));
    }

    /// Stops the background tasks: webhook effects in flight finish (bounded by
    /// `shutdown_grace_ms`; what does not is retaken after its lease), queued
    /// invalidations get up to 500 ms to reach Redis, then every other task is
    /// cancelled and joined, and the store closes.
    pub async fn stop(&self) {
        let (workers, running, background, workers_stop) = {
            let mut tasks = self.0.tasks.lock();
            (
                tasks.workers.take(),
                std::mem::take(&mut tasks.running),
                tasks.background.clone(),
                tasks.workers_stop.clone(),
            )
        };
        let grace = Duration::from_millis(self.0.config.shutdown_grace_ms);
        workers_stop.cancel();
        if let Some(workers) = workers {
            if tokio::time::timeout(grace, workers).await.is_err() {
                tracing::warn!("webhook effects still running after the grace period");
            }
        }
        let flush_until = tokio::time::Instant::now() + Duration::from_millis(500);
        while self.0.bus.outbox_depth() > 0 && tokio::time::Instant::now() < flush_until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        background.cancel();
        // One deadline for all of them: each loop returns as soon as it sees the token.
        let deadline = tokio::time::Instant::now() + grace;
        for task in running {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!("a background task did not stop within the grace period");
                abort.abort();
            }
        }
        self.0.store.close().await;
    }
}

/// A façade dropped without [`Frontdesk::stop`] still stops its background tasks (they
/// hold the capabilities they need, never the façade, so this runs when the last handle
/// goes).
impl Drop for Inner {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut();
        tasks.workers_stop.cancel();
        tasks.background.cancel();
    }
}

impl Tasks {
    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.running.push(tokio::spawn(task));
    }
}

async fn connect_store(config: &Config) -> Result<Store> {
    let store = Store::connect_with(
        config.database_url.expose(),
        config.database_max_connections,
        Duration::from_millis(config.database_acquire_timeout_ms.max(1)),
    )
    .await
    .map_err(|e| match e {
        Error::StoreUnavailable(inner) => anyhow::anyhow!(
            "cannot connect to the store ({}): {}",
            redact_url_kind(config),
            crate::store::describe_connect_error(&inner)
        )
        .into(),
        other => other,
    })?;
    if store.behind_pooler() {
        tracing::info!(
            "postgres behind a transaction-mode pooler: one transaction per statement, no statement cache"
        );
    }
    if config.migrate_on_start {
        let applied = store.migrate().await?;
        tracing::info!(store = store.kind(), applied, "migrations up to date");
    }
    Ok(store)
}

async fn connect_redis(config: &Config) -> Result<Option<Arc<RedisLink>>> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let link = Arc::new(RedisLink::new(
        url.expose(),
        &config.redis_prefix,
        config.redis.ca_file.as_deref(),
    )?);
    if !link.ping().await {
        // An outage is waited out; a TLS failure is a configuration error.
        if let Some(reason) = link.tls_failure() {
            return Err(anyhow::anyhow!("cannot connect to Redis: {reason}").into());
        }
        if link.speaks_plain_redis().await {
            return Err(anyhow::anyhow!(
                "cannot connect to Redis: {} (it answers plain redis://)",
                crate::tls::NOT_TLS
            )
            .into());
        }
        tracing::warn!(
            "redis is not reachable at start; serving without the shared tier until it is"
        );
    }
    Ok(Some(link))
}

fn build_verifier(
    config: &Config,
    clerk: Option<&ClerkServices>,
    clock: SharedClock,
) -> Result<Option<Verifier>> {
    let vc = VerifierConfig {
        jwt_key_pem: config.clerk.jwt_key.clone(),
        authorized_parties: config.clerk.authorized_parties.clone(),
        ..config.tokens.clone()
    };
    if vc.jwt_key_pem.is_none() && clerk.is_none() {
        return Ok(None);
    }
    let source: Option<Arc<dyn JwksSource>> =
        clerk.map(|c| Arc::new(ClerkJwks(c.client.clone())) as Arc<dyn JwksSource>);
    let verifier = Verifier::new(vc, source, clock)
        .map_err(|e| anyhow::anyhow!("session-token verification: {e}"))?;
    Ok(Some(verifier))
}

/// How often stored revocations are purged and reloaded (the reload catches what the
/// bus could not deliver while Redis was away).
const REVOCATION_SYNC: Duration = Duration::from_secs(5);

async fn revocation_loop(
    store: Store,
    verifier: Verifier,
    clock: SharedClock,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REVOCATION_SYNC) => {}
        }
        let now = clock.now_ms();
        verifier.purge_revocations();
        if let Err(e) = store.revocations_purge(now as i64).await {
            tracing::debug!(error = %e, "cannot purge expired revocations");
        }
        if let Err(e) = crate::services::load_revocations(&store, &verifier, now).await {
            tracing::warn!(error = %e, "cannot reload stored revocations");
        }
    }
}

/// Keeps the Redis up/down flag fresh even when no request touches Redis, so stats and
/// readiness see an outage (and the recovery) within a few seconds.
async fn redis_health_loop(redis: Arc<RedisLink>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => { redis.ping().await; }
        }
    }
}

fn redact_url_kind(config: &Config) -> &'static str {
    let url = config.database_url.expose();
    if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    }
}
