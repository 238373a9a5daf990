//! Bulk metadata jobs against an emulator enforcing Clerk's two limits (per instance,
//! and per user on updates), with real Postgres.

use std::time::Duration;

use frontdesk::App;
use frontdesk::clock;
use frontdesk_emulator::{Emulator, Knobs, Latency, RateLimit};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{self, TestApp, http};

const METADATA: &str = "PATCH /v1/users/{user_id}/metadata";

/// Clerk's limits, with windows scaled from 10 s to 1 s so a test runs in seconds:
/// `instance` calls per second, 10 updates per user per second.
fn clerk_limits(emu: &Emulator, instance: u32) {
    emu.set_knobs(Knobs {
        rate_limit: Some(Some(RateLimit {
            requests: instance,
            window_ms: 1_000,
        })),
        user_update_limit: Some(Some(RateLimit {
            requests: 10,
            window_ms: 1_000,
        })),
        ..Knobs::default()
    });
}

fn paced(c: &mut frontdesk::Config, instance: u32) {
    c.upstream.rate_limit_requests = instance;
    c.upstream.rate_limit_window_ms = 1_000;
    c.bulk.per_user_window_ms = 1_000;
    c.max_body_bytes = 8 * 1024 * 1024;
}

async fn submit(app: &TestApp, updates: Value) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/users/bulk/metadata", app.api))
        .json(&json!({ "updates": updates }))
        .send()
        .await
        .unwrap()
}

async fn job(app: &TestApp, id: &str, results: bool) -> Value {
    support::get_json(
        &app.http,
        format!("{}/v1/jobs/{id}?results={results}", app.api),
    )
    .await
}

async fn wait_done(app: &TestApp, id: &str, within: Duration) -> Value {
    let done = support::eventually(within, || async {
        job(app, id, false).await["state"] == "done"
    })
    .await;
    let j = job(app, id, true).await;
    assert!(done, "job not done in time: {}", {
        let mut j = j.clone();
        j["results"] = Value::Null;
        j
    });
    j
}

