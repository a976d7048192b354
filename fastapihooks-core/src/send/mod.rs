//! Sending one attempt of one delivery: build the request, sign it, POST it
//! over a pooled keep-alive connection, classify the answer.
//!
//! The HTTP client is our own small HTTP/1.1 client (`http1` writes
//! requests and reads responses, `pool` opens and keeps connections): the
//! task that sends a delivery owns its connection for the whole exchange, so
//! a delivery costs no hop between tasks, no URL re-parsing and no header
//! map. Connections go through the network [`guard`], TLS is rustls with the
//! platform's certificate verifier, redirects are never followed and no
//! proxy is used.

pub mod guard;
pub(crate) mod http1;
mod pool;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use url::{Position, Url};

use crate::dead_letter::DeliveryError;
use crate::event::Event;
use crate::sign::Signer;
use crate::subscription::{Auth, WebhookSubscription};
use guard::{NetworkPolicy, Refused};
use http1::{Head, ReadError, Request};
use pool::{Conn, Connector, Pool};

/// The event-name header.
pub const EVENT_HEADER: &str = "x-fastapihooks-event";
/// The event-id header: the same on every retry, for de-duplication.
pub const EVENT_ID_HEADER: &str = "x-fastapihooks-event-id";
/// The `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("fastapihooks/", env!("CARGO_PKG_VERSION"));

/// The outcome of one attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// 2xx.
    Delivered { status: u16 },
    /// Failed; `retry_after` is what the endpoint asked for.
    Failed { error: DeliveryError, retry_after: Option<Duration> },
}

/// The HTTP side of delivery: the connection pool (shared by clones, closed
/// when the last one is dropped), the connector (network policy, TLS) and
/// the signer.
#[derive(Clone, Debug)]
pub(crate) struct Sender {
    pool: Arc<Pool>,
    connector: Connector,
    policy: Arc<NetworkPolicy>,
    signer: Signer,
    timeout: Duration,
}

