//! TLS to Postgres and Redis, and Postgres through PgBouncer in transaction mode: the
//! test ground's TLS servers (a throwaway CA; certificates for `localhost` and
//! `127.0.0.1` only), what works over them, and the one-line errors for what does not.
//! The provisioning race and the webhook inbox run through the pooler in `context.rs`
//! and `webhooks.rs`; the real binary runs here.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use frontdesk::App;
use frontdesk::config::{Config, Secret};
use frontdesk::redis_link::RedisLink;
use frontdesk::store::{Backend, Store, ssl_mode_of};
use frontdesk_emulator::{Emulator, MintSession};
use futures::StreamExt;
use serde_json::Value;
use sqlx::postgres::PgSslMode;

use crate::support::{self, Pg, TestApp, http};

/// `url` with one query parameter removed.
fn without_param(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.starts_with(&format!("{name}=")))
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The same URL with the host swapped for an address the certificate does not name
/// (the servers listen on 127.0.0.2 too).
fn on_unnamed_host(url: &str) -> String {
    url.replacen("localhost", "127.0.0.2", 1)
}

/// Why building an instance failed, as the binary would print it.
async fn build_error(c: Config) -> String {
    match App::build(c).await {
        Ok(app) => panic!(
            "start-up should have failed; redis: {:?}",
            app.state().redis().map(|r| r.tls_failure())
        ),
        Err(e) => e.to_string(),
    }
}

fn sqlite_config(dir: &tempfile::TempDir) -> Config {
    support::config(&support::sqlite_url(dir), None, "")
}

#[test]
fn every_libpq_sslmode_parses() {
    let base = "postgres://u:p@db.example.com/app";
    for (mode, want) in [
        ("disable", PgSslMode::Disable),
        ("allow", PgSslMode::Allow),
        ("prefer", PgSslMode::Prefer),
        ("require", PgSslMode::Require),
        ("verify-ca", PgSslMode::VerifyCa),
        ("verify-full", PgSslMode::VerifyFull),
    ] {
        let url = format!("{base}?sslmode={mode}&sslrootcert=/etc/ca.pem&pgbouncer=true");
        let got = ssl_mode_of(&url).unwrap();
        assert_eq!(format!("{got:?}"), format!("{want:?}"), "{mode}");
    }
    // libpq's default.
    assert!(matches!(ssl_mode_of(base).unwrap(), PgSslMode::Prefer));
    assert!(ssl_mode_of(&format!("{base}?sslmode=sometimes")).is_err());
    let e = ssl_mode_of(&format!("{base}?pgbouncer=maybe")).unwrap_err();
    assert!(
        e.to_string().contains("pgbouncer must be true or false"),
        "{e}"
    );
}

async fn ssl_in_use(store: &Store) -> bool {
    let Backend::Postgres(pg) = store.backend() else {
        unreachable!()
    };
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pg)
        .await
        .unwrap()
}

/// How many Postgres migrations the crate ships.
fn pg_migrations() -> usize {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("sql".as_ref()))
        .count()
}

#[tokio::test]
async fn verify_full_tls_and_the_pooler_carry_migrations_and_queries() {
    let direct = Store::connect(&support::fresh_pg_database_on(Pg::Tls).await, 4)
        .await
        .unwrap();
    assert!(!direct.behind_pooler());
    assert_eq!(direct.migrate().await.unwrap(), pg_migrations());
    assert!(ssl_in_use(&direct).await, "the session is encrypted");

    let pooled = Store::connect(&support::fresh_pg_database_on(Pg::Pooler).await, 4)
        .await
        .unwrap();
    assert!(pooled.behind_pooler(), "pgbouncer=true in the URL");
    assert_eq!(pooled.migrate().await.unwrap(), pg_migrations());
    assert_eq!(
        pooled.applied_migrations().await.unwrap().len(),
        pg_migrations()
    );
    // PgBouncer's own leg to Postgres is TLS too (server_tls_sslmode = verify-full).
    assert!(ssl_in_use(&pooled).await);
    pooled.ping().await.unwrap();
    direct.close().await;
    pooled.close().await;
}

