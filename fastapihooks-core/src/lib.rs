//! The runtime of [fastapihooks](https://docs.rs/fastapihooks): emission,
//! backends, stores and the signed, retried delivery engine.
//!
//! Most users depend on the `fastapihooks` facade crate, which re-exports
//! this one together with the `#[hook]` attribute.
//!
//! The modules follow the data flow:
//!
//! | stage | module |
//! |---|---|
//! | a handler's result becomes an [`Emission`], queued by [`Fastapihooks::emit`] | [`emit`] |
//! | the pipeline runs the [`Transform`] and hands the [`Event`] to the delivery engine (or publishes it to a queue [`backend`]) | [`emit`] |
//! | the engine fans the event out to its subscriptions | `engine`, `dispatch`, [`store`] |
//! | each delivery is signed, sent, retried or dead-lettered | [`sign`], [`send`], [`retry`], [`dead_letter`] |
//! | a receiver checks the signature | [`verify`] |
//! | a sidecar consumes a queue backend and delivers (the app only publishes) | [`worker`], `backend::RedisStreamsBackend` (feature `redis`) |
//!
//! ```
//! use fastapihooks_core::{Emission, Fastapihooks, InMemoryDeadLetterQueue, MemoryStore, Store, WebhookSubscription};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! store.add("order.created", WebhookSubscription::new("https://example.com/hooks")?).await?;
//! let dead_letters = InMemoryDeadLetterQueue::new(1000);
//! let hooks = Fastapihooks::builder()
//!     .store(store)
//!     .signing_secret("your-secret")
//!     .on_failure(dead_letters.clone())
//!     .build()?;
//!
//! // What `#[hook("order.created")]` does after the handler succeeded:
//! let event_id = hooks.emit(Emission::new("order.created").response_value(json!({"id": "ord_123"})))?;
//! assert!(event_id.as_str().starts_with("evt_"));
//! # hooks.shutdown(std::time::Duration::from_millis(10)).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | yes | the axum integration used by `#[hook]` |
//! | `postgres` | no | `store::sql::SqlStore` and `history::sql::SqlAttemptLog` on PostgreSQL (`postgres://`) |
//! | `mysql` | no | `store::sql::SqlStore` and `history::sql::SqlAttemptLog` on MySQL / MariaDB (`mysql://`) |
//! | `sqlite` | no | `store::sql::SqlStore` and `history::sql::SqlAttemptLog` on SQLite (`sqlite://path`), compiled in: no server |
//! | `conformance` | no | `store::conformance` and `history::conformance`: the checks every [`Store`] and every attempt log must pass, for your own one's tests |
//! | `redis` | no | `backend::RedisStreamsBackend`: a durable queue on Redis Streams for sidecar [`Worker`]s, and `backend::RedisAttemptLog` |
//!
//! Subscription stores are described in `docs/stores.md`.

pub mod backend;
pub mod dead_letter;
mod dispatch;
mod engine;
pub use engine::{BuildError, DeliveryRuntime, ShutdownReport};
pub mod emit;
pub mod event;
pub mod health;
pub mod history;
pub mod operational;
pub mod retry;
pub mod secret;
pub mod send;
pub mod sign;
mod stats;
pub mod store;
pub mod subscription;
pub mod verify;
mod wire;
pub mod worker;

pub use backend::{Backend, BackendError, BackgroundTaskBackend};
pub use dead_letter::{DeliveryError, DeliveryFailure, FailureHandler, InMemoryDeadLetterQueue, RedeliverError};
pub use emit::{
    Emission, EmitError, Fastapihooks, FastapihooksBuilder, FastapihooksContext, IntoPayload, ResponsePayload,
    Transform, TransformError,
};
pub use event::{Event, EventId, Payload};
pub use retry::{Decision, RetryPolicy};
pub use secret::{Secret, SigningSecret};
pub use send::guard::NetworkPolicy;
pub use send::{AttemptError, InvalidProxy, NotSent, Proxy, StopReason};
pub use sign::{SignatureScheme, SignatureSchemes};
pub use stats::StatsSnapshot;
pub use store::{CachedStore, MemoryStore, Store, StoreError};
pub use subscription::{Auth, StoredWebhookSubscription, SubscriptionUpdate, WebhookSubscription};
#[cfg(feature = "axum")]
pub use verify::VerifiedWebhook;
pub use verify::{Verifier, VerifyError};
pub use worker::{Worker, WorkerBuilder};
