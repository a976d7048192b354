//! The durable retry schedule on Redis: a delivery due later waits in
//! Redis, not in a worker's memory, so a receiver that is down for a while
//! loses nothing, a worker restart keeps the schedule, and a worker killed
//! with retries pending sends nothing twice to subscribers that already had
//! the event.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use fastapihooks::{Fastapihooks, NetworkPolicy, RetryPolicy, WebhookSubscription, Worker};
use redis::aio::MultiplexedConnection;
use serde_json::json;

use super::redis_util::{
    SECRET, backend, cli_bin, connect, eventually, pending, redis_or_skip, start_cli_quietly, unique_key,
};
use super::util::{Hit, Receiver, Reply};

const WAIT: Duration = Duration::from_secs(30);

async fn zcard(conn: &mut MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("ZCARD").arg(key).query_async(conn).await.unwrap()
}

/// Keys of the events' kept copies still in Redis.
async fn kept_copies(conn: &mut MultiplexedConnection, stream: &str) -> usize {
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{stream}:payload:*")).query_async(conn).await.unwrap();
    keys.len()
}

/// `fastapihooks start` on `stream`, with the memory store.
fn start_cli(bin: &str, url: &str, stream: &str) -> std::process::Child {
    start_cli_quietly(bin, &["--redis-url", url, "--stream", stream, "--store", "memory"])
}

/// Per event id (`webhook-id`): how many requests got each status.
fn by_event(hits: &[Hit]) -> HashMap<String, Vec<u16>> {
    let mut by: HashMap<String, Vec<u16>> = HashMap::new();
    for hit in hits {
        by.entry(hit.header("webhook-id").unwrap_or_default().to_owned()).or_default().push(hit.status);
    }
    by
}

fn worker(url: &str, stream: &str) -> Worker {
    Worker::builder()
        .backend(backend(url, stream).retry_poll_interval(Duration::from_millis(50)).build().unwrap())
        .network_policy(NetworkPolicy::default().allow_loopback())
        .retry_policy(RetryPolicy::schedule([200, 500, 1_000, 2_000, 5_000, 10_000].map(Duration::from_millis)))
        .signing_secret(SECRET)
        .start()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_15_s_loses_nothing_and_a_worker_restart_keeps_the_schedule() {
    let url = redis_or_skip!();
    let stream = unique_key("durable-down");
    let schedule = format!("{stream}:schedule");
    let rx = Receiver::start().await;
    rx.script("/down", [Reply::status(503)]);
    let app = Fastapihooks::builder()
        .backend(backend(&url, &stream).build().unwrap())
        .subscriber("order.created", WebhookSubscription::new(rx.url("/down")).unwrap())
        .build()
        .unwrap();
    let ids: HashSet<String> =
        (0..20).map(|i| app.send("order.created", &json!({"n": i})).unwrap().as_str().to_owned()).collect();
    let first = worker(&url, &stream);
    let mut conn = connect(&url).await;
    // Every first attempt failed and its retry went to Redis: the events
    // themselves are acked and deleted, their deliveries wait in the schedule.
    assert!(
        eventually(WAIT, || {
            let deferred = first.stats().deferred;
            async move { deferred >= 20 }
        })
        .await,
        "{:?}",
        first.stats()
    );
    assert_eq!(pending(&mut conn, &stream, "fastapihooks").await, 0, "nothing waits unacked");
    // A restart in the middle: nothing waits in the worker's memory, so its
    // shutdown is drained at once and the next worker takes over.
    assert!(first.shutdown(Duration::from_secs(2)).await.drained, "no retry waits in memory");
    let second = worker(&url, &stream);
    // Down for 15 s in all, then back.
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(first_elapsed(&rx))).await;
    rx.script("/down", [Reply::status(200)]);
    assert!(
        eventually(WAIT, || {
            let rx = rx.clone();
            async move { by_event(&rx.hits_for("/down")).values().filter(|s| s.contains(&200)).count() >= 20 }
        })
        .await,
        "every event arrives once the receiver is back"
    );
    // Let any duplicate show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let by = by_event(&rx.hits_for("/down"));
    assert_eq!(by.keys().cloned().collect::<HashSet<_>>(), ids, "all events, and no other");
    for (id, statuses) in &by {
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{id} delivered once: {statuses:?}");
        assert!(statuses.len() <= 7, "{id}: at most the policy's 7 attempts: {statuses:?}");
    }
    assert!(second.shutdown(Duration::from_secs(2)).await.drained);
    assert_eq!(zcard(&mut conn, &schedule).await, 0, "the schedule is empty");
    assert_eq!(pending(&mut conn, &stream, "fastapihooks").await, 0);
    assert_eq!(kept_copies(&mut conn, &stream).await, 0, "each event's copy is released with its last delivery");
    assert_eq!(second.stats().delivered, 20);
}

