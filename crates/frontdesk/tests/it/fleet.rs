//! Many instances behaving as one: three real `frontdesk serve` processes on one
//! Postgres database and one Redis, with the emulator as Clerk. [`Fleet`] is the
//! reusable harness (start N, kill or restart one, their URLs).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use frontdesk_emulator::{Emulator, Knobs, MintSession, RunningEmulator};
use serde_json::{Value, json};

use crate::support;

const BIN: &str = env!("CARGO_BIN_EXE_frontdesk");
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One `frontdesk serve` process.
pub struct Node {
    child: Child,
    pub edge: String,
    pub api: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// N instances of the binary sharing one database, one Redis (and key prefix) and one
/// Clerk emulator, which sends its webhooks to instance 0.
pub struct Fleet {
    pub emu: Emulator,
    pub running: RunningEmulator,
    pub db: String,
    pub redis_url: String,
    pub prefix: String,
    env: Vec<(String, String)>,
    nodes: Vec<Option<Node>>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts an emulator with `users` users and `n` instances on a fresh database and
    /// `redis_url` (under a fresh prefix); `env` is added to every instance's.
    pub async fn start(n: usize, users: usize, redis_url: &str, env: &[(&str, &str)]) -> Fleet {
        let (emu, running) = support::emulator(users).await;
        let mut fleet = Fleet {
            emu,
            running,
            db: support::fresh_pg_database().await,
            redis_url: redis_url.to_string(),
            prefix: support::redis_prefix(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            nodes: Vec::new(),
            _dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..n {
            let node = fleet.spawn().await;
            fleet.nodes.push(Some(node));
        }
        let hook = format!("{}/_frontdesk/webhooks/clerk", fleet.edge(0));
        fleet.emu.set_knobs(Knobs {
            webhook_url: Some(Some(hook)),
            webhook_secret: Some(Some(SIGNING_SECRET.to_string())),
            ..Default::default()
        });
        fleet
    }

    async fn spawn(&self) -> Node {
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
        cmd.args(["serve"])
            .current_dir(self._dir.path())
            .env("DATABASE_URL", &self.db)
            .env("REDIS_URL", &self.redis_url)
            .env("FRONTDESK_REDIS_PREFIX", &self.prefix)
            .env("CLERK_SECRET_KEY", self.emu.secret_key())
            .env("CLERK_API_URL", &self.running.url)
            .env("CLERK_WEBHOOK_SIGNING_SECRET", SIGNING_SECRET)
            .env("FRONTDESK_EDGE_ADDR", "127.0.0.1:0")
            .env("FRONTDESK_API_ADDR", "127.0.0.1:0")
            .env("FRONTDESK_LOG", "warn")
            .env("FRONTDESK_WEBHOOKS__POLL_INTERVAL_MS", "50")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            // Keep draining so the child never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("frontdesk ready: edge ") {
                    let mut words = rest.split_whitespace();
                    let edge = words.next().unwrap_or("").to_string();
                    let api = words.nth(1).unwrap_or("").to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((edge, api));
                    }
                }
            }
        });
        let mut node = Node {
            child,
            edge: String::new(),
            api: String::new(),
        };
        let (edge, api) = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("serve starts")
            .expect("serve prints its addresses");
        node.edge = edge;
        node.api = api;
        node
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("instance is running")
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn edge(&self, i: usize) -> &str {
        &self.node(i).edge
    }

    pub fn api(&self, i: usize) -> &str {
        &self.node(i).api
    }

    /// SIGKILL: no graceful shutdown, leases and queues left behind.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i] = None;
    }

    /// Starts instance `i` again (new ports; webhooks follow instance 0).
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i] = None;
        let node = self.spawn().await;
        self.nodes[i] = Some(node);
        if i == 0 {
            let hook = format!("{}/_frontdesk/webhooks/clerk", self.edge(0));
            self.emu.set_knobs(Knobs {
                webhook_url: Some(Some(hook)),
                ..Default::default()
            });
        }
    }

    /// Waits until instance 0 has applied every stored webhook.
    pub async fn webhooks_applied(&self, within: Duration) -> bool {
        self.emu.webhooks_settled().await;
        let c = support::http();
        let api = self.api(0).to_string();
        support::eventually(within, || {
            let c = c.clone();
            let api = api.clone();
            async move {
                let r = c
                    .get(format!("{api}/v1/webhooks?state=pending&limit=10"))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        r.json::<Value>().await.is_ok_and(|v| pending_is_empty(&v))
                    }
                    _ => false,
                }
            }
        })
        .await
    }

    /// A session token of Clerk user `user_id` (ten minutes).
    pub fn token(&self, user_id: &str) -> (String, String) {
        let m = self
            .emu
            .mint_session(MintSession {
                user_id: user_id.to_string(),
                org_id: None,
                ttl_s: Some(600),
                azp: None,
            })
            .unwrap();
        (m.jwt, m.sid)
    }
}

