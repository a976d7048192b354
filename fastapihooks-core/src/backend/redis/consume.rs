//! The consumer loop: the consume stream, reading the group with `XREADGROUP` on a connection of its own.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value};
use tokio::time::Instant;
use tokio_util::sync::DropGuard;

use super::ack::EntryAck;
use super::claim::Claims;
use super::connection::within;
use super::reply::{Entry, is_connection_error, is_nogroup, read_reply_entries};
use super::{Inner, dead_letter, heartbeat, schedule};
use crate::backend::{Acker, BackendError, Received};
use crate::retry::Backoff;

impl Inner {
    pub(super) fn consume(self: &Arc<Self>) -> BoxStream<'static, Result<Received, BackendError>> {
        if self.consumed.swap(true, Ordering::AcqRel) {
            return stream::once(async { Err(BackendError::AlreadyConsumed) }).boxed();
        }
        let state = Consumer {
            inner: self.clone(),
            conn: None,
            group_ready: false,
            ready: VecDeque::new(),
            backoff: Backoff::new(Duration::from_millis(50), self.config.max_backoff),
            wait: None,
            claims: Claims::new(),
            heartbeat: None,
            mover: None,
        };
        stream::unfold(state, |mut state| async move {
            let item = state.next_item().await?;
            Some((item, state))
        })
        .boxed()
    }
}

/// The consume stream's state.
struct Consumer {
    inner: Arc<Inner>,
    /// The dedicated connection of the blocking read (no response timeout).
    conn: Option<MultiplexedConnection>,
    group_ready: bool,
    ready: VecDeque<Result<Received, BackendError>>,
    /// Waits between failed steps, longer with each failure in a row.
    backoff: Backoff,
    /// The wait before the next step, after a failure.
    wait: Option<Duration>,
    claims: Claims,
    /// Stops the heartbeat task when the stream is dropped.
    heartbeat: Option<DropGuard>,
    /// Stops the retry schedule's mover when the stream is dropped.
    mover: Option<DropGuard>,
}

impl Consumer {
    async fn next_item(&mut self) -> Option<Result<Received, BackendError>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            let closed = self.inner.closed.clone();
            if closed.is_cancelled() {
                return None;
            }
            if let Some(wait) = self.wait.take() {
                tokio::select! {
                    () = closed.cancelled() => return None,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            // Close interrupts any step (a connection attempt, a blocking
            // read); entries read by an interrupted step stay pending and
            // are claimed later, like a crashed consumer's.
            let step = tokio::select! {
                () = closed.cancelled() => return None,
                step = self.fill() => step,
            };
            match step {
                Ok(()) => self.backoff.reset(),
                Err(e) if is_nogroup(&e) => {
                    tracing::warn!(
                        stream = %self.inner.config.stream,
                        group = %self.inner.config.group,
                        "consumer group missing (Redis lost its data?); creating it again"
                    );
                    self.group_ready = false;
                    // Recreated at once: the shortest wait, whatever came before.
                    self.backoff.reset();
                    self.wait = Some(self.backoff.next_delay());
                }
                Err(e) => {
                    self.wait = Some(self.backoff.next_delay());
                    if is_connection_error(&e) {
                        self.conn = None;
                        self.inner.connections.forget_shared().await;
                        let url = &self.inner.config.url;
                        return Some(Err(BackendError::transport(format!("redis at {url} unreachable: {e}"))));
                    }
                    return Some(Err(self.inner.transport("consume", e)));
                }
            }
        }
    }

