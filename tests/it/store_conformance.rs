//! The public conformance suite, one test per check and store: MemoryStore,
//! CachedStore, and SqlStore on SQLite (file and memory), PostgreSQL and
//! MariaDB. The SQL servers come from `scripts/test.sh`.

use fastapihooks::store::conformance::{self, Check};

/// Adding a check to the suite must add a test for it below.
#[test]
fn every_check_has_a_test_below() {
    assert_eq!(Check::ALL.len(), 19, "add the new check to `suite!`");
}

#[tokio::test]
async fn run_reports_every_failing_check_by_name() {
    // A store that refuses everything fails every check, and says which.
    let failures = conformance::run(&Broken).await.expect_err("a broken store must fail");
    assert_eq!(failures.failures.len(), Check::ALL.len());
    let text = failures.to_string();
    for check in Check::ALL {
        assert!(text.contains(check.name()), "{text}");
    }
}

struct Broken;

#[async_trait::async_trait]
impl fastapihooks::Store for Broken {
    async fn add(&self, _: &str, _: fastapihooks::WebhookSubscription) -> Result<String, fastapihooks::StoreError> {
        Err(fastapihooks::StoreError::Corrupt("broken".into()))
    }
    async fn remove(&self, _: &str) -> Result<bool, fastapihooks::StoreError> {
        Ok(true)
    }
    async fn get(&self, _: &str) -> Result<Option<fastapihooks::StoredWebhookSubscription>, fastapihooks::StoreError> {
        Err(fastapihooks::StoreError::Corrupt("broken".into()))
    }
    async fn list(&self, _: &str) -> Result<Vec<fastapihooks::StoredWebhookSubscription>, fastapihooks::StoreError> {
        Err(fastapihooks::StoreError::Corrupt("broken".into()))
    }
    async fn update(&self, _: &str, _: fastapihooks::SubscriptionUpdate) -> Result<bool, fastapihooks::StoreError> {
        Ok(true)
    }
    async fn set_disabled(
        &self,
        _: &str,
        _: Option<fastapihooks::health::Disabled>,
    ) -> Result<bool, fastapihooks::StoreError> {
        Ok(true)
    }
    async fn record_health(
        &self,
        _: &str,
        _: &fastapihooks::health::EndpointHealth,
    ) -> Result<bool, fastapihooks::StoreError> {
        Ok(true)
    }
    async fn list_all(
        &self,
        _: Option<&str>,
    ) -> Result<Vec<fastapihooks::StoredWebhookSubscription>, fastapihooks::StoreError> {
        Err(fastapihooks::StoreError::Corrupt("broken".into()))
    }
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::super::store_util::{self, TestStore};
            use fastapihooks::store::conformance::{Check, run_check};
            #[allow(unused_imports)]
            use fastapihooks::{MemoryStore, store::CachedStore};

            async fn check(check: Check) {
                let store = $make;
                if let Err(failure) = run_check(&*store, check).await {
                    panic!("{failure}");
                }
            }

            #[tokio::test]
            async fn whole_suite_passes() {
                let store = $make;
                if let Err(failures) = fastapihooks::store::conformance::run(&*store).await {
                    panic!("{failures}");
                }
            }
            #[tokio::test]
            async fn add_then_get_returns_every_field() {
                check(Check::AddThenGetReturnsEveryField).await
            }
            #[tokio::test]
            async fn add_returns_distinct_ids() {
                check(Check::AddReturnsDistinctIds).await
            }
            #[tokio::test]
            async fn add_refuses_invalid_target_url_before_writing() {
                check(Check::AddRefusesInvalidTargetUrlBeforeWriting).await
            }
            #[tokio::test]
            async fn add_refuses_invalid_event_name_and_empty_bearer() {
                check(Check::AddRefusesInvalidEventNameAndEmptyBearer).await
            }
            #[tokio::test]
            async fn remove_returns_true_if_it_existed() {
                check(Check::RemoveReturnsTrueIfItExisted).await
            }
            #[tokio::test]
            async fn unknown_id_is_not_an_error() {
                check(Check::UnknownIdIsNotAnError).await
            }
            #[tokio::test]
            async fn list_filters_by_event_name() {
                check(Check::ListFiltersByEventName).await
            }
            #[tokio::test]
            async fn hint_is_never_falsely_negative() {
                check(Check::HintIsNeverFalselyNegative).await
            }
            #[tokio::test]
            async fn update_is_partial() {
                check(Check::UpdateIsPartial).await
            }
            #[tokio::test]
            async fn update_merges_metadata() {
                check(Check::UpdateMergesMetadata).await
            }
            #[tokio::test]
            async fn update_refuses_invalid_target_url() {
                check(Check::UpdateRefusesInvalidTargetUrl).await
            }
            #[tokio::test]
            async fn subscriptions_for_scopes_by_owner() {
                check(Check::SubscriptionsForScopesByOwner).await
            }
            #[tokio::test]
            async fn lookups_see_writes_at_once() {
                check(Check::LookupsSeeWritesAtOnce).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_metadata_updates_lose_no_key() {
                check(Check::ConcurrentMetadataUpdatesLoseNoKey).await
            }
            #[tokio::test]
            async fn text_round_trips_exactly() {
                check(Check::TextRoundTripsExactly).await
            }
            #[tokio::test]
            async fn disable_then_enable_round_trips() {
                check(Check::DisableThenEnableRoundTrips).await
            }
            #[tokio::test]
            async fn enabling_clears_health() {
                check(Check::EnablingClearsHealth).await
            }
            #[tokio::test]
            async fn record_health_round_trips() {
                check(Check::RecordHealthRoundTrips).await
            }
            #[tokio::test]
            async fn list_all_scopes_by_owner() {
                check(Check::ListAllScopesByOwner).await
            }
        }
    };
}

suite!(memory, TestStore::plain(MemoryStore::new()));
suite!(cached_memory, TestStore::plain(CachedStore::new(MemoryStore::new())));
#[cfg(feature = "sqlite")]
suite!(sqlite_file, store_util::sql::sqlite().await);
#[cfg(feature = "sqlite")]
suite!(sqlite_memory, {
    let store = fastapihooks::store::sql::SqlStore::connect("sqlite::memory:").await.expect("connect");
    store.init().await.expect("init");
    TestStore::plain(store)
});
#[cfg(feature = "sqlite")]
suite!(cached_sqlite, store_util::sql::sqlite().await.map(CachedStore::new));
#[cfg(feature = "postgres")]
suite!(postgres, store_util::sql::postgres().await);
#[cfg(feature = "postgres")]
suite!(cached_postgres, store_util::sql::postgres().await.map(CachedStore::new));
#[cfg(feature = "mysql")]
suite!(mysql, store_util::sql::mysql().await);
