//! Sending one attempt of one delivery: build the request, sign it, POST it
//! over a pooled keep-alive connection, classify the answer.
//!
//! The HTTP client is our own small HTTP/1.1 client ([`http1`] writes
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
        let deadline = tokio::time::Instant::now() + self.timeout;
        let endpoint = &url[..Position::BeforePath];
        let sent = tokio::time::timeout_at(deadline, async {
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
            let mut conn = self.connector.connect(url).await?;
            let (head, body_at) = round_trip(&mut conn, request).await.map_err(Exchange::into_delivery_error)?;
            Ok((conn, head, body_at))
        })
        .await;
        let (mut conn, head, body_at) = match sent {
            Ok(sent) => sent?,
            Err(_) => return Err(DeliveryError::Timeout(self.timeout)),
        };
        // The status is known: reading the body only decides whether the
        // connection can be kept. Running out of time here costs the
        // connection, not the outcome.
        let framing = head.framing;
        let clean = tokio::time::timeout_at(deadline, http1::skip_body(&mut conn.io, &mut conn.buf, body_at, framing))
            .await
            .unwrap_or(false);
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
