//! The app's publishing to Redis Streams: batches in one round trip, and
//! the publish spool that keeps events through an outage (Redis stopped
//! and started again on the same port), reports its overflow, gives up in
//! time, and is flushed or reported by shutdown.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fastapihooks::backend::{Backend, BackendError};
use fastapihooks::{DeliveryError, Event, Fastapihooks, InMemoryDeadLetterQueue, Payload};
use serde_json::json;

use super::redis_util::{RedisServer, backend, connect, eventually, redis_or_skip, unique_key, xlen};

const WAIT: Duration = Duration::from_secs(15);

fn event(n: u32) -> Event {
    Event::new("order.created", Payload::from_serialize(&json!({ "n": n })).unwrap())
}

/// An app publishing to `stream` on `url`, reporting to `dlq`.
fn app(url: &str, stream: &str, dlq: &InMemoryDeadLetterQueue) -> fastapihooks::FastapihooksBuilder {
    Fastapihooks::builder().backend(backend(url, stream).build().unwrap()).on_failure(dlq.clone())
}

/// The event ids in `stream`, in stream order.
async fn stream_ids(url: &str, stream: &str) -> Vec<String> {
    let mut conn = connect(url).await;
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    entries
        .into_iter()
        .map(|(_, fields)| {
            let json = &fields.iter().find(|(f, _)| f == "event").expect("an event field").1;
            serde_json::from_str::<Event>(json).expect("an event").id.as_str().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_batch_is_published_in_one_go_in_order() {
    let url = redis_or_skip!();
    let key = unique_key("batch");
    let b = backend(&url, &key).build().unwrap();
    let events: Vec<Event> = (0..600).map(event).collect();
    let ids: Vec<String> = events.iter().map(|e| e.id.as_str().to_owned()).collect();
    b.publish_batch(events).await.unwrap();
    assert_eq!(stream_ids(&url, &key).await, ids);
    b.publish_batch(Vec::new()).await.unwrap();
    let mut conn = connect(&url).await;
    assert_eq!(xlen(&mut conn, &key).await, 600);
    redis::cmd("DEL").arg(&key).query_async::<i64>(&mut conn).await.unwrap();
}

#[tokio::test]
async fn xadds_redis_refuses_come_back_unpublished_and_a_down_redis_returns_the_whole_batch() {
    let url = redis_or_skip!();
    let key = unique_key("batch-refused");
    let mut conn = connect(&url).await;
    // Not a stream: every XADD of the pipeline is refused (WRONGTYPE).
    redis::cmd("SET").arg(&key).arg("x").query_async::<String>(&mut conn).await.unwrap();
    let b = backend(&url, &key).build().unwrap();
    let events: Vec<Event> = (0..3).map(event).collect();
    let err = b.publish_batch(events.clone()).await.unwrap_err();
    assert!(matches!(err.error, BackendError::Transport(_)), "{err:?}");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    let ids = |es: &[Event]| es.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&err.unpublished), ids(&events));
    redis::cmd("DEL").arg(&key).query_async::<i64>(&mut conn).await.unwrap();
    b.publish_batch(err.unpublished).await.unwrap();
    assert_eq!(xlen(&mut conn, &key).await, 3);
    redis::cmd("DEL").arg(&key).query_async::<i64>(&mut conn).await.unwrap();

    let port = super::util::closed_port().await;
    let down = backend(&format!("redis://127.0.0.1:{port}/0"), &key).build().unwrap();
    let err = down.publish_batch(events.clone()).await.unwrap_err();
    assert!(matches!(err.error, BackendError::Transport(_)), "{err:?}");
    assert_eq!(ids(&err.unpublished), ids(&events));
    down.close().await.unwrap();
    let err = down.publish_batch(events).await.unwrap_err();
    assert!(matches!(err.error, BackendError::Closed), "{err:?}");
    assert_eq!(err.unpublished.len(), 3);
}

#[tokio::test]
async fn events_emitted_during_an_outage_are_published_once_redis_is_back() {
    let Some(mut server) = RedisServer::start().await else { return };
    let url = server.url();
    let key = unique_key("outage");
    let dlq = InMemoryDeadLetterQueue::new(1_000);
    let hooks = app(&url, &key, &dlq).build().unwrap();
    let conn = connect(&url).await;
    for n in 0..50 {
        hooks.send("order.created", &json!({ "n": n })).unwrap();
    }
    assert!(
        eventually(WAIT, || {
            let mut c = conn.clone();
            let k = key.clone();
            async move { xlen(&mut c, &k).await == 50 }
        })
        .await
    );

    server.kill();
    for n in 50..250 {
        hooks.send("order.created", &json!({ "n": n })).unwrap();
    }
    assert!(eventually(WAIT, || async { hooks.stats().spooled == 200 }).await, "{:?}", hooks.stats());
    // Down for a while: several retries fail.
    assert!(eventually(WAIT, || async { hooks.stats().publish_retries >= 3 }).await, "{:?}", hooks.stats());
    server.restart().await;
    let mut conn2 = connect(&url).await;
    let all = eventually(WAIT, || {
        let mut c = conn2.clone();
        let k = key.clone();
        async move { xlen(&mut c, &k).await == 250 }
    })
    .await;
    assert!(all, "{} in the stream, {:?}", xlen(&mut conn2, &key).await, hooks.stats());
    // Nothing more comes, nothing was reported.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(xlen(&mut conn2, &key).await, 250);
    let ids = stream_ids(&url, &key).await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 250, "no duplicates");
    assert!(dlq.is_empty(), "{:?}", dlq.entries().first().map(|f| f.error.to_string()));
    let stats = hooks.stats();
    assert_eq!((stats.published, stats.failed, stats.spooled), (250, 0, 0), "{stats:?}");
    assert!(hooks.shutdown(WAIT).await.drained);
    drop(conn);
}

