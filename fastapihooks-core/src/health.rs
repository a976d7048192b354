//! Endpoint health: how a subscription's deliveries have been going, and
//! when it is disabled for failing.
//!
//! The engine keeps each stored subscription's [`EndpointHealth`] as its
//! deliveries end, and writes it to the store
//! ([`Store::record_health`](crate::Store::record_health)) when it changes
//! course: a streak of failures begins, a delivery is given up, the
//! endpoint recovers, or it is disabled. A subscription is [`Disabled`] by
//! the [`DisablePolicy`]: at once when the receiver says it is gone
//! (`410 Gone`, `webhook-delivery: disable`), and after sustained failure.
//! Disabled subscriptions are skipped at fan-out and their waiting retries
//! are given up; re-enabling is [`Store::set_disabled`](crate::Store::set_disabled)
//! with `None`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a subscription's deliveries have been going.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EndpointHealth {
    /// Failed attempts since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The first failure of the current streak; none while it succeeds.
    #[serde(default)]
    pub failing_since: Option<DateTime<Utc>>,
    /// The last 2xx.
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
    /// Deliveries given up since the last success.
    #[serde(default)]
    pub given_up: u32,
}

impl EndpointHealth {
    /// True while a streak of failures runs.
    pub fn is_failing(&self) -> bool {
        self.failing_since.is_some()
    }
}

/// Why and since when a subscription is disabled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Disabled {
    /// When it was disabled.
    pub at: DateTime<Utc>,
    /// Why, in a few words (`410 Gone`, `failing since ...`, `disabled by
    /// an operator`).
    pub reason: String,
}

impl Disabled {
    /// Disabled now, for `reason`.
    pub fn now(reason: impl Into<String>) -> Self {
        Self { at: Utc::now(), reason: reason.into() }
    }
}

/// When the engine disables a failing subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DisablePolicy {
    /// Disable once it has been failing, with no success, this long
    /// (default 5 days, like Svix); none: never for that.
    pub after_failing_for: Option<Duration>,
    /// Disable after this many given-up deliveries with no success in
    /// between (default none).
    pub after_given_up: Option<u32>,
    /// Disable at once when the receiver answers `410 Gone` or sends
    /// `webhook-delivery: disable` (default true).
    pub when_receiver_asks: bool,
}

impl Default for DisablePolicy {
    fn default() -> Self {
        Self {
            after_failing_for: Some(Duration::from_secs(5 * 24 * 3600)),
            after_given_up: None,
            when_receiver_asks: true,
        }
    }
}

impl DisablePolicy {
    /// Never disable a subscription.
    pub fn never() -> Self {
        Self { after_failing_for: None, after_given_up: None, when_receiver_asks: false }
    }

    /// Disable after failing for `d` with no success.
    #[must_use]
    pub fn after_failing_for(mut self, d: Duration) -> Self {
        self.after_failing_for = Some(d);
        self
    }

    /// Disable after `n` given-up deliveries with no success (at least 1).
    #[must_use]
    pub fn after_given_up(mut self, n: u32) -> Self {
        self.after_given_up = Some(n.max(1));
        self
    }

    /// Whether `410 Gone` and `webhook-delivery: disable` disable at once.
    #[must_use]
    pub fn when_receiver_asks(mut self, yes: bool) -> Self {
        self.when_receiver_asks = yes;
        self
    }

    /// The reason to disable a subscription whose health is `health` at
    /// `now`, if the policy says it is time.
    pub fn verdict(&self, health: &EndpointHealth, now: DateTime<Utc>) -> Option<String> {
        if let (Some(limit), Some(since)) = (self.after_given_up, health.failing_since)
            && health.given_up >= limit
        {
            return Some(format!("{} deliveries given up since {}", health.given_up, since.to_rfc3339()));
        }
        let (Some(span), Some(since)) = (self.after_failing_for, health.failing_since) else { return None };
        let span = chrono::Duration::from_std(span).ok()?;
        (now - since >= span).then(|| format!("failing with no success since {}", since.to_rfc3339()))
    }
}

/// How long a subscription this engine disabled is taken as disabled
/// whatever fresh store copies say (the store's write may still be on its
/// way). Past it, the store decides: an operator may have enabled it
/// again. Copies older than the disable (deliveries queued before it) are
/// stale however long they waited.
const LOCAL_DISABLE: std::time::Duration = std::time::Duration::from_secs(5);
/// How often, at most, a healthy subscription's `last_success` is written.
const SUCCESS_WRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);
/// How often, at most, a failing subscription's health is written while
/// its deliveries keep being given up (the first of a streak always is): a
/// dead endpoint under load is not a store write per delivery.
const FAILURE_WRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Subscriptions tracked at once; past it, the healthy ones are forgotten
/// (their health is read back from the store when next seen).
const MAX_TRACKED: usize = 100_000;

