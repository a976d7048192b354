//! From a handler's output to an [`Outcome`]: emit (with which response
//! payload) or skip.

use ::axum::Json;
use ::axum::body::{Body, HttpBody as _};
use ::axum::http::{StatusCode, header};
use ::axum::response::{NoContent, Response};
use serde::Serialize;

use crate::emit::{JsonBuf, ResponsePayload};

/// JSON bodies of `impl IntoResponse` returns are read back up to this many
/// bytes; a bigger (or streaming) body is emitted with no response payload.
pub const READ_BACK_LIMIT: usize = 1 << 20;

/// What a hooked handler's output means for the event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler did not succeed (`Err`, a non-2xx status): no event.
    Skip,
    /// The handler succeeded: emit, with this response payload.
    Emit(ResponsePayload),
}

impl Outcome {
    /// Success without a JSON body.
    pub fn empty() -> Self {
        Self::Emit(ResponsePayload::None)
    }

    /// Emit on a 2xx status (with no payload), skip otherwise.
    pub fn of_status(status: StatusCode) -> Self {
        if status.is_success() { Self::empty() } else { Self::Skip }
    }
}

/// How `#[hook]` reads a handler's return type: did it succeed, and what is
/// the JSON response payload.
///
/// `#[hook]` handles `Result`, axum's tuples (`(StatusCode, .., R)`),
/// `Response` and `impl IntoResponse` itself, from the syntax of the return
/// type; every other type must implement this trait. Implement it for your
/// own response types.
///
/// ```
/// use fastapihooks_core::emit::axum::{HookResponse, Outcome};
/// use fastapihooks_core::ResponsePayload;
///
/// struct Created(String);
///
/// impl HookResponse for Created {
///     fn hook_outcome(&self, include_response: bool) -> Outcome {
///         if !include_response {
///             return Outcome::empty();
///         }
///         Outcome::Emit(ResponsePayload::Value(serde_json::json!({ "id": self.0 })))
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`#[hook]` cannot read the outcome of a handler returning `{Self}`",
    label = "unsupported return type for a hooked handler",
    note = "return `Json<T>`, `(StatusCode, Json<T>)`, `Result<Json<T>, E>`, `StatusCode`, `()` or `impl IntoResponse`",
    note = "or implement `fastapihooks::HookResponse` for `{Self}`"
)]
pub trait HookResponse {
    /// Skip, or emit with the response payload (only computed when
    /// `include_response` is true).
    fn hook_outcome(&self, include_response: bool) -> Outcome;
}

/// [`HookResponse::hook_outcome`] as a function: the expansion of `#[hook]`
/// calls it with the span of the return type, so that an unsupported type is
/// reported there.
pub fn hook_outcome<T: HookResponse + ?Sized>(value: &T, include_response: bool) -> Outcome {
    value.hook_outcome(include_response)
}

impl<T: Serialize> HookResponse for Json<T> {
    fn hook_outcome(&self, include_response: bool) -> Outcome {
        if !include_response {
            return Outcome::empty();
        }
        match JsonBuf::serialize(&self.0) {
            Ok(buf) => Outcome::Emit(ResponsePayload::Buf(buf)),
            // axum answers 500 for a body it cannot serialize.
            Err(_) => Outcome::Skip,
        }
    }
}

impl HookResponse for StatusCode {
    fn hook_outcome(&self, _include_response: bool) -> Outcome {
        Outcome::of_status(*self)
    }
}

impl HookResponse for () {
    fn hook_outcome(&self, _include_response: bool) -> Outcome {
        Outcome::empty()
    }
}

impl HookResponse for NoContent {
    fn hook_outcome(&self, _include_response: bool) -> Outcome {
        Outcome::empty()
    }
}

impl<B> HookResponse for ::axum::http::Response<B> {
    /// The status only: a body can only be read back where `#[hook]` sees
    /// `Response` in the return type itself.
    fn hook_outcome(&self, _include_response: bool) -> Outcome {
        Outcome::of_status(self.status())
    }
}

impl<T: HookResponse, E> HookResponse for Result<T, E> {
    fn hook_outcome(&self, include_response: bool) -> Outcome {
        match self {
            Ok(v) => v.hook_outcome(include_response),
            Err(_) => Outcome::Skip,
        }
    }
}

impl<T: HookResponse> HookResponse for (StatusCode, T) {
    fn hook_outcome(&self, include_response: bool) -> Outcome {
        if self.0.is_success() { self.1.hook_outcome(include_response) } else { Outcome::Skip }
    }
}

fn is_json(response: &Response) -> bool {
    let Some(ct) = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or_default().trim();
    mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
}

/// The outcome of a handler that returned a [`Response`] (an
/// `impl IntoResponse`): skip a non-2xx status; with `include_response`,
/// read back a JSON body that is already in memory (up to
/// [`READ_BACK_LIMIT`]) and hand back an identical response.
pub async fn read_back(response: Response, include_response: bool) -> (Response, Outcome) {
    if !response.status().is_success() {
        return (response, Outcome::Skip);
    }
    if !include_response || !is_json(&response) {
        return (response, Outcome::empty());
    }
    match response.body().size_hint().exact() {
        Some(n) if n <= READ_BACK_LIMIT as u64 => {}
        _ => return (response, Outcome::empty()),
    }
    let (parts, body) = response.into_parts();
    match ::axum::body::to_bytes(body, READ_BACK_LIMIT).await {
        Ok(bytes) => {
            // A copy in a recycled buffer: the response body keeps the
            // original, freed on this thread (see `JsonBuf`).
            let payload = ResponsePayload::Buf(JsonBuf::copy_unchecked(&bytes));
            (Response::from_parts(parts, Body::from(bytes)), Outcome::Emit(payload))
        }
        Err(err) => {
            tracing::error!(error = %err, "#[hook] could not read back the response body");
            (Response::from_parts(parts, Body::empty()), Outcome::empty())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::axum::response::IntoResponse;

    #[tokio::test]
    async fn read_back_keeps_the_body_and_skips_errors() {
        let r = Json(serde_json::json!({"id": 1})).into_response();
        let (r, o) = read_back(r, true).await;
        let Outcome::Emit(ResponsePayload::Buf(b)) = o else { panic!("expected a payload") };
        assert_eq!(b.as_bytes(), br#"{"id":1}"#);
        let body = ::axum::body::to_bytes(r.into_body(), 100).await.unwrap();
        assert_eq!(&body[..], b.as_bytes());
        let (_, o) = read_back((StatusCode::BAD_REQUEST, "no").into_response(), true).await;
        assert!(matches!(o, Outcome::Skip));
        let (_, o) = read_back("plain".into_response(), true).await;
        assert!(matches!(o, Outcome::Emit(ResponsePayload::None)));
    }
}
