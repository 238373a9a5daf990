//! Configuration layering: defaults, then the file, then the environment.

use std::io::Write;

use frontdesk::config::{Config, DEFAULTS_TOML, LogFormat};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f
}

#[test]
fn documented_defaults_equal_the_built_in_ones() {
    let parsed: Config = toml_from(DEFAULTS_TOML);
    assert_eq!(parsed, Config::default());
    let (loaded, warnings) = Config::load_from(None, &[]).unwrap();
    assert_eq!(loaded, Config::default());
    assert!(warnings.is_empty());
}

fn toml_from(s: &str) -> Config {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    Figment::from(Toml::string(s)).extract().unwrap()
}

#[test]
fn file_overrides_defaults_and_env_overrides_file() {
    let f = file(
        r#"
edge_addr = "0.0.0.0:9000"
api_addr = "127.0.0.1:9001"
log_format = "pretty"
[clerk]
api_url = "http://file.example"
authorized_parties = ["https://from-file.example"]
[dev]
users = 7
"#,
    );
    let (c, _) = Config::load_from(Some(f.path()), &[]).unwrap();
    assert_eq!(c.edge_addr.to_string(), "0.0.0.0:9000");
    assert_eq!(c.clerk.api_url, "http://file.example");
    assert_eq!(c.log_format, LogFormat::Pretty);
    assert_eq!(c.dev.users, 7);

    let (c, warnings) = Config::load_from(
        Some(f.path()),
        &env(&[
            ("FRONTDESK_EDGE_ADDR", "127.0.0.1:7000"),
            ("CLERK_API_URL", "http://env.example"),
            ("CLERK_SECRET_KEY", "sk_test_123"),
            (
                "CLERK_AUTHORIZED_PARTIES",
                "https://a.example, https://b.example",
            ),
            ("DATABASE_URL", "postgres://u:p@localhost/db"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("FRONTDESK_DEV__USERS", "3"),
            ("FRONTDESK_MIGRATE_ON_START", "false"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.edge_addr.to_string(), "127.0.0.1:7000");
    assert_eq!(
        c.api_addr.to_string(),
        "127.0.0.1:9001",
        "file value kept where env is silent"
    );
    assert_eq!(c.clerk.api_url, "http://env.example");
    assert_eq!(c.clerk.secret_key.as_ref().unwrap().expose(), "sk_test_123");
    assert_eq!(
        c.clerk.authorized_parties,
        vec!["https://a.example", "https://b.example"]
    );
    assert_eq!(c.database_url.expose(), "postgres://u:p@localhost/db");
    assert_eq!(
        c.redis_url.as_ref().unwrap().expose(),
        "redis://127.0.0.1:6379"
    );
    assert_eq!(c.dev.users, 3);
    assert!(!c.migrate_on_start);
}

#[test]
fn unknown_frontdesk_variables_are_reported() {
    let (_, warnings) =
        Config::load_from(None, &env(&[("FRONTDESK_EDGE_ADR", "127.0.0.1:1")])).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("FRONTDESK_EDGE_ADR"));
}

#[test]
fn invalid_values_name_the_setting() {
    let err = Config::load_from(None, &env(&[("DATABASE_URL", "mysql://x")])).unwrap_err();
    assert!(err.to_string().contains("database_url"), "{err}");
    let err = Config::load_from(None, &env(&[("CLERK_SECRET_KEY", "pk_test_x")])).unwrap_err();
    assert!(err.to_string().contains("clerk.secret_key"), "{err}");
    let err = Config::load_from(None, &env(&[("FRONTDESK_EDGE_ADDR", "not an addr")])).unwrap_err();
    assert!(err.to_string().contains("edge_addr"), "{err}");
    let err =
        Config::load_from(None, &env(&[("CLERK_WEBHOOK_SIGNING_SECRET", "nope")])).unwrap_err();
    assert!(err.to_string().contains("webhook_signing_secret"), "{err}");
    let f = file("no_such_key = 1\n");
    let err = Config::load_from(Some(f.path()), &[]).unwrap_err();
    assert!(err.to_string().contains("no_such_key"), "{err}");
    let missing = std::path::Path::new("/nonexistent/frontdesk.toml");
    assert!(Config::load_from(Some(missing), &[]).is_err());
}

#[test]
fn secrets_never_print() {
    let (c, _) = Config::load_from(
        None,
        &env(&[
            ("CLERK_SECRET_KEY", "sk_live_supersecretvalue"),
            ("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_alsosecret"),
            ("DATABASE_URL", "postgres://user:pgpassword@db/app"),
            ("REDIS_URL", "redis://:redispassword@cache:6379"),
        ]),
    )
    .unwrap();
    let debug = format!("{c:?}");
    let json = serde_json::to_string(&c).unwrap();
    for secret in [
        "supersecretvalue",
        "alsosecret",
        "pgpassword",
        "redispassword",
    ] {
        assert!(!debug.contains(secret), "Debug leaks {secret}");
        assert!(!json.contains(secret), "Serialize leaks {secret}");
    }
}

#[test]
fn json_settings_come_from_the_environment() {
    let (c, _) = Config::load_from(
        None,
        &env(&[
            (
                "FRONTDESK_CONTEXT__PROFILE_DEFAULTS",
                r#"{"cohort":"neon","goals":{"revenue":16000,"leads":50}}"#,
            ),
            ("FRONTDESK_CONTEXT__ROLES", "admin,user,viewer"),
            ("FRONTDESK_TOKENS__SKEW_MS", "2000"),
            ("FRONTDESK_TOKENS__ISSUER", "https://clerk.example.com"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.context.profile_defaults,
        serde_json::json!({"cohort":"neon","goals":{"revenue":16000,"leads":50}})
    );
    assert_eq!(c.context.roles, vec!["admin", "user", "viewer"]);
    assert_eq!(c.tokens.skew_ms, 2000);
    assert_eq!(
        c.tokens.issuer.as_deref(),
        Some("https://clerk.example.com")
    );
    let err = Config::load_from(
        None,
        &env(&[("FRONTDESK_CONTEXT__PROFILE_DEFAULTS", "[1]")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("profile_defaults"), "{err}");
}

#[test]
fn dev_mode_api_token_and_retention_come_from_the_environment() {
    let (c, warnings) = Config::load_from(
        None,
        &env(&[
            ("FRONTDESK_DEV", "true"),
            ("FRONTDESK_API_TOKEN", "20261123"),
            ("FRONTDESK_WEBHOOKS__RETENTION_MS", "3600000"),
        ]),
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(c.dev.enabled);
    assert!(!c.has_clerk_credentials());
    // A token that looks like a number stays the string it is, and never prints.
    assert_eq!(c.api_token.as_ref().unwrap().expose(), "20261123");
    assert!(!format!("{c:?}").contains("20261123"));
    assert_eq!(c.webhooks.retention_ms, 3_600_000);
    let defaults = Config::default();
    assert!(!defaults.dev.enabled, "dev mode is off unless asked for");
    assert_eq!(defaults.api_token, None);
    let err = Config::load_from(None, &env(&[("FRONTDESK_API_TOKEN", "  ")])).unwrap_err();
    assert!(err.to_string().contains("api_token"), "{err}");
}

#[test]
fn a_batch_queue_smaller_than_a_batch_is_refused() {
    let err =
        Config::load_from(None, &env(&[("FRONTDESK_CACHE__BATCH_QUEUE_MAX", "10")])).unwrap_err();
    assert!(err.to_string().contains("cache.batch_queue_max"), "{err}");
    let (c, _) =
        Config::load_from(None, &env(&[("FRONTDESK_CACHE__BATCH_QUEUE_MAX", "500")])).unwrap();
    assert_eq!(c.cache.batch_queue_max, 500);
}
