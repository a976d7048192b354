//! [`JsonBuf`]: JSON captured on the request path, in a recycled buffer.
//!
//! What a hook captures is made on the request's thread and used on the
//! delivery side, usually another thread. Memory allocated on one thread and
//! freed on another is glibc malloc's slow path, measurably so on the
//! request path (docs/benchmarks.md has the count). So the request path writes into a buffer taken
//! from a small shared pool; the pipeline copies the bytes out (allocating
//! on its own side) and the buffer goes back to the pool. In steady state the
//! request path allocates nothing for the payload, and nothing it allocated
//! is freed elsewhere.

use std::fmt;
use std::sync::{Mutex, TryLockError};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

/// Buffers kept for reuse, at most.
const POOL_SIZE: usize = 256;
/// A buffer that grew past this is freed rather than kept.
const KEEP_CAPACITY: usize = 16 * 1024;
/// The capacity of a new buffer.
const INITIAL_CAPACITY: usize = 512;

/// Buffers waiting to be reused.
struct Pool {
    bufs: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    const fn new() -> Self {
        Self { bufs: Mutex::new(Vec::new()) }
    }

    /// A buffer from the pool, or a new one. Never waits: the pool is
    /// shared by request threads and the pipeline's thread, which may run
    /// at a lower priority (`DeliveryRuntime::dedicated`); a request must
    /// not wait for it to be scheduled again. When the lock is taken, a new
    /// buffer costs an allocation instead.
    fn take(&self) -> Vec<u8> {
        let reused = match self.bufs.try_lock() {
            Ok(mut bufs) => bufs.pop(),
            Err(TryLockError::Poisoned(e)) => e.into_inner().pop(),
            Err(TryLockError::WouldBlock) => None,
        };
        reused.unwrap_or_else(|| Vec::with_capacity(INITIAL_CAPACITY))
    }

    /// Keeps `buf` for reuse, unless the pool is full, the buffer grew too
    /// big, or the lock is taken (then it is freed: never waits either).
    fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > KEEP_CAPACITY {
            return;
        }
        buf.clear();
        let mut bufs = match self.bufs.try_lock() {
            Ok(bufs) => bufs,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if bufs.len() < POOL_SIZE {
            bufs.push(buf);
        }
    }
}

static POOL: Pool = Pool::new();

/// Bytes in a buffer taken from the pool, given back when dropped.
#[derive(Default)]
pub(crate) struct PooledBuf(Vec<u8>);

impl PooledBuf {
    /// An empty buffer from the pool.
    pub(crate) fn take() -> Self {
        Self(POOL.take())
    }

    /// A copy of `bytes`.
    pub(crate) fn copy(bytes: &[u8]) -> Self {
        let mut buf = Self::take();
        buf.0.extend_from_slice(bytes);
        buf
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Request headers, one `name:value\n` line per value (names and values
    /// cannot hold a newline; names cannot hold a colon). Credential headers
    /// become one `[redacted]` line unless `keep_credentials`.
    #[cfg(feature = "axum")]
    pub(crate) fn headers(headers: &HeaderMap, keep_credentials: bool) -> Self {
        let mut buf = Self::take();
        let mut last: Option<&HeaderName> = None;
        for (name, value) in headers {
            let redact = !keep_credentials && CREDENTIAL_HEADERS.contains(name);
            if redact && last == Some(name) {
                continue;
            }
            last = Some(name);
            buf.0.extend_from_slice(name.as_str().as_bytes());
            buf.0.push(b':');
            buf.0.extend_from_slice(if redact { REDACTED.as_bytes() } else { value.as_bytes() });
            buf.0.push(b'\n');
        }
        buf
    }

    /// The headers written by [`PooledBuf::headers`].
    pub(crate) fn to_header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in self.0.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
                map.append(name, value);
            }
        }
        map
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        POOL.give_back(std::mem::take(&mut self.0));
    }
}

impl Clone for PooledBuf {
    fn clone(&self) -> Self {
        Self::copy(&self.0)
    }
}

impl fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PooledBuf({} bytes)", self.0.len())
    }
}

#[cfg(feature = "axum")]
/// Credential headers, redacted unless `include_credentials = true`.
const CREDENTIAL_HEADERS: [HeaderName; 3] =
    [http::header::AUTHORIZATION, http::header::COOKIE, http::header::PROXY_AUTHORIZATION];

