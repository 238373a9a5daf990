//! The test ground. Tests need real Postgres and real Redis: their URLs come from
//! `FRONTDESK_TEST_DATABASE_URL` and `FRONTDESK_TEST_REDIS_URL`, which `scripts/test`
//! sets after starting both. A test that needs them and finds them missing fails
//! loudly rather than passing.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use frontdesk::config::{Config, LogFormat, Secret};
use frontdesk::{App, Listeners};
use frontdesk_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const HOW: &str = "run the tests with ./scripts/test, which starts Postgres and Redis \
                   (plain, over TLS, and PgBouncer)";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: {HOW}"))
}

/// Which Postgres a test runs on: the plain server, the TLS server (`verify-full`
/// against the test ground's CA), or that TLS server through PgBouncer in transaction
/// mode (TLS on both legs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pg {
    Plain,
    Tls,
    Pooler,
}

/// The test ground's CA certificate (PEM file), which signed its TLS servers.
pub fn tls_ca() -> String {
    env("FRONTDESK_TEST_TLS_CA")
}

/// `rediss://` URL of the test ground's TLS Redis (its CA: [`tls_ca`]).
pub fn redis_tls_url() -> String {
    env("FRONTDESK_TEST_REDIS_TLS_URL")
}

/// Admin URL of the TLS Postgres (`sslmode=verify-full`).
pub fn pg_tls_admin_url() -> String {
    env("FRONTDESK_TEST_PG_TLS_URL")
}

pub fn pg_admin_url() -> String {
    std::env::var("FRONTDESK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| panic!("FRONTDESK_TEST_DATABASE_URL is not set: {HOW}"))
}

pub fn redis_url() -> String {
    std::env::var("FRONTDESK_TEST_REDIS_URL")
        .unwrap_or_else(|_| panic!("FRONTDESK_TEST_REDIS_URL is not set: {HOW}"))
}

/// A unique suffix for database names and key prefixes.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, db: &str) -> String {
    // The query may hold paths (sslrootcert=/…): split it off first.
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let (base, _) = path.rsplit_once('/').expect("database URL has a path");
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{base}/{db}{query}")
}

/// The database name of a Postgres URL.
pub fn database_of(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    path.rsplit_once('/').unwrap().1.to_string()
}

/// A fresh, empty Postgres database of this test's own. `scripts/test` drops leftovers
/// (named `fdtest_*`) at the start of the next run.
pub async fn fresh_pg_database() -> String {
    fresh_pg_database_on(Pg::Plain).await
}

/// A fresh database on `pg`, and the URL Frontdesk connects to it with.
pub async fn fresh_pg_database_on(pg: Pg) -> String {
    let admin = match pg {
        Pg::Plain => pg_admin_url(),
        Pg::Tls | Pg::Pooler => pg_tls_admin_url(),
    };
    let name = format!("fdtest_{}", unique());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
        panic!("cannot reach Postgres at FRONTDESK_TEST_DATABASE_URL ({e}): {HOW}")
    });
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&pool)
        .await
        .expect("create test database");
    pool.close().await;
    match pg {
        Pg::Plain | Pg::Tls => with_database(&admin, &name),
        Pg::Pooler => with_database(&env("FRONTDESK_TEST_PGBOUNCER_URL"), &name),
    }
}

/// Makes a test database unreachable (as if its server went away) or reachable again,
/// without touching other tests' databases.
pub async fn set_pg_database_reachable(url: &str, reachable: bool) {
    let db = url
        .rsplit_once('/')
        .unwrap()
        .1
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let pool = sqlx::PgPool::connect(&pg_admin_url()).await.unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE \"{db}\" WITH ALLOW_CONNECTIONS {}",
        if reachable { "true" } else { "false" }
    ))
    .execute(&pool)
    .await
    .unwrap();
    if !reachable {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
            .bind(&db)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

pub fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/frontdesk.db", dir.path().display())
}

pub fn redis_prefix() -> String {
    format!("fdtest:{}:", unique())
}

/// The configuration of a test instance: listeners on port 0, the given store, no
/// Redis, Clerk pointed at `emulator` when given.
pub fn config(database_url: &str, emulator: Option<&RunningEmulator>, secret: &str) -> Config {
    let mut c = Config::default();
    c.edge_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    c.api_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    c.database_url = Secret::new(database_url);
    c.database_max_connections = 16;
    c.log_format = LogFormat::Json;
    c.shutdown_grace_ms = 5_000;
    if let Some(emu) = emulator {
        c.clerk.api_url = emu.url.clone();
        c.clerk.secret_key = Some(Secret::new(secret));
    }
    c
}

pub async fn emulator(users: usize) -> (Emulator, RunningEmulator) {
    let emu = Emulator::new(EmulatorConfig {
        users,
        ..EmulatorConfig::default()
    })
    .unwrap();
    let running = emu
        .clone()
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    (emu, running)
}

