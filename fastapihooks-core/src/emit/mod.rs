//! Emission, the request side: the [`Fastapihooks`] handle, its builder,
//! and the intake pipeline.
//!
//! `emit` only puts an [`Emission`] on a bounded queue (a `try_send`: no
//! await, no I/O). One pipeline task drains the queue: it builds the
//! context, runs the transform, makes the [`Event`] and hands it on: to the
//! delivery engine in this process (the default), or to a queue backend
//! that workers consume.

#[cfg(feature = "axum")]
pub mod axum;
mod buffer;
mod context;
mod spool;
mod transform;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::event::TransformError;
pub use buffer::JsonBuf;
pub use context::FastapihooksContext;
pub use transform::{IntoPayload, Transform};

use crate::backend::{Acker, Backend};
use crate::dead_letter::{DeliveryError, DeliveryFailure, FailureHandler, RedeliverError};
use crate::dispatch::Dispatcher;
use crate::engine::{BuildError, Durable, Engine, EngineConfig, ShutdownReport};
use crate::event::{Event, EventId, Payload};
use crate::history::AttemptLog;
use crate::stats::{Stats, StatsSnapshot};
use crate::store::{Store, StoreError};
use crate::subscription::WebhookSubscription;

/// The handler's response, as the hook captured it.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum ResponsePayload {
    /// No response payload (`include_response = false`, or no JSON body).
    #[default]
    None,
    /// The JSON bytes of the response body, sent as they are when there is
    /// no transform (parsed only for a transform).
    Json(Bytes),
    /// A JSON value.
    Value(Value),
    /// JSON bytes in a buffer fastapihooks recycles: what `#[hook]`
    /// captures of a `Json<T>` response (see [`JsonBuf`]).
    Buf(JsonBuf),
}

/// One emission: the raw material of an event, before the transform.
///
/// Build one with [`Emission::new`] and hand it to [`Fastapihooks::emit`].
/// `#[hook]` builds it for you.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Emission {
    /// The event name (borrowed when it is a literal: no allocation on the
    /// request path).
    pub event_name: Cow<'static, str>,
    /// The owner resolved for this request; `None` falls back to the hooks'
    /// default owner.
    pub owner_id: Option<String>,
    /// When it happened (defaults to now).
    pub timestamp: DateTime<Utc>,
    /// Request headers, if included.
    pub headers: Option<HeaderMap>,
    /// Request body bytes, if included.
    pub request_payload: Option<Bytes>,
    /// The response payload.
    pub response: ResponsePayload,
    /// The transform, if any.
    pub transform: Option<Transform>,
    /// Headers `#[hook]` captured, in a recycled buffer (see [`JsonBuf`]).
    pub(crate) pooled_headers: Option<buffer::PooledBuf>,
    /// The request body `#[hook]` captured, in a recycled buffer.
    pub(crate) pooled_request: Option<buffer::PooledBuf>,
}

impl Emission {
    /// An emission of `event_name`, timestamped now, with nothing else.
    pub fn new(event_name: impl Into<Cow<'static, str>>) -> Self {
        Self {
            event_name: event_name.into(),
            owner_id: None,
            timestamp: Utc::now(),
            headers: None,
            request_payload: None,
            response: ResponsePayload::None,
            transform: None,
            pooled_headers: None,
            pooled_request: None,
        }
    }

    /// Sets the response payload to a JSON value.
    #[must_use]
    pub fn response_value(mut self, value: Value) -> Self {
        self.response = ResponsePayload::Value(value);
        self
    }

    /// Sets the response payload to JSON bytes.
    #[must_use]
    pub fn response_json(mut self, json: Bytes) -> Self {
        self.response = ResponsePayload::Json(json);
        self
    }

    /// Sets the owner.
    #[must_use]
    pub fn owner(mut self, owner_id: Option<String>) -> Self {
        self.owner_id = owner_id;
        self
    }

