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

/// `init` on a table of the previous version (before the enabled state and
/// the health): the DDL and the `INSERT` of that version, copied from it.
mod migration {
    use super::*;
    use fastapihooks::health::{Disabled, EndpointHealth};
    use sqlx::AssertSqlSafe;

    const OLD_ID: &str = "sub_0192f0c4a0b07c3d9e8f001122334455";
    const OLD_EVENT: &str = "order.created";

    /// A test database next to the store, for SQL the store does not offer.
    enum Raw {
        #[cfg(feature = "postgres")]
        Postgres(sqlx::PgPool),
        #[cfg(feature = "mysql")]
        MySql(sqlx::MySqlPool),
        #[cfg(feature = "sqlite")]
        Sqlite(sqlx::SqlitePool),
    }

    impl Raw {
        async fn exec(&self, sql: &str) {
            let sql = AssertSqlSafe(sql.to_owned());
            let done = match self {
                #[cfg(feature = "postgres")]
                Self::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
                #[cfg(feature = "mysql")]
                Self::MySql(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
                #[cfg(feature = "sqlite")]
                Self::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
            };
            done.unwrap_or_else(|e| panic!("raw SQL failed: {e}"));
        }

        /// The table's columns in order, as `name type nullable default`.
        async fn columns(&self) -> Vec<String> {
            let got = match self {
                #[cfg(feature = "postgres")]
                Self::Postgres(pool) => {
                    sqlx::query_scalar(
                        "SELECT column_name::text || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '-')
                         FROM information_schema.columns
                         WHERE table_schema = current_schema() AND table_name = 'webhook_subscriptions'
                         ORDER BY ordinal_position",
                    )
                    .fetch_all(pool)
                    .await
                }
                #[cfg(feature = "mysql")]
                Self::MySql(pool) => {
                    sqlx::query_scalar(
                        "SELECT CAST(CONCAT(column_name, ' ', column_type, ' ', is_nullable, ' ', COALESCE(column_default, '-')) AS CHAR)
                         FROM information_schema.columns
                         WHERE table_schema = DATABASE() AND table_name = 'webhook_subscriptions'
                         ORDER BY ordinal_position",
                    )
                    .fetch_all(pool)
                    .await
                }
                #[cfg(feature = "sqlite")]
                Self::Sqlite(pool) => {
                    sqlx::query_scalar(
                        "SELECT name || ' ' || type || ' ' || \"notnull\" || ' ' || coalesce(dflt_value, '-')
                         FROM pragma_table_info('webhook_subscriptions') ORDER BY cid",
                    )
                    .fetch_all(pool)
                    .await
                }
            };
            got.expect("columns")
        }

        async fn close(&self) {
            match self {
                #[cfg(feature = "postgres")]
                Self::Postgres(pool) => pool.close().await,
                #[cfg(feature = "mysql")]
                Self::MySql(pool) => pool.close().await,
                #[cfg(feature = "sqlite")]
                Self::Sqlite(pool) => pool.close().await,
            }
        }
    }

    /// A database name no other test uses (the servers are shared).
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    fn database_name() -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        format!("fh_migration_{}_{nanos}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
    }

    /// `url` with its database replaced by `name`.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    fn with_database(url: &str, name: &str) -> String {
        let (server, _) = url.rsplit_once('/').expect("a url with a database");
        format!("{server}/{name}")
    }

