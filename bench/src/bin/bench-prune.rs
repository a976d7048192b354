//! Pruning the SQL attempt log while a writer keeps recording, as a
//! delivery engine would. Fills a fresh table with `--rows` attempts (default
//! 1,000,000) dated 60 days back, then runs a writer (`--writer-batch`
//! records, default 100, every `--writer-every-ms`, default 5, dated now):
//! `--phase-secs` (default 10) alone, then while every old row is pruned by
//! age (30 days, `--batch` rows a statement, default 1,000, `--pause-ms`
//! between statements, default 50: the `Retention` defaults), then
//! `--phase-secs` alone again. Prints one JSON line: the fill rate, rows/s
//! pruned, each prune statement's time (median, p99, max), and the writer's
//! records/s and `record` latencies in each phase.
//!
//! `bench-prune --url sqlite:///tmp/prune.db` or `--url postgres://postgres@127.0.0.1:PORT/postgres`
//! (build with `--features prune`). Talks only to the given database, in a
//! new table `bench_attempts_<pid>`; gives up after `--limit` seconds
//! (default 1,200). bench/prune.sh runs it against SQLite and a throw-away
//! PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use fastapihooks::history::sql::SqlAttemptLog;
use fastapihooks::history::{AttemptLog, AttemptOutcome, AttemptQuery, AttemptRecord, Retention};
use serde_json::json;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// An attempt like the engine records: a failed one with a short body.
fn attempt(n: u64, started_at: chrono::DateTime<Utc>) -> AttemptRecord {
    let mut r = AttemptRecord::new(
        format!("evt_{:032x}", n / 3),
        "order.created",
        format!("https://hooks{}.example.com/webhooks", n % 50),
        started_at,
        AttemptOutcome::Retrying,
    );
    r.subscription_id = Some(format!("sub_{:032x}", n % 500));
    r.owner_id = Some(format!("tenant-{}", n % 100));
    r.attempt = (n % 5) as u32 + 1;
    r.duration_ms = 120 + n % 900;
    r.status = Some(503);
    r.error_kind = Some("status".into());
    r.error = Some("the receiver answered 503 Service Unavailable".into());
    r.response.content_type = Some("application/json".into());
    r.response.body = format!("{{\"error\":\"upstream unavailable\",\"request\":\"{n:016x}\",\"retry\":true}}");
    r
}

