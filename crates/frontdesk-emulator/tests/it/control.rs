use std::time::{Duration, Instant};

use frontdesk_emulator::{Emulator, EmulatorConfig, Knobs, RateLimit};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{SK, clerk_error, read, start, start_with};

#[tokio::test]
async fn missing_or_wrong_bearer_is_401_and_counted() {
    let c = start(2).await;
    let id = Emulator::seed_user_id(0);
    let res = c
        .http
        .get(c.url(&format!("/v1/users/{id}")))
        .send()
        .await
        .unwrap();
    let (s, body) = read(res).await;
    assert_eq!(s, 401);
    clerk_error(&body, "authentication_invalid");
    let res = c
        .http
        .get(c.url("/v1/users"))
        .bearer_auth("sk_test_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let (s, _) = c.get(&format!("/v1/users/{id}")).await;
    assert_eq!(s, 200);

    let stats = c.emu.stats();
    assert_eq!(stats.get("GET /v1/users/{user_id}"), 2);
    assert_eq!(stats.get("GET /v1/users"), 1);
    assert_eq!(stats.total, 3);
}

#[tokio::test]
async fn stats_are_keyed_by_route_template_and_reset() {
    let c = start(3).await;
    for i in 0..3 {
        c.get(&format!("/v1/users/{}", Emulator::seed_user_id(i)))
            .await;
    }
    c.get("/v1/users?limit=1").await;
    c.get("/v1/users/count").await;
    c.get("/v1/jwks").await;
    let (s, body) = c.get("/v1/no/such/thing").await;
    assert_eq!(s, 404);
    clerk_error(&body, "resource_not_found");
    let res = c.api(Method::PUT, "/v1/users/count").send().await.unwrap();
    let (s, body) = read(res).await;
    assert_eq!(s, 405);
    clerk_error(&body, "method_not_allowed");

    let (s, stats) = read(c.http.get(c.url("/__emulator/stats")).send().await.unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(
        stats,
        json!({"calls": {
            "GET /v1/users/{user_id}": 3,
            "GET /v1/users": 1,
            "GET /v1/users/count": 1,
            "GET /v1/jwks": 1,
            "GET {unmatched}": 1,
            "PUT /v1/users/count": 1,
        }, "total": 8, "max_in_window": 0, "rate_limited": 0, "user_rate_limited": 0})
    );
    // Control calls are not counted.
    assert_eq!(c.emu.stats().total, 8);

    let res = c
        .http
        .post(c.url("/__emulator/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let stats = c.emu.stats();
    assert_eq!(stats.total, 0);
    assert!(stats.calls.is_empty());
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_and_reset_reopens() {
    let c = start_with(EmulatorConfig {
        secret_key: SK.into(),
        users: 2,
        rate_limit: Some(RateLimit {
            requests: 3,
            window_ms: 60_000,
        }),
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        let (s, _) = c.get("/v1/users/count").await;
        assert_eq!(s, 200);
    }
    let res = c.api(Method::GET, "/v1/users/count").send().await.unwrap();
    assert_eq!(res.status().as_u16(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let (_, body) = read(res).await;
    clerk_error(&body, "too_many_requests");
    assert_eq!(
        c.emu.stats().get("GET /v1/users/count"),
        4,
        "429s are counted"
    );
    let stats = c.emu.stats();
    assert_eq!(
        (stats.rate_limited, stats.max_in_window),
        (1, 4),
        "{stats:?}"
    );

    c.emu.reset();
    let (s, _) = c.get("/v1/users/count").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn error_rate_one_fails_every_call_with_clerk_500() {
    let c = start(2).await;
    c.emu.set_knobs(Knobs {
        error_rate: Some(1.0),
        ..Default::default()
    });
    for _ in 0..3 {
        let (s, body) = c.get("/v1/users").await;
        assert_eq!(s, 500);
        clerk_error(&body, "internal_clerk_error");
    }
    c.emu.set_knobs(Knobs {
        error_rate: Some(0.0),
        ..Default::default()
    });
    let (s, _) = c.get("/v1/users").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn config_endpoint_reads_and_partially_updates_knobs() {
    let c = start(2).await;
    let post = |body: Value| {
        let req = c.http.post(c.url("/__emulator/config")).json(&body);
        async move { read(req.send().await.unwrap()).await }
    };
    let (s, cfg) =
        post(json!({"latency_ms": 40, "rate_limit": {"requests": 5, "window_ms": 1000}})).await;
    assert_eq!(s, 200);
    assert_eq!(cfg["latency_ms"], 40);
    assert_eq!(cfg["jitter_ms"], 0);
    assert_eq!(cfg["rate_limit"], json!({"requests": 5, "window_ms": 1000}));

    // Latency is applied to /v1 calls (a lower bound, not a timing benchmark).
    let t = Instant::now();
    let (s, _) = c.get("/v1/users/count").await;
    assert_eq!(s, 200);
    assert!(t.elapsed() >= Duration::from_millis(40));

    let (_, cfg) = post(json!({"rate_limit": null, "latency_ms": 0})).await;
    assert_eq!(cfg["rate_limit"], Value::Null);
    assert_eq!(cfg["latency_ms"], 0);

    let (s, body) = post(json!({"error_rate": 2.0})).await;
    assert_eq!(s, 422);
    clerk_error(&body, "form_param_value_invalid");
    let (s, body) =
        post(json!({"webhook_url": "http://127.0.0.1:9/x", "webhook_secret": "nope"})).await;
    assert_eq!(s, 422);
    clerk_error(&body, "form_param_value_invalid");
    let (s, _) = post(json!({"bogus": 1})).await;
    assert_eq!(s, 400);

    let (s, cfg) = post(json!({"webhook_url": "http://127.0.0.1:9/x", "webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})).await;
    assert_eq!(s, 200);
    assert_eq!(cfg["webhook_url"], "http://127.0.0.1:9/x");
    assert_eq!(cfg["webhook_secret_set"], true);
    assert!(
        !cfg.to_string().contains("whsec_"),
        "the secret is never echoed"
    );
    let (_, cfg) = read(
        c.http
            .get(c.url("/__emulator/config"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(cfg["webhook_url"], "http://127.0.0.1:9/x");
    let (_, cfg) = post(json!({"webhook_url": null})).await;
    assert_eq!(cfg["webhook_url"], Value::Null);
}

#[tokio::test]
async fn info_lists_seeded_ids() {
    let c = start(7).await;
    let (s, info) = read(c.http.get(c.url("/__emulator")).send().await.unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(info["users"], 7);
    assert_eq!(info["sample_user_ids"][0], Emulator::seed_user_id(0));
    assert_eq!(info["kid"], c.emu.kid());
}
