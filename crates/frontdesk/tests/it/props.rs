//! Property tests of the code that reads untrusted input: session tokens, webhook
//! signatures, the proxy's query normalisation and read keys, and the config loader.
//! Each property runs a moderate number of generated cases (`CASES`) so CI stays fast;
//! the fuzz targets in `fuzz/` explore the same entry points for longer.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use frontdesk::clock::{ManualClock, SharedClock};
use frontdesk::config::Config;
use frontdesk::proxy::{ReadKey, normalize_query};
use frontdesk::tokens::{TokenError, Verifier, VerifierConfig, extract_token};
use frontdesk::webhooks::verify::{Rejection, SignedHeaders, SigningKeys};
use frontdesk_emulator::{Emulator, EmulatorConfig};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::{Value, json};

const CASES: u32 = 256;

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // Shrinking a failure is worth a little more time than the default cap allows.
        max_shrink_iters: 2_048,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- tokens

/// "Now" for the token properties, in seconds.
const NOW_S: u64 = 1_900_000_000;

/// One emulator key pair for the whole module: RSA key generation is the slow part.
fn signer() -> &'static Emulator {
    static EMU: OnceLock<Emulator> = OnceLock::new();
    EMU.get_or_init(|| Emulator::new(EmulatorConfig::default()).unwrap())
}

