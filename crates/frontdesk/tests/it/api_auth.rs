//! The api listener's optional bearer (`FRONTDESK_API_TOKEN`): every route but
//! `/readyz` and `/metrics` needs it when set; `/clerk/v1/*` keeps needing the Clerk
//! secret key instead; the CLI sends it.

use std::process::Command;

use frontdesk::config::Secret;
use frontdesk_emulator::Emulator;
use serde_json::Value;

use crate::support;

const TOKEN: &str = "fd-api-token-for-tests-0123456789";

#[tokio::test]
async fn with_a_token_every_api_route_but_probes_requires_it() {
    let (emu, running) = support::emulator(3).await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |c| {
        c.api_token = Some(Secret::new(TOKEN));
    })
    .await;
    let c = support::http();
    let api = &app.api;
    let user = Emulator::seed_user_id(1);
    let routes: Vec<(reqwest::Method, String)> = vec![
        (reqwest::Method::GET, format!("{api}/v1/stats")),
        (reqwest::Method::GET, format!("{api}/v1/users/{user}")),
        (reqwest::Method::POST, format!("{api}/v1/users/batch")),
        (reqwest::Method::GET, format!("{api}/v1/webhooks")),
        (
            reqwest::Method::POST,
            format!("{api}/v1/webhooks/replay?state=dead"),
        ),
        (
            reqwest::Method::POST,
            format!("{api}/v1/webhooks/purge?state=dead"),
        ),
        (
            reqwest::Method::DELETE,
            format!("{api}/v1/cache/users/{user}"),
        ),
        (reqwest::Method::GET, format!("{api}/v1/no-such-route")),
    ];
    for (method, url) in &routes {
        // No token.
        let r = c.request(method.clone(), url).send().await.unwrap();
        assert_eq!(r.status(), 401, "{method} {url}");
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "api_token_missing", "{method} {url}");
        // A wrong one (the Clerk secret key is not the api token either).
        for wrong in ["nope", emu.secret_key(), &TOKEN[..TOKEN.len() - 1]] {
            let r = c
                .request(method.clone(), url)
                .bearer_auth(wrong)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{method} {url}");
            let challenge = r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "api_token_invalid");
            assert!(!body.to_string().contains(TOKEN), "no secret in the body");
        }
    }
    // With it: through to the handler.
    let ok = |method: reqwest::Method, url: String| {
        let c = c.clone();
        async move {
            c.request(method, url)
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({"ids": []}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        ok(reqwest::Method::GET, format!("{api}/v1/stats")).await,
        200
    );
    assert_eq!(
        ok(reqwest::Method::GET, format!("{api}/v1/users/{user}")).await,
        200
    );
    assert_eq!(
        ok(reqwest::Method::GET, format!("{api}/v1/webhooks")).await,
        200
    );
    assert_eq!(
        ok(reqwest::Method::GET, format!("{api}/v1/no-such-route")).await,
        404
    );
    // Probes and the scraper need nothing.
    for path in ["/readyz", "/metrics"] {
        let r = c.get(format!("{api}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // The Clerk proxy keeps taking the Clerk secret key, not the api token.
    let proxied = format!("{api}/clerk/v1/users/{user}");
    let r = c
        .get(&proxied)
        .bearer_auth(emu.secret_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(&proxied).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 401, "the api token is not a Clerk key");
    // The edge is not the api: it never asks for the token.
    let r = c
        .get(format!("{}/_frontdesk/healthz", app.edge))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The CLI sends FRONTDESK_API_TOKEN when set, and is refused without it.
    let run = |token: Option<&'static str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_frontdesk"));
        cmd.args(["webhooks", "list", "--api", api])
            .env_remove("FRONTDESK_CONFIG")
            .env_remove("FRONTDESK_API_TOKEN");
        if let Some(t) = token {
            cmd.env("FRONTDESK_API_TOKEN", t);
        }
        async move {
            tokio::task::spawn_blocking(move || cmd.output())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let out = run(Some(TOKEN)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 message(s)"));
    let out = run(None).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401"), "{err}");
    app.stop().await;
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_a_token_the_api_is_open_as_before() {
    let (_emu, running) = support::emulator(2).await;
    let app = support::app_with(&running, None, frontdesk::clock::system(), |_| {}).await;
    let c = support::http();
    for path in ["/v1/stats", "/v1/webhooks", "/readyz"] {
        let r = c.get(format!("{}{path}", app.api)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    app.stop().await;
    running.shutdown().await.unwrap();
}
