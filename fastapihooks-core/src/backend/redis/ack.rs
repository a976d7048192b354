//! Acknowledging: an event done is acked and deleted (`XACK` + `XDEL`), so acked entries do not stay in the stream.

use std::sync::Arc;

use async_trait::async_trait;

use super::Inner;
use super::reply::is_nogroup;
use super::schedule::RELEASE;
use crate::backend::{Acknowledge, BackendError};

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
    async fn ack(&self, id: &str) -> Result<(), BackendError> {
        self.in_flight.untrack(id);
        let config = &self.config;
        let result = self
            .connections
            .with_shared(|mut conn| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("XACK").arg(&config.stream).arg(&config.group).arg(id).ignore();
                pipe.cmd("XDEL").arg(&config.stream).arg(id).ignore();
                pipe.query_async::<()>(&mut conn).await
            })
            .await;
        match result {
            Ok(()) => Ok(()),
            // The group is gone (Redis lost its data): nothing is pending any
            // more, and XDEL ran all the same (a pipeline is not a transaction).
            Err(e) if is_nogroup(&e) => Ok(()),
            Err(e) => Err(self.transport("XACK", e)),
        }
    }
}
