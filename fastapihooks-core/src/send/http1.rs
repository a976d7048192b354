//! HTTP/1.1 on one connection: writing a delivery's request, reading its
//! response and discarding the body.
//!
//! Only what a webhook sender needs: one `POST` with a `Content-Length`
//! body, and a response whose status and a few headers matter. The response
//! head is parsed with `httparse`, tolerantly: a header line it cannot read
//! is skipped, since a receiver that answered 2xx has the delivery whatever
//! else its head carries. The body is read to keep the connection reusable,
//! within bounds, and thrown away.
//!
//! Limits: a response head within [`HeadLimits`] (hyper's defaults: 100
//! headers, 417,792 bytes; more is an error and the connection is dropped);
//! a body of at most [`MAX_BODY`] bytes is read (a larger one is not read:
//! the connection is closed instead).

use std::io;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::{ABORT_HEADER, ABORT_VALUE, DISABLE_VALUE};
use crate::wire::{decimal, is_valid_header_value};

/// Limits on the response heads read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeadLimits {
    /// Most headers in a response head.
    pub(crate) max_headers: usize,
    /// Largest response head (status line and headers), in bytes.
    pub(crate) max_bytes: usize,
}

/// hyper's defaults, which receivers have long been tested against.
impl Default for HeadLimits {
    fn default() -> Self {
        Self { max_headers: 100, max_bytes: 8 * 1024 + 100 * 4 * 1024 }
    }
}

/// Headers parsed on the stack; a larger limit parses into a heap array.
const STACK_HEADERS: usize = 100;
/// Largest response body read back to keep the connection; a larger one
/// closes it.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) of a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Most bytes of trailers after a chunked body.
const MAX_TRAILERS: usize = 64 * 1024;

/// A request being written into one buffer: the head, then the body.
pub(crate) struct Request {
    buf: Vec<u8>,
}

impl Request {
    /// `POST <target> HTTP/1.1` with `host`, `user-agent`, `content-type:
    /// application/json` and the `content-length` of a body of `body_len`
    /// bytes. `target` is the path and query, `host` the host and non-default
    /// port, both taken from a parsed URL (which percent-encodes everything
    /// else).
    pub(crate) fn post(target: &str, host: &str, user_agent: &str, body_len: usize) -> Self {
        // Room for the signature and event headers too: one allocation.
        let mut buf = Vec::with_capacity(768 + target.len() + host.len() + body_len);
        buf.extend_from_slice(b"POST ");
        buf.extend_from_slice(target.as_bytes());
        buf.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        buf.extend_from_slice(host.as_bytes());
        buf.extend_from_slice(b"\r\nuser-agent: ");
        buf.extend_from_slice(user_agent.as_bytes());
        buf.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
        push_decimal(&mut buf, body_len);
        buf.extend_from_slice(b"\r\n");
        Self { buf }
    }

    /// Adds a header. The caller checked `value` with
    /// [`is_valid_header_value`]; `name` is a lower-case token.
    pub(crate) fn header(&mut self, name: &str, value: &[u8]) {
        debug_assert!(is_valid_header_value(value));
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Adds a header whose value is `prefix` then `value` (both checked).
    pub(crate) fn header_parts(&mut self, name: &str, prefix: &[u8], value: &[u8]) {
        debug_assert!(is_valid_header_value(prefix) && is_valid_header_value(value));
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(prefix);
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Ends the head and appends the body: the bytes to write.
    pub(crate) fn finish(mut self, body: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(body);
        self.buf
    }
}

impl crate::sign::HeaderSink for Request {
    fn push(&mut self, name: &'static str, value: &str) {
        self.header(name, value.as_bytes());
    }
}

fn push_decimal(buf: &mut Vec<u8>, n: usize) {
    buf.extend_from_slice(decimal(n as u64, &mut [0; 20]).as_bytes());
}

/// How the response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (204, 304).
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closes the connection.
    Close,
}

/// The final response's head.
#[derive(Debug)]
pub(crate) struct Head {
    /// The status code.
    pub(crate) status: u16,
    /// `Retry-After`, when present and valid.
    pub(crate) retry_after: Option<Duration>,
    /// How the body is delimited.
    pub(crate) framing: Framing,
    /// The server lets the connection be reused after this response.
    pub(crate) keep_alive: bool,
    /// The head carried `webhook-delivery: abort-message`: the receiver
    /// asks that this delivery not be retried.
    pub(crate) abort: bool,
    /// The head carried `webhook-delivery: disable`: the receiver asks that
    /// its endpoint be sent nothing more.
    pub(crate) disable: bool,
    /// The `content-type` value, as sent (at most [`MAX_KEPT_VALUE`] bytes).
    pub(crate) content_type: Option<Box<[u8]>>,
    /// The `retry-after` value, as sent (at most [`MAX_KEPT_VALUE`] bytes).
    pub(crate) retry_after_value: Option<Box<[u8]>>,
}

/// The most of a header value a [`Head`] keeps for the record.
pub(crate) const MAX_KEPT_VALUE: usize = 256;

/// The first bytes of a response body, kept while it is read (for the
/// attempt log): up to `limit`, and whether there were more.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    pub(crate) bytes: Vec<u8>,
    pub(crate) limit: usize,
    pub(crate) truncated: bool,
}

