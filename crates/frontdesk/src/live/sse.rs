//! `GET /_frontdesk/events`: one `text/event-stream` per browser tab.
//!
//! The subscriber is registered before its history is read, so nothing published
//! meanwhile is lost; what arrives twice (in the history and in the queue) is dropped
//! by id. An event's `id:` is the subscriber's cursor, `tenant:streamid` for each of
//! its tenants (`user_…:1732-0,org_…:1733-2`): each part is monotonic, and a resume
//! (`Last-Event-ID`, or `?last_event_id=` where the client cannot set headers) reads
//! each tenant's history after its part.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Delivery, Live, Msg, START, id_after, is_tenant, parse_id};
use crate::error::{Error, Result};

/// Most tenants a cursor may name (a subscriber has two).
const MAX_CURSOR_PARTS: usize = 4;

pub(super) async fn subscribe(
    State(live): State<Live>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Result<Response> {
    let verifier = live.inner.verifier.as_ref().ok_or_else(|| {
        Error::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "auth_unconfigured",
            "no way to verify session tokens is configured (CLERK_JWT_KEY or CLERK_SECRET_KEY)",
        )
    })?;
    let session = verifier
        .verify_headers(req.headers())
        .await
        .map_err(Error::from)?;
    crate::telemetry::record_user(&session.user_id);
    let mut tenants = vec![session.user_id.clone()];
    if let Some(org) = &session.org {
        if is_tenant(&org.id) {
            tenants.push(org.id.clone());
        }
    }
    let resume = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            query.as_deref().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "last_event_id" || k == "lastEventId")
                    .map(|(_, v)| v.into_owned())
            })
        })
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_cursor(&s));

    // Where each tenant's history stands, read before registering: every event queued
    // for this stream comes after it, and the first `id:` names every tenant, so a
    // resume replays a tenant that has had no event yet too.
    let mut cursors = vec![None; tenants.len()];
    if resume.is_none() {
        for (c, t) in cursors.iter_mut().zip(&tenants) {
            if live.inner.redis.is_some() {
                *c = Some(live.newest(t).await.unwrap_or_else(|| START.to_string()));
            }
        }
    }
    let Some((sub_id, rx, kick)) = live.register(&tenants) else {
        metrics::counter!("frontdesk_live_refused_total").increment(1);
        return Err(Error::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            "this instance holds as many event streams as it may",
        ));
    };
    let heartbeat = Duration::from_millis(live.inner.config.heartbeat_ms.max(10));
    let stream = Stream {
        live,
        sub_id,
        user: session.user_id.clone(),
        sid: session.session_id.clone(),
        tenants,
        rx,
        kick,
        cursors,
        resume: Some(resume),
        pending: VecDeque::new(),
        done: false,
        heartbeat,
    };
    let body = futures::stream::unfold(stream, |mut s| async move {
        s.next_chunk().await.map(|b| (Ok::<_, Infallible>(b), s))
    });
    let mut response = Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    h.insert(
        header::VARY,
        HeaderValue::from_static("Authorization, Cookie"),
    );
    // nginx and friends must pass each event on as it comes.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// A parsed resume cursor; `None` when it was not one of ours (then every tenant
/// resets).
type Cursor = Option<HashMap<String, String>>;

fn parse_cursor(s: &str) -> Cursor {
    let mut map = HashMap::new();
    for (n, part) in s.trim().split(',').enumerate() {
        if n >= MAX_CURSOR_PARTS {
            return None;
        }
        let (tenant, id) = part.split_once(':')?;
        if !is_tenant(tenant) || parse_id(id).is_none() {
            return None;
        }
        map.insert(tenant.to_string(), id.to_string());
    }
    Some(map)
}

struct Stream {
    live: Live,
    sub_id: u64,
    user: String,
    sid: Option<String>,
    tenants: Vec<String>,
    rx: mpsc::Receiver<Msg>,
    kick: CancellationToken,
    /// The last id sent (or skipped to) per tenant, in `tenants` order.
    cursors: Vec<Option<String>>,
    /// `Some` until the start (retry hint, replay) has been sent.
    resume: Option<Option<Cursor>>,
    pending: VecDeque<Bytes>,
    done: bool,
    heartbeat: Duration,
}

impl Drop for Stream {
    fn drop(&mut self) {
        // A subscriber cut for being slow was already unregistered and uncounted.
        if self.live.unregister(&self.tenants, self.sub_id, false) {
            self.live.inner.subscribers.fetch_sub(1, Ordering::SeqCst);
            metrics::gauge!("frontdesk_live_subscribers").decrement(1.0);
        }
    }
}