fn pending_is_empty(v: &Value) -> bool {
    let items = v.get("items").or(Some(v)).and_then(|i| i.as_array());
    items.is_some_and(|a| a.is_empty())
}

/// `/me` on `edge` with `token`: status and `code` (on errors).
async fn me(c: &reqwest::Client, edge: &str, token: &str) -> (u16, Option<String>) {
    let r = c
        .get(format!("{edge}/_frontdesk/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().map(str::to_string))
}

/// A user's `first_name` as instance `api` serves it.
async fn first_name(c: &reqwest::Client, api: &str, id: &str) -> Option<String> {
    let r = c.get(format!("{api}/v1/users/{id}")).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    v["first_name"].as_str().map(str::to_string)
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

#[tokio::test]
async fn a_session_revoked_on_one_instance_is_refused_by_all_and_after_a_restart() {
    let mut fleet = Fleet::start(3, 3, &support::redis_url(), &[]).await;
    let c = support::http();
    let user = Emulator::seed_user_id(1);
    let (token, sid) = fleet.token(&user);
    // Every instance accepts the token (and caches its verification).
    for i in 0..fleet.len() {
        assert_eq!(me(&c, fleet.edge(i), &token).await.0, 200, "instance {i}");
    }

    fleet.emu.revoke_session(&sid).unwrap();
    // The webhook is acknowledged by instance 0 once this returns.
    fleet.emu.webhooks_settled().await;
    for i in 0..fleet.len() {
        let edge = fleet.edge(i).to_string();
        let refused = support::eventually(Duration::from_secs(1), || {
            let (c, edge, token) = (c.clone(), edge.clone(), token.clone());
            async move { me(&c, &edge, &token).await == (401, Some("session_revoked".into())) }
        })
        .await;
        assert!(
            refused,
            "instance {i} refuses the revoked session within 1 s"
        );
    }
    let other = fleet.token(&user).0;
    assert_eq!(
        me(&c, fleet.edge(1), &other).await.0,
        200,
        "another session of the same user still works"
    );

    // Instance 0 applied the webhook; after a restart it still refuses.
    fleet.kill(0);
    fleet.restart(0).await;
    assert_eq!(
        me(&c, fleet.edge(0), &token).await,
        (401, Some("session_revoked".into()))
    );
    fleet.kill(1);
    fleet.restart(1).await;
    assert_eq!(
        me(&c, fleet.edge(1), &token).await,
        (401, Some("session_revoked".into()))
    );
}

/// Warms users `ids` on every instance and checks they serve `expected` names.
async fn warm(fleet: &Fleet, c: &reqwest::Client, ids: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    for id in ids {
        let name = first_name(c, fleet.api(0), id).await.expect("user served");
        for i in 1..fleet.len() {
            assert_eq!(
                first_name(c, fleet.api(i), id).await.as_deref(),
                Some(name.as_str())
            );
        }
        names.push(name);
    }
    names
}

/// Whether every instance serves `want` as each user's name.
async fn all_serve(fleet: &Fleet, c: &reqwest::Client, want: &[(String, String)]) -> bool {
    for i in 0..fleet.len() {
        for (id, name) in want {
            if first_name(c, fleet.api(i), id).await.as_deref() != Some(name.as_str()) {
                return false;
            }
        }
    }
    true
}

#[tokio::test]
async fn changes_made_while_redis_is_paused_are_served_everywhere_after_it_resumes() {
    let redis = support::PrivateRedis::start().await;
    let fleet = Fleet::start(3, 5, &redis.url(), &[]).await;
    let c = support::http();
    let ids: Vec<String> = (1..=3).map(Emulator::seed_user_id).collect();
    let before = warm(&fleet, &c, &ids).await;
    // A user whose context (/me) is cached on every instance, deleted during the pause.
    let doomed = Emulator::seed_user_id(4);
    let (token, _) = fleet.token(&doomed);
    for i in 0..fleet.len() {
        assert_eq!(me(&c, fleet.edge(i), &token).await.0, 200);
    }

    signal(redis.pid(), "-STOP");
    let paused = std::time::Instant::now();
    let mut want = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let name = format!("Paused{n}");
        assert_ne!(before[n], name);
        fleet
            .emu
            .update_user(id, json!({ "first_name": name }))
            .unwrap();
        want.push((id.clone(), name));
    }
    let r = c
        .delete(format!("{}/v1/users/{doomed}", fleet.running.url))
        .bearer_auth(fleet.emu.secret_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        fleet.webhooks_applied(Duration::from_secs(10)).await,
        "the webhooks are applied while Redis is paused"
    );
    if let Some(rest) = Duration::from_secs(2).checked_sub(paused.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    signal(redis.pid(), "-CONT");

    let fresh = support::eventually(Duration::from_secs(1), || all_serve(&fleet, &c, &want)).await;
    assert!(
        fresh,
        "every instance serves the new values within 1 s of SIGCONT"
    );
    for i in 0..fleet.len() {
        assert_eq!(
            me(&c, fleet.edge(i), &token).await,
            (401, Some("user_deleted".into())),
            "instance {i}"
        );
    }
}

#[tokio::test]
async fn after_redis_restarts_empty_every_instance_resyncs_and_serves_fresh_data() {
    let mut redis = support::PrivateRedis::start().await;
    let fleet = Fleet::start(3, 5, &redis.url(), &[]).await;
    let c = support::http();
    let ids: Vec<String> = (1..=3).map(Emulator::seed_user_id).collect();
    warm(&fleet, &c, &ids).await;

    redis.stop();
    let mut want = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let name = format!("Restarted{n}");
        fleet
            .emu
            .update_user(id, json!({ "first_name": name }))
            .unwrap();
        want.push((id.clone(), name));
    }
    assert!(fleet.webhooks_applied(Duration::from_secs(10)).await);
    redis.restart().await;

    let fresh = support::eventually(Duration::from_secs(10), || all_serve(&fleet, &c, &want)).await;
    assert!(fresh, "every instance serves fresh data without a restart");
}

#[tokio::test]
async fn a_worker_killed_while_its_effect_overruns_its_lease_writes_once() {
    let mut fleet = Fleet::start(
        1,
        2,
        &support::redis_url(),
        &[("FRONTDESK_WEBHOOKS__LEASE_MS", "3000")],
    )
    .await;
    let pool = sqlx::PgPool::connect(&fleet.db).await.unwrap();
    // Every committed write of a revocation row is counted.
    sqlx::raw_sql(
        "CREATE TABLE revocation_writes (sid TEXT NOT NULL);
         CREATE FUNCTION count_revocation_write() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO revocation_writes VALUES (NEW.sid); RETURN NEW; END $$;
         CREATE TRIGGER count_revocation_write AFTER INSERT OR UPDATE ON session_revocations
           FOR EACH ROW EXECUTE FUNCTION count_revocation_write();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let user = Emulator::seed_user_id(1);
    let (token, sid) = fleet.token(&user);
    // Hold the row the effect writes: the effect waits on it, past its lease.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO session_revocations (sid, until_ms, revoked_at) VALUES ($1, 1, 0)")
        .bind(&sid)
        .execute(&mut *blocker)
        .await
        .unwrap();
    fleet.emu.revoke_session(&sid).unwrap();
    fleet.emu.webhooks_settled().await;
    let stuck = support::eventually(Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                 AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO session_revocations%'
                 AND pid <> pg_backend_pid()",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            n >= 1
        }
    })
    .await;
    assert!(stuck, "the effect is waiting on the held row");
    // The worker dies mid-effect; its statement is still queued in Postgres.
    fleet.kill(0);
    blocker.rollback().await.unwrap();
    fleet.restart(0).await;
    let done = support::eventually(Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            let state: String = sqlx::query_scalar(
                "SELECT state FROM webhook_inbox WHERE type = 'session.revoked'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            state == "done"
        }
    })
    .await;
    assert!(done, "the message is applied after the lease");
    let writes: i64 = sqlx::query_scalar("SELECT count(*) FROM revocation_writes WHERE sid = $1")
        .bind(&sid)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(writes, 1, "the killed worker's write never committed");
    let c = support::http();
    assert_eq!(
        me(&c, fleet.edge(0), &token).await,
        (401, Some("session_revoked".into()))
    );
    pool.close().await;
}