    /// One round: connect if needed, make sure the group exists, claim what
    /// is due, else read new entries. Fills `ready` (maybe with nothing).
    async fn fill(&mut self) -> Result<(), RedisError> {
        let inner = self.inner.clone();
        let config = &inner.config;
        let mut conn = if let Some(conn) = self.conn.clone() {
            conn
        } else {
            let conn = inner.connections.dedicated().await?;
            tracing::debug!(url = %config.url, consumer = %config.consumer, "redis consumer connected");
            self.conn = Some(conn.clone());
            conn
        };
        if !self.group_ready {
            let mut create = redis::cmd("XGROUP");
            create.arg("CREATE").arg(&config.stream).arg(&config.group).arg("0").arg("MKSTREAM");
            let created = within(config.timeout, "XGROUP CREATE", create.query_async::<Value>(&mut conn)).await;
            match created {
                Ok(_) => tracing::info!(stream = %config.stream, group = %config.group, "created consumer group"),
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e),
            }
            self.group_ready = true;
        }
        if self.heartbeat.is_none() {
            self.heartbeat = Some(heartbeat::start(inner.clone()));
        }
        if self.mover.is_none() {
            self.mover = Some(schedule::start_mover(inner.clone()));
        }
        let now = Instant::now();
        if self.claims.is_due(now) {
            let (entries, counts) = self.claims.next_page(&inner, &mut conn).await?;
            self.take(&mut conn, entries, Some(&counts)).await?;
            if !self.ready.is_empty() {
                return Ok(());
            }
        }
        // Wake up in time for the next claim.
        let until_claim = self.claims.until_due(now, config.block);
        let block = config.block.min(until_claim).max(Duration::from_millis(1));
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&config.group)
            .arg(&config.consumer)
            .arg("COUNT")
            .arg(config.batch_size)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&config.stream)
            .arg(">");
        let read = cmd.query_async::<Value>(&mut conn);
        // No response timeout on this connection: a silently dead one is
        // caught by this bound instead.
        let reply = match tokio::time::timeout(block + config.timeout, read).await {
            Ok(reply) => reply?,
            Err(_) => {
                self.conn = None;
                let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "XREADGROUP got no answer in time");
                return Err(RedisError::from(timed_out));
            }
        };
        let entries = read_reply_entries(reply);
        self.take(&mut conn, entries, None).await
    }

    /// Turns raw entries into ready items: events are tracked and handed
    /// out; malformed or exhausted ones are dead-lettered and reported. An
    /// entry whose dead-lettering fails stays pending (it is claimed again
    /// later) and the others are still handed out; the first such failure
    /// is returned once the batch is done, and the entries after it are not
    /// tried (Redis just failed one write).
    async fn take(
        &mut self,
        conn: &mut MultiplexedConnection,
        entries: Vec<Entry>,
        counts: Option<&HashMap<String, u64>>,
    ) -> Result<(), RedisError> {
        let config = &self.inner.config;
        let max = config.max_deliveries;
        let mut failed: Option<RedisError> = None;
        for entry in entries {
            let deliveries = counts.and_then(|c| c.get(entry.id()).copied()).unwrap_or(1);
            let decoded = match entry.field(schedule::DELIVERY_FIELD) {
                Some(record) => match schedule::decode_due(conn, config, &entry, record).await {
                    Ok(decoded) => decoded.map(|(e, d)| (e, Some(d))),
                    // The event's copy could not be read: the entry stays
                    // pending, and is claimed again later.
                    Err(e) => {
                        failed.get_or_insert(e);
                        continue;
                    }
                },
                None => entry.decode(config.max_event_bytes).map(|e| (e, None)),
            };
            let reported = match decoded {
                Ok((event, _)) if deliveries > max => {
                    if failed.is_some() {
                        continue;
                    }
                    dead_letter::poison(conn, config, &entry, event, deliveries).await
                }
                Ok((event, due)) => {
                    self.inner.in_flight.track(entry.id());
                    let release = due.as_ref().map(|_| format!("{}{}", config.payload_prefix, event.id.as_str()));
                    let ack = Acker::new(EntryAck { inner: self.inner.clone(), id: entry.into_id(), release });
                    let item = match due {
                        Some(delivery) => Received::due(event, delivery, ack),
                        None => Received::new(event, ack),
                    };
                    self.ready.push_back(Ok(item));
                    continue;
                }
                Err(why) => {
                    if failed.is_some() {
                        continue;
                    }
                    dead_letter::malformed(conn, config, &entry, &why, deliveries).await
                }
            };
            match reported {
                Ok(reported) => self.ready.push_back(Err(reported)),
                Err(e) => {
                    tracing::warn!(
                        entry_id = %entry.log_id(),
                        error = %e,
                        "could not move an entry to the dead-letter stream; it stays pending and is claimed again later"
                    );
                    failed = Some(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }
}
