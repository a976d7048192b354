//! Every Redis failure path ends well: untrusted entries (forged ids,
//! control characters, huge fields), a dead-letter write that fails, delivery
//! counts of claimed entries, the heartbeat and other workers' claims, acks
//! while Redis is down, a Redis that stops answering (SIGSTOP) in the middle
//! of a step, at shutdown and during deliveries, and clean-up failures.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fastapihooks::backend::{Backend, BackendError, Received};
use fastapihooks::{Event, Payload, WebhookSubscription, Worker};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use redis::aio::MultiplexedConnection;
use serde_json::json;

use super::redis_util::{
    RedisServer, backend, connect, eventually, mute_redis, pending, redis_or_skip, unique_key, xlen,
};
use super::util::{LogCapture, Receiver, Reply};

const WAIT: Duration = Duration::from_secs(10);

type Consumer = BoxStream<'static, Result<Received, BackendError>>;

fn event(n: u32) -> Event {
    Event::new("order.created", Payload::from_serialize(&json!({ "n": n })).unwrap())
}

async fn next(stream: &mut Consumer) -> Result<Received, BackendError> {
    tokio::time::timeout(WAIT, stream.next()).await.expect("an item within the wait").expect("the stream goes on")
}

/// Appends an entry with an `event` field holding `json`; its entry id.
async fn xadd(conn: &mut MultiplexedConnection, key: &str, json: &[u8]) -> String {
    redis::cmd("XADD").arg(key).arg("*").arg("event").arg(json).query_async(conn).await.unwrap()
}

/// The consumer an entry is pending with.
async fn owner(conn: &mut MultiplexedConnection, key: &str, id: &str) -> String {
    let rows: Vec<(String, String, u64, u64)> =
        redis::cmd("XPENDING").arg(key).arg("fastapihooks").arg(id).arg(id).arg(1).query_async(conn).await.unwrap();
    rows.into_iter().next().expect("pending").1
}

