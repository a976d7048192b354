//! Replay: a delivery re-sent after the tolerance window is rejected by the
//! verifier and by the extractor; forged, unsigned and malformed requests
//! are rejected before the handler runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::HeaderMap;
use axum::routing::post;
use fastapihooks::verify::VerifiedWebhook;
use fastapihooks::{Emission, Secret, Verifier, VerifyError, WebhookSubscription};
use serde_json::{Value, json};

use crate::signing_util::{Captured, Receiver, local_hooks, serve};

#[derive(Clone, FromRef)]
struct App {
    verifier: Verifier,
    handled: Arc<AtomicUsize>,
}

async fn handler(State(handled): State<Arc<AtomicUsize>>, _hook: VerifiedWebhook<Value>) -> &'static str {
    handled.fetch_add(1, Ordering::SeqCst);
    "ok"
}

/// Serves the extractor with `verifier`; returns its URL and the handler count.
async fn extractor_app(verifier: Verifier) -> (String, Arc<AtomicUsize>) {
    let app = App { verifier, handled: Arc::default() };
    let handled = app.handled.clone();
    let addr = serve(Router::new().route("/hook", post(handler)).with_state(app)).await;
    (format!("http://{addr}/hook"), handled)
}

async fn resend(client: &reqwest::Client, url: &str, headers: &HeaderMap, body: &[u8]) -> (u16, String) {
    let resp = client.post(url).headers(headers.clone()).body(body.to_vec()).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn one_delivery(secret: &Secret) -> Captured {
    let mut receiver = Receiver::start().await;
    let hooks = local_hooks()
        .subscriber("e", WebhookSubscription::new(receiver.url("/capture")).unwrap().signing_secret(secret.clone()))
        .build()
        .unwrap();
    hooks.emit(Emission::new("e").response_value(json!({"amount": 10}))).unwrap();
    let (_, captured) = receiver.next().await;
    hooks.shutdown(Duration::from_secs(5)).await;
    captured
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_replay_rejected_by_verifier_after_tolerance() {
    let secret = Secret::generate();
    let d = one_delivery(&secret).await;
    let verifier = Verifier::new(secret).unwrap();
    verifier.verify(&d.headers, &d.body).expect("fresh delivery verifies");
    let later = chrono::Utc::now() + chrono::Duration::minutes(5) + chrono::Duration::seconds(2);
    assert!(matches!(verifier.verify_at(&d.headers, &d.body, later), Err(VerifyError::TimestampTooOld { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_replay_rejected_by_extractor_after_tolerance() {
    let secret = Secret::generate();
    let d = one_delivery(&secret).await;
    // A 1 s tolerance, so the test need not wait 5 minutes.
    let (url, handled) = extractor_app(Verifier::new(secret).unwrap().tolerance(Duration::from_secs(1))).await;
    let client = reqwest::Client::new();

    assert_eq!(resend(&client, &url, &d.headers, &d.body).await.0, 200, "the dispatcher's delivery is accepted");
    assert_eq!(handled.load(Ordering::SeqCst), 1);

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, text) = resend(&client, &url, &d.headers, &d.body).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("timestamp"), "{text}");
    assert_eq!(handled.load(Ordering::SeqCst), 1, "the handler did not run for the replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_replay_extractor_rejects_forged_unsigned_and_malformed() {
    let secret = Secret::generate();
    let d = one_delivery(&secret).await;
    let (url, handled) = extractor_app(Verifier::new(secret.clone()).unwrap()).await;
    let client = reqwest::Client::new();

    // Forged: same headers, other body.
    assert_eq!(resend(&client, &url, &d.headers, br#"{"amount": 1000}"#).await.0, 401);
    // Unsigned.
    assert_eq!(resend(&client, &url, &HeaderMap::new(), &d.body).await.0, 401);
    // Signed with another secret.
    let other = one_delivery(&Secret::generate()).await;
    assert_eq!(resend(&client, &url, &other.headers, &other.body).await.0, 401);
    // Malformed signature header.
    let mut bad = d.headers.clone();
    bad.insert("webhook-signature", "not-a-signature".parse().unwrap());
    assert_eq!(resend(&client, &url, &bad, &d.body).await.0, 400);
    // Legacy-only is refused unless the verifier accepts it.
    let mut legacy = d.headers.clone();
    for h in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        legacy.remove(h);
    }
    assert_eq!(resend(&client, &url, &legacy, &d.body).await.0, 401);
    let (legacy_url, legacy_handled) = extractor_app(Verifier::new(secret.clone()).unwrap().accept_legacy(true)).await;
    assert_eq!(resend(&client, &legacy_url, &legacy, &d.body).await.0, 200);
    assert_eq!(legacy_handled.load(Ordering::SeqCst), 1);
    // Correctly signed but not JSON: 400.
    let mut h = http_headers_signed(&secret, b"not json");
    h.insert("content-type", "application/json".parse().unwrap());
    assert_eq!(resend(&client, &url, &h, b"not json").await.0, 400);
    assert_eq!(handled.load(Ordering::SeqCst), 0, "the handler never ran");
    // And the genuine delivery passes.
    assert_eq!(resend(&client, &url, &d.headers, &d.body).await.0, 200);
}

fn http_headers_signed(secret: &Secret, body: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    fastapihooks::sign::Signer::new(Some(secret.clone()))
        .sign("msg_raw", chrono::Utc::now(), body, &[], &mut h)
        .unwrap();
    h
}
