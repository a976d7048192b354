//! Delivery history: every attempt of every delivery, as an
//! [`AttemptRecord`] in an [`AttemptLog`].
//!
//! The engine hands records to a writer task off the delivery path, which
//! writes them in batches ([`AttemptLog::record`]) and prunes by the
//! [`Retention`] policy in small batches. [`MemoryAttemptLog`] (a bounded
//! ring) is the default; `history::sql::SqlAttemptLog` (features
//! `postgres`, `mysql`, `sqlite`) and `backend::RedisAttemptLog` (feature
//! `redis`) keep them where several processes can read them.
//!
//! Queries are newest first and paginated with an opaque cursor
//! ([`AttemptPage::next`]). The `conformance` feature adds
//! `conformance::run`, the checks every attempt log must pass.
//!
//! Where the SQL and Redis logs keep records, and how they prune, is in
//! `docs/history.md` ("Attempt log storage").

#[cfg(feature = "conformance")]
pub mod conformance;
mod memory;
pub(crate) mod recorder;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub mod sql;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use memory::MemoryAttemptLog;

/// The most of a receiver's response body an [`AttemptRecord`] keeps.
pub const MAX_RESPONSE_BODY: usize = 4096;
/// The longest header value (`retry-after`, `content-type`) a record keeps.
pub const MAX_HEADER_VALUE: usize = 256;
/// The most records one query returns.
pub const MAX_PAGE: usize = 1000;

/// What became of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// It failed, and the delivery will be tried again.
    Retrying,
    /// It failed, and it was the delivery's last.
    GivenUp,
}

impl AttemptOutcome {
    /// Every outcome.
    pub const ALL: [Self; 3] = [Self::Delivered, Self::Retrying, Self::GivenUp];

    /// Its name: `delivered`, `retrying` or `given_up`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::GivenUp => "given_up",
        }
    }

    /// The outcome named `name` (see [`AttemptOutcome::as_str`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

impl std::fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a record keeps of the receiver's response: the headers that matter
/// and the start of the body. Read from the network, so cleaned: header
/// values are printable ASCII, at most [`MAX_HEADER_VALUE`] bytes; the body
/// is at most [`MAX_RESPONSE_BODY`] bytes, as UTF-8 (invalid sequences
/// replaced).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResponseDetails {
    /// The `retry-after` header, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// The `content-type` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The start of the body.
    #[serde(default)]
    pub body: String,
    /// The body was longer than what is kept.
    #[serde(default)]
    pub body_truncated: bool,
}

impl ResponseDetails {
    /// Details from raw header values and body bytes, cleaned and cut to
    /// the limits.
    pub fn from_raw(retry_after: Option<&[u8]>, content_type: Option<&[u8]>, body: &[u8], truncated: bool) -> Self {
        let cut = body.len() > MAX_RESPONSE_BODY;
        let body = &body[..body.len().min(MAX_RESPONSE_BODY)];
        let mut text = String::from_utf8_lossy(body).into_owned();
        // A multi-byte character cut at the limit became U+FFFD; so be it.
        if text.len() > MAX_RESPONSE_BODY + 3 {
            text.truncate(MAX_RESPONSE_BODY);
        }
        Self {
            retry_after: retry_after.map(clean_header),
            content_type: content_type.map(clean_header),
            body: text,
            body_truncated: truncated || cut,
        }
    }
}

/// A header value as a record keeps it: printable ASCII only (others
/// become `?`), cut to [`MAX_HEADER_VALUE`].
fn clean_header(value: &[u8]) -> String {
    let value = value[..value.len().min(MAX_HEADER_VALUE)].trim_ascii();
    let mut clean = String::with_capacity(value.len());
    clean.extend(value.iter().map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '?' }));
    clean
}