/// What an outcome calls for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The health to write to the store.
    pub(crate) persist: Option<EndpointHealth>,
    /// Disable the subscription, for this reason.
    pub(crate) disable: Option<String>,
    /// The streak's first given-up delivery (`endpoint.failing`).
    pub(crate) failing: bool,
    /// A failing subscription succeeded (`endpoint.recovered`).
    pub(crate) recovered: bool,
}

#[derive(Debug)]
struct Entry {
    health: EndpointHealth,
    /// When this engine disabled it, and why.
    disabled: Option<(std::time::Instant, String)>,
    success_written: Option<std::time::Instant>,
    failure_written: Option<std::time::Instant>,
}

/// The engine's view of its stored subscriptions' health: seeded from the
/// store's copy the first time a subscription is seen, changed by every
/// outcome, written back when it changes course.
#[derive(Debug)]
pub(crate) struct Tracker {
    policy: DisablePolicy,
    /// Subscriptions ever disabled here (while 0, no look-up is needed).
    disables: std::sync::atomic::AtomicUsize,
    entries: std::sync::Mutex<std::collections::HashMap<String, Entry, foldhash::fast::RandomState>>,
}

/// One attempt's outcome, as the tracker sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Seen<'a> {
    /// A 2xx.
    Success,
    /// A failure; `given_up` when it was the delivery's last.
    Failure { given_up: bool },
    /// The receiver asked to be disabled (`410 Gone`, `webhook-delivery: disable`).
    Disable(&'a str),
}

