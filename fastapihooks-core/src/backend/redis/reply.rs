//! Reading what Redis answers: stream entries (RESP2 or RESP3) and the errors that mean something.

use redis::{RedisError, Value};

use super::EVENT_FIELD;
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

    /// The field/value pairs, in stream order.
    pub(super) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|(f, v)| (f.as_slice(), v.as_slice()))
    }

    pub(super) fn decode(&self) -> Result<Event, String> {
        let json = self
            .fields
            .iter()
            .find(|(f, _)| f == EVENT_FIELD.as_bytes())
            .map(|(_, v)| v)
            .ok_or_else(|| format!("no `{EVENT_FIELD}` field"))?;
        serde_json::from_slice(json).map_err(|e| e.to_string())
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
            assert!(entries[0].decode().is_err(), "`{{}}` is no event");
        }
        let claimed = Value::Array(vec![bulk("0-0"), Value::Array(vec![entry]), Value::Array(vec![])]);
        let (cursor, entries) = autoclaim_reply(claimed);
        assert_eq!((cursor.as_str(), entries.len()), ("0-0", 1));
        assert!(read_reply_entries(Value::Nil).is_empty());
    }
}
