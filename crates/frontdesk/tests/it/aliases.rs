//! Look-ups by email and username: the alias index shares the user cache, batches its
//! misses, remembers absent aliases, and follows an email or username change on every
//! instance.

use std::time::Duration;

use frontdesk::clock;
use frontdesk::users::{Alias, AliasKind, Source};
use frontdesk_emulator::Emulator;
use serde_json::{Value, json};

use crate::support::{self, http, upstream_calls};

const KEY: &str = "sk_test_frontdesk_emulator";

fn email_of(emu: &Emulator, id: &str) -> String {
    emu.user(id).unwrap()["email_addresses"][0]["email_address"]
        .as_str()
        .unwrap()
        .to_string()
}

fn username_of(emu: &Emulator, id: &str) -> String {
    emu.user(id).unwrap()["username"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn an_alias_lookup_after_an_id_lookup_makes_no_clerk_call() {
    let (emu, running) = support::emulator(5).await;
    let prefix = support::redis_prefix();
    let app = support::app_with(&running, Some(&prefix), clock::system(), |_| {}).await;
    let c = http();
    let id = Emulator::seed_user_id(2);
    let (email, username) = (email_of(&emu, &id), username_of(&emu, &id));
    let r = c
        .get(format!("{}/v1/users/{id}", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    emu.reset();

    // Native API, with the case Clerk ignores changed.
    for path in [
        format!("by-email/{}", email.to_uppercase()),
        format!("by-username/{username}"),
    ] {
        let r = c
            .get(format!("{}/v1/users/{path}?fields=minimal", app.api))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["x-cache"], "HIT", "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["email"], email.as_str());
    }
    // The proxy's `getUserList({ emailAddress })`: Clerk's list, byte for byte.
    let r = c
        .get(format!("{}/clerk/v1/users", app.api))
        .query(&[("email_address", email.as_str())])
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-cache"], "HIT");
    let proxied = r.bytes().await.unwrap();
    assert_eq!(upstream_calls(&emu), 0, "{:?}", emu.stats());
    let direct = c
        .get(format!("{}/v1/users", running.url))
        .query(&[("email_address", email.as_str())])
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(proxied, direct, "byte-faithful");

    // One copy of the user: the alias points at the entry the id look-up made.
    let users = app.state.users().cloned().unwrap();
    let by_id = users.get(&id).await.unwrap().user.unwrap();
    let by_alias = users
        .get_by_alias(&Alias::parse(AliasKind::Email, &email).unwrap())
        .await
        .unwrap()
        .user
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(&by_id, &by_alias));
    assert_eq!(users.stats().alias_upstream_loads, 0);

    // Bad input: a stable code, nothing sent to Clerk.
    let r = c
        .get(format!("{}/v1/users/by-email/not-an-email", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_email");
    assert_eq!(upstream_calls(&emu), 1, "only the direct call above");
    app.stop().await;
}

#[tokio::test]
async fn distinct_alias_misses_are_batched_and_absent_aliases_are_remembered() {
    let (emu, running) = support::emulator(300).await;
    let app = support::app_with(&running, None, clock::system(), |_| {}).await;
    let users = app.state.users().cloned().unwrap();
    let ids: Vec<String> = (0..300).map(Emulator::seed_user_id).collect();
    let mut aliases: Vec<Alias> = ids
        .iter()
        .map(|id| Alias::parse(AliasKind::Email, &email_of(&emu, id)).unwrap())
        .collect();
    for i in 0..5 {
        aliases.push(Alias::parse(AliasKind::Email, &format!("nobody{i}@example.org")).unwrap());
    }
    emu.reset();
    let results = users.get_many_by_alias(&aliases).await;
    for (i, r) in results.iter().enumerate() {
        let l = r.as_ref().unwrap();
        assert_eq!(l.source, Source::Upstream);
        match ids.get(i) {
            Some(id) => assert_eq!(l.user.as_ref().unwrap().id(), id),
            None => assert!(l.user.is_none()),
        }
    }
    let calls = upstream_calls(&emu);
    eprintln!("305 cold emails: {calls} upstream calls");
    assert!(calls <= 8, "batched into list calls, saw {calls}");
    assert_eq!(emu.stats().calls.get("GET /v1/users").copied(), Some(calls));

    // Everything is cached now: users by alias and by id, absent aliases too.
    emu.reset();
    let again = users.get_many_by_alias(&aliases).await;
    assert!(
        again
            .iter()
            .all(|r| r.as_ref().unwrap().source == Source::L1)
    );
    assert_eq!(users.get(&ids[7]).await.unwrap().source, Source::L1);
    let r = http()
        .get(format!("{}/v1/users/by-email/nobody1@example.org", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");
    assert_eq!(upstream_calls(&emu), 0, "{:?}", emu.stats());
    app.stop().await;
}

#[tokio::test]
async fn an_email_or_username_change_moves_the_alias_on_two_instances() {
    let (emu, running) = support::emulator(5).await;
    let prefix = support::redis_prefix();
    let a = support::app_with(&running, Some(&prefix), clock::system(), |_| {}).await;
    let b = support::app_with(&running, Some(&prefix), clock::system(), |_| {}).await;
    let c = http();
    let id = Emulator::seed_user_id(1);
    let old_name = username_of(&emu, &id);
    let new_email = "renamed.person@example.org";
    let status = |base: String, path: String| {
        let c = c.clone();
        async move {
            let r = c
                .get(format!("{base}/v1/users/{path}"))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (s, body["id"].as_str().map(str::to_string))
        }
    };
    for app in [&a, &b] {
        let (s, found) = status(app.api.clone(), format!("by-username/{old_name}")).await;
        assert_eq!((s, found.as_deref()), (200, Some(id.as_str())));
        // Absent now, and remembered as absent.
        let (s, _) = status(app.api.clone(), format!("by-email/{new_email}")).await;
        assert_eq!(s, 404);
        let (s, _) = status(app.api.clone(), "by-username/ada_renamed".into()).await;
        assert_eq!(s, 404);
    }

    // A username change written through A's proxy.
    let r = c
        .patch(format!("{}/clerk/v1/users/{id}", a.api))
        .bearer_auth(KEY)
        .json(&json!({"username": "ada_renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // An email change at Clerk, announced as a webhook effect would (on A).
    emu.add_email_address(&id, new_email, true, true).unwrap();
    a.state.user_changed(&id).await.unwrap();

    for app in [&a, &b] {
        let moved = support::eventually(Duration::from_secs(2), || {
            let api = app.api.clone();
            let old = old_name.clone();
            let status = &status;
            let id = id.clone();
            async move {
                status(api.clone(), format!("by-username/{old}")).await.0 == 404
                    && status(api.clone(), "by-username/ada_renamed".into()).await
                        == (200, Some(id.clone()))
                    && status(api, format!("by-email/{new_email}")).await == (200, Some(id))
            }
        })
        .await;
        assert!(moved, "the aliases moved on {}", app.api);
    }
    // The proxy list agrees.
    let r = c
        .get(format!("{}/clerk/v1/users?username={old_name}", b.api))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    a.stop().await;
    b.stop().await;
}
