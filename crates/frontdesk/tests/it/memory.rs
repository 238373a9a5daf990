//! Caches bounded by bytes (issue 14, memory): the weighers' estimates against the
//! serialized size, eviction under a tiny byte budget, the compressed JSON read back
//! exactly, the budget keys' validation and the weighted-size figures. No timing and no
//! RSS here (those are `frontdesk-bench memory`'s): only what the caches report.

use std::sync::Arc;

use bytes::Bytes;
use frontdesk::clock;
use frontdesk::config::{Config, ConfigError, TYPICAL_USER_BYTES};
use frontdesk::context::Context;
use frontdesk::store::{LocalUser, Profile};
use frontdesk::users::CachedUser;
use frontdesk_emulator::Emulator;
use serde_json::{Value, json};

use crate::support;

/// Clerk's JSON of seeded user `i`, as the emulator serves it.
fn clerk_json(emu: &Emulator, i: usize) -> Value {
    emu.user(&Emulator::seed_user_id(i)).unwrap()
}

/// User `i` of the emulator's shape, with an id, email and username of its own.
fn unique_user(template: &Value, i: usize) -> Bytes {
    let mut u = template.clone();
    u["id"] = json!(format!("user_mem{i:023}"));
    u["username"] = json!(format!("member_{i}"));
    u["email_addresses"][0]["email_address"] = json!(format!("member.{i}@example.com"));
    Bytes::from(serde_json::to_vec(&u).unwrap())
}

fn context(i: usize) -> Context {
    Context::new(
        LocalUser {
            id: i as i64,
            clerk_id: format!("user_ctx{i:023}"),
            email: Some(format!("member.{i}@example.com")),
            name: Some("Ada Lovelace".into()),
            image_url: Some("https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCJ9".into()),
            role: "member".into(),
            clerk_updated_at: 1,
            created_at: 1,
            updated_at: 1,
            deleted_at: None,
            email_verified: true,
        },
        Profile {
            id: i as i64,
            user_id: Some(i as i64),
            email: Some(format!("member.{i}@example.com")),
            display_name: Some("Ada Lovelace".into()),
            data: json!({"cohort": "neon", "goals": {"revenue": 16000}}),
            created_at: 1,
            updated_at: 1,
        },
    )
}

