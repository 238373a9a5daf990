//! Session-token verification (capability 4): who is this request, answered from the
//! Clerk session token alone, without a network call on the hot path.
//!
//! Apps hand-roll this today and get it subtly wrong: they trust the token header's
//! `alg` (algorithm confusion), check claims before the signature, use the system clock
//! (untestable), refetch the JWKS on every unknown `kid` (one forged token per request
//! is enough to hammer Clerk), or keep accepting a revoked session. This module is the
//! one place that does it right:
//!
//! - the token comes from `Authorization: Bearer` or the `__session` cookie
//!   ([`extract_token`]);
//! - keys come from `CLERK_JWT_KEY` (a PEM; no network at all) or from the instance's
//!   JWKS through a [`JwksSource`], cached 1 h, refetched on an unknown `kid` at most
//!   once per cooldown, one fetch for any number of concurrent misses, failures
//!   remembered briefly;
//! - RS256/RS384/RS512 only, and the key type is fixed by configuration (RSA), never by
//!   the token: `none`, HS*, ES*, PS* are refused before any key is touched;
//! - the signature is checked before any claim; then `exp`, `nbf`, `iat` against the
//!   injected [`Clock`](crate::clock::Clock) with a skew (5 s), `sub`, `iss` (when
//!   configured), `azp` (when authorized parties are configured);
//! - v1 (`org_*`) and v2 (`o`) organization claims become one [`Org`];
//! - a verified token is cached by its SHA-256 until its `exp`, and every hit is
//!   checked again for expiry and revocation;
//! - refusals are [`TokenError`]s with stable codes, never containing the token.

mod claims;
mod clerk_source;
mod error;
mod extract;
mod jwks;
mod revocation;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use claims::{Org, Session};
pub use clerk_source::ClerkJwks;
pub use error::TokenError;
pub use extract::{SESSION_COOKIE, extract_token, extract_token_with_suffix};
pub use jwks::{JwksFetchError, JwksSource};
pub use revocation::{InMemoryRevocations, Revocations};

use crate::clock::SharedClock;
use jwks::{JwksCache, JwksTimings};

/// Tokens longer than this are refused unparsed (Clerk's are ~1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The `[tokens]` section; it lives in `config` (below every capability).
pub use crate::config::VerifierConfig;

/// Why a [`Verifier`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VerifierBuildError {
    #[error("CLERK_JWT_KEY is not an RSA public key in PEM form")]
    BadJwtKey,
    #[error(
        "no way to get Clerk's signing keys: set CLERK_JWT_KEY or configure the Clerk API (JWKS)"
    )]
    NoKeySource,
}

enum Keys {
    /// `CLERK_JWT_KEY`: one key, no network.
    Pem(Arc<DecodingKey>),
    Jwks(JwksCache),
}

/// A verified token in the cache, with how long the cache may keep it.
struct Verified {
    session: Session,
    keep_for: Duration,
}

struct KeepUntilExp;

impl moka::Expiry<[u8; 32], Arc<Verified>> for KeepUntilExp {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Verified>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.keep_for)
    }
}

/// Bounds the cache lifetime of one entry: expiry is re-checked against the injected
/// clock on every hit anyway, this only frees memory.
const MAX_CACHE_KEEP: Duration = Duration::from_secs(3_600);

struct Inner {
    config: VerifierConfig,
    keys: Keys,
    clock: SharedClock,
    verified: moka::sync::Cache<[u8; 32], Arc<Verified>>,
    revocations: Arc<dyn Revocations>,
}

