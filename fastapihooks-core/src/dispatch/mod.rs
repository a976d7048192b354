//! Dispatch: from an event to deliveries.
//!
//! ```text
//! pipeline (in-process) ┐
//! Backend::consume ─────┴> reserve a fan-out ─> fan_out(event): static subscribers + Store::shared_subscriptions_for
//!                                                 └─> one Job per subscription ─> endpoint queue (endpoint.rs)
//! endpoint queue ─> worker (≤ per-endpoint limit) ─> global permit ─> send ─> done | retry | dead-letter
//! ```
//! Every job's final outcome counts down its event; the last one acks it,
//! with the [`Acker`] the event came with.

mod endpoint;

use std::collections::HashMap;
use std::future::Future as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{Acker, BackendError, Received, RetrySchedule, Scheduled, TargetRef};
use crate::dead_letter::{DeliveryError, DeliveryFailure, FailureHandler, FailureStore, RedeliverError};
use crate::event::Event;
use crate::health::{DisablePolicy, Tracker};
use crate::history::recorder::Recorder;
use crate::operational::{OperationalEvent, OperationalHandler};
use crate::retry::{Backoff, RetryPolicy};
use crate::send::Sender;
use crate::stats::Stats;
use crate::store::Store;
use crate::subscription::{StoredWebhookSubscription, WebhookSubscription};
use endpoint::Endpoints;

/// The wait between failed reads of the backend: from, up to.
const CONSUME_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(6));
/// Once the wait between failed reads stops growing, how often a failure
/// is logged at warn level (the others at debug): a backend down for hours
/// is not a line every few seconds.
const CONSUME_WARN_EVERY: Duration = Duration::from_secs(60);
/// The wait between failed store look-ups of one event: from, up to.
const STORE_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// Store look-ups of one event retried before the event fails (about 9 s
/// of waiting in all: a fail-over, not an outage).
const STORE_RETRIES: u32 = 8;
/// Writes to the durable retry schedule in flight at once.
const MAX_DEFERS: usize = 64;
/// Writes of one final failure to the failure store retried before its
/// event is left unacked (handed out again later).
const RECORD_RETRIES: u32 = 8;

/// Limits of the delivery engine.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// Requests in flight, all endpoints together.
    pub(crate) max_concurrency: usize,
    /// Requests in flight to one endpoint (scheme, host, port).
    pub(crate) per_endpoint_concurrency: usize,
    /// Deliveries waiting for one endpoint before new ones are dead-lettered.
    pub(crate) max_endpoint_backlog: usize,
    /// Deliveries held in memory, all endpoints together; past it, consuming
    /// pauses (back-pressure).
    pub(crate) max_pending_deliveries: usize,
    /// Events whose subscriptions are being looked up at once.
    pub(crate) max_fan_outs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrency: 100,
            per_endpoint_concurrency: 16,
            max_endpoint_backlog: 50_000,
            max_pending_deliveries: 100_000,
            max_fan_outs: 256,
        }
    }
}

/// What a dispatcher is made of (the engine's configuration, built).
pub(crate) struct Parts {
    pub(crate) sender: Sender,
    pub(crate) store: Option<Arc<dyn Store>>,
    pub(crate) retry: RetryPolicy,
    pub(crate) failures: Arc<dyn FailureHandler>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) limits: Limits,
    /// The static subscribers, by event name.
    pub(crate) statics: HashMap<String, Arc<[Arc<WebhookSubscription>]>>,
    /// The dedicated delivery threads (none: the tasks run where they are
    /// spawned from, on the app's runtime).
    pub(crate) shards: Vec<tokio::runtime::Handle>,
    /// What the backend the events come from keeps durably.
    pub(crate) durable: Durable,
    /// Where attempt records go (none: not recorded).
    pub(crate) recorder: Option<Recorder>,
    /// When failing subscriptions are disabled.
    pub(crate) disable: DisablePolicy,
    /// The `on_operational` callback.
    pub(crate) operational: Option<Arc<dyn OperationalHandler>>,
    /// Operational events also go as webhooks to the static subscribers
    /// of their names.
    pub(crate) operational_webhooks: bool,
}