#[tokio::test]
async fn a_full_spool_reports_the_overflow_and_shutdown_reports_the_rest() {
    let port = super::util::closed_port().await;
    let url = format!("redis://127.0.0.1:{port}/0");
    let dlq = InMemoryDeadLetterQueue::new(100);
    let hooks = app(&url, "k", &dlq).publish_spool(10).build().unwrap();
    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(hooks.send("order.created", &json!({ "n": n })).unwrap());
    }
    assert!(eventually(WAIT, || async { dlq.len() == 20 }).await, "{} reported", dlq.len());
    let stats = hooks.stats();
    assert_eq!((stats.spooled, stats.failed), (10, 20), "{stats:?}");
    for f in dlq.drain() {
        match &f.error {
            DeliveryError::SpoolFull { capacity: 10, last } => assert!(last.contains("redis"), "{last}"),
            other => panic!("expected SpoolFull, got {other:?}"),
        }
        assert!(f.error.to_string().starts_with("publish spool full: 10 events already waiting"), "{}", f.error);
        assert!(f.error.is_retryable());
    }
    let report = hooks.shutdown(Duration::from_millis(200)).await;
    assert!(!report.drained);
    let rest = dlq.drain();
    assert_eq!(rest.len(), 10);
    // The spool kept the oldest: the first ten emitted.
    let reported: Vec<_> = rest.iter().map(|f| f.event.id.clone()).collect();
    assert_eq!(reported, ids[..10]);
    assert!(rest.iter().all(|f| matches!(&f.error, DeliveryError::Shutdown { last: Some(_) })));
    assert_eq!(hooks.stats().spooled, 0);
}

