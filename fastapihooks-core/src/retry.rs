//! [`RetryPolicy`]: when a failed delivery is tried again, as data.

use std::time::Duration;

use rand::Rng;

/// When to retry a delivery that failed with a retryable error (a network
/// error, a timeout, 408, 429 or 5xx).
///
/// Either exponential backoff (`base * 2^n`, capped at `max`) or an explicit
/// schedule, each delay multiplied by a random jitter factor. A
/// `Retry-After` from the endpoint replaces the computed delay, clamped to
/// the policy's maximum.
///
/// ```
/// # use fastapihooks_core::RetryPolicy;
/// # use std::time::Duration;
/// // The original's defaults: 3 retries, 1 s base, 60 s cap, jitter x0.75..1.25.
/// let p = RetryPolicy::default();
/// assert_eq!(p.max_retries(), 3);
/// // Svix's schedule.
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

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::exponential(3, Duration::from_secs(1), Duration::from_secs(60))
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

/// Parses a `Retry-After` header: delay seconds, or an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or_default())
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
    fn default_is_the_originals() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries(), 3);
        assert_eq!(p.max_delay(), Duration::from_secs(60));
        assert!(p.delay(2, None).is_some());
        assert!(p.delay(3, None).is_none());
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

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = std::time::SystemTime::now();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = now + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(later), now).unwrap();
        assert!(d <= Duration::from_secs(30) && d >= Duration::from_secs(28), "{d:?}");
        assert_eq!(
            parse_retry_after(&httpdate::fmt_http_date(now - Duration::from_secs(60)), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
