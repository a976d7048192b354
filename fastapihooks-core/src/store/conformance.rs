//! The checks every [`Store`] must pass: run them against your own store
//! (MongoDB, DynamoDB, ...) from its tests. Feature `conformance`.
//!
//! ```
//! use fastapihooks_core::MemoryStore;
//! use fastapihooks_core::store::conformance;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::new();
//! if let Err(failures) = conformance::run(&store).await {
//!     panic!("{failures}");
//! }
//! # }
//! ```
//!
//! Each [`Check`] works on event names of its own (`conformance.<check>.<random>`)
//! and removes what it added, so the suite can run against a shared,
//! non-empty database, repeatedly. [`run_check`] runs one check, for a test
//! per check. Every look-up a check makes asks both
//! [`Store::subscriptions_for`] and [`Store::shared_subscriptions_for`], and
//! fails unless they agree.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value, json};

use super::{Store, StoreError};
use crate::health::{Disabled, EndpointHealth};
use crate::secret::{Secret, SigningSecret};
use crate::subscription::{Auth, StoredWebhookSubscription, SubscriptionUpdate, WebhookSubscription};

macro_rules! checks {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// One behaviour every store must have.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Check {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Check {
            /// Every check, in the order [`run`] runs them.
            pub const ALL: &'static [Check] = &[$(Check::$variant,)*];

            /// The check's name, in snake case (a test name).
            pub fn name(self) -> &'static str {
                match self {
                    $(Check::$variant => $name,)*
                }
            }
        }
    };
}

checks! {
    /// `add` returns an id; `get` returns every field as written: event
    /// name, target URL, auth type and value, metadata, owner, secrets, and
    /// times with `created_at <= updated_at`.
    AddThenGetReturnsEveryField => "add_then_get_returns_every_field",
    /// Each `add` returns a new id.
    AddReturnsDistinctIds => "add_returns_distinct_ids",
    /// An invalid target URL is refused with `StoreError::Invalid`, and
    /// nothing is written.
    AddRefusesInvalidTargetUrlBeforeWriting => "add_refuses_invalid_target_url_before_writing",
    /// An invalid event name, or bearer auth without a token, is refused
    /// with `StoreError::Invalid`.
    AddRefusesInvalidEventNameAndEmptyBearer => "add_refuses_invalid_event_name_and_empty_bearer",
    /// `remove` returns `true` when the subscription existed, then `false`;
    /// it is gone from `get`, `list` and `subscriptions_for`.
    RemoveReturnsTrueIfItExisted => "remove_returns_true_if_it_existed",
    /// An unknown id is not an error: `get` gives `None`; `remove`,
    /// `update`, `set_disabled` (either way) and `record_health` give
    /// `false` and create nothing (ids with quotes, or 300 characters long,
    /// included).
    UnknownIdIsNotAnError => "unknown_id_is_not_an_error",
    /// `list` returns exactly the subscriptions of its event name
    /// (case-sensitive), whatever their owner.
    ListFiltersByEventName => "list_filters_by_event_name",
    /// `update` changes only what it names, keeps `created_at`, returns
    /// `true`, and does not move `updated_at` back.
    UpdateIsPartial => "update_is_partial",
    /// `update` merges metadata key by key: other keys stay, named keys are
    /// replaced, `null` is kept as `null`.
    UpdateMergesMetadata => "update_merges_metadata",
    /// `update` with an invalid target URL is refused and changes nothing.
    UpdateRefusesInvalidTargetUrl => "update_refuses_invalid_target_url",
    /// `subscriptions_for(event, Some(x))` returns owner `x`'s and the
    /// ownerless subscriptions; `None` only the ownerless ones; owners are
    /// compared exactly (case and trailing spaces matter).
    SubscriptionsForScopesByOwner => "subscriptions_for_scopes_by_owner",
    /// Writes are seen by the next look-up (`subscriptions_for`) at once:
    /// an add, an owner change, a removal.
    LookupsSeeWritesAtOnce => "lookups_see_writes_at_once",
    /// 50 concurrent partial metadata updates to one subscription lose none
    /// of their keys.
    ConcurrentMetadataUpdatesLoseNoKey => "concurrent_metadata_updates_lose_no_key",
    /// `has_subscriptions_hint` never says "none" (`Some(false)`) for an
    /// event that has a subscription, whatever its owner; a store that
    /// answers `Some(..)` follows adds and removals at once.
    HintIsNeverFalselyNegative => "hint_is_never_falsely_negative",
    /// Text round-trips byte for byte: quotes, backslashes, non-ASCII,
    /// SQL-looking strings and a 300-character owner, in the URL, owner,
    /// token and metadata.
    TextRoundTripsExactly => "text_round_trips_exactly",
    /// `set_disabled(id, Some(..))` gives `true` (twice too) and is seen at
    /// once by `get`, `list`, `list_all` and `subscriptions_for`, which
    /// still return the subscription, with `disabled` as written (its time
    /// to the millisecond, its reason byte for byte) and every other field
    /// as it was; `set_disabled(id, None)` enables it again, seen by all
    /// four. The other subscriptions stay enabled.
    DisableThenEnableRoundTrips => "disable_then_enable_round_trips",
    /// Disabling keeps the health; enabling resets it to the default.
    EnablingClearsHealth => "enabling_clears_health",
    /// `record_health` gives `true` (twice too) and round-trips every field
    /// (counts up to `u32::MAX`, times to the millisecond), seen by `get`,
    /// `list` and `list_all`; it changes nothing else: not `updated_at`,
    /// not the enabled state. (Look-ups may serve health from a cache.)
    RecordHealthRoundTrips => "record_health_round_trips",
    /// `list_all(Some(x))` returns exactly owner `x`'s subscriptions, of
    /// every event name: not the ownerless ones, not another owner's, owners
    /// compared exactly (case and trailing spaces matter); `list_all(None)`
    /// returns every subscription; both in increasing id order.
    ListAllScopesByOwner => "list_all_scopes_by_owner",
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A check that failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {message}")]
#[non_exhaustive]
pub struct CheckFailure {
    /// The check.
    pub check: Check,
    /// What was wrong.
    pub message: String,
}

/// Every check that failed in [`run`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ConformanceFailures {
    /// The failures, in check order.
    pub failures: Vec<CheckFailure>,
}

