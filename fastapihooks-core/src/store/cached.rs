use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use super::{Store, StoreError};
use crate::health::{Disabled, EndpointHealth};
use crate::subscription::{StoredWebhookSubscription, SubscriptionUpdate, WebhookSubscription};

/// A short-lived cache of the delivery-path look-up
/// ([`Store::subscriptions_for`]) in front of any store.
///
/// Every event needs its subscriptions; with a SQL store that is a query per
/// event. `CachedStore` keeps each `(event name, owner)` answer for a short
/// TTL (default 2 s), so a burst of events costs one query.
///
/// Freshness:
/// - writes made through this `CachedStore` (add, remove, update) empty the
///   cache at once, and a look-up that raced with a write is not cached;
/// - writes made elsewhere (another process, or the inner store used
///   directly) are seen at most one TTL later. Call
///   [`CachedStore::invalidate`] if you learn of them sooner.
///
/// `get` and `list` are not cached (they are not on the delivery path).
/// Errors are not cached. Concurrent misses for the same `(event name,
/// owner)` share one query to the inner store (no stampede when an entry
/// expires under load). Cheap to clone: clones share the cache.
///
/// ```
/// use std::time::Duration;
/// use fastapihooks_core::{MemoryStore, store::CachedStore};
///
/// let store = CachedStore::new(MemoryStore::new()).with_ttl(Duration::from_millis(500));
/// # let _ = store;
/// ```
pub struct CachedStore<S> {
    inner: Arc<S>,
    cache: Arc<Cache>,
}

impl<S> Clone for CachedStore<S> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), cache: self.cache.clone() }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for CachedStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.inner)
            .field("ttl", &self.cache.ttl)
            .field("max_entries", &self.cache.max_entries)
            .finish()
    }
}

/// Hit and miss counts of a [`CachedStore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Look-ups answered from the cache.
    pub hits: u64,
    /// Look-ups that went to the inner store.
    pub misses: u64,
    /// Look-ups that waited for an identical one already on its way to the
    /// inner store, and shared its answer.
    pub shared: u64,
}

struct Cache {
    ttl: Duration,
    max_entries: usize,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
    shared: AtomicU64,
}

/// One cached answer: the subscriptions, shared.
type Subs = Arc<Vec<Arc<StoredWebhookSubscription>>>;
type Answer = Result<Subs, Arc<StoreError>>;
type Load = Shared<BoxFuture<'static, Answer>>;

#[derive(Default)]
struct State {
    /// Bumped by every write: a look-up that started before a write does
    /// not store its (maybe stale) answer, and is not joined by later ones.
    generation: u64,
    entries: usize,
    events: HashMap<String, EventEntries>,
    /// Look-ups on their way to the inner store, with their generation.
    loading: HashMap<(String, Option<String>), (u64, Load)>,
}

#[derive(Default)]
struct EventEntries {
    no_owner: Option<Entry>,
    by_owner: HashMap<String, Entry>,
}

struct Entry {
    subs: Subs,
    expires: Instant,
}

impl Cache {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn invalidate(&self) {
        let mut state = self.lock();
        state.generation = state.generation.wrapping_add(1);
        state.events.clear();
        state.entries = 0;
        // Look-ups already on their way may have read before the write:
        // later look-ups must not join them.
        state.loading.clear();
    }

    fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            ttl,
            max_entries,
            state: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            shared: AtomicU64::new(0),
        }
    }
}

impl State {
    fn get(&self, event_name: &str, owner_id: Option<&str>, now: Instant) -> Option<Subs> {
        let event = self.events.get(event_name)?;
        let entry = match owner_id {
            None => event.no_owner.as_ref()?,
            Some(owner) => event.by_owner.get(owner)?,
        };
        (entry.expires > now).then(|| entry.subs.clone())
    }

