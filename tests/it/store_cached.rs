//! `CachedStore`: the delivery-path look-up cache and its freshness rules.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use fastapihooks::store::{CachedStore, StoreError};
use fastapihooks::{MemoryStore, Store, StoredWebhookSubscription, SubscriptionUpdate, WebhookSubscription};
use tokio::sync::Notify;

use super::store_util::{Counting, sub};

#[tokio::test]
async fn cached_store_answers_repeated_lookups_from_the_cache() {
    let store = CachedStore::new(Counting::new(MemoryStore::new()));
    store.add("order.created", sub("https://a.example/")).await.unwrap();
    for _ in 0..10 {
        assert_eq!(store.subscriptions_for("order.created", Some("t1")).await.unwrap().len(), 1);
    }
    assert_eq!(store.inner().lookups.load(Ordering::SeqCst), 1);
    let stats = store.stats();
    assert_eq!((stats.hits, stats.misses), (9, 1));
    // Each (event, owner) pair is its own entry, empty answers included.
    assert!(store.subscriptions_for("order.created", None).await.unwrap().len() == 1);
    assert!(store.subscriptions_for("other", None).await.unwrap().is_empty());
    assert!(store.subscriptions_for("other", None).await.unwrap().is_empty());
    assert_eq!(store.inner().lookups.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn cached_store_invalidates_on_its_own_writes() {
    let store = CachedStore::new(MemoryStore::new()).with_ttl(Duration::from_secs(3600));
    assert!(store.subscriptions_for("e", None).await.unwrap().is_empty());
    let id = store.add("e", sub("https://a.example/")).await.unwrap();
    assert_eq!(store.subscriptions_for("e", None).await.unwrap().len(), 1, "add not seen");
    store.update(&id, SubscriptionUpdate::new().target_url("https://b.example/")).await.unwrap();
    assert_eq!(
        store.subscriptions_for("e", None).await.unwrap()[0].target_url,
        "https://b.example/",
        "update not seen"
    );
    assert!(store.remove(&id).await.unwrap());
    assert!(store.subscriptions_for("e", None).await.unwrap().is_empty(), "remove not seen");
}

#[tokio::test]
async fn cached_store_sees_other_writers_after_the_ttl() {
    let shared = MemoryStore::new(); // clones share data: "another process"
    let store = CachedStore::new(shared.clone()).with_ttl(Duration::from_millis(100));
    assert!(store.subscriptions_for("e", None).await.unwrap().is_empty());
    shared.add("e", sub("https://a.example/")).await.unwrap();
    assert!(store.subscriptions_for("e", None).await.unwrap().is_empty(), "within the TTL the cached answer stands");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.subscriptions_for("e", None).await.unwrap().len(), 1, "after the TTL the write is seen");
    // `invalidate` makes it visible at once.
    shared.add("e", sub("https://b.example/")).await.unwrap();
    store.invalidate();
    assert_eq!(store.subscriptions_for("e", None).await.unwrap().len(), 2);
}

/// A store whose look-ups wait until released: to race a write with a look-up.
struct Gated {
    inner: MemoryStore,
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

#[async_trait]
impl Store for Gated {
    async fn add(&self, e: &str, s: WebhookSubscription) -> Result<String, StoreError> {
        self.inner.add(e, s).await
    }
    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.remove(id).await
    }
    async fn get(&self, id: &str) -> Result<Option<StoredWebhookSubscription>, StoreError> {
        self.inner.get(id).await
    }
    async fn list(&self, e: &str) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        self.inner.list(e).await
    }
    async fn update(&self, id: &str, u: SubscriptionUpdate) -> Result<bool, StoreError> {
        self.inner.update(id, u).await
    }
    async fn set_disabled(&self, id: &str, d: Option<fastapihooks::health::Disabled>) -> Result<bool, StoreError> {
        self.inner.set_disabled(id, d).await
    }
    async fn record_health(&self, id: &str, h: &fastapihooks::health::EndpointHealth) -> Result<bool, StoreError> {
        self.inner.record_health(id, h).await
    }
    async fn list_all(&self, o: Option<&str>) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        self.inner.list_all(o).await
    }
    async fn subscriptions_for(&self, e: &str, o: Option<&str>) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        let answer = self.inner.subscriptions_for(e, o).await; // read before the write...
        self.entered.notify_one();
        self.release.notified().await; // ...answer after it
        answer
    }
}