/// One attempt of one delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttemptRecord {
    /// The log's id of the record (empty until it is written); ordered
    /// like the records were written.
    #[serde(default)]
    pub id: String,
    /// The event's id (its `webhook-id`).
    pub event_id: String,
    /// The event's name.
    pub event_name: String,
    /// The store's id of the subscription; none for a static subscriber.
    #[serde(default)]
    pub subscription_id: Option<String>,
    /// The event's owner.
    #[serde(default)]
    pub owner_id: Option<String>,
    /// The target URL, its query cut (query strings often carry tokens).
    pub target_url: String,
    /// Which attempt of the delivery this was, from 1.
    pub attempt: u32,
    /// When the request started.
    pub started_at: DateTime<Utc>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// What became of it.
    pub outcome: AttemptOutcome,
    /// The receiver's HTTP status, when it answered.
    #[serde(default)]
    pub status: Option<u16>,
    /// The kind of error, when it failed (see
    /// [`AttemptError::kind`](crate::send::AttemptError::kind)).
    #[serde(default)]
    pub error_kind: Option<String>,
    /// The error, as text.
    #[serde(default)]
    pub error: Option<String>,
    /// What the receiver answered.
    #[serde(default)]
    pub response: ResponseDetails,
}

impl AttemptRecord {
    /// A record of attempt 1 of a delivery of event `event_id` (named
    /// `event_name`) to `target_url`, started at `started_at`: no
    /// subscription, owner, status or error, an empty response, 0 ms. Set
    /// the other fields as needed.
    pub fn new(
        event_id: impl Into<String>,
        event_name: impl Into<String>,
        target_url: impl Into<String>,
        started_at: DateTime<Utc>,
        outcome: AttemptOutcome,
    ) -> Self {
        Self {
            id: String::new(),
            event_id: event_id.into(),
            event_name: event_name.into(),
            subscription_id: None,
            owner_id: None,
            target_url: target_url.into(),
            attempt: 1,
            started_at,
            duration_ms: 0,
            outcome,
            status: None,
            error_kind: None,
            error: None,
            response: ResponseDetails::default(),
        }
    }
}

/// Which attempts to return: every field that is set must match; newest
/// first, at most `limit`, after `cursor` (exclusive) when it is set.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptQuery {
    /// Only this event's.
    pub event_id: Option<String>,
    /// Only this subscription's.
    pub subscription_id: Option<String>,
    /// Only this owner's.
    pub owner_id: Option<String>,
    /// Only attempts started at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only attempts started before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Only attempts with this outcome.
    pub outcome: Option<AttemptOutcome>,
    /// At most this many (1 to [`MAX_PAGE`]; default 50).
    pub limit: usize,
    /// Continue after this page ([`AttemptPage::next`] of the previous one).
    pub cursor: Option<String>,
}

impl Default for AttemptQuery {
    fn default() -> Self {
        Self {
            event_id: None,
            subscription_id: None,
            owner_id: None,
            since: None,
            until: None,
            outcome: None,
            limit: 50,
            cursor: None,
        }
    }
}

impl AttemptQuery {
    /// Every attempt, the first page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only this event's.
    #[must_use]
    pub fn event(mut self, id: impl Into<String>) -> Self {
        self.event_id = Some(id.into());
        self
    }

    /// Only this subscription's.
    #[must_use]
    pub fn subscription(mut self, id: impl Into<String>) -> Self {
        self.subscription_id = Some(id.into());
        self
    }

    /// Only this owner's.
    #[must_use]
    pub fn owner(mut self, id: impl Into<String>) -> Self {
        self.owner_id = Some(id.into());
        self
    }

    /// Only attempts started at or after `t`.
    #[must_use]
    pub fn since(mut self, t: DateTime<Utc>) -> Self {
        self.since = Some(t);
        self
    }

    /// Only attempts started before `t`.
    #[must_use]
    pub fn until(mut self, t: DateTime<Utc>) -> Self {
        self.until = Some(t);
        self
    }

