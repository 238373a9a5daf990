//! A JSON body extractor whose rejections use Frontdesk's error shape
//! (`{"code", "message"}` with a stable code) instead of axum's plain text.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::Error;

pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => Error::client(
                    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send Content-Type: application/json",
                ),
                JsonRejection::JsonSyntaxError(_) => {
                    Error::bad_request("invalid_json", "the body is not valid JSON")
                }
                JsonRejection::JsonDataError(e) => Error::client(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    e.body_text(),
                ),
                // Too large, or cut off (a client gone mid-body is not told 413).
                JsonRejection::BytesRejection(e)
                    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    Error::client(
                        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        "the body is too large",
                    )
                }
                JsonRejection::BytesRejection(_) => {
                    Error::bad_request("body_incomplete", "the body could not be read in full")
                }
                _ => Error::bad_request("invalid_body", "the body could not be read"),
            }),
        }
    }
}