#[tokio::test]
async fn shutdown_with_redis_down_reports_the_spooled_events_as_shut_down_by_the_deadline() {
    let port = super::util::closed_port().await;
    let url = format!("redis://127.0.0.1:{port}/0");
    let dlq = InMemoryDeadLetterQueue::new(100);
    let hooks = app(&url, "k", &dlq).build().unwrap();
    for n in 0..20 {
        hooks.send("order.created", &json!({ "n": n })).unwrap();
    }
    assert!(eventually(WAIT, || async { hooks.stats().spooled == 20 }).await, "{:?}", hooks.stats());
    let started = Instant::now();
    let report = hooks.shutdown(Duration::from_millis(300)).await;
    let took = started.elapsed();
    assert!(!report.drained);
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2), "{took:?}");
    let failures = dlq.drain();
    assert_eq!(failures.len(), 20);
    for f in &failures {
        match &f.error {
            DeliveryError::Shutdown { last: Some(last) } => assert!(last.contains("redis"), "{last}"),
            other => panic!("expected Shutdown, got {other:?}"),
        }
    }
    let stats = hooks.stats();
    assert_eq!((stats.spooled, stats.failed, stats.published), (0, 20, 0), "{stats:?}");
    assert!(hooks.send("order.created", &json!({})).is_err(), "shut down");
}

#[tokio::test]
async fn shutdown_flushes_the_spool_when_redis_comes_back_before_the_deadline() {
    let Some(mut server) = RedisServer::start().await else { return };
    let url = server.url();
    let key = unique_key("flush");
    let dlq = InMemoryDeadLetterQueue::new(100);
    let hooks = app(&url, &key, &dlq).build().unwrap();
    server.kill();
    for n in 0..20 {
        hooks.send("order.created", &json!({ "n": n })).unwrap();
    }
    assert!(eventually(WAIT, || async { hooks.stats().spooled == 20 }).await, "{:?}", hooks.stats());
    let shutdown = tokio::spawn({
        let hooks = hooks.clone();
        async move { hooks.shutdown(WAIT).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!shutdown.is_finished(), "shutdown waits for the spool");
    server.restart().await;
    assert!(shutdown.await.unwrap().drained);
    assert!(dlq.is_empty(), "{:?}", dlq.entries().first().map(|f| f.error.to_string()));
    assert_eq!(xlen(&mut connect(&url).await, &key).await, 20);
    assert_eq!(hooks.stats().published, 20);
}

#[tokio::test]
async fn events_the_backend_never_takes_are_given_up_after_the_give_up_time() {
    let port = super::util::closed_port().await;
    let url = format!("redis://127.0.0.1:{port}/0");
    let dlq = InMemoryDeadLetterQueue::new(100);
    let hooks = app(&url, "k", &dlq).publish_give_up(Duration::from_millis(300)).build().unwrap();
    let started = Instant::now();
    for n in 0..5 {
        hooks.send("order.created", &json!({ "n": n })).unwrap();
    }
    assert!(eventually(WAIT, || async { dlq.len() == 5 }).await);
    assert!(started.elapsed() >= Duration::from_millis(300), "kept for the give-up time first");
    for f in dlq.drain() {
        match &f.error {
            DeliveryError::Backend(e) => assert!(e.contains("given up") && e.contains("redis"), "{e}"),
            other => panic!("expected Backend, got {other:?}"),
        }
    }
    let stats = hooks.stats();
    assert!(stats.publish_retries >= 1, "{stats:?}");
    assert_eq!(stats.spooled, 0);
    assert!(hooks.shutdown(WAIT).await.drained);
}

#[tokio::test]
async fn without_a_spool_a_failed_publish_is_reported_at_once() {
    let port = super::util::closed_port().await;
    let url = format!("redis://127.0.0.1:{port}/0");
    let dlq = InMemoryDeadLetterQueue::new(100);
    let hooks = app(&url, "k", &dlq).publish_spool(0).build().unwrap();
    hooks.send("order.created", &json!({})).unwrap();
    assert!(eventually(WAIT, || async { dlq.len() == 1 }).await);
    assert!(matches!(&dlq.entries()[0].error, DeliveryError::Backend(_)));
    let stats = hooks.stats();
    assert_eq!((stats.publish_retries, stats.spooled), (0, 0), "{stats:?}");
    assert!(hooks.shutdown(WAIT).await.drained);
}