/// What a queue backend keeps durably for the engine that consumes it.
#[derive(Default)]
pub(crate) struct Durable {
    /// Where retries wait (none: in memory).
    pub(crate) schedule: Option<Arc<dyn RetrySchedule>>,
    /// Where final failures are recorded before their event is acked
    /// (none: they only go to `on_failure`).
    pub(crate) failures: Option<Arc<dyn FailureStore>>,
}

/// What the dispatcher shares with its tasks.
struct Shared {
    sender: Sender,
    store: Option<Arc<dyn Store>>,
    retry: RetryPolicy,
    failures: Arc<dyn FailureHandler>,
    stats: Arc<Stats>,
    limits: Limits,
    global: Arc<Semaphore>,
    pending: Arc<Semaphore>,
    /// Events being fanned out at once (looking up their subscriptions).
    fan_outs: Arc<Semaphore>,
    /// Writes to the durable retry schedule in flight at once: each holds a
    /// serialized event and a command, which thousands of deliveries failing
    /// together would otherwise all hold at the same time.
    defers: Arc<Semaphore>,
    endpoints: Endpoints,
    urls: UrlCache,
    /// The static subscribers, by event name (in-process delivery: the
    /// events do not carry them).
    statics: HashMap<String, Arc<[Arc<WebhookSubscription>]>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// Cancelled when draining starts, the feed being stopped: a consumer
    /// waiting out a backend error looks at its stream again at once
    /// (a closed backend's ends) instead of sleeping into the deadline.
    draining: CancellationToken,
    /// The dedicated runtime's shards (none: the tasks run where they are
    /// spawned from, on the app's runtime).
    shards: Vec<Shard>,
    schedule: Option<Arc<dyn RetrySchedule>>,
    failure_store: Option<Arc<dyn FailureStore>>,
    recorder: Option<Recorder>,
    health: Tracker,
    operational: Option<Arc<dyn OperationalHandler>>,
    operational_webhooks: bool,
}

/// One delivery thread, as its endpoint workers see it.
struct Shard {
    handle: tokio::runtime::Handle,
    /// A child of [`Shared::cancel`]: the workers check it around every
    /// request, and a token shared by every thread would make each check
    /// take a lock other threads are taking too.
    cancel: CancellationToken,
}

impl Shared {
    fn fail(&self, failure: DeliveryFailure) {
        Stats::inc(&self.stats.failed);
        crate::dead_letter::report(&*self.failures, failure);
    }

    /// True when someone listens to operational events: else they are not
    /// made at all.
    fn is_told(&self) -> bool {
        self.operational.is_some() || self.operational_webhooks
    }

    /// Why deliveries to `stored` are not made, if it is disabled: in its
    /// copy, or by this engine after the copy was taken at `copied` (none:
    /// just now, from the store).
    fn disabled(&self, stored: &StoredWebhookSubscription, copied: Option<std::time::Instant>) -> Option<String> {
        if let Some(disabled) = &stored.disabled {
            return Some(disabled.reason.clone());
        }
        self.health.disabled_here(&stored.id, copied)
    }
}

/// Tells the operator: the `on_operational` callback (a panic in it
/// contained), and the operational webhooks when there are any.
fn tell(shared: &Arc<Shared>, event: OperationalEvent) {
    if shared.operational_webhooks && shared.statics.contains_key(event.kind.as_str()) && !shared.cancel.is_cancelled()
    {
        match crate::event::Payload::from_serialize(&event) {
            Ok(payload) => {
                let mut webhook = Event::new(event.kind.as_str(), payload);
                webhook.owner_id = None;
                let dispatcher = Dispatcher { shared: shared.clone() };
                drop(shared.tasks.spawn(async move {
                    if let Some(fan_out) = dispatcher.reserve().await {
                        let FanOut { dispatcher, slot } = fan_out;
                        dispatcher.fan_out(Arc::new(webhook), Acker::none(), false).await;
                        drop(slot);
                    }
                }));
            }
            Err(e) => tracing::warn!(error = %e, "could not encode an operational event"),
        }
    }
    if let Some(handler) = &shared.operational {
        let kind = event.kind;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.on_operational(event))).is_err() {
            tracing::error!(event = %kind, "the on_operational handler panicked");
        }
    }
}

