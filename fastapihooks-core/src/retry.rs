//! [`RetryPolicy`]: when a failed delivery is tried again, as data.

use std::time::Duration;

use rand::Rng;

use crate::send::AttemptError;

/// When to retry a delivery that failed with a retryable error (a network
/// error, a timeout, 408, 429 or 5xx).
///
/// Either exponential backoff (`base * 2^n`, capped at `max`) or an explicit
/// schedule, each delay multiplied by a random jitter factor. A
/// `Retry-After` from the endpoint replaces the computed delay, clamped to
/// the policy's maximum.
///
/// The default is a production schedule, [`DEFAULT_SCHEDULE`]: the first
/// attempt at once, then retries after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h
/// and 10 h (about 27 hours in all, as Svix does), each delay times a
/// jitter factor in `0.8..=1.2`. A receiver that is down for a night still
/// gets its events. The original Python package's default, 3 retries from
/// 1 s doubling up to 60 s, is one call away:
/// `RetryPolicy::exponential(3, Duration::from_secs(1), Duration::from_secs(60))`.
///
/// ```
/// # use fastapihooks_core::RetryPolicy;
/// # use std::time::Duration;
/// // The default: 7 retries over about 27 hours.
/// let p = RetryPolicy::default();
/// assert_eq!(p.max_retries(), 7);
/// assert_eq!(p.max_delay(), Duration::from_secs(10 * 3600));
/// // The original's default: 3 retries, 1 s base, 60 s cap, jitter x0.75..1.25.
/// let original = RetryPolicy::exponential(3, Duration::from_secs(1), Duration::from_secs(60));
/// assert_eq!(original.max_retries(), 3);
/// // A schedule of your own.
/// let s = RetryPolicy::schedule([5, 300, 1800, 7200].map(Duration::from_secs));
/// assert_eq!(s.max_retries(), 4);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    kind: Kind,
    jitter: (f64, f64),
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Exponential { max_retries: u32, base: Duration, max: Duration },
    Schedule(Vec<Duration>),
}

/// The delays of the default policy, before each retry: 5 s, 5 min,
/// 30 min, 2 h, 5 h, 10 h, 10 h (Svix's schedule, about 27 hours in all).
pub const DEFAULT_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// [`DEFAULT_SCHEDULE`], with jitter `0.8..=1.2`. The original Python
/// package's default is
/// `RetryPolicy::exponential(3, Duration::from_secs(1), Duration::from_secs(60))`.
impl Default for RetryPolicy {
    fn default() -> Self {
        Self::schedule(DEFAULT_SCHEDULE)
    }
}

impl RetryPolicy {
    /// Exponential backoff: retry `n` (0-based) waits `min(base * 2^n, max)`,
    /// times a jitter factor in `0.75..=1.25`.
    pub fn exponential(max_retries: u32, base: Duration, max: Duration) -> Self {
        Self { kind: Kind::Exponential { max_retries, base, max: max.max(base) }, jitter: (0.75, 1.25) }
    }

    /// An explicit schedule: retry `n` waits `delays[n]`, times a jitter
    /// factor in `0.8..=1.2`; as many retries as delays.
    pub fn schedule(delays: impl IntoIterator<Item = Duration>) -> Self {
        Self { kind: Kind::Schedule(delays.into_iter().collect()), jitter: (0.8, 1.2) }
    }

    /// Never retry.
    pub fn none() -> Self {
        Self::schedule([])
    }

    /// Sets the jitter range (factors; `(1.0, 1.0)` disables jitter).
    /// Out-of-order or negative bounds are corrected.
    #[must_use]
    pub fn with_jitter(mut self, low: f64, high: f64) -> Self {
        let low = if low.is_finite() { low.max(0.0) } else { 1.0 };
        let high = if high.is_finite() { high.max(0.0) } else { 1.0 };
        self.jitter = (low.min(high), low.max(high));
        self
    }

