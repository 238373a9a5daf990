//! Errors, in two kinds: the crate's [`Error`] for callers of the library, and
//! [`ApiError`], a Clerk-shaped HTTP error (`{"errors":[…],"clerk_trace_id"}`) that the
//! emulator answers with, so SDKs see the same codes and bodies as against real Clerk.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Errors returned by the emulator's library API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Generating or using the RSA signing key failed.
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
    /// The configuration is unusable (e.g. a webhook secret without the `whsec_` prefix).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A request the emulator would answer with a Clerk error (404, 422, …).
    #[error("{0}")]
    Api(ApiError),
    /// Binding or serving failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(e)
    }
}

/// One Clerk error, answered as `ClerkErrors` with the given HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub long_message: String,
    pub meta: Option<Value>,
    /// Seconds for a `Retry-After` header (429 only).
    pub retry_after_s: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.long_message
        )
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        long_message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            long_message: long_message.into(),
            meta: None,
            retry_after_s: None,
        }
    }

    /// Adds `meta.param_name`, as Clerk does for form and query errors.
    pub fn with_param(mut self, param: &str) -> Self {
        self.meta = Some(json!({ "param_name": param }));
        self
    }

    /// 401 for a missing or wrong secret key.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_invalid",
            "Invalid authentication",
            "Unable to authenticate the request, you need to supply an active API key",
        )
    }

    /// 404 for an unknown resource or path.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            "not found",
            "Resource not found",
        )
    }

    /// 422 for a query or body parameter with a bad value.
    pub fn invalid_param(param: &str, long_message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "form_param_value_invalid",
            "is invalid",
            long_message,
        )
        .with_param(param)
    }

    /// 422 for an identifier (email, username, external id) another user already has.
    pub fn identifier_exists(param: &str, what: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "form_identifier_exists",
            format!("That {what} is taken. Please try another."),
            format!("That {what} is taken. Please try another."),
        )
        .with_param(param)
    }

    /// 400 for a body that is not the JSON the endpoint expects.
    pub fn malformed_body(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed_request_body",
            "Request body invalid",
            detail,
        )
    }

    /// 429 with `Retry-After`.
    pub fn too_many_requests(retry_after_s: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "Too many requests",
            "Too many requests, please try again later.",
        );
        e.retry_after_s = Some(retry_after_s.max(1));
        e
    }

    /// 500 as injected by the `error_rate` knob.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_clerk_error",
            "Oops, an unexpected error occurred",
            "There was an internal error on our servers. We've been notified and are working on fixing it.",
        )
    }

    /// 405 for a known path with an unsupported method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
            "The HTTP method is not allowed for this resource",
        )
    }

    /// The `ClerkErrors` body.
    pub fn body(&self) -> Value {
        let mut err = json!({
            "message": self.message,
            "long_message": self.long_message,
            "code": self.code,
        });
        if let (Some(meta), Some(obj)) = (&self.meta, err.as_object_mut()) {
            obj.insert("meta".into(), meta.clone());
        }
        json!({ "errors": [err], "clerk_trace_id": trace_id() })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after_s
            && let Ok(v) = s.to_string().parse()
        {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        res
    }
}

/// A fresh 32-hex-digit trace id, like Clerk's.
fn trace_id() -> String {
    use rand::RngExt;
    let n: u128 = rand::rng().random();
    format!("{n:032x}")
}
