//! The production key source: the instance's JWKS through the shared Clerk client,
//! so JWKS fetches count against the same rate governor and honour its 429 pauses.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::{JwksFetchError, JwksSource};
use crate::upstream::{ClerkClient, UpstreamError};

pub struct ClerkJwks(pub Arc<ClerkClient>);

impl JwksSource for ClerkJwks {
    fn fetch(&self) -> BoxFuture<'_, Result<Value, JwksFetchError>> {
        async move {
            self.0.jwks().await.map_err(|e| {
                let retry_after_s = match &e {
                    UpstreamError::RateLimited { .. } => Some(e.retry_after_s()),
                    _ => None,
                };
                JwksFetchError {
                    detail: e.to_string(),
                    retry_after_s,
                }
            })
        }
        .boxed()
    }
}
