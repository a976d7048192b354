//! Delivery history and endpoint health, in-process: the attempt log
//! against what a real receiver on 127.0.0.1 saw, subscriptions disabled by
//! the receiver or by sustained failure, skipped, re-enabled, and the
//! operational events (callback and webhooks).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fastapihooks::health::DisablePolicy;
use fastapihooks::history::{AttemptOutcome, AttemptQuery, AttemptRecord};
use fastapihooks::operational::{OperationalEvent, OperationalKind};
use fastapihooks::{
    DeliveryError, Emission, Fastapihooks, InMemoryDeadLetterQueue, MemoryStore, RetryPolicy, Store,
    WebhookSubscription,
};
use serde_json::json;

use crate::util::{Receiver, Reply, local_builder};

const WAIT: Duration = Duration::from_secs(10);

fn sub(url: String) -> WebhookSubscription {
    WebhookSubscription::new(url).unwrap()
}

/// Operational events as the callback got them.
#[derive(Clone, Default)]
struct Ops(Arc<Mutex<Vec<OperationalEvent>>>);

impl Ops {
    fn kinds(&self) -> Vec<OperationalKind> {
        self.0.lock().unwrap().iter().map(|e| e.kind).collect()
    }

    fn of(&self, kind: OperationalKind) -> Vec<OperationalEvent> {
        self.0.lock().unwrap().iter().filter(|e| e.kind == kind).cloned().collect()
    }

    fn handler(&self) -> impl Fn(OperationalEvent) + Send + Sync + 'static {
        let seen = self.0.clone();
        move |e| seen.lock().unwrap().push(e)
    }
}

/// Waits (bounded) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every record of the log, oldest first.
async fn all_records(hooks: &Fastapihooks) -> Vec<AttemptRecord> {
    let log = hooks.attempt_log().expect("an attempt log");
    let mut records = Vec::new();
    let mut query = AttemptQuery::new().limit(1000);
    loop {
        let page = log.query(&query).await.unwrap();
        records.extend(page.records);
        match page.next {
            Some(cursor) => query = query.after(cursor),
            None => break,
        }
    }
    records.reverse();
    records
}

/// Waits until the log holds `n` records (the writer runs beside deliveries).
async fn records(hooks: &Fastapihooks, n: usize) -> Vec<AttemptRecord> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let records = all_records(hooks).await;
        if records.len() >= n || tokio::time::Instant::now() >= deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn emission(n: u32) -> Emission {
    Emission::new("order.created").response_value(json!({"n": n}))
}

