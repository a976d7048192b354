//! Stores: where subscriptions live. [`Store`] is the trait; [`MemoryStore`]
//! is built in, [`CachedStore`] puts a short-lived cache in front of any
//! store, and `sql::SqlStore` (features `postgres`, `mysql`, `sqlite`) keeps
//! them in a SQL database. The `conformance` feature adds
//! `conformance::run`, the checks every store must pass.
//!
//! A store is consulted on the delivery path (never on the request path):
//! for each event, [`Store::subscriptions_for`] returns the subscriptions of
//! the event's name that accept its owner, enabled or not (the dispatcher
//! skips the disabled ones, and counts them).

mod cached;
#[cfg(feature = "conformance")]
pub mod conformance;
mod memory;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub mod sql;

use std::sync::Arc;

use async_trait::async_trait;

pub use cached::{CacheStats, CachedStore};
pub use memory::MemoryStore;

use crate::health::{Disabled, EndpointHealth};
use crate::subscription::{InvalidSubscription, StoredWebhookSubscription, SubscriptionUpdate, WebhookSubscription};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The subscription was refused before anything was written.
    #[error(transparent)]
    Invalid(#[from] InvalidSubscription),
    /// The store's backing service failed or could not be reached. Retryable.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored data could not be read back.
    #[error("corrupt stored subscription: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Wraps a backing-service error.
    pub fn unavailable(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable(err.into())
    }

    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Where subscriptions are kept.
///
/// Implementations must be safe to share across tasks. An unknown id is not
/// an error: `remove` and `update` return `false`, `get` returns `None`.
/// Implementations validate with [`WebhookSubscription::new`]-level rules
/// before writing (use [`validate_new`]).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Adds a subscription to `event_name`; returns its new id.
    async fn add(&self, event_name: &str, subscription: WebhookSubscription) -> Result<String, StoreError>;

    /// Removes a subscription; `true` if it existed.
    async fn remove(&self, id: &str) -> Result<bool, StoreError>;

    /// One subscription by id.
    async fn get(&self, id: &str) -> Result<Option<StoredWebhookSubscription>, StoreError>;

    /// Every subscription of `event_name`, whatever its owner.
    async fn list(&self, event_name: &str) -> Result<Vec<StoredWebhookSubscription>, StoreError>;

    /// A partial update (metadata merged); `true` if the subscription exists.
    async fn update(&self, id: &str, update: SubscriptionUpdate) -> Result<bool, StoreError>;

    /// Disables the subscription (`Some`: its events are skipped from now
    /// on) or enables it again (`None`, which also clears its health
    /// streak); `true` if it exists.
    async fn set_disabled(&self, id: &str, disabled: Option<Disabled>) -> Result<bool, StoreError>;

    /// Writes the subscription's endpoint health (the engine does, as its
    /// deliveries change course); `true` if it exists.
    async fn record_health(&self, id: &str, health: &EndpointHealth) -> Result<bool, StoreError>;

    /// Every subscription, of every event name, `owner_id`'s only when it
    /// is set (subscriptions with no owner are not anyone's), ordered by id.
    async fn list_all(&self, owner_id: Option<&str>) -> Result<Vec<StoredWebhookSubscription>, StoreError>;

    /// A cheap answer, without I/O, to "may an event of `event_name` have
    /// any subscription (of any owner)?": `Some(false)` only when certainly
    /// none, `None` when the store cannot tell without a query (the default).
    ///
    /// The runtime asks it on the request path and skips events nobody is
    /// subscribed to, so it must be fast and must never return a false
    /// `Some(false)`.
    fn has_subscriptions_hint(&self, event_name: &str) -> Option<bool> {
        let _ = event_name;
        None
    }

    /// The subscriptions an event of `event_name` and `owner_id` goes to:
    /// those of that owner, and those with no owner.
    ///
    /// The default filters [`Store::list`]; stores with an index override it.
    async fn subscriptions_for(
        &self,
        event_name: &str,
        owner_id: Option<&str>,
    ) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        let mut subs = self.list(event_name).await?;
        subs.retain(|s| s.accepts_owner(owner_id));
        Ok(subs)
    }

    /// [`Store::subscriptions_for`], shared rather than copied: what the
    /// dispatcher asks for every event. The same subscriptions, in the same
    /// order.
    ///
    /// The default wraps what `subscriptions_for` returns; stores that keep
    /// subscriptions in memory ([`MemoryStore`], [`CachedStore`]) override
    /// it to hand out reference counts instead of copies.
    async fn shared_subscriptions_for(
        &self,
        event_name: &str,
        owner_id: Option<&str>,
    ) -> Result<Vec<Arc<StoredWebhookSubscription>>, StoreError> {
        Ok(self.subscriptions_for(event_name, owner_id).await?.into_iter().map(Arc::new).collect())
    }
}

/// The checks every store makes before writing a new subscription.
///
/// # Errors
/// An invalid event name, target URL, bearer auth without a token, or a
/// signing secret that cannot sign.
pub fn validate_new(event_name: &str, subscription: &WebhookSubscription) -> Result<(), InvalidSubscription> {
    crate::subscription::validate_event_name(event_name)?;
    crate::subscription::validate_target_url(&subscription.target_url)?;
    if let crate::subscription::Auth::Bearer(token) = &subscription.auth
        && token.is_empty()
    {
        return Err(InvalidSubscription::MissingBearerToken);
    }
    for secret in &subscription.secrets {
        secret.validate()?;
    }
    Ok(())
}

/// A new subscription id: `sub_` and a UUIDv7 in hex.
pub fn new_subscription_id() -> String {
    format!("sub_{}", uuid::Uuid::now_v7().simple())
}

/// Rotates the secrets of the stored subscription `id` ([`rotate`](crate::secret::rotate)) and
/// persists them with [`SubscriptionUpdate::secrets`]. Returns `false` when
/// there is no such subscription.
///
/// This reads then writes: two rotations of the same subscription at the same
/// time may lose one. A subscription signed by the global secret (no secrets
/// of its own) switches to `new` at once: add the global secret to its
/// secrets first, with an expiry, for an overlap.
///
/// # Errors
/// The store failed, or `new` cannot sign.
pub async fn rotate_stored_secret<S: Store + ?Sized>(
    store: &S,
    id: &str,
    new: crate::secret::SigningSecret,
    old_valid_until: chrono::DateTime<chrono::Utc>,
) -> Result<bool, StoreError> {
    new.validate().map_err(|e| StoreError::Invalid(e.into()))?;
    let Some(stored) = store.get(id).await? else { return Ok(false) };
    let secrets = crate::secret::rotate(&stored.secrets, new, old_valid_until, chrono::Utc::now());
    store.update(id, SubscriptionUpdate::new().secrets(secrets)).await
}
