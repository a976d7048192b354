//! The durable retry schedule: deliveries due later wait in a sorted set,
//! and whichever worker is alive moves them back to the stream when due.
//!
//! ```text
//! defer ── MULTI: HSETNX {stream}:payload:{event id} event <json>   (one copy per event)
//!                 HINCRBY {stream}:payload:{event id} refs 1          (one per waiting delivery)
//!                 ZADD {stream}:schedule <due ms> <record>            (whom, attempts)
//! mover ── every poll interval, one script: due records -> ZREM + XADD {stream} * delivery <record>
//! consume: a `delivery` entry -> HGET the payload -> Received::due; its ack also releases one ref
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::RedisError;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::connection::within;
use super::reply::Entry;
use super::validate::{escaped, event_error, is_entry_id, sanitized};
use super::{Config, Inner};
use crate::backend::{BackendError, Deferral, RetrySchedule, Scheduled};
use crate::event::{Event, EventId};

/// The field of a stream entry that holds a due delivery's record.
pub(super) const DELIVERY_FIELD: &str = "delivery";

/// How long an event's copy outlives its last deferral (a safety net for a
/// copy whose count a crash left behind; longer than any retry schedule's
/// step).
const PAYLOAD_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The largest delivery record read back (they are a few hundred bytes).
const MAX_RECORD_BYTES: usize = 16 * 1024;

/// Records moved per script call (the mover calls again while it finds a
/// full batch).
const MOVE_BATCH: usize = 256;

/// A delivery as the schedule keeps it: whom, after how many attempts, of
/// which event (whose copy is kept apart, once).
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    event_id: String,
    #[serde(flatten)]
    delivery: Scheduled,
    /// Keeps two records of one delivery apart in the sorted set.
    nonce: u64,
}

/// The sorted set's key and the prefix of the events' copies.
pub(super) fn keys(stream: &str) -> (String, String) {
    (format!("{stream}:schedule"), format!("{stream}:payload:"))
}

/// The [`RetrySchedule`] of a [`RedisStreamsBackend`](super::RedisStreamsBackend).
pub(super) struct RedisSchedule(pub(super) Arc<Inner>);

#[async_trait]
impl RetrySchedule for RedisSchedule {
    async fn defer(&self, deferral: Deferral) -> Result<(), BackendError> {
        let inner = &self.0;
        let config = &inner.config;
        let Deferral { event, delivery, due } = deferral;
        let record = record(&event.id, delivery).map_err(|e| BackendError::Codec(e.to_string()))?;
        let json = serde_json::to_vec(&*event).map_err(|e| BackendError::Codec(e.to_string()))?;
        let due_ms = millis_since_epoch(due);
        let payload = format!("{}{}", config.payload_prefix, event.id.as_str());
        let ttl = PAYLOAD_TTL.as_secs() + due.duration_since(SystemTime::now()).unwrap_or_default().as_secs();
        inner
            .connections
            .with_shared(|mut conn| {
                let (record, json, payload) = (&record, &json, &payload);
                async move {
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    keep_copy_for(&mut pipe, payload, json, ttl);
                    pipe.cmd("ZADD").arg(&config.schedule).arg(due_ms).arg(record).ignore();
                    pipe.query_async::<()>(&mut conn).await
                }
            })
            .await
            .map_err(|e| inner.transport("ZADD (retry schedule)", e))
    }
}

/// The record of one delivery of the event `event_id`.
pub(super) fn record(event_id: &EventId, delivery: Scheduled) -> serde_json::Result<String> {
    serde_json::to_string(&Record { event_id: event_id.as_str().to_owned(), delivery, nonce: rand::random() })
}

/// Adds to `pipe` what keeps one more reference to an event's copy at
/// `key` (made with the first), for `ttl` seconds at least.
fn keep_copy_for(pipe: &mut redis::Pipeline, key: &str, event_json: &[u8], ttl: u64) {
    pipe.cmd("HSETNX").arg(key).arg("event").arg(event_json).ignore();
    pipe.cmd("HINCRBY").arg(key).arg("refs").arg(1).ignore();
    pipe.cmd("EXPIRE").arg(key).arg(ttl).ignore();
}

/// [`keep_copy_for`] a delivery due now.
pub(super) fn keep_copy(pipe: &mut redis::Pipeline, key: &str, event_json: &[u8]) {
    keep_copy_for(pipe, key, event_json, PAYLOAD_TTL.as_secs());
}

/// Moves due records to the stream, atomically: a record is either waiting
/// or an entry, never both, never neither.
const MOVE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, record in ipairs(due) do
  redis.call('ZREM', KEYS[1], record)
  redis.call('XADD', KEYS[2], '*', ARGV[3], record)
