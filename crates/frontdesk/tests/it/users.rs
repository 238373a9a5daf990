//! The tiered user cache, the native user API and the Backend API proxy, against the
//! emulator with real Postgres and Redis.

use std::time::Duration;

use frontdesk::clock::{self, ManualClock};
use frontdesk::users::Source;
use frontdesk_emulator::{Emulator, Knobs, RateLimit};
use serde_json::{Value, json};

use crate::support::{self, http, upstream_calls};

const KEY: &str = "sk_test_frontdesk_emulator";

#[tokio::test]
async fn a_thousand_concurrent_lookups_of_one_cold_user_make_one_call() {
    let (emu, running) = support::emulator(10).await;
    let app = support::app_with(&running, None, clock::system(), |_| {}).await;
    let users = app.state.users().cloned().unwrap();
    let id = Emulator::seed_user_id(3);
    emu.reset();
    let lookups = (0..1000).map(|_| users.get(&id));
    let results = futures::future::join_all(lookups).await;
    for r in &results {
        let l = r.as_ref().unwrap();
        assert_eq!(l.user.as_ref().unwrap().id(), id);
    }
    eprintln!(
        "1000 lookups of one cold user: {} upstream call(s)",
        upstream_calls(&emu)
    );
    assert_eq!(upstream_calls(&emu), 1, "{:?}", emu.stats());
    let stats = users.stats();
    assert!(stats.coalesced_waits >= 900, "{stats:?}");
    // And it is cached now.
    assert_eq!(users.get(&id).await.unwrap().source, Source::L1);
    assert_eq!(upstream_calls(&emu), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_thousand_distinct_cold_users_are_gathered_into_list_calls() {
    let (emu, running) = support::emulator(1000).await;
    let app = support::app_with(&running, None, clock::system(), |_| {}).await;
    let users = app.state.users().cloned().unwrap();
    let ids: Vec<String> = (0..1000).map(Emulator::seed_user_id).collect();
    emu.reset();
    let results = futures::future::join_all(ids.iter().map(|id| users.get(id))).await;
    for (id, r) in ids.iter().zip(&results) {
        let user = r.as_ref().unwrap().user.as_ref().expect("found");
        assert_eq!(user.id(), id);
        let clerk: Value = serde_json::from_slice(&user.raw()).unwrap();
        assert_eq!(clerk["object"], "user");
    }
    let calls = upstream_calls(&emu);
    eprintln!("1000 distinct cold users: {calls} upstream calls");
    assert!(
        calls <= 10,
        "at most 10 list calls, saw {calls}: {:?}",
        emu.stats()
    );
    assert_eq!(emu.stats().calls.get("GET /v1/users").copied(), Some(calls));
    app.stop().await;
}

#[tokio::test]
async fn unknown_users_are_cached_as_not_found() {
    let (emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, clock::system(), |_| {}).await;
    emu.reset();
    let c = http();
    for _ in 0..3 {
        let r = c
            .get(format!("{}/v1/users/user_doesnotexist", app.api))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");
    }
    assert_eq!(upstream_calls(&emu), 1);
    app.stop().await;
}

#[tokio::test]
async fn native_api_fields_batch_warm_evict_and_stats() {
    let (emu, running) = support::emulator(250).await;
    let app = support::app_with(&running, None, clock::system(), |_| {}).await;
    let c = http();
    let id = Emulator::seed_user_id(0);
    let clerk_user = emu.user(&id).unwrap();

    let minimal: Value =
        support::get_json(&c, format!("{}/v1/users/{id}?fields=minimal", app.api)).await;
    assert_eq!(minimal.as_object().unwrap().len(), 3, "{minimal}");
    assert_eq!(minimal["id"], id.as_str());
    assert_eq!(
        minimal["email"],
        clerk_user["email_addresses"][0]["email_address"]
    );
    let basic: Value = support::get_json(&c, format!("{}/v1/users/{id}", app.api)).await;
    assert_eq!(basic["first_name"], clerk_user["first_name"]);
    assert_eq!(basic["public_metadata"], clerk_user["public_metadata"]);
    assert!(
        basic.get("private_metadata").is_none(),
        "basic never carries private metadata"
    );
    let full: Value = support::get_json(&c, format!("{}/v1/users/{id}?fields=full", app.api)).await;
    assert_eq!(full, clerk_user);
    let bad = c
        .get(format!("{}/v1/users/{id}?fields=everything", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["code"], "invalid_fields");

    // A batch of 250 known ids plus unknown ones, answered in request order.
    let mut ids: Vec<String> = (0..250).map(Emulator::seed_user_id).collect();
    ids.insert(5, "user_unknown1".into());
    ids.push("user_unknown2".into());
    emu.reset();
    let r = c
        .post(format!("{}/v1/users/batch?fields=minimal", app.api))
        .json(&json!({ "ids": ids }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let out: Value = r.json().await.unwrap();
    let got = out["users"].as_array().unwrap();
    assert_eq!(got.len(), ids.len());
    for (want, have) in ids.iter().zip(got) {
        if want.starts_with("user_unknown") {
            assert!(have.is_null());
        } else {
            assert_eq!(have["id"], want.as_str());
        }
    }
    // 249 cold ids (one was cached above) in chunks of at most 100.
    assert!(upstream_calls(&emu) <= 3, "{:?}", emu.stats());

    // Bad input: a clear error, nothing looked up.
    let r = c
        .post(format!("{}/v1/users/batch", app.api))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_json");
    let r = c
        .post(format!("{}/v1/users/batch", app.api))
        .json(&json!({ "ids": ["user_ok", "../etc/passwd"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_user_id");

    // Warm, then evict one: the next look-up goes upstream again.
    let r: Value = c
        .post(format!("{}/v1/users/warm", app.api))
        .json(&json!({ "ids": [Emulator::seed_user_id(1), "user_nobody"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r,
        json!({"requested": 2, "found": 1, "not_found": 1, "failed": 0})
    );
    emu.reset();
    let r = c
        .delete(format!("{}/v1/cache/users/{id}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .get(format!("{}/v1/users/{id}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(upstream_calls(&emu), 1);

    let stats: Value = support::get_json(&c, format!("{}/v1/stats", app.api)).await;
    assert_eq!(stats["redis"], "disabled");
    assert!(
        stats["users"]["l1"]["hits"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(
        stats["users"]["l1"]["entries"].as_u64().unwrap() >= 250,
        "{stats}"
    );
    assert!(stats["upstream"]["calls"].as_u64().unwrap() >= 3, "{stats}");
    app.stop().await;
}

#[tokio::test]
async fn proxy_refuses_a_wrong_bearer_without_calling_clerk() {
    let (emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, clock::system(), |_| {}).await;
    emu.reset();
    let c = http();
    let id = Emulator::seed_user_id(0);
    for auth in [Some("sk_test_wrong"), None] {
        let mut req = c.get(format!("{}/clerk/v1/users/{id}", app.api));
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "authentication_invalid");
        assert!(body["clerk_trace_id"].is_string());
    }
    let r = c
        .patch(format!("{}/clerk/v1/users/{id}", app.api))
        .bearer_auth("sk_test_wrong")
        .json(&json!({"first_name": "Mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(upstream_calls(&emu), 0, "{:?}", emu.stats());
    assert_ne!(emu.user(&id).unwrap()["first_name"], "Mallory");
    app.stop().await;
}

#[tokio::test]
async fn proxy_is_byte_faithful_and_caches_reads() {
    let (emu, running) = support::emulator(20).await;
    let app = support::app_with(&running, None, clock::system(), |_| {}).await;
    let c = http();
    let id = Emulator::seed_user_id(2);
    let direct = c
        .get(format!("{}/v1/users/{id}", running.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    emu.reset();
    let get = |path: String| {
        let c = c.clone();
        async move {
            let r = c
                .get(path)
                .bearer_auth(KEY)
                .header("clerk-api-version", "2026-05-12")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            let x = r.headers()["x-cache"].to_str().unwrap().to_string();
            (status, ct, x, r.bytes().await.unwrap())
        }
    };
    let (s, ct, x, body) = get(format!("{}/clerk/v1/users/{id}", app.api)).await;
    assert_eq!(
        (s, ct.as_str(), x.as_str()),
        (200, "application/json", "MISS")
    );
    assert_eq!(body, direct, "byte for byte what Clerk sent");
    let (_, _, x, body) = get(format!("{}/clerk/v1/users/{id}", app.api)).await;
    assert_eq!(x, "HIT");
    assert_eq!(body, direct);

    // A list by ids shares the user cache: the cached user costs nothing, the other
    // one call; the answer matches Clerk's own list.
    let other = Emulator::seed_user_id(5);
    let q = format!("user_id={id}&user_id={other}&limit=10");
    let direct_list = c
        .get(format!("{}/v1/users?{q}", running.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    emu.reset();
    let (s, _, x, body) = get(format!("{}/clerk/v1/users?{q}", app.api)).await;
    assert_eq!((s, x.as_str()), (200, "MISS"));
    assert_eq!(body, direct_list, "same users, same order, same bytes");
    assert_eq!(upstream_calls(&emu), 1);
    let (_, _, x, _) = get(format!(
        "{}/clerk/v1/users?user_id={other}&user_id={id}",
        app.api
    ))
    .await;
    assert_eq!(x, "HIT");

    // Other reads: cached by normalized query; organizations and counts.
    emu.reset();
    let (s, _, x, count) = get(format!("{}/clerk/v1/users/count?limit=5&offset=0", app.api)).await;
    assert_eq!((s, x.as_str()), (200, "MISS"));
    assert_eq!(
        serde_json::from_slice::<Value>(&count).unwrap(),
        json!({"object": "total_count", "total_count": 20})
    );
    let (_, _, x, _) = get(format!("{}/clerk/v1/users/count?offset=0&limit=5", app.api)).await;
    assert_eq!(x, "HIT");
    let (s, _, _, orgs) = get(format!("{}/clerk/v1/organizations", app.api)).await;
    assert_eq!(s, 200);
    let orgs: Value = serde_json::from_slice(&orgs).unwrap();
    assert!(orgs["total_count"].as_u64().unwrap() >= 1);
    let (_, _, x, _) = get(format!("{}/clerk/v1/organizations", app.api)).await;
    assert_eq!(x, "HIT");
    let (s, _, _, jwks) = get(format!("{}/clerk/v1/jwks", app.api)).await;
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_slice::<Value>(&jwks).unwrap(), emu.jwks());
    assert_eq!(upstream_calls(&emu), 3, "{:?}", emu.stats());

    // Clerk's own errors pass through unchanged (a 422 for 101 ids).
    let many: String = (0..101).map(|i| format!("user_id=user_{i}&")).collect();
    let (s, ct, _, body) = get(format!("{}/clerk/v1/users?{many}", app.api)).await;
    assert_eq!(s, 422);
    assert_eq!(ct, "application/json");
    assert!(serde_json::from_slice::<Value>(&body).unwrap()["errors"].is_array());
    app.stop().await;
}

#[tokio::test]
async fn a_write_through_the_proxy_is_seen_by_the_next_read_here_and_on_another_instance() {
    let (emu, running) = support::emulator(10).await;
    let prefix = support::redis_prefix();
    let a = support::app_with(&running, Some(&prefix), clock::system(), |_| {}).await;
    let b = support::app_with(&running, Some(&prefix), clock::system(), |_| {}).await;
    let c = http();
    let id = Emulator::seed_user_id(4);
    let read = |base: String| {
        let c = c.clone();
        let id = id.clone();
        async move {
            let r = c
                .get(format!("{base}/clerk/v1/users/{id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap();
            let x = r.headers()["x-cache"].to_str().unwrap().to_string();
            (x, r.json::<Value>().await.unwrap())
        }
    };
    // Both instances hold the user (B from L2, filled by A).
    let (x, _) = read(a.api.clone()).await;
    assert_eq!(x, "MISS");
    let (x, _) = read(b.api.clone()).await;
    assert_eq!(x, "HIT");
    assert_eq!(b.state.users().unwrap().stats().l2_hits, 1);
    let (x, _) = read(b.api.clone()).await;
    assert_eq!(x, "HIT");

    // Count orgs on B, so its read cache holds them too.
    let r = c
        .patch(format!("{}/clerk/v1/users/{id}", a.api))
        .bearer_auth(KEY)
        .json(&json!({"first_name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "BYPASS");
    assert_eq!(r.json::<Value>().await.unwrap()["first_name"], "Ada");
    let (_, user) = read(a.api.clone()).await;
    assert_eq!(user["first_name"], "Ada", "same instance, next read");
    let seen = support::eventually(Duration::from_secs(1), || {
        let b_api = b.api.clone();
        let read = &read;
        async move { read(b_api).await.1["first_name"] == "Ada" }
    })
    .await;
    assert!(seen, "second instance sees the write within 1 s");

    // Metadata writes too (deep merge happens at Clerk; the proxy refreshes).
    let r = c
        .patch(format!("{}/clerk/v1/users/{id}/metadata", b.api))
        .bearer_auth(KEY)
        .json(&json!({"public_metadata": {"tier": "gold"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, user) = read(b.api.clone()).await;
    assert_eq!(user["public_metadata"]["tier"], "gold");
    let seen = support::eventually(Duration::from_secs(1), || {
        let a_api = a.api.clone();
        let read = &read;
        async move { read(a_api).await.1["public_metadata"]["tier"] == "gold" }
    })
    .await;
    assert!(seen, "first instance sees the metadata write within 1 s");

    // Deleting through the proxy: both instances answer 404.
    let r = c
        .delete(format!("{}/clerk/v1/users/{id}", a.api))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["deleted"], true);
    let gone = |base: String| {
        let c = c.clone();
        let id = id.clone();
        async move {
            c.get(format!("{base}/clerk/v1/users/{id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .status()
                == 404
        }
    };
    assert!(gone(a.api.clone()).await);
    assert!(support::eventually(Duration::from_secs(1), || gone(b.api.clone())).await);
    let _ = emu;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn while_clerk_rate_limits_nothing_is_sent_before_retry_after_and_cached_users_are_served_stale()
 {
    let (emu, running) = support::emulator(10).await;
    let clock = ManualClock::new(1_900_000_000_000);
    let app = support::app_with(&running, None, clock.clone(), |c| {
        c.cache.user_ttl_ms = 60_000;
        c.cache.ttl_jitter = 0.0;
        c.cache.stale_while_revalidate_ms = 0;
        c.cache.stale_if_error_ms = 3_600_000;
        c.upstream.max_retries = 0;
    })
    .await;
    let c = http();
    let get = |id: String| {
        let c = c.clone();
        let api = app.api.clone();
        async move {
            let r = c
                .get(format!("{api}/clerk/v1/users/{id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let x = r
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_string());
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            (status, x, retry, r.json::<Value>().await.unwrap())
        }
    };
    let cached = Emulator::seed_user_id(0);
    assert_eq!(get(cached.clone()).await.0, 200);
    // Past its TTL: the next read must revalidate.
    clock.advance_ms(61_000);

    emu.set_knobs(Knobs {
        rate_limit: Some(Some(RateLimit {
            requests: 1,
            window_ms: 600_000,
        })),
        ..Knobs::default()
    });
    emu.reset();
    assert_eq!(
        get(Emulator::seed_user_id(1)).await.0,
        200,
        "the one allowed call"
    );
    let (status, _, retry, body) = get(Emulator::seed_user_id(2)).await;
    assert_eq!(status, 429, "Clerk's 429 reaches the caller: {body}");
    let retry = retry.expect("Retry-After");
    assert!(retry >= 1);
    assert_eq!(body["errors"][0]["code"], "too_many_requests");
    assert_eq!(upstream_calls(&emu), 2);

    // Paused: the cached user is served stale, a cold one gets 429, Clerk sees nothing.
    let (status, x, _, user) = get(cached.clone()).await;
    assert_eq!((status, x.as_deref()), (200, Some("STALE")));
    assert_eq!(user["id"], cached.as_str());
    let (status, _, retry2, _) = get(Emulator::seed_user_id(3)).await;
    assert_eq!(status, 429);
    assert!(retry2.unwrap() <= retry);
    let r = c
        .get(format!(
            "{}/v1/users/{}",
            app.api,
            Emulator::seed_user_id(3)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "upstream_unavailable"
    );
    assert_eq!(
        upstream_calls(&emu),
        2,
        "nothing sent while paused: {:?}",
        emu.stats()
    );

    // Once Retry-After has passed, calls resume.
    clock.advance_ms(retry * 1000);
    emu.set_knobs(Knobs {
        rate_limit: Some(None),
        ..Knobs::default()
    });
    let (status, x, _, _) = get(Emulator::seed_user_id(3)).await;
    assert_eq!((status, x.as_deref()), (200, Some("MISS")));
    assert_eq!(upstream_calls(&emu), 3);
    app.stop().await;
}

#[tokio::test]
async fn with_redis_stopped_lookups_keep_working_and_l2_returns_when_it_is_back() {
    let (emu, running) = support::emulator(50).await;
    let mut redis = support::PrivateRedis::start().await;
    let url = redis.url();
    let app = support::app_with(&running, Some("fd:"), clock::system(), move |c| {
        c.redis_url = Some(frontdesk::config::Secret::new(url));
    })
    .await;
    let users = app.state.users().cloned().unwrap();
    let c = http();
    let stats = |c: reqwest::Client, api: String| async move {
        c.get(format!("{api}/v1/stats"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(stats(c.clone(), app.api.clone()).await["redis"], "up");
    for i in 0..10 {
        let r = c
            .get(format!(
                "{}/v1/users/{}",
                app.api,
                Emulator::seed_user_id(i)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    redis.stop();
    // Look-ups, cached and cold, all succeed while Redis is gone.
    let mut failures = 0;
    for i in 0..30 {
        let r = c
            .get(format!(
                "{}/v1/users/{}",
                app.api,
                Emulator::seed_user_id(i)
            ))
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            failures += 1;
        }
    }
    assert_eq!(failures, 0);
    let down = support::eventually(Duration::from_secs(5), || {
        let (c, api) = (c.clone(), app.api.clone());
        async move { stats(c, api).await["redis"] == "down" }
    })
    .await;
    assert!(down, "stats report Redis down");
    assert_eq!(
        stats(c.clone(), app.api.clone()).await["users"]["l2"]["status"],
        "down"
    );
    let r = c.get(format!("{}/readyz", app.api)).send().await.unwrap();
    assert_eq!(r.status(), 200, "degraded, still ready");

    redis.restart().await;
    let up = support::eventually(Duration::from_secs(10), || {
        let (c, api) = (c.clone(), app.api.clone());
        async move { stats(c, api).await["redis"] == "up" }
    })
    .await;
    assert!(up, "Redis reconnects by itself");
    // L2 is used again: a cold user is written there, and after dropping it from L1
    // it comes back from L2 without a Clerk call.
    let id = Emulator::seed_user_id(40);
    assert_eq!(users.get(&id).await.unwrap().source, Source::Upstream);
    users.evict_local(&id);
    emu.reset();
    assert_eq!(users.get(&id).await.unwrap().source, Source::L2);
    assert_eq!(upstream_calls(&emu), 0);
    app.stop().await;
}

/// Callers of one cold user that arrive while its load runs, or just after it ends,
/// share that one load: none may start a second Clerk call because it missed the cache
/// an instant before the first load filled it. Worker threads and staggered arrivals
/// make that interleaving happen (it made a second call in CI before the fix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staggered_callers_of_one_cold_user_make_one_call() {
    const ROUNDS: usize = 1000;
    let (emu, running) = support::emulator(ROUNDS).await;
    // Clerk's budget for a test key (100 calls per 10 s) would pace the rounds.
    let app = support::app_with(&running, None, clock::system(), |c| {
        c.upstream.rate_limit_requests = 100_000;
    })
    .await;
    let users = app.state.users().cloned().unwrap();
    for round in 0..ROUNDS {
        let id = Emulator::seed_user_id(round);
        emu.reset();
        let lookups = support::staggered(6, || {
            let (users, id) = (users.clone(), id.clone());
            async move { users.get(&id).await }
        })
        .await;
        for lookup in lookups {
            assert_eq!(lookup.unwrap().user.unwrap().id(), id);
        }
        assert_eq!(upstream_calls(&emu), 1, "round {round}: {:?}", emu.stats());
    }
    app.stop().await;
}

/// The same promise for the proxy's generic read cache: concurrent and back-to-back
/// reads of one key make one call, even when one arrives as the call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staggered_proxy_reads_of_one_key_make_one_call() {
    const ROUNDS: usize = 300;
    let (emu, running) = support::emulator(3).await;
    // Clerk's budget for a test key (100 calls per 10 s) would pace the rounds.
    let app = support::app_with(&running, None, clock::system(), |c| {
        c.upstream.rate_limit_requests = 100_000;
    })
    .await;
    let orgs = emu.org_ids();
    let c = http();
    for round in 0..ROUNDS {
        emu.reset();
        // A query no earlier round used: a cold key each round.
        let url = format!(
            "{}/clerk/v1/organizations/{}?round={round}",
            app.api,
            orgs[round % orgs.len()]
        );
        let statuses = support::staggered(6, || {
            let request = c.get(&url).bearer_auth(KEY);
            async move { request.send().await.unwrap().status() }
        })
        .await;
        for status in statuses {
            assert_eq!(status, 200);
        }
        assert_eq!(upstream_calls(&emu), 1, "round {round}: {:?}", emu.stats());
    }
    app.stop().await;
}