impl Sender {
    /// A sender with the delivery TLS set-up (the system's trust store).
    ///
    /// # Errors
    /// The TLS set-up failed: the system has no usable CA certificates.
    pub(crate) fn new(
        policy: NetworkPolicy,
        signer: Signer,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, std::io::Error> {
        let tls = pool::tls_config().map_err(std::io::Error::other)?;
        Ok(Self::with_tls(policy, signer, timeout, connect_timeout, tls))
    }

    /// A sender with the given TLS set-up (tests trust their own CA).
    fn with_tls(
        policy: NetworkPolicy,
        signer: Signer,
        timeout: Duration,
        connect_timeout: Duration,
        tls: Arc<tokio_rustls::rustls::ClientConfig>,
    ) -> Self {
        let policy = Arc::new(policy);
        let connector = Connector::new(policy.clone(), tls, connect_timeout);
        Self { pool: Arc::default(), connector, policy, signer, timeout }
    }

    /// One POST of `event` to `sub`, whose target URL is `url` (parsed).
    pub(crate) async fn send(&self, event: &Event, sub: &WebhookSubscription, url: &Url) -> Attempt {
        let request = match self.vet(url).and_then(|()| self.request(event, sub, url)) {
            Ok(request) => request,
            Err(error) => return Attempt::Failed { error, retry_after: None },
        };
        let head = match self.exchange(url, &request).await {
            Ok(head) => head,
            Err(error) => return Attempt::Failed { error, retry_after: None },
        };
        let status = head.status;
        if (200..300).contains(&status) {
            Attempt::Delivered { status }
        } else if (300..400).contains(&status) {
            // Never followed: a redirect could lead past the network guard.
            Attempt::Failed { error: DeliveryError::Redirect { status }, retry_after: None }
        } else {
            let error = DeliveryError::Status { status };
            let retry_after = if error.is_retryable() { head.retry_after } else { None };
            Attempt::Failed { error, retry_after }
        }
    }

    /// The request's bytes: head and body in one buffer, for one write.
    fn request(&self, event: &Event, sub: &WebhookSubscription, url: &Url) -> Result<Vec<u8>, DeliveryError> {
        let body = event.payload.as_bytes();
        // Slices of the parsed URL: path and query (no fragment), and the
        // host with its port unless it is the scheme's default (IPv6 in brackets).
        let target = &url[Position::BeforePath..Position::AfterQuery];
        let host = &url[Position::BeforeHost..Position::BeforePath];
        let mut req = Request::post(target, host, USER_AGENT, body.len());
        if http1::is_valid_header_value(event.name.as_bytes()) {
            req.header(EVENT_HEADER, event.name.as_bytes());
        }
        if http1::is_valid_header_value(event.id.as_str().as_bytes()) {
            req.header(EVENT_ID_HEADER, event.id.as_str().as_bytes());
        }
        if let Auth::Bearer(token) = &sub.auth {
            let token = token.expose().as_bytes();
            if !http1::is_valid_header_value(token) {
                return Err(DeliveryError::Refused("bearer token is not a valid header value".into()));
            }
            req.header_parts("authorization", b"Bearer ", token);
        }
        self.signer
            .sign_into(event.id.as_str(), chrono::Utc::now(), body, &sub.secrets, &mut req)
            .map_err(|e| DeliveryError::Refused(e.to_string()))?;
        Ok(req.finish(body))
    }

    /// Sends `request` and reads the response, within the timeout: over an
    /// idle pooled connection when there is one, else a new one. The
    /// connection goes back to the pool when the exchange left it reusable.
    async fn exchange(&self, url: &Url, request: &[u8]) -> Result<Head, DeliveryError> {
        // One timer for the whole exchange.
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let endpoint = &url[..Position::BeforePath];
        let exchange = async {
            if let Some(mut conn) = self.pool.take(endpoint) {
                match round_trip(&mut conn, request).await {
                    Ok((head, body_at)) => return Ok((conn, head, body_at)),
                    // Servers close idle keep-alive connections when they
                    // like, and we learn it only when the request fails. If
                    // nothing of a response came back, send once more, at
                    // once, on a new connection; this is not counted as an
                    // attempt. Should the server have acted on the first
                    // request after all, receivers de-duplicate on the event id.
                    Err(e) if e.nothing_received() => {}
                    Err(e) => return Err(e.into_delivery_error()),
                }
            }
            // Boxed: connecting (resolver, TLS handshake) is a large state
            // machine, needed only when no pooled connection serves; inline,
            // it made every delivery's future 1,688 bytes to move, not 664.
            let mut conn = Box::pin(self.connector.connect(url)).await?;
            let (head, body_at) = round_trip(&mut conn, request).await.map_err(Exchange::into_delivery_error)?;
            Ok((conn, head, body_at))
        };
        let (mut conn, head, body_at) = tokio::select! {
            biased;
            sent = exchange => sent?,
            () = &mut deadline => return Err(DeliveryError::Timeout(self.timeout)),
        };
        // The status is known: reading the body only decides whether the
        // connection can be kept. Running out of time here costs the
        // connection, not the outcome.
        let framing = head.framing;
        let clean = tokio::select! {
            biased;
            clean = http1::skip_body(&mut conn.io, &mut conn.buf, body_at, framing) => clean,
            () = &mut deadline => false,
        };
        if clean && head.keep_alive {
            self.pool.put(endpoint, conn);
        }
        Ok(head)
    }

    /// For IP-literal hosts (which skip the resolver), applies the network
    /// policy here.
    fn vet(&self, url: &Url) -> Result<(), DeliveryError> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => std::net::IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => std::net::IpAddr::V6(v6),
            _ => return Ok(()),
        };
        if self.policy.permits(ip) {
            return Ok(());
        }
        let refused = Refused { host: ip.to_string(), addr: ip };
        Err(DeliveryError::Refused(refused.to_string()))
    }
}

/// Why an exchange on one connection failed.
#[derive(Debug)]
enum Exchange {
    Write(std::io::Error),
    Read(ReadError),
}

impl Exchange {
    /// The connection failed the way a stale keep-alive connection does:
    /// writing failed, or it closed before any byte of a response.
    fn nothing_received(&self) -> bool {
        match self {
            Self::Write(e) => http1::is_closed_kind(e.kind()),
            Self::Read(e) => e.nothing_received(),
        }
    }

    fn into_delivery_error(self) -> DeliveryError {
        match self {
            Self::Write(e) => DeliveryError::Network(format!("sending the request failed: {}", pool::describe(&e))),
            // Answered, but not with HTTP: report the status it gave.
            Self::Read(ReadError::SwitchingProtocols) => DeliveryError::Status { status: 101 },
            Self::Read(ReadError::Io { error, .. }) => {
                DeliveryError::Network(format!("reading the response failed: {}", pool::describe(&error)))
            }
            Self::Read(e) => DeliveryError::Network(e.to_string()),
        }
    }
}

/// Writes the request and reads the response head. Returns the head and
/// where its body starts in `conn.buf`.
async fn round_trip(conn: &mut Conn, request: &[u8]) -> Result<(Head, usize), Exchange> {
    conn.io.write_all(request).await.map_err(Exchange::Write)?;
    conn.io.flush().await.map_err(Exchange::Write)?;
    conn.buf.clear();
    http1::read_head(&mut conn.io, &mut conn.buf).await.map_err(Exchange::Read)
}

