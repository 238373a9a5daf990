//! The native user API on the api listener: one user, a batch in request order,
//! warming, eviction, and the cache's figures.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::State;

use crate::http::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Alias, AliasKind, CachedUser, UserCache};
use crate::error::{Error, Result};
use crate::json::JsonBody;

/// The native user API; `users` is `None` without a Clerk instance (503
/// `upstream_unconfigured`).
pub fn router(users: Option<UserCache>) -> Router {
    Router::new()
        .route("/v1/users/batch", post(batch))
        .route("/v1/users/warm", post(warm))
        .route("/v1/users/{id}", get(one))
        .route("/v1/users/by-email/{email}", get(by_email))
        .route("/v1/users/by-username/{username}", get(by_username))
        .route("/v1/cache/users/{id}", delete(evict))
        .with_state(users)
}

/// How much of a user to return.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fields {
    /// id, primary email, username.
    Minimal,
    /// minimal plus names, image and public metadata.
    #[default]
    Basic,
    /// Clerk's whole user object.
    Full,
}

#[derive(Debug, Deserialize)]
struct FieldsQuery {
    #[serde(default)]
    fields: Option<String>,
}

fn parse_fields(q: &FieldsQuery) -> Result<Fields> {
    match q.fields.as_deref() {
        None => Ok(Fields::Basic),
        Some("minimal") => Ok(Fields::Minimal),
        Some("basic") => Ok(Fields::Basic),
        Some("full") => Ok(Fields::Full),
        Some(_) => Err(Error::bad_request(
            "invalid_fields",
            "fields must be one of minimal, basic, full",
        )),
    }
}

pub fn render(user: &CachedUser, fields: Fields) -> Value {
    let s = &user.summary;
    match fields {
        Fields::Minimal => json!({"id": s.id, "email": s.primary_email, "username": s.username}),
        Fields::Basic => json!({
            "id": s.id, "email": s.primary_email, "username": s.username,
            "first_name": s.first_name, "last_name": s.last_name,
            "image_url": user.image_url(), "public_metadata": s.public_metadata,
        }),
        Fields::Full => serde_json::from_slice(&user.raw()).unwrap_or(Value::Null),
    }
}

fn users_of(users: &Option<UserCache>) -> Result<&UserCache> {
    users.as_ref().ok_or_else(|| {
        Error::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unconfigured",
            "no Clerk instance is configured",
        )
    })
}

/// Ids are Clerk's (`user_…`): printable, bounded. Anything else is refused before it
/// reaches a cache key or Clerk.
fn check_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::bad_request("invalid_user_id", "not a Clerk user id"));
    }
    Ok(())
}

async fn one(
    State(users): State<Option<UserCache>>,
    Path(id): Path<String>,
    Query(q): Query<FieldsQuery>,
) -> Result<Response> {
    check_id(&id)?;
    let fields = parse_fields(&q)?;
    let lookup = users_of(&users)?.get(&id).await?;
    let user = lookup
        .user
        .ok_or_else(|| Error::not_found(format!("no user {id}")))?;
    let mut r = Json(render(&user, fields)).into_response();
    if let Ok(v) = lookup.source.x_cache().parse() {
        r.headers_mut().insert(crate::http::X_CACHE, v);
    }
    Ok(r)
}

async fn by_email(
    State(users): State<Option<UserCache>>,
    Path(email): Path<String>,
    Query(q): Query<FieldsQuery>,
) -> Result<Response> {
    by_alias(&users, AliasKind::Email, &email, &q).await
}

async fn by_username(
    State(users): State<Option<UserCache>>,
    Path(username): Path<String>,
    Query(q): Query<FieldsQuery>,
) -> Result<Response> {
    by_alias(&users, AliasKind::Username, &username, &q).await
}

async fn by_alias(
    users: &Option<UserCache>,
    kind: AliasKind,
    raw: &str,
    q: &FieldsQuery,
) -> Result<Response> {
    let alias = Alias::parse(kind, raw).ok_or_else(|| match kind {
        AliasKind::Email => Error::bad_request("invalid_email", "not an email address"),
        AliasKind::Username => Error::bad_request("invalid_username", "not a username"),
    })?;
    let fields = parse_fields(q)?;
    let lookup = users_of(users)?.get_by_alias(&alias).await?;
    let user = lookup
        .user
        .ok_or_else(|| Error::not_found(format!("no user with this {}", alias.label())))?;
    let mut r = Json(render(&user, fields)).into_response();
    if let Ok(v) = lookup.source.x_cache().parse() {
        r.headers_mut().insert(crate::http::X_CACHE, v);
    }
    Ok(r)
}

#[derive(Debug, Deserialize)]
struct IdsIn {
    ids: Vec<String>,
}

/// Largest batch accepted in one request.
const MAX_BATCH: usize = 10_000;

fn check_ids(ids: &[String]) -> Result<()> {
    if ids.len() > MAX_BATCH {
        return Err(Error::bad_request(
            "batch_too_large",
            format!("at most {MAX_BATCH} ids per request"),
        ));
    }
    ids.iter().try_for_each(|id| check_id(id))
}

async fn batch(
    State(users): State<Option<UserCache>>,
    Query(q): Query<FieldsQuery>,
    JsonBody(body): JsonBody<IdsIn>,
) -> Result<Json<Value>> {
    let fields = parse_fields(&q)?;
    check_ids(&body.ids)?;
    let users = users_of(&users)?;
    // Duplicates are looked up once; answers follow the request's order.
    let mut unique: Vec<String> = body.ids.clone();
    unique.sort();
    unique.dedup();
    let results = users.get_many(&unique).await;
    let mut by_id = HashMap::with_capacity(unique.len());
    for (id, r) in unique.iter().zip(results) {
        by_id.insert(id.as_str(), r?.user);
    }
    let out: Vec<Value> = body
        .ids
        .iter()
        .map(|id| match by_id.get(id.as_str()) {
            Some(Some(u)) => render(u, fields),
            _ => Value::Null,
        })
        .collect();
    Ok(Json(json!({ "users": out })))
}

#[derive(Debug, Serialize)]
struct WarmOut {
    requested: usize,
    found: usize,
    not_found: usize,
    failed: usize,
}

async fn warm(
    State(users): State<Option<UserCache>>,
    JsonBody(body): JsonBody<IdsIn>,
) -> Result<Json<WarmOut>> {
    check_ids(&body.ids)?;
    let users = users_of(&users)?;
    let mut out = WarmOut {
        requested: body.ids.len(),
        found: 0,
        not_found: 0,
        failed: 0,
    };
    for r in users.get_many(&body.ids).await {
        match r {
            Ok(l) if l.user.is_some() => out.found += 1,
            Ok(_) => out.not_found += 1,
            Err(_) => out.failed += 1,
        }
    }
    Ok(Json(out))
}

async fn evict(
    State(users): State<Option<UserCache>>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    check_id(&id)?;
    users_of(&users)?.invalidate(&id).await.map_err(|_| {
        Error::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "invalidation_backlog",
            "too many invalidations are waiting for Redis; a full resync is on its way, retry",
        )
    })?;
    Ok(StatusCode::NO_CONTENT)
}
