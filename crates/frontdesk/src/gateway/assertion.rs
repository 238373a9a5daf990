//! `X-Frontdesk-Assertion`: a 60-second EdDSA (Ed25519) JWT that tells the app "this
//! request came through Frontdesk, for this user", so an app can refuse requests that
//! bypassed the proxy. The public keys are served at
//! `/_frontdesk/.well-known/jwks.json`.
//!
//! Keys across instances: any instance's assertion must verify against the JWKS of any
//! instance. With `proxy.assertion_key_file` every instance signs with the same key.
//! Without it each instance makes its own key at start and publishes the public half
//! in a Redis hash (`{prefix}gateway:jwks`, field = kid, value = JWK and an expiry it
//! refreshes every minute); every instance's JWKS lists its own key plus every live
//! published one. Without a key file and without Redis there is one instance's key
//! only: fine for one instance, and the start-up log says so.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::redis_link::RedisLink;

/// Lifetime of an assertion.
pub const TTL_S: u64 = 60;
/// How long a published key stays listed without a refresh.
const PUBLISHED_FOR_MS: u64 = 5 * 60 * 1000;
const REFRESH_EVERY: Duration = Duration::from_secs(60);

pub struct Signer {
    /// The key pair, parsed once: parsing re-derives the public key (a scalar
    /// multiplication as costly as the signature itself), which `jsonwebtoken::encode`
    /// would do on every call.
    pair: Ed25519KeyPair,
    /// The JOSE header, base64url-encoded once (`alg`, `kid` and `typ` never change).
    header_b64: String,
    kid: String,
    jwk: Value,
    issuer: String,
    audience: String,
    /// Whether the key is this instance's own (then it is published through Redis).
    ephemeral: bool,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The claims of one assertion.
#[derive(Serialize)]
pub struct Claims<'a> {
    pub iss: &'a str,
    pub aud: &'a str,
    /// The Clerk user id.
    pub sub: &'a str,
    pub iat: u64,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<&'a str>,
    /// The local user id.
    pub uid: i64,
    pub role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_role: Option<&'a str>,
    /// The request's method and path, so an assertion lifted from one request does not
    /// describe another.
    pub htm: &'a str,
    pub htu: &'a str,
}

impl Signer {
    /// From a PKCS#8 PEM file, or a fresh key when `file` is `None`.
    pub fn new(file: Option<&str>, issuer: &str, audience: &str) -> Result<Self, String> {
        let (pkcs8, ephemeral) = match file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    format!(
                        "proxy.assertion_key_file {path:?} cannot be read: {}",
                        e.kind()
                    )
                })?;
                let key = EncodingKey::from_ed_pem(&pem).map_err(|_| {
                    format!(
                        "proxy.assertion_key_file {path:?} is not an Ed25519 PKCS#8 PEM private key"
                    )
                })?;
                (key.inner().to_vec(), false)
            }
            None => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| "cannot generate the assertion key".to_string())?;
                (doc.as_ref().to_vec(), true)
            }
        };
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .map_err(|_| "the assertion key is not a valid Ed25519 key".to_string())?;
        use aws_lc_rs::signature::KeyPair;
        let public = pair.public_key().as_ref().to_vec();
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(&public)[..12]);
        let jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(&public),
            "kid": kid,
            "alg": "EdDSA",
            "use": "sig",
        });
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        let header_json = serde_json::to_vec(&header)
            .map_err(|_| "cannot encode the assertion header".to_string())?;
        Ok(Self {
            pair,
            header_b64: URL_SAFE_NO_PAD.encode(header_json),
            kid,
            jwk,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            ephemeral,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The compact JWS of `claims` (what `jsonwebtoken::encode` makes, without
    /// re-parsing the key each time).
    pub fn sign(&self, claims: &Claims<'_>) -> Option<String> {
        let payload = match serde_json::to_vec(claims) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign the assertion");
                return None;
            }
        };
        let mut out = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 96);
        out.push_str(&self.header_b64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
        let signature = self.pair.sign(out.as_bytes());
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut out);
        Some(out)
    }

    /// The JWKS: this key, plus every live key other instances published.
    pub async fn jwks(&self, redis: Option<&RedisLink>, clock: &SharedClock) -> Value {
        let mut keys = vec![self.jwk.clone()];
        if let (true, Some(redis)) = (self.ephemeral, redis) {
            let now = clock.now_ms();
            let mut conn = redis.conn();
            let result: redis::RedisResult<Vec<(String, String)>> = redis::cmd("HGETALL")
                .arg(redis.key(JWKS_KEY))
                .query_async(&mut conn)
                .await;
            redis.record(&result);
            for (kid, entry) in result.unwrap_or_default() {
                if kid == self.kid {
                    continue;
                }
                let Ok(entry) = serde_json::from_str::<Value>(&entry) else {
                    continue;
                };
                if entry["until_ms"].as_u64().is_some_and(|u| u > now) {
                    keys.push(entry["jwk"].clone());
                }
            }
        }
        json!({ "keys": keys })
    }

    async fn publish(&self, redis: &RedisLink, clock: &SharedClock) {
        let now = clock.now_ms();
        let entry = json!({"jwk": self.jwk, "until_ms": now + PUBLISHED_FOR_MS}).to_string();
        let mut conn = redis.conn();
        let key = redis.key(JWKS_KEY);
        let result: redis::RedisResult<()> = redis::pipe()
            .cmd("HSET")
            .arg(&key)
            .arg(&self.kid)
            .arg(entry)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(PUBLISHED_FOR_MS * 2)
            .ignore()
            .query_async(&mut conn)
            .await;
        redis.record(&result);
        // Drop keys nobody refreshed (instances that went away).
        let all: redis::RedisResult<Vec<(String, String)>> =
            redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await;
        for (kid, entry) in all.unwrap_or_default() {
            let live = serde_json::from_str::<Value>(&entry)
                .ok()
                .and_then(|e| e["until_ms"].as_u64())
                .is_some_and(|u| u > now);
            if !live {
                let _: redis::RedisResult<()> = redis::cmd("HDEL")
                    .arg(&key)
                    .arg(kid)
                    .query_async(&mut conn)
                    .await;
            }
        }
    }
}

const JWKS_KEY: &str = "gateway:jwks";

/// Publishes this instance's own key through Redis until `stop`; nothing to do with a
/// shared key file or without Redis.
pub async fn run_publisher(
    signer: Arc<Signer>,
    redis: Option<Arc<RedisLink>>,
    clock: SharedClock,
    stop: CancellationToken,
) {
    let Some(redis) = redis else {
        if signer.ephemeral {
            tracing::warn!(
                "no proxy.assertion_key_file and no Redis: X-Frontdesk-Assertion keys are this instance's only; run more than one instance with a key file or Redis"
            );
        }
        return;
    };
    if !signer.ephemeral {
        return;
    }
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => signer.publish(&redis, &clock).await,
        }
    }
}
