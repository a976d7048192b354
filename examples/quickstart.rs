//! Run with `cargo run --example quickstart`.
//!
//! An axum app with a hooked `POST /orders`, a memory store with a local
//! webhook receiver subscribed, and a signing secret. It sends one order,
//! prints the webhook the receiver got, verifies its signature, and exits.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use fastapihooks::{Fastapihooks, MemoryStore, NetworkPolicy, Store, WebhookSubscription, hook};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;

const SECRET: &str = "your-secret";

#[derive(Deserialize)]
struct OrderIn {
    item: String,
    quantity: u32,
}

#[derive(Serialize)]
struct Order {
    id: String,
    item: String,
    quantity: u32,
    status: &'static str,
}

/// Your handler, as it was: `#[hook]` emits `order.created` after it
/// succeeds, off the request path.
#[hook("order.created")]
async fn create_order(State(_hooks): State<Fastapihooks>, Json(order): Json<OrderIn>) -> (StatusCode, Json<Order>) {
    let order = Order { id: "ord_123".into(), item: order.item, quantity: order.quantity, status: "confirmed" };
    (StatusCode::CREATED, Json(order))
}

/// Starts a server for `app` on 127.0.0.1 and returns its address.
async fn serve(app: Router) -> Result<std::net::SocketAddr, std::io::Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A subscriber's endpoint: a local receiver that hands us what it got.
    let (tx, mut received) = mpsc::unbounded_channel::<(HeaderMap, Bytes)>();
    let receiver = Router::new().route(
        "/webhooks",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let receiver_addr = serve(receiver).await?;

    // The runtime: a memory store with the receiver subscribed, a signing
    // secret, and loopback allowed (the default refuses private addresses).
    let store = MemoryStore::new();
    store.add("order.created", WebhookSubscription::new(format!("http://{receiver_addr}/webhooks"))?).await?;
    let hooks = Fastapihooks::builder()
        .store(store)
        .signing_secret(SECRET)
        .network_policy(NetworkPolicy::default().allow_loopback())
        .build()?;

    // The app, with the handle in its state.
    let app = Router::new().route("/orders", post(create_order)).with_state(hooks.clone());
    let app_addr = serve(app).await?;

    // One order.
    let response = reqwest::Client::new()
        .post(format!("http://{app_addr}/orders"))
        .header("content-type", "application/json")
        .body(r#"{"item": "book", "quantity": 2}"#)
        .send()
        .await?;
    println!("POST /orders -> {} {}", response.status(), response.text().await?);

    // The webhook.
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .map_err(|_| "no webhook within 10 s")?
        .ok_or("receiver stopped")?;
    println!("webhook received:");
    for name in ["content-type", "x-fastapihooks-event", "x-fastapihooks-signature"] {
        println!("  {name}: {}", headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-"));
    }
    println!("  body: {}", String::from_utf8_lossy(&body));

    // Verify the signature as a receiver would.
    let signature = headers.get("x-fastapihooks-signature").and_then(|v| v.to_str().ok()).ok_or("no signature")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())?;
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    if signature != expected {
        return Err(format!("bad signature: got {signature}, expected {expected}").into());
    }
    println!("signature verified");

    hooks.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
