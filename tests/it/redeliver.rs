//! Sending reported failures again (`Fastapihooks::redeliver`): the known
//! gap "no replay" of REFERENCE.md. Real HTTP to a receiver on 127.0.0.1.

use std::time::Duration;

use fastapihooks::{
    AttemptError, DeliveryError, DeliveryFailure, DeliveryRuntime, Emission, EmitError, FastapihooksContext,
    InMemoryDeadLetterQueue, MemoryStore, RedeliverError, Store, Transform, WebhookSubscription,
};
use serde_json::{Value, json};

use crate::util::{Receiver, Reply, local_builder};

const WAIT: Duration = Duration::from_secs(10);

fn sub(url: String) -> WebhookSubscription {
    WebhookSubscription::new(url).unwrap()
}

/// The next failure the queue gets (bounded wait).
async fn next_failure(dlq: &InMemoryDeadLetterQueue) -> DeliveryFailure {
    for _ in 0..1000 {
        if let Some(f) = dlq.drain().pop() {
            return f;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no failure reported within 10 s");
}

#[tokio::test]
async fn a_failed_delivery_goes_again_to_its_subscription_only_with_the_same_event() {
    let rx = Receiver::start().await;
    // The stored subscription refuses twice (422: never retried), then accepts.
    rx.script("/stored", [Reply::status(422), Reply::status(422), Reply::status(200)]);
    let store = MemoryStore::new();
    let id = store.add("e", sub(rx.url("/stored"))).await.unwrap();
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks =
        local_builder().store(store).subscriber("e", sub(rx.url("/static"))).on_failure(dlq.clone()).build().unwrap();
    let event_id = hooks.emit(Emission::new("e").response_value(json!({"order": 7}))).unwrap();

    let failure = next_failure(&dlq).await;
    assert_eq!(failure.error, DeliveryError::Attempt(AttemptError::Status { status: 422 }));
    assert_eq!(failure.subscription_id.as_deref(), Some(id.as_str()));
    hooks.redeliver(failure).await.unwrap();
    // Refused again: reported again, for the same subscription, after one attempt.
    let again = next_failure(&dlq).await;
    assert_eq!(again.error, DeliveryError::Attempt(AttemptError::Status { status: 422 }));
    assert_eq!(again.subscription_id.as_deref(), Some(id.as_str()));
    assert_eq!(again.attempts, 1, "a fresh round of attempts");
    assert_eq!(again.event.id, event_id);
    hooks.redeliver(again).await.unwrap();

    let hits = rx.wait_for("/stored", 3, WAIT).await;
    assert_eq!(hits.len(), 3);
    for hit in &hits {
        assert_eq!(
            hit.header("x-fastapihooks-event-id"),
            Some(event_id.as_str()),
            "the same event, for de-duplication"
        );
        assert_eq!(hit.json(), json!({"order": 7}));
    }
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits_for("/static").len(), 1, "the other subscriber got the event once");
    assert!(dlq.is_empty());
    let stats = hooks.stats();
    assert_eq!((stats.redelivered, stats.delivered, stats.failed), (2, 2, 2));
}

// A current-thread runtime, shared with delivery: the pipeline cannot run
// while the test emits without awaiting, so the intake queue fills.
#[tokio::test(flavor = "current_thread")]
async fn an_event_refused_at_intake_is_fanned_out_again_to_its_subscribers() {
    let rx = Receiver::start().await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .delivery_runtime(DeliveryRuntime::shared())
        .queue_capacity(1)
        .on_failure(dlq.clone())
        .subscriber("e", sub(rx.url("/a")))
        .subscriber("e", sub(rx.url("/b")))
        .build()
        .unwrap();
    let sent: Vec<_> = (0..3).map(|n| hooks.send("e", &json!({ "n": n }))).collect();
    assert_eq!(sent[1..], [Err(EmitError::QueueFull(1)), Err(EmitError::QueueFull(1))]);
    let refused = dlq.drain();
    assert_eq!(refused.len(), 2);
    for failure in refused {
        assert!(failure.subscription.is_none(), "a failure of the whole event");
        hooks.redeliver(failure).await.unwrap();
    }
    assert!(hooks.shutdown(WAIT).await.drained);
    for path in ["/a", "/b"] {
        let mut ns: Vec<i64> = rx.hits_for(path).iter().map(|h| h.json()["n"].as_i64().unwrap()).collect();
        ns.sort();
        assert_eq!(ns, [0, 1, 2], "{path}");
    }
    assert_eq!(hooks.stats().redelivered, 2);
}

#[tokio::test]
async fn what_cannot_be_sent_again_is_refused_and_nothing_is_queued() {
    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(404)]);
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder().on_failure(dlq.clone()).subscriber("e", sub(rx.url("/h"))).build().unwrap();

    // A failed transform left no payload to send.
    let fails = Transform::new(|_: &FastapihooksContext| Err::<Value, _>("no customer"));
    hooks.emit(Emission::new("e").transform(fails)).unwrap();
    let failure = next_failure(&dlq).await;
    assert!(matches!(failure.error, DeliveryError::Transform(_)));
    assert_eq!(hooks.redeliver(failure).await, Err(RedeliverError::NoPayload));

    // After shutdown nothing is redelivered.
    hooks.send("e", &json!({})).unwrap();
    let failure = next_failure(&dlq).await;
    assert_eq!(failure.error, DeliveryError::Attempt(AttemptError::Status { status: 404 }));
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(hooks.redeliver(failure).await, Err(RedeliverError::ShutDown));
    assert_eq!(rx.hits_for("/h").len(), 1);
    assert_eq!(hooks.stats().redelivered, 0);
}