    /// How many retries after the first attempt.
    pub fn max_retries(&self) -> u32 {
        match &self.kind {
            Kind::Exponential { max_retries, .. } => *max_retries,
            Kind::Schedule(d) => u32::try_from(d.len()).unwrap_or(u32::MAX),
        }
    }

    /// The longest delay this policy waits (also the clamp for `Retry-After`).
    pub fn max_delay(&self) -> Duration {
        match &self.kind {
            Kind::Exponential { max, .. } => *max,
            Kind::Schedule(d) => d.iter().copied().max().unwrap_or_default(),
        }
    }

    /// The delay before retry number `retry` (0 for the first retry), or
    /// `None` when retries are exhausted. `retry_after` is what the endpoint
    /// asked for, if anything.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if retry >= self.max_retries() {
            return None;
        }
        if let Some(asked) = retry_after {
            return Some(asked.min(self.max_delay()));
        }
        let nominal = match &self.kind {
            Kind::Exponential { base, max, .. } => {
                let factor = 2u32.checked_pow(retry).unwrap_or(u32::MAX);
                base.checked_mul(factor).unwrap_or(*max).min(*max)
            }
            Kind::Schedule(d) => d[retry as usize],
        };
        let (lo, hi) = self.jitter;
        let factor = if hi > lo { rand::rng().random_range(lo..=hi) } else { lo };
        Some(nominal.mul_f64(factor))
    }
}

/// What follows a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this long.
    RetryAfter(Duration),
    /// No more attempts: the failure is final.
    Final,
}

impl RetryPolicy {
    /// The one place that decides: after attempt number `attempt` (1 for the
    /// first) failed with `error`, with the endpoint having asked for
    /// `retry_after`, try again after a delay, or stop. Final errors (see
    /// [`AttemptError::is_transient`]) stop at once; transient ones follow
    /// the policy, `Retry-After` taking the computed delay's place.
    pub fn decide(&self, attempt: u32, error: &AttemptError, retry_after: Option<Duration>) -> Decision {
        if !error.is_transient() {
            return Decision::Final;
        }
        match self.delay(attempt.saturating_sub(1), retry_after) {
            Some(delay) => Decision::RetryAfter(delay),
            None => Decision::Final,
        }
    }
}

