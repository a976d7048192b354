//! [`EngineConfig`]: what the delivery engine is made of, and the builder
//! setters that fill it in. Both the app's in-process delivery
//! ([`FastapihooksBuilder`](crate::FastapihooksBuilder)) and the sidecar
//! [`Worker`](crate::worker::Worker) start their [`Engine`](super::Engine)
//! from it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::BuildError;
use super::runtime::{DeliveryRuntime, OwnedRuntime};
use crate::dead_letter::{FailureHandler, LogFailures};
use crate::dispatch::{Dispatcher, Durable, Limits, Parts};
use crate::health::DisablePolicy;
use crate::history::recorder::{Recorder, Writer};
use crate::history::{AttemptLog, MAX_RESPONSE_BODY, MemoryAttemptLog, Retention};
use crate::operational::{OperationalHandler, OperationalKind};
use crate::retry::RetryPolicy;
use crate::secret::Secret;
use crate::send::guard::NetworkPolicy;
use crate::send::{HeadLimits, Proxy, Sender, SenderConfig};
use crate::sign::{SignatureSchemes, Signer};
use crate::stats::Stats;
use crate::store::Store;
use crate::subscription::WebhookSubscription;

/// The static subscribers, checked and grouped by event name.
pub(crate) type Statics = HashMap<String, Vec<WebhookSubscription>>;

