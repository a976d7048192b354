//! `SqlStore` beyond the conformance suite: connecting, schema, a database
//! that is down (a clear, retryable error; the event is retried, then handed
//! to `on_failure`), SQLite files.

#![allow(unused_imports)] // which ones are used depends on the SQL features

use std::sync::atomic::Ordering;
use std::time::Duration;

use fastapihooks::store::StoreError;
use fastapihooks::store::sql::{Dialect, SqlConnectError, SqlStore};
use fastapihooks::{DeliveryError, Emission, Fastapihooks, InMemoryDeadLetterQueue, RetryPolicy, Store};
use serde_json::json;

use super::store_util::{self, Counting, TempDb, closed_port, sub};

#[tokio::test]
async fn connect_refuses_an_unsupported_scheme() {
    let err = SqlStore::connect("redis://127.0.0.1/0").await.unwrap_err();
    assert!(matches!(err, SqlConnectError::UnsupportedScheme(ref s) if s == "redis"), "{err}");
    assert!(err.to_string().contains("postgres://"), "{err}");
    assert!(matches!(SqlStore::builder("no-scheme").connect_lazy(), Err(SqlConnectError::UnsupportedScheme(_))));
}

#[test]
fn dialect_comes_from_the_url_scheme() {
    assert_eq!(Dialect::from_url("postgres://h/db").unwrap(), Dialect::Postgres);
    assert_eq!(Dialect::from_url("postgresql://h/db").unwrap(), Dialect::Postgres);
    assert_eq!(Dialect::from_url("mysql://h/db").unwrap(), Dialect::MySql);
    assert_eq!(Dialect::from_url("mariadb://h/db").unwrap(), Dialect::MySql);
    assert_eq!(Dialect::from_url("sqlite://x.db").unwrap(), Dialect::Sqlite);
    assert_eq!(Dialect::from_url("sqlite::memory:").unwrap(), Dialect::Sqlite);
}

