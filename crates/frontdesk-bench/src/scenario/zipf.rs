//! zipf (and no-cache): user look-ups over many users with Zipf(s) popularity, Clerk
//! 50 ms away, a share of users updated while it runs. Through Frontdesk (the native
//! API and the Clerk proxy, on one or more instances sharing Redis) or straight to the
//! emulator (no cache: what the cache saves).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use frontdesk_emulator::{Emulator, EmulatorConfig, Knobs, Latency};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::ground::{Ground, Instance, WEBHOOK_SECRET};
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
    /// Share of users updated during the run.
    pub update_share: f64,
    /// Frontdesk instances sharing Redis (0: no Frontdesk, straight to the emulator).
    pub instances: usize,
}

pub const WEBHOOKS: &str = "/_frontdesk/webhooks/clerk";
const CLASSES: [&str; 2] = ["native", "proxy"];

struct Lookups {
    /// Per connection `conn % len`.
    addrs: Vec<SocketAddr>,
    direct: bool,
    ids: Arc<Vec<String>>,
    zipf: Zipf,
    /// Per user: the latest update acknowledged (0: none).
    acked: Arc<Vec<AtomicU32>>,
    seen: Arc<Vec<AtomicBool>>,
    secret: String,
}

#[derive(serde::Deserialize)]
struct FirstName {
    #[serde(default)]
    first_name: Option<String>,
}

impl Workload for Lookups {
    /// (class, acknowledged version when the request was sent)
    type Meta = (usize, u32);

    fn addr(&self, conn: usize) -> SocketAddr {
        self.addrs[conn % self.addrs.len()]
    }

    fn request(&self, conn: usize, rng: &mut Rng) -> (Request<Full<Bytes>>, Self::Meta) {
        let i = self.zipf.sample(rng);
        self.seen[i].store(true, Ordering::Relaxed);
        let acked = self.acked[i].load(Ordering::Acquire);
        let id = &self.ids[i];
        let addr = self.addr(conn);
        if self.direct {
            let req = load::get(addr, &format!("/v1/users/{id}"), Some(&self.secret));
            return (req, (0, acked));
        }
        let class = rng.below(2);
        let req = if class == 0 {
            load::get(addr, &format!("/v1/users/{id}"), None)
        } else {
            load::get(addr, &format!("/clerk/v1/users/{id}"), Some(&self.secret))
        };
        (req, (class, acked))
    }

    fn verdict(&self, (class, acked): Self::Meta, status: StatusCode, body: &Bytes) -> Verdict {
        let outcome = if status != StatusCode::OK {
            Outcome::Error
        } else if acked == 0 {
            Outcome::Ok
        } else {
            match serde_json::from_slice::<FirstName>(body) {
                Ok(FirstName {
                    first_name: Some(n),
                }) if version_of(&n) >= acked => Outcome::Ok,
                Ok(_) => Outcome::Stale,
                Err(_) => Outcome::Error,
            }
        };
        Verdict { class, outcome }
    }

    fn classes(&self) -> usize {
        if self.direct { 1 } else { 2 }
    }
}

