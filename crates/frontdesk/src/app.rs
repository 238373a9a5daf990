//! Assembly: the shared state every capability reads, the two routers (edge and api)
//! merged from each capability's own `router()`, and `serve`, which runs both
//! listeners until the shutdown token fires and lets in-flight requests finish.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;

use crate::bus::{self, Bus, BusEvent, Overflow};
use crate::clock::{self, SharedClock};
use crate::config::Config;
use crate::context::{self, ContextService};
use crate::error::{Error, Result};
use crate::events::EventHub;
use crate::gateway;
use crate::http;
use crate::ops;
use crate::proxy::{self, ReadCache};
use crate::redis_link::RedisLink;
use crate::store::Store;
use crate::telemetry;
use crate::tokens::{ClerkJwks, JwksSource, Verifier, VerifierConfig};
use crate::upstream::{self, ClerkClient};
use crate::users::{self, UserCache};
use crate::webhooks::{self, Webhooks};

/// Everything a handler may need. Cheap to clone; no globals, so two instances can run
/// side by side in one test process.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub redis: Option<Arc<RedisLink>>,
    pub clock: SharedClock,
    pub prometheus: Option<PrometheusHandle>,
    /// Cross-instance invalidations (Redis pub/sub; inert without Redis).
    pub bus: Arc<Bus>,
    /// The Clerk Backend API client; `None` only when no secret key is configured.
    pub clerk: Option<Arc<ClerkClient>>,
    /// The tiered user cache (needs `clerk`).
    pub users: Option<UserCache>,
    /// The Backend API proxy's read cache (needs `clerk`).
    pub proxy_reads: Option<Arc<ReadCache>>,
    /// Session-token verification; `None` when neither `CLERK_JWT_KEY` nor a Clerk
    /// instance to fetch the JWKS from is configured.
    pub verifier: Option<Verifier>,
    /// In-process events for subscribers (SSE, refresh jobs, tests).
    pub events: EventHub,
    /// Request context (local user + profile) and first-login provisioning.
    pub context: ContextService,
    /// Webhook signing keys and the signal that wakes the inbox workers.
    pub webhooks: Arc<Webhooks>,
    /// The reverse proxy in front of the app, its rate limits and assertion keys.
    pub gateway: Arc<gateway::Gateway>,
    /// Live events to browsers (SSE) and refresh jobs.
    pub live: crate::live::Live,
}

impl AppState {
    /// A Clerk user changed (webhook, proxy write, API): forget every cached answer
    /// about them, here and on every other instance. The L2 deletes and the
    /// announcement are queued on the bus (retried until Redis takes them); `Err`
    /// when they could not be queued, so the caller's work is retried.
    pub async fn user_changed(&self, clerk_id: &str) -> std::result::Result<(), Overflow> {
        let mut keys = Vec::with_capacity(2);
        if let Some(users) = &self.users {
            keys.extend(users.forget_local(clerk_id));
        }
        keys.extend(self.context.forget_local(clerk_id));
        self.bus.enqueue(
            keys,
            Some(BusEvent::UserInvalidated {
                id: clerk_id.to_string(),
            }),
        )
    }

    /// A session ended or was revoked: its tokens are refused until `until_ms`
    /// (their latest possible expiry), on this instance at once, on the others when
    /// the bus delivers it, and after any restart (it is stored first). `fence`: the
    /// webhook message and claim this runs under (see `Store::revocation_put`).
    pub async fn session_revoked(
        &self,
        sid: &str,
        until_ms: u64,
        fence: Option<(&str, i64)>,
    ) -> Result<()> {
        let now = self.clock.now_ms();
        self.store
            .revocation_put(sid, until_ms as i64, now as i64, fence)
            .await?;
        if let Some(v) = &self.verifier {
            v.revoke_session(sid, until_ms);
        }
        self.bus
            .enqueue(
                Vec::new(),
                Some(BusEvent::SessionRevoked {
                    sid: sid.to_string(),
                    until_ms,
                }),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }
}

/// Listeners bound by the caller: the binary binds the configured addresses, tests bind
/// port 0 and read the addresses back.
pub struct Listeners {
    pub edge: TcpListener,
    pub api: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Self> {
        let edge = TcpListener::bind(config.edge_addr).await.map_err(|e| {
            anyhow::anyhow!("cannot bind the edge listener {}: {e}", config.edge_addr)
        })?;
        let api = TcpListener::bind(config.api_addr).await.map_err(|e| {
            anyhow::anyhow!("cannot bind the api listener {}: {e}", config.api_addr)
        })?;
        Ok(Self { edge, api })
    }
}

pub struct App {
    state: AppState,
}

impl App {
    /// Connects the store (migrating it when configured) and prepares Redis.
    pub async fn build(config: Config) -> Result<Self> {
        Self::build_with_clock(config, clock::system()).await
    }

