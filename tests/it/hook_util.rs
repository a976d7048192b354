//! Shared helpers for the `#[hook]` tests: a real webhook receiver on
//! 127.0.0.1 and a runtime subscribed to it.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, Response};
use axum::routing::post;
use fastapihooks::{Fastapihooks, FastapihooksBuilder, NetworkPolicy, RetryPolicy, WebhookSubscription};
use tokio::sync::mpsc;
use tower::ServiceExt;

/// One webhook the receiver got.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) headers: HeaderMap,
    pub(crate) body: serde_json::Value,
}

/// A webhook receiver listening on 127.0.0.1.
pub(crate) struct Receiver {
    pub(crate) url: String,
    rx: mpsc::UnboundedReceiver<Delivery>,
}

impl Receiver {
    /// Starts a receiver on a free port.
    pub(crate) async fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    let _ = tx.send(Delivery { headers, body });
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{addr}/hook"), rx }
    }

    /// The next delivery, within 5 s.
    pub(crate) async fn next(&mut self) -> Delivery {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("no webhook within 5 s")
            .expect("receiver closed")
    }

    /// Asserts that nothing arrives within `wait`.
    pub(crate) async fn nothing(&mut self, wait: Duration) {
        if let Ok(Some(d)) = tokio::time::timeout(wait, self.rx.recv()).await {
            panic!("unexpected webhook: {d:?}");
        }
    }
}

/// A builder that may deliver to 127.0.0.1, with fast retries.
pub(crate) fn builder() -> FastapihooksBuilder {
    Fastapihooks::builder()
        .network_policy(NetworkPolicy::default().allow_loopback())
        .retry_policy(RetryPolicy::schedule([Duration::from_millis(10)]))
}

/// A runtime with `receiver` subscribed to `event`.
pub(crate) fn hooks_for(receiver: &Receiver, event: &str) -> Fastapihooks {
    builder().subscriber(event, WebhookSubscription::new(&receiver.url).expect("url")).build().expect("build")
}

/// Sends one request through the router; returns status and body.
pub(crate) async fn call(app: Router, req: Request<Body>) -> (u16, Bytes, Response<Body>) {
    let res = app.oneshot(req).await.expect("infallible");
    let status = res.status().as_u16();
    let (parts, body) = res.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    (status, body.clone(), Response::from_parts(parts, Body::from(body)))
}

/// A JSON POST.
pub(crate) fn post_json(uri: &str, json: &str) -> Request<Body> {
    Request::post(uri).header("content-type", "application/json").body(Body::from(json.to_owned())).expect("request")
}

/// A GET.
pub(crate) fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}
