//! Sending one attempt of one delivery: build the request, sign it, POST it
//! over a pooled keep-alive connection, classify the answer.
//!
//! The HTTP client is our own small HTTP/1.1 client (`http1` writes
//! requests and reads responses, `conn` makes the exchange on one
//! connection, `pool` keeps idle ones, `connect` opens them): the task that
//! sends a delivery owns its connection for the whole exchange, so a
//! delivery costs no hop between tasks, no URL re-parsing and no header
//! map. It was measured against hyper's client connection driven the same
//! way, which cost markedly more app CPU per delivery (the numbers are in
//! docs/benchmarks.md). Connections go through the network [`guard`] on
//! the vetted addresses, TLS is rustls with the platform's certificate
//! verifier, redirects are never followed, and a [`Proxy`] is used only
//! when the operator configures one.

mod conn;
mod connect;
mod error;
pub mod guard;
pub(crate) mod http1;
mod pool;
mod proxy;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use url::{Position, Url};

use crate::event::Event;
use crate::sign::Signer;
use crate::subscription::{Auth, WebhookSubscription};
use crate::wire::is_valid_header_value;
use conn::{Conn, Exchange, Via};
use connect::{Connector, describe};
pub use error::{ABORT_HEADER, ABORT_VALUE, AttemptError, DISABLE_VALUE, NotSent, StopReason};
use guard::{NetworkPolicy, Refused};
pub(crate) use http1::HeadLimits;
use http1::{Head, ReadError, Request};
use pool::Pool;
pub use proxy::{InvalidProxy, Proxy};

/// The event-name header.
pub const EVENT_HEADER: &str = "x-fastapihooks-event";
/// The event-id header: the same on every retry, for de-duplication.
pub const EVENT_ID_HEADER: &str = "x-fastapihooks-event-id";
/// The `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("fastapihooks/", env!("CARGO_PKG_VERSION"));

/// The outcome of one attempt.
#[derive(Debug)]
pub(crate) struct Attempt {
    /// The 2xx status, or why it failed.
    pub(crate) result: Result<u16, AttemptError>,
    /// The wait the receiver asked for before a retry.
    pub(crate) retry_after: Option<Duration>,
    /// What the receiver answered, when it did.
    pub(crate) response: Option<Response>,
}

impl Attempt {
    fn failed(error: AttemptError) -> Self {
        Self { result: Err(error), retry_after: None, response: None }
    }

    /// True when the receiver asked that its endpoint be sent nothing
    /// more (`410 Gone`, or `webhook-delivery: disable`).
    pub(crate) fn asks_to_disable(&self) -> bool {
        self.response.as_ref().is_some_and(|r| r.disable || r.status == 410)
    }
}

/// What a receiver answered, as far as it is kept for the record. Raw
/// bytes from the network: cleaned before they are shown or stored.
#[derive(Debug, Default)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: Option<Box<[u8]>>,
    pub(crate) retry_after: Option<Box<[u8]>>,
    /// The first bytes of the body (none unless the sender keeps them).
    pub(crate) body: Vec<u8>,
    pub(crate) body_truncated: bool,
    /// `webhook-delivery: disable` was among its headers.
    pub(crate) disable: bool,
}

/// What a sender is made of, besides its signer.
#[derive(Debug)]
pub(crate) struct SenderConfig {
    pub(crate) policy: NetworkPolicy,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) proxy: Option<Proxy>,
    pub(crate) head_limits: HeadLimits,
    /// CA certificates (PEM) trusted beside the system's.
    pub(crate) tls_roots: Option<Vec<u8>>,
    /// How much of each response body to keep for the attempt log (0: none).
    pub(crate) keep_body: usize,
}

/// The HTTP side of delivery: the connection pool (shared by clones, closed
/// when the last one is dropped), the connector (network policy, proxy,
/// TLS) and the signer.
#[derive(Clone, Debug)]
pub(crate) struct Sender {
    pool: Arc<Pool>,
    connector: Connector,
    policy: Arc<NetworkPolicy>,
    signer: Signer,
    timeout: Duration,
    head_limits: HeadLimits,
    keep_body: usize,
}

impl Sender {
    /// A sender with the delivery TLS set-up (the system's trust store, and
    /// the configured extra roots).
    ///
    /// # Errors
    /// The TLS set-up failed: the system has no usable CA certificates, or
    /// the extra roots are not valid PEM certificates.
    pub(crate) fn new(config: SenderConfig, signer: Signer) -> Result<Self, std::io::Error> {
        let tls = connect::tls_config(config.tls_roots.as_deref())?;
        Ok(Self::with_tls(config, signer, tls))
    }

