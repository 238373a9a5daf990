//! Session-token verification: the refusal matrix (each asserting its code and that
//! no token text leaks), JWKS caching (single flight, cooldown, negative caching,
//! stale keys), CLERK_JWT_KEY mode without network, extraction, organization claims,
//! revocation and the verified-token cache. Time is a `ManualClock`; nothing sleeps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use frontdesk::clock::{Clock, ManualClock, SharedClock};
use frontdesk::tokens::{
    JwksFetchError, JwksSource, Org, TokenError, Verifier, VerifierBuildError, VerifierConfig,
    extract_token, extract_token_with_suffix,
};
use frontdesk_emulator::{DEFAULT_ISSUER, Emulator, EmulatorConfig, MintSession, RunningEmulator};
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

/// A fixed "now" for hand-signed tokens (Unix seconds).
const T: u64 = 1_900_000_000;
const JWKS: &str = "GET /v1/jwks";

/// A JWKS source over HTTP against the emulator, counting its calls; `fail` makes it
/// fail without calling.
struct CountingSource {
    http: reqwest::Client,
    url: String,
    secret: String,
    calls: AtomicU64,
    fail: AtomicBool,
}

impl JwksSource for CountingSource {
    fn fetch(&self) -> BoxFuture<'_, Result<Value, JwksFetchError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(JwksFetchError::new("injected failure"));
            }
            let res = self
                .http
                .get(format!("{}/v1/jwks", self.url))
                .bearer_auth(&self.secret)
                .send()
                .await
                .map_err(|e| JwksFetchError::new(e.to_string()))?;
            if !res.status().is_success() {
                return Err(JwksFetchError::new(format!("status {}", res.status())));
            }
            res.json()
                .await
                .map_err(|e| JwksFetchError::new(e.to_string()))
        })
    }
}

struct Fx {
    emu: Emulator,
    _running: RunningEmulator,
    source: Arc<CountingSource>,
    clock: Arc<ManualClock>,
}

impl Fx {
    async fn new() -> Fx {
        let emu = Emulator::new(EmulatorConfig {
            users: 5,
            ..EmulatorConfig::default()
        })
        .unwrap();
        let running = emu
            .clone()
            .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let source = Arc::new(CountingSource {
            http: reqwest::Client::new(),
            url: running.url.clone(),
            secret: emu.secret_key().to_owned(),
            calls: AtomicU64::new(0),
            fail: AtomicBool::new(false),
        });
        Fx {
            emu,
            _running: running,
            source,
            clock: ManualClock::new(T * 1000),
        }
    }

    fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    fn verifier(&self, config: VerifierConfig) -> Verifier {
        Verifier::new(config, Some(self.source()), self.clock()).unwrap()
    }

    fn source(&self) -> Arc<dyn JwksSource> {
        self.source.clone()
    }

    fn calls(&self) -> u64 {
        self.source.calls.load(Ordering::SeqCst)
    }

    fn sign(&self, claims: &Value) -> String {
        self.emu.sign_claims(None, claims)
    }

    fn sign_with(&self, header: Value, claims: &Value) -> String {
        self.emu.sign_claims(Some(header), claims)
    }
}

/// Clerk v2 claims issued at `now_s`, living 60 s.
fn claims_at(now_s: u64) -> Value {
    json!({
        "sub": Emulator::seed_user_id(1),
        "sid": "sess_test",
        "iat": now_s,
        "nbf": now_s - 10,
        "exp": now_s + 60,
        "iss": DEFAULT_ISSUER,
        "azp": "http://localhost:3000",
        "jti": format!("jti_{now_s}"),
        "v": 2,
    })
}

fn claims() -> Value {
    claims_at(T)
}

fn with(mut c: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        c.as_object_mut().unwrap().remove(key);
    } else {
        c[key] = value;
    }
    c
}

