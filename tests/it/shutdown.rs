//! Graceful shutdown, and what never reaches logs or `Debug`.

use std::time::Duration;

use fastapihooks::{
    DeliveryError, EmitError, InMemoryDeadLetterQueue, MemoryStore, RetryPolicy, Store, WebhookSubscription,
};
use serde_json::json;

use crate::util::{LogCapture, Receiver, Reply, closed_port, local_builder, take_request};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn shutdown_drains_in_flight_retries_before_returning() {
    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(503), Reply::status(503), Reply::status(200)]);
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder()
        .retry_policy(RetryPolicy::schedule([Duration::from_millis(200), Duration::from_millis(200)]))
        .on_failure(dlq.clone())
        .subscriber("e", WebhookSubscription::new(rx.url("/h")).unwrap())
        .build()
        .unwrap();
    hooks.send("e", &json!({})).unwrap();
    let report = hooks.shutdown(WAIT).await;
    assert!(report.drained);
    assert_eq!(rx.hits_for("/h").len(), 3, "the pending retries ran before shutdown returned");
    assert!(dlq.is_empty());
    assert_eq!(hooks.stats().delivered, 1);
}

// Intake closes when shutdown starts, even while emissions keep coming
// (the pipeline, busy draining them, must still notice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_intake_at_once_under_a_steady_flow() {
    let rx = Receiver::start().await;
    let hooks = local_builder().subscriber("e", WebhookSubscription::new(rx.url("/h")).unwrap()).build().unwrap();
    let emitter = {
        let hooks = hooks.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            // Bounded: at most 5 s of emitting.
            while start.elapsed() < Duration::from_secs(5) {
                // Faster than the pipeline drains: its queue never empties.
                for _ in 0..200 {
                    if let Err(EmitError::ShutDown) = hooks.send("e", &json!({})) {
                        return Some(tokio::time::Instant::now());
                    }
                }
                tokio::task::yield_now().await;
            }
            None
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    let shutdown = {
        let hooks = hooks.clone();
        tokio::spawn(async move { hooks.shutdown(Duration::from_secs(4)).await })
    };
    let refused_at = emitter.await.unwrap().expect("emissions were accepted for 5 s after shutdown started");
    assert!(
        refused_at - started < Duration::from_secs(1),
        "intake closed {:?} after shutdown started",
        refused_at - started
    );
    shutdown.await.unwrap();
}

#[tokio::test]
async fn shutdown_deadline_hands_what_is_left_to_on_failure() {
    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(503)]);
    let dlq = InMemoryDeadLetterQueue::new(100);
    let hooks = local_builder()
        .retry_policy(RetryPolicy::schedule([Duration::from_secs(30)]))
        .on_failure(dlq.clone())
        .subscriber("e", WebhookSubscription::new(rx.url("/h")).unwrap())
        .build()
        .unwrap();
    for i in 0..5 {
        hooks.send("e", &json!({"n": i})).unwrap();
    }
    rx.wait_for("/h", 5, WAIT).await;
    let started = std::time::Instant::now();
    let report = hooks.shutdown(Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "the deadline is respected");
    assert!(!report.drained);
    let entries = dlq.entries();
    assert_eq!(entries.len(), 5, "every pending retry is reported: {entries:?}");
    for f in entries {
        match f.error {
            DeliveryError::Shutdown { last: Some(last) } => assert!(last.contains("503"), "{last}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn emit_after_shutdown_is_refused_and_reported() {
    let dlq = InMemoryDeadLetterQueue::new(10);
    let hooks = local_builder().on_failure(dlq.clone()).build().unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(hooks.send("e", &json!({"late": true})), Err(EmitError::ShutDown));
    let f = &dlq.entries()[0];
    assert_eq!(f.error, DeliveryError::Shutdown { last: None });
    assert_eq!(f.event.payload.to_value(), json!({"late": true}));
    // A second shutdown returns at once.
    assert!(hooks.shutdown(WAIT).await.drained);
}

#[tokio::test(flavor = "current_thread")]
async fn secrets_never_reach_debug_output_or_logs() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(500)]);
    let dead = closed_port().await;
    let store = MemoryStore::new();
    let stored = WebhookSubscription::new(format!("http://127.0.0.1:{dead}/x?token=QUERY-SECRET"))
        .unwrap()
        .bearer("BEARER-SECRET-2");
    let id = store.add("e", stored).await.unwrap();
    let builder = local_builder()
        .signing_secret("SIGNING-SECRET")
        .store(store.clone())
        .subscriber("e", WebhookSubscription::new(rx.url("/h")).unwrap().bearer("BEARER-SECRET-1"));
    let builder_debug = format!("{builder:?}");
    let hooks = builder.build().unwrap(); // no on_failure: failures are logged
    hooks.send("e", &json!({})).unwrap();
    assert!(hooks.shutdown(WAIT).await.drained);
    let stored_debug = format!("{:?}", store.get(&id).await.unwrap().unwrap());
    let text = format!("{builder_debug}\n{hooks:?}\n{stored_debug}\n{}", logs.text());
    assert!(text.contains("webhook delivery failed"), "failures are logged at error level:\n{text}");
    assert!(text.contains("ERROR"), "{text}");
    for secret in ["SIGNING-SECRET", "BEARER-SECRET-1", "BEARER-SECRET-2", "QUERY-SECRET"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
}

