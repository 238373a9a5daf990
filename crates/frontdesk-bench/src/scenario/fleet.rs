//! fleet: three real `frontdesk serve` processes (the binary, not in-process apps) on
//! one Postgres database and one private Redis, the emulator as Clerk enforcing its
//! limit as a sliding window (Frontdesk configured with the same limit, for the whole
//! fleet). Zipf reads on the three instances while users change in Clerk, half through
//! Frontdesk's proxy (`PATCH /clerk/v1/users/{id}`), half in the emulator and heard of by
//! webhook; sessions revoked by signed webhooks; Redis paused (`SIGSTOP`, `SIGCONT`) for
//! a while in the middle. Reports the stale-read window after an acknowledged change
//! (until every instance serves the new value), Clerk calls per window against the
//! limit (and 429s), and how long a revocation takes to be refused everywhere.
//!
//! Probes poll every instance independently every few ms; their figures include that
//! polling and one round trip, and the machine's load.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use frontdesk_emulator::{
    CallRecord, Emulator, EmulatorConfig, Knobs, Latency, MintSession, RateLimit, RunningEmulator,
    max_in_any_window, svix,
};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::zipf::{WEBHOOKS, pick_updates, version_of};
use crate::ground::{Ground, WEBHOOK_SECRET};
use crate::load::{self, Outcome, Spec, Verdict, Workload, pct_us};
use crate::report::Report;
use crate::rng::{Rng, Zipf};

#[derive(Debug, Clone)]
pub struct Args {
    pub users: usize,
    pub s: f64,
    pub latency_ms: u64,
    pub connections: usize,
    pub duration_s: f64,
    /// Clerk's limit: the emulator enforces it, the fleet is configured with it.
    pub limit: u32,
    pub window_ms: u64,
    /// Changes per second (alternately through the proxy and in the emulator).
    pub updates_per_s: f64,
    /// Sessions revoked during the run.
    pub revocations: usize,
    /// When Redis is paused, as a share of the run, and for how long.
    pub pause_at: f64,
    pub pause_s: f64,
}

const INSTANCES: usize = 3;
/// A change or a revocation not seen everywhere by then counts as never.
const GIVE_UP: Duration = Duration::from_secs(30);
const PROBE_EVERY: Duration = Duration::from_millis(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `FRONTDESK_BIN`, else `frontdesk` next to this executable (`target/<profile>/`).
pub fn frontdesk_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FRONTDESK_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join("frontdesk");
    p.is_file().then_some(p)
}

async fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .await
        .context("run kill")?;
    if !status.success() {
        bail!("kill {sig} {pid} failed");
    }
    Ok(())
}

fn addr_of(url: &str) -> anyhow::Result<SocketAddr> {
    url.trim_start_matches("http://")
        .parse()
        .with_context(|| format!("address in {url:?}"))
}

/// One `frontdesk serve` process.
pub struct Node {
    child: Child,
    pub edge: SocketAddr,
    pub api: SocketAddr,
}

impl Node {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn spawn(bin: &Path, dir: &Path, env: &[(String, String)]) -> anyhow::Result<Node> {
        let mut cmd = Command::new(bin);
        for (k, _) in std::env::vars_os() {
            let inherited = k.to_str().is_some_and(|k| {
                k.starts_with("CLERK_")
                    || k.starts_with("FRONTDESK_")
                    || k == "DATABASE_URL"
                    || k == "REDIS_URL"
            });
            if inherited {
                cmd.env_remove(k);
            }
        }
        cmd.arg("serve")
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout of frontdesk serve"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("frontdesk ready: edge ") {
                    let mut words = rest.split_whitespace();
                    let edge = addr_of(words.next().unwrap_or(""))?;
                    let api = addr_of(words.nth(1).unwrap_or(""))?;
                    return Ok::<_, anyhow::Error>((edge, api));
                }
            }
            bail!("frontdesk serve exited before it was ready")
        })
        .await
        .map_err(|_| anyhow!("frontdesk serve not ready within 60 s"))??;
        // Keep draining so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Node {
            child,
            edge: ready.0,
            api: ready.1,
        })
    }

    /// SIGTERM (graceful shutdown), SIGKILL after 10 s.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = signal(pid, "-TERM").await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A redis-server of this run's own, to pause.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let bin =
            std::env::var("FRONTDESK_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {bin} (set FRONTDESK_TEST_REDIS_SERVER)"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("{bin} did not listen on {port} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { child, port })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .ok_or_else(|| anyhow!("redis-server exited"))
    }
}

