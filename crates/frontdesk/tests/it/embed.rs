//! Frontdesk embedded in a Rust app: `FrontdeskLayer` and the axum extractors against
//! the emulator, with real Postgres and Redis. The refusals must be the service's own
//! (same codes as `/_frontdesk/me`), first-login provisioning must converge through the
//! extractor, and an embedded instance must follow the invalidations of a running
//! `frontdesk serve` that shares its Redis.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::routing::get;
use frontdesk::embed::{Admin, Role};
use frontdesk::store::{Backend, Store};
use frontdesk::{Context, Frontdesk, FrontdeskLayer, OptionalSession, RequireRole, Session};
use frontdesk_emulator::{Emulator, MintSession};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::fleet::Fleet;
use crate::support;

const APP_ORIGIN: &str = "http://localhost:3000";

struct Editor;
impl Role for Editor {
    const NAME: &'static str = "editor";
}

/// The app's routes, one per extractor.
fn app_routes() -> Router {
    Router::new()
        .route("/public", get(|| async { "public" }))
        .route(
            "/session",
            get(|s: Session| async move { s.user_id.clone() }),
        )
        .route(
            "/optional",
            get(|OptionalSession(s): OptionalSession| async move {
                s.map(|s| s.user_id.clone())
                    .unwrap_or_else(|| "anonymous".into())
            }),
        )
        .route(
            "/context",
            get(|c: Context| async move {
                Json(json!({
                    "clerk_id": c.user.clerk_id,
                    "name": c.user.name,
                    "role": c.user.role,
                    "profile_id": c.profile.id,
                }))
            }),
        )
        .route(
            "/admin",
            get(|c: RequireRole<Admin>| async move { c.user.clerk_id.clone() }),
        )
        .route(
            "/editor",
            get(|c: RequireRole<Editor>| async move { c.user.clerk_id.clone() }),
        )
}

/// An embedding app: its routes behind `FrontdeskLayer`, served on port 0, plus
/// Frontdesk's own edge routes on a second port (to compare answers with the service).
struct Embedded {
    fd: Frontdesk,
    app: String,
    service: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Embedded {
    async fn start(config: frontdesk::Config) -> Embedded {
        let fd = Frontdesk::builder(config).build().await.unwrap();
        fd.start();
        let app = app_routes().layer(FrontdeskLayer::new(fd.clone()));
        let service = frontdesk::app::edge_router(&fd);
        let (a, s) = (
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
        );
        let (app_url, service_url) = (
            format!("http://{}", a.local_addr().unwrap()),
            format!("http://{}", s.local_addr().unwrap()),
        );
        let tasks = vec![
            tokio::spawn(async move { axum::serve(a, app).await.unwrap() }),
            tokio::spawn(async move { axum::serve(s, service).await.unwrap() }),
        ];
        Embedded {
            fd,
            app: app_url,
            service: service_url,
            tasks,
        }
    }

    async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.fd.stop().await;
    }
}

