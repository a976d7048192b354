//! Durable final failures: each given-up delivery is recorded in a bounded
//! stream (`{stream}:failures`, trimmed with `MAXLEN ~`) before its event
//! is acked; listed, shown, replayed and purged by `fastapihooks failures`.

use std::sync::Arc;

use async_trait::async_trait;
use redis::Value;

use super::Inner;
use super::reply::range_reply;
use super::schedule::{self, DELIVERY_FIELD};
use super::validate::is_entry_id;
use crate::backend::{BackendError, Scheduled};
use crate::dead_letter::{
    DeliveryFailure, FailureFilter, FailureRecord, FailureStore, FailureStoreError, RecoverReport,
};

/// The field of a failure entry that holds its record, as JSON.
const FAILURE_FIELD: &str = "failure";

/// Entries read per page when listing with a filter.
const PAGE: usize = 500;

/// The [`FailureStore`] of a [`RedisStreamsBackend`](super::RedisStreamsBackend).
pub(super) struct RedisFailures(pub(super) Arc<Inner>);

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> FailureStoreError {
    FailureStoreError::Unavailable(Box::new(e))
}

impl RedisFailures {
    /// Reads entries `end`..`start` (newest first), at most `count`.
    async fn page(&self, end: &str, start: &str, count: usize) -> Result<Vec<FailureRecord>, FailureStoreError> {
        let inner = &self.0;
        let key = &inner.config.failures;
        let reply = inner
            .connections
            .with_shared(|mut conn| async move {
                redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg(end)
                    .arg(start)
                    .arg("COUNT")
                    .arg(count)
                    .query_async::<Value>(&mut conn)
                    .await
            })
            .await
            .map_err(unavailable)?;
        let entries = range_reply(&reply);
        let mut records = Vec::with_capacity(entries.len());
        for entry in entries {
            let Some(json) = entry.field(FAILURE_FIELD) else { continue };
            match serde_json::from_slice::<FailureRecord>(json) {
                Ok(record) => records.push(FailureRecord { id: entry.id().to_owned(), ..record }),
                // An entry this crate did not write: skipped, not fatal to the listing.
                Err(e) => tracing::warn!(entry_id = %entry.id(), error = %e, "unreadable failure record skipped"),
            }
        }
        Ok(records)
    }
}

#[async_trait]
impl FailureStore for RedisFailures {
    async fn record(&self, failure: &DeliveryFailure) -> Result<(), FailureStoreError> {
        let inner = &self.0;
        let config = &inner.config;
        let json =
            serde_json::to_vec(&FailureRecord::of(failure)).map_err(|e| FailureStoreError::Codec(e.to_string()))?;
        inner
            .connections
            .with_shared(|mut conn| {
                let json = &json;
                async move {
                    redis::cmd("XADD")
                        .arg(&config.failures)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(config.failures_max_len)
                        .arg("*")
                        .arg(FAILURE_FIELD)
                        .arg(json.as_slice())
                        .query_async::<Value>(&mut conn)
                        .await
                        .map(drop)
                }
            })
            .await
            .map_err(unavailable)
    }

    async fn list(&self, filter: &FailureFilter) -> Result<Vec<FailureRecord>, FailureStoreError> {
        // Entry ids begin with their time in milliseconds: the time window
        // is a range of ids, the other filters are applied to what it holds.
        let mut end = filter.until.map_or_else(|| "+".to_owned(), |t| format!("({}-0", t.timestamp_millis().max(0)));
        let start = filter.since.map_or_else(|| "-".to_owned(), |t| t.timestamp_millis().max(0).to_string());
        let mut found = Vec::new();
        loop {
            let page = self.page(&end, &start, PAGE).await?;
            let full = page.len() == PAGE;
            let last = page.last().map(|r| r.id.clone());
            found.extend(page.into_iter().filter(|r| r.matches(filter)));
            if found.len() >= filter.limit || !full {
                break;
            }
            let Some(last) = last else { break };
            end = format!("({last}");
        }
        found.truncate(filter.limit);
        Ok(found)
    }

