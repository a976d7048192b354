//! Acknowledging: an event done is acked and deleted (`XACK` + `XDEL`), so acked entries do not stay in the stream.

use std::sync::Arc;

use async_trait::async_trait;

use super::Inner;
use super::reply::is_nogroup;
use crate::backend::{Acknowledge, BackendError};

/// The ack a consumed entry carries: its stream entry id.
pub(super) struct EntryAck {
    pub(super) inner: Arc<Inner>,
    pub(super) id: String,
}

#[async_trait]
impl Acknowledge for EntryAck {
    async fn ack(self: Box<Self>) -> Result<(), BackendError> {
        self.inner.ack(&self.id).await
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
