//! cold-storm: N concurrent cold look-ups of one user, and of N distinct users, through
//! the library (`UserCache::get`) and over HTTP (`GET /v1/users/{id}`): how many calls
//! reach Clerk and how long until every caller has its answer.

use std::time::Instant;

use frontdesk_emulator::{Emulator, EmulatorConfig, Latency};

use crate::ground::{Ground, Instance};
use crate::report::Report;

#[derive(Debug, Clone)]
pub struct Args {
    pub n: usize,
    pub latency_ms: u64,
}

/// (upstream calls, ms until all answered, answers that were not a found user)
async fn library(
    g: &Ground,
    fd: &Instance,
    emu: &Emulator,
    ids: Vec<String>,
) -> anyhow::Result<(u64, f64, usize)> {
    let users = fd
        .state
        .users()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("frontdesk has no user cache (no Clerk configured)"))?;
    emu.reset();
    let (ms, bad) = g
        .server
        .spawn(async move {
            let t0 = Instant::now();
            let results =
                futures::future::join_all(ids.iter().map(|id| users.get(id.as_str()))).await;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            let bad = results
                .iter()
                .filter(|r| !matches!(r, Ok(l) if l.user.is_some()))
                .count();
            (ms, bad)
        })
        .await?;
    Ok((emu.stats().total, ms, bad))
}

async fn over_http(
    fd: &Instance,
    emu: &Emulator,
    ids: Vec<String>,
) -> anyhow::Result<(u64, f64, usize)> {
    // One connection per caller (HTTP/1.1): N callers really are concurrent.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(ids.len())
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    emu.reset();
    let api = fd.api;
    let t0 = Instant::now();
    let results = futures::future::join_all(ids.iter().map(|id| {
        let http = http.clone();
        async move {
            http.get(format!("http://{api}/v1/users/{id}"))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        }
    }))
    .await;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let bad = results.iter().filter(|ok| !**ok).count();
    Ok((emu.stats().total, ms, bad))
}

pub async fn run(g: &Ground, a: &Args, _seed: u64) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let n = a.n.max(1);
    // User 0 and 1..=n for the library, n+1 and n+2..=2n+1 over HTTP: every phase cold.
    let emu = g
        .emulator(EmulatorConfig {
            users: 2 * n + 2,
            latency: Latency {
                fixed_ms: a.latency_ms,
                jitter_ms: 0,
            },
            ..EmulatorConfig::default()
        })
        .await?;
    let db = g.database().await?;
    let prefix = g.redis_prefix();
    let fd = g.frontdesk(g.config(&db, &emu, prefix.as_deref())).await?;
    let id = Emulator::seed_user_id;
    let bound = n.div_ceil(100) as f64;

    let (calls, ms, bad) = library(g, &fd, &emu.emulator, vec![id(0); n]).await?;
    r.add("lib.one_user.calls", calls as f64, "calls");
    r.add("lib.one_user.ms", ms, "ms");
    let (calls, ms, bad2) = library(g, &fd, &emu.emulator, (1..=n).map(id).collect()).await?;
    r.add("lib.distinct.calls", calls as f64, "calls");
    r.add("lib.distinct.ms", ms, "ms");
    let (calls, ms, bad3) = over_http(&fd, &emu.emulator, vec![id(n + 1); n]).await?;
    r.add("http.one_user.calls", calls as f64, "calls");
    r.add("http.one_user.ms", ms, "ms");
    let (calls, ms, bad4) =
        over_http(&fd, &emu.emulator, (n + 2..=2 * n + 1).map(id).collect()).await?;
    r.add("http.distinct.calls", calls as f64, "calls");
    r.add("http.distinct.ms", ms, "ms");
    r.add("target.distinct.calls ≤", bound, "calls");
    r.add("n", n as f64, "callers");
    r.add("clerk latency", a.latency_ms as f64, "ms");
    let bad_total = bad + bad2 + bad3 + bad4;
    r.add("failed look-ups", bad_total as f64, "");
    if bad_total == 4 * n {
        r.fail("no look-up succeeded");
    } else if bad_total > 0 {
        r.note(format!("{bad_total} look-ups did not return the user"));
    }
    fd.stop().await?;
    drop(emu);
    Ok(r)
}