impl fmt::Display for ConformanceFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} store conformance check(s) failed:", self.failures.len())?;
        for failure in &self.failures {
            write!(f, "\n  - {failure}")?;
        }
        Ok(())
    }
}

/// Runs every [`Check`] against `store`, one after the other.
///
/// # Errors
/// The checks that failed (the others still run).
pub async fn run<S: Store + ?Sized>(store: &S) -> Result<(), ConformanceFailures> {
    let mut failures = Vec::new();
    for &check in Check::ALL {
        if let Err(failure) = run_check(store, check).await {
            failures.push(failure);
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(ConformanceFailures { failures }) }
}

/// Runs one check against `store`.
///
/// # Errors
/// What the store did wrong (or a store error where none was expected).
pub async fn run_check<S: Store + ?Sized>(store: &S, check: Check) -> Result<(), CheckFailure> {
    let mut cx = Cx { store, check, added: Vec::new(), tag: uuid::Uuid::now_v7().simple().to_string() };
    let result = cx.run().await;
    // Best effort: leave nothing behind.
    for id in std::mem::take(&mut cx.added) {
        let _ = store.remove(&id).await;
    }
    result.map_err(|message| CheckFailure { check, message })
}

type Outcome = Result<(), String>;

/// Fails the check with a message unless `$cond`.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

struct Cx<'a, S: ?Sized> {
    store: &'a S,
    check: Check,
    added: Vec<String>,
    tag: String,
}

fn sub(url: &str) -> WebhookSubscription {
    WebhookSubscription {
        target_url: url.to_owned(),
        auth: Auth::None,
        metadata: Map::new(),
        owner_id: None,
        secrets: Vec::new(),
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn ids(subs: &[StoredWebhookSubscription]) -> BTreeSet<&str> {
    subs.iter().map(|s| s.id.as_str()).collect()
}

fn set<'s>(items: &[&'s str]) -> BTreeSet<&'s str> {
    items.iter().copied().collect()
}

fn store_err(op: &str, e: StoreError) -> String {
    format!("{op} failed: {e}")
}

/// Now, to the millisecond: times every store keeps exactly.
fn now_ms() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// `Ok(false)` as `op` on the unknown id `id` must give.
fn unknown(op: &str, id: &str, result: Result<bool, StoreError>) -> Outcome {
    match result {
        Ok(false) => Ok(()),
        Ok(true) => Err(format!("{op}({id:?}) of an unknown id gave true")),
        Err(e) => Err(format!("{op}({id:?}) failed: {e}")),
    }
}

fn is_sorted_by_id(subs: &[StoredWebhookSubscription]) -> bool {
    subs.windows(2).all(|pair| pair[0].id < pair[1].id)
}

/// A health with every field set.
fn failing_health(failures: u32, given_up: u32) -> EndpointHealth {
    let now = now_ms();
    EndpointHealth {
        consecutive_failures: failures,
        failing_since: Some(now - chrono::Duration::days(2)),
        last_success: Some(now - chrono::Duration::days(3)),
        given_up,
    }
}

