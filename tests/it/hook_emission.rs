//! `#[hook]`: emission on success only, the response unchanged, payload
//! without a transform (REFERENCE.md, Emission).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use fastapihooks::{Fastapihooks, hook};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::hook_util::{Receiver, call, get as get_req, hooks_for, post_json};

#[derive(Deserialize)]
struct OrderIn {
    item: String,
    qty: u32,
}

#[derive(Serialize)]
struct Order {
    id: String,
    item: String,
    qty: u32,
}

#[derive(Debug)]
struct AppError;

impl axum::response::IntoResponse for AppError {
    fn into_response(self) -> axum::response::Response {
        (StatusCode::CONFLICT, "out of stock").into_response()
    }
}

#[hook("order.created")]
async fn create_order(
    State(_hooks): State<Fastapihooks>,
    Json(order): Json<OrderIn>,
) -> Result<(StatusCode, Json<Order>), AppError> {
    if order.qty == 0 {
        return Err(AppError);
    }
    if order.qty > 100 {
        return Ok((StatusCode::ACCEPTED, Json(Order { id: "ord_big".into(), item: order.item, qty: order.qty })));
    }
    if order.item == "teapot" {
        return Ok((StatusCode::IM_A_TEAPOT, Json(Order { id: "ord_tea".into(), item: order.item, qty: 0 })));
    }
    Ok((StatusCode::CREATED, Json(Order { id: "ord_1".into(), item: order.item, qty: order.qty })))
}

fn app(hooks: Fastapihooks) -> Router {
    Router::new().route("/orders", post(create_order)).with_state(hooks)
}

