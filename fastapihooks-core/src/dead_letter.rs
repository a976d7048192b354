//! The end of the line: deliveries that finally failed go to a
//! [`FailureHandler`] (`on_failure`), and, where a [`FailureStore`] is
//! there (a worker on Redis), are recorded in it before their event is
//! acked. [`InMemoryDeadLetterQueue`] is both.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Event, TransformError};
use crate::send::AttemptError;
use crate::subscription::{InvalidSubscription, TargetRef, WebhookSubscription};

/// Why an event or one of its deliveries finally failed: the last
/// attempt's error, or what stopped the event or the delivery before or
/// between attempts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The last attempt failed, and the retry policy gave up (or the error
    /// is final).
    #[error(transparent)]
    Attempt(#[from] AttemptError),
    /// The subscription's target URL is not one deliveries can be made to.
    #[error("invalid target URL: {0}")]
    InvalidTarget(InvalidSubscription),
    /// The intake queue was full when the event was emitted.
    #[error("queue full: the event was not accepted (capacity {capacity})")]
    QueueFull {
        /// The intake queue's capacity.
        capacity: usize,
    },
    /// Too many deliveries were already waiting for this endpoint.
    #[error("endpoint backlog full: {pending} deliveries already waiting for this endpoint")]
    EndpointBacklogFull {
        /// How many were waiting.
        pending: usize,
    },
    /// The subscription is disabled (by the engine's
    /// [`DisablePolicy`](crate::health::DisablePolicy), the receiver, or an
    /// operator): the delivery was not made, or its retries were given up.
    #[error("subscription disabled: {reason}")]
    SubscriptionDisabled {
        /// Why it is disabled.
        reason: String,
    },
    /// The runtime shut down before the delivery completed.
    #[error("shut down before delivery completed{}", last.as_ref().map(|l| format!(" (last error: {l})")).unwrap_or_default())]
    Shutdown {
        /// The last attempt's error, if there was an attempt.
        last: Option<String>,
    },
    /// The transform failed or panicked; the event was not delivered.
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// The store could not be read to find the event's subscriptions.
    #[error("subscription look-up failed: {0}")]
    Store(String),
    /// The backend refused or lost the event.
    #[error("backend error: {0}")]
    Backend(String),
    /// The backend was failing and the app's publish spool, where events
    /// wait for it, was full: this event was not kept (see
    /// `FastapihooksBuilder::publish_spool`).
    #[error("publish spool full: {capacity} events already waiting for the backend (last error: {last})")]
    SpoolFull {
        /// The spool's capacity.
        capacity: usize,
        /// Why the backend was not taking events.
        last: String,
    },
}

impl DeliveryError {
    /// True when sending again later may succeed: a transient attempt
    /// error (network, timeout, 408, 429, 5xx; see
    /// [`AttemptError::is_transient`]), or an unavailable store or backend.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Attempt(e) => e.is_transient(),
            Self::Store(_) | Self::Backend(_) | Self::SpoolFull { .. } => true,
            _ => false,
        }
    }

    /// The receiver's HTTP status, when the last attempt got one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Attempt(
                AttemptError::Status { status }
                | AttemptError::Redirect { status }
                | AttemptError::ReceiverStopped { status, .. },
            ) => Some(*status),
            _ => None,
        }
    }
}

/// One final failure: the event, the subscription (absent when the event
/// failed before fan-out: queue full, transform error, store down), the
/// error and how many attempts were made.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeliveryFailure {
    /// The event, with its payload.
    pub event: Arc<Event>,
    /// The subscription the delivery was for, if the event got that far.
    pub subscription: Option<Arc<WebhookSubscription>>,
    /// The store's id of the subscription, when it came from a store.
    pub subscription_id: Option<String>,
    /// The final error.
    pub error: DeliveryError,
    /// HTTP attempts made (0 when none was).
    pub attempts: u32,
    /// How a durable record refers to the subscription (see [`TargetRef`]);
    /// none for a failure of the whole event, or a redelivery to a
    /// subscription outside the store.
    pub target: Option<TargetRef>,
}