/// Writes `failure` to the failure store, retried with a backoff for a
/// while; true once written. Gives up at shutdown or after
/// [`RECORD_RETRIES`] failures, saying so.
async fn record(shared: &Shared, store: &dyn FailureStore, failure: &DeliveryFailure) -> bool {
    let mut backoff = Backoff::new(STORE_BACKOFF.0, STORE_BACKOFF.1);
    loop {
        // Shutdown's deadline cuts a write short: the event stays unacked.
        let written = tokio::select! {
            biased;
            written = store.record(failure) => written,
            () = shared.cancel.cancelled() => return false,
        };
        let error = match written {
            Ok(()) => return true,
            Err(e) => e,
        };
        if backoff.failures() >= RECORD_RETRIES || shared.cancel.is_cancelled() {
            tracing::error!(event_id = %failure.event.id, error = %error, "could not record a final failure; its event is left unacked, to be handed out again");
            return false;
        }
        let delay = backoff.next_delay();
        tracing::warn!(event_id = %failure.event.id, error = %error, retry_in_ms = delay.as_millis() as u64, "could not record a final failure; retrying");
        tokio::select! {
            () = shared.cancel.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Parsed target URLs, by their text: parsing one costs thousands of
/// instructions, and the same few URLs come back with every event.
#[derive(Default)]
struct UrlCache {
    map: Mutex<HashMap<String, Arc<url::Url>, foldhash::fast::RandomState>>,
}

impl UrlCache {
    /// Bounded: past this many URLs the cache starts over.
    const CAPACITY: usize = 4096;

    fn parse(&self, target: &str) -> Result<Arc<url::Url>, crate::subscription::InvalidSubscription> {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(url) = map.get(target) {
            return Ok(url.clone());
        }
        drop(map);
        let url = Arc::new(crate::subscription::validate_target_url(target)?);
        map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= Self::CAPACITY {
            map.clear();
        }
        map.insert(target.to_owned(), url.clone());
        Ok(url)
    }
}

/// Delivers consumed events. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
}

/// Room for one event's fan-out, from [`Dispatcher::reserve`].
pub(crate) struct FanOut<'a> {
    dispatcher: &'a Dispatcher,
    slot: OwnedSemaphorePermit,
}

impl FanOut<'_> {
    /// Fans `event` out; once its deliveries are done, `ack` is called.
    pub(crate) fn start(self, event: Arc<Event>, ack: Acker) {
        let FanOut { dispatcher: this, slot } = self;
        let dispatcher = this.clone();
        let mut fan_out = Box::pin(async move {
            dispatcher.fan_out(event, ack, true).await;
            drop(slot);
        });
        // Usually the look-up answers at once (a memory store, a cache hit):
        // then the fan-out is done here, with no task to schedule.
        // Otherwise it becomes a task, which polls it again with a real
        // waker.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if fan_out.as_mut().poll(&mut cx).is_pending() {
            this.shared.tasks.spawn(fan_out);
        }
    }
}

impl FanOut<'_> {
    /// Queues one due delivery of `event` (from the durable schedule): to
    /// its target, looked up again, with the attempts it had. `ack` is
    /// called once it is delivered, given up, or set aside again.
    pub(crate) fn start_due(self, event: Arc<Event>, delivery: Scheduled, ack: Acker) {
        let FanOut { dispatcher: this, slot } = self;
        let dispatcher = this.clone();
        this.shared.tasks.spawn(async move {
            dispatcher.deliver_due(event, delivery, ack).await;
            drop(slot);
        });
    }
}

/// Tracks one event's deliveries; the last to finish acks the event.
struct EventDone {
    remaining: AtomicUsize,
    abandoned: AtomicBool,
    /// Taken by the last delivery to finish. No ack for an event that was
    /// never consumed from a queue (in-process, or a redelivery).
    ack: Mutex<Acker>,
}