/// Status, `code` (or the body as text) and `WWW-Authenticate` of `GET base+path`.
async fn get_as(
    c: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> (u16, String, Option<String>) {
    let mut r = c.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let json = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
    let text = r.text().await.unwrap();
    let body = if json && status >= 400 {
        serde_json::from_str::<Value>(&text).unwrap()["code"]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        text
    };
    (status, body, www)
}

fn mint(emu: &Emulator, user: &str, azp: Option<&str>) -> (String, String) {
    let m = emu
        .mint_session(MintSession {
            user_id: user.to_string(),
            org_id: None,
            ttl_s: Some(600),
            azp: azp.map(str::to_string),
        })
        .unwrap();
    (m.jwt, m.sid)
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn count(store: &Store, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    match store.backend() {
        Backend::Postgres(p) => sqlx::query_scalar(&sql).fetch_one(p).await.unwrap(),
        Backend::Sqlite(p) => sqlx::query_scalar(&sql).fetch_one(p).await.unwrap(),
    }
}

#[tokio::test]
async fn the_extractors_answer_the_token_matrix_with_the_services_codes() {
    let (emu, running) = support::emulator(3).await;
    let db = support::fresh_pg_database().await;
    let mut c = support::config(&db, Some(&running), running.emulator.secret_key());
    c.clerk.authorized_parties = vec![APP_ORIGIN.to_string()];
    let admin = Emulator::seed_user_id(0);
    let user = Emulator::seed_user_id(1);
    c.context
        .role_overrides
        .insert(admin.clone(), "admin".to_string());
    let e = Embedded::start(c).await;
    let h = support::http();

    let (good, sid) = mint(&emu, &user, Some(APP_ORIGIN));
    let now = now_s();
    let expired = emu.sign_claims(
        None,
        &json!({"sub": user, "sid": "sess_old", "azp": APP_ORIGIN,
                "iat": now - 120, "nbf": now - 120, "exp": now - 60}),
    );
    let (wrong_azp, _) = mint(&emu, &user, Some("https://evil.example"));
    let wrong_alg = emu.sign_claims(
        Some(json!({"alg": "HS256", "kid": emu.kid()})),
        &json!({"sub": user, "sid": "sess_alg", "azp": APP_ORIGIN,
                "iat": now, "nbf": now, "exp": now + 60}),
    );
    let mut forged = good.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });

    // The public route answers without a token; the layer refuses nothing itself.
    assert_eq!(get_as(&h, &format!("{}/public", e.app), None).await.0, 200);
    assert_eq!(
        get_as(&h, &format!("{}/public", e.app), Some(&expired))
            .await
            .0,
        200
    );

    let cases: [(&str, Option<&str>, u16, &str); 6] = [
        ("missing", None, 401, "token_missing"),
        ("expired", Some(&expired), 401, "token_expired"),
        ("wrong azp", Some(&wrong_azp), 401, "token_azp_mismatch"),
        ("wrong alg", Some(&wrong_alg), 401, "token_unsupported_alg"),
        ("forged", Some(&forged), 401, "token_invalid_signature"),
        ("good", Some(&good), 200, ""),
    ];
    for (what, token, status, code) in cases {
        let service = get_as(&h, &format!("{}/_frontdesk/me", e.service), token).await;
        for path in ["/session", "/context"] {
            let (s, body, www) = get_as(&h, &format!("{}{path}", e.app), token).await;
            assert_eq!(s, status, "{what} on {path}");
            assert_eq!(s, service.0, "{what} on {path}: the service's status");
            if status == 401 {
                assert_eq!(body, code, "{what} on {path}");
                assert_eq!(body, service.1, "{what} on {path}: the service's code");
                let www = www.unwrap_or_default();
                assert!(
                    www.starts_with("Bearer ") && www.contains(code),
                    "{what} on {path}: WWW-Authenticate {www:?}"
                );
            }
        }
        let optional = get_as(&h, &format!("{}/optional", e.app), token).await;
        let expected = if status == 200 {
            user.as_str()
        } else {
            "anonymous"
        };
        assert_eq!(optional, (200, expected.to_string(), None), "{what}");
    }

    // Roles: the admin override passes, an ordinary user gets 403 `role_required`.
    assert_eq!(
        get_as(&h, &format!("{}/admin", e.app), Some(&good)).await,
        (403, "role_required".to_string(), None)
    );
    assert_eq!(
        get_as(&h, &format!("{}/editor", e.app), Some(&good))
            .await
            .1,
        "role_required"
    );
    let (admin_token, _) = mint(&emu, &admin, Some(APP_ORIGIN));
    assert_eq!(
        get_as(&h, &format!("{}/admin", e.app), Some(&admin_token)).await,
        (200, admin.clone(), None)
    );
    assert_eq!(
        get_as(&h, &format!("{}/admin", e.app), None).await.1,
        "token_missing"
    );

    // Revoked: refused at once by the extractor and the service alike.
    e.fd.session_revoked(&sid, u64::MAX / 2, None)
        .await
        .unwrap();
    for path in ["/session", "/context", "/admin"] {
        let (s, code, www) = get_as(&h, &format!("{}{path}", e.app), Some(&good)).await;
        assert_eq!((s, code.as_str()), (401, "session_revoked"), "{path}");
        assert!(www.is_some(), "{path}");
    }
    assert_eq!(
        get_as(&h, &format!("{}/_frontdesk/me", e.service), Some(&good))
            .await
            .1,
        "session_revoked"
    );
    assert_eq!(
        get_as(&h, &format!("{}/optional", e.app), Some(&good))
            .await
            .1,
        "anonymous"
    );
    e.stop().await;
}

