//! Emission without the macro: what `emit` does with an emission, the
//! transform stage, owners, static subscribers, and the bounded queue.

use std::time::Duration;

use bytes::Bytes;
use fastapihooks::{
    DeliveryError, Emission, EmitError, FastapihooksContext, InMemoryDeadLetterQueue, Transform, TransformError,
    WebhookSubscription,
};
use serde_json::{Value, json};

use crate::util::{Receiver, local_builder};

const WAIT: Duration = Duration::from_secs(10);

fn sub(url: String) -> WebhookSubscription {
    WebhookSubscription::new(url).unwrap()
}

#[tokio::test]
async fn without_transform_the_payload_is_the_response_payload_bytes() {
    let rx = Receiver::start().await;
    let hooks = local_builder().subscriber("e", sub(rx.url("/h"))).build().unwrap();
    // The exact bytes the handler sent are forwarded, not re-serialized.
    let body = Bytes::from_static(br#"{"b": 2,  "a": 1}"#);
    hooks.emit(Emission::new("e").response_json(body.clone())).unwrap();
    hooks.emit(Emission::new("e")).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let mut bodies: Vec<Bytes> = rx.hits_for("/h").into_iter().map(|h| h.body).collect();
    bodies.sort();
    assert_eq!(bodies, [Bytes::from_static(b"null"), body]);
}

#[tokio::test]
async fn with_a_transform_the_payload_is_its_return_value_and_it_sees_the_context() {
    let rx = Receiver::start().await;
    let hooks = local_builder().default_owner("acme").subscriber("order.created", sub(rx.url("/h"))).build().unwrap();
    let transform = Transform::new(|ctx: &FastapihooksContext| {
        json!({
            "event": ctx.event_name,
            "owner": ctx.owner_id,
            "order_id": ctx.response_payload["id"],
            "user_agent": ctx.header("user-agent"),
            "qty": ctx.request_json().map(|r| r["qty"].clone()),
            "ts": ctx.timestamp.timestamp(),
        })
    });
    let mut headers = http::HeaderMap::new();
    headers.insert("user-agent", "curl/8".parse().unwrap());
    let ts = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    hooks
        .emit(
            Emission::new("order.created")
                .response_json(Bytes::from_static(br#"{"id":"ord_123"}"#))
                .headers(headers)
                .request(Bytes::from_static(br#"{"qty":3}"#))
                .timestamp(ts)
                .transform(transform),
        )
        .unwrap();
    let hits = rx.wait_for("/h", 1, WAIT).await;
    assert_eq!(
        hits[0].json(),
        json!({"event": "order.created", "owner": "acme", "order_id": "ord_123", "user_agent": "curl/8", "qty": 3, "ts": 1_700_000_000})
    );
    hooks.shutdown(WAIT).await;
}

#[tokio::test]
async fn owner_resolution_emission_owner_then_global_default_then_none() {
    let rx = Receiver::start().await;
    let echo_owner = || Transform::new(|ctx: &FastapihooksContext| json!({ "owner": ctx.owner_id }));
    let with_default = local_builder().default_owner("global").subscriber("e", sub(rx.url("/d"))).build().unwrap();
    with_default.emit(Emission::new("e").owner(Some("tenant".into())).transform(echo_owner())).unwrap();
    with_default.emit(Emission::new("e").transform(echo_owner())).unwrap();
    let without = local_builder().subscriber("e", sub(rx.url("/n"))).build().unwrap();
    without.emit(Emission::new("e").transform(echo_owner())).unwrap();
    assert!(with_default.shutdown(WAIT).await.drained && without.shutdown(WAIT).await.drained);
    let mut d: Vec<Value> = rx.hits_for("/d").iter().map(|h| h.json()["owner"].clone()).collect();
    d.sort_by_key(|v| v.to_string());
    assert_eq!(d, [json!("global"), json!("tenant")]);
    assert_eq!(rx.hits_for("/n")[0].json()["owner"], Value::Null);
}

#[tokio::test]
async fn static_subscribers_get_only_their_event() {
    let rx = Receiver::start().await;
    let hooks = local_builder()
        .subscriber("a", sub(rx.url("/a1")))
        .subscriber("a", sub(rx.url("/a2")))
        .subscriber("b", sub(rx.url("/b")))
        .build()
        .unwrap();
    hooks.send("a", &json!("x")).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits_for("/a1").len(), 1);
    assert_eq!(rx.hits_for("/a2").len(), 1);
    assert!(rx.hits_for("/b").is_empty());
}

// The pipeline polls its queue while emissions keep coming and sleeps
// (to be woken by the next emission) once they stop: an emission must be
// delivered in either state, without waiting for shutdown.
#[tokio::test]
async fn emissions_are_delivered_whether_the_pipeline_polls_or_sleeps() {
    let rx = Receiver::start().await;
    let hooks = local_builder().subscriber("e", sub(rx.url("/h"))).build().unwrap();
    hooks.send("e", &json!(1)).unwrap();
    rx.wait_for("/h", 1, WAIT).await;
    // Right after work: the pipeline is polling.
    hooks.send("e", &json!(2)).unwrap();
    rx.wait_for("/h", 2, WAIT).await;
    // Long after (well past its polls): it sleeps, and the emission wakes it.
    for n in 3..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        hooks.send("e", &json!(n)).unwrap();
        let hits = rx.wait_for("/h", n, Duration::from_secs(2)).await;
        assert_eq!(hits.len(), n, "emission {n} was not delivered while the pipeline slept");
    }
    assert!(hooks.shutdown(WAIT).await.drained);
}

#[tokio::test]
async fn every_event_gets_a_unique_sortable_id() {
    let rx = Receiver::start().await;
    let hooks = local_builder().subscriber("e", sub(rx.url("/h"))).build().unwrap();
    let ids: Vec<_> = (0..20).map(|i| hooks.send("e", &json!(i)).unwrap()).collect();
    assert!(hooks.shutdown(WAIT).await.drained);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids);
    let mut seen: Vec<String> =
        rx.hits_for("/h").iter().map(|h| h.header("x-fastapihooks-event-id").unwrap().to_owned()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20);
}

// A current-thread runtime, shared with delivery: the pipeline task cannot
// run while this test emits without awaiting, so the queue fills
// deterministically.
#[tokio::test(flavor = "current_thread")]
async fn queue_full_hands_the_event_to_on_failure_and_returns_at_once() {
    let rx = Receiver::start().await;
    let dlq = InMemoryDeadLetterQueue::new(100);
    let hooks = local_builder()
        .delivery_runtime(fastapihooks::DeliveryRuntime::shared())
        .queue_capacity(3)
        .on_failure(dlq.clone())
        .subscriber("e", sub(rx.url("/h")))
        .build()
        .unwrap();
    let results: Vec<_> = (0..10).map(|i| hooks.send("e", &json!({"n": i}))).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    assert!(results[3..].iter().all(|r| *r == Err(EmitError::QueueFull(3))));
    assert_eq!(hooks.stats().queue_full, 7);
    let refused = dlq.entries();
    assert_eq!(refused.len(), 7);
    assert!(refused.iter().all(|f| f.error == DeliveryError::QueueFull { capacity: 3 }));
    // The refused events keep their payloads, for replay.
    let mut ns: Vec<i64> = refused.iter().map(|f| f.event.payload.to_value()["n"].as_i64().unwrap()).collect();
    ns.sort();
    assert_eq!(ns, [3, 4, 5, 6, 7, 8, 9]);
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits_for("/h").len(), 3);
}

#[tokio::test]
async fn a_panicking_transform_is_contained_and_reported() {
    let rx = Receiver::start().await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder().on_failure(dlq.clone()).subscriber("e", sub(rx.url("/h"))).build().unwrap();
    let panics = Transform::new(|ctx: &FastapihooksContext| -> Value {
        let id = ctx.response_payload["id"].as_str().expect("id must be a string");
        json!(id)
    });
    hooks.emit(Emission::new("e").response_value(json!({"id": 5})).transform(panics.clone())).unwrap();
    hooks.emit(Emission::new("e").response_value(json!({"id": "ok"})).transform(panics)).unwrap();
    let fails = Transform::new(|_: &FastapihooksContext| Err::<Value, _>("no customer"));
    hooks.emit(Emission::new("e").transform(fails)).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    // The dispatcher kept going: the good event was delivered.
    let hits = rx.hits_for("/h");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].json(), json!("ok"));
    let errors: Vec<DeliveryError> = dlq.entries().into_iter().map(|f| f.error).collect();
    assert_eq!(errors.len(), 2);
    assert!(
        matches!(&errors[0], DeliveryError::Transform(TransformError::Panicked(m)) if m.contains("id must be a string"))
    );
    assert_eq!(errors[1], DeliveryError::Transform(TransformError::Failed("no customer".into())));
    assert_eq!(hooks.stats().transform_failed, 2);
}

