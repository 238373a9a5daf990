//! The tenant-scoped response cache on proxied routes: a real app behind Frontdesk
//! that counts what reaches it, real Redis, one or two instances. Time that matters
//! (freshness) moves on a manual clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use frontdesk::clock::{Clock, ManualClock, SharedClock, SystemClock};
use frontdesk::config::{Config, RouteAuth, RouteConfig, Secret};
use frontdesk::respcache::PolicyConfig;
use frontdesk_emulator::{Emulator, MintSession, svix};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::gateway::{route, token};
use crate::support::{self, TestApp};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The app behind Frontdesk: counts requests per `METHOD path`; `/api/slow` waits
/// until released.
#[derive(Clone)]
struct App {
    hits: Arc<parking_lot::Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
    release: watch::Receiver<bool>,
}

struct Running {
    url: String,
    app: App,
    release: watch::Sender<bool>,
}

impl Running {
    fn hits(&self, method_path: &str) -> usize {
        self.app.hits.lock().get(method_path).copied().unwrap_or(0)
    }
}

async fn answer(State(app): State<App>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let name = format!("{} {path}", req.method());
    let n = {
        let mut hits = app.hits.lock();
        let n = hits.entry(name).or_insert(0);
        *n += 1;
        *n
    };
    app.total.fetch_add(1, Ordering::SeqCst);
    if path.ends_with("/fail") {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "failed").into_response();
    }
    if path == "/api/slow" {
        let mut release = app.release.clone();
        let _ = release.wait_for(|r| *r).await;
    }
    let h = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let body = json!({
        "n": n,
        "path": path,
        "query": req.uri().query(),
        "user": h("x-frontdesk-user-id"),
        "org": h("x-frontdesk-org-id"),
        "tenant": h("x-tenant"),
    });
    let mut r = axum::Json(body).into_response();
    let headers = r.headers_mut();
    headers.insert("cache-control", "public, max-age=600".parse().unwrap());
    match path.as_str() {
        "/api/cookie" => {
            headers.insert("set-cookie", "sid=1; HttpOnly".parse().unwrap());
        }
        "/api/nostore" => {
            headers.insert("cache-control", "no-store".parse().unwrap());
        }
        "/api/private" => {
            headers.insert("cache-control", "private, max-age=60".parse().unwrap());
        }
        _ => {}
    }
    r
}