impl EventDone {
    fn new(deliveries: usize, abandoned: bool, ack: Acker) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(deliveries),
            abandoned: AtomicBool::new(abandoned),
            ack: Mutex::new(ack),
        })
    }

    /// One delivery reached its end. `final_outcome` is false when it was
    /// abandoned at shutdown (the event is then not acked, so a durable
    /// backend delivers it again).
    fn finish(&self, shared: &Shared, final_outcome: bool) {
        if !final_outcome {
            self.abandoned.store(true, Ordering::Relaxed);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.ack(shared);
        }
    }

    fn ack(&self, shared: &Shared) {
        let ack = std::mem::take(&mut *self.ack.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if ack.is_none() || self.abandoned.load(Ordering::Relaxed) {
            return;
        }
        // An ack may keep trying while the backend is unreachable; at the
        // shutdown deadline it is given up (the event stays unacked, so a
        // durable backend hands it out again), or shutdown would wait for it.
        let cancel = shared.cancel.clone();
        shared.tasks.spawn(async move {
            tokio::select! {
                acked = ack.ack() => if let Err(e) = acked {
                    tracing::warn!(error = %e, "could not ack event");
                },
                () = cancel.cancelled() => tracing::debug!("ack given up at the shutdown deadline"),
            }
        });
    }
}

/// Whom a delivery goes to.
enum Target {
    /// A static subscriber of this engine (it has no id): the `index`th of
    /// its event name's.
    Static { sub: Arc<WebhookSubscription>, index: usize },
    /// The `index`th static subscriber the event carries (the app's).
    Carried { sub: Arc<WebhookSubscription>, index: usize },
    /// A subscription from the store.
    Stored(Arc<StoredWebhookSubscription>),
    /// The subscription of a failure sent again, with its store id if any.
    Redelivery { subscription: Arc<WebhookSubscription>, id: Option<String> },
}

impl Target {
    fn subscription(&self) -> &WebhookSubscription {
        match self {
            Self::Static { sub, .. } | Self::Carried { sub, .. } | Self::Redelivery { subscription: sub, .. } => sub,
            Self::Stored(stored) => &stored.subscription,
        }
    }

    /// The store's id, if it came from the store.
    fn id(&self) -> Option<&str> {
        match self {
            Self::Static { .. } | Self::Carried { .. } => None,
            Self::Stored(stored) => Some(&stored.id),
            Self::Redelivery { id, .. } => id.as_deref(),
        }
    }

    /// How a durable schedule refers to it; `None` for a redelivery of a
    /// subscription that is not in the store (its retries wait in memory).
    fn reference(&self) -> Option<TargetRef> {
        match self {
            Self::Static { sub, index } => Some(TargetRef::Static { index: *index, url: sub.target_url.clone() }),
            Self::Carried { index, .. } => Some(TargetRef::Carried(*index)),
            Self::Stored(stored) => Some(TargetRef::Stored(stored.id.clone())),
            Self::Redelivery { id, .. } => id.clone().map(TargetRef::Stored),
        }
    }

    /// A failure report about this target.
    fn failure(self, event: Arc<Event>, error: DeliveryError, attempts: u32) -> DeliveryFailure {
        let target = self.reference();
        let (subscription, subscription_id) = match self {
            Self::Static { sub, .. } | Self::Carried { sub, .. } => (sub, None),
            Self::Stored(stored) => (stored.subscription.clone(), Some(stored.id.clone())),
            Self::Redelivery { subscription, id } => (subscription, id),
        };
        DeliveryFailure { event, subscription: Some(subscription), subscription_id, error, attempts, target }
    }
}

/// One delivery: an event to one subscription.
struct Job {
    event: Arc<Event>,
    target: Target,
    /// The subscription's target URL, parsed.
    url: Arc<url::Url>,
    /// Attempts made so far.
    attempts: u32,
    /// When its subscription was read (a copy older than a disable is stale).
    copied: std::time::Instant,
    done: Arc<EventDone>,
    _slot: OwnedSemaphorePermit,
}

