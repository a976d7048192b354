//! Reading what Redis answers: stream entries (RESP2 or RESP3) and the errors that mean something.

use redis::{RedisError, Value};

use super::EVENT_FIELD;
use super::validate::{escaped, event_error, is_entry_id, sanitized};
use crate::event::Event;

/// One stream entry as read: its id and field/value pairs.
pub(super) struct Entry {
    id: String,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The entry's id (`<ms>-<seq>`).
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The id, for a receipt.
    pub(super) fn into_id(self) -> String {
        self.id
    }

    /// The value of `name`, if the entry has that field.
    pub(super) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|(f, _)| f == name.as_bytes()).map(|(_, v)| v.as_slice())
    }

    /// The id as it may be logged: as it is when it is `<ms>-<seq>`, else
    /// escaped (it comes from Redis, like everything else here).
    pub(super) fn log_id(&self) -> String {
        if is_entry_id(&self.id) { self.id.clone() } else { escaped(&self.id) }
    }

    /// The field/value pairs, in stream order.
    pub(super) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|(f, v)| (f.as_slice(), v.as_slice()))
    }

    /// The event this entry holds, checked (see [`event_error`]): its
    /// `event` field, at most `max_bytes` long. The error says why not, in
    /// words safe to log: a refused value is never quoted raw.
    pub(super) fn decode(&self, max_bytes: usize) -> Result<Event, String> {
        if !is_entry_id(&self.id) {
            return Err(format!("its entry id {} is not `<ms>-<seq>`", escaped(&self.id)));
        }
        let json = self
            .fields
            .iter()
            .find(|(f, _)| f == EVENT_FIELD.as_bytes())
            .map(|(_, v)| v)
            .ok_or_else(|| format!("no `{EVENT_FIELD}` field"))?;
        if json.len() > max_bytes {
            return Err(format!("its `{EVENT_FIELD}` field is {} bytes, over the limit of {max_bytes}", json.len()));
        }
        // serde's messages may quote parts of the input (an unknown variant,
        // say): escaped too.
        let event: Event = serde_json::from_slice(json).map_err(|e| sanitized(&e.to_string()))?;
        match event_error(&event) {
            None => Ok(event),
            Some(why) => Err(why),
        }
    }

    /// Reads `[id, [field, value, ...]]`; `None` when the shape is wrong.
    fn parse(value: &Value) -> Option<Self> {
        let [id, fields] = as_array(value)? else { return None };
        let id = as_string(id)?;
        let mut pairs = Vec::new();
        match fields {
            // A deleted entry still in a pending list: no fields.
            Value::Nil => {}
            Value::Map(map) => {
                for (f, v) in map {
                    pairs.push((as_bytes(f)?.to_vec(), as_bytes(v)?.to_vec()));
                }
            }
            other => {
                for pair in as_array(other)?.chunks(2) {
                    let [f, v] = pair else { break };
                    pairs.push((as_bytes(f)?.to_vec(), as_bytes(v)?.to_vec()));
                }
            }
        }
        Some(Self { id, fields: pairs })
    }
}

/// The entries of an `XREADGROUP` reply on one stream (RESP2 or RESP3).
pub(super) fn read_reply_entries(reply: Value) -> Vec<Entry> {
    let streams: Vec<&Value> = match &reply {
        Value::Map(map) => map.iter().map(|(_, entries)| entries).collect(),
        other => as_array(other)
            .unwrap_or(&[])
            .iter()
            .filter_map(|s| match as_array(s) {
                Some([_key, entries]) => Some(entries),
                _ => None,
            })
            .collect(),
    };
    streams.into_iter().flat_map(|e| as_array(e).unwrap_or(&[])).filter_map(Entry::parse).collect()
}

/// The entries of an `XRANGE` / `XREVRANGE` reply.
pub(super) fn range_reply(reply: &Value) -> Vec<Entry> {
    as_array(reply).unwrap_or(&[]).iter().filter_map(Entry::parse).collect()
}

/// `XAUTOCLAIM`'s `[next cursor, [entries], [deleted ids]]`.
pub(super) fn autoclaim_reply(reply: Value) -> (String, Vec<Entry>) {
    let parts = as_array(&reply).unwrap_or(&[]);
    let cursor = parts.first().and_then(as_string).unwrap_or_else(|| "0-0".to_owned());
    let entries = parts.get(1).and_then(as_array).unwrap_or(&[]).iter().filter_map(Entry::parse).collect();
    (cursor, entries)
}

/// `XCLAIM`'s entries (those deleted meanwhile are left out by Redis).
pub(super) fn claim_reply(reply: &Value) -> Vec<Entry> {
    as_array(reply).unwrap_or(&[]).iter().filter_map(Entry::parse).collect()
}

pub(super) fn as_array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

pub(super) fn as_string(v: &Value) -> Option<String> {
    as_bytes(v).and_then(|b| std::str::from_utf8(b).ok()).map(str::to_owned)
}

pub(super) fn as_int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => as_string(other)?.parse().ok(),
    }
}

pub(super) fn is_nogroup(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

pub(super) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_in_both_protocols() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("event"), bulk("{}")])]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("k"), Value::Array(vec![entry.clone()])])]);
        let resp3 = Value::Map(vec![(bulk("k"), Value::Array(vec![entry.clone()]))]);
        for reply in [resp2, resp3] {
            let entries = read_reply_entries(reply);
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].id, "1-0");
            assert!(entries[0].decode(1024).is_err(), "`{{}}` is no event");
        }
        let claimed = Value::Array(vec![bulk("0-0"), Value::Array(vec![entry]), Value::Array(vec![])]);
        let (cursor, entries) = autoclaim_reply(claimed);
        assert_eq!((cursor.as_str(), entries.len()), ("0-0", 1));
        assert!(read_reply_entries(Value::Nil).is_empty());
    }
}