/// Zipf look-ups on the native API of every instance.
struct Reads {
    addrs: Vec<SocketAddr>,
    ids: Arc<Vec<String>>,
    zipf: Zipf,
    /// Per user: the latest change acknowledged (0: none).
    acked: Arc<Vec<AtomicU32>>,
    paused: Arc<AtomicBool>,
}

impl Workload for Reads {
    /// (class: 0 Redis up, 1 Redis paused, acknowledged version when sent)
    type Meta = (usize, u32);

    fn addr(&self, conn: usize) -> SocketAddr {
        self.addrs[conn % self.addrs.len()]
    }

    fn request(&self, conn: usize, rng: &mut Rng) -> (Request<Full<Bytes>>, Self::Meta) {
        let i = self.zipf.sample(rng);
        let acked = self.acked[i].load(Ordering::Acquire);
        let class = usize::from(self.paused.load(Ordering::Relaxed));
        let req = load::get(self.addr(conn), &format!("/v1/users/{}", self.ids[i]), None);
        (req, (class, acked))
    }

    fn verdict(&self, (class, acked): Self::Meta, status: StatusCode, body: &Bytes) -> Verdict {
        let outcome = if status != StatusCode::OK {
            Outcome::Error
        } else if acked == 0 {
            Outcome::Ok
        } else {
            match first_name(body) {
                Some(n) if version_of(&n) >= acked => Outcome::Ok,
                Some(_) => Outcome::Stale,
                None => Outcome::Error,
            }
        };
        Verdict { class, outcome }
    }

    fn classes(&self) -> usize {
        2
    }
}

fn first_name(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("first_name")?
        .as_str()
        .map(str::to_string)
}

/// What one probe of one instance saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// The new state.
    New,
    /// The state from before the acknowledged change: a stale read.
    Old,
    /// Neither (an error, a time-out): not stale, not fresh either.
    Neither,
}

