//! [`Secret`]: a string that never shows itself in `Debug` or `Display`;
//! [`SigningSecret`]: a per-subscription signing secret, and rotation.
//!
//! # Secret formats
//!
//! A signing secret is a string. Its Standard Webhooks key (the HMAC key of
//! `webhook-signature`) is derived as the spec's libraries do:
//!
//! - `whsec_<base64>` (what [`Secret::generate`] makes): the key is the
//!   base64-decoded part after `whsec_` (padding optional);
//! - anything else (for example the seed's `"your-secret"`): the key is the
//!   string's UTF-8 bytes (the JavaScript library's `format: "raw"`, Python's
//!   `Webhook(b"...")`).
//!
//! The legacy `X-Fastapihooks-Signature` always uses the whole string's UTF-8
//! bytes (prefix included), as the original did.
//!
//! # Rotation
//!
//! [`rotate`] (and [`WebhookSubscription::rotate_secret`], [`rotate_stored_secret`](crate::store::rotate_stored_secret))
//! puts a new secret first and keeps the old ones until an expiry: until then
//! every active secret signs, so a receiver that knows either verifies.
//!
//! [`WebhookSubscription::rotate_secret`]: crate::WebhookSubscription::rotate_secret

use std::fmt;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The prefix of Standard Webhooks secrets.
pub const WHSEC_PREFIX: &str = "whsec_";

/// Random bytes in a generated secret (256 bits; the spec asks for 24 to 64).
const GENERATED_KEY_BYTES: usize = 32;

/// Base64 with the standard alphabet, padding optional (as the reference
/// libraries accept it).
pub(crate) const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Why a secret cannot be used to sign or verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFormatError {
    /// The secret, or its decoded key, is empty.
    #[error("signing secret is empty")]
    Empty,
    /// It starts with `whsec_` but the rest is not base64.
    #[error("signing secret starts with `whsec_` but the rest is not valid base64")]
    Base64,
}

/// A secret value: a bearer token, a signing secret.
///
/// Its `Debug` and `Display` print `[redacted]`, so a secret that ends up in a
/// log line or a panic message does not leak. Read it with
/// [`Secret::expose`], only where it is used. Serialization writes the value
/// itself (stores must persist it): keep serialized subscriptions out of logs.
#[derive(Clone)]
pub struct Secret {
    value: String,
    /// The HMAC states keyed with this secret, made on first use: each
    /// signature then starts from a copy instead of decoding the key and
    /// hashing it again (two SHA-256 blocks per signature). Shared by clones.
    keyed: OnceLock<Arc<KeyedMacs>>,
}

/// HMAC-SHA256 states that have absorbed a secret's key.
pub(crate) struct KeyedMacs {
    /// Keyed with the Standard Webhooks key, or why there is none.
    pub(crate) standard: Result<Hmac<Sha256>, SecretFormatError>,
    /// Keyed with the whole string (the legacy scheme).
    pub(crate) legacy: Hmac<Sha256>,
}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self { value: value.into(), keyed: OnceLock::new() }
    }

    /// The secret value itself. Use it only where it is needed.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// True when the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// The HMAC states keyed with this secret (made once, then copied).
    pub(crate) fn keyed(&self) -> &KeyedMacs {
        self.keyed.get_or_init(|| {
            Arc::new(KeyedMacs {
                standard: self.signing_key().map(|key| key.mac()),
                legacy: mac_with(self.value.as_bytes()),
            })
        })
    }

    /// A new random Standard Webhooks secret: `whsec_` and the base64 of 32
    /// bytes from the operating system's CSPRNG-seeded thread generator.
    pub fn generate() -> Self {
        let bytes: [u8; GENERATED_KEY_BYTES] = rand::random();
        let mut s = String::with_capacity(WHSEC_PREFIX.len() + 44);
        s.push_str(WHSEC_PREFIX);
        BASE64.encode_string(bytes, &mut s);
        Self::new(s)
    }

    /// The Standard Webhooks HMAC key of this secret (see the [module
    /// docs](self) for the formats).
    ///
    /// # Errors
    /// The secret is empty, or `whsec_` is followed by invalid base64 or nothing.
    pub fn signing_key(&self) -> Result<SigningKey, SecretFormatError> {
        SigningKey::from_secret(&self.value)
    }
}