/// Another instance, with a key of its own.
fn other_signer() -> &'static Emulator {
    static EMU: OnceLock<Emulator> = OnceLock::new();
    EMU.get_or_init(|| Emulator::new(EmulatorConfig::default()).unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A verifier of `signer()`'s tokens from `CLERK_JWT_KEY` (no network), at `NOW_S`.
fn verifier() -> Verifier {
    let clock: SharedClock = ManualClock::new(NOW_S * 1000);
    Verifier::new(
        VerifierConfig {
            jwt_key_pem: Some(signer().public_key_pem()),
            ..VerifierConfig::default()
        },
        None,
        clock,
    )
    .unwrap()
}

fn valid_claims(sub: &str, sid: &str) -> Value {
    json!({
        "sub": sub,
        "sid": sid,
        "iat": NOW_S - 10,
        "nbf": NOW_S - 10,
        "exp": NOW_S + 50,
        "v": 2,
    })
}

/// Characters that appear in a compact JWS, plus a few that must not.
fn token_char() -> impl Strategy<Value = char> {
    prop_oneof![
        8 => proptest::char::ranges(vec!['a'..='z', 'A'..='Z', '0'..='9'].into()),
        2 => Just('-'),
        2 => Just('_'),
        3 => Just('.'),
        1 => Just('='),
        1 => Just('+'),
        1 => Just('/'),
        1 => any::<char>(),
    ]
}

/// Header-and-payload-shaped JSON, so generated tokens get past base64 and reach the
/// algorithm, key and claim checks.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("RS256"),
            Just("RS512"),
            Just("HS256"),
            Just("none"),
            Just("JWT")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("alg".to_string()),
                    Just("kid".to_string()),
                    Just("typ".to_string()),
                    Just("crit".to_string()),
                    Just("sub".to_string()),
                    Just("exp".to_string()),
                    Just("nbf".to_string()),
                    Just("iat".to_string()),
                    Just("azp".to_string()),
                    Just("o".to_string()),
                    Just("org_id".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn b64(v: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// Garbage, and JWS-shaped garbage with real base64url JSON parts.
fn untrusted_token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(token_char(), 0..300).prop_map(|c| c.into_iter().collect()),
        (
            json_value(),
            json_value(),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(h, p, sig)| format!(
                "{}.{}.{}",
                b64(h.to_string().as_bytes()),
                b64(p.to_string().as_bytes()),
                b64(&sig)
            )),
        // A real header (RS256 and the signer's kid) over arbitrary claims, unsigned.
        (json_value(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(p, sig)| {
            let real = signer().sign_claims(None, &valid_claims("user_x", "sess_x"));
            let header = real.split('.').next().unwrap_or_default().to_string();
            format!("{header}.{}.{}", b64(p.to_string().as_bytes()), b64(&sig))
        }),
    ]
}

/// A refusal has a documented code, and its message quotes nothing of the token.
fn assert_clean_refusal(token: &str, err: &TokenError) -> Result<(), TestCaseError> {
    prop_assert!(
        TokenError::CODES.contains(&err.code()),
        "code {}",
        err.code()
    );
    let message = err.to_string();
    let trimmed = token.trim();
    if trimmed.len() >= 8 {
        prop_assert!(
            !message.contains(trimmed),
            "the message quotes the token: {message}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn untrusted_tokens_are_refused_with_a_documented_code(token in untrusted_token()) {
        let verifier = verifier();
        let outcome = runtime().block_on(verifier.verify(&token));
        match outcome {
            Ok(s) => prop_assert!(false, "an unsigned token was accepted: {s:?}"),
            Err(e) => assert_clean_refusal(&token, &e)?,
        }
    }

    #[test]
    fn signed_claims_round_trip(sub in "[a-zA-Z0-9_]{1,40}", sid in "sess_[a-zA-Z0-9]{1,24}") {
        let token = signer().sign_claims(None, &valid_claims(&sub, &sid));
        let session = runtime().block_on(verifier().verify(&token)).unwrap();
        prop_assert_eq!(session.user_id, sub);
        prop_assert_eq!(session.session_id, Some(sid));
        prop_assert_eq!(session.expires_at_ms, (NOW_S + 50) * 1000);
    }

    #[test]
    fn a_token_changed_anywhere_is_refused(
        sub in "[a-zA-Z0-9_]{1,40}",
        at in any::<prop::sample::Index>(),
        replacement in token_char(),
    ) {
        let token = signer().sign_claims(None, &valid_claims(&sub, "sess_1"));
        let mut chars: Vec<char> = token.chars().collect();
        let i = at.index(chars.len());
        prop_assume!(chars[i] != replacement);
        chars[i] = replacement;
        let changed: String = chars.into_iter().collect();
        let verifier = verifier();
        let rt = runtime();
        // The original is accepted by the same verifier, so the refusal is the change's.
        prop_assert!(rt.block_on(verifier.verify(&token)).is_ok());
        match rt.block_on(verifier.verify(&changed)) {
            Ok(_) => prop_assert!(false, "a changed token was accepted (index {i})"),
            Err(e) => assert_clean_refusal(&changed, &e)?,
        }
    }

    #[test]
    fn tokens_signed_by_another_key_are_refused(sub in "[a-zA-Z0-9_]{1,40}", alg in prop_oneof![Just("RS256"), Just("RS384"), Just("RS512")]) {
        let token = other_signer().sign_claims(Some(json!({"alg": alg})), &valid_claims(&sub, "sess_1"));
        let err = runtime().block_on(verifier().verify(&token)).unwrap_err();
        prop_assert_eq!(err, TokenError::InvalidSignature);
    }

    #[test]
    fn token_extraction_never_panics_and_bearer_round_trips(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..4),
        names in prop::collection::vec(prop_oneof![Just("authorization"), Just("cookie"), Just("x-other")], 0..4),
        token in "[A-Za-z0-9._-]{1,80}",
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in names.iter().zip(&values) {
            if let Ok(v) = HeaderValue::from_bytes(value) {
                headers.append(HeaderName::from_static(name), v);
            }
        }
        let _ = extract_token(&headers);
        let mut bearer = HeaderMap::new();
        bearer.insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        bearer.insert("cookie", HeaderValue::from_static("__session=other"));
        prop_assert_eq!(extract_token(&bearer), Some(token.as_str()));
    }
}

// ---------------------------------------------------------------- webhooks

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOLERANCE_S: i64 = 300;
const NOW_TS: i64 = 1_900_000_000;

fn keys() -> SigningKeys {
    SigningKeys::parse(SECRET).unwrap()
}

fn sign(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    frontdesk_emulator::svix::sign(secret, id, ts, body).unwrap()
}

fn check(id: &str, ts: &str, sig: &str, body: &[u8], now: i64) -> Result<(), Rejection> {
    keys().verify(
        &SignedHeaders {
            id,
            timestamp: ts,
            signature: sig,
        },
        body,
        now,
        TOLERANCE_S as u64,
    )
}

/// Found by `webhook_headers_of_any_shape_never_panic`: `now - ts` overflowed, which
/// panicked in debug builds and, in release builds, wrapped into a small difference
/// that accepted a correctly signed message stamped `now - 2^63`.
#[test]
fn a_timestamp_at_the_ends_of_i64_is_out_of_range_not_a_panic() {
    for ts in [i64::MIN, i64::MIN + 1, i64::MAX, NOW_TS - i64::MAX] {
        let sig = sign(SECRET, "msg_1", ts, b"{}");
        assert_eq!(
            check("msg_1", &ts.to_string(), &sig, b"{}", NOW_TS),
            Err(Rejection::TimestampOutOfRange),
            "ts {ts}"
        );
    }
    let sig = sign(SECRET, "msg_1", i64::MAX, b"{}");
    assert_eq!(
        check("msg_1", &i64::MAX.to_string(), &sig, b"{}", i64::MIN),
        Err(Rejection::TimestampOutOfRange)
    );
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn signed_webhooks_verify(
        id in "msg_[!-~]{1,40}",
        skew in -TOLERANCE_S..=TOLERANCE_S,
        body in prop::collection::vec(any::<u8>(), 0..512),
        others in prop::collection::vec("v[0-9],[A-Za-z0-9+/=]{0,20}", 0..3),
    ) {
        let ts = NOW_TS + skew;
        let sig = sign(SECRET, &id, ts, &body);
        // Svix sends several signatures while a secret rotates; any one may match.
        let mut all = others.clone();
        all.push(sig);
        all.rotate_left(others.len() / 2);
        prop_assert_eq!(check(&id, &ts.to_string(), &all.join(" "), &body, NOW_TS), Ok(()));
    }

    #[test]
    fn webhooks_changed_anywhere_are_refused(
        id in "msg_[!-~]{1,40}",
        body in prop::collection::vec(any::<u8>(), 1..512),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        what in 0u8..4,
    ) {
        let sig = sign(SECRET, &id, NOW_TS, &body);
        let ts = NOW_TS.to_string();
        let outcome = match what {
            0 => {
                let mut body = body.clone();
                let i = flip.index(body.len());
                body[i] ^= 1 << bit;
                check(&id, &ts, &sig, &body, NOW_TS)
            }
            1 => check(&format!("{id}x"), &ts, &sig, &body, NOW_TS),
            2 => check(&id, &(NOW_TS + 1).to_string(), &sig, &body, NOW_TS),
            _ => {
                let other = "whsec_".to_string() + &{
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.encode([bit; 24])
                };
                check(&id, &ts, &sign(&other, &id, NOW_TS, &body), &body, NOW_TS)
            }
        };
        prop_assert_eq!(outcome, Err(Rejection::SignatureInvalid));
    }

    #[test]
    fn webhook_headers_of_any_shape_never_panic(
        id in "[ -~]{0,300}",
        ts in prop_oneof![any::<i64>().prop_map(|t| t.to_string()), "[ -~]{0,24}", Just(i64::MIN.to_string()), Just(i64::MAX.to_string())],
        sig in "[ -~]{0,200}",
        now in prop_oneof![Just(NOW_TS), any::<i64>()],
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        if let Err(r) = check(&id, &ts, &sig, &body, now) {
            prop_assert!(r.code().starts_with("webhook_"));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in [("svix-id", &id), ("svix-timestamp", &ts), ("webhook-signature", &sig)] {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        }
        if let Ok(h) = SignedHeaders::from_headers(&headers) {
            let _ = keys().verify(&h, &body, now, TOLERANCE_S as u64);
        }
    }

    #[test]
    fn a_correctly_signed_message_out_of_tolerance_is_refused(
        id in "msg_[a-z0-9]{1,20}",
        ts in any::<i64>(),
    ) {
        prop_assume!(ts.abs_diff(NOW_TS) > TOLERANCE_S as u64);
        let sig = sign(SECRET, &id, ts, b"{}");
        prop_assert_eq!(
            check(&id, &ts.to_string(), &sig, b"{}", NOW_TS),
            Err(Rejection::TimestampOutOfRange)
        );
    }

    #[test]
    fn signing_secret_parsing_never_panics_or_echoes(secret in "[ -~]{0,80}") {
        if let Err(message) = SigningKeys::parse(&secret) {
            let quoted = secret.trim_start_matches("whsec_");
            if quoted.len() >= 8 {
                prop_assert!(!message.contains(quoted), "{message}");
            }
        }
    }
}

// ---------------------------------------------------------------- proxy

fn query_pair() -> impl Strategy<Value = (String, String)> {
    let part = prop_oneof![
        "[a-z_]{1,8}",
        "[ -~]{0,10}",
        any::<String>().prop_map(|s| s.chars().take(8).collect()),
    ];
    (part.clone(), part)
}

fn encode(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn decoded(query: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    pairs
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn query_normalisation_is_idempotent_and_keeps_every_pair(raw in "[ -~]{0,80}") {
        let once = normalize_query(&raw);
        prop_assert_eq!(normalize_query(&once), once.clone());
        prop_assert_eq!(decoded(&once), decoded(&raw));
    }

    #[test]
    fn query_normalisation_ignores_order(
        pairs in prop::collection::vec(query_pair(), 0..8),
        seed in any::<prop::sample::Index>(),
    ) {
        let mut shuffled = pairs.clone();
        shuffled.rotate_left(seed.index(pairs.len().max(1)) % pairs.len().max(1));
        shuffled.reverse();
        prop_assert_eq!(normalize_query(&encode(&pairs)), normalize_query(&encode(&shuffled)));
    }

    #[test]
    fn read_keys_differ_exactly_when_the_reads_differ(
        a in (prop::option::of("[ -~]{0,12}"), "/v1/[a-z|?/%]{0,12}", prop::collection::vec(query_pair(), 0..4)),
        b in (prop::option::of("[ -~]{0,12}"), "/v1/[a-z|?/%]{0,12}", prop::collection::vec(query_pair(), 0..4)),
    ) {
        let key = |(v, p, q): &(Option<String>, String, Vec<(String, String)>)| {
            ReadKey::new("sk_test_1", v.as_deref(), p, &encode(q))
        };
        let same_read = a.0 == b.0 && a.1 == b.1 && decoded(&encode(&a.2)) == decoded(&encode(&b.2));
        prop_assert_eq!(key(&a) == key(&b), same_read);
        // Another secret key is another Clerk instance: never the same entry.
        prop_assert_ne!(key(&a), ReadKey::new("sk_test_2", a.0.as_deref(), &a.1, &encode(&a.2)));
    }
}

// ---------------------------------------------------------------- config

/// Every setting and its environment name, from the defaults (as the loader does).
fn env_names() -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        if let Value::Object(map) = v {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let json_key = key == "context.profile_defaults" || key == "context.role_overrides";
                if v.is_object() && !json_key {
                    walk(&key, v, out);
                } else {
                    let env = format!("FRONTDESK_{}", key.to_ascii_uppercase().replace('.', "__"));
                    out.push((env, key));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(
        "",
        &serde_json::to_value(Config::default()).unwrap(),
        &mut out,
    );
    for (env, key) in [
        ("CLERK_SECRET_KEY", "clerk.secret_key"),
        ("CLERK_API_URL", "clerk.api_url"),
        ("CLERK_JWT_KEY", "clerk.jwt_key"),
        (
            "CLERK_WEBHOOK_SIGNING_SECRET",
            "clerk.webhook_signing_secret",
        ),
        ("CLERK_AUTHORIZED_PARTIES", "clerk.authorized_parties"),
        ("DATABASE_URL", "database_url"),
        ("REDIS_URL", "redis_url"),
    ] {
        out.push((env.to_string(), key.to_string()));
    }
    out
}

fn env_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        Just("true".to_string()),
        Just("[1, {\"a\": null}]".to_string()),
        Just("{\"x\": [".to_string()),
        any::<String>().prop_map(|s| s.chars().take(20).collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..cfg() })]

    #[test]
    fn any_environment_value_loads_or_names_the_setting(
        picks in prop::collection::vec((any::<prop::sample::Index>(), env_value()), 1..4),
    ) {
        let names = env_names();
        let env: Vec<(String, String)> = picks
            .iter()
            .map(|(i, v)| (names[i.index(names.len())].0.clone(), v.clone()))
            .collect();
        match Config::load_from(None, &env) {
            Ok(_) => {}
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.starts_with("configuration: "), "{message}");
                // The error says which setting is wrong, by its key or its env name.
                let named = env.iter().any(|(name, _)| {
                    let key = &names.iter().find(|(n, _)| n == name).unwrap().1;
                    let leaf = key.rsplit('.').next().unwrap();
                    message.contains(name.as_str()) || message.contains(key.as_str()) || message.contains(leaf)
                });
                prop_assert!(named, "the error names no setting: {message} (env {env:?})");
                // Secrets never appear in it.
                for (name, value) in &env {
                    let secret = name.ends_with("SECRET_KEY") || name.ends_with("SIGNING_SECRET")
                        || name.ends_with("DATABASE_URL") || name.ends_with("REDIS_URL");
                    if secret && value.trim().len() >= 8 {
                        prop_assert!(!message.contains(value.trim()), "{message} quotes {name}");
                    }
                }
            }
        }
    }
}

