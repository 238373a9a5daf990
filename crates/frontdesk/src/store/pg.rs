//! Postgres: connecting (TLS with every libpq `sslmode`), and running statements through
//! a transaction-mode pooler such as PgBouncer or Neon's pooled endpoint.
//!
//! Why a pooler needs care: sqlx runs a statement with arguments in two protocol
//! round trips, `Parse/Describe/Sync` then `Bind/Execute/Sync`, under a *named*
//! prepared statement that it caches per connection. A transaction-mode pooler hands
//! the server connection back to its pool at every `Sync` outside a transaction, so the
//! `Bind` can land on another server connection, where that statement does not exist
//! (or a same-named one of another client does). Turning the statement cache off is
//! not enough: sqlx still names each statement, and the two round trips still split.
//!
//! So behind a pooler every statement runs in its own transaction (which pins one
//! server connection from `BEGIN` to `COMMIT`), opened with `BEGIN; DEALLOCATE ALL` in
//! one round trip so names left on that server connection by any earlier transaction
//! cannot collide, with the statement cache off. `&PgStore` is an sqlx executor that
//! does this, so store code is written once for both modes. Nothing relies on session
//! state: migrations take a transaction-scoped advisory lock, not a session one.

use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use sqlx::postgres::{
    PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult, PgRow, PgSslMode, Postgres,
};
use sqlx::{Either, Execute, Executor};

use crate::error::{Error, Result};

/// Opens each statement's transaction behind a pooler (one round trip).
const POOLED_BEGIN: &str = "BEGIN; DEALLOCATE ALL";

/// Key of the transaction-scoped advisory lock that serialises migrations across
/// instances ("frontdesk" in ASCII).
const MIGRATION_LOCK: i64 = 0x66726f6e_74646573;

/// A Postgres pool and how statements travel to it.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    pooler: bool,
}

/// A `DATABASE_URL` split into sqlx's options and Frontdesk's own `pgbouncer` flag.
pub(crate) fn parse_url(url: &str) -> Result<(PgConnectOptions, bool)> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pooler = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "pgbouncer" {
            pooler = Some(match v {
                "true" | "1" | "on" | "yes" => true,
                "false" | "0" | "off" | "no" => false,
                _ => {
                    return Err(
                        anyhow::anyhow!("DATABASE_URL: pgbouncer must be true or false").into(),
                    );
                }
            });
        } else {
            kept.push(pair);
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let opts = PgConnectOptions::from_str(&url)
        // sqlx's message names the bad parameter, never the URL's password.
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid Postgres URL: {e}"))?
        .application_name("frontdesk");
    // Neon's pooled endpoints are named `…-pooler.…`: recognised without the flag.
    let pooler = pooler.unwrap_or_else(|| opts.get_host().contains("-pooler."));
    Ok((opts, pooler))
}

impl PgStore {
    pub(crate) async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self> {
        let (mut opts, pooler) = parse_url(url)?;
        if pooler {
            // Statements are never reused across transactions behind a pooler, and
            // `extra_float_digits` is a startup parameter PgBouncer refuses unless told
            // to ignore it.
            opts = opts.statement_cache_capacity(0).extra_float_digits(None);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(Error::from)?;
        Ok(Self { pool, pooler })
    }

    /// The pool itself, for what needs it whole (closing, sqlx's own tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether statements go through a transaction-mode pooler.
    pub fn behind_pooler(&self) -> bool {
        self.pooler
    }

    pub(crate) async fn begin(&self) -> sqlx::Result<sqlx::Transaction<'static, Postgres>> {
        if self.pooler {
            self.pool.begin_with(POOLED_BEGIN).await
        } else {
            self.pool.begin().await
        }
    }

    /// Applies pending migrations in one transaction holding a transaction-scoped
    /// advisory lock: two instances starting together apply them once, and the lock
    /// cannot outlive the transaction, with or without a pooler.
    /// Returns how many this call applied.
    pub(crate) async fn migrate(&self, migrator: &sqlx::migrate::Migrator) -> Result<usize> {
        let migrator = sqlx::migrate::Migrator {
            migrations: migrator.migrations.clone(),
            ignore_missing: migrator.ignore_missing,
            locking: false,
            no_tx: migrator.no_tx,
        };
        let mut tx = self.begin().await.map_err(Error::from)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(Error::from)?;
        // Counted under the lock, so two instances starting together report the truth.
        let before = applied_count(&mut tx).await?;
        migrator
            .run_direct(&mut *tx)
            .await
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
        let after = applied_count(&mut tx).await?;
        tx.commit().await.map_err(Error::from)?;
        Ok(usize::try_from(after - before).unwrap_or(0))
    }
}

/// Migrations recorded as applied; 0 before the bookkeeping table exists (checked
/// first: a failed query would abort the transaction).
async fn applied_count(tx: &mut sqlx::Transaction<'static, Postgres>) -> Result<i64> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut **tx)
        .await
        .map_err(Error::from)?;
    if !exists {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut **tx)
        .await
        .map_err(Error::from)
}

impl<'p> Executor<'p> for &'p PgStore {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, sqlx::Result<Either<PgQueryResult, PgRow>>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if !self.pooler {
            return (&self.pool).fetch_many(query);
        }
        // The whole answer is read inside the transaction, then handed out.
        Box::pin(
            stream::once(async move {
                let rows: sqlx::Result<Vec<_>> = async {
                    let mut tx = self.begin().await?;
                    let rows = (&mut *tx).fetch_many(query).try_collect::<Vec<_>>().await?;
                    tx.commit().await?;
                    Ok(rows)
                }
                .await;
                match rows {
                    Ok(rows) => stream::iter(rows.into_iter().map(Ok)).left_stream(),
                    Err(e) => stream::once(async move { Err(e) }).right_stream(),
                }
            })
            .flatten(),
        )
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, sqlx::Result<Option<PgRow>>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        if !self.pooler {
            return (&self.pool).fetch_optional(query);
        }
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let row = (&mut *tx).fetch_optional(query).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [sqlx::postgres::PgTypeInfo],
    ) -> BoxFuture<'e, sqlx::Result<sqlx::postgres::PgStatement<'q>>>
    where
        'p: 'e,
    {
        (&self.pool).prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, sqlx::Result<sqlx::Describe<Postgres>>>
    where
        'p: 'e,
    {
        (&self.pool).describe(sql)
    }
}

/// One line saying why connecting to Postgres failed: which TLS failure when it is
/// one, else sqlx's own (single-line) message.
pub fn describe_connect_error(e: &sqlx::Error) -> String {
    if let sqlx::Error::Tls(inner) = e {
        if inner.to_string() == "server does not support TLS" {
            return format!("{} (sslmode requires TLS)", crate::tls::NOT_TLS);
        }
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::NotFound {
                return "cannot read the CA certificate named by sslrootcert (no such file)".into();
            }
        }
        if let Some(reason) = crate::tls::describe(inner.as_ref()) {
            return reason;
        }
        return format!("the TLS connection failed ({inner})");
    }
    if let sqlx::Error::Io(io) = e {
        if io.kind() == std::io::ErrorKind::NotFound {
            return "cannot read a file the URL names (sslrootcert, sslcert or sslkey): \
                    no such file"
                .into();
        }
    }
    if let Some(reason) = crate::tls::describe(e) {
        return reason;
    }
    e.to_string().replace('\n', " ")
}

/// The `sslmode` libpq users write, as sqlx reads it (for tests and docs).
pub fn ssl_mode_of(url: &str) -> Result<PgSslMode> {
    Ok(parse_url(url)?.0.get_ssl_mode())
}
