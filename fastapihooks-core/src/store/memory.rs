use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::Utc;

use super::{Store, StoreError, new_subscription_id, validate_new};
use crate::health::{Disabled, EndpointHealth};
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
    by_id: HashMap<String, Arc<StoredWebhookSubscription>>,
    /// Each event's subscriptions, sorted by id: what delivery looks up for
    /// every event (and what the hint, asked on every hooked request,
    /// checks). Hashed with foldhash, several times cheaper than SipHash for
    /// short names, and still seeded per process.
    by_event: HashMap<String, Vec<Arc<StoredWebhookSubscription>>, foldhash::fast::RandomState>,
}

impl Subscriptions {
    fn of_event(&self, event_name: &str) -> &[Arc<StoredWebhookSubscription>] {
        self.by_event.get(event_name).map_or(&[], Vec::as_slice)
    }
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

    /// Replaces subscription `id` by a changed copy (look-ups already
    /// handed out keep the version they got); false when there is none.
    fn change(&self, id: &str, change: impl FnOnce(&mut StoredWebhookSubscription)) -> bool {
        let mut subs = self.write();
        let Some(stored) = subs.by_id.get(id) else { return false };
        let mut changed = StoredWebhookSubscription::clone(stored);
        change(&mut changed);
        let changed = Arc::new(changed);
        if let Some(slot) =
            subs.by_event.get_mut(&changed.event_name).and_then(|list| list.iter_mut().find(|s| s.id == id))
        {
            *slot = changed.clone();
        }
        subs.by_id.insert(id.to_owned(), changed);
        true
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn add(&self, event_name: &str, subscription: WebhookSubscription) -> Result<String, StoreError> {
        validate_new(event_name, &subscription)?;
        let id = new_subscription_id();
        let now = Utc::now();
        let stored = Arc::new(StoredWebhookSubscription::new(id.clone(), event_name, subscription, now, now));
        let mut subs = self.write();
        subs.by_id.insert(id.clone(), stored.clone());
        let list = subs.by_event.entry(event_name.to_owned()).or_default();
        // Ids grow with time, so this is nearly always the end.
        let at = list.partition_point(|s| s.id < id);
        list.insert(at, stored);
        Ok(id)
    }

    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let mut subs = self.write();
        let Some(removed) = subs.by_id.remove(id) else { return Ok(false) };
        if let Some(list) = subs.by_event.get_mut(&removed.event_name) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                subs.by_event.remove(&removed.event_name);
            }
        }
        Ok(true)
    }

    async fn get(&self, id: &str) -> Result<Option<StoredWebhookSubscription>, StoreError> {
        Ok(self.read().by_id.get(id).map(|s| StoredWebhookSubscription::clone(s)))
    }

    async fn list(&self, event_name: &str) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        Ok(self.read().of_event(event_name).iter().map(|s| StoredWebhookSubscription::clone(s)).collect())
    }

    async fn update(&self, id: &str, update: SubscriptionUpdate) -> Result<bool, StoreError> {
        update.validate()?;
        Ok(self.change(id, |changed| {
            update.apply(Arc::make_mut(&mut changed.subscription));
            changed.updated_at = Utc::now();
        }))
    }

    async fn set_disabled(&self, id: &str, disabled: Option<Disabled>) -> Result<bool, StoreError> {
        Ok(self.change(id, |changed| {
            if disabled.is_none() {
                changed.health = EndpointHealth::default();
            }
            changed.disabled = disabled;
        }))
    }

    async fn record_health(&self, id: &str, health: &EndpointHealth) -> Result<bool, StoreError> {
        Ok(self.change(id, |changed| changed.health = health.clone()))
    }

    async fn list_all(&self, owner_id: Option<&str>) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        let subs = self.read();
        let mut all: Vec<StoredWebhookSubscription> = subs
            .by_id
            .values()
            .filter(|s| owner_id.is_none_or(|owner| s.owner_id.as_deref() == Some(owner)))
            .map(|s| StoredWebhookSubscription::clone(s))
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn subscriptions_for(
        &self,
        event_name: &str,
        owner_id: Option<&str>,
    ) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        let subs = self.read();
        let matching = subs.of_event(event_name).iter().filter(|s| s.accepts_owner(owner_id));
        Ok(matching.map(|s| StoredWebhookSubscription::clone(s)).collect())
    }

    async fn shared_subscriptions_for(
        &self,
        event_name: &str,
        owner_id: Option<&str>,
    ) -> Result<Vec<Arc<StoredWebhookSubscription>>, StoreError> {
        let subs = self.read();
        Ok(subs.of_event(event_name).iter().filter(|s| s.accepts_owner(owner_id)).cloned().collect())
    }

    fn has_subscriptions_hint(&self, event_name: &str) -> Option<bool> {
        Some(self.read().by_event.contains_key(event_name))
    }
}
