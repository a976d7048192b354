//! [`RedisStreamsBackend`]: a durable queue on Redis Streams, consumed by a
//! sidecar [`Worker`](crate::worker::Worker).
//!
//! ```text
//! app:    publish ─ XADD {stream} * event <json>   (a batch: one pipeline of XADDs, one round trip)
//! worker: consume ─ XREADGROUP GROUP {group} {consumer} BLOCK .. STREAMS {stream} >   (dedicated connection)
//!                 └ every claim interval: XAUTOCLAIM entries idle > min-idle (a dead worker's)
//!         ack ───── each received event's own: XACK + XDEL in one round trip (acked entries do not stay in the stream)
//! ```
//!
//! An entry that cannot be decoded, or that was handed out more than
//! `max_deliveries` times without an ack (a poison message), is copied to
//! the dead-letter stream (`{stream}:dead` by default) and acked.

// One file a stage of the flow: publish -> consume (claim, with its
// cleanup; heartbeat) -> ack, or dead_letter. Beneath them all: connection,
// reply and validate (what is read from Redis is untrusted). Beside the
// flow: attempts, the delivery history.
mod ack;
mod attempts;
mod claim;
mod cleanup;
mod connection;
mod consume;
mod dead_letter;
mod failures;
mod heartbeat;
mod publish;
mod reply;
mod schedule;
mod validate;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use redis::{Client, RedisError};
use tokio_util::sync::CancellationToken;

pub use self::attempts::RedisAttemptLog;
use self::connection::Connections;
use self::heartbeat::InFlight;
use super::{Backend, BackendError, PublishBatchError, Received, RetrySchedule};
use crate::dead_letter::{FailureFilter, FailureRecord, FailureStore, RecoverReport};
use crate::event::Event;
use crate::secret::Secret;

/// The field of a stream entry that holds the event, as JSON.
pub const EVENT_FIELD: &str = "event";

/// Why a [`RedisStreamsBackend`] could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConfigError {
    /// The URL is not a Redis URL (the message never contains a password).
    #[error("invalid Redis URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL with its password replaced by `[redacted]`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting is out of range or unusable.
    #[error("invalid Redis Streams setting `{setting}`: {reason}")]
    Invalid {
        /// Which setting.
        setting: RedisSetting,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl RedisConfigError {
    fn invalid(setting: RedisSetting, reason: &'static str) -> Self {
        Self::Invalid { setting, reason }
    }

    /// The setting at fault, for a caller that names it its own way (the
    /// CLI names its flags); `None` for the URL.
    pub fn setting(&self) -> Option<RedisSetting> {
        match self {
            Self::InvalidUrl { .. } => None,
            Self::Invalid { setting, .. } => Some(*setting),
        }
    }
}

/// A setting of [`RedisStreamsBuilder`], named in a [`RedisConfigError`].
/// Displayed as the builder method that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedisSetting {
    /// [`RedisStreamsBuilder::stream`].
    Stream,
    /// [`RedisStreamsBuilder::group`].
    Group,
    /// [`RedisStreamsBuilder::consumer`].
    Consumer,
    /// [`RedisStreamsBuilder::batch_size`].
    BatchSize,
    /// [`RedisStreamsBuilder::claim_min_idle`].
    ClaimMinIdle,
    /// [`RedisStreamsBuilder::max_deliveries`].
    MaxDeliveries,
    /// [`RedisStreamsBuilder::dead_letter_stream`].
    DeadLetterStream,
    /// [`RedisStreamsBuilder::dead_letter_max_len`].
    DeadLetterMaxLen,
    /// [`RedisStreamsBuilder::timeout`].
    Timeout,
    /// [`RedisStreamsBuilder::connect_timeout`].
    ConnectTimeout,
    /// [`RedisStreamsBuilder::tls_root_certificates`].
    TlsRootCertificates,
}

