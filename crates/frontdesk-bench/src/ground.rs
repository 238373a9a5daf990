//! What a scenario stands on: a runtime for the servers (separate from the load
//! generator's), the Clerk emulator, Frontdesk instances on port-0 listeners, a
//! hello-world axum server, and Postgres/Redis from the test ground.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use frontdesk::config::{Config, LogFormat, Secret};
use frontdesk::{App, Frontdesk, Listeners};
use frontdesk_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use std::sync::Mutex;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::rng::Rng;

/// The webhook signing secret the bench configures and signs with.
pub const WEBHOOK_SECRET: &str = "whsec_ZnJvbnRkZXNrLWJlbmNoLXdlYmhvb2stc2VjcmV0ISE=";

pub struct Ground {
    /// The servers' runtime (Frontdesk, emulator, baseline).
    pub server: Handle,
    pub pg_admin: String,
    pub redis: Option<String>,
    rng: Mutex<Rng>,
    databases: Mutex<Vec<String>>,
}

impl Ground {
    pub async fn new(server: Handle) -> anyhow::Result<Self> {
        let pg_admin = std::env::var("FRONTDESK_TEST_DATABASE_URL").map_err(|_| {
            anyhow!(
                "FRONTDESK_TEST_DATABASE_URL is not set (an admin Postgres URL; \
                 `. scripts/testground.sh && testground_up` starts one)"
            )
        })?;
        let redis = std::env::var("FRONTDESK_TEST_REDIS_URL").ok();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id());
        let g = Self {
            server,
            pg_admin,
            redis,
            rng: Mutex::new(Rng::new(seed)),
            databases: Mutex::new(Vec::new()),
        };
        g.sweep().await;
        Ok(g)
    }

    pub fn unique(&self) -> String {
        let n = self.rng.lock().map(|mut r| r.next_u64()).unwrap_or(0);
        format!("{n:016x}")
    }

    async fn admin(&self) -> anyhow::Result<sqlx::PgPool> {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&self.pg_admin)
            .await
            .context("cannot reach Postgres at FRONTDESK_TEST_DATABASE_URL")
    }

    /// Drops databases left by earlier runs that did not finish.
    async fn sweep(&self) {
        let Ok(pool) = self.admin().await else { return };
        let names: Vec<(String,)> =
            sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'fdbench\\_%'")
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
        for (name,) in names {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&pool)
                .await;
        }
        pool.close().await;
    }

    /// A fresh database of this run's own; dropped by [`Ground::cleanup`].
    pub async fn database(&self) -> anyhow::Result<String> {
        let name = format!("fdbench_{}", self.unique());
        let pool = self.admin().await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&pool)
            .await
            .context("create bench database")?;
        pool.close().await;
        if let Ok(mut d) = self.databases.lock() {
            d.push(name.clone());
        }
        let (base, rest) = self
            .pg_admin
            .rsplit_once('/')
            .ok_or_else(|| anyhow!("database URL has no path"))?;
        let query = rest
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        Ok(format!("{base}/{name}{query}"))
    }

    pub async fn cleanup(&self) {
        let names: Vec<String> = self
            .databases
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        if names.is_empty() {
            return;
        }
        let Ok(pool) = self.admin().await else { return };
        for name in names {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&pool)
                .await;
        }
        pool.close().await;
    }

    /// Seeds (on a blocking thread: 100,000 users take a while) and serves an emulator
    /// on the server runtime.
    pub async fn emulator(&self, cfg: EmulatorConfig) -> anyhow::Result<RunningEmulator> {
        let emu = tokio::task::spawn_blocking(move || Emulator::new(cfg))
            .await?
            .map_err(|e| anyhow!("emulator: {e}"))?;
        let running = self
            .server
            .spawn(async move { emu.spawn(SocketAddr::from(([127, 0, 0, 1], 0))).await })
            .await??;
        Ok(running)
    }

    /// A Frontdesk configuration on `database_url`, talking to `emu`, verifying tokens
    /// with its PEM key, Redis under `redis_prefix` when given.
    pub fn config(
        &self,
        database_url: &str,
        emu: &RunningEmulator,
        redis_prefix: Option<&str>,
    ) -> Config {
        let mut c = Config {
            edge_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: Secret::new(database_url),
            log_format: LogFormat::Json,
            shutdown_grace_ms: 2_000,
            ..Config::default()
        };
        c.clerk.api_url = emu.url.clone();
        c.clerk.secret_key = Some(Secret::new(emu.emulator.secret_key()));
        c.clerk.jwt_key = Some(emu.emulator.public_key_pem());
        c.clerk.webhook_signing_secret = Some(Secret::new(WEBHOOK_SECRET));
        // sk_test_ keys default to Clerk's development limit (100 per 10 s), which
        // would make the benchmark measure the limiter: the emulator has no limit.
        c.upstream.rate_limit_requests = 1_000_000;
        if let (Some(url), Some(prefix)) = (&self.redis, redis_prefix) {
            c.redis_url = Some(Secret::new(url.clone()));
            c.redis_prefix = prefix.to_string();
        }
        c
    }

    pub fn redis_prefix(&self) -> Option<String> {
        self.redis
            .as_ref()
            .map(|_| format!("fdbench:{}:", self.unique()))
    }

    /// Builds and serves one Frontdesk instance on the server runtime.
    pub async fn frontdesk(&self, config: Config) -> anyhow::Result<Instance> {
        self.server
            .spawn(async move {
                let app = App::build(config)
                    .await
                    .map_err(|e| anyhow!("frontdesk: {e}"))?;
                let listeners = Listeners {
                    edge: TcpListener::bind("127.0.0.1:0").await?,
                    api: TcpListener::bind("127.0.0.1:0").await?,
                };
                let edge = listeners.edge.local_addr()?;
                let api = listeners.api.local_addr()?;
                let state = app.state().clone();
                let shutdown = CancellationToken::new();
                let task = tokio::spawn(app.serve(listeners, shutdown.clone()));
                Ok::<_, anyhow::Error>(Instance {
                    state,
                    edge,
                    api,
                    shutdown,
                    task: Some(task),
                })
            })
            .await?
    }

    /// The baseline: a hello-world axum server on the server runtime.
    pub async fn hello(&self) -> anyhow::Result<Hello> {
        self.server
            .spawn(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let shutdown = CancellationToken::new();
                let stop = shutdown.clone();
                let app = hello_router();
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move { stop.cancelled().await })
                        .await;
                });
                Ok::<_, anyhow::Error>(Hello { addr, shutdown })
            })
            .await?
    }
}

/// The hello-world baseline: `GET /` answers 200 `hello`, nothing else (no layers).
/// Served in process by [`Ground::hello`] and as its own process by
/// `frontdesk-bench hello` (scripts/bench-edge.sh).
pub fn hello_router() -> axum::Router {
    axum::Router::new().route("/", axum::routing::get(|| async { "hello" }))
}

pub struct Hello {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Hello {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct Instance {
    pub state: Frontdesk,
    pub edge: SocketAddr,
    pub api: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<frontdesk::Result<()>>>,
}

impl Instance {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(10), t).await {
                Ok(joined) => joined?.map_err(|e| anyhow!("frontdesk stopped with: {e}"))?,
                Err(_) => bail!("frontdesk did not stop within 10 s"),
            }
        }
        Ok(())
    }

    /// `GET /v1/stats` of this instance.
    pub async fn stats(&self, http: &reqwest::Client) -> anyhow::Result<serde_json::Value> {
        Ok(http
            .get(format!("http://{}/v1/stats", self.api))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An HTTP client for set-up and probes (not for load).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}
