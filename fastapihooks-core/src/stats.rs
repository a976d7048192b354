//! Counters: what happened to events and deliveries.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by the runtime's tasks.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) emitted: AtomicU64,
    pub(crate) unsubscribed: AtomicU64,
    pub(crate) queue_full: AtomicU64,
    pub(crate) transform_failed: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    /// A gauge: events in the publish spool now.
    pub(crate) spooled: AtomicU64,
    pub(crate) publish_retries: AtomicU64,
    pub(crate) attempts_recorded: AtomicU64,
    pub(crate) attempts_unrecorded: AtomicU64,
    pub(crate) skipped_disabled: AtomicU64,
    pub(crate) disabled: AtomicU64,
}

impl Stats {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, n: usize) {
        gauge.store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            emitted: get(&self.emitted),
            unsubscribed: get(&self.unsubscribed),
            queue_full: get(&self.queue_full),
            transform_failed: get(&self.transform_failed),
            published: get(&self.published),
            delivered: get(&self.delivered),
            retried: get(&self.retried),
            deferred: get(&self.deferred),
            failed: get(&self.failed),
            redelivered: get(&self.redelivered),
            spooled: get(&self.spooled),
            publish_retries: get(&self.publish_retries),
            attempts_recorded: get(&self.attempts_recorded),
            attempts_unrecorded: get(&self.attempts_unrecorded),
            skipped_disabled: get(&self.skipped_disabled),
            disabled: get(&self.disabled),
        }
    }
}

/// A copy of the runtime's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Events accepted by `emit`.
    pub emitted: u64,
    /// Events emitted while nothing could receive them (no static
    /// subscriber, and the store certain it has none): skipped, at no cost.
    pub unsubscribed: u64,
    /// Events refused because the intake queue was full (sent to `on_failure`).
    pub queue_full: u64,
    /// Events whose transform failed or panicked (sent to `on_failure`).
    pub transform_failed: u64,
    /// Events handed to the backend.
    pub published: u64,
    /// Deliveries that got a 2xx.
    pub delivered: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Deliveries set aside in a backend's durable retry schedule (a retry
    /// due later, or an endpoint's backlog full): they wait there, not in
    /// memory, and come back to whichever worker is alive.
    pub deferred: u64,
    /// Final failures handed to `on_failure` (events and deliveries).
    pub failed: u64,
    /// Failures queued again by `redeliver` (each one counted once).
    pub redelivered: u64,
    /// With a queue backend: events waiting in the app's publish spool
    /// for the backend to take them (a gauge, not a count; 0 while the
    /// backend keeps up).
    pub spooled: u64,
    /// With a queue backend: publishes tried again after a failure, one
    /// per batch (see `FastapihooksBuilder::publish_spool`).
    pub publish_retries: u64,
    /// Attempt records written to the attempt log.
    pub attempts_recorded: u64,
    /// Attempt records lost: the log's writer was behind (its queue full)
    /// or the log kept failing. Deliveries are never slowed for the log.
    pub attempts_unrecorded: u64,
    /// Deliveries not made because their subscription is disabled (skipped
    /// at fan-out, or a waiting retry given up).
    pub skipped_disabled: u64,
    /// Subscriptions this engine disabled (see `DisablePolicy`).
    pub disabled: u64,
}
