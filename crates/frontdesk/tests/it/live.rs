//! Live events: `GET /_frontdesk/events` on two instances sharing Redis (and a
//! database), `POST /v1/events`, replay after a reconnect to the other instance,
//! `reset` beyond the history, tenant isolation, the slow-consumer cut, and refresh
//! jobs run once for a burst across the fleet.

use std::time::Duration;

use frontdesk::Config;
use frontdesk::config::Secret;
use frontdesk::events::AppEvent;
use frontdesk_emulator::{Emulator, MintSession, RunningEmulator};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{self, TestApp};

const WITHIN: Duration = Duration::from_secs(10);

struct Pair {
    emu: Emulator,
    _running: RunningEmulator,
    a: TestApp,
    b: TestApp,
}

/// Two instances on one database and one Redis prefix.
async fn pair(tweak: impl Fn(&mut Config)) -> Pair {
    let (emu, running) = support::emulator(60).await;
    let db = support::fresh_pg_database().await;
    let prefix = support::redis_prefix();
    let mut apps = Vec::new();
    for _ in 0..2 {
        let mut c = support::config(&db, Some(&running), emu.secret_key());
        c.redis_url = Some(Secret::new(support::redis_url()));
        c.redis_prefix = prefix.clone();
        tweak(&mut c);
        apps.push(TestApp::start(c).await);
    }
    let b = apps.pop().unwrap();
    let a = apps.pop().unwrap();
    for app in [&a, &b] {
        let live = app.state.live().clone();
        assert!(
            support::eventually(WITHIN, || {
                let live = live.clone();
                async move { live.fleet_ready() }
            })
            .await,
            "the fleet reader starts"
        );
    }
    Pair {
        emu,
        _running: running,
        a,
        b,
    }
}

/// Seeded (user, org) memberships, each with a session token for that org.
fn members(emu: &Emulator) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for o in emu.org_ids() {
        for i in 0..60 {
            let u = Emulator::seed_user_id(i);
            if let Ok(m) = emu.mint_session(MintSession {
                user_id: u.clone(),
                org_id: Some(o.clone()),
                ttl_s: Some(600),
                azp: None,
            }) {
                out.push((u, o.clone(), m.jwt));
            }
        }
    }
    out
}

#[derive(Debug)]
struct Frame {
    id: Option<String>,
    event: String,
    data: Value,
}

/// A minimal `text/event-stream` reader.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(app: &TestApp, token: &str, last_id: Option<&str>) -> Sse {
        let mut req = app
            .http
            .get(format!("{}/_frontdesk/events", app.edge))
            .bearer_auth(token);
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Sse {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (comments and the retry hint skipped); `None` at the end of the
    /// stream.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..at + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = v.to_string();
                    }
                }
                if event.is_empty() {
                    continue;
                }
                return Some(Frame {
                    id,
                    event,
                    data: serde_json::from_str(&data).unwrap(),
                });
            }
            let chunk = tokio::time::timeout(WITHIN, self.resp.chunk())
                .await
                .expect("an event within the time limit")
                .unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn post_event(app: &TestApp, tenant: &str, kind: &str, data: Value) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/v1/events", app.api))
        .json(&json!({"tenant": tenant, "type": kind, "data": data}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_reconnect_to_another_instance_replays_what_it_missed() {
    let p = pair(|_| {}).await;
    let (user, org, token) = members(&p.emu).remove(0);

    let mut s = Sse::open(&p.a, &token, None).await;
    let (status, body) =
        post_event(&p.b, &org, "invalidate", json!({"resource": "invoices"})).await;
    assert_eq!(status, 202, "{body}");
    let first = s.next().await.unwrap();
    assert_eq!(first.event, "invalidate");
    assert_eq!(first.data, json!({"resource": "invoices"}));
    let cursor = first.id.clone().unwrap();
    assert!(cursor.contains(&format!("{org}:")), "{cursor}");
    drop(s);

    // Missed while away: two for the org, one for the user, in this order.
    post_event(&p.b, &org, "invalidate", json!({"resource": "orders"})).await;
    post_event(&p.a, &user, "profile", json!({"n": 1})).await;
    post_event(&p.b, &org, "invalidate", json!({"resource": null})).await;

    let mut s = Sse::open(&p.b, &token, Some(&cursor)).await;
    let got: Vec<(String, Value)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let f = s.next().await.unwrap();
            v.push((f.event, f.data));
        }
        v
    };
    assert_eq!(
        got,
        vec![
            ("invalidate".to_string(), json!({"resource": "orders"})),
            ("profile".to_string(), json!({"n": 1})),
            ("invalidate".to_string(), json!({"resource": null})),
        ],
        "the replay holds exactly what was missed, without a reset"
    );
    // And the stream goes on live.
    post_event(&p.a, &org, "kpis.changed", json!({})).await;
    let live = s.next().await.unwrap();
    assert_eq!(live.event, "kpis.changed");
    let id = live.id.unwrap();
    assert!(
        id.contains(&format!("{user}:")) && id.contains(&format!("{org}:")),
        "{id}"
    );
    p.a.stop().await;
    p.b.stop().await;
}

