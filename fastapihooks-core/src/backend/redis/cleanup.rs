//! Consumer clean-up: the group forgets consumers idle for long with nothing pending.

use redis::aio::MultiplexedConnection;

use super::Config;
use super::connection::within;

/// The clean-up, run after each full claim scan; remembers whether the last
/// one failed, so that a failure streak is logged once, not every scan.
pub(super) struct Cleanup {
    failing: bool,
}

impl Cleanup {
    pub(super) fn new() -> Self {
        Self { failing: false }
    }

    /// Removes the group's consumers (other than this one) idle for longer
    /// than `forget_consumers_after` with nothing pending, in one script, so
    /// that no consumer can read an entry between the check and the
    /// removal. A failure is left for the next scan: the first of a streak
    /// is a warning, the others are debug lines, and the first success
    /// after them says so.
    pub(super) async fn forget_idle_consumers(&mut self, conn: &mut MultiplexedConnection, config: &Config) {
        match run(conn, config).await {
            Ok(removed) => {
                if std::mem::take(&mut self.failing) {
                    tracing::info!(group = %config.group, "looking for idle consumers works again");
                }
                if removed > 0 {
                    tracing::info!(count = removed, group = %config.group, "forgot consumers idle with nothing pending");
                }
            }
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(error = %e, group = %config.group, "could not look for idle consumers; trying again after each claim scan");
            }
            Err(e) => tracing::debug!(error = %e, "could not look for idle consumers, again"),
        }
    }
}

/// One clean-up, in a script; how many consumers it removed.
async fn run(conn: &mut MultiplexedConnection, config: &Config) -> Result<u64, redis::RedisError> {
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
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(SCRIPT).arg(1).arg(&config.stream).arg(&config.group).arg(idle_ms).arg(&config.consumer);
    within(config.timeout, "idle consumer clean-up", cmd.query_async::<u64>(conn)).await
}
