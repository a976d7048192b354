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
}
