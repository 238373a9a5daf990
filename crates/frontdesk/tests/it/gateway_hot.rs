//! The gateway's hot path (issue 14): identity headers and assertions reused per
//! (session token, context, request line) must never cross sessions, requests or
//! revocations; on cached routes they are made only when the app is called, yet a
//! cache policy keyed on a header the gateway writes still sees the gateway's value.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use frontdesk::clock::{Clock, ManualClock, SystemClock};
use frontdesk::config::{RouteAuth, RouteConfig};
use frontdesk::respcache::PolicyConfig;
use frontdesk_emulator::{Emulator, MintSession};
use serde_json::Value;

use crate::gateway::{route, upstream};
use crate::support;

fn session(emu: &Emulator, user_id: &str) -> (String, String) {
    let s = emu
        .mint_session(MintSession {
            user_id: user_id.to_string(),
            org_id: None,
            ttl_s: Some(3600),
            azp: None,
        })
        .unwrap();
    (s.jwt, s.sid)
}

/// What the app saw: its JSON echo.
async fn seen(app: &support::TestApp, method: &str, path: &str, token: &str) -> Value {
    let r = app
        .http
        .request(method.parse().unwrap(), format!("{}{path}", app.edge))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{method} {path}");
    r.json().await.unwrap()
}

fn assertion(seen: &Value) -> String {
    seen["headers"]["x-frontdesk-assertion"]
        .as_str()
        .expect("an assertion")
        .to_string()
}

/// The claims, read without checking the signature (checked once below).
fn claims(assertion: &str) -> Value {
    let payload = assertion.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn reused_assertions_stay_with_their_session_request_and_half_life() {
    let (emu, running) = support::emulator(3).await;
    let up = upstream().await;
    let clock = ManualClock::new(SystemClock.now_ms());
    let app = support::app_with(&running, None, clock.clone(), |c| {
        c.proxy.upstream = Some(up.url.clone());
    })
    .await;
    let (a, b) = (Emulator::seed_user_id(0), Emulator::seed_user_id(1));
    let (ta, sid_a) = session(&emu, &a);
    let (ta2, sid_a2) = session(&emu, &a);
    let (tb, sid_b) = session(&emu, &b);

    // The same session asking the same thing again: the same assertion.
    let first = assertion(&seen(&app, "GET", "/orders/1", &ta).await);
    let again = seen(&app, "GET", "/orders/1", &ta).await;
    assert_eq!(assertion(&again), first);
    assert_eq!(again["headers"]["x-frontdesk-user-id"], a.as_str());
    assert_eq!(again["headers"]["x-frontdesk-session-id"], sid_a.as_str());
    let c = claims(&first);
    assert_eq!(
        (c["sub"].as_str(), c["sid"].as_str()),
        (Some(a.as_str()), Some(sid_a.as_str()))
    );
    assert_eq!(
        (c["htm"].as_str(), c["htu"].as_str()),
        (Some("GET"), Some("/orders/1"))
    );

    // The reused assertion verifies against the instance's JWKS.
    let jwks: jsonwebtoken::jwk::JwkSet = support::get_json(
        &app.http,
        format!("{}/_frontdesk/.well-known/jwks.json", app.edge),
    )
    .await;
    let kid = jsonwebtoken::decode_header(&first).unwrap().kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["frontdesk-app"]);
    v.set_issuer(&["frontdesk"]);
    assert!(jsonwebtoken::decode::<Value>(&first, &key, &v).is_ok());

    // Another user, another session of the same user, another path, another method:
    // each its own assertion, describing exactly that.
    let other_user = assertion(&seen(&app, "GET", "/orders/1", &tb).await);
    assert_eq!(claims(&other_user)["sub"], b.as_str());
    assert_eq!(claims(&other_user)["sid"], sid_b.as_str());
    let other_session = seen(&app, "GET", "/orders/1", &ta2).await;
    assert_eq!(claims(&assertion(&other_session))["sid"], sid_a2.as_str());
    assert_eq!(
        other_session["headers"]["x-frontdesk-session-id"],
        sid_a2.as_str()
    );
    let other_path = assertion(&seen(&app, "GET", "/orders/2", &ta).await);
    assert_eq!(claims(&other_path)["htu"], "/orders/2");
    let other_method = assertion(&seen(&app, "POST", "/orders/1", &ta).await);
    assert_eq!(claims(&other_method)["htm"], "POST");
    let all = [&first, &other_user, &other_path, &other_method];
    for (i, x) in all.iter().enumerate() {
        for y in &all[i + 1..] {
            assert_ne!(x, y);
        }
    }

    // Reused for half its life at most: then signed again, with a later `iat`.
    clock.advance_ms(29_000);
    assert_eq!(assertion(&seen(&app, "GET", "/orders/1", &ta).await), first);
    clock.advance_ms(1_000);
    let later = assertion(&seen(&app, "GET", "/orders/1", &ta).await);
    assert_ne!(later, first);
    let (c0, c1) = (claims(&first), claims(&later));
    assert_eq!(
        c1["iat"].as_u64().unwrap() - c0["iat"].as_u64().unwrap(),
        30
    );
    assert_eq!(
        c1["exp"].as_u64().unwrap() - c1["iat"].as_u64().unwrap(),
        60
    );
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_session_never_gets_its_reused_assertion() {
    let (emu, running) = support::emulator(2).await;
    let up = upstream().await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |c| {
        c.proxy.upstream = Some(up.url.clone());
        c.routes = vec![
            route("/o/*", RouteAuth::Optional),
            route("/*", RouteAuth::Required),
        ];
    })
    .await;
    let a = Emulator::seed_user_id(0);
    let (ta, sid_a) = session(&emu, &a);
    let (ta2, sid_a2) = session(&emu, &a);
    let before = assertion(&seen(&app, "GET", "/x", &ta).await);
    assert_eq!(claims(&before)["sid"], sid_a.as_str());
    let optional = assertion(&seen(&app, "GET", "/o/x", &ta).await);
    assert_eq!(claims(&optional)["sid"], sid_a.as_str());
    assert_eq!(up.calls(), 2);

    app.state
        .session_revoked(&sid_a, SystemClock.now_ms() + 120_000, None)
        .await
        .unwrap();
    let r = app
        .http
        .get(format!("{}/x", app.edge))
        .bearer_auth(&ta)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "session_revoked");
    assert_eq!(up.calls(), 2, "nothing reached the app");
    // Where a session is optional, the revoked one reaches the app as nobody.
    let anonymous = seen(&app, "GET", "/o/x", &ta).await;
    let h = anonymous["headers"].as_object().unwrap();
    assert!(!h.keys().any(|k| k.starts_with("x-frontdesk-")), "{h:?}");

    // The user's other session is unaffected and gets its own assertion.
    let other = seen(&app, "GET", "/x", &ta2).await;
    assert_eq!(claims(&assertion(&other))["sid"], sid_a2.as_str());
    assert_eq!(up.calls(), 4);
    app.stop().await;
}