/// A store on a port where nothing listens, failing fast.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn down_store(scheme: &str) -> SqlStore {
    let url = format!("{scheme}://user@127.0.0.1:{}/db", closed_port());
    SqlStore::builder(url).acquire_timeout(Duration::from_millis(300)).connect_lazy().expect("lazy connect")
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn down_database_gives_a_clear_retryable_error(scheme: &str, name: &str) {
    let store = down_store(scheme);
    let err = store.subscriptions_for("order.created", Some("t")).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(text.contains(name) && text.contains("subscriptions_for") && text.contains("is the database up"), "{text}");
    for result in [
        store.add("e", sub("https://a.example/")).await.map(|_| ()),
        store.get("sub_x").await.map(|_| ()),
        store.remove("sub_x").await.map(|_| ()),
        store.list("e").await.map(|_| ()),
        store.init().await,
    ] {
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
    }
    // Bad input is refused before the database is even asked.
    let mut bad = sub("https://a.example/");
    bad.target_url = "ftp://a.example/".into();
    assert!(matches!(store.add("e", bad).await, Err(StoreError::Invalid(_))));
    let bad_update = fastapihooks::SubscriptionUpdate::new().target_url("nope");
    assert!(matches!(store.update("sub_x", bad_update).await, Err(StoreError::Invalid(_))));
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn eager_connect_to_a_down_database_fails(scheme: &str) {
    let url = format!("{scheme}://user@127.0.0.1:{}/db", closed_port());
    let err = SqlStore::builder(url).acquire_timeout(Duration::from_millis(300)).connect().await.unwrap_err();
    assert!(matches!(err, SqlConnectError::Connect { .. }), "{err}");
}

/// The end-to-end case: the store is down when an event is emitted;
/// the look-up is retried with its own backoff (8 retries, about 9 s: not
/// the delivery policy, whose schedule may span days), then the event goes
/// to `on_failure` with `DeliveryError::Store`. It is not lost.
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn store_down_event_is_retried_then_handed_to_on_failure(scheme: &str, name: &str) {
    let store = Counting::new(down_store(scheme));
    let lookups = store.lookups.clone();
    let dlq = InMemoryDeadLetterQueue::new(16);
    let hooks = Fastapihooks::builder()
        .store(store)
        .on_failure(dlq.clone())
        .retry_policy(RetryPolicy::exponential(2, Duration::from_millis(10), Duration::from_millis(50)))
        .build()
        .expect("build");
    hooks.emit(Emission::new("order.created").response_value(json!({"id": 1}))).expect("emit");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while dlq.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failures = dlq.entries();
    assert_eq!(failures.len(), 1, "the event must reach on_failure once");
    let failure = &failures[0];
    assert_eq!(failure.event.name, "order.created");
    match &failure.error {
        DeliveryError::Store(message) => assert!(message.contains(name), "{message}"),
        other => panic!("expected DeliveryError::Store, got {other:?}"),
    }
    assert_eq!(lookups.load(Ordering::SeqCst), 9, "one try and eight retries, whatever the delivery policy");
    hooks.shutdown(Duration::from_secs(1)).await;
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    #[tokio::test]
    async fn postgres_down_gives_a_clear_retryable_error() {
        down_database_gives_a_clear_retryable_error("postgres", "postgres").await;
    }

    #[tokio::test]
    async fn postgres_eager_connect_to_a_down_database_fails() {
        eager_connect_to_a_down_database_fails("postgres").await;
    }

    #[tokio::test]
    async fn postgres_down_event_is_retried_then_handed_to_on_failure() {
        store_down_event_is_retried_then_handed_to_on_failure("postgres", "postgres").await;
    }

    #[tokio::test]
    async fn postgres_init_is_idempotent_even_when_run_concurrently() {
        let store = store_util::sql::postgres().await;
        let (a, b, c) = tokio::join!(store.init(), store.init(), store.init());
        a.and(b).and(c).expect("init");
        assert_eq!(store.dialect(), Dialect::Postgres);
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;

    #[tokio::test]
    async fn mysql_down_gives_a_clear_retryable_error() {
        down_database_gives_a_clear_retryable_error("mysql", "mysql").await;
    }

    #[tokio::test]
    async fn mysql_eager_connect_to_a_down_database_fails() {
        eager_connect_to_a_down_database_fails("mariadb").await;
    }

    #[tokio::test]
    async fn mysql_down_event_is_retried_then_handed_to_on_failure() {
        store_down_event_is_retried_then_handed_to_on_failure("mysql", "mysql").await;
    }

    #[tokio::test]
    async fn mysql_init_is_idempotent_even_when_run_concurrently() {
        let store = store_util::sql::mysql().await;
        let (a, b, c) = tokio::join!(store.init(), store.init(), store.init());
        a.and(b).and(c).expect("init");
        assert_eq!(store.dialect(), Dialect::MySql);
    }

    #[tokio::test]
    async fn mariadb_scheme_connects_like_mysql() {
        let url = store_util::mysql_url().replacen("mysql://", "mariadb://", 1);
        let store = SqlStore::connect(url).await.expect("connect");
        store.init().await.expect("init");
        assert_eq!(store.dialect(), Dialect::MySql);
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    #[tokio::test]
    async fn sqlite_file_is_created_and_keeps_subscriptions_across_reopen() {
        let file = TempDb::new();
        assert!(!file.path.exists());
        let store = SqlStore::connect(file.url()).await.expect("connect");
        store.init().await.expect("init");
        store.init().await.expect("init is idempotent");
        let id = store.add("order.created", sub("https://a.example/").owner("t1")).await.unwrap();
        store.close().await;
        assert!(file.path.exists());
        assert!(matches!(store.get(&id).await, Err(StoreError::Unavailable(_))), "a closed store is unavailable");

        let reopened = SqlStore::connect(file.url()).await.expect("reopen");
        let got = reopened.get(&id).await.unwrap().expect("kept");
        assert_eq!(got.owner_id.as_deref(), Some("t1"));
        assert_eq!(reopened.subscriptions_for("order.created", Some("t1")).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn sqlite_without_init_says_to_run_init() {
        let file = TempDb::new();
        let store = SqlStore::connect(file.url()).await.expect("connect");
        let err = store.list("e").await.unwrap_err();
        assert!(err.to_string().contains("SqlStore::init"), "{err}");
    }

    #[tokio::test]
    async fn sqlite_in_a_missing_folder_fails_to_connect() {
        let err = SqlStore::connect("sqlite:///nonexistent-dir-fastapihooks/x.db").await.unwrap_err();
        assert!(matches!(err, SqlConnectError::Connect { dialect: Dialect::Sqlite, .. }), "{err}");
    }
}

/// The runtime reads a (cached) SQL store for every event and delivers to
/// the owner's and the ownerless subscriptions only, with their auth.
#[allow(dead_code)]
async fn sql_store_subscriptions_get_deliveries_scoped_by_owner(store: SqlStore) {
    use axum::http::HeaderMap;
    use axum::routing::post;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Option<String>)>();
    let app = axum::Router::new().route(
        "/{who}",
        post(move |axum::extract::Path(who): axum::extract::Path<String>, headers: HeaderMap| {
            let tx = tx.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let _ = tx.send((who, auth));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // An event name of this run: the PostgreSQL and MariaDB databases are shared.
    let event = format!("order.created.{}", std::process::id());
    let acme = store.add(&event, sub(&format!("{base}/acme")).owner("acme").bearer("acme-token")).await.unwrap();
    let open = store.add(&event, sub(&format!("{base}/open"))).await.unwrap();
    let globex = store.add(&event, sub(&format!("{base}/globex")).owner("globex")).await.unwrap();
    let cached = fastapihooks::store::CachedStore::new(store.clone());

    let hooks = Fastapihooks::builder()
        .store(cached)
        .network_policy(fastapihooks::NetworkPolicy::default().allow_loopback())
        .build()
        .expect("build");
    hooks.emit(Emission::new(event.clone()).owner(Some("acme".into())).response_value(json!({"id": 1}))).expect("emit");

    let mut got = Vec::new();
    for _ in 0..2 {
        let delivery =
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a delivery").expect("open");
        got.push(delivery);
    }
    got.sort();
    assert_eq!(got, [("acme".to_owned(), Some("Bearer acme-token".to_owned())), ("open".to_owned(), None)]);
    hooks.shutdown(Duration::from_secs(2)).await;
    assert!(rx.try_recv().is_err(), "globex's subscription got acme's event");
    for id in [acme, open, globex] {
        store.remove(&id).await.unwrap();
    }
    server.abort();
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_store_subscriptions_get_deliveries_scoped_by_owner() {
    let store = store_util::sql::sqlite().await;
    sql_store_subscriptions_get_deliveries_scoped_by_owner(store.store.clone()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_store_subscriptions_get_deliveries_scoped_by_owner() {
    sql_store_subscriptions_get_deliveries_scoped_by_owner(store_util::sql::postgres().await.store).await;
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_store_subscriptions_get_deliveries_scoped_by_owner() {
    sql_store_subscriptions_get_deliveries_scoped_by_owner(store_util::sql::mysql().await.store).await;
}
