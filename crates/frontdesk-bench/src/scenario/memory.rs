//! memory: what Frontdesk's in-process caches and idle connections cost, measured as
//! the process's resident memory (RSS), and whether the byte budgets hold it.
//!
//! - **Users (L1).** Users of realistic size (the emulator's Clerk `User` objects,
//!   each made unique: id, email, username) are written through the library
//!   (`UserCache::put`, which also indexes their email and username) into an instance
//!   whose budget holds them all. RSS before and after, at two sizes, divided by the
//!   users: bytes per cached user, all in (JSON, parsed fields, alias entries, moka,
//!   the allocator). Set next to moka's weighted size (the weighers' estimate).
//! - **Contexts.** The same for contexts (local user and profile rows with the
//!   rendered `/me` members), put with `ContextService::cache_local`.
//! - **The cap.** A second instance with a small budget takes many more users than fit:
//!   its entries and weighted size stay under the budget, and RSS grows by about the
//!   budget, not by the users written.
//! - **Idle connections.** A `frontdesk serve` process (the binary), N keep-alive
//!   connections that each made one `GET /_frontdesk/healthz` and then sit idle: the
//!   child's RSS delta per connection.
//!
//! RSS counts what the allocator keeps, so figures include fragmentation; the phases
//! only grow (the first instance stays up), so freed memory does not hide later growth.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use frontdesk::context::Context;
use frontdesk::store::{LocalUser, Profile};
use frontdesk::users::{CachedUser, UserCache};
use frontdesk_emulator::{Emulator, EmulatorConfig};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

use super::fleet::{Node, frontdesk_bin};
use crate::ground::{Ground, WEBHOOK_SECRET};
use crate::report::Report;

#[derive(Debug, Clone)]
pub struct Args {
    /// Users cached in the measured instance (a figure is also taken at a tenth).
    pub users: usize,
    pub contexts: usize,
    /// The small instance's budget (`cache.l1_max_bytes`) and the users written to it.
    pub cap_bytes: u64,
    pub cap_users: usize,
    pub connections: usize,
}

const MIB: f64 = 1024.0 * 1024.0;

/// Resident memory of `pid` (this process when `None`), from `/proc/…/status`.
pub fn rss_bytes(pid: Option<u32>) -> anyhow::Result<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| anyhow!("no VmRSS in {path}"))
}

/// The soft limit on open files, from `/proc/self/limits`.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Clerk users as the emulator answers them, each a template for unique copies.
struct Templates(Vec<Template>);

struct Template {
    json: String,
    id: String,
    email: String,
    username: String,
}

impl Templates {
    fn from(emu: &Emulator, n: usize) -> anyhow::Result<Self> {
        let mut out = Vec::new();
        for i in 0..n {
            let id = Emulator::seed_user_id(i);
            let user = emu
                .user(&id)
                .ok_or_else(|| anyhow!("emulator has no user {id}"))?;
            let email = user["email_addresses"][0]["email_address"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let username = user["username"].as_str().unwrap_or_default().to_string();
            out.push(Template {
                json: serde_json::to_string(&user)?,
                id,
                email,
                username,
            });
        }
        if out.is_empty() || out.iter().any(|t| t.email.is_empty()) {
            anyhow::bail!("emulator users without an email");
        }
        Ok(Self(out))
    }

    /// User `i`: template `i mod n`, with an id, email and username of its own (the
    /// id keeps Clerk's length).
    fn user(&self, i: usize) -> (String, Bytes) {
        let t = &self.0[i % self.0.len()];
        let width = t.id.len().saturating_sub(6).max(8);
        let id = format!("user_m{i:0width$}");
        let json = t
            .json
            .replace(&t.id, &id)
            .replace(&t.email, &format!("m{i}.{}", t.email))
            .replace(
                &format!("\"{}\"", t.username),
                &format!("\"{}_m{i}\"", t.username),
            );
        // Exactly the bytes, as a user read from Clerk is (`copy_from_slice`).
        (id, Bytes::copy_from_slice(json.as_bytes()))
    }
}

/// Writes users `from..to` through the cache, as a write-through would.
async fn fill_users(
    users: &UserCache,
    t: &Templates,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    for i in from..to {
        let (_, raw) = t.user(i);
        let user = CachedUser::parse(raw).map_err(|e| anyhow!("user {i}: {e}"))?;
        users.put(user).await;
        if i % 10_000 == 0 {
            // moka applies writes in batches; keep its queues short.
            users.run_pending_tasks();
            tokio::task::yield_now().await;
        }
    }
    users.run_pending_tasks();
    Ok(())
}

fn context_of(i: usize, t: &Templates) -> Context {
    let tpl = &t.0[i % t.0.len()];
    let v: serde_json::Value = serde_json::from_str(&tpl.json).unwrap_or_default();
    let s = |k: &str| v[k].as_str().map(String::from);
    let email = format!("m{i}.{}", tpl.email);
    let name = match (s("first_name"), s("last_name")) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (f, l) => f.or(l),
    };
    let created = v["created_at"].as_i64().unwrap_or(0);
    Context::new(
        LocalUser {
            id: i as i64 + 1,
            clerk_id: format!("user_m{i:026}"),
            email: Some(email.clone()),
            name: name.clone(),
            image_url: s("image_url"),
            role: "member".into(),
            clerk_updated_at: created,
            created_at: created,
            updated_at: created,
            deleted_at: None,
            email_verified: true,
        },
        Profile {
            id: i as i64 + 1,
            user_id: Some(i as i64 + 1),
            email: Some(email),
            display_name: name,
            // The shape config.default.toml documents for `profile_defaults`.
            data: json!({"cohort": "neon", "goals": {"revenue": 16000}}),
            created_at: created,
            updated_at: created,
        },
    )
}

