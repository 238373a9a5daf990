//! The durable store: Postgres in production, an SQLite file as the embedded default.
//! A closed enum rather than `sqlx::Any`, so each backend keeps its own SQL dialect
//! (`FOR UPDATE SKIP LOCKED`, `RETURNING`, JSONB) and its own migrations.
//!
//! Availability: once a statement fails because the Postgres server cannot be reached
//! (a pool time-out, a connection error), the store is known down. Until a background
//! probe (a fresh connection, every second) reaches it again, statements fail at once
//! with `store_unavailable` instead of each waiting out the pool's acquire time-out.

#[cfg(feature = "sqlite")]
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
#[cfg(feature = "sqlite")]
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// Runs `body` with the store's backend, unless the store is known down (then it fails
/// at once), and notes an outage when the body fails with one.
macro_rules! on_backend {
    ($store:expr, |$backend:ident| $body:expr) => {{
        let store: &Store = $store;
        let outcome = async {
            let $backend = store.gate()?;
            Ok::<_, $crate::error::Error>($body)
        }
        .await;
        store.observe(outcome)?
    }};
}

/// Runs the same statement on whichever pool the store has (each arm is typed for its
/// own backend, so the body is written once and compiled twice).
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        on_backend!($store, |backend| match backend {
            Backend::Postgres($pool) => $body,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite($pool) => $body,
        })
    };
}

mod inbox;
mod jobs;
mod pg;
mod revocations;
mod users;

pub use inbox::{ClaimedMessage, InboxItem, InboxState, InboxStats, NewInboxMessage};
pub use jobs::{ItemOutcome, ItemResult, JobSummary, NewJobItem, PendingItem};
pub use pg::{PgStore, describe_connect_error, ssl_mode_of};
pub use users::{Ensured, LocalUser, Profile, UserUpsert};

use crate::error::{Error, Result};

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
#[cfg(feature = "sqlite")]
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The durable store: its backend's pool and what is known of its availability.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    health: Arc<Health>,
}

#[derive(Debug, Clone)]
pub enum Backend {
    /// A Postgres pool; `&PgStore` is an sqlx executor, so statements are written for it
    /// as for a pool (see `pg.rs` for what it does behind a transaction-mode pooler).
    Postgres(PgStore),
    #[cfg(feature = "sqlite")]
    Sqlite(SqlitePool),
}

/// Availability of a Postgres store. (An SQLite file is local: its errors are
/// answered one by one, never as an outage.)
#[derive(Debug, Default)]
struct Health {
    /// Connection settings for the probe; `None` for SQLite.
    probe: Option<PgConnectOptions>,
    down: AtomicBool,
    probing: AtomicBool,
    closed: AtomicBool,
    /// Statements refused at once because the store was known down.
    refused: AtomicU64,
}

