//! One Clerk budget for the fleet, shown on three real `frontdesk serve` processes
//! (the [`Fleet`] harness of `fleet.rs`): a burst of cold look-ups well above the
//! budget, with the emulator enforcing the same limit as a sliding window, gets no
//! 429 from Clerk and never more than the limit in any window. `upstream.rs` shows the
//! same with in-process apps; here the budget crosses process boundaries.

use frontdesk_emulator::{Emulator, Knobs, RateLimit, max_in_any_window};
use serde_json::Value;

use crate::fleet::Fleet;
use crate::support;

/// `GET /v1/users/{id}` on an api listener: status, body, `Retry-After`.
async fn lookup(c: &reqwest::Client, api: &str, id: &str) -> (u16, Value, Option<u64>) {
    let r = c.get(format!("{api}/v1/users/{id}")).send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    (status, r.json().await.unwrap_or(Value::Null), retry)
}

#[tokio::test]
async fn three_binaries_share_one_clerk_budget_and_clerk_never_answers_429() {
    const LIMIT: u32 = 20;
    const WINDOW_MS: u64 = 2_000;
    const PER_INSTANCE: usize = 30;
    let limit = LIMIT.to_string();
    let window = WINDOW_MS.to_string();
    let fleet = Fleet::start(
        3,
        3 * PER_INSTANCE,
        &support::redis_url(),
        &[
            ("FRONTDESK_UPSTREAM__RATE_LIMIT_REQUESTS", &limit),
            ("FRONTDESK_UPSTREAM__RATE_LIMIT_WINDOW_MS", &window),
            // Long enough for a second window, too short for a third.
            ("FRONTDESK_UPSTREAM__QUEUE_TIMEOUT_MS", "3000"),
            ("FRONTDESK_UPSTREAM__MAX_RETRIES", "0"),
            // One call per cold user: the burst is 90 calls against a budget of 20.
            ("FRONTDESK_CACHE__BATCH_MAX", "1"),
        ],
    )
    .await;
    fleet.emu.set_knobs(Knobs {
        rate_limit: Some(Some(RateLimit {
            requests: LIMIT,
            window_ms: WINDOW_MS,
        })),
        ..Knobs::default()
    });
    fleet.emu.reset();

    let c = support::http();
    let mut calls = Vec::new();
    for i in 0..fleet.len() {
        for j in 0..PER_INSTANCE {
            let id = Emulator::seed_user_id(i * PER_INSTANCE + j);
            let (c, api) = (c.clone(), fleet.api(i).to_string());
            calls.push(async move { lookup(&c, &api, &id).await });
        }
    }
    let results = futures::future::join_all(calls).await;

    let stats = fleet.emu.stats();
    let mut modes = Vec::new();
    for i in 0..fleet.len() {
        let s: Value = support::get_json(&c, format!("{}/v1/stats", fleet.api(i))).await;
        modes.push(s["upstream"]["health"]["budget"]["mode"].clone());
    }
    assert_eq!(
        stats.rate_limited, 0,
        "Clerk answered no 429: {stats:?} {modes:?}"
    );
    assert!(
        stats.max_in_window <= u64::from(LIMIT),
        "never more than {LIMIT} calls in any {WINDOW_MS} ms window: {stats:?}"
    );
    for (i, mode) in modes.iter().enumerate() {
        assert_eq!(mode, "fleet", "instance {i} uses the fleet budget");
    }
    // The same from the emulator's call log, counted here.
    let log = fleet.emu.calls();
    assert_eq!(log.len() as u64, stats.total);
    assert!(log.iter().all(|c| !c.rate_limited), "no 429 in the log");
    let most = max_in_any_window(&log, WINDOW_MS as i64);
    assert!(
        most <= LIMIT as usize,
        "the call log holds {most} calls within {WINDOW_MS} ms"
    );
    let ok = results.iter().filter(|r| r.0 == 200).count();
    assert!(
        ok >= LIMIT as usize,
        "the budget was used: {ok} of {} answered",
        results.len()
    );
    assert!(
        ok < results.len(),
        "callers past the queue deadline were refused, not let through"
    );
    for (status, body, retry) in results.iter().filter(|r| r.0 != 200) {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["code"], "upstream_unavailable", "{body}");
        assert!(retry.is_some_and(|s| s >= 1), "Retry-After: {body}");
    }
    assert_eq!(
        stats.total, ok as u64,
        "only callers the budget admitted reached Clerk: {stats:?}"
    );
}
