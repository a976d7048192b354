//! # fastapihooks
//!
//! Webhook-enable any axum handler with one attribute: after the handler
//! succeeds, an event is built, shaped by your transform, and delivered off
//! the request path to every subscriber as a signed JSON POST, with retries,
//! backoff and dead-lettering.
//!
//! Put [`macro@hook`] on an axum handler (see its docs, and
//! `cargo run --example quickstart`); the runtime below is what it calls.
//!
//! ```
//! use fastapihooks::{Emission, Fastapihooks, MemoryStore, Store, WebhookSubscription};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! store.add("order.created", WebhookSubscription::new("https://example.com/hooks")?).await?;
//! let hooks = Fastapihooks::builder().store(store).signing_secret("your-secret").build()?;
//! hooks.emit(Emission::new("order.created").response_value(json!({"id": "ord_123"})))?;
//! hooks.shutdown(std::time::Duration::from_millis(10)).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `postgres` | no | `store::sql::SqlStore` on PostgreSQL (`postgres://`) |
//! | `mysql` | no | `store::sql::SqlStore` on MySQL / MariaDB (`mysql://`) |
//! | `sqlite` | no | `store::sql::SqlStore` on SQLite (`sqlite://path`), compiled in: no server |
//! | `conformance` | no | `store::conformance`: the checks every `Store` must pass, for your own store's tests |
//! | `redis` | no | `backend::RedisStreamsBackend`: the app publishes to Redis Streams, sidecar [`Worker`]s deliver |
//! | `cli` | no | the `fastapihooks` binary: `fastapihooks start`, the sidecar worker (implies `redis`) |
//!
//! Subscription stores are described in `docs/stores.md` in the repository,
//! the worker and the Redis Streams backend in `docs/worker.md`.

pub use fastapihooks_core::emit::axum::HookResponse;
pub use fastapihooks_core::*;

#[doc = include_str!("../docs/macro.md")]
#[doc(inline)]
pub use fastapihooks_macros::hook;

/// What the expansion of `#[hook]` names. Not public API: it changes with
/// the macro, whose version the facade pins exactly.
#[doc(hidden)]
pub mod __private {
    pub use ::core::clone::Clone;
    pub use ::std::string::String;
    pub use ::std::sync::LazyLock;

    pub use fastapihooks_core::Transform;
    pub use fastapihooks_core::emit::axum::deps::{IntoResponse, Parts, StatusCode};
    pub use fastapihooks_core::emit::axum::{Captured, HookParts, HookSite, Outcome, hook_outcome, read_back};
    pub use fastapihooks_core::subscription::assert_event_name;
}

/// The README's code blocks, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
