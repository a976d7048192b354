//! Claims: `XAUTOCLAIM` of the entries dead consumers left pending, with how often each was handed out.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use tokio::time::Instant;

use super::Inner;
use super::cleanup::Cleanup;
use super::connection::within;
use super::reply::{Entry, as_array, as_int, as_string, autoclaim_reply, claim_reply};

/// Where the scan of the group's pending list is, and when it is due.
pub(super) struct Claims {
    /// When to look for claimable entries next (`None`: at once).
    next: Option<Instant>,
    cursor: String,
    cleanup: Cleanup,
}

impl Claims {
    pub(super) fn new() -> Self {
        Self { next: None, cursor: "0-0".to_owned(), cleanup: Cleanup::new() }
    }

    pub(super) fn is_due(&self, now: Instant) -> bool {
        self.next.is_none_or(|at| now >= at)
    }

    /// The time from `now` until the next claim is due (`otherwise` when it
    /// is due at once).
    pub(super) fn until_due(&self, now: Instant, otherwise: Duration) -> Duration {
        self.next.map_or(otherwise, |at| at.saturating_duration_since(now))
    }

    /// Claims entries idle in the group's pending list for longer than the
    /// claim min-idle (a dead consumer's), a page at a time. Returns them
    /// with how many times each was handed out.
    pub(super) async fn next_page(
        &mut self,
        inner: &Inner,
        conn: &mut MultiplexedConnection,
    ) -> Result<(Vec<Entry>, HashMap<String, u64>), RedisError> {
        let config = &inner.config;
        let min_idle = u64::try_from(config.claim_min_idle.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&config.stream)
            .arg(&config.group)
            .arg(&config.consumer)
            .arg(min_idle)
            .arg(&self.cursor)
            .arg("COUNT")
            .arg(config.batch_size);
        let reply = within(config.timeout, "XAUTOCLAIM", cmd.query_async::<Value>(conn)).await?;
        let (cursor, entries) = autoclaim_reply(reply);
        let mut entries = inner.in_flight.without_tracked(entries);
        // A full scan done: wait for the next interval; else go on at once.
        if cursor == "0-0" {
            self.next = Some(Instant::now() + config.claim_interval);
            self.cleanup.forget_idle_consumers(conn, config).await;
            let orphans = orphans(inner, conn, &entries).await?;
            if !orphans.is_empty() {
                tracing::info!(count = orphans.len(), consumer = %config.consumer, "took back entries of this consumer whose read or dead-lettering failed");
                entries.extend(orphans);
            }
        } else {
            self.next = None;
        }
        self.cursor = cursor;
        // Entries this consumer is already delivering are not handed out twice.
        if entries.is_empty() {
            return Ok(Default::default());
        }
        let counts = delivery_counts(inner, conn, &entries).await?;
        tracing::info!(count = entries.len(), consumer = %config.consumer, "claimed entries left pending");
        Ok((entries, counts))
    }
}

/// This consumer's own pending entries that it is not delivering: a read
/// whose answer was lost (it timed out, and Redis handed the entries out
/// when it came back) or a dead-lettering that failed. Nobody would hand
/// them out before the claim min-idle; they are taken again (`XCLAIM`,
/// which counts a delivery) at the end of each claim scan. No read of this
/// consumer is under way meanwhile (reads and scans take turns), so an
/// untracked pending entry is one of those. Idle for at least the command
/// timeout, to leave alone anything just handed out.
async fn orphans(inner: &Inner, conn: &mut MultiplexedConnection, claimed: &[Entry]) -> Result<Vec<Entry>, RedisError> {
    let config = &inner.config;
    let idle = u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX);
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(&config.stream)
        .arg(&config.group)
        .arg("IDLE")
        .arg(idle)
        .arg("-")
        .arg("+")
        .arg(config.batch_size)
        .arg(&config.consumer);
    let reply = within(config.timeout, "XPENDING", cmd.query_async::<Value>(conn)).await?;
    let ids: Vec<String> = as_array(&reply)
        .unwrap_or(&[])
        .iter()
        .filter_map(|row| as_array(row)?.first().and_then(as_string))
        .filter(|id| !inner.in_flight.is_tracked(id) && !claimed.iter().any(|e| e.id() == id))
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = redis::cmd("XCLAIM");
    cmd.arg(&config.stream).arg(&config.group).arg(&config.consumer).arg(0);
    for id in &ids {
        cmd.arg(id);
    }
    let reply = within(config.timeout, "XCLAIM", cmd.query_async::<Value>(conn)).await?;
    Ok(claim_reply(&reply))
}

/// How many times each of `entries` (just claimed by this consumer) was
/// handed out, from `XPENDING`: one query per entry, in one round trip. A
/// query over their id range would be cut by its count limit, and other
/// entries of this consumer's in that range (not tracked ones too: an ack
/// in progress, a failed dead-lettering) would push some of the claimed
/// ones out of the answer, past the poison check.
async fn delivery_counts(
    inner: &Inner,
    conn: &mut MultiplexedConnection,
    entries: &[Entry],
) -> Result<HashMap<String, u64>, RedisError> {
    let config = &inner.config;
    let mut pipe = redis::pipe();
    for entry in entries {
        pipe.cmd("XPENDING")
            .arg(&config.stream)
            .arg(&config.group)
            .arg(entry.id())
            .arg(entry.id())
            .arg(1)
            .arg(&config.consumer);
    }
    let replies = within(config.timeout, "XPENDING", pipe.query_async::<Vec<Value>>(conn)).await?;
    let mut counts = HashMap::new();
    for reply in &replies {
        for row in as_array(reply).unwrap_or(&[]) {
            let Some([id, _consumer, _idle, count, ..]) = as_array(row) else { continue };
            if let (Some(id), Some(count)) = (as_string(id), as_int(count)) {
                counts.insert(id, count);
            }
        }
    }
    Ok(counts)
}