impl Kept {
    /// Keeps up to `limit` bytes (0: none).
    pub(crate) fn up_to(limit: usize) -> Self {
        Self { bytes: Vec::new(), limit, truncated: false }
    }

    fn keep(&mut self, data: &[u8]) {
        if self.limit == 0 || data.is_empty() {
            return;
        }
        let room = self.limit - self.bytes.len();
        if data.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }
}

fn kept_value(value: &[u8]) -> Box<[u8]> {
    value[..value.len().min(MAX_KEPT_VALUE)].into()
}

/// Reading a response failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The connection ended before a complete response head.
    #[error("{}", if *.received { "connection closed in the middle of the response" } else { "connection closed before a response" })]
    Closed {
        /// Some bytes of the response had arrived.
        received: bool,
    },
    /// Reading failed.
    #[error("reading the response failed: {error}")]
    Io {
        /// The error.
        error: io::Error,
        /// Some bytes of the response had arrived.
        received: bool,
    },
    /// The head is over the [`HeadLimits`].
    #[error("response head too large (over {} bytes or {} headers)", .0.max_bytes, .0.max_headers)]
    HeadTooLarge(HeadLimits),
    /// The head is not valid HTTP/1.x.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// `101 Switching Protocols`: never asked for.
    #[error("unexpected 101 Switching Protocols")]
    SwitchingProtocols,
}

/// Reads more into `buf`; 0 at EOF.
async fn fill<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(8 * 1024);
    }
    io.read_buf(buf).await
}

/// Reads the final response head into `buf` (what is already in it comes
/// first), skipping 1xx interim responses. Returns the head and where its
/// body starts in `buf`.
///
/// # Errors
/// See [`ReadError`].
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    limits: HeadLimits,
) -> Result<(Head, usize), ReadError> {
    let mut received = !buf.is_empty();
    // Where the search for the end of the head goes on: a head is parsed
    // only once its blank line has arrived, so a head that trickles in a
    // byte at a time costs one scan, not one parse per byte.
    let mut searched = 0;
    let mut config = httparse::ParserConfig::default();
    config
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_responses(true);
    loop {
        if has_head_end(buf, searched) {
            let (mut stack, mut heap);
            let headers: &mut [httparse::Header<'_>] = if limits.max_headers <= STACK_HEADERS {
                stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
                &mut stack[..limits.max_headers]
            } else {
                heap = vec![httparse::EMPTY_HEADER; limits.max_headers];
                &mut heap
            };
            let mut resp = httparse::Response::new(headers);
            match config.parse_response(&mut resp, buf) {
                Ok(httparse::Status::Complete(len)) => {
                    if len > limits.max_bytes {
                        return Err(ReadError::HeadTooLarge(limits));
                    }
                    let status = resp.code.ok_or(ReadError::Malformed("no status code"))?;
                    match status {
                        101 => return Err(ReadError::SwitchingProtocols),
                        // Interim (100 Continue, 103 Early Hints): no body; the real answer follows.
                        100..=199 => {
                            buf.drain(..len);
                            searched = 0;
                            continue;
                        }
                        _ => return Ok((head(&resp, status)?, len)),
                    }
                }
                // A blank line inside a header value cannot be: not HTTP.
                Ok(httparse::Status::Partial) => return Err(ReadError::Malformed("incomplete head")),
                Err(httparse::Error::TooManyHeaders) => return Err(ReadError::HeadTooLarge(limits)),
                Err(e) => return Err(ReadError::Malformed(parse_error_message(&e))),
            }
        }
        if buf.len() > limits.max_bytes {
            return Err(ReadError::HeadTooLarge(limits));
        }
        searched = buf.len();
        match fill(io, buf).await {
            Ok(0) => return Err(ReadError::Closed { received }),
            Ok(_) => received = true,
            Err(error) => return Err(ReadError::Io { error, received }),
        }
    }
}