#[test]
fn every_setting_has_an_environment_name() {
    let names: BTreeSet<String> = env_names().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains("FRONTDESK_CACHE__BATCH_QUEUE_MAX"));
    assert!(names.contains("CLERK_SECRET_KEY"));
}

/// Found by the `config_env` fuzz target: figment's unescaping sliced a quoted value at
/// a char index as if it were a byte index, so a backslash after a multibyte character
/// panicked (or silently dropped characters). Such values are now kept as they are.
#[test]
fn a_quoted_value_with_a_multibyte_character_before_a_backslash_does_not_panic() {
    for value in [
        "\"é\\n\"",
        "\"\u{fffd}\\\"",
        "\"éé\\n\"",
        "\u{8}\"\u{18}\u{fffd}\\\u{18}\"",
    ] {
        for name in [
            "FRONTDESK_EDGE_ADDR",
            "FRONTDESK_REDIS_PREFIX",
            "FRONTDESK_LOG",
        ] {
            let env = vec![(name.to_string(), value.to_string())];
            if let Err(e) = Config::load_from(None, &env) {
                assert!(e.to_string().starts_with("configuration: "), "{e}");
            }
        }
    }
    let env = vec![("FRONTDESK_REDIS_PREFIX".to_string(), "fd:é\\x".to_string())];
    let (config, _) = Config::load_from(None, &env).unwrap();
    assert_eq!(config.redis_prefix, "fd:é\\x");
}

