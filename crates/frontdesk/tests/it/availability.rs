//! The store's availability: once Postgres is known down, requests that need it are
//! refused at once (not after the pool's acquire time-out), and a background probe
//! notices when it is back.

use std::time::Duration;

use frontdesk_emulator::{Emulator, MintSession};
use serde_json::Value;

use crate::support::{self, TestApp};

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

async fn me(app: &TestApp, token: &str) -> (u16, Value, bool) {
    let r = app
        .http
        .get(format!("{}/_frontdesk/me", app.edge))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let retry = r.headers().contains_key("retry-after");
    (s, r.json().await.unwrap(), retry)
}

#[tokio::test]
async fn once_the_store_is_known_down_new_users_are_refused_without_the_pool_and_it_recovers() {
    let (emu, running) = support::emulator(5).await;
    let url = support::fresh_pg_database().await;
    let mut c = support::config(&url, Some(&running), running.emulator.secret_key());
    c.database_max_connections = 2;
    // No inbox polling: every statement here is a request's.
    c.webhooks.workers = 0;
    let app = TestApp::start(c).await;
    let store = app.state.store().clone();
    assert_eq!(
        me(&app, &token(&emu, &Emulator::seed_user_id(0))).await.0,
        200
    );
    assert!(!store.is_known_down());

    support::set_pg_database_reachable(&url, false).await;
    // The first request finds out, through the pool.
    let (s, body, retry) = me(&app, &token(&emu, &Emulator::seed_user_id(1))).await;
    assert_eq!(
        (s, body["code"].as_str(), retry),
        (503, Some("store_unavailable"), true)
    );
    assert!(store.is_known_down());
    assert_eq!(
        store.refused_while_down(),
        0,
        "the first one asked the pool"
    );

    // The next ones are refused before any pool acquire.
    for i in 2..5 {
        let (s, body, retry) = me(&app, &token(&emu, &Emulator::seed_user_id(i))).await;
        assert_eq!(
            (s, body["code"].as_str(), retry),
            (503, Some("store_unavailable"), true)
        );
    }
    assert_eq!(
        store.refused_while_down(),
        3,
        "refused without waiting on the pool"
    );

    support::set_pg_database_reachable(&url, true).await;
    let back = support::eventually(Duration::from_secs(10), || {
        let t = token(&emu, &Emulator::seed_user_id(1));
        let app = &app;
        async move { me(app, &t).await.0 == 200 }
    })
    .await;
    assert!(back, "the probe notices the store is back");
    assert!(!store.is_known_down());
    app.stop().await;
}