impl DeliveryFailure {
    /// A failure of the whole event, before any subscription.
    pub fn of_event(event: Arc<Event>, error: DeliveryError) -> Self {
        Self { event, subscription: None, subscription_id: None, error, attempts: 0, target: None }
    }

    /// Whether the event can be sent again: not when its transform failed,
    /// which left it without a payload.
    pub(crate) fn check_redeliverable(&self) -> Result<(), RedeliverError> {
        match self.error {
            DeliveryError::Transform(_) => Err(RedeliverError::NoPayload),
            _ => Ok(()),
        }
    }
}

/// Why a failure could not be sent again (see
/// [`Fastapihooks::redeliver`](crate::Fastapihooks::redeliver)). The failure
/// is unchanged: nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedeliverError {
    /// The runtime or worker is shut down (or shutting down).
    #[error("fastapihooks is shut down; nothing was redelivered")]
    ShutDown,
    /// The event's transform failed, so it has no payload to send: emit the
    /// event again once the transform is fixed.
    #[error("the event's transform failed: it has no payload to redeliver")]
    NoPayload,
    /// This app only publishes to a queue backend; the worker that made the
    /// delivery, and reported its failure, redelivers it.
    #[error("deliveries are made by a worker here: redeliver with the worker that reported the failure")]
    NotDeliveredHere,
    /// The subscription's target URL is not a valid webhook URL.
    #[error("invalid target URL: {0}")]
    InvalidUrl(String),
    /// Publishing the event to the backend again failed.
    #[error("backend error: {0}")]
    Backend(String),
}

/// Receives final failures: the `on_failure` callback.
///
/// Called from the runtime's tasks; keep it quick and non-blocking (push to
/// a queue, increment a metric). Any `Fn(DeliveryFailure)` closure is one.
pub trait FailureHandler: Send + Sync + 'static {
    /// Handles one final failure.
    fn on_failure(&self, failure: DeliveryFailure);
}

impl<F: Fn(DeliveryFailure) + Send + Sync + 'static> FailureHandler for F {
    fn on_failure(&self, failure: DeliveryFailure) {
        self(failure);
    }
}

/// Hands a failure to `handler`, containing a panic: a failing callback
/// must not take a delivery worker (and its endpoint's queue) down with it.
pub(crate) fn report(handler: &dyn FailureHandler, failure: DeliveryFailure) {
    let event_id = failure.event.id.clone();
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.on_failure(failure))).is_err() {
        tracing::error!(event_id = %event_id, "the on_failure handler panicked; the failure it was given is lost to it");
    }
}

/// The handler used when none is set: logs each failure at error level.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogFailures;

impl FailureHandler for LogFailures {
    fn on_failure(&self, f: DeliveryFailure) {
        tracing::error!(
            event_id = %f.event.id,
            event = %f.event.name,
            subscription_id = f.subscription_id.as_deref().unwrap_or(""),
            target = f.subscription.as_deref().map(|s| crate::subscription::redact_url(&s.target_url)).unwrap_or(""),
            attempts = f.attempts,
            error = %f.error,
            "webhook delivery failed"
        );
    }
}

/// A final failure as a [`FailureStore`] keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FailureRecord {
    /// The store's id of the record (a Redis stream entry id, a sequence
    /// number in memory).
    #[serde(skip)]
    pub id: String,
    /// When the delivery was given up.
    pub failed_at: DateTime<Utc>,
    /// The event, with its payload and its id: a replay sends the same
    /// `webhook-id`.
    pub event: Event,
    /// The store's id of the subscription, when it came from a store.
    pub subscription_id: Option<String>,
    /// Whom the delivery was for; none for a failure of the whole event.
    pub target: Option<TargetRef>,
    /// The target URL, its credentials redacted (for reading, not sending).
    pub target_url: Option<String>,
    /// HTTP attempts made.
    pub attempts: u32,
    /// The final error, as text.
    pub error: String,
    /// The receiver's last HTTP status, if it answered.
    pub status: Option<u16>,
}

