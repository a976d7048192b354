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

    pub(super) fn is_tracked(&self, id: &str) -> bool {
        lock(&self.0).contains(id)
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

/// Resets the idle time of the entries this consumer is delivering and
/// still owns: `XCLAIM ... 0 JUSTID` (which leaves the delivery count
/// alone) of those that `XPENDING` lists under this consumer's name, in one
/// script, so the check and the reset see the same state.
///
/// Why the check: a plain `XCLAIM` with min-idle 0 takes an entry whoever
/// holds it. When this worker stalled (a long pause, Redis unreachable)
/// past the claim min-idle, another one rightly claimed its entries and is
/// delivering them; taking them back would make that worker's heartbeat
/// fail the same way in turn, and leave the entry with whichever of the two
/// stops first. A min-idle above 0 does not help: the other worker's own
/// heartbeat keeps the entry as fresh as ours would. The entry stays in
/// `InFlight` all the same: this worker's delivery goes on, and its ack
/// (`XACK` does not check the owner) settles the entry for both.
///
/// KEYS: the stream. ARGV: group, consumer, the ids.
const REFRESH: &str = r"
    local mine = {}
    for i = 3, #ARGV do
        local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
        if #held > 0 then mine[#mine + 1] = ARGV[i] end
    end
    local count = #mine
    if count == 0 then return 0 end
    mine[count + 1] = 'JUSTID'
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(mine))
    return count";

/// Refreshes the entries this consumer is delivering (see [`REFRESH`]),
/// every third of the claim min-idle, so that no other worker claims them.
/// Stops when the returned guard is dropped (with the consume stream).
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
                        let mut cmd = redis::cmd("EVAL");
                        cmd.arg(REFRESH).arg(1).arg(&config.stream).arg(&config.group).arg(&config.consumer);
                        for id in chunk {
                            cmd.arg(id);
                        }
                        cmd.query_async::<Value>(&mut conn).await.map(drop)
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
