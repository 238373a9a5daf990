//! The `frontdesk` command line: `serve`, `emulator`, `migrate`, `warm`, `webhooks`,
//! `bulk-metadata`. Parses arguments, loads the configuration, installs logging and
//! hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{App, Listeners};
use crate::config::Config;
#[cfg(feature = "emulator")]
use crate::devmode;
use crate::store::Store;
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "frontdesk",
    version,
    about = "An identity edge for apps that sign users in with Clerk and keep their data in Postgres.",
    long_about = "An identity edge for apps that sign users in with Clerk and keep their data in Postgres.\n\n\
Configuration comes from built-in defaults, then the TOML file given with --config, then the \
environment (CLERK_SECRET_KEY, CLERK_API_URL, CLERK_JWT_KEY, CLERK_WEBHOOK_SIGNING_SECRET, \
CLERK_AUTHORIZED_PARTIES, DATABASE_URL, REDIS_URL and FRONTDESK_* for the rest)."
)]
pub struct Cli {
    /// A TOML configuration file (see config.default.toml for every key).
    #[arg(long, global = true, env = "FRONTDESK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: the edge listener (public) and the api listener (internal).
    ///
    /// Needs Clerk credentials (CLERK_SECRET_KEY, or CLERK_JWT_KEY to verify tokens
    /// only); without them it refuses to start. `--dev` (or FRONTDESK_DEV=true) starts
    /// dev mode instead: an embedded Clerk emulator with seeded users, the SQLite file
    /// of DATABASE_URL and no Redis, and prints a demo session token and commands to
    /// try.
    Serve(ServeArgs),
    /// Run the Clerk emulator on its own: the Backend API subset Frontdesk uses, JWKS,
    /// session tokens minted for a user, signed webhooks, and knobs for latency,
    /// errors and rate limits. For tests, benchmarks and local development.
    #[cfg(feature = "emulator")]
    Emulator(frontdesk_emulator::cli::EmulatorArgs),
    /// Apply the store's schema migrations (Postgres or SQLite, from DATABASE_URL) and
    /// exit.
    Migrate,
    /// Warm a running instance's user cache (L1, and L2 when it has Redis) from a file
    /// of Clerk user ids, one per line, with a progress bar.
    Warm(WarmArgs),
    /// Inspect and replay a running instance's webhook inbox (over its api listener).
    Webhooks(WebhooksArgs),
    /// Submit a bulk metadata job (one update per line of a JSONL file:
    /// `{"user_id", "public_metadata"?, "private_metadata"?, "unsafe_metadata"?}`) and
    /// follow it with a progress bar until every item has settled.
    BulkMetadata(BulkMetadataArgs),
}

#[derive(Debug, clap::Args)]
pub struct BulkMetadataArgs {
    /// JSONL file of updates (blank lines skipped).
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// The instance's api listener; defaults to the configured `api_addr`.
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct WebhooksArgs {
    /// The instance's api listener; defaults to the configured `api_addr`.
    #[arg(long, value_name = "URL", global = true)]
    pub api: Option<String>,
    #[command(subcommand)]
    pub command: WebhooksCommand,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List inbox messages, newest first.
    List {
        /// Only messages in this state: pending, done or dead.
        #[arg(long)]
        state: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Put messages back in the queue (attempts reset, due now).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "state"])))]
    Replay {
        /// One message, by its svix id.
        #[arg(long)]
        id: Option<String>,
        /// Every message in this state (only `dead`).
        #[arg(long)]
        state: Option<String>,
    },
    /// Delete every message in a state: `dead` (kept until replayed or purged) or
    /// `done` (purged after `webhooks.retention_ms` anyway).
    Purge {
        /// dead or done.
        #[arg(long)]
        state: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct WarmArgs {
    /// File of Clerk user ids, one per line (blank lines and `#` comments skipped).
    #[arg(long, value_name = "FILE")]
    pub ids_file: PathBuf,
    /// The instance's api listener; defaults to the configured `api_addr`.
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// Ids sent per request.
    #[arg(long, default_value_t = 500)]
    pub chunk: usize,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Do not apply migrations at start (run `frontdesk migrate` separately).
    #[arg(long)]
    pub no_migrate: bool,
    /// Dev mode: an embedded Clerk emulator stands in for Clerk (never in production).
    /// Also FRONTDESK_DEV=true. Refused when CLERK_SECRET_KEY or CLERK_JWT_KEY is set.
    #[arg(long)]
    pub dev: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("frontdesk: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(dispatch(cli));
    // Lines still queued for the log writer go out before the process ends.
    telemetry::flush_logs(std::time::Duration::from_secs(2));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("frontdesk: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    #[cfg(feature = "emulator")]
    if let Command::Emulator(args) = cli.command {
        telemetry::init_logging(
            crate::config::LogFormat::Pretty,
            "info",
            crate::config::DEFAULT_LOG_QUEUE_LINES,
        );
        return frontdesk_emulator::cli::run(args)
            .await
            .map_err(|e| anyhow::anyhow!("emulator: {e}"));
    }
    let (mut config, warnings) = Config::load(cli.config.as_deref())?;
    telemetry::init_logging(config.log_format, &config.log, config.log_queue_lines);
    for w in warnings {
        tracing::warn!("{w}");
    }
    match cli.command {
        Command::Serve(args) => {
            if args.no_migrate {
                config.migrate_on_start = false;
            }
            if args.dev {
                config.dev.enabled = true;
            }
            serve(config).await
        }
        Command::Migrate => {
            let store = Store::connect(config.database_url.expose(), 1).await?;
            let applied = store.migrate().await?;
            let versions = store.applied_migrations().await?;
            println!(
                "{}: {applied} migration(s) applied now; schema at version {}",
                store.kind(),
                versions.last().copied().unwrap_or(0)
            );
            store.close().await;
            Ok(())
        }
        Command::Warm(args) => {
            let api = args
                .api
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.api_addr));
            warm(&api, &args, api_client(&config)?).await
        }
        Command::Webhooks(args) => {
            let api = args
                .api
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.api_addr));
            webhooks_command(
                api.trim_end_matches('/'),
                &args.command,
                api_client(&config)?,
            )
            .await
        }
        Command::BulkMetadata(args) => {
            let api = args
                .api
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.api_addr));
            bulk_metadata(api.trim_end_matches('/'), &args, api_client(&config)?).await
        }
        #[cfg(feature = "emulator")]
        Command::Emulator(_) => Ok(()),
    }
}

