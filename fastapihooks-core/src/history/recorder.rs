//! The engine's side of the attempt log: deliveries hand their records to
//! a bounded channel and go on; one writer task takes them in batches to
//! the [`AttemptLog`], and prunes it by the [`Retention`] policy.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{AttemptLog, AttemptRecord, Retention};
use crate::retry::Backoff;
use crate::stats::Stats;

/// Records waiting for the writer; past it, new ones are dropped and
/// counted (`stats().attempts_unrecorded`): the log is a record of
/// deliveries, never a reason to slow them.
const CHANNEL: usize = 16_384;
/// Records written by one call to [`AttemptLog::record`].
const BATCH: usize = 2048;
/// Writes of one batch tried before it is dropped (and counted).
const WRITE_TRIES: u32 = 4;

/// Hands attempt records to the writer task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Recorder {
    tx: mpsc::Sender<AttemptRecord>,
    stats: Arc<Stats>,
}

/// The writer and pruner tasks, until [`Writer::finish`] stops them.
pub(crate) struct Writer {
    task: tokio::task::JoinHandle<()>,
    pruner: Option<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
}

impl Recorder {
    /// Starts the writer (and the pruner) for `log` on the current runtime.
    pub(crate) fn start(log: Arc<dyn AttemptLog>, retention: Retention, stats: Arc<Stats>) -> (Self, Writer) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let stop = CancellationToken::new();
        // Pruning runs beside the writing: a long prune (a million old
        // records, in batches with pauses) must not hold records back.
        let pruner = (retention.max_age.is_some() || retention.max_count.is_some())
            .then(|| tokio::spawn(prune(log.clone(), retention, stop.clone())));
        let task = tokio::spawn(write(log, rx, stats.clone(), stop.clone()));
        (Self { tx, stats }, Writer { task, pruner, stop })
    }

    /// Queues one record; drops it (counted) when the writer is behind.
    pub(crate) fn record(&self, record: AttemptRecord) {
        if self.tx.try_send(record).is_err() {
            Stats::inc(&self.stats.attempts_unrecorded);
        }
    }
}

impl Writer {
    /// Writes what is queued, then stops, by `deadline`.
    pub(crate) async fn finish(self, deadline: tokio::time::Instant) {
        self.stop.cancel();
        if let Some(pruner) = self.pruner {
            pruner.abort();
        }
        let mut task = self.task;
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            tracing::warn!("the attempt log writer did not finish by the deadline; records still queued are lost");
            task.abort();
        }
    }
}

async fn write(
    log: Arc<dyn AttemptLog>,
    mut rx: mpsc::Receiver<AttemptRecord>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let stopping = tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, BATCH) => n == 0,
            () = stop.cancelled() => true,
        };
        if stopping {
            // The pruner too, when the engine went away without a
            // shutdown (every sender dropped).
            stop.cancel();
            // Whatever is queued is written before the writer ends.
            rx.close();
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                write_batch(&*log, &mut batch, &stats).await;
            }
            return;
        }
        write_batch(&*log, &mut batch, &stats).await;
    }
}

async fn write_batch(log: &dyn AttemptLog, batch: &mut Vec<AttemptRecord>, stats: &Stats) {
    if batch.is_empty() {
        return;
    }
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        match log.record(batch).await {
            Ok(()) => break,
            Err(e) if backoff.failures() + 1 >= WRITE_TRIES => {
                tracing::warn!(error = %e, records = batch.len(), "could not write attempt records; they are dropped");
                Stats::add(&stats.attempts_unrecorded, batch.len());
                batch.clear();
                return;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "could not write attempt records; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
    Stats::add(&stats.attempts_recorded, batch.len());
    batch.clear();
}

/// Every `retention.interval`, prunes.
async fn prune(log: Arc<dyn AttemptLog>, retention: Retention, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retention.interval) => {}
        }
        prune_all(&*log, &retention, &stop).await;
    }
}

/// Prunes in batches, pausing between them, until a batch comes back
/// short (or the engine is stopping).
pub(crate) async fn prune_all(log: &dyn AttemptLog, retention: &Retention, stop: &CancellationToken) {
    loop {
        match log.prune(retention, chrono::Utc::now()).await {
            Ok(n) if n >= retention.batch_size as u64 => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not prune the attempt log; trying again at the next interval");
                return;
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retention.pause) => {}
        }
    }
}
