//! Run with `cargo run --example transform`.
//!
//! The transformer example: shape exactly what subscribers see from the
//! context (event name, the response's id, a request header), instead of
//! dumping the API response.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use fastapihooks::{Fastapihooks, FastapihooksContext, NetworkPolicy, WebhookSubscription, hook};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// What subscribers receive: a few fields picked from the context.
fn my_transformer(ctx: &FastapihooksContext) -> Value {
    json!({
        "event": ctx.event_name,
        "order_id": ctx.response_payload["id"],
        "user_agent": ctx.header("user-agent"),
    })
}

#[hook("order.created", transform = my_transformer, include_headers = true)]
async fn create_order(Json(_order): Json<Value>) -> Json<Value> {
    Json(json!({"id": "ord_123", "status": "confirmed", "internal_note": "not for subscribers"}))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A local subscriber.
    let (tx, mut received) = mpsc::unbounded_channel::<Bytes>();
    let receiver = Router::new().route(
        "/webhooks",
        post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_url = format!("http://{}/webhooks", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let hooks = Fastapihooks::builder()
        .subscriber("order.created", WebhookSubscription::new(receiver_url)?)
        .network_policy(NetworkPolicy::default().allow_loopback())
        .build()?;

    // No state: the zero-config layer gives hooked handlers the handle.
    let app = Router::new().route("/orders", post(create_order)).layer(hooks.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app_url = format!("http://{}/orders", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let response = reqwest::Client::new()
        .post(app_url)
        .header("content-type", "application/json")
        .header("user-agent", "transform-example/1.0")
        .body(r#"{"item": "book"}"#)
        .send()
        .await?;
    println!("POST /orders -> {} {}", response.status(), response.text().await?);

    let body = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .map_err(|_| "no webhook within 10 s")?
        .ok_or("receiver stopped")?;
    println!("subscriber got: {}", String::from_utf8_lossy(&body));

    hooks.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