/// How long a request waits for a pooled connection before the store counts as down.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a store known down is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Time limit of one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl Store {
    /// Connects lazily-checked pools: the first connection is made here so a wrong URL
    /// fails at start-up with a clear message.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        Self::connect_with(url, max_connections, DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// [`Store::connect`] with the pool's acquire time-out.
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // The probe connects with the same options, outside the pool.
            let (probe_opts, _) = pg::parse_url(url)?;
            let pg = PgStore::connect(url, max_connections, acquire_timeout).await?;
            Ok(Store {
                backend: Backend::Postgres(pg),
                health: Arc::new(Health {
                    probe: Some(probe_opts),
                    ..Health::default()
                }),
            })
        } else {
            Self::connect_sqlite(url, max_connections, acquire_timeout).await
        }
    }

    #[cfg(feature = "sqlite")]
    async fn connect_sqlite(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid SQLite URL: {e}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(Error::from)?;
        Ok(Store {
            backend: Backend::Sqlite(pool),
            health: Arc::new(Health::default()),
        })
    }

    #[cfg(not(feature = "sqlite"))]
    async fn connect_sqlite(_: &str, _: u32, _: Duration) -> Result<Self> {
        Err(anyhow::anyhow!(
            "DATABASE_URL is an SQLite URL, but this build has no SQLite (built without the `sqlite` feature): use postgres://"
        )
        .into())
    }

    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Postgres(_) => "postgres",
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// The pool, for statements outside this module (tests, tools). Statements run
    /// through it bypass the fail-fast gate.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Whether the store is known down (statements are refused at once).
    pub fn is_known_down(&self) -> bool {
        self.health.down.load(Ordering::Relaxed)
    }

    /// Statements refused at once because the store was known down.
    pub fn refused_while_down(&self) -> u64 {
        self.health.refused.load(Ordering::Relaxed)
    }

    /// The backend, or `store_unavailable` at once while the store is known down.
    fn gate(&self) -> Result<&Backend> {
        if self.is_known_down() {
            self.health.refused.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("frontdesk_store_refused_while_down_total").increment(1);
            return Err(Error::StoreUnavailable(Arc::new(sqlx::Error::Io(
                std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "the store is known down; a background probe is retrying",
                ),
            ))));
        }
        Ok(&self.backend)
    }

    /// Notes an outage shown by a statement's failure and starts the probe.
    fn observe<T>(&self, outcome: Result<T>) -> Result<T> {
        if let Err(Error::StoreUnavailable(_)) = &outcome {
            self.mark_down();
        }
        outcome
    }

    fn mark_down(&self) {
        let Some(opts) = self.health.probe.clone() else {
            return;
        };
        if self.health.closed.load(Ordering::Relaxed) {
            return;
        }
        if !self.health.down.swap(true, Ordering::Relaxed) {
            tracing::warn!("store unreachable; refusing at once until a probe reaches it");
            metrics::gauge!("frontdesk_store_up").set(0.0);
        }
        if self.health.probing.swap(true, Ordering::Relaxed) {
            return;
        }
        let health = self.health.clone();
        tokio::spawn(async move {
            loop {
                if health.closed.load(Ordering::Relaxed) {
                    break;
                }
                if probe(&opts).await {
                    health.down.store(false, Ordering::Relaxed);
                    tracing::info!("store reachable again");
                    metrics::gauge!("frontdesk_store_up").set(1.0);
                    break;
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
            health.probing.store(false, Ordering::Relaxed);
        });
    }

    /// Applies every pending migration of this backend. Returns how many were applied.
    pub async fn migrate(&self) -> Result<usize> {
        match &self.backend {
            // Under one transaction-scoped advisory lock: a session lock (sqlx's own)
            // does not survive a transaction-mode pooler.
            Backend::Postgres(pg) => self.observe(pg.migrate(&PG_MIGRATIONS).await),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => {
                // Before the first migration the bookkeeping table does not exist.
                let applied_before = self.applied_migrations().await.map_or(0, |v| v.len());
                SQLITE_MIGRATIONS
                    .run(pool)
                    .await
                    .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
                let total = SQLITE_MIGRATIONS.iter().count();
                Ok(total.saturating_sub(applied_before))
            }
        }
    }

    /// Versions of the migrations applied so far, in order.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>> {
        let sql = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
        let rows: Vec<(i64,)> = on_pool!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await?);
        Ok(rows.into_iter().map(|(v,)| v).collect())
    }

    /// A round trip to the store, for readiness.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }

    pub async fn close(&self) {
        self.health.closed.store(true, Ordering::Relaxed);
        match &self.backend {
            Backend::Postgres(pg) => pg.pool().close().await,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => pool.close().await,
        }
    }

    /// Whether statements go through a transaction-mode pooler (PgBouncer), for the
    /// start-up log line.
    pub fn behind_pooler(&self) -> bool {
        matches!(&self.backend, Backend::Postgres(pg) if pg.behind_pooler())
    }
}

/// One fresh connection and a round trip, outside the pool (whose acquire would wait
/// out its own time-out).
async fn probe(opts: &PgConnectOptions) -> bool {
    let attempt = async {
        let mut conn = PgConnection::connect_with(opts).await?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        conn.close().await
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, attempt).await,
        Ok(Ok(()))
    )
}

pub use crate::error::is_unavailable;