impl fmt::Display for RedisSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stream => "stream",
            Self::Group => "group",
            Self::Consumer => "consumer",
            Self::BatchSize => "batch_size",
            Self::ClaimMinIdle => "claim_min_idle",
            Self::MaxDeliveries => "max_deliveries",
            Self::DeadLetterStream => "dead_letter_stream",
            Self::DeadLetterMaxLen => "dead_letter_max_len",
            Self::Timeout => "timeout",
            Self::ConnectTimeout => "connect_timeout",
            Self::TlsRootCertificates => "tls_root_certificates",
        })
    }
}

/// Checks that `pem` holds at least one certificate, and that each is one
/// rustls can trust: a file of anything else would be taken, and then
/// every TLS connection would fail.
fn check_tls_roots(pem: &[u8]) -> Result<(), RedisConfigError> {
    use tokio_rustls::rustls::RootCertStore;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    let invalid = |reason| RedisConfigError::invalid(RedisSetting::TlsRootCertificates, reason);
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|_| invalid("not valid PEM"))?;
        roots.add(cert).map_err(|_| invalid("a certificate in it cannot be read"))?;
    }
    if roots.is_empty() {
        return Err(invalid("no certificate in it"));
    }
    Ok(())
}

/// Configures a [`RedisStreamsBackend`]; made by [`RedisStreamsBackend::builder`].
#[derive(Clone)]
pub struct RedisStreamsBuilder {
    url: Secret,
    stream: String,
    group: String,
    consumer: Option<String>,
    block: Duration,
    batch_size: usize,
    claim_min_idle: Duration,
    claim_interval: Option<Duration>,
    retry_poll_interval: Duration,
    failures_max_len: usize,
    max_deliveries: u64,
    max_event_bytes: usize,
    dead_letter_stream: Option<String>,
    dead_letter_max_len: usize,
    timeout: Duration,
    connect_timeout: Duration,
    max_backoff: Duration,
    forget_consumers_after: Duration,
    /// PEM root certificates for `rediss://`, instead of the system's.
    tls_roots: Option<Vec<u8>>,
}

impl fmt::Debug for RedisStreamsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamsBuilder")
            .field("url", &redact_url(self.url.expose()))
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("block", &self.block)
            .field("batch_size", &self.batch_size)
            .field("claim_min_idle", &self.claim_min_idle)
            .field("max_deliveries", &self.max_deliveries)
            .finish_non_exhaustive()
    }
}

impl RedisStreamsBuilder {
    /// The stream key (default `fastapihooks:events`).
    #[must_use]
    pub fn stream(mut self, key: impl Into<String>) -> Self {
        self.stream = key.into();
        self
    }

    /// The consumer group every worker joins (default `fastapihooks`).
    /// Workers of one group share the events; each event goes to one of them.
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// This consumer's name in the group (default: host name, process id and
    /// a random suffix, unique per backend). Names must be unique among the
    /// live workers of a group.
    #[must_use]
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// How long one `XREADGROUP` waits for new entries (default 2 s,
    /// at least 1 ms). Shorter means quicker claims when idle, more round trips.
    #[must_use]
    pub fn block(mut self, block: Duration) -> Self {
        self.block = block;
        self
    }

    /// Entries read (or claimed) per round trip (default 32, at least 1).
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// How long an entry must sit unacknowledged in another (presumably
    /// dead) consumer's pending list before this one claims it (default
    /// 60 s). Entries a live worker is still delivering are kept fresh by it
    /// and never claimed; keep the worker's shutdown deadline below this.
    #[must_use]
    pub fn claim_min_idle(mut self, idle: Duration) -> Self {
        self.claim_min_idle = idle;
        self
    }

    /// How often pending entries are looked at for claiming (default: half
    /// the claim min-idle, at most 30 s).
    #[must_use]
    pub fn claim_interval(mut self, interval: Duration) -> Self {
        self.claim_interval = Some(interval);
        self
    }

