//! The `frontdesk` binary as a newcomer runs it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

const BIN: &str = env!("CARGO_BIN_EXE_frontdesk");

/// A command with a clean Clerk/Frontdesk environment.
fn frontdesk(dir: &tempfile::TempDir) -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("CLERK_")
            || k.starts_with("FRONTDESK_")
            || k == "DATABASE_URL"
            || k == "REDIS_URL"
        {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir.path());
    cmd
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn serve_without_clerk_credentials_refuses_and_names_dev() {
    let dir = tempfile::tempdir().unwrap();
    let out = frontdesk(&dir)
        .arg("serve")
        .env("FRONTDESK_EDGE_ADDR", "127.0.0.1:0")
        .env("FRONTDESK_API_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one clear line: {stderr}");
    for word in ["--dev", "CLERK_SECRET_KEY", "CLERK_JWT_KEY"] {
        assert!(lines[0].contains(word), "{stderr}");
    }
    assert!(out.stdout.is_empty(), "no banner");
    assert!(
        !dir.path().join("frontdesk.db").exists(),
        "nothing started: no store created"
    );
}

#[test]
fn dev_mode_with_clerk_keys_set_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // --dev with a secret key, and FRONTDESK_DEV=true with a PEM key: the emulator would
    // silently replace real credentials, so neither starts.
    let pem = frontdesk_emulator::Emulator::new(Default::default())
        .unwrap()
        .public_key_pem();
    let runs = [
        frontdesk(&dir)
            .args(["serve", "--dev"])
            .env("CLERK_SECRET_KEY", "sk_test_real_instance")
            .output()
            .unwrap(),
        frontdesk(&dir)
            .arg("serve")
            .env("FRONTDESK_DEV", "true")
            .env("CLERK_JWT_KEY", &pem)
            .output()
            .unwrap(),
    ];
    for out in runs {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--dev") && stderr.contains("cannot be combined"),
            "{stderr}"
        );
        assert!(!stderr.contains("sk_test_real_instance"), "{stderr}");
    }
}

/// Serves with only `CLERK_JWT_KEY` (networkless verification, no Backend API): the
/// production shape of a lean build, which CI also checks with `scripts/lean-check`.
#[tokio::test]
async fn serve_with_only_a_jwt_key_starts_without_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let pem = frontdesk_emulator::Emulator::new(Default::default())
        .unwrap()
        .public_key_pem();
    let mut child = Killed(
        frontdesk(&dir)
            .arg("serve")
            .env("CLERK_JWT_KEY", &pem)
            .env("FRONTDESK_EDGE_ADDR", "127.0.0.1:0")
            .env("FRONTDESK_API_ADDR", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
            .find(|l| l.starts_with("frontdesk ready:"))
    });
    let ready = tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .expect("serve says it is ready")
        .unwrap()
        .expect("a ready line");
    let edge = ready
        .split_whitespace()
        .skip_while(|w| *w != "edge")
        .nth(1)
        .unwrap()
        .to_string();
    let r = support::http()
        .get(format!("{edge}/_frontdesk/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sigterm(&child.0);
}

#[tokio::test]
async fn serve_dev_runs_the_embedded_default_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Killed(
        frontdesk(&dir)
            .args(["serve", "--dev"])
            .env("FRONTDESK_EDGE_ADDR", "127.0.0.1:0")
            .env("FRONTDESK_API_ADDR", "127.0.0.1:0")
            .env("FRONTDESK_DEV__USERS", "5")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    // Read the banner on a thread: lines until the `Try:` section is complete.
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("__emulator/sessions");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let banner = tokio::time::timeout(Duration::from_secs(60), banner)
        .await
        .expect("serve prints its banner")
        .unwrap();
    let find = |prefix: &str| -> String {
        banner
            .iter()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(prefix)
                    .map(|r| r.split_whitespace().next().unwrap().to_string())
            })
            .unwrap_or_else(|| panic!("banner has `{prefix}`: {banner:#?}"))
    };
    let edge = find("edge");
    let api = find("api");
    let clerk = find("clerk");
    let token_line = banner
        .iter()
        .position(|l| l.starts_with("Demo session token"))
        .expect("banner has a demo token");
    let token = banner[token_line + 1].trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let c = support::http();
    let r = c
        .get(format!("{edge}/_frontdesk/healthz"))
        .send()
        .await
        .unwrap_or_else(|e| {
            std::thread::sleep(Duration::from_millis(300));
            let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            panic!("healthz at {edge}: {e:?}; stderr: {log}")
        });
    assert_eq!(r.status(), 200);
    // The demo token works at the edge: the demo user gets a profile.
    let r = c
        .get(format!("{edge}/_frontdesk/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: serde_json::Value = r.json().await.unwrap();
    assert!(me["profile"]["id"].is_i64(), "{me}");
    let r = c.get(format!("{api}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ready["checks"]["store"]["kind"], "sqlite");
    let r = c.get(format!("{api}/metrics")).send().await.unwrap();
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("frontdesk_http_requests_total")
    );
    // The emulator answers with its seeded users.
    let r = c
        .get(format!("{clerk}/v1/users?limit=100"))
        .bearer_auth("sk_test_frontdesk_emulator")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Vec<serde_json::Value>>().await.unwrap().len(), 5);
    assert!(
        dir.path().join("frontdesk.db").exists(),
        "the SQLite default file"
    );

    sigterm(&child.0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "serve stops after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn migrate_applies_the_schema_to_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let db = support::fresh_pg_database().await;
    let out = frontdesk(&dir)
        .arg("migrate")
        .env("DATABASE_URL", &db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("postgres: 5 migration(s) applied now"),
        "{stdout}"
    );
    let out = frontdesk(&dir)
        .arg("migrate")
        .env("DATABASE_URL", &db)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("postgres: 0 migration(s)"));
}

#[test]
fn bad_configuration_fails_at_start_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = frontdesk(&dir)
        .arg("migrate")
        .env("DATABASE_URL", "mysql://nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database_url"), "{stderr}");
}

#[test]
fn help_explains_each_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = frontdesk(&dir).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "emulator", "migrate"] {
        assert!(text.contains(sub), "{text}");
    }
    let out = frontdesk(&dir).args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CLERK_SECRET_KEY"), "{text}");
    assert!(text.contains("--dev"), "{text}");
}

#[tokio::test]
async fn warm_fills_a_running_instance_from_an_ids_file() {
    let (emu, running) = support::emulator(120).await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let mut ids: Vec<String> = (0..120)
        .map(frontdesk_emulator::Emulator::seed_user_id)
        .collect();
    ids.push("user_unknown".into());
    ids.push("# a comment".into());
    std::fs::write(dir.path().join("ids.txt"), ids.join("\n")).unwrap();
    emu.reset();
    let mut cmd = frontdesk(&dir);
    cmd.args([
        "warm",
        "--ids-file",
        "ids.txt",
        "--chunk",
        "50",
        "--api",
        &app.api,
    ]);
    // Off the runtime's thread: the instance being warmed is served by this runtime.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warmed 120 users (1 unknown to Clerk, 0 failed)"),
        "{stdout}"
    );
    // Now every one is a hit: no further Clerk call.
    let calls = emu.stats().total;
    assert!(calls <= 6, "{calls}");
    let users = app.state.users().cloned().unwrap();
    for id in ids.iter().take(120) {
        assert_eq!(
            users.get(id).await.unwrap().source,
            frontdesk::users::Source::L1
        );
    }
    assert_eq!(emu.stats().total, calls);
    app.stop().await;
}