async fn app() -> Running {
    let (release, released) = watch::channel(false);
    let app = App {
        hits: Arc::default(),
        total: Arc::default(),
        release: released,
    };
    let router = Router::new().fallback(answer).with_state(app.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    Running { url, app, release }
}

fn policy(name: &str, resource: &str, tenant: &str) -> PolicyConfig {
    PolicyConfig {
        name: name.into(),
        resource: resource.into(),
        tenant: tenant.into(),
        ttl_s: 60,
        stale_while_revalidate_s: 30,
        vary_query: true,
        max_body_bytes: 1 << 20,
    }
}

fn cached(path: &str, auth: RouteAuth, policy: &str) -> RouteConfig {
    RouteConfig {
        cache: Some(policy.into()),
        ..route(path, auth)
    }
}

/// Routes: invoices and customers per user, org data per organization, a tenant
/// header on `/h/*`, everything else under `/api/*` per user.
fn configure(c: &mut Config, up: &Running) {
    c.proxy.upstream = Some(up.url.clone());
    c.cache_policies = vec![
        policy("invoices", "invoices", "user"),
        policy("customers", "customers", "user"),
        policy("orgdata", "orgdata", "org"),
        policy("by-header", "things", "header:X-Tenant"),
        policy("misc", "misc", "user"),
    ];
    c.routes = vec![
        cached("/api/invoices/*", RouteAuth::Required, "invoices"),
        cached("/api/customers/*", RouteAuth::Required, "customers"),
        cached("/api/org/*", RouteAuth::Required, "orgdata"),
        cached("/h/*", RouteAuth::Public, "by-header"),
        cached("/api/*", RouteAuth::Required, "misc"),
    ];
    c.clerk.webhook_signing_secret = Some(Secret::new(SECRET));
    c.webhooks.poll_interval_ms = 20;
}

async fn start(
    running: &frontdesk_emulator::RunningEmulator,
    up: &Running,
    prefix: &str,
    clock: SharedClock,
) -> TestApp {
    support::app_with(running, Some(prefix), clock, |c| configure(c, up)).await
}

struct Got {
    status: u16,
    x_cache: String,
    cache_control: String,
    age: String,
    body: Value,
}

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> Got {
    let mut req = app.http.get(format!("{}{path}", app.edge));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    read(req.send().await.unwrap()).await
}

async fn read(r: reqwest::Response) -> Got {
    let h = |k: &str| {
        r.headers()
            .get(k)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (status, x_cache, cache_control, age) = (
        r.status().as_u16(),
        h("x-cache"),
        h("cache-control"),
        h("age"),
    );
    let body = r.json().await.unwrap_or(Value::Null);
    Got {
        status,
        x_cache,
        cache_control,
        age,
        body,
    }
}

fn clock() -> Arc<ManualClock> {
    ManualClock::new(SystemClock.now_ms())
}

#[tokio::test]
async fn hit_miss_and_stale_answers_carry_their_headers() {
    let (emu, running) = support::emulator(2).await;
    let up = app().await;
    let clock = clock();
    let app = start(&running, &up, &support::redis_prefix(), clock.clone()).await;
    let t = token(&emu, &Emulator::seed_user_id(0), None);

    let first = get(&app, "/api/invoices?b=2&a=1", Some(&t)).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.x_cache, "MISS");
    assert_eq!(
        first.cache_control,
        "private, max-age=60, stale-while-revalidate=30"
    );
    assert_eq!(first.age, "0");
    assert_eq!(first.body["n"], 1);

    // The same query in another order (and encoded differently) is the same entry.
    clock.advance_ms(10_000);
    let hit = get(&app, "/api/invoices?a=%31&b=2", Some(&t)).await;
    assert_eq!(hit.x_cache, "HIT");
    assert_eq!(hit.age, "10");
    assert_eq!(
        hit.cache_control,
        "private, max-age=50, stale-while-revalidate=30"
    );
    assert_eq!(hit.body, first.body);
    assert_eq!(up.hits("GET /api/invoices"), 1);

    // Another query is another entry.
    assert_eq!(
        get(&app, "/api/invoices?a=2", Some(&t)).await.x_cache,
        "MISS"
    );

    // Past the TTL, within stale-while-revalidate: the old answer at once, one refresh.
    clock.advance_ms(55_000);
    let stale = get(&app, "/api/invoices?a=1&b=2", Some(&t)).await;
    assert_eq!(stale.x_cache, "STALE");
    assert_eq!(stale.age, "65");
    assert!(stale.cache_control.starts_with("private, max-age=0,"));
    assert_eq!(stale.body["n"], 1);
    // Requests during the refresh get the stale answer; then the refreshed one.
    assert!(
        support::eventually(Duration::from_secs(5), || async {
            get(&app, "/api/invoices?a=1&b=2", Some(&t)).await.x_cache == "HIT"
        })
        .await
    );
    let refreshed = get(&app, "/api/invoices?a=1&b=2", Some(&t)).await;
    assert_eq!(refreshed.x_cache, "HIT");
    assert_eq!(refreshed.body["n"], 3);
    assert_eq!(up.hits("GET /api/invoices"), 3);

    // HEAD is answered from the same entry, without a body.
    let head = app
        .http
        .head(format!("{}/api/invoices?a=1&b=2", app.edge))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["x-cache"], "HIT");
    assert_eq!(up.hits("GET /api/invoices"), 3);
    assert_eq!(up.hits("HEAD /api/invoices"), 0);

    // Past stale-while-revalidate: a miss that waits for the app.
    clock.advance_ms(200_000);
    let miss = get(&app, "/api/invoices?a=1&b=2", Some(&t)).await;
    assert_eq!(miss.x_cache, "MISS");
    assert_eq!(miss.body["n"], 4);

    // Unauthenticated requests never reach the cache (the route requires a session).
    assert_eq!(get(&app, "/api/invoices?a=1&b=2", None).await.status, 401);
    app.stop().await;
}