    /// How often a consumer moves the deliveries of the durable retry
    /// schedule that are due back to the stream (default 250 ms; at least
    /// 10 ms). A retry goes out at most about this late.
    #[must_use]
    pub fn retry_poll_interval(mut self, interval: Duration) -> Self {
        self.retry_poll_interval = interval;
        self
    }

    /// The stream of recorded final failures keeps about this many, the
    /// newest (default 100,000; trimmed with `MAXLEN ~`).
    #[must_use]
    pub fn failures_max_len(mut self, n: usize) -> Self {
        self.failures_max_len = n;
        self
    }

    /// How many times an entry may be handed to a consumer (default 5, at
    /// least 1). An entry claimed again after that is a poison message: it
    /// goes to the dead-letter stream and is reported, instead of being
    /// handed out again.
    #[must_use]
    pub fn max_deliveries(mut self, n: u64) -> Self {
        self.max_deliveries = n;
        self
    }

    /// The largest event accepted, as the JSON of the stream entry's `event`
    /// field, in bytes (default 4 MiB, at least 1 KiB). A larger event is
    /// refused by `publish` (reported to the app's `on_failure`) and, found
    /// in the stream, dead-lettered as malformed.
    #[must_use]
    pub fn max_event_bytes(mut self, n: usize) -> Self {
        self.max_event_bytes = n;
        self
    }

    /// The dead-letter stream (default: the stream key followed by `:dead`).
    #[must_use]
    pub fn dead_letter_stream(mut self, key: impl Into<String>) -> Self {
        self.dead_letter_stream = Some(key.into());
        self
    }

    /// The dead-letter stream keeps about this many entries, the newest
    /// (default 100,000; trimmed with `MAXLEN ~`).
    #[must_use]
    pub fn dead_letter_max_len(mut self, n: usize) -> Self {
        self.dead_letter_max_len = n;
        self
    }

    /// Time limit of one command (default 5 s): publish, ack and heartbeat
    /// on the shared connection, and group creation, claims, clean-up and
    /// dead-lettering on the consumer's own, so a Redis that stops answering
    /// is a transport error, not a hung step. The blocking read is bounded
    /// by the block time plus this.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time limit for connecting (default 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest wait between two reconnection attempts of the consumer
    /// (default 5 s; the wait doubles from 50 ms up to this).
    #[must_use]
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// How long another consumer of the group must have been idle, with no
    /// entry pending, before it is removed from the group (default 1 hour;
    /// at least ten block times). Workers named by default get a new
    /// name each start, so without this the group would list every worker
    /// that ever ran. A live worker reads at least every block time, so it
    /// is never idle that long; a dead one's entries are claimed first.
    #[must_use]
    pub fn forget_consumers_after(mut self, idle: Duration) -> Self {
        self.forget_consumers_after = idle;
        self
    }

