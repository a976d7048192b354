//! The network guard (SSRF) and subscription validation.

use std::time::Duration;

use fastapihooks::{
    AttemptError, BuildError, DeliveryError, Fastapihooks, InMemoryDeadLetterQueue, MemoryStore, NetworkPolicy, Store,
    StoreError, WebhookSubscription,
};
use serde_json::json;

use crate::util::Receiver;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn private_destinations_are_refused_by_default_and_not_retried() {
    let rx = Receiver::start().await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = Fastapihooks::builder()
        .on_failure(dlq.clone())
        .subscriber("e", WebhookSubscription::new(rx.url("/ip")).unwrap())
        .subscriber("e", WebhookSubscription::new(format!("http://localhost:{}/name", rx.port())).unwrap())
        .subscriber("e", WebhookSubscription::new(format!("http://[::ffff:127.0.0.1]:{}/mapped", rx.port())).unwrap())
        .build()
        .unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert!(rx.hits().is_empty(), "nothing reached the private address");
    let failures = dlq.entries();
    assert_eq!(failures.len(), 3);
    for f in &failures {
        assert!(matches!(f.error, DeliveryError::Attempt(AttemptError::Refused(_))), "{:?}", f.error);
        assert_eq!(f.attempts, 1, "a refusal is not retried");
    }
}

#[tokio::test]
async fn allow_listed_networks_are_delivered() {
    let rx = Receiver::start().await;
    let hooks = Fastapihooks::builder()
        .network_policy(NetworkPolicy::default().allow_cidr("127.0.0.1/32").unwrap())
        .subscriber("e", WebhookSubscription::new(rx.url("/ip")).unwrap())
        .subscriber("e", WebhookSubscription::new(format!("http://localhost:{}/name", rx.port())).unwrap())
        .build()
        .unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits_for("/ip").len(), 1);
    assert_eq!(rx.hits_for("/name").len(), 1, "localhost resolves to an allowed 127.0.0.1");
}

#[tokio::test]
async fn invalid_subscription_urls_are_refused_when_added() {
    let store = MemoryStore::new();
    for bad in ["ftp://example.com/x", "not a url", "https://user:pw@example.com/", "file:///etc/passwd", "http://"] {
        assert!(WebhookSubscription::new(bad).is_err(), "{bad}");
        let raw: WebhookSubscription = serde_json::from_value(json!({"target_url": bad, "auth_type": "none"})).unwrap();
        assert!(matches!(store.add("e", raw).await, Err(StoreError::Invalid(_))), "{bad}");
    }
    assert!(store.list("e").await.unwrap().is_empty(), "nothing was written");
    let raw: WebhookSubscription =
        serde_json::from_value(json!({"target_url": "https://example.com", "auth_type": "none"})).unwrap();
    assert!(matches!(store.add("bad name!", raw).await, Err(StoreError::Invalid(_))));
}

#[tokio::test]
async fn invalid_static_subscribers_fail_the_build() {
    let raw: WebhookSubscription =
        serde_json::from_value(json!({"target_url": "gopher://x", "auth_type": "none"})).unwrap();
    let err = Fastapihooks::builder().subscriber("e", raw).build().unwrap_err();
    assert!(matches!(err, BuildError::Subscriber { .. }), "{err}");
    assert!(err.to_string().contains("scheme"), "{err}");
}

#[test]
fn building_outside_a_tokio_runtime_is_a_clear_error() {
    let err = Fastapihooks::builder().build().unwrap_err();
    assert!(matches!(err, BuildError::NoRuntime));
}
