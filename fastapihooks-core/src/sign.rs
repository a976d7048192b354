//! Signing: the headers that let a receiver check a delivery came from us.
//!
//! The original's scheme: with a signing secret, `X-Fastapihooks-Signature:
//! sha256=<lower-case hex of HMAC-SHA256(secret, body)>`.

use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;

use crate::secret::Secret;

/// The legacy signature header's name.
pub const SIGNATURE_HEADER: &str = "x-fastapihooks-signature";

/// `sha256=<hex>`: the legacy signature of `body` with `secret`.
pub fn legacy_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    out.push_str(&hex::encode(digest));
    out
}

/// Signs deliveries. Holds the global signing secret, if any.
#[derive(Clone, Debug, Default)]
pub struct Signer {
    secret: Option<Secret>,
}

impl Signer {
    /// A signer with the global secret (`None`: deliveries are unsigned).
    pub fn new(secret: Option<Secret>) -> Self {
        Self { secret: secret.filter(|s| !s.is_empty()) }
    }

    /// True when deliveries are signed.
    pub fn is_enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// Adds the signature headers for one attempt of a delivery.
    pub(crate) fn sign(&self, body: &[u8], headers: &mut HeaderMap) {
        if let Some(secret) = &self.secret {
            let sig = legacy_signature(secret.expose().as_bytes(), body);
            if let Ok(value) = HeaderValue::from_str(&sig) {
                headers.insert(SIGNATURE_HEADER, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_signature_matches_known_hmac() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), RFC-style known value.
        assert_eq!(
            legacy_signature(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn no_secret_no_header() {
        let mut h = HeaderMap::new();
        Signer::new(None).sign(b"{}", &mut h);
        Signer::new(Some(Secret::new(""))).sign(b"{}", &mut h);
        assert!(h.is_empty());
        Signer::new(Some(Secret::new("k"))).sign(b"{}", &mut h);
        assert!(h[SIGNATURE_HEADER].to_str().unwrap().starts_with("sha256="));
    }
}