    /// Sets the timestamp.
    #[must_use]
    pub fn timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// Sets the request headers.
    #[must_use]
    pub fn headers(mut self, headers: HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// Sets the request body bytes.
    #[must_use]
    pub fn request(mut self, body: Bytes) -> Self {
        self.request_payload = Some(body);
        self
    }

    /// Sets the transform.
    #[must_use]
    pub fn transform(mut self, transform: Transform) -> Self {
        self.transform = Some(transform);
        self
    }
}

/// Why `emit` did not accept an event. The event was handed to `on_failure`
/// either way: it is reported, never silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The intake queue is full.
    #[error("intake queue full (capacity {0}); the event went to on_failure")]
    QueueFull(usize),
    /// The runtime is shutting down.
    #[error("fastapihooks is shut down; the event went to on_failure")]
    ShutDown,
    /// The payload given to [`Fastapihooks::send`] is not serializable as JSON.
    #[error("{error}; the event went to on_failure")]
    Payload {
        /// The id the event was given.
        event_id: EventId,
        /// Why it could not be serialized.
        error: TransformError,
    },
}

/// How often the pipeline looks at the intake queue while emissions keep
/// coming (see `Pipeline::run`).
const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Empty polls before the pipeline sleeps until an emission wakes it.
const LINGER_POLLS: u32 = 20;

struct Queued {
    /// Made by `emit` (which returns it), or by the pipeline for `enqueue`.
    id: Option<EventId>,
    emission: Emission,
}

/// The fastapihooks runtime: emit events, deliver them.
///
/// Cheap to clone (an `Arc`), `Send + Sync`. Build it with
/// [`Fastapihooks::builder`] inside a Tokio runtime; put it in your axum
/// state; call [`Fastapihooks::shutdown`] when the app stops.
#[derive(Clone)]
pub struct Fastapihooks {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Queued>,
    capacity: usize,
    pipeline: Arc<Pipeline>,
    stats: Arc<Stats>,
    intake_closed: CancellationToken,
    /// Set with `intake_closed`, for the request path: checking the token
    /// takes a lock every request thread would share.
    closed: AtomicBool,
    cancel: CancellationToken,
    pipeline_task: Mutex<Option<JoinHandle<()>>>,
    delivery: Delivery,
    /// The subscription store, for enabling and disabling.
    store: Option<Arc<dyn Store>>,
}

/// Where this app's events are delivered.
enum Delivery {
    /// Here, by the engine the pipeline feeds.
    InProcess(Engine),
    /// By workers, from this queue backend. The report of the shutdown
    /// (the pipeline's: there is no engine to drain).
    Queue(Arc<dyn Backend>, tokio::sync::OnceCell<ShutdownReport>),
}

/// What the handle knows of an event's possible subscribers.
enum Audience {
    /// Delivered here: the engine has the static subscribers, and the
    /// store's hint says whether anyone may be subscribed.
    Local { statics: HashSet<String>, store: Option<Arc<dyn Store>> },
    /// Published to a queue: the worker's store decides, so anyone may be;
    /// each event carries the app's static subscribers to the worker.
    Queue { statics: HashMap<String, Arc<[WebhookSubscription]>> },
}

/// Where the pipeline hands each event.
enum Outlet {
    /// The engine's dispatcher (in-process delivery).
    Engine(Dispatcher),
    /// A queue backend, through the publish spool.
    Queue(Arc<dyn Backend>),
}

/// What the pipeline task needs: everything to turn an emission into a
/// published event, or a reported failure.
struct Pipeline {
    audience: Audience,
    default_owner: Option<String>,
    failures: Arc<dyn FailureHandler>,
    stats: Arc<Stats>,
}

