//! `fastapihooks start --attempt-log` and `fastapihooks attempts list`: a
//! worker on a real Redis records every attempt (in Redis, or in a SQLite
//! file), and the listing agrees with what the receiver on 127.0.0.1 saw.

use std::process::{Command, Stdio};
use std::time::Duration;

use fastapihooks::{Fastapihooks, WebhookSubscription};
use serde_json::{Value, json};

use super::redis_util::{backend, cli_bin, eventually, redis_or_skip, start_cli_quietly, unique_key};
use super::util::{Receiver, Reply};

const WAIT: Duration = Duration::from_secs(30);

/// `fastapihooks attempts list` with `args`: (success, stdout lines as JSON, stderr).
fn list(bin: &str, args: &[&str]) -> (bool, Vec<Value>, String) {
    let out = Command::new(bin).args(["attempts", "list", "--json"]).args(args).stdin(Stdio::null()).output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (out.status.success(), lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Publishes two events to a flaky (503, then 200) and a dead (400)
/// subscriber, runs a CLI worker with `log_args`, and checks the listing
/// made with `list_args`.
async fn the_listing_agrees_with_the_receiver(log_args: &[&str], list_args: &[&str], url: &str, stream: &str) {
    let bin = cli_bin().unwrap();
    let rx = Receiver::start().await;
    rx.script("/flaky", [Reply::status(503).body("later"), Reply::status(200)]);
    rx.script("/dead", [Reply::status(400).body("no such customer")]);
    let app = Fastapihooks::builder()
        .backend(backend(url, stream).build().unwrap())
        .subscriber("order.created", WebhookSubscription::new(rx.url("/flaky")).unwrap())
        .subscriber("order.created", WebhookSubscription::new(rx.url("/dead")).unwrap())
        .build()
        .unwrap();
    let event = app.send("order.created", &json!({"n": 1})).unwrap();
    let mut args = vec!["--redis-url", url, "--stream", stream, "--retry-schedule", "200ms"];
    args.extend_from_slice(log_args);
    let mut worker = start_cli_quietly(bin, &args);
    rx.wait_for("/flaky", 2, WAIT).await;
    rx.wait_for("/dead", 1, WAIT).await;
    let mut common = vec!["--stream", stream, "--redis-url", url];
    common.extend_from_slice(list_args);
    let recorded = eventually(WAIT, || {
        let common = common.clone();
        async move { list(bin, &common).1.len() == 3 }
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(recorded, "three attempts recorded: {:?}", list(bin, &common));
    let (ok, all, err) = list(bin, &common);
    assert!(ok, "{err}");
    assert!(all.iter().all(|r| r["event_id"] == event.as_str()));
    let of = |path: &str| -> Vec<(u64, String, u64)> {
        let mut v: Vec<_> = all
            .iter()
            .filter(|r| r["target_url"] == rx.url(path))
            .map(|r| {
                (
                    r["attempt"].as_u64().unwrap(),
                    r["outcome"].as_str().unwrap().to_owned(),
                    r["status"].as_u64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(of("/flaky"), [(1, "retrying".to_owned(), 503), (2, "delivered".to_owned(), 200)]);
    assert_eq!(of("/dead"), [(1, "given_up".to_owned(), 400)]);
    let dead = all.iter().find(|r| r["target_url"] == rx.url("/dead")).unwrap();
    assert_eq!(dead["response"]["body"], "no such customer");
    // Filters and pages.
    let mut given_up = common.clone();
    given_up.extend(["--outcome", "given_up"]);
    assert_eq!(list(bin, &given_up).1.len(), 1);
    let mut page = common.clone();
    page.extend(["--limit", "2"]);
    let (ok, first, err) = list(bin, &page);
    assert!(ok && first.len() == 2 && err.contains("--after"), "{err}");
    let cursor = err.rsplit("--after ").next().unwrap().trim().to_owned();
    page.extend(["--after", &cursor]);
    let (_, rest, _) = list(bin, &page);
    assert_eq!(rest.len(), 1, "the second page holds the last one");
    let mut ids: Vec<&Value> = first.iter().chain(&rest).map(|r| &r["id"]).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "no record twice across pages");
    app.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_worker_records_its_attempts_in_redis_by_default() {
    let url = redis_or_skip!();
    if cli_bin().is_none() {
        return;
    }
    let stream = unique_key("cli-attempts-redis");
    the_listing_agrees_with_the_receiver(&[], &[], &url, &stream).await;
}

#[tokio::test]
async fn a_worker_records_its_attempts_in_a_sqlite_file() {
    let url = redis_or_skip!();
    if cli_bin().is_none() {
        return;
    }
    let stream = unique_key("cli-attempts-sql");
    let dir = super::util::temp_dir("cli-attempts");
    let log = format!("sqlite://{}", dir.join("attempts.db").display());
    the_listing_agrees_with_the_receiver(&["--attempt-log", &log], &["--attempt-log", &log], &url, &stream).await;
}

#[tokio::test]
async fn bad_attempt_log_settings_are_clear_errors() {
    let Some(bin) = cli_bin() else { return };
    let (ok, _, err) = list(bin, &["--attempt-log", "memory"]);
    assert!(!ok && err.contains("--attempt-log"), "{err}");
    let (ok, _, err) = list(bin, &["--attempt-log", "redis"]);
    assert!(!ok && err.contains("--redis-url"), "{err}");
    let (ok, _, err) = list(bin, &["--attempt-log", "ftp://x"]);
    assert!(!ok && err.contains("--attempt-log"), "{err}");
    let (ok, _, err) = list(bin, &["--attempt-log", "sqlite:///nonexistent-dir/x/y.db"]);
    assert!(!ok && err.contains("--attempt-log"), "{err}");
}

/// `fastapihooks subscriptions ARGS --store STORE`: (success, stdout, stderr).
fn subs(bin: &str, store: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin)
        .arg("subscriptions")
        .args(args)
        .args(["--store", store])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// A worker with a SQLite store, on Redis: a 410 disables the subscription
// in the store after one attempt, nothing more reaches it while disabled,
// and `subscriptions enable` (another process) brings it back.
#[tokio::test]
async fn a_410_disables_a_stored_subscription_and_the_cli_enables_it_again() {
    let url = redis_or_skip!();
    let Some(bin) = cli_bin() else { return };
    let stream = unique_key("cli-disable");
    let dir = super::util::temp_dir("cli-disable");
    let store = format!("sqlite://{}?mode=rwc", dir.join("subs.db").display());
    let rx = Receiver::start().await;
    rx.script("/gone", [Reply::status(410)]);
    let (ok, out, err) = subs(
        bin,
        &store,
        &["add", "--event", "order.created", "--url", &rx.url("/gone"), "--allow-cidr", "127.0.0.0/8"],
    );
    assert!(ok, "{err}");
    let id = out.trim().to_owned();
    let app = Fastapihooks::builder().backend(backend(&url, &stream).build().unwrap()).build().unwrap();
    let mut worker = start_cli_quietly(bin, &["--redis-url", &url, "--stream", &stream, "--store", &store]);
    let show = || {
        let (ok, out, err) = subs(bin, &store, &["show", &id, "--json"]);
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(out.trim()).unwrap()
    };
    app.send("order.created", &json!({"n": 1})).unwrap();
    assert_eq!(rx.wait_for("/gone", 1, WAIT).await.len(), 1);
    let disabled = eventually(WAIT, || async { show()["enabled"] == false }).await;
    assert!(disabled, "disabled in the store: {}", show());
    assert!(show()["disabled"]["reason"].as_str().unwrap().contains("410 Gone"));
    for n in 2..=4 {
        app.send("order.created", &json!({"n": n})).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.hits_for("/gone").len(), 1, "nothing more while disabled");

    rx.script("/gone", [Reply::status(200)]);
    let (ok, _, err) = subs(bin, &store, &["enable", &id]);
    assert!(ok, "{err}");
    // Within the engine's few seconds of trusting its own disable, then
    // the store's word: send until one arrives (bounded).
    let mut n = 10;
    let deadline = tokio::time::Instant::now() + WAIT;
    while rx.hits_for("/gone").len() < 2 && tokio::time::Instant::now() < deadline {
        app.send("order.created", &json!({"n": n})).unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let hits = rx.hits_for("/gone");
    assert!(hits.len() >= 2, "delivered again once enabled");
    assert!(
        hits[1..].iter().all(|h| h.json()["n"].as_u64() >= Some(10)),
        "the events sent while disabled were skipped"
    );
    worker.kill().unwrap();
    worker.wait().unwrap();
    app.shutdown(Duration::from_secs(2)).await;
}