/// Verifies Clerk session tokens. Cheap to clone; clones share caches.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.inner.keys {
            Keys::Pem(_) => "pem",
            Keys::Jwks(_) => "jwks",
        };
        f.debug_struct("Verifier")
            .field("keys", &keys)
            .field("authorized_parties", &self.inner.config.authorized_parties)
            .field("issuer", &self.inner.config.issuer)
            .field("cached_tokens", &self.inner.verified.entry_count())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier with in-process revocations. Keys come from `config.jwt_key_pem` when
    /// set (then `jwks` is never used), otherwise from `jwks`.
    pub fn new(
        config: VerifierConfig,
        jwks: Option<Arc<dyn JwksSource>>,
        clock: SharedClock,
    ) -> Result<Self, VerifierBuildError> {
        let revocations = Arc::new(InMemoryRevocations::new(
            config.max_revocations,
            clock.clone(),
        ));
        Self::with_revocations(config, jwks, clock, revocations)
    }

    /// Like [`Verifier::new`], with revocations kept elsewhere (e.g. shared by many
    /// instances).
    pub fn with_revocations(
        config: VerifierConfig,
        jwks: Option<Arc<dyn JwksSource>>,
        clock: SharedClock,
        revocations: Arc<dyn Revocations>,
    ) -> Result<Self, VerifierBuildError> {
        let keys = match (&config.jwt_key_pem, jwks) {
            (Some(pem), _) if !pem.trim().is_empty() => Keys::Pem(Arc::new(pem_key(pem)?)),
            (_, Some(source)) => Keys::Jwks(JwksCache::new(
                source,
                clock.clone(),
                JwksTimings {
                    ttl_ms: config.jwks_ttl_ms,
                    unknown_kid_cooldown_ms: config.unknown_kid_cooldown_ms,
                    failed_fetch_ttl_ms: config.failed_fetch_ttl_ms,
                    fetch_timeout: Duration::from_millis(config.jwks_fetch_timeout_ms.max(1)),
                },
            )),
            _ => return Err(VerifierBuildError::NoKeySource),
        };
        let verified = moka::sync::Cache::builder()
            .max_capacity(config.token_cache_capacity)
            .expire_after(KeepUntilExp)
            .build();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                keys,
                clock,
                verified,
                revocations,
            }),
        })
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.inner.config
    }

    /// Whether keys come from `CLERK_JWT_KEY` (no network) rather than the JWKS.
    pub fn uses_pem_key(&self) -> bool {
        matches!(self.inner.keys, Keys::Pem(_))
    }

    /// Verifies a session token: the session, or why not. Not instrumented with a span
    /// of its own: it runs on every request, and log lines already carry the request's
    /// id (and, once known, the user id).
    pub async fn verify(&self, token: &str) -> Result<Session, TokenError> {
        let outcome = self.verify_uncounted(token).await;
        match &outcome {
            Ok(_) => crate::hot_counter!("frontdesk_token_verifications_total", "result" => "ok")
                .increment(1),
            Err(e) => {
                metrics::counter!("frontdesk_token_verifications_total", "result" => e.code())
                    .increment(1)
            }
        }
        outcome
    }

    /// The token of a request's headers (see [`extract_token`]), verified.
    pub async fn verify_headers(&self, headers: &http::HeaderMap) -> Result<Session, TokenError> {
        match extract_token(headers) {
            Some(token) => self.verify(token).await,
            None => {
                metrics::counter!("frontdesk_token_verifications_total", "result" => "token_missing")
                    .increment(1);
                Err(TokenError::Missing)
            }
        }
    }

    /// Refuses tokens of session `sid` with `session_revoked` until `until_ms` (Unix
    /// ms). Session tokens live 60 s, so `now + 2 min` covers every token the session
    /// has; passing the session's `expire_at` is also fine.
    pub fn revoke_session(&self, sid: &str, until_ms: u64) {
        self.inner.revocations.revoke(sid, until_ms);
    }

    /// Forgets revocations that have expired.
    pub fn purge_revocations(&self) {
        self.inner.revocations.purge(self.inner.clock.now_ms());
    }

    /// Whether `sid` is revoked now.
    pub fn is_revoked(&self, sid: &str) -> bool {
        self.inner
            .revocations
            .is_revoked(sid, self.inner.clock.now_ms())
    }

    /// Verified tokens currently cached (approximate).
    pub fn cached_tokens(&self) -> u64 {
        self.inner.verified.entry_count()
    }

    async fn verify_uncounted(&self, token: &str) -> Result<Session, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed("the token is too long"));
        }
        let cfg = &self.inner.config;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();

        if let Some(hit) = self.inner.verified.get(&digest) {
            crate::hot_counter!("frontdesk_token_cache_total", "result" => "hit").increment(1);
            let now = self.inner.clock.now_ms();
            if hit.session.expires_at_ms.saturating_add(cfg.skew_ms) <= now {
                self.inner.verified.invalidate(&digest);
                return Err(TokenError::Expired);
            }
            self.check_revoked(&hit.session, now)?;
            return Ok(hit.session.clone());
        }
        metrics::counter!("frontdesk_token_cache_total", "result" => "miss").increment(1);

        let jws = Jws::parse(token)?;
        let key = match &self.inner.keys {
            Keys::Pem(key) => key.clone(),
            Keys::Jwks(cache) => {
                let kid = jws
                    .kid
                    .as_deref()
                    .ok_or(TokenError::Malformed("the token header has no kid"))?;
                cache.key(kid).await?
            }
        };
        // The signature first; nothing of the payload is read before it holds.
        match jsonwebtoken::crypto::verify(
            jws.signature,
            jws.signing_input.as_bytes(),
            &key,
            jws.alg,
        ) {
            Ok(true) => {}
            Ok(false) | Err(_) => return Err(TokenError::InvalidSignature),
        }
        let payload = URL_SAFE_NO_PAD
            .decode(jws.payload)
            .map_err(|_| TokenError::Malformed("the payload is not base64url"))?;
        let claims: Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| TokenError::Malformed("the payload is not a JSON object"))?;

        // Time is read after any JWKS wait, so a slow fetch cannot stretch `exp`.
        let now = self.inner.clock.now_ms();
        let session = claims::check(
            &claims,
            &claims::ClaimRules {
                skew_ms: cfg.skew_ms,
                issuer: cfg.issuer.as_deref(),
                authorized_parties: &cfg.authorized_parties,
                require_azp: cfg.require_azp,
            },
            now,
        )?;
        self.check_revoked(&session, now)?;

        let until = session.expires_at_ms.saturating_add(cfg.skew_ms);
        let keep_for = Duration::from_millis(until.saturating_sub(now)).min(MAX_CACHE_KEEP);
        self.inner.verified.insert(
            digest,
            Arc::new(Verified {
                session: session.clone(),
                keep_for,
            }),
        );
        Ok(session)
    }

    fn check_revoked(&self, session: &Session, now: u64) -> Result<(), TokenError> {
        match &session.session_id {
            Some(sid) if self.inner.revocations.is_revoked(sid, now) => {
                Err(TokenError::SessionRevoked)
            }
            _ => Ok(()),
        }
    }
}

