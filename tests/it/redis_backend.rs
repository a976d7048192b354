//! `RedisStreamsBackend` on a real Redis: publish, consume, ack, consumer
//! groups, claiming a dead consumer's entries, a lost group, malformed and
//! poison entries, Redis down, close.

use std::collections::HashSet;
use std::time::Duration;

use fastapihooks::backend::{Backend, BackendError, Received, RedisStreamsBackend};
use fastapihooks::{Event, Payload};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::json;

use super::redis_util::{RedisServer, TEST_CA, backend, connect, eventually, pending, redis_or_skip, unique_key, xlen};

const WAIT: Duration = Duration::from_secs(10);

type Consumer = BoxStream<'static, Result<Received, BackendError>>;

fn event(n: u32) -> Event {
    Event::new("order.created", Payload::from_serialize(&json!({ "n": n })).unwrap())
}

/// The next item of a consume stream, within `WAIT`.
async fn next(stream: &mut Consumer) -> Result<Received, BackendError> {
    tokio::time::timeout(WAIT, stream.next()).await.expect("an item within the wait").expect("the stream goes on")
}

#[tokio::test]
async fn published_events_are_consumed_in_order_and_ack_deletes_them() {
    let url = redis_or_skip!();
    let key = unique_key("roundtrip");
    let b = backend(&url, &key).build().unwrap();
    let events: Vec<Event> = (0..3).map(event).collect();
    for e in &events {
        b.publish(e.clone()).await.unwrap();
    }
    let mut stream = b.consume();
    let mut conn = connect(&url).await;
    let mut got = Vec::new();
    for e in &events {
        let r = next(&mut stream).await.unwrap();
        assert_eq!(r.event().id, e.id);
        assert_eq!(r.event().payload, e.payload);
        assert_eq!(r.event().name, "order.created");
        got.push(r);
    }
    assert_eq!(pending(&mut conn, &key, b.group()).await, 3, "read, not acked yet");
    assert!(matches!(b.consume().next().await, Some(Err(BackendError::AlreadyConsumed))));
    for r in got {
        r.ack().await.unwrap();
    }
    // XACK + XDEL: nothing pending, and the stream does not keep acked entries.
    assert_eq!(pending(&mut conn, &key, b.group()).await, 0);
    assert_eq!(xlen(&mut conn, &key).await, 0);
}

#[tokio::test]
async fn consumers_of_one_group_share_the_entries_without_duplicates() {
    let url = redis_or_skip!();
    let key = unique_key("share");
    let a = backend(&url, &key).batch_size(1).build().unwrap();
    let b = backend(&url, &key).batch_size(1).build().unwrap();
    assert_ne!(a.consumer(), b.consumer());
    for n in 0..10 {
        a.publish(event(n)).await.unwrap();
    }
    let (mut sa, mut sb) = (a.consume(), b.consume());
    let mut seen_a = HashSet::new();
    let mut seen_b = HashSet::new();
    for _ in 0..5 {
        let ra = next(&mut sa).await.unwrap();
        let rb = next(&mut sb).await.unwrap();
        seen_a.insert(ra.event().id.clone());
        seen_b.insert(rb.event().id.clone());
        ra.ack().await.unwrap();
        rb.ack().await.unwrap();
    }
    assert_eq!(seen_a.len(), 5);
    assert_eq!(seen_b.len(), 5);
    assert!(seen_a.is_disjoint(&seen_b), "each entry goes to one consumer of the group");
    assert_eq!(xlen(&mut connect(&url).await, &key).await, 0);
}

