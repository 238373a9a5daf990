//! cold-storm: N concurrent cold look-ups through the library (`UserCache::get`) and
//! over HTTP (`GET /v1/users/{id}`) by real HTTP/1.1 clients, one connection each: how
//! many list calls reach Clerk and how long until every caller has its answer. Then
//! one cold look-up alone, many times over one keep-alive connection, each paired with
//! the same list call sent straight to the emulator: what Frontdesk adds to Clerk's
//! own latency.
//!
//! The HTTP phases: `preconnected` opens the N connections first and then sends the N
//! requests at once (callers with warm connection pools); `connecting` has every
//! caller open its connection and send at once, so requests arrive spread over the
//! time it takes to accept N connections (callers that just started).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use frontdesk_emulator::{Emulator, EmulatorConfig, Latency, RunningEmulator};
use http_body_util::BodyExt;

use crate::ground::{Ground, Instance};
use crate::load::{self, Sender};
use crate::report::{Report, median};

#[derive(Debug, Clone)]
pub struct Args {
    pub n: usize,
    pub latency_ms: u64,
    /// Sequential lone look-ups whose added latency is measured.
    pub lone: usize,
}

/// What one phase saw.
struct Phase {
    /// List calls (`GET /v1/users`) and all `/v1` calls that reached the emulator.
    list_calls: u64,
    calls: u64,
    /// Until every caller had its answer.
    ms: f64,
    /// Callers that did not get their user.
    bad: usize,
}

fn seen(emu: &Emulator, ms: f64, bad: usize) -> Phase {
    let s = emu.stats();
    Phase {
        list_calls: s.get("GET /v1/users"),
        calls: s.total,
        ms,
        bad,
    }
}

async fn library(
    g: &Ground,
    fd: &Instance,
    emu: &Emulator,
    ids: Vec<String>,
) -> anyhow::Result<Phase> {
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
    Ok(seen(emu, ms, bad))
}

/// Sends `req` on `sender`: whether it answered 2xx.
async fn send(sender: &mut Sender, req: http::Request<http_body_util::Full<Bytes>>) -> bool {
    if sender.ready().await.is_err() {
        return false;
    }
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        let resp = sender.send_request(req).await.ok()?;
        let ok = resp.status().is_success();
        let _: Bytes = resp.into_body().collect().await.ok()?.to_bytes();
        Some(ok)
    })
    .await;
    matches!(answered, Ok(Some(true)))
}

/// One `GET /v1/users/{id}` on `sender`: whether it answered 200.
async fn look_up(sender: &mut Sender, api: SocketAddr, id: &str) -> bool {
    send(sender, load::get(api, &format!("/v1/users/{id}"), None)).await
}

/// N callers with open connections send at once.
async fn preconnected(fd: &Instance, emu: &Emulator, ids: Vec<String>) -> anyhow::Result<Phase> {
    let api = fd.api;
    let connected = futures::future::join_all(ids.iter().map(|_| load::connect(api))).await;
    let mut senders = Vec::with_capacity(ids.len());
    for c in connected {
        senders.push(c.map_err(|e| anyhow::anyhow!("connect: {e}"))?);
    }
    emu.reset();
    let t0 = Instant::now();
    let results = futures::future::join_all(
        senders
            .iter_mut()
            .zip(&ids)
            .map(|(s, id)| look_up(s, api, id)),
    )
    .await;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    Ok(seen(emu, ms, results.iter().filter(|ok| !**ok).count()))
}

/// N callers each open a connection and send on it at once.
async fn connecting(fd: &Instance, emu: &Emulator, ids: Vec<String>) -> Phase {
    let api = fd.api;
    emu.reset();
    let t0 = Instant::now();
    let results = futures::future::join_all(ids.iter().map(|id| async move {
        match load::connect(api).await {
            Ok(mut s) => look_up(&mut s, api, id).await,
            Err(_) => false,
        }
    }))
    .await;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    seen(emu, ms, results.iter().filter(|ok| !**ok).count())
}

