//! The app under load: `POST /plain` and `POST /hooked` do the same work;
//! `/hooked` also emits `order.created` to `--subscribers` subscriptions on
//! the receiver. `GET /admin/stats` returns the runtime's counters and the
//! process's memory.
//!
//! `bench-app --port 9200 --receiver http://127.0.0.1:9100 --subscribers 1 --secret S`
//! delivers on the default `DeliveryRuntime`; `--shared` on the app's
//! runtime, `--dedicated N` on N threads, `--nice K` at niceness K. The
//! library's limits apply unless `--queue`, `--endpoint-backlog`,
//! `--max-concurrency` or `--per-endpoint` set them. `--attempt-log none`
//! records no attempts; `memory` (the default) the library's ring; a SQL
//! URL (features `sqlite`, `postgres`) a `SqlAttemptLog` there, emptied
//! first with `--fresh-attempt-log`.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use fastapihooks::{Fastapihooks, MemoryStore, NetworkPolicy, RetryPolicy, Store, WebhookSubscription, hook};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Deserialize)]
struct OrderIn {
    item: String,
    qty: u32,
}

#[derive(Serialize)]
struct Order {
    id: u64,
    item: String,
    qty: u32,
    status: &'static str,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn make_order(o: OrderIn) -> Order {
    Order { id: rand::random::<u64>() >> 12, item: o.item, qty: o.qty, status: "confirmed" }
}

async fn plain(Json(o): Json<OrderIn>) -> Json<Order> {
    Json(make_order(o))
}

/// The same handler as `plain`, with the attribute.
#[hook("order.created")]
async fn hooked(Json(o): Json<OrderIn>) -> Json<Order> {
    Json(make_order(o))
}

#[derive(Deserialize)]
struct Burst {
    n: usize,
}

/// Emits `n` events at once, as `n` hooked requests would, without the HTTP.
async fn burst(State(hooks): State<Fastapihooks>, axum::extract::Query(b): axum::extract::Query<Burst>) -> Json<Value> {
    let mut refused = 0;
    for i in 0..b.n {
        let order = make_order(OrderIn { item: format!("burst-{i}"), qty: 1 });
        let body = serde_json::to_vec(&order).unwrap_or_default();
        if hooks.emit(fastapihooks::Emission::new("order.created").response_json(body.into())).is_err() {
            refused += 1;
        }
    }
    Json(json!({ "emitted": b.n - refused, "refused": refused }))
}

async fn stats(State(hooks): State<Fastapihooks>) -> Json<Value> {
    let s = hooks.stats();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Json(json!({
        "emitted": s.emitted, "queue_full": s.queue_full, "published": s.published,
        "delivered": s.delivered, "retried": s.retried, "failed": s.failed,
        "attempts_recorded": s.attempts_recorded, "attempts_unrecorded": s.attempts_unrecorded,
        "rss_kb": kb("VmRSS:"), "peak_rss_kb": kb("VmHWM:"),
    }))
}

/// The SQL attempt log at `url`, its table created (and emptied, with
/// `--fresh-attempt-log`, so that each run starts alike).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn sql_attempt_log(
    url: &str,
) -> Result<std::sync::Arc<dyn fastapihooks::history::AttemptLog>, Box<dyn std::error::Error>> {
    use fastapihooks::history::{AttemptLog, Retention, sql::SqlAttemptLog};
    let log = SqlAttemptLog::connect(url).await?;
    log.init().await?;
    if std::env::args().any(|a| a == "--fresh-attempt-log") {
        let all = Retention::default().forever().max_count(0).batch_size(100_000);
        while log.prune(&all, chrono::Utc::now()).await? > 0 {}
    }
    Ok(std::sync::Arc::new(log))
}

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
async fn sql_attempt_log(
    url: &str,
) -> Result<std::sync::Arc<dyn fastapihooks::history::AttemptLog>, Box<dyn std::error::Error>> {
    Err(format!("--attempt-log: `{url}` needs bench-app built with --features sqlite,postgres").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = arg("--port").unwrap_or_else(|| "9200".into()).parse()?;
    let receiver = arg("--receiver").unwrap_or_else(|| "http://127.0.0.1:9100".into());
    let subscribers: usize = arg("--subscribers").unwrap_or_else(|| "1".into()).parse()?;
    let secret = arg("--secret").unwrap_or_else(|| "bench-secret".into());
    let retry_base_ms: u64 = arg("--retry-base-ms").unwrap_or_else(|| "1000".into()).parse()?;

    let store = MemoryStore::new();
    // Subscriber i is on port base + i: distinct endpoints, as distinct
    // subscribers' servers would be.
    let (host, base) = receiver.rsplit_once(':').ok_or("--receiver needs a port")?;
    let base: u16 = base.parse()?;
    for i in 0..subscribers {
        let port = base + u16::try_from(i)?;
        store.add("order.created", WebhookSubscription::new(format!("{host}:{port}/s{i}"))?).await?;
    }
    // The library's defaults, unless a limit is given.
    let mut builder = Fastapihooks::builder();
    if let Some(q) = arg("--queue") {
        builder = builder.queue_capacity(q.parse()?);
    }
    if let Some(b) = arg("--endpoint-backlog") {
        builder = builder.max_endpoint_backlog(b.parse()?);
    }
    if let Some(n) = arg("--max-concurrency") {
        builder = builder.max_concurrency(n.parse()?);
    }
    if let Some(n) = arg("--per-endpoint") {
        builder = builder.per_endpoint_concurrency(n.parse()?);
    }
    // Delivery: the default runtime unless told otherwise.
    let mut runtime = match arg("--dedicated") {
        Some(threads) => fastapihooks::DeliveryRuntime::dedicated(threads.parse()?),
        None => fastapihooks::DeliveryRuntime::default(),
    };
    if let Some(nice) = arg("--nice") {
        runtime = runtime.nice(nice.parse()?);
    }
    if std::env::args().any(|a| a == "--shared") {
        runtime = fastapihooks::DeliveryRuntime::shared();
    }
    builder = builder.delivery_runtime(runtime);
    builder = match arg("--attempt-log").as_deref() {
        None | Some("memory") => builder,
        Some("none") => builder.no_attempt_log(),
        Some(url) => builder.attempt_log_arc(sql_attempt_log(url).await?),
    };
    let hooks = builder
        .store(store)
        .signing_secret(secret)
        .network_policy(NetworkPolicy::default().allow_loopback())
        .retry_policy(RetryPolicy::exponential(3, Duration::from_millis(retry_base_ms), Duration::from_secs(60)))
        .on_failure(|_f: fastapihooks::DeliveryFailure| {})
        .build()?;
    let app = Router::new()
        .route("/plain", post(plain))
        .route("/hooked", post(hooked))
        .route("/admin/stats", get(stats))
        .route("/admin/burst", post(burst))
        .with_state(hooks.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    hooks.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
