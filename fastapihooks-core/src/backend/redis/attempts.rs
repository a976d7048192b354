//! The attempt log of a stream's deliveries: a bounded stream
//! (`{stream}:attempts`, trimmed with `MAXLEN ~`), one entry per attempt,
//! its record as JSON.
//!
//! An entry's id is its attempt's start time in milliseconds (or, written
//! after a later one, just after that one: ids only grow), so pruning by
//! age is a trim by id, and `since` is where a query's range starts.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::Value;

use super::Inner;
use super::reply::range_reply;
use super::validate::{is_entry_id, sanitized};
use crate::history::{
    AttemptLog, AttemptLogError, AttemptPage, AttemptQuery, AttemptRecord, MAX_HEADER_VALUE, MAX_RESPONSE_BODY,
    Retention,
};

/// The field of an attempt entry that holds its record, as JSON.
const ATTEMPT_FIELD: &str = "attempt";

/// The largest entry read back, in bytes: what this log writes is well
/// under it (a 4 KiB body, a 4 KiB error, ids, a URL).
const MAX_ENTRY_BYTES: usize = 64 << 10;

/// The longest error text kept, in bytes.
const MAX_ERROR_TEXT: usize = 4096;

/// Records per script when writing: a script holds Redis, so a large batch
/// goes in several (one round trip still: pipelined).
const RECORDS_PER_SCRIPT: usize = 500;

/// Entries read per round trip when a query filters.
const READ_CHUNK: usize = 500;

/// Appends the records `ARGV[2..]` (start time in ms, JSON; in pairs) with
/// ids that grow: an attempt's start time, or just after the newest id.
const RECORD: &str = r"
local key, top_ms, top_seq = KEYS[1], 0, 0
local info = redis.pcall('XINFO', 'STREAM', key)
if type(info) == 'table' and not info.err then
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local ms, seq = string.match(info[i + 1], '^(%d+)-(%d+)$')
      top_ms, top_seq = tonumber(ms), tonumber(seq)
    end
  end
end
for i = 2, #ARGV, 2 do
  local ms, seq = tonumber(ARGV[i]), 0
  if ms <= top_ms then ms, seq = top_ms, top_seq + 1 end
  local id = string.format('%.0f-%.0f', ms, seq)
  redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], id, 'attempt', ARGV[i + 1])
  top_ms, top_seq = ms, seq
