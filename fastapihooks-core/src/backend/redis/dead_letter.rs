//! Dead-lettering: a malformed or poison entry is moved to the dead-letter stream and reported.

use redis::RedisError;
use redis::aio::MultiplexedConnection;

use super::Config;
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

/// Sets aside an entry that is not an event (`why` says what is wrong);
/// returns what the consume stream reports.
pub(super) async fn malformed(
    conn: &mut MultiplexedConnection,
    config: &Config,
    entry: &Entry,
    why: &str,
    deliveries: u64,
) -> Result<BackendError, RedisError> {
    let reason = format!("stream entry {} is not a fastapihooks event: {why}", entry.id());
    move_entry(conn, config, entry, &reason, deliveries).await?;
    tracing::error!(
        stream = %config.stream,
        entry_id = %entry.id(),
        dead_letter_stream = %config.dead,
        error = %why,
        "malformed stream entry moved to the dead-letter stream"
    );
    Ok(BackendError::Codec(format!("{reason}; moved to {}", config.dead)))
}

/// Copies an entry to the dead-letter stream and acks it, atomically.
async fn move_entry(
    conn: &mut MultiplexedConnection,
    config: &Config,
    entry: &Entry,
    reason: &str,
    deliveries: u64,
) -> Result<(), RedisError> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    let xadd = pipe.cmd("XADD").arg(&config.dead).arg("MAXLEN").arg("~").arg(config.dead_max_len).arg("*");
    for (field, value) in entry.fields() {
        xadd.arg(field).arg(value);
    }
    xadd.arg("dead_reason")
        .arg(reason)
        .arg("dead_entry_id")
        .arg(entry.id())
        .arg("dead_deliveries")
        .arg(deliveries)
        .arg("dead_group")
        .arg(&config.group)
        .ignore();
    pipe.cmd("XACK").arg(&config.stream).arg(&config.group).arg(entry.id()).ignore();
    pipe.cmd("XDEL").arg(&config.stream).arg(entry.id()).ignore();
    pipe.query_async::<()>(conn).await?;
    Ok(())
}
