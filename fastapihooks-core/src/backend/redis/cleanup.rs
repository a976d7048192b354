//! Consumer clean-up: the group forgets consumers idle for long with nothing pending.

use redis::aio::MultiplexedConnection;

use super::Config;

/// Removes the group's consumers (other than this one) idle for longer than
/// `forget_consumers_after` with nothing pending, in one script, so that no
/// consumer can read an entry between the check and the removal. A failure
/// is logged and left for the next scan.
pub(super) async fn forget_idle_consumers(conn: &mut MultiplexedConnection, config: &Config) {
    const SCRIPT: &str = r"
        local removed = 0
        for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
            local info = {}
            for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
            if info.name ~= ARGV[3] and info.pending == 0 and info.idle >= tonumber(ARGV[2]) then
                redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info.name)
                removed = removed + 1
            end
        end
        return removed";
    let idle_ms = u64::try_from(config.forget_consumers_after.as_millis()).unwrap_or(u64::MAX);
    let removed = redis::cmd("EVAL")
        .arg(SCRIPT)
        .arg(1)
        .arg(&config.stream)
        .arg(&config.group)
        .arg(idle_ms)
        .arg(&config.consumer)
        .query_async::<u64>(conn)
        .await;
    match removed {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, group = %config.group, "forgot consumers idle with nothing pending"),
        Err(e) => tracing::debug!(error = %e, "could not look for idle consumers"),
    }
}