    /// A sender with the given TLS set-up (tests trust their own CA).
    fn with_tls(config: SenderConfig, signer: Signer, tls: Arc<tokio_rustls::rustls::ClientConfig>) -> Self {
        let policy = Arc::new(config.policy);
        let connector = Connector::new(policy.clone(), tls, config.connect_timeout, config.proxy);
        Self {
            pool: Arc::default(),
            connector,
            policy,
            signer,
            timeout: config.timeout,
            head_limits: config.head_limits,
            keep_body: config.keep_body,
        }
    }

    /// One POST of `event` to `sub`, whose target URL is `url` (parsed).
    pub(crate) async fn send(&self, event: &Event, sub: &WebhookSubscription, url: &Url) -> Attempt {
        let head = match self.vet(url) {
            Ok(()) => self.exchange(event, sub, url).await,
            Err(error) => Err(error),
        };
        let (head, kept) = match head {
            Ok(answer) => answer,
            Err(error) => return Attempt::failed(error),
        };
        let status = head.status;
        let (result, retry_after) = if (200..300).contains(&status) {
            (Ok(status), None)
        } else if status == 410 {
            (Err(AttemptError::ReceiverStopped { status, reason: StopReason::Gone }), None)
        } else if head.abort || head.disable {
            // The receiver's own word wins over what its status would mean.
            let reason = if head.disable { StopReason::DisableHeader } else { StopReason::AbortHeader };
            (Err(AttemptError::ReceiverStopped { status, reason }), None)
        } else if (300..400).contains(&status) {
            // Never followed: a redirect could lead past the network guard.
            (Err(AttemptError::Redirect { status }), None)
        } else {
            let error = AttemptError::Status { status };
            let retry_after = if error.is_transient() { head.retry_after } else { None };
            (Err(error), retry_after)
        };
        let response = Response {
            status,
            content_type: head.content_type,
            retry_after: head.retry_after_value,
            body: kept.bytes,
            body_truncated: kept.truncated,
            disable: head.disable,
        };
        Attempt { result, retry_after, response: Some(response) }
    }

    /// The request's bytes for one connection: head and body in one
    /// buffer, for one write. The target is origin-form (path and query,
    /// never the fragment), or absolute-form naming the vetted address
    /// through a proxy; the `Host` header is the host (and port unless it
    /// is the scheme's default; IPv6 in brackets) as the parsed URL writes it.
    fn request(&self, event: &Event, sub: &WebhookSubscription, url: &Url, via: &Via) -> Result<Vec<u8>, AttemptError> {
        let body = event.payload.as_bytes();
        let path = &url[Position::BeforePath..Position::AfterQuery];
        let host = &url[Position::BeforeHost..Position::BeforePath];
        let absolute;
        let target = match via {
            Via::Direct => path,
            Via::Proxy { target, .. } => {
                absolute = format!("http://{target}{path}");
                &absolute
            }
        };
        let mut req = Request::post(target, host, USER_AGENT, body.len());
        // Names and ids that cannot be header values are left out, not sent broken.
        if is_valid_header_value(event.name.as_bytes()) {
            req.header(EVENT_HEADER, event.name.as_bytes());
        }
        if is_valid_header_value(event.id.as_str().as_bytes()) {
            req.header(EVENT_ID_HEADER, event.id.as_str().as_bytes());
        }
        if let Auth::Bearer(token) = &sub.auth {
            let token = token.expose().as_bytes();
            if !is_valid_header_value(token) {
                return Err(NotSent::BearerToken.into());
            }
            req.header_parts("authorization", b"Bearer ", token);
        }
        self.signer
            .sign_into(event.id.as_str(), chrono::Utc::now(), body, &sub.secrets, &mut req)
            .map_err(NotSent::Signing)?;
        if let Via::Proxy { auth: Some(auth), .. } = via {
            req.header("proxy-authorization", auth.as_bytes());
        }
        Ok(req.finish(body))
    }