impl Pipeline {
    /// Context -> transform -> event. A failed transform is reported here.
    fn event(&self, q: Queued) -> Result<Event, ()> {
        let Queued { id, emission: e } = q;
        let id = id.unwrap_or_default();
        let owner_id = e.owner_id.or_else(|| self.default_owner.clone());
        // In-process, the dispatcher has the static subscribers itself; an
        // event published to a queue carries them to the worker.
        let subscribers = match &self.audience {
            Audience::Queue { statics } => statics.get(&*e.event_name).map_or_else(Vec::new, |subs| subs.to_vec()),
            Audience::Local { .. } => Vec::new(),
        };
        let payload = match e.transform {
            None => match e.response {
                ResponsePayload::None => Ok(Payload::null()),
                ResponsePayload::Json(bytes) => {
                    Payload::from_json_bytes(bytes).map_err(|err| TransformError::Serialize(err.to_string()))
                }
                ResponsePayload::Value(v) => v.into_payload(),
                // Made by serde_json: valid JSON, not parsed again.
                ResponsePayload::Buf(buf) if buf.is_serialized() => {
                    Ok(Payload::from_trusted(Bytes::copy_from_slice(buf.as_bytes())))
                }
                ResponsePayload::Buf(buf) => Payload::from_json_bytes(Bytes::copy_from_slice(buf.as_bytes()))
                    .map_err(|err| TransformError::Serialize(err.to_string())),
            },
            Some(transform) => {
                let response_payload = match e.response {
                    ResponsePayload::None => Value::Null,
                    ResponsePayload::Json(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    ResponsePayload::Value(v) => v,
                    ResponsePayload::Buf(buf) => serde_json::from_slice(buf.as_bytes()).unwrap_or(Value::Null),
                };
                let ctx = FastapihooksContext {
                    event_name: e.event_name.clone().into_owned(),
                    owner_id: owner_id.clone(),
                    timestamp: e.timestamp,
                    headers: e.pooled_headers.map(|h| h.to_header_map()).or(e.headers),
                    request_payload: e
                        .pooled_request
                        .map(|b| Bytes::copy_from_slice(b.as_bytes()))
                        .or(e.request_payload),
                    response_payload,
                };
                transform.apply(&ctx)
            }
        };
        let event = Event::new(e.event_name.into_owned(), Payload::null())
            .with_id(id)
            .with_owner(owner_id)
            .with_timestamp(e.timestamp)
            .with_subscribers(subscribers);
        match payload {
            Ok(payload) => Ok(Event { payload, ..event }),
            Err(error) => {
                Stats::inc(&self.stats.transform_failed);
                tracing::error!(event_id = %event.id, event = %event.name, error = %error, "transform failed");
                self.fail(DeliveryFailure::of_event(Arc::new(event), error.into()));
                Err(())
            }
        }
    }

    fn fail(&self, failure: DeliveryFailure) {
        Stats::inc(&self.stats.failed);
        crate::dead_letter::report(&*self.failures, failure);
    }

    /// Reports an emission that will not be published.
    fn reject(&self, q: Queued, error: DeliveryError) {
        if let Ok(event) = self.event(q) {
            self.fail(DeliveryFailure::of_event(Arc::new(event), error));
        }
    }

    /// Transforms one emission and hands the event to the engine's
    /// dispatcher; a failure is reported. `Err` when `cancel` fired (or the
    /// engine was cancelled). (With a queue backend, `spool::Publisher`
    /// publishes instead.)
    async fn publish(&self, dispatcher: &Dispatcher, q: Queued, cancel: &CancellationToken) -> Result<(), ()> {
        let Ok(event) = self.event(q) else { return Ok(()) };
        // The reservation first: it is usually free at once, and the
        // token, never polled then, costs no lock.
        let fan_out = tokio::select! {
            biased;
            fan_out = dispatcher.reserve() => fan_out,
            () = cancel.cancelled() => None,
        };
        if let Some(fan_out) = fan_out {
            Stats::inc(&self.stats.published);
            fan_out.start(Arc::new(event), Acker::none());
            return Ok(());
        }
        let error = DeliveryError::Shutdown { last: None };
        tracing::error!(event_id = %event.id, error = %error, "could not publish event");
        self.fail(DeliveryFailure::of_event(Arc::new(event), error));
        Err(())
    }

    /// Turns queued emissions into published events until the intake closes
    /// and is drained, or `cancel` fires.
    ///
    /// The task is woken by an emission only when it has been idle for a
    /// while: as long as emissions keep coming it polls the queue every
    /// [`POLL_INTERVAL`] instead. Waking a parked thread costs the emitting
    /// request a system call (a few microseconds); a poll costs the request
    /// nothing, and delays delivery by at most a millisecond or two.
    async fn run(
        self: Arc<Self>,
        dispatcher: Dispatcher,
        mut rx: mpsc::Receiver<Queued>,
        intake_closed: CancellationToken,
        cancel: CancellationToken,
    ) {
        let mut closing = false;
        // Polls since the queue last had work; past `LINGER_POLLS`, sleep until woken.
        let mut idle_polls = LINGER_POLLS;
        'run: loop {
            loop {
                // Shutdown closes intake at once, even while emissions keep coming.
                if !closing && intake_closed.is_cancelled() {
                    closing = true;
                    rx.close();
                }
                match rx.try_recv() {
                    Ok(q) => {
                        idle_polls = 0;
                        if self.publish(&dispatcher, q, &cancel).await.is_err() {
                            break 'run;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => break 'run,
                }
            }
            if idle_polls < LINGER_POLLS {
                idle_polls += 1;
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    () = intake_closed.cancelled(), if !closing => {
                        closing = true;
                        rx.close();
                    }
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                }
                continue;
            }
            let q = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = intake_closed.cancelled(), if !closing => {
                    closing = true;
                    rx.close();
                    continue;
                }
                q = rx.recv() => match q { Some(q) => q, None => break },
            };
            idle_polls = 0;
            if self.publish(&dispatcher, q, &cancel).await.is_err() {
                break;
            }
        }
        // Cut short by the deadline: report what is still queued.
        rx.close();
        while let Ok(q) = rx.try_recv() {
            self.reject(q, DeliveryError::Shutdown { last: None });
        }
    }
}

