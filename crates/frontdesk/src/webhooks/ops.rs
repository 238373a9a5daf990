//! Inbox operations on the api listener: list messages, replay one, replay all dead,
//! purge a state.

use axum::Json;
use axum::extract::State;

use crate::http::{Path, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use super::WebhooksState;
use crate::error::{Error, Result};
use crate::store::InboxState;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

fn parse_state(s: &str) -> Result<InboxState> {
    s.parse()
        .map_err(|_| Error::bad_request("invalid_state", "state must be pending, done or dead"))
}

/// `GET /v1/webhooks?state=pending|done|dead&limit=N`, newest first.
pub(super) async fn list(
    State(state): State<WebhooksState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>> {
    let filter = q.state.as_deref().map(parse_state).transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let items = state.store.inbox_list(filter, limit).await?;
    Ok(Json(json!({ "items": items })))
}

/// `POST /v1/webhooks/{id}/replay`: back to `pending`, attempts reset, due now.
pub(super) async fn replay_one(
    State(state): State<WebhooksState>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let now = state.clock.now_ms() as i64;
    if !state.store.inbox_replay(&id, now).await? {
        return Err(Error::not_found("no webhook message with this id"));
    }
    tracing::info!(msg_id = %id, "webhook message replayed");
    state.webhooks.wake();
    Ok(Json(json!({ "replayed": 1 })))
}

#[derive(Debug, Deserialize)]
pub(super) struct ReplayQuery {
    #[serde(default)]
    state: Option<String>,
}

/// `POST /v1/webhooks/replay?state=dead`: every message of that state back to
/// `pending`. Only `dead` is accepted: replaying everything `done` by accident would
/// re-run a whole history.
pub(super) async fn replay_state(
    State(state): State<WebhooksState>,
    Query(q): Query<ReplayQuery>,
) -> Result<Json<Value>> {
    let which = parse_state(q.state.as_deref().unwrap_or(""))?;
    if which != InboxState::Dead {
        return Err(Error::bad_request(
            "invalid_state",
            "bulk replay takes state=dead; replay other messages by id",
        ));
    }
    let now = state.clock.now_ms() as i64;
    let n = state.store.inbox_replay_state(which, now).await?;
    tracing::info!(count = n, "dead webhook messages replayed");
    state.webhooks.wake();
    Ok(Json(json!({ "replayed": n })))
}

/// `POST /v1/webhooks/purge?state=dead|done`: deletes every message of that state.
/// Dead letters are kept until replayed or purged here; `done` ones are purged after
/// `webhooks.retention_ms` anyway. `pending` is refused: it would lose work.
pub(super) async fn purge_state(
    State(state): State<WebhooksState>,
    Query(q): Query<ReplayQuery>,
) -> Result<Json<Value>> {
    let which = parse_state(q.state.as_deref().unwrap_or(""))?;
    if which == InboxState::Pending {
        return Err(Error::bad_request(
            "invalid_state",
            "purge takes state=dead or state=done; pending messages are not purged",
        ));
    }
    let n = state.store.inbox_purge_state(which).await?;
    tracing::info!(count = n, state = which.as_str(), "webhook messages purged");
    Ok(Json(json!({ "purged": n })))
}
