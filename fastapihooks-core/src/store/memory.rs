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
    inner: Arc<RwLock<HashMap<String, StoredWebhookSubscription>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, StoredWebhookSubscription>> {
        // A panic while holding the lock cannot leave a map half-updated
        // (every write is a single insert/remove), so poisoning is ignored.
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, StoredWebhookSubscription>> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn add(&self, event_name: &str, subscription: WebhookSubscription) -> Result<String, StoreError> {
        validate_new(event_name, &subscription)?;
        let id = new_subscription_id();
        let now = Utc::now();
        let stored = StoredWebhookSubscription::new(id.clone(), event_name, subscription, now, now);
        self.write().insert(id.clone(), stored);
        Ok(id)
    }

    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.write().remove(id).is_some())
    }

    async fn get(&self, id: &str) -> Result<Option<StoredWebhookSubscription>, StoreError> {
        Ok(self.read().get(id).cloned())
    }

    async fn list(&self, event_name: &str) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        let mut subs: Vec<_> = self.read().values().filter(|s| s.event_name == event_name).cloned().collect();
        subs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(subs)
    }

    async fn update(&self, id: &str, update: SubscriptionUpdate) -> Result<bool, StoreError> {
        update.validate()?;
        let mut map = self.write();
        let Some(stored) = map.get_mut(id) else { return Ok(false) };
        update.apply(&mut stored.subscription);
        stored.updated_at = Utc::now();
        Ok(true)
    }

    async fn subscriptions_for(
        &self,
        event_name: &str,
        owner_id: Option<&str>,
    ) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        let mut subs: Vec<_> =
            self.read().values().filter(|s| s.event_name == event_name && s.accepts_owner(owner_id)).cloned().collect();
        subs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(subs)
    }
}
