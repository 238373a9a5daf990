//! Operations endpoints: liveness on the edge (`/_frontdesk/healthz`: the process
//! answers), readiness and Prometheus metrics on the api listener.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::facade::Frontdesk;

pub fn edge_router() -> Router {
    Router::new().route("/_frontdesk/healthz", get(healthz))
}

pub fn api_router(frontdesk: Frontdesk) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/stats", get(stats))
        .with_state(frontdesk)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers a query. Redis is reported, and only fails readiness
/// when `readyz_require_redis` is set: without Redis, Frontdesk keeps serving from its
/// in-process tier, so pulling the instance out of rotation would make things worse.
async fn readyz(State(state): State<Frontdesk>) -> Response {
    let mut store_reason = None;
    let store_ok = match state.store().ping().await {
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
    let redis = match state.redis() {
        None => "disabled",
        Some(link) if link.ping().await => "up",
        Some(link) => {
            redis_reason = link.tls_failure();
            "down"
        }
    };
    let ready = store_ok && !(state.config().readyz_require_redis && redis == "down");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {
            "store": {"kind": state.store().kind(), "status": if store_ok { "up" } else { "down" }},
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

async fn metrics_text(State(state): State<Frontdesk>) -> Response {
    // Cache sizes are read when scraped rather than on every insert.
    if let Some(users) = state.users() {
        users.record_gauges();
    }
    state.context().record_gauges();
    match state.prometheus() {
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

fn ratio(hits: u64, misses: u64) -> f64 {
    if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    }
}

async fn stats(State(state): State<Frontdesk>) -> Json<Value> {
    Json(stats_value(&state))
}

/// The figures of `/v1/stats` (also sent by the console's stream).
pub fn stats_value(state: &Frontdesk) -> Value {
    let redis = match state.redis() {
        None => "disabled",
        Some(r) if r.is_up() => "up",
        Some(_) => "down",
    };
    let cache = state.users().map(|u| u.stats());
    let upstream = state.clerk().map(|c| &c.client).map(|c| {
        let by_endpoint: serde_json::Map<String, Value> = c
            .calls_by_endpoint()
            .into_iter()
            .map(|(e, calls, errors)| (e.to_string(), json!({"calls": calls, "errors": errors})))
            .collect();
        json!({
            "calls": c.total_calls(),
            "refused_while_paused": c.refused_while_paused(),
            "health": c.health(),
            "by_endpoint": by_endpoint,
        })
    });
    let users = cache.map(|s| {
        json!({
            "l1": {"entries": s.l1_entries, "weighted_bytes": s.l1_weighted_bytes,
                   "hits": s.l1_hits, "misses": s.l1_misses,
                   "hit_ratio": ratio(s.l1_hits, s.l1_misses)},
            "l2": {"status": redis, "hits": s.l2_hits, "misses": s.l2_misses, "errors": s.l2_errors,
                   "hit_ratio": ratio(s.l2_hits, s.l2_misses)},
            "upstream_loads": s.upstream_loads,
            "stale_served": s.stale_served,
            "coalesced_waits": s.coalesced_waits,
            "batches": s.batches,
            "batched_ids": s.batched_ids,
            "invalidations": {"sent": s.invalidations_sent, "received": s.invalidations_received},
            "aliases": {
                "entries": s.alias_entries,
                "weighted_bytes": s.alias_weighted_bytes,
                "l1": {"hits": s.alias_l1_hits, "misses": s.alias_l1_misses,
                       "hit_ratio": ratio(s.alias_l1_hits, s.alias_l1_misses)},
                "l2_hits": s.alias_l2_hits,
                "upstream_loads": s.alias_upstream_loads,
                "coalesced_waits": s.alias_coalesced_waits,
                "stale_dropped": s.alias_stale_dropped,
                "batches": s.alias_batches,
                "batched_values": s.alias_batched_values,
            },
        })
    });
    let (context_entries, context_bytes) = state.context().l1_size();
    json!({
        "instance_id": state.bus().instance_id(),
        "store": state.store().kind(),
        "redis": redis,
        "users": users,
        "contexts": {"l1": {"entries": context_entries, "weighted_bytes": context_bytes}},
        "upstream": upstream,
        "rate_limits": {
            "backend": state.gateway().limiter().backend(),
            "memory_fallbacks": state.gateway().limiter().fallbacks(),
        },
    })
}
