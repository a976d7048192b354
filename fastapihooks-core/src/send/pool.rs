//! Connections: opening them through the network guard (TCP, and TLS for
//! `https`), and keeping idle ones for reuse.
//!
//! A connection belongs to the task that sends a delivery for the whole
//! exchange: there is no connection task and no channel in between. After a
//! complete exchange the server lets us keep, the connection goes back to
//! the pool, keyed by endpoint (`scheme://host[:port]`). Idle connections
//! older than [`IDLE_TIMEOUT`] are dropped; at most
//! [`MAX_IDLE_PER_ENDPOINT`] are kept per endpoint. The pool's lock is held
//! only to push or pop: sockets are closed after it is released.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use url::Url;

use super::guard::{self, NetworkPolicy, ResolveError};
use crate::dead_letter::DeliveryError;

/// Idle connections older than this are closed, not reused.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Most idle connections kept for one endpoint.
pub(crate) const MAX_IDLE_PER_ENDPOINT: usize = 64;
/// How often idle connections of every endpoint are checked for expiry (on
/// the next return of a connection).
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// A read buffer larger than this is not kept with an idle connection.
const MAX_KEPT_BUFFER: usize = 16 * 1024;

/// A connection's byte stream: plain TCP or TLS over TCP.
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref().0,
        }
    }
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

/// One connection and its read buffer (kept with it, so a reused connection
/// reads without allocating).
pub(crate) struct Conn {
    pub(crate) io: Io,
    pub(crate) buf: Vec<u8>,
    idle_since: Instant,
}

impl Conn {
    fn new(io: Io) -> Self {
        Self { io, buf: Vec::new(), idle_since: Instant::now() }
    }

