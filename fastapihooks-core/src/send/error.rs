//! Why one attempt of one delivery failed: made here, where the attempt is
//! made, and wrapped by [`DeliveryError`](crate::DeliveryError) on its way
//! to the retry decision and to `on_failure`.

use std::time::Duration;

use super::guard::Refused;
use crate::sign::SignError;

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptError {
    /// The endpoint answered with a status that is not 2xx.
    #[error("endpoint answered HTTP {status}")]
    Status {
        /// The HTTP status code.
        status: u16,
    },
    /// The endpoint answered with a redirect; redirects are never followed.
    #[error("endpoint answered HTTP {status}, a redirect; redirects are not followed")]
    Redirect {
        /// The HTTP status code.
        status: u16,
    },
    /// The request did not complete within the timeout.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// Connecting, resolving or transferring failed.
    #[error("network error: {0}")]
    Network(String),
    /// The network guard refused the destination.
    #[error("destination refused: {0}")]
    Refused(#[from] Refused),
    /// The request could not be made, so nothing was sent.
    #[error("not sent: {0}")]
    NotSent(#[from] NotSent),
}

/// Why a request could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotSent {
    /// The bearer token would break the `Authorization` header (CR, LF, NUL
    /// or another control character).
    #[error("the bearer token is not a valid header value")]
    BearerToken,
    /// The delivery could not be signed.
    #[error(transparent)]
    Signing(#[from] SignError),
    /// The target URL cannot be sent to (no host, or not writable as a
    /// request).
    #[error("the target URL cannot be sent to: {0}")]
    Url(&'static str),
}

impl AttemptError {
    /// True when the same request may succeed later: network errors,
    /// timeouts, 408, 429 and 5xx. A refused destination, a request that
    /// could not be made, a redirect or another status is final.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status } => *status == 408 || *status == 429 || (500..600).contains(status),
            Self::Timeout(_) | Self::Network(_) => true,
            Self::Redirect { .. } | Self::Refused(_) | Self::NotSent(_) => false,
        }
    }
}