    /// For a `rediss://` URL: trust these root certificates (PEM) instead of
    /// the system's, say a private CA's. The server's name is checked
    /// against its certificate either way.
    #[must_use]
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_roots = Some(pem.into());
        self
    }

    /// Checks the settings and makes the backend. Connects lazily: nothing
    /// is sent to Redis until the first publish or consume. With a
    /// `rediss://` URL, if the process has no default rustls crypto
    /// provider yet, this installs aws-lc-rs (the one the webhook client
    /// uses) as the default.
    ///
    /// # Errors
    /// The URL is not a Redis URL, root certificates were given for a
    /// plain `redis://` URL, or a setting is empty or zero.
    pub fn build(self) -> Result<RedisStreamsBackend, RedisConfigError> {
        let invalid_url =
            |e: RedisError| RedisConfigError::InvalidUrl { url: redact_url(self.url.expose()), reason: e.to_string() };
        let tls = self.url.expose().starts_with("rediss://");
        if tls {
            // redis-rs builds its TLS set-up with rustls' process default,
            // which is ambiguous (a panic when connecting) if the app
            // compiled in two providers and installed none: settle it as the
            // webhook client does.
            if tokio_rustls::rustls::crypto::CryptoProvider::get_default().is_none() {
                let _ = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
            }
        } else if self.tls_roots.is_some() {
            return Err(RedisConfigError::invalid(
                RedisSetting::TlsRootCertificates,
                "TLS root certificates need a rediss:// URL",
            ));
        }
        let client = match &self.tls_roots {
            Some(pem) => {
                check_tls_roots(pem)?;
                let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) };
                Client::build_with_tls(self.url.expose(), certs)
            }
            None => Client::open(self.url.expose()),
        }
        .map_err(invalid_url)?;
        if self.stream.is_empty() {
            return Err(RedisConfigError::invalid(RedisSetting::Stream, "the stream key is empty"));
        }
        if self.group.is_empty() {
            return Err(RedisConfigError::invalid(RedisSetting::Group, "the group name is empty"));
        }
        if self.consumer.as_deref() == Some("") {
            return Err(RedisConfigError::invalid(RedisSetting::Consumer, "the consumer name is empty"));
        }
        for (n, setting) in [
            (self.batch_size as u64, RedisSetting::BatchSize),
            (self.max_deliveries, RedisSetting::MaxDeliveries),
            (self.dead_letter_max_len as u64, RedisSetting::DeadLetterMaxLen),
        ] {
            if n == 0 {
                return Err(RedisConfigError::invalid(setting, "must be at least 1"));
            }
        }
        for (d, setting) in [
            (self.claim_min_idle, RedisSetting::ClaimMinIdle),
            (self.timeout, RedisSetting::Timeout),
            (self.connect_timeout, RedisSetting::ConnectTimeout),
        ] {
            if d.is_zero() {
                return Err(RedisConfigError::invalid(setting, "must be positive"));
            }
        }
        let dead = self.dead_letter_stream.unwrap_or_else(|| format!("{}:dead", self.stream));
        if dead == self.stream {
            return Err(RedisConfigError::invalid(
                RedisSetting::DeadLetterStream,
                "the dead-letter stream must differ from the stream",
            ));
        }
        let claim_interval = self
            .claim_interval
            .unwrap_or_else(|| (self.claim_min_idle / 2).min(Duration::from_secs(30)))
            .max(Duration::from_millis(10));
        let (schedule, payload_prefix) = schedule::keys(&self.stream);
        let failures = format!("{}:failures", self.stream);
        let config = Config {
            url: redact_url(self.url.expose()),
            stream: self.stream,
            group: self.group,
            consumer: self.consumer.unwrap_or_else(default_consumer_name),
            block: self.block.max(Duration::from_millis(1)),
            batch_size: self.batch_size,
            claim_min_idle: self.claim_min_idle,
            claim_interval,
            schedule_poll: self.retry_poll_interval.max(Duration::from_millis(10)),
            schedule,
            payload_prefix,
            failures,
            failures_max_len: self.failures_max_len.max(1),
            max_deliveries: self.max_deliveries,
            max_event_bytes: self.max_event_bytes.max(1024),
            dead,
            dead_max_len: self.dead_letter_max_len,
            timeout: self.timeout,
            max_backoff: self.max_backoff.max(Duration::from_millis(50)),
            forget_consumers_after: self.forget_consumers_after.max(self.block * 10),
        };
        Ok(RedisStreamsBackend {
            inner: Arc::new(Inner {
                connections: Connections::new(client, self.connect_timeout, self.timeout),
                config,
                in_flight: InFlight::new(),
                closed: CancellationToken::new(),
                consumed: AtomicBool::new(false),
            }),
        })
    }
}