/// The delivery settings both builders (`FastapihooksBuilder`, the app's,
/// and `WorkerBuilder`, the sidecar's) offer, written once. Expands inside
/// an `impl` block of a type with an `engine: EngineConfig` field.
macro_rules! engine_setters {
    () => {
        /// The subscription store (default: none, only static subscribers).
        #[must_use]
        pub fn store(mut self, store: impl $crate::store::Store) -> Self {
            self.engine.store = Some(::std::sync::Arc::new(store));
            self
        }

        /// The subscription store, already shared.
        #[must_use]
        pub fn store_arc(mut self, store: ::std::sync::Arc<dyn $crate::store::Store>) -> Self {
            self.engine.store = Some(store);
            self
        }

        /// Signs the deliveries of subscriptions that have no secrets of
        /// their own with this secret (`whsec_...`, or any string: see
        /// [`crate::secret`]).
        #[must_use]
        pub fn signing_secret(mut self, secret: impl Into<$crate::secret::Secret>) -> Self {
            self.engine.signing_secret = Some(secret.into());
            self
        }

        /// The signature schemes each signed delivery carries (default: both
        /// Standard Webhooks and the legacy `X-Fastapihooks-Signature`; an
        /// empty list signs nothing). See [`crate::sign`].
        #[must_use]
        pub fn signature_schemes(mut self, schemes: impl IntoIterator<Item = $crate::sign::SignatureScheme>) -> Self {
            self.engine.signature_schemes = schemes.into_iter().collect();
            self
        }

        /// Where final failures go (default: logged at error level).
        #[must_use]
        pub fn on_failure(mut self, handler: impl $crate::dead_letter::FailureHandler) -> Self {
            self.engine.failures = Some(::std::sync::Arc::new(handler));
            self
        }

        /// The retry policy (default: retries after 5 s, 5 min, 30 min, 2 h,
        /// 5 h, 10 h and 10 h, with jitter: the production schedule of
        /// [`RetryPolicy`](crate::retry::RetryPolicy); the original's
        /// `RetryPolicy::exponential(3, 1 s, 60 s)` is one call away).
        #[must_use]
        pub fn retry_policy(mut self, policy: $crate::retry::RetryPolicy) -> Self {
            self.engine.retry = policy;
            self
        }

        /// Which destinations are allowed (default: public addresses only).
        #[must_use]
        pub fn network_policy(mut self, policy: $crate::NetworkPolicy) -> Self {
            self.engine.network = policy;
            self
        }

        /// Total time limit of one HTTP attempt (default 10 s).
        #[must_use]
        pub fn timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.engine.timeout = timeout;
            self
        }

        /// Time limit for connecting (default 5 s).
        #[must_use]
        pub fn connect_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.engine.connect_timeout = timeout;
            self
        }

        /// Sends every delivery through a forward proxy (default: none;
        /// proxy variables of the environment are ignored unless you pass
        /// [`Proxy::from_env`](crate::send::Proxy::from_env)). The network
        /// policy still vets every receiver first.
        #[must_use]
        pub fn proxy(mut self, proxy: $crate::send::Proxy) -> Self {
            self.engine.proxy = Some(proxy);
            self
        }

        /// Also trusts these CA certificates (PEM, one or more), beside the
        /// system's: for receivers whose certificates a private CA signed.
        /// Invalid PEM fails `build` / `start` with [`BuildError::Http`](crate::BuildError::Http).
        #[must_use]
        pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
            self.engine.tls_roots = Some(pem.into());
            self
        }

        /// Most headers a receiver's response head may have (default 100,
        /// as hyper). A larger head fails the attempt as a network error.
        #[must_use]
        pub fn max_response_headers(mut self, n: usize) -> Self {
            self.engine.head_limits.max_headers = n.max(1);
            self
        }

        /// Largest response head a receiver may send, status line and
        /// headers, in bytes (default 417,792, as hyper; at least 8 KiB).
        #[must_use]
        pub fn max_response_head_bytes(mut self, n: usize) -> Self {
            self.engine.head_limits.max_bytes = n.max(8 * 1024);
            self
        }

        /// Requests in flight, all endpoints together (default 100).
        #[must_use]
        pub fn max_concurrency(mut self, n: usize) -> Self {
            self.engine.limits.max_concurrency = n.max(1);
            self
        }

        /// Requests in flight to one endpoint (default 16).
        #[must_use]
        pub fn per_endpoint_concurrency(mut self, n: usize) -> Self {
            self.engine.limits.per_endpoint_concurrency = n.max(1);
            self
        }

        /// Deliveries that may wait for one endpoint; past it, new ones wait
        /// in the backend's durable schedule (a worker on Redis), or else go
        /// to `on_failure` (default 50,000; a `Worker`'s: 10,000).
        #[must_use]
        pub fn max_endpoint_backlog(mut self, n: usize) -> Self {
            self.engine.limits.max_endpoint_backlog = n.max(1);
            self
        }

        /// Deliveries held in memory, all endpoints together; past it, no new
        /// event is taken in until some finish (default 100,000; a
        /// `Worker`'s: 10,000).
        #[must_use]
        pub fn max_pending_deliveries(mut self, n: usize) -> Self {
            self.engine.limits.max_pending_deliveries = n.max(1);
            self
        }

        /// Where every attempt is recorded (default: a
        /// [`MemoryAttemptLog`](crate::history::MemoryAttemptLog) of the
        /// latest 10,000). Records are written off the delivery path, in
        /// batches; see [`crate::history`].
        #[must_use]
        pub fn attempt_log(mut self, log: impl $crate::history::AttemptLog) -> Self {
            self.engine.attempt_log = Some(::std::sync::Arc::new(log));
            self
        }

        /// The attempt log, already shared (to query it from elsewhere too).
        #[must_use]
        pub fn attempt_log_arc(mut self, log: ::std::sync::Arc<dyn $crate::history::AttemptLog>) -> Self {
            self.engine.attempt_log = Some(log);
            self
        }

        /// Records no attempts (and keeps no response bodies).
        #[must_use]
        pub fn no_attempt_log(mut self) -> Self {
            self.engine.attempt_log = None;
            self
        }

        /// How long attempt records are kept (default 30 days; see
        /// [`Retention`](crate::history::Retention)).
        #[must_use]
        pub fn attempt_retention(mut self, retention: $crate::history::Retention) -> Self {
            self.engine.retention = retention;
            self
        }

        /// When failing subscriptions are disabled (default: after 5 days
        /// of failure with no success, and at once on `410 Gone` or
        /// `webhook-delivery: disable`; see
        /// [`DisablePolicy`](crate::health::DisablePolicy)).
        #[must_use]
        pub fn disable_policy(mut self, policy: $crate::health::DisablePolicy) -> Self {
            self.engine.disable = policy;
            self
        }

        /// Where operational events go (`endpoint.failing`,
        /// `endpoint.disabled`, `endpoint.recovered`,
        /// `message.attempt.exhausted`; see [`crate::operational`]).
        #[must_use]
        pub fn on_operational(mut self, handler: impl $crate::operational::OperationalHandler) -> Self {
            self.engine.operational = Some(::std::sync::Arc::new(handler));
            self
        }

        /// Also sends every operational event as a webhook of its own
        /// (signed, retried, its JSON as the body) to `subscriber`, an
        /// operator's endpoint. Call again to add more.
        #[must_use]
        pub fn operational_webhook(mut self, subscriber: $crate::subscription::WebhookSubscription) -> Self {
            self.engine.operators.push(subscriber);
            self
        }

        /// Where deliveries run (default: threads of their own, one per CPU,
        /// at the app's priority); see [`DeliveryRuntime`](crate::DeliveryRuntime).
        #[must_use]
        pub fn delivery_runtime(mut self, runtime: $crate::DeliveryRuntime) -> Self {
            self.engine.runtime = runtime;
            self
        }
    };
}
pub(crate) use engine_setters;

