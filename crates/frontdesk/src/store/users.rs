//! Local users and profiles: the rows behind a request's context, and the race-free
//! first-login provisioning. Each statement converges under concurrency by itself
//! (`ON CONFLICT`), so a hundred concurrent first requests end with one user row and
//! one profile row, and all of them read the same ones.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::{Backend, Store};
use crate::error::Result;

/// The local mirror of a Clerk user.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct LocalUser {
    pub id: i64,
    pub clerk_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub image_url: Option<String>,
    pub role: String,
    pub clerk_updated_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
    /// Clerk marks the primary email verified; only then is it used for decisions
    /// (profile linking, role overrides by email).
    #[serde(default)]
    pub email_verified: bool,
}

/// The app's profile row.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Profile {
    pub id: i64,
    pub user_id: Option<i64>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub data: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What Clerk says about a user, as the local row stores it.
#[derive(Debug, Clone)]
pub struct UserUpsert {
    pub clerk_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub image_url: Option<String>,
    pub role: String,
    /// Clerk's `updated_at`: an older version never overwrites a newer one.
    pub clerk_updated_at: i64,
    /// Whether Clerk marks `email` verified (`verification.status == "verified"`).
    pub email_verified: bool,
}

/// How `ensure_profile` found the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ensured {
    Existing,
    Created,
    LinkedByEmail,
    /// Several unlinked profiles had the user's email: none was linked, a new one made.
    CreatedAmbiguous,
    /// An unlinked profile had the user's email, but Clerk does not mark that email
    /// verified: it was not linked (anyone can type someone else's address), a new one
    /// was made.
    CreatedUnverifiedEmail,
}

impl Ensured {
    pub fn created(self) -> bool {
        matches!(
            self,
            Ensured::Created | Ensured::CreatedAmbiguous | Ensured::CreatedUnverifiedEmail
        )
    }
}

const USER_COLS: &str = "id, clerk_id, email, name, image_url, role, clerk_updated_at, created_at, updated_at, deleted_at, email_verified";
const PROFILE_COLS: &str = "id, user_id, email, display_name, data, created_at, updated_at";

fn user_from<R: Row>(row: &R) -> std::result::Result<LocalUser, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database>,
    for<'a> bool: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(LocalUser {
        id: row.try_get("id")?,
        clerk_id: row.try_get("clerk_id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        image_url: row.try_get("image_url")?,
        role: row.try_get("role")?,
        clerk_updated_at: row.try_get("clerk_updated_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        deleted_at: row.try_get("deleted_at")?,
        email_verified: row.try_get("email_verified")?,
    })
}

/// A profile from a row whose profile columns are named `{prefix}id`, …; `None` when
/// the id is NULL (no profile on a LEFT JOIN). `data` is decoded per backend (JSONB
/// on Postgres, TEXT on SQLite).
fn profile_from<R: Row>(
    row: &R,
    prefix: &str,
    data: impl FnOnce(&R, &str) -> std::result::Result<Value, sqlx::Error>,
) -> std::result::Result<Option<Profile>, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let col = |c: &str| format!("{prefix}{c}");
    let Some(id) = row.try_get::<Option<i64>, _>(col("id").as_str())? else {
        return Ok(None);
    };
    Ok(Some(Profile {
        id,
        user_id: row.try_get(col("user_id").as_str())?,
        email: row.try_get(col("email").as_str())?,
        display_name: row.try_get(col("display_name").as_str())?,
        data: data(row, &col("data"))?,
        created_at: row.try_get(col("created_at").as_str())?,
        updated_at: row.try_get(col("updated_at").as_str())?,
    }))
}

fn pg_data(row: &sqlx::postgres::PgRow, col: &str) -> std::result::Result<Value, sqlx::Error> {
    Ok(row.try_get::<sqlx::types::Json<Value>, _>(col)?.0)
}

