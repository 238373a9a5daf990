//! One error type for the crate. Client errors carry an HTTP status and a stable
//! machine-readable `code`; internal errors are logged with their context and answered
//! as an opaque 500, so no internals (SQL, hostnames, stack traces) reach a caller.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's fault: bad input, missing auth, unknown resource.
    #[error("{code}: {detail}")]
    Client {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
    /// The store (Postgres/SQLite) cannot be reached; the request may be retried.
    #[error("store unavailable: {0}")]
    StoreUnavailable(#[source] std::sync::Arc<sqlx::Error>),
    /// Clerk cannot be reached or is limiting us, and nothing cached can answer.
    #[error("upstream unavailable: {detail}")]
    UpstreamUnavailable {
        detail: String,
        retry_after_s: Option<u64>,
    },
    /// Anything else: a bug or an unexpected failure. Logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn client(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            detail: detail.into(),
        }
    }
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::client(StatusCode::NOT_FOUND, "not_found", detail)
    }
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::client(StatusCode::UNAUTHORIZED, code, detail)
    }

    /// The stable code a caller can match on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Client { code, .. } => code,
            Error::StoreUnavailable(_) => "store_unavailable",
            Error::UpstreamUnavailable { .. } => "upstream_unavailable",
            Error::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Client { status, .. } => *status,
            Error::StoreUnavailable(_) | Error::UpstreamUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            Error::StoreUnavailable(std::sync::Arc::new(e))
        } else {
            Error::Internal(anyhow::Error::new(e).context("store query failed"))
        }
    }
}

/// The JSON body of every error answer: `{"code": "...", "message": "..."}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        let (message, retry_after) = match &self {
            Error::Client { detail, .. } => (detail.clone(), None),
            Error::StoreUnavailable(e) => {
                tracing::warn!(error = %e, code, "store unavailable");
                (
                    "the store is unavailable; retry shortly".to_string(),
                    Some(1),
                )
            }
            Error::UpstreamUnavailable {
                detail,
                retry_after_s,
            } => {
                tracing::warn!(detail = %detail, code, "upstream unavailable");
                (
                    "Clerk is unavailable and nothing cached can answer; retry shortly".to_string(),
                    Some(retry_after_s.unwrap_or(1)),
                )
            }
            Error::Internal(e) => {
                tracing::error!(error = ?e, code, "internal error");
                ("internal error".to_string(), None)
            }
        };
        let mut response = (status, Json(ErrorBody { code, message })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, www_authenticate(code));
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `Bearer error="invalid_token", error_description="<code>"` (RFC 6750 §3).
pub fn www_authenticate(code: &str) -> HeaderValue {
    // Codes are ASCII identifiers; anything else would be a bug, so fall back.
    HeaderValue::from_str(&format!(
        "Bearer error=\"invalid_token\", error_description=\"{code}\""
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
}

/// Whether an error means "the store cannot be reached" (answer 503 and retry) rather
/// than "this query is wrong" (a bug: 500).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // Postgres: class 08 connection exceptions, 57P0x shutdown/cannot connect,
            // 53300 too many connections, 3D000 database gone, 55000 database not
            // accepting connections. SQLite: BUSY/LOCKED.
            code.starts_with("08")
                || code.starts_with("57P0")
                || code == "53300"
                || code == "3D000"
                || code == "55000"
                || code == "5"
                || code == "6"
        }
        _ => false,
    }
}
