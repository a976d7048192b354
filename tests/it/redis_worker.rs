//! The app publishes to Redis Streams, sidecar `Worker`s deliver: signed
//! POSTs to a real receiver on 127.0.0.1, acked afterwards; a worker that
//! dies or is cut short leaves its events to another; two workers share a
//! group; Redis restarted or its data lost; Redis down at publish; the
//! `fastapihooks start` binary.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use fastapihooks::backend::RedisStreamsBackend;
use fastapihooks::{
    AttemptError, DeliveryError, Fastapihooks, InMemoryDeadLetterQueue, MemoryStore, NetworkPolicy, RedeliverError,
    RetryPolicy, Store, Verifier, WebhookSubscription, Worker, WorkerBuilder, hook,
};
use serde_json::{Value, json};

use super::hook_util::{call, post_json};
use super::redis_util::{
    RedisServer, SECRET, TEST_CA, backend, cli_bin, connect, eventually, pending, redis_or_skip, start_cli_quietly,
    unique_key, xlen,
};
use super::util::{LogCapture, Receiver, Reply};

const WAIT: Duration = Duration::from_secs(15);

/// An app that only publishes to `stream`.
fn app(url: &str, stream: &str) -> Fastapihooks {
    Fastapihooks::builder().backend(backend(url, stream).build().unwrap()).build().unwrap()
}

/// A worker builder that may deliver to 127.0.0.1, with fast retries.
pub fn worker(url: &str, stream: &str, claim_min_idle: Duration) -> WorkerBuilder {
    Worker::builder()
        .backend(backend(url, stream).claim_min_idle(claim_min_idle).build().unwrap())
        .network_policy(NetworkPolicy::default().allow_loopback())
        .retry_policy(RetryPolicy::exponential(2, Duration::from_millis(10), Duration::from_millis(50)))
        .signing_secret(SECRET)
}

async fn stream_is_empty(url: &str, stream: &str) -> bool {
    let mut conn = connect(url).await;
    eventually(WAIT, || {
        let mut conn = conn.clone();
        async move { xlen(&mut conn, stream).await == 0 }
    })
    .await
        && xlen(&mut conn, stream).await == 0
}

/// Event ids of the hits, with how many times each came.
fn ids(hits: &[super::util::Hit]) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for h in hits {
        *ids.entry(h.header("webhook-id").unwrap_or_default().to_owned()).or_default() += 1;
    }
    ids
}

#[hook("order.created")]
async fn create_order(State(_hooks): State<Fastapihooks>, Json(order): Json<Value>) -> Json<Value> {
    Json(json!({ "id": "ord_1", "item": order["item"] }))
}

