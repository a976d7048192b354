//! Backends: the transport between emission and delivery.
//!
//! [`Fastapihooks::emit`](crate::Fastapihooks::emit) hands each event to a
//! backend with [`Backend::publish`]. A consumer reads them back with
//! [`Backend::consume`], delivers them, and [`Backend::ack`]s each one once
//! all its deliveries have a final outcome. With the in-process
//! [`BackgroundTaskBackend`] the consumer runs inside the app; with a queue
//! backend (`RedisStreamsBackend`, feature `redis`) it runs in a sidecar
//! [`Worker`](crate::worker::Worker).

mod background;
#[cfg(feature = "redis")]
pub mod redis;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

pub use background::BackgroundTaskBackend;
#[cfg(feature = "redis")]
pub use redis::{RedisConfigError, RedisStreamsBackend, RedisStreamsBuilder};

use crate::event::Event;

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend was closed; nothing more can be published.
    #[error("backend is closed")]
    Closed,
    /// `consume` can be called once per backend, and was already called.
    #[error("this backend's events are already being consumed")]
    AlreadyConsumed,
    /// The backend does not support this operation.
    #[error("operation not supported by this backend: {0}")]
    Unsupported(&'static str),
    /// The transport failed (a broker down, a network error). Retryable.
    #[error("backend transport error: {0}")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A message could not be encoded or decoded. From `consume`: the
    /// entry was set aside (dead-lettered) and acked; the stream goes on.
    #[error("backend could not encode or decode an event: {0}")]
    Codec(String),
    /// From `consume`: the backend set an event aside instead of handing it
    /// out again (it was handed out too many times without an ack: a poison
    /// message). The consumer reports it to `on_failure`; the stream goes on.
    #[error("backend dead-lettered event {}: {reason}", event.id)]
    DeadLettered {
        /// The event.
        event: Box<Event>,
        /// Why it was set aside.
        reason: String,
    },
}

impl BackendError {
    /// Wraps a transport error.
    pub fn transport(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Transport(err.into())
    }
}

/// An opaque token a consumer gives back to [`Backend::ack`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Receipt(String);

impl Receipt {
    /// Wraps a backend-specific token (a stream entry id, a delivery tag).
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An event read from a backend, with the receipt to acknowledge it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Received {
    /// The event.
    pub event: Event,
    /// Give it back to [`Backend::ack`] when the event is done.
    pub receipt: Receipt,
}

impl Received {
    /// Pairs an event with its receipt.
    pub fn new(event: Event, receipt: Receipt) -> Self {
        Self { event, receipt }
    }
}

/// A transport for events. Dyn-compatible: the runtime holds an
/// `Arc<dyn Backend>`.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Enqueues one event. May wait when the transport is full
    /// (back-pressure), never on the request path: the runtime calls it from
    /// its own task.
    async fn publish(&self, event: Event) -> Result<(), BackendError>;

    /// The events to deliver, for the consumer. Called once.
    fn consume(&self) -> BoxStream<'static, Result<Received, BackendError>>;

    /// Marks an event done: every delivery succeeded or was handed to
    /// `on_failure`. Events never acked are redelivered by durable backends.
    async fn ack(&self, receipt: &Receipt) -> Result<(), BackendError>;

    /// Stops accepting events; consumers see the end of the stream once what
    /// was published is drained.
    async fn close(&self) -> Result<(), BackendError>;

    /// True when the app itself must run the consumer (no sidecar worker).
    /// Such a backend loses its events with the process anyway, so the
    /// consumer does not call [`Backend::ack`] for it.
    fn delivers_in_process(&self) -> bool {
        false
    }
}
