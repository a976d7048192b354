//! `#[hook]` options: the context a transform sees, transform semantics,
//! `include_*` defaults, owner resolution, direct subscribers
//! (REFERENCE.md, Emission).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use fastapihooks::{Fastapihooks, FastapihooksContext, WebhookSubscription, hook};
use serde_json::{Value, json};

use crate::hook_util::{Receiver, builder, call, hooks_for, post_json};

/// Echoes the whole context, so the receiver shows what the transform saw.
fn echo(ctx: &FastapihooksContext) -> Value {
    let headers = ctx.headers.as_ref().map(|h| {
        h.iter()
            .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or(""))))
            .collect::<serde_json::Map<_, _>>()
    });
    json!({
        "event_name": ctx.event_name,
        "owner_id": ctx.owner_id,
        "timestamp": ctx.timestamp.to_rfc3339(),
        "headers": headers,
        "request": ctx.request_payload.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
        "response": ctx.response_payload,
    })
}

#[hook("ctx.defaults", transform = echo)]
async fn defaults(Json(v): Json<Value>) -> Json<Value> {
    Json(json!({"got": v}))
}

#[hook("ctx.all", transform = echo, include_headers = true, include_request = true, include_response = true)]
async fn all(Json(v): Json<Value>) -> (StatusCode, Json<Value>) {
    (StatusCode::CREATED, Json(json!({"got": v})))
}

#[hook("ctx.none", transform = echo, include_response = false)]
async fn no_response() -> Json<Value> {
    Json(json!({"secret": "not in the event"}))
}

#[hook("ctx.plain", include_response = false)]
async fn plain_no_response() -> Json<Value> {
    Json(json!({"secret": "not in the event"}))
}

fn app(hooks: &Fastapihooks) -> Router {
    Router::new()
        .route("/defaults", post(defaults))
        .route("/all", post(all))
        .route("/none", post(no_response))
        .route("/plain", post(plain_no_response))
        .with_state(hooks.clone())
}

fn subscribed(rx: &Receiver, events: &[&str]) -> Fastapihooks {
    events.iter().fold(builder(), |b, e| b.subscriber(*e, WebhookSubscription::new(&rx.url).unwrap())).build().unwrap()
}