impl<S: Store + ?Sized> Cx<'_, S> {
    /// An event name of this check and run.
    fn event(&self, suffix: &str) -> String {
        format!("conformance.{}.{}{suffix}", self.check.name(), self.tag)
    }

    async fn add(&mut self, event: &str, sub: WebhookSubscription) -> Result<String, String> {
        let id = self.store.add(event, sub).await.map_err(|e| store_err("add", e))?;
        self.added.push(id.clone());
        Ok(id)
    }

    async fn get(&self, id: &str) -> Result<StoredWebhookSubscription, String> {
        self.store
            .get(id)
            .await
            .map_err(|e| store_err("get", e))?
            .ok_or_else(|| format!("get({id}) gave None after add"))
    }

    /// `subscriptions_for`, checked against `shared_subscriptions_for`
    /// (which the dispatcher calls): every look-up of every check must give
    /// the same subscriptions, in the same order, from both.
    async fn lookup(&self, event: &str, owner: Option<&str>) -> Result<Vec<StoredWebhookSubscription>, String> {
        let copied = self.store.subscriptions_for(event, owner).await.map_err(|e| store_err("subscriptions_for", e))?;
        let shared = self
            .store
            .shared_subscriptions_for(event, owner)
            .await
            .map_err(|e| store_err("shared_subscriptions_for", e))?;
        ensure!(
            shared.len() == copied.len() && shared.iter().zip(&copied).all(|(s, c)| **s == *c),
            "shared_subscriptions_for({event}, {owner:?}) gave {:?}, subscriptions_for gave {:?}",
            shared.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            copied.iter().map(|s| s.id.as_str()).collect::<Vec<_>>()
        );
        Ok(copied)
    }

    async fn list(&self, event: &str) -> Result<Vec<StoredWebhookSubscription>, String> {
        self.store.list(event).await.map_err(|e| store_err("list", e))
    }

    /// An owner of this check and run.
    fn owner(&self, name: &str) -> String {
        format!("conformance-{}-{name}", self.tag)
    }

    async fn list_all(&self, owner: Option<&str>) -> Result<Vec<StoredWebhookSubscription>, String> {
        let subs = self.store.list_all(owner).await.map_err(|e| store_err("list_all", e))?;
        ensure!(is_sorted_by_id(&subs), "list_all({owner:?}) is not in increasing id order");
        Ok(subs)
    }

    async fn set_disabled(&self, id: &str, disabled: Option<Disabled>) -> Result<bool, String> {
        self.store.set_disabled(id, disabled).await.map_err(|e| store_err("set_disabled", e))
    }

    async fn record_health(&self, id: &str, health: &EndpointHealth) -> Result<bool, String> {
        self.store.record_health(id, health).await.map_err(|e| store_err("record_health", e))
    }

    /// Subscription `id` (of `event` and `owner`) as each read path returns
    /// it: `get`, `list`, `list_all` without and with its owner, and
    /// `subscriptions_for`.
    async fn everywhere(
        &self,
        id: &str,
        event: &str,
        owner: &str,
    ) -> Result<Vec<(&'static str, StoredWebhookSubscription)>, String> {
        let find = |path: &'static str, subs: Vec<StoredWebhookSubscription>| {
            subs.into_iter()
                .find(|s| s.id == id)
                .map(|s| (path, s))
                .ok_or_else(|| format!("{path} did not return {id}"))
        };
        Ok(vec![
            ("get", self.get(id).await?),
            find("list", self.list(event).await?)?,
            find("list_all(None)", self.list_all(None).await?)?,
            find("list_all(owner)", self.list_all(Some(owner)).await?)?,
            find("subscriptions_for", self.lookup(event, Some(owner)).await?)?,
        ])
    }

    async fn run(&mut self) -> Outcome {
        match self.check {
            Check::AddThenGetReturnsEveryField => self.add_then_get().await,
            Check::AddReturnsDistinctIds => self.distinct_ids().await,
            Check::AddRefusesInvalidTargetUrlBeforeWriting => self.refuses_bad_url().await,
            Check::AddRefusesInvalidEventNameAndEmptyBearer => self.refuses_bad_event_and_bearer().await,
            Check::RemoveReturnsTrueIfItExisted => self.remove().await,
            Check::UnknownIdIsNotAnError => self.unknown_id().await,
            Check::ListFiltersByEventName => self.list_filters().await,
            Check::HintIsNeverFalselyNegative => self.hint().await,
            Check::UpdateIsPartial => self.update_partial().await,
            Check::UpdateMergesMetadata => self.update_merges().await,
            Check::UpdateRefusesInvalidTargetUrl => self.update_refuses_bad_url().await,
            Check::SubscriptionsForScopesByOwner => self.owner_scoping().await,
            Check::LookupsSeeWritesAtOnce => self.lookups_see_writes().await,
            Check::ConcurrentMetadataUpdatesLoseNoKey => self.concurrent_updates().await,
            Check::TextRoundTripsExactly => self.text_round_trips().await,
            Check::DisableThenEnableRoundTrips => self.disable_then_enable().await,
            Check::EnablingClearsHealth => self.enabling_clears_health().await,
            Check::RecordHealthRoundTrips => self.record_health_round_trips().await,
            Check::ListAllScopesByOwner => self.list_all_scoping().await,
        }
    }

    async fn add_then_get(&mut self) -> Outcome {
        let event = self.event("");
        let mut wanted = sub("https://hooks.example.com/orders?v=2").bearer("tok_123");
        wanted.metadata = object(json!({"plan": "pro", "n": 3, "nested": {"a": [1, 2.5, null, true]}}));
        wanted.owner_id = Some("tenant-1".into());
        wanted.secrets = vec![SigningSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")];
        let id = self.add(&event, wanted.clone()).await?;
        ensure!(!id.is_empty(), "add returned an empty id");
        let got = self.get(&id).await?;
        ensure!(got.id == id, "get returned id {} for {id}", got.id);
        ensure!(got.event_name == event, "event_name: got {:?}, wanted {event:?}", got.event_name);
        ensure!(*got.subscription == wanted, "subscription: got {:?}, wanted {wanted:?}", got.subscription);
        // `PartialEq` on `Secret` is constant-time over the value; check the
        // bearer token and secrets explicitly for a clear message.
        ensure!(got.auth.auth_value().map(Secret::expose) == Some("tok_123"), "the bearer token did not round-trip");
        ensure!(got.secrets.len() == 1, "secrets: got {} wanted 1", got.secrets.len());
        ensure!(got.created_at <= got.updated_at, "created_at {} after updated_at {}", got.created_at, got.updated_at);
        let age = chrono::Utc::now() - got.created_at;
        ensure!(age.num_seconds().abs() < 300, "created_at {} is not now", got.created_at);
        Ok(())
    }

    async fn distinct_ids(&mut self) -> Outcome {
        let event = self.event("");
        let mut seen = BTreeSet::new();
        for _ in 0..5 {
            let id = self.add(&event, sub("https://example.com/h")).await?;
            ensure!(seen.insert(id.clone()), "add returned id {id} twice");
        }
        let listed = self.list(&event).await?;
        ensure!(listed.len() == 5, "list after 5 adds of the same URL gave {}", listed.len());
        Ok(())
    }

    async fn refuses_bad_url(&mut self) -> Outcome {
        let event = self.event("");
        for bad in
            ["not a url", "ftp://example.com/h", "https://user:pass@example.com/h", "http://", "file:///etc/passwd"]
        {
            match self.store.add(&event, sub(bad)).await {
                Err(StoreError::Invalid(_)) => {}
                Err(e) => return Err(format!("add({bad:?}) failed with {e}, not StoreError::Invalid")),
                Ok(id) => {
                    self.added.push(id);
                    return Err(format!("add accepted the invalid target url {bad:?}"));
                }
            }
        }
        let listed = self.list(&event).await?;
        ensure!(listed.is_empty(), "refused adds wrote {} subscription(s)", listed.len());
        Ok(())
    }

    async fn refuses_bad_event_and_bearer(&mut self) -> Outcome {
        let long = "a".repeat(129);
        for bad in ["", "order created", "order/created", "ordér", long.as_str()] {
            match self.store.add(bad, sub("https://example.com/h")).await {
                Err(StoreError::Invalid(_)) => {}
                Err(e) => return Err(format!("add to event {bad:?} failed with {e}, not StoreError::Invalid")),
                Ok(id) => {
                    self.added.push(id);
                    return Err(format!("add accepted the invalid event name {bad:?}"));
                }
            }
        }
        let event = self.event("");
        match self.store.add(&event, sub("https://example.com/h").auth(Auth::Bearer(Secret::new("")))).await {
            Err(StoreError::Invalid(_)) => {}
            Err(e) => return Err(format!("bearer without token failed with {e}, not StoreError::Invalid")),
            Ok(id) => {
                self.added.push(id);
                return Err("add accepted bearer auth without a token".into());
            }
        }
        ensure!(self.list(&event).await?.is_empty(), "a refused add wrote a subscription");
        Ok(())
    }

    async fn remove(&mut self) -> Outcome {
        let event = self.event("");
        let id = self.add(&event, sub("https://example.com/h")).await?;
        let keep = self.add(&event, sub("https://example.com/keep")).await?;
        ensure!(
            self.store.remove(&id).await.map_err(|e| store_err("remove", e))?,
            "remove of an existing id gave false"
        );
        ensure!(self.store.get(&id).await.map_err(|e| store_err("get", e))?.is_none(), "get after remove gave Some");
        ensure!(!self.store.remove(&id).await.map_err(|e| store_err("remove", e))?, "second remove gave true");
        ensure!(ids(&self.list(&event).await?) == set(&[&keep]), "list after remove is wrong");
        ensure!(ids(&self.lookup(&event, None).await?) == set(&[&keep]), "subscriptions_for after remove is wrong");
        Ok(())
    }

    async fn unknown_id(&mut self) -> Outcome {
        let long = format!("sub_{}", "f".repeat(300));
        for id in [
            "sub_0000000000000000000000000000dead",
            "",
            "' OR '1'='1",
            "x\"; DROP TABLE webhook_subscriptions; --",
            &long,
        ] {
            match self.store.get(id).await {
                Ok(None) => {}
                Ok(Some(_)) => return Err(format!("get({id:?}) found something")),
                Err(e) => return Err(format!("get({id:?}) failed: {e}")),
            }
            match self.store.remove(id).await {
                Ok(false) => {}
                Ok(true) => return Err(format!("remove({id:?}) gave true")),
                Err(e) => return Err(format!("remove({id:?}) failed: {e}")),
            }
            let update = SubscriptionUpdate::new().merge_metadata(object(json!({"k": 1})));
            match self.store.update(id, update).await {
                Ok(false) => {}
                Ok(true) => return Err(format!("update({id:?}) gave true")),
                Err(e) => return Err(format!("update({id:?}) failed: {e}")),
            }
            let disabled = Disabled { at: now_ms(), reason: "conformance".into() };
            unknown("set_disabled(Some)", id, self.store.set_disabled(id, Some(disabled)).await)?;
            unknown("set_disabled(None)", id, self.store.set_disabled(id, None).await)?;
            unknown("record_health", id, self.store.record_health(id, &failing_health(3, 1)).await)?;
            match self.store.get(id).await {
                Ok(None) => {}
                Ok(Some(_)) => return Err(format!("set_disabled or record_health of {id:?} created it")),
                Err(e) => return Err(format!("get({id:?}) failed: {e}")),
            }
        }
        Ok(())
    }

    async fn list_filters(&mut self) -> Outcome {
        let (a, b, upper) = (self.event(".a"), self.event(".b"), self.event(".A"));
        let a1 = self.add(&a, sub("https://example.com/1")).await?;
        let a2 = self.add(&a, sub("https://example.com/2").owner("someone")).await?;
        let b1 = self.add(&b, sub("https://example.com/3")).await?;
        let u1 = self.add(&upper, sub("https://example.com/4")).await?;
        ensure!(ids(&self.list(&a).await?) == set(&[&a1, &a2]), "list({a}) is wrong");
        ensure!(ids(&self.list(&b).await?) == set(&[&b1]), "list({b}) is wrong");
        ensure!(
            ids(&self.list(&upper).await?) == set(&[&u1]),
            "list({upper}) is wrong: event names are case-sensitive"
        );
        ensure!(
            self.list(&self.event(".none")).await?.is_empty(),
            "list of an event with no subscription is not empty"
        );
        Ok(())
    }

    async fn update_partial(&mut self) -> Outcome {
        let event = self.event("");
        let mut original = sub("https://example.com/old").bearer("tok");
        original.metadata = object(json!({"a": 1}));
        original.owner_id = Some("owner".into());
        original.secrets = vec![SigningSecret::new("whsec_c2VjcmV0")];
        let id = self.add(&event, original.clone()).await?;
        let before = self.get(&id).await?;

        let update = SubscriptionUpdate::new().target_url("https://example.com/new");
        ensure!(self.store.update(&id, update).await.map_err(|e| store_err("update", e))?, "update gave false");
        let after = self.get(&id).await?;
        let mut wanted = original.clone();
        wanted.target_url = "https://example.com/new".into();
        ensure!(
            *after.subscription == wanted,
            "after a target_url update: got {:?}, wanted {wanted:?}",
            after.subscription
        );
        ensure!(after.created_at == before.created_at, "update changed created_at");
        ensure!(after.updated_at >= before.updated_at, "update moved updated_at back");
        ensure!(after.event_name == event, "update changed the event name");

        let update = SubscriptionUpdate::new().auth(Auth::None).owner_id(None);
        ensure!(self.store.update(&id, update).await.map_err(|e| store_err("update", e))?, "update gave false");
        let after = self.get(&id).await?;
        ensure!(after.auth == Auth::None, "auth was not changed to none");
        ensure!(after.owner_id.is_none(), "owner was not cleared");
        ensure!(after.metadata == original.metadata, "metadata changed though the update did not name it");
        ensure!(after.secrets == original.secrets, "secrets changed though the update did not name them");
        Ok(())
    }

    async fn update_merges(&mut self) -> Outcome {
        let event = self.event("");
        let start = object(json!({"a": 1, "b": {"x": 1}, "keep": "me"}));
        let id = self.add(&event, sub("https://example.com/h").metadata(start)).await?;
        let update = SubscriptionUpdate::new().merge_metadata(object(json!({"b": 2, "c": null, "d": [1]})));
        ensure!(self.store.update(&id, update).await.map_err(|e| store_err("update", e))?, "update gave false");
        let got = Value::Object(self.get(&id).await?.metadata.clone());
        let wanted = json!({"a": 1, "b": 2, "c": null, "d": [1], "keep": "me"});
        ensure!(got == wanted, "metadata after merge: got {got}, wanted {wanted}");
        Ok(())
    }

    async fn update_refuses_bad_url(&mut self) -> Outcome {
        let event = self.event("");
        let id = self.add(&event, sub("https://example.com/h")).await?;
        let before = self.get(&id).await?;
        let update =
            SubscriptionUpdate::new().target_url("gopher://example.com").merge_metadata(object(json!({"k": 1})));
        match self.store.update(&id, update).await {
            Err(StoreError::Invalid(_)) => {}
            Err(e) => return Err(format!("update to a bad url failed with {e}, not StoreError::Invalid")),
            Ok(changed) => return Err(format!("update accepted a bad url (returned {changed})")),
        }
        let after = self.get(&id).await?;
        ensure!(after == before, "a refused update changed the subscription: {after:?}");
        Ok(())
    }

    async fn owner_scoping(&mut self) -> Outcome {
        let event = self.event("");
        let open = self.add(&event, sub("https://example.com/open")).await?;
        let acme = self.add(&event, sub("https://example.com/acme").owner("acme")).await?;
        let upper = self.add(&event, sub("https://example.com/Acme").owner("Acme")).await?;
        let spaced = self.add(&event, sub("https://example.com/acme-sp").owner("acme ")).await?;
        let globex = self.add(&event, sub("https://example.com/globex").owner("globex")).await?;
        let other_event = self.event(".other");
        self.add(&other_event, sub("https://example.com/acme2").owner("acme")).await?;

        let cases: [(Option<&str>, BTreeSet<&str>); 6] = [
            (Some("acme"), set(&[&open, &acme])),
            (Some("Acme"), set(&[&open, &upper])),
            (Some("acme "), set(&[&open, &spaced])),
            (Some("globex"), set(&[&open, &globex])),
            (Some("initech"), set(&[&open])),
            (None, set(&[&open])),
        ];
        for (owner, wanted) in cases {
            let got = self.lookup(&event, owner).await?;
            ensure!(
                ids(&got) == wanted,
                "subscriptions_for({event}, {owner:?}): got {:?}, wanted {wanted:?}",
                ids(&got)
            );
            ensure!(
                got.iter().all(|s| s.event_name == event),
                "subscriptions_for returned another event's subscription"
            );
        }
        Ok(())
    }

    async fn hint(&mut self) -> Outcome {
        let event = self.event("");
        let before = self.store.has_subscriptions_hint(&event);
        let id = self.add(&event, sub("https://example.com/h").owner("t1")).await?;
        ensure!(
            self.store.has_subscriptions_hint(&event) != Some(false),
            "the hint says {event} has no subscription right after an add"
        );
        ensure!(self.store.remove(&id).await.map_err(|e| store_err("remove", e))?, "remove gave false");
        if before.is_some() {
            ensure!(
                self.store.has_subscriptions_hint(&event) == Some(false),
                "the hint knew {event} had none before the add, but not after the removal"
            );
        }
        Ok(())
    }

    async fn lookups_see_writes(&mut self) -> Outcome {
        let event = self.event("");
        ensure!(self.lookup(&event, Some("t1")).await?.is_empty(), "a new event has subscriptions");
        let id = self.add(&event, sub("https://example.com/h").owner("t1")).await?;
        ensure!(ids(&self.lookup(&event, Some("t1")).await?) == set(&[&id]), "an add was not seen by the next look-up");
        ensure!(self.lookup(&event, Some("t2")).await?.is_empty(), "t2 sees t1's subscription");
        let moved = SubscriptionUpdate::new().owner_id(Some("t2".into()));
        ensure!(self.store.update(&id, moved).await.map_err(|e| store_err("update", e))?, "update gave false");
        ensure!(self.lookup(&event, Some("t1")).await?.is_empty(), "an owner change was not seen by the next look-up");
        ensure!(ids(&self.lookup(&event, Some("t2")).await?) == set(&[&id]), "the new owner does not see it");
        let url = SubscriptionUpdate::new().target_url("https://example.com/moved");
        ensure!(self.store.update(&id, url).await.map_err(|e| store_err("update", e))?, "update gave false");
        let got = self.lookup(&event, Some("t2")).await?;
        ensure!(
            got.first().is_some_and(|s| s.target_url == "https://example.com/moved"),
            "a target url change was not seen by the next look-up"
        );
        ensure!(self.store.remove(&id).await.map_err(|e| store_err("remove", e))?, "remove gave false");
        ensure!(self.lookup(&event, Some("t2")).await?.is_empty(), "a removal was not seen by the next look-up");
        Ok(())
    }

    async fn concurrent_updates(&mut self) -> Outcome {
        const N: usize = 50;
        let event = self.event("");
        let id = self.add(&event, sub("https://example.com/h").metadata(object(json!({"base": true})))).await?;
        let store = self.store;
        let updates = (0..N).map(|i| {
            let id = id.clone();
            async move {
                let mut keys = Map::new();
                keys.insert(format!("k{i}"), json!(i));
                store.update(&id, SubscriptionUpdate::new().merge_metadata(keys)).await
            }
        });
        for (i, result) in futures_util::future::join_all(updates).await.into_iter().enumerate() {
            match result {
                Ok(true) => {}
                Ok(false) => return Err(format!("concurrent update {i} gave false")),
                Err(e) => return Err(format!("concurrent update {i} failed: {e}")),
            }
        }
        let metadata = self.get(&id).await?.metadata.clone();
        let missing: Vec<String> = (0..N).map(|i| format!("k{i}")).filter(|k| !metadata.contains_key(k)).collect();
        ensure!(missing.is_empty(), "{} of {N} concurrent updates were lost: {missing:?}", missing.len());
        ensure!(metadata.get("base") == Some(&json!(true)), "concurrent updates lost the original key");
        Ok(())
    }

    async fn text_round_trips(&mut self) -> Outcome {
        let event = self.event("");
        let tricky = "it's \"quoted\" \\ back\\slash; DROP TABLE x; -- ünïcødé 東京 🎉 ?";
        let owner = format!("tenant 'O''Brien' \"東京\" {} ", "o".repeat(300));
        let owner = owner.as_str();
        let mut wanted = sub("https://example.com/p%27ath?q=%22x%22&t=%E6%9D%B1").bearer(tricky);
        wanted.owner_id = Some(owner.into());
        wanted.metadata =
            object(json!({ tricky: tricky, "k'ey": ["\"", "\\", "\n\t"], "big": 9_007_199_254_740_991_i64 }));
        let id = self.add(&event, wanted.clone()).await?;
        let got = self.get(&id).await?;
        ensure!(*got.subscription == wanted, "got {:?}, wanted {wanted:?}", got.subscription);
        ensure!(got.auth.auth_value().map(Secret::expose) == Some(tricky), "the bearer token changed");
        ensure!(ids(&self.lookup(&event, Some(owner)).await?) == set(&[&id]), "look-up by a tricky owner failed");
        Ok(())
    }

    async fn disable_then_enable(&mut self) -> Outcome {
        let event = self.event("");
        let owner = self.owner("t1");
        let id = self.add(&event, sub("https://example.com/h").owner(&owner)).await?;
        let other = self.add(&event, sub("https://example.com/other").owner(&owner)).await?;
        // Read through every path first: a cache must not keep this answer.
        for (path, s) in self.everywhere(&id, &event, &owner).await? {
            ensure!(s.is_enabled(), "{path}: a new subscription is disabled: {:?}", s.disabled);
        }
        let before = self.get(&id).await?;

        let disabled = Disabled { at: now_ms(), reason: "410 Gone: it's \"gone\" \\ ünï 東京 🎉; --".into() };
        for round in ["first", "second"] {
            ensure!(self.set_disabled(&id, Some(disabled.clone())).await?, "the {round} set_disabled(Some) gave false");
        }
        for (path, s) in self.everywhere(&id, &event, &owner).await? {
            ensure!(
                s.disabled.as_ref() == Some(&disabled),
                "{path}: disabled is {:?}, wanted {disabled:?}",
                s.disabled
            );
            ensure!(!s.is_enabled(), "{path}: is_enabled() of a disabled subscription");
            ensure!(s.subscription == before.subscription, "{path}: disabling changed {:?}", s.subscription);
            ensure!(s.created_at == before.created_at, "{path}: disabling changed created_at");
            ensure!(s.updated_at >= before.updated_at, "{path}: disabling moved updated_at back");
        }
        for (path, s) in self.everywhere(&other, &event, &owner).await? {
            ensure!(s.is_enabled(), "{path}: disabling {id} disabled {other} too");
        }

        for round in ["first", "second"] {
            ensure!(self.set_disabled(&id, None).await?, "the {round} set_disabled(None) gave false");
        }
        for (path, s) in self.everywhere(&id, &event, &owner).await? {
            ensure!(s.is_enabled(), "{path}: still disabled after set_disabled(None): {:?}", s.disabled);
            ensure!(s.subscription == before.subscription, "{path}: enabling changed {:?}", s.subscription);
        }
        Ok(())
    }

    async fn enabling_clears_health(&mut self) -> Outcome {
        let event = self.event("");
        let owner = self.owner("t1");
        let id = self.add(&event, sub("https://example.com/h").owner(&owner)).await?;
        let health = failing_health(7, 2);
        ensure!(self.record_health(&id, &health).await?, "record_health gave false");
        let disabled = Disabled { at: now_ms(), reason: "failing".into() };
        ensure!(self.set_disabled(&id, Some(disabled)).await?, "set_disabled(Some) gave false");
        let got = self.get(&id).await?;
        ensure!(got.health == health, "disabling changed the health to {:?}, wanted {health:?}", got.health);
        ensure!(self.set_disabled(&id, None).await?, "set_disabled(None) gave false");
        for (path, s) in self.everywhere(&id, &event, &owner).await? {
            ensure!(s.health == EndpointHealth::default(), "{path}: enabling left the health at {:?}", s.health);
            ensure!(s.is_enabled(), "{path}: still disabled after set_disabled(None)");
        }
        Ok(())
    }

    async fn record_health_round_trips(&mut self) -> Outcome {
        let event = self.event("");
        let owner = self.owner("t1");
        let id = self.add(&event, sub("https://example.com/h").owner(&owner)).await?;
        let before = self.get(&id).await?;
        ensure!(before.health == EndpointHealth::default(), "a new subscription's health is {:?}", before.health);

        let failing = failing_health(u32::MAX, u32::MAX - 1);
        ensure!(self.record_health(&id, &failing).await?, "record_health gave false");
        let got = self.get(&id).await?;
        ensure!(got.health == failing, "get: health is {:?}, wanted {failing:?}", got.health);
        ensure!(got.updated_at == before.updated_at, "record_health moved updated_at to {}", got.updated_at);
        ensure!(got.created_at == before.created_at, "record_health changed created_at");
        ensure!(got.is_enabled(), "record_health disabled the subscription");
        ensure!(got.subscription == before.subscription, "record_health changed {:?}", got.subscription);
        let listed = [("list", self.list(&event).await?), ("list_all(owner)", self.list_all(Some(&owner)).await?)];
        for (path, subs) in listed {
            let s = subs.iter().find(|s| s.id == id).ok_or_else(|| format!("{path} did not return {id}"))?;
            ensure!(s.health == failing, "{path}: health is {:?}, wanted {failing:?}", s.health);
        }

        // Recovered: the streak is over, the success kept; the same write twice.
        let recovered = EndpointHealth { last_success: Some(now_ms()), ..EndpointHealth::default() };
        for round in ["first", "second"] {
            ensure!(
                self.record_health(&id, &recovered).await?,
                "the {round} record_health of the same health gave false"
            );
        }
        let got = self.get(&id).await?;
        ensure!(got.health == recovered, "get: health is {:?}, wanted {recovered:?}", got.health);

        // A disabled subscription's health is recorded, and it stays disabled.
        let disabled = Disabled { at: now_ms(), reason: "an operator".into() };
        ensure!(self.set_disabled(&id, Some(disabled.clone())).await?, "set_disabled(Some) gave false");
        ensure!(self.record_health(&id, &failing).await?, "record_health of a disabled subscription gave false");
        let got = self.get(&id).await?;
        ensure!(got.health == failing, "the health of a disabled subscription is {:?}", got.health);
        ensure!(got.disabled == Some(disabled), "record_health changed the enabled state to {:?}", got.disabled);
        ensure!(got.updated_at == before.updated_at, "record_health moved updated_at to {}", got.updated_at);
        Ok(())
    }

    async fn list_all_scoping(&mut self) -> Outcome {
        let (a, b) = (self.event(".a"), self.event(".b"));
        let acme = self.owner("acme");
        let upper = self.owner("Acme");
        let spaced = format!("{acme} ");
        let globex = self.owner("globex");
        let acme_a = self.add(&a, sub("https://example.com/acme-a").owner(&acme)).await?;
        let upper_a = self.add(&a, sub("https://example.com/upper-a").owner(&upper)).await?;
        let acme_b = self.add(&b, sub("https://example.com/acme-b").owner(&acme)).await?;
        let open_a = self.add(&a, sub("https://example.com/open-a")).await?;
        let spaced_b = self.add(&b, sub("https://example.com/spaced-b").owner(&spaced)).await?;
        let globex_b = self.add(&b, sub("https://example.com/globex-b").owner(&globex)).await?;
        let acme_a2 = self.add(&a, sub("https://example.com/acme-a2").owner(&acme)).await?;
        let disabled = Disabled { at: now_ms(), reason: "conformance".into() };
        ensure!(self.set_disabled(&acme_a2, Some(disabled)).await?, "set_disabled(Some) gave false");

        let initech = self.owner("initech");
        let cases: [(&str, BTreeSet<&str>); 5] = [
            (&acme, set(&[&acme_a, &acme_b, &acme_a2])),
            (&upper, set(&[&upper_a])),
            (&spaced, set(&[&spaced_b])),
            (&globex, set(&[&globex_b])),
            (&initech, BTreeSet::new()),
        ];
        for (owner, wanted) in cases {
            let got = self.list_all(Some(owner)).await?;
            ensure!(ids(&got) == wanted, "list_all(Some({owner:?})): got {:?}, wanted {wanted:?}", ids(&got));
            ensure!(got.iter().all(|s| s.owner_id.as_deref() == Some(owner)), "list_all returned another owner's");
        }
        let acme_subs = self.list_all(Some(&acme)).await?;
        for (id, event) in [(&acme_a, &a), (&acme_b, &b), (&acme_a2, &a)] {
            let s = acme_subs.iter().find(|s| &s.id == id).ok_or_else(|| format!("list_all lost {id}"))?;
            ensure!(&s.event_name == event, "list_all gave {id} the event {:?}, not {event:?}", s.event_name);
            let wanted_disabled = id == &acme_a2;
            ensure!(s.is_enabled() != wanted_disabled, "list_all: {id}'s enabled state is wrong: {:?}", s.disabled);
        }

        let all = self.list_all(None).await?;
        let ours = set(&[&acme_a, &upper_a, &acme_b, &open_a, &spaced_b, &globex_b, &acme_a2]);
        let missing: Vec<&str> = ours.difference(&ids(&all)).copied().collect();
        ensure!(missing.is_empty(), "list_all(None) did not return {missing:?}");
        Ok(())
    }
}
