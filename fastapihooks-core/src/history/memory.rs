use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{AttemptLog, AttemptLogError, AttemptPage, AttemptQuery, AttemptRecord, Retention};

/// The default attempt log: the latest `capacity` records in memory,
/// evicting the oldest. Cheap to clone; clones share the ring.
#[derive(Clone, Debug)]
pub struct MemoryAttemptLog {
    inner: Arc<Mutex<Ring>>,
}

#[derive(Debug)]
struct Ring {
    capacity: usize,
    /// Oldest first; each record's id is its sequence number.
    records: VecDeque<(u64, AttemptRecord)>,
    next: u64,
}

impl MemoryAttemptLog {
    /// The capacity of [`MemoryAttemptLog::default`].
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// A log keeping at most `capacity` records (at least 1).
    pub fn new(capacity: usize) -> Self {
        let ring = Ring { capacity: capacity.max(1), records: VecDeque::new(), next: 1 };
        Self { inner: Arc::new(Mutex::new(ring)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // No user code runs under the lock: a poisoned one holds whole records.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryAttemptLog {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

#[async_trait]
impl AttemptLog for MemoryAttemptLog {
    async fn record(&self, batch: &[AttemptRecord]) -> Result<(), AttemptLogError> {
        let mut ring = self.lock();
        for record in batch {
            if ring.records.len() == ring.capacity {
                ring.records.pop_front();
            }
            let id = ring.next;
            ring.next += 1;
            let mut record = record.clone();
            record.id = id.to_string();
            ring.records.push_back((id, record));
        }
        Ok(())
    }

    async fn query(&self, query: &AttemptQuery) -> Result<AttemptPage, AttemptLogError> {
        let before = match &query.cursor {
            None => u64::MAX,
            Some(c) => c.parse::<u64>().map_err(|_| AttemptLogError::InvalidQuery("unknown cursor".into()))?,
        };
        let size = query.page_size();
        let ring = self.lock();
        let mut records: Vec<AttemptRecord> = ring
            .records
            .iter()
            .rev()
            .filter(|(id, r)| *id < before && query.matches(r))
            .take(size + 1)
            .map(|(_, r)| r.clone())
            .collect();
        let next = if records.len() > size {
            records.truncate(size);
            records.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(AttemptPage::new(records, next))
    }

    async fn prune(&self, retention: &Retention, now: DateTime<Utc>) -> Result<u64, AttemptLogError> {
        let cutoff = retention.cutoff(now);
        let max = retention.max_count.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let mut ring = self.lock();
        let mut deleted = 0u64;
        while (deleted as usize) < retention.batch_size.max(1) {
            let Some((_, oldest)) = ring.records.front() else { break };
            let too_old = cutoff.is_some_and(|c| oldest.started_at < c);
            if !too_old && ring.records.len() <= max {
                break;
            }
            ring.records.pop_front();
            deleted += 1;
        }
        Ok(deleted)
    }
}
