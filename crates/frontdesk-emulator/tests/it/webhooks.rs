use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use frontdesk_emulator::{
    DeliveryStatus, Emulator, EmulatorConfig, Knobs, MintSession, WebhookTarget, svix,
};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::common::{SK, read, start_with};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn svix_sign_reproduces_the_official_vectors() {
    assert_eq!(
        svix::sign(
            SECRET,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#
        )
        .unwrap(),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    assert_eq!(
        svix::sign(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            br#"{"email":"test@example.com","username":"test_user"}"#
        )
        .unwrap(),
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );
    assert!(svix::sign("not_whsec", "m", 1, b"").is_err());
}

/// An independent verifier, written from the Svix spec rather than calling `svix::sign`.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (id, ts, sigs) = (h("svix-id"), h("svix-timestamp"), h("svix-signature"));
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    sigs.split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// A receiver on port 0 that fails the first `fail_first` requests with 500.
async fn receiver(fail_first: usize) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/hook",
            post(
                move |State((tx, seen)): State<(
                    mpsc::UnboundedSender<Received>,
                    Arc<AtomicUsize>,
                )>,
                      headers: HeaderMap,
                      body: Bytes| async move {
                    let fail_first = fail_first;
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let _ = tx.send(Received { headers, body });
                    if n < fail_first {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                },
            ),
        )
        .with_state((tx, seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("webhook within 10 s")
        .expect("receiver alive")
}

async fn emulator_with_hook(url: String) -> crate::common::Ctx {
    start_with(EmulatorConfig {
        secret_key: SK.into(),
        users: 5,
        webhook: Some(WebhookTarget {
            url,
            secret: SECRET.into(),
        }),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn user_update_is_delivered_signed_in_clerks_envelope() {
    let (url, mut rx) = receiver(0).await;
    let c = emulator_with_hook(url.clone()).await;
    let id = Emulator::seed_user_id(1);
    let (s, user) = c
        .send(
            Method::PATCH,
            &format!("/v1/users/{id}/metadata"),
            json!({"public_metadata": {"x": 1}}),
        )
        .await;
    assert_eq!(s, 200);

    let got = next(&mut rx).await;
    assert!(
        verify(SECRET, &got.headers, &got.body),
        "signature verifies"
    );
    let msg_id = got.headers["svix-id"].to_str().unwrap().to_owned();
    assert!(msg_id.starts_with("msg_"));
    let ts: i64 = got.headers["svix-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((ts - now).abs() < 60, "svix-timestamp is in seconds");
    assert_eq!(got.headers["content-type"], "application/json");

    let event: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(event["object"], "event");
    assert_eq!(event["type"], "user.updated");
    assert_eq!(event["instance_id"], c.emu.instance_id());
    assert!(
        event["timestamp"].as_i64().unwrap() > 1_600_000_000_000,
        "ms"
    );
    assert_eq!(event["data"], user, "data is the User object");

    // The delivery is listed as delivered.
    let ds = c.emu.webhook_deliveries();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].id, msg_id);
    assert_eq!(ds[0].event_type, "user.updated");
    // The status is recorded right after the receiver answers.
    tokio::time::timeout(Duration::from_secs(10), c.emu.webhooks_settled())
        .await
        .unwrap();
    assert_eq!(
        c.emu.webhook_deliveries()[0].status,
        DeliveryStatus::Delivered
    );
    let (_, listed) = read(
        c.http
            .get(c.url("/__emulator/webhooks"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["data"][0]["status"], "delivered");
    assert_eq!(listed["data"][0]["attempts"], 1);
    assert_eq!(listed["data"][0]["type"], "user.updated");
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_same_message_id() {
    let (url, mut rx) = receiver(2).await;
    let c = emulator_with_hook(url).await;
    let (s, _) = c
        .send(
            Method::POST,
            "/v1/users",
            json!({"email_address": ["hook@example.com"]}),
        )
        .await;
    assert_eq!(s, 200);
    let a = next(&mut rx).await;
    let b = next(&mut rx).await;
    let third = next(&mut rx).await;
    let id = |r: &Received| r.headers["svix-id"].to_str().unwrap().to_owned();
    assert_eq!(id(&a), id(&b));
    assert_eq!(id(&b), id(&third));
    assert!(verify(SECRET, &third.headers, &third.body));
    let event: Value = serde_json::from_slice(&third.body).unwrap();
    assert_eq!(event["type"], "user.created");
    assert_eq!(
        event["data"]["email_addresses"][0]["email_address"],
        "hook@example.com"
    );
}

#[tokio::test]
async fn user_deleted_and_session_revoked_payloads() {
    let (url, mut rx) = receiver(0).await;
    let c = emulator_with_hook(url).await;
    let id = Emulator::seed_user_id(2);

    let m = c
        .emu
        .mint_session(MintSession {
            user_id: id.clone(),
            ..Default::default()
        })
        .unwrap();
    let res = c
        .http
        .post(c.url(&format!("/__emulator/sessions/{}/revoke", m.sid)))
        .send()
        .await
        .unwrap();
    let (s, session) = read(res).await;
    assert_eq!(s, 200);
    assert_eq!(session["status"], "revoked");
    let got = next(&mut rx).await;
    let event: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(event["type"], "session.revoked");
    assert_eq!(event["data"]["object"], "session");
    assert_eq!(event["data"]["id"], m.sid);
    assert_eq!(event["data"]["user_id"], id);
    assert_eq!(event["data"]["status"], "revoked");
    assert_eq!(event["data"]["user"]["id"], id);
    for k in [
        "client_id",
        "last_active_at",
        "expire_at",
        "abandon_at",
        "updated_at",
        "created_at",
    ] {
        assert!(event["data"].get(k).is_some(), "session lacks `{k}`");
    }

    let res = c
        .api(Method::DELETE, &format!("/v1/users/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let got = next(&mut rx).await;
    assert!(verify(SECRET, &got.headers, &got.body));
    let event: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(event["type"], "user.deleted");
    assert_eq!(
        event["data"],
        json!({"object": "user", "id": id, "deleted": true})
    );
}

#[tokio::test]
async fn webhook_target_can_be_set_and_cleared_at_run_time() {
    let (url, mut rx) = receiver(0).await;
    let c = start_with(EmulatorConfig {
        secret_key: SK.into(),
        users: 3,
        ..Default::default()
    })
    .await;
    let id = Emulator::seed_user_id(0);
    c.emu
        .update_user(&id, json!({"first_name": "Before"}))
        .unwrap();
    assert!(
        c.emu.webhook_deliveries().is_empty(),
        "no target, no delivery"
    );

    c.emu
        .try_set_knobs(Knobs {
            webhook_url: Some(Some(url)),
            webhook_secret: Some(Some(SECRET.into())),
            ..Default::default()
        })
        .unwrap();
    c.emu
        .update_user(&id, json!({"first_name": "After"}))
        .unwrap();
    let got = next(&mut rx).await;
    let event: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(event["data"]["first_name"], "After");

    c.emu.set_knobs(Knobs {
        webhook_url: Some(None),
        ..Default::default()
    });
    c.emu
        .update_user(&id, json!({"first_name": "Quiet"}))
        .unwrap();
    assert_eq!(c.emu.webhook_deliveries().len(), 1);
}
