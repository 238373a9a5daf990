//! The edge in front of the app: forwarding to a real upstream (an axum app in this
//! crate that echoes what it receives, streams, upgrades to WebSocket and answers 429
//! on demand), identity headers and the assertion, stripping of spoofed headers, each
//! auth mode, 502/504 and body streaming both ways.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use frontdesk::config::{RateLimitConfig, RouteAuth, RouteConfig};
use frontdesk_emulator::{Emulator, MintSession};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::support;

/// The app behind Frontdesk.
#[derive(Clone, Default)]
pub struct Upstream {
    pub calls: Arc<AtomicUsize>,
    /// Released by a test to let `/stream` finish.
    pub release: Arc<Notify>,
}

pub struct RunningUpstream {
    pub url: String,
    /// A WebSocket echo server (its own listener).
    pub ws_url: String,
    pub state: Upstream,
}

impl RunningUpstream {
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
}

async fn echo(State(u): State<Upstream>, req: Request) -> Response {
    u.calls.fetch_add(1, Ordering::SeqCst);
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let v = v.to_str().unwrap_or("").to_string();
        match headers.get_mut(k.as_str()) {
            Some(Value::String(s)) => {
                s.push_str(", ");
                s.push_str(&v);
            }
            _ => {
                headers.insert(k.to_string(), Value::String(v));
            }
        }
    }
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    axum::Json(json!({
        "method": method, "uri": uri, "headers": headers, "body_len": body.len(),
    }))
    .into_response()
}

async fn stream(State(u): State<Upstream>) -> Response {
    u.calls.fetch_add(1, Ordering::SeqCst);
    let release = u.release.clone();
    let chunks = futures::stream::unfold(0, move |i| {
        let release = release.clone();
        async move {
            match i {
                0 => Some((Ok::<_, std::io::Error>(Bytes::from("first\n")), 1)),
                1 => {
                    release.notified().await;
                    Some((Ok(Bytes::from("second\n")), 2))
                }
                _ => None,
            }
        }
    });
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(chunks),
    )
        .into_response()
}

async fn too_many(State(u): State<Upstream>) -> Response {
    u.calls.fetch_add(1, Ordering::SeqCst);
    (
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        [("retry-after", "7"), ("x-app-limit", "app")],
        "slow down",
    )
        .into_response()
}

async fn fail(State(u): State<Upstream>) -> Response {
    u.calls.fetch_add(1, Ordering::SeqCst);
    (axum::http::StatusCode::UNAUTHORIZED, "wrong password").into_response()
}

async fn hang(State(u): State<Upstream>) -> Response {
    u.calls.fetch_add(1, Ordering::SeqCst);
    futures::future::pending::<()>().await;
    "never".into_response()
}

