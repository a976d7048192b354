//! The attempt log conformance suite, one test per check and log:
//! MemoryAttemptLog, SqlAttemptLog on a SQLite file, PostgreSQL and
//! MariaDB (each test a table of its own), and RedisAttemptLog (each test a
//! stream of its own). The servers come from `scripts/test.sh`.

use fastapihooks::history::conformance::{self, Check};
use fastapihooks::history::{AttemptLog, AttemptLogError, AttemptPage, AttemptQuery, AttemptRecord, Retention};

/// Adding a check to the suite must add a test for it below.
#[test]
fn every_check_has_a_test_below() {
    assert_eq!(Check::ALL.len(), 8, "add the new check to `suite!`");
}

#[tokio::test]
async fn run_reports_every_failing_check_by_name() {
    // A log that loses everything fails every check, and says which.
    let failures = conformance::run(&Forgetful).await.expect_err("a log that keeps nothing must fail");
    assert_eq!(failures.failures.len(), Check::ALL.len(), "{failures}");
    let text = failures.to_string();
    for check in Check::ALL {
        assert!(text.contains(check.name()), "{text}");
    }
}

/// Accepts every write, keeps nothing, takes any cursor.
struct Forgetful;

#[async_trait::async_trait]
impl AttemptLog for Forgetful {
    async fn record(&self, _: &[AttemptRecord]) -> Result<(), AttemptLogError> {
        Ok(())
    }
    async fn query(&self, _: &AttemptQuery) -> Result<AttemptPage, AttemptLogError> {
        Ok(AttemptPage::default())
    }
    async fn prune(&self, _: &Retention, _: chrono::DateTime<chrono::Utc>) -> Result<u64, AttemptLogError> {
        Ok(0)
    }
}

/// A log under test, and what must live as long as it (a temporary file).
pub struct TestLog<L> {
    log: L,
    _file: Option<super::store_util::TempDb>,
}

impl<L> std::ops::Deref for TestLog<L> {
    type Target = L;
    fn deref(&self) -> &L {
        &self.log
    }
}

/// A table name no other test uses.
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
fn unique_table() -> String {
    format!("attempts_{}", &fastapihooks::EventId::new().as_str().replace(['-', '_'], "")[8..])
        .to_ascii_lowercase()
        .chars()
        .take(40)
        .collect()
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
async fn sql(url: &str, file: Option<super::store_util::TempDb>) -> TestLog<fastapihooks::history::sql::SqlAttemptLog> {
    let log = fastapihooks::history::sql::SqlAttemptLog::builder(url)
        .table(unique_table())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    log.init().await.unwrap_or_else(|e| panic!("init: {e}"));
    TestLog { log, _file: file }
}

#[cfg(feature = "sqlite")]
pub async fn sqlite() -> TestLog<fastapihooks::history::sql::SqlAttemptLog> {
    let file = super::store_util::TempDb::new();
    let url = file.url();
    sql(&url, Some(file)).await
}

#[cfg(feature = "postgres")]
pub async fn postgres() -> TestLog<fastapihooks::history::sql::SqlAttemptLog> {
    sql(&super::store_util::postgres_url(), None).await
}

#[cfg(feature = "mysql")]
pub async fn mysql() -> TestLog<fastapihooks::history::sql::SqlAttemptLog> {
    sql(&super::store_util::mysql_url(), None).await
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            use fastapihooks::history::conformance::{Check, run_check};

            async fn check(check: Check) {
                let log = $make;
                if let Err(failure) = run_check(&*log, check).await {
                    panic!("{failure}");
                }
            }

            #[tokio::test]
            async fn whole_suite_passes() {
                let log = $make;
                if let Err(failures) = fastapihooks::history::conformance::run(&*log).await {
                    panic!("{failures}");
                }
            }
            #[tokio::test]
            async fn records_come_back_newest_first_with_ids() {
                check(Check::RecordsComeBackNewestFirstWithIds).await
            }
            #[tokio::test]
            async fn each_filter_alone_and_combined() {
                check(Check::EachFilterAloneAndCombined).await
            }
            #[tokio::test]
            async fn pagination_visits_every_record_once() {
                check(Check::PaginationVisitsEveryRecordOnce).await
            }
            #[tokio::test]
            async fn invalid_cursor_is_invalid_query() {
                check(Check::InvalidCursorIsInvalidQuery).await
            }
            #[tokio::test]
            async fn owner_filter_never_returns_another_owner() {
                check(Check::OwnerFilterNeverReturnsAnotherOwner).await
            }
            #[tokio::test]
            async fn response_details_round_trip() {
                check(Check::ResponseDetailsRoundTrip).await
            }
            #[tokio::test]
            async fn prune_by_age_deletes_exactly_the_older() {
                check(Check::PruneByAgeDeletesExactlyTheOlder).await
            }
            #[tokio::test]
            async fn prune_by_count_keeps_the_newest() {
                check(Check::PruneByCountKeepsTheNewest).await
            }
        }
    };
}

suite!(memory, TestLog { log: fastapihooks::history::MemoryAttemptLog::default(), _file: None });
#[cfg(feature = "sqlite")]
suite!(sqlite_file, sqlite().await);
#[cfg(feature = "postgres")]
suite!(postgres, postgres().await);
#[cfg(feature = "mysql")]
suite!(mysql, mysql().await);
#[cfg(feature = "redis")]
suite!(redis, {
    let url = super::super::redis_util::redis_or_skip!();
    let stream = super::super::redis_util::unique_key("attempts");
    let backend = super::super::redis_util::backend(&url, &stream).build().expect("backend");
    TestLog { log: backend.attempt_log(), _file: None }
});
