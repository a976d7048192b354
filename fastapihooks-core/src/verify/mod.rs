//! Verifying deliveries, for receivers written in Rust.
//!
//! A [`Verifier`] holds the secret(s) a receiver was given and checks a
//! request's headers and exact body bytes:
//!
//! - Standard Webhooks (the default): `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature` must be present; the timestamp must be within the
//!   tolerance of now (+-5 minutes by default), so a captured delivery cannot
//!   be replayed later; one of the space-separated `v1,` signatures must match
//!   one of the secrets (compared in constant time). Signatures of other
//!   versions are ignored.
//! - The legacy `X-Fastapihooks-Signature: sha256=<hex>` is accepted only when
//!   enabled with [`Verifier::accept_legacy`], and only when the request has
//!   no Standard Webhooks signature. It has no timestamp: it cannot stop
//!   replays.
//!
//! With the `axum` feature, `VerifiedWebhook` does the same as an axum extractor.
//! Within the tolerance a replay still verifies: de-duplicate on
//! [`Verified::id`] (the event id, the same on every retry) if that matters.
//!
//! ```
//! use fastapihooks_core::verify::{Verifier, VerifyError};
//! use http::HeaderMap;
//!
//! let verifier = Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let mut headers = HeaderMap::new();
//! headers.insert("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".parse()?);
//! headers.insert("webhook-timestamp", "1614265330".parse()?);
//! headers.insert("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".parse()?);
//! let body = br#"{"test": 2432232314}"#;
//!
//! // Years after the timestamp: refused as stale.
//! assert!(matches!(verifier.verify(&headers, body), Err(VerifyError::TimestampTooOld { .. })));
//! // At the time it was sent: verified.
//! let sent = chrono::DateTime::from_timestamp(1614265330, 0).unwrap();
//! let verified = verifier.verify_at(&headers, body, sent)?;
//! assert_eq!(verified.id.as_deref(), Some("msg_p5jXN8AQM9LWM0D4loKWxJek"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "axum")]
mod extract;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use subtle::{Choice, ConstantTimeEq};

#[cfg(feature = "axum")]
pub use extract::{VerifiedWebhook, WebhookRejection};

use crate::secret::{BASE64, Secret, SecretFormatError, SigningKey};
use crate::sign::{
    SIGNATURE_HEADER, SignatureScheme, WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER,
    legacy_mac, standard_mac,
};

/// How far a `webhook-timestamp` may be from now by default: 5 minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The longest timestamp header accepted (an `i64` has at most 19 digits).
const MAX_TIMESTAMP_LEN: usize = 19;

/// Why a request did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A required header is missing: the request is not signed.
    #[error("missing `{0}` header")]
    MissingHeader(&'static str),
    /// A header is present but malformed.
    #[error("malformed `{header}` header: {reason}")]
    BadFormat {
        /// The header's name.
        header: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The timestamp is older than the tolerance: a stale or replayed request.
    #[error("timestamp is {age_secs} s old, more than the {tolerance_secs} s tolerance")]
    TimestampTooOld {
        /// How old it is.
        age_secs: u64,
        /// The tolerance.
        tolerance_secs: u64,
    },
    /// The timestamp is further in the future than the tolerance.
    #[error("timestamp is {ahead_secs} s in the future, more than the {tolerance_secs} s tolerance")]
    TimestampTooNew {
        /// How far ahead it is.
        ahead_secs: u64,
        /// The tolerance.
        tolerance_secs: u64,
    },
    /// No signature matches any of the secrets: forged, tampered with, or
    /// signed with another secret.
    #[error("no matching signature")]
    NoMatchingSignature,
}

impl VerifyError {
    /// The HTTP status a receiver should answer with: 400 for a malformed
    /// header, 401 for everything else (unsigned, stale, forged).
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::BadFormat { .. } => StatusCode::BAD_REQUEST,
            Self::MissingHeader(_)
            | Self::TimestampTooOld { .. }
            | Self::TimestampTooNew { .. }
            | Self::NoMatchingSignature => StatusCode::UNAUTHORIZED,
        }
    }
}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The scheme that verified.
    pub scheme: SignatureScheme,
    /// `webhook-id` (Standard Webhooks only): the event id, stable across
    /// retries, for de-duplication.
    pub id: Option<String>,
    /// `webhook-timestamp` (Standard Webhooks only), Unix seconds.
    pub timestamp: Option<i64>,
}