/// Asserts that nothing of `token` shows in the error's text, its Debug form, or the
/// JSON body and headers it becomes; and that the body carries the error's code.
async fn assert_no_token_text(e: &TokenError, token: &str) {
    let mut needles: Vec<&str> = token.split('.').filter(|p| p.len() >= 8).collect();
    if token.len() >= 8 {
        needles.push(token);
    }
    let response = frontdesk::Error::from(e.clone()).into_response();
    let status = response.status();
    let headers = format!("{:?}", response.headers());
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body_text = String::from_utf8_lossy(&body).into_owned();
    for text in [e.to_string(), format!("{e:?}"), body_text.clone(), headers] {
        for needle in &needles {
            assert!(
                !text.contains(needle),
                "token text leaked into {text:?} ({})",
                e.code()
            );
        }
    }
    let body: Value = serde_json::from_str(&body_text).unwrap();
    if let TokenError::JwksUnavailable { .. } = e {
        assert_eq!(status, 503);
        assert_eq!(body["code"], "upstream_unavailable");
    } else {
        assert_eq!(status, 401);
        assert_eq!(body["code"], e.code());
    }
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

/// Verifies `token` expecting a refusal; returns its code after checking no leak.
async fn refused(v: &Verifier, token: &str) -> &'static str {
    let e = v
        .verify(token)
        .await
        .expect_err("the token must be refused");
    assert_no_token_text(&e, token).await;
    e.code()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn tokens_minted_by_the_emulator_verify_against_its_jwks() {
    let fx = Fx::new().await;
    fx.clock.set_ms(frontdesk::clock::system().now_ms());
    let v = fx.verifier(VerifierConfig {
        issuer: Some(DEFAULT_ISSUER.into()),
        authorized_parties: vec!["http://localhost:3000".into()],
        ..VerifierConfig::default()
    });
    let user = Emulator::seed_user_id(2);
    let minted = fx
        .emu
        .mint_session(MintSession {
            user_id: user.clone(),
            ..Default::default()
        })
        .unwrap();
    let s = v.verify(&minted.jwt).await.unwrap();
    assert_eq!(s.user_id, user);
    assert_eq!(s.session_id.as_deref(), Some(minted.sid.as_str()));
    assert_eq!(s.expires_at_ms, minted.exp as u64 * 1000);
    assert_eq!(s.issued_at_ms, Some((minted.exp as u64 - 60) * 1000));
    assert_eq!(s.azp.as_deref(), Some("http://localhost:3000"));
    assert_eq!(s.issuer.as_deref(), Some(DEFAULT_ISSUER));
    assert_eq!(s.version, 2);
    assert_eq!(s.org, None);
    assert_eq!(s.actor, None);
    // Again: from the cache, no second fetch.
    assert_eq!(v.verify(&minted.jwt).await.unwrap(), s);
    assert_eq!(fx.calls(), 1);
    assert_eq!(fx.emu.stats().get(JWKS), 1);
    assert!(!v.uses_pem_key());
}

#[tokio::test]
async fn time_claims_are_checked_against_the_injected_clock_with_skew() {
    let fx = Fx::new().await;
    let v = fx.verifier(VerifierConfig::default());
    let now = T as i64;
    let at = |key: &str, offset: i64| with(claims(), key, json!(now + offset));

    // Valid.
    assert!(v.verify(&fx.sign(&claims())).await.is_ok());
    // exp: long past, 6 s past (beyond the 5 s skew), 4 s past (within it).
    assert_eq!(
        refused(&v, &fx.sign(&at("exp", -3600))).await,
        "token_expired"
    );
    assert_eq!(refused(&v, &fx.sign(&at("exp", -6))).await, "token_expired");
    assert_eq!(refused(&v, &fx.sign(&at("exp", -5))).await, "token_expired");
    assert!(v.verify(&fx.sign(&at("exp", -4))).await.is_ok());
    // nbf: far ahead, 6 s ahead refused, 4 s ahead accepted.
    assert_eq!(
        refused(&v, &fx.sign(&at("nbf", 3600))).await,
        "token_not_yet_valid"
    );
    assert_eq!(
        refused(&v, &fx.sign(&at("nbf", 6))).await,
        "token_not_yet_valid"
    );
    assert!(v.verify(&fx.sign(&at("nbf", 4))).await.is_ok());
    // iat in the future beyond the skew has its own code.
    assert_eq!(
        refused(&v, &fx.sign(&at("iat", 6))).await,
        "token_iat_in_future"
    );
    assert!(v.verify(&fx.sign(&at("iat", 4))).await.is_ok());
    // exp is required and must be a number; nbf and iat are optional.
    assert_eq!(
        refused(&v, &fx.sign(&with(claims(), "exp", Value::Null))).await,
        "token_malformed"
    );
    assert_eq!(
        refused(&v, &fx.sign(&with(claims(), "exp", json!("soon")))).await,
        "token_malformed"
    );
    let bare = with(with(claims(), "nbf", Value::Null), "iat", Value::Null);
    let s = v.verify(&fx.sign(&bare)).await.unwrap();
    assert_eq!(s.issued_at_ms, None);

    // The skew is configurable.
    let strict = fx.verifier(VerifierConfig {
        skew_ms: 0,
        ..VerifierConfig::default()
    });
    assert_eq!(
        refused(&strict, &fx.sign(&at("nbf", 1))).await,
        "token_not_yet_valid"
    );
    assert_eq!(
        refused(&strict, &fx.sign(&at("exp", 0))).await,
        "token_expired"
    );
}

#[tokio::test]
async fn bad_signatures_are_refused_before_any_claim() {
    let fx = Fx::new().await;
    let v = fx.verifier(VerifierConfig::default());

    // Signed by another key under the same kid.
    let other = Emulator::new(EmulatorConfig {
        users: 1,
        ..EmulatorConfig::default()
    })
    .unwrap();
    let forged = other.sign_claims(Some(json!({"kid": fx.emu.kid()})), &claims());
    assert_eq!(refused(&v, &forged).await, "token_invalid_signature");

    // One flipped signature byte.
    let good = fx.sign(&claims());
    let (input, sig) = good.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    bytes[17] ^= 0x01;
    let flipped = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&bytes));
    assert_eq!(refused(&v, &flipped).await, "token_invalid_signature");
    // A changed payload under the old signature.
    let (header, _) = input.split_once('.').unwrap();
    let tampered = format!(
        "{header}.{}.{sig}",
        b64(&with(claims(), "sub", json!("user_admin")))
    );
    assert_eq!(refused(&v, &tampered).await, "token_invalid_signature");
    // No signature; a signature that is not base64url.
    assert_eq!(
        refused(&v, &format!("{input}.")).await,
        "token_invalid_signature"
    );
    assert_eq!(
        refused(&v, &format!("{input}.!!!")).await,
        "token_invalid_signature"
    );
    // Signature before claims: an expired token with a bad signature is a bad signature.
    let expired = fx.sign(&with(claims(), "exp", json!(T - 3600)));
    let (input, _) = expired.rsplit_once('.').unwrap();
    let forged_expired = format!("{input}.{sig}");
    assert_eq!(
        refused(&v, &forged_expired).await,
        "token_invalid_signature"
    );

    // The untouched token still verifies; RS384 and RS512 are accepted.
    assert!(v.verify(&good).await.is_ok());
    for alg in ["RS384", "RS512"] {
        let t = fx.sign_with(json!({"alg": alg}), &with(claims(), "jti", json!(alg)));
        assert!(v.verify(&t).await.is_ok(), "{alg} must verify");
    }
}

