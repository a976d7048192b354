//! Run with `cargo bench --bench hook_overhead`.
//!
//! The request-path cost of `#[hook]`: a plain handler against the same
//! handler hooked (response only; headers + request + response; and with
//! nobody subscribed), each sent through the router with `Router::oneshot`.
//!
//! Events really flow: each hooked event has one stored subscription whose
//! address the network guard refuses, so it is queued, transformed, looked
//! up, fanned out and reported without network I/O. The runtime runs on its
//! own worker thread, off the measured path.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use criterion::{Criterion, criterion_group, criterion_main};
use fastapihooks::{Fastapihooks, FastapihooksContext, MemoryStore, Store, WebhookSubscription, hook};
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

fn bench(c: &mut Criterion) {
    // The measured requests run on `rt`; the fastapihooks runtime on `bg`.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let bg = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let hooks = bg
        .block_on(async {
            let store = MemoryStore::new();
            for event in ["bench.response", "bench.all"] {
                let refused = WebhookSubscription::new("http://10.255.255.1/refused").expect("valid url");
                store.add(event, refused).await.expect("added");
            }
            Fastapihooks::builder().store(store).queue_capacity(1 << 20).on_failure(|_| {}).build()
        })
        .expect("hooks");
    let apps = [
        ("plain", Router::new().route("/orders", post(plain)).with_state(hooks.clone())),
        ("hooked_response", Router::new().route("/orders", post(hooked_response)).with_state(hooks.clone())),
        ("hooked_unsubscribed", Router::new().route("/orders", post(hooked_unsubscribed)).with_state(hooks.clone())),
        ("hooked_headers_request_response", Router::new().route("/orders", post(hooked_all)).with_state(hooks.clone())),
    ];
    let mut group = c.benchmark_group("hook_overhead");
    for (name, app) in apps {
        group.bench_function(name, |b| {
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
    bg.block_on(hooks.shutdown(std::time::Duration::from_secs(30)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