/// Sequential cold look-ups over one connection, each right after the same list call
/// sent straight to the emulator over another (`GET /v1/users?user_id=…`, Clerk's own
/// latency as a client sees it, under the same load): per look-up, the time through
/// Frontdesk minus the direct time, in ms, sorted; and minus the configured latency.
async fn lone(
    fd: &Instance,
    emu: &RunningEmulator,
    ids: Vec<String>,
    latency_ms: u64,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, usize)> {
    let emu_addr: SocketAddr = emu
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()?;
    let bearer = emu.emulator.secret_key().to_string();
    let mut s = load::connect(fd.api)
        .await
        .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
    let mut d = load::connect(emu_addr)
        .await
        .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
    let mut added = Vec::with_capacity(ids.len());
    let mut over_configured = Vec::with_capacity(ids.len());
    let mut bad = 0;
    for id in &ids {
        let t0 = Instant::now();
        let direct = send(
            &mut d,
            load::get(
                emu_addr,
                &format!("/v1/users?user_id={id}&limit=1"),
                Some(&bearer),
            ),
        )
        .await;
        let direct_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let t1 = Instant::now();
        let via = look_up(&mut s, fd.api, id).await;
        let via_ms = t1.elapsed().as_secs_f64() * 1000.0;
        if direct && via {
            added.push(via_ms - direct_ms);
            over_configured.push(via_ms - latency_ms as f64);
        } else {
            bad += 1;
        }
    }
    added.sort_by(|a, b| a.total_cmp(b));
    Ok((added, over_configured, bad))
}

fn add_phase(r: &mut Report, name: &str, p: &Phase) {
    r.add(format!("{name}.list_calls"), p.list_calls as f64, "calls");
    if p.calls != p.list_calls {
        r.add(format!("{name}.all_calls"), p.calls as f64, "calls");
    }
    r.add(format!("{name}.ms"), p.ms, "ms");
}

pub async fn run(g: &Ground, a: &Args, _seed: u64) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let n = a.n.max(1);
    let m = a.lone.max(1);
    // Every phase looks up users no earlier phase touched: user 0 and 1..=n for the
    // library, n+1 and the next n over HTTP twice, then m for the lone look-ups.
    let emu = g
        .emulator(EmulatorConfig {
            users: 3 * n + 2 + m,
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
    let e = &emu.emulator;
    let mut bad = 0;

    let p = library(g, &fd, e, vec![id(0); n]).await?;
    add_phase(&mut r, "lib.one_user", &p);
    bad += p.bad;
    let p = library(g, &fd, e, (1..=n).map(id).collect()).await?;
    add_phase(&mut r, "lib.distinct", &p);
    bad += p.bad;
    let p = preconnected(&fd, e, vec![id(n + 1); n]).await?;
    add_phase(&mut r, "http.one_user", &p);
    bad += p.bad;
    let p = preconnected(&fd, e, (n + 2..=2 * n + 1).map(id).collect()).await?;
    add_phase(&mut r, "http.distinct.preconnected", &p);
    bad += p.bad;
    let p = connecting(&fd, e, (2 * n + 2..=3 * n + 1).map(id).collect()).await;
    add_phase(&mut r, "http.distinct.connecting", &p);
    bad += p.bad;
    let (added, over_configured, lone_bad) = lone(
        &fd,
        &emu,
        (3 * n + 2..3 * n + 2 + m).map(id).collect(),
        a.latency_ms,
    )
    .await?;
    bad += lone_bad;
    r.add("lone.added_ms p50", median(added.clone()), "ms");
    // The same minus the configured latency only (what earlier runs reported).
    r.add("lone.over_configured_ms p50", median(over_configured), "ms");
    if let Some(p90) = added.get(added.len().saturating_sub(1) * 9 / 10) {
        r.add("lone.added_ms p90", *p90, "ms");
    }
    r.add(
        "target.distinct.list_calls ≤",
        (n.div_ceil(100) + 2) as f64,
        "calls",
    );
    r.add("target.lone.added_ms <", 2.0, "ms");
    r.add("n", n as f64, "callers");
    r.add("clerk latency", a.latency_ms as f64, "ms");
    r.add("failed look-ups", bad as f64, "");
    if bad >= 5 * n {
        r.fail("no look-up succeeded");
    } else if bad > 0 {
        r.note(format!("{bad} look-ups did not return the user"));
    }
    fd.stop().await?;
    drop(emu);
    Ok(r)
}