impl FailureRecord {
    /// The record of `failure`, failed now.
    pub fn of(failure: &DeliveryFailure) -> Self {
        Self {
            id: String::new(),
            failed_at: Utc::now(),
            event: (*failure.event).clone(),
            subscription_id: failure.subscription_id.clone(),
            target: failure.target.clone(),
            target_url: failure
                .subscription
                .as_deref()
                .map(|s| crate::subscription::redact_url(&s.target_url).to_owned()),
            attempts: failure.attempts,
            error: failure.error.to_string(),
            status: failure.error.status(),
        }
    }

    /// True when the record passes `filter` (its limit aside).
    pub fn matches(&self, filter: &FailureFilter) -> bool {
        filter.subscription_id.as_ref().is_none_or(|id| self.subscription_id.as_ref() == Some(id))
            && filter.owner_id.as_ref().is_none_or(|owner| self.event.owner_id.as_ref() == Some(owner))
            && filter.event_name.as_ref().is_none_or(|name| self.event.name == *name)
            && filter.since.is_none_or(|t| self.failed_at >= t)
            && filter.until.is_none_or(|t| self.failed_at < t)
    }
}

/// Which failure records to list: every field that is set must match;
/// newest first, at most `limit`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FailureFilter {
    /// Only this subscription's.
    pub subscription_id: Option<String>,
    /// Only events of this owner.
    pub owner_id: Option<String>,
    /// Only events of this name.
    pub event_name: Option<String>,
    /// Only those that failed at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only those that failed before this instant.
    pub until: Option<DateTime<Utc>>,
    /// At most this many (default 100).
    pub limit: usize,
}

impl Default for FailureFilter {
    fn default() -> Self {
        Self { subscription_id: None, owner_id: None, event_name: None, since: None, until: None, limit: 100 }
    }
}

impl FailureFilter {
    /// Every record, up to the default limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only this subscription's.
    #[must_use]
    pub fn subscription(mut self, id: impl Into<String>) -> Self {
        self.subscription_id = Some(id.into());
        self
    }

    /// Only events of this owner.
    #[must_use]
    pub fn owner(mut self, id: impl Into<String>) -> Self {
        self.owner_id = Some(id.into());
        self
    }

    /// Only events of this name.
    #[must_use]
    pub fn event(mut self, name: impl Into<String>) -> Self {
        self.event_name = Some(name.into());
        self
    }

    /// Only failures at or after `t`.
    #[must_use]
    pub fn since(mut self, t: DateTime<Utc>) -> Self {
        self.since = Some(t);
        self
    }

    /// Only failures before `t`.
    #[must_use]
    pub fn until(mut self, t: DateTime<Utc>) -> Self {
        self.until = Some(t);
        self
    }

    /// At most `n` (at least 1).
    #[must_use]
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = n.max(1);
        self
    }
}

/// What a recovery (Svix's "recover": every given-up delivery of a time
/// window sent again) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoverReport {
    /// Records sent again (and removed).
    pub resent: usize,
    /// Records that could not be sent again (kept).
    pub failed: usize,
    /// The limit was reached with more records in the window: recover again.
    pub more: bool,
}

/// Why a [`FailureStore`] could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FailureStoreError {
    /// The store is unreachable or failed. Retryable.
    #[error("failure store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A record could not be encoded or decoded.
    #[error("failure record not readable: {0}")]
    Codec(String),
}