/// When every instance `k < n` first answered [`Seen::New`] (each polled on its own;
/// `None` when one did not within [`GIVE_UP`] of `since`), and the last time any
/// answered [`Seen::Old`].
async fn seen_everywhere<F, Fut>(
    n: usize,
    since: Instant,
    check: F,
) -> (Option<Instant>, Option<Instant>)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Seen>,
{
    let each = (0..n).map(|k| {
        let check = &check;
        async move {
            let mut last_old = None;
            loop {
                match check(k).await {
                    Seen::New => return (Some(Instant::now()), last_old),
                    Seen::Old => last_old = Some(Instant::now()),
                    Seen::Neither => {}
                }
                if since.elapsed() > GIVE_UP {
                    return (None, last_old);
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
        }
    });
    let seen = futures::future::join_all(each).await;
    let last_old = seen.iter().filter_map(|s| s.1).max();
    let everywhere = seen
        .into_iter()
        .try_fold(since, |latest, s| s.0.map(|t| latest.max(t)));
    (everywhere, last_old)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `PATCH /clerk/v1/users/{id}` through one instance; acknowledged by its 200.
    Proxy,
    /// Changed in the emulator (Clerk's side); Frontdesk hears by webhook.
    Clerk,
    /// A signed `session.revoked` posted to instance 0; acknowledged by its 200.
    Revocation,
}

/// One acknowledged change, when every instance had it, and when an instance last
/// answered with the state from before it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    kind: Kind,
    acked: Instant,
    everywhere: Option<Instant>,
    last_old: Option<Instant>,
}

type Samples = Arc<Mutex<Vec<Sample>>>;

fn push(samples: &Samples, s: Sample) {
    if let Ok(mut v) = samples.lock() {
        v.push(s);
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Round trips of the probes, ms: what a window figure cannot resolve below.
type Rtt = Arc<Mutex<Vec<f64>>>;

fn push_ms(rtt: &Rtt, since: Instant) {
    if let Ok(mut v) = rtt.lock() {
        v.push(since.elapsed().as_secs_f64() * 1e3);
    }
}

/// Percentile `p` of unsorted values.
fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// p50/p99/max (ms) from `from` to `to` of the samples of `kinds` kept by `keep`, and
/// how many have no `to`.
fn windows(
    r: &mut Report,
    name: &str,
    samples: &[Sample],
    kinds: &[Kind],
    keep: impl Fn(&Sample) -> bool,
    from: impl Fn(&Sample) -> Instant,
    to: impl Fn(&Sample) -> Option<Instant>,
) {
    let chosen: Vec<&Sample> = samples
        .iter()
        .filter(|s| kinds.contains(&s.kind) && keep(s))
        .collect();
    let ms: Vec<f64> = chosen
        .iter()
        .filter_map(|s| to(s).map(|t| t.saturating_duration_since(from(s)).as_secs_f64() * 1e3))
        .collect();
    let never = chosen.len() - ms.len();
    r.add(format!("{name} n"), chosen.len() as f64, "");
    r.add(format!("{name} p50"), pct(&ms, 50.0), "ms");
    r.add(format!("{name} p99"), pct(&ms, 99.0), "ms");
    r.add(format!("{name} max"), pct(&ms, 100.0), "ms");
    if never > 0 {
        r.add(format!("{name} never"), never as f64, "");
        r.note(format!(
            "{name}: {never} not seen on every instance within {} s",
            GIVE_UP.as_secs()
        ));
    }
}

/// A signed `session.revoked` for `sid`, posted to `edge` as Clerk would.
async fn post_revoked(
    http: &reqwest::Client,
    edge: SocketAddr,
    emu: &Emulator,
    session: &(String, String, i64),
    msg_id: &str,
) -> anyhow::Result<()> {
    let (sid, user, exp_s) = session;
    let now_ms = unix_ms();
    let body = json!({
        "data": {"object": "session", "id": sid, "user_id": user, "status": "revoked",
                 "expire_at": exp_s * 1000, "updated_at": now_ms},
        "object": "event",
        "type": "session.revoked",
        "timestamp": now_ms,
        "instance_id": emu.instance_id(),
    })
    .to_string();
    let ts = now_ms / 1000;
    let sig = svix::sign(WEBHOOK_SECRET, msg_id, ts, body.as_bytes())
        .map_err(|e| anyhow!("sign: {e}"))?;
    let r = http
        .post(format!("http://{edge}{WEBHOOKS}"))
        .header("content-type", "application/json")
        .header("svix-id", msg_id)
        .header("svix-timestamp", ts.to_string())
        .header("svix-signature", sig)
        .body(body)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("webhook answered {}", r.status());
    }
    Ok(())
}

async fn me_status(http: &reqwest::Client, edge: SocketAddr, token: &str) -> (u16, String) {
    let r = http
        .get(format!("http://{edge}/_frontdesk/me"))
        .bearer_auth(token)
        .timeout(PROBE_TIMEOUT)
        .send()
        .await;
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body["code"].as_str().unwrap_or("").to_string())
        }
        Err(_) => (0, String::new()),
    }
}

async fn serves_version(http: &reqwest::Client, api: SocketAddr, id: &str, version: u32) -> Seen {
    let r = http
        .get(format!("http://{api}/v1/users/{id}"))
        .timeout(PROBE_TIMEOUT)
        .send()
        .await;
    let name = match r {
        Ok(r) if r.status() == reqwest::StatusCode::OK => {
            r.bytes().await.ok().and_then(|b| first_name(&b))
        }
        _ => None,
    };
    match name {
        Some(n) if version_of(&n) >= version => Seen::New,
        Some(_) => Seen::Old,
        None => Seen::Neither,
    }
}