/// One Frontdesk instance serving in this process.
pub struct TestApp {
    pub state: frontdesk::Frontdesk,
    /// One HTTP client per test app: building a client (TLS roots and all) per
    /// request would dominate the tests' time.
    pub http: reqwest::Client,
    pub edge: String,
    pub api: String,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<frontdesk::Result<()>>,
}

impl TestApp {
    pub async fn start(config: Config) -> TestApp {
        let app = App::build(config).await.expect("build app");
        Self::serve(app, |r| r).await
    }

    /// Serves `app`, letting the test add routes to the edge router (as an embedding
    /// Rust app would).
    pub async fn serve(app: App, edge: impl FnOnce(axum::Router) -> axum::Router) -> TestApp {
        let listeners = Listeners {
            edge: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            api: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let edge_url = format!("http://{}", listeners.edge.local_addr().unwrap());
        let api_url = format!("http://{}", listeners.api.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let state = app.state().clone();
        let edge_router = edge(app.edge_router());
        let api_router = app.api_router();
        let task =
            tokio::spawn(app.serve_routers(listeners, edge_router, api_router, shutdown.clone()));
        TestApp {
            state,
            http: http(),
            edge: edge_url,
            api: api_url,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// `GET url`, its body as JSON (panics on a transport error or a body that is not `T`).
pub async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
) -> T {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Runs `callers` calls, each on its own task, the k-th after up to 40·k random yields,
/// so that they arrive spread across the life of whatever the first one starts (and on
/// a multi-thread runtime, on different workers). Their answers, in order.
pub async fn staggered<F, Fut, T>(callers: usize, call: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..callers)
        .map(|k| {
            let fut = call();
            tokio::spawn(async move {
                for _ in 0..fastrand::usize(0..k * 40 + 1) {
                    tokio::task::yield_now().await;
                }
                fut.await
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(callers);
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

/// Log lines written by any instance in this test process (JSON, one per line). The
/// subscriber is process-wide, so a test finds its own lines by its request id.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// What was written so far, once the log writer has caught up.
    pub fn text(&self) -> String {
        assert!(frontdesk::telemetry::flush_logs(
            std::time::Duration::from_secs(5)
        ));
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn logs() -> CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        // The binary's own logging: the log pipe and its writer thread.
        assert!(frontdesk::telemetry::init_logging_to(
            frontdesk::config::LogFormat::Json,
            "info",
            65_536,
            Box::new(logs.clone()),
        ));
        logs
    })
    .clone()
}

/// A Frontdesk instance on a fresh Postgres database, talking to `emu`, with Redis
/// under `redis_prefix` when given and time from `clock`.
pub async fn app_with(
    emu: &RunningEmulator,
    redis_prefix: Option<&str>,
    clock: frontdesk::clock::SharedClock,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    app_on(Pg::Plain, false, emu, redis_prefix, clock, tweak).await
}

/// Like [`app_with`] on the given Postgres, and on the TLS Redis when `redis_tls`.
pub async fn app_on(
    pg: Pg,
    redis_tls: bool,
    emu: &RunningEmulator,
    redis_prefix: Option<&str>,
    clock: frontdesk::clock::SharedClock,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let db = fresh_pg_database_on(pg).await;
    let mut c = config(&db, Some(emu), emu.emulator.secret_key());
    if let Some(prefix) = redis_prefix {
        if redis_tls {
            c.redis_url = Some(Secret::new(redis_tls_url()));
            c.redis.ca_file = Some(tls_ca());
        } else {
            c.redis_url = Some(Secret::new(redis_url()));
        }
        c.redis_prefix = prefix.to_string();
    }
    tweak(&mut c);
    let app = App::build_with_clock(c, clock).await.expect("build app");
    TestApp::serve(app, |r| r).await
}

/// A local port that refuses connections: bound, never listening. Hold the socket for
/// as long as the port must stay refused; a dropped listener's port can be taken by a
/// test running beside this one, which then answers.
pub fn refused_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// Emulator call counts, total.
pub fn upstream_calls(emu: &Emulator) -> u64 {
    emu.stats().total
}

/// A private redis-server on a free port, for tests that stop and restart Redis.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = PrivateRedis { port, child: None };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id, for tests that pause it (`SIGSTOP`/`SIGCONT`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    pub async fn restart(&mut self) {
        let bin =
            std::env::var("FRONTDESK_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = std::process::Command::new(bin)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): {HOW}"));
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` until it holds or `within` passes: for effects that cross a process
/// boundary asynchronously (pub/sub, a health loop). Not a sleep-as-synchronisation:
/// it returns as soon as the condition holds.
pub async fn eventually<F, Fut>(within: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` as bytes on a fresh connection to `base` (`http://host:port`) and
/// reads the answer until the server closes: for requests a client library would
/// normalise or refuse to send (dot segments, oversized headers).
pub async fn raw_http(base: &str, request: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading all of a large request.
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    parse_raw(&buf)
}

pub fn parse_raw(buf: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawResponse {
        status,
        headers,
        body: body.to_string(),
    }
}