#[tokio::test]
async fn invalid_json_response_bytes_are_reported_not_sent() {
    let rx = Receiver::start().await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder().on_failure(dlq.clone()).subscriber("e", sub(rx.url("/h"))).build().unwrap();
    hooks.emit(Emission::new("e").response_json(Bytes::from_static(b"{not json"))).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert!(rx.hits().is_empty());
    assert!(matches!(dlq.entries()[0].error, DeliveryError::Transform(TransformError::Serialize(_))));
}

#[tokio::test]
async fn events_nobody_is_subscribed_to_are_skipped_and_counted() {
    use fastapihooks::{MemoryStore, Store};
    let rx = Receiver::start().await;
    let store = MemoryStore::new();
    let hooks = local_builder().store(store.clone()).subscriber("static.only", sub(rx.url("/static"))).build().unwrap();
    assert!(!hooks.is_subscribed("e"));
    assert!(hooks.is_subscribed("static.only"));
    hooks.send("e", &json!(1)).unwrap();
    let id = store.add("e", sub(rx.url("/stored"))).await.unwrap();
    assert!(hooks.is_subscribed("e"), "an add is seen at once");
    hooks.send("e", &json!(2)).unwrap();
    rx.wait_for("/stored", 1, WAIT).await;
    store.remove(&id).await.unwrap();
    assert!(!hooks.is_subscribed("e"), "a removal is seen at once");
    hooks.send("e", &json!(3)).unwrap();
    hooks.send("static.only", &json!(4)).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let stored: Vec<Value> = rx.hits_for("/stored").iter().map(|h| h.json()).collect();
    assert_eq!(stored, [json!(2)]);
    assert_eq!(rx.hits_for("/static").len(), 1);
    let s = hooks.stats();
    assert_eq!((s.unsubscribed, s.emitted, s.delivered), (2, 2, 2));
}

#[tokio::test]
async fn send_refuses_and_reports_a_payload_that_is_not_json() {
    let rx = Receiver::start().await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder().on_failure(dlq.clone()).subscriber("e", sub(rx.url("/h"))).build().unwrap();
    // JSON object keys must be strings.
    let bad: std::collections::HashMap<(i32, i32), i32> = [((1, 2), 3)].into();
    let err = hooks.send("e", &bad).unwrap_err();
    assert!(matches!(err, EmitError::Payload { error: TransformError::Serialize(_), .. }), "{err:?}");
    assert!(hooks.shutdown(WAIT).await.drained);
    assert!(rx.hits().is_empty(), "nothing is sent in its place");
    assert!(matches!(dlq.entries()[0].error, DeliveryError::Transform(TransformError::Serialize(_))));
}
