//! [`VerifiedWebhook`]: the axum extractor for receivers.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, FromRequest, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use serde::de::DeserializeOwned;

use super::{Verified, Verifier, VerifyError};

/// A webhook request whose signature was verified, with its JSON payload.
///
/// Extracting it reads the body (within axum's `DefaultBodyLimit`), verifies
/// it with the [`Verifier`] taken from the router's state (through
/// [`FromRef`]: the state is a `Verifier`, or a struct with a `Verifier`
/// field and `#[derive(FromRef)]` or a `FromRef` impl), then parses the body
/// as `T`. The handler runs only when all of that succeeded; otherwise the
/// request is answered with [`WebhookRejection`]: 401 for unsigned, forged
/// or stale requests, 400 for malformed signature headers or a body that is
/// not a `T`.
///
/// It consumes the body, so it must be the handler's last argument. For a
/// secret per tenant or per path, call [`Verifier::verify`] in the handler
/// instead.
///
/// ```
/// use axum::{Router, routing::post};
/// use fastapihooks_core::verify::{VerifiedWebhook, Verifier};
/// use serde_json::Value;
///
/// async fn receive(hook: VerifiedWebhook<Value>) -> &'static str {
///     // `hook.id` is the event id: de-duplicate on it if replays within the
///     // tolerance matter.
///     println!("{:?}: {}", hook.id, hook.payload);
///     "ok"
/// }
///
/// let verifier = Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// let app: Router = Router::new().route("/webhooks", post(receive)).with_state(verifier);
/// # Ok::<(), fastapihooks_core::secret::SecretFormatError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifiedWebhook<T = serde_json::Value> {
    /// The parsed body.
    pub payload: T,
    /// The exact body bytes that were verified.
    pub body: Bytes,
    /// `webhook-id`: the event id, the same on every retry (Standard Webhooks).
    pub id: Option<String>,
    /// `webhook-timestamp`: Unix seconds of this attempt (Standard Webhooks).
    pub timestamp: Option<i64>,
    /// Which scheme verified.
    pub scheme: crate::sign::SignatureScheme,
}

/// Why [`VerifiedWebhook`] refused a request. As a response: the status and
/// a one-line plain-text reason (no secret, no expected signature).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookRejection {
    /// The signature did not verify (401, or 400 for a malformed header).
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The body could not be read (axum's own rejection: 413, 400...).
    #[error(transparent)]
    Body(#[from] BytesRejection),
    /// The verified body is not the expected JSON (400).
    #[error("invalid JSON payload: {0}")]
    Json(#[from] serde_json::Error),
}

impl IntoResponse for WebhookRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Verify(e) => (e.status_code(), e.to_string()).into_response(),
            Self::Body(e) => e.into_response(),
            Self::Json(e) => (StatusCode::BAD_REQUEST, format!("invalid JSON payload: {e}")).into_response(),
        }
    }
}

impl<S, T> FromRequest<S> for VerifiedWebhook<T>
where
    S: Send + Sync,
    Verifier: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = WebhookRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Verifier::from_ref(state);
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state).await?;
        let Verified { scheme, id, timestamp } = verifier.verify(&headers, &body)?;
        let payload = serde_json::from_slice(&body)?;
        Ok(Self { payload, body, id, timestamp, scheme })
    }
}
