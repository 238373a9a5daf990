//! The durable store: Postgres in production, an SQLite file as the embedded default.
//! A closed enum rather than `sqlx::Any`, so each backend keeps its own SQL dialect
//! (`FOR UPDATE SKIP LOCKED`, `RETURNING`, JSONB) and its own migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// Runs the same statement on whichever pool the store has (each arm is typed for its
/// own backend, so the body is written once and compiled twice).
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            Store::Postgres($pool) => $body,
            Store::Sqlite($pool) => $body,
        }
    };
}

mod inbox;
mod pg;
mod users;

pub use inbox::{ClaimedMessage, InboxItem, InboxState, InboxStats, NewInboxMessage};
pub use pg::{PgStore, describe_connect_error, ssl_mode_of};
pub use users::{Ensured, LocalUser, Profile, UserUpsert};

use crate::error::{Error, Result};

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Debug, Clone)]
pub enum Store {
    /// A Postgres pool; `&PgStore` is an sqlx executor, so statements are written for it
    /// as for a pool (see `pg.rs` for what it does behind a transaction-mode pooler).
    Postgres(PgStore),
    Sqlite(SqlitePool),
}

/// How long a request waits for a pooled connection before the store counts as down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

impl Store {
    /// Connects lazily-checked pools: the first connection is made here so a wrong URL
    /// fails at start-up with a clear message.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pg = PgStore::connect(url, max_connections, ACQUIRE_TIMEOUT).await?;
            Ok(Store::Postgres(pg))
        } else {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid SQLite URL: {e}"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(opts)
                .await
                .map_err(Error::from)?;
            Ok(Store::Sqlite(pool))
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Applies every pending migration of this backend. Returns how many were applied.
    pub async fn migrate(&self) -> Result<usize> {
        match self {
            // Under one transaction-scoped advisory lock: a session lock (sqlx's own)
            // does not survive a transaction-mode pooler.
            Store::Postgres(pg) => pg.migrate(&PG_MIGRATIONS).await,
            Store::Sqlite(pool) => {
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
        match self {
            Store::Postgres(pg) => pg.pool().close().await,
            Store::Sqlite(pool) => pool.close().await,
        }
    }

    /// Whether statements go through a transaction-mode pooler (PgBouncer), for the
    /// start-up log line.
    pub fn behind_pooler(&self) -> bool {
        matches!(self, Store::Postgres(pg) if pg.behind_pooler())
    }
}

/// Whether an error means "the store cannot be reached" (answer 503 and retry) rather
/// than "this query is wrong" (a bug: 500).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // Postgres: class 08 connection exceptions, 57P0x shutdown/cannot connect,
            // 53300 too many connections, 3D000 database gone, 55000 database not
            // accepting connections. SQLite: BUSY/LOCKED.
            code.starts_with("08")
                || code.starts_with("57P0")
                || code == "53300"
                || code == "3D000"
                || code == "55000"
                || code == "5"
                || code == "6"
        }
        _ => false,
    }
}