#[cfg(feature = "axum")]
/// The value that replaces a redacted header.
pub(crate) const REDACTED: &str = "[redacted]";

#[cfg(feature = "axum")]
/// Bodies up to this size are copied into a pooled buffer; bigger ones are
/// passed on as they are (one allocation amortized over many bytes).
pub(crate) const COPY_LIMIT: usize = KEEP_CAPACITY;

/// One JSON value, serialized by fastapihooks into a buffer it recycles.
///
/// `#[hook]` captures a `Json<T>` response this way. Read it with
/// [`JsonBuf::as_bytes`]; when dropped, the buffer goes back to the pool.
pub struct JsonBuf {
    buf: PooledBuf,
    /// True when the bytes came from a JSON serializer; false for bytes
    /// that claim to be JSON, which the pipeline checks.
    serialized: bool,
}

impl JsonBuf {
    /// Serializes `value` into a recycled buffer.
    ///
    /// # Errors
    /// The value cannot be represented as JSON.
    pub fn serialize<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Self> {
        let mut this = Self { buf: PooledBuf::take(), serialized: true };
        serde_json::to_writer(&mut this.buf.0, value)?;
        Ok(this)
    }

    /// Copies bytes that should be one JSON value; the pipeline checks
    /// them (off the request path).
    #[cfg(feature = "axum")]
    pub(crate) fn copy_unchecked(json: &[u8]) -> Self {
        Self { buf: PooledBuf::copy(json), serialized: false }
    }

    /// True when the bytes were made by serializing a value (so they are
    /// valid JSON).
    pub(crate) fn is_serialized(&self) -> bool {
        self.serialized
    }

    /// The JSON bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_bytes()
    }
}

impl Clone for JsonBuf {
    fn clone(&self) -> Self {
        Self { buf: self.buf.clone(), serialized: self.serialized }
    }
}

impl fmt::Debug for JsonBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonBuf({} bytes)", self.buf.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_cleared_and_bounded() {
        let pool = Pool::new();
        let mut buf = pool.take();
        buf.extend_from_slice(b"old");
        let ptr = buf.as_ptr();
        pool.give_back(buf);
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr, "the buffer was not reused");
        assert!(again.is_empty(), "a reused buffer kept old bytes");
        pool.give_back(Vec::with_capacity(KEEP_CAPACITY * 2));
        assert!(pool.bufs.lock().unwrap().is_empty(), "a grown buffer was kept");
        for _ in 0..POOL_SIZE + 10 {
            pool.give_back(Vec::with_capacity(8));
        }
        assert_eq!(pool.bufs.lock().unwrap().len(), POOL_SIZE);
    }

    #[test]
    fn json_bufs_hold_exactly_the_json() {
        let a = JsonBuf::serialize(&serde_json::json!({"id": 1})).unwrap();
        assert_eq!(a.as_bytes(), br#"{"id":1}"#);
        assert_eq!(a.clone().as_bytes(), a.as_bytes());
        let big = JsonBuf::serialize(&"x".repeat(KEEP_CAPACITY * 2)).unwrap();
        assert_eq!(big.as_bytes().len(), KEEP_CAPACITY * 2 + 2);
    }

    #[cfg(feature = "axum")]
    #[test]
    fn headers_round_trip_with_credentials_redacted_unless_kept() {
        let mut h = HeaderMap::new();
        h.insert("Authorization", HeaderValue::from_static("Bearer t"));
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", HeaderValue::from_static("b=2"));
        h.append("x-tenant", HeaderValue::from_static("acme: one"));
        h.append("x-tenant", HeaderValue::from_static("two"));
        let c = PooledBuf::headers(&h, false).to_header_map();
        assert_eq!(c.get("authorization").unwrap(), REDACTED);
        assert_eq!(c.get_all("cookie").iter().collect::<Vec<_>>(), [REDACTED]);
        assert_eq!(c.get_all("x-tenant").iter().collect::<Vec<_>>(), ["acme: one", "two"]);
        assert!(c.get("proxy-authorization").is_none());
        let c = PooledBuf::headers(&h, true).to_header_map();
        assert_eq!(c, h);
    }

    #[test]
    fn unserializable_values_are_errors() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(vec![1u8], 2);
        assert!(JsonBuf::serialize(&map).is_err());
    }
}
