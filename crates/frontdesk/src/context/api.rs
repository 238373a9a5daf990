//! Edge endpoints: `GET /_frontdesk/me` (who am I, creating what is missing) and
//! `POST /_frontdesk/me/profile` (ensure my profile, idempotently).

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use super::Auth;
use crate::error::{Error, Result};
use crate::tokens::Session;

/// `/_frontdesk/me` and `/_frontdesk/me/profile`, answering through `auth`.
pub fn router(auth: Auth) -> Router {
    Router::new()
        .route("/_frontdesk/me", get(me))
        .route("/_frontdesk/me/profile", post(ensure_profile))
        .layer(axum::middleware::map_response(private_answer))
        .with_state(auth)
}

/// A user's own data: never stored by a shared cache, and varying by credentials.
async fn private_answer(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Authorization, Cookie"),
    );
    r
}

#[derive(Serialize)]
struct SessionOut<'a> {
    sid: Option<&'a str>,
    org: Option<&'a crate::tokens::Org>,
    expires_at: u64,
}

fn session_out(s: &Session) -> SessionOut<'_> {
    SessionOut {
        sid: s.session_id.as_deref(),
        org: s.org.as_ref(),
        expires_at: s.expires_at_ms,
    }
}

// Takes the request itself: the `HeaderMap` extractor would clone every header.
async fn me(State(auth): State<Auth>, req: Request) -> Result<Response> {
    let session = auth.authenticate(req.headers()).await?;
    let (context, _) = auth.context().resolve(&session.user_id).await?;
    // The user and profile were rendered once when the context was cached; only the
    // session part is written per request.
    let rendered = context.rendered();
    let mut body = Vec::with_capacity(rendered.len() + 160);
    body.push(b'{');
    body.extend_from_slice(rendered);
    body.extend_from_slice(b",\"session\":");
    serde_json::to_writer(&mut body, &session_out(&session))
        .map_err(|e| Error::Internal(anyhow::anyhow!("rendering the session: {e}")))?;
    body.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn ensure_profile(State(auth): State<Auth>, req: Request) -> Result<Json<Value>> {
    let session = auth.authenticate(req.headers()).await?;
    let (context, created) = auth.context().ensure(&session.user_id).await?;
    Ok(Json(json!({
        "profile": &context.profile,
        "created": created,
    })))
}
