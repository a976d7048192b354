//! Acknowledging: an event done is acked and deleted (`XACK` + `XDEL`), so acked entries do not stay in the stream.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::RedisError;

use super::Inner;
use super::reply::is_nogroup;
use super::schedule::RELEASE;
use crate::backend::{Acknowledge, BackendError};
use crate::retry::Backoff;

/// The ack a consumed entry carries: its stream entry id, and for a due
/// delivery the key of its event's copy, released with the ack.
pub(super) struct EntryAck {
    pub(super) inner: Arc<Inner>,
    pub(super) id: String,
    pub(super) release: Option<String>,
}

#[async_trait]
impl Acknowledge for EntryAck {
    async fn ack(self: Box<Self>) -> Result<(), BackendError> {
        self.inner.ack(&self.id).await?;
        if let Some(key) = &self.release {
            let released = self
                .inner
                .connections
                .with_shared(|mut conn| async move {
                    redis::cmd("EVAL").arg(RELEASE).arg(1).arg(key).query_async::<i64>(&mut conn).await.map(drop)
                })
                .await;
            // A copy left behind expires on its own (its TTL).
            if let Err(e) = released {
                tracing::debug!(error = %e, "could not release an event's kept copy; it will expire");
            }
        }
        Ok(())
    }
}

impl Drop for EntryAck {
    /// Acked or not, the entry is no longer this consumer's to keep fresh:
    /// one dropped without an ack (a delivery cut short) is then claimed
    /// by a live worker once idle, instead of being kept alive forever.
    fn drop(&mut self) {
        self.inner.in_flight.untrack(&self.id);
    }
}

impl Inner {
    /// Acks `id`, trying again after a failure (the backoff of the
    /// consumer's reconnections) until it succeeds or the backend is
    /// closed. Until then the entry stays tracked, so the heartbeat keeps
    /// it from being claimed: a failed ack would otherwise have the whole
    /// event delivered again, to every subscriber, once it is claimed.
    async fn ack(&self, id: &str) -> Result<(), BackendError> {
        // Untracked when done, or when the caller gives up on the ack (drops it).
        let _tracked = Untrack { inner: self, id };
        let mut backoff = Backoff::new(Duration::from_millis(50), self.config.max_backoff);
        let result = loop {
            let error = match self.ack_once(id).await {
                Ok(()) => break Ok(()),
                // The group is gone (Redis lost its data): nothing is pending
                // any more, and XDEL ran all the same (a pipeline is not a
                // transaction).
                Err(e) if is_nogroup(&e) => break Ok(()),
                Err(e) => e,
            };
            if self.closed.is_cancelled() {
                break Err(self.transport("XACK", error));
            }
            let wait = backoff.next_delay();
            let retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            if backoff.failures() == 1 {
                tracing::warn!(entry_id = %id, error = %error, retry_in_ms, "could not ack an entry; trying again, and keeping it from being claimed meanwhile");
            } else {
                tracing::debug!(entry_id = %id, error = %error, retry_in_ms, "could not ack an entry, again");
            }
            tokio::select! {
                () = self.closed.cancelled() => break Err(self.transport("XACK", error)),
                () = tokio::time::sleep(wait) => {}
            }
        };
        if result.is_ok() && backoff.failures() > 0 {
            tracing::info!(entry_id = %id, attempts = backoff.failures() + 1, "entry acked after failed attempts");
        }
        result
    }

    async fn ack_once(&self, id: &str) -> Result<(), RedisError> {
        let config = &self.config;
        self.connections
            .with_shared(|mut conn| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("XACK").arg(&config.stream).arg(&config.group).arg(id).ignore();
                pipe.cmd("XDEL").arg(&config.stream).arg(id).ignore();
                pipe.query_async::<()>(&mut conn).await
            })
            .await
    }
}

/// Untracks an entry when dropped.
struct Untrack<'a> {
    inner: &'a Inner,
    id: &'a str,
}

impl Drop for Untrack<'_> {
    fn drop(&mut self) {
        self.inner.in_flight.untrack(self.id);
    }
}