/// The delivery settings the builders share.
pub(crate) struct EngineConfig {
    pub(crate) store: Option<Arc<dyn Store>>,
    pub(crate) subscribers: Vec<(String, WebhookSubscription)>,
    pub(crate) signing_secret: Option<Secret>,
    pub(crate) signature_schemes: SignatureSchemes,
    pub(crate) failures: Option<Arc<dyn FailureHandler>>,
    pub(crate) retry: RetryPolicy,
    pub(crate) network: NetworkPolicy,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) proxy: Option<Proxy>,
    pub(crate) head_limits: HeadLimits,
    pub(crate) tls_roots: Option<Vec<u8>>,
    pub(crate) limits: Limits,
    pub(crate) runtime: DeliveryRuntime,
    pub(crate) attempt_log: Option<Arc<dyn AttemptLog>>,
    pub(crate) retention: Retention,
    pub(crate) disable: DisablePolicy,
    pub(crate) operational: Option<Arc<dyn OperationalHandler>>,
    /// The operator's endpoints for operational webhooks.
    pub(crate) operators: Vec<WebhookSubscription>,
    /// Set by `check` when there are operator endpoints.
    pub(crate) operational_webhooks: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            store: None,
            subscribers: Vec::new(),
            signing_secret: None,
            signature_schemes: SignatureSchemes::default(),
            failures: None,
            retry: RetryPolicy::default(),
            network: NetworkPolicy::default(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            proxy: None,
            head_limits: HeadLimits::default(),
            tls_roots: None,
            limits: Limits::default(),
            runtime: DeliveryRuntime::default(),
            attempt_log: Some(Arc::new(MemoryAttemptLog::default())),
            retention: Retention::default(),
            disable: DisablePolicy::default(),
            operational: None,
            operators: Vec::new(),
            operational_webhooks: false,
        }
    }
}

