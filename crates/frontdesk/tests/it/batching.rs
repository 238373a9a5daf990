//! The adaptive batcher over HTTP: how many list calls concurrent cold look-ups cost.
//! Clerk (the emulator) sits behind a latch that holds every connection until the test
//! opens it, so "all the look-ups are waiting" is a fact the test observes (the cache's
//! `batch_waiting`), not a race against a latency. The bounds are the ones the policy
//! guarantees for that arrival: with one call in flight and 100 ids per call, 300 ids
//! go in the first call (whatever had arrived) plus at most three full ones.

use std::net::SocketAddr;
use std::time::Duration;

use frontdesk::clock;
use frontdesk::config::Config;
use frontdesk_emulator::{Emulator, RunningEmulator};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::{self, TestApp, eventually, upstream_calls};

/// A TCP relay to the emulator that holds every connection until opened.
struct Latch {
    url: String,
    open: watch::Sender<bool>,
}

impl Latch {
    async fn before(emu: &RunningEmulator) -> Latch {
        let target: SocketAddr = emu
            .url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (open, gate) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut gate = gate.clone();
                tokio::spawn(async move {
                    if gate.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Latch { url, open }
    }

    fn open(&self) {
        let _ = self.open.send(true);
    }
}

/// A Frontdesk talking to the emulator through `latch`, no Redis.
async fn app_behind(
    emu: &RunningEmulator,
    latch: &Latch,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let url = latch.url.clone();
    support::app_with(emu, None, clock::system(), move |c| {
        c.clerk.api_url = url;
        // Held calls must outlive the wait for every look-up to queue.
        c.upstream.timeout_ms = 60_000;
        c.upstream.queue_timeout_ms = 60_000;
        tweak(c);
    })
    .await
}

fn list_calls(emu: &Emulator) -> u64 {
    emu.stats().get("GET /v1/users")
}

/// Sends one GET per path at once; each answer's status and `id`.
fn fire(app: &TestApp, paths: Vec<String>) -> Vec<tokio::task::JoinHandle<(u16, Option<String>)>> {
    paths
        .into_iter()
        .map(|path| {
            let http = app.http.clone();
            let url = format!("{}{path}", app.api);
            tokio::spawn(async move {
                let r = http.get(url).send().await.unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                (status, body["id"].as_str().map(str::to_string))
            })
        })
        .collect()
}

/// Waits until `n` look-ups wait in the batchers (ids, or alias values when `alias`).
async fn until_waiting(app: &TestApp, n: u64, alias: bool) {
    let users = app.state.users().cloned().unwrap();
    let queued = eventually(Duration::from_secs(30), || {
        let s = users.stats();
        let waiting = if alias {
            s.alias_batch_waiting
        } else {
            s.batch_waiting
        };
        async move { waiting == n }
    })
    .await;
    assert!(queued, "{n} look-ups never all waited: {:?}", users.stats());
}

/// Every caller got 200 and its own user.
async fn all_answered(
    waiting: Vec<tokio::task::JoinHandle<(u16, Option<String>)>>,
    ids: &[String],
) {
    for (task, id) in waiting.into_iter().zip(ids) {
        let (status, got) = task.await.unwrap();
        assert_eq!(status, 200, "look-up of {id}");
        assert_eq!(got.as_deref(), Some(id.as_str()));
    }
}

/// 300 cold look-ups of distinct ids, all waiting before Clerk answers: every caller
/// gets its user, only list calls reach Clerk, and their number is returned.
async fn three_hundred_cold_ids(tweak: impl FnOnce(&mut Config)) -> u64 {
    let (emu, running) = support::emulator(300).await;
    let latch = Latch::before(&running).await;
    let app = app_behind(&running, &latch, tweak).await;
    let ids: Vec<String> = (0..300).map(Emulator::seed_user_id).collect();
    emu.reset();
    let waiting = fire(
        &app,
        ids.iter().map(|id| format!("/v1/users/{id}")).collect(),
    );
    until_waiting(&app, 300, false).await;
    latch.open();
    all_answered(waiting, &ids).await;
    let calls = list_calls(&emu);
    assert_eq!(upstream_calls(&emu), calls, "only list calls");
    let stats = app.state.users().unwrap().stats();
    assert_eq!(stats.batched_ids, 300);
    assert_eq!(stats.batch_waiting, 0);
    app.stop().await;
    calls
}

#[tokio::test]
async fn three_hundred_cold_look_ups_with_one_call_in_flight_take_at_most_four_list_calls() {
    let calls = three_hundred_cold_ids(|c| c.cache.batch_max_in_flight = 1).await;
    assert!((3..=4).contains(&calls), "300 ids in {calls} list calls");
}

#[tokio::test]
async fn three_hundred_cold_look_ups_with_the_defaults_take_at_most_five_list_calls() {
    // Two calls in flight: the first goes at once, the second when full or after the
    // wait bound, and the rest (all waiting by then) in full calls as slots free.
    let calls = three_hundred_cold_ids(|_| {}).await;
    assert!((3..=5).contains(&calls), "300 ids in {calls} list calls");
}

#[tokio::test]
async fn a_lone_cold_look_up_makes_exactly_one_call() {
    let (emu, running) = support::emulator(10).await;
    let app = support::app_with(&running, None, clock::system(), |_| {}).await;
    emu.reset();
    for (i, n) in [(3, 1), (7, 2)] {
        let id = Emulator::seed_user_id(i);
        let r = app
            .http
            .get(format!("{}/v1/users/{id}", app.api))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["id"], id.as_str());
        assert_eq!(list_calls(&emu), n, "one list call per lone look-up");
        assert_eq!(upstream_calls(&emu), n);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_with_503_and_takes_look_ups_again_once_answered() {
    let (emu, running) = support::emulator(101).await;
    let latch = Latch::before(&running).await;
    let app = app_behind(&running, &latch, |c| {
        c.cache.batch_max = 100;
        c.cache.batch_queue_max = 100;
    })
    .await;
    let ids: Vec<String> = (0..100).map(Emulator::seed_user_id).collect();
    emu.reset();
    let waiting = fire(
        &app,
        ids.iter().map(|id| format!("/v1/users/{id}")).collect(),
    );
    until_waiting(&app, 100, false).await;

    let extra = Emulator::seed_user_id(100);
    let r = app
        .http
        .get(format!("{}/v1/users/{extra}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "upstream_unavailable");
    assert!(
        !body.to_string().contains("queue"),
        "no internals in the answer: {body}"
    );

    latch.open();
    all_answered(waiting, &ids).await;
    let r = app
        .http
        .get(format!("{}/v1/users/{extra}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a place is free again");
    assert_eq!(list_calls(&emu), upstream_calls(&emu));
    app.stop().await;
}

#[tokio::test]
async fn one_hundred_fifty_cold_emails_with_one_call_in_flight_take_at_most_three_list_calls() {
    let (emu, running) = support::emulator(150).await;
    let latch = Latch::before(&running).await;
    let app = app_behind(&running, &latch, |c| c.cache.batch_max_in_flight = 1).await;
    let ids: Vec<String> = (0..150).map(Emulator::seed_user_id).collect();
    let paths = ids
        .iter()
        .map(|id| {
            let email = emu.user(id).unwrap()["email_addresses"][0]["email_address"]
                .as_str()
                .unwrap()
                .to_string();
            format!("/v1/users/by-email/{email}")
        })
        .collect();
    emu.reset();
    let waiting = fire(&app, paths);
    until_waiting(&app, 150, true).await;
    latch.open();
    all_answered(waiting, &ids).await;
    let calls = list_calls(&emu);
    assert!((2..=3).contains(&calls), "150 emails in {calls} list calls");
    assert_eq!(upstream_calls(&emu), calls, "only list calls");
    app.stop().await;
}

#[tokio::test]
async fn look_ups_queued_past_the_queue_deadline_get_503_while_the_call_in_flight_still_answers() {
    let (emu, running) = support::emulator(3).await;
    let latch = Latch::before(&running).await;
    let app = app_behind(&running, &latch, |c| {
        c.cache.batch_max = 1;
        c.cache.batch_max_in_flight = 1;
        // The queued look-ups give up long before the call held at the latch (whose
        // own time-out stays 60 s).
        c.upstream.queue_timeout_ms = 300;
    })
    .await;
    let ids: Vec<String> = (0..3).map(Emulator::seed_user_id).collect();
    emu.reset();
    let waiting = fire(
        &app,
        ids.iter().map(|id| format!("/v1/users/{id}")).collect(),
    );
    let two_refused = eventually(Duration::from_secs(30), || {
        let done = waiting.iter().filter(|t| t.is_finished()).count();
        async move { done == 2 }
    })
    .await;
    assert!(two_refused, "the two queued look-ups were answered");
    latch.open();
    let mut statuses = Vec::new();
    for t in waiting {
        statuses.push(t.await.unwrap().0);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 503, 503]);
    assert_eq!(list_calls(&emu), 1, "only the call in flight reached Clerk");
    app.stop().await;
}
