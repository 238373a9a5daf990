//! Rate limits on the edge: one limit shared exactly by three instances on one Redis,
//! windows that slide on the injected clock, failures-only policies, trusted proxies,
//! bypass roles, `/_frontdesk/me` guarded by config, and the in-memory fallback when
//! Redis goes away.

use std::sync::Arc;

use frontdesk::clock::{Clock, ManualClock, SystemClock};
use frontdesk::config::{RateLimitCount, RateLimitKey, RouteAuth, RouteConfig};
use frontdesk_emulator::Emulator;
use serde_json::Value;

use crate::gateway::{policy, route, token, upstream};
use crate::support::{self, PrivateRedis};

fn limited_route(path: &str, auth: RouteAuth, name: &str) -> RouteConfig {
    RouteConfig {
        rate_limit: Some(name.into()),
        ..route(path, auth)
    }
}

fn clock() -> Arc<ManualClock> {
    ManualClock::new(SystemClock.now_ms())
}

#[tokio::test]
async fn three_instances_share_one_limit_exactly() {
    let (emu, running) = support::emulator(3).await;
    let up = upstream().await;
    let prefix = support::redis_prefix();
    let clock = clock();
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(
            support::app_with(&running, Some(&prefix), clock.clone(), |c| {
                c.proxy.upstream = Some(up.url.clone());
                c.rate_limits = vec![policy("api", RateLimitKey::User, 25, 60)];
                c.routes = vec![limited_route("/*", RouteAuth::Required, "api")];
            })
            .await,
        );
    }
    let t = token(&emu, &Emulator::seed_user_id(1), None);
    let burst = |round: usize| {
        let apps = &apps;
        let t = &t;
        futures::future::join_all((0..90).map(move |i| {
            let app = &apps[(i + round) % 3];
            async move {
                app.http
                    .get(format!("{}/api/{i}", app.edge))
                    .bearer_auth(t)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        }))
    };
    let statuses = burst(0).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((admitted, limited), (25, 65), "{statuses:?}");
    assert_eq!(up.calls(), 25, "the app saw exactly the admitted requests");
    // Half a window later: still full.
    clock.advance_ms(30_000);
    assert_eq!(burst(1).await.iter().filter(|s| **s == 200).count(), 0);
    // A whole window after the first burst, the next burst gets the limit again.
    clock.advance_ms(30_000);
    assert_eq!(burst(2).await.iter().filter(|s| **s == 200).count(), 25);
    assert_eq!(up.calls(), 50);
    for a in apps {
        let stats: Value = support::get_json(&a.http, format!("{}/v1/stats", a.api)).await;
        assert_eq!(stats["rate_limits"]["backend"], "redis");
        a.stop().await;
    }
}

#[tokio::test]
async fn window_slides_on_the_injected_clock_with_headers() {
    let (_emu, running) = support::emulator(1).await;
    let up = upstream().await;
    let clock = clock();
    let app = support::app_with(&running, None, clock.clone(), |c| {
        c.proxy.upstream = Some(up.url.clone());
        c.rate_limits = vec![policy("api", RateLimitKey::Ip, 3, 10)];
        c.routes = vec![limited_route("/*", RouteAuth::Public, "api")];
    })
    .await;
    let get = || app.http.get(format!("{}/x", app.edge)).send();
    for (remaining, reset) in [(2, 10), (1, 9), (0, 8)] {
        let r = get().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], remaining.to_string().as_str());
        // Seconds until the oldest request (t = 0) leaves the window.
        assert_eq!(h["x-ratelimit-reset"], reset.to_string().as_str());
        assert_eq!(h["ratelimit-policy"], "\"api\";q=3;w=10");
        assert_eq!(
            h["ratelimit"],
            format!("\"api\";r={remaining};t={reset}").as_str()
        );
        clock.advance_ms(1_000);
    }
    // t = 3 s: full; the oldest request leaves the window at t = 10 s.
    let r = get().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(r.headers()["ratelimit"], "\"api\";r=0;t=7");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    clock.advance_ms(6_999);
    assert_eq!(get().await.unwrap().status(), 429);
    clock.advance_ms(1);
    let r = get().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(up.calls(), 4);
    let stats: Value = support::get_json(&app.http, format!("{}/v1/stats", app.api)).await;
    assert_eq!(stats["rate_limits"]["backend"], "memory");
    app.stop().await;
}

