//! Schema, plans and corrupt rows: checks that need the pool (the
//! behaviour is the conformance suite's, in the root package's
//! `tests/it/history_conformance.rs`).

// With one dialect compiled in, `let Pool::X(pool) = .. else` is irrefutable.
#![allow(irrefutable_let_patterns)]

use super::*;
use sqlx::AssertSqlSafe;

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn env_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run the tests with `scripts/test.sh`"))
}

/// A table name no other test uses.
fn table(test: &str) -> String {
    format!("t{}_{test}", &uuid::Uuid::now_v7().simple().to_string()[20..])
}

#[test]
fn table_names_are_checked() {
    for bad in ["", "Attempts", "1st", "a-b", "a b", "a;drop", "t\u{e9}", &"a".repeat(MAX_TABLE_NAME + 1)] {
        assert!(matches!(Statements::new(bad), Err(SqlAttemptLogError::InvalidTable(_))), "{bad:?}");
    }
    for good in ["webhook_attempts", "_x", "a1", &"a".repeat(MAX_TABLE_NAME)] {
        assert!(Statements::new(good).is_ok(), "{good:?}");
    }
    let err = SqlAttemptLog::builder("sqlite::memory:").table("Bad").connect_lazy().unwrap_err();
    assert!(err.to_string().contains("\"Bad\""), "{err}");
}

#[test]
fn cursors_are_decimal_ids() {
    assert_eq!(parse_cursor("42").unwrap(), 42);
    for bad in ["", "-1", "+1", "1.5", "1 ", "0x10", "99999999999999999999", "9223372036854775808"] {
        assert!(matches!(parse_cursor(bad), Err(AttemptLogError::InvalidQuery(_))), "{bad:?}");
    }
}

#[test]
fn statements_use_the_dialects_placeholders() {
    let mut pg = Stmt::new(Dialect::Postgres, "SELECT 1");
    pg.filter("a = ").arg(Arg::Int(1)).filter("b = ").arg(Arg::Int(2));
    assert_eq!(pg.sql, "SELECT 1 WHERE a = $1 AND b = $2");
    let mut my = Stmt::new(Dialect::MySql, "SELECT 1");
    my.filter("a = ").arg(Arg::Int(1));
    assert_eq!(my.sql, "SELECT 1 WHERE a = ?");
    let mut lite = Stmt::new(Dialect::Sqlite, "SELECT 1");
    lite.filter("a = ").arg(Arg::Int(1));
    assert_eq!(lite.sql, "SELECT 1 WHERE a = ?", "anonymous: SQLite looks named ones up in a list");
}

#[test]
fn times_are_kept_in_the_range_of_the_database() {
    let far = DateTime::<Utc>::MAX_UTC;
    assert_eq!(storable_time(Dialect::Sqlite, far), far);
    assert_eq!(storable_time(Dialect::MySql, far).format("%Y").to_string(), "9999");
    assert_eq!(storable_time(Dialect::Postgres, DateTime::<Utc>::MIN_UTC).format("%Y").to_string(), "1000");
}

#[test]
fn mysql_refuses_ids_it_cannot_index() {
    let mut r = AttemptRecord::new("e", "n", "https://x.example/", Utc::now(), AttemptOutcome::Delivered);
    assert!(mysql_fits(&r).is_ok());
    r.owner_id = Some("é".repeat(MYSQL_MAX_ID_CHARS));
    assert!(mysql_fits(&r).is_ok(), "characters, not bytes");
    r.owner_id = Some("o".repeat(MYSQL_MAX_ID_CHARS + 1));
    assert!(matches!(mysql_fits(&r), Err(AttemptLogError::Invalid(m)) if m.contains("owner_id")));
}

#[cfg(feature = "sqlite")]
async fn sqlite_log(test: &str) -> SqlAttemptLog {
    let log = SqlAttemptLog::builder("sqlite::memory:").table(table(test)).connect().await.unwrap();
    log.init().await.unwrap();
    log.init().await.unwrap();
    log
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_init_creates_the_four_indexes() {
    let log = sqlite_log("indexes").await;
    let Pool::Sqlite(pool) = &log.pool else { panic!("not sqlite") };
    for (suffix, wanted) in [
        ("event_id", vec!["event_id", "id"]),
        ("subscription_id", vec!["subscription_id", "id"]),
        ("owner_id", vec!["owner_id", "id"]),
        ("started_at", vec!["started_at"]),
    ] {
        let sql = format!("SELECT name FROM pragma_index_info('{}_{suffix}') ORDER BY seqno", log.table());
        let columns: Vec<(Option<String>,)> = sqlx::query_as(AssertSqlSafe(sql)).fetch_all(pool).await.unwrap();
        // The rowid shows as a NULL name.
        let columns: Vec<&str> = columns.iter().map(|c| c.0.as_deref().unwrap_or("id")).collect();
        assert_eq!(columns, wanted, "{suffix}");
    }
}

/// The plan of every bounded statement searches an index: none scans the table.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_prunes_and_filtered_queries_search_an_index() {
    let log = sqlite_log("plans").await;
    let Pool::Sqlite(pool) = &log.pool else { panic!("not sqlite") };
    let t = log.table().to_owned();
    let mut owner = Stmt::new(Dialect::Sqlite, &log.sql.select);
    owner.filter("owner_id = ").arg(Arg::Text("o")).filter("id < ").arg(Arg::Int(9));
    owner.push(" ORDER BY id DESC LIMIT ").arg(Arg::Int(51));
    for (what, stmt, index) in [
        ("prune by age", log.older_than(Utc::now(), 1000), format!("{t}_started_at")),
        ("prune by count", log.up_to(1000, 1000), "INTEGER PRIMARY KEY".to_owned()),
        ("query by owner", owner, format!("{t}_owner_id")),
    ] {
        let explain = Stmt { sql: format!("EXPLAIN QUERY PLAN {}", stmt.sql), ..stmt };
        let plan: Vec<String> = {
            use sqlx::Row as _;
            let rows = sqlite::query(explain).fetch_all(pool).await.unwrap();
            rows.iter().map(|r| r.get::<String, _>(3)).collect()
        };
        assert!(plan.iter().any(|d| d.starts_with("SEARCH") && d.contains(&index)), "{what}: {plan:?}");
        assert!(!plan.iter().any(|d| d.starts_with("SCAN")), "{what} scans: {plan:?}");
    }
}

