//! Why a session token was refused, as a stable machine-readable code. Messages are
//! fixed strings: nothing taken from the token (not the token, not its claims, not its
//! header) ever reaches a message, a log line or an error body.

use axum::http::StatusCode;

/// A refusal. Every variant but [`TokenError::JwksUnavailable`] is the caller's fault
/// (401); that one means Clerk's keys cannot be had right now (503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no session token: send `Authorization: Bearer <token>` or the __session cookie")]
    Missing,
    /// The token is not a well-formed JWS (segments, base64url, JSON, required claim
    /// types). The reason is a fixed description, never token content.
    #[error("the session token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the session token has expired")]
    Expired,
    #[error("the session token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the session token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("the session token signature is invalid")]
    InvalidSignature,
    #[error("the session token algorithm is not supported (RS256, RS384 and RS512 only)")]
    UnsupportedAlg,
    #[error("the session token was issued for another authorized party (azp)")]
    AzpMismatch,
    #[error("the session token was issued by another issuer (iss)")]
    IssMismatch,
    #[error("the session token has no subject (sub)")]
    MissingSub,
    #[error("the session token is signed by an unknown key (kid)")]
    UnknownKid,
    #[error("the session has been revoked")]
    SessionRevoked,
    /// Clerk's JWKS could not be fetched and no cached key can answer.
    #[error("the signing keys (JWKS) are unavailable; retry shortly")]
    JwksUnavailable { retry_after_s: Option<u64> },
}

impl TokenError {
    /// Every code a refusal can carry, for docs and tests.
    pub const CODES: [&'static str; 13] = [
        "token_missing",
        "token_malformed",
        "token_expired",
        "token_not_yet_valid",
        "token_iat_in_future",
        "token_invalid_signature",
        "token_unsupported_alg",
        "token_azp_mismatch",
        "token_iss_mismatch",
        "token_missing_sub",
        "token_unknown_kid",
        "session_revoked",
        "jwks_unavailable",
    ];

    /// The stable code a caller can match on.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::Malformed(_) => "token_malformed",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::IssuedInFuture => "token_iat_in_future",
            TokenError::InvalidSignature => "token_invalid_signature",
            TokenError::UnsupportedAlg => "token_unsupported_alg",
            TokenError::AzpMismatch => "token_azp_mismatch",
            TokenError::IssMismatch => "token_iss_mismatch",
            TokenError::MissingSub => "token_missing_sub",
            TokenError::UnknownKid => "token_unknown_kid",
            TokenError::SessionRevoked => "session_revoked",
            TokenError::JwksUnavailable { .. } => "jwks_unavailable",
        }
    }

    /// 401 for every refusal, 503 when the keys are unavailable.
    pub fn status(&self) -> StatusCode {
        match self {
            TokenError::JwksUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

impl From<TokenError> for crate::error::Error {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::JwksUnavailable { retry_after_s } => {
                crate::error::Error::UpstreamUnavailable {
                    detail: format!("{}: {e}", e.code()),
                    retry_after_s,
                }
            }
            other => crate::error::Error::unauthorized(other.code(), other.to_string()),
        }
    }
}
