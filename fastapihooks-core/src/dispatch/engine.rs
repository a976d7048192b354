//! [`EngineConfig`]: what the delivery engine is made of. Both the app's
//! in-process delivery ([`FastapihooksBuilder`](crate::FastapihooksBuilder))
//! and the sidecar [`Worker`](crate::worker::Worker) build their
//! [`Dispatcher`] from it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{DeliveryRuntime, Dispatcher, Limits, OwnedRuntime, Shared};
use crate::dead_letter::{FailureHandler, LogFailures};
use crate::emit::BuildError;
use crate::retry::RetryPolicy;
use crate::secret::Secret;
use crate::send::Sender;
use crate::send::guard::NetworkPolicy;
use crate::sign::{SignatureSchemes, Signer};
use crate::stats::Stats;
use crate::store::Store;
use crate::subscription::WebhookSubscription;

/// The static subscribers, checked and grouped by event name.
pub(crate) type Statics = HashMap<String, Vec<WebhookSubscription>>;

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
    pub(crate) limits: Limits,
    pub(crate) runtime: DeliveryRuntime,
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
            limits: Limits::default(),
            runtime: DeliveryRuntime::default(),
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
    ) -> Result<(Dispatcher, Option<OwnedRuntime>), BuildError> {
        let signer = Signer::new(self.signing_secret).with_schemes(self.signature_schemes);
        let sender = Sender::new(self.network, signer, self.timeout, self.connect_timeout).map_err(BuildError::Http)?;
        let runtime = self.runtime.start().map_err(BuildError::Runtime)?;
        let dispatcher = Dispatcher::new(Shared {
            sender,
            store: self.store,
            retry: self.retry,
            failures,
            stats,
            global: Arc::new(Semaphore::new(self.limits.max_concurrency)),
            pending: Arc::new(Semaphore::new(self.limits.max_pending_deliveries)),
            limits: self.limits,
            endpoints: Default::default(),
            urls: Default::default(),
            statics: statics
                .iter()
                .map(|(event, subs)| (event.clone(), subs.iter().cloned().map(Arc::new).collect()))
                .collect(),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            shards: runtime.as_ref().map_or_else(Vec::new, |rt| rt.shards().to_vec()),
        });
        Ok((dispatcher, runtime))
    }
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
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