impl EngineConfig {
    /// Checks the signing secret and the static subscribers (taken out of
    /// `self`), grouped by event name.
    pub(crate) fn check(&mut self) -> Result<Statics, BuildError> {
        if let Some(secret) = self.signing_secret.as_ref().filter(|s| !s.is_empty()) {
            secret.signing_key()?;
        }
        let mut statics = Statics::new();
        for (event, sub) in std::mem::take(&mut self.subscribers) {
            let check = crate::subscription::validate_event_name(&event)
                .and_then(|()| crate::subscription::validate_target_url(&sub.target_url).map(drop))
                .and_then(|()| sub.secrets.iter().try_for_each(|s| s.validate().map_err(Into::into)));
            if let Err(error) = check {
                return Err(BuildError::Subscriber { event, error });
            }
            statics.entry(event).or_default().push(sub);
        }
        // The operator's endpoints are the static subscribers of the
        // operational events' names: their retries then wait in a durable
        // schedule like any static subscriber's.
        for sub in std::mem::take(&mut self.operators) {
            if let Err(error) = crate::subscription::validate_target_url(&sub.target_url)
                .map(drop)
                .and_then(|()| sub.secrets.iter().try_for_each(|s| s.validate().map_err(Into::into)))
            {
                return Err(BuildError::Subscriber { event: "operational webhooks".into(), error });
            }
            for kind in OperationalKind::ALL {
                statics.entry(kind.as_str().to_owned()).or_default().push(sub.clone());
            }
            self.operational_webhooks = true;
        }
        Ok(statics)
    }

    /// `on_failure`, or the default that logs.
    pub(crate) fn failures(&self) -> Arc<dyn FailureHandler> {
        self.failures.clone().unwrap_or_else(|| Arc::new(LogFailures))
    }

    /// Makes the dispatcher (HTTP client, signer, limits) and starts the
    /// delivery runtime, if it is a dedicated one.
    pub(crate) fn start(
        self,
        statics: &Statics,
        failures: Arc<dyn FailureHandler>,
        stats: Arc<Stats>,
        durable: Durable,
    ) -> Result<Started, BuildError> {
        let signer = Signer::new(self.signing_secret).with_schemes(self.signature_schemes);
        let config = SenderConfig {
            policy: self.network,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            proxy: self.proxy,
            head_limits: self.head_limits,
            tls_roots: self.tls_roots,
            keep_body: if self.attempt_log.is_some() { MAX_RESPONSE_BODY } else { 0 },
        };
        let sender = Sender::new(config, signer).map_err(BuildError::Http)?;
        let runtime = self.runtime.start().map_err(BuildError::Runtime)?;
        let (recorder, writer) = match &self.attempt_log {
            Some(log) => {
                let (recorder, writer) = Recorder::start(log.clone(), self.retention.clone(), stats.clone());
                (Some(recorder), Some(writer))
            }
            None => (None, None),
        };
        let dispatcher = Dispatcher::new(Parts {
            sender,
            store: self.store,
            retry: self.retry,
            failures,
            stats,
            limits: self.limits,
            statics: statics
                .iter()
                .map(|(event, subs)| (event.clone(), subs.iter().cloned().map(Arc::new).collect()))
                .collect(),
            shards: runtime.as_ref().map_or_else(Vec::new, |rt| rt.shards().to_vec()),
            durable,
            recorder,
            disable: self.disable,
            operational: self.operational,
            operational_webhooks: self.operational_webhooks,
        });
        Ok(Started { dispatcher, runtime, attempt_log: self.attempt_log, writer })
    }
}

/// A started engine's parts.
pub(crate) struct Started {
    pub(crate) dispatcher: Dispatcher,
    pub(crate) runtime: Option<OwnedRuntime>,
    pub(crate) attempt_log: Option<Arc<dyn AttemptLog>>,
    pub(crate) writer: Option<Writer>,
}

impl fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineConfig")
            .field("subscribers", &self.subscribers)
            .field("signing_secret", &self.signing_secret)
            .field("signature_schemes", &self.signature_schemes)
            .field("retry", &self.retry)
            .field("network", &self.network)
            .field("timeout", &self.timeout)
            .field("proxy", &self.proxy)
            .field("head_limits", &self.head_limits)
            .field("limits", &self.limits)
            .field("attempt_log", &self.attempt_log.is_some())
            .field("retention", &self.retention)
            .field("disable", &self.disable)
            .field("operators", &self.operators)
            .finish_non_exhaustive()
    }
}