/// `frontdesk bulk-metadata`: submits the file as one job, then polls its progress.
async fn bulk_metadata(
    api: &str,
    args: &BulkMetadataArgs,
    http: reqwest::Client,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.file.display()))?;
    let updates = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str::<serde_json::Value>(l)
                .map_err(|e| anyhow::anyhow!("line {}: not JSON: {e}", n + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let url = format!("{api}/v1/users/bulk/metadata");
    let resp = http
        .post(&url)
        .json(&serde_json::json!({ "updates": updates }))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let Some(job_id) = body["job_id"].as_str().filter(|_| status.is_success()) else {
        anyhow::bail!(
            "{url} answered {status}: {}",
            body["message"].as_str().unwrap_or("no detail")
        );
    };
    println!("job {job_id}: {} updates", updates.len());
    let bar = indicatif::ProgressBar::new(updates.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} updating [{bar:40}] {pos}/{len} ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let job_url = format!("{api}/v1/jobs/{job_id}");
    let job = loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let resp = http
            .get(format!("{job_url}?results=false"))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {job_url}: {e}"))?;
        let job: serde_json::Value = resp.json().await.unwrap_or_default();
        bar.set_position(job["done"].as_u64().unwrap_or(0));
        bar.set_message(format!("{} failed", job["failed"].as_u64().unwrap_or(0)));
        if job["state"] == "done" {
            break job;
        }
    };
    bar.finish();
    let failed = job["failed"].as_u64().unwrap_or(0);
    println!("{} ok, {failed} failed", job["ok"].as_u64().unwrap_or(0));
    if failed > 0 {
        let full: serde_json::Value = http.get(&job_url).send().await?.json().await?;
        let failures = full["results"].as_array().into_iter().flatten();
        for r in failures.filter(|r| r["status"] == "failed").take(20) {
            println!("  {}: {}", r["user_id"], r["code"]);
        }
        anyhow::bail!("{failed} updates failed (GET {job_url} lists them all)");
    }
    Ok(())
}

/// An HTTP client for the instance's api listener: it sends `FRONTDESK_API_TOKEN` as
/// the bearer when one is configured.
fn api_client(config: &Config) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &config.api_token {
        let mut value =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| anyhow::anyhow!("api_token: not a valid HTTP header value"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))
}

async fn warm(api: &str, args: &WarmArgs, http: reqwest::Client) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.ids_file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.ids_file.display()))?;
    let ids: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let bar = indicatif::ProgressBar::new(ids.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} warming [{bar:40}] {pos}/{len} users ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let url = format!("{}/v1/users/warm", api.trim_end_matches('/'));
    let (mut found, mut not_found, mut failed) = (0u64, 0u64, 0u64);
    for chunk in ids.chunks(args.chunk.clamp(1, 10_000)) {
        let resp = http
            .post(&url)
            .json(&serde_json::json!({ "ids": chunk }))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            bar.abandon();
            anyhow::bail!(
                "{url} answered {status}: {}",
                body["message"].as_str().unwrap_or("no detail")
            );
        }
        found += body["found"].as_u64().unwrap_or(0);
        not_found += body["not_found"].as_u64().unwrap_or(0);
        failed += body["failed"].as_u64().unwrap_or(0);
        bar.inc(chunk.len() as u64);
        bar.set_message(format!("{not_found} unknown, {failed} failed"));
    }
    bar.finish();
    println!("warmed {found} users ({not_found} unknown to Clerk, {failed} failed)");
    if failed > 0 {
        anyhow::bail!("{failed} look-ups failed; run again to retry them");
    }
    Ok(())
}

