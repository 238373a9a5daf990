//! Standard Webhooks / Svix signature verification, the scheme Clerk's webhooks use:
//! `v1,base64(HMAC-SHA256(base64decode(secret without "whsec_"), "{id}.{ts}.{body}"))`.
//!
//! Every configured secret is tried (rotation), every `v1` signature of the header is
//! tried (Svix sends several, space-separated, while a secret rotates), other versions
//! are ignored, and tags are compared in constant time. The timestamp must be within
//! the tolerance of the injected clock, in both directions, so a captured request
//! cannot be replayed later.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a message was refused. Each maps to a stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// `svix-id`/`svix-timestamp`/`svix-signature` (or `webhook-*`) missing.
    HeadersMissing,
    /// A header is present but malformed (an id with odd bytes, a non-numeric time).
    HeadersInvalid,
    /// The timestamp is further from now than the tolerance.
    TimestampOutOfRange,
    /// No `v1` signature matches any configured secret.
    SignatureInvalid,
}

impl Rejection {
    pub fn code(self) -> &'static str {
        match self {
            Rejection::HeadersMissing => "webhook_headers_missing",
            Rejection::HeadersInvalid => "webhook_headers_invalid",
            Rejection::TimestampOutOfRange => "webhook_timestamp_out_of_range",
            Rejection::SignatureInvalid => "webhook_signature_invalid",
        }
    }
}

/// The decoded signing keys, one per configured `whsec_…` secret.
#[derive(Clone)]
pub struct SigningKeys(Vec<Vec<u8>>);

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKeys({} key(s), redacted)", self.0.len())
    }
}

impl SigningKeys {
    /// Parses `whsec_a,whsec_b`. The error never contains a secret.
    pub fn parse(secrets: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (i, s) in secrets
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            let b64 = s
                .strip_prefix("whsec_")
                .ok_or_else(|| format!("signing secret #{} does not start with whsec_", i + 1))?;
            let key = STANDARD
                .decode(b64)
                .map_err(|_| format!("signing secret #{} is not base64 after whsec_", i + 1))?;
            if key.is_empty() {
                return Err(format!("signing secret #{} is empty", i + 1));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("no signing secret".into());
        }
        Ok(Self(keys))
    }

    /// Checks one message. `now_s` comes from the injected clock.
    pub fn verify(
        &self,
        msg: &SignedHeaders<'_>,
        body: &[u8],
        now_s: i64,
        tolerance_s: i64,
    ) -> Result<(), Rejection> {
        let ts: i64 = msg
            .timestamp
            .trim()
            .parse()
            .map_err(|_| Rejection::HeadersInvalid)?;
        // `abs_diff`: a subtraction of two arbitrary i64 overflows (a panic in debug
        // builds, a wrap that accepts in release ones).
        if now_s.abs_diff(ts) > u64::try_from(tolerance_s).unwrap_or(0) {
            return Err(Rejection::TimestampOutOfRange);
        }
        let candidates: Vec<Vec<u8>> = msg
            .signature
            .split(' ')
            .filter_map(|part| part.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64.trim()).ok())
            .collect();
        if candidates.is_empty() {
            return Err(Rejection::SignatureInvalid);
        }
        let mut matched = subtle::Choice::from(0u8);
        for key in &self.0 {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
                continue;
            };
            mac.update(msg.id.as_bytes());
            mac.update(b".");
            mac.update(ts.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            let expected = mac.finalize().into_bytes();
            for c in &candidates {
                // `ct_eq` on slices of different lengths is false without a timing leak
                // of the content.
                matched |= expected.as_slice().ct_eq(c.as_slice());
            }
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Rejection::SignatureInvalid)
        }
    }
}

/// The three signed headers of one message.
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

impl<'a> SignedHeaders<'a> {
    /// `svix-*` headers, else their `webhook-*` equivalents (Standard Webhooks).
    pub fn from_headers(headers: &'a http::HeaderMap) -> Result<Self, Rejection> {
        let get = |name: &str| -> Result<&'a str, Rejection> {
            let v = headers
                .get(format!("svix-{name}"))
                .or_else(|| headers.get(format!("webhook-{name}")))
                .ok_or(Rejection::HeadersMissing)?;
            let v = v.to_str().map_err(|_| Rejection::HeadersInvalid)?;
            if v.trim().is_empty() {
                return Err(Rejection::HeadersMissing);
            }
            Ok(v)
        };
        let h = SignedHeaders {
            id: get("id")?,
            timestamp: get("timestamp")?,
            signature: get("signature")?,
        };
        // The id becomes a primary key and appears in logs: keep it short and plain.
        if h.id.len() > 256 || !h.id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Rejection::HeadersInvalid);
        }
        Ok(h)
    }
}