#[tokio::test]
async fn the_attempt_log_agrees_with_what_the_receiver_saw_attempt_by_attempt() {
    let receiver = Receiver::start().await;
    receiver.script(
        "/flaky",
        [
            Reply::status(503).header("retry-after", "0").body("busy, try later"),
            Reply::status(500).header("content-type", "application/json").body(r#"{"error":"boom"}"#),
            Reply::status(200).body("ok"),
        ],
    );
    let store = MemoryStore::new();
    let id = store.add("order.created", sub(receiver.url("/flaky")).owner("acme")).await.unwrap();
    let hooks = local_builder().store(store).build().unwrap();
    let event_id = hooks.emit(emission(1).owner(Some("acme".into()))).unwrap();
    let hits = receiver.wait_for("/flaky", 3, WAIT).await;
    let records = records(&hooks, 3).await;
    assert_eq!(hits.len(), 3, "three attempts reached the receiver");
    assert_eq!(records.len(), 3, "{records:#?}");
    for (n, (hit, record)) in hits.iter().zip(&records).enumerate() {
        assert_eq!(record.attempt, n as u32 + 1);
        assert_eq!(record.status, Some(hit.status), "attempt {}", n + 1);
        assert_eq!(hit.header("x-fastapihooks-event-id"), Some(record.event_id.as_str()));
        assert_eq!(record.event_id, event_id.as_str());
        assert_eq!(record.event_name, "order.created");
        assert_eq!(record.subscription_id.as_deref(), Some(id.as_str()));
        assert_eq!(record.owner_id.as_deref(), Some("acme"));
        assert_eq!(record.target_url, receiver.url("/flaky"));
    }
    let outcomes: Vec<_> = records.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [AttemptOutcome::Retrying, AttemptOutcome::Retrying, AttemptOutcome::Delivered]);
    assert_eq!(records[0].response.body, "busy, try later");
    assert_eq!(records[0].response.retry_after.as_deref(), Some("0"));
    assert_eq!(records[0].error_kind.as_deref(), Some("status"));
    assert_eq!(records[1].response.content_type.as_deref(), Some("application/json"));
    assert_eq!(records[1].response.body, r#"{"error":"boom"}"#);
    assert_eq!(records[2].response.body, "ok");
    assert_eq!(records[2].error, None);
    // The queries: by event, subscription, owner, outcome.
    let log = hooks.attempt_log().unwrap();
    let by = |q: AttemptQuery| {
        let log = log.clone();
        async move { log.query(&q).await.unwrap().records.len() }
    };
    assert_eq!(by(AttemptQuery::new().event(event_id.as_str())).await, 3);
    assert_eq!(by(AttemptQuery::new().subscription(&id)).await, 3);
    assert_eq!(by(AttemptQuery::new().owner("acme")).await, 3);
    assert_eq!(by(AttemptQuery::new().owner("other")).await, 0);
    assert_eq!(by(AttemptQuery::new().outcome(AttemptOutcome::Delivered)).await, 1);
    hooks.shutdown(Duration::from_secs(2)).await;
    assert_eq!(hooks.stats().attempts_recorded, 3);
}

#[tokio::test]
async fn a_long_response_body_is_kept_to_4_kib() {
    let receiver = Receiver::start().await;
    receiver.script("/big", [Reply::status(200).body("é".repeat(5000))]);
    let hooks = local_builder().subscriber("order.created", sub(receiver.url("/big"))).build().unwrap();
    hooks.emit(emission(1)).unwrap();
    let records = records(&hooks, 1).await;
    let body = &records[0].response.body;
    assert!(body.len() <= 4096 + 3 && body.len() >= 4090, "{}", body.len());
    assert!(records[0].response.body_truncated);
    assert_eq!(records[0].subscription_id, None, "a static subscriber has no id");
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn an_endpoint_answering_410_is_disabled_after_one_attempt_and_gets_nothing_more() {
    let receiver = Receiver::start().await;
    receiver.script("/gone", [Reply::status(410)]);
    let store = MemoryStore::new();
    let id = store.add("order.created", sub(receiver.url("/gone"))).await.unwrap();
    let ops = Ops::default();
    let hooks = local_builder().store(store.clone()).on_operational(ops.handler()).build().unwrap();
    hooks.emit(emission(1)).unwrap();
    receiver.wait_for("/gone", 1, WAIT).await;
    until("the subscription disabled", || hooks.stats().disabled == 1).await;
    let stored = store.get(&id).await.unwrap().unwrap();
    let disabled = stored.disabled.expect("disabled in the store");
    assert!(disabled.reason.contains("410 Gone"), "{}", disabled.reason);
    for n in 2..=4 {
        hooks.emit(emission(n)).unwrap();
    }
    until("three events skipped", || hooks.stats().skipped_disabled == 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.hits_for("/gone").len(), 1, "nothing more after the 410");
    let disabled = ops.of(OperationalKind::EndpointDisabled);
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].subscription_id.as_deref(), Some(id.as_str()));
    assert!(ops.kinds().contains(&OperationalKind::AttemptExhausted));
    let records = records(&hooks, 1).await;
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].status, records[0].outcome), (Some(410), AttemptOutcome::GivenUp));
    assert_eq!(records[0].error_kind.as_deref(), Some("receiver_stopped"));
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn the_webhook_delivery_disable_header_disables_at_once_even_on_a_2xx() {
    let receiver = Receiver::start().await;
    receiver.script("/bye", [Reply::status(200).header("webhook-delivery", "disable")]);
    let store = MemoryStore::new();
    let id = store.add("order.created", sub(receiver.url("/bye"))).await.unwrap();
    let hooks = local_builder().store(store.clone()).build().unwrap();
    hooks.emit(emission(1)).unwrap();
    until("the subscription disabled", || hooks.stats().disabled == 1).await;
    assert_eq!(hooks.stats().delivered, 1, "the delivery itself was made");
    let reason = store.get(&id).await.unwrap().unwrap().disabled.unwrap().reason;
    assert!(reason.contains("webhook-delivery: disable"), "{reason}");
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn the_policy_may_leave_a_subscription_enabled_when_the_receiver_asks() {
    let receiver = Receiver::start().await;
    receiver.script("/gone", [Reply::status(410)]);
    let store = MemoryStore::new();
    let id = store.add("order.created", sub(receiver.url("/gone"))).await.unwrap();
    let hooks = local_builder()
        .store(store.clone())
        .disable_policy(DisablePolicy::default().when_receiver_asks(false))
        .build()
        .unwrap();
    hooks.emit(emission(1)).unwrap();
    hooks.emit(emission(2)).unwrap();
    receiver.wait_for("/gone", 2, WAIT).await;
    hooks.shutdown(Duration::from_secs(2)).await;
    assert!(store.get(&id).await.unwrap().unwrap().is_enabled());
    assert_eq!(hooks.stats().disabled, 0);
}

#[tokio::test]
async fn a_disabled_subscription_is_skipped_and_re_enabled() {
    let receiver = Receiver::start().await;
    let store = MemoryStore::new();
    let id = store.add("order.created", sub(receiver.url("/a"))).await.unwrap();
    let hooks = local_builder().store(store.clone()).build().unwrap();
    assert!(hooks.disable_subscription(&id, "paused by an operator").await.unwrap());
    assert!(!hooks.disable_subscription("sub_nope", "x").await.unwrap());
    hooks.emit(emission(1)).unwrap();
    until("the event skipped", || hooks.stats().skipped_disabled == 1).await;
    assert!(hooks.enable_subscription(&id).await.unwrap());
    assert!(!hooks.enable_subscription("sub_nope").await.unwrap());
    hooks.emit(emission(2)).unwrap();
    let hits = receiver.wait_for("/a", 1, WAIT).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].json()["n"], 2, "the event sent while disabled was skipped, not held");
    hooks.shutdown(Duration::from_secs(2)).await;
    assert_eq!(hooks.stats().skipped_disabled, 1);
    assert_eq!(hooks.stats().failed, 0, "skipped at fan-out: not a failure, nothing for on_failure");
}