/// A one-connection HTTP/1.1 server on a raw socket: answers every request
/// 200 with keep-alive, and reports when the client closes the connection.
async fn keep_alive_server() -> (String, tokio::sync::oneshot::Receiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/h", listener.local_addr().unwrap());
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = sock.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                let _ = closed_tx.send(());
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            // One request = headers + Content-Length bytes of body.
            while take_request(&mut buf).is_some() {
                sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
            }
        }
    });
    (url, closed_rx)
}

#[tokio::test]
async fn shutdown_closes_the_http_connections() {
    let (url, closed) = keep_alive_server().await;
    let hooks = local_builder().subscriber("e", WebhookSubscription::new(url).unwrap()).build().unwrap();
    // Two deliveries, one after the other, share one keep-alive connection
    // (the server accepts only one).
    hooks.send("e", &json!(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    hooks.send("e", &json!(2)).unwrap();
    // Keep a clone alive: shutdown itself must close the connections.
    let _still_held = hooks.clone();
    assert!(hooks.shutdown(WAIT).await.drained);
    assert_eq!(hooks.stats().delivered, 2);
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the connection was closed by shutdown")
        .expect("server saw EOF");
}

#[tokio::test]
async fn concurrent_shutdowns_both_wait_for_the_drain() {
    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(200).delay(Duration::from_millis(300))]);
    let hooks = local_builder().subscriber("e", WebhookSubscription::new(rx.url("/h")).unwrap()).build().unwrap();
    hooks.send("e", &json!({})).unwrap();
    let (a, b) = tokio::join!(hooks.shutdown(WAIT), hooks.shutdown(WAIT));
    assert!(a.drained && b.drained);
    assert_eq!(rx.hits_for("/h").len(), 1);
    assert_eq!(hooks.stats().delivered, 1, "the second call returned only after the delivery");
}

// A worker in the same process, fed through a shared in-memory queue: its
// engine delivers what the app publishes, and its shutdown runs once (a
// second call waits for the drain and gets the same report).
#[tokio::test]
async fn a_worker_on_a_shared_memory_queue_delivers_and_shuts_down_once() {
    use std::sync::Arc;

    use fastapihooks::{Backend, BackgroundTaskBackend, Fastapihooks, NetworkPolicy, Worker};

    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(200).delay(Duration::from_millis(300))]);
    let queue: Arc<dyn Backend> = Arc::new(BackgroundTaskBackend::new());
    let app = Fastapihooks::builder()
        .backend_arc(queue.clone())
        .subscriber("e", WebhookSubscription::new(rx.url("/h")).unwrap())
        .build()
        .unwrap();
    assert!(app.is_subscribed("anything"), "with a queue backend the worker's store decides");
    let worker =
        Worker::builder().backend_arc(queue).network_policy(NetworkPolicy::default().allow_loopback()).start().unwrap();
    app.send("e", &json!({"n": 1})).unwrap();
    // The app's shutdown hands the queued event on, then closes the queue.
    assert!(app.shutdown(WAIT).await.drained);
    // The request is on its way (the receiver answers it 300 ms later).
    let deadline = tokio::time::Instant::now() + WAIT;
    while rx.hits_for("/h").is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (a, b) = tokio::join!(worker.shutdown(WAIT), worker.shutdown(WAIT));
    assert!(a.drained && b.drained);
    assert_eq!(rx.hits_for("/h").len(), 1);
    assert_eq!(worker.stats().delivered, 1, "both calls returned only after the delivery");
    assert_eq!(app.stats().published, 1);
}

/// A backend that is down: every read of its stream fails, until it is
/// closed; it counts the failed reads.
struct DownBackend {
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reads: tokio::sync::watch::Sender<usize>,
}

#[async_trait::async_trait]
impl fastapihooks::Backend for DownBackend {
    async fn publish(&self, _: fastapihooks::Event) -> Result<(), fastapihooks::BackendError> {
        Err(fastapihooks::BackendError::transport("down"))
    }

    fn consume(
        &self,
    ) -> futures_util::stream::BoxStream<'static, Result<fastapihooks::backend::Received, fastapihooks::BackendError>>
    {
        use std::sync::atomic::Ordering;
        let (closed, reads) = (self.closed.clone(), self.reads.clone());
        let stream = futures_util::stream::poll_fn(move |_| {
            if closed.load(Ordering::SeqCst) {
                return std::task::Poll::Ready(None);
            }
            reads.send_modify(|n| *n += 1);
            std::task::Poll::Ready(Some(Err(fastapihooks::BackendError::transport("down"))))
        });
        Box::pin(stream)
    }

    async fn close(&self) -> Result<(), fastapihooks::BackendError> {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

// A worker waiting out a failing backend (a pause that grows to seconds)
// stops at once when shut down: the wait does not run into the deadline.
#[tokio::test]
async fn a_worker_waiting_for_a_failing_backend_shuts_down_at_once() {
    let (reads, mut read) = tokio::sync::watch::channel(0);
    let backend = DownBackend { closed: Default::default(), reads };
    let worker = fastapihooks::Worker::builder().backend(backend).start().unwrap();
    // After the fifth failed read the pause is 1.6 s (± 25 %).
    tokio::time::timeout(WAIT, read.wait_for(|n| *n >= 5)).await.expect("reads fail").unwrap();
    let started = std::time::Instant::now();
    let report = worker.shutdown(WAIT).await;
    let took = started.elapsed();
    assert!(report.drained, "nothing was in flight");
    assert!(took < Duration::from_millis(600), "shutdown took {took:?}, waiting out the pause");
}
