//! Schema checks that need the pool (the behaviour is tested through the
//! public API in the root package's `tests/it/store_*.rs`).

// With one dialect compiled in, `let Pool::X(pool) = .. else` is irrefutable.
#![allow(irrefutable_let_patterns)]

use super::*;

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn env_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run the tests with `scripts/test.sh`"))
}

#[test]
fn debug_hides_the_url_password() {
    let builder = SqlStore::builder("postgres://app:hunter2@db.internal/hooks");
    let dbg = format!("{builder:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("db.internal"), "{dbg}");
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_init_creates_the_table_and_the_event_owner_index() {
    let store = SqlStore::connect("sqlite::memory:").await.unwrap();
    store.init().await.unwrap();
    store.init().await.unwrap();
    let Pool::Sqlite(pool) = &store.pool else { panic!("not sqlite") };
    let columns: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM pragma_index_info('webhook_subscriptions_event_owner') ORDER BY seqno")
            .fetch_all(pool)
            .await
            .unwrap();
    let columns: Vec<&str> = columns.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(columns, ["event_name", "owner_id"]);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_init_creates_the_table_and_the_event_owner_index() {
    let store = SqlStore::connect(env_url("FASTAPIHOOKS_TEST_POSTGRES_URL")).await.unwrap();
    store.init().await.unwrap();
    let Pool::Postgres(pool) = &store.pool else { panic!("not postgres") };
    let (def,): (String,) =
        sqlx::query_as("SELECT indexdef FROM pg_indexes WHERE indexname = 'webhook_subscriptions_event_owner'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(def.contains("(event_name, owner_id)"), "{def}");
    let (kind,): (String,) = sqlx::query_as(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'webhook_subscriptions' AND column_name = 'metadata'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(kind, "jsonb", "metadata is real JSON, queryable in SQL");
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_init_creates_the_table_and_the_event_owner_index() {
    let store = SqlStore::connect(env_url("FASTAPIHOOKS_TEST_MYSQL_URL")).await.unwrap();
    store.init().await.unwrap();
    let Pool::MySql(pool) = &store.pool else { panic!("not mysql") };
    let columns: Vec<(String,)> = sqlx::query_as(
        "SELECT CAST(column_name AS CHAR) FROM information_schema.statistics WHERE table_schema = DATABASE()
         AND table_name = 'webhook_subscriptions' AND index_name = 'webhook_subscriptions_event_owner' ORDER BY seq_in_index",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let columns: Vec<&str> = columns.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(columns, ["event_name", "owner_id"]);
}
