//! Backends: queues between the app that emits and the workers that deliver.
//!
//! By default [`Fastapihooks`](crate::Fastapihooks) needs none: it delivers
//! in its own process. Given a backend, the app only publishes
//! ([`Backend::publish`], or several events at once with
//! [`Backend::publish_batch`]: the publishing side) and sidecar
//! [`Worker`](crate::worker::Worker)s consume ([`Backend::consume`], the
//! consuming side): each event comes as a [`Received`] that carries its own
//! ack, called once all the event's deliveries have a final outcome; an
//! event never acked is handed out again by a durable backend
//! (`RedisStreamsBackend`, feature `redis`). [`BackgroundTaskBackend`] is an
//! in-memory queue, for a worker in the same process.

mod background;
#[cfg(feature = "redis")]
pub mod redis;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use background::BackgroundTaskBackend;
#[cfg(feature = "redis")]
pub use redis::{RedisAttemptLog, RedisConfigError, RedisSetting, RedisStreamsBackend, RedisStreamsBuilder};

use crate::dead_letter::FailureStore;
use crate::event::Event;
pub use crate::subscription::TargetRef;

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

/// Why [`Backend::publish_batch`] did not publish every event of a batch:
/// the error, and the events it did not publish (the others were
/// published). An event whose fate the backend cannot know (the connection
/// broke before its reply came) counts as not published: publishing it
/// again may duplicate it, which at-least-once delivery allows.
#[derive(Debug, thiserror::Error)]
#[error("{error} ({} of the batch's events not published)", unpublished.len())]
#[non_exhaustive]
pub struct PublishBatchError {
    /// What failed (for the first event that failed, when several did).
    #[source]
    pub error: BackendError,
    /// The events not published, in the batch's order.
    pub unpublished: Vec<Event>,
}

impl PublishBatchError {
    /// A failure of `unpublished`, for `error`.
    pub fn new(error: BackendError, unpublished: Vec<Event>) -> Self {
        Self { error, unpublished }
    }
}

/// How a backend acknowledges one event it handed out: what a
/// [`Received`] carries.
#[async_trait]
pub trait Acknowledge: Send + Sync + 'static {
    /// Marks the event done (every delivery succeeded or was handed to
    /// `on_failure`), so the backend never hands it out again.
    async fn ack(self: Box<Self>) -> Result<(), BackendError>;
}

/// The ack of one received event: a backend's [`Acknowledge`], or none (an
/// event no backend will hand out again).
#[derive(Default)]
pub struct Acker(Option<Box<dyn Acknowledge>>);

impl Acker {
    /// An ack that does nothing.
    pub fn none() -> Self {
        Self(None)
    }

    /// A backend's ack.
    pub fn new(ack: impl Acknowledge) -> Self {
        Self(Some(Box::new(ack)))
    }

    /// True when acking does nothing.
    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// Acknowledges the event.
    ///
    /// # Errors
    /// The backend could not record the ack; it may hand the event out again.
    pub async fn ack(self) -> Result<(), BackendError> {
        match self.0 {
            Some(ack) => ack.ack().await,
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_none() { "Acker(none)" } else { "Acker(..)" })
    }
}

/// An event read from a backend, with its ack: a new event, to fan out to
/// its subscriptions, or one delivery of it that was set aside for later
/// ([`RetrySchedule`]) and is now due.
#[derive(Debug)]
pub struct Received {
    event: Event,
    ack: Acker,
    delivery: Option<Scheduled>,
}

impl Received {
    /// A new event and the way to acknowledge it.
    pub fn new(event: Event, ack: Acker) -> Self {
        Self { event, ack, delivery: None }
    }

    /// A due delivery of `event` and the way to acknowledge it (which also
    /// releases the backend's copy of the event, once its last delivery is
    /// done).
    pub fn due(event: Event, delivery: Scheduled, ack: Acker) -> Self {
        Self { event, ack, delivery: Some(delivery) }
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// For a due delivery: whom it goes to and the attempts made so far.
    pub fn delivery(&self) -> Option<&Scheduled> {
        self.delivery.as_ref()
    }

    /// Acknowledges the event (see [`Acknowledge::ack`]).
    ///
    /// # Errors
    /// The backend could not record the ack.
    pub async fn ack(self) -> Result<(), BackendError> {
        self.ack.ack().await
    }

    /// The event, the due delivery (if it is one) and the ack, apart: the
    /// consumer delivers and acks once the deliveries are done.
    pub fn into_parts(self) -> (Event, Option<Scheduled>, Acker) {
        (self.event, self.delivery, self.ack)
    }
}

/// One delivery's place in the durable retry schedule: whom it goes to and
/// how many attempts were made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Scheduled {
    /// Whom it goes to.
    pub target: TargetRef,
    /// Attempts made so far.
    pub attempts: u32,
}

