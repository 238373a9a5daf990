//! Clerk webhooks: verification (Svix's own vectors, every refusal leaves the inbox
//! empty), the durable inbox (duplicates, order, dead letters and replay), the effects
//! end to end with the emulator sending real signed webhooks, and crash safety with the
//! real binary killed mid-processing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use frontdesk::App;
use frontdesk::clock::{ManualClock, SharedClock};
use frontdesk::config::{Config, Secret};
use frontdesk::store::InboxState;
use frontdesk::webhooks::{Rejection, SignedHeaders, SigningKeys};
use frontdesk_emulator::svix;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::{self, TestApp};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// A second secret, as during a rotation.
const SECRET_2: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const T0_MS: u64 = 1_700_000_000_000;

enum Db {
    Pg,
    /// Postgres over `verify-full` TLS through PgBouncer in transaction mode.
    Pooler,
    Sqlite,
}

/// A fresh store URL of the given kind (the temp dir must outlive the test).
async fn store_url(db: Db) -> (String, Option<tempfile::TempDir>) {
    match db {
        Db::Pg => (support::fresh_pg_database().await, None),
        Db::Pooler => (
            support::fresh_pg_database_on(support::Pg::Pooler).await,
            None,
        ),
        Db::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            (support::sqlite_url(&dir), Some(dir))
        }
    }
}

fn base_config(db: &str) -> Config {
    let mut c = support::config(db, None, "");
    c.clerk.webhook_signing_secret = Some(Secret::new(SECRET));
    c.webhooks.poll_interval_ms = 20;
    c
}

async fn start(db: &str, clock: SharedClock, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut c = base_config(db);
    tweak(&mut c);
    let app = App::build_with_clock(c, clock).await.expect("build app");
    TestApp::serve(app, |r| r).await
}

fn envelope(kind: &str, data: Value, ts_ms: u64) -> String {
    json!({
        "data": data,
        "object": "event",
        "type": kind,
        "timestamp": ts_ms,
        "instance_id": "ins_test",
        "event_attributes": {"http_request": {"client_ip": "127.0.0.1", "user_agent": "test"}},
    })
    .to_string()
}

fn user_json(id: &str, first_name: &str, updated_at: i64) -> Value {
    json!({
        "object": "user",
        "id": id,
        "first_name": first_name,
        "last_name": null,
        "username": null,
        "image_url": "https://img.example/x.png",
        "primary_email_address_id": "idn_1",
        "email_addresses": [{"id": "idn_1", "object": "email_address", "email_address": format!("{id}@example.com")}],
        "public_metadata": {},
        "private_metadata": {},
        "unsafe_metadata": {},
        "created_at": 1_000,
        "updated_at": updated_at,
    })
}

/// Posts raw headers and body to the webhook endpoint.
async fn post_raw(
    c: &reqwest::Client,
    edge: &str,
    headers: &[(&str, String)],
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut req = c
        .post(format!("{edge}/_frontdesk/webhooks/clerk"))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Signs `body` with `secret` as Svix would at `ts_s` and posts it.
async fn send(
    c: &reqwest::Client,
    edge: &str,
    secret: &str,
    msg_id: &str,
    ts_s: i64,
    body: &str,
) -> (u16, Value) {
    let sig = svix::sign(secret, msg_id, ts_s, body.as_bytes()).unwrap();
    post_raw(
        c,
        edge,
        &[
            ("svix-id", msg_id.to_string()),
            ("svix-timestamp", ts_s.to_string()),
            ("svix-signature", sig),
        ],
        body.to_string(),
    )
    .await
}

async fn inbox_count(app: &TestApp) -> i64 {
    app.state.store().inbox_count().await.unwrap()
}

/// Waits until nothing is pending.
async fn drained(app: &TestApp, within: Duration) {
    let ok = support::eventually(within, || async {
        app.state.store().inbox_stats().await.unwrap().pending == 0
    })
    .await;
    assert!(
        ok,
        "inbox still has pending messages: {:?}",
        app.state.store().inbox_stats().await
    );
}

#[test]
fn svix_official_vectors_verify() {
    let vectors = [
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553i64,
            r#"{"email":"test@example.com","username":"test_user"}"#,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ];
    for (secret, id, ts, body, sig) in vectors {
        let keys = SigningKeys::parse(secret).unwrap();
        let ts_s = ts.to_string();
        let h = SignedHeaders {
            id,
            timestamp: &ts_s,
            signature: sig,
        };
        assert_eq!(keys.verify(&h, body.as_bytes(), ts, 300), Ok(()));
        // Several signatures, one of them right, and versions other than v1 ignored.
        let many = format!("v1,bm90IGl0 v2,{} {sig}", &sig[3..]);
        let h2 = SignedHeaders {
            signature: &many,
            ..h
        };
        assert_eq!(keys.verify(&h2, body.as_bytes(), ts, 300), Ok(()));
        // Rotation: the right secret second in the list.
        let rotated = SigningKeys::parse(&format!("whsec_dGhlIG9sZCBvbmU=, {secret}")).unwrap();
        assert_eq!(rotated.verify(&h, body.as_bytes(), ts, 300), Ok(()));
        // A flipped byte, the wrong time, a v2-only header.
        let mut flipped = body.as_bytes().to_vec();
        flipped[3] ^= 1;
        assert_eq!(
            keys.verify(&h, &flipped, ts, 300),
            Err(Rejection::SignatureInvalid)
        );
        assert_eq!(
            keys.verify(&h, body.as_bytes(), ts + 301, 300),
            Err(Rejection::TimestampOutOfRange)
        );
        assert_eq!(
            keys.verify(&h, body.as_bytes(), ts - 301, 300),
            Err(Rejection::TimestampOutOfRange)
        );
        let v2 = format!("v2,{}", &sig[3..]);
        let h3 = SignedHeaders {
            signature: &v2,
            ..h
        };
        assert_eq!(
            keys.verify(&h3, body.as_bytes(), ts, 300),
            Err(Rejection::SignatureInvalid)
        );
    }
    assert!(SigningKeys::parse("whsec_***").is_err());
    assert!(SigningKeys::parse("sk_live_x").is_err());
}

#[tokio::test]
async fn an_official_vector_passes_the_endpoints_verification_at_its_own_time() {
    let (db, _dir) = store_url(Db::Pg).await;
    let clock = ManualClock::new(1_649_367_553_000);
    let app = start(&db, clock.clone(), |c| {
        c.clerk.webhook_signing_secret =
            Some(Secret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"));
    })
    .await;
    let c = support::http();
    let headers = [
        ("svix-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk".to_string()),
        ("svix-timestamp", "1649367553".to_string()),
        (
            "svix-signature",
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=".to_string(),
        ),
    ];
    let body = r#"{"email":"test@example.com","username":"test_user"}"#;
    // The signature is accepted; the body is not a Clerk event, so it is refused after
    // verification, and not stored.
    let (status, err) = post_raw(&c, &app.edge, &headers, body).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("webhook_payload_invalid"))
    );
    // Six minutes later the same request is a replay.
    clock.advance_ms(360_000);
    let (status, err) = post_raw(&c, &app.edge, &headers, body).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (401, Some("webhook_timestamp_out_of_range"))
    );
    assert_eq!(inbox_count(&app).await, 0);
    app.stop().await;
}

