//! Frontdesk inside a Rust app: a tower layer and axum extractors over a
//! [`Frontdesk`].
//!
//! ```ignore
//! let fd = Frontdesk::builder(config).build().await?;
//! fd.start();
//! let app = Router::new()
//!     .route("/me", get(|ctx: Context| async move { ctx.user.email.clone().unwrap_or_default() }))
//!     .route("/admin", get(|_: RequireRole<Admin>| async { "hello, admin" }))
//!     .layer(FrontdeskLayer::new(fd.clone()));
//! ```
//!
//! [`FrontdeskLayer`] verifies the request's session token when it carries one (the
//! same `Auth::authenticate` as `/_frontdesk/me` and the gateway: one token matrix) and
//! puts the outcome in the request's extensions; it never refuses by itself, so routes
//! without an extractor stay public. The extractors decide:
//!
//! - [`Session`]: a verified session, else the refusal (401 with Frontdesk's JSON error
//!   `{"code","message"}` and `WWW-Authenticate`; 503 when verification is not
//!   configured or its keys cannot be fetched).
//! - [`OptionalSession`]: `Some` for a verified session, `None` without a token or with
//!   one that does not verify (as the gateway's `optional` routes treat it).
//! - [`Context`]: the session's local user and profile, provisioning both on the
//!   user's first request (concurrent first requests converge on one row).
//! - [`RequireRole<R>`]: a [`Context`] whose user has role `R::NAME`, else 403
//!   `role_required`. Roles are types implementing [`Role`] (stable Rust has no
//!   `&str` const generics): [`Admin`] is provided; `struct Editor; impl Role for
//!   Editor { const NAME: &'static str = "editor"; }` adds one.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::error::Error;
use crate::facade::Frontdesk;
use crate::tokens;

/// The tower layer: verifies the session of every request that carries a token.
#[derive(Clone)]
pub struct FrontdeskLayer {
    frontdesk: Frontdesk,
}

impl FrontdeskLayer {
    pub fn new(frontdesk: Frontdesk) -> Self {
        Self { frontdesk }
    }
}

impl<S> Layer<S> for FrontdeskLayer {
    type Service = FrontdeskService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FrontdeskService {
            inner,
            frontdesk: self.frontdesk.clone(),
        }
    }
}

/// The service [`FrontdeskLayer`] wraps around the app.
#[derive(Clone)]
pub struct FrontdeskService<S> {
    inner: S,
    frontdesk: Frontdesk,
}

/// What the layer found, in the request's extensions.
#[derive(Clone)]
enum Verified {
    /// No session token in the request.
    Missing,
    Session(Arc<tokens::Session>),
    Refused(Arc<Error>),
}

impl<S, B> Service<Request<B>> for FrontdeskService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let frontdesk = self.frontdesk.clone();
        Box::pin(async move {
            let verified = if tokens::extract_token(req.headers()).is_none() {
                Verified::Missing
            } else {
                match frontdesk.authenticate(req.headers()).await {
                    Ok(s) => Verified::Session(Arc::new(s)),
                    Err(e) => Verified::Refused(Arc::new(e)),
                }
            };
            req.extensions_mut().insert(verified);
            req.extensions_mut().insert(frontdesk);
            inner.call(req).await
        })
    }
}

/// A refusal as Frontdesk answers it (JSON body, stable `code`, `WWW-Authenticate`
/// on a 401, `Retry-After` on a 503).
#[derive(Debug)]
pub struct Rejection(Error);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

fn again(e: &Error) -> Error {
    match e {
        Error::Client {
            status,
            code,
            detail,
        } => Error::client(*status, code, detail.clone()),
        Error::StoreUnavailable(inner) => Error::StoreUnavailable(inner.clone()),
        Error::UpstreamUnavailable {
            detail,
            retry_after_s,
        } => Error::UpstreamUnavailable {
            detail: detail.clone(),
            retry_after_s: *retry_after_s,
        },
        Error::Internal(inner) => Error::Internal(anyhow::anyhow!("{inner:#}")),
    }
}

