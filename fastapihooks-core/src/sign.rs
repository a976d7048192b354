//! Signing: the headers that let a receiver check a delivery came from us.
//!
//! Two schemes, both sent by default (see
//! [`FastapihooksBuilder::signature_schemes`](crate::FastapihooksBuilder::signature_schemes)):
//!
//! - [Standard Webhooks](https://www.standardwebhooks.com/) (the spec Svix
//!   and others use): `webhook-id` (the event id, the same on every retry),
//!   `webhook-timestamp` (Unix seconds of this attempt) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
//!   one space-separated `v1,` value per active secret during a rotation.
//!   Receivers check the timestamp, so a captured delivery cannot be replayed
//!   later than their tolerance (5 minutes by default).
//! - The original's legacy scheme: `X-Fastapihooks-Signature: sha256=<lower-case
//!   hex of HMAC-SHA256(secret, body)>`, made with the newest active secret.
//!   It has no timestamp (no replay guard) and carries one signature (no
//!   overlap during a rotation); it is kept so the seed's receivers still work.
//!
//! Which secrets sign a delivery: the subscription's own
//! [`secrets`](crate::WebhookSubscription::secrets) that are active at the
//! attempt's time, or, when it has none, the global
//! [`signing_secret`](crate::FastapihooksBuilder::signing_secret). With
//! neither, deliveries carry no signature headers. How a secret becomes an
//! HMAC key: see [`crate::secret`].
//!
//! ```
//! use fastapihooks_core::secret::Secret;
//! use fastapihooks_core::sign::standard_signature;
//!
//! // The spec's test vector.
//! let key = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").signing_key()?;
//! let sig = standard_signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
//! assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
//! # Ok::<(), fastapihooks_core::secret::SecretFormatError>(())
//! ```

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;

use crate::secret::{BASE64, Secret, SecretFormatError, SigningKey, SigningSecret, mac_with};

/// The legacy signature header's name.
pub const SIGNATURE_HEADER: &str = "x-fastapihooks-signature";
/// Standard Webhooks: the message id header (the event id).
pub const WEBHOOK_ID_HEADER: &str = "webhook-id";
/// Standard Webhooks: the Unix-seconds timestamp header.
pub const WEBHOOK_TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Standard Webhooks: the signature header (`v1,<base64>`, space-separated).
pub const WEBHOOK_SIGNATURE_HEADER: &str = "webhook-signature";

/// A signature scheme deliveries can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureScheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// The original's `X-Fastapihooks-Signature: sha256=<hex>`.
    Legacy,
}

/// A set of [`SignatureScheme`]s. The default holds both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureSchemes {
    standard: bool,
    legacy: bool,
}

impl Default for SignatureSchemes {
    fn default() -> Self {
        Self { standard: true, legacy: true }
    }
}

impl SignatureSchemes {
    /// No scheme: deliveries are never signed.
    pub fn none() -> Self {
        Self { standard: false, legacy: false }
    }

    /// True when `scheme` is in the set.
    pub fn contains(&self, scheme: SignatureScheme) -> bool {
        match scheme {
            SignatureScheme::StandardWebhooks => self.standard,
            SignatureScheme::Legacy => self.legacy,
        }
    }

    /// Adds `scheme`.
    #[must_use]
    pub fn with(mut self, scheme: SignatureScheme) -> Self {
        match scheme {
            SignatureScheme::StandardWebhooks => self.standard = true,
            SignatureScheme::Legacy => self.legacy = true,
        }
        self
    }
}

impl FromIterator<SignatureScheme> for SignatureSchemes {
    fn from_iter<I: IntoIterator<Item = SignatureScheme>>(iter: I) -> Self {
        iter.into_iter().fold(Self::none(), Self::with)
    }
}

/// The raw Standard Webhooks MAC: HMAC-SHA256 of `"{id}.{timestamp}.{body}"`,
/// with `timestamp` exactly as it appears in the header.
pub(crate) fn standard_mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    standard_mac_keyed(mac_with(key), id, timestamp, body)
}