#[tokio::test]
async fn a_hundred_concurrent_misses_make_one_upstream_request() {
    let (emu, running) = support::emulator(1).await;
    let up = app().await;
    let app = start(&running, &up, &support::redis_prefix(), clock()).await;
    let t = token(&emu, &Emulator::seed_user_id(0), None);

    let mut calls = Vec::new();
    for _ in 0..100 {
        let (http, url, t) = (
            app.http.clone(),
            format!("{}/api/slow?x=1", app.edge),
            t.clone(),
        );
        calls.push(tokio::spawn(async move {
            read(http.get(url).bearer_auth(t).send().await.unwrap()).await
        }));
    }
    // Held at the app until the first request arrives; the others queue behind it.
    assert!(
        support::eventually(Duration::from_secs(10), || async {
            up.hits("GET /api/slow") >= 1
        })
        .await
    );
    up.release.send(true).unwrap();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for c in calls {
        let got = c.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.body["n"], 1);
        *outcomes.entry(got.x_cache).or_insert(0) += 1;
    }
    assert_eq!(up.hits("GET /api/slow"), 1, "{outcomes:?}");
    assert_eq!(
        outcomes.get("MISS").copied().unwrap_or(0) + outcomes.get("HIT").copied().unwrap_or(0),
        100
    );
    app.stop().await;
}

#[tokio::test]
async fn a_mutation_invalidates_only_its_tenants_resource() {
    let (emu, running) = support::emulator(2).await;
    let up = app().await;
    let app = start(&running, &up, &support::redis_prefix(), clock()).await;
    let (u0, u1) = (Emulator::seed_user_id(0), Emulator::seed_user_id(1));
    let (t0, t1) = (token(&emu, &u0, None), token(&emu, &u1, None));
    let mut events = app.state.events().subscribe();

    for (t, p) in [
        (&t0, "/api/invoices/7"),
        (&t0, "/api/customers"),
        (&t1, "/api/invoices/7"),
    ] {
        assert_eq!(get(&app, p, Some(t)).await.x_cache, "MISS");
        assert_eq!(get(&app, p, Some(t)).await.x_cache, "HIT");
    }
    let post = |path: &str| {
        app.http
            .post(format!("{}{path}", app.edge))
            .bearer_auth(&t0)
            .send()
    };
    // A failed mutation invalidates nothing.
    let r = post("/api/invoices/fail").await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["x-cache"], "BYPASS");
    assert_eq!(get(&app, "/api/invoices/7", Some(&t0)).await.x_cache, "HIT");
    // A successful one invalidates user 0's invoices.
    let r = post("/api/invoices/7").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "BYPASS");

    assert_eq!(
        get(&app, "/api/invoices/7", Some(&t0)).await.x_cache,
        "MISS"
    );
    assert_eq!(get(&app, "/api/invoices/7", Some(&t0)).await.x_cache, "HIT");
    // Only user 0's invoices: their customers and user 1's invoices stay cached.
    assert_eq!(get(&app, "/api/customers", Some(&t0)).await.x_cache, "HIT");
    assert_eq!(get(&app, "/api/invoices/7", Some(&t1)).await.x_cache, "HIT");
    assert_eq!(up.hits("GET /api/invoices/7"), 3);

    let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.kind, "invalidate");
    assert_eq!(e.subject, u0);
    assert_eq!(e.detail, json!({"resource": "invoices"}));
    app.stop().await;
}