impl Tracker {
    pub(crate) fn new(policy: DisablePolicy) -> Self {
        Self { policy, disables: std::sync::atomic::AtomicUsize::new(0), entries: std::sync::Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Entry, foldhash::fast::RandomState>> {
        // No user code runs under the lock.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Why subscription `id` is disabled, if this engine disabled it: at
    /// all, for a copy of it taken at `copied` before the disable (a
    /// delivery queued then); lately, for a copy taken since.
    pub(crate) fn disabled_here(&self, id: &str, copied: Option<std::time::Instant>) -> Option<String> {
        if self.disables.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return None; // Nothing was ever disabled here: no lock on the delivery path.
        }
        let entries = self.lock();
        let (at, reason) = entries.get(id)?.disabled.as_ref()?;
        let stale = copied.is_some_and(|c| c <= *at);
        (stale || at.elapsed() < LOCAL_DISABLE).then(|| reason.clone())
    }

    /// Takes `id` as disabled here, for `reason` (an operator disabled it
    /// through this engine).
    pub(crate) fn mark_disabled(&self, id: &str, reason: &str) {
        let mut entries = self.lock();
        let entry = entries.entry(id.to_owned()).or_insert_with(|| Entry {
            health: EndpointHealth::default(),
            disabled: None,
            success_written: None,
            failure_written: None,
        });
        entry.disabled = Some((std::time::Instant::now(), reason.to_owned()));
        self.disables.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Forgets what this engine knows of `id` (it was re-enabled).
    pub(crate) fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Takes one outcome of a delivery to subscription `id`, whose stored
    /// health was `seed`, at `now`; says what to do.
    pub(crate) fn observe(&self, id: &str, seed: &EndpointHealth, seen: Seen<'_>, now: DateTime<Utc>) -> Verdict {
        let mut entries = self.lock();
        if entries.len() >= MAX_TRACKED && !entries.contains_key(id) {
            entries.retain(|_, e| e.health.is_failing() || e.disabled.is_some());
        }
        let entry = entries.entry(id.to_owned()).or_insert_with(|| Entry {
            health: seed.clone(),
            disabled: None,
            success_written: None,
            failure_written: None,
        });
        if entry.disabled.as_ref().is_some_and(|(at, _)| at.elapsed() < LOCAL_DISABLE) {
            // Already disabled here: the deliveries still in flight change nothing.
            return Verdict::default();
        }
        entry.disabled = None;
        let health = &mut entry.health;
        let mut verdict = Verdict::default();
        match seen {
            Seen::Success => {
                let was_failing = health.is_failing();
                *health = EndpointHealth { last_success: Some(now), ..EndpointHealth::default() };
                let stale = entry.success_written.is_none_or(|at| at.elapsed() >= SUCCESS_WRITE_EVERY);
                if was_failing || stale {
                    entry.success_written = Some(std::time::Instant::now());
                    verdict.persist = Some(health.clone());
                }
                verdict.recovered = was_failing;
                return verdict;
            }
            Seen::Failure { given_up } => {
                health.consecutive_failures = health.consecutive_failures.saturating_add(1);
                let starts = health.failing_since.is_none();
                health.failing_since.get_or_insert(now);
                if given_up {
                    health.given_up = health.given_up.saturating_add(1);
                    verdict.failing = health.given_up == 1;
                }
                let due = entry.failure_written.is_none_or(|at| at.elapsed() >= FAILURE_WRITE_EVERY);
                if starts || verdict.failing || (given_up && due) {
                    entry.failure_written = Some(std::time::Instant::now());
                    verdict.persist = Some(health.clone());
                }
                verdict.disable = self.policy.verdict(health, now);
            }
            Seen::Disable(reason) => {
                if self.policy.when_receiver_asks {
                    verdict.disable = Some(format!("the receiver asked: {reason}"));
                }
            }
        }
        if let Some(reason) = &verdict.disable {
            entry.disabled = Some((std::time::Instant::now(), reason.clone()));
            self.disables.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            verdict.persist = Some(entry.health.clone());
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_disables_after_its_span_or_its_count() {
        let now = Utc::now();
        let policy = DisablePolicy::default();
        let mut health = EndpointHealth { failing_since: Some(now - chrono::Duration::days(4)), ..Default::default() };
        assert_eq!(policy.verdict(&health, now), None);
        health.failing_since = Some(now - chrono::Duration::days(5));
        assert!(policy.verdict(&health, now).unwrap().starts_with("failing with no success since"));
        let counted = DisablePolicy::never().after_given_up(3);
        health.given_up = 2;
        assert_eq!(counted.verdict(&health, now), None);
        health.given_up = 3;
        assert!(counted.verdict(&health, now).unwrap().starts_with("3 deliveries given up"));
        assert_eq!(DisablePolicy::default().verdict(&EndpointHealth::default(), now), None, "not failing");
    }

    #[test]
    fn the_tracker_writes_health_when_it_changes_course() {
        let tracker = Tracker::new(DisablePolicy::never().after_given_up(2));
        let now = Utc::now();
        let seed = EndpointHealth::default();
        let first = tracker.observe("s", &seed, Seen::Success, now);
        assert!(first.persist.is_some(), "the first success is written once");
        assert_eq!(tracker.observe("s", &seed, Seen::Success, now).persist, None, "then not again for a while");
        let streak = tracker.observe("s", &seed, Seen::Failure { given_up: false }, now);
        assert_eq!(streak.persist.as_ref().and_then(|h| h.failing_since), Some(now), "a streak starts");
        assert_eq!(tracker.observe("s", &seed, Seen::Failure { given_up: false }, now).persist, None);
        let gave_up = tracker.observe("s", &seed, Seen::Failure { given_up: true }, now);
        assert!(gave_up.failing && gave_up.disable.is_none());
        assert_eq!(gave_up.persist.map(|h| (h.consecutive_failures, h.given_up)), Some((3, 1)));
        let second = tracker.observe("s", &seed, Seen::Failure { given_up: true }, now);
        assert!(!second.failing);
        assert!(second.disable.is_some(), "two given up: the policy disables");
        assert!(tracker.disabled_here("s", None).is_some());
        let before = std::time::Instant::now() - std::time::Duration::from_secs(3600);
        assert!(tracker.disabled_here("s", Some(before)).is_some(), "a copy from before the disable is stale");
        assert_eq!(tracker.observe("s", &seed, Seen::Success, now), Verdict::default(), "in flight after disabling");
        tracker.forget("s");
        assert!(tracker.disabled_here("s", None).is_none());
    }

    #[test]
    fn a_recovery_resets_the_streak_and_the_receiver_can_ask_to_be_disabled() {
        let tracker = Tracker::new(DisablePolicy::default());
        let now = Utc::now();
        let failing = EndpointHealth { consecutive_failures: 4, failing_since: Some(now), ..Default::default() };
        let back = tracker.observe("s", &failing, Seen::Success, now);
        assert!(back.recovered);
        assert_eq!(back.persist, Some(EndpointHealth { last_success: Some(now), ..Default::default() }));
        let gone = tracker.observe("s", &failing, Seen::Disable("410 Gone"), now);
        assert_eq!(gone.disable.as_deref(), Some("the receiver asked: 410 Gone"));
        let never = Tracker::new(DisablePolicy::default().when_receiver_asks(false));
        assert_eq!(never.observe("s", &failing, Seen::Disable("410 Gone"), now).disable, None);
    }
}