#[tokio::test]
async fn a_thousand_item_job_finishes_with_zero_429s_under_both_limits() {
    let (emu, running) = support::emulator(50).await;
    clerk_limits(&emu, 200);
    let app = support::app_with(&running, None, clock::system(), |c| paced(c, 200)).await;
    // 50 users, 20 updates each: the per-user limit binds as well as the instance's.
    let updates: Vec<Value> = (0..1000)
        .map(|i| {
            json!({
                "user_id": Emulator::seed_user_id(i % 50),
                "public_metadata": { format!("k{}", i / 50): i },
            })
        })
        .collect();
    emu.reset();
    let r = submit(&app, Value::Array(updates)).await;
    assert_eq!(r.status(), 202);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/v1/jobs/job_")
    );
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let j = wait_done(&app, &id, Duration::from_secs(60)).await;
    assert_eq!(
        (j["total"].as_i64(), j["ok"].as_i64()),
        (Some(1000), Some(1000))
    );
    assert_eq!(j["failed"], 0);
    assert_eq!(j["pending"], 0);
    let results = j["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    assert!(
        results
            .iter()
            .all(|r| r["status"] == "ok" && r["attempts"] == 1)
    );
    let stats = emu.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(stats.user_rate_limited, 0, "{stats:?}");
    assert_eq!(stats.get(METADATA), 1000, "one call per item: {stats:?}");
    // Every update landed (Clerk merges metadata).
    let meta = &emu.user(&Emulator::seed_user_id(7)).unwrap()["public_metadata"];
    for k in 0..20 {
        assert_eq!(meta[format!("k{k}")], k * 50 + 7, "{meta}");
    }
    // Written through the user cache: no Clerk call to read a user back.
    emu.reset();
    let r = app
        .http
        .get(format!(
            "{}/v1/users/{}",
            app.api,
            Emulator::seed_user_id(7)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(support::upstream_calls(&emu), 0);
    app.stop().await;
}

#[tokio::test]
async fn per_item_failures_are_reported_with_clerks_code_and_bad_jobs_are_refused() {
    let (emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, clock::system(), |c| {
        c.bulk.max_items = 5;
    })
    .await;
    let ok_user = Emulator::seed_user_id(1);
    let r = submit(
        &app,
        json!([
            {"user_id": ok_user, "private_metadata": {"plan": "pro"}},
            {"user_id": "user_doesnotexist", "public_metadata": {"plan": "pro"}},
            {"user_id": ok_user, "unsafe_metadata": {"seen": true}},
        ]),
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let j = wait_done(&app, &id, Duration::from_secs(20)).await;
    assert_eq!((j["ok"].as_i64(), j["failed"].as_i64()), (Some(2), Some(1)));
    let results = j["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "ok");
    assert_eq!(results[0]["http_status"], 200);
    assert_eq!(results[1]["user_id"], "user_doesnotexist");
    assert_eq!(results[1]["status"], "failed");
    assert_eq!(results[1]["code"], "resource_not_found");
    assert_eq!(results[1]["http_status"], 404);
    assert_eq!(results[2]["status"], "ok");
    assert_eq!(
        emu.user(&ok_user).unwrap()["private_metadata"]["plan"],
        "pro"
    );

    // Bad jobs: a stable code, nothing stored, nothing sent.
    let item = |uid: &str| json!({"user_id": uid, "public_metadata": {"a": 1}});
    for (updates, code) in [
        (json!([]), "no_updates"),
        (json!(vec![item(&ok_user); 6]), "too_many_updates"),
        (json!([item("../../jwks")]), "invalid_user_id"),
        (
            json!([{"user_id": ok_user, "public_metadata": [1]}]),
            "invalid_metadata",
        ),
        (json!([{"user_id": ok_user}]), "empty_update"),
    ] {
        let r = submit(&app, updates).await;
        assert_eq!(r.status(), 400, "{code}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], code);
    }
    let r = submit(&app, json!([{"user_id": ok_user, "metadata": {}}])).await;
    assert_eq!(r.status(), 422);
    let c = http();
    let r = c
        .get(format!("{}/v1/jobs/nope", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_job_id");
    let r = c
        .get(format!("{}/v1/jobs/job_0123abc", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");
    app.stop().await;
}

/// The first instance's runner is a task of the test's own, aborted mid-job (a kill:
/// no clean-up runs, its lease is left behind); a second instance on the same
/// database takes the job once the lease runs out and finishes it.
#[tokio::test]
async fn a_job_is_resumed_by_another_instance_after_its_runner_is_killed() {
    let (emu, running) = support::emulator(300).await;
    emu.set_knobs(Knobs {
        latency_ms: Some(5),
        ..Knobs::default()
    });
    let _ = Latency::default();
    let a = support::app_with(&running, None, clock::system(), |c| {
        paced(c, 100);
        c.bulk.enabled = false;
        c.bulk.lease_ms = 1_000;
        c.bulk.concurrency = 4;
    })
    .await;
    let db = a.state.config().database_url.expose().to_string();
    let updates: Vec<Value> = (0..300)
        .map(|i| json!({"user_id": Emulator::seed_user_id(i), "public_metadata": {"migrated": true}}))
        .collect();
    emu.reset();
    let r = submit(&a, Value::Array(updates)).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    // A runs it in a task the test owns…
    let runner = tokio::spawn(a.state.bulk().clone().run(CancellationToken::new()));
    let started = support::eventually(Duration::from_secs(20), || async {
        job(&a, &id, false).await["ok"].as_i64().unwrap_or(0) >= 50
    })
    .await;
    assert!(started);
    // …and is killed mid-job.
    runner.abort();
    let _ = runner.await;
    let left = job(&a, &id, false).await;
    assert_eq!(left["state"], "running");
    assert!(left["pending"].as_i64().unwrap() > 0, "{left}");

    // B: another instance on the same database, running jobs.
    let mut c = support::config(&db, Some(&running), emu.secret_key());
    c.migrate_on_start = false;
    paced(&mut c, 100);
    c.bulk.lease_ms = 1_000;
    c.bulk.poll_interval_ms = 100;
    let b = TestApp::serve(
        App::build_with_clock(c, clock::system()).await.unwrap(),
        |r| r,
    )
    .await;
    let j = wait_done(&b, &id, Duration::from_secs(30)).await;
    assert_eq!(
        (j["ok"].as_i64(), j["failed"].as_i64()),
        (Some(300), Some(0))
    );
    for i in 0..300 {
        assert_eq!(
            emu.user(&Emulator::seed_user_id(i)).unwrap()["public_metadata"]["migrated"],
            true
        );
    }
    // Only updates in flight at the kill may have been sent twice.
    let sent = emu.stats().get(METADATA);
    assert!((300..=304).contains(&sent), "{sent} metadata calls");
    a.stop().await;
    b.stop().await;
}