    /// Sends the request and reads the response head, within the timeout:
    /// over an idle pooled connection when there is one, else a new one.
    /// The connection goes back to the pool when the exchange left it
    /// reusable.
    async fn exchange(
        &self,
        event: &Event,
        sub: &WebhookSubscription,
        url: &Url,
    ) -> Result<(Head, http1::Kept), AttemptError> {
        // One timer for the whole exchange.
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let endpoint = &url[..Position::BeforePath];
        let limits = self.head_limits;
        // Made before any connection: a request that cannot be made (a bad
        // bearer token, expired secrets) opens none. Only a connection to a
        // proxy for an http receiver needs a request of its own.
        let direct = self.request(event, sub, url, &Via::Direct)?;
        let request_for = |conn: &Conn| match conn.via() {
            Via::Direct => Ok(Cow::Borrowed(&direct[..])),
            via => self.request(event, sub, url, via).map(Cow::Owned),
        };
        let exchange = async {
            if let Some(mut conn) = self.pool.take(endpoint) {
                let request = request_for(&conn)?;
                match conn.round_trip(&request, limits).await {
                    Ok((head, body_at, complete)) => return Ok((conn, head, body_at, complete)),
                    // Servers close idle keep-alive connections when they
                    // like, and we may learn it only when we send. A request
                    // none of which was written goes out again at once, on
                    // a new connection, and is not an attempt; one that was
                    // written may have been acted on, so its failure is an
                    // attempt like any other.
                    Err(e) if e.never_written() => {}
                    Err(e) => return Err(exchange_error(e)),
                }
            }
            // Boxed: connecting (resolver, proxy, TLS handshake) is a large
            // state machine, needed only when no pooled connection serves.
            let mut conn = Box::pin(self.connector.connect(url)).await?;
            let request = request_for(&conn)?;
            let (head, body_at, complete) = conn.round_trip(&request, limits).await.map_err(exchange_error)?;
            Ok((conn, head, body_at, complete))
        };
        let (mut conn, head, body_at, complete) = tokio::select! {
            biased;
            sent = exchange => sent?,
            () = &mut deadline => return Err(AttemptError::Timeout(self.timeout)),
        };
        // The status is known: reading the body only decides whether the
        // connection can be kept. Running out of time here costs the
        // connection, not the outcome.
        let mut kept = http1::Kept::up_to(self.keep_body);
        let clean = tokio::select! {
            biased;
            clean = conn.skip_body(body_at, head.framing, &mut kept) => clean,
            () = &mut deadline => false,
        };
        if clean && complete && head.keep_alive {
            self.pool.put(endpoint, conn);
        }
        Ok((head, kept))
    }

    /// For IP-literal hosts (which skip the resolver), applies the network
    /// policy here.
    fn vet(&self, url: &Url) -> Result<(), AttemptError> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => std::net::IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => std::net::IpAddr::V6(v6),
            _ => return Ok(()),
        };
        if self.policy.permits(ip) {
            return Ok(());
        }
        Err(Refused { host: ip.to_string(), addr: ip }.into())
    }
}

