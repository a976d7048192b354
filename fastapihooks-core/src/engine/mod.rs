//! The delivery engine: what both the app's in-process delivery and a
//! sidecar worker run.
//!
//! An [`Engine`] owns the dispatcher (fan-out, endpoint queues, the HTTP
//! client), the delivery threads, and a shutdown that runs once. Its two
//! handles add what feeds it:
//!
//! ```text
//! Fastapihooks (emit/) ── intake -> pipeline ─┐
//!                                             ├─> Engine: dispatcher + delivery runtime + shutdown
//! Worker (worker.rs) ──── Backend::consume ───┘
//! ```

mod config;
mod runtime;

pub(crate) use config::{EngineConfig, Started, Statics, engine_setters};
pub use runtime::DeliveryRuntime;

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::stream::BoxStream;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::backend::{BackendError, Received};
use crate::dead_letter::{DeliveryFailure, FailureHandler, RedeliverError};
use crate::dispatch::Dispatcher;
pub(crate) use crate::dispatch::Durable;
use crate::history::AttemptLog;
use crate::history::recorder::Writer;
use crate::secret::SecretFormatError;
use crate::stats::Stats;
use crate::store::{Store, StoreError};
use crate::subscription::InvalidSubscription;
use runtime::OwnedRuntime;

/// How long the attempt log's writer may take, at least, to write what is
/// queued at shutdown, even past the shutdown deadline.
const WRITER_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Why the runtime could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `build` (or `Worker`'s `start`) was called outside a Tokio runtime.
    #[error("Fastapihooks::builder().build() and Worker::builder().start() must be called inside a Tokio runtime")]
    NoRuntime,
    /// A [`Worker`](crate::worker::Worker) was started with no backend to consume.
    #[error("a worker needs a backend to consume (WorkerBuilder::backend)")]
    NoBackend,
    /// The HTTP client could not be created: its TLS set-up failed (the
    /// system has no usable CA certificates, or those given to
    /// `tls_root_certificates` are not valid PEM certificates).
    #[error("could not create the HTTP client: {0}")]
    Http(#[source] std::io::Error),
    /// The global signing secret cannot sign.
    #[error("invalid signing secret: {0}")]
    SigningSecret(#[from] SecretFormatError),
    /// The dedicated delivery runtime could not be started.
    #[error("could not start the delivery runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A static subscriber is invalid.
    #[error("invalid static subscriber for `{event}`: {error}")]
    Subscriber {
        /// The event name it was given for.
        event: String,
        /// What is wrong.
        error: InvalidSubscription,
    },
}

/// What a shutdown ([`Fastapihooks::shutdown`](crate::Fastapihooks::shutdown),
/// [`Worker::shutdown`](crate::worker::Worker::shutdown)) achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// True when everything was delivered or dead-lettered before the
    /// deadline; false when work was cut short (and reported to `on_failure`
    /// as shut down).
    pub drained: bool,
}

/// The delivery engine: a dispatcher on its delivery runtime, stopped once.
pub(crate) struct Engine {
    /// Taken (and dropped, closing the HTTP connections) by the shutdown.
    dispatcher: Mutex<Option<Dispatcher>>,
    /// The dedicated delivery threads, if any; stopped after the dispatcher.
    runtime: Mutex<Option<OwnedRuntime>>,
    report: OnceCell<ShutdownReport>,
    /// Where attempts are recorded, for queries.
    attempt_log: Option<Arc<dyn AttemptLog>>,
    /// Writes attempt records; finished after the deliveries.
    writer: Mutex<Option<Writer>>,
    store: Option<Arc<dyn Store>>,
}

impl Engine {
    /// Starts the engine from `config`: the HTTP client, the signer and the
    /// delivery threads. Call inside a Tokio runtime. `durable` is what the
    /// queue backend that feeds it keeps (its retry schedule, its failure
    /// store); without, retries wait in memory. Also returns its
    /// dispatcher, for what feeds it.
    pub(crate) fn start(
        config: EngineConfig,
        statics: &Statics,
        failures: Arc<dyn FailureHandler>,
        stats: Arc<Stats>,
        durable: Durable,
    ) -> Result<(Self, Dispatcher), BuildError> {
        let store = config.store.clone();
        let Started { dispatcher, runtime, attempt_log, writer } = config.start(statics, failures, stats, durable)?;
        let engine = Self {
            dispatcher: Mutex::new(Some(dispatcher.clone())),
            runtime: Mutex::new(runtime),
            report: OnceCell::new(),
            attempt_log,
            writer: Mutex::new(writer),
            store,
        };
        Ok((engine, dispatcher))
    }

    /// The dispatcher, until shutdown has taken it.
    pub(crate) fn dispatcher(&self) -> Option<Dispatcher> {
        self.dispatcher.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs `task` where deliveries run: on the first delivery thread, or
    /// on the current runtime when delivery shares it.
    pub(crate) fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.runtime.lock().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(OwnedRuntime::handle) {
            Some(handle) => handle.spawn(task),
            None => tokio::spawn(task),
        }
    }

    /// Delivers the events of a backend's stream, acking each one when its
    /// deliveries are done (see [`Dispatcher::spawn_consumer`]).
    pub(crate) fn consume(&self, events: BoxStream<'static, Result<Received, BackendError>>) {
        if let Some(dispatcher) = self.dispatcher() {
            let runtime = self.runtime.lock().unwrap_or_else(PoisonError::into_inner);
            dispatcher.spawn_consumer(events, runtime.as_ref().and_then(OwnedRuntime::handle));
        }
    }

    /// The attempt log, if attempts are recorded.
    pub(crate) fn attempt_log(&self) -> Option<&Arc<dyn AttemptLog>> {
        self.attempt_log.as_ref()
    }

    /// Enables subscription `id` again (see `Fastapihooks::enable_subscription`).
    pub(crate) async fn enable(&self, id: &str) -> Result<bool, StoreError> {
        let Some(store) = &self.store else { return Ok(false) };
        let found = store.set_disabled(id, None).await?;
        if let Some(dispatcher) = self.dispatcher() {
            dispatcher.forget_health(id);
        }
        Ok(found)
    }

    /// Disables subscription `id` (see `Fastapihooks::disable_subscription`).
    pub(crate) async fn disable(&self, id: &str, reason: &str) -> Result<bool, StoreError> {
        let Some(store) = &self.store else { return Ok(false) };
        let found = store.set_disabled(id, Some(crate::health::Disabled::now(reason))).await?;
        if found && let Some(dispatcher) = self.dispatcher() {
            dispatcher.mark_disabled(id, reason);
        }
        Ok(found)
    }

    /// Sends a reported failure again (see `Fastapihooks::redeliver`).
    pub(crate) async fn redeliver(&self, failure: DeliveryFailure) -> Result<(), RedeliverError> {
        match self.dispatcher() {
            Some(dispatcher) => dispatcher.redeliver(failure).await,
            None => Err(RedeliverError::ShutDown),
        }
    }

    /// Stops the engine, once: runs `stop_feed` (which stops what feeds the
    /// engine and says whether it finished in time), then waits until
    /// `stop_at` for every delivery to end, cutting the rest short; then
    /// closes the HTTP connections and stops the delivery threads. A second
    /// call waits for the first and returns its report.
    pub(crate) async fn shutdown(&self, stop_at: Instant, stop_feed: impl Future<Output = bool>) -> ShutdownReport {
        *self
            .report
            .get_or_init(|| async {
                let mut drained = stop_feed.await;
                let dispatcher = self.dispatcher.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(dispatcher) = dispatcher {
                    drained &= dispatcher.drain(stop_at).await;
                    // Every task is done: this drops the last reference to
                    // the HTTP client, which closes its pooled connections.
                    drop(dispatcher);
                }
                // Every attempt has ended: its record is written, with a
                // moment's grace past a deadline that cut deliveries short.
                let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(writer) = writer {
                    writer.finish(stop_at.max(Instant::now() + WRITER_GRACE)).await;
                }
                drop(self.runtime.lock().unwrap_or_else(PoisonError::into_inner).take());
                ShutdownReport { drained }
            })
            .await
    }
}