#[tokio::test]
async fn hook_context_defaults_headers_and_request_none_response_included() {
    let mut rx = Receiver::start().await;
    let hooks = subscribed(&rx, &["ctx.defaults"]);
    let before = chrono_now();
    let (s, _, _) = call(app(&hooks), post_json("/defaults", r#"{"a":1}"#)).await;
    assert_eq!(s, 200);
    let body = rx.next().await.body;
    assert_eq!(body["event_name"], "ctx.defaults");
    assert_eq!(body["owner_id"], Value::Null);
    assert_eq!(body["headers"], Value::Null);
    assert_eq!(body["request"], Value::Null);
    assert_eq!(body["response"], json!({"got": {"a": 1}}));
    // The timestamp is UTC and "now".
    let ts = body["timestamp"].as_str().unwrap();
    assert!(ts.ends_with("+00:00"), "{ts}");
    assert!(ts >= before.as_str(), "{ts} < {before}");
    hooks.shutdown(Duration::from_secs(2)).await;
}

fn chrono_now() -> String {
    // RFC 3339 of now, to the second, via the context's own clock.
    let s = FastapihooksContext::new("x").timestamp.to_rfc3339();
    s[..19].to_owned()
}

#[tokio::test]
async fn hook_context_all_included_headers_lower_case_request_bytes() {
    let mut rx = Receiver::start().await;
    let hooks = subscribed(&rx, &["ctx.all"]);
    let req = axum::http::Request::post("/all")
        .header("Content-Type", "application/json")
        .header("X-Request-Id", "r-1")
        .body(axum::body::Body::from(r#"{ "a" : 1 }"#))
        .unwrap();
    let (s, _, _) = call(app(&hooks), req).await;
    assert_eq!(s, 201);
    let body = rx.next().await.body;
    assert_eq!(body["headers"]["x-request-id"], "r-1");
    assert_eq!(body["headers"]["content-type"], "application/json");
    assert_eq!(body["request"], r#"{ "a" : 1 }"#);
    assert_eq!(body["response"], json!({"got": {"a": 1}}));
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn hook_include_response_false_gives_null_response_payload() {
    let mut rx = Receiver::start().await;
    let hooks = subscribed(&rx, &["ctx.none", "ctx.plain"]);
    let (s, body, _) = call(app(&hooks), post_json("/none", "{}")).await;
    assert_eq!((s, &body[..]), (200, &br#"{"secret":"not in the event"}"#[..]));
    assert_eq!(rx.next().await.body["response"], Value::Null);
    // Without a transform the payload is the (absent) response: null.
    let (s, _, _) = call(app(&hooks), post_json("/plain", "{}")).await;
    assert_eq!(s, 200);
    assert_eq!(rx.next().await.body, Value::Null);
    hooks.shutdown(Duration::from_secs(2)).await;
}

// Transform semantics: its return value is the payload; `Result` and
// `Json` outputs; an `Err` delivers nothing.

fn to_summary(ctx: &FastapihooksContext) -> Result<Value, String> {
    match ctx.response_payload["id"].as_str() {
        Some(id) => Ok(json!({"order_id": id, "kind": "summary"})),
        None => Err("no id".into()),
    }
}

#[hook("tx.summary", transform = to_summary)]
async fn summarized(Json(v): Json<Value>) -> Json<Value> {
    Json(v)
}

#[tokio::test]
async fn hook_transform_return_value_is_the_payload_and_err_is_not_delivered() {
    let mut rx = Receiver::start().await;
    let hooks = subscribed(&rx, &["tx.summary"]);
    let app = Router::new().route("/", post(summarized)).with_state(hooks.clone());
    let (s, body, _) = call(app.clone(), post_json("/", r#"{"id":"ord_9","total":5}"#)).await;
    assert_eq!((s, &body[..]), (200, &br#"{"id":"ord_9","total":5}"#[..]));
    assert_eq!(rx.next().await.body, json!({"order_id": "ord_9", "kind": "summary"}));
    let (s, _, _) = call(app, post_json("/", r#"{"total":5}"#)).await;
    assert_eq!(s, 200);
    rx.nothing(Duration::from_millis(300)).await;
    assert_eq!(hooks.stats().transform_failed, 1);
    hooks.shutdown(Duration::from_secs(2)).await;
}

// Owner resolution: resolver > global default > none.

fn tenant(parts: &Parts) -> Option<String> {
    parts.headers.get("x-tenant").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[hook("owner.resolved", transform = echo, owner = tenant)]
async fn owned(State(_): State<Fastapihooks>) -> StatusCode {
    StatusCode::OK
}

#[hook("owner.resolved", transform = echo)]
async fn unowned() -> StatusCode {
    StatusCode::OK
}

#[tokio::test]
async fn hook_owner_resolver_overrides_default_and_none_falls_back() {
    let mut rx = Receiver::start().await;
    let hooks = builder()
        .default_owner("global")
        .subscriber("owner.resolved", WebhookSubscription::new(&rx.url).unwrap())
        .build()
        .unwrap();
    let app = Router::new().route("/owned", post(owned)).route("/unowned", post(unowned)).with_state(hooks.clone());
    let req = axum::http::Request::post("/owned").header("x-tenant", "acme").body(axum::body::Body::empty()).unwrap();
    call(app.clone(), req).await;
    assert_eq!(rx.next().await.body["owner_id"], "acme");
    // The resolver returns None: the global default.
    call(app.clone(), post_json("/owned", "")).await;
    assert_eq!(rx.next().await.body["owner_id"], "global");
    // No resolver: the global default.
    call(app, post_json("/unowned", "")).await;
    assert_eq!(rx.next().await.body["owner_id"], "global");
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn hook_owner_neither_resolver_nor_default_gives_none() {
    let mut rx = Receiver::start().await;
    let hooks = hooks_for(&rx, "owner.resolved");
    let app = Router::new().route("/owned", post(owned)).with_state(hooks.clone());
    call(app, post_json("/owned", "")).await;
    assert_eq!(rx.next().await.body["owner_id"], Value::Null);
    hooks.shutdown(Duration::from_secs(2)).await;
}

// Direct subscribers: those of the emitted event get it; others do not.

#[hook("direct.a")]
async fn direct_a() -> Json<Value> {
    Json(json!({"e": "a"}))
}

#[hook("direct.none")]
async fn direct_none() -> Json<Value> {
    Json(json!({"e": "none"}))
}

#[tokio::test]
async fn hook_direct_subscribers_get_their_event_only() {
    let mut rx_a = Receiver::start().await;
    let mut rx_b = Receiver::start().await;
    let hooks = builder()
        .subscriber("direct.a", WebhookSubscription::new(&rx_a.url).unwrap())
        .subscriber("direct.b", WebhookSubscription::new(&rx_b.url).unwrap())
        .build()
        .unwrap();
    let app = Router::new().route("/a", post(direct_a)).route("/none", post(direct_none)).with_state(hooks.clone());
    call(app.clone(), post_json("/a", "")).await;
    assert_eq!(rx_a.next().await.body, json!({"e": "a"}));
    call(app, post_json("/none", "")).await;
    rx_a.nothing(Duration::from_millis(200)).await;
    rx_b.nothing(Duration::from_millis(50)).await;
    hooks.shutdown(Duration::from_secs(2)).await;
    let stats = hooks.stats();
    // The event nobody subscribed to was skipped before any work.
    assert_eq!((stats.emitted, stats.unsubscribed, stats.delivered), (1, 1, 1));
}
