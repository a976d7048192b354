//! Helpers of the store tests: test databases, a closed port, wrappers.

#![allow(dead_code, unreachable_pub)]

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use async_trait::async_trait;
use fastapihooks::store::StoreError;
use fastapihooks::{Store, StoredWebhookSubscription, SubscriptionUpdate, WebhookSubscription};

/// A store under test, and what must live as long as it (a temporary file).
pub struct TestStore<S> {
    pub store: S,
    _file: Option<TempDb>,
}

impl<S> TestStore<S> {
    pub fn plain(store: S) -> Self {
        Self { store, _file: None }
    }

    pub fn map<T>(self, f: impl FnOnce(S) -> T) -> TestStore<T> {
        TestStore { store: f(self.store), _file: self._file }
    }
}

impl<S> Deref for TestStore<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.store
    }
}

/// A temporary SQLite file, removed (with its WAL files) on drop.
pub struct TempDb {
    pub path: PathBuf,
}

impl TempDb {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("fastapihooks-test-{}-{nanos}-{}.db", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        Self { path: std::env::temp_dir().join(name) }
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The URL of a test server started by `scripts/test.sh`. Never skips: a
/// missing URL fails the test, saying how to get one.
pub fn server_url(var: &str) -> String {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{var} is not set: the SQL store tests need real servers; run them with `scripts/test.sh` \
             (it starts PostgreSQL and MariaDB on 127.0.0.1 and exports the URLs)"
        ),
    }
}

#[cfg(feature = "postgres")]
pub fn postgres_url() -> String {
    server_url("FASTAPIHOOKS_TEST_POSTGRES_URL")
}

#[cfg(feature = "mysql")]
pub fn mysql_url() -> String {
    server_url("FASTAPIHOOKS_TEST_MYSQL_URL")
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub mod sql {
    use super::*;
    use fastapihooks::store::sql::SqlStore;

    async fn open(url: &str) -> SqlStore {
        let store = SqlStore::connect(url).await.unwrap_or_else(|e| panic!("connect: {e}"));
        store.init().await.unwrap_or_else(|e| panic!("init: {e}"));
        store
    }

    #[cfg(feature = "postgres")]
    pub async fn postgres() -> TestStore<SqlStore> {
        TestStore::plain(open(&postgres_url()).await)
    }

    #[cfg(feature = "mysql")]
    pub async fn mysql() -> TestStore<SqlStore> {
        TestStore::plain(open(&mysql_url()).await)
    }

    #[cfg(feature = "sqlite")]
    pub async fn sqlite() -> TestStore<SqlStore> {
        let file = TempDb::new();
        let store = open(&file.url()).await;
        TestStore { store, _file: Some(file) }
    }
}

/// A port on 127.0.0.1 where nothing listens.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// Counts the look-ups that reach the store it wraps.
pub struct Counting<S> {
    pub inner: S,
    pub lookups: Arc<AtomicUsize>,
}

impl<S> Counting<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, lookups: Arc::default() }
    }
}

#[async_trait]
impl<S: Store> Store for Counting<S> {
    async fn add(&self, event_name: &str, subscription: WebhookSubscription) -> Result<String, StoreError> {
        self.inner.add(event_name, subscription).await
    }
    async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.remove(id).await
    }
    async fn get(&self, id: &str) -> Result<Option<StoredWebhookSubscription>, StoreError> {
        self.inner.get(id).await
    }
    async fn list(&self, event_name: &str) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        self.inner.list(event_name).await
    }
    async fn update(&self, id: &str, update: SubscriptionUpdate) -> Result<bool, StoreError> {
        self.inner.update(id, update).await
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
    async fn subscriptions_for(
        &self,
        event_name: &str,
        owner_id: Option<&str>,
    ) -> Result<Vec<StoredWebhookSubscription>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.subscriptions_for(event_name, owner_id).await
    }
}

pub fn sub(url: &str) -> WebhookSubscription {
    WebhookSubscription::new(url).expect("valid url")
}