/// A seeded user who belongs to an organization, with a session in it.
fn org_member(emu: &Emulator) -> (String, String, String) {
    emu.org_ids()
        .into_iter()
        .flat_map(|o| (0..5).map(move |i| (Emulator::seed_user_id(i), o.clone())))
        .find_map(|(u, o)| {
            emu.mint_session(MintSession {
                user_id: u.clone(),
                org_id: Some(o.clone()),
                ttl_s: Some(3600),
                azp: None,
            })
            .ok()
            .map(|m| (u, o, m.jwt))
        })
        .expect("a seeded organization member")
}

#[tokio::test]
async fn an_organization_webhook_invalidates_that_organization() {
    let (emu, running) = support::emulator(5).await;
    let up = app().await;
    let app = start(
        &running,
        &up,
        &support::redis_prefix(),
        frontdesk::clock::system(),
    )
    .await;
    let (user, org, t) = org_member(&emu);
    let user_t = token(&emu, &user, None);

    let first = get(&app, "/api/org/report", Some(&t)).await;
    assert_eq!(first.x_cache, "MISS");
    assert_eq!(first.body["org"], org.as_str());
    assert_eq!(get(&app, "/api/org/report", Some(&t)).await.x_cache, "HIT");
    assert_eq!(get(&app, "/api/misc", Some(&user_t)).await.x_cache, "MISS");
    // Without an active organization there is no org tenant: passed through.
    assert_eq!(
        get(&app, "/api/org/report", Some(&user_t)).await.x_cache,
        "BYPASS"
    );

    let mut events = app.state.events().subscribe();
    let now_s = SystemClock.now_s() as i64;
    let body = json!({
        "data": {"object": "organization", "id": org, "name": "Renamed"},
        "object": "event",
        "type": "organization.updated",
        "timestamp": now_s * 1000,
    })
    .to_string();
    let sig = svix::sign(SECRET, "msg_org_1", now_s, body.as_bytes()).unwrap();
    let r = app
        .http
        .post(format!("{}/_frontdesk/webhooks/clerk", app.edge))
        .header("content-type", "application/json")
        .header("svix-id", "msg_org_1")
        .header("svix-timestamp", now_s.to_string())
        .header("svix-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e = loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap();
        if e.kind == "invalidate" {
            break e;
        }
    };
    assert_eq!(e.subject, org);
    assert_eq!(e.detail, json!({"resource": null}));

    let after = get(&app, "/api/org/report", Some(&t)).await;
    assert_eq!(after.x_cache, "MISS");
    assert_eq!(after.body["n"], 3, "the bypassed request was the 2nd");
    // The user's own tenant was not touched.
    assert_eq!(get(&app, "/api/misc", Some(&user_t)).await.x_cache, "HIT");
    app.stop().await;
}