// ---------------------------------------------------------------------------------
// The store's side of it, on both backends.

async fn both_stores() -> Vec<(frontdesk::store::Store, Option<tempfile::TempDir>)> {
    let pg = frontdesk::store::Store::connect(&support::fresh_pg_database().await, 4)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lite = frontdesk::store::Store::connect(&support::sqlite_url(&dir), 4)
        .await
        .unwrap();
    vec![(pg, None), (lite, Some(dir))]
}

#[tokio::test]
async fn revocations_are_stored_keep_the_later_time_and_are_purged_after_expiry() {
    for (store, _dir) in both_stores().await {
        store.migrate().await.unwrap();
        store
            .revocation_put("sess_a", 2_000, 0, None)
            .await
            .unwrap();
        store
            .revocation_put("sess_a", 1_500, 10, None)
            .await
            .unwrap();
        store
            .revocation_put("sess_b", 1_000, 0, None)
            .await
            .unwrap();
        let mut active = store.revocations_active(1_200, 100).await.unwrap();
        active.sort();
        assert_eq!(
            active,
            vec![("sess_a".to_string(), 2_000)],
            "{}",
            store.kind()
        );
        assert_eq!(store.revocations_purge(1_200).await.unwrap(), 1);
        assert_eq!(store.revocations_active(0, 100).await.unwrap().len(), 1);
        store.close().await;
    }
}

