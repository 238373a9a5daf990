//! Operations endpoints: liveness on the edge (`/_frontdesk/healthz`: the process
//! answers), readiness and Prometheus metrics on the api listener.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::app::AppState;

pub fn edge_router() -> Router<AppState> {
    Router::new().route("/_frontdesk/healthz", get(healthz))
}

pub fn api_router() -> Router<AppState> {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers a query. Redis is reported, and only fails readiness
/// when `readyz_require_redis` is set: without Redis, Frontdesk keeps serving from its
/// in-process tier, so pulling the instance out of rotation would make things worse.
async fn readyz(State(state): State<AppState>) -> Response {
    let mut store_reason = None;
    let store_ok = match state.store.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "readiness: store check failed");
            if let crate::error::Error::StoreUnavailable(inner) = &e {
                store_reason = Some(crate::store::describe_connect_error(inner));
            }
            false
        }
    };
    let mut redis_reason = None;
    let redis = match &state.redis {
        None => "disabled",
        Some(link) if link.ping().await => "up",
        Some(link) => {
            redis_reason = link.tls_failure();
            "down"
        }
    };
    let ready = store_ok && !(state.config.readyz_require_redis && redis == "down");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {
            "store": {"kind": state.store.kind(), "status": if store_ok { "up" } else { "down" }},
            "redis": redis,
        }
    });
    // Why a check is down, when that is known: the same line start-up would print.
    if let Some(reason) = store_reason {
        body["checks"]["store"]["reason"] = json!(reason);
    }
    if let Some(reason) = redis_reason {
        body["checks"]["redis_reason"] = json!(reason);
    }
    (status, Json(body)).into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    match &state.prometheus {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => crate::error::Error::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics_unavailable",
            "another metrics recorder was installed in this process",
        )
        .into_response(),
    }
}