/// A failed exchange, in a few words that never contain the URL.
fn exchange_error(e: Exchange) -> AttemptError {
    match e {
        Exchange::Write { error, .. } => {
            AttemptError::Network(format!("sending the request failed: {}", describe(&error)))
        }
        // Answered, but not with HTTP: report the status it gave.
        Exchange::Read(ReadError::SwitchingProtocols) => AttemptError::Status { status: 101 },
        Exchange::Read(ReadError::Io { error, .. }) => {
            AttemptError::Network(format!("reading the response failed: {}", describe(&error)))
        }
        Exchange::Read(e) => AttemptError::Network(e.to_string()),
    }
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
                        while take_request(&mut buf).is_some() {
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

    /// The head (as sent) of the first whole request in `buf` (head and its
    /// `Content-Length` body), removed from `buf`; `None` until one has arrived.
    fn take_request(buf: &mut Vec<u8>) -> Option<String> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let len: usize = head
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() < end + 4 + len {
            return None;
        }
        buf.drain(..end + 4 + len);
        Some(head)
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

    fn config(policy: NetworkPolicy, timeout: Duration) -> SenderConfig {
        SenderConfig {
            policy,
            timeout,
            connect_timeout: timeout,
            proxy: None,
            head_limits: HeadLimits::default(),
            tls_roots: None,
            keep_body: 0,
        }
    }

    fn event() -> Event {
        Event::new("e", Payload::from_serialize(&serde_json::json!({"a": 1})).unwrap())
    }

    #[tokio::test]
    async fn https_deliveries_verify_the_server_and_reuse_the_connection() {
        let (port, handshakes, seen) = https_server().await;
        let policy = NetworkPolicy::default().allow_loopback();
        let timeout = Duration::from_secs(5);
        let sender = Sender::with_tls(config(policy, timeout), Signer::new(None), test_tls());
        let sub = WebhookSubscription::new(format!("https://localhost:{port}/h")).unwrap();
        let url = Url::parse(&sub.target_url).unwrap();
        for _ in 0..3 {
            let attempt = sender.send(&event(), &sub, &url).await;
            assert!(matches!(attempt.result, Ok(200)), "{attempt:?}");
        }
        assert_eq!(handshakes.load(Ordering::SeqCst), 1, "one TLS connection, kept alive");
        // An IP-literal host: verified against the certificate's IP address, no SNI.
        let sub = WebhookSubscription::new(format!("https://127.0.0.1:{port}/h")).unwrap();
        let url = Url::parse(&sub.target_url).unwrap();
        let attempt = sender.send(&event(), &sub, &url).await;
        assert!(matches!(attempt.result, Ok(200)), "{attempt:?}");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, [r#"sni=Some("localhost") alpn=Some("http/1.1")"#, r#"sni=None alpn=Some("http/1.1")"#]);
    }

    /// A TLS acceptor with the test certificate.
    fn acceptor() -> tokio_rustls::TlsAcceptor {
        let cert = CertificateDer::from_pem_slice(CERT).unwrap();
        let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    #[tokio::test]
    async fn bytes_after_a_tls_response_never_answer_the_next_delivery() {
        // The first connection answers its first request with the response
        // and a second, unasked-for response in the same write (so in the
        // same TLS record), then reads whatever comes and never answers.
        // Later connections answer every request. A delivery counts as
        // delivered only if the server answered it. The first response is
        // 8 KiB, a client's usual read size, so that a client reading it
        // in one read leaves the stray bytes decrypted inside rustls,
        // where a look at the TCP socket cannot see them.
        let acceptor = acceptor();
        let mut first = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-pad: ".to_vec();
        first.resize(8192 - 6, b'p');
        first.extend_from_slice(b"\r\n\r\nok");
        assert_eq!(first.len(), 8192);
        first.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstale");
        let first: &'static [u8] = first.leak();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answered = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(AtomicUsize::new(0));
        let (answers, requests) = (answered.clone(), received.clone());
        tokio::spawn(async move {
            let mut nth_conn = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
                let (answers, requests, first_conn) = (answers.clone(), requests.clone(), nth_conn == 0);
                nth_conn += 1;
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let mut nth = 0;
                    loop {
                        while take_request(&mut buf).is_some() {
                            requests.fetch_add(1, Ordering::SeqCst);
                            let reply: &[u8] = match (first_conn, nth) {
                                (true, 0) => first,
                                (true, _) => b"",
                                (false, _) => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                            };
                            nth += 1;
                            if !reply.is_empty() {
                                answers.fetch_add(1, Ordering::SeqCst);
                                if tls.write_all(reply).await.is_err() {
                                    return;
                                }
                            }
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        let policy = NetworkPolicy::default().allow_loopback();
        let timeout = Duration::from_secs(2);
        let sender = Sender::with_tls(config(policy, timeout), Signer::new(None), test_tls());
        let sub = WebhookSubscription::new(format!("https://localhost:{port}/h")).unwrap();
        let url = Url::parse(&sub.target_url).unwrap();
        let mut delivered = 0;
        for _ in 0..3 {
            if sender.send(&event(), &sub, &url).await.result.is_ok() {
                delivered += 1;
            }
            // Let the stray bytes arrive and be decrypted before the next delivery.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(delivered, 3, "each delivery reached a server that answered it");
        assert_eq!(answered.load(Ordering::SeqCst), 3, "no delivery was answered by stale bytes");
        assert_eq!(received.load(Ordering::SeqCst), 3, "nothing was sent to the connection with stray bytes");
    }

    #[tokio::test]
    async fn certificates_the_system_does_not_trust_are_refused() {
        let (port, handshakes, _) = https_server().await;
        let policy = NetworkPolicy::default().allow_loopback();
        let timeout = Duration::from_secs(5);
        // The real set-up: the platform verifier and the system's roots.
        let sender = Sender::new(config(policy, timeout), Signer::new(None)).unwrap();
        let sub = WebhookSubscription::new(format!("https://localhost:{port}/h")).unwrap();
        let url = Url::parse(&sub.target_url).unwrap();
        match sender.send(&event(), &sub, &url).await.result {
            Err(AttemptError::Network(msg)) => {
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
        let sender = Sender::with_tls(config(policy, timeout), Signer::new(None), test_tls());
        let sub = WebhookSubscription::new(format!("http://localhost:{port}/h?token=SECRET")).unwrap();
        let url = Url::parse(&sub.target_url).unwrap();
        match sender.send(&event(), &sub, &url).await.result {
            Err(AttemptError::Network(msg)) => {
                assert_eq!(msg, "could not connect: connection refused");
            }
            other => panic!("{other:?}"),
        }
        // Names resolving only to refused addresses are refused, not retried.
        let strict = Sender::with_tls(config(NetworkPolicy::default(), timeout), Signer::new(None), test_tls());
        match strict.send(&event(), &sub, &url).await.result {
            Err(AttemptError::Refused(refused)) => assert_eq!(refused.host, "localhost"),
            other => panic!("{other:?}"),
        }
    }
}
