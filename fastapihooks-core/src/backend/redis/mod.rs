//! [`RedisStreamsBackend`]: a durable queue on Redis Streams, consumed by a
//! sidecar [`Worker`](crate::worker::Worker).
//!
//! ```text
//! app:    publish ─ XADD {stream} * event <json>
//! worker: consume ─ XREADGROUP GROUP {group} {consumer} BLOCK .. STREAMS {stream} >   (dedicated connection)
//!                 └ every claim interval: XAUTOCLAIM entries idle > min-idle (a dead worker's)
//!         ack ───── XACK + XDEL in one round trip (acked entries do not stay in the stream)
//! ```
//!
//! An entry that cannot be decoded, or that was handed out more than
//! `max_deliveries` times without an ack (a poison message), is copied to
//! the dead-letter stream (`{stream}:dead` by default) and acked.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Value};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Backend, BackendError, Receipt, Received};
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
    /// A setting is out of range.
    #[error("invalid Redis Streams setting: {0}")]
    Invalid(&'static str),
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
    max_deliveries: u64,
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

    /// How many times an entry may be handed to a consumer (default 5, at
    /// least 1). An entry claimed again after that is a poison message: it
    /// goes to the dead-letter stream and is reported, instead of being
    /// handed out again.
    #[must_use]
    pub fn max_deliveries(mut self, n: u64) -> Self {
        self.max_deliveries = n;
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

    /// Time limit of one command on the shared connection (publish, ack,
    /// claims; default 5 s). The blocking read has none of its own: it is
    /// bounded by the block time plus this.
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
            return Err(RedisConfigError::Invalid("TLS root certificates need a rediss:// URL"));
        }
        let client = match &self.tls_roots {
            Some(pem) => {
                let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) };
                Client::build_with_tls(self.url.expose(), certs)
            }
            None => Client::open(self.url.expose()),
        }
        .map_err(invalid_url)?;
        if self.stream.is_empty() {
            return Err(RedisConfigError::Invalid("the stream key is empty"));
        }
        if self.group.is_empty() {
            return Err(RedisConfigError::Invalid("the group name is empty"));
        }
        if self.consumer.as_deref() == Some("") {
            return Err(RedisConfigError::Invalid("the consumer name is empty"));
        }
        if self.batch_size == 0 || self.max_deliveries == 0 || self.dead_letter_max_len == 0 {
            return Err(RedisConfigError::Invalid(
                "batch size, max deliveries and dead-letter length must be at least 1",
            ));
        }
        if self.claim_min_idle.is_zero() || self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(RedisConfigError::Invalid("claim min-idle, timeout and connect timeout must be positive"));
        }
        let dead = self.dead_letter_stream.unwrap_or_else(|| format!("{}:dead", self.stream));
        if dead == self.stream {
            return Err(RedisConfigError::Invalid("the dead-letter stream must differ from the stream"));
        }
        let claim_interval = self
            .claim_interval
            .unwrap_or_else(|| (self.claim_min_idle / 2).min(Duration::from_secs(30)))
            .max(Duration::from_millis(10));
        let config = Config {
            url: redact_url(self.url.expose()),
            stream: self.stream,
            group: self.group,
            consumer: self.consumer.unwrap_or_else(default_consumer_name),
            block: self.block.max(Duration::from_millis(1)),
            batch_size: self.batch_size,
            claim_min_idle: self.claim_min_idle,
            claim_interval,
            max_deliveries: self.max_deliveries,
            dead,
            dead_max_len: self.dead_letter_max_len,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            max_backoff: self.max_backoff.max(Duration::from_millis(50)),
            forget_consumers_after: self.forget_consumers_after.max(self.block * 10),
        };
        Ok(RedisStreamsBackend {
            inner: Arc::new(Inner {
                client,
                config,
                shared: tokio::sync::Mutex::new(None),
                in_flight: Mutex::new(HashSet::new()),
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
/// `noeviction` policy), `publish` returns [`BackendError::Transport`] and
/// the app's pipeline hands the event to `on_failure`: it is reported, not
/// silently lost. Events carry their static subscribers, secrets included:
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
    max_deliveries: u64,
    dead: String,
    dead_max_len: usize,
    timeout: Duration,
    connect_timeout: Duration,
    max_backoff: Duration,
    forget_consumers_after: Duration,
}

struct Inner {
    client: Client,
    config: Config,
    /// The connection publish, ack and claims share (with a response timeout).
    shared: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Entries read by this consumer and not acked yet: kept fresh (their
    /// idle time reset) so no other worker claims them.
    in_flight: Mutex<HashSet<String>>,
    closed: CancellationToken,
    consumed: AtomicBool,
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
            max_deliveries: 5,
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
}

impl Inner {
    /// The shared connection, connecting when there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut slot = self.shared.lock().await;
        if let Some(conn) = &*slot {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.timeout));
        let conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn forget_connection(&self) {
        *self.shared.lock().await = None;
    }

    /// Runs `op` on the shared connection. A connection found broken (Redis
    /// restarted since) is replaced and `op` tried once more: it may then
    /// run twice, which at-least-once delivery allows.
    async fn with_connection<T, F, Fut>(&self, op: F) -> Result<T, RedisError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut retried = false;
        loop {
            let conn = match self.connection().await {
                Ok(conn) => conn,
                Err(e) => return Err(e),
            };
            match op(conn).await {
                Ok(v) => return Ok(v),
                Err(e) if is_connection_error(&e) => {
                    self.forget_connection().await;
                    if retried {
                        return Err(e);
                    }
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn transport(&self, what: &str, e: RedisError) -> BackendError {
        BackendError::transport(format!("redis {what} on {} failed: {e}", self.config.url))
    }

    fn untrack(&self, id: &str) {
        lock(&self.in_flight).remove(id);
    }
}

#[async_trait]
impl Backend for RedisStreamsBackend {
    async fn publish(&self, event: Event) -> Result<(), BackendError> {
        if self.inner.closed.is_cancelled() {
            return Err(BackendError::Closed);
        }
        let json = serde_json::to_vec(&event).map_err(|e| BackendError::Codec(e.to_string()))?;
        let stream = &self.inner.config.stream;
        self.inner
            .with_connection(|mut conn| {
                let json = &json;
                async move {
                    redis::cmd("XADD")
                        .arg(stream)
                        .arg("*")
                        .arg(EVENT_FIELD)
                        .arg(json.as_slice())
                        .query_async::<Value>(&mut conn)
                        .await
                        .map(drop)
                }
            })
            .await
            .map_err(|e| self.inner.transport("XADD", e))
    }

    fn consume(&self) -> BoxStream<'static, Result<Received, BackendError>> {
        if self.inner.consumed.swap(true, Ordering::AcqRel) {
            return stream::once(async { Err(BackendError::AlreadyConsumed) }).boxed();
        }
        let state = Consumer {
            inner: self.inner.clone(),
            conn: None,
            group_ready: false,
            ready: VecDeque::new(),
            failures: 0,
            next_claim: None,
            claim_cursor: "0-0".to_owned(),
            heartbeat: None,
        };
        stream::unfold(state, |mut state| async move {
            let item = state.next_item().await?;
            Some((item, state))
        })
        .boxed()
    }

    async fn ack(&self, receipt: &Receipt) -> Result<(), BackendError> {
        let inner = &self.inner;
        let id = receipt.as_str();
        inner.untrack(id);
        let result = inner
            .with_connection(|mut conn| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("XACK").arg(&inner.config.stream).arg(&inner.config.group).arg(id).ignore();
                pipe.cmd("XDEL").arg(&inner.config.stream).arg(id).ignore();
                pipe.query_async::<()>(&mut conn).await
            })
            .await;
        match result {
            Ok(()) => Ok(()),
            // The group is gone (Redis lost its data): nothing is pending any
            // more, and XDEL ran all the same (a pipeline is not a transaction).
            Err(e) if is_nogroup(&e) => Ok(()),
            Err(e) => Err(inner.transport("XACK", e)),
        }
    }

    async fn close(&self) -> Result<(), BackendError> {
        self.inner.closed.cancel();
        Ok(())
    }

    fn delivers_in_process(&self) -> bool {
        false
    }
}

/// The consume stream's state.
struct Consumer {
    inner: Arc<Inner>,
    /// The dedicated connection of the blocking read (no response timeout).
    conn: Option<MultiplexedConnection>,
    group_ready: bool,
    ready: VecDeque<Result<Received, BackendError>>,
    /// Failed attempts in a row (sets the backoff).
    failures: u32,
    /// When to look for claimable entries next (`None`: at once).
    next_claim: Option<Instant>,
    claim_cursor: String,
    /// Stops the heartbeat task when the stream is dropped.
    heartbeat: Option<DropGuard>,
}

impl Consumer {
    async fn next_item(&mut self) -> Option<Result<Received, BackendError>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            let closed = self.inner.closed.clone();
            if closed.is_cancelled() {
                return None;
            }
            if self.failures > 0 {
                let wait = backoff(self.failures, self.inner.config.max_backoff);
                tokio::select! {
                    () = closed.cancelled() => return None,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            // Close interrupts any step (a connection attempt, a blocking
            // read); entries read by an interrupted step stay pending and
            // are claimed later, like a crashed consumer's.
            let step = tokio::select! {
                () = closed.cancelled() => return None,
                step = self.fill() => step,
            };
            match step {
                Ok(()) => self.failures = 0,
                Err(e) if is_nogroup(&e) => {
                    tracing::warn!(
                        stream = %self.inner.config.stream,
                        group = %self.inner.config.group,
                        "consumer group missing (Redis lost its data?); creating it again"
                    );
                    self.group_ready = false;
                    self.failures = self.failures.saturating_add(1).min(1);
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    if is_connection_error(&e) {
                        self.conn = None;
                        self.inner.forget_connection().await;
                    }
                    return Some(Err(self.inner.transport("consume", e)));
                }
            }
        }
    }

    /// One round: connect if needed, make sure the group exists, claim what
    /// is due, else read new entries. Fills `ready` (maybe with nothing).
    async fn fill(&mut self) -> Result<(), RedisError> {
        let inner = self.inner.clone();
        let config = &inner.config;
        let mut conn = if let Some(conn) = self.conn.clone() {
            conn
        } else {
            let options = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(None);
            let conn = inner.client.get_multiplexed_async_connection_with_config(&options).await?;
            tracing::debug!(url = %config.url, consumer = %config.consumer, "redis consumer connected");
            self.conn = Some(conn.clone());
            conn
        };
        if !self.group_ready {
            let created = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&config.stream)
                .arg(&config.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async::<Value>(&mut conn)
                .await;
            match created {
                Ok(_) => tracing::info!(stream = %config.stream, group = %config.group, "created consumer group"),
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e),
            }
            self.group_ready = true;
        }
        if self.heartbeat.is_none() {
            self.heartbeat = Some(start_heartbeat(inner.clone()));
        }
        let now = Instant::now();
        if self.next_claim.is_none_or(|at| now >= at) {
            self.claim(&mut conn).await?;
            if !self.ready.is_empty() {
                return Ok(());
            }
        }
        // Wake up in time for the next claim.
        let until_claim = self.next_claim.map_or(config.block, |at| at.saturating_duration_since(now));
        let block = config.block.min(until_claim).max(Duration::from_millis(1));
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&config.group)
            .arg(&config.consumer)
            .arg("COUNT")
            .arg(config.batch_size)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&config.stream)
            .arg(">");
        let read = cmd.query_async::<Value>(&mut conn);
        // No response timeout on this connection: a silently dead one is
        // caught by this bound instead.
        let reply = match tokio::time::timeout(block + config.timeout, read).await {
            Ok(reply) => reply?,
            Err(_) => {
                self.conn = None;
                let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "XREADGROUP got no answer in time");
                return Err(RedisError::from(timed_out));
            }
        };
        let entries = read_reply_entries(reply);
        self.take(&mut conn, entries, None).await
    }

    /// Claims entries idle in the group's pending list for longer than the
    /// claim min-idle (a dead consumer's), a page at a time.
    async fn claim(&mut self, conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
        let inner = self.inner.clone();
        let config = &inner.config;
        let min_idle = u64::try_from(config.claim_min_idle.as_millis()).unwrap_or(u64::MAX);
        let reply = redis::cmd("XAUTOCLAIM")
            .arg(&config.stream)
            .arg(&config.group)
            .arg(&config.consumer)
            .arg(min_idle)
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(config.batch_size)
            .query_async::<Value>(conn)
            .await?;
        let (cursor, entries) = autoclaim_reply(reply);
        // A full scan done: wait for the next interval; else go on at once.
        if cursor == "0-0" {
            self.next_claim = Some(Instant::now() + config.claim_interval);
            forget_idle_consumers(conn, config).await;
        } else {
            self.next_claim = None;
        }
        self.claim_cursor = cursor;
        if entries.is_empty() {
            return Ok(());
        }
        // Entries this consumer is already delivering are not handed out twice.
        let entries: Vec<Entry> = {
            let in_flight = lock(&inner.in_flight);
            entries.into_iter().filter(|e| !in_flight.contains(&e.id)).collect()
        };
        if entries.is_empty() {
            return Ok(());
        }
        let counts = self.delivery_counts(conn, &entries).await?;
        tracing::info!(count = entries.len(), consumer = %config.consumer, "claimed entries left pending by another consumer");
        self.take(conn, entries, Some(&counts)).await
    }

    /// How many times each of `entries` (pending with this consumer) was
    /// handed out, from `XPENDING`.
    async fn delivery_counts(
        &self,
        conn: &mut MultiplexedConnection,
        entries: &[Entry],
    ) -> Result<std::collections::HashMap<String, u64>, RedisError> {
        let config = &self.inner.config;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return Ok(Default::default()) };
        let in_flight = lock(&self.inner.in_flight).len();
        let reply = redis::cmd("XPENDING")
            .arg(&config.stream)
            .arg(&config.group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(entries.len() + in_flight)
            .arg(&config.consumer)
            .query_async::<Value>(conn)
            .await?;
        let mut counts = std::collections::HashMap::new();
        for row in as_array(&reply).unwrap_or(&[]) {
            let Some([id, _consumer, _idle, count, ..]) = as_array(row) else { continue };
            if let (Some(id), Some(count)) = (as_string(id), as_int(count)) {
                counts.insert(id, count);
            }
        }
        Ok(counts)
    }

    /// Turns raw entries into ready items: events are tracked and handed
    /// out; malformed or exhausted ones are dead-lettered and reported.
    async fn take(
        &mut self,
        conn: &mut MultiplexedConnection,
        entries: Vec<Entry>,
        counts: Option<&std::collections::HashMap<String, u64>>,
    ) -> Result<(), RedisError> {
        let max = self.inner.config.max_deliveries;
        for entry in entries {
            let deliveries = counts.and_then(|c| c.get(&entry.id).copied()).unwrap_or(1);
            match entry.decode() {
                Ok(event) if deliveries > max => {
                    let reason = format!("handed out {deliveries} times without an ack (max_deliveries {max})");
                    self.dead_letter(conn, &entry, &reason, deliveries).await?;
                    self.ready.push_back(Err(BackendError::DeadLettered { event: Box::new(event), reason }));
                }
                Ok(event) => {
                    lock(&self.inner.in_flight).insert(entry.id.clone());
                    self.ready.push_back(Ok(Received::new(event, Receipt::new(entry.id))));
                }
                Err(why) => {
                    let reason = format!("stream entry {} is not a fastapihooks event: {why}", entry.id);
                    self.dead_letter(conn, &entry, &reason, deliveries).await?;
                    tracing::error!(
                        stream = %self.inner.config.stream,
                        entry_id = %entry.id,
                        dead_letter_stream = %self.inner.config.dead,
                        error = %why,
                        "malformed stream entry moved to the dead-letter stream"
                    );
                    self.ready
                        .push_back(Err(BackendError::Codec(format!("{reason}; moved to {}", self.inner.config.dead))));
                }
            }
        }
        Ok(())
    }

    /// Copies an entry to the dead-letter stream and acks it, atomically.
    async fn dead_letter(
        &self,
        conn: &mut MultiplexedConnection,
        entry: &Entry,
        reason: &str,
        deliveries: u64,
    ) -> Result<(), RedisError> {
        let config = &self.inner.config;
        let mut pipe = redis::pipe();
        pipe.atomic();
        let xadd = pipe.cmd("XADD").arg(&config.dead).arg("MAXLEN").arg("~").arg(config.dead_max_len).arg("*");
        for (field, value) in &entry.fields {
            xadd.arg(field.as_slice()).arg(value.as_slice());
        }
        xadd.arg("dead_reason")
            .arg(reason)
            .arg("dead_entry_id")
            .arg(&entry.id)
            .arg("dead_deliveries")
            .arg(deliveries)
            .arg("dead_group")
            .arg(&config.group)
            .ignore();
        pipe.cmd("XACK").arg(&config.stream).arg(&config.group).arg(&entry.id).ignore();
        pipe.cmd("XDEL").arg(&config.stream).arg(&entry.id).ignore();
        pipe.query_async::<()>(conn).await?;
        Ok(())
    }
}