pub async fn run(g: &Ground, a: &Args, seed: u64) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let Some(bin) = frontdesk_bin() else {
        r.unavailable = Some(
            "no frontdesk binary next to frontdesk-bench (cargo build -p frontdesk --bin \
             frontdesk) and FRONTDESK_BIN unset"
                .into(),
        );
        return Ok(r);
    };
    let redis = match PrivateRedis::start().await {
        Ok(redis) => redis,
        Err(e) => {
            r.unavailable = Some(format!("needs a redis-server of its own: {e:#}"));
            return Ok(r);
        }
    };
    let emu = g
        .emulator(EmulatorConfig {
            users: a.users,
            latency: Latency {
                fixed_ms: a.latency_ms,
                jitter_ms: 0,
            },
            rate_limit: Some(RateLimit {
                requests: a.limit,
                window_ms: a.window_ms,
            }),
            ..EmulatorConfig::default()
        })
        .await?;
    let db = g.database().await?;
    let dir = std::env::temp_dir().join(format!("fdbench-fleet-{}", g.unique()));
    std::fs::create_dir_all(&dir)?;
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", db.clone()),
        ("REDIS_URL", redis.url()),
        ("FRONTDESK_REDIS_PREFIX", format!("fdbench:{}:", g.unique())),
        ("CLERK_SECRET_KEY", emu.emulator.secret_key().to_string()),
        ("CLERK_API_URL", emu.url.clone()),
        ("CLERK_WEBHOOK_SIGNING_SECRET", WEBHOOK_SECRET.to_string()),
        ("FRONTDESK_EDGE_ADDR", "127.0.0.1:0".into()),
        ("FRONTDESK_API_ADDR", "127.0.0.1:0".into()),
        ("FRONTDESK_LOG", "warn".into()),
        ("FRONTDESK_WEBHOOKS__POLL_INTERVAL_MS", "50".into()),
        (
            "FRONTDESK_UPSTREAM__RATE_LIMIT_REQUESTS",
            a.limit.to_string(),
        ),
        (
            "FRONTDESK_UPSTREAM__RATE_LIMIT_WINDOW_MS",
            a.window_ms.to_string(),
        ),
        (
            "FRONTDESK_UPSTREAM__EXPECTED_INSTANCES",
            INSTANCES.to_string(),
        ),
        // Below the load generator's 10 s request limit: a caller the budget cannot
        // serve gets 503 (counted as an error) instead of timing out the connection.
        ("FRONTDESK_UPSTREAM__QUEUE_TIMEOUT_MS", "5000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut nodes = Vec::new();
    for _ in 0..INSTANCES {
        match Node::spawn(&bin, &dir, &env).await {
            Ok(n) => nodes.push(n),
            Err(e) => {
                for n in nodes {
                    n.stop().await;
                }
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        }
    }
    let outcome = measure(&mut r, a, seed, &emu, &redis, &nodes).await;
    for n in nodes {
        n.stop().await;
    }
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    r.note(format!(
        "{INSTANCES} x {} (a {} build), one private redis-server, Clerk limit {} per {} ms \
         enforced by the emulator (sliding) and configured in the fleet",
        bin.display(),
        if bin.components().any(|c| c.as_os_str() == "release") {
            "release"
        } else {
            "debug"
        },
        a.limit,
        a.window_ms
    ));
    Ok(r)
}

async fn measure(
    r: &mut Report,
    a: &Args,
    seed: u64,
    emu: &RunningEmulator,
    redis: &PrivateRedis,
    nodes: &[Node],
) -> anyhow::Result<()> {
    let http = crate::ground::http();
    let edges: Vec<SocketAddr> = nodes.iter().map(|n| n.edge).collect();
    let apis: Vec<SocketAddr> = nodes.iter().map(|n| n.api).collect();
    emu.emulator.set_knobs(Knobs {
        webhook_url: Some(Some(format!("http://{}{WEBHOOKS}", edges[0]))),
        webhook_secret: Some(Some(WEBHOOK_SECRET.to_string())),
        ..Knobs::default()
    });

    // Sessions to revoke, each known (verified, context cached) on every instance.
    let mut sessions = Vec::new();
    for k in 0..a.revocations.min(a.users) {
        let user = Emulator::seed_user_id(a.users - 1 - k);
        let e = emu.emulator.clone();
        let u = user.clone();
        let m = tokio::task::spawn_blocking(move || {
            e.mint_session(MintSession {
                user_id: u,
                ttl_s: Some(3_600),
                ..Default::default()
            })
        })
        .await?
        .map_err(|e| anyhow!("mint session: {e}"))?;
        for edge in &edges {
            let (status, code) = me_status(&http, *edge, &m.jwt).await;
            if status != 200 {
                bail!("/me on {edge} answered {status} {code} before revocation");
            }
        }
        sessions.push(((m.sid, user, m.exp), m.jwt));
    }

    let ids: Arc<Vec<String>> = Arc::new((0..a.users).map(Emulator::seed_user_id).collect());
    let zipf = Zipf::new(a.users, a.s, seed ^ 0x21bf);
    let acked: Arc<Vec<AtomicU32>> = Arc::new((0..a.users).map(|_| AtomicU32::new(0)).collect());
    let paused = Arc::new(AtomicBool::new(false));
    let mut rng = Rng::new(seed ^ 0xf1ee7);
    let duration = super::secs(a.duration_s);
    let n_updates = ((a.updates_per_s * duration.as_secs_f64()).round() as usize).min(a.users / 2);
    let updates = pick_updates(&zipf, a.users, n_updates, &mut rng);
    let samples: Samples = Arc::new(Mutex::new(Vec::new()));
    let rtt: Rtt = Arc::new(Mutex::new(Vec::new()));
    let w = Arc::new(Reads {
        addrs: apis.clone(),
        ids: ids.clone(),
        zipf,
        acked: acked.clone(),
        paused: paused.clone(),
    });

    emu.emulator.reset();
    let start = Instant::now();
    let spec = Spec::new(a.connections, duration);

    // Changes: spread over the first 90% of the run, each probed until every instance
    // serves it.
    let updater = {
        let (ids, acked, samples, http, rtt) = (
            ids.clone(),
            acked.clone(),
            samples.clone(),
            http.clone(),
            rtt.clone(),
        );
        let emulator = emu.emulator.clone();
        let secret = emu.emulator.secret_key().to_string();
        let apis = apis.clone();
        tokio::spawn(async move {
            let every = duration.mul_f64(0.9) / updates.len().max(1) as u32;
            let mut probes = Vec::new();
            for (k, i) in updates.into_iter().enumerate() {
                tokio::time::sleep_until((start + every * k as u32).into()).await;
                let version = k as u32 + 1;
                let patch = json!({ "first_name": format!("bench-{version}") });
                let kind = if k % 2 == 0 { Kind::Proxy } else { Kind::Clerk };
                let (ids, acked, samples, http, rtt) = (
                    ids.clone(),
                    acked.clone(),
                    samples.clone(),
                    http.clone(),
                    rtt.clone(),
                );
                let (emulator, secret, apis) = (emulator.clone(), secret.clone(), apis.clone());
                probes.push(tokio::spawn(async move {
                    let id = &ids[i];
                    let ok = match kind {
                        Kind::Proxy => http
                            .patch(format!(
                                "http://{}/clerk/v1/users/{id}",
                                apis[(k / 2) % apis.len()]
                            ))
                            .bearer_auth(&secret)
                            .json(&patch)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success()),
                        _ => emulator.update_user(id, patch).is_ok(),
                    };
                    if !ok {
                        return false;
                    }
                    let at = Instant::now();
                    acked[i].store(version, Ordering::Release);
                    let (everywhere, last_old) = seen_everywhere(apis.len(), at, |n| {
                        let (http, rtt, api) = (&http, &rtt, apis[n]);
                        async move {
                            let t = Instant::now();
                            let seen = serves_version(http, api, id, version).await;
                            push_ms(rtt, t);
                            seen
                        }
                    })
                    .await;
                    push(
                        &samples,
                        Sample {
                            kind,
                            acked: at,
                            everywhere,
                            last_old,
                        },
                    );
                    true
                }));
            }
            let mut failed = 0usize;
            for p in probes {
                if !p.await.unwrap_or(false) {
                    failed += 1;
                }
            }
            failed
        })
    };

    // Revocations: spread over the run like the changes.
    let revoker = {
        let (samples, http, rtt) = (samples.clone(), http.clone(), rtt.clone());
        let emulator = emu.emulator.clone();
        let edges = edges.clone();
        let run_id = seed;
        tokio::spawn(async move {
            let every = duration.mul_f64(0.9) / sessions.len().max(1) as u32;
            let mut probes = Vec::new();
            for (k, (session, token)) in sessions.into_iter().enumerate() {
                tokio::time::sleep_until((start + every * k as u32 + every / 2).into()).await;
                let (samples, http, rtt, emulator, edges) = (
                    samples.clone(),
                    http.clone(),
                    rtt.clone(),
                    emulator.clone(),
                    edges.clone(),
                );
                probes.push(tokio::spawn(async move {
                    let msg = format!("msg_fleet{run_id:x}r{k}");
                    if post_revoked(&http, edges[0], &emulator, &session, &msg)
                        .await
                        .is_err()
                    {
                        return false;
                    }
                    let at = Instant::now();
                    let (everywhere, last_old) = seen_everywhere(edges.len(), at, |n| {
                        let (http, rtt, token, edge) = (&http, &rtt, &token, edges[n]);
                        async move {
                            let t = Instant::now();
                            let answer = me_status(http, edge, token).await;
                            push_ms(rtt, t);
                            match answer {
                                (401, code) if code == "session_revoked" => Seen::New,
                                (200, _) => Seen::Old,
                                _ => Seen::Neither,
                            }
                        }
                    })
                    .await;
                    push(
                        &samples,
                        Sample {
                            kind: Kind::Revocation,
                            acked: at,
                            everywhere,
                            last_old,
                        },
                    );
                    true
                }));
            }
            let mut failed = 0usize;
            for p in probes {
                if !p.await.unwrap_or(false) {
                    failed += 1;
                }
            }
            failed
        })
    };

    // Redis paused in the middle; always resumed.
    let pause = {
        let pid = redis.pid()?;
        let paused = paused.clone();
        let at = duration.mul_f64(a.pause_at.clamp(0.0, 1.0));
        let length = Duration::from_secs_f64(a.pause_s.max(0.0));
        tokio::spawn(async move {
            tokio::time::sleep_until((start + at).into()).await;
            signal(pid, "-STOP").await?;
            let stopped = Instant::now();
            let stopped_ms = unix_ms();
            paused.store(true, Ordering::Relaxed);
            tokio::time::sleep(length).await;
            let mut resumed = signal(pid, "-CONT").await;
            if resumed.is_err() {
                resumed = signal(pid, "-CONT").await;
            }
            paused.store(false, Ordering::Relaxed);
            resumed.map(|()| (stopped, Instant::now(), stopped_ms, unix_ms()))
        })
    };

    let run = load::drive(w, spec, seed).await;
    let (stopped, resumed, stopped_ms, resumed_ms) = pause.await??;
    let failed_updates = tokio::time::timeout(GIVE_UP + Duration::from_secs(10), updater)
        .await
        .map_err(|_| anyhow!("change probes did not finish"))??;
    let failed_revocations = tokio::time::timeout(GIVE_UP + Duration::from_secs(10), revoker)
        .await
        .map_err(|_| anyhow!("revocation probes did not finish"))??;
    let elapsed = start.elapsed();
    let stats = emu.emulator.stats();

    let mut budget = [0f64; 2];
    let mut modes = Vec::new();
    for api in &apis {
        let s: Value = http
            .get(format!("http://{api}/v1/stats"))
            .send()
            .await?
            .json()
            .await?;
        let b = &s["upstream"]["health"]["budget"];
        budget[0] += b["timeouts"].as_f64().unwrap_or(0.0);
        budget[1] += b["local_grants"].as_f64().unwrap_or(0.0);
        modes.push(b["mode"].as_str().unwrap_or("?").to_string());
    }

    let all = run.total();
    r.add("requests", all.answered() as f64, "req");
    r.add("rps", run.rps(), "req/s");
    r.add("p50", pct_us(&all.lat_ns, 50.0), "µs");
    r.add("p99", pct_us(&all.lat_ns, 99.0), "µs");
    r.add("paused.p99", pct_us(&run.classes[1].lat_ns, 99.0), "µs");
    r.add("errors", all.errors as f64, "req");
    r.add("paused.errors", run.classes[1].errors as f64, "req");
    r.add("stale reads after ack", all.stale as f64, "req");

    let samples: Vec<Sample> = samples.lock().map(|v| v.clone()).unwrap_or_default();
    // A sample is "steady" when its whole window saw Redis up; the others overlap
    // the pause.
    let overlaps = |s: &Sample| {
        let end = s.everywhere.unwrap_or(s.acked + GIVE_UP);
        s.acked < resumed && end > stopped
    };
    let steady = |s: &Sample| !overlaps(s);
    let changes = [Kind::Proxy, Kind::Clerk];
    let acked = |s: &Sample| s.acked;
    let everywhere = |s: &Sample| s.everywhere;
    // 0 when no instance answered the old state after the acknowledgement.
    let old = |s: &Sample| Some(s.last_old.unwrap_or(s.acked));
    windows(
        r,
        "stale window",
        &samples,
        &changes,
        steady,
        acked,
        everywhere,
    );
    windows(
        r,
        "stale window proxy",
        &samples,
        &[Kind::Proxy],
        steady,
        acked,
        everywhere,
    );
    windows(
        r,
        "stale window webhook",
        &samples,
        &[Kind::Clerk],
        steady,
        acked,
        everywhere,
    );
    windows(
        r,
        "old value served until",
        &samples,
        &changes,
        steady,
        acked,
        old,
    );
    windows(
        r,
        "pause: stale window",
        &samples,
        &changes,
        overlaps,
        acked,
        everywhere,
    );
    windows(
        r,
        "pause: stale after SIGCONT",
        &samples,
        &changes,
        overlaps,
        |s| s.acked.max(resumed),
        everywhere,
    );
    windows(
        r,
        "pause: old value served until",
        &samples,
        &changes,
        overlaps,
        acked,
        old,
    );
    let revoked = [Kind::Revocation];
    windows(
        r,
        "revocation",
        &samples,
        &revoked,
        steady,
        acked,
        everywhere,
    );
    windows(
        r,
        "pause: revocation",
        &samples,
        &revoked,
        overlaps,
        acked,
        everywhere,
    );
    windows(
        r,
        "pause: revoked token accepted until",
        &samples,
        &revoked,
        overlaps,
        acked,
        old,
    );

    let rtt: Vec<f64> = rtt.lock().map(|v| v.clone()).unwrap_or_default();
    r.add("probe round trip p50", pct(&rtt, 50.0), "ms");
    r.add("probe round trip p99", pct(&rtt, 99.0), "ms");
    let windows_run = elapsed.as_secs_f64() * 1000.0 / a.window_ms as f64;
    r.add("clerk calls", stats.total as f64, "calls");
    r.add("clerk limit per window", f64::from(a.limit), "calls");
    r.add(
        "clerk max calls in a window",
        stats.max_in_window as f64,
        "calls",
    );
    r.add(
        "clerk mean calls per window",
        // A run shorter than a window is one window.
        stats.total as f64 / windows_run.max(1.0),
        "calls",
    );
    r.add("clerk 429s", stats.rate_limited as f64, "calls");
    // The same from the call log, split: windows wholly outside the pause and the
    // window after it, and the rest.
    let log = emu.emulator.calls();
    let window = a.window_ms as i64;
    let near = |c: &CallRecord| c.at_ms >= stopped_ms && c.at_ms < resumed_ms + window;
    let before: Vec<CallRecord> = log
        .iter()
        .filter(|c| c.at_ms < stopped_ms)
        .cloned()
        .collect();
    let after: Vec<CallRecord> = log
        .iter()
        .filter(|c| c.at_ms >= resumed_ms + window)
        .cloned()
        .collect();
    r.add(
        "clerk max in a window, Redis up",
        max_in_any_window(&before, window).max(max_in_any_window(&after, window)) as f64,
        "calls",
    );
    r.add(
        "clerk 429s, Redis up",
        log.iter().filter(|c| c.rate_limited && !near(c)).count() as f64,
        "calls",
    );
    r.add(
        "clerk 429s, pause + 1 window",
        log.iter().filter(|c| c.rate_limited && near(c)).count() as f64,
        "calls",
    );
    r.add("budget timeouts (503)", budget[0], "calls");
    r.add("local-share grants", budget[1], "calls");
    r.add("users", a.users as f64, "");
    r.add("connections", a.connections as f64, "");
    r.add("redis pause", (resumed - stopped).as_secs_f64() * 1e3, "ms");
    r.note(format!(
        "Redis paused {:.1} s from {:.1} s into the {:.0} s run; budget mode at the end: {}",
        (resumed - stopped).as_secs_f64(),
        (stopped - start).as_secs_f64(),
        duration.as_secs_f64(),
        modes.join(", ")
    ));
    r.note(format!(
        "windows are from acknowledgement (PATCH 200, emulator update, webhook 200) until \
         every instance answers the new state, polled every {} ms",
        PROBE_EVERY.as_millis()
    ));
    if failed_updates > 0 || failed_revocations > 0 {
        r.note(format!(
            "not acknowledged: {failed_updates} changes, {failed_revocations} revocations"
        ));
    }
    if all.errors > 0 {
        r.note(format!("errors, first: {:?}", run.first_error));
    }
    if all.ok == 0 {
        r.fail(format!("no look-up answered: {:?}", run.first_error));
    }
    if samples.iter().all(|s| s.everywhere.is_none()) && !samples.is_empty() {
        r.fail("no change reached every instance");
    }
    Ok(())
}