#[tokio::test]
async fn app_publishes_and_a_worker_delivers_signed_posts_and_acks() {
    let url = redis_or_skip!();
    let key = unique_key("e2e");
    let rx = Receiver::start().await;
    let store = MemoryStore::new();
    store.add("order.created", WebhookSubscription::new(rx.url("/store")).unwrap()).await.unwrap();
    let hooks = app(&url, &key);
    assert!(hooks.is_subscribed("order.created"), "with a queue backend the worker's store decides");
    // Through #[hook], and through send.
    let router = Router::new().route("/orders", post(create_order)).with_state(hooks.clone());
    let (status, _, _) = call(router, post_json("/orders", r#"{"item":"book"}"#)).await;
    assert_eq!(status, 200);
    let sent = hooks.send("order.created", &json!({"id": "ord_2"})).unwrap();
    let w = worker(&url, &key, Duration::from_secs(60)).store(store).start().unwrap();
    let hits = rx.wait_for("/store", 2, WAIT).await;
    assert_eq!(hits.len(), 2);
    let verifier = Verifier::new(SECRET).unwrap();
    for h in &hits {
        verifier.verify(&h.headers, &h.body).expect("signed with the worker's secret");
    }
    let bodies: Vec<Value> = hits.iter().map(|h| h.json()).collect();
    assert!(bodies.contains(&json!({"id": "ord_1", "item": "book"})), "{bodies:?}");
    assert!(bodies.contains(&json!({"id": "ord_2"})), "{bodies:?}");
    assert!(hits.iter().any(|h| h.header("x-fastapihooks-event-id") == Some(sent.as_str())));
    assert_eq!(hooks.stats().published, 2);
    assert_eq!(hooks.stats().delivered, 0, "the app only publishes");
    assert!(stream_is_empty(&url, &key).await, "acked entries are deleted");
    assert_eq!(pending(&mut connect(&url).await, &key, "fastapihooks").await, 0);
    assert_eq!(w.stats().delivered, 2);
    assert!(w.shutdown(WAIT).await.drained);
    assert!(hooks.shutdown(WAIT).await.drained);
}

#[tokio::test]
async fn static_subscribers_of_the_app_travel_with_the_event() {
    let url = redis_or_skip!();
    let key = unique_key("statics");
    let rx = Receiver::start().await;
    let hooks = Fastapihooks::builder()
        .backend(backend(&url, &key).build().unwrap())
        .subscriber("user.created", WebhookSubscription::new(rx.url("/static")).unwrap())
        .build()
        .unwrap();
    hooks.send("user.created", &json!({"id": 7})).unwrap();
    let w = worker(&url, &key, Duration::from_secs(60)).start().unwrap();
    let hits = rx.wait_for("/static", 1, WAIT).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].json(), json!({"id": 7}));
    assert!(stream_is_empty(&url, &key).await);
    assert!(w.shutdown(WAIT).await.drained);
}

#[tokio::test]
async fn events_cut_short_by_a_worker_shutdown_are_delivered_by_another_worker() {
    let url = redis_or_skip!();
    let key = unique_key("handover");
    let rx = Receiver::start().await;
    // The first attempts hang (the first worker is stopped meanwhile); later ones answer at once.
    rx.script(
        "/slow",
        [
            Reply::status(200).delay(Duration::from_secs(30)),
            Reply::status(200).delay(Duration::from_secs(30)),
            Reply::status(200),
        ],
    );
    let store = MemoryStore::new();
    store.add("order.created", WebhookSubscription::new(rx.url("/slow")).unwrap()).await.unwrap();
    let hooks = app(&url, &key);
    let a = hooks.send("order.created", &json!({"n": 1})).unwrap();
    let b = hooks.send("order.created", &json!({"n": 2})).unwrap();
    let idle = Duration::from_millis(500);
    let dlq = InMemoryDeadLetterQueue::new(10);
    let first = worker(&url, &key, idle).store(store.clone()).on_failure(dlq.clone()).start().unwrap();
    assert_eq!(rx.wait_for("/slow", 2, WAIT).await.len(), 2, "both in flight with the first worker");
    // Cut short: reported as shut down, and not acked.
    let report = first.shutdown(Duration::from_millis(50)).await;
    assert!(!report.drained);
    assert_eq!(dlq.len(), 2);
    assert!(dlq.entries().iter().all(|f| matches!(f.error, DeliveryError::Shutdown { .. })));
    assert_eq!(pending(&mut connect(&url).await, &key, "fastapihooks").await, 2);
    // Another worker claims them once idle and delivers them.
    let second = worker(&url, &key, idle).store(store).start().unwrap();
    let hits = rx.wait_for("/slow", 4, WAIT).await;
    let seen = ids(&hits);
    assert_eq!(hits.len(), 4, "{seen:?}");
    assert_eq!(seen.get(a.as_str()), Some(&2));
    assert_eq!(seen.get(b.as_str()), Some(&2));
    assert!(stream_is_empty(&url, &key).await);
    assert_eq!(second.stats().delivered, 2);
    assert!(second.shutdown(WAIT).await.drained);
}