impl Stream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(b) = self.pending.pop_front() {
            return Some(b);
        }
        if self.done {
            return None;
        }
        if let Some(resume) = self.resume.take() {
            return Some(self.start(resume).await);
        }
        loop {
            let msg = tokio::select! {
                biased;
                _ = self.kick.cancelled() => return None,
                _ = self.live.inner.closing.cancelled() => return None,
                m = self.rx.recv() => m,
                _ = tokio::time::sleep(self.heartbeat) => {
                    if self.revoked() {
                        return None;
                    }
                    return Some(Bytes::from_static(b": heartbeat\n\n"));
                }
            };
            match msg? {
                Msg::Event(d) => {
                    if let Some(frame) = self.frame(&d) {
                        self.done = self.ends_stream(&d);
                        return Some(frame);
                    }
                }
                Msg::Reset => {
                    let tenants = self.tenants.clone();
                    for (i, t) in tenants.iter().enumerate() {
                        if let Some(newest) = self.live.newest(t).await {
                            self.advance(i, newest);
                        }
                    }
                    return Some(self.reset_frame());
                }
            }
        }
    }

    /// The retry hint, then what the client missed (or `reset`).
    async fn start(&mut self, resume: Option<Cursor>) -> Bytes {
        let mut out = format!(
            "retry: {}\n: frontdesk live events\n\n",
            self.live.inner.config.retry_ms
        );
        let Some(cursor) = resume else {
            return Bytes::from(out);
        };
        let mut reset = false;
        let mut missed = Vec::new();
        let tenants = self.tenants.clone();
        for (i, tenant) in tenants.iter().enumerate() {
            let from = cursor.as_ref().and_then(|m| m.get(tenant));
            let replayed = match from {
                Some(from) => self.live.replay(tenant, from).await,
                None => None,
            };
            match replayed {
                Some(events) => {
                    self.advance(i, from.cloned().unwrap_or_default());
                    metrics::counter!("frontdesk_live_replayed_total")
                        .increment(events.len() as u64);
                    missed.extend(events);
                }
                None => {
                    reset = true;
                    if let Some(newest) = self.live.newest(tenant).await {
                        self.advance(i, newest);
                    }
                }
            }
        }
        // Tenant streams share Redis's clock: merged by id, the replay keeps the order
        // in which events were published.
        missed.sort_by_key(|d| parse_id(&d.id));
        for d in missed {
            if let Some(f) = self.frame(&d) {
                out.push_str(&String::from_utf8_lossy(&f));
            }
        }
        if reset {
            out.push_str(&String::from_utf8_lossy(&self.reset_frame()));
        }
        Bytes::from(out)
    }

    fn advance(&mut self, i: usize, id: String) {
        if let Some(c) = self.cursors.get_mut(i) {
            if c.as_deref().is_none_or(|c| id_after(&id, c)) {
                *c = Some(id);
            }
        }
    }

    fn cursor(&self) -> String {
        let mut s = String::new();
        for (t, c) in self.tenants.iter().zip(&self.cursors) {
            if let Some(c) = c {
                if !s.is_empty() {
                    s.push(',');
                }
                s.push_str(t);
                s.push(':');
                s.push_str(c);
            }
        }
        s
    }

    /// The event's frame, or `None` when it was already sent.
    fn frame(&mut self, d: &Arc<Delivery>) -> Option<Bytes> {
        let i = self.tenants.iter().position(|t| *t == d.tenant)?;
        if let Some(c) = &self.cursors[i] {
            if !id_after(&d.id, c) {
                return None;
            }
        }
        self.cursors[i] = Some(d.id.clone());
        let cursor = self.cursor();
        let mut f = String::with_capacity(cursor.len() + d.kind.len() + d.data.len() + 24);
        f.push_str("id: ");
        f.push_str(&cursor);
        f.push_str("\nevent: ");
        f.push_str(&d.kind);
        f.push_str("\ndata: ");
        f.push_str(&d.data);
        f.push_str("\n\n");
        Some(Bytes::from(f))
    }

    fn reset_frame(&self) -> Bytes {
        self.live.inner.resets.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("frontdesk_live_resets_total", "reason" => "history").increment(1);
        let data = serde_json::json!({ "tenants": self.tenants }).to_string();
        let cursor = self.cursor();
        let id = if cursor.is_empty() {
            String::new()
        } else {
            format!("id: {cursor}\n")
        };
        Bytes::from(format!("{id}event: reset\ndata: {data}\n\n"))
    }

    /// Whether this event ends the subscription: the user was deleted, or this
    /// session was revoked or ended.
    fn ends_stream(&self, d: &Delivery) -> bool {
        if d.kind == "user.deleted" && d.tenant == self.user {
            return true;
        }
        if d.kind.starts_with("session.") {
            let subject = serde_json::from_str::<serde_json::Value>(&d.data)
                .ok()
                .and_then(|v| v.get("subject").and_then(|s| s.as_str()).map(str::to_owned));
            let mine = subject.is_some() && subject.as_deref() == self.sid.as_deref();
            if mine
                && matches!(
                    d.kind.as_str(),
                    "session.revoked" | "session.ended" | "session.removed"
                )
            {
                return true;
            }
            return self.revoked();
        }
        false
    }

    fn revoked(&self) -> bool {
        match (&self.sid, &self.live.inner.verifier) {
            (Some(sid), Some(v)) => v.is_revoked(sid),
            _ => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse_cursor;

    #[test]
    fn cursors_name_each_tenant() {
        let c = parse_cursor("user_1:10-0,org_2:11-3").unwrap();
        assert_eq!(c["user_1"], "10-0");
        assert_eq!(c["org_2"], "11-3");
        assert!(parse_cursor("garbage").is_none());
        assert!(parse_cursor("user_1:x-0").is_none());
        assert!(parse_cursor("sess_1:1-0").is_none());
    }
}