/// [`standard_mac`] from a state already keyed.
fn standard_mac_keyed(mut mac: Hmac<Sha256>, id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The raw legacy MAC: HMAC-SHA256 of the body.
pub(crate) fn legacy_mac(key: &[u8], body: &[u8]) -> [u8; 32] {
    legacy_mac_keyed(mac_with(key), body)
}

/// [`legacy_mac`] from a state already keyed.
fn legacy_mac_keyed(mut mac: Hmac<Sha256>, body: &[u8]) -> [u8; 32] {
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// `v1,<base64>`: the Standard Webhooks signature of one message.
pub fn standard_signature(key: &SigningKey, id: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = standard_mac(key.expose(), id, &timestamp.to_string(), body);
    let mut out = String::with_capacity(3 + 44);
    out.push_str("v1,");
    BASE64.encode_string(digest, &mut out);
    out
}

/// `sha256=<hex>`: the legacy signature of `body` with `secret`.
pub fn legacy_signature(secret: &[u8], body: &[u8]) -> String {
    let digest = legacy_mac(secret, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    out.push_str(&hex::encode(digest));
    out
}

/// Why a delivery could not be signed. The delivery is not sent unsigned:
/// it fails (without retries) and goes to `on_failure`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The subscription has secrets, and every one has expired.
    #[error("every signing secret of the subscription has expired")]
    AllSecretsExpired,
    /// A secret cannot be used as a key.
    #[error("invalid signing secret: {0}")]
    Secret(#[from] SecretFormatError),
    /// The message id cannot be sent as a header value.
    #[error("the event id is not a valid header value")]
    InvalidId,
}

/// Signs deliveries: holds the global signing secret, if any, and the
/// schemes to send.
#[derive(Clone, Debug, Default)]
pub struct Signer {
    secret: Option<Secret>,
    schemes: SignatureSchemes,
}

impl Signer {
    /// A signer with the global secret (`None`: deliveries of subscriptions
    /// without secrets of their own are unsigned), sending both schemes.
    pub fn new(secret: Option<Secret>) -> Self {
        Self { secret: secret.filter(|s| !s.is_empty()), schemes: SignatureSchemes::default() }
    }

    /// Sends only these schemes.
    #[must_use]
    pub fn with_schemes(mut self, schemes: SignatureSchemes) -> Self {
        self.schemes = schemes;
        self
    }

    /// The schemes sent.
    pub fn schemes(&self) -> SignatureSchemes {
        self.schemes
    }

    /// True when deliveries without secrets of their own are signed.
    pub fn is_enabled(&self) -> bool {
        self.secret.is_some() && self.schemes != SignatureSchemes::none()
    }

    /// Adds the signature headers for one attempt of a delivery: message
    /// `id` (the event id), attempted at `at`, of `body`, to a subscription
    /// with `secrets` (newest first; empty: the global secret signs).
    ///
    /// # Errors
    /// The subscription's secrets have all expired, one cannot be used as a
    /// key, or `id` is not a valid header value. Nothing is added then.
    pub fn sign(
        &self,
        id: &str,
        at: DateTime<Utc>,
        body: &[u8],
        secrets: &[SigningSecret],
        headers: &mut HeaderMap,
    ) -> Result<(), SignError> {
        self.sign_into(id, at, body, secrets, headers)
    }

    /// [`sign`](Self::sign), writing the headers to any sink: the sender
    /// writes them straight into the request buffer.
    pub(crate) fn sign_into(
        &self,
        id: &str,
        at: DateTime<Utc>,
        body: &[u8],
        secrets: &[SigningSecret],
        headers: &mut impl HeaderSink,
    ) -> Result<(), SignError> {
        // The subscription's active secrets, or (when it has none) the global one.
        let global = if secrets.is_empty() { self.secret.as_ref() } else { None };
        let active = || global.into_iter().chain(secrets.iter().filter(move |s| s.is_active_at(at)).map(|s| &s.secret));
        let Some(newest) = active().next() else {
            return if secrets.is_empty() { Ok(()) } else { Err(SignError::AllSecretsExpired) };
        };
        let mut standard = None;
        let mut digits = [0; 20];
        let before_1970;
        if self.schemes.standard {
            let timestamp = match u64::try_from(at.timestamp()) {
                Ok(secs) => crate::wire::decimal(secs, &mut digits),
                Err(_) => {
                    before_1970 = at.timestamp().to_string();
                    &before_1970
                }
            };
            let mut value = String::with_capacity(active().count() * 48);
            for secret in active() {
                if !value.is_empty() {
                    value.push(' ');
                }
                let key = secret.keyed().standard.clone()?;
                let digest = standard_mac_keyed(key, id, timestamp, body);
                value.push_str("v1,");
                BASE64.encode_string(digest, &mut value);
            }
            if !crate::wire::is_valid_header_value(id.as_bytes()) {
                return Err(SignError::InvalidId);
            }
            standard = Some((timestamp, value));
        }
        // Computed before anything is written: on an error nothing is added.
        let legacy = self.schemes.legacy.then(|| {
            let mut out = [0u8; 7 + 64];
            out[..7].copy_from_slice(b"sha256=");
            let digest = legacy_mac_keyed(newest.keyed().legacy.clone(), body);
            hex::encode_to_slice(digest, &mut out[7..]).expect("64 hex digits fit");
            out
        });
        if let Some((timestamp, value)) = &standard {
            headers.push(WEBHOOK_ID_HEADER, id);
            headers.push(WEBHOOK_TIMESTAMP_HEADER, timestamp);
            headers.push(WEBHOOK_SIGNATURE_HEADER, value);
        }
        if let Some(legacy) = &legacy {
            headers.push(SIGNATURE_HEADER, std::str::from_utf8(legacy).expect("ASCII"));
        }
        Ok(())
    }
}

/// Where signature headers go: an `http::HeaderMap`, or a request being
/// written.
pub(crate) trait HeaderSink {
    /// Adds one header. `value` is a valid header value.
    fn push(&mut self, name: &'static str, value: &str);
}

impl HeaderSink for HeaderMap {
    fn push(&mut self, name: &'static str, value: &str) {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn spec_time() -> DateTime<Utc> {
        Utc.timestamp_opt(SPEC_TS, 0).single().unwrap()
    }

    #[test]
    fn timestamps_before_and_after_1970_are_signed_as_written() {
        for secs in [0, 1_614_265_330, -86_400] {
            let at = Utc.timestamp_opt(secs, 0).single().unwrap();
            let mut h = HeaderMap::new();
            Signer::new(Some(Secret::new(SPEC_SECRET))).sign(SPEC_ID, at, SPEC_BODY, &[], &mut h).unwrap();
            assert_eq!(h[WEBHOOK_TIMESTAMP_HEADER], secs.to_string());
            let key = Secret::new(SPEC_SECRET).signing_key().unwrap();
            assert_eq!(h[WEBHOOK_SIGNATURE_HEADER], standard_signature(&key, SPEC_ID, secs, SPEC_BODY));
        }
    }

    #[test]
    fn legacy_signature_matches_known_hmac() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), RFC-style known value.
        assert_eq!(
            legacy_signature(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn standard_signature_matches_the_spec_test_vector() {
        let key = Secret::new(SPEC_SECRET).signing_key().unwrap();
        assert_eq!(standard_signature(&key, SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
    }

    #[test]
    fn signer_sends_the_spec_test_vector_headers() {
        let mut h = HeaderMap::new();
        let signer = Signer::new(Some(Secret::new(SPEC_SECRET)));
        signer.sign(SPEC_ID, spec_time(), SPEC_BODY, &[], &mut h).unwrap();
        assert_eq!(h[WEBHOOK_ID_HEADER], SPEC_ID);
        assert_eq!(h[WEBHOOK_TIMESTAMP_HEADER], "1614265330");
        assert_eq!(h[WEBHOOK_SIGNATURE_HEADER], SPEC_SIG);
        // The legacy header uses the whole secret string, as the seed did.
        assert_eq!(h[SIGNATURE_HEADER].to_str().unwrap(), legacy_signature(SPEC_SECRET.as_bytes(), SPEC_BODY));
    }

    #[test]
    fn a_secret_signs_the_same_from_its_cached_key_in_clones_and_after_serde() {
        let secret = SigningSecret::new(SPEC_SECRET);
        let sign = |secret: &SigningSecret| {
            let mut h = HeaderMap::new();
            Signer::new(None).sign(SPEC_ID, spec_time(), SPEC_BODY, std::slice::from_ref(secret), &mut h).unwrap();
            (h[WEBHOOK_SIGNATURE_HEADER].clone(), h[SIGNATURE_HEADER].clone())
        };
        let first = sign(&secret);
        assert_eq!(first.0, SPEC_SIG);
        assert_eq!(sign(&secret), first, "the cached keyed state signs the same");
        assert_eq!(sign(&secret.clone()), first);
        let json = serde_json::to_string(&secret).unwrap();
        assert!(json.contains(SPEC_SECRET), "serialized as the value itself: {json}");
        assert_eq!(sign(&serde_json::from_str(&json).unwrap()), first);
        // A bad secret stays an error on every use.
        let bad = SigningSecret::new("whsec_***");
        for _ in 0..2 {
            let err =
                Signer::new(None).sign("evt_1", Utc::now(), b"{}", std::slice::from_ref(&bad), &mut HeaderMap::new());
            assert_eq!(err.unwrap_err(), SignError::Secret(SecretFormatError::Base64));
        }
    }

    #[test]
    fn no_secret_no_header() {
        let mut h = HeaderMap::new();
        Signer::new(None).sign("evt_1", Utc::now(), b"{}", &[], &mut h).unwrap();
        Signer::new(Some(Secret::new(""))).sign("evt_1", Utc::now(), b"{}", &[], &mut h).unwrap();
        assert!(h.is_empty());
        Signer::new(Some(Secret::new("k"))).sign("evt_1", Utc::now(), b"{}", &[], &mut h).unwrap();
        assert!(h[SIGNATURE_HEADER].to_str().unwrap().starts_with("sha256="));
        assert!(h[WEBHOOK_SIGNATURE_HEADER].to_str().unwrap().starts_with("v1,"));
    }

    #[test]
    fn signing_schemes_are_configurable() {
        let only_standard: SignatureSchemes = [SignatureScheme::StandardWebhooks].into_iter().collect();
        let mut h = HeaderMap::new();
        Signer::new(Some("k".into()))
            .with_schemes(only_standard)
            .sign("evt_1", Utc::now(), b"{}", &[], &mut h)
            .unwrap();
        assert!(h.contains_key(WEBHOOK_SIGNATURE_HEADER) && !h.contains_key(SIGNATURE_HEADER));

        let only_legacy: SignatureSchemes = [SignatureScheme::Legacy].into_iter().collect();
        let mut h = HeaderMap::new();
        Signer::new(Some("k".into())).with_schemes(only_legacy).sign("evt_1", Utc::now(), b"{}", &[], &mut h).unwrap();
        assert!(!h.contains_key(WEBHOOK_SIGNATURE_HEADER) && !h.contains_key(WEBHOOK_ID_HEADER));
        assert!(h.contains_key(SIGNATURE_HEADER));

        let signer = Signer::new(Some("k".into())).with_schemes(SignatureSchemes::none());
        assert!(!signer.is_enabled());
        let mut h = HeaderMap::new();
        signer.sign("evt_1", Utc::now(), b"{}", &[], &mut h).unwrap();
        assert!(h.is_empty());
    }

    #[test]
    fn subscription_secrets_replace_the_global_one_and_all_active_sign() {
        let now = Utc::now();
        let new = SigningSecret::new(SPEC_SECRET);
        let old = SigningSecret::expiring("whsec_b2xkLXNlY3JldC1rZXk=", now + chrono::Duration::minutes(1));
        let gone = SigningSecret::expiring("whsec_Z29uZQ==", now - chrono::Duration::minutes(1));
        let mut h = HeaderMap::new();
        Signer::new(Some("global".into())).sign("evt_1", now, b"{}", &[new, old.clone(), gone], &mut h).unwrap();
        let sigs: Vec<&str> = h[WEBHOOK_SIGNATURE_HEADER].to_str().unwrap().split(' ').collect();
        assert_eq!(sigs.len(), 2, "{sigs:?}");
        let key = old.secret.signing_key().unwrap();
        assert_eq!(sigs[1], standard_signature(&key, "evt_1", now.timestamp(), b"{}"));
        // Legacy: the newest secret.
        assert_eq!(h[SIGNATURE_HEADER].to_str().unwrap(), legacy_signature(SPEC_SECRET.as_bytes(), b"{}"));
    }

    #[test]
    fn all_expired_refuses_to_sign() {
        let now = Utc::now();
        let gone = SigningSecret::expiring("whsec_Z29uZQ==", now);
        let mut h = HeaderMap::new();
        let err = Signer::new(Some("global".into())).sign("evt_1", now, b"{}", &[gone], &mut h).unwrap_err();
        assert_eq!(err, SignError::AllSecretsExpired);
        assert!(h.is_empty());
        let bad = SigningSecret::new("whsec_***");
        let err = Signer::new(None).sign("evt_1", now, b"{}", &[bad], &mut h).unwrap_err();
        assert_eq!(err, SignError::Secret(SecretFormatError::Base64));
        assert!(h.is_empty());
    }
}