#[tokio::test]
async fn forged_ids_control_characters_and_huge_fields_are_dead_lettered_and_never_logged_raw() {
    let url = redis_or_skip!();
    let key = unique_key("untrusted");
    let logs = LogCapture::default();
    let _guard = logs.install();
    let rx = Receiver::start().await;
    let mut conn = connect(&url).await;
    // Each carries a subscriber, so a worker that took it would deliver it
    // (the id in a header) and log about it.
    let sub = WebhookSubscription::new(rx.url("/hook")).unwrap();
    let template = event(0).with_subscribers(vec![sub]);
    let mut forged = serde_json::to_value(&template).unwrap();
    forged["id"] = json!("evt_1\r\nERROR forged: line injected through an event id");
    xadd(&mut conn, &key, &serde_json::to_vec(&forged).unwrap()).await;
    let mut named = serde_json::to_value(&template).unwrap();
    named["name"] = json!("order\r\nERROR forged: \u{1b}[2Jname\u{85}");
    xadd(&mut conn, &key, &serde_json::to_vec(&named).unwrap()).await;
    let mut owned = serde_json::to_value(&template).unwrap();
    owned["owner_id"] = json!("tenant\nERROR forged: owner");
    xadd(&mut conn, &key, &serde_json::to_vec(&owned).unwrap()).await;
    let mut huge = serde_json::to_value(&template).unwrap();
    huge["payload"] = json!({ "blob": "x".repeat(10 << 20) });
    xadd(&mut conn, &key, &serde_json::to_vec(&huge).unwrap()).await;
    let good = event(1).with_subscribers(template.subscribers.clone());
    xadd(&mut conn, &key, &serde_json::to_vec(&good).unwrap()).await;

    let w = super::redis_worker::worker(&url, &key, Duration::from_secs(60)).start().unwrap();
    let hits = rx.wait_for("/hook", 1, WAIT).await;
    assert_eq!(hits.len(), 1, "the good event after them is delivered");
    assert_eq!(hits[0].header("webhook-id"), Some(good.id.as_str()));
    let drained = eventually(WAIT, || {
        let mut conn = conn.clone();
        let key = key.clone();
        async move { xlen(&mut conn, &key).await == 0 }
    })
    .await;
    assert!(drained, "every entry acked or set aside");
    assert!(w.shutdown(WAIT).await.drained);
    assert_eq!(rx.hits().len(), 1, "no bad entry was delivered");
    let dead = format!("{key}:dead");
    assert_eq!(xlen(&mut conn, &dead).await, 4, "the four bad entries are in the dead-letter stream");
    let text = logs.text();
    for line in text.lines() {
        assert!(!line.trim_start().starts_with("ERROR forged"), "a forged log line: {line:?}");
        assert!(!line.contains('\r') && !line.contains('\u{1b}') && !line.contains('\u{85}'), "raw control: {line:?}");
    }
    assert!(text.contains("is not 1 to 128 characters"), "the reasons are logged: {text}");
    assert!(text.contains("over the limit of"), "{text}");
    assert!(text.len() < 100_000, "a huge field is not logged: {} bytes", text.len());
    redis::cmd("DEL").arg(&dead).query_async::<i64>(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_failed_dead_letter_write_leaves_the_entry_pending_and_the_batch_goes_on() {
    let url = redis_or_skip!();
    let key = unique_key("dead-fails");
    let mut conn = connect(&url).await;
    let dead = format!("{key}:dead");
    // The dead-letter key holds a string: every XADD to it fails.
    redis::cmd("SET").arg(&dead).arg("not a stream").query_async::<()>(&mut conn).await.unwrap();
    let bad = xadd(&mut conn, &key, b"{not json").await;
    let good = event(1);
    xadd(&mut conn, &key, &serde_json::to_vec(&good).unwrap()).await;
    let b = backend(&url, &key).build().unwrap();
    let mut stream = b.consume();
    // The failure is reported; the good entry of the same batch is handed out.
    let received = loop {
        match next(&mut stream).await {
            Ok(r) => break r,
            Err(BackendError::Transport(e)) => assert!(e.to_string().contains("WRONGTYPE"), "{e}"),
            Err(e) => panic!("unexpected {e:?}"),
        }
    };
    assert_eq!(received.event().id, good.id);
    received.ack().await.unwrap();
    assert_eq!(xlen(&mut conn, &key).await, 1, "the bad entry is still there, not lost");
    assert_eq!(owner(&mut conn, &key, &bad).await, b.consumer(), "and pending, to be claimed again");
    drop(stream);

    // Once the dead-letter stream can be written, a claim sets it aside.
    redis::cmd("DEL").arg(&dead).query_async::<i64>(&mut conn).await.unwrap();
    let other = backend(&url, &key).claim_min_idle(Duration::from_millis(200)).build().unwrap();
    let mut stream = other.consume();
    assert!(matches!(next(&mut stream).await, Err(BackendError::Codec(_))));
    assert_eq!(xlen(&mut conn, &key).await, 0);
    assert_eq!(xlen(&mut conn, &dead).await, 1);
    redis::cmd("DEL").arg(&dead).query_async::<i64>(&mut conn).await.unwrap();
}

#[tokio::test]
async fn every_claimed_entry_gets_its_own_delivery_count() {
    let url = redis_or_skip!();
    let key = unique_key("counts");
    let mut conn = connect(&url).await;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("fastapihooks")
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let (p1, p3) = (event(1), event(3));
    xadd(&mut conn, &key, &serde_json::to_vec(&p1).unwrap()).await;
    let id2 = xadd(&mut conn, &key, &serde_json::to_vec(&event(2)).unwrap()).await;
    xadd(&mut conn, &key, &serde_json::to_vec(&p3).unwrap()).await;
    // A dead worker read all three.
    redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("fastapihooks")
        .arg("dead")
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query_async::<redis::Value>(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The middle one is fresh with the live consumer (its ack in progress,
    // say): between the two that are claimed, and not claimed itself.
    redis::cmd("XCLAIM")
        .arg(&key)
        .arg("fastapihooks")
        .arg("live")
        .arg(0)
        .arg(&id2)
        .arg("JUSTID")
        .query_async::<redis::Value>(&mut conn)
        .await
        .unwrap();
    let live = backend(&url, &key)
        .consumer("live")
        .max_deliveries(1)
        .claim_min_idle(Duration::from_millis(300))
        .build()
        .unwrap();
    let mut stream = live.consume();
    let mut dead_lettered = HashSet::new();
    for _ in 0..2 {
        match next(&mut stream).await {
            Err(BackendError::DeadLettered { event, .. }) => {
                dead_lettered.insert(event.id);
            }
            Ok(r) => panic!("{} was handed out a second time with max_deliveries 1", r.event().id),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(dead_lettered, HashSet::from([p1.id, p3.id]));
    assert_eq!(owner(&mut conn, &key, &id2).await, "live");
    assert!(pending(&mut conn, &key, "fastapihooks").await >= 1);
    redis::cmd("DEL").arg(&key).arg(live.dead_letter_stream()).query_async::<i64>(&mut conn).await.unwrap();
}

#[tokio::test]
async fn the_heartbeat_does_not_take_back_an_entry_another_worker_claimed() {
    let url = redis_or_skip!();
    let key = unique_key("steal");
    let mut conn = connect(&url).await;
    // Heartbeats every 100 ms.
    let a = backend(&url, &key).claim_min_idle(Duration::from_millis(300)).build().unwrap();
    let sent = event(1);
    a.publish(sent.clone()).await.unwrap();
    let mut stream = a.consume();
    let held = next(&mut stream).await.unwrap();
    let id: String = {
        let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&key)
            .arg("fastapihooks")
            .arg("-")
            .arg("+")
            .arg(1)
            .query_async(&mut conn)
            .await
            .unwrap();
        rows[0].0.clone()
    };
    // `a` stalled; `b` rightly claimed the entry and is delivering it.
    redis::cmd("XCLAIM")
        .arg(&key)
        .arg("fastapihooks")
        .arg("b")
        .arg(0)
        .arg(&id)
        .arg("JUSTID")
        .query_async::<redis::Value>(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(owner(&mut conn, &key, &id).await, "b", "a's heartbeat took the entry back");
    // a's delivery ends all the same: its ack settles the entry.
    held.ack().await.unwrap();
    assert_eq!(xlen(&mut conn, &key).await, 0);
}

#[tokio::test]
async fn an_ack_while_redis_is_down_is_retried_until_it_is_back() {
    let Some(mut server) = RedisServer::start().await else { return };
    let url = server.url();
    let key = unique_key("ack-retry");
    let b = backend(&url, &key).build().unwrap();
    b.publish(event(1)).await.unwrap();
    let mut stream = b.consume();
    let received = next(&mut stream).await.unwrap();
    server.kill();
    let ack = tokio::spawn(received.ack());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!ack.is_finished(), "the ack gave up while Redis was down");
    server.restart().await;
    let acked = tokio::time::timeout(WAIT, ack).await.expect("acked once Redis is back").unwrap();
    assert!(acked.is_ok(), "{acked:?}");
    let mut conn = connect(&url).await;
    assert_eq!(xlen(&mut conn, &key).await, 0);
    assert_eq!(pending(&mut conn, &key, b.group()).await, 0);
}

#[tokio::test]
async fn a_redis_that_stops_answering_mid_step_is_a_transport_error_not_a_hang() {
    // It answers the group creation, then never the claim scan.
    let url = mute_redis(&["XAUTOCLAIM"]).await;
    let b = backend(&url, "k").timeout(Duration::from_millis(300)).build().unwrap();
    let mut stream = b.consume();
    let started = Instant::now();
    match next(&mut stream).await {
        Err(BackendError::Transport(e)) => assert!(e.to_string().contains("XAUTOCLAIM"), "{e}"),
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    b.close().await.unwrap();
    assert!(tokio::time::timeout(WAIT, stream.next()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_worker_shuts_down_within_its_timeout_while_redis_is_frozen() {
    let Some(server) = RedisServer::start().await else { return };
    let url = server.url();
    let key = unique_key("frozen-shutdown");
    let rx = Receiver::start().await;
    rx.script("/slow", [Reply::status(200).delay(Duration::from_millis(800))]);
    let sub = WebhookSubscription::new(rx.url("/slow")).unwrap();
    let publisher = backend(&url, &key).build().unwrap();
    for n in 0..3 {
        publisher.publish(event(n).with_subscribers(vec![sub.clone()])).await.unwrap();
    }
    // The default 5 s command timeout: longer than the shutdown's.
    let w = super::redis_worker::worker(&url, &key, Duration::from_secs(60)).start().unwrap();
    rx.wait_for("/slow", 3, WAIT).await;
    server.freeze();
    let started = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(20), w.shutdown(Duration::from_secs(2))).await;
    let took = started.elapsed();
    server.thaw();
    assert!(report.is_ok(), "shutdown hung");
    assert!(took < Duration::from_millis(3500), "shutdown(2 s) took {took:?}");
}

#[tokio::test]
async fn events_are_delivered_and_acked_after_redis_froze_for_a_while() {
    let Some(server) = RedisServer::start().await else { return };
    let url = server.url();
    let key = unique_key("partition");
    let rx = Receiver::start().await;
    rx.script("/hook", [Reply::status(200).delay(Duration::from_millis(200))]);
    let sub = WebhookSubscription::new(rx.url("/hook")).unwrap();
    let publisher = backend(&url, &key).build().unwrap();
    let mut ids = HashSet::new();
    for n in 0..20 {
        let e = event(n).with_subscribers(vec![sub.clone()]);
        ids.insert(e.id.as_str().to_owned());
        publisher.publish(e).await.unwrap();
    }
    // Claims far off (so they cannot make up for a lost ack), claim scans
    // often (so the freeze finds one under way), a short command timeout.
    let w = Worker::builder()
        .backend(
            backend(&url, &key)
                .batch_size(4)
                .claim_min_idle(Duration::from_secs(60))
                .claim_interval(Duration::from_millis(50))
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap(),
        )
        .network_policy(fastapihooks::NetworkPolicy::default().allow_loopback())
        .signing_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .per_endpoint_concurrency(2)
        .start()
        .unwrap();
    rx.wait_for("/hook", 2, WAIT).await;
    server.freeze();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.thaw();
    let healed = Instant::now();
    let bound = Duration::from_secs(20);
    let hits = rx.wait_for("/hook", 20, bound).await;
    let got: HashSet<String> = hits.iter().filter_map(|h| h.header("webhook-id")).map(str::to_owned).collect();
    assert_eq!(got, ids, "every event delivered within {bound:?} of the heal");
    let mut conn = connect(&url).await;
    let acked = eventually(bound.saturating_sub(healed.elapsed()), || {
        let mut conn = conn.clone();
        let key = key.clone();
        async move { xlen(&mut conn, &key).await == 0 }
    })
    .await;
    assert!(acked, "left unacked: {}", xlen(&mut conn, &key).await);
    assert!(w.shutdown(WAIT).await.drained);
}

#[tokio::test]
async fn a_failing_clean_up_warns_once_per_streak() {
    let Some(server) = RedisServer::start().await else { return };
    let url = server.url();
    let key = unique_key("cleanup");
    let logs = LogCapture::default();
    let _guard = logs.install();
    let conn = connect(&url).await;
    // Scripts refused: every clean-up fails, everything else works.
    let deny = |on: bool| {
        let mut conn = conn.clone();
        async move {
            let rule = if on { "-eval" } else { "+eval" };
            redis::cmd("ACL").arg("SETUSER").arg("default").arg(rule).query_async::<()>(&mut conn).await.unwrap();
        }
    };
    deny(true).await;
    let b =
        backend(&url, &key).block(Duration::from_millis(20)).claim_interval(Duration::from_millis(20)).build().unwrap();
    let mut stream = b.consume();
    let warnings = |text: &str| {
        text.lines().filter(|l| l.contains("WARN") && l.contains("could not look for idle consumers")).count()
    };
    let drive = async {
        loop {
            let _ = stream.next().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(600), drive).await;
    let text = logs.text();
    assert!(text.matches("could not look for idle consumers").count() >= 3, "several scans failed: {text}");
    assert_eq!(warnings(&text), 1, "{text}");
    // A success ends the streak; the next failure warns again.
    deny(false).await;
    let drive = async {
        loop {
            let _ = stream.next().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(300), drive).await;
    deny(true).await;
    let drive = async {
        loop {
            let _ = stream.next().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(300), drive).await;
    let text = logs.text();
    assert!(text.contains("works again"), "{text}");
    assert_eq!(warnings(&text), 2, "{text}");
}
