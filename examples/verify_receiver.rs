//! A webhook receiver that verifies Standard Webhooks signatures.
//!
//! Run with `WEBHOOK_SECRET=whsec_... cargo run --example verify_receiver`,
//! then point a subscription at `http://127.0.0.1:3000/webhooks`. Unsigned,
//! forged and stale requests are answered 401 before the handler runs.

use axum::extract::FromRef;
use axum::routing::post;
use axum::{Json, Router};
use fastapihooks::{Secret, VerifiedWebhook, Verifier};
use serde_json::{Value, json};

#[derive(Clone, FromRef)]
struct AppState {
    verifier: Verifier,
}

async fn on_webhook(hook: VerifiedWebhook<Value>) -> Json<Value> {
    // `hook.id` is the event id, the same on every retry: de-duplicate on it.
    println!("verified event {:?}: {}", hook.id, hook.payload);
    Json(json!({"received": true}))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = match std::env::var("WEBHOOK_SECRET") {
        Ok(secret) => Secret::new(secret),
        Err(_) => {
            let secret = Secret::generate();
            println!("WEBHOOK_SECRET not set; generated one for this run: {}", secret.expose());
            secret
        }
    };
    let state = AppState { verifier: Verifier::new(secret)? };
    let app = Router::new().route("/webhooks", post(on_webhook)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}/webhooks", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