    fn put(&mut self, event_name: &str, owner_id: Option<&str>, entry: Entry, max_entries: usize) {
        if self.entries >= max_entries {
            // Drop what expired; if everything is fresh, start over (cheaper
            // and simpler than LRU, and a full cache of live entries means
            // the TTL is short compared with the key space anyway).
            let now = Instant::now();
            for event in self.events.values_mut() {
                if event.no_owner.as_ref().is_some_and(|e| e.expires <= now) {
                    event.no_owner = None;
                }
                event.by_owner.retain(|_, e| e.expires > now);
            }
            self.events.retain(|_, e| e.no_owner.is_some() || !e.by_owner.is_empty());
            self.entries = self.events.values().map(|e| e.by_owner.len() + usize::from(e.no_owner.is_some())).sum();
            if self.entries >= max_entries {
                self.events.clear();
                self.entries = 0;
            }
        }
        let event = self.events.entry(event_name.to_owned()).or_default();
        let previous = match owner_id {
            None => event.no_owner.replace(entry),
            Some(owner) => event.by_owner.insert(owner.to_owned(), entry),
        };
        if previous.is_none() {
            self.entries += 1;
        }
    }
}

impl<S: Store> CachedStore<S> {
    /// Caches `inner`'s look-ups for 2 seconds, at most 10,000 `(event name,
    /// owner)` answers.
    pub fn new(inner: S) -> Self {
        Self { inner: Arc::new(inner), cache: Arc::new(Cache::new(Duration::from_secs(2), 10_000)) }
    }

    /// How long an answer is kept. Writes made by other processes are seen
    /// at most this much later. `Duration::ZERO` disables the cache.
    #[must_use]
    pub fn with_ttl(self, ttl: Duration) -> Self {
        self.with_cache(|c| c.ttl = ttl)
    }

    /// How many `(event name, owner)` answers are kept at most.
    #[must_use]
    pub fn with_max_entries(self, max_entries: usize) -> Self {
        self.with_cache(|c| c.max_entries = max_entries.max(1))
    }

    fn with_cache(mut self, change: impl FnOnce(&mut Cache)) -> Self {
        match Arc::get_mut(&mut self.cache) {
            Some(cache) => change(cache),
            None => {
                // Shared with a clone: give this one its own, empty cache.
                let mut cache = Cache::new(self.cache.ttl, self.cache.max_entries);
                change(&mut cache);
                self.cache = Arc::new(cache);
            }
        }
        self
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Forgets every cached answer (for writes made elsewhere).
    pub fn invalidate(&self) {
        self.cache.invalidate();
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.cache.hits.load(Ordering::Relaxed),
            misses: self.cache.misses.load(Ordering::Relaxed),
            shared: self.cache.shared.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl<S: Store> Store for CachedStore<S> {
    async fn add(&self, event_name: &str, subscription: WebhookSubscription) -> Result<String, StoreError> {
        let result = self.inner.add(event_name, subscription).await;
        // Even after an error: the write may have happened (a lost reply).
        self.cache.invalidate();
        result
    }

    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let result = self.inner.remove(id).await;
        self.cache.invalidate();
        result
    }

    async fn get(&self, id: &str) -> Result<Option<StoredWebhookSubscription>, StoreError> {
        self.inner.get(id).await
    }

    async fn list(&self, event_name: &str) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        self.inner.list(event_name).await
    }

    async fn update(&self, id: &str, update: SubscriptionUpdate) -> Result<bool, StoreError> {
        let result = self.inner.update(id, update).await;
        self.cache.invalidate();
        result
    }

    async fn set_disabled(&self, id: &str, disabled: Option<Disabled>) -> Result<bool, StoreError> {
        let result = self.inner.set_disabled(id, disabled).await;
        self.cache.invalidate();
        result
    }

    /// Not invalidating: the engine that writes health keeps its own, and
    /// a streak's change is no reason to query the store again.
    async fn record_health(&self, id: &str, health: &EndpointHealth) -> Result<bool, StoreError> {
        self.inner.record_health(id, health).await
    }

    async fn list_all(&self, owner_id: Option<&str>) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        self.inner.list_all(owner_id).await
    }