    /// The old table with one old row, then `init` twice: the row reads
    /// back as it was, enabled, with default health; it can be disabled,
    /// given health and enabled again; the migrated table has the columns a
    /// fresh `init` creates; and bad values in the new columns are `Corrupt`.
    async fn init_migrates_the_previous_table(raw: &Raw, url: &str, old_ddl: &[&str], old_insert: &str) {
        for statement in old_ddl {
            raw.exec(statement).await;
        }
        raw.exec(old_insert).await;
        let store = SqlStore::connect(url).await.expect("connect");
        let err = store.get(OLD_ID).await.expect_err("the old table lacks the new columns");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        store.init().await.expect("init migrates the old table");
        store.init().await.expect("init again changes nothing");

        let old = store.get(OLD_ID).await.expect("get").expect("the old row is kept");
        assert!(old.is_enabled(), "{:?}", old.disabled);
        assert_eq!(old.health, EndpointHealth::default());
        assert_eq!(old.event_name, OLD_EVENT);
        assert_eq!(old.target_url, "https://old.example/hooks");
        assert_eq!(old.auth.auth_value().map(fastapihooks::Secret::expose), Some("old-token"));
        assert_eq!(old.owner_id.as_deref(), Some("tenant-1"));
        assert_eq!(serde_json::Value::Object(old.metadata.clone()), json!({"plan": "pro"}));
        let created = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z").unwrap();
        assert_eq!(old.created_at, created);
        assert_eq!(old.updated_at, created);

        let disabled = Disabled::now("410 Gone");
        assert!(store.set_disabled(OLD_ID, Some(disabled.clone())).await.unwrap());
        let got = store.get(OLD_ID).await.unwrap().unwrap();
        assert_eq!(got.disabled.as_ref().map(|d| d.reason.as_str()), Some("410 Gone"));
        let lookup = store.subscriptions_for(OLD_EVENT, Some("tenant-1")).await.unwrap();
        assert!(lookup.iter().any(|s| s.id == OLD_ID && !s.is_enabled()), "the look-up returns it, disabled");
        let mut health = EndpointHealth::default();
        health.consecutive_failures = 4;
        health.failing_since = Some(chrono::Utc::now() - chrono::Duration::hours(1));
        assert!(store.record_health(OLD_ID, &health).await.unwrap());
        assert_eq!(store.get(OLD_ID).await.unwrap().unwrap().health.consecutive_failures, 4);
        assert!(store.set_disabled(OLD_ID, None).await.unwrap());
        let all = store.list_all(Some("tenant-1")).await.unwrap();
        assert_eq!(all.len(), 1);
        assert!(all[0].is_enabled() && all[0].health == EndpointHealth::default() && all[0].updated_at == created);
        let new = store.add(OLD_EVENT, sub("https://new.example/h")).await.expect("add to the migrated table");
        assert_eq!(store.list_all(None).await.unwrap().len(), 2, "{new}");

        // Values read back are untrusted: bad ones are `Corrupt`, not a panic.
        for bad in [
            "consecutive_failures = -1",
            "given_up = 4294967296",
            "disabled_reason = 'by hand'",
            "disabled_at = created_at",
        ] {
            raw.exec(&format!("UPDATE webhook_subscriptions SET {bad} WHERE id = '{OLD_ID}'")).await;
            let err = store.get(OLD_ID).await.expect_err(bad);
            assert!(matches!(err, StoreError::Corrupt(_)), "{bad}: {err:?}");
            assert!(err.to_string().contains(OLD_ID), "{bad}: {err}");
            assert!(matches!(store.list_all(None).await, Err(StoreError::Corrupt(_))), "{bad}");
            raw.exec(&format!(
                "UPDATE webhook_subscriptions SET consecutive_failures = 0, given_up = 0, disabled_at = NULL,
                 disabled_reason = NULL WHERE id = '{OLD_ID}'"
            ))
            .await;
            assert!(store.get(OLD_ID).await.unwrap().unwrap().is_enabled());
        }

        // The migrated table is the table a fresh `init` creates.
        let migrated = raw.columns().await;
        assert!(migrated.iter().any(|c| c.starts_with("given_up ")), "{migrated:?}");
        raw.exec("DROP TABLE webhook_subscriptions").await;
        store.init().await.expect("init creates the table");
        assert_eq!(raw.columns().await, migrated, "a migrated table differs from a new one");
        store.close().await;
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_init_migrates_a_table_of_the_previous_version() {
        const OLD_DDL: [&str; 2] = [
            "CREATE TABLE IF NOT EXISTS webhook_subscriptions (
                id TEXT PRIMARY KEY,
                event_name TEXT NOT NULL,
                target_url TEXT NOT NULL,
                auth_type TEXT NOT NULL DEFAULT 'none',
                auth_value TEXT NULL,
                metadata TEXT NOT NULL DEFAULT '{}',
                owner_id TEXT NULL,
                secrets TEXT NOT NULL DEFAULT '[]',
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )",
            "CREATE INDEX IF NOT EXISTS webhook_subscriptions_event_owner
                ON webhook_subscriptions (event_name, owner_id)",
        ];
        let file = TempDb::new();
        let url = format!("{}?mode=rwc", file.url());
        let raw = Raw::Sqlite(sqlx::SqlitePool::connect(&url).await.expect("connect"));
        let insert = format!(
            "INSERT INTO webhook_subscriptions (id, event_name, target_url, auth_type, auth_value, metadata, owner_id, secrets, created_at, updated_at)
             VALUES ('{OLD_ID}', '{OLD_EVENT}', 'https://old.example/hooks', 'bearer', 'old-token', '{{\"plan\":\"pro\"}}', 'tenant-1', '[]',
             '2026-01-02T03:04:05.123456+00:00', '2026-01-02T03:04:05.123456+00:00')"
        );
        init_migrates_the_previous_table(&raw, &file.url(), &OLD_DDL, &insert).await;
        raw.close().await;
    }

    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn postgres_init_migrates_a_table_of_the_previous_version() {
        const OLD_DDL: [&str; 2] = [
            "CREATE TABLE IF NOT EXISTS webhook_subscriptions (
                id TEXT PRIMARY KEY,
                event_name TEXT NOT NULL,
                target_url TEXT NOT NULL,
                auth_type TEXT NOT NULL DEFAULT 'none',
                auth_value TEXT NULL,
                metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
                owner_id TEXT NULL,
                secrets TEXT NOT NULL DEFAULT '[]',
                created_at TIMESTAMPTZ NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL
            )",
            "CREATE INDEX IF NOT EXISTS webhook_subscriptions_event_owner
                ON webhook_subscriptions (event_name, owner_id)",
        ];
        let server = store_util::postgres_url();
        let name = database_name();
        let admin = Raw::Postgres(sqlx::PgPool::connect(&server).await.expect("connect"));
        admin.exec(&format!("CREATE DATABASE {name}")).await;
        let url = with_database(&server, &name);
        let raw = Raw::Postgres(sqlx::PgPool::connect(&url).await.expect("connect"));
        let insert = format!(
            "INSERT INTO webhook_subscriptions (id, event_name, target_url, auth_type, auth_value, metadata, owner_id, secrets, created_at, updated_at)
             VALUES ('{OLD_ID}', '{OLD_EVENT}', 'https://old.example/hooks', 'bearer', 'old-token', '{{\"plan\":\"pro\"}}'::jsonb, 'tenant-1', '[]',
             '2026-01-02T03:04:05.123456+00:00', '2026-01-02T03:04:05.123456+00:00')"
        );
        init_migrates_the_previous_table(&raw, &url, &OLD_DDL, &insert).await;
        raw.close().await;
        admin.exec(&format!("DROP DATABASE {name} WITH (FORCE)")).await;
        admin.close().await;
    }

    #[cfg(feature = "mysql")]
    #[tokio::test]
    async fn mysql_init_migrates_a_table_of_the_previous_version() {
        const OLD_DDL: [&str; 1] = ["CREATE TABLE IF NOT EXISTS webhook_subscriptions (
                id VARCHAR(64) NOT NULL PRIMARY KEY,
                event_name VARCHAR(128) NOT NULL,
                target_url TEXT NOT NULL,
                auth_type VARCHAR(16) NOT NULL DEFAULT 'none',
                auth_value TEXT NULL,
                metadata JSON NOT NULL,
                owner_id TEXT NULL,
                secrets TEXT NOT NULL,
                created_at DATETIME(6) NOT NULL,
                updated_at DATETIME(6) NOT NULL,
                INDEX webhook_subscriptions_event_owner (event_name, owner_id(191))
            ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"];
        let server = store_util::mysql_url();
        let name = database_name();
        let admin = Raw::MySql(sqlx::MySqlPool::connect(&server).await.expect("connect"));
        admin.exec(&format!("CREATE DATABASE {name}")).await;
        let url = with_database(&server, &name);
        let raw = Raw::MySql(sqlx::MySqlPool::connect(&url).await.expect("connect"));
        let insert = format!(
            "INSERT INTO webhook_subscriptions (id, event_name, target_url, auth_type, auth_value, metadata, owner_id, secrets, created_at, updated_at)
             VALUES ('{OLD_ID}', '{OLD_EVENT}', 'https://old.example/hooks', 'bearer', 'old-token', '{{\"plan\":\"pro\"}}', 'tenant-1', '[]',
             '2026-01-02 03:04:05.123456', '2026-01-02 03:04:05.123456')"
        );
        init_migrates_the_previous_table(&raw, &url, &OLD_DDL, &insert).await;
        raw.close().await;
        admin.exec(&format!("DROP DATABASE {name}")).await;
        admin.close().await;
    }

    /// Several processes start at once on an old table: every `init`
    /// succeeds (MySQL has no `ADD COLUMN IF NOT EXISTS`; PostgreSQL and
    /// SQLite serialize `init`).
    #[cfg(feature = "mysql")]
    #[tokio::test]
    async fn mysql_concurrent_inits_migrate_an_old_table_once() {
        let server = store_util::mysql_url();
        let name = database_name();
        let admin = Raw::MySql(sqlx::MySqlPool::connect(&server).await.expect("connect"));
        admin.exec(&format!("CREATE DATABASE {name}")).await;
        let url = with_database(&server, &name);
        let raw = Raw::MySql(sqlx::MySqlPool::connect(&url).await.expect("connect"));
        raw.exec(
            "CREATE TABLE webhook_subscriptions (
                id VARCHAR(64) NOT NULL PRIMARY KEY, event_name VARCHAR(128) NOT NULL, target_url TEXT NOT NULL,
                auth_type VARCHAR(16) NOT NULL DEFAULT 'none', auth_value TEXT NULL, metadata JSON NOT NULL,
                owner_id TEXT NULL, secrets TEXT NOT NULL, created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL
            ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
        )
        .await;
        let stores: Vec<SqlStore> = futures_util::future::join_all((0..4).map(|_| SqlStore::connect(url.clone())))
            .await
            .into_iter()
            .map(|s| s.expect("connect"))
            .collect();
        let results = futures_util::future::join_all(stores.iter().map(SqlStore::init)).await;
        for result in results {
            result.expect("a concurrent init");
        }
        let id = stores[0].add(OLD_EVENT, sub("https://a.example/h")).await.unwrap();
        assert!(stores[1].set_disabled(&id, Some(Disabled::now("x"))).await.unwrap());
        for store in &stores {
            store.close().await;
        }
        raw.close().await;
        admin.exec(&format!("DROP DATABASE {name}")).await;
        admin.close().await;
    }
}