impl fmt::Debug for Fastapihooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fastapihooks")
            .field("capacity", &self.inner.capacity)
            .field("default_owner", &self.inner.pipeline.default_owner)
            .field("in_process", &matches!(self.inner.delivery, Delivery::InProcess(_)))
            .finish_non_exhaustive()
    }
}

impl Fastapihooks {
    /// A builder with the defaults: in-process delivery, no store, no
    /// signing secret, public destinations only.
    pub fn builder() -> FastapihooksBuilder {
        FastapihooksBuilder::default()
    }

    /// Queues an emission for delivery and returns its event id at once.
    ///
    /// Never awaits and does no I/O: the transform, the subscription lookup
    /// and the HTTP requests happen on the runtime's tasks.
    ///
    /// # Errors
    /// The queue is full, or the runtime is shut down. The event was handed
    /// to `on_failure` (and counted) before this returns.
    pub fn emit(&self, emission: Emission) -> Result<EventId, EmitError> {
        let id = EventId::new();
        self.queue(Queued { id: Some(id.clone()), emission }).map(|()| id)
    }

    /// Like [`Fastapihooks::emit`], for callers that do not need the event
    /// id: the id is made off the request path, by the pipeline. This is
    /// what `#[hook]` calls.
    ///
    /// # Errors
    /// As [`Fastapihooks::emit`].
    pub fn enqueue(&self, emission: Emission) -> Result<(), EmitError> {
        self.queue(Queued { id: None, emission })
    }

    /// [`Fastapihooks::enqueue`] for `#[hook]`, which asked
    /// [`Fastapihooks::is_subscribed`] before capturing anything: not asked
    /// twice.
    #[cfg(feature = "axum")]
    pub(crate) fn enqueue_subscribed(&self, emission: Emission) -> Result<(), EmitError> {
        self.push(Queued { id: None, emission })
    }