#[tokio::test]
async fn only_rs256_384_512_are_accepted_no_algorithm_confusion() {
    let fx = Fx::new().await;
    let v = fx.verifier(VerifierConfig::default());
    let pem_v = Verifier::new(
        VerifierConfig {
            jwt_key_pem: Some(fx.emu.public_key_pem()),
            ..VerifierConfig::default()
        },
        None,
        fx.clock(),
    )
    .unwrap();

    // alg none, signed and unsigned.
    let none_signed = fx.sign_with(json!({"alg": "none"}), &claims());
    let header = json!({"alg": "none", "typ": "JWT", "kid": fx.emu.kid()});
    let none_unsigned = format!("{}.{}.", b64(&header), b64(&claims()));
    // HS256 with the public key's PEM as the HMAC secret: the classic confusion.
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(fx.emu.kid().to_owned());
    let hs256 = jsonwebtoken::encode(
        &hs,
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(fx.emu.public_key_pem().as_bytes()),
    )
    .unwrap();
    let mut tokens = vec![none_signed, none_unsigned, hs256];
    // Other families named in the header (signed RS256 by the emulator).
    for alg in [
        "HS256", "HS512", "ES256", "ES384", "PS256", "PS512", "EdDSA", "rs256",
    ] {
        tokens.push(fx.sign_with(json!({"alg": alg}), &claims()));
    }
    for t in &tokens {
        assert_eq!(refused(&v, t).await, "token_unsupported_alg");
        assert_eq!(refused(&pem_v, t).await, "token_unsupported_alg");
    }
    // Refused from the header alone: no key was ever fetched.
    assert_eq!(fx.calls(), 0);
    assert_eq!(fx.emu.stats().get(JWKS), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_unknown_kids_makes_at_most_one_jwks_call() {
    let fx = Fx::new().await;
    let v = fx.verifier(VerifierConfig::default());
    let burst = |tag: &'static str| {
        // Sign first, then start all 1,000 at once.
        let tokens: Vec<String> = (0..1000)
            .map(|i| {
                fx.sign_with(
                    json!({"kid": format!("ins_unknown_{tag}_{i}")}),
                    &with(claims(), "jti", json!(format!("{tag}{i}"))),
                )
            })
            .collect();
        let handles: Vec<_> = tokens
            .into_iter()
            .map(|t| {
                let v = v.clone();
                tokio::spawn(async move { v.verify(&t).await.map(|_| ()) })
            })
            .collect();
        async move {
            for h in handles {
                assert_eq!(h.await.unwrap(), Err(TokenError::UnknownKid));
            }
        }
    };

    // Cold: 1,000 concurrent misses share one fetch.
    burst("cold").await;
    assert_eq!(fx.calls(), 1);
    // Within the cooldown: no fetch at all.
    fx.clock.advance_ms(60_000);
    burst("warm").await;
    assert_eq!(fx.calls(), 1);
    // The cooldown (5 min) has passed: one more fetch for the next burst.
    fx.clock.advance_ms(240_000);
    burst("later").await;
    assert_eq!(fx.calls(), 2);
    assert_eq!(fx.emu.stats().get(JWKS), 2);
    // A known kid needs no fetch.
    let now = fx.clock.now_s();
    assert!(v.verify(&fx.sign(&claims_at(now))).await.is_ok());
    assert_eq!(fx.calls(), 2);
    // A token without kid cannot be matched to a JWKS key.
    let no_kid = fx.sign_with(json!({"kid": null}), &claims_at(now));
    assert_eq!(refused(&v, &no_kid).await, "token_malformed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_failures_are_cached_briefly_and_stale_keys_keep_working() {
    let fx = Fx::new().await;
    let v = fx.verifier(VerifierConfig::default());
    fx.source.fail.store(true, Ordering::SeqCst);

    // No keys and Clerk down: 503-worthy, and the failure is remembered.
    let t = fx.sign(&claims());
    assert_eq!(refused(&v, &t).await, "jwks_unavailable");
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let v = v.clone();
            let t = t.clone();
            tokio::spawn(async move { v.verify(&t).await.map(|_| ()) })
        })
        .collect();
    for h in handles {
        assert!(matches!(
            h.await.unwrap(),
            Err(TokenError::JwksUnavailable { .. })
        ));
    }
    assert_eq!(fx.calls(), 1);
    let e: frontdesk::Error = TokenError::JwksUnavailable {
        retry_after_s: Some(1),
    }
    .into();
    let response = e.into_response();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");

    // After the negative TTL (5 s) and with Clerk back, one fetch and it verifies.
    fx.clock.advance_ms(5_000);
    fx.source.fail.store(false, Ordering::SeqCst);
    assert!(v.verify(&t).await.is_ok());
    assert_eq!(fx.calls(), 2);

    // An hour later the set is stale; Clerk is down again: the stale key still
    // verifies (one failed attempt, then none while the failure is cached).
    fx.clock.advance_ms(3_600_000);
    fx.source.fail.store(true, Ordering::SeqCst);
    let now = fx.clock.now_s();
    assert!(v.verify(&fx.sign(&claims_at(now))).await.is_ok());
    assert!(v.verify(&fx.sign(&claims_at(now - 1))).await.is_ok());
    assert_eq!(fx.calls(), 3);
    // An unknown kid while failing: refused without a fetch.
    let unknown = fx.sign_with(json!({"kid": "ins_other"}), &claims_at(now));
    assert_eq!(refused(&v, &unknown).await, "token_unknown_kid");
    assert_eq!(fx.calls(), 3);
    // Clerk back, failure expired: the stale set is refreshed once.
    fx.clock.advance_ms(5_000);
    fx.source.fail.store(false, Ordering::SeqCst);
    let now = fx.clock.now_s();
    assert!(v.verify(&fx.sign(&claims_at(now))).await.is_ok());
    assert!(v.verify(&fx.sign(&claims_at(now - 1))).await.is_ok());
    assert_eq!(fx.calls(), 4);
    assert_eq!(fx.emu.stats().get(JWKS), 2);
}

