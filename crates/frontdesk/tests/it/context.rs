//! Who is this request: session verification at the edge, the request context, and
//! race-free first-login provisioning, on Postgres and SQLite.

use std::time::Duration;

use frontdesk::store::{Backend, Store, UserUpsert};
use frontdesk_emulator::{Emulator, Knobs, MintSession, RunningEmulator};
use serde_json::{Value, json};

use crate::support::{self, TestApp, http};

enum Db {
    Postgres,
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
}

impl Db {
    async fn url(kind: &str) -> (String, Db) {
        match kind {
            "postgres" => (support::fresh_pg_database().await, Db::Postgres),
            "postgres-tls" => (
                support::fresh_pg_database_on(support::Pg::Tls).await,
                Db::Postgres,
            ),
            "pgbouncer" => (
                support::fresh_pg_database_on(support::Pg::Pooler).await,
                Db::Postgres,
            ),
            _ => {
                let dir = tempfile::tempdir().unwrap();
                (support::sqlite_url(&dir), Db::Sqlite(dir))
            }
        }
    }
}

async fn start(
    running: &RunningEmulator,
    kind: &str,
    tweak: impl FnOnce(&mut frontdesk::Config),
) -> (TestApp, Db) {
    let (url, db) = Db::url(kind).await;
    let mut c = support::config(&url, Some(running), running.emulator.secret_key());
    tweak(&mut c);
    (TestApp::start(c).await, db)
}

fn token(emu: &Emulator, user_id: &str) -> String {
    emu.mint_session(MintSession {
        user_id: user_id.to_string(),
        org_id: None,
        ttl_s: Some(600),
        azp: None,
    })
    .unwrap()
    .jwt
}

async fn me(app: &TestApp, token: &str) -> (u16, Value) {
    let r = app
        .http
        .get(format!("{}/_frontdesk/me", app.edge))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap())
}

async fn count(store: &Store, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    match store.backend() {
        Backend::Postgres(p) => sqlx::query_scalar(&sql).fetch_one(p).await.unwrap(),
        Backend::Sqlite(p) => sqlx::query_scalar(&sql).fetch_one(p).await.unwrap(),
    }
}

async fn hundred_concurrent_first_requests(kind: &str) {
    let (emu, running) = support::emulator(5).await;
    let (app, _db) = start(&running, kind, |c| {
        c.context.profile_defaults =
            json!({"cohort": "neon", "goals": {"revenue": 16000, "leads": 50}});
    })
    .await;
    let id = Emulator::seed_user_id(1);
    let t = token(&emu, &id);
    let answers = futures::future::join_all((0..100).map(|_| me(&app, &t))).await;
    let first_profile = answers[0].1["profile"]["id"].clone();
    assert!(first_profile.is_i64(), "{:?}", answers[0]);
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["profile"]["id"], first_profile);
        assert_eq!(body["user"]["clerk_id"], id.as_str());
        assert_eq!(body["profile"]["data"]["goals"]["revenue"], 16000);
    }
    let store = app.state.store();
    assert_eq!(count(store, "users").await, 1);
    assert_eq!(count(store, "profiles").await, 1);
    // The next request sees the same rows (from the context cache now).
    let (s, body) = me(&app, &t).await;
    assert_eq!(s, 200);
    assert_eq!(body["profile"]["id"], first_profile);
    app.stop().await;
}

#[tokio::test]
async fn a_hundred_concurrent_first_requests_make_one_user_and_one_profile_postgres() {
    hundred_concurrent_first_requests("postgres").await;
}

#[tokio::test]
async fn a_hundred_concurrent_first_requests_make_one_user_and_one_profile_over_verify_full_tls() {
    hundred_concurrent_first_requests("postgres-tls").await;
}

/// PgBouncer in transaction mode: with sqlx's named prepared statements these all
/// answered 500 (the statement prepared on one server connection, bound on another).
#[tokio::test]
async fn a_hundred_concurrent_first_requests_make_one_user_and_one_profile_through_pgbouncer() {
    hundred_concurrent_first_requests("pgbouncer").await;
}

