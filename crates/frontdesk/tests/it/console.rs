//! The operator console (`/console`): the page and its assets with their content types,
//! the stream's snapshots (and a figure that moves after traffic), its actions under
//! `/console/api/*`, and the api token guarding all of it (bearer, or the cookie set by
//! `?token=` once).

use frontdesk::config::Secret;
use frontdesk_emulator::Emulator;
use serde_json::Value;

use crate::support;

const TOKEN: &str = "fd-console-token-for-tests-0123456789";

/// Reads `resp` until one whole `event: snapshot` frame has arrived; its JSON.
async fn next_snapshot(resp: &mut reqwest::Response, buf: &mut String) -> Value {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut lines = frame.lines();
            assert_eq!(lines.next(), Some("event: snapshot"), "{frame}");
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            return serde_json::from_str(data).unwrap();
        }
        let chunk = resp.chunk().await.unwrap().expect("the stream ended");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_their_types() {
    let (_emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |_| {}).await;
    let c = &app.http;
    let r = c.get(format!("{}/console", app.api)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("<h1>Frontdesk console</h1>"), "{html}");
    assert!(
        html.contains(app.state.bus().instance_id()),
        "the page names its instance"
    );
    assert!(!html.contains("{{"), "every placeholder is filled");
    for (path, ty) in [
        ("/console/console.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let r = c.get(format!("{}{path}", app.api)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], ty, "{path}");
        assert!(!r.text().await.unwrap().is_empty());
    }
    // Not on the public listener.
    let r = c.get(format!("{}/console", app.edge)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn the_stream_sends_snapshots_and_counts_traffic() {
    let (_emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |_| {}).await;
    let c = &app.http;
    let mut r = c
        .get(format!("{}/console/stream", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let first = next_snapshot(&mut r, &mut buf).await;
    assert_eq!(
        first["stats"]["instance_id"],
        app.state.bus().instance_id(),
        "{first}"
    );
    assert_eq!(first["inbox"]["dead"], 0, "{first}");
    assert_eq!(first["live"]["subscribers"], 0, "{first}");
    // The process's counters (the recorder is process-wide: present, not exact).
    assert!(first["process"].is_object(), "{first}");
    let edge_before = first["requests"]["edge"]["requests"].as_u64().unwrap();
    // Five requests on the edge, one user look-up on the api.
    for _ in 0..5 {
        let h = c
            .get(format!("{}/_frontdesk/healthz", app.edge))
            .send()
            .await
            .unwrap();
        assert_eq!(h.status(), 200);
    }
    let user = Emulator::seed_user_id(1);
    let u = c
        .get(format!("{}/v1/users/{user}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(u.status(), 200);
    // The first snapshot that saw all the traffic (it may span two of them).
    let mut second = next_snapshot(&mut r, &mut buf).await;
    let mut edge_rate_seen = second["requests"]["edge"]["per_s"].as_f64().unwrap() > 0.0;
    for _ in 0..5 {
        if second["requests"]["edge"]["requests"].as_u64().unwrap() >= edge_before + 5
            && second["stats"]["users"]["upstream_loads"] == 1
        {
            break;
        }
        second = next_snapshot(&mut r, &mut buf).await;
        edge_rate_seen |= second["requests"]["edge"]["per_s"].as_f64().unwrap() > 0.0;
    }
    assert_eq!(
        second["requests"]["edge"]["requests"].as_u64().unwrap(),
        edge_before + 5,
        "{second}"
    );
    assert!(
        edge_rate_seen,
        "a snapshot showed the edge's rate: {second}"
    );
    assert_eq!(second["stats"]["users"]["upstream_loads"], 1, "{second}");
    drop(r);
    app.stop().await;
}

#[tokio::test]
async fn actions_reach_the_api_routes_under_the_console_path() {
    let (emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |_| {}).await;
    let c = &app.http;
    let user = Emulator::seed_user_id(2);
    let r = c
        .get(format!("{}/console/api/v1/users/{user}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "MISS");
    let r = c
        .delete(format!("{}/console/api/v1/cache/users/{user}", app.api))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // Evicted: the next look-up goes to Clerk again.
    let before = support::upstream_calls(&emu);
    let r = c
        .get(format!("{}/console/api/v1/users/{user}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(support::upstream_calls(&emu), before + 1);
    let r = c
        .post(format!(
            "{}/console/api/v1/webhooks/msg_nope/replay",
            app.api
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn the_api_token_guards_the_console_and_its_cookie_opens_only_the_console() {
    let (_emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |c| {
        c.api_token = Some(Secret::new(TOKEN));
    })
    .await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let api = &app.api;
    for path in [
        "/console",
        "/console/console.js",
        "/console/stream",
        "/console/api/v1/webhooks?state=dead",
    ] {
        let r = c.get(format!("{api}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["code"],
            "api_token_missing",
            "{path}"
        );
    }
    let r = c
        .get(format!("{api}/console?token=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "api_token_invalid"
    );
    // A forged cookie opens nothing.
    let r = c
        .get(format!("{api}/console"))
        .header("cookie", format!("frontdesk_console={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The bearer opens the console as any api route.
    let r = c
        .get(format!("{api}/console"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // ?token= once: a redirect without it and the cookie.
    let r = c
        .get(format!("{api}/console?token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Path=/console"), "{set}");
    assert!(
        !set.contains(TOKEN),
        "the cookie does not hold the token: {set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    for path in [
        "/console",
        "/console/console.css",
        "/console/api/v1/webhooks?state=dead",
    ] {
        let r = c
            .get(format!("{api}{path}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let mut stream = c
        .get(format!("{api}/console/stream"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut buf = String::new();
    let snap = next_snapshot(&mut stream, &mut buf).await;
    assert!(snap["requests"]["api"]["requests"].as_u64().unwrap() >= 1);
    drop(stream);
    // Outside /console the cookie is no credential.
    let r = c
        .get(format!("{api}/v1/webhooks?state=dead"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn the_stream_lists_the_instances_seen_on_redis() {
    let (_emu, running) = support::emulator(3).await;
    let prefix = support::redis_prefix();
    let a = support::app_with(&running, Some(&prefix), frontdesk::clock::system(), |_| {}).await;
    let b = support::app_with(&running, Some(&prefix), frontdesk::clock::system(), |_| {}).await;
    // Another fleet (another prefix) is not listed.
    let other = support::app_with(
        &running,
        Some(&support::redis_prefix()),
        frontdesk::clock::system(),
        |_| {},
    )
    .await;
    let mut r = a
        .http
        .get(format!("{}/console/stream", a.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut buf = String::new();
    let mut want = vec![
        a.state.bus().instance_id().to_string(),
        b.state.bus().instance_id().to_string(),
    ];
    want.sort();
    let mut seen = Vec::new();
    // Each instance writes once a second: a few snapshots are enough.
    for _ in 0..10 {
        let snap = next_snapshot(&mut r, &mut buf).await;
        seen = snap["fleet"]
            .as_array()
            .unwrap_or_else(|| panic!("no fleet: {snap}"))
            .iter()
            .map(|e| e["instance_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        if seen == want {
            break;
        }
    }
    assert_eq!(seen, want);
    drop(r);
    other.stop().await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn without_redis_the_fleet_is_null() {
    let (_emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |_| {}).await;
    let mut r = app
        .http
        .get(format!("{}/console/stream", app.api))
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    let snap = next_snapshot(&mut r, &mut buf).await;
    assert!(snap["fleet"].is_null(), "{snap}");
    drop(r);
    app.stop().await;
}