pub async fn run(g: &Ground, a: &Args) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let emu = g
        .emulator(EmulatorConfig {
            users: 200,
            ..EmulatorConfig::default()
        })
        .await?;
    let templates = Templates::from(&emu.emulator, 200)?;
    let sizes: Vec<f64> = templates.0.iter().map(|t| t.json.len() as f64).collect();
    r.add(
        "clerk user json (mean)",
        sizes.iter().sum::<f64>() / sizes.len() as f64,
        "B",
    );

    // One instance that holds everything: no Redis (L1 alone), budgets far above.
    let db = g.database().await?;
    let mut config = g.config(&db, &emu, None);
    config.cache.l1_max_bytes = 256 * 1024 * 1024 * 1024;
    config.context.l1_max_bytes = 256 * 1024 * 1024 * 1024;
    let fd = g.frontdesk(config).await?;
    let users = fd
        .state
        .users()
        .cloned()
        .ok_or_else(|| anyhow!("no user cache (Clerk is configured)"))?;

    // Users, at a tenth and at the full count.
    let base = rss_bytes(None)?;
    r.add("rss at start", base as f64 / MIB, "MiB");
    let tenth = (a.users / 10).max(1);
    let t0 = Instant::now();
    let mut done = 0;
    for (label, upto) in [("tenth", tenth), ("all", a.users)] {
        fill_users(&users, &templates, done, upto).await?;
        done = upto;
        let rss = rss_bytes(None)?;
        let s = users.stats();
        let per_user = (rss.saturating_sub(base)) as f64 / upto as f64;
        let weighed = (s.l1_weighted_bytes + s.alias_weighted_bytes) as f64 / upto as f64;
        let name = if label == "tenth" {
            format!("{upto} users")
        } else {
            format!("{} users", a.users)
        };
        r.add(format!("{name}: rss"), rss as f64 / MIB, "MiB");
        r.add(format!("{name}: bytes/user (rss)"), per_user, "B");
        r.add(format!("{name}: bytes/user (weigher)"), weighed, "B");
        r.add(
            format!("{name}: entries (users, aliases)"),
            s.l1_entries as f64,
            "users",
        );
        if s.l1_entries < upto as u64 {
            r.fail(format!(
                "{} of {upto} users in L1: the budget should have held them all",
                s.l1_entries
            ));
        }
        if label == "all" {
            r.add(
                "1,000,000 users projected (rss)",
                (base as f64 + per_user * 1_000_000.0) / MIB,
                "MiB",
            );
        }
    }
    r.note(format!(
        "{} users written through UserCache::put in {:.1} s (not a throughput figure)",
        a.users,
        t0.elapsed().as_secs_f64()
    ));

    // Contexts.
    let before = rss_bytes(None)?;
    let contexts = fd.state.context();
    for i in 0..a.contexts {
        contexts.cache_local(Arc::new(context_of(i, &templates)));
    }
    let (entries, weighted) = contexts.l1_size();
    let after = rss_bytes(None)?;
    r.add(
        "bytes/context (rss)",
        after.saturating_sub(before) as f64 / a.contexts.max(1) as f64,
        "B",
    );
    r.add(
        "bytes/context (weigher)",
        weighted as f64 / entries.max(1) as f64,
        "B",
    );
    if entries < a.contexts as u64 {
        r.fail(format!("{entries} of {} contexts in L1", a.contexts));
    }

    // The cap: a small budget, many more users than fit.
    let db2 = g.database().await?;
    let mut small = g.config(&db2, &emu, None);
    small.cache.l1_max_bytes = a.cap_bytes;
    let fd2 = g.frontdesk(small).await?;
    let capped = fd2
        .state
        .users()
        .cloned()
        .ok_or_else(|| anyhow!("no user cache"))?;
    let before = rss_bytes(None)?;
    // Other ids than the first instance's (a different offset), same sizes.
    fill_users(&capped, &templates, 10_000_000, 10_000_000 + a.cap_users).await?;
    let after = rss_bytes(None)?;
    let s = capped.stats();
    let weighed = s.l1_weighted_bytes + s.alias_weighted_bytes;
    r.add("cap: budget", a.cap_bytes as f64 / MIB, "MiB");
    r.add("cap: users written", a.cap_users as f64, "users");
    r.add("cap: users held", s.l1_entries as f64, "users");
    r.add("cap: weighted size", weighed as f64 / MIB, "MiB");
    r.add(
        "cap: rss growth",
        after.saturating_sub(before) as f64 / MIB,
        "MiB",
    );
    if weighed > a.cap_bytes {
        r.fail(format!(
            "the capped cache weighs {weighed} bytes, over its budget of {}",
            a.cap_bytes
        ));
    }
    if s.l1_entries >= a.cap_users as u64 {
        r.fail("the capped cache evicted nothing");
    }
    fd2.stop().await?;
    fd.stop().await?;

    connections(g, a, &mut r).await?;
    Ok(r)
}

