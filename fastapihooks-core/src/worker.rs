//! The sidecar [`Worker`]: consumes events from a queue backend, delivers
//! them to their subscriptions, and acks each one once all its deliveries
//! have a final outcome.
//!
//! The app publishes: its [`Fastapihooks`](crate::Fastapihooks) is built
//! with a queue backend such as `backend::RedisStreamsBackend` (feature
//! `redis`), and then delivers nothing itself. One or more workers
//! deliver. The worker runs
//! the same delivery engine as in-process delivery: the same fan-out,
//! signing, per-endpoint limits, retries and `on_failure`.
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use fastapihooks_core::backend::RedisStreamsBackend;
//! use fastapihooks_core::{MemoryStore, worker::Worker};
//!
//! let worker = Worker::builder()
//!     .backend(RedisStreamsBackend::new("redis://127.0.0.1:6379/0")?)
//!     .store(MemoryStore::new())
//!     .signing_secret(std::env::var("FASTAPIHOOKS_SIGNING_SECRET")?)
//!     .start()?;
//! // Deliver until the signal future completes (Ctrl-C, SIGTERM, ...), then
//! // finish what is in flight, for up to 30 s.
//! let signal = async { /* wait for Ctrl-C or SIGTERM */ };
//! let report = worker.run(signal, Duration::from_secs(30)).await;
//! assert!(report.drained);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::dead_letter::{DeliveryFailure, RedeliverError};
use crate::engine::{BuildError, Durable, Engine, EngineConfig, ShutdownReport};
use crate::history::AttemptLog;
use crate::stats::{Stats, StatsSnapshot};
use crate::store::StoreError;
use crate::subscription::WebhookSubscription;

/// Consumes a backend and delivers its events. Start one with
/// [`Worker::builder`]; stop it with [`Worker::shutdown`] (or run it until a
/// signal with [`Worker::run`]).
///
/// Delivery is at least once: an event is acked only when each of its
/// deliveries was delivered or handed to `on_failure`. Events still in
/// flight when the worker dies, or when its shutdown deadline cuts them
/// short, are not acked, so a durable backend hands them out again (to
/// this worker after a restart, or to another one).
pub struct Worker {
    backend: Arc<dyn Backend>,
    stats: Arc<Stats>,
    engine: Engine,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Worker {
    /// A builder with the defaults of in-process delivery: no store, no
    /// signing secret, public destinations only, threads of its own.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }

    /// A snapshot of the counters (`delivered`, `retried`, `failed`).
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Sends a failure this worker reported again, with a fresh round of
    /// attempts and the same event (id included): a failed delivery to its
    /// subscription, a failure of the whole event to the event's
    /// subscribers now. As [`Fastapihooks::redeliver`](crate::Fastapihooks::redeliver);
    /// nothing is acked, the event was consumed before.
    ///
    /// # Errors
    /// [`RedeliverError`]: after shutdown, when the transform failed, or
    /// when the target URL is not valid. Nothing is queued then.
    pub async fn redeliver(&self, failure: DeliveryFailure) -> Result<(), RedeliverError> {
        self.engine.redeliver(failure).await
    }

    /// Where this worker records its attempts (none when it does not).
    pub fn attempt_log(&self) -> Option<Arc<dyn AttemptLog>> {
        self.engine.attempt_log().cloned()
    }

    /// Enables subscription `id` again, clearing its health streak (see
    /// [`Fastapihooks::enable_subscription`](crate::Fastapihooks::enable_subscription)).
    ///
    /// # Errors
    /// The store failed.
    pub async fn enable_subscription(&self, id: &str) -> Result<bool, StoreError> {
        self.engine.enable(id).await
    }

    /// Disables subscription `id`, for `reason`.
    ///
    /// # Errors
    /// The store failed.
    pub async fn disable_subscription(&self, id: &str, reason: &str) -> Result<bool, StoreError> {
        self.engine.disable(id, reason).await
    }

    /// Stops consuming at once (the backend is closed), then waits, up to
    /// `deadline`, for the events in flight to be delivered or handed to
    /// `on_failure`, and acked. Deliveries still running at the deadline are
    /// reported to `on_failure` as shut down and **not** acked: a durable
    /// backend hands their events out again (with Redis Streams: after the
    /// claim min-idle, so keep the deadline below it). Then the HTTP
    /// connections close.
    ///
    /// A second call waits for the first to finish and returns its report.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let stop_at = tokio::time::Instant::now() + deadline;
        let stop_consuming = async {
            if let Err(e) = self.backend.close().await {
                tracing::warn!(error = %e, "backend close failed");
            }
            true
        };
        self.engine.shutdown(stop_at, stop_consuming).await
    }

    /// Delivers until `signal` completes (say, Ctrl-C or SIGTERM), then
    /// shuts down with `deadline` (see [`Worker::shutdown`]).
    pub async fn run(self, signal: impl Future<Output = ()>, deadline: Duration) -> ShutdownReport {
        signal.await;
        tracing::info!(deadline_ms = deadline.as_millis() as u64, "worker shutting down");
        self.shutdown(deadline).await
    }
}

/// Configures and starts a [`Worker`].
///
/// Its defaults are those of in-process delivery but two: a worker holds
/// at most 10,000 deliveries in memory (`max_pending_deliveries`; past it,
/// it stops reading the stream: back-pressure, not refusals) and as many
/// for one endpoint (`max_endpoint_backlog`; set it lower so that one slow
/// endpoint cannot take all of that room from the others: its overflow then
/// waits in the backend's durable schedule). A long stream or a slow
/// endpoint thus costs Redis memory, not the worker's, and nothing is given
/// up for want of room.
pub struct WorkerBuilder {
    backend: Option<Arc<dyn Backend>>,
    engine: EngineConfig,
}

impl Default for WorkerBuilder {
    fn default() -> Self {
        let mut engine = EngineConfig::default();
        engine.limits.max_pending_deliveries = 10_000;
        engine.limits.max_endpoint_backlog = 10_000;
        Self { backend: None, engine }
    }
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder").field("engine", &self.engine).finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// The backend to consume (required), such as
    /// `backend::RedisStreamsBackend` (feature `redis`). Give the worker a
    /// backend value of its own, not a clone of the app's: closing one
    /// closes its clones.
    #[must_use]
    pub fn backend(mut self, backend: impl Backend) -> Self {
        self.backend = Some(Arc::new(backend));
        self
    }

    /// The backend, already shared.
    #[must_use]
    pub fn backend_arc(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// A static subscriber of the worker: every `event_name` event also
    /// goes to it. (Events also carry the app's own static subscribers;
    /// configure each one in one place only, or it gets each event twice.)
    #[must_use]
    pub fn subscriber(mut self, event_name: impl Into<String>, subscription: WebhookSubscription) -> Self {
        self.engine.subscribers.push((event_name.into(), subscription));
        self
    }

    crate::engine::engine_setters!();

    /// Starts consuming and delivering. Call inside a Tokio runtime.
    ///
    /// # Errors
    /// No backend, no Tokio runtime, an invalid signing secret or static
    /// subscriber, or the HTTP client could not be created.
    pub fn start(mut self) -> Result<Worker, BuildError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        let backend = self.backend.take().ok_or(BuildError::NoBackend)?;
        let statics = self.engine.check()?;
        let stats = Arc::new(Stats::default());
        let failures = self.engine.failures();
        let durable = Durable { schedule: backend.retry_schedule(), failures: backend.failure_store() };
        let (engine, _) = Engine::start(self.engine, &statics, failures, stats.clone(), durable)?;
        engine.consume(backend.consume());
        Ok(Worker { backend, stats, engine })
    }
}
