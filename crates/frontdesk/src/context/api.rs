//! Edge endpoints: `GET /_frontdesk/me` (who am I, creating what is missing) and
//! `POST /_frontdesk/me/profile` (ensure my profile, idempotently).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use super::Context;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::store::{LocalUser, Profile};
use crate::tokens::Session;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_frontdesk/me", get(me))
        .route("/_frontdesk/me/profile", post(ensure_profile))
}

#[derive(Serialize)]
struct UserOut<'a> {
    id: i64,
    clerk_id: &'a str,
    email: Option<&'a str>,
    name: Option<&'a str>,
    image_url: Option<&'a str>,
    role: &'a str,
    created_at: i64,
    updated_at: i64,
}

fn user_out(u: &LocalUser) -> UserOut<'_> {
    UserOut {
        id: u.id,
        clerk_id: &u.clerk_id,
        email: u.email.as_deref(),
        name: u.name.as_deref(),
        image_url: u.image_url.as_deref(),
        role: &u.role,
        created_at: u.created_at,
        updated_at: u.updated_at,
    }
}

fn session_out(s: &Session) -> Value {
    json!({
        "sid": s.session_id,
        "org": s.org,
        "expires_at": s.expires_at_ms,
    })
}

/// Verifies the request's session token; records the user id on the request span.
#[tracing::instrument(name = "authenticate", skip_all)]
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Session> {
    let verifier = state.verifier.as_ref().ok_or_else(|| {
        Error::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "auth_unconfigured",
            "no way to verify session tokens is configured (CLERK_JWT_KEY or CLERK_SECRET_KEY)",
        )
    })?;
    let session = verifier
        .verify_headers(headers)
        .await
        .map_err(Error::from)?;
    tracing::Span::current().record("user_id", session.user_id.as_str());
    Ok(session)
}

fn profile_out(p: &Profile) -> &Profile {
    p
}

fn body(context: &Context, session: &Session) -> Value {
    json!({
        "user": user_out(&context.user),
        "profile": profile_out(&context.profile),
        "session": session_out(session),
    })
}

async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>> {
    let session = authenticate(&state, &headers).await?;
    record_user(&session);
    let (context, _) = state.context.resolve(&session.user_id).await?;
    Ok(Json(body(&context, &session)))
}

async fn ensure_profile(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>> {
    let session = authenticate(&state, &headers).await?;
    record_user(&session);
    let (context, created) = state.context.ensure(&session.user_id).await?;
    Ok(Json(json!({
        "profile": profile_out(&context.profile),
        "created": created,
    })))
}

/// The request span (opened by the observation layer) carries the user id from here
/// on, so every later log line of the request names the user — never the token.
fn record_user(session: &Session) {
    tracing::Span::current().record("user_id", session.user_id.as_str());
}
