//! The Delivery section of REFERENCE.md, and the delivery engine's own
//! guarantees: request shape, signing, auth, fan-out, concurrency, retries,
//! dead letters. Real HTTP to a receiver on 127.0.0.1.

use std::time::Duration;

use fastapihooks::{
    AttemptError, DeliveryError, Emission, InMemoryDeadLetterQueue, MemoryStore, RetryPolicy, Store,
    WebhookSubscription,
};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::util::{Receiver, Reply, closed_port, local_builder};

const WAIT: Duration = Duration::from_secs(10);

fn sub(url: String) -> WebhookSubscription {
    WebhookSubscription::new(url).unwrap()
}

#[tokio::test]
async fn delivery_is_a_json_post_with_content_type_event_header_id_and_user_agent() {
    let rx = Receiver::start().await;
    let hooks = local_builder().subscriber("order.created", sub(rx.url("/h"))).build().unwrap();
    let id = hooks.emit(Emission::new("order.created").response_value(json!({"id": "ord_1"}))).unwrap();
    let hits = rx.wait_for("/h", 1, WAIT).await;
    assert_eq!(hits.len(), 1);
    let h = &hits[0];
    assert_eq!(h.json(), json!({"id": "ord_1"}));
    assert_eq!(h.header("content-type"), Some("application/json"));
    assert_eq!(h.header("x-fastapihooks-event"), Some("order.created"));
    assert_eq!(h.header("x-fastapihooks-event-id"), Some(id.as_str()));
    assert_eq!(h.header("user-agent"), Some(concat!("fastapihooks/", env!("CARGO_PKG_VERSION"))));
    assert!(hooks.shutdown(WAIT).await.drained);
}

#[tokio::test]
async fn signature_header_is_sha256_hex_hmac_of_the_exact_body() {
    let rx = Receiver::start().await;
    let hooks =
        local_builder().signing_secret("your-secret").subscriber("order.created", sub(rx.url("/h"))).build().unwrap();
    hooks.emit(Emission::new("order.created").response_value(json!({"id": "ord_123", "status": "confirmed"}))).unwrap();
    let hits = rx.wait_for("/h", 1, WAIT).await;
    let h = &hits[0];
    // The seed's verification snippet, in Rust.
    let header = h.header("x-fastapihooks-signature").expect("signed");
    let (algorithm, received) = header.split_once('=').unwrap();
    assert_eq!(algorithm, "sha256");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"your-secret").unwrap();
    mac.update(&h.body);
    assert_eq!(received, hex::encode(mac.finalize().into_bytes()));
    hooks.shutdown(WAIT).await;
}

#[tokio::test]
async fn without_a_secret_there_is_no_signature_header() {
    let rx = Receiver::start().await;
    let hooks = local_builder().subscriber("e", sub(rx.url("/h"))).build().unwrap();
    hooks.send("e", &json!({"a": 1})).unwrap();
    let hits = rx.wait_for("/h", 1, WAIT).await;
    assert!(hits[0].header("x-fastapihooks-signature").is_none());
    hooks.shutdown(WAIT).await;
}

#[tokio::test]
async fn bearer_auth_sends_authorization_and_none_sends_nothing() {
    let rx = Receiver::start().await;
    let hooks = local_builder()
        .subscriber("e", sub(rx.url("/bearer")).bearer("tok_abc"))
        .subscriber("e", sub(rx.url("/none")))
        .build()
        .unwrap();
    hooks.send("e", &json!({})).unwrap();
    let b = rx.wait_for("/bearer", 1, WAIT).await;
    let n = rx.wait_for("/none", 1, WAIT).await;
    assert_eq!(b[0].header("authorization"), Some("Bearer tok_abc"));
    assert_eq!(n[0].header("authorization"), None);
    hooks.shutdown(WAIT).await;
}