#[tokio::test]
async fn azp_iss_and_sub_rules() {
    let fx = Fx::new().await;
    let parties = vec![
        "http://localhost:3000".to_owned(),
        "https://app.example.com".to_owned(),
    ];
    let v = fx.verifier(VerifierConfig {
        authorized_parties: parties.clone(),
        issuer: Some(DEFAULT_ISSUER.into()),
        ..VerifierConfig::default()
    });
    let c = |key: &str, value: Value| with(claims(), key, value);

    assert!(v.verify(&fx.sign(&claims())).await.is_ok());
    let s = v
        .verify(&fx.sign(&c("azp", json!("https://app.example.com"))))
        .await
        .unwrap();
    assert_eq!(s.azp.as_deref(), Some("https://app.example.com"));
    assert_eq!(
        refused(&v, &fx.sign(&c("azp", json!("https://evil.example")))).await,
        "token_azp_mismatch"
    );
    // No azp (native apps, top-level navigations): accepted unless required.
    let no_azp = fx.sign(&c("azp", Value::Null));
    assert_eq!(v.verify(&no_azp).await.unwrap().azp, None);
    let strict = fx.verifier(VerifierConfig {
        authorized_parties: parties,
        require_azp: true,
        ..VerifierConfig::default()
    });
    assert_eq!(refused(&strict, &no_azp).await, "token_azp_mismatch");
    // No authorized parties configured: any azp.
    let open = fx.verifier(VerifierConfig::default());
    assert!(
        open.verify(&fx.sign(&c("azp", json!("https://evil.example"))))
            .await
            .is_ok()
    );
    // iss: checked when configured (trailing slash tolerated), required then.
    assert_eq!(
        refused(
            &v,
            &fx.sign(&c("iss", json!("https://other.clerk.accounts.dev")))
        )
        .await,
        "token_iss_mismatch"
    );
    assert_eq!(
        refused(&v, &fx.sign(&c("iss", Value::Null))).await,
        "token_iss_mismatch"
    );
    assert!(
        v.verify(&fx.sign(&c("iss", json!(format!("{DEFAULT_ISSUER}/")))))
            .await
            .is_ok()
    );
    assert!(
        open.verify(&fx.sign(&c("iss", json!("https://anything"))))
            .await
            .is_ok()
    );
    // sub: required, a non-empty string.
    for sub in [Value::Null, json!(""), json!(42)] {
        assert_eq!(
            refused(&v, &fx.sign(&c("sub", sub))).await,
            "token_missing_sub"
        );
    }
}

