//! Interoperability with the Standard Webhooks reference implementation
//! (the Python package `standardwebhooks`), both directions, over real HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use fastapihooks::verify::VerifiedWebhook;
use fastapihooks::{Emission, MemoryStore, Secret, SignatureScheme, Store, Verifier, WebhookSubscription};
use serde_json::{Value, json};

use crate::signing_util::{Receiver, local_hooks, python, python_verify, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_interop_python_verifies_dispatcher_deliveries() {
    let mut receiver = Receiver::start().await;
    // A seed-style global secret (raw string) for a static subscriber, and a
    // generated `whsec_` secret for a stored one.
    let global = "seed-style-global-secret";
    let store = MemoryStore::new();
    let own = WebhookSubscription::new(receiver.url("/own")).unwrap().generated_secret();
    let own_secret = own.current_secret().unwrap().expose().to_owned();
    assert!(own_secret.starts_with("whsec_"));
    store.add("order.created", own).await.unwrap();
    let hooks = local_hooks()
        .store(store)
        .signing_secret(global)
        .subscriber("order.created", WebhookSubscription::new(receiver.url("/global")).unwrap())
        .build()
        .unwrap();

    let id = hooks.emit(Emission::new("order.created").response_value(json!({"id": "ord_1", "note": "é ✓"}))).unwrap();
    let mut got = [receiver.next().await, receiver.next().await];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let [(p1, global_delivery), (p2, own_delivery)] = got;
    assert_eq!((p1.as_str(), p2.as_str()), ("/global", "/own"));
    for d in [&global_delivery, &own_delivery] {
        assert_eq!(d.header("webhook-id"), id.as_str(), "webhook-id is the event id");
        let ts: i64 = d.header("webhook-timestamp").parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - ts).abs() <= 5);
        assert!(d.header("x-fastapihooks-signature").starts_with("sha256="), "legacy header still sent");
    }

    let results = python_verify(&[
        (global, &global_delivery),
        (&own_secret, &own_delivery),
        // Each subscription's signature fails with the other's secret.
        (global, &own_delivery),
        (&own_secret, &global_delivery),
    ]);
    assert_eq!(results[..2], ["ok", "ok"], "{results:?}");
    assert!(results[2].starts_with("err") && results[3].starts_with("err"), "{results:?}");

    // A tampered body fails in Python too.
    let mut tampered = own_delivery.clone();
    tampered.body = axum::body::Bytes::from_static(br#"{"id":"ord_2"}"#);
    assert!(python_verify(&[(&own_secret, &tampered)])[0].starts_with("err"));
    hooks.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_interop_webhook_id_is_stable_across_retries() {
    let mut receiver = Receiver::start().await;
    receiver.respond_with([StatusCode::SERVICE_UNAVAILABLE]);
    let secret = Secret::generate();
    let hooks = local_hooks()
        .subscriber("e", WebhookSubscription::new(receiver.url("/h")).unwrap().signing_secret(secret.clone()))
        .build()
        .unwrap();
    let id = hooks.emit(Emission::new("e").response_value(json!(1))).unwrap();
    let (_, first) = receiver.next().await;
    let (_, retry) = receiver.next().await;
    assert_eq!(first.header("webhook-id"), id.as_str());
    assert_eq!(retry.header("webhook-id"), id.as_str());
    let results = python_verify(&[(secret.expose(), &first), (secret.expose(), &retry)]);
    assert_eq!(results, ["ok", "ok"]);
    hooks.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_interop_schemes_are_configurable() {
    let mut receiver = Receiver::start().await;
    let hooks = local_hooks()
        .signing_secret(Secret::generate())
        .signature_schemes([SignatureScheme::StandardWebhooks])
        .subscriber("e", WebhookSubscription::new(receiver.url("/h")).unwrap())
        .build()
        .unwrap();
    hooks.emit(Emission::new("e").response_value(json!(1))).unwrap();
    let (_, d) = receiver.next().await;
    assert!(d.header("webhook-signature").starts_with("v1,"));
    assert_eq!(d.header("x-fastapihooks-signature"), "");
    hooks.shutdown(Duration::from_secs(5)).await;
}

/// What the handler saw: (webhook-id, payload) per verified request.
type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

#[derive(Clone, FromRef)]
struct App {
    verifier: Verifier,
    seen: Seen,
}

async fn receive(State(seen): State<Seen>, hook: VerifiedWebhook) -> Json<Value> {
    seen.lock().unwrap().push((hook.id.clone(), hook.payload));
    Json(json!({"ok": true}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_interop_rust_verifier_accepts_python_signatures() {
    let secret = Secret::generate();
    let wrong = Secret::generate();
    let app = App { verifier: Verifier::new(secret.clone()).unwrap(), seen: Arc::default() };
    let addr = serve(Router::new().route("/hook", post(receive)).with_state(app.clone())).await;
    let out = tokio::task::spawn_blocking(move || {
        python(
            "send_signed.py",
            &json!({"url": format!("http://{addr}/hook"), "secret": secret.expose(), "wrong_secret": wrong.expose()}),
        )
    })
    .await
    .unwrap();
    let statuses: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        statuses,
        json!({
            "valid": 200,
            "two_signatures": 200,
            "tampered_body": 401,
            "wrong_secret": 401,
            "stale": 401,
            "future": 401,
            "unsigned": 401,
        })
    );
    let seen = app.seen.lock().unwrap().clone();
    let ids: Vec<_> = seen.iter().map(|(id, _)| id.clone().unwrap()).collect();
    assert_eq!(ids, ["msg_valid", "msg_rotating"]);
    assert_eq!(seen[0].1, json!({"order": "ord_123", "total": 4200}));
}
