//! What each event does. Every effect is idempotent and order-safe, because Svix
//! delivers at least once and in any order, and a retried or replayed message runs its
//! effect again: user rows only move forward in Clerk's `updated_at` (a deletion's
//! version is the event's timestamp), invalidations and revocations can repeat.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::WebhooksState;
use crate::context::upsert_from_clerk;
use crate::events::AppEvent;
use crate::store::ClaimedMessage;
use crate::users::CachedUser;

/// How long a revoked session's tokens are refused when the event does not say when
/// the session expires, and the most a session's own `expire_at` can extend it.
const REVOKE_DEFAULT_MS: u64 = 60 * 60 * 1000;
const REVOKE_MAX_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
struct SessionIn {
    id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    expire_at: Option<u64>,
}

#[derive(Deserialize)]
struct MembershipIn {
    #[serde(default)]
    organization: Option<IdOnly>,
    #[serde(default)]
    public_user_data: Option<PublicUserData>,
}

#[derive(Deserialize)]
struct PublicUserData {
    #[serde(default)]
    user_id: Option<String>,
}

/// A parse failure as `last_error` text: where and what kind, never serde's message
/// (it can quote the payload).
fn shape(what: &str, e: &serde_json::Error) -> String {
    format!(
        "{what}: not the expected shape ({:?} error at line {}, column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// Applies one message. An `Err` is retried later (its text becomes `last_error`, so it
/// must not carry payload data beyond ids).
pub(super) async fn apply(state: &WebhooksState, msg: &ClaimedMessage) -> Result<(), String> {
    let envelope: Envelope<'_> =
        serde_json::from_str(&msg.payload).map_err(|e| shape("envelope", &e))?;
    let data = envelope.data.get();
    let now = state.clock.now_ms();
    let kind = msg.kind.as_str();
    let (subject, detail) = match kind {
        "user.created" | "user.updated" => {
            let user = CachedUser::parse(Bytes::copy_from_slice(data.as_bytes()))
                .map_err(|_| "user: not a Clerk user object".to_string())?;
            if user.id().is_empty() {
                return Err("user: empty id".into());
            }
            let upsert = upsert_from_clerk(&user, &state.config.context);
            let row = state
                .store
                .upsert_user(&upsert, now as i64)
                .await
                .map_err(|e| format!("upsert: {e}"))?;
            let stale = row.clerk_updated_at > upsert.clerk_updated_at;
            state
                .fanout
                .user_changed(user.id())
                .await
                .map_err(|e| format!("invalidation: {e}"))?;
            bump(state, "users").await;
            (
                user.id().to_string(),
                json!({"updated_at": upsert.clerk_updated_at, "stale": stale}),
            )
        }
        "user.deleted" => {
            let d: IdOnly = serde_json::from_str(data).map_err(|e| shape("user", &e))?;
            let changed = state
                .store
                .soft_delete_user(&d.id, msg.event_ts, now as i64)
                .await
                .map_err(|e| format!("soft delete: {e}"))?;
            state
                .fanout
                .user_changed(&d.id)
                .await
                .map_err(|e| format!("invalidation: {e}"))?;
            bump(state, "users").await;
            (d.id, json!({"deleted": true, "changed": changed}))
        }
        "session.revoked" | "session.ended" | "session.removed" => {
            let s: SessionIn = serde_json::from_str(data).map_err(|e| shape("session", &e))?;
            let until = s
                .expire_at
                .filter(|&e| e > now)
                .unwrap_or(now + REVOKE_DEFAULT_MS)
                .clamp(now + REVOKE_DEFAULT_MS, now + REVOKE_MAX_MS);
            state
                .fanout
                .session_revoked(&s.id, until, Some((&msg.id, msg.claim)))
                .await
                .map_err(|e| format!("revocation: {e}"))?;
            (s.id, json!({"user_id": s.user_id, "until_ms": until}))
        }
        k if k.starts_with("organizationMembership.") => {
            let m: MembershipIn =
                serde_json::from_str(data).map_err(|e| shape("membership", &e))?;
            bump(state, "organizations").await;
            bump(state, "users").await;
            let user_id = m.public_user_data.and_then(|p| p.user_id);
            if let Some(uid) = &user_id {
                state
                    .fanout
                    .user_changed(uid)
                    .await
                    .map_err(|e| format!("invalidation: {e}"))?;
            }
            let org_id = m.organization.map(|o| o.id);
            (
                org_id.clone().unwrap_or_default(),
                json!({"organization_id": org_id, "user_id": user_id}),
            )
        }
        k if k.starts_with("organization.")
            || k.starts_with("organizationInvitation.")
            || k.starts_with("organizationDomain.") =>
        {
            bump(state, "organizations").await;
            let id = serde_json::from_str::<IdOnly>(data)
                .map(|d| d.id)
                .unwrap_or_default();
            (id, Value::Null)
        }
        // Kept in the inbox for audit; nothing to do.
        _ => return Ok(()),
    };
    // `user.*` and `organization.*` void every cached answer of that tenant.
    if (kind.starts_with("user.") || kind.starts_with("organization.")) && !subject.is_empty() {
        state
            .fanout
            .tenant_changed(&subject)
            .await
            .map_err(|e| format!("response cache invalidation: {e}"))?;
    }
    state.fanout.publish(AppEvent {
        kind: msg.kind.clone(),
        subject,
        at_ms: now,
        detail: merge(detail, json!({"message_id": msg.id, "source": "webhook"})),
    });
    Ok(())
}

/// Voids the proxy's cached reads of `ns` on every instance.
async fn bump(state: &WebhooksState, ns: &str) {
    state.fanout.namespace_changed(ns).await;
}

fn merge(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Object(mut a), Value::Object(b)) => {
            a.extend(b);
            Value::Object(a)
        }
        (Value::Null, b) => b,
        (a, _) => a,
    }
}
