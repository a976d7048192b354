//! Opening connections: the receiver's addresses through the network guard,
//! TCP within the connect timeout (straight, or to a forward proxy), and TLS
//! for `https`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tower_service::Service;
use url::Url;

use super::conn::{Conn, Io, Via};
use super::error::{AttemptError, NotSent};
use super::guard::{self, NetworkPolicy, ResolveError};
use super::proxy::{Proxy, Route};

/// Opens connections: resolves through the network guard, connects within
/// the connect timeout, directly or through the proxy, and wraps in TLS for
/// `https`.
#[derive(Clone)]
pub(crate) struct Connector {
    policy: Arc<NetworkPolicy>,
    tls: TlsConnector,
    connect_timeout: Duration,
    proxy: Option<Proxy>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("policy", &self.policy)
            .field("connect_timeout", &self.connect_timeout)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

/// The TLS set-up of deliveries: the platform's certificate verifier (the
/// system's trust store, and the `extra_roots` PEM certificates beside it),
/// TLS 1.2 and 1.3, ALPN `http/1.1`. The crypto provider is the process
/// default if one was installed, else aws-lc-rs.
///
/// # Errors
/// The system has no usable CA certificates, or `extra_roots` holds no
/// valid certificate.
pub(crate) fn tls_config(extra_roots: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, io::Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    use rustls_platform_verifier::{BuilderVerifierExt as _, Verifier};
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?;
    let builder = match extra_roots {
        None => builder.with_platform_verifier().map_err(io::Error::other)?,
        Some(pem) => {
            let roots = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| io::Error::other(format!("the TLS root certificates are not valid PEM: {e}")))?;
            if roots.is_empty() {
                return Err(io::Error::other("the TLS root certificates hold no certificate"));
            }
            let verifier = Verifier::new_with_extra_roots(roots, provider).map_err(io::Error::other)?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
        }
    };
    let mut config = builder.with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Connector {
    pub(crate) fn new(
        policy: Arc<NetworkPolicy>,
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        proxy: Option<Proxy>,
    ) -> Self {
        Self { policy, tls: TlsConnector::from(tls), connect_timeout, proxy }
    }

    /// A new connection to `url`'s host and port. IP-literal hosts were
    /// vetted by the caller; host names are resolved here, through the
    /// guard, and only the addresses it permits are tried, in order.
    /// Resolving, connecting (the proxy's tunnel included) and the TLS
    /// handshake together get the connect timeout.
    ///
    /// # Errors
    /// [`AttemptError::Refused`] when the guard refuses every address,
    /// [`AttemptError::Timeout`] (with the connect timeout) when connecting
    /// took too long, [`AttemptError::Network`] otherwise. Messages never
    /// contain the URL.
    pub(crate) async fn connect(&self, url: &Url) -> Result<Conn, AttemptError> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        match tokio::time::timeout_at(deadline, self.open(url, deadline)).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError::Timeout(self.connect_timeout)),
        }
    }

    async fn open(&self, url: &Url, deadline: tokio::time::Instant) -> Result<Conn, AttemptError> {
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            Some(url::Host::Domain(host)) => match guard::resolve(&self.policy, host, port).await {
                Ok(addrs) => addrs,
                Err(ResolveError::Refused(refused)) => return Err(refused.into()),
                Err(ResolveError::Lookup(e)) => return Err(AttemptError::Network(format!("dns error: {e}"))),
            },
            None => return Err(NotSent::Url("no host").into()),
        };
        let https = url.scheme() == "https";
        let (tcp, via) = match self.proxy.as_ref().and_then(|p| p.route(url)) {
            None => (connect_tcp(&addrs, deadline, self.connect_timeout).await?, Via::Direct),
            Some(route) if https => (self.tunnel(&route, &addrs, deadline).await?, Via::Direct),
            Some(route) => {
                let target = addrs.first().copied().ok_or_else(no_address)?;
                let tcp = self.to_proxy(&route, deadline).await?;
                (tcp, Via::Proxy { target, auth: route.auth })
            }
        };
        let io = if https { self.tls(url, tcp).await? } else { Io::Plain(tcp) };
        Ok(Conn::new(io, via))
    }

    /// TLS over `tcp`. SNI and certificate checks use the host name; an
    /// IP-literal host is checked against the certificate's IP addresses,
    /// without SNI.
    async fn tls(&self, url: &Url, tcp: TcpStream) -> Result<Io, AttemptError> {
        let server_name = match url.host() {
            Some(url::Host::Ipv4(ip)) => ServerName::from(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => ServerName::from(IpAddr::V6(ip)),
            _ => {
                let host = url.host_str().unwrap_or_default().to_owned();
                ServerName::try_from(host)
                    .map_err(|_| AttemptError::Network("the host is not a valid TLS server name".into()))?
            }
        };
        match self.tls.connect(server_name, tcp).await {
            Ok(tls) => Ok(Io::Tls(Box::new(tls))),
            Err(e) => Err(AttemptError::Network(format!("tls handshake failed: {e}"))),
        }
    }

    /// A TCP connection to the proxy (the operator's: resolved without the
    /// guard).
    async fn to_proxy(&self, route: &Route, deadline: tokio::time::Instant) -> Result<TcpStream, AttemptError> {
        let host = route.proxy.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let port = route.proxy.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| AttemptError::Network(format!("dns error for the proxy: {e}")))?
            .collect();
        connect_tcp(&addrs, deadline, self.connect_timeout).await.map_err(|e| match e {
            AttemptError::Network(msg) => AttemptError::Network(format!("proxy: {msg}")),
            other => other,
        })
    }

    /// A `CONNECT` tunnel through the proxy to the first of the vetted
    /// `addrs` the proxy reaches.
    async fn tunnel(
        &self,
        route: &Route,
        addrs: &[SocketAddr],
        deadline: tokio::time::Instant,
    ) -> Result<TcpStream, AttemptError> {
        let mut last = None;
        for addr in addrs {
            let tcp = self.to_proxy(route, deadline).await?;
            let mut tunnel = Tunnel::new(route.proxy.clone(), Opened(Some(TokioIo::new(tcp))));
            if let Some(auth) = &route.auth {
                tunnel = tunnel.with_auth(auth.clone());
            }
            // The vetted address, not the host name: see the `proxy` module.
            let Ok(dst) = Uri::try_from(format!("https://{addr}")) else { continue };
            match tunnel.call(dst).await {
                Ok(io) => return Ok(io.into_inner()),
                Err(e) => last = Some(AttemptError::Network(format!("proxy: CONNECT failed ({e})"))),
            }
        }
        Err(last.unwrap_or_else(no_address))
    }
}

fn no_address() -> AttemptError {
    AttemptError::Network("no address to connect to".into())
}

/// Hands hyper-util's [`Tunnel`] the connection to the proxy that was
/// already opened (within our deadline, to the proxy's addresses in turn).
struct Opened(Option<TokioIo<TcpStream>>);

impl Service<Uri> for Opened {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<TokioIo<TcpStream>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        std::future::ready(self.0.take().ok_or_else(|| io::Error::other("the proxy connection was used already")))
    }
}

/// Tries each address in turn, each with an equal share of the time left
/// (so one black-holed address does not use up all of it).
async fn connect_tcp(
    addrs: &[SocketAddr],
    deadline: tokio::time::Instant,
    connect_timeout: Duration,
) -> Result<TcpStream, AttemptError> {
    let mut last = None;
    for (i, &addr) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                // A request goes out whole: send it now, do not wait for an ACK.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(e)) => last = Some(AttemptError::Network(format!("could not connect: {}", describe(&e)))),
            Err(_) => last = Some(AttemptError::Timeout(connect_timeout)),
        }
    }
    Err(last.unwrap_or_else(no_address))
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