#[tokio::test]
async fn the_weighers_estimates_follow_the_serialized_size() {
    let (emu, _running) = support::emulator(20).await;
    for i in 0..20 {
        let raw = Bytes::from(serde_json::to_vec(&clerk_json(&emu, i)).unwrap());
        let user = CachedUser::parse(raw.clone()).unwrap();
        let estimate = user.heap_bytes();
        // Compressed JSON plus parsed fields: below the JSON's size, but never a
        // fraction that would let a budget hold many times what it says.
        assert!(
            estimate * 4 >= raw.len() && estimate <= raw.len() * 4,
            "user {i}: estimate {estimate} for {} bytes of JSON",
            raw.len()
        );
    }
    // Big metadata weighs what it holds: the estimate grows with it.
    let mut big = clerk_json(&emu, 0);
    let blob: String = (0..40_000u32)
        .map(|n| char::from(b'a' + (n.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
        .collect();
    big["public_metadata"] = json!({ "notes": blob });
    let raw = Bytes::from(serde_json::to_vec(&big).unwrap());
    let user = CachedUser::parse(raw.clone()).unwrap();
    assert!(
        user.heap_bytes() >= 40_000 && user.heap_bytes() <= raw.len() * 4,
        "estimate {} for {} bytes",
        user.heap_bytes(),
        raw.len()
    );

    let c = context(7);
    let serialized = serde_json::to_vec(&c).unwrap().len();
    let estimate = c.heap_bytes();
    assert!(
        estimate >= serialized && estimate <= serialized * 8,
        "context: estimate {estimate} for {serialized} bytes serialized"
    );
}

#[tokio::test]
async fn a_cached_user_reads_back_byte_for_byte() {
    let (emu, _running) = support::emulator(3).await;
    let mut odd = clerk_json(&emu, 1);
    odd["first_name"] = json!("Zoë \u{1F600} \"quoted\" \\ back");
    let cases = [
        serde_json::to_vec(&clerk_json(&emu, 0)).unwrap(),
        serde_json::to_vec_pretty(&clerk_json(&emu, 2)).unwrap(),
        serde_json::to_vec(&odd).unwrap(),
        // Nothing like the dictionary: kept as it came.
        br#"{"id":"user_x","object":"user","email_addresses":[]}"#.to_vec(),
    ];
    for raw in cases {
        let user = CachedUser::parse(Bytes::from(raw.clone())).unwrap();
        assert_eq!(&user.raw()[..], &raw[..]);
    }
    let user = CachedUser::parse(Bytes::from(serde_json::to_vec(&odd).unwrap())).unwrap();
    assert_eq!(user.image_url().as_deref(), odd["image_url"].as_str());
    assert_eq!(user.public_metadata(), odd["public_metadata"]);
    assert_eq!(
        user.summary.first_name.as_deref(),
        Some("Zoë \u{1F600} \"quoted\" \\ back")
    );
}

#[tokio::test]
async fn a_tiny_byte_budget_evicts_users_aliases_and_contexts() {
    let (emu, running) = support::emulator(5).await;
    let budget: u64 = 256 * 1024;
    let app = support::app_with(&running, None, clock::system(), |c| {
        c.cache.l1_max_bytes = budget;
        c.context.l1_max_bytes = budget;
    })
    .await;
    let users = app.state.users().cloned().unwrap();
    let template = clerk_json(&emu, 0);
    let written = 3_000;
    for i in 0..written {
        users
            .put(CachedUser::parse(unique_user(&template, i)).unwrap())
            .await;
    }
    let s = users.stats();
    assert!(
        s.l1_entries > 0 && s.l1_entries < written as u64 / 2,
        "{} of {written} users held under a {budget}-byte budget",
        s.l1_entries
    );
    assert!(
        s.l1_weighted_bytes + s.alias_weighted_bytes <= budget,
        "{s:?}"
    );
    assert!(s.alias_entries < 2 * written as u64 / 2, "{s:?}");
    let contexts = app.state.context();
    for i in 0..written {
        contexts.cache_local(Arc::new(context(i)));
    }
    let (entries, weighted) = contexts.l1_size();
    assert!(
        entries > 0 && entries < written as u64 / 2 && weighted <= budget,
        "{entries} contexts, {weighted} bytes under {budget}"
    );

    // The figures are published: /v1/stats and the gauge on /metrics.
    let stats: Value = support::get_json(&app.http, format!("{}/v1/stats", app.api)).await;
    for figure in [
        &stats["users"]["l1"]["weighted_bytes"],
        &stats["users"]["aliases"]["weighted_bytes"],
        &stats["contexts"]["l1"]["weighted_bytes"],
    ] {
        assert!(
            figure.as_u64().is_some_and(|w| w > 0 && w <= budget),
            "{stats}"
        );
    }
    let r = app
        .http
        .get(format!("{}/metrics", app.api))
        .send()
        .await
        .unwrap();
    if r.status() == 200 {
        // (503 when another test's recorder is this process's: the stats above hold.)
        let text = r.text().await.unwrap();
        for cache in ["users", "aliases", "contexts"] {
            assert!(
                text.contains(&format!(
                    "frontdesk_cache_l1_weighted_bytes{{cache=\"{cache}\"}}"
                )),
                "{cache}: {text}"
            );
        }
    }
    app.stop().await;
}

fn load(env: &[(&str, &str)]) -> Result<(Config, Vec<String>), ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_from(None, &env)
}

#[test]
fn a_zero_byte_budget_is_refused_naming_the_key() {
    for (var, key) in [
        ("FRONTDESK_CACHE__L1_MAX_BYTES", "cache.l1_max_bytes"),
        ("FRONTDESK_CACHE__PROXY_MAX_BYTES", "cache.proxy_max_bytes"),
        ("FRONTDESK_CONTEXT__L1_MAX_BYTES", "context.l1_max_bytes"),
        ("FRONTDESK_CACHE__L1_MAX_USERS", "cache.l1_max_users"),
        (
            "FRONTDESK_CONTEXT__L1_MAX_ENTRIES",
            "context.l1_max_entries",
        ),
    ] {
        match load(&[(var, "0")]) {
            Err(e @ ConfigError::Invalid { key: k, .. }) => {
                assert_eq!(k, key);
                assert!(e.to_string().contains(key), "{e}");
            }
            other => panic!("{var}=0: {other:?}"),
        }
    }
}

#[test]
fn the_old_entry_keys_still_work_in_bytes_with_a_warning() {
    let (config, warnings) = load(&[("FRONTDESK_CACHE__L1_MAX_USERS", "1000")]).unwrap();
    assert_eq!(config.cache.l1_max_users, Some(1000));
    assert_eq!(config.cache.l1_budget_bytes(), 1000 * TYPICAL_USER_BYTES);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("cache.l1_max_users is deprecated")
                && w.contains("cache.l1_max_bytes")),
        "{warnings:?}"
    );
    let (config, warnings) = load(&[("FRONTDESK_CACHE__L1_MAX_BYTES", "5000000")]).unwrap();
    assert_eq!(config.cache.l1_budget_bytes(), 5_000_000);
    assert!(warnings.is_empty(), "{warnings:?}");
    // The defaults: byte budgets, no deprecated key set.
    let d = Config::default();
    assert_eq!(d.cache.l1_max_users, None);
    assert_eq!(d.context.l1_max_entries, None);
    assert_eq!(d.cache.proxy_max_entries, None);
    assert!(d.deprecations().is_empty());
}
