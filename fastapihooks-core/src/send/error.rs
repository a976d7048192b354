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
    /// The receiver asked not to be sent this delivery again: it answered
    /// `410 Gone`, or another status that is not 2xx with the header
    /// `webhook-delivery: abort-message` (or `disable`). Final whatever the status.
    #[error("endpoint answered HTTP {status}: receiver asked to stop retrying ({reason})")]
    ReceiverStopped {
        /// The HTTP status code.
        status: u16,
        /// How the receiver asked.
        reason: StopReason,
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

/// How a receiver asked that a delivery not be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StopReason {
    /// It answered `410 Gone`: the endpoint is no more.
    #[error("410 Gone")]
    Gone,
    /// Its response carried `webhook-delivery: abort-message`.
    #[error("{ABORT_HEADER}: {ABORT_VALUE}")]
    AbortHeader,
    /// Its response carried `webhook-delivery: disable`.
    #[error("{ABORT_HEADER}: {DISABLE_VALUE}")]
    DisableHeader,
}

/// The response header with which a receiver controls a delivery.
pub const ABORT_HEADER: &str = "webhook-delivery";
/// The value of [`ABORT_HEADER`] that ends a delivery's retries.
pub const ABORT_VALUE: &str = "abort-message";
/// The value of [`ABORT_HEADER`] that disables the subscription (see
/// [`DisablePolicy`](crate::health::DisablePolicy)).
pub const DISABLE_VALUE: &str = "disable";

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
    /// A short, stable name for the kind of error, for records and metrics:
    /// `status`, `receiver_stopped`, `redirect`, `timeout`, `network`,
    /// `refused` or `not_sent`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Status { .. } => "status",
            Self::ReceiverStopped { .. } => "receiver_stopped",
            Self::Redirect { .. } => "redirect",
            Self::Timeout(_) => "timeout",
            Self::Network(_) => "network",
            Self::Refused(_) => "refused",
            Self::NotSent(_) => "not_sent",
        }
    }

    /// True when the same request may succeed later: network errors,
    /// timeouts, 408, 429 and 5xx. A refused destination, a request that
    /// could not be made, a redirect, a receiver that asked to stop or
    /// another status is final.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status } => *status == 408 || *status == 429 || (500..600).contains(status),
            Self::Timeout(_) | Self::Network(_) => true,
            Self::ReceiverStopped { .. } | Self::Redirect { .. } | Self::Refused(_) | Self::NotSent(_) => false,
        }
    }
}