pub async fn upstream() -> RunningUpstream {
    let state = Upstream::default();
    let app = Router::new()
        .route("/stream", get(stream))
        .route("/429", any(too_many))
        .route("/fail", any(fail))
        .route("/hang", any(hang))
        .fallback(echo)
        .with_state(state.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_url = format!("http://{}", ws.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((sock, _)) = ws.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(sock).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    RunningUpstream { url, ws_url, state }
}

pub fn route(path: &str, auth: RouteAuth) -> RouteConfig {
    RouteConfig {
        path: path.into(),
        auth,
        rate_limit: None,
        upstream: None,
        cache: None,
    }
}

pub fn policy(
    name: &str,
    key: frontdesk::config::RateLimitKey,
    limit: u32,
    window_s: u64,
) -> RateLimitConfig {
    RateLimitConfig {
        name: name.into(),
        key,
        limit,
        window_s,
        count: frontdesk::config::RateLimitCount::All,
        bypass_roles: Vec::new(),
    }
}

pub fn token(emu: &Emulator, user_id: &str, org_id: Option<&str>) -> String {
    emu.mint_session(MintSession {
        user_id: user_id.to_string(),
        org_id: org_id.map(String::from),
        ttl_s: Some(3600),
        azp: None,
    })
    .unwrap()
    .jwt
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

#[tokio::test]
async fn identity_headers_arrive_and_spoofed_ones_never_do() {
    let (emu, running) = support::emulator(3).await;
    let up = upstream().await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |c| {
        c.proxy.upstream = Some(up.url.clone());
    })
    .await;
    let user = Emulator::seed_user_id(1);
    let t = token(&emu, &user, None);

    // Signed in, with spoofed identity and hop-by-hop headers.
    let r = app
        .http
        .get(format!("{}/api/things?x=1", app.edge))
        .bearer_auth(&t)
        .header("X-Frontdesk-User-Id", "user_attacker")
        .header("x-frontdesk-role", "admin")
        .header("X-Frontdesk-Anything", "1")
        .header("Connection", "x-secret-hop")
        .header("X-Secret-Hop", "1")
        .header("Keep-Alive", "timeout=5")
        .header("Proxy-Authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = json_of(r).await;
    let h = &seen["headers"];
    assert_eq!(seen["uri"], "/api/things?x=1");
    assert_eq!(h["x-frontdesk-user-id"], user.as_str());
    assert_eq!(h["x-frontdesk-role"], "user");
    assert!(
        h["x-frontdesk-local-user-id"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    assert!(
        h["x-frontdesk-profile-id"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    assert!(h["x-frontdesk-email"].as_str().unwrap().contains('@'));
    assert!(h.get("x-frontdesk-session-id").is_some());
    assert!(h.get("x-frontdesk-anything").is_none());
    assert!(h.get("x-frontdesk-org-id").is_none(), "absent when unknown");
    assert!(h.get("x-frontdesk-assertion").is_some());
    // The session token itself is forwarded unchanged.
    assert_eq!(h["authorization"], format!("Bearer {t}"));
    // Hop-by-hop headers are gone; forwarding headers are set.
    for gone in ["x-secret-hop", "keep-alive", "proxy-authorization"] {
        assert!(h.get(gone).is_none(), "{gone} was forwarded");
    }
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    let edge_host = app.edge.trim_start_matches("http://");
    assert_eq!(h["x-forwarded-host"], edge_host);
    assert_eq!(
        h["forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"{edge_host}\"")
    );

    // Anonymous, with spoofed identity and a spoofed X-Forwarded-For.
    let r = app
        .http
        .get(format!("{}/anything", app.edge))
        .header("X-Frontdesk-User-Id", "user_attacker")
        .header("X-Frontdesk-Assertion", "forged")
        .header("X-Forwarded-For", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = json_of(r).await;
    let h = seen["headers"].as_object().unwrap();
    assert!(!h.keys().any(|k| k.starts_with("x-frontdesk-")), "{h:?}");
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "an untrusted peer's XFF is replaced"
    );

    // /_frontdesk/* is still Frontdesk's own; unknown ones are a JSON 404.
    let r = app
        .http
        .get(format!("{}/_frontdesk/nope", app.edge))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(json_of(r).await["code"], "not_found");
    assert_eq!(up.calls(), 2);
    app.stop().await;
}

#[tokio::test]
async fn assertions_verify_against_any_instances_jwks() {
    let (emu, running) = support::emulator(3).await;
    let up = upstream().await;
    let prefix = support::redis_prefix();
    let mut apps = Vec::new();
    for _ in 0..2 {
        apps.push(
            support::app_with(&running, Some(&prefix), frontdesk::clock::system(), |c| {
                c.proxy.upstream = Some(up.url.clone());
                c.proxy.assertion_audience = "my-app".into();
            })
            .await,
        );
    }
    // A seeded user with an organization membership.
    let (user, org, t) = emu
        .org_ids()
        .into_iter()
        .flat_map(|o| (0..3).map(move |i| (Emulator::seed_user_id(i), o.clone())))
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
        .expect("a seeded membership");
    // Each instance publishes its key at start; A's JWKS lists both.
    let jwks_url = format!("{}/_frontdesk/.well-known/jwks.json", apps[0].edge);
    let http = support::http();
    assert!(
        support::eventually(std::time::Duration::from_secs(10), || async {
            let j: Value = support::get_json(&http, &jwks_url).await;
            j["keys"].as_array().unwrap().len() == 2
        })
        .await
    );
    let jwks: jsonwebtoken::jwk::JwkSet = support::get_json(&http, &jwks_url).await;

    let r = apps[1]
        .http
        .get(format!("{}/orders/7", apps[1].edge))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    let seen = json_of(r).await;
    let assertion = seen["headers"]["x-frontdesk-assertion"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(assertion).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["my-app"]);
    v.set_issuer(&["frontdesk"]);
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], user.as_str());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    assert_eq!(claims["htu"], "/orders/7");
    assert_eq!(claims["org_id"], org.as_str());
    assert_eq!(seen["headers"]["x-frontdesk-org-id"], org.as_str());
    assert!(
        seen["headers"]["x-frontdesk-org-role"]
            .as_str()
            .unwrap()
            .starts_with("org:")
    );
    // A wrong audience is refused: the assertion is for this app only.
    let mut other = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    other.set_audience(&["another-app"]);
    assert!(jsonwebtoken::decode::<Value>(assertion, &key, &other).is_err());
    for a in apps {
        a.stop().await;
    }
}

#[tokio::test]
async fn auth_modes_and_sign_in_redirect() {
    let (emu, running) = support::emulator(3).await;
    let up = upstream().await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |c| {
        c.proxy.upstream = Some(up.url.clone());
        c.proxy.sign_in_url = Some("https://accounts.example.com/sign-in".into());
        c.routes = vec![
            route("/private/*", RouteAuth::Required),
            route("/public/*", RouteAuth::Public),
            route("/*", RouteAuth::Optional),
        ];
    })
    .await;
    let t = token(&emu, &Emulator::seed_user_id(1), None);
    let get = |path: &str| app.http.get(format!("{}{path}", app.edge));

    // Required, no session: 401 JSON for an API client…
    let r = get("/private/x").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(json_of(r).await["code"], "token_missing");
    // …a bad token is a 401 with the verifier's code…
    let r = get("/private/x")
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(json_of(r).await["code"], "token_malformed");
    // …and a browser navigation goes to the sign-in page, coming back after.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .get(format!("{}/private/x?y=1", app.edge))
        .header("Accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let edge_host = app.edge.trim_start_matches("http://");
    let back: String =
        form_urlencoded::byte_serialize(format!("http://{edge_host}/private/x?y=1").as_bytes())
            .collect();
    assert_eq!(
        location,
        format!("https://accounts.example.com/sign-in?redirect_url={back}")
    );
    assert_eq!(up.calls(), 0, "nothing reached the app without a session");

    // Required, signed in.
    let r = get("/private/x").bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        json_of(r).await["headers"]
            .get("x-frontdesk-user-id")
            .is_some()
    );
    // Public: never verified, never identity headers, even with a token.
    let r = get("/public/x").bearer_auth(&t).send().await.unwrap();
    let seen = json_of(r).await;
    assert!(seen["headers"].get("x-frontdesk-user-id").is_none());
    assert!(seen["headers"].get("authorization").is_some());
    // Optional with a bad token: forwarded, anonymously.
    let r = get("/other").bearer_auth("not.a.jwt").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        json_of(r).await["headers"]
            .get("x-frontdesk-user-id")
            .is_none()
    );
    // Frontdesk's own routes keep working behind the gateway.
    let r = get("/_frontdesk/me").bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(up.calls(), 3);
    app.stop().await;
}

#[tokio::test]
async fn responses_stream_and_uploads_pass_the_listener_body_limit() {
    let (_emu, running) = support::emulator(1).await;
    let up = upstream().await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |c| {
        c.proxy.upstream = Some(up.url.clone());
        c.max_body_bytes = 1024;
    })
    .await;
    // The first chunk arrives while the app has not finished (it waits for us).
    let mut r = app
        .http
        .get(format!("{}/stream", app.edge))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let first = r.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"first\n");
    up.state.release.notify_one();
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"second\n");

    // A 200 KB upload, chunked (no Content-Length), reaches the app whole.
    let chunks =
        futures::stream::iter((0..50).map(|_| {
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![b'x'; 4096])))
        }));
    let r = app
        .http
        .post(format!("{}/upload", app.edge))
        .body(reqwest::Body::wrap(http_body_util::StreamBody::new(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await["body_len"], 50 * 4096);
    // Frontdesk's own routes keep the limit.
    let r = app
        .http
        .post(format!("{}/_frontdesk/me/profile", app.edge))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    app.stop().await;
}

#[tokio::test]
async fn websocket_upgrades_are_spliced() {
    let (_emu, running) = support::emulator(1).await;
    let up = upstream().await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |c| {
        c.proxy.upstream = Some(up.url.clone());
        c.routes = vec![
            RouteConfig {
                upstream: Some(up.ws_url.clone()),
                ..route("/ws", RouteAuth::Public)
            },
            route("/*", RouteAuth::Optional),
        ];
    })
    .await;
    let url = format!("{}/ws", app.edge.replace("http://", "ws://"));
    let (mut ws, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(resp.status(), 101);
    for text in ["hello", "again"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn upstream_down_is_502_slow_is_504_and_app_statuses_pass() {
    let (_emu, running) = support::emulator(1).await;
    let up = upstream().await;
    let (reserved, port) = support::refused_port();
    let closed = format!("http://127.0.0.1:{port}");
    let app = support::app_with(&running, None, frontdesk::clock::system(), |c| {
        c.proxy.upstream = Some(up.url.clone());
        c.proxy.timeout_ms = 300;
        c.routes = vec![
            RouteConfig {
                upstream: Some(closed.clone()),
                ..route("/down/*", RouteAuth::Public)
            },
            route("/*", RouteAuth::Public),
        ];
    })
    .await;
    let r = app
        .http
        .get(format!("{}/down/x", app.edge))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(json_of(r).await["code"], "upstream_unreachable");
    let r = app
        .http
        .get(format!("{}/hang", app.edge))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(json_of(r).await["code"], "upstream_timeout");
    // The app's own 429 stays a 429, with its headers and body.
    let r = app
        .http
        .get(format!("{}/429", app.edge))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(r.headers()["x-app-limit"], "app");
    assert_eq!(r.text().await.unwrap(), "slow down");
    app.stop().await;
    drop(reserved);
}

#[test]
fn config_errors_name_the_setting() {
    let mut c = frontdesk::Config::default();
    c.proxy.upstream = Some("http://127.0.0.1:3000".into());
    c.routes = vec![RouteConfig {
        rate_limit: Some("nope".into()),
        ..route("/api/*", RouteAuth::Required)
    }];
    let e = frontdesk::gateway::validate(&c).unwrap_err().to_string();
    assert!(e.contains("unknown rate_limit \"nope\""), "{e}");
    c.routes = vec![route("api/*", RouteAuth::Required)];
    assert!(
        frontdesk::gateway::validate(&c)
            .unwrap_err()
            .to_string()
            .contains("must start with /")
    );
    c.routes = vec![];
    c.proxy.trusted_proxies = vec!["10.0.0.0/99".into()];
    assert!(
        frontdesk::gateway::validate(&c)
            .unwrap_err()
            .to_string()
            .contains("proxy.trusted_proxies")
    );
    c.proxy.trusted_proxies = vec![];
    c.proxy.upstream = Some("https://app.internal".into());
    assert!(
        frontdesk::gateway::validate(&c)
            .unwrap_err()
            .to_string()
            .contains("proxy.upstream")
    );

    // FRONTDESK_UPSTREAM_URL alone is the simple case.
    let env = vec![(
        "FRONTDESK_UPSTREAM_URL".to_string(),
        "http://127.0.0.1:3000".to_string(),
    )];
    let (c, warnings) = frontdesk::Config::load_from(None, &env).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.proxy.upstream.as_deref(), Some("http://127.0.0.1:3000"));
}