#[tokio::test]
async fn malformed_and_missing_tokens() {
    let fx = Fx::new().await;
    let v = fx.verifier(VerifierConfig::default());
    assert_eq!(refused(&v, "").await, "token_missing");
    assert_eq!(refused(&v, "   ").await, "token_missing");
    let header = b64(&json!({"alg": "RS256", "kid": fx.emu.kid()}));
    let payload = b64(&claims());
    for bad in [
        "not-a-jwt-at-all".to_owned(),
        "only.twoparts".to_owned(),
        format!("{header}.{payload}.sig.extra"),
        format!("%%%.{payload}.c2ln"),
        format!("{}.{payload}.c2ln", URL_SAFE_NO_PAD.encode("not json")),
        format!("{}.{payload}.c2ln", b64(&json!({"kid": "x"}))),
        format!(
            "{}.{payload}.c2ln",
            b64(&json!({"alg": "RS256", "typ": "JWE"}))
        ),
        format!(
            "{}.{payload}.c2ln",
            b64(&json!({"alg": "RS256", "crit": ["exp"]}))
        ),
        "x".repeat(20_000),
    ] {
        assert_eq!(refused(&v, &bad).await, "token_malformed", "{bad:.40}");
    }
    // A correctly signed payload that is not a JSON object.
    let signed_array = fx.sign(&json!([1, 2, 3]));
    assert_eq!(refused(&v, &signed_array).await, "token_malformed");
    assert_eq!(fx.calls(), 1);

    // Every code is distinct.
    let mut codes = TokenError::CODES.to_vec();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), TokenError::CODES.len());
}

