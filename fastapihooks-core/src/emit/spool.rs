//! With a queue backend: the pipeline's publishing side. What is queued is
//! published in batches ([`Backend::publish_batch`]); events the backend
//! did not take wait in a bounded spool and are published again with a
//! backoff, and reported to `on_failure` only when the spool is full, when
//! they waited longer than the give-up time, or at shutdown.
//!
//! Order: while the spool holds events, new ones join it at the back, and
//! it is published again from the front; so events reach the backend in
//! the order they were emitted, except those of a batch the backend took
//! only in part (its refused events come after the rest of the batch).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{LINGER_POLLS, POLL_INTERVAL, Pipeline, Queued};
use crate::backend::{Backend, BackendError, PublishBatchError};
use crate::dead_letter::{DeliveryError, DeliveryFailure};
use crate::event::{Event, EventId};
use crate::retry::Backoff;
use crate::stats::Stats;

/// At most this many events go to the backend at once.
pub(super) const BATCH: usize = 256;

/// The wait before the first retry of a failed publish; it doubles, with
/// jitter, up to [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How many events may wait for the backend, and for how long.
#[derive(Clone, Copy, Debug)]
pub(super) struct SpoolConfig {
    pub(super) capacity: usize,
    pub(super) give_up: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self { capacity: 16_384, give_up: Duration::from_secs(60) }
    }
}

/// An event the backend did not take, and since when it waits.
struct Spooled {
    event: Event,
    since: Instant,
}

/// How one publish of a batch ended.
enum Published {
    Done,
    /// Some events were not published.
    Failed(PublishBatchError),
    /// Shutdown's deadline came first: the events (copies of those the
    /// backend was given, which it may or may not have taken).
    Cancelled(Vec<Event>),
}

/// The publishing loop of a queue backend's pipeline.
pub(super) struct Publisher {
    pipeline: Arc<Pipeline>,
    backend: Arc<dyn Backend>,
    config: SpoolConfig,
    spool: VecDeque<Spooled>,
    backoff: Backoff,
    /// When the spool is next published again.
    retry_at: Instant,
    /// Why the backend last failed, for reports.
    last_error: String,
    /// Since when the backend fails, while the spool holds events.
    outage_since: Option<Instant>,
}

impl Publisher {
    pub(super) fn new(pipeline: Arc<Pipeline>, backend: Arc<dyn Backend>, config: SpoolConfig) -> Self {
        Self {
            pipeline,
            backend,
            config,
            spool: VecDeque::new(),
            backoff: Backoff::new(RETRY_BASE, RETRY_MAX),
            retry_at: Instant::now(),
            last_error: String::new(),
            outage_since: None,
        }
    }