#[tokio::test]
async fn two_workers_in_one_group_deliver_each_event_once() {
    let url = redis_or_skip!();
    let key = unique_key("two-workers");
    let rx = Receiver::start().await;
    let store = MemoryStore::new();
    store.add("order.created", WebhookSubscription::new(rx.url("/h")).unwrap()).await.unwrap();
    let hooks = app(&url, &key);
    let mut sent = Vec::new();
    for n in 0..40 {
        sent.push(hooks.send("order.created", &json!({ "n": n })).unwrap());
    }
    let w1 = worker(&url, &key, Duration::from_secs(60)).store(store.clone()).start().unwrap();
    let w2 = worker(&url, &key, Duration::from_secs(60)).store(store).start().unwrap();
    let hits = rx.wait_for("/h", 40, WAIT).await;
    assert!(stream_is_empty(&url, &key).await);
    // Nothing more arrives: no event was delivered twice.
    assert!(!eventually(Duration::from_millis(500), || async { rx.hits_for("/h").len() > 40 }).await);
    let seen = ids(&rx.hits_for("/h"));
    assert_eq!(hits.len(), 40);
    assert_eq!(seen.len(), 40, "40 distinct events");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    assert!(sent.iter().all(|id| seen.contains_key(id.as_str())));
    let (d1, d2) = (w1.stats().delivered, w2.stats().delivered);
    assert_eq!(d1 + d2, 40, "{d1} + {d2}");
    eprintln!("worker 1 delivered {d1}, worker 2 delivered {d2}");
    assert!(w1.shutdown(WAIT).await.drained);
    assert!(w2.shutdown(WAIT).await.drained);
}

#[tokio::test]
async fn a_worker_recovers_when_redis_loses_the_stream_and_its_group() {
    let url = redis_or_skip!();
    let key = unique_key("lost-group");
    let rx = Receiver::start().await;
    let store = MemoryStore::new();
    store.add("order.created", WebhookSubscription::new(rx.url("/h")).unwrap()).await.unwrap();
    let hooks = app(&url, &key);
    let w = worker(&url, &key, Duration::from_secs(60)).store(store).start().unwrap();
    hooks.send("order.created", &json!({"n": 1})).unwrap();
    assert_eq!(rx.wait_for("/h", 1, WAIT).await.len(), 1);
    assert!(stream_is_empty(&url, &key).await);
    // Data loss (as after FLUSHALL, or a restart without persistence).
    redis::cmd("DEL").arg(&key).query_async::<i64>(&mut connect(&url).await).await.unwrap();
    hooks.send("order.created", &json!({"n": 2})).unwrap();
    let hits = rx.wait_for("/h", 2, WAIT).await;
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[1].json(), json!({"n": 2}));
    assert!(stream_is_empty(&url, &key).await);
    assert!(w.shutdown(WAIT).await.drained);
}

#[tokio::test]
async fn a_worker_and_the_app_reconnect_after_redis_restarts() {
    let Some(mut server) = RedisServer::start().await else { return };
    let url = server.url();
    let key = unique_key("restart");
    let rx = Receiver::start().await;
    let store = MemoryStore::new();
    store.add("order.created", WebhookSubscription::new(rx.url("/h")).unwrap()).await.unwrap();
    let hooks = app(&url, &key);
    let w = worker(&url, &key, Duration::from_secs(60)).store(store).start().unwrap();
    hooks.send("order.created", &json!({"n": 1})).unwrap();
    assert_eq!(rx.wait_for("/h", 1, WAIT).await.len(), 1);
    assert!(stream_is_empty(&url, &key).await, "acked before the restart");
    server.restart().await;
    // Published after the restart, on a new connection: delivered too.
    hooks.send("order.created", &json!({"n": 2})).unwrap();
    let hits = rx.wait_for("/h", 2, WAIT).await;
    assert_eq!(hits.len(), 2, "{:?}", hooks.stats());
    assert_eq!(hits[1].json(), json!({"n": 2}));
    assert!(stream_is_empty(&url, &key).await);
    assert_eq!(hooks.stats().failed, 0);
    assert!(w.shutdown(WAIT).await.drained);
}

