//! The app's publish rate to Redis Streams: emits `--events` events (default
//! 200,000) as fast as `emit` accepts them, into an intake queue large enough
//! to take them all, and measures until `XLEN` of a fresh stream reaches the
//! count. Prints one JSON line: events, seconds, events/s, and the counters.
//!
//! `bench-publish --redis redis://127.0.0.1:16383/0 [--events N]` (build with
//! `--features redis`). Talks only to the given Redis, deletes its stream at
//! the end, and gives up after `--limit` seconds (default 300).
//!
//! With `--stream KEY --subscriber URL` it fills `KEY` for workers instead
//! (bench/worker.sh): every event carries the static subscriber `URL`, and
//! the stream is kept.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use fastapihooks::backend::RedisStreamsBackend;
use fastapihooks::{Emission, Fastapihooks};
use serde_json::json;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

async fn xlen(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN").arg(key).query_async(conn).await.unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = arg("--redis").unwrap_or_else(|| "redis://127.0.0.1:16383/0".to_owned());
    let n: u64 = arg("--events").and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let limit = Duration::from_secs(arg("--limit").and_then(|s| s.parse().ok()).unwrap_or(300));
    let keep = arg("--stream");
    let stream = keep.clone().unwrap_or_else(|| format!("fh-bench:publish:{}", std::process::id()));
    let mut conn = redis::Client::open(url.as_str())
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let _: Result<i64, _> = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await;
    let backend = RedisStreamsBackend::builder(url.as_str()).stream(&stream).build().expect("backend");
    let capacity = usize::try_from(n).unwrap_or(usize::MAX).saturating_add(1024);
    let mut builder = Fastapihooks::builder().backend(backend).queue_capacity(capacity);
    if let Some(url) = arg("--subscriber") {
        builder = builder.subscriber(
            "order.created",
            fastapihooks::WebhookSubscription::new(url).expect("a valid --subscriber URL"),
        );
    }
    let hooks = builder.build().expect("build");
    let body = serde_json::to_vec(&json!({
        "id": "ord_0123456789", "item": "widget", "qty": 3, "status": "confirmed", "total_cents": 4_299
    }))
    .expect("json");
    let body = bytes::Bytes::from(body);

    let started = Instant::now();
    let mut refused = 0u64;
    for _ in 0..n {
        if hooks.enqueue(Emission::new("order.created").response_json(body.clone())).is_err() {
            refused += 1;
        }
    }
    let emitted_in = started.elapsed();
    let mut len = 0;
    while started.elapsed() < limit {
        len = xlen(&mut conn, &stream).await;
        if len >= n - refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = hooks.stats();
    let report = hooks.shutdown(Duration::from_secs(10)).await;
    if keep.is_none() {
        let _: Result<i64, _> = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await;
    }
    println!(
        "{}",
        json!({
            "events": n,
            "refused": refused,
            "in_stream": len,
            "emit_s": emitted_in.as_secs_f64(),
            "seconds": secs,
            "events_per_s": (len as f64 / secs).round(),
            "published": stats.published,
            "failed": stats.failed,
            "drained": report.drained,
        })
    );
}