/// A durable [`Backend`] on Redis Streams (Redis 6.2 or later).
///
/// The app publishes with it (`XADD`); sidecar [`Worker`](crate::worker::Worker)s
/// in one consumer group consume, deliver and acknowledge. Delivery is at
/// least once:
///
/// - an event is acked (`XACK` + `XDEL`) only once each of its deliveries
///   was delivered or handed to `on_failure`;
/// - events a worker read but did not ack (it crashed, or shutdown cut their
///   delivery short) stay in the group's pending list and are claimed
///   (`XAUTOCLAIM`) by a live worker once idle for the claim min-idle; a live
///   worker keeps the entries it is delivering fresh so nobody claims them;
/// - a lost consumer group (Redis restarted without its data: `NOGROUP`) is
///   created again, reading the stream from its start; a lost connection is
///   re-made with an exponential backoff, the consumer's stream yields the
///   error and goes on.
///
/// When Redis cannot take an event (down, out of memory with the
/// `noeviction` policy), `publish` returns [`BackendError::Transport`]
/// (`publish_batch`: for the events concerned); the app's pipeline keeps
/// the event in its publish spool and publishes it again, and hands it to
/// `on_failure` if the spool is full or the give-up time passes
/// (`FastapihooksBuilder::publish_spool`): it is reported, not silently
/// lost. Events carry their static subscribers, secrets included:
/// protect Redis like the subscription store.
///
/// `Debug` and every log line show the URL with its password redacted.
///
/// ```
/// # use std::time::Duration;
/// use fastapihooks_core::backend::RedisStreamsBackend;
/// let backend = RedisStreamsBackend::builder("redis://:secret@127.0.0.1:6379/0")
///     .stream("myapp:webhooks")
///     .claim_min_idle(Duration::from_secs(60))
///     .build()?;
/// assert!(!format!("{backend:?}").contains("secret"));
/// # Ok::<(), fastapihooks_core::backend::RedisConfigError>(())
/// ```
#[derive(Clone)]
pub struct RedisStreamsBackend {
    inner: Arc<Inner>,
}

struct Config {
    /// For logs: the password is redacted.
    url: String,
    stream: String,
    group: String,
    consumer: String,
    block: Duration,
    batch_size: usize,
    claim_min_idle: Duration,
    claim_interval: Duration,
    /// The durable retry schedule (a sorted set), its poll interval, and
    /// the key prefix of the events its deliveries need.
    schedule: String,
    schedule_poll: Duration,
    payload_prefix: String,
    /// The recorded final failures, and about how many are kept.
    failures: String,
    failures_max_len: usize,
    max_deliveries: u64,
    max_event_bytes: usize,
    dead: String,
    dead_max_len: usize,
    timeout: Duration,
    max_backoff: Duration,
    forget_consumers_after: Duration,
}

/// What the backend's clones, its consume stream and the heartbeat share.
struct Inner {
    config: Config,
    connections: Connections,
    in_flight: InFlight,
    closed: CancellationToken,
    consumed: AtomicBool,
}

impl Inner {
    fn transport(&self, what: &str, e: RedisError) -> BackendError {
        BackendError::transport(format!("redis {what} on {} failed: {e}", self.config.url))
    }
}

impl fmt::Debug for RedisStreamsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.inner.config;
        f.debug_struct("RedisStreamsBackend")
            .field("url", &c.url)
            .field("stream", &c.stream)
            .field("group", &c.group)
            .field("consumer", &c.consumer)
            .field("dead_letter_stream", &c.dead)
            .finish_non_exhaustive()
    }
}

impl RedisStreamsBackend {
    /// A builder for a backend on the Redis at `url`
    /// (`redis://[:password@]host[:port][/db]`, or `rediss://...` for TLS,
    /// checked against the system's root certificates unless
    /// [`tls_root_certificates`](RedisStreamsBuilder::tls_root_certificates)
    /// says otherwise).
    pub fn builder(url: impl Into<Secret>) -> RedisStreamsBuilder {
        RedisStreamsBuilder {
            url: url.into(),
            stream: "fastapihooks:events".to_owned(),
            group: "fastapihooks".to_owned(),
            consumer: None,
            block: Duration::from_secs(2),
            batch_size: 32,
            claim_min_idle: Duration::from_secs(60),
            claim_interval: None,
            retry_poll_interval: Duration::from_millis(250),
            failures_max_len: 100_000,
            max_deliveries: 5,
            max_event_bytes: 4 << 20,
            dead_letter_stream: None,
            dead_letter_max_len: 100_000,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            forget_consumers_after: Duration::from_secs(3600),
            tls_roots: None,
        }
    }