/// Migrations hold a transaction-scoped advisory lock (a session lock would be lost,
/// or leaked, by a transaction-mode pooler): two instances starting together through
/// PgBouncer apply each migration once.
#[tokio::test]
async fn two_instances_migrating_together_through_pgbouncer_apply_each_migration_once() {
    let url = support::fresh_pg_database_on(Pg::Pooler).await;
    let a = Store::connect(&url, 2).await.unwrap();
    let b = Store::connect(&url, 2).await.unwrap();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    assert_eq!(ra.unwrap() + rb.unwrap(), pg_migrations());
    let versions: Vec<i64> = (1..=pg_migrations() as i64).collect();
    assert_eq!(a.applied_migrations().await.unwrap(), versions);
    // Applied again: nothing to do, and no lock left behind to wait on.
    assert_eq!(a.migrate().await.unwrap(), 0);
    assert_eq!(b.migrate().await.unwrap(), 0);
}

#[tokio::test]
async fn postgres_tls_failures_stop_start_up_with_one_line_that_says_which() {
    let tls = support::fresh_pg_database_on(Pg::Tls).await;
    let dir = tempfile::tempdir().unwrap();

    // No sslrootcert: the platform's roots do not know the test ground's CA.
    let mut c = sqlite_config(&dir);
    c.database_url = Secret::new(without_param(&tls, "sslrootcert"));
    let e = build_error(c).await;
    assert!(
        e.starts_with("cannot connect to the store (postgres): the server's TLS certificate does not verify: it is not signed by a trusted CA"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");

    let mut c = sqlite_config(&dir);
    c.database_url = Secret::new(on_unnamed_host(&tls));
    let e = build_error(c).await;
    assert!(e.contains("host-name mismatch"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    // verify-ca checks the chain. (It should also accept a name the certificate does
    // not list; sqlx 0.8.6 with rustls 0.23.2x checks the name anyway: sqlx #3793.)
    let mut c = sqlite_config(&dir);
    c.database_url = Secret::new(tls.replace("verify-full", "verify-ca"));
    App::build(c)
        .await
        .expect("verify-ca against the test ground's CA");

    // The plain server refuses the TLS request.
    let plain = support::fresh_pg_database().await;
    let mut c = sqlite_config(&dir);
    c.database_url = Secret::new(format!("{plain}?sslmode=require"));
    let e = build_error(c).await;
    assert!(
        e.starts_with("cannot connect to the store (postgres): the server does not speak TLS"),
        "{e}"
    );
}

#[tokio::test]
async fn redis_tls_failures_stop_start_up_with_one_line_that_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let tls = support::redis_tls_url();

    let mut c = sqlite_config(&dir);
    c.redis_url = Some(Secret::new(tls.clone()));
    let e = build_error(c).await;
    assert!(
        e.starts_with("cannot connect to Redis: the server's TLS certificate does not verify: it is not signed by a trusted CA"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");

    let mut c = sqlite_config(&dir);
    c.redis_url = Some(Secret::new(on_unnamed_host(&tls)));
    c.redis.ca_file = Some(support::tls_ca());
    let e = build_error(c).await;
    assert!(e.starts_with("cannot connect to Redis: "), "{e}");
    assert!(e.contains("host-name mismatch"), "{e}");

    // rediss:// to the plain server.
    let plain = support::redis_url().replace("redis://", "rediss://");
    let plain = plain.replacen("127.0.0.1", "localhost", 1);
    let mut c = sqlite_config(&dir);
    c.redis_url = Some(Secret::new(plain));
    c.redis.ca_file = Some(support::tls_ca());
    let e = build_error(c).await;
    assert!(
        e.starts_with("cannot connect to Redis: the server does not speak TLS"),
        "{e}"
    );

    let mut c = sqlite_config(&dir);
    c.redis_url = Some(Secret::new(tls));
    c.redis.ca_file = Some(dir.path().join("missing.pem").display().to_string());
    let e = build_error(c).await;
    assert!(e.contains("cannot read the Redis CA file"), "{e}");
}

/// A TLS Redis on a free port, stopped when dropped.
struct TlsRedis {
    child: Child,
}

impl TlsRedis {
    fn start(port: u16) -> Self {
        let ca = support::tls_ca();
        let dir = std::path::Path::new(&ca).parent().unwrap().to_path_buf();
        let bin =
            std::env::var("FRONTDESK_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(bin)
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(dir.join("server.crt"))
            .arg("--tls-key-file")
            .arg(dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(&ca)
            .args(["--tls-auth-clients", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        TlsRedis { child }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS failure that appears after start-up (Redis was down at start, then answers
/// with a certificate Frontdesk does not trust) is what `/readyz` reports.
#[tokio::test]
async fn readyz_names_a_redis_tls_failure() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = sqlite_config(&dir);
    c.redis_url = Some(Secret::new(format!("rediss://localhost:{port}")));
    c.readyz_require_redis = true;
    let app = TestApp::start(c).await;
    let _redis = TlsRedis::start(port);
    let readyz = || async {
        let r = http()
            .get(format!("{}/readyz", app.api))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let named = support::eventually(Duration::from_secs(10), || async {
        readyz().await.1["checks"]["redis_reason"].is_string()
    })
    .await;
    assert!(named, "{:?}", readyz().await);
    let (status, body) = readyz().await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["redis"], "down");
    assert!(
        body["checks"]["redis_reason"]
            .as_str()
            .unwrap()
            .starts_with(
                "the server's TLS certificate does not verify: it is not signed by a trusted CA"
            ),
        "{body}"
    );
    app.stop().await;
}

/// The commands Frontdesk (and the branches adding streams and scripts) send, over
/// `rediss://` with a private CA: pub/sub, XADD/XREAD, EVAL/EVALSHA.
#[tokio::test]
async fn pubsub_streams_and_scripts_work_over_tls_redis() {
    frontdesk::tls::install_crypto_provider();
    let prefix = support::redis_prefix();
    let ca = support::tls_ca();
    let link = RedisLink::new(&support::redis_tls_url(), &prefix, Some(&ca)).unwrap();
    assert!(link.ping().await, "{:?}", link.tls_failure());
    let mut conn = link.conn();

    // Pub/sub on a dedicated connection.
    let channel = link.key("bus");
    let mut pubsub = link.client().get_async_pubsub().await.unwrap();
    pubsub.subscribe(&channel).await.unwrap();
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg("hello")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    let msg = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.get_payload::<String>().unwrap(), "hello");

    // Streams.
    let stream = link.key("events");
    for i in 0..3 {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("n")
            .arg(i)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    type Entries = Vec<(String, Vec<String>)>;
    let read: Vec<(String, Entries)> = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&stream)
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].1.len(), 3);
    assert_eq!(read[0].1[2].1, vec!["n".to_string(), "2".to_string()]);

    // Scripts: EVAL, then EVALSHA of the loaded script.
    let counter = link.key("counter");
    let body = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    let n: i64 = redis::cmd("EVAL")
        .arg(body)
        .arg(1)
        .arg(&counter)
        .arg(5)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 5);
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(body)
        .query_async(&mut conn)
        .await
        .unwrap();
    let n: i64 = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg(&counter)
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 7);
    let _: i64 = redis::cmd("DEL")
        .arg(&stream)
        .arg(&counter)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Invalidation across two instances over TLS Redis (pub/sub and the shared tier),
/// with their stores through PgBouncer.
#[tokio::test]
async fn a_write_on_one_instance_is_seen_on_another_over_tls_redis_and_the_pooler() {
    let (emu, running) = support::emulator(5).await;
    let key = emu.secret_key().to_string();
    let prefix = support::redis_prefix();
    let clock = frontdesk::clock::system();
    let a = support::app_on(
        Pg::Pooler,
        true,
        &running,
        Some(&prefix),
        clock.clone(),
        |_| {},
    )
    .await;
    let b = support::app_on(Pg::Pooler, true, &running, Some(&prefix), clock, |_| {}).await;
    let id = Emulator::seed_user_id(2);
    let read = |base: String| {
        let id = id.clone();
        let key = key.clone();
        async move {
            let r = http()
                .get(format!("{base}/clerk/v1/users/{id}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            let x = r.headers()["x-cache"].to_str().unwrap().to_string();
            (x, r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(read(a.api.clone()).await.0, "MISS");
    // B is filled from the shared tier A wrote over TLS.
    assert_eq!(read(b.api.clone()).await.0, "HIT");
    assert_eq!(b.state.users().unwrap().stats().l2_hits, 1);
    let r = http()
        .patch(format!("{}/clerk/v1/users/{id}", a.api))
        .bearer_auth(&key)
        .json(&serde_json::json!({"first_name": "Tls"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = support::eventually(Duration::from_secs(2), || {
        let b_api = b.api.clone();
        let read = &read;
        async move { read(b_api).await.1["first_name"] == "Tls" }
    })
    .await;
    assert!(
        seen,
        "the other instance sees the write (invalidated over TLS pub/sub)"
    );
    a.stop().await;
    b.stop().await;
}

async fn me(base: &str, token: &str) -> (u16, Value) {
    let r = http()
        .get(format!("{base}/_frontdesk/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// `frontdesk serve` with `sslmode=verify-full&sslrootcert=…` and `rediss://`: directly
/// and through PgBouncer; the Redis CA from `FRONTDESK_REDIS__CA_FILE`, then from
/// `SSL_CERT_FILE`. Thirty users' first logins at once all succeed, one row each.
#[tokio::test]
async fn serve_runs_over_verify_full_tls_and_through_pgbouncer_with_rediss() {
    const USERS: usize = 30;
    let (emu, running) = support::emulator(USERS).await;
    let ca = support::tls_ca();
    let redis = support::redis_tls_url();
    for (pg, redis_ca) in [
        (Pg::Tls, ("FRONTDESK_REDIS__CA_FILE", ca.as_str())),
        (Pg::Pooler, ("SSL_CERT_FILE", ca.as_str())),
    ] {
        let db = support::fresh_pg_database_on(pg).await;
        let prefix = support::redis_prefix();
        let (_child, edge, api) = crate::webhooks::spawn_serve_addrs(
            &db,
            &running.url,
            emu.secret_key(),
            &[
                ("REDIS_URL", redis.as_str()),
                ("FRONTDESK_REDIS_PREFIX", prefix.as_str()),
                ("FRONTDESK_READYZ_REQUIRE_REDIS", "true"),
                redis_ca,
            ],
        )
        .await;
        let r = http().get(format!("{api}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{pg:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["checks"]["store"]["status"], "up");
        assert_eq!(body["checks"]["redis"], "up");

        let tokens: Vec<String> = (0..USERS)
            .map(|i| {
                emu.mint_session(MintSession {
                    user_id: Emulator::seed_user_id(i),
                    org_id: None,
                    ttl_s: Some(600),
                    azp: None,
                })
                .unwrap()
                .jwt
            })
            .collect();
        let answers = futures::future::join_all(tokens.iter().map(|t| me(&edge, t))).await;
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{pg:?}: {body}");
            assert!(body["profile"]["id"].is_i64(), "{body}");
        }
        let admin = sqlx::PgPool::connect(&support::with_database(
            &support::pg_tls_admin_url(),
            &support::database_of(&db),
        ))
        .await
        .unwrap();
        let (users, profiles): (i64, i64) =
            sqlx::query_as("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM profiles)")
                .fetch_one(&admin)
                .await
                .unwrap();
        assert_eq!((users, profiles), (USERS as i64, USERS as i64), "{pg:?}");
        admin.close().await;
    }
}

/// The binary prints the reason as one line on stderr and exits non-zero.
#[tokio::test]
async fn serve_refuses_to_start_on_an_untrusted_certificate_with_one_line() {
    let (emu, running) = support::emulator(1).await;
    let db = support::fresh_pg_database_on(Pg::Tls).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frontdesk"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CLERK_") || k.starts_with("FRONTDESK_") || k == "REDIS_URL" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .current_dir(dir.path())
        .arg("serve")
        .env("DATABASE_URL", without_param(&db, "sslrootcert"))
        .env("CLERK_SECRET_KEY", emu.secret_key())
        .env("CLERK_API_URL", &running.url)
        .env("FRONTDESK_EDGE_ADDR", "127.0.0.1:0")
        .env("FRONTDESK_API_ADDR", "127.0.0.1:0")
        .env("FRONTDESK_LOG", "off")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(
            "the server's TLS certificate does not verify: it is not signed by a trusted CA"
        ),
        "{stderr}"
    );
}