/// Durable final failures: every given-up delivery (and every event that
/// failed as a whole) is recorded here before its event is acked, so none
/// is only logged. A worker on Redis records into a bounded stream;
/// [`InMemoryDeadLetterQueue`] is the in-process one.
#[async_trait]
pub trait FailureStore: Send + Sync + 'static {
    /// Records one failure.
    async fn record(&self, failure: &DeliveryFailure) -> Result<(), FailureStoreError>;

    /// The records that pass `filter`, newest first.
    async fn list(&self, filter: &FailureFilter) -> Result<Vec<FailureRecord>, FailureStoreError>;

    /// One record, by id.
    async fn get(&self, id: &str) -> Result<Option<FailureRecord>, FailureStoreError>;

    /// Removes one record; false when there was none.
    async fn remove(&self, id: &str) -> Result<bool, FailureStoreError>;
}

/// A bounded in-memory dead-letter queue: keeps the latest `capacity`
/// failures, evicting the oldest. Cheap to clone; clones share the queue.
///
/// ```
/// # use fastapihooks_core::InMemoryDeadLetterQueue;
/// let dlq = InMemoryDeadLetterQueue::new(1000);
/// // Fastapihooks::builder().on_failure(dlq.clone()) ...
/// assert!(dlq.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct InMemoryDeadLetterQueue {
    inner: Arc<Mutex<Dlq>>,
}

#[derive(Debug)]
struct Dlq {
    capacity: usize,
    /// Oldest first, each with its id (a sequence number) and time.
    entries: VecDeque<(u64, DateTime<Utc>, DeliveryFailure)>,
    next_id: u64,
    evicted: u64,
}

impl InMemoryDeadLetterQueue {
    /// A queue keeping at most `capacity` failures (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { inner: Arc::new(Mutex::new(Dlq { capacity, entries: VecDeque::new(), next_id: 1, evicted: 0 })) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Dlq> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a failure, evicting the oldest when full.
    pub fn push(&self, failure: DeliveryFailure) {
        let mut q = self.lock();
        if q.entries.len() == q.capacity {
            q.entries.pop_front();
            q.evicted += 1;
        }
        let id = q.next_id;
        q.next_id += 1;
        q.entries.push_back((id, Utc::now(), failure));
    }

    /// A copy of the entries, oldest first.
    pub fn entries(&self) -> Vec<DeliveryFailure> {
        self.lock().entries.iter().map(|(_, _, f)| f.clone()).collect()
    }

    /// Takes every entry out, oldest first.
    pub fn drain(&self) -> Vec<DeliveryFailure> {
        self.lock().entries.drain(..).map(|(_, _, f)| f).collect()
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many entries were evicted to make room.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }
}

impl FailureHandler for InMemoryDeadLetterQueue {
    fn on_failure(&self, failure: DeliveryFailure) {
        self.push(failure);
    }
}

fn in_memory_record(id: u64, at: DateTime<Utc>, failure: &DeliveryFailure) -> FailureRecord {
    FailureRecord { id: id.to_string(), failed_at: at, ..FailureRecord::of(failure) }
}

#[async_trait]
impl FailureStore for InMemoryDeadLetterQueue {
    async fn record(&self, failure: &DeliveryFailure) -> Result<(), FailureStoreError> {
        self.push(failure.clone());
        Ok(())
    }

    async fn list(&self, filter: &FailureFilter) -> Result<Vec<FailureRecord>, FailureStoreError> {
        let q = self.lock();
        Ok(q.entries
            .iter()
            .rev()
            .map(|(id, at, f)| in_memory_record(*id, *at, f))
            .filter(|r| r.matches(filter))
            .take(filter.limit)
            .collect())
    }

    async fn get(&self, id: &str) -> Result<Option<FailureRecord>, FailureStoreError> {
        let Ok(id) = id.parse::<u64>() else { return Ok(None) };
        let q = self.lock();
        Ok(q.entries.iter().find(|(n, _, _)| *n == id).map(|(n, at, f)| in_memory_record(*n, *at, f)))
    }