    async fn get(&self, id: &str) -> Result<Option<FailureRecord>, FailureStoreError> {
        if !is_entry_id(id) {
            return Ok(None);
        }
        Ok(self.page(id, id, 1).await?.pop())
    }

    async fn remove(&self, id: &str) -> Result<bool, FailureStoreError> {
        if !is_entry_id(id) {
            return Ok(false);
        }
        let inner = &self.0;
        let key = &inner.config.failures;
        let removed: u64 = inner
            .connections
            .with_shared(|mut conn| async move { redis::cmd("XDEL").arg(key).arg(id).query_async(&mut conn).await })
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }
}

impl Inner {
    /// Sends a recorded failure again, with the same event (and so the same
    /// `webhook-id`): a delivery goes back to the stream as a due delivery
    /// to its target, with a fresh round of attempts; a failure of the
    /// whole event is fanned out again. The record is removed in the same
    /// transaction.
    pub(super) async fn replay(&self, record: &FailureRecord) -> Result<(), BackendError> {
        let config = &self.config;
        let event = serde_json::to_vec(&record.event).map_err(|e| BackendError::Codec(e.to_string()))?;
        let delivery = match &record.target {
            Some(target) => Some(
                schedule::record(&record.event.id, Scheduled::new(target.clone(), 0))
                    .map_err(|e| BackendError::Codec(e.to_string()))?,
            ),
            None => None,
        };
        let payload = format!("{}{}", config.payload_prefix, record.event.id.as_str());
        self.connections
            .with_shared(|mut conn| {
                let (event, delivery, payload) = (&event, &delivery, &payload);
                async move {
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    match delivery {
                        Some(delivery) => {
                            schedule::keep_copy(&mut pipe, payload, event);
                            pipe.cmd("XADD").arg(&config.stream).arg("*").arg(DELIVERY_FIELD).arg(delivery).ignore();
                        }
                        None => {
                            pipe.cmd("XADD")
                                .arg(&config.stream)
                                .arg("*")
                                .arg(super::EVENT_FIELD)
                                .arg(event.as_slice())
                                .ignore();
                        }
                    }
                    if is_entry_id(&record.id) {
                        pipe.cmd("XDEL").arg(&config.failures).arg(&record.id).ignore();
                    }
                    pipe.query_async::<()>(&mut conn).await
                }
            })
            .await
            .map_err(|e| self.transport("replay", e))
    }
}

/// See [`RedisStreamsBackend::recover`](super::RedisStreamsBackend::recover).
pub(super) async fn recover(
    backend: &super::RedisStreamsBackend,
    filter: &FailureFilter,
) -> Result<RecoverReport, BackendError> {
    let store = RedisFailures(backend.inner.clone());
    let mut report = RecoverReport::default();
    // Replayed records are removed, so each listing holds the next ones;
    // those that failed stay, and are not tried twice.
    let mut kept = std::collections::HashSet::new();
    let limit = filter.limit;
    loop {
        let room = limit - report.resent - report.failed;
        if room == 0 {
            let next = store.list(&filter.clone().limit(kept.len() + 1)).await;
            report.more = next.map_err(|e| BackendError::Transport(Box::new(e)))?.len() > kept.len();
            return Ok(report);
        }
        let page = store
            .list(&filter.clone().limit((room + kept.len()).min(PAGE + kept.len())))
            .await
            .map_err(|e| BackendError::Transport(Box::new(e)))?;
        let mut fresh: Vec<FailureRecord> = page.into_iter().filter(|r| !kept.contains(&r.id)).collect();
        if fresh.is_empty() {
            return Ok(report);
        }
        fresh.truncate(room);
        for record in &fresh {
            match backend.replay(record).await {
                Ok(()) => report.resent += 1,
                Err(e) => {
                    tracing::warn!(record = %record.id, error = %e, "a recorded failure could not be replayed; it is kept");
                    kept.insert(record.id.clone());
                    report.failed += 1;
                }
            }
        }
    }
}