/// Time since the receiver's first request.
fn first_elapsed(rx: &Receiver) -> Duration {
    rx.hits().first().map_or(Duration::ZERO, |h| h.at.elapsed())
}

#[tokio::test]
async fn a_worker_killed_with_retries_pending_sends_nothing_twice() {
    let url = redis_or_skip!();
    let Some(bin) = cli_bin() else { return };
    let stream = unique_key("durable-kill");
    let schedule = format!("{stream}:schedule");
    let rx = Receiver::start().await;
    rx.script("/down", [Reply::status(503)]);
    let app = Fastapihooks::builder()
        .backend(backend(&url, &stream).build().unwrap())
        .subscriber("order.created", WebhookSubscription::new(rx.url("/ok")).unwrap())
        .subscriber("order.created", WebhookSubscription::new(rx.url("/down")).unwrap())
        .build()
        .unwrap();
    for i in 0..10 {
        app.send("order.created", &json!({"n": i})).unwrap();
    }
    let start = || start_cli(bin, &url, &stream);
    let mut first = start();
    let mut conn = connect(&url).await;
    // /ok has every event; every /down delivery waits in Redis; no event is pending.
    let settled = eventually(WAIT, || {
        let (mut conn, rx) = (conn.clone(), rx.clone());
        let (stream, schedule) = (stream.clone(), schedule.clone());
        async move {
            rx.hits_for("/ok").len() >= 10
                && zcard(&mut conn, &schedule).await == 10
                && pending(&mut conn, &stream, "fastapihooks").await == 0
        }
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(settled, "ok hits {}, waiting {}", rx.hits_for("/ok").len(), zcard(&mut conn, &schedule).await);
    rx.script("/down", [Reply::status(200)]);
    let mut second = start();
    let delivered = eventually(WAIT, || {
        let rx = rx.clone();
        async move { by_event(&rx.hits_for("/down")).values().filter(|s| s.contains(&200)).count() >= 10 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    assert!(delivered, "every delayed delivery reached /down after the restart");
    assert_eq!(rx.hits_for("/ok").len(), 10, "subscribers that had the event did not get it again");
    for (id, statuses) in by_event(&rx.hits_for("/down")) {
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{id}: {statuses:?}");
    }
    assert_eq!(zcard(&mut conn, &schedule).await, 0);
}

// Every given-up delivery is recorded in Redis before its event is acked;
// a replay sends it again with the same `webhook-id`, to that subscriber
// only, and removes the record.
#[tokio::test]
async fn given_up_deliveries_are_recorded_in_redis_and_replayed_with_the_same_webhook_id() {
    use fastapihooks::dead_letter::FailureFilter;
    use fastapihooks::subscription::TargetRef;

    let url = redis_or_skip!();
    let stream = unique_key("durable-failures");
    let rx = Receiver::start().await;
    rx.script("/gone", [Reply::status(400)]);
    let app = Fastapihooks::builder()
        .backend(backend(&url, &stream).build().unwrap())
        .subscriber("order.created", WebhookSubscription::new(rx.url("/ok")).unwrap())
        .subscriber("order.created", WebhookSubscription::new(rx.url("/gone")).unwrap())
        .build()
        .unwrap();
    let first = app.send("order.created", &json!({"n": 1})).unwrap();
    app.send("order.other", &json!({"n": 2})).unwrap();
    let w = worker(&url, &stream);
    let failures = backend(&url, &stream).build().unwrap();
    let store = failures.failures();
    let mut conn = connect(&url).await;
    let recorded = eventually(WAIT, || {
        let store = store.clone();
        async move { store.list(&FailureFilter::new()).await.unwrap().len() == 1 }
    })
    .await;
    assert!(recorded, "the 400 was recorded");
    assert!(
        eventually(WAIT, || {
            let (mut conn, stream) = (conn.clone(), stream.clone());
            async move { pending(&mut conn, &stream, "fastapihooks").await == 0 }
        })
        .await
    );
    let list = store.list(&FailureFilter::new().event("order.created")).await.unwrap();
    assert_eq!(list.len(), 1);
    let record = &list[0];
    assert_eq!(record.event.id, first);
    assert_eq!(record.status, Some(400));
    assert_eq!(record.attempts, 1, "a 400 is final at once");
    assert_eq!(record.target, Some(TargetRef::Carried(1)));
    assert!(store.list(&FailureFilter::new().event("order.other")).await.unwrap().is_empty());
    assert!(store.get(&record.id).await.unwrap().is_some());
    assert!(store.get("1-2\r\nforged").await.unwrap().is_none(), "an id that is not a stream id names nothing");
    let original = rx.hits_for("/gone")[0].header("webhook-id").unwrap().to_owned();

    rx.script("/gone", [Reply::status(200)]);
    failures.replay(record).await.unwrap();
    let hits = rx.wait_for("/gone", 2, WAIT).await;
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[1].header("webhook-id"), Some(original.as_str()), "the same webhook-id");
    assert_eq!(hits[1].status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.hits_for("/ok").len(), 1, "the replay went to that subscriber only");
    assert!(store.get(&record.id).await.unwrap().is_none(), "the replayed record is removed");
    assert!(w.shutdown(Duration::from_secs(2)).await.drained);
    assert_eq!(kept_copies(&mut conn, &stream).await, 0);
}

/// Resident memory of process `pid`, in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// A stream much longer than what a worker holds in memory, and a slow
// endpoint: the worker stops reading when it is full (back-pressure on the
// stream); nothing is given up, and its memory stays bounded.
#[tokio::test]
async fn a_long_stream_and_a_slow_endpoint_give_nothing_up_and_keep_memory_bounded() {
    use fastapihooks::{Event, Payload};

    let url = redis_or_skip!();
    let Some(bin) = cli_bin() else { return };
    let stream = unique_key("durable-long");
    let rx = Receiver::start().await;
    rx.script("/slow", [Reply::status(200).delay(Duration::from_millis(20))]);
    let slow = WebhookSubscription::new(rx.url("/slow")).unwrap();
    let mut conn = connect(&url).await;
    const EVENTS: usize = 60_000;
    for chunk in 0..EVENTS / 1_000 {
        let mut pipe = redis::pipe();
        for i in 0..1_000 {
            let event = Event::new("order.created", Payload::from_serialize(&json!({"n": chunk * 1_000 + i})).unwrap())
                .with_subscribers(vec![slow.clone()]);
            pipe.cmd("XADD").arg(&stream).arg("*").arg("event").arg(serde_json::to_vec(&event).unwrap()).ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
    let mut worker = start_cli(bin, &url, &stream);
    // Bounded: 12 s of delivering, sampling the worker's memory.
    let mut peak = 0;
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(rss_kib(worker.id()).unwrap_or(0));
    }
    let delivered = rx.hits_for("/slow").len();
    let waiting: u64 = redis::cmd("ZCARD").arg(format!("{stream}:schedule")).query_async(&mut conn).await.unwrap();
    let failed: u64 = redis::cmd("XLEN").arg(format!("{stream}:failures")).query_async(&mut conn).await.unwrap();
    let dead: u64 = redis::cmd("XLEN").arg(format!("{stream}:dead")).query_async(&mut conn).await.unwrap();
    worker.kill().unwrap();
    worker.wait().unwrap();
    eprintln!("long stream: {delivered} delivered in 12 s, {waiting} waiting in the schedule, peak RSS {peak} KiB");
    assert_eq!(failed, 0, "nothing given up");
    assert_eq!(dead, 0, "nothing dead-lettered");
    assert!(delivered > 0);
    assert!(peak > 0 && peak < 128 * 1024, "worker memory stays bounded: {peak} KiB");
}

/// `fastapihooks failures ...` with `args`: (success, stdout, stderr).
fn failures_cli(bin: &str, url: &str, stream: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin)
        .arg("failures")
        .args(args)
        .args(["--redis-url", url, "--stream", stream])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_failures_cli_lists_shows_replays_and_purges_with_confirmation() {
    let url = redis_or_skip!();
    let Some(bin) = cli_bin() else { return };
    let stream = unique_key("durable-cli");
    let rx = Receiver::start().await;
    rx.script("/gone", [Reply::status(422)]);
    let secret_sub = WebhookSubscription::new(rx.url("/gone"))
        .map(|s| s.signing_secret("whsec_c2VjcmV0LXRoYXQtbXVzdC1ub3QtbGVhaw=="));
    let app = Fastapihooks::builder()
        .backend(backend(&url, &stream).build().unwrap())
        .subscriber("order.created", secret_sub.unwrap())
        .build()
        .unwrap();
    let first = app.send("order.created", &json!({"n": 1})).unwrap();
    let second = app.send("order.created", &json!({"n": 2})).unwrap();
    let w = worker(&url, &stream);
    let store = backend(&url, &stream).build().unwrap().failures();
    assert!(
        eventually(WAIT, || {
            let store = store.clone();
            async move { store.list(&fastapihooks::dead_letter::FailureFilter::new()).await.unwrap().len() == 2 }
        })
        .await
    );
    let (ok, out, err) = failures_cli(bin, &url, &stream, &["list", "--json"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event_id"], second.as_str(), "newest first");
    assert_eq!(lines[0]["status"], 422);
    assert!(!out.contains("c2VjcmV0"), "no secret in the output: {out}");
    let (ok, out, _) = failures_cli(bin, &url, &stream, &["list", "--event", "order.other"]);
    assert!(ok && out.is_empty());
    let newest = lines[0]["id"].as_str().unwrap().to_owned();
    let oldest = lines[1]["id"].as_str().unwrap().to_owned();
    let (ok, out, _) = failures_cli(bin, &url, &stream, &["show", &oldest, "--json"]);
    assert!(ok);
    let shown: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(shown["event_id"], first.as_str());
    assert_eq!(shown["payload"], json!({"n": 1}));
    let (ok, _, err) = failures_cli(bin, &url, &stream, &["show", "1-1\r\nforged"]);
    assert!(!ok && err.contains("\\r\\n"), "an unknown id is an error, printed escaped: {err}");

    // Purge asks first: with no terminal and no --yes it refuses, removing nothing.
    let (ok, _, err) = failures_cli(bin, &url, &stream, &["purge", &newest]);
    assert!(!ok && err.contains("--yes"), "{err}");
    assert_eq!(store.list(&fastapihooks::dead_letter::FailureFilter::new()).await.unwrap().len(), 2);

    // Replay the oldest: the same webhook-id reaches the receiver, now well.
    let original = rx
        .hits_for("/gone")
        .iter()
        .find(|h| h.json() == json!({"n": 1}))
        .unwrap()
        .header("webhook-id")
        .unwrap()
        .to_owned();
    rx.script("/gone", [Reply::status(200)]);
    let (ok, _, err) = failures_cli(bin, &url, &stream, &["replay", &oldest]);
    assert!(ok, "{err}");
    let hits = rx.wait_for("/gone", 3, WAIT).await;
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[2].header("webhook-id"), Some(original.as_str()));
    assert_eq!(hits[2].status, 200);

    let (ok, _, err) = failures_cli(bin, &url, &stream, &["purge", "--yes"]);
    assert!(ok, "{err}");
    assert!(store.list(&fastapihooks::dead_letter::FailureFilter::new()).await.unwrap().is_empty());
    assert!(w.shutdown(Duration::from_secs(2)).await.drained);
}

// An endpoint's backlog full in a worker on Redis: the overflow waits in the
// durable schedule and comes back, instead of being given up.
#[tokio::test]
async fn an_endpoint_backlog_full_waits_in_redis_instead_of_failing() {
    let url = redis_or_skip!();
    let stream = unique_key("durable-backlog");
    let rx = Receiver::start().await;
    rx.script("/slow", [Reply::status(200).delay(Duration::from_millis(5))]);
    let app = Fastapihooks::builder()
        .backend(backend(&url, &stream).build().unwrap())
        .subscriber("order.created", WebhookSubscription::new(rx.url("/slow")).unwrap())
        .build()
        .unwrap();
    for i in 0..300 {
        app.send("order.created", &json!({"n": i})).unwrap();
    }
    let w = Worker::builder()
        .backend(backend(&url, &stream).retry_poll_interval(Duration::from_millis(50)).build().unwrap())
        .network_policy(NetworkPolicy::default().allow_loopback())
        .per_endpoint_concurrency(2)
        .max_endpoint_backlog(20)
        .signing_secret(SECRET)
        .start()
        .unwrap();
    let all = eventually(WAIT, || {
        let rx = rx.clone();
        async move { by_event(&rx.hits_for("/slow")).len() >= 300 }
    })
    .await;
    let stats = w.stats();
    assert!(w.shutdown(Duration::from_secs(2)).await.drained);
    assert!(all, "every event arrived: {} of 300, {stats:?}", by_event(&rx.hits_for("/slow")).len());
    assert!(stats.deferred > 0, "the overflow went to the schedule: {stats:?}");
    assert_eq!(stats.failed, 0, "nothing given up: {stats:?}");
    assert_eq!(rx.hits_for("/slow").len(), 300, "each once");
}

// `failures recover`: exactly the given-up deliveries of one subscription
// (or one owner) in a time window are sent again, with their webhook-ids.
#[tokio::test]
async fn recover_resends_exactly_the_given_up_deliveries_of_its_window() {
    use fastapihooks::{MemoryStore, Store};

    let url = redis_or_skip!();
    let Some(bin) = cli_bin() else { return };
    let stream = unique_key("durable-recover");
    let rx = Receiver::start().await;
    rx.script("/a", [Reply::status(400)]);
    rx.script("/b", [Reply::status(400)]);
    let store = MemoryStore::new();
    let a = store.add("order.created", WebhookSubscription::new(rx.url("/a")).unwrap().owner("acme")).await.unwrap();
    store.add("order.created", WebhookSubscription::new(rx.url("/b")).unwrap().owner("other")).await.unwrap();
    let w = Worker::builder()
        .backend(backend(&url, &stream).retry_poll_interval(Duration::from_millis(50)).build().unwrap())
        .network_policy(NetworkPolicy::default().allow_loopback())
        .retry_policy(RetryPolicy::none())
        .signing_secret(SECRET)
        .store(store)
        .start()
        .unwrap();
    let app = Fastapihooks::builder().backend(backend(&url, &stream).build().unwrap()).build().unwrap();
    let failures = backend(&url, &stream).build().unwrap().failures();
    let recorded = |n: usize| {
        let failures = failures.clone();
        eventually(WAIT, move || {
            let failures = failures.clone();
            async move { failures.list(&fastapihooks::dead_letter::FailureFilter::new()).await.unwrap().len() == n }
        })
    };
    let emit = |n: u32, owner: &str| {
        app.enqueue(
            fastapihooks::Emission::new("order.created").response_value(json!({"n": n})).owner(Some(owner.into())),
        )
        .unwrap()
    };
    emit(1, "acme");
    emit(2, "other");
    assert!(recorded(2).await, "two given up before the window");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = chrono::Utc::now().to_rfc3339();
    emit(3, "acme");
    emit(4, "acme");
    assert!(recorded(4).await, "two more in the window");
    let ids_of = |path: &str, n: u64| {
        rx.hits_for(path).iter().find(|h| h.json()["n"] == n).and_then(|h| h.header("webhook-id")).unwrap().to_owned()
    };
    let in_window = [ids_of("/a", 3), ids_of("/a", 4)];

    rx.script("/a", [Reply::status(200)]);
    rx.script("/b", [Reply::status(200)]);
    let (ok, _, err) = failures_cli(bin, &url, &stream, &["recover", "--since", &since]);
    assert!(!ok && err.contains("--subscription"), "one of --subscription, --owner is required: {err}");
    let (ok, _, err) =
        failures_cli(bin, &url, &stream, &["recover", "--owner", "acme", "--since", &since, "--until", "2h"]);
    assert!(!ok && err.contains("--until must be after --since"), "{err}");
    let (ok, _, err) = failures_cli(bin, &url, &stream, &["recover", "--subscription", &a, "--since", &since]);
    assert!(ok, "{err}");
    assert!(err.contains("2 sent again"), "{err}");
    let hits = rx.wait_for("/a", 6, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits_a = rx.hits_for("/a");
    assert_eq!(hits_a.len(), 5, "3 given up + the 2 of the window sent again: {:?}", hits.len());
    let mut resent: Vec<String> = hits_a[3..].iter().map(|h| h.header("webhook-id").unwrap().to_owned()).collect();
    resent.sort();
    let mut expected = in_window.to_vec();
    expected.sort();
    assert_eq!(resent, expected, "exactly the window's, with their webhook-ids");
    assert!(hits_a[3..].iter().all(|h| h.status == 200));
    assert_eq!(rx.hits_for("/b").len(), 1, "another subscription's are not touched");
    // What is left: the one before the window, and the other owner's.
    assert!(recorded(2).await);
    let (ok, _, err) = failures_cli(bin, &url, &stream, &["recover", "--owner", "other", "--since", "1h"]);
    assert!(ok && err.contains("1 sent again"), "{err}");
    assert_eq!(rx.wait_for("/b", 2, WAIT).await.len(), 2);
    assert!(recorded(1).await, "the acme failure before the window stays");
    assert!(w.shutdown(Duration::from_secs(2)).await.drained);
    app.shutdown(Duration::from_secs(2)).await;
}