    /// Publishes queued emissions until the intake closes and both it and
    /// the spool are empty, or `cancel` fires (shutdown's deadline): then
    /// what is left is reported as shut down. Polls the intake like the
    /// in-process pipeline (see `Pipeline::run`).
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Queued>,
        intake_closed: CancellationToken,
        cancel: CancellationToken,
    ) {
        let mut closing = false;
        let mut ended = false;
        let mut idle_polls = LINGER_POLLS;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            // Shutdown closes intake at once, even while emissions keep coming.
            if !closing && intake_closed.is_cancelled() {
                closing = true;
                rx.close();
            }
            let mut received = 0;
            while !ended && received < BATCH {
                match rx.try_recv() {
                    Ok(q) => {
                        received += 1;
                        // A failed transform is reported by `event`.
                        if let Ok(event) = self.pipeline.event(q) {
                            batch.push(event);
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => ended = true,
                }
            }
            if received > 0 {
                idle_polls = 0;
            }
            if !self.spool.is_empty() {
                // The backend is failing: new events wait behind the spooled ones.
                let now = Instant::now();
                self.spool_all(std::mem::take(&mut batch), now);
                self.give_up(now);
                if self.spool.is_empty() {
                    continue;
                }
                if now >= self.retry_at {
                    if self.retry(&cancel).await.is_err() {
                        break;
                    }
                    continue;
                }
                // Wait for the retry, taking emissions meanwhile.
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    () = intake_closed.cancelled(), if !closing => {}
                    () = tokio::time::sleep_until(self.retry_at) => {}
                    q = rx.recv(), if !ended => match q {
                        Some(q) => {
                            if let Ok(event) = self.pipeline.event(q) {
                                batch.push(event);
                            }
                        }
                        None => ended = true,
                    },
                }
                continue;
            }
            if !batch.is_empty() {
                let events = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                match self.publish(events, &cancel).await {
                    Published::Done => {}
                    Published::Failed(failed) => self.failed(failed, None),
                    Published::Cancelled(events) => {
                        self.report_shut_down(events);
                        break;
                    }
                }
                continue;
            }
            if received > 0 {
                // Every transform failed: look again at once.
                continue;
            }
            if ended {
                break;
            }
            if idle_polls < LINGER_POLLS {
                idle_polls += 1;
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    () = intake_closed.cancelled(), if !closing => {}
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                }
                continue;
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = intake_closed.cancelled(), if !closing => {}
                q = rx.recv() => match q {
                    Some(q) => {
                        idle_polls = 0;
                        if let Ok(event) = self.pipeline.event(q) {
                            batch.push(event);
                        }
                    }
                    None => ended = true,
                },
            }
        }
        // Cut short by the deadline: report what is still spooled or queued.
        let spooled: Vec<Event> = self.spool.drain(..).map(|s| s.event).chain(batch).collect();
        self.report_shut_down(spooled);
        rx.close();
        while let Ok(q) = rx.try_recv() {
            self.pipeline.reject(q, DeliveryError::Shutdown { last: None });
        }
        if let Err(e) = self.backend.close().await {
            tracing::warn!(error = %e, "backend close failed");
        }
    }

    /// Publishes `events` as one batch, unless `cancel` fires first.
    async fn publish(&self, events: Vec<Event>, cancel: &CancellationToken) -> Published {
        let count = events.len();
        // Kept to report them if the deadline cuts the publish short (the
        // backend has the originals then).
        let copies = events.clone();
        let outcome = tokio::select! {
            biased;
            r = self.backend.publish_batch(events) => r,
            () = cancel.cancelled() => return Published::Cancelled(copies),
        };
        match outcome {
            Ok(()) => {
                Stats::add(&self.pipeline.stats.published, count);
                Published::Done
            }
            Err(failed) => {
                Stats::add(&self.pipeline.stats.published, count.saturating_sub(failed.unpublished.len()));
                Published::Failed(failed)
            }
        }
    }

    /// Publishes the spool's oldest events again. `Err` when `cancel` fired.
    async fn retry(&mut self, cancel: &CancellationToken) -> Result<(), ()> {
        let take = self.spool.len().min(BATCH);
        let chunk: Vec<Spooled> = self.spool.drain(..take).collect();
        let since: Vec<(EventId, Instant)> = chunk.iter().map(|s| (s.event.id.clone(), s.since)).collect();
        let events = chunk.into_iter().map(|s| s.event).collect();
        Stats::inc(&self.pipeline.stats.publish_retries);
        match self.publish(events, cancel).await {
            Published::Done => {
                if self.spool.is_empty()
                    && let Some(since) = self.outage_since.take()
                {
                    tracing::info!(after = ?since.elapsed(), "the backend takes events again; the spool is published");
                }
                // What is left of the spool goes at once.
                self.backoff.reset();
                self.retry_at = Instant::now();
                Stats::set(&self.pipeline.stats.spooled, self.spool.len());
                Ok(())
            }
            Published::Failed(failed) => {
                self.failed(failed, Some(since.into_iter().collect()));
                Ok(())
            }
            Published::Cancelled(events) => {
                self.report_shut_down(events);
                Err(())
            }
        }
    }

    /// A publish that failed: what can be tried again waits in the spool
    /// (at its front: it is older than what waits there), the rest is
    /// reported. `since` holds when each of a retried batch's events
    /// first failed.
    fn failed(&mut self, failed: PublishBatchError, since: Option<HashMap<EventId, Instant>>) {
        let PublishBatchError { error, unpublished, .. } = failed;
        let count = unpublished.len();
        self.last_error = error.to_string();
        // A transport error passes; the others (closed, an event that
        // cannot be encoded) do not.
        if !matches!(error, BackendError::Transport(_)) || self.config.capacity == 0 {
            for event in unpublished {
                self.report(event, DeliveryError::Backend(self.last_error.clone()));
            }
            Stats::set(&self.pipeline.stats.spooled, self.spool.len());
            return;
        }
        let now = Instant::now();
        if self.outage_since.is_none() {
            self.outage_since = Some(now);
            tracing::warn!(
                error = %self.last_error,
                events = count,
                spooled = self.spool.len() + count,
                "could not publish; the events wait in the spool and are published again"
            );
        } else {
            tracing::debug!(error = %self.last_error, events = count, "publish failed again");
        }
        // The oldest are kept when not all fit.
        let room = self.config.capacity.saturating_sub(self.spool.len());
        let mut unpublished = unpublished;
        for event in unpublished.split_off(room.min(count)) {
            self.overflow(event);
        }
        let since = since.unwrap_or_default();
        for event in unpublished.into_iter().rev() {
            let since = since.get(&event.id).copied().unwrap_or(now);
            self.spool.push_front(Spooled { event, since });
        }
        self.retry_at = now + self.backoff.next_delay();
        Stats::set(&self.pipeline.stats.spooled, self.spool.len());
    }

    /// New events join the spool at its back, as long as there is room.
    fn spool_all(&mut self, events: Vec<Event>, now: Instant) {
        if events.is_empty() {
            return;
        }
        for event in events {
            if self.spool.len() < self.config.capacity {
                self.spool.push_back(Spooled { event, since: now });
            } else {
                self.overflow(event);
            }
        }
        Stats::set(&self.pipeline.stats.spooled, self.spool.len());
    }

    /// Reports the spooled events that waited longer than the give-up time.
    fn give_up(&mut self, now: Instant) {
        let give_up = self.config.give_up;
        if !self.spool.iter().any(|s| now.duration_since(s.since) >= give_up) {
            return;
        }
        let (expired, kept): (Vec<Spooled>, Vec<Spooled>) =
            self.spool.drain(..).partition(|s| now.duration_since(s.since) >= give_up);
        self.spool = kept.into();
        if self.spool.is_empty() {
            self.outage_since = None;
        }
        tracing::error!(events = expired.len(), error = %self.last_error, ?give_up, "gave up publishing events");
        for s in expired {
            let error = format!("{} (publish retried for {give_up:?}, then given up)", self.last_error);
            self.report(s.event, DeliveryError::Backend(error));
        }
        Stats::set(&self.pipeline.stats.spooled, self.spool.len());
    }

    fn overflow(&self, event: Event) {
        let error = DeliveryError::SpoolFull { capacity: self.config.capacity, last: self.last_error.clone() };
        self.report(event, error);
    }

    fn report_shut_down(&self, events: Vec<Event>) {
        let last = (!self.last_error.is_empty()).then(|| self.last_error.clone());
        for event in events {
            self.report(event, DeliveryError::Shutdown { last: last.clone() });
        }
        Stats::set(&self.pipeline.stats.spooled, self.spool.len());
    }

    fn report(&self, event: Event, error: DeliveryError) {
        tracing::debug!(event_id = %event.id, error = %error, "could not publish event");
        self.pipeline.fail(DeliveryFailure::of_event(Arc::new(event), error));
    }
}