impl Job {
    /// Reports a final failure and counts the job down. With a failure
    /// store, the failure is recorded there first, and its event acked only
    /// once it is (a failure it cannot take leaves the event unacked, to be
    /// handed out again, rather than only logged).
    fn fail(self, shared: &Arc<Shared>, error: DeliveryError) {
        let failure = self.target.failure(self.event, error, self.attempts);
        give_up(shared, failure, self.done);
    }
}

/// Reports a final failure and counts its delivery down in `done`; with a
/// failure store, records it there first (see [`Job::fail`]).
fn give_up(shared: &Arc<Shared>, failure: DeliveryFailure, done: Arc<EventDone>) {
    let shutdown = matches!(failure.error, DeliveryError::Shutdown { .. });
    match shared.failure_store.clone() {
        Some(store) if !shutdown => {
            let shared = shared.clone();
            shared.tasks.clone().spawn(async move {
                let recorded = record(&shared, &*store, &failure).await;
                shared.fail(failure);
                done.finish(&shared, recorded);
            });
        }
        _ => {
            shared.fail(failure);
            done.finish(shared, !shutdown);
        }
    }
}

impl Dispatcher {
    pub(crate) fn new(parts: Parts) -> Self {
        let Parts {
            sender,
            store,
            retry,
            failures,
            stats,
            limits,
            statics,
            shards,
            durable,
            recorder,
            disable,
            operational,
            operational_webhooks,
        } = parts;
        let cancel = CancellationToken::new();
        let shards = shards.into_iter().map(|handle| Shard { handle, cancel: cancel.child_token() }).collect();
        Self {
            shared: Arc::new(Shared {
                sender,
                store,
                retry,
                failures,
                stats,
                global: Arc::new(Semaphore::new(limits.max_concurrency)),
                pending: Arc::new(Semaphore::new(limits.max_pending_deliveries)),
                fan_outs: Arc::new(Semaphore::new(limits.max_fan_outs.max(1))),
                defers: Arc::new(Semaphore::new(MAX_DEFERS)),
                limits,
                endpoints: Endpoints::default(),
                urls: UrlCache::default(),
                statics,
                tasks: TaskTracker::new(),
                cancel,
                draining: CancellationToken::new(),
                shards,
                schedule: durable.schedule,
                failure_store: durable.failures,
                recorder,
                health: Tracker::new(disable),
                operational,
                operational_webhooks,
            }),
        }
    }

    /// Forgets the health this engine tracked for subscription `id` (it
    /// was enabled again).
    pub(crate) fn forget_health(&self, id: &str) {
        self.shared.health.forget(id);
    }

    /// Takes subscription `id` as disabled at once (it was disabled through
    /// this engine: the copies its queued deliveries hold say otherwise).
    pub(crate) fn mark_disabled(&self, id: &str, reason: &str) {
        self.shared.health.mark_disabled(id, reason);
    }

    /// Waits, until `stop_at`, for every task (consumer, fan-outs,
    /// deliveries, retry timers, acks) to finish; past it, cancels them
    /// (their deliveries are reported as shut down and not acked) and waits
    /// for them to wrap up. True when everything finished in time. Dropping
    /// the dispatcher afterwards closes its HTTP connections.
    pub(crate) async fn drain(&self, stop_at: tokio::time::Instant) -> bool {
        let tasks = &self.shared.tasks;
        tasks.close();
        self.shared.draining.cancel();
        if tokio::time::timeout_at(stop_at, tasks.wait()).await.is_ok() {
            return true;
        }
        self.shared.cancel.cancel();
        tasks.wait().await;
        false
    }