#[tokio::test]
async fn a_cursor_older_than_the_history_gets_reset() {
    let p = pair(|c| c.live.history = 10).await;
    let (_, org, token) = members(&p.emu).remove(0);

    let mut s = Sse::open(&p.a, &token, None).await;
    post_event(&p.a, &org, "invalidate", json!({"resource": "a"})).await;
    let cursor = s.next().await.unwrap().id.unwrap();
    drop(s);
    for i in 0..300 {
        post_event(&p.b, &org, "invalidate", json!({"resource": i})).await;
    }
    let mut s = Sse::open(&p.b, &token, Some(&cursor)).await;
    let f = s.next().await.unwrap();
    assert_eq!(f.event, "reset", "{f:?}");
    // After the reset, new events flow.
    post_event(&p.a, &org, "after", json!({})).await;
    assert_eq!(s.next().await.unwrap().event, "after");

    // A Last-Event-ID that is not a cursor of ours resets too.
    let mut s = Sse::open(&p.a, &token, Some("42")).await;
    assert_eq!(s.next().await.unwrap().event, "reset");
    assert!(p.a.state.live().stats().resets + p.b.state.live().stats().resets >= 2);
    p.a.stop().await;
    p.b.stop().await;
}

#[tokio::test]
async fn a_user_never_receives_another_tenants_events() {
    let p = pair(|_| {}).await;
    let all = members(&p.emu);
    let (ua, oa, ta) = all[0].clone();
    let (ub, ob, tb) = all
        .iter()
        .find(|(u, o, _)| *u != ua && *o != oa)
        .cloned()
        .expect("two users in two different organizations");

    let mut sa = Sse::open(&p.a, &ta, None).await;
    let mut sb = Sse::open(&p.b, &tb, None).await;
    post_event(&p.a, &ob, "invalidate", json!({"resource": "secret-b"})).await;
    post_event(&p.b, &ub, "profile", json!({"who": "b"})).await;
    post_event(&p.b, &oa, "marker", json!({"for": "a"})).await;

    let f = sa.next().await.unwrap();
    assert_eq!(
        (f.event.as_str(), &f.data),
        ("marker", &json!({"for": "a"})),
        "A's first event is its own org's: nothing of B's reached it"
    );
    assert_eq!(
        sb.next().await.unwrap().data,
        json!({"resource": "secret-b"})
    );
    assert_eq!(sb.next().await.unwrap().data, json!({"who": "b"}));
    let _ = ua;

    // Without a session there is no stream.
    let r =
        p.a.http
            .get(format!("{}/_frontdesk/events", p.a.edge))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
    // Bad input to the publisher.
    let (s, body) = post_event(&p.a, "sess_1", "x", json!({})).await;
    assert_eq!((s, body["code"].as_str()), (400, Some("invalid_tenant")));
    let (s, body) = post_event(&p.a, &oa, "reset", json!({})).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (400, Some("invalid_event_type"))
    );
    let (s, body) = post_event(&p.a, &oa, "bad type", json!({})).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (400, Some("invalid_event_type"))
    );
    p.a.stop().await;
    p.b.stop().await;
}

#[tokio::test]
async fn a_deleted_user_or_a_revoked_session_loses_its_stream() {
    let p = pair(|c| c.live.heartbeat_ms = 100).await;
    let (user, _, _) = members(&p.emu).remove(0);
    let mint = || {
        p.emu
            .mint_session(MintSession {
                user_id: user.clone(),
                org_id: None,
                ttl_s: Some(600),
                azp: None,
            })
            .unwrap()
    };
    let event = |kind: &str, subject: &str, detail: Value| AppEvent {
        kind: kind.into(),
        subject: subject.into(),
        at_ms: 1,
        detail,
    };

    // The session is revoked (a webhook effect on the other instance): the event
    // arrives, then the stream ends.
    let session = mint();
    let mut s = Sse::open(&p.a, &session.jwt, None).await;
    p.b.state.events().publish(event(
        "session.revoked",
        &session.sid,
        json!({"user_id": user}),
    ));
    assert_eq!(s.next().await.unwrap().event, "session.revoked");
    assert!(s.next().await.is_none(), "a revoked session's stream ends");

    // A revocation the verifier learns (from the bus) ends it at the next heartbeat.
    let session = mint();
    let mut s = Sse::open(&p.a, &session.jwt, None).await;
    p.a.state
        .verifier()
        .unwrap()
        .revoke_session(&session.sid, u64::MAX / 2);
    assert!(s.next().await.is_none());

    // The user is deleted: the stream of every session of theirs ends.
    let session = mint();
    let mut s = Sse::open(&p.a, &session.jwt, None).await;
    p.b.state
        .events()
        .publish(event("user.deleted", &user, json!({"deleted": true})));
    assert_eq!(s.next().await.unwrap().event, "user.deleted");
    assert!(s.next().await.is_none(), "a deleted user's stream ends");
    let live = p.a.state.live().clone();
    assert!(
        support::eventually(WITHIN, || {
            let live = live.clone();
            async move { live.stats().subscribers == 0 }
        })
        .await
    );
    p.a.stop().await;
    p.b.stop().await;
}