/// A receiver's secret, as the two keys the schemes use.
#[derive(Clone)]
struct Key {
    standard: SigningKey,
    legacy: Secret,
}

/// Verifies deliveries with one or more secrets (several while a receiver
/// migrates between them). Cheap to clone; its `Debug` shows no secret.
#[derive(Clone)]
pub struct Verifier {
    keys: Arc<[Key]>,
    tolerance: Duration,
    accept_legacy: bool,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.keys.len())
            .field("tolerance", &self.tolerance)
            .field("accept_legacy", &self.accept_legacy)
            .finish()
    }
}

impl Verifier {
    /// A verifier for one secret (`whsec_...`, or any other string, used raw;
    /// see [`crate::secret`]), Standard Webhooks only, +-5 minutes.
    ///
    /// # Errors
    /// The secret is empty or a `whsec_` secret is not valid base64.
    pub fn new(secret: impl Into<Secret>) -> Result<Self, SecretFormatError> {
        Self::with_secrets([secret])
    }

    /// A verifier that accepts a signature made with any of `secrets`.
    ///
    /// # Errors
    /// No secret, or one cannot be used (as [`Verifier::new`]).
    pub fn with_secrets<I>(secrets: I) -> Result<Self, SecretFormatError>
    where
        I: IntoIterator,
        I::Item: Into<Secret>,
    {
        let keys = secrets
            .into_iter()
            .map(|s| {
                let legacy = s.into();
                Ok(Key { standard: legacy.signing_key()?, legacy })
            })
            .collect::<Result<Vec<_>, SecretFormatError>>()?;
        if keys.is_empty() {
            return Err(SecretFormatError::Empty);
        }
        Ok(Self { keys: keys.into(), tolerance: DEFAULT_TOLERANCE, accept_legacy: false })
    }

    /// How far from now a `webhook-timestamp` may be (default 5 minutes).
    #[must_use]
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Also accept the legacy `X-Fastapihooks-Signature` when a request has
    /// no `webhook-signature` (default: off). The legacy scheme has no
    /// timestamp, so it cannot stop replays.
    #[must_use]
    pub fn accept_legacy(mut self, accept: bool) -> Self {
        self.accept_legacy = accept;
        self
    }