    async fn subscriptions_for(
        &self,
        event_name: &str,
        owner_id: Option<&str>,
    ) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        if self.cache.ttl.is_zero() {
            return self.inner.subscriptions_for(event_name, owner_id).await;
        }
        Ok(self.lookup(event_name, owner_id).await?.iter().map(|s| StoredWebhookSubscription::clone(s)).collect())
    }

    async fn shared_subscriptions_for(
        &self,
        event_name: &str,
        owner_id: Option<&str>,
    ) -> Result<Vec<Arc<StoredWebhookSubscription>>, StoreError> {
        if self.cache.ttl.is_zero() {
            return self.inner.shared_subscriptions_for(event_name, owner_id).await;
        }
        Ok(self.lookup(event_name, owner_id).await?.as_ref().clone())
    }

    fn has_subscriptions_hint(&self, event_name: &str) -> Option<bool> {
        // The inner store's own writes are the only ones this process sees
        // at once; its hint (if it has one) is as fresh as its data.
        self.inner.has_subscriptions_hint(event_name)
    }
}

impl<S: Store> CachedStore<S> {
    /// The cached answer, or one query to the inner store (shared with the
    /// identical look-ups that arrive while it runs).
    async fn lookup(&self, event_name: &str, owner_id: Option<&str>) -> Result<Subs, StoreError> {
        let cache = &self.cache;
        let load = {
            let mut state = cache.lock();
            if let Some(subs) = state.get(event_name, owner_id, Instant::now()) {
                drop(state);
                cache.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(subs);
            }
            let key = (event_name.to_owned(), owner_id.map(str::to_owned));
            let generation = state.generation;
            match state.loading.get(&key) {
                Some((started, load)) if *started == generation => {
                    cache.shared.fetch_add(1, Ordering::Relaxed);
                    load.clone()
                }
                _ => {
                    cache.misses.fetch_add(1, Ordering::Relaxed);
                    let load = self.load(key.clone(), generation);
                    state.loading.insert(key, (generation, load.clone()));
                    load
                }
            }
        };
        // The first caller gets the error itself; the others a copy.
        load.await.map_err(|e| match Arc::try_unwrap(e) {
            Ok(e) => e,
            Err(e) if e.is_retryable() => StoreError::unavailable(e.to_string()),
            Err(e) => StoreError::Corrupt(e.to_string()),
        })
    }

    /// One query to the inner store, shared by the callers that wait for
    /// it; its answer is cached unless a write happened meanwhile.
    fn load(&self, key: (String, Option<String>), generation: u64) -> Load {
        let inner = self.inner.clone();
        let cache = self.cache.clone();
        async move {
            let answer = inner.shared_subscriptions_for(&key.0, key.1.as_deref()).await;
            let mut state = cache.lock();
            if state.loading.get(&key).is_some_and(|(g, _)| *g == generation) {
                state.loading.remove(&key);
            }
            let subs = Arc::new(answer.map_err(Arc::new)?);
            if state.generation == generation {
                let entry = Entry { subs: subs.clone(), expires: Instant::now() + cache.ttl };
                state.put(&key.0, key.1.as_deref(), entry, cache.max_entries);
            }
            Ok(subs)
        }
        .boxed()
        .shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn sub(url: &str) -> WebhookSubscription {
        WebhookSubscription::new(url).unwrap()
    }

    #[tokio::test]
    async fn cache_full_of_live_entries_starts_over_and_stays_correct() {
        let store = CachedStore::new(MemoryStore::new()).with_max_entries(2);
        store.add("e", sub("https://a.example/")).await.unwrap();
        for owner in ["a", "b", "c", "d"] {
            assert_eq!(store.subscriptions_for("e", Some(owner)).await.unwrap().len(), 1);
        }
        assert!(store.cache.lock().entries <= 2);
        assert_eq!(store.subscriptions_for("e", Some("d")).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn zero_ttl_disables_the_cache() {
        let store = CachedStore::new(MemoryStore::new()).with_ttl(Duration::ZERO);
        store.subscriptions_for("e", None).await.unwrap();
        store.subscriptions_for("e", None).await.unwrap();
        assert_eq!(store.stats(), CacheStats::default());
    }
}
