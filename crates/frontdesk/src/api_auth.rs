//! The api listener's optional lock: with `FRONTDESK_API_TOKEN` set, every api route
//! but `/readyz` and `/metrics` (probes and scrapers) requires
//! `Authorization: Bearer <token>`. `/clerk/v1/*` is left to the proxy, which requires
//! the Clerk secret key, as Clerk's SDKs send it. Defence in depth: the listener still
//! belongs on loopback or a private network.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use std::sync::Arc;

use crate::config::Config;
use crate::error::ErrorBody;

/// Paths reachable without the token: probes, the scraper, and the Clerk proxy (which
/// has its own bearer).
fn exempt(path: &str) -> bool {
    path == "/readyz" || path == "/metrics" || path.starts_with("/clerk/v1/")
}

/// The middleware: a no-op without a configured token.
#[tracing::instrument(name = "api_auth", skip_all)]
pub async fn require_token(
    State(config): State<Arc<Config>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(expected) = config.api_token.as_ref() else {
        return next.run(req).await;
    };
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        None => refuse(
            "api_token_missing",
            "this api requires Authorization: Bearer <FRONTDESK_API_TOKEN>",
            false,
        ),
        Some(token) if same(token, expected.expose()) => next.run(req).await,
        Some(_) => refuse("api_token_invalid", "the api token is not valid", true),
    }
}

/// Constant-time equality that also hides the length: both sides are hashed first.
fn same(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

/// 401 with a stable code and RFC 6750's challenge (`error="invalid_token"` only when
/// a token was presented).
fn refuse(code: &'static str, message: &str, presented: bool) -> Response {
    let challenge = if presented {
        format!(
            "Bearer realm=\"frontdesk-api\", error=\"invalid_token\", error_description=\"{code}\""
        )
    } else {
        "Bearer realm=\"frontdesk-api\"".to_string()
    };
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(ErrorBody {
            code,
            message: message.to_string(),
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}