#[tokio::test]
async fn failures_only_counts_responses_of_400_and_above() {
    let (_emu, running) = support::emulator(1).await;
    let up = upstream().await;
    let prefix = support::redis_prefix();
    let app = support::app_with(&running, Some(&prefix), clock(), |c| {
        c.proxy.upstream = Some(up.url.clone());
        c.rate_limits = vec![frontdesk::config::RateLimitConfig {
            count: RateLimitCount::Failures,
            ..policy("sign-in", RateLimitKey::Ip, 2, 60)
        }];
        c.routes = vec![limited_route("/*", RouteAuth::Public, "sign-in")];
    })
    .await;
    let post = |path: &str| app.http.post(format!("{}{path}", app.edge)).send();
    for _ in 0..5 {
        assert_eq!(
            post("/ok").await.unwrap().status(),
            200,
            "successes are free"
        );
    }
    assert_eq!(post("/fail").await.unwrap().status(), 401);
    let r = post("/fail").await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    // Two failures: the next attempt, good or bad, is refused before the app.
    assert_eq!(post("/ok").await.unwrap().status(), 429);
    assert_eq!(post("/fail").await.unwrap().status(), 429);
    assert_eq!(up.calls(), 7);
    app.stop().await;
}

#[tokio::test]
async fn client_address_comes_from_trusted_proxies_only() {
    let (_emu, running) = support::emulator(1).await;
    let up = upstream().await;
    let start = |trusted: Vec<String>| {
        let up_url = up.url.clone();
        let running = &running;
        async move {
            support::app_with(running, None, clock(), move |c| {
                c.proxy.upstream = Some(up_url);
                c.proxy.trusted_proxies = trusted;
                c.rate_limits = vec![policy("ip", RateLimitKey::Ip, 1, 60)];
                c.routes = vec![limited_route("/*", RouteAuth::Public, "ip")];
            })
            .await
        }
    };
    let send = |app: &support::TestApp, xff: &str| {
        app.http
            .get(format!("{}/x", app.edge))
            .header("X-Forwarded-For", xff)
            .send()
    };
    // Behind a trusted proxy (loopback), each client has its own bucket, and what a
    // client wrote to the left of the proxy's hop does not choose it.
    let app = start(vec!["127.0.0.0/8".into()]).await;
    assert_eq!(send(&app, "1.1.1.1").await.unwrap().status(), 200);
    assert_eq!(send(&app, "2.2.2.2").await.unwrap().status(), 200);
    assert_eq!(send(&app, "9.9.9.9, 1.1.1.1").await.unwrap().status(), 429);
    let r = send(&app, "3.3.3.3").await.unwrap();
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["headers"]["x-forwarded-for"], "3.3.3.3, 127.0.0.1");
    app.stop().await;
    // Without trusted proxies, X-Forwarded-For is ignored: one bucket for the socket.
    let app = start(vec![]).await;
    assert_eq!(send(&app, "1.1.1.1").await.unwrap().status(), 200);
    assert_eq!(send(&app, "2.2.2.2").await.unwrap().status(), 429);
    app.stop().await;
}