/// A compact JWS split into its parts, with the header read just enough to choose the
/// algorithm (from an allow-list) and the key id.
struct Jws<'t> {
    alg: Algorithm,
    kid: Option<String>,
    signing_input: &'t str,
    payload: &'t str,
    signature: &'t str,
}

impl<'t> Jws<'t> {
    fn parse(token: &'t str) -> Result<Self, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("expected three dot-separated parts"));
        };
        let signing_input = &token[..header.len() + 1 + payload.len()];
        let header_json = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed("the header is not base64url"))?;
        let header: Map<String, Value> = serde_json::from_slice(&header_json)
            .map_err(|_| TokenError::Malformed("the header is not a JSON object"))?;
        let alg = match header.get("alg").and_then(Value::as_str) {
            Some("RS256") => Algorithm::RS256,
            Some("RS384") => Algorithm::RS384,
            Some("RS512") => Algorithm::RS512,
            Some(_) => return Err(TokenError::UnsupportedAlg),
            None => return Err(TokenError::Malformed("the header has no alg")),
        };
        match header.get("typ") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
            Some(_) => return Err(TokenError::Malformed("the header typ is not JWT")),
        }
        if header.contains_key("crit") {
            return Err(TokenError::Malformed(
                "the header has critical extensions (crit)",
            ));
        }
        if signature.is_empty() {
            return Err(TokenError::InvalidSignature);
        }
        let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
        Ok(Self {
            alg,
            kid,
            signing_input,
            payload,
            signature,
        })
    }
}

/// An RSA public key from `CLERK_JWT_KEY`, tolerating the ways it arrives through
/// environments: literal `\n`, a body on one line, surrounding quotes or spaces.
fn pem_key(pem: &str) -> Result<DecodingKey, VerifierBuildError> {
    let text = pem
        .trim()
        .trim_matches('"')
        .replace("\\n", "\n")
        .replace("\r\n", "\n");
    if let Ok(key) = DecodingKey::from_rsa_pem(text.as_bytes()) {
        return Ok(key);
    }
    // Rebuild a canonical PEM: marker lines, then the base64 body in 64-char lines.
    let (begin, rest) = text
        .split_once("-----BEGIN ")
        .and_then(|(_, r)| r.split_once("-----"))
        .ok_or(VerifierBuildError::BadJwtKey)?;
    let (body, _) = rest
        .split_once("-----END ")
        .ok_or(VerifierBuildError::BadJwtKey)?;
    let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let mut canonical = format!("-----BEGIN {begin}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        canonical.push_str(&String::from_utf8_lossy(chunk));
        canonical.push('\n');
    }
    canonical.push_str(&format!("-----END {begin}-----\n"));
    DecodingKey::from_rsa_pem(canonical.as_bytes()).map_err(|_| VerifierBuildError::BadJwtKey)
}