    pub async fn build_with_clock(config: Config, clock: SharedClock) -> Result<Self> {
        crate::tls::install_crypto_provider();
        let store = Store::connect_with(
            config.database_url.expose(),
            config.database_max_connections,
            Duration::from_millis(config.database_acquire_timeout_ms.max(1)),
        )
        .await
        .map_err(|e| match e {
            Error::StoreUnavailable(inner) => anyhow::anyhow!(
                "cannot connect to the store ({}): {}",
                redact_url_kind(&config),
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
        let redis = match &config.redis_url {
            Some(url) => {
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
                Some(link)
            }
            None => None,
        };
        metrics::gauge!("frontdesk_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let bus = Arc::new(Bus::new(redis.clone()));
        let clerk = upstream::from_config(&config, clock.clone(), redis.clone())?;
        let users = clerk.as_ref().map(|c| {
            UserCache::new(
                c.clone(),
                redis.clone(),
                bus.clone(),
                config.cache.clone(),
                clock.clone(),
            )
        });
        let proxy_reads = clerk
            .as_ref()
            .map(|_| Arc::new(ReadCache::new(config.cache.clone(), clock.clone())));
        let verifier = build_verifier(&config, clerk.clone(), clock.clone())?;
        let context = ContextService::new(
            store.clone(),
            users.clone(),
            redis.clone(),
            bus.clone(),
            config.context.clone(),
            clock.clone(),
        );
        let webhooks = Arc::new(Webhooks::from_config(&config)?);
        if let Some(v) = &verifier {
            // Revocations outlive a restart: what is stored is refused from the start.
            if let Err(e) = load_revocations(&store, v, clock.now_ms()).await {
                tracing::warn!(error = %e, "cannot load stored revocations; retrying in the background");
            }
        }
        let gateway = Arc::new(gateway::Gateway::new(
            &config,
            redis.clone(),
            clock.clone(),
        )?);
        let events = EventHub::new(1024);
        let live = crate::live::Live::new(
            &config.live,
            &config.jobs,
            store.clone(),
            redis.clone(),
            clock.clone(),
            events.clone(),
            verifier.clone(),
        );
        Ok(Self {
            state: AppState {
                config: Arc::new(config),
                store,
                redis,
                clock,
                prometheus: telemetry::prometheus(),
                bus,
                clerk,
                users,
                proxy_reads,
                verifier,
                events,
                context,
                webhooks,
                gateway,
                live,
            },
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The public listener's routes.
    pub fn edge_router(&self) -> Router {
        let router = Router::new()
            .merge(ops::edge_router())
            .merge(context::api::router())
            .merge(webhooks::edge_router())
            .merge(gateway::edge_router())
            .merge(self.state.live.edge_router());
        gateway::front(finish(router, "edge", &self.state), &self.state)
    }

    /// The internal listener's routes.
    pub fn api_router(&self) -> Router {
        let router = Router::new()
            .merge(ops::api_router())
            .merge(users::api::router())
            .merge(proxy::router())
            .merge(webhooks::api_router())
            .merge(self.state.live.api_router());
        gateway::front_api(finish(router, "api", &self.state), &self.state)
    }

    /// Serves both listeners until `shutdown` fires, then gives in-flight requests up
    /// to `shutdown_grace_ms` to finish.
    pub async fn serve(self, listeners: Listeners, shutdown: CancellationToken) -> Result<()> {
        let edge = self.edge_router();
        let api = self.api_router();
        self.serve_routers(listeners, edge, api, shutdown).await
    }

    /// Like [`App::serve`] with routers given by the caller: an embedding Rust app
    /// merges its own routes onto [`App::edge_router`] and serves them together.
    pub async fn serve_routers(
        self,
        listeners: Listeners,
        edge_router: Router,
        api_router: Router,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let background = CancellationToken::new();
        if let Some(handle) = self.state.prometheus.clone() {
            tokio::spawn(telemetry::prometheus_upkeep(handle, background.clone()));
        }
        if let Some(v) = self.state.verifier.clone() {
            tokio::spawn(revocation_loop(
                self.state.store.clone(),
                v,
                self.state.clock.clone(),
                background.clone(),
            ));
        }
        if let Some(redis) = self.state.redis.clone() {
            tokio::spawn(redis_health_loop(redis, background.clone()));
            tokio::spawn(self.state.bus.clone().run_publisher(background.clone()));
            tokio::spawn(
                self.state
                    .bus
                    .clone()
                    .run_subscriber(bus_handler(&self.state), background.clone()),
            );
        }
        tokio::spawn(
            self.state
                .live
                .clone()
                .run(background.clone(), shutdown.clone()),
        );
        tokio::spawn(gateway::run_key_publisher(
            self.state.clone(),
            background.clone(),
        ));
        // Workers stop on their own token, so that they can drain while the rest of
        // the background (the bus publisher above all) still runs.
        let workers_stop = CancellationToken::new();
        let workers = tokio::spawn(webhooks::run_workers(
            self.state.clone(),
            workers_stop.clone(),
        ));
        tokio::spawn(webhooks::run_retention(
            self.state.clone(),
            background.clone(),
        ));
        let limits = self.state.config.http.clone();
        let edge = http::serve(
            listeners.edge,
            edge_router,
            limits.clone(),
            "edge",
            shutdown.clone(),
        );
        let api = http::serve(listeners.api, api_router, limits, "api", shutdown.clone());
        let edge = tokio::spawn(edge);
        let api = tokio::spawn(api);
        let (edge_abort, api_abort) = (edge.abort_handle(), api.abort_handle());

        let grace = Duration::from_millis(self.state.config.shutdown_grace_ms);
        let outcome = tokio::select! {
            r = async { tokio::join!(edge, api) } => Some(r),
            _ = async {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
            } => None,
        };
        // In-flight webhook effects finish (bounded by the grace period) before the
        // store closes; whatever does not is retaken after its lease.
        workers_stop.cancel();
        if tokio::time::timeout(grace, workers).await.is_err() {
            tracing::warn!("webhook effects still running after the grace period");
        }
        // Give queued invalidations a moment to reach Redis.
        let flush_until = tokio::time::Instant::now() + Duration::from_millis(500);
        while self.state.bus.outbox_depth() > 0 && tokio::time::Instant::now() < flush_until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        background.cancel();
        match outcome {
            Some((e, a)) => {
                for joined in [e, a] {
                    joined
                        .map_err(|e| anyhow::anyhow!("listener task failed: {e}"))?
                        .map_err(|e| anyhow::anyhow!("listener failed: {e}"))?;
                }
            }
            None => {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "grace period over; closing with requests still in flight"
                );
                edge_abort.abort();
                api_abort.abort();
            }
        }
        self.state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Layers shared by both listeners, outermost last: body limit, request time-out, JSON
/// for every rejection (see `http`), observation (request id, span, access log,
/// metrics), and a JSON 404 for unknown paths.
fn finish(router: Router<AppState>, listener: &'static str, state: &AppState) -> Router {
    let router = router
        .route_layer(middleware::from_fn(remember_route))
        .fallback(not_found);
    // The api listener's optional bearer (FRONTDESK_API_TOKEN), unknown paths included.
    let router = match listener {
        "api" => router.layer(middleware::from_fn_with_state(
            state.clone(),
            crate::api_auth::require_token,
        )),
        _ => router,
    };
    router
        .layer(RequestBodyLimitLayer::new(state.config.max_body_bytes))
        .layer(middleware::from_fn({
            let limit = Duration::from_millis(state.config.http.request_timeout_ms);
            move |req: Request, next: Next| http::request_timeout(limit, req, next)
        }))
        .layer(middleware::from_fn(http::json_rejections))
        .layer(middleware::from_fn({
            let access_log = state.config.access_log;
            move |req: Request, next: Next| telemetry::observe(listener, access_log, req, next)
        }))
        .with_state(state.clone())
}

/// Copies the matched route template into the response so the outer observation layer
/// (which runs before routing) can label metrics by route.
async fn remember_route(req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(req).await;
    if let Some(m) = matched {
        response.extensions_mut().insert(m);
    }
    response
}

async fn not_found() -> Response {
    Error::not_found("no such route").into_response()
}

fn build_verifier(
    config: &Config,
    clerk: Option<Arc<ClerkClient>>,
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
        clerk.map(|c| Arc::new(ClerkJwks(c)) as Arc<dyn JwksSource>);
    let verifier = Verifier::new(vc, source, clock)
        .map_err(|e| anyhow::anyhow!("session-token verification: {e}"))?;
    Ok(Some(verifier))
}

/// Applies other instances' invalidations to this instance's in-process caches.
fn bus_handler(state: &AppState) -> bus::Handler {
    let users = state.users.clone();
    let reads = state.proxy_reads.clone();
    let context = state.context.clone();
    let verifier = state.verifier.clone();
    Arc::new(move |event| match event {
        BusEvent::SessionRevoked { sid, until_ms } => {
            if let Some(v) = &verifier {
                v.revoke_session(&sid, until_ms);
            }
        }
        BusEvent::UserInvalidated { id } => {
            if let Some(u) = &users {
                u.evict_local(&id);
            }
            context.evict_local(&id);
        }
        BusEvent::ProxyNamespaceBumped { namespace } => {
            if let Some(r) = &reads {
                r.bump_local(&namespace);
            }
        }
        BusEvent::Resync => {
            context.clear_local();
            if let Some(u) = &users {
                u.clear_local();
            }
            if let Some(r) = &reads {
                r.clear_local();
            }
        }
    })
}

/// How often stored revocations are purged and reloaded (the reload catches what the
/// bus could not deliver while Redis was away).
const REVOCATION_SYNC: Duration = Duration::from_secs(5);

async fn load_revocations(store: &Store, verifier: &Verifier, now_ms: u64) -> Result<usize> {
    let limit = verifier.config().max_revocations as i64;
    let rows = store.revocations_active(now_ms as i64, limit).await?;
    for (sid, until) in &rows {
        verifier.revoke_session(sid, (*until).max(0) as u64);
    }
    Ok(rows.len())
}

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
        if let Err(e) = load_revocations(&store, &verifier, now).await {
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

/// Builds the app and serves it: what the binary's `serve` runs, and what tests run
/// in-process on port-0 listeners.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<()> {
    App::build(config).await?.serve(listeners, shutdown).await
}