#[tokio::test]
async fn bypass_roles_are_never_limited_and_me_can_be_guarded() {
    let (emu, running) = support::emulator(3).await;
    let up = upstream().await;
    let admin = Emulator::seed_user_id(1);
    let user = Emulator::seed_user_id(2);
    let app = support::app_with(&running, None, clock(), |c| {
        c.proxy.upstream = Some(up.url.clone());
        c.context
            .role_overrides
            .insert(admin.clone(), "admin".into());
        c.rate_limits = vec![
            frontdesk::config::RateLimitConfig {
                bypass_roles: vec!["admin".into()],
                ..policy("api", RateLimitKey::UserOrIp, 2, 60)
            },
            policy("me", RateLimitKey::User, 1, 60),
        ];
        c.routes = vec![
            limited_route("/_frontdesk/me", RouteAuth::Optional, "me"),
            limited_route("/*", RouteAuth::Optional, "api"),
        ];
    })
    .await;
    let (ta, tu) = (token(&emu, &admin, None), token(&emu, &user, None));
    let get = |path: &str, t: &str| {
        app.http
            .get(format!("{}{path}", app.edge))
            .bearer_auth(t)
            .send()
    };
    for _ in 0..5 {
        let r = get("/x", &ta).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("x-ratelimit-limit").is_none());
    }
    assert_eq!(get("/x", &tu).await.unwrap().status(), 200);
    assert_eq!(get("/x", &tu).await.unwrap().status(), 200);
    assert_eq!(get("/x", &tu).await.unwrap().status(), 429);
    // `/_frontdesk/me` is Frontdesk's own route, limited by config, never forwarded.
    assert_eq!(get("/_frontdesk/me", &tu).await.unwrap().status(), 200);
    let r = get("/_frontdesk/me", &tu).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ratelimit-policy"], "\"me\";q=1;w=60");
    assert_eq!(up.calls(), 7);
    app.stop().await;
}

#[tokio::test]
async fn redis_failing_midway_falls_back_to_memory() {
    let (_emu, running) = support::emulator(1).await;
    let up = upstream().await;
    let mut redis = PrivateRedis::start().await;
    let db = support::fresh_pg_database().await;
    let mut c = support::config(&db, Some(&running), running.emulator.secret_key());
    c.redis_url = Some(frontdesk::config::Secret::new(redis.url()));
    c.redis_prefix = support::redis_prefix();
    c.proxy.upstream = Some(up.url.clone());
    c.rate_limits = vec![policy("api", RateLimitKey::Ip, 2, 60)];
    c.routes = vec![limited_route("/*", RouteAuth::Public, "api")];
    let app = support::TestApp::start(c).await;
    let get = || app.http.get(format!("{}/x", app.edge)).send();
    let stats = || async {
        let s: Value = support::get_json(&app.http, format!("{}/v1/stats", app.api)).await;
        s["rate_limits"]["backend"].as_str().unwrap().to_string()
    };
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(stats().await, "redis");
    redis.stop();
    // Redis is gone: decisions go on in memory (a fresh log on this instance).
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(stats().await, "memory_fallback");
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(get().await.unwrap().status(), 429);
    app.stop().await;
}

#[tokio::test]
async fn clerk_api_is_limited_per_bearer_key_by_config() {
    let (emu, running) = support::emulator(2).await;
    let app = support::app_with(&running, None, clock(), |c| {
        c.rate_limits = vec![policy("clerk", RateLimitKey::User, 2, 60)];
        c.proxy.clerk_api_rate_limit = Some("clerk".into());
    })
    .await;
    let get = |key: &str| {
        app.http
            .get(format!(
                "{}/clerk/v1/users/{}",
                app.api,
                Emulator::seed_user_id(1)
            ))
            .bearer_auth(key)
            .send()
    };
    let key = emu.secret_key().to_string();
    for _ in 0..2 {
        let r = get(&key).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-policy"], "\"clerk\";q=2;w=60");
    }
    assert_eq!(get(&key).await.unwrap().status(), 429);
    // Another bearer has its own bucket (and is then refused by the proxy's own check).
    assert_eq!(get("sk_test_other").await.unwrap().status(), 401);
    // The native API is not guarded by this policy.
    let r = app
        .http
        .get(format!("{}/v1/stats", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}
