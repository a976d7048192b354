//! [`Event`]: what the runtime delivers, after the transform has shaped it.

use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::subscription::WebhookSubscription;

/// A unique, time-sortable event id: `evt_` followed by a UUIDv7 in hex.
///
/// The id is made when the event is emitted and stays the same on every
/// retry of every delivery of the event, so receivers can de-duplicate.
///
/// An id travels in headers (`webhook-id`), in signatures and in logs, so a
/// queue backend accepts only well-formed ones (see [`EventId::is_well_formed`]):
/// 1 to [`MAX_EVENT_ID_LEN`] characters from `A-Z a-z 0-9 _ - . :`. The ids
/// [`EventId::new`] makes always are.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// A new id, sortable by creation time.
    pub fn new() -> Self {
        let uuid = uuid::Uuid::now_v7();
        let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
        let hex = uuid.simple().encode_lower(&mut buf);
        let mut s = String::with_capacity(4 + hex.len());
        s.push_str("evt_");
        s.push_str(hex);
        Self(s)
    }

    /// Wraps an id read back from a queue or a log.
    pub fn from_string(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the id is 1 to [`MAX_EVENT_ID_LEN`] characters from
    /// `A-Z a-z 0-9 _ - . :`: safe in a header, a URL and a log line as it
    /// is. A queue backend refuses other ids, whether it is publishing them
    /// or reading them back.
    ///
    /// ```
    /// use fastapihooks_core::EventId;
    /// assert!(EventId::new().is_well_formed());
    /// assert!(!EventId::from_string("evt_1\r\nforged").is_well_formed());
    /// ```
    pub fn is_well_formed(&self) -> bool {
        let id = self.0.as_bytes();
        !id.is_empty()
            && id.len() <= MAX_EVENT_ID_LEN
            && id.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    }
}

/// The longest [`EventId`] a queue backend accepts, in bytes (the ids
/// [`EventId::new`] makes are 36).
pub const MAX_EVENT_ID_LEN: usize = 128;

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A JSON payload kept as the exact bytes that are sent and signed.
///
/// It is serialized once, when the event is made, and shared (not copied)
/// by every delivery of the event.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload(Bytes);

impl Payload {
    /// Serializes a value.
    ///
    /// # Errors
    /// The value cannot be represented as JSON (a map with non-string keys,
    /// a failing `Serialize` impl).
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(value).map(|v| Self(Bytes::from(v)))
    }

    /// Takes bytes that must already be one JSON value (checked).
    ///
    /// # Errors
    /// The bytes are not valid JSON.
    pub fn from_json_bytes(bytes: Bytes) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)?;
        Ok(Self(bytes))
    }

    /// Bytes known to be one JSON value (made by a JSON serializer).
    pub(crate) fn from_trusted(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The JSON `null`.
    pub fn null() -> Self {
        Self(Bytes::from_static(b"null"))
    }

    /// The exact bytes sent as the request body.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Parses the payload into a [`Value`].
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.0).unwrap_or(Value::Null)
    }

    /// The payload as a string (it is always UTF-8 JSON).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("null")
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(self.as_str()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: Box<RawValue> = Deserialize::deserialize(deserializer)?;
        Ok(Self(Bytes::from(raw.get().to_owned())))
    }
}

/// One event, ready for delivery: its id, name, owner, time, the payload
/// (already shaped by the transform) and the static subscribers it carries.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// Unique and stable across retries.
    pub id: EventId,
    /// The event name, like `order.created`.
    pub name: String,
    /// The tenant the event belongs to.
    pub owner_id: Option<String>,
    /// When the event happened (UTC).
    pub timestamp: DateTime<Utc>,
    /// The JSON body every subscriber receives.
    pub payload: Payload,
    /// Subscribers configured on the hooks object for this event name; the
    /// store's subscriptions are added at delivery time.
    #[serde(default)]
    pub subscribers: Vec<WebhookSubscription>,
}

impl Event {
    /// A new event with a fresh id.
    pub fn new(name: impl Into<String>, payload: Payload) -> Self {
        Self {
            id: EventId::new(),
            name: name.into(),
            owner_id: None,
            timestamp: Utc::now(),
            payload,
            subscribers: Vec::new(),
        }
    }

    /// Sets the owner.
    #[must_use]
    pub fn with_owner(mut self, owner_id: Option<String>) -> Self {
        self.owner_id = owner_id;
        self
    }

    /// Sets the static subscribers.
    #[must_use]
    pub fn with_subscribers(mut self, subscribers: Vec<WebhookSubscription>) -> Self {
        self.subscribers = subscribers;
        self
    }

    /// Sets the id (for events read back from a queue).
    #[must_use]
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// Sets the timestamp.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = timestamp;
        self
    }
}

/// Why a transform produced no payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransformError {
    /// The transform returned an error.
    #[error("transform returned an error: {0}")]
    Failed(String),
    /// The transform panicked; the panic was contained.
    #[error("transform panicked: {0}")]
    Panicked(String),
    /// The transform's output could not be serialized as JSON.
    #[error("transform output is not serializable as JSON: {0}")]
    Serialize(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_unique_prefixed_and_sortable() {
        let ids: Vec<EventId> = (0..1000).map(|_| EventId::new()).collect();
        assert!(ids.iter().all(|id| id.as_str().starts_with("evt_") && id.as_str().len() == 36));
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "ids made later sort later");
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn payload_round_trips_raw() {
        let event = Event::new("a.b", Payload::from_serialize(&serde_json::json!({"x": [1, 2]})).unwrap());
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains(r#""payload":{"x":[1,2]}"#), "{json}");
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back.payload, event.payload);
        assert_eq!(back.id, event.id);
    }

    #[test]
    fn payload_rejects_invalid_json_bytes() {
        assert!(Payload::from_json_bytes(Bytes::from_static(b"{nope")).is_err());
        assert!(Payload::from_json_bytes(Bytes::from_static(b"{\"a\":1}")).is_ok());
    }
}