#[tokio::test]
async fn a_worker_whose_claim_was_retaken_cannot_finish_the_message() {
    for (store, _dir) in both_stores().await {
        store.migrate().await.unwrap();
        let msg = frontdesk::store::NewInboxMessage {
            id: "msg_1",
            kind: "user.updated",
            payload: "{}",
            event_ts: 0,
        };
        assert!(store.inbox_insert(&msg, 0).await.unwrap());
        let first = store.inbox_claim(0, 100, 10).await.unwrap();
        assert_eq!(first.len(), 1);
        // The first worker overran its lease: another one takes the message.
        assert!(
            store.inbox_claim(50, 100, 10).await.unwrap().is_empty(),
            "leased"
        );
        let second = store.inbox_claim(100, 100, 10).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_ne!(first[0].claim, second[0].claim);
        let (old, new) = (first[0].claim, second[0].claim);
        assert!(!store.inbox_retry("msg_1", old, 0, "late").await.unwrap());
        assert!(!store.inbox_dead("msg_1", old, "late", 200).await.unwrap());
        assert!(!store.inbox_done("msg_1", old, 200).await.unwrap());
        let row = store.inbox_get("msg_1").await.unwrap().unwrap();
        assert_eq!(
            row.state,
            frontdesk::store::InboxState::Pending,
            "{}",
            store.kind()
        );
        assert!(store.inbox_done("msg_1", new, 200).await.unwrap());
        let row = store.inbox_get("msg_1").await.unwrap().unwrap();
        assert_eq!(row.state, frontdesk::store::InboxState::Done);
        // A replay resets attempts but never the claim: the old holders stay fenced.
        assert!(store.inbox_replay("msg_1", 300).await.unwrap());
        let third = store.inbox_claim(300, 100, 10).await.unwrap();
        assert!(third[0].claim > new);
        assert!(!store.inbox_done("msg_1", old, 400).await.unwrap());
        store.close().await;
    }
}