async fn webhooks_command(
    api: &str,
    cmd: &WebhooksCommand,
    http: reqwest::Client,
) -> anyhow::Result<()> {
    let request = match cmd {
        WebhooksCommand::List { state, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(s) = state {
                query.push(("state", s.clone()));
            }
            http.get(format!("{api}/v1/webhooks")).query(&query)
        }
        WebhooksCommand::Replay { id: Some(id), .. } => {
            let id: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
            http.post(format!("{api}/v1/webhooks/{id}/replay"))
        }
        WebhooksCommand::Replay { state, .. } => http
            .post(format!("{api}/v1/webhooks/replay"))
            .query(&[("state", state.clone().unwrap_or_default())]),
        WebhooksCommand::Purge { state } => http
            .post(format!("{api}/v1/webhooks/purge"))
            .query(&[("state", state.as_str())]),
    };
    let resp = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {api}: {e}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "{api} answered {status}: {}",
            body["message"].as_str().unwrap_or("no detail")
        );
    }
    match cmd {
        WebhooksCommand::List { .. } => {
            let items = body["items"].as_array().cloned().unwrap_or_default();
            println!(
                "{:<34} {:<32} {:<8} {:>8} {:>14}  last error",
                "id", "type", "state", "attempts", "received_at"
            );
            for i in &items {
                println!(
                    "{:<34} {:<32} {:<8} {:>8} {:>14}  {}",
                    i["id"].as_str().unwrap_or(""),
                    i["type"].as_str().unwrap_or(""),
                    i["state"].as_str().unwrap_or(""),
                    i["attempts"].as_i64().unwrap_or(0),
                    i["received_at"].as_i64().unwrap_or(0),
                    i["last_error"].as_str().unwrap_or("")
                );
            }
            println!("{} message(s)", items.len());
        }
        WebhooksCommand::Replay { .. } => {
            println!(
                "{} message(s) back in the queue",
                body["replayed"].as_u64().unwrap_or(0)
            );
        }
        WebhooksCommand::Purge { state } => {
            println!(
                "{} {state} message(s) purged",
                body["purged"].as_u64().unwrap_or(0)
            );
        }
    }
    Ok(())
}

/// Dev mode's running emulator; a build without the emulator has none to hold.
#[cfg(feature = "emulator")]
type Dev = devmode::DevEmulator;
#[cfg(not(feature = "emulator"))]
type Dev = std::convert::Infallible;

/// Dev mode is explicit: only `--dev`/`FRONTDESK_DEV` starts the emulator, never a
/// missing key, and it refuses real credentials rather than silently replacing them.
async fn start_dev(config: &mut Config) -> anyhow::Result<Option<Dev>> {
    if !config.dev.enabled {
        if !config.has_clerk_credentials() {
            anyhow::bail!(
                "no Clerk credentials: set CLERK_SECRET_KEY (or CLERK_JWT_KEY), or run `frontdesk serve --dev` for a local Clerk emulator"
            );
        }
        return Ok(None);
    }
    if config.has_clerk_credentials() {
        anyhow::bail!(
            "--dev (FRONTDESK_DEV) runs an embedded Clerk emulator and cannot be combined with CLERK_SECRET_KEY or CLERK_JWT_KEY: unset them, or drop --dev"
        );
    }
    #[cfg(feature = "emulator")]
    {
        Ok(Some(devmode::start(config).await?))
    }
    #[cfg(not(feature = "emulator"))]
    {
        anyhow::bail!(
            "--dev needs the embedded Clerk emulator, but this build has no emulator (built without the `emulator` feature): set CLERK_SECRET_KEY or CLERK_JWT_KEY, or use a default build"
        )
    }
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    let dev = start_dev(&mut config).await?;
    let listeners = Listeners::bind(&config).await?;
    let edge = listeners.edge.local_addr()?;
    let api = listeners.api.local_addr()?;
    let app = App::build(config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    tracing::info!(edge = %edge, api = %api, store = app.state().store().kind(), "frontdesk ready");
    match &dev {
        #[cfg(feature = "emulator")]
        Some(dev) => say(&dev.banner(edge, api, app.state())),
        #[cfg(not(feature = "emulator"))]
        Some(never) => match *never {},
        None => say(&format!(
            "frontdesk ready: edge http://{edge}  api http://{api}"
        )),
    }
    let result = app.serve(listeners, shutdown).await;
    #[cfg(feature = "emulator")]
    if let Some(dev) = dev {
        dev.stop().await;
    }
    Ok(result?)
}

/// Writes a line to stdout for the operator. A closed stdout (`frontdesk serve | head`)
/// must not take the service down, so write errors are ignored (`println!` panics).
fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn wait_for_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
    token.cancel();
}