#[tokio::test]
async fn an_event_published_while_redis_is_down_goes_to_on_failure() {
    let port = super::util::closed_port().await;
    let dlq = InMemoryDeadLetterQueue::new(10);
    let b = RedisStreamsBackend::builder(format!("redis://:hunter2@127.0.0.1:{port}/0"))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    // Kept in the publish spool and published again until given up.
    let hooks = Fastapihooks::builder()
        .backend(b)
        .publish_give_up(Duration::from_millis(200))
        .on_failure(dlq.clone())
        .build()
        .unwrap();
    let id = hooks.send("order.created", &json!({"id": "ord_1"})).unwrap();
    assert!(eventually(WAIT, || async { !dlq.is_empty() }).await, "reported, not silently lost");
    let failure = &dlq.entries()[0];
    assert_eq!(failure.event.id, id);
    assert_eq!(failure.event.payload.to_value(), json!({"id": "ord_1"}));
    assert!(matches!(&failure.error, DeliveryError::Backend(e) if !e.contains("hunter2")), "{:?}", failure.error);
    assert!(hooks.shutdown(WAIT).await.drained);
}

#[tokio::test]
async fn a_worker_redelivers_its_failures_and_an_app_republishes_a_failed_publish() {
    let url = redis_or_skip!();
    let key = unique_key("redeliver");
    let rx = Receiver::start().await;
    rx.script("/h", [Reply::status(422), Reply::status(200)]);
    let store = MemoryStore::new();
    store.add("order.created", WebhookSubscription::new(rx.url("/h")).unwrap()).await.unwrap();
    let hooks = app(&url, &key);
    let dlq = InMemoryDeadLetterQueue::new(10);
    let w = worker(&url, &key, Duration::from_secs(60)).store(store).on_failure(dlq.clone()).start().unwrap();
    let id = hooks.send("order.created", &json!({"n": 1})).unwrap();
    assert!(eventually(WAIT, || async { !dlq.is_empty() }).await);
    let failure = dlq.drain().remove(0);
    assert_eq!(failure.error, DeliveryError::Attempt(AttemptError::Status { status: 422 }));
    // The app did not make the delivery: the worker redelivers it.
    assert_eq!(hooks.redeliver(failure.clone()).await, Err(RedeliverError::NotDeliveredHere));
    w.redeliver(failure).await.unwrap();
    let hits = rx.wait_for("/h", 2, WAIT).await;
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.header("webhook-id") == Some(id.as_str())));

    // An event whose publish failed (Redis unreachable) is published again.
    let port = super::util::closed_port().await;
    let down = RedisStreamsBackend::builder(format!("redis://127.0.0.1:{port}/0"))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let lost = InMemoryDeadLetterQueue::new(10);
    let cut_off = Fastapihooks::builder().backend(down).publish_spool(0).on_failure(lost.clone()).build().unwrap();
    let id = cut_off.send("order.created", &json!({"n": 2})).unwrap();
    assert!(eventually(WAIT, || async { !lost.is_empty() }).await);
    hooks.redeliver(lost.drain().remove(0)).await.unwrap();
    let hits = rx.wait_for("/h", 3, WAIT).await;
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[2].header("webhook-id"), Some(id.as_str()));
    assert_eq!(hits[2].json(), json!({"n": 2}));
    assert_eq!(hooks.stats().redelivered, 1);
    assert!(stream_is_empty(&url, &key).await);
    assert!(w.shutdown(WAIT).await.drained);
    assert_eq!(w.redeliver(failure_of(id)).await, Err(RedeliverError::ShutDown));
    assert!(cut_off.shutdown(WAIT).await.drained);
}

/// A failure of the whole event `id`, made by hand.
fn failure_of(id: fastapihooks::EventId) -> fastapihooks::DeliveryFailure {
    let event = fastapihooks::Event::new("order.created", fastapihooks::Payload::null()).with_id(id);
    fastapihooks::DeliveryFailure::of_event(std::sync::Arc::new(event), DeliveryError::Shutdown { last: None })
}