#[tokio::test]
async fn a_dead_consumers_entries_are_claimed_by_a_live_one() {
    let url = redis_or_skip!();
    let key = unique_key("claim");
    let dead = backend(&url, &key).build().unwrap();
    let ids: HashSet<_> = {
        let mut ids = HashSet::new();
        for n in 0..3 {
            let e = event(n);
            ids.insert(e.id.clone());
            dead.publish(e).await.unwrap();
        }
        ids
    };
    let mut stream = dead.consume();
    for _ in 0..3 {
        next(&mut stream).await.unwrap();
    }
    // The worker dies: its entries stay pending, never acked.
    drop(stream);
    drop(dead);
    let live = backend(&url, &key).claim_min_idle(Duration::from_millis(300)).build().unwrap();
    let started = std::time::Instant::now();
    let mut stream = live.consume();
    let mut claimed = HashSet::new();
    for _ in 0..3 {
        let r = next(&mut stream).await.unwrap();
        claimed.insert(r.event().id.clone());
        r.ack().await.unwrap();
    }
    assert!(started.elapsed() >= Duration::from_millis(250), "claimed only once idle for the min-idle");
    assert_eq!(claimed, ids);
    let mut conn = connect(&url).await;
    assert_eq!(pending(&mut conn, &key, live.group()).await, 0);
    assert_eq!(xlen(&mut conn, &key).await, 0);
}

