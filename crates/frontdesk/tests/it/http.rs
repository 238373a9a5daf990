//! HTTP semantics on both listeners: private `/me` answers, `WWW-Authenticate` on every
//! 401, JSON with a stable `code` for every rejection (unknown route, wrong method,
//! bad path or query parameters, bad JSON, body too large announced or chunked, body
//! cut off), request time-outs, the header size limit and the connection limit.

use frontdesk::clock;
use frontdesk::config::Secret;
use frontdesk_emulator::{Emulator, Knobs, MintSession, RunningEmulator};
use serde_json::Value;

use crate::support::{self, RawResponse, TestApp, http, raw_http};

const KEY: &str = "sk_test_frontdesk_emulator";

async fn app(tweak: impl FnOnce(&mut frontdesk::Config)) -> (Emulator, RunningEmulator, TestApp) {
    let (emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, clock::system(), tweak).await;
    (emu, running, app)
}

fn json_of(r: &RawResponse) -> Value {
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

async fn code_of(r: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    assert_eq!(headers["content-type"], "application/json", "{status}");
    (status, headers, r.json().await.unwrap())
}

#[tokio::test]
async fn me_answers_are_private_and_every_401_says_why() {
    let (emu, _running, app) = app(|_| {}).await;
    let c = http();
    let token = emu
        .mint_session(MintSession {
            user_id: Emulator::seed_user_id(0),
            org_id: None,
            ttl_s: Some(600),
            azp: None,
        })
        .unwrap()
        .jwt;
    for req in [
        c.get(format!("{}/_frontdesk/me", app.edge)),
        c.post(format!("{}/_frontdesk/me/profile", app.edge)),
    ] {
        let r = req.bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "private, no-store");
        assert_eq!(r.headers()["vary"], "Authorization, Cookie");
    }
    let (s, h, body) = code_of(
        c.get(format!("{}/_frontdesk/me", app.edge))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, body["code"].as_str()), (401, Some("token_missing")));
    assert_eq!(
        h["www-authenticate"],
        r#"Bearer error="invalid_token", error_description="token_missing""#
    );
    assert_eq!(h["cache-control"], "private, no-store");
    // The proxy's Clerk-shaped 401 too.
    let r = c
        .get(format!("{}/clerk/v1/users", app.api))
        .bearer_auth("sk_test_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer error="invalid_token", error_description="authentication_invalid""#
    );
    app.stop().await;
}