/// Waits between tries of something that is not a delivery: reconnecting
/// to a broker, reading a store. Doubles from `base` up to `max`, with
/// ±25 % jitter so that many waiters do not retry in step.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, failures: 0 }
    }

    /// The wait after one more failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(20)).unwrap_or(u32::MAX);
        self.failures = self.failures.saturating_add(1);
        let nominal = self.base.saturating_mul(factor).min(self.max);
        nominal.mul_f64(rand::rng().random_range(0.75..=1.25)).min(self.max)
    }

    /// Failures since the last success.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// True when the last wait was the longest (before jitter): from here
    /// on the waits no longer grow.
    pub(crate) fn is_at_max(&self) -> bool {
        let last = self.failures.saturating_sub(1).min(20);
        self.failures > 0 && self.base.saturating_mul(1 << last) >= self.max
    }

    /// A success: the next failure waits `base` again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_caps_and_jitters() {
        let p = RetryPolicy::exponential(10, Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..200 {
            let d0 = p.delay(0, None).unwrap();
            assert!(d0 >= Duration::from_millis(750) && d0 <= Duration::from_millis(1250), "{d0:?}");
            let d3 = p.delay(3, None).unwrap();
            assert!(d3 >= Duration::from_secs(6) && d3 <= Duration::from_secs(10), "{d3:?}");
            let d9 = p.delay(9, None).unwrap();
            assert!(d9 >= Duration::from_secs(45) && d9 <= Duration::from_secs(75), "{d9:?}");
        }
        assert_eq!(p.delay(10, None), None);
    }

    #[test]
    fn decide_stops_on_final_errors_and_follows_the_policy_on_transient_ones() {
        let p = RetryPolicy::schedule([Duration::from_secs(5), Duration::from_secs(300)]).with_jitter(1.0, 1.0);
        let busy = AttemptError::Status { status: 503 };
        assert_eq!(p.decide(1, &busy, None), Decision::RetryAfter(Duration::from_secs(5)));
        assert_eq!(p.decide(2, &busy, None), Decision::RetryAfter(Duration::from_secs(300)));
        assert_eq!(p.decide(3, &busy, None), Decision::Final);
        assert_eq!(p.decide(1, &busy, Some(Duration::from_secs(7))), Decision::RetryAfter(Duration::from_secs(7)));
        assert_eq!(p.decide(1, &AttemptError::Status { status: 404 }, None), Decision::Final);
        assert_eq!(p.decide(1, &AttemptError::Redirect { status: 302 }, None), Decision::Final);
        assert_eq!(p.decide(1, &AttemptError::NotSent(crate::send::NotSent::BearerToken), None), Decision::Final);
        for reason in [crate::send::StopReason::Gone, crate::send::StopReason::AbortHeader] {
            let stopped = AttemptError::ReceiverStopped { status: 503, reason };
            assert_eq!(p.decide(1, &stopped, Some(Duration::from_secs(1))), Decision::Final, "{stopped}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125), "{first:?}");
        let second = b.next_delay();
        assert!(second >= Duration::from_millis(150) && second <= Duration::from_millis(250), "{second:?}");
        for _ in 0..40 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
        assert_eq!(b.failures(), 42);
        assert!(b.is_at_max());
        b.reset();
        assert!(!b.is_at_max());
        assert!(b.next_delay() <= Duration::from_millis(125));
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let at_max: Vec<bool> = (0..4)
            .map(|_| {
                b.next_delay();
                b.is_at_max()
            })
            .collect();
        assert_eq!(at_max, [false, false, true, true], "100, 200, then 400 ms: the longest");
    }

    #[test]
    fn the_default_is_the_production_schedule_with_jitter() {
        let p = RetryPolicy::default();
        let hours = |h: u64| Duration::from_secs(h * 3600);
        let nominal = [Duration::from_secs(5), Duration::from_secs(300), Duration::from_secs(1800)]
            .into_iter()
            .chain([2, 5, 10, 10].map(hours));
        assert_eq!(p.max_retries(), 7);
        assert_eq!(p.max_delay(), hours(10));
        for (retry, nominal) in (0..).zip(nominal) {
            for _ in 0..50 {
                let d = p.delay(retry, None).unwrap();
                assert!(d >= nominal.mul_f64(0.8) && d <= nominal.mul_f64(1.2), "retry {retry}: {d:?}");
            }
        }
        assert!(p.delay(7, None).is_none());
        let total: Duration = DEFAULT_SCHEDULE.iter().sum();
        assert!(total > hours(27) && total < hours(28), "{total:?}");
        // Jittered: not every first retry waits the same.
        let firsts: std::collections::HashSet<Duration> = (0..20).map(|_| p.delay(0, None).unwrap()).collect();
        assert!(firsts.len() > 1);
    }

    #[test]
    fn schedule_and_retry_after_clamp() {
        let p = RetryPolicy::schedule([Duration::from_secs(5), Duration::from_secs(300)]).with_jitter(1.0, 1.0);
        assert_eq!(p.delay(0, None), Some(Duration::from_secs(5)));
        assert_eq!(p.delay(1, None), Some(Duration::from_secs(300)));
        assert_eq!(p.delay(2, None), None);
        assert_eq!(p.delay(0, Some(Duration::from_secs(10))), Some(Duration::from_secs(10)));
        assert_eq!(p.delay(0, Some(Duration::from_secs(100_000))), Some(Duration::from_secs(300)));
        assert_eq!(RetryPolicy::none().delay(0, None), None);
    }
}