/// Whether `buf` holds the blank line that ends a head (`\n\n` or
/// `\n\r\n`), looking only at what came after `from` (and the two bytes
/// before it, where the line may have started).
fn has_head_end(buf: &[u8], from: usize) -> bool {
    let tail = buf.get(from.saturating_sub(2)..).unwrap_or_default();
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

fn parse_error_message(e: &httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid new line",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// The parts of a final response head the sender uses.
fn head(resp: &httparse::Response<'_, '_>, status: u16) -> Result<Head, ReadError> {
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive = false;
    let mut retry_after = None;
    let mut abort = false;
    let mut disable = false;
    let mut content_type = None;
    let mut retry_after_value = None;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // "5" or, from some proxies, "5, 5": every value must agree.
            for v in h.value.split(|&b| b == b',') {
                let n = parse_length(v.trim_ascii()).ok_or(ReadError::Malformed("invalid content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(ReadError::Malformed("conflicting content-length"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides: chunked, or the body runs to EOF.
            transfer_encoding = true;
            for coding in h.value.split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                if !coding.is_empty() {
                    chunked = coding.eq_ignore_ascii_case(b"chunked");
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = std::str::from_utf8(h.value).ok().and_then(|v| parse_retry_after(v, SystemTime::now()));
            retry_after_value = Some(kept_value(h.value));
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(kept_value(h.value));
        } else if name.eq_ignore_ascii_case(ABORT_HEADER) {
            for v in h.value.split(|&b| b == b',') {
                let v = v.trim_ascii();
                abort |= v.eq_ignore_ascii_case(ABORT_VALUE.as_bytes());
                disable |= v.eq_ignore_ascii_case(DISABLE_VALUE.as_bytes());
            }
        }
    }
    let mut reuse = match resp.version {
        Some(1) => !close,
        _ => keep_alive && !close, // HTTP/1.0 keeps the connection only when asked to
    };
    let framing = if status == 204 || status == 304 {
        Framing::Empty
    } else if transfer_encoding {
        // Both headers: Transfer-Encoding wins, and the connection, whose
        // framing is now in doubt (response splitting), is not reused.
        reuse &= length.is_none();
        if chunked { Framing::Chunked } else { Framing::Close }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    if framing == Framing::Close {
        reuse = false;
    }
    Ok(Head { status, retry_after, framing, keep_alive: reuse, abort, disable, content_type, retry_after_value })
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Reads the body that starts at `pos` in `buf`, within [`MAX_BODY`],
/// keeping its first bytes in `kept` and discarding the rest. Returns true
/// when the body was read completely and nothing followed it, i.e. the
/// connection is at a message boundary (it can be reused if the head
/// allows). Leaves `buf` empty in that case.
pub(crate) async fn skip_body<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    pos: usize,
    framing: Framing,
    kept: &mut Kept,
) -> bool {
    let mut pos = pos;
    let complete = match framing {
        Framing::Empty => true,
        Framing::Length(n) => match usize::try_from(n) {
            Ok(n) if n <= MAX_BODY => skip(io, buf, &mut pos, n, kept).await,
            _ => {
                // Too large: closing is cheaper than reading it. What came
                // with the head is kept.
                kept.keep(&buf[pos..]);
                kept.truncated = true;
                false
            }
        },
        Framing::Chunked => skip_chunked(io, buf, &mut pos, kept).await,
        Framing::Close => {
            // Read to EOF (bounded), then close: the end of the body is the end of the connection.
            let mut read = buf.len() - pos;
            kept.keep(&buf[pos..]);
            buf.clear();
            while read <= MAX_BODY {
                match fill(io, buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
                kept.keep(buf);
                buf.clear();
            }
            false
        }
    };
    // Bytes after the response (that nobody asked for) make the connection unusable.
    let clean = complete && pos == buf.len();
    buf.clear();
    clean
}

/// Skips `n` bytes from `pos`, reading as needed, keeping the first ones in `kept`.
async fn skip<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    pos: &mut usize,
    mut n: usize,
    kept: &mut Kept,
) -> bool {
    loop {
        let take = n.min(buf.len() - *pos);
        kept.keep(&buf[*pos..*pos + take]);
        *pos += take;
        n -= take;
        if n == 0 {
            return true;
        }
        buf.clear();
        *pos = 0;
        match fill(io, buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}

/// The next line from `pos` (without its CRLF or LF), of at most `limit`
/// bytes; moves `pos` past it. `None` at EOF, on an error, or when too long.
async fn line<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    pos: &mut usize,
    limit: usize,
) -> Option<std::ops::Range<usize>> {
    let mut searched = 0;
    loop {
        if let Some(i) = buf[*pos + searched..].iter().position(|&b| b == b'\n') {
            let start = *pos;
            let end = start + searched + i;
            *pos = end + 1;
            let end = if end > start && buf[end - 1] == b'\r' { end - 1 } else { end };
            return (end - start <= limit).then_some(start..end);
        }
        searched = buf.len() - *pos;
        if searched > limit {
            return None;
        }
        // Keep only the partial line, then read more.
        buf.drain(..*pos);
        *pos = 0;
        match fill(io, buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Skips a chunked body: `size[;ext]\r\n data \r\n` ... `0\r\n`, trailers,
/// `\r\n`.
async fn skip_chunked<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>, pos: &mut usize, kept: &mut Kept) -> bool {
    let mut total = 0usize;
    loop {
        let Some(size_line) = line(io, buf, pos, MAX_CHUNK_LINE).await else { return false };
        let size_line = &buf[size_line];
        let size = size_line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        let Some(size) = parse_hex(size) else { return false };
        if size == 0 {
            break;
        }
        total = total.saturating_add(size);
        if total > MAX_BODY {
            return false;
        }
        if !skip(io, buf, pos, size, kept).await {
            return false;
        }
        match line(io, buf, pos, 1).await {
            Some(r) if r.is_empty() => {}
            _ => return false, // data longer than its size
        }
    }
    // Trailers (ignored) up to the empty line.
    let mut trailers = 0usize;
    loop {
        let Some(l) = line(io, buf, pos, MAX_TRAILERS).await else { return false };
        if l.is_empty() {
            return true;
        }
        trailers += l.len() + 2;
        if trailers > MAX_TRAILERS {
            return false;
        }
    }
}

fn parse_hex(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 15 {
        return None;
    }
    let mut n = 0usize;
    for &b in v {
        let d = (b as char).to_digit(16)?;
        n = n * 16 + d as usize;
    }
    Some(n)
}

/// A `Retry-After` value (delay seconds, or an HTTP date) as a wait from `now`.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;

    /// Hands out its chunks one per read, then EOF (or an error).
    struct Script {
        chunks: VecDeque<Vec<u8>>,
        then: Option<io::ErrorKind>,
    }

    impl Script {
        fn whole(bytes: &[u8]) -> Self {
            Self { chunks: [bytes.to_vec()].into(), then: None }
        }

        /// One byte per read: every parse step must cope with partial input.
        fn bytewise(bytes: &[u8]) -> Self {
            Self { chunks: bytes.iter().map(|&b| vec![b]).collect(), then: None }
        }

        fn parts(parts: &[&[u8]]) -> Self {
            Self { chunks: parts.iter().map(|p| p.to_vec()).collect(), then: None }
        }
    }

    impl AsyncRead for Script {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            match self.chunks.pop_front() {
                Some(mut chunk) => {
                    let n = chunk.len().min(out.remaining());
                    out.put_slice(&chunk[..n]);
                    if n < chunk.len() {
                        self.chunks.push_front(chunk.split_off(n));
                    }
                }
                None => {
                    if let Some(kind) = self.then {
                        return Poll::Ready(Err(kind.into()));
                    }
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Reads one response: its head and whether the connection is reusable.
    async fn read(io: &mut Script) -> Result<(Head, bool), ReadError> {
        let mut buf = Vec::new();
        let (head, pos) = read_head(io, &mut buf, HeadLimits::default()).await?;
        let clean = skip_body(io, &mut buf, pos, head.framing, &mut Kept::default()).await;
        let reusable = clean && head.keep_alive;
        Ok((head, reusable))
    }

    /// Reads `bytes` whole, byte by byte and in two halves: the same result.
    async fn read_all_ways(bytes: &[u8]) -> Result<(u16, Framing, bool), String> {
        let mut results = Vec::new();
        let half = bytes.len() / 2;
        for mut io in [Script::whole(bytes), Script::bytewise(bytes), Script::parts(&[&bytes[..half], &bytes[half..]])]
        {
            let r = read(&mut io).await.map(|(h, reuse)| (h.status, h.framing, reuse)).map_err(|e| e.to_string());
            results.push(r);
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
        results.remove(0)
    }

    #[test]
    fn requests_are_written_in_one_buffer() {
        let mut req = Request::post("/h?x=1", "[::1]:8080", "fastapihooks/0", 2);
        req.header("x-a", b"b");
        assert_eq!(
            req.finish(b"{}"),
            b"POST /h?x=1 HTTP/1.1\r\nhost: [::1]:8080\r\nuser-agent: fastapihooks/0\r\ncontent-type: application/json\r\ncontent-length: 2\r\nx-a: b\r\n\r\n{}"
        );
        let mut buf = Vec::new();
        for n in [0, 7, 10, 1234567890, usize::MAX] {
            buf.clear();
            push_decimal(&mut buf, n);
            assert_eq!(buf, n.to_string().as_bytes());
        }
    }

    #[tokio::test]
    async fn content_length_bodies_are_read_and_the_connection_kept() {
        let r = read_all_ways(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
        assert_eq!(r, Ok((200, Framing::Length(5), true)));
        let r = read_all_ways(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\nretry-after: 7\r\n\r\n").await;
        assert_eq!(r, Ok((503, Framing::Length(0), true)));
        let (head, _) = read(&mut Script::whole(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\nretry-after: 7\r\n\r\n"))
            .await
            .unwrap();
        assert_eq!(head.retry_after, Some(Duration::from_secs(7)));
        // Connection: close is honoured.
        let r = read_all_ways(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok").await;
        assert_eq!(r, Ok((200, Framing::Length(2), false)));
        // A body cut short: the status stands, the connection does not.
        let r = read_all_ways(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel").await;
        assert_eq!(r, Ok((200, Framing::Length(10), false)));
        // Bytes after the body, read with it: not a clean boundary. (Extra
        // bytes that arrive later make the idle connection readable, and the
        // pool drops it.)
        let (_, reuse) =
            read(&mut Script::whole(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")).await.unwrap();
        assert!(!reuse);
        // 204 has no body whatever it says.
        let r = read_all_ways(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(r, Ok((204, Framing::Empty, true)));
    }

    #[tokio::test]
    async fn chunked_bodies_with_extensions_and_trailers() {
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\nA ; x=\"y\"\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n";
        assert_eq!(read_all_ways(resp).await, Ok((200, Framing::Chunked, true)));
        let resp = b"HTTP/1.1 500 Oops\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(read_all_ways(resp).await, Ok((500, Framing::Chunked, true)));
        // Truncated, or malformed: the status stands, the connection does not.
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
        assert_eq!(read_all_ways(resp).await, Ok((200, Framing::Chunked, false)));
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
        assert_eq!(read_all_ways(resp).await, Ok((200, Framing::Chunked, false)));
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n";
        assert_eq!(read_all_ways(resp).await, Ok((200, Framing::Chunked, false)));
        // A non-chunked transfer coding runs to EOF.
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzzz";
        assert_eq!(read_all_ways(resp).await, Ok((200, Framing::Close, false)));
        // Both headers: chunked decides, and the connection is dropped.
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(read_all_ways(resp).await, Ok((200, Framing::Chunked, false)));
    }

    #[tokio::test]
    async fn the_abort_header_is_read_in_any_case_and_among_other_values() {
        for (resp, abort) in [
            (&b"HTTP/1.1 503 Busy\r\nwebhook-delivery: abort-message\r\ncontent-length: 0\r\n\r\n"[..], true),
            (b"HTTP/1.1 500 Oops\r\nWebhook-Delivery:  Abort-Message \r\ncontent-length: 0\r\n\r\n", true),
            (b"HTTP/1.1 500 Oops\r\nwebhook-delivery: x, abort-message\r\ncontent-length: 0\r\n\r\n", true),
            (b"HTTP/1.1 503 Busy\r\nwebhook-delivery: retry\r\ncontent-length: 0\r\n\r\n", false),
            (b"HTTP/1.1 503 Busy\r\nx-other: abort-message\r\ncontent-length: 0\r\n\r\n", false),
            (b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n", false),
        ] {
            let (head, _) = read(&mut Script::whole(resp)).await.unwrap();
            assert_eq!(head.abort, abort, "{}", String::from_utf8_lossy(resp));
        }
    }

    #[tokio::test]
    async fn the_disable_token_and_the_values_kept_for_the_record() {
        let resp = b"HTTP/1.1 200 OK\r\nwebhook-delivery: disable\r\ncontent-type: text/plain\r\nretry-after: 30\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
        for script in [Script::whole(resp), Script::bytewise(resp)] {
            let mut script = script;
            let mut buf = Vec::new();
            let (head, pos) = read_head(&mut script, &mut buf, HeadLimits::default()).await.unwrap();
            assert!(head.disable && !head.abort);
            assert_eq!(head.content_type.as_deref(), Some(&b"text/plain"[..]));
            assert_eq!(head.retry_after_value.as_deref(), Some(&b"30"[..]));
            let mut kept = Kept::up_to(5);
            assert!(skip_body(&mut script, &mut buf, pos, head.framing, &mut kept).await, "read whole");
            assert_eq!((&kept.bytes[..], kept.truncated), (&b"abcde"[..], true), "chunk data only, cut at 5");
        }
        let (head, _) =
            read(&mut Script::whole(b"HTTP/1.1 503 X\r\nwebhook-delivery: abort-message\r\ncontent-length: 0\r\n\r\n"))
                .await
                .unwrap();
        assert!(!head.disable && head.content_type.is_none());
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_but_101_is_an_error() {
        let resp = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(read_all_ways(resp).await, Ok((201, Framing::Length(0), true)));
        let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n";
        assert!(matches!(read(&mut Script::whole(resp)).await, Err(ReadError::SwitchingProtocols)));
    }

    #[tokio::test]
    async fn no_length_reads_to_eof_and_closes() {
        let r = read_all_ways(b"HTTP/1.1 200 OK\r\n\r\nall of this until the end").await;
        assert_eq!(r, Ok((200, Framing::Close, false)));
    }

    #[tokio::test]
    async fn http_1_0_keeps_the_connection_only_when_asked() {
        let r = read_all_ways(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        assert_eq!(r, Ok((200, Framing::Length(2), false)));
        let r = read_all_ways(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok").await;
        assert_eq!(r, Ok((200, Framing::Length(2), true)));
    }

    #[tokio::test]
    async fn oversized_heads_are_errors_and_the_limits_are_settings() {
        let limits = HeadLimits::default();
        let mut resp = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=limits.max_headers {
            resp.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
        }
        resp.extend_from_slice(b"\r\n");
        assert!(matches!(read(&mut Script::whole(&resp)).await, Err(ReadError::HeadTooLarge(_))));
        // A higher limit (parsed on the heap) reads it.
        let mut buf = Vec::new();
        let more = HeadLimits { max_headers: 200, ..limits };
        assert_eq!(read_head(&mut Script::whole(&resp), &mut buf, more).await.unwrap().0.status, 200);
        // One huge header, never ending.
        let mut resp = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        resp.resize(limits.max_bytes + 100, b'a');
        assert!(matches!(read(&mut Script::whole(&resp)).await, Err(ReadError::HeadTooLarge(_))));
        let mut resp = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        resp.resize(limits.max_bytes + 100, b'a');
        resp.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
        assert!(matches!(read(&mut Script::whole(&resp)).await, Err(ReadError::HeadTooLarge(_))));
        // 80 headers and 200 KiB are within the defaults.
        let mut resp = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-big: ".to_vec();
        resp.resize(200 * 1024, b'a');
        resp.extend_from_slice(b"\r\n");
        for i in 0..80 {
            resp.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
        }
        resp.extend_from_slice(b"\r\n");
        let (head, reuse) = read(&mut Script::whole(&resp)).await.unwrap();
        assert!(head.status == 200 && reuse);
    }

    #[tokio::test]
    async fn a_head_that_trickles_in_is_read() {
        // 64 KiB, one byte per read (parsed once, when its blank line came).
        let mut resp = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-big: ".to_vec();
        resp.resize(64 * 1024, b'a');
        resp.extend_from_slice(b"\r\n\r\n");
        let (head, _) = read(&mut Script::bytewise(&resp)).await.unwrap();
        assert_eq!(head.status, 200);
    }

    #[test]
    fn the_end_of_a_head_is_looked_for_only_in_what_is_new() {
        let head = b"HTTP/1.1 200 OK\r\na: b\r\n\r\n";
        assert!(has_head_end(head, 0));
        assert!(has_head_end(head, head.len() - 1), "the line began just before");
        assert!(!has_head_end(head, head.len()), "nothing new");
        assert!(has_head_end(b"HTTP/1.1 200 OK\n\n", 10));
        assert!(!has_head_end(b"HTTP/1.1 200 OK\r\na: b\r\n", 0));
    }

    #[tokio::test]
    async fn a_malformed_header_after_the_status_is_skipped() {
        let resp =
            b"HTTP/1.1 200 OK\r\nx-ok: 1\r\nbad header\x01: \x7f\r\nname : spaced\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(read_all_ways(resp).await, Ok((200, Framing::Length(2), true)));
    }

    #[tokio::test]
    async fn oversized_bodies_are_not_read_and_the_connection_not_reused() {
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert_eq!(read_all_ways(resp.as_bytes()).await, Ok((200, Framing::Length(MAX_BODY as u64 + 1), false)));
        // Exactly the limit is read.
        let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {MAX_BODY}\r\n\r\n").into_bytes();
        resp.resize(resp.len() + MAX_BODY, b'x');
        let (head, reuse) = read(&mut Script::whole(&resp)).await.unwrap();
        assert!(reuse && head.status == 200);
        // Chunked past the limit.
        let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            resp.extend_from_slice(format!("{:x}\r\n", MAX_BODY / 2).as_bytes());
            resp.resize(resp.len() + MAX_BODY / 2, b'x');
            resp.extend_from_slice(b"\r\n");
        }
        resp.extend_from_slice(b"0\r\n\r\n");
        let (head, reuse) = read(&mut Script::whole(&resp)).await.unwrap();
        assert!(!reuse && head.status == 200);
    }

    #[tokio::test]
    async fn closed_connections_say_whether_anything_arrived() {
        let err = read(&mut Script::parts(&[])).await.unwrap_err();
        assert_eq!(err.to_string(), "connection closed before a response");
        let mut reset = Script::parts(&[]);
        reset.then = Some(io::ErrorKind::ConnectionReset);
        assert!(matches!(read(&mut reset).await.unwrap_err(), ReadError::Io { received: false, .. }));
        let err = read(&mut Script::whole(b"HTTP/1.1 200 O")).await.unwrap_err();
        assert_eq!(err.to_string(), "connection closed in the middle of the response");
        let err = read(&mut Script::whole(b"SMTP ready\r\n\r\n")).await.unwrap_err();
        assert!(matches!(err, ReadError::Malformed(_)), "{err}");
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = std::time::SystemTime::now();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = now + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(later), now).unwrap();
        assert!(d <= Duration::from_secs(30) && d >= Duration::from_secs(28), "{d:?}");
        assert_eq!(
            parse_retry_after(&httpdate::fmt_http_date(now - Duration::from_secs(60)), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