#[tokio::test]
async fn fan_out_every_subscriber_gets_its_delivery_whatever_the_others_do() {
    let rx = Receiver::start().await;
    rx.script("/404", [Reply::status(404)]);
    rx.script("/500", [Reply::status(500)]);
    let dead = closed_port().await;
    let dlq = InMemoryDeadLetterQueue::new(100);
    let hooks = local_builder()
        .on_failure(dlq.clone())
        .subscriber("e", sub(rx.url("/404")))
        .subscriber("e", sub(rx.url("/500")))
        .subscriber("e", sub(format!("http://127.0.0.1:{dead}/gone")))
        .subscriber("e", sub(rx.url("/ok1")))
        .subscriber("e", sub(rx.url("/ok2")))
        .build()
        .unwrap();
    hooks.send("e", &json!({"n": 1})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits_for("/ok1").len(), 1);
    assert_eq!(rx.hits_for("/ok2").len(), 1);
    assert_eq!(rx.hits_for("/404").len(), 1, "4xx is not retried");
    assert_eq!(rx.hits_for("/500").len(), 4, "5xx: first try + 3 retries");
    let mut errors: Vec<String> = dlq.entries().iter().map(|f| f.error.to_string()).collect();
    errors.sort();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("404")));
    assert!(errors.iter().any(|e| e.contains("500")));
    assert!(errors.iter().any(|e| e.starts_with("network error")), "{errors:?}");
}

#[tokio::test]
async fn an_event_without_subscribers_sends_nothing() {
    let rx = Receiver::start().await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder().on_failure(dlq.clone()).subscriber("other", sub(rx.url("/h"))).build().unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert!(rx.hits().is_empty());
    assert!(dlq.is_empty());
}

#[tokio::test]
async fn concurrency_is_bounded_by_max_concurrency() {
    let rx = Receiver::start().await;
    let mut b = local_builder().max_concurrency(3);
    for i in 0..10 {
        let path = format!("/slow{i}");
        rx.script(&path, [Reply::status(200).delay(Duration::from_millis(150))]);
        b = b.subscriber("e", sub(rx.url(&path)));
    }
    let hooks = b.build().unwrap();
    for _ in 0..3 {
        hooks.send("e", &json!({})).unwrap();
    }
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits().len(), 30);
    assert!(rx.max_in_flight() <= 3, "max in flight {}", rx.max_in_flight());
    assert!(rx.max_in_flight() >= 2, "deliveries ran concurrently");
}

#[tokio::test]
async fn an_endpoint_working_through_a_backlog_lets_a_waiting_one_have_the_next_permit() {
    // Two endpoints with ten slow deliveries each hold both global permits;
    // a third endpoint must get one as soon as a delivery ends, not once a
    // backlog is through (workers keep their permit only while none is waiting).
    let (a, c, b) = (Receiver::start().await, Receiver::start().await, Receiver::start().await);
    a.script("/a", [Reply::status(200).delay(Duration::from_millis(100))]);
    c.script("/c", [Reply::status(200).delay(Duration::from_millis(100))]);
    let hooks = local_builder()
        .max_concurrency(2)
        .per_endpoint_concurrency(1)
        .subscriber("backlog", sub(a.url("/a")))
        .subscriber("backlog", sub(c.url("/c")))
        .subscriber("other", sub(b.url("/b")))
        .build()
        .unwrap();
    for _ in 0..10 {
        hooks.send("backlog", &json!({})).unwrap();
    }
    a.wait_for("/a", 1, WAIT).await;
    hooks.send("other", &json!({})).unwrap();
    let other_at = b.wait_for("/b", 1, WAIT).await[0].at;
    assert!(hooks.shutdown(WAIT).await.drained);
    let backlog_before = a.hits_for("/a").iter().filter(|h| h.at < other_at).count();
    assert!(backlog_before <= 5, "the other endpoint waited for {backlog_before} of the backlog's 10 deliveries");
}