#[tokio::test]
async fn an_invalidation_through_the_api_reaches_the_other_instance() {
    let (emu, running) = support::emulator(2).await;
    let up = app().await;
    let prefix = support::redis_prefix();
    let a = start(&running, &up, &prefix, frontdesk::clock::system()).await;
    let b = start(&running, &up, &prefix, frontdesk::clock::system()).await;
    let user = Emulator::seed_user_id(0);
    let t = token(&emu, &user, None);

    assert_eq!(get(&a, "/api/invoices", Some(&t)).await.x_cache, "MISS");
    // B finds A's answer in Redis (L2), then in its own L1.
    assert_eq!(get(&b, "/api/invoices", Some(&t)).await.x_cache, "HIT");
    assert_eq!(get(&b, "/api/invoices", Some(&t)).await.x_cache, "HIT");
    assert_eq!(up.hits("GET /api/invoices"), 1);

    let post = |body: Value| {
        a.http
            .post(format!("{}/v1/cache/invalidate", a.api))
            .json(&body)
            .send()
    };
    let r = post(json!({"tenant": user, "resource": "invoices"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"tenant": user, "resource": "invoices", "invalidated": true})
    );
    // A knows at once; B as soon as the bus delivers (within its re-check bound).
    assert_eq!(get(&a, "/api/invoices", Some(&t)).await.x_cache, "MISS");
    assert!(
        support::eventually(Duration::from_secs(5), || async {
            get(&b, "/api/invoices", Some(&t)).await.body["n"] == 2
        })
        .await,
        "B still serves the invalidated answer"
    );
    assert_eq!(up.hits("GET /api/invoices"), 2);

    // Everything of the tenant, from B this time.
    assert_eq!(get(&a, "/api/customers", Some(&t)).await.x_cache, "MISS");
    let r = b
        .http
        .post(format!("{}/v1/cache/invalidate", b.api))
        .json(&json!({"tenant": user}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        support::eventually(Duration::from_secs(5), || async {
            get(&a, "/api/customers", Some(&t)).await.body["n"] == 2
        })
        .await
    );

    // Bad input: a stable code, nothing invalidated.
    for (body, code) in [
        (json!({"tenant": ""}), "invalid_tenant"),
        (
            json!({"tenant": "x", "resource": "nope"}),
            "unknown_resource",
        ),
        (json!({"resource": "invoices"}), "invalid_body"),
    ] {
        let r = post(body).await.unwrap();
        assert_eq!(r.status(), 422);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], code);
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn set_cookie_no_store_and_private_answers_are_never_cached() {
    let (emu, running) = support::emulator(1).await;
    let up = app().await;
    let app = start(&running, &up, &support::redis_prefix(), clock()).await;
    let t = token(&emu, &Emulator::seed_user_id(0), None);
    for path in ["/api/cookie", "/api/nostore", "/api/private"] {
        for n in 1..=2 {
            let got = get(&app, path, Some(&t)).await;
            assert_eq!(got.status, 200);
            assert_eq!(got.x_cache, "BYPASS", "{path}");
            assert_eq!(got.body["n"], n, "{path}");
        }
        assert_eq!(up.hits(&format!("GET {path}")), 2);
    }
    // The app's own Cache-Control is kept on what is not cached.
    assert_eq!(
        get(&app, "/api/nostore", Some(&t)).await.cache_control,
        "no-store"
    );
    app.stop().await;
}

#[tokio::test]
async fn tenants_never_see_each_others_answers() {
    let (emu, running) = support::emulator(2).await;
    let up = app().await;
    let prefix = support::redis_prefix();
    let a = start(&running, &up, &prefix, frontdesk::clock::system()).await;
    let b = start(&running, &up, &prefix, frontdesk::clock::system()).await;
    let (u0, u1) = (Emulator::seed_user_id(0), Emulator::seed_user_id(1));
    let (t0, t1) = (token(&emu, &u0, None), token(&emu, &u1, None));

    let g0 = get(&a, "/api/invoices?q=1", Some(&t0)).await;
    let g1 = get(&b, "/api/invoices?q=1", Some(&t1)).await;
    assert_eq!((g0.x_cache.as_str(), g1.x_cache.as_str()), ("MISS", "MISS"));
    assert_eq!(g0.body["user"], u0.as_str());
    assert_eq!(g1.body["user"], u1.as_str());
    assert_eq!(
        get(&b, "/api/invoices?q=1", Some(&t0)).await.body["user"],
        u0.as_str()
    );
    assert_eq!(
        get(&a, "/api/invoices?q=1", Some(&t1)).await.body["user"],
        u1.as_str()
    );

    // Header tenants that look like key syntax stay apart, and no header: no cache.
    let hget = |tenant: Option<&'static str>| {
        let mut r = a.http.get(format!("{}/h/list", a.edge));
        if let Some(t) = tenant {
            r = r.header("x-tenant", t);
        }
        async move { read(r.send().await.unwrap()).await }
    };
    let x = hget(Some("acme}:e:things")).await;
    let y = hget(Some("acme")).await;
    let z = hget(Some("acme%7D%3Ae%3Athings")).await;
    assert_eq!(
        (x.x_cache.as_str(), y.x_cache.as_str(), z.x_cache.as_str()),
        ("MISS", "MISS", "MISS")
    );
    assert_eq!(
        hget(Some("acme}:e:things")).await.body["tenant"],
        "acme}:e:things"
    );
    assert_eq!(hget(Some("acme")).await.body["tenant"], "acme");
    assert_eq!(hget(None).await.x_cache, "BYPASS");
    assert_eq!(up.hits("GET /h/list"), 4);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn without_redis_the_cache_works_in_process() {
    let (emu, running) = support::emulator(1).await;
    let up = app().await;
    let mut redis = support::PrivateRedis::start().await;
    let url = redis.url();
    let app = support::app_with(&running, Some(&support::redis_prefix()), clock(), |c| {
        configure(c, &up);
        c.redis_url = Some(Secret::new(url));
    })
    .await;
    let t = token(&emu, &Emulator::seed_user_id(0), None);
    assert_eq!(get(&app, "/api/invoices", Some(&t)).await.x_cache, "MISS");
    redis.stop();
    assert_eq!(get(&app, "/api/invoices", Some(&t)).await.x_cache, "HIT");
    assert_eq!(get(&app, "/api/customers", Some(&t)).await.x_cache, "MISS");
    assert_eq!(get(&app, "/api/customers", Some(&t)).await.x_cache, "HIT");
    // An invalidation still applies here, and answers 200.
    let r = app
        .http
        .post(format!("{}/v1/cache/invalidate", app.api))
        .json(&json!({"tenant": Emulator::seed_user_id(0)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&app, "/api/customers", Some(&t)).await.x_cache, "MISS");
    app.stop().await;
}

/// Checked at start by `FrontdeskBuilder::build` (config sits below the capabilities).
#[test]
fn config_errors_name_the_policy() {
    let mut c = Config::default();
    c.proxy.upstream = Some("http://127.0.0.1:3000".into());
    c.routes = vec![cached("/api/*", RouteAuth::Required, "nope")];
    let e = frontdesk::respcache::validate(&c).unwrap_err().to_string();
    assert!(e.contains("unknown cache policy \"nope\""), "{e}");
    c.cache_policies = vec![policy("nope", "x", "tenant")];
    let e = frontdesk::respcache::validate(&c).unwrap_err().to_string();
    assert!(
        e.contains("cache_policies") && e.contains("\"tenant\""),
        "{e}"
    );
    c.cache_policies = vec![policy("nope", "x", "org")];
    c.routes = vec![cached("/api/*", RouteAuth::Public, "nope")];
    assert!(
        frontdesk::respcache::validate(&c)
            .unwrap_err()
            .to_string()
            .contains("public")
    );
    c.routes = vec![cached("/api/*", RouteAuth::Optional, "nope")];
    frontdesk::respcache::validate(&c).unwrap();
}

/// Requests for one cold key that arrive while its load runs, or as it ends, make one
/// request to the app: none starts a second load because it missed L1 an instant
/// before the first load filled it. In process (no Redis, whose copy would hide it);
/// worker threads and staggered arrivals make the interleaving happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staggered_misses_of_one_key_make_one_upstream_request() {
    const ROUNDS: usize = 200;
    let (emu, running) = support::emulator(1).await;
    let up = app().await;
    let app = support::app_with(&running, None, clock(), |c| configure(c, &up)).await;
    let t = token(&emu, &Emulator::seed_user_id(0), None);
    for round in 0..ROUNDS {
        // A query no earlier round used: a cold key each round.
        let url = format!("{}/api/invoices?round={round}", app.edge);
        let answers = support::staggered(6, || {
            let request = app.http.get(&url).bearer_auth(&t);
            async move { read(request.send().await.unwrap()).await }
        })
        .await;
        for got in answers {
            assert_eq!(got.status, 200);
            assert!(
                got.x_cache == "MISS" || got.x_cache == "HIT",
                "{}",
                got.x_cache
            );
        }
        assert_eq!(up.hits("GET /api/invoices"), round + 1, "round {round}");
    }
    app.stop().await;
}