    /// Only attempts with this outcome.
    #[must_use]
    pub fn outcome(mut self, outcome: AttemptOutcome) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// At most `n` (clamped to 1 ..= [`MAX_PAGE`]).
    #[must_use]
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = n.clamp(1, MAX_PAGE);
        self
    }

    /// The page after the one that returned `cursor`.
    #[must_use]
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// The limit, clamped to 1 ..= [`MAX_PAGE`] (the field is public).
    pub fn page_size(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE)
    }

    /// True when `record` passes the filters (cursor and limit aside).
    pub fn matches(&self, record: &AttemptRecord) -> bool {
        self.event_id.as_ref().is_none_or(|id| record.event_id == *id)
            && self.subscription_id.as_ref().is_none_or(|id| record.subscription_id.as_ref() == Some(id))
            && self.owner_id.as_ref().is_none_or(|id| record.owner_id.as_ref() == Some(id))
            && self.since.is_none_or(|t| record.started_at >= t)
            && self.until.is_none_or(|t| record.started_at < t)
            && self.outcome.is_none_or(|o| record.outcome == o)
    }
}

/// One page of a query's answer.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct AttemptPage {
    /// The records, newest first.
    pub records: Vec<AttemptRecord>,
    /// The cursor of the next page; none when this one is the last.
    pub next: Option<String>,
}

impl AttemptPage {
    /// A page of `records`, with the cursor of the next one.
    pub fn new(records: Vec<AttemptRecord>, next: Option<String>) -> Self {
        Self { records, next }
    }
}

/// How long attempt records are kept: by age, by count, or both. Pruning
/// deletes at most `batch_size` records at a time, with a pause between
/// batches, so a large prune never holds the database for long.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Records older than this are deleted (default 30 days).
    pub max_age: Option<Duration>,
    /// Past this many records, the oldest are deleted (default none).
    pub max_count: Option<u64>,
    /// Records deleted by one statement (default 1,000).
    pub batch_size: usize,
    /// How often the engine prunes (default every 5 minutes).
    pub interval: Duration,
    /// The pause between two batches of one prune (default 50 ms).
    pub pause: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: Some(Duration::from_secs(30 * 24 * 3600)),
            max_count: None,
            batch_size: 1000,
            interval: Duration::from_secs(300),
            pause: Duration::from_millis(50),
        }
    }
}

impl Retention {
    /// Keep records for `age`.
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Keep at most `n` records.
    #[must_use]
    pub fn max_count(mut self, n: u64) -> Self {
        self.max_count = Some(n);
        self
    }

    /// Keep records whatever their age.
    #[must_use]
    pub fn forever(mut self) -> Self {
        self.max_age = None;
        self.max_count = None;
        self
    }

    /// Delete at most `n` records per statement (at least 1).
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Prune every `interval`.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Pause `pause` between batches.
    #[must_use]
    pub fn pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// The instant before which records are too old, at `now`.
    pub fn cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let age = chrono::Duration::from_std(self.max_age?).ok()?;
        now.checked_sub_signed(age)
    }
}

/// Why an [`AttemptLog`] could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptLogError {
    /// The log's backing service is unreachable or failed. Retryable.
    #[error("attempt log unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The query is not one this log can answer (a cursor it did not make).
    #[error("invalid attempt query: {0}")]
    InvalidQuery(String),
    /// A stored record could not be read back.
    #[error("attempt record not readable: {0}")]
    Corrupt(String),
    /// A record of the batch is one this log cannot keep (a value over a
    /// column's size); nothing of the batch was written. Not retryable.
    #[error("attempt record refused: {0}")]
    Invalid(String),
}

impl AttemptLogError {
    /// Wraps a backing-service error.
    pub fn unavailable(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable(err.into())
    }
}

/// Where attempt records are kept.
///
/// Implementations must be safe to share across tasks, keep records in the
/// order they were written (ids growing), and answer queries newest first.
#[async_trait]
pub trait AttemptLog: Send + Sync + 'static {
    /// Writes a batch of records, in order.
    async fn record(&self, batch: &[AttemptRecord]) -> Result<(), AttemptLogError>;

    /// The records that pass `query`, newest first, one page.
    async fn query(&self, query: &AttemptQuery) -> Result<AttemptPage, AttemptLogError>;

    /// Deletes at most `retention.batch_size` records that `retention` no
    /// longer keeps at `now` (the oldest first); returns how many it
    /// deleted. The engine calls it again, after `retention.pause`, while
    /// it deletes a full batch.
    async fn prune(&self, retention: &Retention, now: DateTime<Utc>) -> Result<u64, AttemptLogError>;
}