    /// A backend with the default settings.
    ///
    /// # Errors
    /// The URL is not a Redis URL.
    pub fn new(url: impl Into<Secret>) -> Result<Self, RedisConfigError> {
        Self::builder(url).build()
    }

    /// The stream key.
    pub fn stream_key(&self) -> &str {
        &self.inner.config.stream
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.inner.config.group
    }

    /// This backend's consumer name.
    pub fn consumer(&self) -> &str {
        &self.inner.config.consumer
    }

    /// The dead-letter stream key.
    pub fn dead_letter_stream(&self) -> &str {
        &self.inner.config.dead
    }

    /// The stream of recorded final failures (`{stream}:failures`): what a
    /// worker gave up, kept for `fastapihooks failures` and
    /// [`RedisStreamsBackend::replay`].
    pub fn failures_stream(&self) -> &str {
        &self.inner.config.failures
    }

    /// The final failures the workers of this stream recorded (list, get,
    /// remove).
    pub fn failures(&self) -> Arc<dyn FailureStore> {
        Arc::new(failures::RedisFailures(self.inner.clone()))
    }

    /// The history of this stream's deliveries: every attempt, in a bounded
    /// stream `{stream}:attempts` (about
    /// [`RedisAttemptLog::DEFAULT_MAX_LEN`] entries; see
    /// [`RedisAttemptLog::max_len`]), on this backend's connection.
    pub fn attempt_log(&self) -> RedisAttemptLog {
        RedisAttemptLog::new(self.inner.clone())
    }

    /// Sends a recorded failure again, with the same event (the same
    /// `webhook-id`) and a fresh round of attempts: a delivery to its
    /// subscription only, a failure of the whole event to every subscriber
    /// the event has now. The record is removed in the same transaction. A
    /// worker delivers it.
    ///
    /// # Errors
    /// Redis could not take it; nothing changed then.
    pub async fn replay(&self, record: &FailureRecord) -> Result<(), BackendError> {
        self.inner.replay(record).await
    }

    /// Sends again every recorded failure that `filter` matches (a
    /// subscription's or an owner's, in a time window), at most
    /// `filter.limit`, each as [`replay`](Self::replay) does:
    /// same `webhook-id`, a fresh round of attempts through the retry
    /// schedule, the record removed. Records that cannot be replayed are
    /// kept and counted.
    ///
    /// # Errors
    /// Redis could not be read; what was replayed before stays replayed.
    pub async fn recover(&self, filter: &FailureFilter) -> Result<RecoverReport, BackendError> {
        failures::recover(self, filter).await
    }
}

#[async_trait]
impl Backend for RedisStreamsBackend {
    async fn publish(&self, event: Event) -> Result<(), BackendError> {
        self.inner.publish(event).await
    }

    async fn publish_batch(&self, events: Vec<Event>) -> Result<(), PublishBatchError> {
        self.inner.publish_batch(events).await
    }

    fn consume(&self) -> BoxStream<'static, Result<Received, BackendError>> {
        self.inner.consume()
    }

    fn retry_schedule(&self) -> Option<Arc<dyn RetrySchedule>> {
        Some(Arc::new(schedule::RedisSchedule(self.inner.clone())))
    }

    fn failure_store(&self) -> Option<Arc<dyn FailureStore>> {
        Some(self.failures())
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.inner.closed.cancel();
        Ok(())
    }
}

/// The URL with its password (if any) replaced by `[redacted]`.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("redacted"));
            }
            // The brackets would be percent-encoded in the password.
            parsed.to_string().replacen(":redacted@", ":[redacted]@", 1)
        }
        // Not parseable: show only the scheme, if any.
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://[redacted]"),
            None => "[redacted]".to_owned(),
        },
    }
}