#[tokio::test]
async fn a_slow_subscriber_is_disconnected_and_counted() {
    let p = pair(|c| {
        c.live.queue = 4;
        c.live.history = 10;
        c.live.history_ttl_ms = 60_000;
    })
    .await;
    let (_, org, token) = members(&p.emu).remove(0);
    let live = p.a.state.live().clone();

    // A subscriber that never reads.
    let addr = p.a.edge.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET /_frontdesk/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert!(
        support::eventually(WITHIN, || {
            let live = live.clone();
            async move { live.stats().subscribers == 1 }
        })
        .await
    );
    let big = "x".repeat(64 * 1024);
    let mut sent = 0;
    while live.stats().slow_disconnects == 0 && sent < 2_000 {
        p.b.state
            .live()
            .publish(&org, "invalidate", &json!({"pad": big}))
            .await
            .unwrap();
        sent += 1;
    }
    assert_eq!(live.stats().slow_disconnects, 1, "after {sent} events");
    assert_eq!(
        live.stats().subscribers,
        0,
        "it no longer counts as a subscriber"
    );
    // What was already on its way arrives, then the response ends (the last chunk),
    // without the events published after the cut.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let ended = tokio::time::timeout(WITHIN, async {
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
            if got.ends_with(b"\r\n0\r\n\r\n") {
                return;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends");
    let events = got.windows(15).filter(|w| *w == b"event: invalida").count();
    assert!(
        events < sent,
        "{events} of {sent} events were sent before the cut"
    );
    p.a.stop().await;
    p.b.stop().await;
}

#[tokio::test]
async fn a_burst_of_50_events_runs_a_job_once_across_two_instances() {
    // The job's own trace: one row per run.
    let db = support::fresh_pg_database().await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    sqlx::query("CREATE TABLE live_job_runs (id bigserial PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    let (emu, running) = support::emulator(60).await;
    let prefix = support::redis_prefix();
    let mut apps = Vec::new();
    for _ in 0..2 {
        let mut c = support::config(&db, Some(&running), emu.secret_key());
        c.redis_url = Some(Secret::new(support::redis_url()));
        c.redis_prefix = prefix.clone();
        c.jobs = vec![frontdesk::live::JobConfig {
            name: "kpis".into(),
            sql: "INSERT INTO live_job_runs DEFAULT VALUES".into(),
            on: vec!["invalidate:invoices".into(), "user.updated".into()],
            debounce_ms: 500,
            timeout_ms: 5_000,
        }];
        apps.push(TestApp::start(c).await);
    }
    for app in &apps {
        let live = app.state.live().clone();
        assert!(
            support::eventually(WITHIN, || {
                let live = live.clone();
                async move { live.fleet_ready() }
            })
            .await
        );
    }
    let (_, org, token) = members(&emu).remove(0);
    let mut s = Sse::open(&apps[0], &token, None).await;

    for i in 0..50 {
        let (status, _) = post_event(
            &apps[i % 2],
            &org,
            "invalidate",
            json!({"resource": "invoices"}),
        )
        .await;
        assert_eq!(status, 202);
    }
    // Another resource does not trigger it.
    post_event(&apps[0], &org, "invalidate", json!({"resource": "orders"})).await;

    let job = loop {
        let f = s.next().await.unwrap();
        if f.event == "job" {
            break f;
        }
    };
    assert_eq!(job.data["job"], "kpis");
    assert_eq!(job.data["outcome"], "ok");
    assert!(job.data["duration_ms"].is_u64());

    // Both instances saw all 50 and settled (one ran, the other found it covered).
    assert!(
        support::eventually(WITHIN, || {
            let stats: Vec<_> = apps
                .iter()
                .map(|a| a.state.live().job_stats("kpis").unwrap())
                .collect();
            async move {
                stats.iter().all(|s| s.triggers == 50 && !s.pending)
                    && stats.iter().map(|s| s.runs + s.covered).sum::<u64>() == 2
            }
        })
        .await
    );
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM live_job_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 1, "one run for the burst, fleet-wide");
    let total: u64 = apps
        .iter()
        .map(|a| a.state.live().job_stats("kpis").unwrap().runs)
        .sum();
    assert_eq!(total, 1);
    pool.close().await;
    for app in apps {
        app.stop().await;
    }
}

#[test]
fn jobs_are_refused_on_sqlite() {
    let mut c = Config::default();
    c.jobs = vec![frontdesk::live::JobConfig {
        name: "kpis".into(),
        sql: "SELECT 1".into(),
        on: vec!["user.updated".into()],
        debounce_ms: 10,
        timeout_ms: 10,
    }];
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("jobs") && err.contains("Postgres"), "{err}");
}