#[tokio::test]
async fn per_endpoint_concurrency_is_bounded() {
    let rx = Receiver::start().await;
    rx.script("/one", [Reply::status(200).delay(Duration::from_millis(100))]);
    let hooks = local_builder().per_endpoint_concurrency(2).subscriber("e", sub(rx.url("/one"))).build().unwrap();
    for _ in 0..8 {
        hooks.send("e", &json!({})).unwrap();
    }
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits_for("/one").len(), 8);
    assert_eq!(rx.max_in_flight(), 2);
}

#[tokio::test]
async fn retries_5xx_then_delivers_with_the_same_event_id() {
    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(503), Reply::status(502), Reply::status(200)]);
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder().on_failure(dlq.clone()).subscriber("e", sub(rx.url("/h"))).build().unwrap();
    let id = hooks.send("e", &json!({"k": "v"})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let hits = rx.hits_for("/h");
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.header("x-fastapihooks-event-id") == Some(id.as_str())));
    assert!(hits.iter().all(|h| h.body == hits[0].body));
    assert!(dlq.is_empty());
    let s = hooks.stats();
    assert_eq!((s.delivered, s.retried, s.failed), (1, 2, 0));
}

#[tokio::test]
async fn retries_408_and_429_but_never_other_4xx() {
    let rx = Receiver::start().await;
    rx.script("/408", [Reply::status(408), Reply::status(200)]);
    rx.script("/429", [Reply::status(429), Reply::status(200)]);
    rx.script("/400", [Reply::status(400)]);
    rx.script("/410", [Reply::status(410)]);
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .on_failure(dlq.clone())
        .subscriber("e", sub(rx.url("/408")))
        .subscriber("e", sub(rx.url("/429")))
        .subscriber("e", sub(rx.url("/400")))
        .subscriber("e", sub(rx.url("/410")))
        .build()
        .unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits_for("/408").len(), 2);
    assert_eq!(rx.hits_for("/429").len(), 2);
    assert_eq!(rx.hits_for("/400").len(), 1);
    assert_eq!(rx.hits_for("/410").len(), 1);
    let failures = dlq.entries();
    assert_eq!(failures.len(), 2);
    assert!(failures.iter().all(|f| f.attempts == 1 && !f.error.is_retryable()));
}

// A receiver ends a delivery's retries with 410 Gone, or with
// `webhook-delivery: abort-message` on any other failure (here a 503, which
// alone would be retried); on_failure learns why.
#[tokio::test]
async fn a_receiver_that_asks_to_stop_is_tried_once_and_on_failure_says_why() {
    use fastapihooks::StopReason;

    let rx = Receiver::start().await;
    rx.script("/abort", [Reply::status(503).header("webhook-delivery", "abort-message"), Reply::status(200)]);
    rx.script("/gone", [Reply::status(410), Reply::status(200)]);
    rx.script("/busy", [Reply::status(503).header("webhook-delivery", "retry"), Reply::status(200)]);
    rx.script("/ok", [Reply::status(200).header("webhook-delivery", "abort-message")]);
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .on_failure(dlq.clone())
        .subscriber("e", sub(rx.url("/abort")))
        .subscriber("e", sub(rx.url("/gone")))
        .subscriber("e", sub(rx.url("/busy")))
        .subscriber("e", sub(rx.url("/ok")))
        .build()
        .unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits_for("/abort").len(), 1, "the abort header ends the retries");
    assert_eq!(rx.hits_for("/gone").len(), 1);
    assert_eq!(rx.hits_for("/busy").len(), 2, "another value of the header is an ordinary 503");
    assert_eq!(rx.hits_for("/ok").len(), 1, "a 2xx is delivered whatever its headers");
    let mut failures = dlq.entries();
    failures.sort_by_key(|f| f.subscription.as_ref().unwrap().target_url.clone());
    assert_eq!(failures.len(), 2, "{failures:?}");
    let (abort, gone) = (&failures[0], &failures[1]);
    assert_eq!(
        abort.error,
        DeliveryError::Attempt(AttemptError::ReceiverStopped { status: 503, reason: StopReason::AbortHeader })
    );
    assert!(abort.error.to_string().contains("receiver asked to stop retrying (webhook-delivery: abort-message)"));
    assert_eq!(
        gone.error,
        DeliveryError::Attempt(AttemptError::ReceiverStopped { status: 410, reason: StopReason::Gone })
    );
    assert!(gone.error.to_string().contains("receiver asked to stop retrying (410 Gone)"), "{}", gone.error);
    assert!(failures.iter().all(|f| f.attempts == 1 && !f.error.is_retryable() && f.error.status().is_some()));
}