/// Idle keep-alive connections to a `frontdesk serve` process.
async fn connections(g: &Ground, a: &Args, r: &mut Report) -> anyhow::Result<()> {
    let Some(bin) = frontdesk_bin() else {
        r.note(
            "idle connections not measured: no frontdesk binary next to frontdesk-bench \
             (cargo build -p frontdesk --bin frontdesk) and FRONTDESK_BIN unset",
        );
        return Ok(());
    };
    // Both ends are on this machine: this process holds one descriptor per connection,
    // the child one more.
    let limit = open_files_limit().unwrap_or(1024);
    let n = a.connections.min(limit.saturating_sub(500));
    if n < a.connections {
        r.note(format!(
            "{n} connections, not {}: open files limited to {limit} (ulimit -n)",
            a.connections
        ));
    }
    let emu = g.emulator(EmulatorConfig::default()).await?;
    let db = g.database().await?;
    let dir = std::env::temp_dir().join(format!("fdbench-memory-{}", g.unique()));
    std::fs::create_dir_all(&dir)?;
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", db),
        ("CLERK_SECRET_KEY", emu.emulator.secret_key().to_string()),
        ("CLERK_API_URL", emu.url.clone()),
        ("CLERK_WEBHOOK_SIGNING_SECRET", WEBHOOK_SECRET.to_string()),
        ("FRONTDESK_EDGE_ADDR", "127.0.0.1:0".into()),
        ("FRONTDESK_API_ADDR", "127.0.0.1:0".into()),
        ("FRONTDESK_LOG", "warn".into()),
        ("FRONTDESK_HTTP__MAX_CONNECTIONS", (n + 100).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let node = Node::spawn(&bin, Path::new(&dir), &env).await?;
    let pid = node
        .pid()
        .ok_or_else(|| anyhow!("frontdesk serve has no pid"))?;
    // Warm the process (first requests allocate lazily) before the baseline.
    let warm = open_idle(node.edge, 64).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_bytes(Some(pid))?;
    let t0 = Instant::now();
    let conns = open_idle(node.edge, n).await?;
    let opened = conns.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes(Some(pid))?;
    r.add("idle connections", opened as f64, "conns");
    r.add(
        "bytes/idle connection (rss)",
        after.saturating_sub(before) as f64 / opened.max(1) as f64,
        "B",
    );
    r.add("server rss with them", after as f64 / MIB, "MiB");
    r.note(format!(
        "{opened} connections opened in {:.1} s, each after one GET /_frontdesk/healthz",
        t0.elapsed().as_secs_f64()
    ));
    if opened < n {
        r.fail(format!("only {opened} of {n} connections opened"));
    }
    drop(conns);
    drop(warm);
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

type Idle = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens `n` connections, 200 at a time, each answering one healthz; keeps them.
async fn open_idle(edge: SocketAddr, n: usize) -> anyhow::Result<Vec<Idle>> {
    use futures::StreamExt as _;
    let results: Vec<anyhow::Result<Idle>> = futures::stream::iter(0..n)
        .map(|_| async move {
            let stream = TcpStream::connect(edge).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let resp = sender
                .send_request(crate::load::get(edge, "/_frontdesk/healthz", None))
                .await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            if !status.is_success() {
                anyhow::bail!("healthz answered {status}");
            }
            Ok(sender)
        })
        .buffer_unordered(200)
        .collect()
        .await;
    let mut out = Vec::with_capacity(n);
    let mut first_error = None;
    for res in results {
        match res {
            Ok(s) => out.push(s),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if out.is_empty()
        && let Some(e) = first_error
    {
        return Err(e.context("open idle connections"));
    }
    Ok(out)
}