/// `host-pid-xxxx`: unique per backend, readable in `XINFO CONSUMERS`.
fn default_consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &[u8] = include_bytes!("../../send/testdata/ca.pem");

    #[test]
    fn tls_roots_without_a_usable_certificate_are_refused_at_build() {
        let tls = |pem: &[u8]| RedisStreamsBackend::builder("rediss://127.0.0.1/").tls_root_certificates(pem).build();
        assert!(tls(CA).is_ok());
        let key = include_bytes!("../../send/testdata/server.key");
        let not_a_cert = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
        for (pem, why) in [
            (&b""[..], "no certificate in it"),
            (b"just some text\n", "no certificate in it"),
            (&key[..], "no certificate in it"),
            (&not_a_cert[..], "a certificate in it cannot be read"),
        ] {
            let err = tls(pem).expect_err(why);
            assert_eq!(err.setting(), Some(RedisSetting::TlsRootCertificates), "{err}");
            assert!(err.to_string().ends_with(why), "{err}");
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("redis://:hunter2@h:6379/0"), "redis://:[redacted]@h:6379/0");
        assert_eq!(redact_url("redis://user:hunter2@h/"), "redis://user:[redacted]@h/");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert!(!redact_url("redis://:hunter2@[bad").contains("hunter2"));
    }

    #[test]
    fn debug_and_errors_hide_the_password() {
        let b = RedisStreamsBackend::builder("redis://:hunter2@127.0.0.1:1/0");
        assert!(!format!("{b:?}").contains("hunter2"));
        let backend = b.build().expect("valid");
        assert!(!format!("{backend:?}").contains("hunter2"));
        let err = RedisStreamsBackend::new("http://:hunter2@h/").expect_err("not redis");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn settings_are_checked() {
        let url = "redis://127.0.0.1/";
        let setting = |b: RedisStreamsBuilder| b.build().err().and_then(|e| e.setting());
        let b = || RedisStreamsBackend::builder(url);
        assert_eq!(setting(b().stream("")), Some(RedisSetting::Stream));
        assert_eq!(setting(b().group("")), Some(RedisSetting::Group));
        assert_eq!(setting(b().consumer("")), Some(RedisSetting::Consumer));
        assert_eq!(setting(b().batch_size(0)), Some(RedisSetting::BatchSize));
        assert_eq!(setting(b().max_deliveries(0)), Some(RedisSetting::MaxDeliveries));
        assert_eq!(setting(b().dead_letter_max_len(0)), Some(RedisSetting::DeadLetterMaxLen));
        assert_eq!(setting(b().claim_min_idle(Duration::ZERO)), Some(RedisSetting::ClaimMinIdle));
        assert_eq!(setting(b().timeout(Duration::ZERO)), Some(RedisSetting::Timeout));
        assert_eq!(setting(b().connect_timeout(Duration::ZERO)), Some(RedisSetting::ConnectTimeout));
        assert_eq!(setting(b().stream("s").dead_letter_stream("s")), Some(RedisSetting::DeadLetterStream));
        assert_eq!(setting(b().tls_root_certificates(CA)), Some(RedisSetting::TlsRootCertificates), "needs rediss://");
        let err = b().group("").build().unwrap_err();
        assert_eq!(err.to_string(), "invalid Redis Streams setting `group`: the group name is empty");
        assert_eq!(RedisStreamsBackend::new("http://h/").unwrap_err().setting(), None, "the URL is no setting");
        let b = RedisStreamsBackend::builder(url).stream("s").build().expect("valid");
        assert_eq!(b.dead_letter_stream(), "s:dead");
        assert_eq!(b.group(), "fastapihooks");
        let other = RedisStreamsBackend::new(url).expect("valid");
        assert_ne!(b.consumer(), other.consumer(), "default consumer names are unique");
    }
}
