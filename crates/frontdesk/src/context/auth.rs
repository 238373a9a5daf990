//! `Auth`: the one path from a request's headers to its verified session and its
//! context. `/_frontdesk/me`, the gateway and the embedding layer and extractors all go
//! through it, so the token matrix (expired, wrong `azp`, wrong `alg`, revoked,
//! missing) answers the same codes everywhere.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};

use super::{Context, ContextService, Resolved};
use crate::error::{Error, Result};
use crate::tokens::{Session, Verifier};

/// Session verification plus context resolution. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    verifier: Option<Verifier>,
    context: ContextService,
}

impl Auth {
    /// `verifier` is `None` when neither `CLERK_JWT_KEY` nor a Clerk instance to
    /// fetch the JWKS from is configured: every authentication then answers 503
    /// `auth_unconfigured`.
    pub fn new(verifier: Option<Verifier>, context: ContextService) -> Self {
        Self { verifier, context }
    }

    pub fn verifier(&self) -> Option<&Verifier> {
        self.verifier.as_ref()
    }

    pub fn context(&self) -> &ContextService {
        &self.context
    }

    /// Verifies the request's session token and records the user id on the request
    /// span (never the token).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Session> {
        let verifier = self.verifier.as_ref().ok_or_else(|| {
            Error::client(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unconfigured",
                "no way to verify session tokens is configured (CLERK_JWT_KEY or CLERK_SECRET_KEY)",
            )
        })?;
        let session = verifier
            .verify_headers(headers)
            .await
            .map_err(Error::from)?;
        crate::telemetry::record_user(&session.user_id);
        Ok(session)
    }

    /// The verified session's context (local user and profile), provisioning it on
    /// the user's first request.
    pub async fn resolve(&self, session: &Session) -> Result<(Arc<Context>, Resolved)> {
        self.context.resolve(&session.user_id).await
    }
}
