//! The config loader with fuzzed environment values for real setting names: it
//! loads or says which setting is wrong, and never panics.
#![no_main]

use frontdesk::config::Config;
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "CLERK_SECRET_KEY",
    "CLERK_API_URL",
    "CLERK_JWT_KEY",
    "CLERK_WEBHOOK_SIGNING_SECRET",
    "CLERK_AUTHORIZED_PARTIES",
    "DATABASE_URL",
    "REDIS_URL",
    "FRONTDESK_EDGE_ADDR",
    "FRONTDESK_API_ADDR",
    "FRONTDESK_LOG_FORMAT",
    "FRONTDESK_DATABASE_MAX_CONNECTIONS",
    "FRONTDESK_SHUTDOWN_GRACE_MS",
    "FRONTDESK_CACHE__TTL_JITTER",
    "FRONTDESK_CACHE__BATCH_MAX",
    "FRONTDESK_CACHE__BATCH_QUEUE_MAX",
    "FRONTDESK_CACHE__USER_TTL_MS",
    "FRONTDESK_CONTEXT__ROLES",
    "FRONTDESK_CONTEXT__PROFILE_DEFAULTS",
    "FRONTDESK_CONTEXT__ROLE_OVERRIDES",
    "FRONTDESK_TOKENS__SKEW_MS",
    "FRONTDESK_TOKENS__ISSUER",
    "FRONTDESK_UPSTREAM__MAX_CONCURRENCY",
    "FRONTDESK_UPSTREAM__RATE_LIMIT_REQUESTS",
    "FRONTDESK_WEBHOOKS__TOLERANCE_S",
    "FRONTDESK_DEV__USERS",
    "FRONTDESK_UNKNOWN__KEY",
];

fuzz_target!(|data: &[u8]| {
    // Pairs of (name index, value), values separated by 0x00.
    let mut env = Vec::new();
    for chunk in data.split(|b| *b == 0).take(6) {
        let Some((&i, value)) = chunk.split_first() else {
            continue;
        };
        let name = NAMES[usize::from(i) % NAMES.len()];
        env.push((
            name.to_string(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    if let Err(e) = Config::load_from(None, &env) {
        assert!(e.to_string().starts_with("configuration: "));
    }
});
