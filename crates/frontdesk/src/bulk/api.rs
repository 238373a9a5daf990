//! The HTTP side of bulk jobs: submit (validated, stored, 202) and progress.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Bulk;
use crate::error::{Error, Result};
use crate::http::{Path, Query};
use crate::json::JsonBody;
use crate::store::NewJobItem;

pub fn router() -> Router<Bulk> {
    Router::new()
        .route("/v1/users/bulk/metadata", post(submit))
        .route("/v1/jobs/{id}", get(progress))
}

/// The kind of job stored for a metadata update.
pub const KIND_USER_METADATA: &str = "user_metadata";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkIn {
    updates: Vec<UpdateIn>,
}

/// One update: Clerk's `PATCH /v1/users/{user_id}/metadata` body plus the user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateIn {
    pub user_id: String,
    #[serde(default)]
    pub public_metadata: Option<Value>,
    #[serde(default)]
    pub private_metadata: Option<Value>,
    #[serde(default)]
    pub unsafe_metadata: Option<Value>,
}

/// Checks one update and gives the body sent to Clerk.
fn check(i: usize, u: UpdateIn) -> Result<NewJobItem> {
    if !crate::proxy::is_clerk_id(&u.user_id) {
        return Err(Error::bad_request(
            "invalid_user_id",
            format!("updates[{i}].user_id is not a Clerk user id"),
        ));
    }
    let mut body = Map::new();
    for (name, v) in [
        ("public_metadata", u.public_metadata),
        ("private_metadata", u.private_metadata),
        ("unsafe_metadata", u.unsafe_metadata),
    ] {
        match v {
            None => {}
            Some(Value::Object(m)) => {
                body.insert(name.to_string(), Value::Object(m));
            }
            Some(_) => {
                return Err(Error::bad_request(
                    "invalid_metadata",
                    format!("updates[{i}].{name} must be a JSON object"),
                ));
            }
        }
    }
    if body.is_empty() {
        return Err(Error::bad_request(
            "empty_update",
            format!("updates[{i}] has none of public_metadata, private_metadata, unsafe_metadata"),
        ));
    }
    Ok(NewJobItem {
        user_id: u.user_id,
        body: Value::Object(body).to_string(),
    })
}

async fn submit(State(bulk): State<Bulk>, JsonBody(body): JsonBody<BulkIn>) -> Result<Response> {
    let inner = &bulk.0;
    if inner.clerk.is_none() {
        return Err(Error::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unconfigured",
            "no Clerk instance is configured",
        ));
    }
    let max = inner.config.max_items;
    if body.updates.is_empty() {
        return Err(Error::bad_request("no_updates", "updates is empty"));
    }
    if body.updates.len() > max {
        return Err(Error::bad_request(
            "too_many_updates",
            format!("at most {max} updates per job"),
        ));
    }
    let items = body
        .updates
        .into_iter()
        .enumerate()
        .map(|(i, u)| check(i, u))
        .collect::<Result<Vec<_>>>()?;
    let id = format!("job_{}", uuid::Uuid::new_v4().simple());
    let now = inner.clock.now_ms() as i64;
    inner
        .store
        .job_insert(&id, KIND_USER_METADATA, &items, now)
        .await?;
    metrics::counter!("frontdesk_bulk_jobs_total", "event" => "submitted").increment(1);
    metrics::counter!("frontdesk_bulk_items_total", "outcome" => "submitted")
        .increment(items.len() as u64);
    inner.wake.notify_one();
    let mut r = (StatusCode::ACCEPTED, Json(json!({ "job_id": id }))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

#[derive(Debug, Deserialize)]
struct ProgressQuery {
    /// `false`: figures only, without the per-item list.
    #[serde(default)]
    results: Option<bool>,
}

fn check_job_id(id: &str) -> Result<()> {
    let ok = id.len() <= 64
        && id.strip_prefix("job_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request("invalid_job_id", "not a job id"))
    }
}

async fn progress(
    State(bulk): State<Bulk>,
    Path(id): Path<String>,
    Query(q): Query<ProgressQuery>,
) -> Result<Json<Value>> {
    check_job_id(&id)?;
    let store = &bulk.0.store;
    let s = store
        .job_summary(&id)
        .await?
        .ok_or_else(|| Error::not_found(format!("no job {id}")))?;
    let mut out = json!({
        "job_id": s.id,
        "kind": s.kind,
        "state": s.state,
        "total": s.total,
        "done": s.ok + s.failed,
        "ok": s.ok,
        "failed": s.failed,
        "pending": s.pending,
        "created_at": s.created_at,
        "finished_at": s.finished_at,
    });
    if q.results != Some(false) {
        let results: Vec<Value> = store
            .job_results(&id)
            .await?
            .into_iter()
            .map(|r| {
                let mut item = json!({
                    "user_id": r.user_id,
                    "status": r.state,
                    "attempts": r.attempts,
                });
                if let Some(s) = r.status {
                    item["http_status"] = json!(s);
                }
                if let Some(code) = r.error_code {
                    item["code"] = json!(code);
                }
                item
            })
            .collect();
        out["results"] = Value::Array(results);
    }
    Ok(Json(out))
}
