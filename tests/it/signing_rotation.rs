//! Secret rotation: during the overlap receivers with only the old secret
//! and with only the new one both verify; after the expiry only the new one.

use std::time::Duration;

use fastapihooks::store::rotate_stored_secret;
use fastapihooks::{Emission, MemoryStore, SigningSecret, Store, Verifier, VerifyError, WebhookSubscription};
use serde_json::json;

use crate::signing_util::{Receiver, local_hooks, python_verify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_rotation_overlap_then_expiry() {
    let mut receiver = Receiver::start().await;
    let store = MemoryStore::new();
    let id = store.add("e", WebhookSubscription::new(receiver.url("/h")).unwrap().generated_secret()).await.unwrap();
    let old = store.get(&id).await.unwrap().unwrap().current_secret().unwrap().clone();
    let hooks = local_hooks().store(store.clone()).build().unwrap();

    // Rotate: the new secret signs from now on, the old one for 2 more seconds.
    let new = SigningSecret::generate();
    let overlap_ends = chrono::Utc::now() + chrono::Duration::seconds(2);
    assert!(rotate_stored_secret(&store, &id, new.clone(), overlap_ends).await.unwrap());
    let stored = store.get(&id).await.unwrap().unwrap();
    assert_eq!(stored.secrets.len(), 2);
    assert_eq!(stored.current_secret(), Some(&new.secret));
    assert_eq!(stored.secrets[1].expires_at, Some(overlap_ends));
    assert!(!rotate_stored_secret(&store, "sub_missing", SigningSecret::generate(), overlap_ends).await.unwrap());

    let old_only = Verifier::new(old.clone()).unwrap();
    let new_only = Verifier::new(new.secret.clone()).unwrap();

    hooks.emit(Emission::new("e").response_value(json!({"n": 1}))).unwrap();
    let (_, during) = receiver.next().await;
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);
    old_only.verify(&during.headers, &during.body).expect("old-only receiver verifies during the overlap");
    new_only.verify(&during.headers, &during.body).expect("new-only receiver verifies during the overlap");
    assert_eq!(python_verify(&[(old.expose(), &during), (new.secret.expose(), &during)]), ["ok", "ok"]);

    // After the expiry: only the new secret signs.
    let wait = (overlap_ends - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100);
    tokio::time::sleep(wait).await;
    hooks.emit(Emission::new("e").response_value(json!({"n": 2}))).unwrap();
    let (_, after) = receiver.next().await;
    assert_eq!(after.header("webhook-signature").split(' ').count(), 1);
    assert_eq!(old_only.verify(&after.headers, &after.body), Err(VerifyError::NoMatchingSignature));
    new_only.verify(&after.headers, &after.body).expect("new-only receiver verifies after the expiry");
    let results = python_verify(&[(old.expose(), &after), (new.secret.expose(), &after)]);
    assert!(results[0].starts_with("err") && results[1] == "ok", "{results:?}");
    hooks.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_rotation_receiver_may_hold_both_secrets() {
    // A receiver mid-migration can accept either secret.
    let mut receiver = Receiver::start().await;
    let mut sub = WebhookSubscription::new(receiver.url("/h")).unwrap().generated_secret();
    let old = sub.current_secret().unwrap().clone();
    let new = fastapihooks::Secret::generate();
    sub.rotate_secret(new.clone(), chrono::Utc::now()); // no overlap: the old one is gone at once
    assert_eq!(sub.secrets.len(), 1);
    let hooks = local_hooks().subscriber("e", sub).build().unwrap();
    hooks.emit(Emission::new("e").response_value(json!(1))).unwrap();
    let (_, d) = receiver.next().await;
    Verifier::with_secrets([old.clone(), new]).unwrap().verify(&d.headers, &d.body).unwrap();
    assert!(Verifier::new(old).unwrap().verify(&d.headers, &d.body).is_err());
    hooks.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_rotation_all_expired_is_never_sent_unsigned() {
    let mut receiver = Receiver::start().await;
    let dead = fastapihooks::InMemoryDeadLetterQueue::new(10);
    let mut sub = WebhookSubscription::new(receiver.url("/h")).unwrap();
    sub.secrets = vec![SigningSecret::expiring(fastapihooks::Secret::generate(), chrono::Utc::now())];
    let hooks = local_hooks().signing_secret("global").subscriber("e", sub).on_failure(dead.clone()).build().unwrap();
    hooks.emit(Emission::new("e").response_value(json!(1))).unwrap();
    hooks.shutdown(Duration::from_secs(5)).await;
    assert!(tokio::time::timeout(Duration::from_millis(200), receiver.next()).await.is_err(), "nothing was sent");
    let failures = dead.entries();
    assert_eq!(failures.len(), 1);
    assert!(failures[0].error.to_string().contains("expired"), "{}", failures[0].error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_rotation_secrets_are_validated_before_they_are_stored() {
    use fastapihooks::secret::SecretFormatError;
    use fastapihooks::subscription::InvalidSubscription;
    use fastapihooks::{BuildError, StoreError, SubscriptionUpdate};

    let store = MemoryStore::new();
    let bad = WebhookSubscription::new("https://example.com/h").unwrap().signing_secret("whsec_not*base64");
    let err = store.add("e", bad).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(InvalidSubscription::SigningSecret(SecretFormatError::Base64))), "{err}");
    let id = store.add("e", WebhookSubscription::new("https://example.com/h").unwrap()).await.unwrap();
    let err = store.update(&id, SubscriptionUpdate::new().secrets(vec![SigningSecret::new("")])).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(InvalidSubscription::SigningSecret(SecretFormatError::Empty))), "{err}");
    let err = rotate_stored_secret(&store, &id, SigningSecret::new("whsec_"), chrono::Utc::now()).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    // An update with secrets is persisted, and an empty list returns to the global secret.
    let secrets = vec![SigningSecret::generate()];
    assert!(store.update(&id, SubscriptionUpdate::new().secrets(secrets.clone())).await.unwrap());
    assert_eq!(store.get(&id).await.unwrap().unwrap().secrets, secrets);
    assert!(store.update(&id, SubscriptionUpdate::new().secrets(Vec::new())).await.unwrap());
    assert!(store.get(&id).await.unwrap().unwrap().secrets.is_empty());

    let err = local_hooks().signing_secret("whsec_%%").build().unwrap_err();
    assert!(matches!(err, BuildError::SigningSecret(SecretFormatError::Base64)), "{err}");
    let bad_static = WebhookSubscription::new("https://example.com/h").unwrap().signing_secret("whsec_%%");
    assert!(matches!(local_hooks().subscriber("e", bad_static).build(), Err(BuildError::Subscriber { .. })));
}