/// An HMAC-SHA256 state keyed with `key`.
pub(crate) fn mac_with(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// An HMAC key derived from a [`Secret`]. Its `Debug` is redacted.
#[derive(Clone)]
pub struct SigningKey(Arc<[u8]>);

impl SigningKey {
    /// The Standard Webhooks key of `secret` (see the [module docs](self)).
    ///
    /// # Errors
    /// As [`Secret::signing_key`].
    pub fn from_secret(secret: &str) -> Result<Self, SecretFormatError> {
        let key = match secret.strip_prefix(WHSEC_PREFIX) {
            Some(b64) => BASE64.decode(b64.trim_end()).map_err(|_| SecretFormatError::Base64)?,
            None => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(SecretFormatError::Empty);
        }
        Ok(Self(key.into()))
    }

    /// A key made of these bytes (for keys that are not strings).
    ///
    /// # Errors
    /// [`SecretFormatError::Empty`] for no bytes.
    pub fn from_bytes(key: impl Into<Vec<u8>>) -> Result<Self, SecretFormatError> {
        let key = key.into();
        if key.is_empty() { Err(SecretFormatError::Empty) } else { Ok(Self(key.into())) }
    }

    /// The key bytes. Use them only where they are needed.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// An HMAC-SHA256 state keyed with this key.
    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        mac_with(&self.0)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl PartialEq for Secret {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        self.value.as_bytes().ct_eq(other.value.as_bytes()).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.value)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// A per-subscription signing secret, with an optional expiry for rotation:
/// until `expires_at`, an old secret keeps signing beside the new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SigningSecret {
    /// The secret (Standard Webhooks form: `whsec_` + base64).
    pub secret: Secret,
    /// When this secret stops signing; `None` never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl SigningSecret {
    /// A secret that does not expire.
    pub fn new(secret: impl Into<Secret>) -> Self {
        Self { secret: secret.into(), expires_at: None }
    }

    /// A new random secret ([`Secret::generate`]) that does not expire.
    pub fn generate() -> Self {
        Self::new(Secret::generate())
    }

    /// A secret that stops signing at `expires_at`.
    pub fn expiring(secret: impl Into<Secret>, expires_at: DateTime<Utc>) -> Self {
        Self { secret: secret.into(), expires_at: Some(expires_at) }
    }

    /// True when this secret signs at `now` (no expiry, or `now` before it).
    pub fn is_active_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }

    /// Checks that the secret can sign.
    ///
    /// # Errors
    /// As [`Secret::signing_key`].
    pub fn validate(&self) -> Result<(), SecretFormatError> {
        self.secret.signing_key().map(drop)
    }
}

/// Rotates a subscription's secrets: `new` first, then the secrets of
/// `secrets` still active at `now`, each kept until `old_valid_until` at the
/// latest (an earlier expiry they already have is kept). Expired secrets are
/// dropped.
///
/// Until `old_valid_until`, every delivery carries one `v1,` signature per
/// secret, so receivers can switch to the new secret at any time in between.
pub fn rotate(
    secrets: &[SigningSecret],
    new: SigningSecret,
    old_valid_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<SigningSecret> {
    let mut out = Vec::with_capacity(secrets.len() + 1);
    out.push(new);
    for old in secrets.iter().filter(|s| s.is_active_at(now)) {
        let until = old.expires_at.map_or(old_valid_until, |at| at.min(old_valid_until));
        if until > now {
            out.push(SigningSecret::expiring(old.secret.clone(), until));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn generated_secrets_are_whsec_base64_of_32_random_bytes() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(WHSEC_PREFIX), "{}", a.expose());
        assert_eq!(a.signing_key().unwrap().expose().len(), GENERATED_KEY_BYTES);
        assert_eq!(format!("{a:?}"), "[redacted]");
    }

    #[test]
    fn signing_key_formats() {
        assert_eq!(Secret::new("whsec_aGVsbG8=").signing_key().unwrap().expose(), b"hello");
        assert_eq!(Secret::new("whsec_aGVsbG8").signing_key().unwrap().expose(), b"hello");
        assert_eq!(Secret::new("your-secret").signing_key().unwrap().expose(), b"your-secret");
        assert_eq!(Secret::new("").signing_key().unwrap_err(), SecretFormatError::Empty);
        assert_eq!(Secret::new("whsec_").signing_key().unwrap_err(), SecretFormatError::Empty);
        assert_eq!(Secret::new("whsec_a-b_").signing_key().unwrap_err(), SecretFormatError::Base64);
        assert!(SigningKey::from_bytes(Vec::new()).is_err());
    }

    #[test]
    fn signing_secret_serde_shape_is_stable() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let json = serde_json::to_value(SigningSecret::expiring("whsec_aGVsbG8=", at)).unwrap();
        assert_eq!(json, serde_json::json!({"secret": "whsec_aGVsbG8=", "expires_at": "2023-11-14T22:13:20Z"}));
        let json = serde_json::to_value(SigningSecret::new("k")).unwrap();
        assert_eq!(json, serde_json::json!({"secret": "k"}));
        let back: SigningSecret = serde_json::from_value(json).unwrap();
        assert_eq!(back, SigningSecret::new("k"));
    }

    #[test]
    fn rotate_puts_new_first_and_bounds_the_old() {
        let now = Utc::now();
        let later = now + chrono::Duration::hours(24);
        let soon = now + chrono::Duration::hours(1);
        let old = vec![
            SigningSecret::new("a"),
            SigningSecret::expiring("b", soon),
            SigningSecret::expiring("gone", now - chrono::Duration::seconds(1)),
        ];
        let out = rotate(&old, SigningSecret::new("new"), later, now);
        assert_eq!(
            out,
            vec![SigningSecret::new("new"), SigningSecret::expiring("a", later), SigningSecret::expiring("b", soon)]
        );
        // Rotating from nothing: only the new one.
        assert_eq!(rotate(&[], SigningSecret::new("n"), later, now), vec![SigningSecret::new("n")]);
        // An overlap already over keeps only the new one.
        assert_eq!(rotate(&old, SigningSecret::new("n"), now, now), vec![SigningSecret::new("n")]);
    }

    #[test]
    fn signing_secret_debug_is_redacted() {
        let s = SigningSecret::expiring("whsec_c3VwZXJzZWNyZXQ=", Utc::now());
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("c3VwZXJzZWNyZXQ"), "{dbg}");
        assert!(dbg.contains("[redacted]"), "{dbg}");
    }

    #[test]
    fn equality_compares_values() {
        assert_eq!(Secret::new("a"), Secret::new("a"));
        assert_ne!(Secret::new("a"), Secret::new("b"));
        assert_ne!(Secret::new("a"), Secret::new("ab"));
    }
}