#[tokio::test]
async fn every_rejection_is_json_with_a_stable_code_on_both_listeners() {
    let (_emu, _running, app) = app(|c| c.max_body_bytes = 1024).await;
    let c = http();
    for base in [&app.edge, &app.api] {
        let (s, _, body) = code_of(c.get(format!("{base}/nope")).send().await.unwrap()).await;
        assert_eq!((s, body["code"].as_str()), (404, Some("not_found")));
    }
    // Wrong method: 405 with Allow.
    let (s, h, body) = code_of(
        c.delete(format!("{}/_frontdesk/me", app.edge))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert!(h["allow"].to_str().unwrap().contains("GET"), "{h:?}");
    let (s, h, body) = code_of(
        c.get(format!("{}/v1/users/batch", app.api))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert!(h["allow"].to_str().unwrap().contains("POST"), "{h:?}");
    // Bad query parameters and bad JSON.
    let (s, _, body) = code_of(
        c.get(format!("{}/v1/webhooks?limit=many", app.api))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, body["code"].as_str()), (400, Some("invalid_query")));
    let (s, _, body) = code_of(
        c.post(format!("{}/v1/users/batch", app.api))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, body["code"].as_str()), (400, Some("invalid_json")));
    let (s, _, body) = code_of(
        c.post(format!("{}/v1/users/batch", app.api))
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    // A body over the limit, announced by Content-Length, on every kind of route.
    let big = "x".repeat(4096);
    for url in [
        format!("{}/v1/users/batch", app.api),
        format!("{}/clerk/v1/users", app.api),
        format!("{}/_frontdesk/webhooks/clerk", app.edge),
    ] {
        let (s, _, body) = code_of(
            c.post(&url)
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body(big.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 413, "{url}");
        assert!(
            ["body_too_large", "webhook_body_too_large"].contains(&body["code"].as_str().unwrap()),
            "{url}: {body}"
        );
    }
    // …and sent chunked.
    for path in ["/v1/users/batch", "/clerk/v1/users"] {
        let chunk = "x".repeat(2000);
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        );
        let r = raw_http(&app.api, req.as_bytes()).await;
        assert_eq!(r.status, 413, "{path}: {r:?}");
        assert_eq!(json_of(&r)["code"], "body_too_large", "{path}");
    }
    app.stop().await;
}

/// A client that half-closes mid-body (so the answer can still be read) is told its
/// body was incomplete, not that it was too large.
#[tokio::test]
async fn a_body_cut_off_is_not_answered_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_emu, _running, app) = app(|c| {
        c.clerk.webhook_signing_secret =
            Some(Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    })
    .await;
    for (base, path) in [
        (&app.api, "/v1/users/batch"),
        (&app.edge, "/_frontdesk/webhooks/clerk"),
    ] {
        let mut s = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
            .await
            .unwrap();
        s.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"ids\":"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        s.shutdown().await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let r = support::parse_raw(&buf);
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert_eq!(json_of(&r)["code"], "body_incomplete", "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_slow_body_gets_408_and_a_slow_handler_504() {
    let (emu, _running, app) = app(|c| {
        c.http.request_timeout_ms = 300;
        c.upstream.timeout_ms = 60_000;
    })
    .await;
    // The body never finishes arriving.
    let mut s = tokio::net::TcpStream::connect(app.api.trim_start_matches("http://"))
        .await
        .unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"POST /v1/users/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"ids\":")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let r = support::parse_raw(&buf[..n]);
        assert_eq!(r.status, 408, "{r:?}");
        assert_eq!(json_of(&r)["code"], "request_timeout");
    }
    // Clerk takes a minute: the handler is cut at the time-out.
    emu.set_knobs(Knobs {
        latency_ms: Some(60_000),
        ..Knobs::default()
    });
    let (s, _, body) = code_of(
        http()
            .get(format!("{}/clerk/v1/organizations", app.api))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, body["code"].as_str()), (504, Some("handler_timeout")));
    emu.set_knobs(Knobs {
        latency_ms: Some(0),
        ..Knobs::default()
    });
    app.stop().await;
}

#[tokio::test]
async fn headers_over_the_limit_get_431() {
    let (_emu, _running, app) = app(|c| c.http.max_header_bytes = 8192).await;
    let big = "a".repeat(16 * 1024);
    let r = raw_http(
        &app.edge,
        format!("GET /_frontdesk/healthz HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 431, "{r:?}");
    let small = raw_http(
        &app.edge,
        b"GET /_frontdesk/healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(small.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_connection_over_the_limit_gets_503_and_a_freed_slot_is_reused() {
    let (_emu, _running, app) = app(|c| c.http.max_connections = 1).await;
    let addr = app.edge.trim_start_matches("http://").to_string();
    let held = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // The held connection is accepted before the next one.
    let ok = support::eventually(std::time::Duration::from_secs(5), || async {
        let r = raw_http(
            &app.edge,
            b"GET /_frontdesk/healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        r.status == 503
    })
    .await;
    assert!(ok, "a second connection was not refused");
    let r = raw_http(
        &app.edge,
        b"GET /_frontdesk/healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(json_of(&r)["code"], "too_many_connections");
    drop(held);
    let ok = support::eventually(std::time::Duration::from_secs(5), || async {
        raw_http(
            &app.edge,
            b"GET /_frontdesk/healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await
        .status
            == 200
    })
    .await;
    assert!(ok, "the freed slot was not reused");
    app.stop().await;
}

#[tokio::test]
async fn a_head_that_never_ends_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_emu, _running, app) = app(|c| c.http.header_read_timeout_ms = 200).await;
    let mut s = tokio::net::TcpStream::connect(app.edge.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(b"GET /_frontdesk/healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // Ends (the server closed) rather than hanging; hyper writes no answer.
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("the server closed the connection")
        .unwrap_or(0);
    assert_eq!(n, buf.len());
    app.stop().await;
}
