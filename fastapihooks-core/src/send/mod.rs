//! Sending one attempt of one delivery: build the request, sign it, POST it
//! through the guarded client, classify the answer.

pub mod guard;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, header};
use url::Url;

use crate::dead_letter::DeliveryError;
use crate::event::Event;
use crate::retry::parse_retry_after;
use crate::sign::Signer;
use crate::subscription::{Auth, WebhookSubscription};
use guard::{GuardedResolver, NetworkPolicy, Refused};

/// The event-name header.
pub const EVENT_HEADER: &str = "x-fastapihooks-event";
/// The event-id header: the same on every retry, for de-duplication.
pub const EVENT_ID_HEADER: &str = "x-fastapihooks-event-id";
/// The `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("fastapihooks/", env!("CARGO_PKG_VERSION"));

/// Largest response body read back (to keep the connection reusable).
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// The outcome of one attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// 2xx.
    Delivered { status: u16 },
    /// Failed; `retry_after` is what the endpoint asked for.
    Failed { error: DeliveryError, retry_after: Option<Duration> },
}

/// The HTTP side of delivery: one shared client (keep-alive, rustls), the
/// network policy and the signer.
#[derive(Clone, Debug)]
pub(crate) struct Sender {
    client: reqwest::Client,
    policy: Arc<NetworkPolicy>,
    signer: Signer,
    timeout: Duration,
}

impl Sender {
    pub(crate) fn new(
        policy: NetworkPolicy,
        signer: Signer,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() }))
            .build()?;
        Ok(Self { client, policy, signer, timeout })
    }

    /// One POST of `event` to `sub`, whose target URL is `url` (parsed).
    pub(crate) async fn send(&self, event: &Event, sub: &WebhookSubscription, url: &Url) -> Attempt {
        if let Err(error) = self.vet(url) {
            return Attempt::Failed { error, retry_after: None };
        }
        let body = event.payload.as_bytes().clone();
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(&event.name) {
            headers.insert(EVENT_HEADER, v);
        }
        if let Ok(v) = HeaderValue::from_str(event.id.as_str()) {
            headers.insert(EVENT_ID_HEADER, v);
        }
        if let Auth::Bearer(token) = &sub.auth {
            match HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.insert(header::AUTHORIZATION, v);
                }
                Err(_) => {
                    let error = DeliveryError::Refused("bearer token is not a valid header value".into());
                    return Attempt::Failed { error, retry_after: None };
                }
            }
        }
        if let Err(e) = self.signer.sign(event.id.as_str(), chrono::Utc::now(), &body, &sub.secrets, &mut headers) {
            return Attempt::Failed { error: DeliveryError::Refused(e.to_string()), retry_after: None };
        }

        let result = self.client.post(url.clone()).headers(headers).body(body).send().await;
        match result {
            Ok(mut resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                // Read (a bounded amount of) the body so the connection can be reused.
                let mut read = 0usize;
                while read <= MAX_RESPONSE_BODY {
                    match resp.chunk().await {
                        Ok(Some(chunk)) => read += chunk.len(),
                        _ => break,
                    }
                }
                let code = status.as_u16();
                if status.is_success() {
                    Attempt::Delivered { status: code }
                } else if status.is_redirection() {
                    Attempt::Failed { error: DeliveryError::Redirect { status: code }, retry_after: None }
                } else {
                    let error = DeliveryError::Status { status: code };
                    let retry_after = if error.is_retryable() { retry_after } else { None };
                    Attempt::Failed { error, retry_after }
                }
            }
            Err(err) => Attempt::Failed { error: self.classify(err), retry_after: None },
        }
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

    fn classify(&self, err: reqwest::Error) -> DeliveryError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = source {
            if let Some(refused) = e.downcast_ref::<Refused>() {
                return DeliveryError::Refused(refused.to_string());
            }
            source = e.source();
        }
        if err.is_timeout() {
            return DeliveryError::Timeout(self.timeout);
        }
        // Never echo the URL: query strings may carry tokens.
        let err = err.without_url();
        let mut msg = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(e) = source {
            msg.push_str(": ");
            msg.push_str(&e.to_string());
            source = e.source();
        }
        DeliveryError::Network(msg)
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
