//! bulk: one bulk metadata job (`POST /v1/users/bulk/metadata`) against an emulator
//! enforcing Clerk's production limits — 1,000 calls per 10 s per instance and 10
//! updates per user per 10 s — with Frontdesk's budget set to the same 1,000 per 10 s.
//! Measures writes per second from the 202 until the job is done, and counts 429s.

use std::time::{Duration, Instant};

use frontdesk_emulator::{Emulator, EmulatorConfig, Knobs, Latency, RateLimit};
use serde_json::{Value, json};

use crate::ground::{Ground, http};
use crate::report::Report;

#[derive(Debug, Clone)]
pub struct Args {
    pub items: usize,
    /// Updates per user (the per-user limit binds when above 10 per 10 s).
    pub per_user: usize,
    pub latency_ms: u64,
}

/// Clerk's production instance limit.
const LIMIT: u32 = 1_000;
const WINDOW_MS: u64 = 10_000;

pub async fn run(g: &Ground, a: &Args, _seed: u64) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let per_user = a.per_user.max(1);
    let users = a.items.div_ceil(per_user).max(1);
    let emu = g
        .emulator(EmulatorConfig {
            users,
            latency: Latency {
                fixed_ms: a.latency_ms,
                jitter_ms: 0,
            },
            ..EmulatorConfig::default()
        })
        .await?;
    emu.emulator.set_knobs(Knobs {
        rate_limit: Some(Some(RateLimit {
            requests: LIMIT,
            window_ms: WINDOW_MS,
        })),
        user_update_limit: Some(Some(RateLimit {
            requests: 10,
            window_ms: 10_000,
        })),
        ..Knobs::default()
    });
    let db = g.database().await?;
    let prefix = g.redis_prefix();
    let mut c = g.config(&db, &emu, prefix.as_deref());
    c.upstream.rate_limit_requests = LIMIT;
    c.upstream.rate_limit_window_ms = WINDOW_MS;
    c.max_body_bytes = 16 * 1024 * 1024;
    let fd = g.frontdesk(c).await?;
    let updates: Vec<Value> = (0..a.items)
        .map(|i| {
            json!({
                "user_id": Emulator::seed_user_id(i % users),
                "public_metadata": { format!("k{}", i / users): i },
            })
        })
        .collect();
    let http = http();
    emu.emulator.reset();
    let t0 = Instant::now();
    let resp = http
        .post(format!("http://{}/v1/users/bulk/metadata", fd.api))
        .json(&json!({ "updates": updates }))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    let Some(id) = body["job_id"].as_str().map(str::to_string) else {
        anyhow::bail!("submit answered {status}: {body}");
    };
    let submitted = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30 + a.items as u64 / 50);
    let mut first_window_done = None;
    let job = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let job: Value = http
            .get(format!("http://{}/v1/jobs/{id}?results=false", fd.api))
            .send()
            .await?
            .json()
            .await?;
        let done = job["done"].as_u64().unwrap_or(0);
        if first_window_done.is_none() && t0.elapsed() >= Duration::from_millis(WINDOW_MS) {
            first_window_done = Some((done, t0.elapsed()));
        }
        if job["state"] == "done" || Instant::now() > deadline {
            break job;
        }
    };
    let total = t0.elapsed().as_secs_f64();
    let ok = job["ok"].as_u64().unwrap_or(0);
    let failed = job["failed"].as_u64().unwrap_or(0);
    let stats = emu.emulator.stats();
    let writes = stats.get("PATCH /v1/users/{user_id}/metadata");
    r.add("items", a.items as f64, "");
    r.add("updates per user", per_user as f64, "");
    r.add("submit (store 202)", submitted.as_secs_f64() * 1000.0, "ms");
    r.add("job time", total, "s");
    r.add("writes/s overall", ok as f64 / total, "/s");
    if let Some((done0, t_first)) = first_window_done {
        // After the first window the budget allows 100/s: the steady state.
        let steady = (ok.saturating_sub(done0)) as f64 / (total - t_first.as_secs_f64());
        r.add("writes/s after the first 10 s", steady, "/s");
        r.add("% of Clerk's 100/s (steady)", steady, "%");
    }
    r.add("ok", ok as f64, "");
    r.add("failed", failed as f64, "");
    r.add("metadata calls", writes as f64, "");
    r.add("429 instance", stats.rate_limited as f64, "");
    r.add("429 per user", stats.user_rate_limited as f64, "");
    r.add("max calls in any 10 s", stats.max_in_window as f64, "");
    r.add("clerk latency", a.latency_ms as f64, "ms");
    if job["state"] != "done" {
        r.fail(format!("job not done in time: {job}"));
    } else if failed > 0 || stats.rate_limited + stats.user_rate_limited > 0 {
        r.fail(format!(
            "{failed} failed items, {} + {} 429s",
            stats.rate_limited, stats.user_rate_limited
        ));
    }
    fd.stop().await?;
    drop(emu);
    Ok(r)
}