end
return #due
";

/// Releases one reference to an event's copy, and the copy with the last.
pub(super) const RELEASE: &str = r"
local left = redis.call('HINCRBY', KEYS[1], 'refs', -1)
if left <= 0 then redis.call('DEL', KEYS[1]) end
return left
";

/// Starts the mover: every poll interval, due records go back to the
/// stream (for any consumer of the group). Stops when the guard is dropped
/// (with the consume stream) or the backend closes.
pub(super) fn start_mover(inner: Arc<Inner>) -> DropGuard {
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    tokio::spawn(async move {
        let every = inner.config.schedule_poll;
        let mut failing = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = inner.closed.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            // Moves while batches come back full, a bounded number of times
            // per tick, so a large due backlog drains without a busy loop.
            for _ in 0..16 {
                let config = &inner.config;
                let now = millis_since_epoch(SystemTime::now());
                let moved = inner
                    .connections
                    .with_shared(|mut conn| async move {
                        redis::cmd("EVAL")
                            .arg(MOVE)
                            .arg(2)
                            .arg(&config.schedule)
                            .arg(&config.stream)
                            .arg(now)
                            .arg(MOVE_BATCH)
                            .arg(DELIVERY_FIELD)
                            .query_async::<usize>(&mut conn)
                            .await
                    })
                    .await;
                match moved {
                    Ok(n) => {
                        if failing {
                            tracing::info!(stream = %config.stream, "retry schedule reachable again");
                            failing = false;
                        }
                        if n < MOVE_BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        // Logged once per failing streak: the next tick tries again.
                        if !failing {
                            tracing::warn!(stream = %config.stream, error = %e, "could not move due retries to the stream; trying again");
                            failing = true;
                        }
                        break;
                    }
                }
            }
        }
    });
    guard
}

/// A `delivery` entry read back: its event (from the kept copy) and whom it
/// goes to. `Ok(Err(why))` when the entry is malformed or its copy is gone.
pub(super) async fn decode_due(
    conn: &mut MultiplexedConnection,
    config: &Config,
    entry: &Entry,
    record: &[u8],
) -> Result<Result<(Event, Scheduled), String>, RedisError> {
    if !is_entry_id(entry.id()) {
        return Ok(Err(format!("its entry id {} is not `<ms>-<seq>`", escaped(entry.id()))));
    }
    if record.len() > MAX_RECORD_BYTES {
        return Ok(Err(format!("its delivery record is {} bytes, over {MAX_RECORD_BYTES}", record.len())));
    }
    // serde's messages may quote the input: made safe to log.
    let record: Record = match serde_json::from_slice(record) {
        Ok(record) => record,
        Err(e) => return Ok(Err(format!("invalid delivery record: {}", sanitized(&e.to_string())))),
    };
    if !EventId::from_string(record.event_id.clone()).is_well_formed() {
        return Ok(Err(format!(
            "the event id {} of its delivery record is not well formed",
            escaped(&record.event_id)
        )));
    }
    let payload = format!("{}{}", config.payload_prefix, record.event_id);
    let json: Option<Vec<u8>> = within(
        config.timeout,
        "HGET (a due delivery's event)",
        redis::cmd("HGET").arg(&payload).arg("event").query_async(conn),
    )
    .await?;
    let Some(json) = json else {
        return Ok(Err(format!("the copy of event {} is gone", record.event_id)));
    };
    if json.len() > config.max_event_bytes {
        return Ok(Err(format!("the copy of event {} is over the size limit", record.event_id)));
    }
    let event = match serde_json::from_slice::<Event>(&json) {
        Ok(event) => event,
        Err(e) => return Ok(Err(format!("the kept event is not valid: {}", sanitized(&e.to_string())))),
    };
    if event.id.as_str() != record.event_id {
        return Ok(Err("the kept event does not match its delivery record".to_owned()));
    }
    match event_error(&event) {
        None => Ok(Ok((event, record.delivery))),
        Some(why) => Ok(Err(why)),
    }
}

fn millis_since_epoch(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TargetRef;

    #[test]
    fn records_round_trip() {
        let r = Record {
            event_id: "evt_1".into(),
            delivery: Scheduled::new(TargetRef::Static { index: 2, url: "https://a.example/h".into() }, 3),
            nonce: 7,
        };
        let json = serde_json::to_string(&r).unwrap();
        let back: Record = serde_json::from_str(&json).unwrap();
        assert_eq!(back.delivery, r.delivery);
        assert_eq!(back.event_id, "evt_1");
    }
}