#[tokio::test]
async fn network_errors_are_retried_then_handed_to_on_failure() {
    let port = closed_port().await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .on_failure(dlq.clone())
        .subscriber("e", sub(format!("http://127.0.0.1:{port}/h")))
        .build()
        .unwrap();
    hooks.send("e", &json!({"x": 1})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let f = &dlq.entries()[0];
    assert_eq!(f.attempts, 4, "first try + 3 retries");
    assert!(matches!(f.error, DeliveryError::Attempt(AttemptError::Network(_))), "{:?}", f.error);
    assert_eq!(f.event.payload.to_value(), json!({"x": 1}));
    assert_eq!(f.subscription.as_ref().unwrap().target_url, format!("http://127.0.0.1:{port}/h"));
}

#[tokio::test]
async fn timeouts_are_retried_and_reported_as_timeouts() {
    let rx = Receiver::start().await;
    rx.script("/slow", [Reply::status(200).delay(Duration::from_secs(3))]);
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .timeout(Duration::from_millis(200))
        .retry_policy(RetryPolicy::exponential(1, Duration::from_millis(10), Duration::from_millis(10)))
        .on_failure(dlq.clone())
        .subscriber("e", sub(rx.url("/slow")))
        .build()
        .unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits_for("/slow").len(), 2);
    let f = &dlq.entries()[0];
    assert_eq!(f.error, DeliveryError::Attempt(AttemptError::Timeout(Duration::from_millis(200))));
    assert_eq!(f.attempts, 2);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(429).header("retry-after", "1"), Reply::status(200)]);
    let hooks = local_builder()
        .retry_policy(RetryPolicy::exponential(3, Duration::from_millis(10), Duration::from_secs(5)))
        .subscriber("e", sub(rx.url("/h")))
        .build()
        .unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let hits = rx.hits_for("/h");
    assert_eq!(hits.len(), 2);
    let waited = hits[1].at - hits[0].at;
    assert!(waited >= Duration::from_millis(950), "waited only {waited:?} despite Retry-After: 1");
}

#[tokio::test]
async fn retry_after_is_clamped_to_the_policys_maximum() {
    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(503).header("retry-after", "3600"), Reply::status(200)]);
    let hooks = local_builder().subscriber("e", sub(rx.url("/h"))).build().unwrap();
    hooks.send("e", &json!({})).unwrap();
    // The policy's maximum is 50 ms: the retry comes long before an hour.
    let hits = rx.wait_for("/h", 2, WAIT).await;
    assert_eq!(hits.len(), 2);
    assert!(hooks.shutdown(WAIT).await.drained);
}

#[tokio::test]
async fn redirects_are_refused_not_followed() {
    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(302).header("location", "/elsewhere")]);
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder().on_failure(dlq.clone()).subscriber("e", sub(rx.url("/h"))).build().unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits_for("/h").len(), 1, "a 3xx is not retried");
    assert!(rx.hits_for("/elsewhere").is_empty(), "the redirect is not followed");
    assert_eq!(dlq.entries()[0].error, DeliveryError::Attempt(AttemptError::Redirect { status: 302 }));
}

