//! The call log: when each authenticated `/v1` call reached the rate limiter, and
//! whether it was answered 429; cleared by reset.

use frontdesk_emulator::{EmulatorConfig, RateLimit, max_in_any_window};
use reqwest::Method;
use serde_json::Value;

use crate::common::{SK, read, start_with};

#[tokio::test]
async fn the_call_log_lists_each_call_in_order_with_its_429s_and_reset_clears_it() {
    let c = start_with(EmulatorConfig {
        secret_key: SK.into(),
        users: 2,
        rate_limit: Some(RateLimit {
            requests: 2,
            window_ms: 60_000,
        }),
        ..Default::default()
    })
    .await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for _ in 0..3 {
        c.get("/v1/users/count").await;
    }
    // Unauthenticated calls never reach the limiter: not in the log.
    let res = c.http.get(c.url("/v1/users")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = c.api(Method::GET, "/v1/users").send().await.unwrap();
    assert_eq!(res.status().as_u16(), 429);

    let calls = c.emu.calls();
    let limited: Vec<bool> = calls.iter().map(|r| r.rate_limited).collect();
    assert_eq!(limited, [false, false, true, true]);
    assert_eq!(calls[3].route, "GET /v1/users");
    assert!(calls.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert!(calls[0].at_ms >= before);
    assert_eq!(max_in_any_window(&calls, 60_000), 4);

    let (s, body) = read(c.http.get(c.url("/__emulator/calls")).send().await.unwrap()).await;
    assert_eq!(s, 200);
    let listed = body["calls"].as_array().unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[2]["route"], "GET /v1/users/count");
    assert_eq!(listed[2]["rate_limited"], Value::Bool(true));

    c.emu.reset();
    assert!(c.emu.calls().is_empty());
}
