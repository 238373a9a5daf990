//! The durable store: Postgres in production, an SQLite file as the embedded default.
//! A closed enum rather than `sqlx::Any`, so each backend keeps its own SQL dialect
//! (`FOR UPDATE SKIP LOCKED`, `RETURNING`, JSONB) and its own migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

mod inbox;
mod users;

pub use inbox::{ClaimedMessage, InboxItem, InboxState, InboxStats, NewInboxMessage};
pub use users::{Ensured, LocalUser, Profile, UserUpsert};

use crate::error::{Error, Result};

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// How long a request waits for a pooled connection before the store counts as down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

impl Store {
    /// Connects lazily-checked pools: the first connection is made here so a wrong URL
    /// fails at start-up with a clear message.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)
                .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid Postgres URL: {e}"))?
                .application_name("frontdesk");
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(opts)
                .await
                .map_err(Error::from)?;
            Ok(Store::Postgres(pool))
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
        let (migrator, applied_before) = match self {
            Store::Postgres(pool) => (&PG_MIGRATIONS, applied_pg(pool).await),
            Store::Sqlite(pool) => (&SQLITE_MIGRATIONS, applied_sqlite(pool).await),
        };
        let result = match self {
            Store::Postgres(pool) => migrator.run(pool).await,
            Store::Sqlite(pool) => migrator.run(pool).await,
        };
        result.map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
        let total = migrator.iter().count();
        Ok(total.saturating_sub(applied_before))
    }

    /// Versions of the migrations applied so far, in order.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>> {
        let rows: Vec<(i64,)> = match self {
            Store::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
                )
                .fetch_all(pool)
                .await?
            }
            Store::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
                )
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows.into_iter().map(|(v,)| v).collect())
    }

    /// A round trip to the store, for readiness.
    pub async fn ping(&self) -> Result<()> {
        match self {
            Store::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await?,
            Store::Sqlite(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
                return Ok(());
            }
        };
        Ok(())
    }

    pub async fn close(&self) {
        match self {
            Store::Postgres(pool) => pool.close().await,
            Store::Sqlite(pool) => pool.close().await,
        }
    }
}

async fn applied_pg(pool: &PgPool) -> usize {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map(|n| n as usize)
        .unwrap_or(0)
}

async fn applied_sqlite(pool: &SqlitePool) -> usize {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map(|n| n as usize)
        .unwrap_or(0)
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
