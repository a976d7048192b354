//! `#[hook]` and the request: the bytes the client sent without the Python
//! caveat, rejections passing through, header redaction, where the handle
//! comes from (state or the zero-config layer), a missing handle.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query};
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use fastapihooks::{Fastapihooks, FastapihooksContext, WebhookSubscription, hook};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::hook_util::{Receiver, builder, call, hooks_for, post_json};

/// A DTO that is only `Deserialize`: no `Serialize` needed.
#[derive(Deserialize)]
struct OrderIn {
    qty: u32,
}

fn request_and_headers(ctx: &FastapihooksContext) -> Value {
    json!({
        "request": ctx.request_payload.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
        "authorization": ctx.header("authorization"),
        "cookie": ctx.header("cookie"),
        "proxy-authorization": ctx.header("proxy-authorization"),
        "x-custom": ctx.header("x-custom"),
    })
}

#[hook("req.typed", transform = request_and_headers, include_request = true, include_headers = true)]
async fn typed(Path(id): Path<u32>, Query(q): Query<Value>, Json(order): Json<OrderIn>) -> Json<Value> {
    Json(json!({"id": id, "q": q, "qty": order.qty}))
}

#[hook("req.typed", transform = request_and_headers, include_headers = true, include_credentials = true)]
async fn with_credentials() -> StatusCode {
    StatusCode::OK
}

#[hook("req.typed", transform = request_and_headers, include_request = true)]
async fn no_params() -> StatusCode {
    StatusCode::OK
}

#[hook("req.typed", transform = request_and_headers, include_request = true)]
async fn raw_bytes(body: Bytes) -> impl axum::response::IntoResponse {
    format!("{}", body.len())
}

#[hook("req.typed", include_request = true)]
async fn limited(Json(order): Json<OrderIn>) -> Json<u32> {
    Json(order.qty)
}

fn app(hooks: &Fastapihooks) -> Router {
    Router::new()
        .route("/typed/{id}", post(typed))
        .route("/cred", post(with_credentials))
        .route("/none", post(no_params))
        .route("/limited", post(limited).layer(DefaultBodyLimit::max(16)))
        .with_state(hooks.clone())
}

