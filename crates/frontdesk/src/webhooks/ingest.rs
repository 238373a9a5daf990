//! The edge endpoint: verify, store, then acknowledge. Nothing is stored for a refused
//! message, and nothing about a message but its id, type and the refusal reason is
//! logged (never the secret, the signature or the body).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::WebhooksState;
use super::verify::{Rejection, SignedHeaders};
use crate::error::{Error, Result};
use crate::store::NewInboxMessage;

/// The part of Clerk's event envelope the endpoint checks:
/// `{"data": {…}, "object": "event", "type": "user.updated", "timestamp": …}`.
#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    #[allow(dead_code)]
    data: &'a RawValue,
    #[serde(default)]
    timestamp: Option<i64>,
}

/// Longest event type stored (Clerk's are short; this bounds a metrics label too).
const MAX_TYPE_LEN: usize = 100;

#[tracing::instrument(name = "webhook", skip_all)]
pub(super) async fn receive(
    State(state): State<WebhooksState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let Some(keys) = state.webhooks.keys() else {
        reject("unconfigured");
        return Err(Error::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_unconfigured",
            "no webhook signing secret is configured (CLERK_WEBHOOK_SIGNING_SECRET)",
        ));
    };
    let cfg = &state.config.webhooks;
    let body = match axum::body::to_bytes(body, cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(e) if !crate::http::is_length_limit(&e) => {
            reject("body_incomplete");
            return Err(Error::bad_request(
                "body_incomplete",
                "the body could not be read in full",
            ));
        }
        Err(_) => {
            reject("body_too_large");
            return Err(Error::client(
                StatusCode::PAYLOAD_TOO_LARGE,
                "webhook_body_too_large",
                format!("the body exceeds {} bytes", cfg.max_body_bytes),
            ));
        }
    };
    let signed = SignedHeaders::from_headers(&headers).map_err(refused)?;
    let now_ms = state.clock.now_ms() as i64;
    keys.verify(&signed, &body, now_ms.div_euclid(1000), cfg.tolerance_s)
        .map_err(|r| {
            tracing::warn!(msg_id = signed.id, reason = r.code(), "webhook refused");
            refused(r)
        })?;

    let payload_invalid = |why: &str| {
        reject("payload_invalid");
        tracing::warn!(msg_id = signed.id, why, "webhook payload refused");
        Error::bad_request(
            "webhook_payload_invalid",
            format!("the body is not a Clerk event: {why}"),
        )
    };
    let text = std::str::from_utf8(&body).map_err(|_| payload_invalid("not UTF-8"))?;
    let envelope: EnvelopeIn<'_> =
        serde_json::from_str(text).map_err(|_| payload_invalid("not an event envelope"))?;
    if envelope.kind.is_empty()
        || envelope.kind.len() > MAX_TYPE_LEN
        || !envelope.kind.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(payload_invalid("bad event type"));
    }
    // Clerk's envelope time is in ms (its spec's examples show seconds; accept both).
    // Without one, the signed delivery time stands in.
    let event_ts = match envelope.timestamp {
        Some(t) if t < 100_000_000_000 => t.saturating_mul(1000),
        Some(t) => t,
        None => signed
            .timestamp
            .trim()
            .parse::<i64>()
            .unwrap_or(0)
            .saturating_mul(1000),
    };
    let inserted = state
        .store
        .inbox_insert(
            &NewInboxMessage {
                id: signed.id,
                kind: &envelope.kind,
                payload: text,
                event_ts,
            },
            now_ms,
        )
        .await?;
    if inserted {
        metrics::counter!("frontdesk_webhooks_received_total").increment(1);
        state.webhooks.wake();
        tracing::info!(msg_id = signed.id, kind = %envelope.kind, "webhook stored");
    } else {
        metrics::counter!("frontdesk_webhooks_duplicates_total").increment(1);
        tracing::info!(msg_id = signed.id, kind = %envelope.kind, "webhook already stored");
    }
    Ok((
        StatusCode::OK,
        Json(json!({"id": signed.id, "duplicate": !inserted})),
    )
        .into_response())
}

fn reject(reason: &'static str) {
    metrics::counter!("frontdesk_webhooks_rejected_total", "reason" => reason).increment(1);
}

fn refused(r: Rejection) -> Error {
    let reason = r.code().trim_start_matches("webhook_");
    reject(reason);
    match r {
        Rejection::HeadersMissing => Error::bad_request(
            r.code(),
            "svix-id, svix-timestamp and svix-signature (or webhook-*) are required",
        ),
        Rejection::HeadersInvalid => {
            Error::bad_request(r.code(), "a webhook signature header is malformed")
        }
        Rejection::TimestampOutOfRange => {
            Error::unauthorized(r.code(), "the message timestamp is too far from now")
        }
        Rejection::SignatureInvalid => {
            Error::unauthorized(r.code(), "no signature matches a configured secret")
        }
    }
}
