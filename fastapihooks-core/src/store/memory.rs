use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::Utc;

use super::{Store, StoreError, new_subscription_id, validate_new};
use crate::subscription::{StoredWebhookSubscription, SubscriptionUpdate, WebhookSubscription};

/// An in-memory store, for development, tests and single-process apps.
///
/// Cheap to clone: clones share the same subscriptions.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<RwLock<Subscriptions>>,
}

#[derive(Debug, Default)]
struct Subscriptions {
    by_id: HashMap<String, StoredWebhookSubscription>,
    /// How many subscriptions each event name has (for the hint, which
    /// `#[hook]` asks on every request: hashed with foldhash, several times
    /// cheaper than SipHash for short names, and still seeded per process).
    per_event: HashMap<String, usize, foldhash::fast::RandomState>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Subscriptions> {
        // A panic while holding the lock cannot leave the maps half-updated
        // (no user code runs under it), so poisoning is ignored.
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Subscriptions> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sorted(mut subs: Vec<StoredWebhookSubscription>) -> Vec<StoredWebhookSubscription> {
        subs.sort_by(|a, b| a.id.cmp(&b.id));
        subs
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn add(&self, event_name: &str, subscription: WebhookSubscription) -> Result<String, StoreError> {
        validate_new(event_name, &subscription)?;
        let id = new_subscription_id();
        let now = Utc::now();
        let stored = StoredWebhookSubscription::new(id.clone(), event_name, subscription, now, now);
        let mut subs = self.write();
        subs.by_id.insert(id.clone(), stored);
        *subs.per_event.entry(event_name.to_owned()).or_default() += 1;
        Ok(id)
    }

    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let mut subs = self.write();
        let Some(removed) = subs.by_id.remove(id) else { return Ok(false) };
        if let Some(n) = subs.per_event.get_mut(&removed.event_name) {
            *n -= 1;
            if *n == 0 {
                subs.per_event.remove(&removed.event_name);
            }
        }
        Ok(true)
    }

    async fn get(&self, id: &str) -> Result<Option<StoredWebhookSubscription>, StoreError> {
        Ok(self.read().by_id.get(id).cloned())
    }

    async fn list(&self, event_name: &str) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        let subs = self.read().by_id.values().filter(|s| s.event_name == event_name).cloned().collect();
        Ok(Self::sorted(subs))
    }

    async fn update(&self, id: &str, update: SubscriptionUpdate) -> Result<bool, StoreError> {
        update.validate()?;
        let mut subs = self.write();
        let Some(stored) = subs.by_id.get_mut(id) else { return Ok(false) };
        update.apply(&mut stored.subscription);
        stored.updated_at = Utc::now();
        Ok(true)
    }

    async fn subscriptions_for(
        &self,
        event_name: &str,
        owner_id: Option<&str>,
    ) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        let subs = self
            .read()
            .by_id
            .values()
            .filter(|s| s.event_name == event_name && s.accepts_owner(owner_id))
            .cloned()
            .collect();
        Ok(Self::sorted(subs))
    }

    fn has_subscriptions_hint(&self, event_name: &str) -> Option<bool> {
        Some(self.read().per_event.contains_key(event_name))
    }
}
