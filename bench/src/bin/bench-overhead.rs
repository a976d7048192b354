//! Request-path cost of `#[hook]`, for instruction counting:
//! `valgrind --tool=callgrind --separate-threads=yes bench-overhead VARIANT N`
//! runs N requests through `Router::oneshot` on the main thread (the
//! request path), while the fastapihooks runtime runs on its own threads
//! (off the path). VARIANT: `plain`, `response` (hooked, response payload),
//! `all` (hooked, headers + request + response).
//!
//! Events really flow: one stored subscription whose address the network
//! guard refuses, so each event is transformed, published, looked up, fanned
//! out and reported, without network I/O.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let variant = args.get(1).map_or("plain", String::as_str).to_owned();
    let n: usize = args.get(2).map_or(Ok(10_000), |s| s.parse())?;

    // The runtime lives on its own threads.
    let bg = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let hooks = bg.block_on(async {
        let store = MemoryStore::new();
        for event in ["bench.response", "bench.all"] {
            store.add(event, WebhookSubscription::new("http://10.255.255.1/refused")?).await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(
            Fastapihooks::builder().store(store).queue_capacity(1 << 20).on_failure(|_| {}).build()?,
        )
    })?;
    let app = match variant.as_str() {
        "plain" => Router::new().route("/orders", post(plain)),
        "response" => Router::new().route("/orders", post(hooked_response)),
        "all" => Router::new().route("/orders", post(hooked_all)),
        other => return Err(format!("unknown variant {other}").into()),
    }
    .with_state(hooks.clone());

    // The request path: the main thread.
    let fg = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    fg.block_on(async {
        for _ in 0..n {
            let req = Request::post("/orders")
                .header("content-type", "application/json")
                .header("user-agent", "bench")
                .body(Body::from(r#"{"item":"book","quantity":2}"#))?;
            let res = app.clone().oneshot(req).await?;
            assert_eq!(res.status(), StatusCode::CREATED);
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    let report = bg.block_on(hooks.shutdown(Duration::from_secs(30)));
    let s = hooks.stats();
    eprintln!("{variant}: {n} requests; emitted {}, failed {}, drained {}", s.emitted, s.failed, report.drained);
    Ok(())
}