#[tokio::test]
async fn on_failure_gets_subscription_payload_error_and_attempts() {
    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(422)]);
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    let hooks = local_builder()
        .on_failure(move |f: fastapihooks::DeliveryFailure| sink.lock().unwrap().push(f))
        .subscriber("e", sub(rx.url("/h")).bearer("t"))
        .build()
        .unwrap();
    hooks.send("e", &json!({"order": 9})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 1);
    let f = &got[0];
    assert_eq!(f.error, DeliveryError::Attempt(AttemptError::Status { status: 422 }));
    assert_eq!(f.attempts, 1);
    assert_eq!(f.event.payload.to_value(), json!({"order": 9}));
    assert_eq!(f.event.name, "e");
    assert_eq!(f.subscription.as_ref().unwrap().target_url, rx.url("/h"));
}

#[tokio::test]
async fn slow_endpoint_does_not_delay_a_fast_one() {
    let rx = Receiver::start().await;
    rx.script("/slow", [Reply::status(200).delay(Duration::from_secs(2))]);
    // Both paths are on one host:port, so use two receivers: two endpoints.
    let fast = Receiver::start().await;
    let hooks = local_builder()
        .max_concurrency(4)
        .per_endpoint_concurrency(2)
        .subscriber("e", sub(rx.url("/slow")))
        .subscriber("e", sub(fast.url("/fast")))
        .build()
        .unwrap();
    let start = std::time::Instant::now();
    for _ in 0..10 {
        hooks.send("e", &json!({})).unwrap();
    }
    let hits = fast.wait_for("/fast", 10, WAIT).await;
    assert_eq!(hits.len(), 10);
    let fast_done = hits.iter().map(|h| h.at).max().unwrap() - start;
    // The slow endpoint needs 10 s for its 10 deliveries (2 at a time, 2 s
    // each); the fast one must not wait for it.
    assert!(fast_done < Duration::from_millis(1500), "fast endpoint waited {fast_done:?}");
    assert!(rx.hits_for("/slow").len() <= 4, "slow endpoint limited to 2 in flight");
    hooks.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn endpoint_backlog_overflow_goes_to_on_failure() {
    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(200).delay(Duration::from_millis(300))]);
    let dlq = InMemoryDeadLetterQueue::new(100);
    let hooks = local_builder()
        .per_endpoint_concurrency(1)
        .max_endpoint_backlog(2)
        .on_failure(dlq.clone())
        .subscriber("e", sub(rx.url("/h")))
        .build()
        .unwrap();
    for _ in 0..10 {
        hooks.send("e", &json!({})).unwrap();
    }
    assert!(hooks.shutdown(WAIT).await.drained);
    let delivered = rx.hits_for("/h").len();
    let overflow =
        dlq.entries().iter().filter(|f| matches!(f.error, DeliveryError::EndpointBacklogFull { .. })).count();
    assert_eq!(delivered + overflow, 10, "every event is delivered or reported");
    assert!(overflow > 0);
}

#[tokio::test]
async fn store_subscriptions_are_scoped_by_owner() {
    let rx = Receiver::start().await;
    let store = MemoryStore::new();
    store.add("e", sub(rx.url("/x")).owner("x")).await.unwrap();
    store.add("e", sub(rx.url("/y")).owner("y")).await.unwrap();
    store.add("e", sub(rx.url("/all"))).await.unwrap();
    store.add("other", sub(rx.url("/other"))).await.unwrap();
    let hooks = local_builder().store(store).build().unwrap();
    hooks.emit(Emission::new("e").owner(Some("x".into())).response_value(json!(1))).unwrap();
    hooks.emit(Emission::new("e").response_value(json!(2))).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let bodies = |p: &str| rx.hits_for(p).iter().map(|h| h.json()).collect::<Vec<_>>();
    assert_eq!(bodies("/x"), [json!(1)]);
    assert!(bodies("/y").is_empty());
    let mut all = bodies("/all");
    all.sort_by_key(|v| v.as_i64());
    assert_eq!(all, [json!(1), json!(2)]);
    assert!(bodies("/other").is_empty());
}