#[tokio::test]
async fn tokens_are_taken_from_the_bearer_header_or_session_cookies() {
    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }
    assert_eq!(extract_token(&HeaderMap::new()), None);
    assert_eq!(
        extract_token(&headers(&[("authorization", "Bearer abc.def.ghi")])),
        Some("abc.def.ghi")
    );
    assert_eq!(
        extract_token(&headers(&[("authorization", "bearer   abc.def.ghi  ")])),
        Some("abc.def.ghi")
    );
    // Header wins over cookie.
    assert_eq!(
        extract_token(&headers(&[
            ("cookie", "__session=from.cookie.x"),
            ("authorization", "Bearer from.header.x"),
        ])),
        Some("from.header.x")
    );
    // Not a bearer: the cookie answers.
    assert_eq!(
        extract_token(&headers(&[
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("cookie", "theme=dark; __session=from.cookie.x; other=1"),
        ])),
        Some("from.cookie.x")
    );
    assert_eq!(
        extract_token(&headers(&[("authorization", "Bearer "), ("cookie", "a=b")])),
        None
    );
    // Suffixed cookies (multi-domain / multi-instance).
    assert_eq!(
        extract_token(&headers(&[("cookie", "__session_abc=suffixed.tok.x")])),
        Some("suffixed.tok.x")
    );
    assert_eq!(
        extract_token(&headers(&[(
            "cookie",
            "__session_abc=suffixed.tok.x; __session=plain.tok.x"
        )])),
        Some("plain.tok.x")
    );
    let both = headers(&[
        ("cookie", "__session_zzz=other.tok.x; __session=plain.tok.x"),
        ("cookie", "__session_abc=\"own.tok.x\""),
    ]);
    assert_eq!(
        extract_token_with_suffix(&both, Some("abc")),
        Some("own.tok.x")
    );
    assert_eq!(extract_token(&both), Some("plain.tok.x"));
    // Look-alike names and empty values are not tokens.
    assert_eq!(
        extract_token(&headers(&[(
            "cookie",
            "__sessionx=a.b.c; __session_=a.b.c; __session=; x__session=a.b.c"
        )])),
        None
    );

    // End to end through the verifier.
    let fx = Fx::new().await;
    let v = fx.verifier(VerifierConfig::default());
    let token = fx.sign(&claims());
    let cookie = format!("__session_abc={token}");
    let by_cookie = headers(&[("cookie", cookie.as_str())]);
    assert!(v.verify_headers(&by_cookie).await.is_ok());
    assert_eq!(
        v.verify_headers(&HeaderMap::new()).await,
        Err(TokenError::Missing)
    );
}

