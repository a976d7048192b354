//! The extractors of a hooked handler: [`HookParts`] (hidden first
//! parameter) and [`Captured`] (wraps the body extractor).

use std::convert::Infallible;
use std::fmt;
use std::marker::PhantomData;

use ::axum::body::Body;
use ::axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use ::axum::http::StatusCode;
use ::axum::http::request::Parts;
use ::axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;

use super::Outcome;
use crate::emit::buffer::{COPY_LIMIT, PooledBuf};
use crate::emit::{Emission, Fastapihooks, ResponsePayload, Transform};

/// What `#[hook(...)]` said about one handler, as a type: the macro
/// generates one hidden zero-sized type per hooked handler.
pub trait HookSite: 'static {
    /// The event name.
    const EVENT: &'static str;
    /// `include_headers`.
    const HEADERS: bool = false;
    /// `include_credentials`: keep `authorization`, `cookie` and
    /// `proxy-authorization` instead of redacting them.
    const CREDENTIALS: bool = false;
    /// `include_response`.
    const RESPONSE: bool = true;

    /// `owner = resolver`: the owner of this request's event.
    fn owner(parts: &Parts) -> Option<String> {
        let _ = parts;
        None
    }

    /// `transform = f`: made once per handler, cloned (an `Arc`) per event.
    fn transform() -> Option<Transform> {
        None
    }
}

/// Where a hooked handler finds the [`Fastapihooks`] handle, given the
/// router state `S`.
///
/// Implemented for every state that provides the handle through
/// [`FromRef`] (checked at compile time), and for the stateless `()`, which
/// reads it from the request extensions (see [`Fastapihooks::layer`]).
#[diagnostic::on_unimplemented(
    message = "the router state `{Self}` does not provide a `Fastapihooks` handle for `#[hook]`",
    label = "a hooked handler needs the handle",
    note = "add a `Fastapihooks` field to `{Self}` with `#[derive(FromRef)]`, or `impl FromRef<{Self}> for Fastapihooks`",
    note = "or use a router without state and `.layer(hooks.layer())`"
)]
pub trait HooksFromState {
    /// The handle, if there is one.
    fn hooks(&self, parts: &Parts) -> Option<Fastapihooks>;
}

// Errors name `HooksFromState` (whose message says how to fix it) rather
// than this impl's `FromRef` bound.
#[diagnostic::do_not_recommend]
impl<S> HooksFromState for S
where
    Fastapihooks: FromRef<S>,
{
    fn hooks(&self, _parts: &Parts) -> Option<Fastapihooks> {
        Some(Fastapihooks::from_ref(self))
    }
}

impl HooksFromState for () {
    fn hooks(&self, parts: &Parts) -> Option<Fastapihooks> {
        parts.extensions.get::<Fastapihooks>().cloned()
    }
}

/// The hidden first parameter of a hooked handler: the handle, and what the
/// hook asked for of the request (headers, owner). Never rejects: without a
/// handle the request is served and nothing is emitted.
pub struct HookParts<Site> {
    hooks: Option<Fastapihooks>,
    headers: Option<PooledBuf>,
    owner: Option<String>,
    transform: Option<Transform>,
    site: PhantomData<fn() -> Site>,
}

impl<Site> fmt::Debug for HookParts<Site> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookParts").field("has_hooks", &self.hooks.is_some()).finish_non_exhaustive()
    }
}

impl<S, Site> FromRequestParts<S> for HookParts<Site>
where
    S: HooksFromState + Send + Sync,
    Site: HookSite,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(hooks) = state.hooks(parts) else {
            super::handle_missing(Site::EVENT);
            return Ok(Self::inactive());
        };
        if !hooks.is_subscribed(Site::EVENT) {
            // Nobody can receive this event: capture nothing, emit nothing.
            hooks.count_unsubscribed();
            return Ok(Self::inactive());
        }
        // Headers and the request body are for the transform: without one
        // they are not captured.
        let transform = Site::transform();
        let headers =
            (Site::HEADERS && transform.is_some()).then(|| PooledBuf::headers(&parts.headers, Site::CREDENTIALS));
        let owner = Site::owner(parts);
        Ok(Self { hooks: Some(hooks), headers, owner, transform, site: PhantomData })
    }
}

impl<Site: HookSite> HookParts<Site> {
    fn inactive() -> Self {
        Self { hooks: None, headers: None, owner: None, transform: None, site: PhantomData }
    }

    /// Whether a handle was found: without one, nothing is emitted and the
    /// handler's output need not be inspected.
    pub fn is_active(&self) -> bool {
        self.hooks.is_some()
    }

    /// Emits the event when the handler succeeded (`outcome` is
    /// [`Outcome::Emit`]) and a handle was found. Never awaits; a refused
    /// event was already reported to `on_failure` by [`Fastapihooks::emit`].
    pub fn emit(self, request_payload: Option<Bytes>, outcome: Outcome) {
        let Outcome::Emit(response) = outcome else { return };
        let Some(hooks) = self.hooks else { return };
        let mut emission = Emission::new(Site::EVENT);
        emission.owner_id = self.owner;
        emission.response = if Site::RESPONSE { response } else { ResponsePayload::None };
        if self.transform.is_some() {
            emission.pooled_headers = self.headers;
            match request_payload {
                // Copied, so that the request's own buffer is freed here (see `JsonBuf`).
                Some(body) if body.len() <= COPY_LIMIT => emission.pooled_request = Some(PooledBuf::copy(&body)),
                body => emission.request_payload = body,
            }
        }
        emission.transform = self.transform;
        // `from_request_parts` checked the subscription already. An error
        // means the event went to `on_failure`.
        let _ = hooks.enqueue_subscribed(emission);
    }
}

/// Wraps a hooked handler's body extractor when `include_request = true`:
/// reads the body once (within the route's `DefaultBodyLimit`), keeps the
/// bytes (a reference count, not a copy), and hands the inner extractor a
/// rebuilt request. The inner extractor's rejection passes through
/// unchanged.
pub struct Captured<T> {
    value: T,
    body: Bytes,
}

impl<T> Captured<T> {
    /// The inner extractor's value and the bytes the client sent.
    pub fn into_parts(self) -> (T, Bytes) {
        (self.value, self.body)
    }
}

impl<T: fmt::Debug> fmt::Debug for Captured<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Captured").field("value", &self.value).field("body_len", &self.body.len()).finish()
    }
}

/// The extractor marker of [`Captured`]: `M` is the inner extractor's.
#[doc(hidden)]
#[derive(Debug)]
pub struct ViaCaptured<M>(PhantomData<fn() -> M>);

impl<S, T, M> FromRequest<S, ViaCaptured<M>> for Captured<T>
where
    S: Send + Sync,
    T: FromRequest<S, M>,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        use ::axum::RequestExt as _;
        let (parts, body) = req.with_limited_body().into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => return Err(buffer_rejection(err)),
        };
        let req = Request::from_parts(parts, Body::from(body.clone()));
        let value = T::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        Ok(Self { value, body })
    }
}

/// The response axum's own `Bytes` extractor gives for a body it could not
/// buffer: 413 past the body limit, 400 otherwise.
fn buffer_rejection(err: ::axum::Error) -> Response {
    let mut inner = err.into_inner();
    for _ in 0..2 {
        match inner.downcast::<::axum::Error>() {
            Ok(e) => inner = e.into_inner(),
            Err(e) => {
                inner = e;
                break;
            }
        }
    }
    let status = if inner.is::<http_body_util::LengthLimitError>() {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, format!("Failed to buffer the request body: {inner}")).into_response()
}