    /// True when an event of `event_name` may have a subscriber: always
    /// with a queue backend (the worker's store decides); in-process, when a
    /// static subscriber or the store (by its
    /// [`has_subscriptions_hint`](Store::has_subscriptions_hint)) may have
    /// one. Cheap and without I/O: `#[hook]` asks it first and skips all its
    /// work for events nobody can receive.
    pub fn is_subscribed(&self, event_name: &str) -> bool {
        match &self.inner.pipeline.audience {
            Audience::Queue { .. } => true,
            Audience::Local { statics, store } => {
                statics.contains(event_name)
                    || store.as_ref().is_some_and(|s| s.has_subscriptions_hint(event_name) != Some(false))
            }
        }
    }

    fn queue(&self, queued: Queued) -> Result<(), EmitError> {
        // After shutdown every event is refused (and reported), subscribed or not.
        if !self.inner.closed.load(Ordering::Acquire) && !self.is_subscribed(&queued.emission.event_name) {
            Stats::inc(&self.inner.stats.unsubscribed);
            return Ok(());
        }
        self.push(queued)
    }

    fn push(&self, queued: Queued) -> Result<(), EmitError> {
        match self.inner.tx.try_send(queued) {
            Ok(()) => {
                Stats::inc(&self.inner.stats.emitted);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(q)) => {
                Stats::inc(&self.inner.stats.queue_full);
                let capacity = self.inner.capacity;
                // Reported once, through on_failure (which logs it when no handler is set).
                tracing::debug!(event = %q.emission.event_name, capacity, "intake queue full");
                self.inner.pipeline.reject(q, DeliveryError::QueueFull { capacity });
                Err(EmitError::QueueFull(capacity))
            }
            Err(mpsc::error::TrySendError::Closed(q)) => {
                self.inner.pipeline.reject(q, DeliveryError::Shutdown { last: None });
                Err(EmitError::ShutDown)
            }
        }
    }

    /// Emits `payload` (any `Serialize` value) as the event's body.
    ///
    /// # Errors
    /// As [`Fastapihooks::emit`]; and [`EmitError::Payload`] when the value
    /// cannot be serialized as JSON (reported to `on_failure` too).
    pub fn send(
        &self,
        event_name: impl Into<Cow<'static, str>>,
        payload: &impl serde::Serialize,
    ) -> Result<EventId, EmitError> {
        let event_name = event_name.into();
        match serde_json::to_vec(payload) {
            Ok(json) => self.emit(Emission::new(event_name).response_json(Bytes::from(json))),
            Err(e) => {
                // Reported like a failed transform: the event is not sent.
                let event = Event::new(event_name.into_owned(), Payload::null());
                let id = event.id.clone();
                let error = TransformError::Serialize(e.to_string());
                Stats::inc(&self.inner.stats.transform_failed);
                self.inner.pipeline.fail(DeliveryFailure::of_event(Arc::new(event), error.clone().into()));
                Err(EmitError::Payload { event_id: id, error })
            }
        }
    }

    /// Counts an event skipped because nobody is subscribed (for `#[hook]`,
    /// which checks [`Fastapihooks::is_subscribed`] before capturing).
    #[cfg(feature = "axum")]
    pub(crate) fn count_unsubscribed(&self) {
        Stats::inc(&self.inner.stats.unsubscribed);
    }