#[tokio::test]
async fn a_hundred_concurrent_first_requests_make_one_user_and_one_profile_sqlite() {
    hundred_concurrent_first_requests("sqlite").await;
}

/// The store alone (no in-process coalescing), as many instances would hit it.
async fn ensure_profile_converges(store: Store) {
    store.migrate().await.unwrap();
    let user = store
        .upsert_user(
            &UserUpsert {
                clerk_id: "user_race".into(),
                email: Some("race@example.com".into()),
                name: None,
                image_url: None,
                role: "user".into(),
                clerk_updated_at: 1,
                email_verified: true,
            },
            1,
        )
        .await
        .unwrap();
    let defaults = json!({});
    let results =
        futures::future::join_all((0..100).map(|_| store.ensure_profile(&user, &defaults, 2)))
            .await;
    let ids: Vec<i64> = results.iter().map(|r| r.as_ref().unwrap().0.id).collect();
    assert!(ids.iter().all(|i| *i == ids[0]));
    let created = results
        .iter()
        .filter(|r| r.as_ref().unwrap().1.created())
        .count();
    assert_eq!(created, 1, "exactly one caller created it");
    assert_eq!(count(&store, "profiles").await, 1);
}

#[tokio::test]
async fn ensure_profile_converges_under_concurrency_in_the_store_itself() {
    let db = support::fresh_pg_database().await;
    ensure_profile_converges(Store::connect(&db, 20).await.unwrap()).await;
    let db = support::fresh_pg_database_on(support::Pg::Pooler).await;
    ensure_profile_converges(Store::connect(&db, 20).await.unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    ensure_profile_converges(Store::connect(&support::sqlite_url(&dir), 5).await.unwrap()).await;
}

/// Latency of the emulated Clerk in the chunked provisioning test.
const LATENCY_MS: u64 = 25;

#[tokio::test]
async fn a_thousand_new_users_fifty_at_a_time() {
    let (emu, running) = support::emulator(1000).await;
    // A remote Clerk's latency: the misses of a chunk arrive while its first list call
    // is out, and share the next one. Against a Clerk answering in a millisecond, the
    // batcher rightly sends partial batches sooner, and the count says nothing.
    emu.set_knobs(Knobs {
        latency_ms: Some(LATENCY_MS),
        ..Knobs::default()
    });
    let (app, _db) = start(&running, "postgres", |_| {}).await;
    let tokens: Vec<String> = (0..1000)
        .map(|i| token(&emu, &Emulator::seed_user_id(i)))
        .collect();
    for chunk in tokens.chunks(50) {
        let answers = futures::future::join_all(chunk.iter().map(|t| me(&app, t))).await;
        for (s, body) in answers {
            assert_eq!(s, 200, "{body}");
        }
    }
    assert_eq!(count(app.state.store(), "users").await, 1000);
    assert_eq!(count(app.state.store(), "profiles").await, 1000);
    // Each chunk of 50 costs the lone first miss's call, then one or two batches for
    // the other 49 (a partial one only if they straggle past half a list call's
    // latency): at most 3 calls a chunk, 60 in all, instead of 1,000.
    let calls = emu.stats().calls.get("GET /v1/users").copied().unwrap_or(0);
    assert!(calls <= 60, "{calls} list calls for 20 chunks of 50");
    app.stop().await;
}

async fn linking_by_email(kind: &str) {
    let logs = support::logs();
    let (emu, running) = support::emulator(5).await;
    let (app, _db) = start(&running, kind, |_| {}).await;
    let store = app.state.store();
    let one = Emulator::seed_user_id(0);
    let two = Emulator::seed_user_id(1);
    let email_of = |id: &str| {
        emu.user(id).unwrap()["email_addresses"][0]["email_address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // One waiting profile for user 0's email (in another case), two for user 1's.
    let waiting = store
        .create_unlinked_profile(&email_of(&one).to_uppercase(), &json!({"invited": true}), 1)
        .await
        .unwrap();
    let a = store
        .create_unlinked_profile(&email_of(&two), &json!({}), 1)
        .await
        .unwrap();
    let b = store
        .create_unlinked_profile(&email_of(&two), &json!({}), 1)
        .await
        .unwrap();

    let (s, body) = me(&app, &token(&emu, &one)).await;
    assert_eq!(s, 200);
    assert_eq!(body["profile"]["id"], waiting, "the one match is linked");
    assert_eq!(body["profile"]["data"]["invited"], true);

    let (s, body) = me(&app, &token(&emu, &two)).await;
    assert_eq!(s, 200);
    let new_id = body["profile"]["id"].as_i64().unwrap();
    assert!(
        new_id != a && new_id != b,
        "ambiguous matches are left alone"
    );
    let unlinked: i64 = match store.backend() {
        Backend::Postgres(p) => {
            sqlx::query_scalar("SELECT count(*) FROM profiles WHERE user_id IS NULL")
                .fetch_one(p)
                .await
                .unwrap()
        }
        Backend::Sqlite(p) => {
            sqlx::query_scalar("SELECT count(*) FROM profiles WHERE user_id IS NULL")
                .fetch_one(p)
                .await
                .unwrap()
        }
    };
    assert_eq!(unlinked, 2);
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("profile_link_ambiguous") && l.contains(&two)),
        "ambiguity is logged with the user id"
    );
    app.stop().await;
}

#[tokio::test]
async fn linking_by_email_postgres() {
    linking_by_email("postgres").await;
}

#[tokio::test]
async fn linking_by_email_through_pgbouncer() {
    linking_by_email("pgbouncer").await;
}

#[tokio::test]
async fn linking_by_email_sqlite() {
    linking_by_email("sqlite").await;
}

#[tokio::test]
async fn a_user_without_email_still_gets_a_profile_and_roles_come_from_clerk_or_config() {
    let (emu, running) = support::emulator(5).await;
    let no_email = Emulator::seed_user_id(2);
    emu.update_user(&no_email, json!({"primary_email_address_id": null}))
        .ok();
    let admin = Emulator::seed_user_id(3);
    emu.update_user(&admin, json!({"public_metadata": {"role": "admin"}}))
        .unwrap();
    let overridden = Emulator::seed_user_id(4);
    let (app, _db) = start(&running, "postgres", |c| {
        c.context
            .role_overrides
            .insert(overridden.clone(), "admin".into());
    })
    .await;
    let (s, body) = me(&app, &token(&emu, &no_email)).await;
    assert_eq!(s, 200, "{body}");
    assert!(body["profile"]["id"].is_i64());
    let (_, body) = me(&app, &token(&emu, &admin)).await;
    assert_eq!(body["user"]["role"], "admin");
    let (_, body) = me(&app, &token(&emu, &overridden)).await;
    assert_eq!(body["user"]["role"], "admin");
    app.stop().await;
}

#[tokio::test]
async fn refusals_name_the_failed_check() {
    let (emu, running) = support::emulator(3).await;
    let (app, _db) = start(&running, "postgres", |_| {}).await;
    let c = http();
    let id = Emulator::seed_user_id(0);
    let good = token(&emu, &id);

    let r = c
        .get(format!("{}/_frontdesk/me", app.edge))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "token_missing");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = emu.sign_claims(
        None,
        &json!({"sub": id, "sid": "sess_x", "iat": now - 120, "nbf": now - 120, "exp": now - 60}),
    );
    let (s, body) = me(&app, &expired).await;
    assert_eq!((s, body["code"].as_str()), (401, Some("token_expired")));

    let mut forged = good.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let (s, body) = me(&app, &forged).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (401, Some("token_invalid_signature"))
    );

    // The cookie works as well as the header; a revoked session stops working.
    let r = c
        .get(format!("{}/_frontdesk/me", app.edge))
        .header("cookie", format!("other=1; __session={good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sid = r.json::<Value>().await.unwrap()["session"]["sid"]
        .as_str()
        .unwrap()
        .to_string();
    app.state
        .session_revoked(&sid, u64::MAX / 2, None)
        .await
        .unwrap();
    let (s, body) = me(&app, &good).await;
    assert_eq!((s, body["code"].as_str()), (401, Some("session_revoked")));

    // A token for a user Clerk does not know.
    let ghost = emu.sign_claims(
        None,
        &json!({"sub": "user_ghost", "sid": "sess_g", "iat": now, "nbf": now, "exp": now + 60}),
    );
    let (s, body) = me(&app, &ghost).await;
    assert_eq!((s, body["code"].as_str()), (401, Some("user_not_found")));
    assert!(!body.to_string().contains(&ghost));
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_user_is_refused() {
    let (emu, running) = support::emulator(3).await;
    let (app, _db) = start(&running, "postgres", |_| {}).await;
    let id = Emulator::seed_user_id(0);
    let t = token(&emu, &id);
    assert_eq!(me(&app, &t).await.0, 200);
    assert!(
        app.state
            .store()
            .soft_delete_user(&id, i64::MAX / 2, 5)
            .await
            .unwrap()
    );
    app.state.user_changed(&id).await.unwrap();
    let (s, body) = me(&app, &t).await;
    assert_eq!((s, body["code"].as_str()), (401, Some("user_deleted")));
    app.stop().await;
}

#[tokio::test]
async fn with_the_store_down_cached_users_are_served_and_new_ones_get_503() {
    let (emu, running) = support::emulator(5).await;
    let (url, _db) = Db::url("postgres").await;
    let mut c = support::config(&url, Some(&running), running.emulator.secret_key());
    c.database_max_connections = 2;
    let app = TestApp::start(c).await;
    let known = token(&emu, &Emulator::seed_user_id(0));
    assert_eq!(me(&app, &known).await.0, 200);

    support::set_pg_database_reachable(&url, false).await;
    let (s, body) = me(&app, &known).await;
    assert_eq!(s, 200, "cached context answers: {body}");
    let r = http()
        .get(format!("{}/_frontdesk/me", app.edge))
        .bearer_auth(token(&emu, &Emulator::seed_user_id(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "store_unavailable");
    let text = body.to_string();
    for internal in ["sqlx", "postgres", "pool", "database \""] {
        assert!(
            !text.to_lowercase().contains(internal),
            "no internals: {text}"
        );
    }
    support::set_pg_database_reachable(&url, true).await;
    let ok = support::eventually(Duration::from_secs(10), || {
        let t = token(&emu, &Emulator::seed_user_id(1));
        let app = &app;
        async move { me(app, &t).await.0 == 200 }
    })
    .await;
    assert!(ok, "recovers once the store is back");
    app.stop().await;
}

#[tokio::test]
async fn no_token_reaches_a_log_line_or_an_error_body() {
    let logs = support::logs();
    let (emu, running) = support::emulator(3).await;
    let (app, _db) = start(&running, "postgres", |_| {}).await;
    let good = token(&emu, &Emulator::seed_user_id(0));
    let bad = format!("{good}tampered");
    let mut bodies = Vec::new();
    for t in [&good, &bad] {
        for _ in 0..2 {
            bodies.push(me(&app, t).await.1.to_string());
        }
        let r = http()
            .post(format!("{}/_frontdesk/me/profile", app.edge))
            .header("cookie", format!("__session={t}"))
            .send()
            .await
            .unwrap();
        bodies.push(r.text().await.unwrap());
    }
    let text = logs.text();
    assert!(text.contains("context_cache_miss"), "logs were captured");
    // Any of the token's three parts would be a leak.
    for part in good.split('.').chain(bad.split('.')) {
        assert!(!text.contains(part), "a token part reached the logs");
        for b in &bodies {
            assert!(!b.contains(part), "a token part reached a body: {b}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn ensuring_a_profile_is_idempotent() {
    let (emu, running) = support::emulator(3).await;
    let (app, _db) = start(&running, "sqlite", |_| {}).await;
    let t = token(&emu, &Emulator::seed_user_id(0));
    let post = || async {
        let r = http()
            .post(format!("{}/_frontdesk/me/profile", app.edge))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };
    let first = post().await;
    assert_eq!(first["created"], true);
    let second = post().await;
    assert_eq!(second["created"], false);
    assert_eq!(first["profile"]["id"], second["profile"]["id"]);
    let (_, body) = me(&app, &t).await;
    assert_eq!(body["profile"]["id"], first["profile"]["id"]);
    app.stop().await;
}

/// Unordered deliveries: a delete that arrives before the create leaves a tombstone
/// the create cannot undo, and neither can a later-stamped update: Clerk never reuses a
/// user id, so deletion is final.
async fn delete_before_create(store: Store) {
    store.migrate().await.unwrap();
    let upsert = |ts: i64| UserUpsert {
        clerk_id: "user_early_delete".into(),
        email: Some("early@example.com".into()),
        name: None,
        image_url: None,
        role: "user".into(),
        clerk_updated_at: ts,
        email_verified: true,
    };
    assert!(
        store
            .soft_delete_user("user_early_delete", 200, 1_000)
            .await
            .unwrap()
    );
    let row = store.upsert_user(&upsert(100), 1_001).await.unwrap();
    assert_eq!(
        row.deleted_at,
        Some(1_000),
        "the older create does not resurrect it"
    );
    assert_eq!(count(&store, "users").await, 1);
    // A replay of the same delete changes nothing (the first deletion time stays).
    assert!(
        !store
            .soft_delete_user("user_early_delete", 200, 1_002)
            .await
            .unwrap()
    );
    let row = store.upsert_user(&upsert(300), 1_003).await.unwrap();
    assert_eq!(
        row.deleted_at,
        Some(1_000),
        "an update stamped after the deletion does not resurrect it either"
    );
    assert_eq!(row.clerk_updated_at, 200, "nor does it change the row");
}

#[tokio::test]
async fn a_deletion_wins_over_any_create_or_update_on_both_stores() {
    let db = support::fresh_pg_database().await;
    delete_before_create(Store::connect(&db, 2).await.unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    delete_before_create(Store::connect(&support::sqlite_url(&dir), 2).await.unwrap()).await;
}

/// Decisions by email only from a verified email: a user whose primary address is
/// someone else's, not verified in Clerk, neither takes over that person's waiting
/// profile nor gets a role overridden by that address; the same with a verified
/// address does both.
async fn unverified_email(kind: &str) {
    let logs = support::logs();
    let (emu, running) = support::emulator(3).await;
    let mallory = Emulator::seed_user_id(0);
    let eve = Emulator::seed_user_id(1);
    let friend = Emulator::seed_user_id(2);
    let victim = format!("victim.{}@example.com", support::unique());
    let boss = format!("boss.{}@example.com", support::unique());
    let known = format!("friend.{}@example.com", support::unique());
    let added = emu
        .add_email_address(&mallory, &victim, false, true)
        .unwrap();
    assert_eq!(added["object"], "email_address");
    assert_eq!(added["verification"]["status"], "unverified");
    emu.add_email_address(&eve, &boss, false, true).unwrap();
    emu.add_email_address(&friend, &known, true, true).unwrap();
    let m = emu.user(&mallory).unwrap();
    let primary = m["email_addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == m["primary_email_address_id"])
        .unwrap();
    assert_eq!(primary["email_address"], victim.as_str());
    assert_eq!(primary["verification"]["status"], "unverified");

    let (app, _db) = start(&running, kind, |c| {
        c.context
            .role_overrides
            .insert(boss.clone(), "admin".into());
        c.context
            .role_overrides
            .insert(known.clone(), "admin".into());
    })
    .await;
    let store = app.state.store();
    let waiting_victim = store
        .create_unlinked_profile(&victim, &json!({"plan": "pro"}), 1)
        .await
        .unwrap();
    let waiting_known = store
        .create_unlinked_profile(&known, &json!({"plan": "team"}), 1)
        .await
        .unwrap();

    let (s, body) = me(&app, &token(&emu, &mallory)).await;
    assert_eq!(s, 200, "{body}");
    assert_ne!(body["profile"]["id"], waiting_victim, "not taken over");
    assert_eq!(body["profile"]["data"]["plan"], Value::Null);
    let (s, body) = me(&app, &token(&emu, &eve)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["user"]["role"], "user",
        "no override by an unverified email"
    );
    let (s, body) = me(&app, &token(&emu, &friend)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["profile"]["id"], waiting_known,
        "a verified email links"
    );
    assert_eq!(body["user"]["role"], "admin", "and its override applies");

    // A user created in Clerk with the address reserved (unverified) links nothing.
    let claimed = format!("claimed.{}@example.com", support::unique());
    let waiting_claimed = store
        .create_unlinked_profile(&claimed, &json!({"plan": "pro"}), 1)
        .await
        .unwrap();
    let created: Value = app
        .http
        .post(format!("{}/v1/users", running.url))
        .bearer_auth(emu.secret_key())
        .json(&json!({
            "email_address": [claimed],
            "email_address_identification_status": ["reserved"],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let carol = created["id"].as_str().unwrap().to_string();
    let (s, body) = me(&app, &token(&emu, &carol)).await;
    assert_eq!(s, 200, "{body}");
    assert_ne!(body["profile"]["id"], waiting_claimed);

    let still_waiting: i64 = match store.backend() {
        Backend::Postgres(p) => {
            sqlx::query_scalar("SELECT count(*) FROM profiles WHERE id = $1 AND user_id IS NULL")
                .bind(waiting_victim)
                .fetch_one(p)
                .await
                .unwrap()
        }
        Backend::Sqlite(p) => {
            sqlx::query_scalar("SELECT count(*) FROM profiles WHERE id = $1 AND user_id IS NULL")
                .bind(waiting_victim)
                .fetch_one(p)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        still_waiting, 1,
        "the victim's profile still waits for them"
    );
    let text = logs.text();
    for (who, decision) in [(&mallory, "profile_link"), (&eve, "role_override")] {
        assert!(
            text.lines()
                .any(|l| l.contains("profile_link_unverified_email")
                    && l.contains(who.as_str())
                    && l.contains(decision)),
            "{who}: {decision} refused and logged"
        );
    }
    assert!(!text.contains(&victim), "the address itself is not logged");
    app.stop().await;
}

#[tokio::test]
async fn an_unverified_email_links_no_profile_and_overrides_no_role_postgres() {
    unverified_email("postgres").await;
}

#[tokio::test]
async fn an_unverified_email_links_no_profile_and_overrides_no_role_sqlite() {
    unverified_email("sqlite").await;
}

#[tokio::test]
async fn log_lines_of_a_request_carry_its_id_path_and_user() {
    let logs = support::logs();
    let (emu, running) = support::emulator(3).await;
    let (app, _db) = start(&running, "sqlite", |_| {}).await;
    let user = Emulator::seed_user_id(1);
    let id = format!("ctx-{}", support::unique());
    let r = app
        .http
        .get(format!("{}/_frontdesk/me?token=secret-value", app.edge))
        .bearer_auth(token(&emu, &user))
        .header("x-request-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = logs.text();
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| l.contains(&id))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Written by the handler, by the (coalesced) provisioning run, and the access line.
    for message in ["context_cache_miss", "profile_created", "request finished"] {
        let line = lines
            .iter()
            .find(|v| v["message"] == message)
            .unwrap_or_else(|| panic!("no {message} line with the request id: {lines:?}"));
        assert_eq!(line["request"]["request_id"], id.as_str());
        assert_eq!(line["request"]["path"], "/_frontdesk/me");
        assert_eq!(line["request"]["method"], "GET");
        assert_eq!(line["request"]["listener"], "edge");
        assert_eq!(line["request"]["user_id"], user.as_str());
    }
    assert!(
        !text.contains("secret-value"),
        "the query never reaches a log"
    );
    app.stop().await;
}