    async fn remove(&self, id: &str) -> Result<bool, FailureStoreError> {
        let Ok(id) = id.parse::<u64>() else { return Ok(false) };
        let mut q = self.lock();
        let before = q.entries.len();
        q.entries.retain(|(n, _, _)| *n != id);
        Ok(q.entries.len() < before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Payload;

    fn failure(n: u32) -> DeliveryFailure {
        let mut f = DeliveryFailure::of_event(
            Arc::new(Event::new("e", Payload::null())),
            DeliveryError::Attempt(AttemptError::Status { status: 500 }),
        );
        f.attempts = n;
        f
    }

    #[test]
    fn dead_letter_queue_is_bounded_and_evicts_oldest() {
        let q = InMemoryDeadLetterQueue::new(2);
        for n in 1..=3 {
            q.on_failure(failure(n));
        }
        assert_eq!(q.len(), 2);
        assert_eq!(q.evicted(), 1);
        let attempts: Vec<u32> = q.entries().iter().map(|f| f.attempts).collect();
        assert_eq!(attempts, [2, 3]);
        assert_eq!(q.drain().len(), 2);
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn the_in_memory_queue_is_a_failure_store() {
        let q = InMemoryDeadLetterQueue::new(10);
        let mut other = failure(1);
        other.event = Arc::new(Event::new("other", Payload::null()));
        other.subscription_id = Some("sub_1".into());
        FailureStore::record(&q, &failure(2)).await.unwrap();
        FailureStore::record(&q, &other).await.unwrap();
        let all = q.list(&FailureFilter::new()).await.unwrap();
        assert_eq!(all.iter().map(|r| r.event.name.as_str()).collect::<Vec<_>>(), ["other", "e"], "newest first");
        assert_eq!(q.list(&FailureFilter::new().event("e")).await.unwrap().len(), 1);
        assert_eq!(q.list(&FailureFilter::new().subscription("sub_1")).await.unwrap()[0].event.name, "other");
        assert_eq!(q.list(&FailureFilter::new().limit(1)).await.unwrap().len(), 1);
        let later = Utc::now() + chrono::Duration::seconds(60);
        assert!(q.list(&FailureFilter::new().since(later)).await.unwrap().is_empty());
        assert_eq!(q.list(&FailureFilter::new().until(later)).await.unwrap().len(), 2);
        let id = all[0].id.clone();
        assert_eq!(q.get(&id).await.unwrap().map(|r| r.attempts), Some(1));
        assert!(q.remove(&id).await.unwrap());
        assert!(!q.remove(&id).await.unwrap());
        assert!(q.get("not a number").await.unwrap().is_none());
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn retryable_errors() {
        for s in [408, 429, 500, 502, 503, 599] {
            assert!(DeliveryError::Attempt(AttemptError::Status { status: s }).is_retryable(), "{s}");
        }
        for s in [400, 401, 404, 410, 422] {
            assert!(!DeliveryError::Attempt(AttemptError::Status { status: s }).is_retryable(), "{s}");
        }
        assert!(!DeliveryError::from(AttemptError::Redirect { status: 302 }).is_retryable());
        let stopped = DeliveryError::from(AttemptError::ReceiverStopped {
            status: 503,
            reason: crate::send::StopReason::AbortHeader,
        });
        assert!(!stopped.is_retryable());
        assert_eq!(stopped.status(), Some(503));
        assert_eq!(
            stopped.to_string(),
            "endpoint answered HTTP 503: receiver asked to stop retrying (webhook-delivery: abort-message)"
        );
        assert!(DeliveryError::from(AttemptError::Network("reset".into())).is_retryable());
        let refused = crate::send::guard::Refused { host: "h".into(), addr: [10, 0, 0, 1].into() };
        assert!(!DeliveryError::from(AttemptError::Refused(refused)).is_retryable());
        assert!(!DeliveryError::from(AttemptError::NotSent(crate::send::NotSent::BearerToken)).is_retryable());
        assert!(DeliveryError::Store("down".into()).is_retryable());
    }
}