    /// Waits for room to fan out one more event (back-pressure: at most
    /// `max_fan_outs` at once, and each waits for room among the pending
    /// deliveries). `None` once shutdown has cancelled the dispatcher.
    /// Cancel-safe: nothing is taken until it returns.
    pub(crate) async fn reserve(&self) -> Option<FanOut<'_>> {
        let shared = &self.shared;
        tokio::select! {
            biased;
            slot = shared.fan_outs.clone().acquire_owned() => Some(FanOut { dispatcher: self, slot: slot.expect("never closed") }),
            () = shared.cancel.cancelled() => None,
        }
    }

    /// Consumes `events` (a backend's stream) until it ends or shutdown
    /// cancels it, and acks each event with the [`Acker`] it came with once
    /// its deliveries are done. Events read after cancellation are reported
    /// as shut down, not lost. On `runtime` when given (every task it
    /// spawns stays there), else on the current one.
    pub(crate) fn spawn_consumer(
        &self,
        events: BoxStream<'static, Result<Received, BackendError>>,
        runtime: Option<&tokio::runtime::Handle>,
    ) {
        let this = self.clone();
        let consume = async move { this.consume(events).await };
        match runtime {
            Some(handle) => drop(self.shared.tasks.spawn_on(consume, handle)),
            None => drop(self.shared.tasks.spawn(consume)),
        }
    }

    async fn consume(self, mut events: BoxStream<'static, Result<Received, BackendError>>) {
        let shared = &self.shared;
        let mut backoff = Backoff::new(CONSUME_BACKOFF.0, CONSUME_BACKOFF.1);
        let mut last_warned: Option<tokio::time::Instant> = None;
        let mut woken_by_drain = false;
        loop {
            let item = tokio::select! {
                biased;
                () = shared.cancel.cancelled() => break,
                item = events.next() => item,
            };
            let received = match item {
                None => return,
                Some(Ok(received)) => received,
                Some(Err(BackendError::AlreadyConsumed)) => {
                    tracing::error!("backend consumed twice; this consumer stops");
                    return;
                }
                // One entry set aside by the backend (already acked there):
                // report it and go on, with no backoff.
                Some(Err(BackendError::DeadLettered { event, reason })) => {
                    tracing::error!(event_id = %event.id, event = %event.name, reason = %reason, "backend dead-lettered an event");
                    let error = DeliveryError::Backend(format!("dead-lettered by the backend: {reason}"));
                    shared.fail(DeliveryFailure::of_event(Arc::new(*event), error));
                    continue;
                }
                Some(Err(BackendError::Codec(e))) => {
                    tracing::error!(error = %e, "backend could not decode an entry");
                    continue;
                }
                Some(Err(e)) => {
                    let wait = backoff.next_delay();
                    let (failures, retry_in_ms) = (backoff.failures(), wait.as_millis() as u64);
                    // One line per step while the wait grows, then one a
                    // minute; the failures in between at debug level.
                    let now = tokio::time::Instant::now();
                    if !backoff.is_at_max() || last_warned.is_none_or(|at| now - at >= CONSUME_WARN_EVERY) {
                        last_warned = Some(now);
                        tracing::warn!(error = %e, failures, retry_in_ms, "backend consume error");
                    } else {
                        tracing::debug!(error = %e, failures, retry_in_ms, "backend consume error");
                    }
                    // Draining (begun before this wait or during it) cuts
                    // one wait short: a closed backend's stream then ends;
                    // one still failing waits its backoff, never spins.
                    tokio::select! {
                        () = shared.cancel.cancelled() => break,
                        () = shared.draining.cancelled(), if !woken_by_drain => {
                            woken_by_drain = true;
                            continue;
                        }
                        () = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            backoff.reset();
            last_warned = None;
            let (event, delivery, ack) = received.into_parts();
            match self.reserve().await {
                Some(fan_out) => match delivery {
                    None => fan_out.start(Arc::new(event), ack),
                    Some(delivery) => fan_out.start_due(Arc::new(event), delivery, ack),
                },
                None => {
                    self.abandon(event);
                    break;
                }
            }
        }
        // Shut down: what the stream already holds is reported (and not
        // acked: a durable backend hands it out again).
        while let Some(Some(Ok(received))) = futures_util::FutureExt::now_or_never(events.next()) {
            self.abandon(received.into_parts().0);
        }
    }

    fn abandon(&self, event: Event) {
        let error = DeliveryError::Shutdown { last: None };
        self.shared.fail(DeliveryFailure::of_event(Arc::new(event), error));
    }

    /// Finds an event's subscriptions (the store's too, `with_store`) and
    /// queues one job for each; once they are all done, the event is acked
    /// where `ack` says. Disabled subscriptions are skipped, and counted.
    async fn fan_out(&self, event: Arc<Event>, ack: Acker, with_store: bool) {
        let shared = &self.shared;
        let owner = event.owner_id.as_deref();
        let statics = shared.statics.get(&event.name).map_or(&[][..], |s| &s[..]);
        let mut targets: Vec<Target> = statics
            .iter()
            .enumerate()
            .filter(|(_, s)| s.accepts_owner(owner))
            .map(|(index, sub)| Target::Static { sub: sub.clone(), index })
            // Events read from a queue carry their static subscribers.
            .chain(
                event
                    .subscribers
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.accepts_owner(owner))
                    .map(|(index, s)| Target::Carried { sub: Arc::new(s.clone()), index }),
            )
            .collect();
        let mut complete = true;
        // Before the look-up: a disable during it makes its copies stale.
        let copied = std::time::Instant::now();
        if let Some(store) = shared.store.as_ref().filter(|_| with_store) {
            match self.lookup(store.as_ref(), &event).await {
                Ok(subs) => {
                    for sub in subs {
                        match shared.disabled(&sub, None) {
                            None => targets.push(Target::Stored(sub)),
                            Some(_) => Stats::inc(&shared.stats.skipped_disabled),
                        }
                    }
                }
                Err(error) => {
                    complete = !matches!(error, DeliveryError::Shutdown { .. });
                    shared.fail(DeliveryFailure::of_event(event.clone(), error));
                }
            }
        }
        // One extra count, released below, so the event is not acked while
        // jobs are still being queued.
        let done = EventDone::new(targets.len() + 1, !complete, ack);
        for target in targets {
            // Parsed once per URL (cached): the endpoint key and every
            // attempt reuse it.
            let url = match shared.urls.parse(&target.subscription().target_url) {
                Ok(url) => url,
                Err(e) => {
                    shared.fail(target.failure(event.clone(), DeliveryError::InvalidTarget(e), 0));
                    done.finish(shared, true);
                    continue;
                }
            };
            let slot = tokio::select! {
                biased;
                slot = shared.pending.clone().acquire_owned() => slot.expect("never closed"),
                () = shared.cancel.cancelled() => {
                    shared.fail(target.failure(event.clone(), DeliveryError::Shutdown { last: None }, 0));
                    done.finish(shared, false);
                    continue;
                }
            };
            let job = Job { event: event.clone(), target, url, attempts: 0, copied, done: done.clone(), _slot: slot };
            endpoint::enqueue(&self.shared, job, false);
        }
        done.finish(shared, true);
    }

    /// A due delivery from the durable schedule: its target found again,
    /// then queued as a retry. A target that is gone (removed from the
    /// store, or a static subscriber this engine no longer has) ends it:
    /// logged and acked.
    async fn deliver_due(&self, event: Arc<Event>, delivery: Scheduled, ack: Acker) {
        let shared = &self.shared;
        let Scheduled { target, attempts } = delivery;
        let found = match &target {
            TargetRef::Stored(id) => match &shared.store {
                None => Ok(None),
                Some(store) => match store.get(id).await {
                    Ok(sub) => Ok(sub.map(|s| Target::Stored(Arc::new(s)))),
                    Err(e) => Err(e),
                },
            },
            TargetRef::Carried(index) => {
                Ok(event.subscribers.get(*index).map(|s| Target::Carried { sub: Arc::new(s.clone()), index: *index }))
            }
            TargetRef::Static { index, url } => Ok(shared
                .statics
                .get(&event.name)
                .and_then(|subs| subs.get(*index))
                .filter(|s| s.target_url == *url)
                .map(|s| Target::Static { sub: s.clone(), index: *index })),
        };
        let target = match found {
            Ok(Some(Target::Stored(stored))) if let Some(reason) = shared.disabled(&stored, None) => {
                // Given up with the reason, and recorded: `recover` sends
                // it again once the subscription is enabled.
                Stats::inc(&shared.stats.skipped_disabled);
                let failure =
                    Target::Stored(stored).failure(event, DeliveryError::SubscriptionDisabled { reason }, attempts);
                give_up(&self.shared, failure, EventDone::new(1, false, ack));
                return;
            }
            Ok(Some(target)) => target,
            Ok(None) => {
                tracing::warn!(event_id = %event.id, event = %event.name, "the subscription of a due retry is gone; it is dropped");
                let done = EventDone::new(1, false, ack);
                done.finish(shared, true);
                return;
            }
            Err(e) => {
                // Not acked: the backend hands it out again (after its claim
                // min-idle).
                tracing::warn!(event_id = %event.id, error = %e, "store lookup failed for a due retry; it stays in the backend");
                return;
            }
        };
        let url = match shared.urls.parse(&target.subscription().target_url) {
            Ok(url) => url,
            Err(e) => {
                let done = EventDone::new(1, false, ack);
                shared.fail(target.failure(event, DeliveryError::InvalidTarget(e), attempts));
                done.finish(shared, true);
                return;
            }
        };
        let slot = tokio::select! {
            biased;
            slot = shared.pending.clone().acquire_owned() => slot.expect("never closed"),
            () = shared.cancel.cancelled() => return,
        };
        let done = EventDone::new(1, false, ack);
        endpoint::enqueue(
            shared,
            Job { event, target, url, attempts, copied: std::time::Instant::now(), done, _slot: slot },
            true,
        );
    }

    /// Sends a reported failure again, with a fresh round of attempts and
    /// the same event: to its subscription, or, for a failure of the whole
    /// event, to every subscriber the event has now. Returns once it is
    /// queued; what becomes of it is reported as for any delivery. Nothing
    /// is acked (the event was consumed before).
    pub(crate) async fn redeliver(&self, failure: DeliveryFailure) -> Result<(), RedeliverError> {
        let shared = &self.shared;
        if shared.cancel.is_cancelled() {
            return Err(RedeliverError::ShutDown);
        }
        failure.check_redeliverable()?;
        let DeliveryFailure { event, subscription, subscription_id, .. } = failure;
        let Some(subscription) = subscription else {
            Stats::inc(&shared.stats.redelivered);
            self.fan_out(event, Acker::none(), true).await;
            return Ok(());
        };
        let url = shared.urls.parse(&subscription.target_url).map_err(|e| RedeliverError::InvalidUrl(e.to_string()))?;
        let slot = tokio::select! {
            biased;
            slot = shared.pending.clone().acquire_owned() => slot.expect("never closed"),
            () = shared.cancel.cancelled() => return Err(RedeliverError::ShutDown),
        };
        Stats::inc(&shared.stats.redelivered);
        let done = EventDone::new(1, false, Acker::none());
        let target = Target::Redelivery { subscription, id: subscription_id };
        endpoint::enqueue(
            shared,
            Job { event, target, url, attempts: 0, copied: std::time::Instant::now(), done, _slot: slot },
            false,
        );
        Ok(())
    }

    /// The store's subscriptions for the event, retried with a backoff of
    /// its own while the store is unavailable, [`STORE_RETRIES`] times: a
    /// fan-out holds a permit while it waits, so it must not wait on the
    /// delivery schedule, which may span days.
    async fn lookup(
        &self,
        store: &dyn Store,
        event: &Event,
    ) -> Result<Vec<Arc<StoredWebhookSubscription>>, DeliveryError> {
        let mut backoff = Backoff::new(STORE_BACKOFF.0, STORE_BACKOFF.1);
        loop {
            match store.shared_subscriptions_for(&event.name, event.owner_id.as_deref()).await {
                Ok(subs) => return Ok(subs),
                Err(e) => {
                    let error = DeliveryError::Store(e.to_string());
                    if !e.is_retryable() || backoff.failures() >= STORE_RETRIES {
                        return Err(error);
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(event_id = %event.id, error = %e, retry_in_ms = delay.as_millis() as u64, "store lookup failed; retrying");
                    tokio::select! {
                        () = self.shared.cancel.cancelled() => return Err(DeliveryError::Shutdown { last: Some(error.to_string()) }),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}