    /// Verifies a request: its headers and its exact body bytes, now.
    ///
    /// # Errors
    /// See [`VerifyError`].
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        self.verify_at(headers, body, Utc::now())
    }

    /// As [`Verifier::verify`], with `now` as the current time.
    ///
    /// # Errors
    /// See [`VerifyError`].
    pub fn verify_at(&self, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<Verified, VerifyError> {
        if self.accept_legacy
            && !headers.contains_key(WEBHOOK_SIGNATURE_HEADER)
            && headers.contains_key(SIGNATURE_HEADER)
        {
            return self.verify_legacy(headers, body);
        }
        let id = header(headers, WEBHOOK_ID_HEADER)?;
        let ts_text = header(headers, WEBHOOK_TIMESTAMP_HEADER)?;
        let sig_text = header(headers, WEBHOOK_SIGNATURE_HEADER)?;
        if id.is_empty() {
            return Err(VerifyError::BadFormat { header: WEBHOOK_ID_HEADER, reason: "empty" });
        }
        let timestamp = parse_timestamp(ts_text)?;
        check_timestamp(timestamp, now, self.tolerance)?;
        let signatures = parse_signatures(sig_text)?;
        let mut found = Choice::from(0);
        for key in self.keys.iter() {
            let expected = standard_mac(key.standard.expose(), id, ts_text, body);
            for sig in &signatures {
                found |= expected.ct_eq(sig);
            }
        }
        if bool::from(found) {
            Ok(Verified {
                scheme: SignatureScheme::StandardWebhooks,
                id: Some(id.to_owned()),
                timestamp: Some(timestamp),
            })
        } else {
            Err(VerifyError::NoMatchingSignature)
        }
    }

    /// Verifies only the legacy `X-Fastapihooks-Signature` header (whatever
    /// [`Verifier::accept_legacy`] says). No replay protection.
    ///
    /// # Errors
    /// The header is missing or malformed, or does not match.
    pub fn verify_legacy(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        let sig = parse_legacy_signature(header(headers, SIGNATURE_HEADER)?)?;
        let mut found = Choice::from(0);
        for key in self.keys.iter() {
            found |= legacy_mac(key.legacy.expose().as_bytes(), body).ct_eq(&sig);
        }
        if bool::from(found) {
            Ok(Verified { scheme: SignatureScheme::Legacy, id: None, timestamp: None })
        } else {
            Err(VerifyError::NoMatchingSignature)
        }
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<&'h str, VerifyError> {
    let value = headers.get(name).ok_or(VerifyError::MissingHeader(name))?;
    value.to_str().map(str::trim).map_err(|_| VerifyError::BadFormat { header: name, reason: "not visible ASCII" })
}

fn check_timestamp(timestamp: i64, now: DateTime<Utc>, tolerance: Duration) -> Result<(), VerifyError> {
    let tolerance_secs = tolerance.as_secs();
    let diff = i128::from(now.timestamp()) - i128::from(timestamp);
    let abs = u64::try_from(diff.unsigned_abs()).unwrap_or(u64::MAX);
    if abs <= tolerance_secs {
        Ok(())
    } else if diff > 0 {
        Err(VerifyError::TimestampTooOld { age_secs: abs, tolerance_secs })
    } else {
        Err(VerifyError::TimestampTooNew { ahead_secs: abs, tolerance_secs })
    }
}

/// Parses a `webhook-timestamp` value: Unix seconds, ASCII digits only.
///
/// # Errors
/// [`VerifyError::BadFormat`] for anything else (signs, fractions, overflow).
pub fn parse_timestamp(value: &str) -> Result<i64, VerifyError> {
    let bad = |reason| VerifyError::BadFormat { header: WEBHOOK_TIMESTAMP_HEADER, reason };
    if value.is_empty() || value.len() > MAX_TIMESTAMP_LEN || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("expected Unix seconds (ASCII digits)"));
    }
    value.parse().map_err(|_| bad("out of range"))
}

/// Parses a `webhook-signature` value: space-separated `version,base64`
/// entries. Returns the `v1` signatures; entries of other versions, and
/// entries that are not `version,signature`, are skipped.
///
/// # Errors
/// [`VerifyError::BadFormat`] when no well-formed `v1` signature is found.
pub fn parse_signatures(value: &str) -> Result<Vec<[u8; 32]>, VerifyError> {
    let sigs: Vec<[u8; 32]> = value
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, b64)| BASE64.decode(b64).ok())
        .filter_map(|raw| <[u8; 32]>::try_from(raw).ok())
        .collect();
    if sigs.is_empty() {
        return Err(VerifyError::BadFormat { header: WEBHOOK_SIGNATURE_HEADER, reason: "no `v1,<base64>` signature" });
    }
    Ok(sigs)
}

/// Parses a legacy `X-Fastapihooks-Signature` value: `sha256=` and 64 hex
/// digits (either case).
///
/// # Errors
/// [`VerifyError::BadFormat`] for anything else.
pub fn parse_legacy_signature(value: &str) -> Result<[u8; 32], VerifyError> {
    let bad = |reason| VerifyError::BadFormat { header: SIGNATURE_HEADER, reason };
    let hex_part = value.strip_prefix("sha256=").ok_or(bad("expected `sha256=<hex>`"))?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| bad("expected 64 hex digits"))?;
    Ok(out)
}

#[cfg(test)]
mod tests;
