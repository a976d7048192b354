//! Run with `cargo bench --bench hook_overhead`.
//!
//! The request-path cost of `#[hook]`: a plain handler against the same
//! handler hooked (response only; headers + request + response), each sent
//! through the router with `Router::oneshot`. Events go to a runtime with
//! no subscriber, so only the request path and the intake are measured.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use criterion::{Criterion, criterion_group, criterion_main};
use fastapihooks::{Fastapihooks, hook};
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

#[hook("bench.all", include_headers = true, include_request = true)]
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
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let hooks = rt.block_on(async { Fastapihooks::builder().queue_capacity(1 << 20).build() }).expect("hooks");
    let apps = [
        ("plain", Router::new().route("/orders", post(plain)).with_state(hooks.clone())),
        ("hooked_response", Router::new().route("/orders", post(hooked_response)).with_state(hooks.clone())),
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
    rt.block_on(hooks.shutdown(std::time::Duration::from_secs(5)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
