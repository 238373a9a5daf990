//! The Clerk client under pressure: one budget for several instances, 429s that pause
//! the fleet, the local share while Redis is down, and circuit breakers while Clerk
//! fails. The emulator enforces Clerk's limit as a sliding window and counts what it
//! saw; the assertions are on its counters.

use std::sync::Arc;
use std::time::Duration;

use frontdesk::clock::{self, ManualClock};
use frontdesk_emulator::{Emulator, Knobs, RateLimit};
use serde_json::Value;

use crate::support::{self, TestApp, http, upstream_calls};

const KEY: &str = "sk_test_frontdesk_emulator";

/// `GET /v1/users/{id}` on the api listener: status, `code`, `Retry-After`.
async fn lookup(c: &reqwest::Client, app: &TestApp, id: &str) -> (u16, Value, Option<u64>) {
    let r = c
        .get(format!("{}/v1/users/{id}", app.api))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    (status, r.json().await.unwrap_or(Value::Null), retry)
}

async fn stats(c: &reqwest::Client, app: &TestApp) -> Value {
    support::get_json(c, format!("{}/v1/stats", app.api)).await
}

#[tokio::test]
async fn three_instances_share_one_budget_and_clerk_never_answers_429() {
    const LIMIT: u32 = 30;
    const WINDOW_MS: u64 = 2_000;
    let (emu, running) = support::emulator(150).await;
    emu.set_knobs(Knobs {
        rate_limit: Some(Some(RateLimit {
            requests: LIMIT,
            window_ms: WINDOW_MS,
        })),
        ..Knobs::default()
    });
    let prefix = support::redis_prefix();
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(
            support::app_with(&running, Some(&prefix), clock::system(), |c| {
                c.upstream.rate_limit_requests = LIMIT;
                c.upstream.rate_limit_window_ms = WINDOW_MS;
                // Long enough for a second window, too short for a third.
                c.upstream.queue_timeout_ms = 3_000;
                c.upstream.max_retries = 0;
                // One call per cold user, so the burst is 120 calls.
                c.cache.batch_max = 1;
            })
            .await,
        );
    }
    emu.reset();
    let c = http();
    let mut calls = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        for j in 0..40 {
            let id = Emulator::seed_user_id(i * 40 + j);
            let c = c.clone();
            calls.push(async move { lookup(&c, app, &id).await });
        }
    }
    let results = futures::future::join_all(calls).await;

    let stats = emu.stats();
    let mut health = Vec::new();
    for app in &apps {
        health.push(self::stats(&c, app).await["upstream"]["health"].clone());
    }
    assert_eq!(
        stats.rate_limited, 0,
        "Clerk answered no 429: {stats:?} {health:?}"
    );
    assert!(
        stats.max_in_window <= u64::from(LIMIT),
        "never more than the limit in any window: {stats:?}"
    );
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 != 200).collect();
    assert!(ok >= LIMIT as usize, "the budget was used: {ok} answered");
    assert!(
        !refused.is_empty(),
        "callers past the deadline were refused"
    );
    for (status, body, retry) in &refused {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["code"], "upstream_unavailable");
        assert!(retry.is_some_and(|s| s >= 1), "Retry-After");
    }
    assert_eq!(
        stats.total, ok as u64,
        "only admitted callers reached Clerk"
    );
    let s = self::stats(&c, &apps[0]).await;
    assert_eq!(s["upstream"]["health"]["budget"]["mode"], "fleet");
    for app in apps {
        app.stop().await;
    }
}