#[tokio::test]
async fn a_lookup_that_raced_a_write_is_not_cached() {
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let store =
        CachedStore::new(Gated { inner: MemoryStore::new(), entered: entered.clone(), release: release.clone() })
            .with_ttl(Duration::from_secs(3600));
    let racing = {
        let store = store.clone();
        tokio::spawn(async move { store.subscriptions_for("e", None).await.unwrap() })
    };
    entered.notified().await;
    store.add("e", sub("https://a.example/")).await.unwrap();
    release.notify_one();
    assert!(racing.await.unwrap().is_empty(), "the racing look-up read before the write");
    // The stale answer was not kept: the next look-up goes to the store.
    let next = {
        let store = store.clone();
        tokio::spawn(async move { store.subscriptions_for("e", None).await.unwrap() })
    };
    entered.notified().await;
    release.notify_one();
    assert_eq!(next.await.unwrap().len(), 1);
    assert_eq!(store.stats().misses, 2, "the stale answer was neither cached nor joined");
}

/// Fails look-ups `failures` times, then works; every look-up takes 20 ms.
struct Flaky {
    inner: MemoryStore,
    failures: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Store for Flaky {
    async fn add(&self, e: &str, s: WebhookSubscription) -> Result<String, StoreError> {
        self.inner.add(e, s).await
    }
    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.remove(id).await
    }
    async fn get(&self, id: &str) -> Result<Option<StoredWebhookSubscription>, StoreError> {
        self.inner.get(id).await
    }
    async fn list(&self, e: &str) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        self.inner.list(e).await
    }
    async fn update(&self, id: &str, u: SubscriptionUpdate) -> Result<bool, StoreError> {
        self.inner.update(id, u).await
    }
    async fn set_disabled(&self, id: &str, d: Option<fastapihooks::health::Disabled>) -> Result<bool, StoreError> {
        self.inner.set_disabled(id, d).await
    }
    async fn record_health(&self, id: &str, h: &fastapihooks::health::EndpointHealth) -> Result<bool, StoreError> {
        self.inner.record_health(id, h).await
    }
    async fn list_all(&self, o: Option<&str>) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        self.inner.list_all(o).await
    }
    async fn subscriptions_for(&self, e: &str, o: Option<&str>) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        tokio::time::sleep(Duration::from_millis(20)).await; // concurrent callers overlap
        if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(StoreError::unavailable("down"));
        }
        self.inner.subscriptions_for(e, o).await
    }
}

#[tokio::test]
async fn cached_store_does_not_cache_errors() {
    let inner = MemoryStore::new();
    inner.add("e", sub("https://a.example/")).await.unwrap();
    let store = CachedStore::new(Flaky { inner, failures: 1.into() });
    assert!(store.subscriptions_for("e", None).await.unwrap_err().is_retryable());
    assert_eq!(store.subscriptions_for("e", None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_misses_share_one_query_to_the_inner_store() {
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let inner = MemoryStore::new();
    inner.add("e", sub("https://a.example/")).await.unwrap();
    let store = CachedStore::new(Gated { inner, entered: entered.clone(), release: release.clone() });
    let lookups: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.subscriptions_for("e", None).await.unwrap() })
        })
        .collect();
    entered.notified().await;
    tokio::time::sleep(Duration::from_millis(50)).await; // let every look-up queue up
    release.notify_one();
    for lookup in lookups {
        assert_eq!(lookup.await.unwrap().len(), 1);
    }
    let stats = store.stats();
    assert_eq!((stats.misses, stats.shared), (1, 19), "{stats:?}");
    // The shared answer was cached.
    let hits = store.stats().hits;
    store.subscriptions_for("e", None).await.unwrap();
    assert_eq!(store.stats().hits, hits + 1);
}

#[tokio::test]
async fn a_shared_lookup_error_reaches_every_waiter_as_retryable() {
    let inner = MemoryStore::new();
    let store = CachedStore::new(Flaky { inner, failures: 1.into() });
    let (a, b) = tokio::join!(store.subscriptions_for("e", None), store.subscriptions_for("e", None));
    assert!(a.unwrap_err().is_retryable());
    assert!(b.unwrap_err().is_retryable());
    assert_eq!((store.stats().misses, store.stats().shared), (1, 1), "one query for both");
    assert!(store.subscriptions_for("e", None).await.unwrap().is_empty(), "errors are not cached");
}