pub(crate) fn version_of(first_name: &str) -> u32 {
    first_name
        .strip_prefix("bench-")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `n` distinct users drawn by popularity (updates hit users that are read).
pub(crate) fn pick_updates(zipf: &Zipf, users: usize, n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut set = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    let mut attempts = 0usize;
    while out.len() < n.min(users) {
        attempts += 1;
        let i = if attempts < 50 * n {
            zipf.sample(rng)
        } else {
            rng.below(users)
        };
        if set.insert(i) {
            out.push(i);
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpdatePath {
    /// `PATCH /clerk/v1/users/{id}` through Frontdesk (write-through).
    Proxy,
    /// `emulator.update_user`; Frontdesk hears of it by a signed webhook.
    Webhook,
    /// `emulator.update_user` with nothing between (no cache).
    Direct,
}

pub async fn run(g: &Ground, a: &Args, seed: u64) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let t0 = Instant::now();
    let emu = g
        .emulator(EmulatorConfig {
            users: a.users,
            latency: Latency {
                fixed_ms: a.latency_ms,
                jitter_ms: 0,
            },
            ..EmulatorConfig::default()
        })
        .await?;
    r.note(format!(
        "emulator seeded {} users in {:.1} s (not measured)",
        a.users,
        t0.elapsed().as_secs_f64()
    ));
    let http = crate::ground::http();
    let direct = a.instances == 0;
    let mut instances: Vec<Instance> = Vec::new();
    if !direct {
        let db = g.database().await?;
        let prefix = g.redis_prefix();
        if prefix.is_none() && a.instances > 1 {
            r.note("FRONTDESK_TEST_REDIS_URL unset: instances share no L2 and no bus");
        }
        for _ in 0..a.instances {
            instances.push(g.frontdesk(g.config(&db, &emu, prefix.as_deref())).await?);
        }
    }
    let path = if direct {
        UpdatePath::Direct
    } else {
        let probe = http
            .post(format!("http://{}{WEBHOOKS}", instances[0].edge))
            .body("{}")
            .send()
            .await?;
        if probe.status() == reqwest::StatusCode::NOT_FOUND {
            r.note(format!(
                "{WEBHOOKS} is not on this branch: updates go through the proxy write path \
                 (PATCH /clerk/v1/users/{{id}}, write-through), not emulator webhooks"
            ));
            UpdatePath::Proxy
        } else {
            emu.emulator.set_knobs(Knobs {
                webhook_url: Some(Some(format!("http://{}{WEBHOOKS}", instances[0].edge))),
                webhook_secret: Some(Some(WEBHOOK_SECRET.to_string())),
                ..Knobs::default()
            });
            r.note("updates: emulator.update_user, delivered to Frontdesk as signed webhooks");
            UpdatePath::Webhook
        }
    };

    let ids: Arc<Vec<String>> = Arc::new((0..a.users).map(Emulator::seed_user_id).collect());
    let zipf = Zipf::new(a.users, a.s, seed ^ 0x21bf);
    r.note(format!(
        "Zipf s = {} over {} users: the hottest user gets {:.1}% of look-ups",
        a.s,
        a.users,
        100.0 * zipf.top_share()
    ));
    let acked: Arc<Vec<AtomicU32>> = Arc::new((0..a.users).map(|_| AtomicU32::new(0)).collect());
    let seen: Arc<Vec<AtomicBool>> =
        Arc::new((0..a.users).map(|_| AtomicBool::new(false)).collect());
    let mut rng = Rng::new(seed ^ 0x5151);
    let n_updates = (a.users as f64 * a.update_share).round() as usize;
    let updates = pick_updates(&zipf, a.users, n_updates, &mut rng);

    let (addrs, secret) = if direct {
        (vec![emu.addr], emu.emulator.secret_key().to_string())
    } else {
        (
            instances.iter().map(|i| i.api).collect(),
            emu.emulator.secret_key().to_string(),
        )
    };
    let w = Arc::new(Lookups {
        addrs: addrs.clone(),
        direct,
        ids: ids.clone(),
        zipf,
        acked: acked.clone(),
        seen: seen.clone(),
        secret: secret.clone(),
    });

    emu.emulator.reset();
    let duration = super::secs(a.duration_s);
    let spec = Spec::new(a.connections, duration);
    let acked_n = Arc::new(AtomicU64::new(0));
    let failed_n = Arc::new(AtomicU64::new(0));
    let updater = {
        let acked = acked.clone();
        let ids = ids.clone();
        let emulator = emu.emulator.clone();
        let http = http.clone();
        let (acked_n, failed_n) = (acked_n.clone(), failed_n.clone());
        let secret = secret.clone();
        tokio::spawn(async move {
            // Spread over the first 80% of the run, at most 32 in flight.
            let start = Instant::now();
            let every = duration.mul_f64(0.8) / updates.len().max(1) as u32;
            if updates.is_empty() {
                return;
            }
            let gate = Arc::new(tokio::sync::Semaphore::new(32));
            let mut tasks = Vec::with_capacity(updates.len());
            for (k, i) in updates.into_iter().enumerate() {
                tokio::time::sleep_until((start + every * k as u32).into()).await;
                let Ok(permit) = gate.clone().acquire_owned().await else {
                    break;
                };
                let (acked, ids, emulator, http, secret) = (
                    acked.clone(),
                    ids.clone(),
                    emulator.clone(),
                    http.clone(),
                    secret.clone(),
                );
                let (acked_n, failed_n) = (acked_n.clone(), failed_n.clone());
                let addr = addrs[k % addrs.len()];
                tasks.push(tokio::spawn(async move {
                    let _permit = permit;
                    let version = 1u32;
                    let patch = json!({ "first_name": format!("bench-{version}") });
                    let ok = match path {
                        UpdatePath::Proxy => http
                            .patch(format!("http://{addr}/clerk/v1/users/{}", ids[i]))
                            .bearer_auth(&secret)
                            .json(&patch)
                            .send()
                            .await
                            .map(|r| r.status().is_success())
                            .unwrap_or(false),
                        UpdatePath::Webhook | UpdatePath::Direct => {
                            emulator.update_user(&ids[i], patch).is_ok()
                        }
                    };
                    if ok {
                        acked[i].store(version, Ordering::Release);
                        acked_n.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed_n.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };
    let run = load::drive(w, spec, seed).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), updater).await;
    let stats = emu.emulator.stats();

    let all = run.total();
    let requests = all.answered();
    let distinct = seen.iter().filter(|s| s.load(Ordering::Relaxed)).count() as u64;
    let updates_acked = acked_n.load(Ordering::Relaxed);
    let calls = stats.total;
    let reads = stats.total - stats.get("PATCH /v1/users/{user_id}");
    let minimum = distinct + updates_acked;
    r.add("requests", requests as f64, "req");
    r.add("rps", run.rps(), "req/s");
    r.add("p50", pct_us(&all.lat_ns, 50.0), "µs");
    r.add("p99", pct_us(&all.lat_ns, 99.0), "µs");
    if !direct {
        for (c, name) in run.classes.iter().zip(CLASSES) {
            r.add(format!("{name}.p99"), pct_us(&c.lat_ns, 99.0), "µs");
        }
    }
    r.add("errors", all.errors as f64, "req");
    r.add("distinct users read", distinct as f64, "users");
    r.add("updates acknowledged", updates_acked as f64, "updates");
    r.add("clerk calls", calls as f64, "calls");
    r.add("clerk read calls", reads as f64, "calls");
    r.add("compulsory minimum", minimum as f64, "calls");
    r.add(
        "clerk calls / 1k req",
        calls as f64 * 1000.0 / requests.max(1) as f64,
        "calls",
    );
    r.add(
        "minimum / 1k req",
        minimum as f64 * 1000.0 / requests.max(1) as f64,
        "calls",
    );
    r.add("calls / minimum", calls as f64 / minimum.max(1) as f64, "x");
    r.add("stale reads after ack", all.stale as f64, "req");
    if !direct {
        let mut sum = [0f64; 10];
        for inst in &instances {
            let s = inst.stats(&http).await?;
            let u = &s["users"];
            let f = |v: &Value| v.as_f64().unwrap_or(0.0);
            for (k, v) in [
                f(&u["l1"]["hits"]),
                f(&u["l1"]["misses"]),
                f(&u["l2"]["hits"]),
                f(&u["l2"]["misses"]),
                f(&u["upstream_loads"]),
                f(&u["batches"]),
                f(&u["batched_ids"]),
                f(&u["coalesced_waits"]),
                f(&u["stale_served"]),
                f(&u["l2"]["errors"]),
            ]
            .into_iter()
            .enumerate()
            {
                sum[k] += v;
            }
        }
        let ratio = |h: f64, m: f64| if h + m > 0.0 { h / (h + m) } else { f64::NAN };
        r.add("l1.hit_ratio", ratio(sum[0], sum[1]), "");
        r.add("l2.hit_ratio", ratio(sum[2], sum[3]), "");
        r.add("l2.hits", sum[2], "");
        r.add("l2.misses", sum[3], "");
        r.add("upstream loads", sum[4], "users");
        r.add("batches", sum[5], "calls");
        r.add("batched ids", sum[6], "users");
        r.add(
            "users fetched / distinct read",
            sum[4] / distinct.max(1) as f64,
            "x",
        );
        r.add("coalesced waits", sum[7], "");
        r.add("stale served", sum[8], "");
        r.add("l2 errors", sum[9], "");
    }
    r.add("users", a.users as f64, "");
    r.add("connections", a.connections as f64, "");
    r.add("instances", a.instances as f64, "");
    if failed_n.load(Ordering::Relaxed) > 0 {
        r.note(format!(
            "{} updates failed",
            failed_n.load(Ordering::Relaxed)
        ));
    }
    if all.errors > 0 {
        r.note(format!("errors, first: {:?}", run.first_error));
    }
    if all.ok == 0 {
        r.fail(format!("no look-up answered: {:?}", run.first_error));
    }
    for i in instances {
        i.stop().await?;
    }
    drop(emu);
    Ok(r)
}