/// Resets the idle time of the entries this consumer is delivering, every
/// third of the claim min-idle, so that no other worker claims them. Stops
/// when the returned guard is dropped (with the consume stream).
fn start_heartbeat(inner: Arc<Inner>) -> DropGuard {
    let stop = CancellationToken::new();
    let guard = stop.clone().drop_guard();
    let every = (inner.config.claim_min_idle / 3).max(Duration::from_millis(10));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let ids: Vec<String> = lock(&inner.in_flight).iter().cloned().collect();
            for chunk in ids.chunks(256) {
                let config = &inner.config;
                let touched = inner
                    .with_connection(|mut conn| async move {
                        let mut cmd = redis::cmd("XCLAIM");
                        cmd.arg(&config.stream).arg(&config.group).arg(&config.consumer).arg(0);
                        for id in chunk {
                            cmd.arg(id);
                        }
                        cmd.arg("JUSTID").query_async::<Value>(&mut conn).await.map(drop)
                    })
                    .await;
                if let Err(e) = touched {
                    tracing::debug!(error = %e, "could not refresh in-flight entries");
                    break;
                }
            }
        }
    });
    guard
}

/// Removes the group's consumers (other than this one) idle for longer than
/// `forget_consumers_after` with nothing pending, in one script, so that no
/// consumer can read an entry between the check and the removal. A failure
/// is logged and left for the next scan.
async fn forget_idle_consumers(conn: &mut MultiplexedConnection, config: &Config) {
    const SCRIPT: &str = r"
        local removed = 0
        for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
            local info = {}
            for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
            if info.name ~= ARGV[3] and info.pending == 0 and info.idle >= tonumber(ARGV[2]) then
                redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info.name)
                removed = removed + 1
            end
        end
        return removed";
    let idle_ms = u64::try_from(config.forget_consumers_after.as_millis()).unwrap_or(u64::MAX);
    let removed = redis::cmd("EVAL")
        .arg(SCRIPT)
        .arg(1)
        .arg(&config.stream)
        .arg(&config.group)
        .arg(idle_ms)
        .arg(&config.consumer)
        .query_async::<u64>(conn)
        .await;
    match removed {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, group = %config.group, "forgot consumers idle with nothing pending"),
        Err(e) => tracing::debug!(error = %e, "could not look for idle consumers"),
    }
}