#[tokio::test]
async fn v1_and_v2_organization_claims_map_to_one_org() {
    let fx = Fx::new().await;
    let v = fx.verifier(VerifierConfig::default());

    // v2 as the emulator mints it (user 0 is admin of organization 0).
    fx.clock.set_ms(frontdesk::clock::system().now_ms());
    let org_id = fx.emu.org_ids()[0].clone();
    let minted = fx
        .emu
        .mint_session(MintSession {
            user_id: Emulator::seed_user_id(0),
            org_id: Some(org_id.clone()),
            ..Default::default()
        })
        .unwrap();
    let s = v.verify(&minted.jwt).await.unwrap();
    let org = s.org.unwrap();
    assert_eq!(org.id, org_id);
    assert!(org.slug.as_deref().is_some_and(|s| !s.is_empty()));
    assert_eq!(org.role.as_deref(), Some("org:admin"));
    assert!(
        org.permissions
            .contains(&"org:sys_memberships:manage".to_owned()),
        "{:?}",
        org.permissions
    );
    fx.clock.set_ms(T * 1000);

    // v2 as Clerk sends it: `per` + `fpm` bitmasks per `o:` feature of `fea`.
    let v2 = with(
        with(
            claims(),
            "o",
            json!({"id": "org_2", "slg": "acme", "rol": "billing_admin", "per": "read,manage", "fpm": "3,2"}),
        ),
        "fea",
        json!("o:reports,u:profile,o:billing"),
    );
    let s = v.verify(&fx.sign(&v2)).await.unwrap();
    assert_eq!(
        s.org,
        Some(Org {
            id: "org_2".into(),
            slug: Some("acme".into()),
            role: Some("org:billing_admin".into()),
            permissions: vec![
                "org:reports:read".into(),
                "org:reports:manage".into(),
                "org:billing:manage".into(),
            ],
        })
    );

    // v1: org_* claims, as given.
    let v1 = json!({
        "sub": "user_1", "sid": "sess_v1", "iat": T, "exp": T + 60,
        "org_id": "org_1", "org_slug": "one", "org_role": "org:member",
        "org_permissions": ["org:sys_memberships:read"],
    });
    let s = v.verify(&fx.sign(&v1)).await.unwrap();
    assert_eq!(s.version, 1);
    assert_eq!(
        s.org,
        Some(Org {
            id: "org_1".into(),
            slug: Some("one".into()),
            role: Some("org:member".into()),
            permissions: vec!["org:sys_memberships:read".into()],
        })
    );
    // No organization.
    let s = v.verify(&fx.sign(&claims())).await.unwrap();
    assert_eq!(s.org, None);
    // v1 claims in a v2 token are not read as the organization.
    let mixed = with(with(claims(), "org_id", json!("org_1")), "jti", json!("m"));
    assert_eq!(v.verify(&fx.sign(&mixed)).await.unwrap().org, None);
    // Actor and session status pass through.
    let act = with(
        with(claims(), "act", json!({"sub": "user_admin"})),
        "sts",
        json!("active"),
    );
    let s = v.verify(&fx.sign(&act)).await.unwrap();
    assert_eq!(s.actor, Some(json!({"sub": "user_admin"})));
    assert_eq!(s.session_status.as_deref(), Some("active"));
}