#[tokio::test]
async fn hook_response_reaches_client_unchanged_and_payload_is_response() {
    let mut rx = Receiver::start().await;
    let hooks = hooks_for(&rx, "order.created");
    let (status, body, _) = call(app(hooks.clone()), post_json("/orders", r#"{"item":"book","qty":2}"#)).await;
    assert_eq!(status, 201);
    assert_eq!(&body[..], br#"{"id":"ord_1","item":"book","qty":2}"#);
    let d = rx.next().await;
    assert_eq!(d.body, json!({"id": "ord_1", "item": "book", "qty": 2}));
    assert_eq!(d.headers["x-fastapihooks-event"], "order.created");
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn hook_not_emitted_on_err_or_non_2xx() {
    let mut rx = Receiver::start().await;
    let hooks = hooks_for(&rx, "order.created");
    let (status, body, _) = call(app(hooks.clone()), post_json("/orders", r#"{"item":"book","qty":0}"#)).await;
    assert_eq!((status, &body[..]), (409, &b"out of stock"[..]));
    let (status, _, _) = call(app(hooks.clone()), post_json("/orders", r#"{"item":"teapot","qty":1}"#)).await;
    assert_eq!(status, 418);
    rx.nothing(Duration::from_millis(300)).await;
    // Any 2xx emits.
    let (status, _, _) = call(app(hooks.clone()), post_json("/orders", r#"{"item":"book","qty":500}"#)).await;
    assert_eq!(status, 202);
    assert_eq!(rx.next().await.body["id"], "ord_big");
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn hook_extractor_rejection_passes_through_without_event() {
    let mut rx = Receiver::start().await;
    let hooks = hooks_for(&rx, "order.created");
    let (status, _, _) = call(app(hooks.clone()), post_json("/orders", r#"{"item":"book"}"#)).await;
    assert_eq!(status, 422);
    rx.nothing(Duration::from_millis(200)).await;
    hooks.shutdown(Duration::from_secs(2)).await;
}

// Return types: plain status, unit, impl IntoResponse (JSON read back and
// not), multi-part tuples, Response.

#[hook("plain.status")]
async fn plain_status() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[hook("plain.unit")]
async fn plain_unit() {}

#[hook("impl.json")]
async fn impl_json() -> impl axum::response::IntoResponse {
    (StatusCode::CREATED, Json(json!({"made": true})))
}

#[hook("impl.error")]
async fn impl_error() -> impl axum::response::IntoResponse {
    (StatusCode::BAD_REQUEST, Json(json!({"error": "bad"})))
}

#[hook("impl.error")]
async fn tuple_status_over_impl() -> (StatusCode, impl axum::response::IntoResponse) {
    (StatusCode::BAD_REQUEST, Json(json!({"inner": "200 but overridden"})))
}

#[hook("tuple.parts")]
async fn tuple_parts() -> (StatusCode, [(&'static str, &'static str); 1], Json<serde_json::Value>) {
    (StatusCode::OK, [("x-extra", "1")], Json(json!({"parts": 3})))
}

#[hook("response.plain")]
async fn response_plain() -> axum::response::Response {
    axum::response::IntoResponse::into_response(Json(json!({"resp": 1})))
}

#[hook("result.impl")]
async fn result_impl(
    axum::extract::Path(ok): axum::extract::Path<bool>,
) -> Result<impl axum::response::IntoResponse, AppError> {
    if ok { Ok(Json(json!({"r": "ok"}))) } else { Err(AppError) }
}

/// A `Result` alias is not recognised by its syntax: it goes through
/// `HookResponse`, which is implemented for `Result` too.
type ApiResult<T> = Result<T, AppError>;

#[hook("result.impl")]
async fn aliased(axum::extract::Path(ok): axum::extract::Path<bool>) -> ApiResult<Json<serde_json::Value>> {
    if ok { Ok(Json(json!({"alias": true}))) } else { Err(AppError) }
}

#[tokio::test]
async fn hook_return_types_decide_emission_and_payload() {
    let mut rx = Receiver::start().await;
    let hooks = crate::hook_util::builder()
        .subscriber("plain.status", fastapihooks::WebhookSubscription::new(&rx.url).unwrap())
        .subscriber("plain.unit", fastapihooks::WebhookSubscription::new(&rx.url).unwrap())
        .subscriber("impl.json", fastapihooks::WebhookSubscription::new(&rx.url).unwrap())
        .subscriber("impl.error", fastapihooks::WebhookSubscription::new(&rx.url).unwrap())
        .subscriber("tuple.parts", fastapihooks::WebhookSubscription::new(&rx.url).unwrap())
        .subscriber("response.plain", fastapihooks::WebhookSubscription::new(&rx.url).unwrap())
        .subscriber("result.impl", fastapihooks::WebhookSubscription::new(&rx.url).unwrap())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/status", get(plain_status))
        .route("/unit", get(plain_unit))
        .route("/impl", get(impl_json))
        .route("/impl-error", get(impl_error))
        .route("/tuple-error", get(tuple_status_over_impl))
        .route("/tuple", get(tuple_parts))
        .route("/response", get(response_plain))
        .route("/result/{ok}", get(result_impl))
        .route("/alias/{ok}", get(aliased))
        .with_state(hooks.clone());

    let (s, _, _) = call(app.clone(), get_req("/status")).await;
    assert_eq!(s, 204);
    let d = rx.next().await;
    assert_eq!((d.headers["x-fastapihooks-event"].to_str().unwrap(), d.body.clone()), ("plain.status", json!(null)));

    let (s, _, _) = call(app.clone(), get_req("/unit")).await;
    assert_eq!(s, 200);
    assert_eq!(rx.next().await.body, json!(null));

    let (s, body, res) = call(app.clone(), get_req("/impl")).await;
    assert_eq!((s, &body[..]), (201, &br#"{"made":true}"#[..]));
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(rx.next().await.body, json!({"made": true}));

    let (s, _, _) = call(app.clone(), get_req("/impl-error")).await;
    assert_eq!(s, 400);
    let (s, _, _) = call(app.clone(), get_req("/tuple-error")).await;
    assert_eq!(s, 400);
    rx.nothing(Duration::from_millis(200)).await;

    let (s, _, res) = call(app.clone(), get_req("/tuple")).await;
    assert_eq!(s, 200);
    assert_eq!(res.headers()["x-extra"], "1");
    assert_eq!(rx.next().await.body, json!({"parts": 3}));

    let (s, _, _) = call(app.clone(), get_req("/response")).await;
    assert_eq!(s, 200);
    assert_eq!(rx.next().await.body, json!({"resp": 1}));

    let (s, _, _) = call(app.clone(), get_req("/result/false")).await;
    assert_eq!(s, 409);
    rx.nothing(Duration::from_millis(200)).await;
    let (s, body, _) = call(app.clone(), get_req("/result/true")).await;
    assert_eq!((s, &body[..]), (200, &br#"{"r":"ok"}"#[..]));
    assert_eq!(rx.next().await.body, json!({"r": "ok"}));

    let (s, _, _) = call(app.clone(), get_req("/alias/false")).await;
    assert_eq!(s, 409);
    rx.nothing(Duration::from_millis(200)).await;
    call(app.clone(), get_req("/alias/true")).await;
    assert_eq!(rx.next().await.body, json!({"alias": true}));
    hooks.shutdown(Duration::from_secs(2)).await;
}

#[hook("slow.subscriber")]
async fn fast_handler() -> Json<serde_json::Value> {
    Json(json!({"fast": true}))
}

#[tokio::test]
async fn hook_emits_off_the_request_path_slow_subscriber_does_not_delay_response() {
    // A subscriber that takes 2 s to answer.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let slow = Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = tx.send(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, slow).await });
    let hooks = crate::hook_util::builder()
        .subscriber("slow.subscriber", fastapihooks::WebhookSubscription::new(url).unwrap())
        .build()
        .unwrap();
    let app = Router::new().route("/", get(fast_handler)).with_state(hooks.clone());
    let started = std::time::Instant::now();
    let (s, _, _) = call(app, get_req("/")).await;
    assert_eq!(s, 200);
    assert!(started.elapsed() < Duration::from_millis(500), "the response waited for the subscriber");
    let body = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!(&body[..], br#"{"fast":true}"#);
    hooks.shutdown(Duration::from_secs(2)).await;
}
