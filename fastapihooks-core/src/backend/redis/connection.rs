//! Connections to Redis: the shared one, re-made once when found broken, and the consumer's own.
//!
//! The shared connection has a response timeout of its own. The consumer's
//! has none (a blocking read may wait longer than any timeout), so every
//! command on it goes through [`within`]: a frozen Redis cannot hang a step.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};

use super::reply::is_connection_error;

pub(super) struct Connections {
    client: Client,
    connect_timeout: Duration,
    /// The response timeout of the shared connection.
    timeout: Duration,
    /// The connection publish, ack and claims share (with a response timeout).
    shared: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Connections {
    pub(super) fn new(client: Client, connect_timeout: Duration, timeout: Duration) -> Self {
        Self { client, connect_timeout, timeout, shared: tokio::sync::Mutex::new(None) }
    }

    /// The shared connection, connecting when there is none.
    async fn shared(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut slot = self.shared.lock().await;
        if let Some(conn) = &*slot {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    pub(super) async fn forget_shared(&self) {
        *self.shared.lock().await = None;
    }

    /// Runs `op` on the shared connection. A connection found broken (Redis
    /// restarted since) is replaced and `op` tried once more: it may then
    /// run twice, which at-least-once delivery allows.
    pub(super) async fn with_shared<T, F, Fut>(&self, op: F) -> Result<T, RedisError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut retried = false;
        loop {
            let conn = match self.shared().await {
                Ok(conn) => conn,
                Err(e) => return Err(e),
            };
            match op(conn).await {
                Ok(v) => return Ok(v),
                Err(e) if is_connection_error(&e) => {
                    self.forget_shared().await;
                    if retried {
                        return Err(e);
                    }
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A new connection for the consumer's blocking read: no response
    /// timeout (a multiplexed connection would time out a long `BLOCK`).
    pub(super) async fn dedicated(&self) -> Result<MultiplexedConnection, RedisError> {
        let options =
            AsyncConnectionConfig::new().set_connection_timeout(Some(self.connect_timeout)).set_response_timeout(None);
        self.client.get_multiplexed_async_connection_with_config(&options).await
    }
}

/// Waits for `reply` (a command on the consumer's own connection) at most
/// `limit`. Past it, an I/O "timed out" error: a transport error, so the
/// connection is dropped and the step retried after a backoff, like any other.
pub(super) async fn within<T>(
    limit: Duration,
    what: &str,
    reply: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(limit, reply).await {
        Ok(reply) => reply,
        Err(_) => {
            let message = format!("{what} got no answer within {} ms", limit.as_millis());
            Err(RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, message)))
        }
    }
}
