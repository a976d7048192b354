//! One HTTP/1.1 connection: hyper's client connection, driven by the task
//! that sends on it.
//!
//! hyper splits a connection into the half that sends requests
//! ([`SendRequest`]) and the future that does the I/O ([`Connection`]).
//! Usually the future is spawned as a task of its own, so every request
//! crosses a channel and wakes a second task. Here the delivery task polls
//! it itself, beside the request it is waiting for, so a delivery costs no
//! hop between tasks; an idle connection sits in the pool unpolled, and is
//! polled once when it is taken out, which is when hyper notices that the
//! server closed it or sent bytes nobody asked for (TLS records included:
//! hyper reads through rustls, not the raw socket).
//!
//! hyper does the framing (lengths, chunks, bodies to EOF, interim 1xx), reads
//! while it writes (an early `413` is seen as a `413`), and drops a
//! connection whose state is in doubt.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A request body: the payload, whole.
pub(crate) type Body = Full<Bytes>;

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

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
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
        target: SocketAddr,
        /// `Proxy-Authorization`, when the proxy URL carried credentials.
        auth: Option<HeaderValue>,
    },
}

/// One connection: hyper's two halves, and what the pool needs to know.
pub(crate) struct Conn {
    tx: SendRequest<Body>,
    driver: Connection<TokioIo<Io>, Body>,
    /// The driver has finished: the connection is closed.
    closed: bool,
    via: Via,
    /// The local port, which tells connections apart in tests.
    #[cfg(test)]
    local_port: u16,
    pub(crate) idle_since: Instant,
}

impl Conn {
    /// Wraps an open stream. hyper's HTTP/1.1 handshake does no I/O.
    pub(crate) async fn handshake(
        builder: &hyper::client::conn::http1::Builder,
        io: Io,
        via: Via,
    ) -> hyper::Result<Self> {
        #[cfg(test)]
        let local_port = match &io {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
        .local_addr()
        .map_or(0, |a| a.port());
        let (tx, driver) = builder.handshake(TokioIo::new(io)).await?;
        Ok(Self {
            tx,
            driver,
            closed: false,
            via,
            #[cfg(test)]
            local_port,
            idle_since: Instant::now(),
        })
    }

    /// The local port of the connection.
    #[cfg(test)]
    pub(crate) fn local_port(&self) -> u16 {
        self.local_port
    }

    /// How requests on this connection name their target.
    pub(crate) fn via(&self) -> &Via {
        &self.via
    }

    /// Sends `request` and waits for the response head. On an error, the
    /// request comes back with it when hyper never wrote any of it.
    pub(crate) async fn send(
        &mut self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, TrySendError<http::Request<Body>>> {
        let response = self.tx.try_send_request(request);
        self.drive(response).await
    }

    /// Reads and discards `body`, at most `limit` bytes of it. True when it
    /// ended within the limit; a larger one is left unread, and the
    /// connection with it.
    pub(crate) async fn skip_body(&mut self, mut body: Incoming, limit: usize) -> bool {
        let mut read = 0usize;
        loop {
            match self.drive(body.frame()).await {
                None => return true,
                Some(Ok(frame)) => {
                    read = read.saturating_add(frame.data_ref().map_or(0, Bytes::len));
                    if read > limit {
                        return false;
                    }
                }
                Some(Err(_)) => return false,
            }
        }
    }

    /// True when the connection can take another request: open, idle, and
    /// with nothing unread. Polls hyper once first, so that it reads what
    /// arrived since it was last polled (a close, or stray bytes, which
    /// make it shut the connection).
    pub(crate) fn is_reusable(&mut self) -> bool {
        if !self.closed {
            let mut cx = Context::from_waker(Waker::noop());
            if Pin::new(&mut self.driver).poll(&mut cx).is_ready() {
                self.closed = true;
            }
        }
        !self.closed && self.tx.is_ready()
    }

    /// Runs `fut` to completion while driving the connection's I/O.
    async fn drive<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        std::future::poll_fn(|cx| {
            if !self.closed && Pin::new(&mut self.driver).poll(cx).is_ready() {
                // Closed or failed: whatever `fut` waits for was told so,
                // and finishes on this poll or a later one.
                self.closed = true;
            }
            fut.as_mut().poll(cx)
        })
        .await
    }
}
