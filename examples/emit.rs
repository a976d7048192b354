//! Emits one event to a receiver on 127.0.0.1 and prints the signed delivery
//! it got, without the `#[hook]` attribute.
//!
//! Run with `cargo run --example emit`.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use fastapihooks::{Emission, Fastapihooks, InMemoryDeadLetterQueue, NetworkPolicy, WebhookSubscription};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;

const SECRET: &str = "your-secret";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A receiver: the subscriber's side, on a free local port.
    let (tx, mut rx) = mpsc::channel::<(HeaderMap, Bytes)>(1);
    let receiver = Router::new().route(
        "/webhooks",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body)).await;
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    // The runtime. Loopback must be allowed explicitly: by default only
    // public addresses are reachable (SSRF protection).
    let dead_letters = InMemoryDeadLetterQueue::new(100);
    let hooks = Fastapihooks::builder()
        .signing_secret(SECRET)
        .network_policy(NetworkPolicy::default().allow_loopback())
        .subscriber("order.created", WebhookSubscription::new(url)?)
        .on_failure(dead_letters.clone())
        .build()?;

    // What a hooked handler does once it succeeded: emit, without waiting.
    let event_id =
        hooks.emit(Emission::new("order.created").response_value(json!({"id": "ord_123", "status": "confirmed"})))?;
    println!("emitted {event_id}");

    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await?.ok_or("no delivery")?;
    println!("received POST /webhooks");
    for name in
        ["content-type", "user-agent", "x-fastapihooks-event", "x-fastapihooks-event-id", "x-fastapihooks-signature"]
    {
        println!("  {name}: {}", headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-"));
    }
    println!("  body: {}", String::from_utf8_lossy(&body));

    // Verify the signature as a receiver would.
    let header = headers.get("x-fastapihooks-signature").and_then(|v| v.to_str().ok()).ok_or("unsigned")?;
    let received = header.strip_prefix("sha256=").ok_or("bad signature format")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())?;
    mac.update(&body);
    mac.verify_slice(&hex::decode(received)?).map_err(|_| "signature mismatch")?;
    println!("signature verified");

    let report = hooks.shutdown(Duration::from_secs(5)).await;
    assert!(report.drained && dead_letters.is_empty());
    Ok(())
}
