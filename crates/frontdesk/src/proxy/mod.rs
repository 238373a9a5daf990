//! The drop-in caching proxy for Clerk's Backend API, at `<api listener>/clerk/v1/…`.
//! An app sets `CLERK_API_URL=http://<api listener>/clerk` and its unchanged official
//! SDK gets caching, coalescing and rate-limit safety.
//!
//! - The caller's bearer must be the configured secret key (401 in Clerk's error
//!   shape otherwise, and Clerk never sees the request).
//! - `GET /v1/users/{id}` and `GET /v1/users?user_id=…` (ids with at most
//!   `limit`/`offset`/`order_by` by creation time) are answered from the tiered user
//!   cache, so single and list look-ups share entries; so are
//!   `GET /v1/users?email_address=…` and `?username=…` (one filter kind at a time),
//!   through the cache's alias index.
//! - Other reads are cached in process, keyed by the secret-key scope, the
//!   `Clerk-API-Version`, the path, the normalized query and the version of the
//!   resource's namespace; concurrent misses for one key make one call.
//! - Writes pass through; on success they refresh (or invalidate) the user they
//!   touched and bump their namespace, before the answer goes back.
//! - Answers keep Clerk's status, body bytes, `Content-Type` and `Retry-After`, and
//!   carry `X-Cache: HIT|MISS|STALE|BYPASS`.

mod path;
mod reads;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::json;
use subtle::ConstantTimeEq;

pub use path::{ProxyPath, is_clerk_id};
pub use reads::{ReadCache, ReadKey, normalize_query};

use crate::bus::Bus;
use crate::upstream::ClerkClient;
use crate::upstream::{UpstreamError, UpstreamRequest, UpstreamResponse};
use crate::users::{CachedUser, Source, UserCache};

/// What the proxy needs: the Clerk client and both caches, and the bus its writes
/// announce on. `None` (no Clerk secret key): every request answers 503
/// `upstream_unconfigured` in Clerk's error shape.
#[derive(Clone)]
pub struct ProxyState {
    pub client: Arc<ClerkClient>,
    pub users: UserCache,
    pub reads: Arc<ReadCache>,
    pub bus: Arc<Bus>,
}

/// `/clerk/v1/*` on the api listener.
pub fn router(state: Option<ProxyState>) -> Router {
    Router::new()
        .route("/clerk/v1/{*rest}", any(handle))
        .with_state(state)
}

pub use crate::http::X_CACHE;

/// An error in Clerk's own shape, so the SDKs parse it as they would Clerk's.
pub fn clerk_error(status: StatusCode, code: &str, message: &str, long: &str) -> Response {
    let body = json!({
        "errors": [{"message": message, "long_message": long, "code": code, "meta": {}}],
        "clerk_trace_id": format!("frontdesk-{}", uuid::Uuid::new_v4().simple()),
    });
    let mut r = json_response(status, Bytes::from(body.to_string()));
    r.headers_mut()
        .insert(X_CACHE, HeaderValue::from_static("BYPASS"));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            crate::http::www_authenticate(code),
        );
    }
    r
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut r = (status, body).into_response();
    // Exactly `application/json`: the JS SDK compares the header as a whole.
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub fn upstream_error_response(e: &UpstreamError) -> Response {
    match e {
        UpstreamError::RateLimited { .. } => {
            let mut r = clerk_error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "Too Many Requests",
                "Clerk is rate limiting this instance; retry after the given time.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(e.retry_after_s()));
            r
        }
        _ => {
            let mut r = clerk_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                "Clerk is unavailable",
                "Clerk could not be reached and no cached answer exists; retry shortly.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(e.retry_after_s()));
            r
        }
    }
}