    /// False when the server closed the connection (or sent anything) while
    /// it was idle. Costs no system call unless the socket became readable:
    /// Tokio's readiness answers first.
    fn looks_alive(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.io.tcp().try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

#[derive(Default)]
struct Idle {
    /// Per endpoint, oldest first.
    by_endpoint: HashMap<Box<str>, Vec<Conn>, foldhash::fast::RandomState>,
    last_sweep: Option<Instant>,
}

/// Idle keep-alive connections, by endpoint. Dropping the pool closes them.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<Idle>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.lock();
        f.debug_struct("Pool")
            .field("endpoints", &idle.by_endpoint.len())
            .field("idle", &idle.by_endpoint.values().map(Vec::len).sum::<usize>())
            .finish()
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection to `endpoint` that is still
    /// open, if any.
    pub(crate) fn take(&self, endpoint: &str) -> Option<Conn> {
        loop {
            let now = Instant::now();
            let (conn, expired) = {
                let mut idle = self.lock();
                let list = idle.by_endpoint.get_mut(endpoint)?;
                match list.pop() {
                    None => return None,
                    // The newest has expired: so have all the older ones.
                    Some(c) if now.duration_since(c.idle_since) > IDLE_TIMEOUT => {
                        let mut expired = std::mem::take(list);
                        expired.push(c);
                        (None, expired)
                    }
                    Some(c) => (Some(c), Vec::new()),
                }
            };
            drop(expired); // closes them, outside the lock
            match conn {
                None => return None,
                Some(c) if c.looks_alive() => return Some(c),
                Some(_) => {} // closed by the server while idle: try the next one
            }
        }
    }

    /// Keeps `conn`, idle, for the next delivery to `endpoint`.
    pub(crate) fn put(&self, endpoint: &str, mut conn: Conn) {
        debug_assert!(conn.buf.is_empty());
        if conn.buf.capacity() > MAX_KEPT_BUFFER {
            conn.buf = Vec::new();
        }
        let now = Instant::now();
        conn.idle_since = now;
        let mut closed = Vec::new();
        {
            let mut idle = self.lock();
            if idle.last_sweep.is_none_or(|t| now.duration_since(t) > SWEEP_EVERY) {
                idle.last_sweep = Some(now);
                sweep(&mut idle.by_endpoint, now, &mut closed);
            }
            let list = match idle.by_endpoint.get_mut(endpoint) {
                Some(list) => list,
                None => idle.by_endpoint.entry(endpoint.into()).or_default(),
            };
            if list.len() < MAX_IDLE_PER_ENDPOINT {
                list.push(conn);
            } else {
                closed.push(conn);
            }
        }
        drop(closed); // closes them, outside the lock
    }
}

/// Moves every expired connection to `closed` and forgets endpoints left
/// without idle connections, so a pool whose endpoints went quiet does not
/// hold their sockets until they are next used.
fn sweep(
    by_endpoint: &mut HashMap<Box<str>, Vec<Conn>, foldhash::fast::RandomState>,
    now: Instant,
    closed: &mut Vec<Conn>,
) {
    by_endpoint.retain(|_, list| {
        let expired = list.iter().take_while(|c| now.duration_since(c.idle_since) > IDLE_TIMEOUT).count();
        closed.extend(list.drain(..expired));
        !list.is_empty()
    });
}

/// Opens connections: resolves through the network guard, connects within
/// the connect timeout, and wraps in TLS for `https`.
#[derive(Clone)]
pub(crate) struct Connector {
    policy: Arc<NetworkPolicy>,
    tls: TlsConnector,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("policy", &self.policy)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// The TLS set-up of deliveries: the platform's certificate verifier (the
/// system's trust store), TLS 1.2 and 1.3, ALPN `http/1.1`. The crypto
/// provider is the process default if one was installed, else aws-lc-rs.
///
/// # Errors
/// The system has no usable CA certificates.
pub(crate) fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Connector {
    pub(crate) fn new(policy: Arc<NetworkPolicy>, tls: Arc<rustls::ClientConfig>, connect_timeout: Duration) -> Self {
        Self { policy, tls: TlsConnector::from(tls), connect_timeout }
    }

    /// A new connection to `url`'s host and port. IP-literal hosts were
    /// vetted by the caller; host names are resolved here, through the
    /// guard, and only the addresses it permits are tried, in order.
    /// Resolving, connecting and the TLS handshake together get the connect
    /// timeout.
    ///
    /// # Errors
    /// [`DeliveryError::Refused`] when the guard refuses every address,
    /// [`DeliveryError::Timeout`] (with the connect timeout) when connecting
    /// took too long, [`DeliveryError::Network`] otherwise. Messages never
    /// contain the URL.
    pub(crate) async fn connect(&self, url: &Url) -> Result<Conn, DeliveryError> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        match tokio::time::timeout_at(deadline, self.open(url, deadline)).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Timeout(self.connect_timeout)),
        }
    }

    async fn open(&self, url: &Url, deadline: tokio::time::Instant) -> Result<Conn, DeliveryError> {
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            Some(url::Host::Domain(host)) => match guard::resolve(&self.policy, host, port).await {
                Ok(addrs) => addrs,
                Err(ResolveError::Refused(refused)) => return Err(DeliveryError::Refused(refused.to_string())),
                Err(ResolveError::Lookup(e)) => return Err(DeliveryError::Network(format!("dns error: {e}"))),
            },
            None => return Err(DeliveryError::Refused("the URL has no host".into())),
        };
        let tcp = self.connect_tcp(&addrs, deadline).await?;
        if url.scheme() != "https" {
            return Ok(Conn::new(Io::Plain(tcp)));
        }
        // SNI and certificate checks use the host name; an IP-literal host is
        // checked against the certificate's IP addresses, without SNI.
        let server_name = match url.host() {
            Some(url::Host::Ipv4(ip)) => ServerName::from(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => ServerName::from(IpAddr::V6(ip)),
            _ => {
                let host = url.host_str().unwrap_or_default().to_owned();
                ServerName::try_from(host)
                    .map_err(|_| DeliveryError::Network("the host is not a valid TLS server name".into()))?
            }
        };
        match self.tls.connect(server_name, tcp).await {
            Ok(tls) => Ok(Conn::new(Io::Tls(Box::new(tls)))),
            Err(e) => Err(DeliveryError::Network(format!("tls handshake failed: {e}"))),
        }
    }

    /// Tries each address in turn, each with an equal share of the time left
    /// (so one black-holed address does not use up all of it).
    async fn connect_tcp(
        &self,
        addrs: &[SocketAddr],
        deadline: tokio::time::Instant,
    ) -> Result<TcpStream, DeliveryError> {
        let mut last = None;
        for (i, &addr) in addrs.iter().enumerate() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
            match tokio::time::timeout(share, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    // Requests are written in one piece: send it now, do not wait for an ACK.
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Ok(Err(e)) => last = Some(DeliveryError::Network(format!("could not connect: {}", describe(&e)))),
                Err(_) => last = Some(DeliveryError::Timeout(self.connect_timeout)),
            }
        }
        Err(last.unwrap_or_else(|| DeliveryError::Network("no address to connect to".into())))
    }
}

