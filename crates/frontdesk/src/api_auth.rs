//! The api listener's optional lock: with `FRONTDESK_API_TOKEN` set, every api route
//! but `/readyz` and `/metrics` (probes and scrapers) requires
//! `Authorization: Bearer <token>`. `/clerk/v1/*` is left to the proxy, which requires
//! the Clerk secret key, as Clerk's SDKs send it. Defence in depth: the listener still
//! belongs on loopback or a private network.
//!
//! The operator console (`/console`, `/console/*`) is opened in a browser, which cannot
//! send a bearer: `GET /console?token=<token>` answers `303` to `/console` and sets the
//! cookie `frontdesk_console` (the token's SHA-256, `HttpOnly; SameSite=Strict;
//! Path=/console`), which then opens every console path (its page, its stream and its
//! actions under `/console/api/*`). The cookie opens nothing outside `/console`.

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
    if is_console(req.uri().path()) {
        if let Some(response) = console(&req, expected.expose()) {
            return response;
        }
        if console_cookie(&req).is_some_and(|c| same(c, &cookie_value(expected.expose()))) {
            return next.run(req).await;
        }
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

/// The console's cookie.
const CONSOLE_COOKIE: &str = "frontdesk_console";

fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// The cookie's value: the token's SHA-256 (hex), so the browser never keeps the token.
fn cookie_value(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn console_cookie(req: &Request) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == CONSOLE_COOKIE)
        .map(|(_, value)| value)
}

/// `GET /console?token=…`: with the right token, the cookie and a redirect that drops
/// the token from the address bar; with a wrong one, 401. `None`: no `token` parameter.
fn console(req: &Request, expected: &str) -> Option<Response> {
    if req.uri().path() != "/console" {
        return None;
    }
    let token = form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())?;
    if !same(&token, expected) {
        return Some(refuse(
            "api_token_invalid",
            "the api token is not valid",
            true,
        ));
    }
    let cookie = format!(
        "{CONSOLE_COOKIE}={}; Path=/console; HttpOnly; SameSite=Strict",
        cookie_value(expected)
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    let h = response.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/console"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        h.insert(header::SET_COOKIE, v);
    }
    Some(response)
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