#[tokio::test]
async fn revoked_sessions_are_refused_until_the_revocation_ends() {
    let fx = Fx::new().await;
    let v = fx.verifier(VerifierConfig::default());
    let token = fx.sign(&claims());
    let other = fx.sign(&with(claims(), "sid", json!("sess_other")));
    assert!(v.verify(&token).await.is_ok());
    assert!(v.verify(&other).await.is_ok());

    v.revoke_session("sess_test", T * 1000 + 30_000);
    assert!(v.is_revoked("sess_test"));
    // The cached token, and a fresh token of the same session.
    assert_eq!(refused(&v, &token).await, "session_revoked");
    let fresh = fx.sign(&with(claims(), "jti", json!("fresh")));
    assert_eq!(refused(&v, &fresh).await, "session_revoked");
    // Other sessions are unaffected.
    assert!(v.verify(&other).await.is_ok());
    // The revocation ends when told to.
    fx.clock.advance_ms(30_001);
    assert!(!v.is_revoked("sess_test"));
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn a_cached_verification_still_expires_on_the_clock() {
    let fx = Fx::new().await;
    let v = fx.verifier(VerifierConfig::default());
    let token = fx.sign(&claims());
    assert!(v.verify(&token).await.is_ok());
    assert!(v.verify(&token).await.is_ok());
    // exp is T + 60; within the skew it still verifies, then it is refused.
    fx.clock.set_ms((T + 64) * 1000);
    assert!(v.verify(&token).await.is_ok());
    fx.clock.set_ms((T + 65) * 1000);
    assert_eq!(refused(&v, &token).await, "token_expired");
    assert_eq!(refused(&v, &token).await, "token_expired");
    assert_eq!(fx.calls(), 1);
}

#[tokio::test]
async fn clerk_jwt_key_mode_needs_no_network() {
    let fx = Fx::new().await;
    let pem = fx.emu.public_key_pem();
    // The JWKS source is given but must never be used.
    let v = Verifier::new(
        VerifierConfig {
            jwt_key_pem: Some(pem.clone()),
            ..VerifierConfig::default()
        },
        Some(fx.source()),
        fx.clock(),
    )
    .unwrap();
    assert!(v.uses_pem_key());
    let s = v.verify(&fx.sign(&claims())).await.unwrap();
    assert_eq!(s.user_id, Emulator::seed_user_id(1));
    // kid is not consulted with a PEM (as @clerk/backend with jwtKey).
    let t = fx.sign_with(
        json!({"kid": "ins_whatever"}),
        &with(claims(), "jti", json!("k")),
    );
    assert!(v.verify(&t).await.is_ok());
    // Another key's signature is still refused.
    let other = Emulator::new(EmulatorConfig {
        users: 1,
        ..EmulatorConfig::default()
    })
    .unwrap();
    assert_eq!(
        refused(&v, &other.sign_claims(None, &claims())).await,
        "token_invalid_signature"
    );
    assert_eq!(fx.calls(), 0);
    assert_eq!(fx.emu.stats().total, 0);

    // The PEM as environments mangle it: escaped newlines, one line, quotes.
    let escaped = format!("\"{}\"", pem.trim().replace('\n', "\\n"));
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let one_line = format!("-----BEGIN PUBLIC KEY----- {body} -----END PUBLIC KEY-----");
    for variant in [escaped, one_line] {
        let v = Verifier::new(
            VerifierConfig {
                jwt_key_pem: Some(variant),
                ..VerifierConfig::default()
            },
            None,
            fx.clock(),
        )
        .unwrap();
        assert!(v.verify(&fx.sign(&claims())).await.is_ok());
    }

    // Build errors.
    let bad = Verifier::new(
        VerifierConfig {
            jwt_key_pem: Some("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----".into()),
            ..VerifierConfig::default()
        },
        None,
        fx.clock(),
    );
    assert!(matches!(bad, Err(VerifierBuildError::BadJwtKey)));
    let none = Verifier::new(VerifierConfig::default(), None, fx.clock());
    assert!(matches!(none, Err(VerifierBuildError::NoKeySource)));
}