/// One stream entry as read: its id and field/value pairs.
struct Entry {
    id: String,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    fn decode(&self) -> Result<Event, String> {
        let json = self
            .fields
            .iter()
            .find(|(f, _)| f == EVENT_FIELD.as_bytes())
            .map(|(_, v)| v)
            .ok_or_else(|| format!("no `{EVENT_FIELD}` field"))?;
        serde_json::from_slice(json).map_err(|e| e.to_string())
    }

    /// Reads `[id, [field, value, ...]]`; `None` when the shape is wrong.
    fn parse(value: &Value) -> Option<Self> {
        let [id, fields] = as_array(value)? else { return None };
        let id = as_string(id)?;
        let mut pairs = Vec::new();
        match fields {
            // A deleted entry still in a pending list: no fields.
            Value::Nil => {}
            Value::Map(map) => {
                for (f, v) in map {
                    pairs.push((as_bytes(f)?.to_vec(), as_bytes(v)?.to_vec()));
                }
            }
            other => {
                for pair in as_array(other)?.chunks(2) {
                    let [f, v] = pair else { break };
                    pairs.push((as_bytes(f)?.to_vec(), as_bytes(v)?.to_vec()));
                }
            }
        }
        Some(Self { id, fields: pairs })
    }
}

/// The entries of an `XREADGROUP` reply on one stream (RESP2 or RESP3).
fn read_reply_entries(reply: Value) -> Vec<Entry> {
    let streams: Vec<&Value> = match &reply {
        Value::Map(map) => map.iter().map(|(_, entries)| entries).collect(),
        other => as_array(other)
            .unwrap_or(&[])
            .iter()
            .filter_map(|s| match as_array(s) {
                Some([_key, entries]) => Some(entries),
                _ => None,
            })
            .collect(),
    };
    streams.into_iter().flat_map(|e| as_array(e).unwrap_or(&[])).filter_map(Entry::parse).collect()
}