    /// The global default owner.
    pub fn default_owner(&self) -> Option<&str> {
        self.inner.pipeline.default_owner.as_deref()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Sends a reported failure again (one given to `on_failure`, say from
    /// an [`InMemoryDeadLetterQueue`](crate::InMemoryDeadLetterQueue)), with
    /// a fresh round of attempts. The event is the same, id included, so a
    /// receiver that got it after all can tell:
    ///
    /// - a failed delivery goes to its subscription again, and to no other;
    /// - a failure of the whole event (intake queue full, store down, shut
    ///   down before fan-out) is fanned out again, to the subscribers the
    ///   event has now;
    /// - with a queue backend, an event whose publish failed is published
    ///   again (the worker delivers it).
    ///
    /// Returns once the failure is queued again; its outcome is reported as
    /// any delivery's is, to `on_failure` if it fails again.
    ///
    /// ```no_run
    /// # use fastapihooks_core::{Fastapihooks, InMemoryDeadLetterQueue};
    /// # async fn f(hooks: Fastapihooks, dlq: InMemoryDeadLetterQueue) {
    /// // The endpoint is back: send everything that failed again.
    /// for failure in dlq.drain() {
    ///     if let Err(e) = hooks.redeliver(failure.clone()).await {
    ///         eprintln!("not redelivered: {e}");
    ///         dlq.push(failure);
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`RedeliverError`]: after shutdown; when the transform failed (there
    /// is no payload); when a queue backend's worker made the delivery; when
    /// the target URL is not valid; when publishing again fails. Nothing is
    /// queued then.
    pub async fn redeliver(&self, failure: DeliveryFailure) -> Result<(), RedeliverError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(RedeliverError::ShutDown);
        }
        let backend = match &self.inner.delivery {
            Delivery::InProcess(engine) => return engine.redeliver(failure).await,
            Delivery::Queue(backend, _) => backend,
        };
        // A queue backend: this app publishes, a worker delivers.
        if failure.subscription.is_some() {
            return Err(RedeliverError::NotDeliveredHere);
        }
        failure.check_redeliverable()?;
        backend.publish((*failure.event).clone()).await.map_err(|e| RedeliverError::Backend(e.to_string()))?;
        Stats::inc(&self.inner.stats.redelivered);
        Stats::inc(&self.inner.stats.published);
        Ok(())
    }

    /// The attempt log of in-process delivery (none when attempts are not
    /// recorded, or a queue backend's workers deliver: query the log they
    /// share instead). See [`crate::history`].
    ///
    /// ```
    /// # use fastapihooks_core::{Fastapihooks, history::AttemptQuery};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let hooks = Fastapihooks::builder().build()?;
    /// let log = hooks.attempt_log().expect("recorded in memory by default");
    /// let page = log.query(&AttemptQuery::new().subscription("sub_1").limit(20)).await?;
    /// assert!(page.records.is_empty());
    /// # hooks.shutdown(std::time::Duration::from_millis(10)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn attempt_log(&self) -> Option<Arc<dyn AttemptLog>> {
        match &self.inner.delivery {
            Delivery::InProcess(engine) => engine.attempt_log().cloned(),
            Delivery::Queue(..) => None,
        }
    }

    /// Enables subscription `id` again after it was disabled (by the
    /// [`DisablePolicy`](crate::health::DisablePolicy), the receiver or an
    /// operator), clearing its health streak; `false` when the store has no
    /// such subscription (or there is no store). Its given-up deliveries
    /// are not sent again by this: see `recover`.
    ///
    /// # Errors
    /// The store failed.
    pub async fn enable_subscription(&self, id: &str) -> Result<bool, StoreError> {
        match &self.inner.delivery {
            Delivery::InProcess(engine) => engine.enable(id).await,
            Delivery::Queue(..) => match &self.inner.store {
                Some(store) => store.set_disabled(id, None).await,
                None => Ok(false),
            },
        }
    }

    /// Disables subscription `id`, for `reason`: its events are skipped,
    /// its waiting retries given up. `false` when there is no such
    /// subscription (or no store).
    ///
    /// # Errors
    /// The store failed.
    pub async fn disable_subscription(&self, id: &str, reason: &str) -> Result<bool, StoreError> {
        match (&self.inner.delivery, &self.inner.store) {
            (Delivery::InProcess(engine), _) => engine.disable(id, reason).await,
            (Delivery::Queue(..), Some(store)) => {
                store.set_disabled(id, Some(crate::health::Disabled::now(reason))).await
            }
            (Delivery::Queue(..), None) => Ok(false),
        }
    }

    /// Stops intake and waits, up to `deadline`, until every queued event
    /// and every pending delivery (retries included) is delivered or handed
    /// to `on_failure`; with a queue backend, until every queued or spooled
    /// event is published (the spool is published again while the backend
    /// fails, see [`FastapihooksBuilder::publish_spool`]). Whatever is still
    /// pending at the deadline is handed to `on_failure` as shut down. Then
    /// the HTTP connections close.
    ///
    /// After shutdown `emit` refuses new events (reporting them). A second
    /// call waits for the first to finish and returns the same report.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let stop_at = tokio::time::Instant::now() + deadline;
        match &self.inner.delivery {
            Delivery::InProcess(engine) => engine.shutdown(stop_at, self.stop_intake(stop_at)).await,
            Delivery::Queue(_, report) => {
                *report.get_or_init(|| async { ShutdownReport { drained: self.stop_intake(stop_at).await } }).await
            }
        }
    }

    /// Closes intake and waits, until `stop_at`, for the pipeline to hand
    /// on what is queued; past it, the rest is reported as shut down. True
    /// when it finished in time.
    async fn stop_intake(&self, stop_at: tokio::time::Instant) -> bool {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        inner.intake_closed.cancel();
        let task = inner.pipeline_task.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let Some(mut task) = task else { return true };
        if tokio::time::timeout_at(stop_at, &mut task).await.is_ok() {
            return true;
        }
        inner.cancel.cancel();
        let _ = task.await;
        false
    }
}