#[tokio::test]
async fn hook_request_payload_is_the_bytes_sent_and_typed_extractor_still_works() {
    let mut rx = Receiver::start().await;
    let hooks = hooks_for(&rx, "req.typed");
    let sent = "{\n  \"qty\": 3,\n  \"note\": \"kept as sent\"\n}";
    let (s, body, _) = call(app(&hooks), post_json("/typed/7?x=1", sent)).await;
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({"id": 7, "q": {"x": "1"}, "qty": 3}));
    assert_eq!(rx.next().await.body["request"], sent);
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn hook_request_rejections_pass_through_unchanged() {
    let mut rx = Receiver::start().await;
    let hooks = hooks_for(&rx, "req.typed");
    // The same route without the hook, to compare rejections.
    async fn plain(Json(_): Json<OrderIn>) {}
    let plain_app = Router::new().route("/typed/{id}", post(plain));
    for (uri, body, ct) in [
        ("/typed/1", r#"{"qty":"three"}"#, "application/json"),
        ("/typed/1", r#"{"qty":3"#, "application/json"),
        ("/typed/1", r#"{"qty":3}"#, "text/plain"),
    ] {
        let req =
            |app: Router| call(app, Request::post(uri).header("content-type", ct).body(Body::from(body)).unwrap());
        let (hooked_status, hooked_body, _) = req(app(&hooks)).await;
        let (plain_status, plain_body, _) = req(plain_app.clone()).await;
        assert_eq!((hooked_status, &hooked_body), (plain_status, &plain_body), "{body} {ct}");
        assert!(hooked_status >= 400);
    }
    // Past the body limit: 413, as axum's own extractors answer.
    let (s, _, _) = call(app(&hooks), post_json("/limited", r#"{"qty":3,"padding":"xxxxxxxxxxxxxxxxxxx"}"#)).await;
    assert_eq!(s, 413);
    let (s, _, _) = call(app(&hooks), post_json("/limited", r#"{"qty":3}"#)).await;
    assert_eq!(s, 200);
    assert_eq!(rx.next().await.body, json!(3));
    rx.nothing(Duration::from_millis(300)).await;
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn hook_request_captured_without_body_param_and_with_bytes() {
    let mut rx = Receiver::start().await;
    let hooks = hooks_for(&rx, "req.typed");
    call(app(&hooks), post_json("/none", "hello")).await;
    assert_eq!(rx.next().await.body["request"], "hello");
    let bytes_app = Router::new().route("/", post(raw_bytes)).with_state(hooks.clone());
    let (s, body, _) = call(bytes_app, post_json("/", "12345")).await;
    assert_eq!((s, &body[..]), (200, &b"5"[..]));
    assert_eq!(rx.next().await.body["request"], "12345");
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn hook_headers_credentials_redacted_unless_asked() {
    let mut rx = Receiver::start().await;
    let hooks = hooks_for(&rx, "req.typed");
    let req = |uri: &str| {
        Request::post(uri)
            .header("content-type", "application/json")
            .header("Authorization", "Bearer secret-token")
            .header("Cookie", "session=abc")
            .header("Proxy-Authorization", "Basic xyz")
            .header("X-Custom", "visible")
            .body(Body::from(r#"{"qty":1}"#))
            .unwrap()
    };
    call(app(&hooks), req("/typed/1")).await;
    let b = rx.next().await.body;
    assert_eq!(
        (&b["authorization"], &b["cookie"], &b["proxy-authorization"], &b["x-custom"]),
        (&json!("[redacted]"), &json!("[redacted]"), &json!("[redacted]"), &json!("visible"))
    );
    call(app(&hooks), req("/cred")).await;
    let b = rx.next().await.body;
    assert_eq!((&b["authorization"], &b["cookie"]), (&json!("Bearer secret-token"), &json!("session=abc")));
    hooks.shutdown(Duration::from_secs(2)).await;
}

// Where the handle comes from.

#[hook("layer.used")]
async fn stateless() -> Json<Value> {
    Json(json!({"ok": true}))
}

#[tokio::test]
async fn hook_handle_from_zero_config_layer() {
    let mut rx = Receiver::start().await;
    let hooks = hooks_for(&rx, "layer.used");
    let app: Router = Router::new().route("/", get(stateless)).layer(hooks.layer());
    let (s, _, _) = call(app, crate::hook_util::get("/")).await;
    assert_eq!(s, 200);
    assert_eq!(rx.next().await.body, json!({"ok": true}));
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn hook_missing_handle_serves_request_and_counts() {
    let before = Fastapihooks::handles_missing();
    let app: Router = Router::new().route("/", get(stateless));
    let (s, body, _) = call(app, crate::hook_util::get("/")).await;
    assert_eq!((s, &body[..]), (200, &br#"{"ok":true}"#[..]));
    assert!(Fastapihooks::handles_missing() > before);
}

/// A state that provides the handle through `FromRef`.
#[derive(Clone, axum::extract::FromRef)]
struct AppState {
    hooks: Fastapihooks,
    name: &'static str,
}

#[hook("state.used")]
async fn with_app_state(axum::extract::State(name): axum::extract::State<&'static str>) -> Json<Value> {
    Json(json!({"name": name}))
}

#[tokio::test]
async fn hook_handle_from_router_state_via_from_ref() {
    let mut rx = Receiver::start().await;
    let hooks = builder().subscriber("state.used", WebhookSubscription::new(&rx.url).unwrap()).build().unwrap();
    let app = Router::new().route("/", get(with_app_state)).with_state(AppState { hooks: hooks.clone(), name: "shop" });
    call(app, crate::hook_util::get("/")).await;
    assert_eq!(rx.next().await.body, json!({"name": "shop"}));
    hooks.shutdown(Duration::from_secs(2)).await;
}