fn frontdesk_of(parts: &Parts) -> Result<Frontdesk, Rejection> {
    parts.extensions.get::<Frontdesk>().cloned().ok_or_else(|| {
        Rejection(Error::Internal(anyhow::anyhow!(
            "a Frontdesk extractor is used on a route without FrontdeskLayer"
        )))
    })
}

fn verified(parts: &Parts) -> Result<Verified, Rejection> {
    parts.extensions.get::<Verified>().cloned().ok_or_else(|| {
        Rejection(Error::Internal(anyhow::anyhow!(
            "a Frontdesk extractor is used on a route without FrontdeskLayer"
        )))
    })
}

/// A verified session; refuses the request otherwise.
#[derive(Debug, Clone)]
pub struct Session(pub Arc<tokens::Session>);

impl Deref for Session {
    type Target = tokens::Session;
    fn deref(&self) -> &tokens::Session {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Rejection> {
        match verified(parts)? {
            Verified::Session(s) => Ok(Session(s)),
            Verified::Refused(e) => Err(Rejection(again(&e))),
            Verified::Missing => {
                // Whatever `authenticate` answers without a token (401 `token_missing`,
                // or 503 when nothing can verify): the service's own answer.
                let fd = frontdesk_of(parts)?;
                match fd.authenticate(&parts.headers).await {
                    Ok(s) => Ok(Session(Arc::new(s))),
                    Err(e) => Err(Rejection(e)),
                }
            }
        }
    }
}

/// A verified session, or `None` (no token, or one that does not verify).
#[derive(Debug, Clone)]
pub struct OptionalSession(pub Option<Arc<tokens::Session>>);

impl<S: Send + Sync> FromRequestParts<S> for OptionalSession {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Rejection> {
        Ok(OptionalSession(match verified(parts)? {
            Verified::Session(s) => Some(s),
            Verified::Missing | Verified::Refused(_) => None,
        }))
    }
}

/// The request's context: the local user and the app's profile, created on the
/// user's first request. Derefs to [`crate::context::Context`].
#[derive(Debug, Clone)]
pub struct Context {
    pub session: Arc<tokens::Session>,
    pub context: Arc<crate::context::Context>,
}

impl Deref for Context {
    type Target = crate::context::Context;
    fn deref(&self) -> &crate::context::Context {
        &self.context
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Context {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        if let Some(c) = parts.extensions.get::<Context>() {
            return Ok(c.clone());
        }
        let session = Session::from_request_parts(parts, state).await?;
        let fd = frontdesk_of(parts)?;
        let context = fd.context_of(&session).await.map_err(Rejection)?;
        let c = Context {
            session: session.0,
            context,
        };
        // Later extractors of the same request reuse it.
        parts.extensions.insert(c.clone());
        Ok(c)
    }
}

/// A role name, as a type: `RequireRole<R>` admits users whose role is `R::NAME`.
pub trait Role: Send + Sync + 'static {
    const NAME: &'static str;
}

/// The `admin` role.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl Role for Admin {
    const NAME: &'static str = "admin";
}

/// A [`Context`] whose user has role `R::NAME`; 403 `role_required` otherwise.
#[derive(Debug, Clone)]
pub struct RequireRole<R: Role>(pub Context, PhantomData<R>);

impl<R: Role> Deref for RequireRole<R> {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.0
    }
}

impl<S: Send + Sync, R: Role> FromRequestParts<S> for RequireRole<R> {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        let c = Context::from_request_parts(parts, state).await?;
        if c.user.role != R::NAME {
            return Err(Rejection(Error::client(
                StatusCode::FORBIDDEN,
                "role_required",
                format!("this route requires the {} role", R::NAME),
            )));
        }
        Ok(RequireRole(c, PhantomData))
    }
}