fn cached(path: &str, policy: &str) -> RouteConfig {
    RouteConfig {
        cache: Some(policy.into()),
        ..route(path, RouteAuth::Required)
    }
}

fn policy(name: &str, tenant: &str) -> PolicyConfig {
    PolicyConfig {
        name: name.into(),
        resource: name.into(),
        tenant: tenant.into(),
        ttl_s: 60,
        stale_while_revalidate_s: 0,
        vary_query: false,
        max_body_bytes: 1 << 20,
    }
}

async fn get_cached(app: &support::TestApp, path: &str, token: &str) -> (String, Value) {
    let r = app
        .http
        .get(format!("{}{path}", app.edge))
        .bearer_auth(token)
        .header("X-Frontdesk-User-Id", "user_spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let x_cache = r.headers()["x-cache"].to_str().unwrap().to_string();
    (x_cache, r.json().await.unwrap())
}

#[tokio::test]
async fn cached_routes_identify_to_the_app_on_a_miss_and_keep_header_tenants() {
    let (emu, running) = support::emulator(2).await;
    let up = upstream().await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |c| {
        c.proxy.upstream = Some(up.url.clone());
        c.cache_policies = vec![
            policy("per-user", "user"),
            policy("per-header", "header:X-Frontdesk-User-Id"),
        ];
        c.routes = vec![cached("/u/*", "per-user"), cached("/h/*", "per-header")];
    })
    .await;
    let (a, b) = (Emulator::seed_user_id(0), Emulator::seed_user_id(1));
    let (ta, sid_a) = session(&emu, &a);
    let (tb, _) = session(&emu, &b);

    // A miss reaches the app with the identity, the assertion and the forwarding
    // headers, never the client's spoofed ones; a hit does not reach it.
    let (x, miss) = get_cached(&app, "/u/list", &ta).await;
    assert_eq!(x, "MISS");
    let h = &miss["headers"];
    assert_eq!(h["x-frontdesk-user-id"], a.as_str());
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    let c = claims(h["x-frontdesk-assertion"].as_str().unwrap());
    assert_eq!(
        (c["sub"].as_str(), c["sid"].as_str()),
        (Some(a.as_str()), Some(sid_a.as_str()))
    );
    assert_eq!(
        (c["htm"].as_str(), c["htu"].as_str()),
        (Some("GET"), Some("/u/list"))
    );
    let (x, hit) = get_cached(&app, "/u/list", &ta).await;
    assert_eq!((x.as_str(), &hit), ("HIT", &miss));
    assert_eq!(up.calls(), 1);

    // A policy keyed on a header the gateway writes sees the gateway's value (the
    // verified user), not the client's: each user its own entry, cached.
    let (x, first_a) = get_cached(&app, "/h/list", &ta).await;
    assert_eq!(x, "MISS");
    assert_eq!(first_a["headers"]["x-frontdesk-user-id"], a.as_str());
    let (x, again_a) = get_cached(&app, "/h/list", &ta).await;
    assert_eq!((x.as_str(), &again_a), ("HIT", &first_a));
    let (x, first_b) = get_cached(&app, "/h/list", &tb).await;
    assert_eq!(x, "MISS");
    assert_eq!(first_b["headers"]["x-frontdesk-user-id"], b.as_str());
    assert_eq!(up.calls(), 3);
    app.stop().await;
}
