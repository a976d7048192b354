//! Dead-lettering: a malformed or poison entry is moved to the dead-letter stream and reported.

use redis::RedisError;
use redis::aio::MultiplexedConnection;

use super::Config;
use super::connection::within;
use super::reply::Entry;
use crate::backend::BackendError;
use crate::event::Event;

/// Sets aside an event handed out more than `max_deliveries` times without
/// an ack; returns what the consume stream reports.
pub(super) async fn poison(
    conn: &mut MultiplexedConnection,
    config: &Config,
    entry: &Entry,
    event: Event,
    deliveries: u64,
) -> Result<BackendError, RedisError> {
    let max = config.max_deliveries;
    let reason = format!("handed out {deliveries} times without an ack (max_deliveries {max})");
    move_entry(conn, config, entry, &reason, deliveries).await?;
    Ok(BackendError::DeadLettered { event: Box::new(event), reason })
}

/// Sets aside an entry that is not an event (`why` says what is wrong, in
/// words safe to log); returns what the consume stream reports.
pub(super) async fn malformed(
    conn: &mut MultiplexedConnection,
    config: &Config,
    entry: &Entry,
    why: &str,
    deliveries: u64,
) -> Result<BackendError, RedisError> {
    let entry_id = entry.log_id();
    let reason = format!("stream entry {entry_id} is not a fastapihooks event: {why}");
    move_entry(conn, config, entry, &reason, deliveries).await?;
    tracing::error!(
        stream = %config.stream,
        entry_id = %entry_id,
        dead_letter_stream = %config.dead,
        error = %why,
        "malformed stream entry moved to the dead-letter stream"
    );
    Ok(BackendError::Codec(format!("{reason}; moved to {}", config.dead)))
}

/// The most field/value pairs of an entry copied to the dead-letter stream.
const MAX_COPIED_FIELDS: usize = 1000;

/// Copies an entry to the dead-letter stream and acks it, atomically: in a
/// script, since in a `MULTI` a failed `XADD` (the dead-letter key holds
/// something else) would not stop the `XACK` and `XDEL` after it, and the
/// entry would be lost. Here a failure leaves it pending, to be claimed again.
async fn move_entry(
    conn: &mut MultiplexedConnection,
    config: &Config,
    entry: &Entry,
    reason: &str,
    deliveries: u64,
) -> Result<(), RedisError> {
    // KEYS: stream, dead-letter stream. ARGV: group, entry id, max length,
    // then the fields to copy, as field/value pairs.
    const SCRIPT: &str = r"
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
        redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
        redis.call('XDEL', KEYS[1], ARGV[2])
        return 1";
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(SCRIPT)
        .arg(2)
        .arg(&config.stream)
        .arg(&config.dead)
        .arg(&config.group)
        .arg(entry.id())
        .arg(config.dead_max_len);
    // Lua's `unpack` takes a few thousand values at most: an entry with
    // more fields keeps its first ones, and says how many it lost.
    let mut dropped = 0usize;
    for (n, (field, value)) in entry.fields().enumerate() {
        if n < MAX_COPIED_FIELDS {
            cmd.arg(field).arg(value);
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        cmd.arg("dead_fields_dropped").arg(dropped);
    }
    cmd.arg("dead_reason")
        .arg(reason)
        .arg("dead_entry_id")
        .arg(entry.id())
        .arg("dead_deliveries")
        .arg(deliveries)
        .arg("dead_group")
        .arg(&config.group);
    within(config.timeout, "dead-letter move", cmd.query_async::<()>(conn)).await
}
