//! The Backend API proxy forwards paths as the client sent them: encoded slashes and
//! dot segments never become new segments or another endpoint, nothing outside `/v1/`
//! of Clerk is reached, and a write never invalidates another user than the one Clerk
//! changed. Each attack is asserted on the emulator's own counters and state.

use frontdesk::clock;
use frontdesk_emulator::Emulator;
use serde_json::{Value, json};

use crate::support::{self, http, raw_http, upstream_calls};

const KEY: &str = "sk_test_frontdesk_emulator";

async fn emulator_error_rate(url: &str) -> f64 {
    let knobs: Value = support::get_json(&http(), format!("{url}/__emulator/config")).await;
    knobs["error_rate"].as_f64().unwrap()
}

#[tokio::test]
async fn encoded_slashes_and_dot_segments_reach_nothing_upstream() {
    let (emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, clock::system(), |_| {}).await;
    let c = http();
    emu.reset();
    // Sent through reqwest: `%2F` stays as is on the wire.
    for path in [
        "/clerk/v1/users/x%2F..%2F..%2Fjwks",
        "/clerk/v1/users/..%2F..%2F__emulator%2Fconfig",
        "/clerk/v1/users/a%3Fb",
    ] {
        let r = c
            .get(format!("{}{path}", app.api))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "proxy_path_invalid", "{path}");
    }
    // Sent raw: clients (reqwest included) would resolve these before sending.
    for path in [
        "/clerk/v1/users/../jwks",
        "/clerk/v1/users/%2e%2e/%2E%2E/__emulator/config",
        "/clerk/v1/../__emulator/config",
        "/clerk/v1/users//x",
        "/clerk/v1/users/./x",
    ] {
        let r = raw_http(
            &app.api,
            format!(
                "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\nconnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["errors"][0]["code"], "proxy_path_invalid", "{path}");
    }
    assert_eq!(upstream_calls(&emu), 0, "{:?}", emu.stats());

    // The emulator's controls outside /v1 are neither read nor changed.
    let before = emulator_error_rate(&running.url).await;
    let r = c
        .post(format!(
            "{}/clerk/v1/users/..%2F..%2F__emulator%2Fconfig",
            app.api
        ))
        .bearer_auth(KEY)
        .json(&json!({"error_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(emulator_error_rate(&running.url).await, before);
    assert_eq!(upstream_calls(&emu), 0, "{:?}", emu.stats());
    app.stop().await;
}

#[tokio::test]
async fn a_write_to_an_encoded_path_changes_and_invalidates_no_other_user() {
    let (emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, clock::system(), |_| {}).await;
    let c = http();
    let ua = Emulator::seed_user_id(0);
    let ub = Emulator::seed_user_id(1);
    let get_ub = || {
        let c = c.clone();
        let url = format!("{}/clerk/v1/users/{ub}", app.api);
        async move {
            let r = c.get(url).bearer_auth(KEY).send().await.unwrap();
            let x = r.headers()["x-cache"].to_str().unwrap().to_string();
            (x, r.json::<Value>().await.unwrap())
        }
    };
    let (x, cached) = get_ub().await;
    assert_eq!(x, "MISS");
    emu.reset();
    let r = c
        .patch(format!("{}/clerk/v1/users/{ua}%2F..%2F{ub}", app.api))
        .bearer_auth(KEY)
        .json(&json!({"first_name": "Mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "proxy_path_invalid");
    assert_eq!(upstream_calls(&emu), 0, "{:?}", emu.stats());
    assert_ne!(emu.user(&ub).unwrap()["first_name"], "Mallory");
    assert_ne!(emu.user(&ua).unwrap()["first_name"], "Mallory");
    // UB's cached entry is still the truth, and a real write to UB reaches its entry.
    let (x, again) = get_ub().await;
    assert_eq!((x.as_str(), &again), ("HIT", &cached));
    let r = c
        .patch(format!("{}/clerk/v1/users/{ub}", app.api))
        .bearer_auth(KEY)
        .json(&json!({"first_name": "Bea"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, after) = get_ub().await;
    assert_eq!(after["first_name"], "Bea");
    app.stop().await;
}

#[tokio::test]
async fn user_reads_are_keyed_by_clerk_api_version() {
    let (emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, clock::system(), |_| {}).await;
    let c = http();
    let id = Emulator::seed_user_id(2);
    let default_version = app.state.config().clerk.api_version.clone();
    let get = |version: &str| {
        let r = c
            .get(format!("{}/clerk/v1/users/{id}", app.api))
            .bearer_auth(KEY)
            .header("clerk-api-version", version);
        async move {
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-cache"].to_str().unwrap().to_string()
        }
    };
    emu.reset();
    assert_eq!(get(&default_version).await, "MISS");
    assert_eq!(get(&default_version).await, "HIT");
    let list_calls = upstream_calls(&emu);
    assert_eq!(list_calls, 1, "{:?}", emu.stats());
    // Another version is not served the default version's bytes: its own entry.
    assert_eq!(get("2021-02-05").await, "MISS");
    assert_eq!(get("2021-02-05").await, "HIT");
    assert_eq!(
        emu.stats().get("GET /v1/users/{user_id}"),
        1,
        "{:?}",
        emu.stats()
    );
    assert_eq!(upstream_calls(&emu), 2);
    // A write invalidates both.
    let r = c
        .patch(format!("{}/clerk/v1/users/{id}", app.api))
        .bearer_auth(KEY)
        .json(&json!({"first_name": "Vera"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get("2021-02-05").await, "MISS");
    app.stop().await;
}