#[tokio::test]
async fn without_any_way_to_verify_the_extractors_answer_503() {
    let db = support::fresh_pg_database().await;
    let e = Embedded::start(support::config(&db, None, "")).await;
    let h = support::http();
    let (s, code, _) = get_as(&h, &format!("{}/session", e.app), Some("a.b.c")).await;
    assert_eq!((s, code.as_str()), (503, "auth_unconfigured"));
    let (s, body, _) = get_as(&h, &format!("{}/optional", e.app), Some("a.b.c")).await;
    assert_eq!((s, body.as_str()), (200, "anonymous"));
    e.stop().await;
}

#[tokio::test]
async fn concurrent_first_requests_through_the_extractor_make_one_user_and_one_profile() {
    let (emu, running) = support::emulator(3).await;
    let db = support::fresh_pg_database().await;
    let c = support::config(&db, Some(&running), running.emulator.secret_key());
    // Two embedded instances on one database: coalescing within each, the store's
    // `ON CONFLICT` between them.
    let a = Embedded::start(c.clone()).await;
    let b = Embedded::start(c).await;
    let user = Emulator::seed_user_id(2);
    let (token, _) = mint(&emu, &user, None);
    let h = support::http();
    let requests = (0..40).map(|i| {
        let url = format!("{}/context", if i % 2 == 0 { &a.app } else { &b.app });
        let (h, token) = (h.clone(), token.clone());
        async move {
            let r = h.get(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    let answers = futures::future::join_all(requests).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let profile = &answers[0].1["profile_id"];
    assert!(
        answers.iter().all(|(_, v)| &v["profile_id"] == profile),
        "every request sees the one profile"
    );
    assert!(answers.iter().all(|(_, v)| v["clerk_id"] == user.as_str()));
    assert_eq!(count(a.fd.store(), "users").await, 1);
    assert_eq!(count(a.fd.store(), "profiles").await, 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_embedded_instance_follows_a_served_binarys_invalidations_through_redis() {
    // One `frontdesk serve` process; the emulator sends its webhooks to it.
    let fleet = Fleet::start(1, 3, &support::redis_url(), &[]).await;
    let mut c = support::config(
        &fleet.db,
        Some(&fleet.running),
        fleet.running.emulator.secret_key(),
    );
    c.redis_url = Some(frontdesk::config::Secret::new(&fleet.redis_url));
    c.redis_prefix = fleet.prefix.clone();
    let e = Embedded::start(c).await;
    let h = support::http();
    let user = Emulator::seed_user_id(1);
    let (token, sid) = fleet.token(&user);

    let (s, ctx, _) = get_as(&h, &format!("{}/context", e.app), Some(&token)).await;
    assert_eq!(s, 200);
    let before: Value = serde_json::from_str(&ctx).unwrap();
    assert_ne!(before["name"], "Renamed Embedded");

    // Clerk changes the user; the binary applies the webhook and announces it on the
    // bus; the embedded instance drops its cached context and reads the new row.
    fleet
        .emu
        .update_user(
            &user,
            json!({"first_name": "Renamed", "last_name": "Embedded"}),
        )
        .unwrap();
    let renamed = support::eventually(Duration::from_secs(10), || {
        let (h, url, token) = (h.clone(), format!("{}/context", e.app), token.clone());
        async move {
            let (s, body, _) = get_as(&h, &url, Some(&token)).await;
            s == 200 && serde_json::from_str::<Value>(&body).unwrap()["name"] == "Renamed Embedded"
        }
    })
    .await;
    assert!(renamed, "the embedded instance serves the renamed user");

    // Clerk revokes the session; the binary's webhook effect reaches the embedded
    // instance's verifier through the bus.
    fleet.emu.revoke_session(&sid).unwrap();
    let refused = support::eventually(Duration::from_secs(10), || {
        let (h, url, token) = (h.clone(), format!("{}/session", e.app), token.clone());
        async move { get_as(&h, &url, Some(&token)).await.1 == "session_revoked" }
    })
    .await;
    assert!(refused, "the embedded instance refuses the revoked session");
    assert_eq!(count(e.fd.store(), "users").await, 1);
    e.stop().await;
}
