//! Claims: `XAUTOCLAIM` of the entries dead consumers left pending, with how often each was handed out.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use tokio::time::Instant;

use super::Inner;
use super::cleanup::forget_idle_consumers;
use super::reply::{Entry, as_array, as_int, as_string, autoclaim_reply};

/// Where the scan of the group's pending list is, and when it is due.
pub(super) struct Claims {
    /// When to look for claimable entries next (`None`: at once).
    next: Option<Instant>,
    cursor: String,
}

impl Claims {
    pub(super) fn new() -> Self {
        Self { next: None, cursor: "0-0".to_owned() }
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
        let reply = redis::cmd("XAUTOCLAIM")
            .arg(&config.stream)
            .arg(&config.group)
            .arg(&config.consumer)
            .arg(min_idle)
            .arg(&self.cursor)
            .arg("COUNT")
            .arg(config.batch_size)
            .query_async::<Value>(conn)
            .await?;
        let (cursor, entries) = autoclaim_reply(reply);
        // A full scan done: wait for the next interval; else go on at once.
        if cursor == "0-0" {
            self.next = Some(Instant::now() + config.claim_interval);
            forget_idle_consumers(conn, config).await;
        } else {
            self.next = None;
        }
        self.cursor = cursor;
        if entries.is_empty() {
            return Ok(Default::default());
        }
        // Entries this consumer is already delivering are not handed out twice.
        let entries = inner.in_flight.without_tracked(entries);
        if entries.is_empty() {
            return Ok(Default::default());
        }
        let counts = delivery_counts(inner, conn, &entries).await?;
        tracing::info!(count = entries.len(), consumer = %config.consumer, "claimed entries left pending by another consumer");
        Ok((entries, counts))
    }
}

/// How many times each of `entries` (pending with this consumer) was
/// handed out, from `XPENDING`.
async fn delivery_counts(
    inner: &Inner,
    conn: &mut MultiplexedConnection,
    entries: &[Entry],
) -> Result<HashMap<String, u64>, RedisError> {
    let config = &inner.config;
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return Ok(Default::default()) };
    let in_flight = inner.in_flight.len();
    let reply = redis::cmd("XPENDING")
        .arg(&config.stream)
        .arg(&config.group)
        .arg(first.id())
        .arg(last.id())
        .arg(entries.len() + in_flight)
        .arg(&config.consumer)
        .query_async::<Value>(conn)
        .await?;
    let mut counts = HashMap::new();
    for row in as_array(&reply).unwrap_or(&[]) {
        let Some([id, _consumer, _idle, count, ..]) = as_array(row) else { continue };
        if let (Some(id), Some(count)) = (as_string(id), as_int(count)) {
            counts.insert(id, count);
        }
    }
    Ok(counts)
}
