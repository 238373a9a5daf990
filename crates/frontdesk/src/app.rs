//! Assembly: the two routers (edge and api) merged from each capability's own
//! `router()` over a [`Frontdesk`], and `serve`, which runs both listeners until the
//! shutdown token fires and lets in-flight requests finish. Nothing imports this
//! module but the binary's `cli`: it is the top of the crate.

use std::time::Duration;

use axum::Router;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::console;
use crate::context;
use crate::error::{Error, Result};
use crate::facade::Frontdesk;
use crate::gateway;
use crate::http;
use crate::ops;
use crate::proxy;
use crate::telemetry;
use crate::users;
use crate::webhooks;

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

/// A built [`Frontdesk`] and its two routers: what `frontdesk serve` runs.
pub struct App {
    frontdesk: Frontdesk,
}

impl App {
    /// Connects the store (migrating it when configured) and prepares Redis.
    pub async fn build(config: Config) -> Result<Self> {
        Ok(Self {
            frontdesk: Frontdesk::builder(config).build().await?,
        })
    }

    pub async fn build_with_clock(config: Config, clock: SharedClock) -> Result<Self> {
        Ok(Self {
            frontdesk: Frontdesk::builder(config).clock(clock).build().await?,
        })
    }

    /// Serves an already built façade (an embedding app that also wants the
    /// listeners).
    pub fn from_frontdesk(frontdesk: Frontdesk) -> Self {
        Self { frontdesk }
    }

    pub fn state(&self) -> &Frontdesk {
        &self.frontdesk
    }

    /// The public listener's routes.
    pub fn edge_router(&self) -> Router {
        edge_router(&self.frontdesk)
    }

    /// The internal listener's routes.
    pub fn api_router(&self) -> Router {
        api_router(&self.frontdesk)
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
        let fd = self.frontdesk;
        fd.start();
        // Open event streams never end by themselves: close them when shutdown begins,
        // so the listeners' graceful shutdown is not held for the whole grace period.
        let live = fd.live().clone();
        let vitals = fd.vitals().clone();
        let closing = shutdown.clone();
        tokio::spawn(async move {
            closing.cancelled().await;
            live.close_streams();
            vitals.close_streams();
        });
        let limits = fd.config().http.clone();
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

        let grace = Duration::from_millis(fd.config().shutdown_grace_ms);
        let outcome = tokio::select! {
            r = async { tokio::join!(edge, api) } => Some(r),
            _ = async {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
            } => None,
        };
        // Webhook effects drain, queued invalidations reach Redis, the other tasks
        // stop and the store closes.
        fd.stop().await;
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
        tracing::info!("stopped");
        Ok(())
    }
}

/// The public listener's routes: each capability's own router, over `fd`.
pub fn edge_router(fd: &Frontdesk) -> Router {
    let router = Router::new()
        .merge(ops::edge_router())
        .merge(context::api::router(fd.auth().clone()))
        .merge(webhooks::edge_router(fd.webhooks_state()))
        .merge(gateway::edge_router(fd.gateway_state()))
        .merge(fd.live().edge_router());
    gateway::front(finish(router, "edge", fd), &fd.gateway_state())
}

/// The internal listener's routes.
pub fn api_router(fd: &Frontdesk) -> Router {
    let routes = Router::new()
        .merge(users::api::router(fd.users().cloned()))
        .merge(proxy::router(fd.proxy_state()))
        .merge(webhooks::api_router(fd.webhooks_state()))
        .merge(fd.respcache().router())
        .merge(fd.bulk().router())
        .merge(fd.live().api_router());
    let router = Router::new()
        .merge(ops::api_router(fd.clone()))
        .merge(console::router(fd.clone(), routes.clone()))
        .merge(routes);
    gateway::front_api(finish(router, "api", fd), &fd.gateway_state())
}

/// The layer shared by both listeners: observation (request id, fields for log lines,
/// body limit, time-out, JSON for every rejection, metrics, the console's counters,
/// access record: `telemetry::observe`), with a JSON 404 for unknown paths. Every
/// request pays for each layer here: see BENCHMARKS.md "Edge overhead" before adding
/// one.
fn finish(router: Router, listener: &'static str, fd: &Frontdesk) -> Router {
    let router = router
        .route_layer(telemetry::RouteLayer)
        .fallback(not_found);
    // The api listener's optional bearer (FRONTDESK_API_TOKEN), unknown paths included.
    let router = match listener {
        "api" => router.layer(middleware::from_fn_with_state(
            fd.config().clone(),
            crate::api_auth::require_token,
        )),
        _ => router,
    };
    let config = fd.config();
    let vitals = fd.vitals().clone();
    let observe = telemetry::Observe::new(
        listener,
        config.access_log,
        config.access_log_sample,
        Duration::from_millis(config.http.request_timeout_ms),
    )
    .max_body(config.max_body_bytes)
    .on_done(move |status, micros| vitals.count(listener, status, micros));
    router.layer(middleware::from_fn_with_state(
        std::sync::Arc::new(observe),
        telemetry::observe,
    ))
}

async fn not_found() -> Response {
    Error::not_found("no such route").into_response()
}

/// Builds the app and serves it: what the binary's `serve` runs, and what tests run
/// in-process on port-0 listeners.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> Result<()> {
    App::build(config).await?.serve(listeners, shutdown).await
}