/// `XAUTOCLAIM`'s `[next cursor, [entries], [deleted ids]]`.
fn autoclaim_reply(reply: Value) -> (String, Vec<Entry>) {
    let parts = as_array(&reply).unwrap_or(&[]);
    let cursor = parts.first().and_then(as_string).unwrap_or_else(|| "0-0".to_owned());
    let entries = parts.get(1).and_then(as_array).unwrap_or(&[]).iter().filter_map(Entry::parse).collect();
    (cursor, entries)
}

fn as_array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

fn as_string(v: &Value) -> Option<String> {
    as_bytes(v).and_then(|b| std::str::from_utf8(b).ok()).map(str::to_owned)
}

fn as_int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => as_string(other)?.parse().ok(),
    }
}

fn is_nogroup(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

fn backoff(failures: u32, max: Duration) -> Duration {
    Duration::from_millis(50u64 << failures.saturating_sub(1).min(10)).min(max)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The URL with its password (if any) replaced by `[redacted]`.
pub(crate) fn redact_url(url: &str) -> String {
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
        assert!(RedisStreamsBackend::builder(url).stream("").build().is_err());
        assert!(RedisStreamsBackend::builder(url).batch_size(0).build().is_err());
        assert!(RedisStreamsBackend::builder(url).max_deliveries(0).build().is_err());
        assert!(RedisStreamsBackend::builder(url).claim_min_idle(Duration::ZERO).build().is_err());
        assert!(RedisStreamsBackend::builder(url).stream("s").dead_letter_stream("s").build().is_err());
        let b = RedisStreamsBackend::builder(url).stream("s").build().expect("valid");
        assert_eq!(b.dead_letter_stream(), "s:dead");
        assert_eq!(b.group(), "fastapihooks");
        let other = RedisStreamsBackend::new(url).expect("valid");
        assert_ne!(b.consumer(), other.consumer(), "default consumer names are unique");
    }

    #[test]
    fn replies_parse_in_both_protocols() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("event"), bulk("{}")])]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("k"), Value::Array(vec![entry.clone()])])]);
        let resp3 = Value::Map(vec![(bulk("k"), Value::Array(vec![entry.clone()]))]);
        for reply in [resp2, resp3] {
            let entries = read_reply_entries(reply);
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].id, "1-0");
            assert!(entries[0].decode().is_err(), "`{{}}` is no event");
        }
        let claimed = Value::Array(vec![bulk("0-0"), Value::Array(vec![entry]), Value::Array(vec![])]);
        let (cursor, entries) = autoclaim_reply(claimed);
        assert_eq!((cursor.as_str(), entries.len()), ("0-0", 1));
        assert!(read_reply_entries(Value::Nil).is_empty());
    }

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let max = Duration::from_secs(5);
        assert_eq!(backoff(1, max), Duration::from_millis(50));
        assert_eq!(backoff(2, max), Duration::from_millis(100));
        assert_eq!(backoff(30, max), max);
    }
}
