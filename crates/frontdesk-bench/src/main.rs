//! `frontdesk-bench`: measures Frontdesk in process against baselines measured in the
//! same run, and prints a table (and JSON with `--out`). See BENCHMARKS.md.
//!
//! Servers (Frontdesk, the Clerk emulator, the hello-world baseline) run on one Tokio
//! runtime, the load generator on another, so their thread counts are explicit.
//! Postgres and Redis come from the test ground (`FRONTDESK_TEST_DATABASE_URL`,
//! `FRONTDESK_TEST_REDIS_URL`). Everything is on loopback, every run bounded in time.

mod ground;
mod hello;
mod history;
mod load;
mod report;
mod rng;
mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use serde_json::json;

use crate::ground::Ground;
use crate::report::{Report, Scenario};
use crate::scenario::{bulk, cold_storm, edge_me, fleet, memory, webhooks, zipf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    All,
    EdgeMe,
    Zipf,
    ColdStorm,
    NoCache,
    Webhooks,
    /// Three `frontdesk serve` processes, Redis paused; not in `all --quick`.
    Fleet,
    /// Not part of `all` (it runs ~100 s at Clerk's production limit).
    Bulk,
    /// Bytes per cached user, context and idle connection (RSS); not part of `all`.
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Logs {
    /// Frontdesk's JSON log lines are formatted (as in production) and discarded.
    Sink,
    /// No log subscriber at all.
    Off,
}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Frontdesk's benchmark harness (see BENCHMARKS.md)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Scenarios to run, in order.
    #[arg(value_enum, default_values_t = [Which::All])]
    scenarios: Vec<Which>,
    /// Small sizes and short runs (about 10 s in all): the smoke run of scripts/test.
    #[arg(long)]
    quick: bool,
    /// Runs per scenario; the table shows medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Writes every figure of every run, and the medians, as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Appends each scenario's headline medians to this history TSV (e.g.
    /// `bench-history.tsv`; see BENCHMARKS.md, "History").
    #[arg(long)]
    history: Option<PathBuf>,
    /// Worker threads of the servers' runtime (Frontdesk, emulator, baseline).
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    #[arg(long, value_enum, default_value_t = Logs::Sink)]
    logs: Logs,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// edge-me: users (one session token each).
    #[arg(long)]
    edge_users: Option<usize>,
    /// Connections of edge-me, zipf, no-cache and webhooks.
    #[arg(long)]
    connections: Option<usize>,
    /// Seconds of each measured phase (edge-me, zipf, no-cache, webhooks).
    #[arg(long)]
    duration: Option<f64>,
    /// zipf / no-cache: users seeded in the emulator.
    #[arg(long)]
    zipf_users: Option<usize>,
    /// zipf: Frontdesk instances sharing Redis.
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// zipf / no-cache / cold-storm: Clerk (emulator) latency in ms.
    #[arg(long, default_value_t = 50)]
    clerk_latency_ms: u64,
    /// zipf / no-cache: share of users updated during the run.
    #[arg(long, default_value_t = 0.01)]
    update_share: f64,
    /// cold-storm: concurrent callers.
    #[arg(long)]
    storm_n: Option<usize>,
    /// fleet: users seeded in the emulator.
    #[arg(long)]
    fleet_users: Option<usize>,
    /// fleet: Clerk's limit per 10 s window (emulator and fleet).
    #[arg(long, default_value_t = 1_000)]
    fleet_limit: u32,
    /// fleet: seconds Redis is paused (SIGSTOP) in the middle of the run.
    #[arg(long)]
    fleet_pause_s: Option<f64>,
    /// bulk: items of the job (10,000 by default; 1,000 with --quick).
    #[arg(long)]
    bulk_items: Option<usize>,
    /// memory: users cached (1,000,000 by default; 20,000 with --quick).
    #[arg(long)]
    memory_users: Option<usize>,
    /// memory: idle keep-alive connections (10,000 by default; 500 with --quick).
    #[arg(long)]
    memory_connections: Option<usize>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serves the hello-world baseline (axum, `GET /` → 200 `hello`, no layers) until
    /// killed, printing `hello ready: http://ADDR`: the reference of
    /// scripts/bench-edge.sh.
    Hello {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: std::net::SocketAddr,
        /// Worker threads (default: one per core, as `frontdesk serve`).
        #[arg(long)]
        threads: Option<usize>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Hello { addr, threads }) = cli.command {
        return match hello::serve(addr, threads) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("frontdesk-bench hello: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.logs == Logs::Sink {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(std::io::sink)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init();
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.server_threads.max(1))
        .thread_name("server")
        .enable_all()
        .build()
        .and_then(|server| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cli.client_threads.max(1))
                .thread_name("client")
                .enable_all()
                .build()
                .map(|client| (server, client))
        });
    let (server, client) = match built {
        Ok(rts) => rts,
        Err(e) => {
            eprintln!("frontdesk-bench: cannot start runtimes: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = client.block_on(run(&cli, server.handle().clone()));
    server.shutdown_timeout(std::time::Duration::from_secs(5));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("frontdesk-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the scenarios; `Ok(false)` when one is functionally broken.
async fn run(cli: &Cli, server: tokio::runtime::Handle) -> anyhow::Result<bool> {
    let g = Ground::new(server).await?;
    let outcome = run_all(cli, &g).await;
    g.cleanup().await;
    outcome
}

async fn run_all(cli: &Cli, g: &Ground) -> anyhow::Result<bool> {
    let q = cli.quick;
    let pick = |quick: f64, full: f64| cli.duration.unwrap_or(if q { quick } else { full });
    let conns = |quick: usize, full: usize| cli.connections.unwrap_or(if q { quick } else { full });
    let edge = edge_me::Args {
        users: cli.edge_users.unwrap_or(if q { 300 } else { 10_000 }),
        connections: conns(16, 64),
        duration_s: pick(1.0, 10.0),
        one_conn_duration_s: pick(0.5, 5.0),
    };
    let zipf_users = cli.zipf_users.unwrap_or(if q { 5_000 } else { 100_000 });
    let zipf = zipf::Args {
        users: zipf_users,
        s: 1.1,
        latency_ms: cli.clerk_latency_ms,
        connections: conns(16, 64),
        duration_s: pick(1.5, 30.0),
        update_share: cli.update_share.clamp(0.0, 1.0),
        instances: cli.instances.max(1),
    };
    let no_cache = zipf::Args {
        instances: 0,
        duration_s: pick(1.0, 10.0),
        ..zipf.clone()
    };
    let storm = cold_storm::Args {
        n: cli.storm_n.unwrap_or(if q { 100 } else { 1_000 }),
        latency_ms: cli.clerk_latency_ms,
        lone: if q { 20 } else { 200 },
    };
    let hooks = webhooks::Args {
        users: 1_000,
        connections: conns(8, 32),
        duration_s: pick(1.0, 10.0),
    };
    let fleet = fleet::Args {
        users: cli.fleet_users.unwrap_or(if q { 500 } else { 10_000 }),
        s: 1.1,
        latency_ms: cli.clerk_latency_ms,
        connections: conns(8, 32),
        duration_s: pick(4.0, 40.0),
        limit: cli.fleet_limit.max(1),
        window_ms: 10_000,
        updates_per_s: if q { 2.0 } else { 4.0 },
        revocations: if q { 2 } else { 20 },
        pause_at: 0.4,
        pause_s: cli.fleet_pause_s.unwrap_or(if q { 1.0 } else { 3.0 }),
    };

    let bulk_args = bulk::Args {
        items: cli.bulk_items.unwrap_or(if q { 1_000 } else { 10_000 }),
        per_user: 5,
        latency_ms: cli.clerk_latency_ms,
    };

    let memory_args = memory::Args {
        users: cli
            .memory_users
            .unwrap_or(if q { 20_000 } else { 1_000_000 }),
        contexts: if q { 5_000 } else { 100_000 },
        cap_bytes: 32 * 1024 * 1024,
        cap_users: if q { 30_000 } else { 200_000 },
        connections: cli
            .memory_connections
            .unwrap_or(if q { 500 } else { 10_000 }),
    };

    let mut order: Vec<Which> = Vec::new();
    for w in &cli.scenarios {
        let expand: &[Which] = if *w == Which::All && q {
            // The fleet starts three processes: too slow for the smoke run.
            &[
                Which::EdgeMe,
                Which::Zipf,
                Which::NoCache,
                Which::ColdStorm,
                Which::Webhooks,
            ]
        } else if *w == Which::All {
            &[
                Which::EdgeMe,
                Which::Zipf,
                Which::NoCache,
                Which::ColdStorm,
                Which::Webhooks,
                Which::Fleet,
            ]
        } else {
            std::slice::from_ref(w)
        };
        for e in expand {
            if !order.contains(e) {
                order.push(*e);
            }
        }
    }

    println!(
        "frontdesk-bench{}: {} | server threads {}, client threads {} | redis {}",
        if q { " --quick" } else { "" },
        report::machine(),
        cli.server_threads,
        cli.client_threads,
        if g.redis.is_some() { "on" } else { "off" },
    );
    let mut done: Vec<Scenario> = Vec::new();
    for which in order {
        let name = match which {
            Which::EdgeMe => "edge-me",
            Which::Zipf => "zipf",
            Which::NoCache => "no-cache",
            Which::ColdStorm => "cold-storm",
            Which::Webhooks => "webhooks",
            Which::Fleet => "fleet",
            Which::Bulk => "bulk",
            Which::Memory => "memory",
            Which::All => continue,
        };
        let mut s = Scenario {
            name: name.into(),
            runs: Vec::new(),
        };
        let t0 = Instant::now();
        for k in 0..cli.runs.max(1) {
            let seed = cli.seed.wrapping_add(k as u64 * 7_919);
            let r: Report = match which {
                Which::EdgeMe => edge_me::run(g, &edge, seed).await,
                Which::Zipf => zipf::run(g, &zipf, seed).await,
                Which::NoCache => zipf::run(g, &no_cache, seed).await,
                Which::ColdStorm => cold_storm::run(g, &storm, seed).await,
                Which::Webhooks => webhooks::run(g, &hooks, seed).await,
                Which::Fleet => fleet::run(g, &fleet, seed).await,
                Which::Bulk => bulk::run(g, &bulk_args, seed).await,
                Which::Memory => memory::run(g, &memory_args).await,
                Which::All => continue,
            }
            .with_context(|| format!("scenario {name}"))?;
            let unavailable = r.unavailable.is_some();
            s.runs.push(r);
            if unavailable {
                break;
            }
        }
        if let Some(r) = s.runs.last_mut() {
            r.note(format!(
                "wall time incl. set-up: {:.1} s",
                t0.elapsed().as_secs_f64()
            ));
        }
        s.print();
        done.push(s);
    }
    compare(&done);

    let ok = done.iter().all(|s| s.failed().is_none());
    if let Some(path) = &cli.out {
        let doc = json!({
            "machine": report::machine(),
            "quick": q,
            "runs": cli.runs,
            "server_threads": cli.server_threads,
            "client_threads": cli.client_threads,
            "redis": g.redis.is_some(),
            "scenarios": done.iter().map(Scenario::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("write {}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    if let Some(path) = &cli.history {
        let source = format!(
            "frontdesk-bench{} --runs {}",
            if q { " --quick" } else { "" },
            cli.runs
        );
        let n = history::append(path, &done, &source)?;
        println!("appended {n} figures to {}", path.display());
    }
    Ok(ok)
}

/// Cross-scenario figures: what the cache saves against the no-cache run.
fn compare(done: &[Scenario]) {
    let med = |name: &str, key: &str| {
        done.iter()
            .find(|s| s.name == name)
            .and_then(|s| s.medians().into_iter().find(|m| m.0 == key).map(|m| m.1))
    };
    if let (Some(z), Some(n)) = (med("zipf", "rps"), med("no-cache", "rps")) {
        println!();
        println!("== zipf vs no-cache ==");
        println!(
            "   rps: {} vs {} ({:.1}x)",
            report::fmt_num(z),
            report::fmt_num(n),
            z / n
        );
        if let (Some(zc), Some(nc)) = (
            med("zipf", "clerk calls / 1k req"),
            med("no-cache", "clerk calls / 1k req"),
        ) {
            println!(
                "   clerk calls per 1k requests: {} vs {} ({:.1}% of the uncached calls)",
                report::fmt_num(zc),
                report::fmt_num(nc),
                100.0 * zc / nc
            );
        }
        if let (Some(zp), Some(np)) = (med("zipf", "p99"), med("no-cache", "p99")) {
            println!(
                "   p99: {} µs vs {} µs",
                report::fmt_num(zp),
                report::fmt_num(np)
            );
        }
    }
}
