//! [`FastapihooksContext`]: what a transform sees of a request and its response.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Everything known about one emission, handed to a transform.
///
/// Built off the request path, after the handler returned. Fields that were
/// not asked for (`include_headers`, `include_request`, `include_response`)
/// are `None` (or `Value::Null` for the response).
///
/// ```
/// # use fastapihooks_core::FastapihooksContext;
/// # use serde_json::json;
/// let ctx = FastapihooksContext::new("order.created").with_response(json!({"id": "ord_1"}));
/// assert_eq!(ctx.response_payload["id"], "ord_1");
/// assert_eq!(ctx.header("user-agent"), None);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FastapihooksContext {
    /// The event name, like `order.created`.
    pub event_name: String,
    /// The tenant the event belongs to, if any.
    pub owner_id: Option<String>,
    /// When the event happened (UTC). Defaults to now.
    pub timestamp: DateTime<Utc>,
    /// The request headers, names lower-case; `None` unless `include_headers`.
    /// Credential headers are redacted unless asked for.
    pub headers: Option<HeaderMap>,
    /// The exact bytes of the request body; `None` unless `include_request`.
    pub request_payload: Option<Bytes>,
    /// The handler's JSON response; `Value::Null` when `include_response` is
    /// off or the response had no JSON body. Index it like
    /// `ctx.response_payload["id"]`.
    pub response_payload: Value,
}

impl FastapihooksContext {
    /// A context for `event_name`, timestamped now, with nothing else.
    pub fn new(event_name: impl Into<String>) -> Self {
        Self {
            event_name: event_name.into(),
            owner_id: None,
            timestamp: Utc::now(),
            headers: None,
            request_payload: None,
            response_payload: Value::Null,
        }
    }

    /// Sets the owner.
    #[must_use]
    pub fn with_owner(mut self, owner_id: Option<String>) -> Self {
        self.owner_id = owner_id;
        self
    }

    /// Sets the timestamp.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// Sets the headers.
    #[must_use]
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// Sets the request body bytes.
    #[must_use]
    pub fn with_request(mut self, body: Bytes) -> Self {
        self.request_payload = Some(body);
        self
    }

    /// Sets the response payload.
    #[must_use]
    pub fn with_response(mut self, payload: Value) -> Self {
        self.response_payload = payload;
        self
    }

    /// A header's value as text, when headers were included and the value is
    /// visible ASCII. Names are case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref()?.get(name)?.to_str().ok()
    }

    /// The response payload deserialized into `T`.
    ///
    /// # Errors
    /// The payload does not have `T`'s shape.
    pub fn response_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.response_payload)
    }

    /// The request body parsed as JSON, when it was included and is JSON.
    pub fn request_json(&self) -> Option<Value> {
        serde_json::from_slice(self.request_payload.as_ref()?).ok()
    }

    /// The request body deserialized into `T`.
    ///
    /// # Errors
    /// No request body was included (an `EOF` error), or it does not have
    /// `T`'s shape.
    pub fn request_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.request_payload.as_deref().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn context_accessors() {
        let mut h = HeaderMap::new();
        h.insert("User-Agent", "curl/8".parse().unwrap());
        let ctx = FastapihooksContext::new("e")
            .with_headers(h)
            .with_request(Bytes::from_static(br#"{"qty":2}"#))
            .with_response(json!({"id": "ord_1", "total": 5}));
        assert_eq!(ctx.header("user-agent"), Some("curl/8"));
        assert_eq!(ctx.response_payload["id"], "ord_1");
        assert_eq!(ctx.response_payload["missing"], Value::Null);
        #[derive(serde::Deserialize)]
        struct Order {
            id: String,
            total: u32,
        }
        let o: Order = ctx.response_as().unwrap();
        assert_eq!((o.id.as_str(), o.total), ("ord_1", 5));
        assert_eq!(ctx.request_json().unwrap()["qty"], 2);
        assert!(FastapihooksContext::new("e").request_as::<Value>().is_err());
    }
}