/// An I/O error in a few words (the operating system's text, without the
/// error number when the kind says it all).
pub(crate) fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset by the server".into(),
        io::ErrorKind::ConnectionAborted => "connection aborted".into(),
        io::ErrorKind::BrokenPipe => "connection closed by the server (broken pipe)".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        io::ErrorKind::HostUnreachable => "host unreachable".into(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        io::ErrorKind::AddrNotAvailable => "address not available".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    async fn pair(listener: &TcpListener) -> (Conn, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Conn::new(Io::Plain(client)), server)
    }

    #[tokio::test]
    async fn idle_connections_are_reused_newest_first_and_bounded() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let mut servers = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..MAX_IDLE_PER_ENDPOINT + 2 {
            let (conn, server) = pair(&listener).await;
            ports.push(conn.io.tcp().local_addr().unwrap().port());
            pool.put("http://a", conn);
            servers.push(server);
        }
        assert!(pool.take("http://b").is_none());
        let newest_kept = ports[MAX_IDLE_PER_ENDPOINT - 1];
        assert_eq!(pool.take("http://a").unwrap().io.tcp().local_addr().unwrap().port(), newest_kept);
        let mut n = 1;
        while pool.take("http://a").is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_IDLE_PER_ENDPOINT, "extra connections were closed, not kept");
    }

    #[tokio::test]
    async fn connections_closed_by_the_server_or_expired_are_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let (conn, server) = pair(&listener).await;
        pool.put("http://a", conn);
        drop(server);
        // Let the reactor see the FIN.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take("http://a").is_none(), "a connection the server closed is dropped");

        let (mut conn, _server) = pair(&listener).await;
        pool.put("http://a", conn);
        conn = pool.take("http://a").unwrap();
        pool.put("http://a", conn);
        pool.lock().by_endpoint.get_mut("http://a").unwrap()[0].idle_since -= IDLE_TIMEOUT + Duration::from_secs(1);
        assert!(pool.take("http://a").is_none(), "an expired connection is dropped");
    }

    #[tokio::test]
    async fn quiet_endpoints_are_swept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Pool::default();
        let (conn, _s1) = pair(&listener).await;
        pool.put("http://quiet", conn);
        {
            let mut idle = pool.lock();
            idle.by_endpoint.get_mut("http://quiet").unwrap()[0].idle_since -= IDLE_TIMEOUT + Duration::from_secs(1);
            idle.last_sweep = Some(Instant::now() - SWEEP_EVERY - Duration::from_secs(1));
        }
        let (conn, _s2) = pair(&listener).await;
        pool.put("http://busy", conn);
        let idle = pool.lock();
        assert!(!idle.by_endpoint.contains_key("http://quiet"));
        assert_eq!(idle.by_endpoint["http://busy"].len(), 1);
    }
}