#[tokio::test]
async fn a_429_seen_by_one_instance_pauses_every_instance() {
    let (emu, running) = support::emulator(10).await;
    let prefix = support::redis_prefix();
    let tweak = |c: &mut frontdesk::Config| {
        c.upstream.max_retries = 0;
    };
    let a = support::app_with(&running, Some(&prefix), clock::system(), tweak).await;
    let b = support::app_with(&running, Some(&prefix), clock::system(), tweak).await;
    emu.set_knobs(Knobs {
        rate_limit: Some(Some(RateLimit {
            requests: 1,
            window_ms: 600_000,
        })),
        ..Knobs::default()
    });
    emu.reset();
    let c = http();
    assert_eq!(lookup(&c, &a, &Emulator::seed_user_id(0)).await.0, 200);
    let (status, _, retry) = lookup(&c, &a, &Emulator::seed_user_id(1)).await;
    assert_eq!(status, 503, "Clerk's 429 on A");
    assert!(retry.is_some());
    assert_eq!(emu.stats().rate_limited, 1);
    assert_eq!(upstream_calls(&emu), 2);

    // B never saw a 429, yet sends nothing until Retry-After passes.
    let (status, body, retry) = lookup(&c, &b, &Emulator::seed_user_id(2)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "upstream_unavailable");
    assert!(
        retry.is_some_and(|s| s > 1),
        "B waits for Clerk's Retry-After"
    );
    assert_eq!(
        upstream_calls(&emu),
        2,
        "nothing sent by B: {:?}",
        emu.stats()
    );
    let s = stats(&c, &b).await;
    assert!(
        s["upstream"]["refused_while_paused"].as_u64().unwrap() >= 1,
        "{s}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn with_redis_down_an_instance_keeps_to_its_share_and_says_so() {
    let (emu, running) = support::emulator(40).await;
    let mut redis = support::PrivateRedis::start().await;
    let url = redis.url();
    let app = support::app_with(&running, None, clock::system(), |c| {
        c.redis_url = Some(frontdesk::config::Secret::new(url));
        c.redis_prefix = support::redis_prefix();
        c.upstream.rate_limit_requests = 30;
        c.upstream.rate_limit_window_ms = 60_000;
        c.upstream.expected_instances = 3;
        c.upstream.queue_timeout_ms = 500;
        c.upstream.max_retries = 0;
        c.cache.batch_max = 1;
    })
    .await;
    let c = http();
    assert_eq!(
        stats(&c, &app).await["upstream"]["health"]["budget"]["mode"],
        "fleet"
    );
    redis.stop();
    emu.reset();
    let results = futures::future::join_all((0..25).map(|i| {
        let c = c.clone();
        let app = &app;
        async move { lookup(&c, app, &Emulator::seed_user_id(i)).await }
    }))
    .await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    assert_eq!(ok, 10, "30 ÷ 3 instances");
    assert_eq!(upstream_calls(&emu), 10);
    for (status, body, retry) in results.iter().filter(|r| r.0 != 200) {
        assert_eq!(
            (*status, body["code"].as_str()),
            (503, Some("upstream_unavailable"))
        );
        assert!(retry.is_some());
    }
    let s = stats(&c, &app).await;
    assert_eq!(
        s["upstream"]["health"]["budget"]["mode"], "local_share",
        "{s}"
    );
    assert_eq!(s["upstream"]["health"]["budget"]["local_share"], 10);

    // Redis back: the fleet's budget again (a fresh one: the old log died with Redis).
    redis.restart().await;
    let next = std::sync::atomic::AtomicUsize::new(25);
    let back = support::eventually(Duration::from_secs(10), || {
        let c = c.clone();
        let app = &app;
        // A cold user each time, so each try asks the budget.
        let id = Emulator::seed_user_id(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        async move {
            let _ = lookup(&c, app, &id).await;
            stats(&c, app).await["upstream"]["health"]["budget"]["mode"] == "fleet"
        }
    })
    .await;
    assert!(back, "fleet mode once Redis answers");
    app.stop().await;
}

#[tokio::test]
async fn while_clerk_fails_the_circuit_opens_calls_stay_bounded_and_stale_is_served_at_once() {
    let (emu, running) = support::emulator(300).await;
    let clock = ManualClock::new(1_900_000_000_000);
    let app = support::app_with(&running, None, clock.clone(), |c| {
        c.upstream.breaker_failures = 3;
        c.upstream.breaker_cooldown_ms = 10_000;
        c.upstream.max_retries = 2;
        c.upstream.backoff_base_ms = 1;
        c.upstream.backoff_max_ms = 1;
        c.cache.user_ttl_ms = 60_000;
        c.cache.ttl_jitter = 0.0;
        c.cache.stale_while_revalidate_ms = 0;
        c.cache.stale_if_error_ms = 3_600_000;
    })
    .await;
    let c = http();
    let cached = Emulator::seed_user_id(299);
    assert_eq!(lookup(&c, &app, &cached).await.0, 200);
    clock.advance_ms(61_000);

    emu.set_knobs(Knobs {
        error_rate: Some(1.0),
        ..Knobs::default()
    });
    emu.reset();
    // One cold look-up: its call and two retries fail, the third failure opens the
    // circuit.
    let (status, body, retry) = lookup(&c, &app, &Emulator::seed_user_id(0)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("upstream_unavailable"))
    );
    assert!(retry.is_some());
    assert_eq!(upstream_calls(&emu), 3);
    let s = stats(&c, &app).await;
    assert_eq!(
        s["upstream"]["health"]["breakers_not_closed"]["GET /v1/users"], "open",
        "{s}"
    );

    // 200 cold look-ups while open: 503 at once, nothing sent, nothing retried.
    let results = futures::future::join_all((1..201).map(|i| {
        let c = c.clone();
        let app = &app;
        async move { lookup(&c, app, &Emulator::seed_user_id(i)).await }
    }))
    .await;
    for (status, body, retry) in &results {
        assert_eq!(
            (*status, body["code"].as_str()),
            (503, Some("upstream_unavailable"))
        );
        assert!(retry.is_some_and(|s| s >= 1));
    }
    assert_eq!(upstream_calls(&emu), 3, "nothing sent while open");

    // A user within stale-if-error is served at once, without a call.
    let r = c
        .get(format!("{}/clerk/v1/users/{cached}", app.api))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "STALE");
    assert_eq!(upstream_calls(&emu), 3);

    // Clerk recovers; after the cool-down one probe closes the circuit.
    emu.set_knobs(Knobs {
        error_rate: Some(0.0),
        ..Knobs::default()
    });
    assert_eq!(lookup(&c, &app, &Emulator::seed_user_id(0)).await.0, 503);
    assert_eq!(upstream_calls(&emu), 3, "still cooling down");
    clock.advance_ms(10_000);
    assert_eq!(lookup(&c, &app, &Emulator::seed_user_id(0)).await.0, 200);
    assert_eq!(upstream_calls(&emu), 4, "one probe");
    let s = stats(&c, &app).await;
    assert_eq!(
        s["upstream"]["health"]["breakers_not_closed"],
        serde_json::json!({}),
        "{s}"
    );
    assert_eq!(lookup(&c, &app, &Emulator::seed_user_id(1)).await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn retries_stay_a_share_of_calls_when_every_call_fails() {
    let (emu, running) = support::emulator(60).await;
    let app = support::app_with(&running, None, Arc::new(clock::SystemClock), |c| {
        c.upstream.breaker_failures = 0;
        c.upstream.max_retries = 2;
        c.upstream.backoff_base_ms = 1;
        c.upstream.backoff_max_ms = 1;
        c.upstream.retry_budget_ratio = 0.1;
    })
    .await;
    emu.set_knobs(Knobs {
        error_rate: Some(1.0),
        ..Knobs::default()
    });
    emu.reset();
    let c = http();
    for i in 0..40 {
        assert_eq!(lookup(&c, &app, &Emulator::seed_user_id(i)).await.0, 503);
    }
    let calls = upstream_calls(&emu);
    // Without a budget: 40 × 3 = 120. With it: 40 calls, a reserve of 10 retries and
    // one retry per ten calls.
    assert!((40..=54).contains(&calls), "{calls} calls");
    let s = stats(&c, &app).await;
    assert!(s["upstream"]["health"]["retries_refused"].as_u64().unwrap() > 0);
    app.stop().await;
}