// ---------------------------------------------------------------- over HTTP

/// Untrusted tokens and webhook messages sent to a running instance: every one is
/// refused with a JSON body carrying a documented code, none reaches Clerk's user
/// API or the inbox, and the instance still answers afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_requests_get_json_codes_and_the_service_stays_up() {
    use frontdesk::config::Secret;
    use proptest::test_runner::TestRunner;

    let (_emu, running) = crate::support::emulator(1).await;
    let app = crate::support::app_with(&running, None, frontdesk::clock::system(), |c| {
        c.clerk.webhook_signing_secret = Some(Secret::new(SECRET));
    })
    .await;
    let handle = tokio::runtime::Handle::current();
    let http = app.http.clone();
    let edge = app.edge.clone();
    let header_value = || {
        prop_oneof![
            "[ -~]{0,120}",
            untrusted_token().prop_map(|t| format!("Bearer {t}")),
            untrusted_token().prop_map(|t| format!("__session={t}")),
        ]
    };
    // What a header can carry at all: no control characters.
    let sendable = |s: String| -> String {
        s.chars()
            .filter(|c| *c == '\t' || (*c >= ' ' && *c != '\u{7f}'))
            .collect()
    };
    let strategy = (
        header_value().prop_map(sendable),
        prop::option::of("[ -~]{0,40}"),
        prop::option::of(prop_oneof![
            any::<i64>().prop_map(|t| t.to_string()),
            "[ -~]{0,20}"
        ]),
        prop::option::of("[ -~]{0,120}"),
        prop::collection::vec(any::<u8>(), 0..256),
    );
    let mut runner = TestRunner::new(ProptestConfig { cases: 64, ..cfg() });
    let result = tokio::task::block_in_place(|| {
        runner
            .run(&strategy, |(auth, id, ts, sig, body)| {
                handle.block_on(async {
                    let me = http
                        .get(format!("{edge}/_frontdesk/me"))
                        .header("authorization", auth.as_str())
                        .header("cookie", auth.as_str())
                        .send()
                        .await
                        .unwrap();
                    let status = me.status().as_u16();
                    let json: Value = me.json().await.unwrap();
                    let code = json["code"].as_str().unwrap_or_default().to_string();
                    prop_assert!(
                        (status == 401 || status == 503)
                            && TokenError::CODES.contains(&code.as_str()),
                        "/me answered {status} {json}"
                    );

                    let mut req = http
                        .post(format!("{edge}/_frontdesk/webhooks/clerk"))
                        .header("content-type", "application/json")
                        .body(body);
                    for (name, value) in [
                        ("svix-id", &id),
                        ("svix-timestamp", &ts),
                        ("svix-signature", &sig),
                    ] {
                        if let Some(v) = value {
                            req = req.header(name, v.as_str());
                        }
                    }
                    let hook = req.send().await.unwrap();
                    let status = hook.status().as_u16();
                    let json: Value = hook.json().await.unwrap();
                    let code = json["code"].as_str().unwrap_or_default();
                    prop_assert!(
                        (status == 400 || status == 401) && code.starts_with("webhook_"),
                        "the webhook endpoint answered {status} {json}"
                    );
                    Ok(())
                })
            })
            .map_err(|e| e.to_string())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let inbox = http
        .get(format!("{}/v1/webhooks", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(inbox.status(), 200);
    let inbox: Value = inbox.json().await.unwrap();
    assert_eq!(inbox["items"].as_array().unwrap().len(), 0, "{inbox}");
    let ready = http
        .get(format!("{}/readyz", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    app.stop().await;
}

// ---------------------------------------------------------------- response-cache keys

fn entry(t: &str, r: &str, path: &str, q: &str) -> String {
    frontdesk::respcache::key::entry_key(frontdesk::respcache::key::EntryParts {
        tenant: t,
        resource: r,
        tenant_version: "0a",
        resource_version: "0b",
        path,
        query: Some(q),
    })
}

/// Ids mixing key syntax (`:`, braces, globs, `%`, spaces) with anything else.
fn key_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_:{}*?%\\[\\] ]{0,12}",
        any::<String>(),
        Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn response_cache_keys_never_collide_or_cross_tenants(
        a in (key_part(), key_part(), key_part(), "[ -~]{0,20}"),
        b in (key_part(), key_part(), key_part(), "[ -~]{0,20}"),
    ) {
        use frontdesk::respcache::key::{is_plain, resource_version_key, tenant_of_key, tenant_version_key};
        let ka = entry(&a.0, &a.1, &a.2, &a.3);
        let kb = entry(&b.0, &b.1, &b.2, &b.3);
        // Each key reads back its own tenant and holds no Redis key or pattern syntax.
        prop_assert_eq!(tenant_of_key(&ka), Some(a.0.clone()));
        prop_assert!(is_plain(&ka), "{}", ka);
        prop_assert!(is_plain(&tenant_version_key(&a.0)));
        prop_assert!(is_plain(&resource_version_key(&a.0, &a.1)));
        // Two requests share a key exactly when tenant, resource, path and normalised
        // query are equal.
        let same = a.0 == b.0 && a.1 == b.1 && a.2 == b.2
            && normalize_query(&a.3) == normalize_query(&b.3);
        prop_assert_eq!(ka == kb, same);
        // Another tenant's keys never start with this tenant's prefix.
        if a.0 != b.0 {
            prop_assert!(!kb.starts_with(&tenant_version_key(&a.0)));
            prop_assert_ne!(tenant_version_key(&a.0), tenant_version_key(&b.0));
            let own = format!("rc:{{{}}}", frontdesk::respcache::key::encode(&a.0));
            prop_assert!(!kb.starts_with(&own));
        }
        if (a.0.as_str(), a.1.as_str()) != (b.0.as_str(), b.1.as_str()) {
            prop_assert_ne!(resource_version_key(&a.0, &a.1), resource_version_key(&b.0, &b.1));
        }
    }
}