#[tokio::test]
async fn store_and_static_subscribers_are_both_delivered() {
    let rx = Receiver::start().await;
    let store = MemoryStore::new();
    store.add("e", sub(rx.url("/stored"))).await.unwrap();
    let hooks = local_builder().store(store).subscriber("e", sub(rx.url("/static"))).build().unwrap();
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits_for("/stored").len(), 1);
    assert_eq!(rx.hits_for("/static").len(), 1);
}

#[tokio::test]
async fn first_attempts_are_not_starved_by_retries() {
    // One endpoint, one worker, 10 ms per request, and 20 events failing
    // with 1 ms retry delays: the endpoint's retry queue is never empty.
    // Served retries-first, the fresh events would wait for all 220
    // attempts (~2 s); alternating, they get every other turn.
    let rx = Receiver::start().await;
    rx.script("/retry", [Reply::status(503).delay(Duration::from_millis(10))]);
    let dlq = InMemoryDeadLetterQueue::new(100);
    let hooks = local_builder()
        .per_endpoint_concurrency(1)
        .retry_policy(RetryPolicy::schedule([Duration::from_millis(1); 10]).with_jitter(1.0, 1.0))
        .on_failure(dlq.clone())
        .subscriber("r", sub(rx.url("/retry")))
        .subscriber("f", sub(rx.url("/fresh")))
        .build()
        .unwrap();
    for _ in 0..20 {
        hooks.send("r", &json!({})).unwrap();
    }
    rx.wait_for("/retry", 40, WAIT).await; // retries are cycling
    for _ in 0..5 {
        hooks.send("f", &json!({})).unwrap();
    }
    let fresh = rx.wait_for("/fresh", 5, WAIT).await;
    assert_eq!(fresh.len(), 5);
    let retries_so_far = rx.hits_for("/retry").len();
    assert!(retries_so_far < 150, "first attempts waited behind {retries_so_far} retry attempts");
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits_for("/retry").len(), 20 * 11, "each retried event: 1 attempt + 10 retries");
    assert_eq!(dlq.len(), 20);
}

#[tokio::test]
async fn a_panicking_on_failure_handler_does_not_stop_delivery() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let rx = Receiver::start().await;
    rx.script("/gone", [Reply::status(404)]);
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let hooks = local_builder()
        .per_endpoint_concurrency(1)
        .on_failure(move |_f: fastapihooks::DeliveryFailure| {
            seen.fetch_add(1, Ordering::SeqCst);
            panic!("the user's handler is broken");
        })
        .subscriber("e", sub(rx.url("/gone")))
        .subscriber("e", sub(rx.url("/ok")))
        .build()
        .unwrap();
    for i in 0..3 {
        hooks.send("e", &json!(i)).unwrap();
    }
    assert!(hooks.shutdown(WAIT).await.drained);
    // The endpoint's one worker survived each panic and served the next event.
    assert_eq!(rx.hits_for("/gone").len(), 3);
    assert_eq!(rx.hits_for("/ok").len(), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// The niceness of this process's threads whose name starts with `prefix`
/// (Linux: `/proc/self/task/*/stat`, field 19).
fn thread_niceness(prefix: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        // Other tests' threads come and go meanwhile.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        found.push(after_comm.split_whitespace().nth(16).unwrap().parse().unwrap());
    }
    found
}

#[tokio::test]
async fn a_dedicated_delivery_runtime_delivers_on_lower_priority_threads() {
    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(503), Reply::status(200)]);
    let hooks = local_builder()
        .delivery_runtime(fastapihooks::DeliveryRuntime::dedicated(2).nice(7))
        .subscriber("e", sub(rx.url("/h")))
        .build()
        .unwrap();
    for i in 0..5 {
        hooks.send("e", &json!(i)).unwrap();
    }
    rx.wait_for("/h", 6, WAIT).await;
    // Thread names are cut to 15 bytes: "fastapihooks-de". Tests running
    // beside this one have delivery threads too, at the default niceness 0.
    let at_7 = || thread_niceness("fastapihooks-de").into_iter().filter(|&n| n == 7).count();
    assert_eq!(at_7(), 2, "two delivery threads at niceness 7");
    assert!(hooks.shutdown(WAIT).await.drained, "retries on the dedicated runtime drain too");
    assert_eq!(hooks.stats().delivered, 5);
    // Shutdown stops the dedicated runtime: its threads are gone.
    let deadline = std::time::Instant::now() + WAIT;
    while at_7() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(at_7(), 0, "delivery threads outlived shutdown");
}