/// Quantile `q` of sorted `xs`.
fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs[((xs.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One `record` call of the writer: when it started, how long it took.
struct Write {
    at: Instant,
    took: Duration,
    n: usize,
}

/// The writer's figures between `from` and `to`.
fn phase(writes: &[Write], from: Instant, to: Instant) -> serde_json::Value {
    let within: Vec<&Write> = writes.iter().filter(|w| w.at >= from && w.at + w.took <= to).collect();
    let records: usize = within.iter().map(|w| w.n).sum();
    let secs = (to - from).as_secs_f64();
    let mut lat: Vec<f64> = within.iter().map(|w| ms(w.took)).collect();
    lat.sort_by(f64::total_cmp);
    json!({
        "secs": (secs * 10.0).round() / 10.0,
        "records_per_s": (records as f64 / secs).round(),
        "record_ms_p50": (quantile(&lat, 0.5) * 100.0).round() / 100.0,
        "record_ms_p99": (quantile(&lat, 0.99) * 100.0).round() / 100.0,
        "record_ms_max": (quantile(&lat, 1.0) * 100.0).round() / 100.0,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url: String = arg("--url", String::new());
    assert!(
        url.starts_with("sqlite:") || url.starts_with("postgres://postgres@127.0.0.1:"),
        "--url must be a SQLite file or a PostgreSQL on 127.0.0.1"
    );
    let rows: u64 = arg("--rows", 1_000_000);
    let batch: usize = arg("--batch", 1000);
    let pause = Duration::from_millis(arg("--pause-ms", 50));
    let writer_batch: u64 = arg("--writer-batch", 100);
    let every = Duration::from_millis(arg("--writer-every-ms", 5));
    let phase_secs = Duration::from_secs(arg("--phase-secs", 10));
    let limit = Duration::from_secs(arg("--limit", 1200));
    let begun = Instant::now();
    let over = move || begun.elapsed() > limit;

    let table = format!("bench_attempts_{}", std::process::id());
    let log = SqlAttemptLog::builder(&url).table(&table).connect().await.expect("connect");
    log.init().await.expect("init");

    // Fill: old rows, in order, a thousand a call.
    let now = Utc::now();
    let old = now - TimeDelta::days(60);
    let fill_start = Instant::now();
    let mut n = 0;
    while n < rows {
        assert!(!over(), "gave up filling after {limit:?}");
        let chunk: Vec<AttemptRecord> =
            (n..(n + 1000).min(rows)).map(|i| attempt(i, old + TimeDelta::milliseconds(i as i64))).collect();
        log.record(&chunk).await.expect("fill");
        n += chunk.len() as u64;
    }
    let fill = fill_start.elapsed();

    // The writer: a batch of recent attempts every `every`, until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, stop) = (log.clone(), stop.clone());
        tokio::spawn(async move {
            let mut writes = Vec::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 1u64 << 40;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let started = Utc::now();
                let chunk: Vec<AttemptRecord> = (i..i + writer_batch).map(|k| attempt(k, started)).collect();
                i += writer_batch;
                let at = Instant::now();
                log.record(&chunk).await.expect("writer");
                writes.push(Write { at, took: at.elapsed(), n: chunk.len() });
            }
            writes
        })
    };

    let before_start = Instant::now();
    tokio::time::sleep(phase_secs).await;
    let prune_start = Instant::now();
    let retention = Retention::default().max_age(Duration::from_secs(30 * 86400)).batch_size(batch).pause(pause);
    let mut statements = Vec::new();
    let mut pruned = 0u64;
    loop {
        assert!(!over(), "gave up pruning after {limit:?}");
        let t = Instant::now();
        let deleted = log.prune(&retention, Utc::now()).await.expect("prune");
        statements.push(ms(t.elapsed()));
        pruned += deleted;
        if deleted < batch as u64 {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    let prune_end = Instant::now();
    tokio::time::sleep(phase_secs).await;
    let after_end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("writer task");

    // Nothing older than the cutoff is left.
    let cutoff = retention.cutoff(Utc::now()).expect("a cutoff");
    let left = log.query(&AttemptQuery::new().until(cutoff).limit(1)).await.expect("query");
    let prune = prune_end - prune_start;
    let in_statements: f64 = statements.iter().sum();
    let mut sorted = statements.clone();
    sorted.sort_by(f64::total_cmp);
    let before = phase(&writes, before_start, prune_start);
    let during = phase(&writes, prune_start, prune_end);
    let after = phase(&writes, prune_end, after_end);
    let ratio = during["records_per_s"].as_f64().unwrap_or(0.0) / before["records_per_s"].as_f64().unwrap_or(1.0);
    let line = json!({
        "backend": if url.starts_with("sqlite:") { "sqlite" } else { "postgres" },
        "rows": rows,
        "fill_s": (fill.as_secs_f64() * 10.0).round() / 10.0,
        "fill_rows_per_s": (rows as f64 / fill.as_secs_f64()).round(),
        "batch": batch,
        "pause_ms": pause.as_millis() as u64,
        "pruned": pruned,
        "old_left": left.records.len(),
        "prune_s": (prune.as_secs_f64() * 10.0).round() / 10.0,
        "prune_rows_per_s": (pruned as f64 / prune.as_secs_f64()).round(),
        "prune_rows_per_s_in_statements": (pruned as f64 / (in_statements / 1e3)).round(),
        "statements": statements.len(),
        "statement_ms_p50": (quantile(&sorted, 0.5) * 100.0).round() / 100.0,
        "statement_ms_p99": (quantile(&sorted, 0.99) * 100.0).round() / 100.0,
        "statement_ms_max": (quantile(&sorted, 1.0) * 100.0).round() / 100.0,
        "writer_before": before,
        "writer_during": during,
        "writer_after": after,
        "writer_during_over_before": (ratio * 1000.0).round() / 1000.0,
    });
    println!("{line}");
}