#[cfg(feature = "sqlite")]
fn sqlite_data(
    row: &sqlx::sqlite::SqliteRow,
    col: &str,
) -> std::result::Result<Value, sqlx::Error> {
    let text: String = row.try_get(col)?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Store {
    /// The user with this Clerk id and its profile, in one query.
    pub async fn context_by_clerk_id(
        &self,
        clerk_id: &str,
    ) -> Result<Option<(LocalUser, Option<Profile>)>> {
        let sql =
            "SELECT u.id, u.clerk_id, u.email, u.name, u.image_url, u.role, u.clerk_updated_at,
                    u.created_at, u.updated_at, u.deleted_at, u.email_verified,
                    p.id AS p_id, p.user_id AS p_user_id, p.email AS p_email,
                    p.display_name AS p_display_name, p.data AS p_data,
                    p.created_at AS p_created_at, p.updated_at AS p_updated_at
             FROM users u LEFT JOIN profiles p ON p.user_id = u.id
             WHERE u.clerk_id = $1";
        Ok(on_backend!(self, |backend| match backend {
            Backend::Postgres(pool) => {
                match sqlx::query(sql).bind(clerk_id).fetch_optional(pool).await? {
                    None => None,
                    Some(row) => Some((user_from(&row)?, profile_from(&row, "p_", pg_data)?)),
                }
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => {
                match sqlx::query(sql).bind(clerk_id).fetch_optional(pool).await? {
                    None => None,
                    Some(row) => Some((user_from(&row)?, profile_from(&row, "p_", sqlite_data)?)),
                }
            }
        }))
    }

    /// The user with this Clerk id.
    pub async fn user_by_clerk_id(&self, clerk_id: &str) -> Result<Option<LocalUser>> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE clerk_id = $1");
        Ok(on_pool!(self, |pool| sqlx::query(&sql)
            .bind(clerk_id)
            .fetch_optional(pool)
            .await?
            .map(|r| user_from(&r))
            .transpose()?))
    }

    pub async fn profile_of(&self, user_id: i64) -> Result<Option<Profile>> {
        let sql = format!("SELECT {PROFILE_COLS} FROM profiles WHERE user_id = $1");
        Ok(on_backend!(self, |backend| match backend {
            Backend::Postgres(pool) => sqlx::query(&sql)
                .bind(user_id)
                .fetch_optional(pool)
                .await?
                .map(|r| profile_from(&r, "", pg_data))
                .transpose()?
                .flatten(),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => sqlx::query(&sql)
                .bind(user_id)
                .fetch_optional(pool)
                .await?
                .map(|r| profile_from(&r, "", sqlite_data))
                .transpose()?
                .flatten(),
        }))
    }

    /// Creates or updates the local user from Clerk's data, unless the stored row is
    /// newer (`clerk_updated_at`) or deleted; returns the row as it now is.
    ///
    /// Deletion is final: Clerk never reuses a user id, so no update or create, however
    /// late its `updated_at`, brings a deleted (or tombstoned) user back.
    pub async fn upsert_user(&self, u: &UserUpsert, now_ms: i64) -> Result<LocalUser> {
        let sql = "INSERT INTO users (clerk_id, email, name, image_url, role, clerk_updated_at, created_at, updated_at, email_verified)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)
             ON CONFLICT (clerk_id) DO UPDATE SET
                 email = excluded.email, name = excluded.name, image_url = excluded.image_url,
                 role = excluded.role, clerk_updated_at = excluded.clerk_updated_at,
                 updated_at = excluded.updated_at, email_verified = excluded.email_verified
             WHERE users.clerk_updated_at <= excluded.clerk_updated_at
               AND users.deleted_at IS NULL";
        macro_rules! run {
            ($pool:expr) => {
                sqlx::query(sql)
                    .bind(&u.clerk_id)
                    .bind(&u.email)
                    .bind(&u.name)
                    .bind(&u.image_url)
                    .bind(&u.role)
                    .bind(u.clerk_updated_at)
                    .bind(now_ms)
                    .bind(u.email_verified)
                    .execute($pool)
                    .await?
                    .rows_affected()
            };
        }
        on_pool!(self, |pool| run!(pool));
        self.user_by_clerk_id(&u.clerk_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("user row missing right after its upsert").into())
    }

    /// Marks the user deleted (keeping the row and its profile for the app), whatever
    /// the timestamps: a Clerk user id is never reused, so a deletion wins over every
    /// update, earlier or later. Returns whether a row changed (false when it was
    /// deleted already).
    ///
    /// A user never seen before gets a tombstone row: deliveries are unordered, and a
    /// `user.created` that arrives after the `user.deleted` must not bring the user
    /// back ([`Store::upsert_user`] never touches a deleted row).
    pub async fn soft_delete_user(
        &self,
        clerk_id: &str,
        clerk_updated_at: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let sql =
            "INSERT INTO users (clerk_id, clerk_updated_at, created_at, updated_at, deleted_at)
                   VALUES ($3, $2, $1, $1, $1)
                   ON CONFLICT (clerk_id) DO UPDATE SET
                       deleted_at = excluded.deleted_at, updated_at = excluded.updated_at
                   WHERE users.deleted_at IS NULL";
        let n = on_pool!(self, |pool| sqlx::query(sql)
            .bind(now_ms)
            .bind(clerk_updated_at)
            .bind(clerk_id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(n > 0)
    }

    /// Makes sure `user` has a profile: its own if it has one; else the one unlinked
    /// profile with its email (linked now, and only when Clerk marks that email
    /// verified); else a new one with `defaults`. Safe under
    /// any number of concurrent callers: they all return the same row.
    pub async fn ensure_profile(
        &self,
        user: &LocalUser,
        defaults: &Value,
        now_ms: i64,
    ) -> Result<(Profile, Ensured)> {
        if let Some(p) = self.profile_of(user.id).await? {
            return Ok((p, Ensured::Existing));
        }
        let mut ambiguous = false;
        let mut unverified = false;
        if let Some(email) = user.email.as_deref().filter(|e| !e.is_empty()) {
            let candidates = self.unlinked_profiles_by_email(email).await?;
            if !user.email_verified {
                // Only Clerk's verification proves the address is the user's own.
                unverified = !candidates.is_empty();
            } else {
                match candidates.as_slice() {
                    [one] => match self.link_profile(*one, user.id, now_ms).await {
                        Ok(true) => {
                            if let Some(p) = self.profile_of(user.id).await? {
                                return Ok((p, Ensured::LinkedByEmail));
                            }
                        }
                        // Someone else linked it or made this user's profile meanwhile:
                        // fall through to the converging insert-then-read.
                        Ok(false) => {}
                        Err(e) if is_unique_violation(&e) => {}
                        Err(e) => return Err(e.into()),
                    },
                    [] => {}
                    _ => ambiguous = true,
                }
            }
        }
        let data = if defaults.is_object() {
            defaults.clone()
        } else {
            Value::Object(Default::default())
        };
        let inserted = self.insert_profile(user, &data, now_ms).await?;
        let profile = self
            .profile_of(user.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("profile missing right after ensuring it"))?;
        let how = match (inserted, ambiguous, unverified) {
            (true, true, _) => Ensured::CreatedAmbiguous,
            (true, false, true) => Ensured::CreatedUnverifiedEmail,
            (true, false, false) => Ensured::Created,
            (false, _, _) => Ensured::Existing,
        };
        Ok((profile, how))
    }

    async fn unlinked_profiles_by_email(&self, email: &str) -> Result<Vec<i64>> {
        let sql = "SELECT id FROM profiles WHERE user_id IS NULL AND lower(email) = lower($1) ORDER BY id LIMIT 2";
        Ok(on_pool!(self, |pool| sqlx::query_scalar(sql)
            .bind(email)
            .fetch_all(pool)
            .await?))
    }

    async fn link_profile(
        &self,
        profile_id: i64,
        user_id: i64,
        now_ms: i64,
    ) -> std::result::Result<bool, sqlx::Error> {
        let sql =
            "UPDATE profiles SET user_id = $1, updated_at = $2 WHERE id = $3 AND user_id IS NULL";
        // The caller tells a unique violation from other errors, so this statement
        // keeps sqlx's error (and runs after gated statements of the same request).
        macro_rules! run {
            ($pool:expr) => {
                sqlx::query(sql)
                    .bind(user_id)
                    .bind(now_ms)
                    .bind(profile_id)
                    .execute($pool)
                    .await?
                    .rows_affected()
            };
        }
        let n = match self.backend() {
            Backend::Postgres(pool) => run!(pool),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => run!(pool),
        };
        Ok(n == 1)
    }

    /// `INSERT … ON CONFLICT (user_id) DO NOTHING`: whether this call made the row.
    async fn insert_profile(&self, user: &LocalUser, data: &Value, now_ms: i64) -> Result<bool> {
        let n = on_backend!(self, |backend| match backend {
            Backend::Postgres(pool) => sqlx::query(
                "INSERT INTO profiles (user_id, email, display_name, data, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(user.id)
            .bind(&user.email)
            .bind(&user.name)
            .bind(sqlx::types::Json(data))
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected(),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => sqlx::query(
                "INSERT INTO profiles (user_id, email, display_name, data, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(user.id)
            .bind(&user.email)
            .bind(&user.name)
            .bind(data.to_string())
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected(),
        });
        Ok(n == 1)
    }

    /// A profile prepared ahead of time for an email (the app's own flows do this;
    /// also used by tests).
    pub async fn create_unlinked_profile(
        &self,
        email: &str,
        data: &Value,
        now_ms: i64,
    ) -> Result<i64> {
        let sql = "INSERT INTO profiles (email, data, created_at, updated_at) VALUES ($1, $2, $3, $3) RETURNING id";
        Ok(on_backend!(self, |backend| match backend {
            Backend::Postgres(pool) => {
                sqlx::query_scalar(sql)
                    .bind(email)
                    .bind(sqlx::types::Json(data))
                    .bind(now_ms)
                    .fetch_one(pool)
                    .await?
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => {
                sqlx::query_scalar(sql)
                    .bind(email)
                    .bind(data.to_string())
                    .bind(now_ms)
                    .fetch_one(pool)
                    .await?
            }
        }))
    }
}
