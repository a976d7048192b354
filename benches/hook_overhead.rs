//! Run with `cargo bench --bench hook_overhead`.
//!
//! The request-path cost of `#[hook]`: a plain handler against the same
//! handler hooked (response only; headers + request + response, with a
//! transform that reads them; and with nobody subscribed), each sent through
//! the router with `Router::oneshot`.
//!
//! Hooked events are captured, queued, transformed and published, on a
//! runtime of their own (off the measured path), to a queue backend that
//! drops them: the request path is measured alone. With in-process delivery
//! the engine's work per event (look-up, signing, HTTP) is larger than the
//! request's: in a tight loop it would fall behind, fill the intake queue,
//! and measure the refusals instead (the end-to-end load benchmark,
//! `bench/load.sh`, measures what delivery does to the endpoint).

use async_trait::async_trait;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use criterion::{Criterion, criterion_group, criterion_main};
use fastapihooks::backend::{Backend, BackendError, Received};
use fastapihooks::{Event, Fastapihooks, FastapihooksContext, MemoryStore, Store, WebhookSubscription, hook};
use futures_util::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

#[derive(Deserialize)]
struct OrderIn {
    item: String,
    quantity: u32,
}

#[derive(Serialize)]
struct Order {
    id: &'static str,
    item: String,
    quantity: u32,
}

async fn plain(Json(o): Json<OrderIn>) -> (StatusCode, Json<Order>) {
    (StatusCode::CREATED, Json(Order { id: "ord_1", item: o.item, quantity: o.quantity }))
}

#[hook("bench.response")]
async fn hooked_response(Json(o): Json<OrderIn>) -> (StatusCode, Json<Order>) {
    (StatusCode::CREATED, Json(Order { id: "ord_1", item: o.item, quantity: o.quantity }))
}

#[hook("bench.unsubscribed")]
async fn hooked_unsubscribed(Json(o): Json<OrderIn>) -> (StatusCode, Json<Order>) {
    (StatusCode::CREATED, Json(Order { id: "ord_1", item: o.item, quantity: o.quantity }))
}

/// What a transform that asks for headers and the request does: reads them.
fn with_request(ctx: &FastapihooksContext) -> serde_json::Value {
    serde_json::json!({
        "order": ctx.response_payload,
        "user_agent": ctx.header("user-agent"),
        "request": ctx.request_json(),
    })
}

#[hook("bench.all", include_headers = true, include_request = true, transform = with_request)]
async fn hooked_all(Json(o): Json<OrderIn>) -> (StatusCode, Json<Order>) {
    (StatusCode::CREATED, Json(Order { id: "ord_1", item: o.item, quantity: o.quantity }))
}

fn request() -> Request<Body> {
    Request::post("/orders")
        .header("content-type", "application/json")
        .header("user-agent", "bench")
        .body(Body::from(r#"{"item":"book","quantity":2}"#))
        .unwrap_or_default()
}

/// A queue backend that drops every event it is given.
struct Discard;

#[async_trait]
impl Backend for Discard {
    async fn publish(&self, _event: Event) -> Result<(), BackendError> {
        Ok(())
    }

    fn consume(&self) -> BoxStream<'static, Result<Received, BackendError>> {
        stream::empty().boxed()
    }

    async fn close(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The time `n` requests to `app` take, one after the other.
async fn timed(app: &Router, n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let res = app.clone().oneshot(request()).await.expect("infallible");
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    // The measured requests run on `rt`; the fastapihooks runtime on `bg`.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let bg = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let hooks = bg.block_on(async { Fastapihooks::builder().backend(Discard).build() }).expect("hooks");
    // In-process delivery, with a store where `bench.unsubscribed` has no
    // subscription: the hook skips it before capturing anything.
    let in_process = bg
        .block_on(async {
            let store = MemoryStore::new();
            let elsewhere = WebhookSubscription::new("http://10.255.255.1/refused").expect("valid url");
            store.add("bench.other", elsewhere).await.expect("added");
            Fastapihooks::builder().store(store).on_failure(|_| {}).build()
        })
        .expect("hooks");
    let apps = [
        ("plain", Router::new().route("/orders", post(plain)).with_state(hooks.clone())),
        ("hooked_response", Router::new().route("/orders", post(hooked_response)).with_state(hooks.clone())),
        (
            "hooked_unsubscribed",
            Router::new().route("/orders", post(hooked_unsubscribed)).with_state(in_process.clone()),
        ),
        ("hooked_headers_request_response", Router::new().route("/orders", post(hooked_all)).with_state(hooks.clone())),
    ];
    let mut group = c.benchmark_group("hook_overhead");
    for (name, app) in &apps {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| {
                let app = app.clone();
                async move {
                    let res = app.oneshot(request()).await.expect("infallible");
                    assert_eq!(res.status(), StatusCode::CREATED);
                }
            });
        });
    }
    group.finish();

    // The added time itself: hooked and plain requests alternate in chunks,
    // and each sample is the hooked chunks' time minus the plain chunks'.
    // Drift in the machine's speed, which on a shared machine moves the
    // absolute times above from one benchmark to the next, hits both alike
    // and cancels out. A sample in which the plain chunks took longer counts
    // as 1 ns per request (criterion needs a positive time): that can only
    // overstate the added time.
    let plain_app = apps[0].1.clone();
    let mut added = c.benchmark_group("hook_overhead_added");
    for (name, app) in &apps[1..] {
        added.bench_function(*name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (hooked, plain) = (app.clone(), plain_app.clone());
                async move {
                    const CHUNK: u64 = 32;
                    let (mut with_hook, mut without) = (Duration::ZERO, Duration::ZERO);
                    for _ in 0..iters.div_ceil(CHUNK) {
                        without += timed(&plain, CHUNK).await;
                        with_hook += timed(&hooked, CHUNK).await;
                    }
                    with_hook.saturating_sub(without).max(Duration::from_nanos(iters))
                }
            });
        });
    }
    added.finish();
    bg.block_on(hooks.shutdown(Duration::from_secs(30)));
    bg.block_on(in_process.shutdown(Duration::from_secs(30)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