/// The names of the group's consumers, sorted.
async fn consumers(url: &str, key: &str, group: &str) -> Vec<String> {
    let mut conn = connect(url).await;
    let infos: Vec<std::collections::HashMap<String, redis::Value>> =
        redis::cmd("XINFO").arg("CONSUMERS").arg(key).arg(group).query_async(&mut conn).await.unwrap();
    let mut names: Vec<String> = infos
        .iter()
        .filter_map(|info| match info.get("name") {
            Some(redis::Value::BulkString(name)) => Some(String::from_utf8_lossy(name).into_owned()),
            _ => None,
        })
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn consumers_idle_with_nothing_pending_are_forgotten_and_the_others_kept() {
    let url = redis_or_skip!();
    let key = unique_key("forget");
    // Two past workers: one died holding an entry, one acked all it read.
    let holder = backend(&url, &key).consumer("a-holder").build().unwrap();
    holder.publish(event(1)).await.unwrap();
    let mut stream = holder.consume();
    next(&mut stream).await.unwrap();
    drop(stream);
    let idle = backend(&url, &key).consumer("b-idle").build().unwrap();
    idle.publish(event(2)).await.unwrap();
    let mut stream = idle.consume();
    next(&mut stream).await.unwrap().ack().await.unwrap();
    drop(stream);
    assert_eq!(consumers(&url, &key, holder.group()).await, ["a-holder", "b-idle"]);

    // The held entry is not claimed here (the claim min-idle is 60 s).
    let live = backend(&url, &key)
        .consumer("c-live")
        .block(Duration::from_millis(20))
        .claim_interval(Duration::from_millis(50))
        .forget_consumers_after(Duration::from_millis(400))
        .build()
        .unwrap();
    let mut stream = live.consume();
    let driver = tokio::spawn(async move { while stream.next().await.is_some() {} });
    let forgotten = eventually(WAIT, || {
        let url = url.clone();
        let key = key.clone();
        // (Redis 7.0 lists a consumer once it got an entry: c-live has none.)
        async move {
            let names = consumers(&url, &key, "fastapihooks").await;
            names.contains(&"a-holder".to_owned()) && !names.contains(&"b-idle".to_owned())
        }
    })
    .await;
    assert!(forgotten, "left: {:?}", consumers(&url, &key, live.group()).await);
    let mut conn = connect(&url).await;
    assert_eq!(pending(&mut conn, &key, live.group()).await, 1, "the holder's entry stays pending, to be claimed");
    driver.abort();
}

#[tokio::test]
async fn rediss_urls_speak_tls_and_verify_the_server() {
    let Some(server) = RedisServer::start_tls().await else { return };
    let url = server.url();
    assert!(url.starts_with("rediss://localhost:"), "{url}");
    let key = unique_key("tls");
    let ca = std::fs::read(TEST_CA).unwrap();
    let b = backend(&url, &key).tls_root_certificates(ca).build().unwrap();
    let sent = event(7);
    b.publish(sent.clone()).await.unwrap();
    let mut stream = b.consume();
    let got = next(&mut stream).await.unwrap();
    assert_eq!(got.event().id, sent.id);
    got.ack().await.unwrap();

    // Without the test CA the system's roots do not trust the server: a
    // clear error, not a plain-text fallback, and no panic.
    let untrusting = backend(&url, &key).connect_timeout(Duration::from_secs(2)).build().unwrap();
    let err = untrusting.publish(event(8)).await.unwrap_err();
    assert!(matches!(err, BackendError::Transport(_)), "{err:?}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // Certificates that are not PEM: an error at build or at use, no panic.
    let garbage = backend(&url, &key).tls_root_certificates(b"not a certificate".to_vec()).build();
    if let Ok(garbage) = garbage {
        assert!(garbage.publish(event(9)).await.is_err());
    }
    // A CA given with a plain redis:// URL is a mistake, refused at build.
    let plain = RedisStreamsBackend::builder("redis://127.0.0.1:1/0").tls_root_certificates(b"x".to_vec()).build();
    assert!(plain.is_err());
}

#[tokio::test]
async fn entries_a_live_consumer_is_delivering_are_not_claimed() {
    let url = redis_or_skip!();
    let key = unique_key("heartbeat");
    // Long enough that a heartbeat (every third of it) is not late even on
    // a loaded machine.
    let idle = Duration::from_secs(1);
    let a = backend(&url, &key).claim_min_idle(idle).build().unwrap();
    let b = backend(&url, &key).claim_min_idle(idle).build().unwrap();
    a.publish(event(1)).await.unwrap();
    let mut sa = a.consume();
    let slow = next(&mut sa).await.unwrap();
    // `a` keeps delivering it for several min-idles; `b` must not take it.
    let mut sb = b.consume();
    let stolen = tokio::time::timeout(idle * 3, sb.next()).await;
    assert!(stolen.is_err(), "a live consumer's entry was claimed: {stolen:?}");
    slow.ack().await.unwrap();
    assert_eq!(xlen(&mut connect(&url).await, &key).await, 0);
}

#[tokio::test]
async fn a_lost_group_is_created_again() {
    let url = redis_or_skip!();
    let key = unique_key("nogroup");
    let b = backend(&url, &key).build().unwrap();
    b.publish(event(1)).await.unwrap();
    let mut stream = b.consume();
    let first = next(&mut stream).await.unwrap();
    first.ack().await.unwrap();
    // Redis lost its data (restarted without persistence): the stream and
    // its group are gone; the consumer gets NOGROUP and creates it again.
    let mut conn = connect(&url).await;
    redis::cmd("DEL").arg(&key).query_async::<i64>(&mut conn).await.unwrap();
    let after = event(2);
    b.publish(after.clone()).await.unwrap();
    let r = loop {
        match next(&mut stream).await {
            Ok(r) => break r,
            Err(BackendError::Transport(e)) => eprintln!("transport error while recovering: {e}"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    };
    assert_eq!(r.event().id, after.id);
    r.ack().await.unwrap();
    assert_eq!(xlen(&mut conn, &key).await, 0);
}

#[tokio::test]
async fn malformed_entries_are_dead_lettered_acked_and_reported() {
    let url = redis_or_skip!();
    let key = unique_key("malformed");
    let b = backend(&url, &key).build().unwrap();
    let mut conn = connect(&url).await;
    redis::cmd("XADD").arg(&key).arg("*").arg("event").arg("{not json").query_async::<String>(&mut conn).await.unwrap();
    redis::cmd("XADD").arg(&key).arg("*").arg("other").arg("x").query_async::<String>(&mut conn).await.unwrap();
    let good = event(1);
    b.publish(good.clone()).await.unwrap();
    let mut stream = b.consume();
    for _ in 0..2 {
        match next(&mut stream).await {
            Err(BackendError::Codec(e)) => {
                assert!(e.contains("not a fastapihooks event") && e.contains(":dead"), "{e}")
            }
            other => panic!("expected a codec error, got {other:?}"),
        }
    }
    // The stream goes on after them.
    let r = next(&mut stream).await.unwrap();
    assert_eq!(r.event().id, good.id);
    r.ack().await.unwrap();
    assert_eq!(pending(&mut conn, &key, b.group()).await, 0, "malformed entries are acked, not retried");
    assert_eq!(xlen(&mut conn, &key).await, 0);
    let dead = b.dead_letter_stream().to_owned();
    assert_eq!(xlen(&mut conn, &dead).await, 2, "kept in the dead-letter stream");
    let entries: redis::Value = redis::cmd("XRANGE").arg(&dead).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    let text = format!("{entries:?}");
    assert!(text.contains("{not json") || text.contains("123, 110, 111, 116"), "original field kept: {text}");
    redis::cmd("DEL").arg(&dead).query_async::<i64>(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_poison_entry_is_dead_lettered_after_max_deliveries() {
    let url = redis_or_skip!();
    let key = unique_key("poison");
    let idle = Duration::from_millis(200);
    let poison = event(1);
    // Handed out once to a consumer that died with it.
    let dead = backend(&url, &key).max_deliveries(1).claim_min_idle(idle).build().unwrap();
    dead.publish(poison.clone()).await.unwrap();
    let mut stream = dead.consume();
    next(&mut stream).await.unwrap();
    drop(stream);
    drop(dead);
    // Claiming it again would be its second delivery: it is set aside.
    let live = backend(&url, &key).max_deliveries(1).claim_min_idle(idle).build().unwrap();
    let mut stream = live.consume();
    match next(&mut stream).await {
        Err(BackendError::DeadLettered { event, reason }) => {
            assert_eq!(event.id, poison.id);
            assert!(reason.contains("max_deliveries 1"), "{reason}");
        }
        other => panic!("expected a dead-lettered event, got {other:?}"),
    }
    let mut conn = connect(&url).await;
    assert_eq!(pending(&mut conn, &key, live.group()).await, 0);
    assert_eq!(xlen(&mut conn, &key).await, 0);
    assert_eq!(xlen(&mut conn, live.dead_letter_stream()).await, 1);
    redis::cmd("DEL").arg(live.dead_letter_stream()).query_async::<i64>(&mut conn).await.unwrap();
}

#[tokio::test]
async fn publish_to_a_down_redis_is_a_transport_error_without_the_password() {
    let port = super::util::closed_port().await;
    let b = RedisStreamsBackend::builder(format!("redis://:hunter2@127.0.0.1:{port}/0"))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let err = b.publish(event(1)).await.unwrap_err();
    assert!(matches!(err, BackendError::Transport(_)), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("[redacted]"), "{text}");
}

#[tokio::test]
async fn a_consumer_with_redis_down_reports_errors_and_keeps_going() {
    let port = super::util::closed_port().await;
    let b = backend(&format!("redis://127.0.0.1:{port}/0"), "k").build().unwrap();
    let mut stream = b.consume();
    for _ in 0..3 {
        assert!(matches!(next(&mut stream).await, Err(BackendError::Transport(_))));
    }
    b.close().await.unwrap();
    assert!(tokio::time::timeout(WAIT, stream.next()).await.unwrap().is_none(), "closed: the stream ends");
}

#[tokio::test]
async fn close_ends_a_blocked_read_at_once_and_refuses_publishing() {
    let url = redis_or_skip!();
    let key = unique_key("close");
    let b = backend(&url, &key).block(Duration::from_secs(30)).build().unwrap();
    let mut stream = b.consume();
    let reader = tokio::spawn(async move { stream.next().await.map(|r| r.map(|r| r.event().id.clone())) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    b.close().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(2), reader).await.expect("ends at once").unwrap();
    assert!(ended.is_none(), "{ended:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(b.publish(event(1)).await, Err(BackendError::Closed)));
}