/// Configures and starts a [`Fastapihooks`] runtime.
pub struct FastapihooksBuilder {
    backend: Option<Arc<dyn Backend>>,
    default_owner: Option<String>,
    queue_capacity: usize,
    spool: spool::SpoolConfig,
    engine: EngineConfig,
}

impl Default for FastapihooksBuilder {
    fn default() -> Self {
        Self {
            backend: None,
            default_owner: None,
            queue_capacity: 16_384,
            spool: spool::SpoolConfig::default(),
            engine: EngineConfig::default(),
        }
    }
}

impl fmt::Debug for FastapihooksBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.engine;
        f.debug_struct("FastapihooksBuilder")
            .field("default_owner", &self.default_owner)
            .field("subscribers", &e.subscribers)
            .field("signing_secret", &e.signing_secret)
            .field("signature_schemes", &e.signature_schemes)
            .field("retry", &e.retry)
            .field("network", &e.network)
            .field("timeout", &e.timeout)
            .field("queue_capacity", &self.queue_capacity)
            .field("publish_spool", &self.spool.capacity)
            .field("publish_give_up", &self.spool.give_up)
            .finish_non_exhaustive()
    }
}

impl FastapihooksBuilder {
    /// A queue backend to publish to, such as `backend::RedisStreamsBackend`
    /// (feature `redis`): the app then delivers nothing itself, sidecar
    /// [`Worker`](crate::worker::Worker)s consume the backend and deliver.
    /// Default: none, delivery in this process.
    #[must_use]
    pub fn backend(mut self, backend: impl Backend) -> Self {
        self.backend = Some(Arc::new(backend));
        self
    }

