use chrono::{DateTime, TimeZone, Utc};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::*;
use crate::secret::SigningSecret;
use crate::sign::{Signer, legacy_signature};

const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TS: i64 = 1_614_265_330;
const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn at(ts: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(ts, 0).single().unwrap()
}

fn spec_headers(sig: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(WEBHOOK_ID_HEADER, HeaderValue::from_static(SPEC_ID));
    h.insert(WEBHOOK_TIMESTAMP_HEADER, HeaderValue::from(SPEC_TS));
    h.insert(WEBHOOK_SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
    h
}

#[test]
fn verify_spec_test_vector() {
    let v = Verifier::new(SPEC_SECRET).unwrap();
    let ok = v.verify_at(&spec_headers(SPEC_SIG), SPEC_BODY, at(SPEC_TS)).unwrap();
    assert_eq!(
        ok,
        Verified { scheme: SignatureScheme::StandardWebhooks, id: Some(SPEC_ID.into()), timestamp: Some(SPEC_TS) }
    );
    // Unpadded secrets and signatures are accepted, as the reference libraries do.
    let unpadded = Verifier::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert!(unpadded.verify_at(&spec_headers(SPEC_SIG.trim_end_matches('=')), SPEC_BODY, at(SPEC_TS)).is_ok());
}

#[test]
fn verify_rejects_tampering() {
    let v = Verifier::new(SPEC_SECRET).unwrap();
    let now = at(SPEC_TS);
    assert_eq!(
        v.verify_at(&spec_headers(SPEC_SIG), br#"{"test": 2432232315}"#, now),
        Err(VerifyError::NoMatchingSignature)
    );
    let mut h = spec_headers(SPEC_SIG);
    h.insert(WEBHOOK_ID_HEADER, HeaderValue::from_static("msg_other"));
    assert_eq!(v.verify_at(&h, SPEC_BODY, now), Err(VerifyError::NoMatchingSignature));
    let mut h = spec_headers(SPEC_SIG);
    h.insert(WEBHOOK_TIMESTAMP_HEADER, HeaderValue::from(SPEC_TS + 1));
    assert_eq!(v.verify_at(&h, SPEC_BODY, now), Err(VerifyError::NoMatchingSignature));
    let other = Verifier::new("whsec_b3RoZXItc2VjcmV0LWtleS0xMjM0NTY=").unwrap();
    assert_eq!(other.verify_at(&spec_headers(SPEC_SIG), SPEC_BODY, now), Err(VerifyError::NoMatchingSignature));
}

#[test]
fn verify_several_signatures_and_versions() {
    let v = Verifier::new(SPEC_SECRET).unwrap();
    let now = at(SPEC_TS);
    let wrong = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
    assert!(v.verify_at(&spec_headers(&format!("{wrong} {SPEC_SIG}")), SPEC_BODY, now).is_ok());
    assert!(v.verify_at(&spec_headers(&format!("v2,abc {SPEC_SIG} v1a,xyz")), SPEC_BODY, now).is_ok());
    assert_eq!(v.verify_at(&spec_headers(wrong), SPEC_BODY, now), Err(VerifyError::NoMatchingSignature));
    // The right MAC under another version is not accepted.
    let v2 = SPEC_SIG.replacen("v1,", "v2,", 1);
    assert!(matches!(v.verify_at(&spec_headers(&v2), SPEC_BODY, now), Err(VerifyError::BadFormat { .. })));
}

#[test]
fn verify_timestamp_tolerance() {
    let v = Verifier::new(SPEC_SECRET).unwrap();
    let h = spec_headers(SPEC_SIG);
    assert!(v.verify_at(&h, SPEC_BODY, at(SPEC_TS + 300)).is_ok());
    assert!(v.verify_at(&h, SPEC_BODY, at(SPEC_TS - 300)).is_ok());
    assert_eq!(
        v.verify_at(&h, SPEC_BODY, at(SPEC_TS + 301)),
        Err(VerifyError::TimestampTooOld { age_secs: 301, tolerance_secs: 300 })
    );
    assert_eq!(
        v.verify_at(&h, SPEC_BODY, at(SPEC_TS - 301)),
        Err(VerifyError::TimestampTooNew { ahead_secs: 301, tolerance_secs: 300 })
    );
    let strict = v.clone().tolerance(Duration::from_secs(10));
    assert!(strict.verify_at(&h, SPEC_BODY, at(SPEC_TS + 11)).is_err());
    // Stale is checked before the signature, and both are 401.
    assert_eq!(VerifyError::TimestampTooOld { age_secs: 1, tolerance_secs: 0 }.status_code(), StatusCode::UNAUTHORIZED);
}

#[test]
fn verify_missing_and_malformed_headers() {
    let v = Verifier::new(SPEC_SECRET).unwrap();
    let now = at(SPEC_TS);
    for name in [WEBHOOK_ID_HEADER, WEBHOOK_TIMESTAMP_HEADER, WEBHOOK_SIGNATURE_HEADER] {
        let mut h = spec_headers(SPEC_SIG);
        h.remove(name);
        let err = v.verify_at(&h, SPEC_BODY, now).unwrap_err();
        assert_eq!(err, VerifyError::MissingHeader(name));
        assert_eq!(err.status_code(), StatusCode::UNAUTHORIZED);
    }
    for bad_ts in ["", "-1614265330", "+1614265330", "1614265330.5", "abc", "99999999999999999999"] {
        let mut h = spec_headers(SPEC_SIG);
        h.insert(WEBHOOK_TIMESTAMP_HEADER, HeaderValue::from_str(bad_ts).unwrap());
        let err = v.verify_at(&h, SPEC_BODY, now).unwrap_err();
        assert!(matches!(err, VerifyError::BadFormat { header: WEBHOOK_TIMESTAMP_HEADER, .. }), "{bad_ts}: {err}");
        assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
    }
    for bad_sig in ["", "v1", "v1,", "v1,!!!", "v1,AAAA", "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="] {
        let err = v.verify_at(&spec_headers(bad_sig), SPEC_BODY, now).unwrap_err();
        assert!(matches!(err, VerifyError::BadFormat { header: WEBHOOK_SIGNATURE_HEADER, .. }), "{bad_sig}: {err}");
    }
    let mut h = spec_headers(SPEC_SIG);
    h.insert(WEBHOOK_ID_HEADER, HeaderValue::from_bytes(b"\xffid").unwrap());
    assert!(matches!(v.verify_at(&h, SPEC_BODY, now), Err(VerifyError::BadFormat { .. })));
}

#[test]
fn verify_with_several_secrets() {
    let v = Verifier::with_secrets(["whsec_b3RoZXItc2VjcmV0LWtleS0xMjM0NTY=", SPEC_SECRET]).unwrap();
    assert!(v.verify_at(&spec_headers(SPEC_SIG), SPEC_BODY, at(SPEC_TS)).is_ok());
    assert_eq!(Verifier::with_secrets(Vec::<String>::new()).unwrap_err(), SecretFormatError::Empty);
    assert_eq!(Verifier::new("").unwrap_err(), SecretFormatError::Empty);
    assert_eq!(Verifier::new("whsec_").unwrap_err(), SecretFormatError::Empty);
    assert_eq!(Verifier::new("whsec_%%%").unwrap_err(), SecretFormatError::Base64);
}

#[test]
fn verify_legacy_header_only_when_enabled() {
    let secret = "seed-secret";
    let mut h = HeaderMap::new();
    h.insert(SIGNATURE_HEADER, HeaderValue::from_str(&legacy_signature(secret.as_bytes(), b"{}")).unwrap());
    let v = Verifier::new(secret).unwrap();
    assert_eq!(v.verify(&h, b"{}"), Err(VerifyError::MissingHeader(WEBHOOK_ID_HEADER)));
    assert_eq!(v.verify_legacy(&h, b"{}").unwrap().scheme, SignatureScheme::Legacy);
    let v = v.accept_legacy(true);
    assert_eq!(v.verify(&h, b"{}").unwrap().scheme, SignatureScheme::Legacy);
    assert_eq!(v.verify(&h, b"{ }"), Err(VerifyError::NoMatchingSignature));
    // Upper-case hex is accepted; other shapes are malformed.
    let upper = legacy_signature(secret.as_bytes(), b"{}").to_uppercase().replacen("SHA256=", "sha256=", 1);
    h.insert(SIGNATURE_HEADER, HeaderValue::from_str(&upper).unwrap());
    assert!(v.verify(&h, b"{}").is_ok());
    for bad in ["sha256=", "sha1=abcd", "sha256=zz", "deadbeef"] {
        h.insert(SIGNATURE_HEADER, HeaderValue::from_static(bad));
        assert!(matches!(v.verify(&h, b"{}"), Err(VerifyError::BadFormat { .. })), "{bad}");
    }
}

#[test]
fn sign_then_verify_round_trip_with_rotation() {
    let now = Utc::now();
    let new = SigningSecret::generate();
    let old = SigningSecret::expiring(Secret::generate(), now + chrono::Duration::minutes(10));
    let mut h = HeaderMap::new();
    Signer::new(None).sign("evt_1", now, b"[1,2]", &[new.clone(), old.clone()], &mut h).unwrap();
    for secret in [&new, &old] {
        let v = Verifier::new(secret.secret.clone()).unwrap().accept_legacy(true);
        assert!(v.verify_at(&h, b"[1,2]", now).is_ok());
    }
    // The legacy header is made with the newest secret only.
    assert!(Verifier::new(new.secret.clone()).unwrap().verify_legacy(&h, b"[1,2]").is_ok());
    assert!(Verifier::new(old.secret.clone()).unwrap().verify_legacy(&h, b"[1,2]").is_err());
}

#[test]
fn verifier_debug_shows_no_secret() {
    let v = Verifier::new(SPEC_SECRET).unwrap();
    let dbg = format!("{v:?}");
    assert!(!dbg.contains("MfKQ9r8G"), "{dbg}");
    let key = Secret::new(SPEC_SECRET).signing_key().unwrap();
    assert_eq!(format!("{key:?}"), "SigningKey([redacted])");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_parse_signatures_never_panics(s in ".*") {
        let _ = parse_signatures(&s);
    }

    #[test]
    fn prop_parse_signatures_structured_never_panics(
        entries in proptest::collection::vec(("[a-z0-9]{0,3}", "[A-Za-z0-9+/=,]{0,60}"), 0..5)
    ) {
        let s = entries.iter().map(|(v, b)| format!("{v},{b}")).collect::<Vec<_>>().join(" ");
        let _ = parse_signatures(&s);
    }

    #[test]
    fn prop_parse_timestamp_never_panics(s in ".*") {
        let _ = parse_timestamp(&s);
    }

    #[test]
    fn prop_parse_timestamp_digits(n in any::<u64>()) {
        let r = parse_timestamp(&n.to_string());
        prop_assert_eq!(r.ok(), i64::try_from(n).ok());
    }

    #[test]
    fn prop_parse_legacy_never_panics(s in ".*") {
        let _ = parse_legacy_signature(&s);
        let _ = parse_legacy_signature(&format!("sha256={s}"));
    }

    #[test]
    fn prop_secret_format_never_panics(s in ".*") {
        let _ = Secret::new(s.clone()).signing_key();
        let _ = Secret::new(format!("whsec_{s}")).signing_key();
        let _ = Verifier::new(s);
    }

    #[test]
    fn prop_verify_random_headers_never_panics(
        id in ".{0,40}", ts in ".{0,24}", sig in ".{0,120}", legacy in ".{0,80}", body in any::<Vec<u8>>(), now in any::<i64>()
    ) {
        let v = Verifier::new(SPEC_SECRET).unwrap().accept_legacy(true);
        let mut h = HeaderMap::new();
        for (name, value) in [(WEBHOOK_ID_HEADER, id), (WEBHOOK_TIMESTAMP_HEADER, ts), (WEBHOOK_SIGNATURE_HEADER, sig), (SIGNATURE_HEADER, legacy)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                h.insert(name, value);
            }
        }
        let now = DateTime::from_timestamp(now % 100_000_000_000, 0).unwrap_or_default();
        let _ = v.verify_at(&h, &body, now);
        let _ = v.verify_legacy(&h, &body);
    }

    #[test]
    fn prop_sign_verify_round_trip(key in proptest::collection::vec(any::<u8>(), 1..64), body in any::<Vec<u8>>(), ts in 0i64..4_000_000_000) {
        use base64::Engine as _;
        let secret = format!("whsec_{}", BASE64.encode(&key));
        let mut h = HeaderMap::new();
        Signer::new(Some(secret.clone().into())).sign("evt_x", at(ts), &body, &[], &mut h).unwrap();
        let v = Verifier::new(secret).unwrap();
        prop_assert!(v.verify_at(&h, &body, at(ts)).is_ok());
    }
}
