//! The SQL and Redis attempt logs beyond the conformance suite: sharing a
//! store's pool, large batches, refused records, servers that are down, and
//! what the Redis log does with out-of-order records, forged entries and
//! rare filters.

#![allow(unused_imports)] // which ones are used depends on the features

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use fastapihooks::history::{AttemptLog, AttemptLogError, AttemptOutcome, AttemptQuery, AttemptRecord, Retention};

use super::store_util::{TempDb, closed_port};

fn record(event: &str, n: usize, started_at: chrono::DateTime<Utc>) -> AttemptRecord {
    let mut r = AttemptRecord::new(
        event,
        "order.created",
        format!("https://example.com/{n}"),
        started_at,
        AttemptOutcome::Retrying,
    );
    r.status = Some(503);
    r
}

fn unique(what: &str) -> String {
    format!("{what}_{}", fastapihooks::EventId::new().as_str().replace(['-', '_'], "").to_ascii_lowercase())
}

/// Every record of `query`, following `next`.
async fn all(log: &dyn AttemptLog, mut query: AttemptQuery) -> Vec<AttemptRecord> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let page = log.query(&query).await.expect("query");
        out.extend(page.records);
        match page.next {
            Some(next) => query = query.after(next),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

/// Times far outside what a database keeps (MySQL: the years 1000 to
/// 9999) are no error: a window from the dawn of time, a cutoff 5,000 years back.
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
async fn far_times_are_no_error(url: &str) {
    let log = fastapihooks::history::sql::SqlAttemptLog::builder(url)
        .table(unique("far").chars().take(40).collect::<String>())
        .connect()
        .await
        .expect("connect");
    log.init().await.expect("init");
    let event = unique("evt");
    let (first, last) = (chrono::DateTime::<Utc>::MIN_UTC, chrono::DateTime::<Utc>::MAX_UTC);
    let now = Utc::now();
    let batch = [
        record(&event, 0, first),
        record(&event, 1, now - TimeDelta::days(2)),
        record(&event, 2, now),
        record(&event, 3, last),
    ];
    log.record(&batch).await.expect("record");
    let window = AttemptQuery::new().event(&event).since(first).until(last);
    assert_eq!(all(&log, window).await.len(), 3, "all but the one at the end of time");
    // The oldest goes, or stays at the database's first instant: never an error.
    let ancient = Retention::default().max_age(Duration::from_secs(5000 * 365 * 86400));
    assert!(log.prune(&ancient, now).await.expect("prune") <= 1);
    assert_eq!(all(&log, AttemptQuery::new().event(&event).since(now - TimeDelta::days(3))).await.len(), 3);
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_far_times_are_no_error() {
    far_times_are_no_error(&super::store_util::postgres_url()).await;
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_far_times_are_no_error() {
    far_times_are_no_error(&super::store_util::mysql_url()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_far_times_are_no_error() {
    let file = TempDb::new();
    far_times_are_no_error(&file.url()).await;
}

#[cfg(feature = "sqlite")]
mod sql {
    use super::*;
    use fastapihooks::Store as _;
    use fastapihooks::history::sql::{SqlAttemptLog, SqlAttemptLogError};
    use fastapihooks::store::sql::SqlStore;

    #[tokio::test]
    async fn a_log_shares_its_stores_pool_and_database() {
        let file = TempDb::new();
        let store = SqlStore::connect(file.url()).await.expect("connect");
        store.init().await.expect("store init");
        let log = SqlAttemptLog::from_store(&store);
        assert_eq!(log.table(), "webhook_attempts");
        log.init().await.expect("init");
        log.init().await.expect("init is idempotent");
        let event = unique("evt");
        log.record(&[record(&event, 0, Utc::now())]).await.expect("record");
        // Another table of the same database, on the same pool.
        let other = log.clone().with_table("other_attempts").expect("valid name");
        other.init().await.expect("init other");
        assert!(all(&other, AttemptQuery::new()).await.is_empty());
        assert_eq!(all(&log, AttemptQuery::new().event(&event)).await.len(), 1);
        assert!(matches!(log.clone().with_table("no-dashes"), Err(SqlAttemptLogError::InvalidTable(_))));
        // The store still works beside it.
        assert!(store.list("order.created").await.expect("list").is_empty());
        store.close().await;
        assert!(matches!(log.query(&AttemptQuery::new()).await, Err(AttemptLogError::Unavailable(_))));
    }

    #[tokio::test]
    async fn a_batch_over_one_statement_is_written_whole_and_in_order() {
        let file = TempDb::new();
        let log = SqlAttemptLog::connect(file.url()).await.expect("connect");
        log.init().await.expect("init");
        let event = unique("evt");
        let start = Utc::now();
        // 1,234 rows: three INSERTs of at most 500, and bodies of 4 KiB.
        let batch: Vec<AttemptRecord> = (0..1234)
            .map(|n| {
                let mut r = record(&event, n, start + TimeDelta::milliseconds(n as i64));
                r.response.body = "b".repeat(4096);
                r
            })
            .collect();
        log.record(&batch).await.expect("record");
        let got = all(&log, AttemptQuery::new().event(&event).limit(1000)).await;
        let urls: Vec<String> = got.iter().map(|r| r.target_url.clone()).collect();
        let wanted: Vec<String> = (0..1234).rev().map(|n| format!("https://example.com/{n}")).collect();
        assert_eq!(urls, wanted);
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn a_down_database_is_unavailable_and_says_so(scheme: &str) {
    let url = format!("{scheme}://user@127.0.0.1:{}/db", closed_port());
    let log = fastapihooks::history::sql::SqlAttemptLog::builder(url)
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy()
        .expect("lazy");
    let results = [
        log.init().await,
        log.record(&[record("evt_1", 0, Utc::now())]).await,
        log.query(&AttemptQuery::new()).await.map(drop),
        log.prune(&Retention::default().max_count(1), Utc::now()).await.map(drop),
    ];
    for result in results {
        let err = result.expect_err("the database is down");
        assert!(matches!(err, AttemptLogError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("is the database up"), "{err}");
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_down_is_unavailable() {
    a_down_database_is_unavailable_and_says_so("postgres").await;
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_down_is_unavailable() {
    a_down_database_is_unavailable_and_says_so("mysql").await;
}

/// MySQL indexes ids and owners as `VARCHAR(512)`: a longer one is refused
/// before anything of the batch is written, not a batch that fails forever.
#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_refuses_an_owner_it_cannot_index_and_writes_nothing() {
    let log = fastapihooks::history::sql::SqlAttemptLog::builder(super::store_util::mysql_url())
        .table(unique("attempts").chars().take(40).collect::<String>())
        .connect()
        .await
        .expect("connect");
    log.init().await.expect("init");
    let event = unique("evt");
    let mut long = record(&event, 1, Utc::now());
    long.owner_id = Some("o".repeat(513));
    let err = log.record(&[record(&event, 0, Utc::now()), long]).await.expect_err("refused");
    assert!(matches!(err, AttemptLogError::Invalid(ref m) if m.contains("owner_id")), "{err:?}");
    assert!(all(&log, AttemptQuery::new().event(&event)).await.is_empty(), "part of a refused batch was written");
    let mut fits = record(&event, 2, Utc::now());
    fits.owner_id = Some("ö".repeat(512));
    log.record(&[fits.clone()]).await.expect("512 characters fit, whatever their bytes");
    assert_eq!(all(&log, AttemptQuery::new().owner("ö".repeat(512))).await.len(), 1);
}

#[cfg(feature = "redis")]
mod redis {
    use super::super::redis_util::{backend, connect, redis_or_skip, unique_key, xlen};
    use super::*;
    use fastapihooks::backend::RedisStreamsBackend;

    fn log(url: &str) -> (String, fastapihooks::backend::RedisAttemptLog) {
        let stream = unique_key("attempts");
        let log = backend(url, &stream).build().expect("backend").attempt_log();
        (stream, log)
    }

    #[tokio::test]
    async fn the_key_follows_the_stream_and_max_len_bounds_it() {
        let url = redis_or_skip!();
        let (stream, log) = log(&url);
        assert_eq!(log.key(), format!("{stream}:attempts"));
        let log = log.max_len(100);
        let start = Utc::now();
        for round in 0..10 {
            let batch: Vec<AttemptRecord> =
                (0..100).map(|n| record("evt_1", n, start + TimeDelta::milliseconds(round * 100 + n as i64))).collect();
            log.record(&batch).await.expect("record");
        }
        let len = xlen(&mut connect(&url).await, log.key()).await;
        // `MAXLEN ~` trims whole nodes (100 entries by default).
        assert!((100..=300).contains(&len), "{len} entries kept of 1,000, max_len 100");
    }

    /// A record written after a later-started one gets an id after it (ids
    /// grow in write order), and pruning by age never deletes it early.
    #[tokio::test]
    async fn late_records_keep_ids_growing_and_are_not_pruned_early() {
        let url = redis_or_skip!();
        let (_, log) = log(&url);
        let now = Utc::now();
        log.record(&[record("evt_1", 0, now)]).await.expect("record");
        log.record(&[record("evt_1", 1, now - TimeDelta::hours(2))]).await.expect("record");
        let got = all(&log, AttemptQuery::new()).await;
        let urls: Vec<&str> = got.iter().map(|r| r.target_url.as_str()).collect();
        assert_eq!(urls, ["https://example.com/1", "https://example.com/0"], "newest written first");
        let retention = Retention::default().max_age(Duration::from_secs(3600));
        assert_eq!(log.prune(&retention, now).await.expect("prune"), 0, "the late record went before its id's time");
        let since = all(&log, AttemptQuery::new().since(now - TimeDelta::hours(3))).await;
        assert_eq!(since.len(), 2, "since still finds the late record");
        let until = all(&log, AttemptQuery::new().until(now - TimeDelta::hours(1))).await;
        assert_eq!(until.len(), 1, "until finds the late record by its start time");
        assert_eq!(log.prune(&retention, now + TimeDelta::hours(2)).await.expect("prune"), 2);
    }

    /// Anyone who can write to Redis can add entries: those that are not
    /// records are skipped, the others still come back.
    #[tokio::test]
    async fn forged_entries_are_skipped() {
        let url = redis_or_skip!();
        let (_, log) = log(&url);
        let mut conn = connect(&url).await;
        let huge = format!("{{\"event_id\": \"{}\"}}", "x".repeat(70 << 10));
        for (field, value) in [
            ("other", "x"),
            ("attempt", "not json"),
            ("attempt", "{\"outcome\": \"exploded\"}"),
            ("attempt", huge.as_str()),
        ] {
            let _: String = ::redis::cmd("XADD")
                .arg(log.key())
                .arg("*")
                .arg(field)
                .arg(value)
                .query_async(&mut conn)
                .await
                .expect("XADD");
        }
        log.record(&[record("evt_ok", 0, Utc::now())]).await.expect("record");
        let got = all(&log, AttemptQuery::new()).await;
        assert_eq!(got.iter().map(|r| r.event_id.as_str()).collect::<Vec<_>>(), ["evt_ok"]);
    }

    /// A filter that matches rarely: each query reads at most MAX_SCAN
    /// entries, returns what matched and a cursor to go on.
    #[tokio::test]
    async fn a_rare_filter_reads_a_bounded_number_of_entries_per_query() {
        let url = redis_or_skip!();
        let (_, log) = log(&url);
        let start = Utc::now() - TimeDelta::hours(1);
        let batch: Vec<AttemptRecord> = (0..2600)
            .map(|n| {
                let mut r = record("evt_1", n, start + TimeDelta::milliseconds(n as i64));
                if [100, 1500, 2550].contains(&n) {
                    r.owner_id = Some("rare".into());
                }
                r
            })
            .collect();
        log.record(&batch).await.expect("record");
        let first = log.query(&AttemptQuery::new().owner("rare")).await.expect("query");
        let urls: Vec<&str> = first.records.iter().map(|r| r.target_url.as_str()).collect();
        // The newest 2,000 are entries 2599 down to 600.
        assert_eq!(urls, ["https://example.com/2550", "https://example.com/1500"]);
        let next = first.next.expect("the scan stopped early: a cursor to go on");
        let second = log.query(&AttemptQuery::new().owner("rare").after(next)).await.expect("query");
        assert_eq!(second.records.len(), 1);
        assert_eq!(second.records[0].target_url, "https://example.com/100");
        assert!(second.next.is_none());
        // Without a filter, pages over several reads of 500 lose nothing.
        let every = all(&log, AttemptQuery::new().limit(1000)).await;
        assert_eq!(every.len(), 2600);
    }

    #[tokio::test]
    async fn a_down_redis_is_unavailable() {
        let backend = RedisStreamsBackend::builder(format!("redis://127.0.0.1:{}/0", closed_port()))
            .connect_timeout(Duration::from_millis(300))
            .build()
            .expect("backend");
        let log = backend.attempt_log();
        let results = [
            log.record(&[record("evt_1", 0, Utc::now())]).await,
            log.query(&AttemptQuery::new()).await.map(drop),
            log.prune(&Retention::default(), Utc::now()).await.map(drop),
        ];
        for result in results {
            assert!(matches!(result, Err(AttemptLogError::Unavailable(_))), "{result:?}");
        }
    }
}