/// Relays Clerk's answer: status, body bytes and the headers that matter.
pub fn relay(resp: UpstreamResponse, x_cache: &'static str) -> Response {
    let mut r = (resp.status, resp.body).into_response();
    r.headers_mut().extend(resp.headers);
    r.extensions_mut().insert(crate::http::Relayed);
    r.headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(x_cache));
    r
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[tracing::instrument(name = "clerk_proxy", skip_all, fields(method = %method))]
async fn handle(
    State(state): State<Option<ProxyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(ProxyState {
        client,
        users,
        reads,
        bus,
    }) = state
    else {
        return clerk_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unconfigured",
            "No Clerk instance configured",
            "Set CLERK_SECRET_KEY to use the Backend API proxy.",
        );
    };
    let authorized = bearer(&headers)
        .map(|b| bool::from(b.as_bytes().ct_eq(client.secret().expose().as_bytes())))
        .unwrap_or(false);
    if !authorized {
        metrics::counter!("frontdesk_proxy_requests_total", "outcome" => "unauthorized")
            .increment(1);
        return clerk_error(
            StatusCode::UNAUTHORIZED,
            "authentication_invalid",
            "Invalid authentication",
            "The bearer token is not this instance's secret key.",
        );
    }
    // The raw path, never axum's decoded one: `%2F` must not become a new segment.
    let path = match ProxyPath::parse(uri.path().strip_prefix("/clerk").unwrap_or("")) {
        Ok(p) => p,
        Err(why) => {
            metrics::counter!("frontdesk_proxy_requests_total", "outcome" => "bad_path")
                .increment(1);
            return clerk_error(
                StatusCode::BAD_REQUEST,
                "proxy_path_invalid",
                "Invalid path",
                &format!(
                    "{why}: the proxy forwards paths as sent and refuses ones whose meaning could change on the way"
                ),
            );
        }
    };
    let query = uri.query().unwrap_or("");
    let api_version = headers
        .get("clerk-api-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // The user cache holds Clerk's answers in the configured API version; a caller
    // asking for another version is served (and cached) per version by `ReadCache`.
    let default_version = api_version
        .as_deref()
        .is_none_or(|v| v == client.api_version());
    let segs = path.segs();

    if method == Method::GET {
        match segs.as_slice() {
            ["users", id] if default_version && is_clerk_id(id) && query.is_empty() => {
                return single_user(&users, id).await;
            }
            ["users"] if default_version => {
                if let Some(resp) = reads::user_list_from_cache(&users, query).await {
                    return resp;
                }
            }
            _ => {}
        }
        return reads
            .get(
                &client,
                path.namespace(),
                &path.raw,
                query,
                api_version,
                client.secret().expose(),
            )
            .await;
    }

    // Writes (and anything else) pass through, then invalidate what they touched.
    let path_and_query = if query.is_empty() {
        path.raw.clone()
    } else {
        format!("{}?{query}", path.raw)
    };
    let req = UpstreamRequest {
        method: method.clone(),
        path_and_query,
        api_version,
        content_type: headers.get(header::CONTENT_TYPE).cloned(),
        body,
    };
    match client.send(req).await {
        Ok(resp) => {
            if resp.status.is_success() && method != Method::HEAD && method != Method::OPTIONS {
                invalidate_after_write(&bus, &users, &reads, &segs, default_version, &resp).await;
            }
            relay(resp, "BYPASS")
        }
        Err(e) => upstream_error_response(&e),
    }
}

async fn single_user(users: &UserCache, id: &str) -> Response {
    match users.get(id).await {
        Ok(lookup) => match lookup.user {
            Some(u) => {
                let mut r = json_response(StatusCode::OK, u.raw());
                r.headers_mut()
                    .insert(X_CACHE, HeaderValue::from_static(lookup.source.x_cache()));
                r
            }
            None => {
                let mut r = clerk_error(
                    StatusCode::NOT_FOUND,
                    "resource_not_found",
                    "not found",
                    "Resource not found",
                );
                let x = if lookup.source == Source::Upstream {
                    "MISS"
                } else {
                    lookup.source.x_cache()
                };
                r.headers_mut().insert(X_CACHE, HeaderValue::from_static(x));
                r
            }
        },
        Err(e) => upstream_error_response(&e),
    }
}

/// After a successful write: refresh the user it touched from Clerk's answer when
/// that answer is the user, otherwise forget the user; void cached reads of the
/// resource's namespace on every instance.
async fn invalidate_after_write(
    bus: &Bus,
    users: &UserCache,
    reads: &Arc<ReadCache>,
    segs: &[&str],
    default_version: bool,
    resp: &UpstreamResponse,
) {
    // Only an id of Clerk's syntax is a cache key; anything else was forwarded as
    // sent and matches no cached user.
    if let ["users", id, ..] = segs {
        if !is_clerk_id(id) {
            reads.bump("users", bus).await;
            return;
        }
        let fresh = serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()
            .filter(|v| v["object"] == "user" && v["id"] == *id && v.get("deleted").is_none());
        match fresh {
            // Write-through only of the configured API version's shape.
            Some(_) if default_version && (segs.len() == 2 || segs.get(2) == Some(&"metadata")) => {
                match CachedUser::parse(resp.body.clone()) {
                    Ok(user) => users.put(user).await,
                    // An overflow is followed by a fleet-wide resync: nothing is lost.
                    Err(_) => {
                        let _ = users.invalidate(id).await;
                    }
                }
            }
            _ => {
                let _ = users.invalidate(id).await;
            }
        }
    }
    if let Some(ns) = segs.first() {
        reads.bump(ns, bus).await;
    }
}
