//! One HTTP/1.1 connection, owned by the task that sends on it: its byte
//! stream, its read buffer, and the one exchange a delivery makes on it.
//!
//! Two rules keep a delivery's outcome true. A connection is reused only
//! when the stream, read through rustls for TLS, has nothing unread: bytes
//! rustls decrypted but did not hand out are as stale as bytes on the
//! socket, and the next delivery would read them as its answer. And the
//! request is written while the response is watched for, so a receiver
//! that answers early (a `413` to a large body) and stops reading is heard.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::http1::{self, Head, HeadLimits, ReadError};

/// A connection's byte stream: plain TCP or TLS over TCP.
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How requests on a connection name their target.
#[derive(Clone, Debug)]
pub(crate) enum Via {
    /// Straight to the receiver, or through a `CONNECT` tunnel: origin-form
    /// (`POST /path?query`).
    Direct,
    /// To a forward proxy, for an `http` receiver: absolute-form naming the
    /// address the guard vetted (`POST http://203.0.113.7:80/path`), so the
    /// proxy cannot resolve the host to anywhere else.
    Proxy {
        /// The receiver's vetted address.
        target: std::net::SocketAddr,
        /// `Proxy-Authorization`, when the proxy URL carried credentials.
        auth: Option<HeaderValue>,
    },
}

/// Why an exchange on one connection failed.
#[derive(Debug)]
pub(crate) enum Exchange {
    /// Writing failed after `written` bytes of the request were accepted.
    Write { written: usize, error: io::Error },
    /// Reading the response failed.
    Read(ReadError),
}

impl Exchange {
    /// Nothing of the request left this process: it may be sent again on
    /// another connection without the receiver ever seeing it twice.
    pub(crate) fn never_written(&self) -> bool {
        matches!(self, Self::Write { written: 0, .. })
    }
}

/// One connection and its read buffer (kept with it, so a reused connection
/// reads without allocating).
pub(crate) struct Conn {
    io: Io,
    buf: Vec<u8>,
    via: Via,
    pub(crate) idle_since: Instant,
}

/// A read buffer larger than this is not kept with an idle connection.
const MAX_KEPT_BUFFER: usize = 16 * 1024;

impl Conn {
    pub(crate) fn new(io: Io, via: Via) -> Self {
        Self { io, buf: Vec::new(), via, idle_since: Instant::now() }
    }

    /// How requests on this connection name their target.
    pub(crate) fn via(&self) -> &Via {
        &self.via
    }

    /// The local port of the connection.
    #[cfg(test)]
    pub(crate) fn local_port(&self) -> u16 {
        let tcp = match &self.io {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        };
        tcp.local_addr().map_or(0, |a| a.port())
    }

    /// True when the connection can take another request: the stream has
    /// nothing to read (no close, no stray bytes), looked at through rustls
    /// for TLS. Costs no system call unless the socket became readable:
    /// Tokio's readiness answers first.
    pub(crate) fn is_reusable(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.io).poll_read(&mut cx, &mut probe).is_pending()
    }

    /// Sends `request` and reads the response head. Returns the head,
    /// where its body starts in the buffer, and whether the whole request
    /// was written (an early answer leaves the rest unwritten, and the
    /// connection unusable).
    pub(crate) async fn round_trip(
        &mut self,
        request: &[u8],
        limits: HeadLimits,
    ) -> Result<(Head, usize, bool), Exchange> {
        self.buf.clear();
        let complete = self.write(request).await?;
        let (head, at) = http1::read_head(&mut self.io, &mut self.buf, limits).await.map_err(Exchange::Read)?;
        Ok((head, at, complete))
    }

    /// Reads and discards the body that starts at `at`; true when the
    /// connection is at a message boundary with nothing after it.
    pub(crate) async fn skip_body(&mut self, at: usize, framing: http1::Framing, kept: &mut http1::Kept) -> bool {
        let clean = http1::skip_body(&mut self.io, &mut self.buf, at, framing, kept).await;
        if self.buf.capacity() > MAX_KEPT_BUFFER {
            self.buf = Vec::new();
        }
        clean
    }

    /// Writes and flushes `request`. While the stream will not take more,
    /// reads: a response that starts before the request is written ends
    /// the writing (false). True when all of it went out.
    async fn write(&mut self, request: &[u8]) -> Result<bool, Exchange> {
        let mut written = 0;
        std::future::poll_fn(|cx| {
            loop {
                let step = if written < request.len() {
                    Pin::new(&mut self.io).poll_write(cx, &request[written..])
                } else {
                    Pin::new(&mut self.io).poll_flush(cx).map_ok(|()| 0)
                };
                match step {
                    Poll::Ready(Ok(0)) if written < request.len() => {
                        let error = io::ErrorKind::WriteZero.into();
                        return Poll::Ready(Err(Exchange::Write { written, error }));
                    }
                    Poll::Ready(Ok(0)) => return Poll::Ready(Ok(true)),
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(Exchange::Write { written, error })),
                    Poll::Pending => return self.poll_early_answer(cx, written),
                }
            }
        })
        .await
    }

    /// While a write waits: bytes of a response end the writing (`false`);
    /// the end of the stream is a failed write.
    fn poll_early_answer(&mut self, cx: &mut Context<'_>, written: usize) -> Poll<Result<bool, Exchange>> {
        let mut chunk = [0u8; 4096];
        let mut read = ReadBuf::new(&mut chunk);
        match Pin::new(&mut self.io).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if read.filled().is_empty() => {
                Poll::Ready(Err(Exchange::Write { written, error: io::ErrorKind::UnexpectedEof.into() }))
            }
            Poll::Ready(Ok(())) => {
                self.buf.extend_from_slice(read.filled());
                Poll::Ready(Ok(false))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(Exchange::Write { written, error })),
        }
    }
}