/// Rows the log did not write: each is `Corrupt`, never a panic.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_rows_that_do_not_decode_are_corrupt() {
    let log = sqlite_log("corrupt").await;
    let Pool::Sqlite(pool) = &log.pool else { panic!("not sqlite") };
    for (column, value) in [
        ("outcome", "'exploded'"),
        ("duration_ms", "-1"),
        ("status", "70000"),
        ("attempt", "-3"),
        ("attempt", "'many'"),
        ("started_at", "9223372036854775807"),
        ("response_body_truncated", "'maybe'"),
    ] {
        let sql = format!("DELETE FROM {}", log.table());
        sqlx::query(AssertSqlSafe(sql)).execute(pool).await.unwrap();
        let r = AttemptRecord::new("evt_1", "e", "https://x.example/", Utc::now(), AttemptOutcome::Delivered);
        log.record(&[r]).await.unwrap();
        let sql = format!("UPDATE {} SET {column} = {value}", log.table());
        sqlx::query(AssertSqlSafe(sql)).execute(pool).await.unwrap();
        match log.query(&AttemptQuery::new()).await {
            Err(AttemptLogError::Corrupt(why)) => assert!(!why.is_empty()),
            other => panic!("{column} = {value}: {other:?}"),
        }
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_missing_table_says_to_run_init() {
    let log = SqlAttemptLog::builder("sqlite::memory:").table(table("missing")).connect().await.unwrap();
    let err = log.query(&AttemptQuery::new()).await.unwrap_err();
    assert!(matches!(err, AttemptLogError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("did `SqlAttemptLog::init` run?"), "{err}");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_prunes_can_use_their_indexes() {
    let log = SqlAttemptLog::builder(env_url("FASTAPIHOOKS_TEST_POSTGRES_URL"))
        .table(table("plans"))
        .connect()
        .await
        .unwrap();
    log.init().await.unwrap();
    let Pool::Postgres(pool) = &log.pool else { panic!("not postgres") };
    let t = log.table().to_owned();
    for (what, stmt, index) in [
        ("prune by age", log.older_than(Utc::now(), 1000), format!("{t}_started_at")),
        ("prune by count", log.up_to(1000, 1000), format!("{t}_pkey")),
    ] {
        let mut tx = pool.begin().await.unwrap();
        // An empty table is cheapest to scan: ask whether an index plan exists.
        sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.unwrap();
        let explain = Stmt { sql: format!("EXPLAIN {}", stmt.sql), ..stmt };
        let rows = postgres::query(explain).fetch_all(&mut *tx).await.unwrap();
        let plan: Vec<String> = {
            use sqlx::Row as _;
            rows.iter().map(|r| r.get::<String, _>(0)).collect()
        };
        assert!(plan.iter().any(|l| l.contains(&index)), "{what}: {plan:#?}");
        assert!(!plan.iter().any(|l| l.contains("Seq Scan")), "{what}: {plan:#?}");
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_rows_that_do_not_decode_are_corrupt() {
    let log = SqlAttemptLog::builder(env_url("FASTAPIHOOKS_TEST_POSTGRES_URL"))
        .table(table("corrupt"))
        .connect()
        .await
        .unwrap();
    log.init().await.unwrap();
    let Pool::Postgres(pool) = &log.pool else { panic!("not postgres") };
    for (column, value) in [("outcome", "'exploded'"), ("duration_ms", "-1"), ("status", "70000"), ("attempt", "-3")] {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {}", log.table()))).execute(pool).await.unwrap();
        let r = AttemptRecord::new("evt_1", "e", "https://x.example/", Utc::now(), AttemptOutcome::Delivered);
        log.record(&[r]).await.unwrap();
        let sql = format!("UPDATE {} SET {column} = {value}", log.table());
        sqlx::query(AssertSqlSafe(sql)).execute(pool).await.unwrap();
        assert!(matches!(log.query(&AttemptQuery::new()).await, Err(AttemptLogError::Corrupt(_))), "{column}");
    }
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_rows_that_do_not_decode_are_corrupt() {
    let log =
        SqlAttemptLog::builder(env_url("FASTAPIHOOKS_TEST_MYSQL_URL")).table(table("corrupt")).connect().await.unwrap();
    log.init().await.unwrap();
    log.init().await.unwrap();
    let Pool::MySql(pool) = &log.pool else { panic!("not mysql") };
    for (column, value) in [("outcome", "'exploded'"), ("duration_ms", "-1"), ("status", "70000"), ("attempt", "-3")] {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {}", log.table()))).execute(pool).await.unwrap();
        let r = AttemptRecord::new("evt_1", "e", "https://x.example/", Utc::now(), AttemptOutcome::Delivered);
        log.record(&[r]).await.unwrap();
        let sql = format!("UPDATE {} SET {column} = {value}", log.table());
        sqlx::query(AssertSqlSafe(sql)).execute(pool).await.unwrap();
        assert!(matches!(log.query(&AttemptQuery::new()).await, Err(AttemptLogError::Corrupt(_))), "{column}");
    }
}