end
return (#ARGV - 1) / 2";

/// Deletes at most `ARGV[1]` entries: first those with ids under the
/// cutoff `ARGV[2]` (ms; empty for none), then the oldest beyond the
/// `ARGV[3]` newest (empty for none). Returns how many.
const PRUNE: &str = r"
local key, budget, deleted = KEYS[1], tonumber(ARGV[1]), 0
if ARGV[2] ~= '' then
  local old = redis.call('XRANGE', key, '-', '(' .. ARGV[2] .. '-0', 'COUNT', budget)
  local ids = {}
  for i, entry in ipairs(old) do
    ids[#ids + 1] = entry[1]
    if #ids == 500 or i == #old then
      deleted = deleted + redis.call('XDEL', key, unpack(ids))
      ids = {}
    end
  end
end
if ARGV[3] ~= '' and deleted < budget then
  local len = redis.call('XLEN', key)
  local excess = len - tonumber(ARGV[3])
  if excess > 0 then
    deleted = deleted + redis.call('XTRIM', key, 'MAXLEN', len - math.min(excess, budget - deleted))
  end
end
return deleted";

/// The [`AttemptLog`] of a [`RedisStreamsBackend`](super::RedisStreamsBackend),
/// from [`RedisStreamsBackend::attempt_log`](super::RedisStreamsBackend::attempt_log):
/// a stream of about [`max_len`](RedisAttemptLog::max_len) entries, the
/// newest, on the backend's connection and time limit.
///
/// Record ids are stream ids (`<ms>-<seq>`): an attempt's start time in
/// milliseconds, or just after the newest id when a record is written after
/// a later-started one, so that ids grow in the order records are written.
/// Pruning by age (`XTRIM`-like, in batches) goes by these ids: a record
/// written late is kept until every record written before it has aged out,
/// never deleted early.
///
/// What is read back is checked: an entry over 64 KiB, or whose record does
/// not parse, is skipped with a warning (anyone who can write to Redis can
/// add entries), not handed out. A query reads at most
/// [`MAX_SCAN`](RedisAttemptLog::MAX_SCAN) entries; when the filters
/// matched fewer than a page by then, the page is short and its `next`
/// continues where it stopped. Values over the limits of
/// [`ResponseDetails`](crate::history::ResponseDetails) (and an error text
/// over 4 KiB) are cut when written.
///
/// A batch goes in scripts of 500 records, pipelined: each script is
/// atomic, a larger batch is not; and a write retried on a connection found
/// broken (as every command on the backend's shared connection is, once)
/// may record a script's records twice. Needs Redis 6.2 or later (exclusive
/// ranges), like the backend.
#[derive(Clone)]
pub struct RedisAttemptLog {
    inner: Arc<Inner>,
    key: String,
    max_len: usize,
}

impl std::fmt::Debug for RedisAttemptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAttemptLog")
            .field("url", &self.inner.config.url)
            .field("key", &self.key)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl RedisAttemptLog {
    /// The length the stream is kept to by default (about: `MAXLEN ~`).
    pub const DEFAULT_MAX_LEN: usize = 100_000;

    /// The most entries one query reads.
    pub const MAX_SCAN: usize = 2_000;

    pub(super) fn new(inner: Arc<Inner>) -> Self {
        let key = format!("{}:attempts", inner.config.stream);
        Self { inner, key, max_len: Self::DEFAULT_MAX_LEN }
    }

    /// Keeps about `n` entries, the newest (at least 1; default
    /// [`DEFAULT_MAX_LEN`](Self::DEFAULT_MAX_LEN)): each write trims the
    /// stream with `MAXLEN ~ n`, whatever the [`Retention`].
    #[must_use]
    pub fn max_len(mut self, n: usize) -> Self {
        self.max_len = n.max(1);
        self
    }

    /// The stream key (`{stream}:attempts`).
    pub fn key(&self) -> &str {
        &self.key
    }

    fn unavailable(&self, what: &str, e: redis::RedisError) -> AttemptLogError {
        AttemptLogError::unavailable(format!("redis attempt log {what} on {} failed: {e}", self.inner.config.url))
    }

    /// Entries `end`..`start`, newest first, at most `count`.
    async fn read(&self, end: &str, start: &str, count: usize) -> Result<Value, AttemptLogError> {
        let key = &self.key;
        self.inner
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
            .map_err(|e| self.unavailable("query", e))
    }
}

/// `record` within the limits this log keeps: the body and header values
/// of [`ResponseDetails`](crate::history::ResponseDetails), an error text
/// of 4 KiB.
fn bounded(record: &AttemptRecord) -> Cow<'_, AttemptRecord> {
    let over = |s: &Option<String>, max| s.as_ref().is_some_and(|s| s.len() > max);
    if record.response.body.len() <= MAX_RESPONSE_BODY
        && !over(&record.response.retry_after, MAX_HEADER_VALUE)
        && !over(&record.response.content_type, MAX_HEADER_VALUE)
        && !over(&record.error, MAX_ERROR_TEXT)
    {
        return Cow::Borrowed(record);
    }
    let mut r = record.clone();
    if r.response.body.len() > MAX_RESPONSE_BODY {
        cut(&mut r.response.body, MAX_RESPONSE_BODY);
        r.response.body_truncated = true;
    }
    for (value, max) in [
        (&mut r.response.retry_after, MAX_HEADER_VALUE),
        (&mut r.response.content_type, MAX_HEADER_VALUE),
        (&mut r.error, MAX_ERROR_TEXT),
    ] {
        if let Some(v) = value {
            cut(v, max);
        }
    }
    Cow::Owned(r)
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// An entry's record, checked; the reason, safe to log, when it is not one.
fn decode(id: &str, json: Option<&[u8]>) -> Result<AttemptRecord, String> {
    let json = json.ok_or_else(|| format!("no `{ATTEMPT_FIELD}` field"))?;
    if json.len() > MAX_ENTRY_BYTES {
        return Err(format!("its record is {} bytes, over {MAX_ENTRY_BYTES}", json.len()));
    }
    let record: AttemptRecord = serde_json::from_slice(json).map_err(|e| sanitized(&e.to_string()))?;
    Ok(AttemptRecord { id: id.to_owned(), ..record })
}

fn millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

#[async_trait]
impl AttemptLog for RedisAttemptLog {
    async fn record(&self, batch: &[AttemptRecord]) -> Result<(), AttemptLogError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut scripts = Vec::new();
        for chunk in batch.chunks(RECORDS_PER_SCRIPT) {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(RECORD).arg(1).arg(&self.key).arg(self.max_len);
            for record in chunk {
                let json = serde_json::to_vec(&*bounded(record))
                    .map_err(|e| AttemptLogError::Invalid(format!("cannot serialize an attempt record: {e}")))?;
                cmd.arg(millis(record.started_at)).arg(json);
            }
            scripts.push(cmd);
        }
        let scripts = &scripts;
        self.inner
            .connections
            .with_shared(|mut conn| async move {
                let mut pipe = redis::pipe();
                for cmd in scripts {
                    pipe.add_command(cmd.clone()).ignore();
                }
                pipe.query_async::<()>(&mut conn).await
            })
            .await
            .map_err(|e| self.unavailable("record", e))
    }

    async fn query(&self, query: &AttemptQuery) -> Result<AttemptPage, AttemptLogError> {
        let mut end = match &query.cursor {
            None => "+".to_owned(),
            Some(cursor) if is_entry_id(cursor) => format!("({cursor}"),
            Some(_) => {
                return Err(AttemptLogError::InvalidQuery("unknown cursor: expected the `next` of a page".into()));
            }
        };
        // Ids are never under their record's start time: a record started
        // at or after `since` has an id of at least `since` in ms.
        let start = query.since.map_or_else(|| "-".to_owned(), |t| millis(t).to_string());
        let size = query.page_size();
        let mut found: Vec<AttemptRecord> = Vec::with_capacity(size + 1);
        let mut scanned = 0;
        let mut count = (size + 1).min(READ_CHUNK);
        loop {
            let reply = self.read(&end, &start, count).await?;
            let entries = range_reply(&reply);
            let read = entries.len();
            let mut last = None;
            for entry in entries {
                let id = entry.id();
                if !is_entry_id(id) {
                    return Err(AttemptLogError::Corrupt("an entry id is not `<ms>-<seq>`".into()));
                }
                match decode(id, entry.field(ATTEMPT_FIELD)) {
                    Ok(record) if query.matches(&record) => found.push(record),
                    Ok(_) => {}
                    Err(why) => {
                        tracing::warn!(key = %self.key, entry_id = %id, error = %why, "unreadable attempt record skipped")
                    }
                }
                scanned += 1;
                last = Some(entry.into_id());
                if found.len() > size {
                    found.truncate(size);
                    let next = found.last().map(|r| r.id.clone());
                    return Ok(AttemptPage::new(found, next));
                }
            }
            let Some(last) = last else { break };
            if read < count {
                break;
            }
            if scanned >= RedisAttemptLog::MAX_SCAN {
                // Bounded work: the caller goes on from here if it wants.
                return Ok(AttemptPage::new(found, Some(last)));
            }
            end = format!("({last}");
            count = READ_CHUNK.min(RedisAttemptLog::MAX_SCAN - scanned);
        }
        Ok(AttemptPage::new(found, None))
    }

    async fn prune(&self, retention: &Retention, now: DateTime<Utc>) -> Result<u64, AttemptLogError> {
        let cutoff =
            retention.cutoff(now).map(millis).filter(|&ms| ms > 0).map_or_else(String::new, |ms| ms.to_string());
        let max_count = retention.max_count.map_or_else(String::new, |n| n.to_string());
        if cutoff.is_empty() && max_count.is_empty() {
            return Ok(0);
        }
        let budget = retention.batch_size.max(1);
        let (key, cutoff, max_count) = (&self.key, &cutoff, &max_count);
        self.inner
            .connections
            .with_shared(|mut conn| async move {
                redis::cmd("EVAL")
                    .arg(PRUNE)
                    .arg(1)
                    .arg(key)
                    .arg(budget)
                    .arg(cutoff)
                    .arg(max_count)
                    .query_async::<u64>(&mut conn)
                    .await
            })
            .await
            .map_err(|e| self.unavailable("prune", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::AttemptOutcome;

    #[test]
    fn records_are_cut_to_the_limits_on_character_boundaries() {
        let mut r = AttemptRecord::new("evt_1", "e", "https://example.com/", Utc::now(), AttemptOutcome::Retrying);
        assert!(matches!(bounded(&r), Cow::Borrowed(_)));
        r.response.body = "é".repeat(MAX_RESPONSE_BODY); // twice the limit, in bytes
        r.error = Some("x".repeat(MAX_ERROR_TEXT + 1));
        r.response.content_type = Some("t".repeat(MAX_HEADER_VALUE + 1));
        let b = bounded(&r);
        assert_eq!(b.response.body.len(), MAX_RESPONSE_BODY);
        assert!(b.response.body_truncated);
        assert_eq!(b.error.as_deref().map(str::len), Some(MAX_ERROR_TEXT));
        assert_eq!(b.response.content_type.as_deref().map(str::len), Some(MAX_HEADER_VALUE));
        let mut odd = "a".to_owned() + &"é".repeat(10);
        cut(&mut odd, 4);
        assert_eq!(odd, "aé");
    }

    #[test]
    fn entries_are_checked_before_use() {
        assert!(decode("1-0", None).unwrap_err().contains("no `attempt` field"));
        let big = vec![b' '; MAX_ENTRY_BYTES + 1];
        assert!(decode("1-0", Some(&big)).unwrap_err().contains("over"));
        let why = decode("1-0", Some(b"{\"outcome\": \"a\nb\"}")).unwrap_err();
        assert!(!why.contains('\n'), "{why}");
        let r = AttemptRecord::new("evt_1", "e", "https://example.com/", Utc::now(), AttemptOutcome::Delivered);
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(decode("5-1", Some(&json)).unwrap().id, "5-1");
    }
}
