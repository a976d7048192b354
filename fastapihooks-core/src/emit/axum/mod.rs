//! The request-path side of emission for axum: what `#[hook]` expands to.
//!
//! A hooked handler gets one hidden first parameter, [`HookParts`], an
//! extractor that never rejects: it finds the [`Fastapihooks`] handle (in the
//! router state, or in the request extensions put there by
//! [`Fastapihooks::layer`]), and clones the headers and resolves the owner
//! only when the hook asked for them. With `include_request`, the body
//! extractor is wrapped in [`Captured`], which keeps the bytes the client
//! sent. After the handler returned, [`HookResponse`] decides whether the
//! event is emitted (only on success) and what the response payload is.
//!
//! Everything here is public so that the expansion of `#[hook]` can be
//! written by hand (see the `hook` docs of the `fastapihooks` crate), but
//! the only items most apps touch are [`Fastapihooks::layer`] and, for a
//! custom response type, [`HookResponse`].

mod extract;
mod response;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use extract::{Captured, HookParts, HookSite, HooksFromState, ViaCaptured};
pub use response::{HookResponse, Outcome, READ_BACK_LIMIT, hook_outcome, read_back};

/// The axum items the expansion of `#[hook]` names, so that the facade
/// crate needs no direct axum dependency.
#[doc(hidden)]
pub mod deps {
    pub use ::axum::http::StatusCode;
    pub use ::axum::http::request::Parts;
    pub use ::axum::response::IntoResponse;
}

use super::Fastapihooks;

/// Hooked requests that found no handle, in the whole process.
static HANDLES_MISSING: AtomicU64 = AtomicU64::new(0);
/// Whether the "no handle" warning was logged already.
static WARNED_MISSING: AtomicBool = AtomicBool::new(false);

impl Fastapihooks {
    /// The zero-config way to give hooked handlers the handle: a layer that
    /// puts it in every request's extensions.
    ///
    /// Use it on a router without state (`Router<()>`); a router whose state
    /// provides the handle (`Fastapihooks: FromRef<S>`) needs no layer and
    /// unhooked routes then pay nothing.
    ///
    /// ```
    /// # use fastapihooks_core::Fastapihooks;
    /// # use axum::{Router, routing::get};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let hooks = Fastapihooks::builder().build()?;
    /// let app: Router = Router::new().route("/", get(|| async { "ok" })).layer(hooks.layer());
    /// # Ok(())
    /// # }
    /// ```
    pub fn layer(&self) -> ::axum::Extension<Fastapihooks> {
        ::axum::Extension(self.clone())
    }

    /// How many hooked requests, in this whole process, found no
    /// `Fastapihooks` handle (no layer on a stateless router). Those
    /// requests were served normally, and emitted nothing.
    pub fn handles_missing() -> u64 {
        HANDLES_MISSING.load(Ordering::Relaxed)
    }
}

/// Counts a hooked request that found no handle, and warns the first time.
fn handle_missing(event: &'static str) {
    HANDLES_MISSING.fetch_add(1, Ordering::Relaxed);
    if !WARNED_MISSING.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            event,
            "#[hook] found no Fastapihooks handle: add `.layer(hooks.layer())` to the router, or put the \
             handle in the router state; the request is served, but no event is emitted"
        );
    }
}