/// Times an attempt, for logs.
pub(crate) struct Timer(Instant);

impl Timer {
    pub(crate) fn start() -> Self {
        Self(Instant::now())
    }

    pub(crate) fn millis(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{self, RootCertStore};

    use super::*;
    use crate::event::Payload;

    const CA: &[u8] = include_bytes!("testdata/ca.pem");
    const CERT: &[u8] = include_bytes!("testdata/server.pem");
    const KEY: &[u8] = include_bytes!("testdata/server.key");

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// An HTTPS server with the test certificate: answers every request 200
    /// with keep-alive. Returns its port and its count of TLS connections.
    async fn https_server() -> (u16, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
        let cert = CertificateDer::from_pem_slice(CERT).unwrap();
        let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, log) = (handshakes.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let (_, session) = tls.get_ref();
                let alpn = session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
                log.lock().unwrap().push(format!("sni={:?} alpn={alpn:?}", session.server_name()));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = tls.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse().unwrap());
                            if buf.len() < end + 4 + len {
                                break;
                            }
                            buf.drain(..end + 4 + len);
                            if tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (port, handshakes, seen)
    }

    /// The delivery TLS set-up, trusting the test CA instead of the system's roots.
    fn test_tls() -> Arc<rustls::ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(CA).unwrap()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    fn event() -> Event {
        Event::new("e", Payload::from_serialize(&serde_json::json!({"a": 1})).unwrap())
    }

    #[tokio::test]
    async fn https_deliveries_verify_the_server_and_reuse_the_connection() {
        let (port, handshakes, seen) = https_server().await;
        let policy = NetworkPolicy::default().allow_loopback();
        let timeout = Duration::from_secs(5);
        let sender = Sender::with_tls(policy, Signer::new(None), timeout, timeout, test_tls());
        let sub = WebhookSubscription::new(format!("https://localhost:{port}/h")).unwrap();
        let url = Url::parse(&sub.target_url).unwrap();
        for _ in 0..3 {
            let attempt = sender.send(&event(), &sub, &url).await;
            assert!(matches!(attempt, Attempt::Delivered { status: 200 }), "{attempt:?}");
        }
        assert_eq!(handshakes.load(Ordering::SeqCst), 1, "one TLS connection, kept alive");
        // An IP-literal host: verified against the certificate's IP address, no SNI.
        let sub = WebhookSubscription::new(format!("https://127.0.0.1:{port}/h")).unwrap();
        let url = Url::parse(&sub.target_url).unwrap();
        let attempt = sender.send(&event(), &sub, &url).await;
        assert!(matches!(attempt, Attempt::Delivered { status: 200 }), "{attempt:?}");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, [r#"sni=Some("localhost") alpn=Some("http/1.1")"#, r#"sni=None alpn=Some("http/1.1")"#]);
    }

    #[tokio::test]
    async fn certificates_the_system_does_not_trust_are_refused() {
        let (port, handshakes, _) = https_server().await;
        let policy = NetworkPolicy::default().allow_loopback();
        let timeout = Duration::from_secs(5);
        // The real set-up: the platform verifier and the system's roots.
        let sender = Sender::new(policy, Signer::new(None), timeout, timeout).unwrap();
        let sub = WebhookSubscription::new(format!("https://localhost:{port}/h")).unwrap();
        let url = Url::parse(&sub.target_url).unwrap();
        match sender.send(&event(), &sub, &url).await {
            Attempt::Failed { error: DeliveryError::Network(msg), .. } => {
                assert!(msg.starts_with("tls handshake failed") && msg.contains("certificate"), "{msg}");
            }
            other => panic!("an untrusted certificate must fail: {other:?}"),
        }
        assert_eq!(handshakes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn connection_errors_name_the_cause_but_not_the_url() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let policy = NetworkPolicy::default().allow_loopback();
        let timeout = Duration::from_secs(5);
        let sender = Sender::with_tls(policy, Signer::new(None), timeout, timeout, test_tls());
        let sub = WebhookSubscription::new(format!("http://localhost:{port}/h?token=SECRET")).unwrap();
        let url = Url::parse(&sub.target_url).unwrap();
        match sender.send(&event(), &sub, &url).await {
            Attempt::Failed { error: DeliveryError::Network(msg), .. } => {
                assert_eq!(msg, "could not connect: connection refused");
            }
            other => panic!("{other:?}"),
        }
        // Names resolving only to refused addresses are refused, not retried.
        let strict = Sender::with_tls(NetworkPolicy::default(), Signer::new(None), timeout, timeout, test_tls());
        match strict.send(&event(), &sub, &url).await {
            Attempt::Failed { error: DeliveryError::Refused(msg), .. } => assert!(msg.contains("localhost"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}