#[tokio::test]
async fn a_retry_waiting_for_a_subscription_that_gets_disabled_is_given_up_with_the_reason() {
    let receiver = Receiver::start().await;
    receiver.script("/down", [Reply::status(500)]);
    let store = MemoryStore::new();
    let id = store.add("order.created", sub(receiver.url("/down"))).await.unwrap();
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .store(store.clone())
        .retry_policy(RetryPolicy::schedule([Duration::from_millis(400)]))
        .on_failure(dlq.clone())
        .build()
        .unwrap();
    hooks.emit(emission(1)).unwrap();
    receiver.wait_for("/down", 1, WAIT).await;
    hooks.disable_subscription(&id, "paused by an operator").await.unwrap();
    until("the retry given up", || !dlq.is_empty()).await;
    let failure = dlq.drain().pop().unwrap();
    assert_eq!(failure.error, DeliveryError::SubscriptionDisabled { reason: "paused by an operator".into() });
    assert_eq!(receiver.hits_for("/down").len(), 1, "the retry was not sent");
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn sustained_failure_disables_and_a_success_recovers_with_operational_events() {
    let receiver = Receiver::start().await;
    receiver.script("/sick", [Reply::status(500), Reply::status(500), Reply::status(200)]);
    let store = MemoryStore::new();
    let id = store.add("order.created", sub(receiver.url("/sick"))).await.unwrap();
    let ops = Ops::default();
    let hooks = local_builder()
        .store(store.clone())
        .retry_policy(RetryPolicy::none())
        .disable_policy(DisablePolicy::never().after_given_up(3))
        .on_operational(ops.handler())
        .build()
        .unwrap();
    // Two given up (failing once), then a success: recovered, not disabled.
    for n in 1..=3 {
        hooks.emit(emission(n)).unwrap();
        receiver.wait_for("/sick", n as usize, WAIT).await;
        until("the delivery ended", || hooks.stats().failed + hooks.stats().delivered == u64::from(n)).await;
    }
    until("recovered", || ops.of(OperationalKind::EndpointRecovered).len() == 1).await;
    assert_eq!(ops.of(OperationalKind::EndpointFailing).len(), 1, "{:?}", ops.kinds());
    assert_eq!(ops.of(OperationalKind::AttemptExhausted).len(), 2);
    let health = store.get(&id).await.unwrap().unwrap().health;
    assert!(health.last_success.is_some() && health.failing_since.is_none(), "{health:?}");
    // Three given up in a row: disabled.
    receiver.script("/sick", [Reply::status(500)]);
    for n in 4..=6 {
        hooks.emit(emission(n)).unwrap();
        receiver.wait_for("/sick", n as usize, WAIT).await;
    }
    until("disabled", || hooks.stats().disabled == 1).await;
    let stored = store.get(&id).await.unwrap().unwrap();
    assert!(stored.disabled.unwrap().reason.contains("3 deliveries given up"));
    assert_eq!(stored.health.given_up, 3);
    assert_eq!(ops.of(OperationalKind::EndpointDisabled).len(), 1);
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn operational_events_go_as_signed_webhooks_to_the_operator() {
    let receiver = Receiver::start().await;
    receiver.script("/gone", [Reply::status(410)]);
    let store = MemoryStore::new();
    let id = store.add("order.created", sub(receiver.url("/gone"))).await.unwrap();
    let hooks = local_builder()
        .store(store)
        .signing_secret("operator-secret")
        .operational_webhook(sub(receiver.url("/ops")))
        .build()
        .unwrap();
    hooks.emit(emission(1)).unwrap();
    let ops = receiver.wait_for("/ops", 2, WAIT).await;
    let mut types: Vec<String> = ops.iter().map(|h| h.json()["type"].as_str().unwrap().to_owned()).collect();
    types.sort();
    assert_eq!(types, ["endpoint.disabled", "message.attempt.exhausted"]);
    for hit in &ops {
        assert!(hit.header("webhook-signature").is_some_and(|s| s.starts_with("v1,")), "signed");
        assert_eq!(hit.json()["subscription_id"], id.as_str());
        assert_eq!(hit.header("x-fastapihooks-event"), hit.json()["type"].as_str());
    }
    hooks.shutdown(Duration::from_secs(2)).await;
}