/// `now - ts` overflows i64 for a timestamp 2^63 s in the past: a correctly signed
/// message so stamped was accepted by release builds and panicked debug builds.
#[tokio::test]
async fn a_signed_timestamp_2_pow_63_seconds_old_is_refused_not_a_panic() {
    let (db, _dir) = store_url(Db::Pg).await;
    let clock = ManualClock::new(T0_MS);
    let app = start(&db, clock.clone(), |_| {}).await;
    let c = support::http();
    let now_s = (T0_MS / 1000) as i64;
    let body = envelope("user.updated", user_json("user_old", "Old", 5), T0_MS);
    for ts in [now_s.wrapping_add(i64::MIN), i64::MIN, i64::MAX] {
        let (status, err) = send(&c, &app.edge, SECRET, "msg_2pow63", ts, &body).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (401, Some("webhook_timestamp_out_of_range")),
            "ts {ts}"
        );
    }
    assert_eq!(inbox_count(&app).await, 0);
    // The process is alive and still accepts a good message.
    let (status, _) = send(&c, &app.edge, SECRET, "msg_now", now_s, &body).await;
    assert_eq!(status, 200);
    app.stop().await;
}

async fn refusals(db: Db) {
    let (url, _dir) = store_url(db).await;
    let clock = ManualClock::new(T0_MS);
    let app = start(&url, clock.clone(), |c| c.webhooks.max_body_bytes = 4096).await;
    let c = support::http();
    let now_s = (T0_MS / 1000) as i64;
    let body = envelope("user.updated", user_json("user_r", "R", 5), T0_MS);
    let good = |id: &str, ts: i64| svix::sign(SECRET, id, ts, body.as_bytes()).unwrap();
    let hdrs = |id: &str, ts: i64, sig: String| {
        vec![
            ("svix-id", id.to_string()),
            ("svix-timestamp", ts.to_string()),
            ("svix-signature", sig),
        ]
    };
    let mut flipped = body.clone().into_bytes();
    flipped[10] ^= 1;
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "flipped byte",
            hdrs("msg_a", now_s, good("msg_a", now_s)),
            flipped,
            401,
            "webhook_signature_invalid",
        ),
        (
            "old timestamp",
            hdrs("msg_b", now_s - 301, good("msg_b", now_s - 301)),
            body.clone().into_bytes(),
            401,
            "webhook_timestamp_out_of_range",
        ),
        (
            "future timestamp",
            hdrs("msg_c", now_s + 301, good("msg_c", now_s + 301)),
            body.clone().into_bytes(),
            401,
            "webhook_timestamp_out_of_range",
        ),
        (
            "missing signature",
            hdrs("msg_d", now_s, good("msg_d", now_s))[..2].to_vec(),
            body.clone().into_bytes(),
            400,
            "webhook_headers_missing",
        ),
        (
            "missing id",
            hdrs("msg_e", now_s, good("msg_e", now_s))[1..].to_vec(),
            body.clone().into_bytes(),
            400,
            "webhook_headers_missing",
        ),
        (
            "bad base64",
            hdrs("msg_f", now_s, "v1,@@not base64@@".into()),
            body.clone().into_bytes(),
            401,
            "webhook_signature_invalid",
        ),
        (
            "another message's signature",
            hdrs("msg_g", now_s, good("msg_other", now_s)),
            body.clone().into_bytes(),
            401,
            "webhook_signature_invalid",
        ),
        (
            "wrong secret",
            hdrs(
                "msg_h",
                now_s,
                svix::sign(SECRET_2, "msg_h", now_s, body.as_bytes()).unwrap(),
            ),
            body.clone().into_bytes(),
            401,
            "webhook_signature_invalid",
        ),
        (
            "timestamp not a number",
            hdrs("msg_i", now_s, good("msg_i", now_s))
                .into_iter()
                .map(|(k, v)| {
                    if k == "svix-timestamp" {
                        (k, "soon".to_string())
                    } else {
                        (k, v)
                    }
                })
                .collect(),
            body.clone().into_bytes(),
            400,
            "webhook_headers_invalid",
        ),
        (
            "too large",
            hdrs("msg_j", now_s, good("msg_j", now_s)),
            vec![b' '; 5000],
            413,
            "webhook_body_too_large",
        ),
    ];
    for (what, headers, body, status, code) in cases {
        let (got, err) = post_raw(&c, &app.edge, &headers, body).await;
        assert_eq!((got, err["code"].as_str()), (status, Some(code)), "{what}");
    }
    // A correctly signed body that is not an event.
    let junk = r#"{"hello": "world"}"#;
    let (got, err) = send(&c, &app.edge, SECRET, "msg_k", now_s, junk).await;
    assert_eq!(
        (got, err["code"].as_str()),
        (400, Some("webhook_payload_invalid"))
    );
    assert_eq!(inbox_count(&app).await, 0, "nothing refused is stored");

    // The same message, correctly signed, is stored.
    let (got, _) = send(&c, &app.edge, SECRET, "msg_ok", now_s, &body).await;
    assert_eq!(got, 200);
    assert_eq!(inbox_count(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn refused_messages_are_not_stored_postgres() {
    refusals(Db::Pg).await;
}

#[tokio::test]
async fn refused_messages_are_not_stored_sqlite() {
    refusals(Db::Sqlite).await;
}

#[tokio::test]
async fn without_a_signing_secret_the_endpoint_answers_503() {
    let (db, _dir) = store_url(Db::Pg).await;
    let app = start(&db, ManualClock::new(T0_MS), |c| {
        c.clerk.webhook_signing_secret = None
    })
    .await;
    let body = envelope("user.updated", user_json("user_u", "U", 5), T0_MS);
    let (status, err) = send(
        &support::http(),
        &app.edge,
        SECRET,
        "msg_u",
        (T0_MS / 1000) as i64,
        &body,
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (503, Some("webhooks_unconfigured"))
    );
    assert_eq!(inbox_count(&app).await, 0);
    app.stop().await;
}

async fn duplicates_and_variants(db: Db) {
    let (url, _dir) = store_url(db).await;
    let clock = ManualClock::new(T0_MS);
    let app = start(&url, clock.clone(), |c| {
        // Rotation: both secrets are accepted.
        c.clerk.webhook_signing_secret = Some(Secret::new(format!("{SECRET},{SECRET_2}")));
    })
    .await;
    let c = support::http();
    let now_s = (T0_MS / 1000) as i64;
    let body = envelope("user.created", user_json("user_dup", "Dup", 10), T0_MS);
    let (s1, b1) = send(&c, &app.edge, SECRET, "msg_dup", now_s, &body).await;
    // Redelivered later, signed with the other secret and a fresh timestamp.
    clock.advance_ms(30_000);
    let (s2, b2) = send(&c, &app.edge, SECRET_2, "msg_dup", now_s + 30, &body).await;
    assert_eq!((s1, b1["duplicate"].as_bool()), (200, Some(false)));
    assert_eq!((s2, b2["duplicate"].as_bool()), (200, Some(true)));
    assert_eq!(inbox_count(&app).await, 1);

    // Standard Webhooks header names, several signatures in one header.
    let body2 = envelope("user.created", user_json("user_std", "Std", 10), T0_MS);
    let ts = now_s + 30;
    let sig = svix::sign(SECRET_2, "msg_std", ts, body2.as_bytes()).unwrap();
    let (s3, _) = post_raw(
        &c,
        &app.edge,
        &[
            ("webhook-id", "msg_std".to_string()),
            ("webhook-timestamp", ts.to_string()),
            (
                "webhook-signature",
                format!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v1a,xyz {sig}"),
            ),
        ],
        body2,
    )
    .await;
    assert_eq!(s3, 200);
    assert_eq!(inbox_count(&app).await, 2);
    drained(&app, Duration::from_secs(10)).await;
    let done = app
        .state
        .store()
        .inbox_list(Some(InboxState::Done), 10)
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|i| i.attempts == 1));
    for id in ["user_dup", "user_std"] {
        let u = app
            .state
            .store()
            .user_by_clerk_id(id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            u.email.as_deref(),
            Some(format!("{id}@example.com").as_str())
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_duplicate_message_id_is_acknowledged_and_stored_once_postgres() {
    duplicates_and_variants(Db::Pg).await;
}

#[tokio::test]
async fn a_duplicate_message_id_is_acknowledged_and_stored_once_through_pgbouncer() {
    duplicates_and_variants(Db::Pooler).await;
}

#[tokio::test]
async fn a_duplicate_message_id_is_acknowledged_and_stored_once_sqlite() {
    duplicates_and_variants(Db::Sqlite).await;
}

async fn out_of_order(db: Db) {
    let (url, _dir) = store_url(db).await;
    let app = start(&url, ManualClock::new(T0_MS), |_| {}).await;
    let c = support::http();
    let now_s = (T0_MS / 1000) as i64;
    let v2 = envelope(
        "user.updated",
        user_json("user_o", "Second", T0_MS as i64 - 1_000),
        T0_MS,
    );
    let v1 = envelope(
        "user.updated",
        user_json("user_o", "First", T0_MS as i64 - 2_000),
        T0_MS,
    );
    assert_eq!(
        send(&c, &app.edge, SECRET, "msg_v2", now_s, &v2).await.0,
        200
    );
    drained(&app, Duration::from_secs(10)).await;
    assert_eq!(
        send(&c, &app.edge, SECRET, "msg_v1", now_s, &v1).await.0,
        200
    );
    drained(&app, Duration::from_secs(10)).await;
    let u = app
        .state
        .store()
        .user_by_clerk_id("user_o")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (u.name.as_deref(), u.clerk_updated_at),
        (Some("Second"), T0_MS as i64 - 1_000)
    );
    // Both are done: the older one applied as a no-op.
    let done = app
        .state
        .store()
        .inbox_list(Some(InboxState::Done), 10)
        .await
        .unwrap();
    assert_eq!(done.len(), 2);

    // Deletion is final: even a deletion stamped before the row's version deletes it
    // (Clerk never reuses an id), and a later-stamped update does not bring it back.
    let del_old = envelope(
        "user.deleted",
        json!({"object": "user", "id": "user_o", "deleted": true}),
        T0_MS - 1_500,
    );
    let del_new = envelope(
        "user.deleted",
        json!({"object": "user", "id": "user_o", "deleted": true}),
        T0_MS,
    );
    assert_eq!(
        send(&c, &app.edge, SECRET, "msg_d1", now_s, &del_old)
            .await
            .0,
        200
    );
    drained(&app, Duration::from_secs(10)).await;
    let u = app
        .state
        .store()
        .user_by_clerk_id("user_o")
        .await
        .unwrap()
        .unwrap();
    let deleted_at = u.deleted_at;
    assert!(deleted_at.is_some(), "{u:?}");
    assert_eq!(
        send(&c, &app.edge, SECRET, "msg_d2", now_s, &del_new)
            .await
            .0,
        200
    );
    let later = envelope(
        "user.updated",
        user_json("user_o", "Revived", T0_MS as i64 + 60_000),
        T0_MS + 60_000,
    );
    assert_eq!(
        send(&c, &app.edge, SECRET, "msg_v3", now_s, &later).await.0,
        200
    );
    drained(&app, Duration::from_secs(10)).await;
    let u = app
        .state
        .store()
        .user_by_clerk_id("user_o")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(u.deleted_at, deleted_at, "{u:?}");
    assert_eq!(u.name.as_deref(), Some("Second"));
    app.stop().await;
}

#[tokio::test]
async fn an_older_update_delivered_later_does_not_overwrite_postgres() {
    out_of_order(Db::Pg).await;
}

#[tokio::test]
async fn an_older_update_delivered_later_does_not_overwrite_through_pgbouncer() {
    out_of_order(Db::Pooler).await;
}

#[tokio::test]
async fn an_older_update_delivered_later_does_not_overwrite_sqlite() {
    out_of_order(Db::Sqlite).await;
}

async fn poisoned(db: Db) {
    let (url, _dir) = store_url(db).await;
    let clock = ManualClock::new(T0_MS);
    let app = start(&url, clock.clone(), |c| {
        c.webhooks.max_attempts = 3;
        c.webhooks.backoff_base_ms = 1_000;
        c.webhooks.backoff_max_ms = 1_000;
    })
    .await;
    let c = support::http();
    let now_s = (T0_MS / 1000) as i64;
    // A user.updated whose data is not a user.
    let body = envelope(
        "user.updated",
        json!({"object": "user", "first_name": 7}),
        T0_MS,
    );
    assert_eq!(
        send(&c, &app.edge, SECRET, "msg_poison", now_s, &body)
            .await
            .0,
        200
    );
    let store = app.state.store().clone();
    let until_dead = || async {
        // Retries come due only when the (manual) clock says so.
        clock.advance_ms(1_000);
        store.inbox_get("msg_poison").await.unwrap().unwrap().state == InboxState::Dead
    };
    assert!(support::eventually(Duration::from_secs(10), until_dead).await);
    let row = store.inbox_get("msg_poison").await.unwrap().unwrap();
    assert_eq!(row.attempts, 3);
    assert!(
        row.last_error.as_deref().unwrap().starts_with("user:"),
        "{row:?}"
    );

    // The operations API lists it, replays it (back to pending, attempts reset) and it
    // dies again, since nothing fixed it.
    let api = &app.api;
    let list: Value = support::get_json(&c, format!("{api}/v1/webhooks?state=dead&limit=10")).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], "msg_poison");
    assert_eq!(items[0]["type"], "user.updated");
    assert_eq!(items[0]["state"], "dead");
    assert_eq!(items[0]["attempts"], 3);
    assert!(items[0]["received_at"].is_i64());
    assert!(items[0]["last_error"].is_string());

    let r = c
        .post(format!("{api}/v1/webhooks/msg_poison/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let row = store.inbox_get("msg_poison").await.unwrap().unwrap();
    assert!(
        row.state == InboxState::Pending && row.attempts <= 1,
        "replayed: {row:?}"
    );
    assert!(support::eventually(Duration::from_secs(10), until_dead).await);
    assert_eq!(
        store
            .inbox_get("msg_poison")
            .await
            .unwrap()
            .unwrap()
            .attempts,
        3
    );

    // Bulk replay of the dead.
    let r: Value = c
        .post(format!("{api}/v1/webhooks/replay?state=dead"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["replayed"], 1);
    let r = c
        .post(format!("{api}/v1/webhooks/replay?state=done"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(format!("{api}/v1/webhooks/msg_nope/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("{api}/v1/webhooks?state=weird"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(inbox_count(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_poisoned_event_goes_dead_and_can_be_replayed_postgres() {
    poisoned(Db::Pg).await;
}

#[tokio::test]
async fn a_poisoned_event_goes_dead_and_can_be_replayed_through_pgbouncer() {
    poisoned(Db::Pooler).await;
}

#[tokio::test]
async fn a_poisoned_event_goes_dead_and_can_be_replayed_sqlite() {
    poisoned(Db::Sqlite).await;
}

#[tokio::test]
async fn effects_publish_events_for_sessions_organizations_and_unknown_types() {
    let (db, _dir) = store_url(Db::Pg).await;
    let app = start(&db, ManualClock::new(T0_MS), |_| {}).await;
    let mut events = app.state.events().subscribe();
    let c = support::http();
    let now_s = (T0_MS / 1000) as i64;
    let msgs = [
        (
            "msg_s",
            envelope(
                "session.revoked",
                json!({"object": "session", "id": "sess_1", "user_id": "user_1", "status": "revoked", "expire_at": T0_MS + 7 * 24 * 3_600_000}),
                T0_MS,
            ),
        ),
        (
            "msg_m",
            envelope(
                "organizationMembership.updated",
                json!({"object": "organization_membership", "id": "orgmem_1", "role": "org:admin",
                       "organization": {"object": "organization", "id": "org_1"},
                       "public_user_data": {"user_id": "user_2"}}),
                T0_MS,
            ),
        ),
        (
            "msg_x",
            envelope(
                "email.created",
                json!({"object": "email", "id": "ema_1"}),
                T0_MS,
            ),
        ),
    ];
    for (id, body) in &msgs {
        assert_eq!(send(&c, &app.edge, SECRET, id, now_s, body).await.0, 200);
    }
    drained(&app, Duration::from_secs(10)).await;
    let mut got = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
        got.push(e);
    }
    let s = got.iter().find(|e| e.kind == "session.revoked").unwrap();
    assert_eq!(s.subject, "sess_1");
    // Bounded: a week-long session is refused for at most a day.
    assert_eq!(s.detail["until_ms"], T0_MS + 24 * 3_600_000);
    let m = got
        .iter()
        .find(|e| e.kind == "organizationMembership.updated")
        .unwrap();
    assert_eq!(
        (m.subject.as_str(), &m.detail["user_id"]),
        ("org_1", &json!("user_2"))
    );
    assert!(!got.iter().any(|e| e.kind == "email.created"));
    // Unknown types are done and kept for audit.
    let x = app.state.store().inbox_get("msg_x").await.unwrap().unwrap();
    assert_eq!(x.state, InboxState::Done);
    app.stop().await;
}

#[tokio::test]
async fn the_emulators_webhooks_update_and_delete_the_local_user_and_its_cache() {
    let (emu, running) = support::emulator(5).await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |c| {
        c.clerk.webhook_signing_secret = Some(Secret::new(SECRET));
        c.webhooks.poll_interval_ms = 50;
    })
    .await;
    emu.set_knobs(frontdesk_emulator::Knobs {
        webhook_url: Some(Some(format!("{}/_frontdesk/webhooks/clerk", app.edge))),
        webhook_secret: Some(Some(SECRET.to_string())),
        ..Default::default()
    });
    let c = support::http();
    let id = frontdesk_emulator::Emulator::seed_user_id(1);
    let get_user = || async {
        let r = c
            .get(format!("{}/v1/users/{id}", app.api))
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    // Warm: cached now.
    let (status, before) = get_user().await;
    assert_eq!(status, 200);
    assert_ne!(before["first_name"], "Renamed");
    let calls = emu.stats().total;
    assert_eq!(get_user().await.0, 200);
    assert_eq!(emu.stats().total, calls, "served from the cache");

    emu.update_user(&id, json!({"first_name": "Renamed"}))
        .unwrap();
    emu.webhooks_settled().await;
    drained(&app, Duration::from_secs(10)).await;
    let deliveries = emu.webhook_deliveries();
    assert!(
        deliveries
            .iter()
            .all(|d| d.status == frontdesk_emulator::DeliveryStatus::Delivered),
        "{deliveries:?}"
    );
    let (_, after) = get_user().await;
    assert_eq!(
        after["first_name"], "Renamed",
        "the cached user was invalidated"
    );
    let row = app
        .state
        .store()
        .user_by_clerk_id(&id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        row.name.as_deref().unwrap().starts_with("Renamed"),
        "{row:?}"
    );
    assert_eq!(row.deleted_at, None);

    // The user's own session: /me answers (and caches the context).
    let jwt = emu
        .mint_session(frontdesk_emulator::MintSession {
            user_id: id.clone(),
            org_id: None,
            ttl_s: Some(600),
            azp: None,
        })
        .unwrap()
        .jwt;
    let me = || async {
        let r = c
            .get(format!("{}/_frontdesk/me", app.edge))
            .bearer_auth(&jwt)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    assert_eq!(me().await.0, 200);

    // A session revoked in Clerk is refused here.
    let minted = emu
        .mint_session(frontdesk_emulator::MintSession {
            user_id: id.clone(),
            org_id: None,
            ttl_s: None,
            azp: None,
        })
        .unwrap();
    emu.revoke_session(&minted.sid).unwrap();
    emu.webhooks_settled().await;
    drained(&app, Duration::from_secs(10)).await;
    assert!(app.state.verifier().unwrap().is_revoked(&minted.sid));

    // Deleted in Clerk: the local row is soft-deleted and the cache forgets the user.
    let r = c
        .delete(format!("{}/v1/users/{id}", running.url))
        .bearer_auth(emu.secret_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    emu.webhooks_settled().await;
    drained(&app, Duration::from_secs(10)).await;
    let row = app
        .state
        .store()
        .user_by_clerk_id(&id)
        .await
        .unwrap()
        .unwrap();
    assert!(row.deleted_at.is_some(), "{row:?}");
    assert_eq!(get_user().await.0, 404, "no stale cached user");
    let (status, err) = me().await;
    assert_eq!((status, err["code"].as_str()), (401, Some("user_deleted")));
    let done = app
        .state
        .store()
        .inbox_list(Some(InboxState::Done), 10)
        .await
        .unwrap();
    let kinds: Vec<&str> = done.iter().map(|i| i.kind.as_str()).collect();
    for k in ["user.updated", "session.revoked", "user.deleted"] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }
    app.stop().await;
    running.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------
// Crash safety with the real binary.

const BIN: &str = env!("CARGO_BIN_EXE_frontdesk");

pub(crate) struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `frontdesk serve` on `db` and returns it with its edge URL.
async fn spawn_serve(
    db: &str,
    clerk: &str,
    secret_key: &str,
    extra: &[(&str, &str)],
) -> (Killed, String) {
    let (child, edge, _api) = spawn_serve_addrs(db, clerk, secret_key, extra).await;
    (child, edge)
}

/// Starts `frontdesk serve` on `db` and returns it with its edge and api URLs.
pub(crate) async fn spawn_serve_addrs(
    db: &str,
    clerk: &str,
    secret_key: &str,
    extra: &[(&str, &str)],
) -> (Killed, String, String) {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("CLERK_")
            || k.starts_with("FRONTDESK_")
            || k == "DATABASE_URL"
            || k == "REDIS_URL"
        {
            cmd.env_remove(k);
        }
    }
    cmd.args(["serve"])
        .env("DATABASE_URL", db)
        .env("CLERK_SECRET_KEY", secret_key)
        .env("CLERK_API_URL", clerk)
        .env("CLERK_WEBHOOK_SIGNING_SECRET", SECRET)
        .env("FRONTDESK_EDGE_ADDR", "127.0.0.1:0")
        .env("FRONTDESK_API_ADDR", "127.0.0.1:0")
        .env("FRONTDESK_LOG", "warn")
        .env("FRONTDESK_WEBHOOKS__LEASE_MS", "1000")
        .env("FRONTDESK_WEBHOOKS__POLL_INTERVAL_MS", "50")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = Killed(cmd.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        // Keep draining so the child never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("frontdesk ready: edge ") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(rest.to_string());
                }
            }
        }
    });
    let line = tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .expect("serve starts")
        .expect("serve prints its addresses");
    // "http://EDGE  api http://API"
    let words: Vec<&str> = line.split_whitespace().collect();
    let edge = words.first().copied().unwrap_or("").to_string();
    let api = words.get(2).copied().unwrap_or("").to_string();
    (child, edge, api)
}

async fn counts(pool: &sqlx::PgPool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'done') FROM webhook_inbox",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn killed_mid_processing_and_restarted_every_event_is_applied_once() {
    const USERS: usize = 1_000;
    const VERSIONS: usize = 5;
    let (emu, running) = support::emulator(1).await;
    let db = support::fresh_pg_database().await;
    // First life: processing throttled so the kill lands mid-queue.
    let (mut first, edge) = spawn_serve(
        &db,
        &running.url,
        emu.secret_key(),
        &[("FRONTDESK_WEBHOOKS__RATE_PER_S", "300")],
    )
    .await;

    // 5,000 events: every user updated five times, delivered in a scrambled order.
    let mut events: Vec<(String, String)> = Vec::with_capacity(USERS * VERSIONS);
    for v in 1..=VERSIONS {
        for u in 0..USERS {
            let id = format!("user_crash_{u:04}");
            let body = envelope(
                "user.updated",
                user_json(&id, &format!("v{v}"), 1_000 + v as i64),
                T0_MS,
            );
            events.push((format!("msg_{u:04}_{v}"), body));
        }
    }
    events.sort_by_key(|(id, _)| {
        // A fixed scramble: later versions often arrive first.
        id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        })
    });
    let c = support::http();
    let post_all = |edge: String, take: usize| {
        let c = c.clone();
        let events: Vec<_> = events.iter().take(take).cloned().collect();
        async move {
            futures::stream::iter(events)
                .map(|(id, body)| {
                    let c = c.clone();
                    let edge = edge.clone();
                    async move {
                        let now_s = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs() as i64;
                        send(&c, &edge, SECRET, &id, now_s, &body).await.0
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<u16>>()
                .await
        }
    };
    let started = Instant::now();
    let statuses = post_all(edge.clone(), events.len()).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every event acknowledged"
    );
    let ingest = started.elapsed();

    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let (_, _, done_before) = counts(&pool).await;
    // SIGKILL: no graceful shutdown, leases left behind.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let (total, pending_at_kill, _) = counts(&pool).await;
    assert_eq!(total, (USERS * VERSIONS) as i64);
    assert!(
        pending_at_kill > 0,
        "the kill landed mid-processing (done before: {done_before})"
    );

    // Second life: resumes what was pending (leased rows after their lease), and Svix's
    // redeliveries (a sample, as Svix retries what it saw no 2xx for) are acknowledged
    // without new rows.
    let (second, edge2) = spawn_serve(&db, &running.url, emu.secret_key(), &[]).await;
    let statuses = post_all(edge2, 500).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let ok = support::eventually(Duration::from_secs(60), || async {
        counts(&pool).await.1 == 0
    })
    .await;
    assert!(
        ok,
        "inbox drained after the restart: {:?}",
        counts(&pool).await
    );
    let (total, pending, done) = counts(&pool).await;
    assert_eq!(
        (total, pending, done),
        ((USERS * VERSIONS) as i64, 0, (USERS * VERSIONS) as i64)
    );
    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT clerk_id, name, clerk_updated_at FROM users WHERE clerk_id LIKE 'user_crash_%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), USERS);
    for (id, name, version) in rows {
        assert_eq!(
            (name.as_deref(), version),
            (
                Some(format!("v{VERSIONS}").as_str()),
                1_000 + VERSIONS as i64
            ),
            "{id} equals its last update"
        );
    }
    eprintln!(
        "crash test: {} events acknowledged in {:?}; {done_before} applied before the kill, {pending_at_kill} pending after it",
        USERS * VERSIONS,
        ingest
    );
    drop(second);
    pool.close().await;
    running.shutdown().await.unwrap();
}

/// Not a timed test: a measurement for the benchmark harness. Verified events/s into
/// the Postgres inbox (workers off, so only ingest is measured) and the p99 time to
/// acknowledge. `cargo test -p frontdesk --test it --release webhooks::ingest_throughput
/// -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn ingest_throughput() {
    const N: usize = 5_000;
    const CONCURRENCY: usize = 32;
    let (db, _dir) = store_url(Db::Pg).await;
    let app = start(&db, frontdesk::clock::system(), |c| {
        c.webhooks.workers = 0;
        c.database_max_connections = 16;
    })
    .await;
    let c = support::http();
    let bodies: Vec<(String, String)> = (0..N)
        .map(|i| {
            let id = format!("user_bench_{i}");
            (
                format!("msg_bench_{i}"),
                envelope("user.updated", user_json(&id, "Bench", 1_000), T0_MS),
            )
        })
        .collect();
    let edge = app.edge.clone();
    let started = Instant::now();
    let mut lat: Vec<Duration> = futures::stream::iter(bodies)
        .map(|(id, body)| {
            let c = c.clone();
            let edge = edge.clone();
            async move {
                let now_s = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let sig = svix::sign(SECRET, &id, now_s, body.as_bytes()).unwrap();
                let t = Instant::now();
                let (s, _) = post_raw(
                    &c,
                    &edge,
                    &[
                        ("svix-id", id),
                        ("svix-timestamp", now_s.to_string()),
                        ("svix-signature", sig),
                    ],
                    body,
                )
                .await;
                assert_eq!(s, 200);
                t.elapsed()
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let elapsed = started.elapsed();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    assert_eq!(inbox_count(&app).await, N as i64);
    println!(
        "webhook ingest (postgres, {CONCURRENCY} concurrent): {N} events in {elapsed:?} = {:.0} events/s; ack p50 {:?} p99 {:?} max {:?}",
        N as f64 / elapsed.as_secs_f64(),
        p(0.50),
        p(0.99),
        lat[lat.len() - 1]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_cli_lists_and_replays_over_the_api_listener() {
    let (db, _dir) = store_url(Db::Pg).await;
    // No workers: the message stays where the test puts it.
    let app = start(&db, ManualClock::new(T0_MS), |c| c.webhooks.workers = 0).await;
    let body = envelope("user.updated", user_json("user_cli", "Cli", 5), T0_MS);
    let now_s = (T0_MS / 1000) as i64;
    let (status, _) = send(&support::http(), &app.edge, SECRET, "msg_cli", now_s, &body).await;
    assert_eq!(status, 200);
    let run = |args: Vec<String>| async move {
        let mut cmd = Command::new(BIN);
        cmd.args(&args).env_remove("FRONTDESK_CONFIG");
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let api = app.api.clone();
    let args = |a: &[&str]| {
        let mut v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        v.extend(["--api".to_string(), api.clone()]);
        v
    };
    let (ok, out, err) = run(args(&["webhooks", "list", "--state", "pending"])).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("msg_cli") && out.contains("user.updated"),
        "{out}"
    );
    assert!(out.contains("1 message(s)"), "{out}");
    let (ok, out, err) = run(args(&["webhooks", "replay", "--id", "msg_cli"])).await;
    assert!(ok, "{err}");
    assert!(out.contains("1 message(s) back in the queue"), "{out}");
    let (ok, out, err) = run(args(&["webhooks", "replay", "--state", "dead"])).await;
    assert!(ok, "{err}");
    assert!(out.contains("0 message(s) back in the queue"), "{out}");
    let (ok, _, err) = run(args(&["webhooks", "replay", "--id", "msg_none"])).await;
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, _, _) = run(args(&["webhooks", "replay"])).await;
    assert!(!ok, "replay needs --id or --state");
    app.stop().await;
}

/// Deletion is final: an update stamped later than the deletion (a replay, a clock
/// skew, a delivery reordered by Svix) leaves the user deleted, and `/me` says so.
#[tokio::test]
async fn an_update_stamped_after_the_deletion_leaves_the_user_deleted() {
    let (emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |c| {
        c.clerk.webhook_signing_secret = Some(Secret::new(SECRET));
        c.webhooks.poll_interval_ms = 20;
    })
    .await;
    let c = support::http();
    let id = frontdesk_emulator::Emulator::seed_user_id(2);
    let jwt = emu
        .mint_session(frontdesk_emulator::MintSession {
            user_id: id.clone(),
            org_id: None,
            ttl_s: Some(600),
            azp: None,
        })
        .unwrap()
        .jwt;
    let me = || async {
        let r = c
            .get(format!("{}/_frontdesk/me", app.edge))
            .bearer_auth(&jwt)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    assert_eq!(me().await.0, 200);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let now_s = (now_ms / 1000) as i64;
    let deleted = envelope(
        "user.deleted",
        json!({"object": "user", "id": id, "deleted": true}),
        now_ms,
    );
    assert_eq!(
        send(&c, &app.edge, SECRET, "msg_del", now_s, &deleted)
            .await
            .0,
        200
    );
    drained(&app, Duration::from_secs(10)).await;
    assert_eq!(me().await.1["code"], "user_deleted");
    // An update and a create stamped an hour after the deletion.
    let mut user = emu.user(&id).unwrap();
    user["updated_at"] = json!(now_ms + 3_600_000);
    user["first_name"] = json!("Revived");
    for (msg, kind) in [("msg_upd", "user.updated"), ("msg_cre", "user.created")] {
        let body = envelope(kind, user.clone(), now_ms + 3_600_000);
        assert_eq!(send(&c, &app.edge, SECRET, msg, now_s, &body).await.0, 200);
    }
    drained(&app, Duration::from_secs(10)).await;
    let (status, err) = me().await;
    assert_eq!((status, err["code"].as_str()), (401, Some("user_deleted")));
    let row = app
        .state
        .store()
        .user_by_clerk_id(&id)
        .await
        .unwrap()
        .unwrap();
    assert!(row.deleted_at.is_some(), "{row:?}");
    assert_ne!(row.name.as_deref(), Some("Revived"));
    app.stop().await;
    running.shutdown().await.unwrap();
}

/// Retention: a processed message's payload (a whole Clerk user) is purged once
/// `retention_ms` has passed on the injected clock since it was applied; dead letters
/// stay until an operator purges them (API and CLI) or replays them.
#[tokio::test]
async fn done_messages_are_purged_after_the_retention_and_dead_ones_only_on_request() {
    const DAY_MS: u64 = 24 * 60 * 60 * 1000;
    let db = support::fresh_pg_database().await;
    let clock = ManualClock::new(T0_MS);
    let app = start(&db, clock.clone(), |c| {
        c.webhooks.max_attempts = 1;
        c.webhooks.purge_interval_ms = 20;
    })
    .await;
    assert_eq!(
        app.state.config().webhooks.retention_ms,
        7 * DAY_MS,
        "default"
    );
    let c = support::http();
    let now_s = (T0_MS / 1000) as i64;
    let good = envelope("user.updated", user_json("user_keep", "Kept", 5), T0_MS);
    let poison = envelope(
        "user.updated",
        json!({"object": "user", "first_name": 7}),
        T0_MS,
    );
    assert_eq!(
        send(&c, &app.edge, SECRET, "msg_good", now_s, &good)
            .await
            .0,
        200
    );
    assert_eq!(
        send(&c, &app.edge, SECRET, "msg_bad", now_s, &poison)
            .await
            .0,
        200
    );
    drained(&app, Duration::from_secs(10)).await;
    let store = app.state.store().clone();
    let state_of = |id: &'static str| {
        let store = store.clone();
        async move { store.inbox_get(id).await.unwrap().map(|m| m.state) }
    };
    assert_eq!(state_of("msg_good").await, Some(InboxState::Done));
    assert_eq!(state_of("msg_bad").await, Some(InboxState::Dead));

    // A millisecond short of the retention: nothing to purge.
    clock.advance_ms(7 * DAY_MS - 1);
    assert_eq!(
        frontdesk::webhooks::retention::purge_expired(&app.state.webhooks_state())
            .await
            .unwrap(),
        0
    );
    assert_eq!(state_of("msg_good").await, Some(InboxState::Done));
    // Past it: the background loop purges the done message, never the dead one.
    clock.advance_ms(2);
    let purged = support::eventually(Duration::from_secs(10), || async {
        state_of("msg_good").await.is_none()
    })
    .await;
    assert!(purged, "the done message is purged by the loop");
    clock.advance_ms(365 * DAY_MS);
    assert_eq!(
        frontdesk::webhooks::retention::purge_expired(&app.state.webhooks_state())
            .await
            .unwrap(),
        0
    );
    assert_eq!(state_of("msg_bad").await, Some(InboxState::Dead));

    // Explicit purges: pending is refused, dead goes.
    let r = c
        .post(format!("{}/v1/webhooks/purge?state=pending", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_state");
    assert_eq!(state_of("msg_bad").await, Some(InboxState::Dead));
    let mut cmd = Command::new(BIN);
    cmd.args(["webhooks", "purge", "--state", "dead", "--api", &app.api])
        .env_remove("FRONTDESK_CONFIG")
        .env_remove("FRONTDESK_API_TOKEN");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 dead message(s) purged"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(inbox_count(&app).await, 0);
    let r: Value = c
        .post(format!("{}/v1/webhooks/purge?state=dead", app.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["purged"], 0);
    app.stop().await;
}