impl Scheduled {
    /// A delivery to `target` after `attempts` attempts.
    pub fn new(target: TargetRef, attempts: u32) -> Self {
        Self { target, attempts }
    }
}

/// A delivery to set aside until `due`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Deferral {
    /// The event (a backend keeps one copy per event, however many of its
    /// deliveries wait).
    pub event: Arc<Event>,
    /// Whom, and after how many attempts.
    pub delivery: Scheduled,
    /// When the next attempt is due.
    pub due: SystemTime,
}

/// A backend's durable retry schedule: deliveries whose next attempt is due
/// later wait there, not in a worker's memory, and come back through
/// [`Backend::consume`] as [`Received::due`] items once due, to whichever
/// worker is alive.
#[async_trait]
pub trait RetrySchedule: Send + Sync + 'static {
    /// Writes `deferral` to the schedule. Once this returns `Ok`, the
    /// delivery is the schedule's: the item it came from may be acked.
    async fn defer(&self, deferral: Deferral) -> Result<(), BackendError>;
}

/// A transport for events. Dyn-compatible: the runtime holds an
/// `Arc<dyn Backend>`.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Enqueues one event. May wait when the transport is full
    /// (back-pressure), never on the request path: the runtime calls it from
    /// its own task.
    async fn publish(&self, event: Event) -> Result<(), BackendError>;

    /// Enqueues several events, in their order, as one operation where the
    /// transport allows (Redis: one pipelined round trip of `XADD`s). The
    /// app's pipeline publishes what it has queued this way.
    ///
    /// The default publishes them one at a time with
    /// [`publish`](Backend::publish) and stops at the first failure.
    ///
    /// # Errors
    /// Some events were not published: [`PublishBatchError::unpublished`]
    /// says which, so that only they are published again.
    async fn publish_batch(&self, events: Vec<Event>) -> Result<(), PublishBatchError> {
        let mut events = events.into_iter();
        while let Some(event) = events.next() {
            // `publish` takes the event: a copy is kept to hand back on failure.
            if let Err(error) = self.publish(event.clone()).await {
                let mut unpublished = vec![event];
                unpublished.extend(events);
                return Err(PublishBatchError { error, unpublished });
            }
        }
        Ok(())
    }

    /// The events to deliver, each with its ack, for the consumer (a
    /// [`Worker`](crate::worker::Worker)). Called once.
    fn consume(&self) -> BoxStream<'static, Result<Received, BackendError>>;

    /// The backend's durable retry schedule, if it has one (default: none,
    /// and retries wait in the consumer's memory).
    fn retry_schedule(&self) -> Option<Arc<dyn RetrySchedule>> {
        None
    }

    /// Where the consumer records final failures durably, if the backend
    /// keeps them (default: none; they go to `on_failure` only).
    fn failure_store(&self) -> Option<Arc<dyn FailureStore>> {
        None
    }

    /// Stops accepting events; consumers see the end of the stream once what
    /// was published is drained (a durable backend: at once; what it holds
    /// stays there).
    async fn close(&self) -> Result<(), BackendError>;
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::event::Payload;

    /// Takes `room` events, then fails.
    struct Fails {
        room: usize,
        taken: Mutex<Vec<Event>>,
    }

    #[async_trait]
    impl Backend for Fails {
        async fn publish(&self, event: Event) -> Result<(), BackendError> {
            let mut taken = self.taken.lock().unwrap();
            if taken.len() == self.room {
                return Err(BackendError::transport("full"));
            }
            taken.push(event);
            Ok(())
        }

        fn consume(&self) -> BoxStream<'static, Result<Received, BackendError>> {
            Box::pin(futures_util::stream::empty())
        }

        async fn close(&self) -> Result<(), BackendError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_default_batch_stops_at_the_first_failure_and_returns_the_rest() {
        let backend = Fails { room: 2, taken: Mutex::new(Vec::new()) };
        let events: Vec<Event> = (0..5).map(|n| Event::new(format!("e.{n}"), Payload::null())).collect();
        let err = backend.publish_batch(events.clone()).await.unwrap_err();
        assert!(matches!(err.error, BackendError::Transport(_)));
        assert_eq!(err.to_string(), "backend transport error: full (3 of the batch's events not published)");
        let names = |es: &[Event]| es.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&err.unpublished), names(&events[2..]));
        assert_eq!(names(&backend.taken.lock().unwrap()), names(&events[..2]));
        backend.publish_batch(Vec::new()).await.unwrap();
    }
}
