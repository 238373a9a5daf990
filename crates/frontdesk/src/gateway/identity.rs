//! The identity headers the app receives (`X-Frontdesk-User-Id` … and the signed
//! `X-Frontdesk-Assertion`), made once per (session token, context, request line) and
//! reused while the assertion is young.
//!
//! Signing an Ed25519 assertion costs more than everything else the gateway does for
//! a proxied request, yet a client repeating a request with the same token would get
//! the same claims but `iat`/`exp`. So the headers are cached, keyed by every input of
//! every header (the token's `exp` included, so a new token gets a new assertion) and
//! compared in full on a hit: a hash collision is a miss, never another session's
//! headers. An entry is reused for at most [`REUSE_S`], so an assertion always reaches
//! the app with at least `TTL_S - REUSE_S` seconds left. A revoked or expired session
//! never gets here (it fails authentication first), and a context that changed (role,
//! e-mail, organization) is a different key. Bounded by bytes (moka weigher).

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use super::assertion::{Claims, Signer, TTL_S};

/// How long (seconds) one signed assertion is reused, at most: half its lifetime.
pub const REUSE_S: u64 = TTL_S / 2;

/// Everything the identity headers of one request are made of, but the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subject<'a> {
    pub user_id: &'a str,
    pub session_id: Option<&'a str>,
    /// The session token's `exp` (ms): a fresh token is a fresh assertion.
    pub token_exp_ms: u64,
    pub local_user_id: i64,
    pub profile_id: i64,
    pub role: &'a str,
    pub email: Option<&'a str>,
    pub org_id: Option<&'a str>,
    pub org_role: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
}

/// A [`Subject`] that owns its strings (what an entry is compared with).
#[derive(Debug)]
struct Owned {
    user_id: Box<str>,
    session_id: Option<Box<str>>,
    token_exp_ms: u64,
    local_user_id: i64,
    profile_id: i64,
    role: Box<str>,
    email: Option<Box<str>>,
    org_id: Option<Box<str>>,
    org_role: Option<Box<str>>,
    method: Box<str>,
    path: Box<str>,
}

impl Owned {
    fn of(s: &Subject<'_>) -> Self {
        Self {
            user_id: s.user_id.into(),
            session_id: s.session_id.map(Into::into),
            token_exp_ms: s.token_exp_ms,
            local_user_id: s.local_user_id,
            profile_id: s.profile_id,
            role: s.role.into(),
            email: s.email.map(Into::into),
            org_id: s.org_id.map(Into::into),
            org_role: s.org_role.map(Into::into),
            method: s.method.into(),
            path: s.path.into(),
        }
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            user_id: &self.user_id,
            session_id: self.session_id.as_deref(),
            token_exp_ms: self.token_exp_ms,
            local_user_id: self.local_user_id,
            profile_id: self.profile_id,
            role: &self.role,
            email: self.email.as_deref(),
            org_id: self.org_id.as_deref(),
            org_role: self.org_role.as_deref(),
            method: &self.method,
            path: &self.path,
        }
    }
}

/// The identity headers of one subject, signed at `iat` (seconds).
#[derive(Debug)]
pub struct Signed {
    subject: Owned,
    iat: u64,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Signed {
    fn weight(&self) -> u32 {
        let s = &self.subject;
        let strings = [
            Some(&s.user_id),
            s.session_id.as_ref(),
            Some(&s.role),
            s.email.as_ref(),
            s.org_id.as_ref(),
            s.org_role.as_ref(),
            Some(&s.method),
            Some(&s.path),
        ]
        .into_iter()
        .flatten()
        .map(|v| v.len())
        .sum::<usize>();
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 48)
            .sum();
        // The entry, the map's own bookkeeping (key, `Arc`, moka's node).
        (strings + headers + 256).min(u32::MAX as usize) as u32
    }
}

/// The cache of identity headers (see the module header).
pub struct Identities {
    cache: Option<moka::sync::Cache<u64, Arc<Signed>>>,
    hasher: RandomState,
}

impl Identities {
    /// Holds at most `max_bytes` of entries; `0` signs every request.
    pub fn new(max_bytes: u64) -> Self {
        let cache = (max_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_: &u64, v: &Arc<Signed>| v.weight())
                // Only bounds memory: reuse is judged on the injected clock.
                .time_to_live(Duration::from_secs(TTL_S))
                .build()
        });
        Self {
            cache,
            hasher: RandomState::new(),
        }
    }

    /// The headers of `subject` at `now_s`: reused when an entry of exactly this
    /// subject was signed less than [`REUSE_S`] ago, else made (and signed) afresh.
    pub fn headers(&self, signer: &Signer, subject: &Subject<'_>, now_s: u64) -> Arc<Signed> {
        let Some(cache) = &self.cache else {
            return Arc::new(make(signer, subject, now_s));
        };
        let mut h = self.hasher.build_hasher();
        subject.hash(&mut h);
        let key = std::hash::Hasher::finish(&h);
        if let Some(hit) = cache.get(&key) {
            let young = now_s >= hit.iat && now_s < hit.iat + REUSE_S;
            if young && hit.subject.subject() == *subject {
                return hit;
            }
        }
        let made = Arc::new(make(signer, subject, now_s));
        cache.insert(key, made.clone());
        made
    }

    /// Entries held (approximate; for tests and stats).
    pub fn len(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn make(signer: &Signer, s: &Subject<'_>, now_s: u64) -> Signed {
    let mut headers = Vec::with_capacity(10);
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.push((HeaderName::from_static(name), v));
        }
    };
    set("x-frontdesk-user-id", s.user_id);
    set("x-frontdesk-local-user-id", &s.local_user_id.to_string());
    if let Some(e) = s.email {
        set("x-frontdesk-email", e);
    }
    set("x-frontdesk-role", s.role);
    set("x-frontdesk-profile-id", &s.profile_id.to_string());
    if let Some(sid) = s.session_id {
        set("x-frontdesk-session-id", sid);
    }
    if let Some(o) = s.org_id {
        set("x-frontdesk-org-id", o);
        if let Some(r) = s.org_role {
            set("x-frontdesk-org-role", r);
        }
    }
    let claims = Claims {
        iss: signer.issuer(),
        aud: signer.audience(),
        sub: s.user_id,
        iat: now_s,
        exp: now_s + TTL_S,
        sid: s.session_id,
        uid: s.local_user_id,
        role: s.role,
        email: s.email,
        org_id: s.org_id,
        org_role: s.org_role,
        htm: s.method,
        htu: s.path,
    };
    if let Some(token) = signer.sign(&claims) {
        set("x-frontdesk-assertion", &token);
    }
    Signed {
        subject: Owned::of(s),
        iat: now_s,
        headers,
    }
}