#[tokio::test]
async fn a_malformed_entry_is_reported_and_acked_and_the_worker_goes_on() {
    let url = redis_or_skip!();
    let key = unique_key("worker-malformed");
    let rx = Receiver::start().await;
    let store = MemoryStore::new();
    store.add("order.created", WebhookSubscription::new(rx.url("/h")).unwrap()).await.unwrap();
    let logs = LogCapture::default();
    let _guard = logs.install();
    let mut conn = connect(&url).await;
    redis::cmd("XADD").arg(&key).arg("*").arg("event").arg("[1, 2").query_async::<String>(&mut conn).await.unwrap();
    let hooks = app(&url, &key);
    hooks.send("order.created", &json!({"n": 1})).unwrap();
    let w = worker(&url, &key, Duration::from_secs(60)).store(store).start().unwrap();
    assert_eq!(rx.wait_for("/h", 1, WAIT).await.len(), 1);
    assert!(stream_is_empty(&url, &key).await, "the malformed entry is acked too");
    assert_eq!(pending(&mut conn, &key, "fastapihooks").await, 0);
    let dead = format!("{key}:dead");
    assert_eq!(xlen(&mut conn, &dead).await, 1);
    assert!(w.shutdown(WAIT).await.drained);
    let text = logs.text();
    assert!(text.contains("malformed stream entry moved to the dead-letter stream"), "{text}");
    redis::cmd("DEL").arg(&dead).query_async::<i64>(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_worker_needs_a_backend() {
    let err = Worker::builder().start().unwrap_err();
    assert!(matches!(err, fastapihooks::BuildError::NoBackend), "{err}");
}

/// The `fastapihooks start` binary (built with the `cli` feature).
mod cli {
    use std::process::{Command, Stdio};

    use super::*;

    #[tokio::test]
    async fn start_delivers_signed_webhooks_and_stops_cleanly_on_sigterm() {
        let url = redis_or_skip!();
        let Some(bin) = cli_bin() else { return };
        let key = unique_key("cli");
        let rx = Receiver::start().await;
        let hooks = Fastapihooks::builder()
            .backend(backend(&url, &key).build().unwrap())
            .subscriber("order.created", WebhookSubscription::new(rx.url("/cli")).unwrap())
            .build()
            .unwrap();
        hooks.send("order.created", &json!({"id": "ord_cli"})).unwrap();
        let mut child = Command::new(bin)
            .args(["start", "--redis-url", &url, "--stream", &key, "--store", "memory"])
            .args(["--allow-cidr", "127.0.0.0/8", "--max-concurrency", "4", "--log-level", "info"])
            .env("FASTAPIHOOKS_SIGNING_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let hits = rx.wait_for("/cli", 1, WAIT).await;
        assert_eq!(hits.len(), 1);
        Verifier::new(SECRET).unwrap().verify(&hits[0].headers, &hits[0].body).expect("signed");
        assert!(stream_is_empty(&url, &key).await);
        let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let status = tokio::task::spawn_blocking(move || {
            let status = child.wait().unwrap();
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            (status, stderr)
        });
        let (status, stderr) = tokio::time::timeout(WAIT, status).await.expect("exits after SIGTERM").unwrap();
        assert!(status.success(), "{status:?}\n{stderr}");
        assert!(stderr.contains("worker stopped"), "{stderr}");
        assert!(!stderr.contains(SECRET), "the secret is never logged");
    }

    /// Redis over TLS (`rediss://`), with the server's private CA given by file.
    #[tokio::test]
    async fn start_consumes_over_tls_trusting_the_given_ca() {
        let Some(server) = RedisServer::start_tls().await else { return };
        let Some(bin) = cli_bin() else { return };
        let url = server.url();
        let key = unique_key("cli-tls");
        let rx = Receiver::start().await;
        let ca = std::fs::read(TEST_CA).unwrap();
        let hooks = Fastapihooks::builder()
            .backend(backend(&url, &key).tls_root_certificates(ca).build().unwrap())
            .subscriber("order.created", WebhookSubscription::new(rx.url("/tls")).unwrap())
            .build()
            .unwrap();
        hooks.send("order.created", &json!({"id": "ord_tls"})).unwrap();
        let mut child = start_cli_quietly(bin, &["--redis-url", &url, "--redis-ca-file", TEST_CA, "--stream", &key]);
        let hits = rx.wait_for("/tls", 1, WAIT).await;
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].json(), json!({"id": "ord_tls"}));
        assert!(hooks.shutdown(WAIT).await.drained);
    }

    /// Subscriptions from a SQL store (SQLite here), signed with the secret.
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn start_delivers_to_the_subscriptions_of_a_sql_store() {
        use fastapihooks::store::sql::SqlStore;

        let url = redis_or_skip!();
        let Some(bin) = cli_bin() else { return };
        let key = unique_key("cli-sql");
        let rx = Receiver::start().await;
        let db = crate::store_util::TempDb::new();
        let store = SqlStore::connect(db.url()).await.unwrap();
        store.init().await.unwrap();
        store.add("order.created", WebhookSubscription::new(rx.url("/sql")).unwrap()).await.unwrap();
        store.close().await;
        let hooks = app(&url, &key);
        hooks.send("order.created", &json!({"id": "ord_sql"})).unwrap();
        let mut child = start_cli_quietly(bin, &["--redis-url", &url, "--stream", &key, "--store", &db.url()]);
        let hits = rx.wait_for("/sql", 1, WAIT).await;
        let emptied = stream_is_empty(&url, &key).await;
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].json(), json!({"id": "ord_sql"}));
        Verifier::new(SECRET).unwrap().verify(&hits[0].headers, &hits[0].body).expect("signed");
        assert!(emptied);
    }

    /// `--proxy`: deliveries leave through a real tinyproxy; its credentials
    /// are never logged.
    #[tokio::test]
    async fn start_delivers_through_the_given_proxy() {
        let url = redis_or_skip!();
        let Some(bin) = cli_bin() else { return };
        let Some(proxy) = crate::tinyproxy_util::Tinyproxy::start() else { return };
        let key = unique_key("cli-proxy");
        let rx = Receiver::start().await;
        let hooks = Fastapihooks::builder()
            .backend(backend(&url, &key).build().unwrap())
            .subscriber("order.created", WebhookSubscription::new(rx.url("/proxied")).unwrap())
            .build()
            .unwrap();
        hooks.send("order.created", &json!({"id": "ord_proxy"})).unwrap();
        let proxy_url = proxy.url().replace("http://", "http://user:s3cret-pw@");
        let mut child = Command::new(bin)
            .args(["start", "--redis-url", &url, "--stream", &key, "--proxy", &proxy_url])
            .args(["--allow-cidr", "127.0.0.0/8", "--log-level", "info"])
            .env("FASTAPIHOOKS_SIGNING_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let hits = rx.wait_for("/proxied", 1, WAIT).await;
        let log = proxy.wait_for_log("POST http://127.0.0.1:", WAIT).await;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let stderr = tokio::task::spawn_blocking(move || {
            let _ = child.wait();
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            stderr
        });
        let stderr = tokio::time::timeout(WAIT, stderr).await.expect("exits after SIGTERM").unwrap();
        assert_eq!(hits.len(), 1);
        Verifier::new(SECRET).unwrap().verify(&hits[0].headers, &hits[0].body).expect("signed");
        assert!(log.contains(&format!("POST http://127.0.0.1:{}/proxied HTTP/1.1", rx.port())), "{log}");
        assert!(stderr.contains("deliveries go through a proxy"), "{stderr}");
        assert!(!stderr.contains("s3cret-pw"), "the proxy password is never logged:\n{stderr}");
        assert!(hooks.shutdown(WAIT).await.drained);
    }

    #[test]
    fn bad_input_gets_a_clear_error_not_a_panic() {
        let Some(bin) = cli_bin() else { return };
        let run = |args: &[&str]| {
            let out = Command::new(bin).args(args).env_remove("FASTAPIHOOKS_REDIS_URL").output().unwrap();
            (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let (status, err) = run(&["start", "--redis-url", "redis://127.0.0.1:1/0", "--store", "ftp://x"]);
        assert!(!status.success());
        assert!(err.contains("--store") && !err.contains("panicked"), "{err}");
        let (status, err) = run(&["start", "--redis-url", "http://:hunter2@h/", "--store", "memory"]);
        assert!(!status.success());
        assert!(err.contains("--redis-url") && !err.contains("hunter2") && !err.contains("panicked"), "{err}");
        let (status, err) = run(&["start", "--redis-url", "redis://h/", "--max-concurrency", "0"]);
        assert!(!status.success());
        assert!(err.contains("--max-concurrency"), "{err}");
        let out = Command::new(bin)
            .args(["start", "--redis-url", "redis://127.0.0.1:1/0"])
            .env("FASTAPIHOOKS_SIGNING_SECRET", "whsec_not*base64")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("FASTAPIHOOKS_SIGNING_SECRET") && !err.contains("not*base64"), "{err}");
        let (status, err) = run(&["start"]);
        assert!(!status.success());
        assert!(err.contains("--redis-url"), "{err}");
        let (status, err) =
            run(&["start", "--redis-url", "redis://127.0.0.1:1/0", "--proxy", "https://:pw@proxy:3128"]);
        assert!(!status.success());
        assert!(err.contains("--proxy") && err.contains("http://") && !err.contains("pw@"), "{err}");
        let (status, err) = run(&["start", "--redis-url", "redis://127.0.0.1:1/0", "--no-proxy", "internal"]);
        assert!(!status.success());
        assert!(err.contains("--no-proxy needs --proxy"), "{err}");
        let (status, err) =
            run(&["start", "--redis-url", "redis://127.0.0.1:1/0", "--tls-ca-file", "/nonexistent.pem"]);
        assert!(!status.success());
        assert!(err.contains("--tls-ca-file /nonexistent.pem") && !err.contains("panicked"), "{err}");
    }

    /// Each mistake is reported under the flag (or variable) that made it.
    #[test]
    fn bad_input_names_the_flag_that_is_wrong() {
        let Some(bin) = cli_bin() else { return };
        let run = |args: &[&str], env: &[(&str, &std::ffi::OsStr)]| {
            let mut cmd = Command::new(bin);
            cmd.arg("start").args(args).env_remove("FASTAPIHOOKS_REDIS_URL").env_remove("FASTAPIHOOKS_RETRY_SCHEDULE");
            cmd.env("FASTAPIHOOKS_SIGNING_SECRET", SECRET);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let out = cmd.output().unwrap();
            assert!(!out.status.success(), "{args:?} {env:?} was accepted");
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!err.contains("panicked"), "{err}");
            err
        };
        let redis = ["--redis-url", "redis://127.0.0.1:1/0"];
        let with = |more: &[&'static str]| [&redis[..], more].concat();
        for (args, flag) in [
            (with(&["--stream", ""]), "--stream: "),
            (with(&["--group", ""]), "--group: "),
            (with(&["--consumer", ""]), "--consumer: "),
            (with(&["--redis-ca-file", TEST_CA]), "--redis-ca-file "),
        ] {
            let err = run(&args, &[]);
            assert!(err.contains(flag) && !err.contains("--redis-url"), "{args:?}: {err}");
        }
        // A CA file with no certificate in it is refused at start, not at
        // every connection.
        let dir = std::env::temp_dir().join(format!("fh-cli-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, content) in [("empty.pem", &b""[..]), ("text.pem", b"no certificate here\n")] {
            let path = dir.join(name);
            std::fs::write(&path, content).unwrap();
            let path = path.to_str().unwrap();
            let err = run(&["--redis-url", "rediss://127.0.0.1:1/0", "--redis-ca-file", path], &[]);
            assert!(err.contains(&format!("--redis-ca-file {path}")) && err.contains("no certificate"), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        // A signing secret that is not UTF-8 is an error, not an unsigned worker.
        let not_utf8 = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"whsec_sec\xffret");
        let err = run(&redis, &[("FASTAPIHOOKS_SIGNING_SECRET", not_utf8)]);
        assert!(err.contains("FASTAPIHOOKS_SIGNING_SECRET is not valid UTF-8"), "{err}");
        assert!(!err.contains("whsec_sec"), "the value is never shown: {err}");
        // --retry-schedule: a clap error naming the flag.
        for bad in ["", "5s,,1m", "0s", "5", "5x,1m", "soon"] {
            let err = run(&with(&["--retry-schedule", bad]), &[]);
            assert!(err.contains("--retry-schedule"), "{bad:?}: {err}");
        }
        let err = run(&redis, &[("FASTAPIHOOKS_RETRY_SCHEDULE", std::ffi::OsStr::new("1m,0ms"))]);
        assert!(err.contains("--retry-schedule") && err.contains("`0ms`"), "{err}");
    }

    /// `--retry-schedule`: the delays before each retry, or `none`.
    #[tokio::test]
    async fn start_retries_on_the_given_schedule_then_gives_up_and_acks() {
        let url = redis_or_skip!();
        let Some(bin) = cli_bin() else { return };
        let rx = Receiver::start().await;
        rx.script("/down", [Reply::status(503)]);
        rx.script("/never", [Reply::status(503)]);
        for (path, schedule, tries) in [("/down", "100ms,300ms", 3), ("/never", "none", 1)] {
            let key = unique_key("cli-retry");
            let hooks = Fastapihooks::builder()
                .backend(backend(&url, &key).build().unwrap())
                .subscriber("order.created", WebhookSubscription::new(rx.url(path)).unwrap())
                .build()
                .unwrap();
            hooks.send("order.created", &json!({"id": "ord_retry"})).unwrap();
            let mut child =
                start_cli_quietly(bin, &["--redis-url", &url, "--stream", &key, "--retry-schedule", schedule]);
            let hits = rx.wait_for(path, tries, WAIT).await;
            // Given up: acked, and no further try.
            let emptied = stream_is_empty(&url, &key).await;
            tokio::time::sleep(Duration::from_millis(600)).await;
            let _ = child.kill();
            let _ = child.wait();
            assert_eq!(rx.hits_for(path).len(), tries, "{schedule}");
            assert!(emptied, "{schedule}: the event was acked once given up");
            if tries == 3 {
                let (first, second) = (hits[1].at - hits[0].at, hits[2].at - hits[1].at);
                assert!(
                    first >= Duration::from_millis(80) && second >= Duration::from_millis(240),
                    "{first:?} {second:?}"
                );
            }
            assert!(hooks.shutdown(WAIT).await.drained);
        }
    }

    /// Redis unreachable at start: the worker waits for it, logging a line
    /// per backoff step, and SIGTERM still stops it at once.
    #[tokio::test]
    async fn start_with_redis_unreachable_logs_boundedly_and_stops_on_sigterm() {
        let Some(bin) = cli_bin() else { return };
        let port = crate::util::closed_port().await;
        let shutdown_timeout = Duration::from_secs(5);
        let mut child = Command::new(bin)
            .args(["start", "--redis-url", &format!("redis://127.0.0.1:{port}/0"), "--log-level", "info"])
            .args(["--shutdown-timeout", &shutdown_timeout.as_secs().to_string()])
            .env("FASTAPIHOOKS_SIGNING_SECRET", SECRET)
            .env_remove("FASTAPIHOOKS_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let signalled = std::time::Instant::now();
        let waited = tokio::task::spawn_blocking(move || {
            let status = child.wait().unwrap();
            let took = signalled.elapsed();
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            (status, took, stderr)
        });
        let (status, took, stderr) =
            tokio::time::timeout(shutdown_timeout + WAIT, waited).await.expect("exits after SIGTERM").unwrap();
        assert!(status.success(), "{status:?}\n{stderr}");
        assert!(took < shutdown_timeout, "took {took:?} to stop with nothing in flight\n{stderr}");
        assert!(!stderr.contains("shutdown deadline reached"), "nothing was in flight to cut short:\n{stderr}");
        let unreachable = stderr.lines().filter(|l| l.contains("unreachable")).count();
        // 3 s of waiting: backoff steps of 100 ms, 200 ms, 400 ms, ... (and
        // the backend's own), a line each, not a line per connection attempt.
        assert!((1..=8).contains(&unreachable), "{unreachable} lines:\n{stderr}");
        assert!(stderr.contains("worker stopped"), "{stderr}");
    }
}