#[tokio::test]
async fn each_endpoints_deliveries_stay_on_one_delivery_thread() {
    use std::collections::{HashMap, HashSet};
    let reports = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = reports.clone();
    let mut builder = local_builder().delivery_runtime(fastapihooks::DeliveryRuntime::dedicated(2)).on_failure(
        move |f: fastapihooks::DeliveryFailure| {
            let thread = std::thread::current();
            let endpoint = f.subscription.map(|s| s.target_url.clone()).unwrap_or_default();
            seen.lock().unwrap().push((endpoint, thread.id(), thread.name().unwrap_or_default().to_owned()));
        },
    );
    // 24 endpoints where nothing listens: each delivery is retried (timers,
    // re-queued) before it is reported. They take the threads in turn. (A
    // port just freed may come back: keep asking until 24 differ.)
    let mut ports = HashSet::new();
    while ports.len() < 24 {
        ports.insert(closed_port().await);
    }
    for port in ports {
        builder = builder.subscriber("e", sub(format!("http://127.0.0.1:{port}/x")));
    }
    let hooks = builder.build().unwrap();
    for i in 0..3 {
        hooks.send("e", &json!(i)).unwrap();
    }
    assert!(hooks.shutdown(WAIT).await.drained);
    let reports = reports.lock().unwrap().clone();
    assert_eq!(reports.len(), 72, "3 events x 24 endpoints");
    assert!(reports.iter().all(|(_, _, name)| name == "fastapihooks-delivery"), "{reports:?}");
    let mut threads_of: HashMap<&str, HashSet<std::thread::ThreadId>> = HashMap::new();
    for (endpoint, thread, _) in &reports {
        threads_of.entry(endpoint).or_default().insert(*thread);
    }
    assert_eq!(threads_of.len(), 24);
    assert!(
        threads_of.values().all(|t| t.len() == 1),
        "an endpoint's deliveries moved between threads: {threads_of:?}"
    );
    let threads: HashSet<_> = reports.iter().map(|(_, t, _)| *t).collect();
    assert_eq!(threads.len(), 2, "endpoints spread over both delivery threads");
}

/// The name of the thread each failure report ran on.
fn failure_threads() -> (std::sync::Arc<std::sync::Mutex<Vec<String>>>, impl fastapihooks::FailureHandler) {
    let names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = names.clone();
    let handler = move |_f: fastapihooks::DeliveryFailure| {
        let name = std::thread::current().name().unwrap_or_default().to_owned();
        seen.lock().unwrap().push(name);
    };
    (names, handler)
}

#[tokio::test]
async fn delivery_runs_on_threads_of_its_own_by_default_and_on_the_app_runtime_when_shared() {
    let rx = Receiver::start().await;
    for (runtime, dedicated) in [(None, true), (Some(fastapihooks::DeliveryRuntime::shared()), false)] {
        rx.script("/gone", [Reply::status(410)]);
        let (names, handler) = failure_threads();
        let mut builder = local_builder().on_failure(handler).subscriber("e", sub(rx.url("/gone")));
        if let Some(runtime) = runtime {
            builder = builder.delivery_runtime(runtime);
        }
        let hooks = builder.build().unwrap();
        hooks.send("e", &json!(1)).unwrap();
        assert!(hooks.shutdown(WAIT).await.drained);
        let names = names.lock().unwrap().clone();
        assert_eq!(names.len(), 1, "one failure report");
        // A shared runtime's tasks run where `#[tokio::test]` runs the test.
        assert_eq!(names[0] == "fastapihooks-delivery", dedicated, "the report ran on {:?}", names[0]);
    }
}