    /// A queue backend, already shared (see [`FastapihooksBuilder::backend`]).
    #[must_use]
    pub fn backend_arc(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The owner of events whose hook resolves none.
    #[must_use]
    pub fn default_owner(mut self, owner_id: impl Into<String>) -> Self {
        self.default_owner = Some(owner_id.into());
        self
    }

    /// A static subscriber: every `event_name` event also goes to it.
    #[must_use]
    pub fn subscriber(mut self, event_name: impl Into<String>, subscription: WebhookSubscription) -> Self {
        self.engine.subscribers.push((event_name.into(), subscription));
        self
    }

    crate::engine::engine_setters!();

    /// Capacity of the intake queue (default 16,384). When it is full,
    /// `emit` hands the event to `on_failure` and returns at once.
    #[must_use]
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// With a queue backend: how many events may wait in memory, in the
    /// publish spool, while the backend fails (default 16,384). Such events
    /// are published again with a backoff (50 ms, doubling up to 2 s, with
    /// jitter) until the backend takes them; past the spool's capacity an
    /// event goes to `on_failure` at once as
    /// [`DeliveryError::SpoolFull`], and one that waited longer than
    /// [`publish_give_up`](Self::publish_give_up) as
    /// [`DeliveryError::Backend`]. 0 turns the spool off: a failed publish
    /// goes to `on_failure` at once. Without a backend there is no spool.
    ///
    /// The spool is in memory: events in it are lost if the process dies,
    /// and reported as shut down by [`Fastapihooks::shutdown`] if they are
    /// still there at its deadline. `stats().spooled` says how many wait.
    #[must_use]
    pub fn publish_spool(mut self, n: usize) -> Self {
        self.spool.capacity = n;
        self
    }

    /// With a queue backend: how long an event may wait in the publish
    /// spool before it is given up and handed to `on_failure` (default 60
    /// s, counted from its first failed publish). See
    /// [`publish_spool`](Self::publish_spool).
    #[must_use]
    pub fn publish_give_up(mut self, after: Duration) -> Self {
        self.spool.give_up = after;
        self
    }

    /// Starts the runtime's tasks. Call inside a Tokio runtime.
    ///
    /// # Errors
    /// No Tokio runtime, an invalid signing secret or static subscriber, or
    /// the HTTP client could not be created.
    pub fn build(mut self) -> Result<Fastapihooks, BuildError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        let statics = self.engine.check()?;
        let stats = Arc::new(Stats::default());
        let failures = self.engine.failures();
        let store = self.engine.store.clone();
        // With a queue backend the app only publishes: a worker delivers.
        let (audience, delivery, outlet) = match self.backend {
            None => {
                let store = self.engine.store.clone();
                let (engine, dispatcher) =
                    Engine::start(self.engine, &statics, failures.clone(), stats.clone(), Durable::default())?;
                let statics = statics.into_keys().collect();
                (Audience::Local { statics, store }, Delivery::InProcess(engine), Outlet::Engine(dispatcher))
            }
            Some(backend) => {
                let statics = statics.into_iter().map(|(k, v)| (k, Arc::from(v))).collect();
                let delivery = Delivery::Queue(backend.clone(), tokio::sync::OnceCell::new());
                (Audience::Queue { statics }, delivery, Outlet::Queue(backend))
            }
        };
        let pipeline =
            Arc::new(Pipeline { audience, default_owner: self.default_owner, failures, stats: stats.clone() });
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let intake_closed = CancellationToken::new();
        let cancel = CancellationToken::new();
        let task = match outlet {
            Outlet::Engine(dispatcher) => {
                let run = pipeline.clone().run(dispatcher, rx, intake_closed.clone(), cancel.clone());
                // In-process, the pipeline runs where deliveries do: the
                // transform, and the fan-out it starts, stay off the app's threads.
                match &delivery {
                    Delivery::InProcess(engine) => engine.spawn(run),
                    Delivery::Queue(..) => tokio::spawn(run),
                }
            }
            Outlet::Queue(backend) => {
                let publisher = spool::Publisher::new(pipeline.clone(), backend, self.spool);
                tokio::spawn(publisher.run(rx, intake_closed.clone(), cancel.clone()))
            }
        };
        Ok(Fastapihooks {
            inner: Arc::new(Inner {
                tx,
                capacity: self.queue_capacity,
                pipeline,
                stats,
                intake_closed,
                closed: AtomicBool::new(false),
                cancel,
                pipeline_task: Mutex::new(Some(task)),
                delivery,
                store,
            }),
        })
    }
}
