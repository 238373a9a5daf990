//! The `frontdesk emulator` command: flags (and `FRONTDESK_EMULATOR_*` variables) into an
//! [`EmulatorConfig`], bind, announce the URL on one stdout line that scripts parse, and
//! serve until SIGINT/SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;

use crate::{
    DEFAULT_SECRET_KEY, Emulator, EmulatorConfig, Error, Latency, RateLimit, WebhookTarget,
};

/// Run a local Clerk Backend API emulator.
#[derive(Debug, Clone, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(
        long,
        env = "FRONTDESK_EMULATOR_ADDR",
        default_value = "127.0.0.1:8090"
    )]
    pub addr: SocketAddr,
    /// Number of users to seed.
    #[arg(long, env = "FRONTDESK_EMULATOR_USERS", default_value_t = 100)]
    pub users: usize,
    /// Seed for generated names, metadata and timestamps.
    #[arg(long, env = "FRONTDESK_EMULATOR_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Secret key callers must send as `Authorization: Bearer`.
    #[arg(long, env = "FRONTDESK_EMULATOR_SECRET_KEY", default_value = DEFAULT_SECRET_KEY, hide_env_values = true)]
    pub secret_key: String,
    /// `iss` claim of minted session tokens.
    #[arg(long, env = "FRONTDESK_EMULATOR_ISSUER")]
    pub issuer: Option<String>,
    /// Fixed delay added to every /v1 call, in ms.
    #[arg(long, env = "FRONTDESK_EMULATOR_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Uniform random extra delay (0..=N ms) per /v1 call.
    #[arg(long, env = "FRONTDESK_EMULATOR_JITTER_MS", default_value_t = 0)]
    pub jitter_ms: u64,
    /// Share of /v1 calls answered 500 (0.0–1.0).
    #[arg(long, env = "FRONTDESK_EMULATOR_ERROR_RATE", default_value_t = 0.0)]
    pub error_rate: f64,
    /// Rate limit across /v1 as REQUESTS/WINDOW_MS, e.g. `100/10000` (Clerk dev instances).
    #[arg(long, env = "FRONTDESK_EMULATOR_RATE_LIMIT", value_parser = parse_rate_limit)]
    pub rate_limit: Option<RateLimit>,
    /// URL webhooks are POSTed to.
    #[arg(
        long,
        env = "FRONTDESK_EMULATOR_WEBHOOK_URL",
        requires = "webhook_secret"
    )]
    pub webhook_url: Option<String>,
    /// `whsec_…` secret webhooks are signed with.
    #[arg(
        long,
        env = "FRONTDESK_EMULATOR_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// Attempts per webhook message before giving up.
    #[arg(
        long,
        env = "FRONTDESK_EMULATOR_WEBHOOK_MAX_ATTEMPTS",
        default_value_t = 8
    )]
    pub webhook_max_attempts: u32,
}

/// `N/W` → at most N requests per W milliseconds.
pub fn parse_rate_limit(s: &str) -> Result<RateLimit, String> {
    let (n, w) = s
        .split_once('/')
        .ok_or_else(|| format!("expected REQUESTS/WINDOW_MS (e.g. 100/10000), got `{s}`"))?;
    let requests: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{n}` is not a request count"))?;
    let window_ms: u64 = w
        .trim()
        .parse()
        .map_err(|_| format!("`{w}` is not a window in milliseconds"))?;
    if requests == 0 || window_ms == 0 {
        return Err("both the request count and the window must be at least 1".into());
    }
    Ok(RateLimit {
        requests,
        window_ms,
    })
}

impl EmulatorArgs {
    pub fn config(&self) -> EmulatorConfig {
        EmulatorConfig {
            secret_key: self.secret_key.clone(),
            users: self.users,
            seed: self.seed,
            issuer: self.issuer.clone(),
            latency: Latency {
                fixed_ms: self.latency_ms,
                jitter_ms: self.jitter_ms,
            },
            error_rate: self.error_rate,
            rate_limit: self.rate_limit,
            webhook: match (&self.webhook_url, &self.webhook_secret) {
                (Some(url), Some(secret)) => Some(WebhookTarget {
                    url: url.clone(),
                    secret: secret.clone(),
                }),
                _ => None,
            },
            webhook_max_attempts: self.webhook_max_attempts,
        }
    }
}

/// Runs the emulator until SIGINT or SIGTERM.
pub async fn run(args: EmulatorArgs) -> Result<(), Error> {
    let emu = Emulator::new(args.config())?;
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "frontdesk emulator listening on {url}")?;
        out.flush()?;
    }
    let sample = Emulator::seed_user_id(0);
    eprintln!(
        "  secret key: {key} (CLERK_SECRET_KEY={key} CLERK_API_URL={url})\n  \
         {n} users seeded, e.g. {sample}\n  \
         mint a session token: curl -s -X POST {url}/__emulator/sessions -H 'content-type: application/json' -d '{{\"user_id\":\"{sample}\"}}'\n  \
         call counts: curl -s {url}/__emulator/stats",
        key = emu.secret_key(),
        n = args.users,
    );
    emu.serve(listener, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
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
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: EmulatorArgs,
    }

    #[test]
    fn rate_limit_flag_parses_requests_per_window() {
        assert_eq!(
            parse_rate_limit("100/10000"),
            Ok(RateLimit {
                requests: 100,
                window_ms: 10_000
            })
        );
        assert!(parse_rate_limit("100").is_err());
        assert!(parse_rate_limit("0/10").is_err());
        assert!(parse_rate_limit("x/10").is_err());
    }

    #[test]
    fn flags_build_the_config() {
        let w = Wrapper::try_parse_from([
            "emulator",
            "--addr",
            "127.0.0.1:0",
            "--users",
            "7",
            "--rate-limit",
            "5/1000",
            "--latency-ms",
            "3",
            "--webhook-url",
            "http://127.0.0.1:1/hook",
            "--webhook-secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ]);
        let cfg = match w {
            Ok(w) => w.args.config(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(cfg.users, 7);
        assert_eq!(cfg.secret_key, DEFAULT_SECRET_KEY);
        assert_eq!(cfg.latency.fixed_ms, 3);
        assert_eq!(cfg.rate_limit.map(|r| r.requests), Some(5));
        assert_eq!(
            cfg.webhook.map(|w| w.url).as_deref(),
            Some("http://127.0.0.1:1/hook")
        );
        // A webhook URL without its secret is refused.
        assert!(Wrapper::try_parse_from(["emulator", "--webhook-url", "http://x/"]).is_err());
    }
}
