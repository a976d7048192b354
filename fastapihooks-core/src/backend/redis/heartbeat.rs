//! The heartbeat: the entries this consumer is delivering, kept fresh so that no other worker claims them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::Inner;
use super::reply::Entry;

/// Entries read by this consumer and not acked yet: kept fresh (their
/// idle time reset) so no other worker claims them.
pub(super) struct InFlight(Mutex<HashSet<String>>);

impl InFlight {
    pub(super) fn new() -> Self {
        Self(Mutex::new(HashSet::new()))
    }

    /// An entry handed out.
    pub(super) fn track(&self, id: &str) {
        lock(&self.0).insert(id.to_owned());
    }

    /// An entry acked.
    pub(super) fn untrack(&self, id: &str) {
        lock(&self.0).remove(id);
    }

    pub(super) fn len(&self) -> usize {
        lock(&self.0).len()
    }

    /// `entries` without those this consumer is already delivering.
    pub(super) fn without_tracked(&self, entries: Vec<Entry>) -> Vec<Entry> {
        let in_flight = lock(&self.0);
        entries.into_iter().filter(|e| !in_flight.contains(e.id())).collect()
    }

    fn ids(&self) -> Vec<String> {
        lock(&self.0).iter().cloned().collect()
    }
}

/// Resets the idle time of the entries this consumer is delivering, every
/// third of the claim min-idle, so that no other worker claims them. Stops
/// when the returned guard is dropped (with the consume stream).
pub(super) fn start(inner: Arc<Inner>) -> DropGuard {
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    let every = (inner.config.claim_min_idle / 3).max(Duration::from_millis(10));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let ids = inner.in_flight.ids();
            for chunk in ids.chunks(256) {
                let config = &inner.config;
                let touched = inner
                    .connections
                    .with_shared(|mut conn| async move {
                        let mut cmd = redis::cmd("XCLAIM");
                        cmd.arg(&config.stream).arg(&config.group).arg(&config.consumer).arg(0);
                        for id in chunk {
                            cmd.arg(id);
                        }
                        cmd.arg("JUSTID").query_async::<Value>(&mut conn).await.map(drop)
                    })
                    .await;
                if let Err(e) = touched {
                    tracing::debug!(error = %e, "could not refresh in-flight entries");
                    break;
                }
            }
        }
    });
    guard
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
