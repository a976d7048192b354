//! Keep-alive against a real server: 2,000 sequential deliveries to a
//! private nginx that closes idle connections after 1 s, with pauses around
//! that second so the pooled connection is often closed by nginx right as
//! we reuse it. Every delivery must reach nginx exactly once: a request lost
//! on a stale connection, or resent after nginx had answered it, shows up in
//! nginx's own access log.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use fastapihooks::{Fastapihooks, InMemoryDeadLetterQueue, WebhookSubscription};
use serde_json::json;

use crate::nginx_util::{KEEPALIVE_TIMEOUT, Nginx};
use crate::util::local_builder;

const EVENTS: usize = 2_000;
/// Every this many events, a pause around nginx's keep-alive timeout.
const PAUSE_EVERY: usize = 80;
/// The pauses, in ms, used in turn (24 pauses: each twice): before, at and
/// after the 1 s at which nginx closes the idle connection, finest near it.
/// The idle time nginx sees is the pause plus a millisecond or two (seeing
/// the delivery done, sending the next one).
const PAUSES_MS: [u64; 12] = [900, 950, 980, 990, 995, 998, 1000, 1002, 1005, 1020, 1050, 1100];
const LIMIT: Duration = Duration::from_secs(120);
const WAIT_ONE: Duration = Duration::from_secs(10);

/// Waits (bounded) until `n` deliveries succeeded, or one failed.
async fn wait_delivered(hooks: &Fastapihooks, n: u64) {
    let deadline = Instant::now() + WAIT_ONE;
    loop {
        let stats = hooks.stats();
        assert_eq!(stats.failed, 0, "a delivery failed: {stats:?}");
        if stats.delivered >= n {
            return;
        }
        assert!(Instant::now() < deadline, "delivery {n} not done in {WAIT_ONE:?}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn sequential_deliveries_to_nginx_racing_its_keepalive_close_arrive_exactly_once() {
    let Some(nginx) = Nginx::start() else { return };
    assert_eq!(KEEPALIVE_TIMEOUT, Duration::from_secs(1), "the pauses are set around 1 s");
    let dlq = InMemoryDeadLetterQueue::new(EVENTS);
    let hooks = local_builder() // retries: 3, 10..50 ms
        .signing_secret("soak-secret") // signed deliveries carry `webhook-id`
        .on_failure(dlq.clone())
        .subscriber("soak", WebhookSubscription::new(nginx.url("/hooks")).unwrap())
        .build()
        .unwrap();

    let started = Instant::now();
    let mut sent = Vec::with_capacity(EVENTS);
    let mut pauses = Vec::new(); // (event index, ms)
    for i in 0..EVENTS {
        assert!(started.elapsed() < LIMIT, "{i} of {EVENTS} delivered in {LIMIT:?}");
        if i > 0 && i % PAUSE_EVERY == 0 {
            let ms = PAUSES_MS[(i / PAUSE_EVERY - 1) % PAUSES_MS.len()];
            tokio::time::sleep(Duration::from_millis(ms)).await;
            pauses.push((i, ms));
        }
        let id = hooks.send("soak", &json!({ "n": i })).unwrap();
        sent.push(id.as_str().to_owned());
        wait_delivered(&hooks, i as u64 + 1).await;
    }
    let elapsed = started.elapsed();
    assert!(hooks.shutdown(WAIT_ONE).await.drained);

    let stats = hooks.stats();
    assert_eq!(stats.delivered, EVENTS as u64, "{stats:?}");
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert!(dlq.is_empty(), "{:?}", dlq.entries());

    let log = nginx.access_log();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for entry in &log {
        assert_eq!(entry.status, 200, "{entry:?}");
        assert_eq!((entry.method.as_str(), entry.uri.as_str()), ("POST", "/hooks"), "{entry:?}");
        let id = entry.webhook_id.as_deref().unwrap_or_else(|| panic!("no webhook-id: {entry:?}"));
        assert_eq!(entry.event_id.as_deref(), Some(id), "both headers carry the event id");
        *seen.entry(id).or_default() += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "delivered more than once: {duplicated:?}");
    let lost: Vec<&String> = sent.iter().filter(|id| !seen.contains_key(id.as_str())).collect();
    assert!(lost.is_empty(), "{} never reached nginx: {lost:?}", lost.len());
    assert_eq!(seen.len(), EVENTS);
    assert_eq!(log.len(), EVENTS);
    // No assertion on retries: a request written in the instant nginx
    // closes the connection is an attempt that got no answer (nginx never
    // saw it), and goes through the retry policy; the access log above is
    // what proves nothing was lost or sent twice. The count is printed.

    let connections: BTreeSet<u64> = log.iter().map(|e| e.connection).collect();
    // After which pauses the next delivery went on the same connection.
    let conn_of: HashMap<&str, u64> =
        log.iter().map(|e| (e.webhook_id.as_deref().expect("checked"), e.connection)).collect();
    let (mut reused, mut fresh) = (BTreeSet::new(), BTreeSet::new());
    for &(i, ms) in &pauses {
        let same = conn_of[sent[i].as_str()] == conn_of[sent[i - 1].as_str()];
        if same { &mut reused } else { &mut fresh }.insert(ms);
    }
    let paused: u64 = pauses.iter().map(|(_, ms)| ms).sum();
    let most_on_one = log.iter().map(|e| e.connection_requests).max().unwrap_or(0);
    let closed_by_client = nginx.error_log().matches("closed keepalive connection").count();
    eprintln!(
        "keepalive soak: {EVENTS} delivered once each in {elapsed:.1?} ({:.1} s paused), \
         over {} nginx connections (at most {most_on_one} requests on one; \
         {closed_by_client} closed by us while idle), {} retried; after a pause of \
         {reused:?} ms the connection was reused, after {fresh:?} ms a new one was opened",
        paused as f64 / 1000.0,
        connections.len(),
        stats.retried,
    );
}
